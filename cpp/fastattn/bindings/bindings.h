// Shared pieces of the pybind11 module: tensor conversion (DLPack) and the per-area bind functions.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/sampling.h"

namespace fastattn::py_bind {

namespace py = pybind11;

// A Tensor view over any object with __dlpack__ (numpy arrays, torch tensors) or an object
// exposing the buffer protocol, without a copy. `name` appears in error messages. The caller
// keeps `obj` alive while the view is used. Throws InvalidArgument for unsupported dtypes or
// devices, naming the argument.
Tensor tensor_from_py(const py::handle& obj, const char* name);

// As tensor_from_py, for arguments only read (in-memory weights): a read-only array, which
// DLPack (v0.x) cannot export, is taken through the buffer protocol instead.
Tensor readonly_tensor_from_py(const py::handle& obj, const char* name);

// Same, but returns an undefined Tensor for None.
Tensor optional_tensor_from_py(const py::handle& obj, const char* name);

// The Context of a kernel-level call from Python: num_threads CPU threads (0 = OpenMP's default;
// negative: InvalidArgument), `stream` a cudaStream_t as int (0 = the default stream), and, when
// `on` is a CUDA tensor, its device (so collectives and scratch go to that GPU).
Context call_context(int num_threads, uintptr_t stream, const Tensor& on = Tensor());

// A request's sampling parameters from the keyword arguments generate() and the engine share.
inline kernels::SamplingParams sampling_params(float temperature, int top_k, float top_p,
                                               uint64_t seed) {
  kernels::SamplingParams s;
  s.temperature = temperature;
  s.top_k = top_k;
  s.top_p = top_p;
  s.seed = seed;
  return s;
}

void bind_core(py::module_& m);
void bind_attention(py::module_& m);
void bind_kernels(py::module_& m);
void bind_rope_kv_sampling(py::module_& m);
void bind_model(py::module_& m);
void bind_comm(py::module_& m);
void bind_engine(py::module_& m);

}  // namespace fastattn::py_bind
