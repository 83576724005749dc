// Core bindings: thread control and build information.
#include <pybind11/pybind11.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "fastattn/bindings/bindings.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/attention/fmha/fmha_cuda.h"
#include "fastattn/runtime/gpu_runtime.h"
#endif

namespace fastattn::py_bind {

void bind_core(py::module_& m) {
  m.def(
      "set_num_threads",
      [](int n) {
        FA_CHECK(n > 0, "set_num_threads: expected a positive thread count, got ", n);
#if defined(_OPENMP)
        omp_set_num_threads(n);
#endif
      },
      "Threads used by the CPU kernels (OpenMP).");
  m.def("get_num_threads", []() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
#if defined(FASTATTN_WITH_CUDA)
  m.attr("cuda_built") = true;
  m.def("cuda_device_count", &runtime::gpu::device_count, "CUDA devices visible.");
  m.def("fmha_cuda_instances", &kernels::cuda::fmha_cuda_instances,
        "The CUDA attention instances compiled into this build.");
#else
  m.attr("cuda_built") = false;
  m.def("cuda_device_count", []() { return 0; }, "CUDA devices visible (none: no CUDA build).");
  m.def(
      "fmha_cuda_instances", []() { return std::vector<std::string>(); },
      "The CUDA attention instances compiled into this build (none: no CUDA).");
#endif
}

}  // namespace fastattn::py_bind
