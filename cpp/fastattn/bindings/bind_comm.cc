// Tensor-parallel communication bindings: the process's launch / MPI state, aborting the job,
// and _C.Communicator (collectives and the tiling-AllReduce on numpy arrays or torch tensors,
// zero-copy; `stream` is a cudaStream_t as an int for GPU backends). Used by
// fastattention.distributed, the multi-rank tests and `fastattention bench allreduce-overlap`.
// Collectives release the GIL.
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "fastattn/bindings/bindings.h"
#include "fastattn/comm/communicator.h"
#include "fastattn/comm/mpi_runtime.h"
#include "fastattn/comm/tiled_all_reduce.h"
#include "fastattn/layers/parallel.h"

#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/comm/cuda/nccl_communicator.h"
#endif

namespace fastattn::py_bind {
namespace {

py::dict distributed_info() {
  const comm::LaunchInfo li = comm::detect_launch();
  py::dict d;
  d["launched"] = li.launched;
  d["launcher_variable"] = li.source;
  d["mpi_built"] = comm::mpi_built();
#if defined(FASTATTN_WITH_CUDA)
  d["nccl_built"] = comm::nccl_built();
#else
  d["nccl_built"] = false;
#endif
  comm::MpiRuntime* rt = comm::MpiRuntime::if_started();
  d["mpi_started"] = rt != nullptr;
  d["rank"] = rt != nullptr ? rt->world_rank() : li.rank;
  d["world_size"] = rt != nullptr ? rt->world_size() : (li.world_size > 0 ? li.world_size : 1);
  d["local_rank"] = rt != nullptr ? rt->local_rank() : li.local_rank;
  d["mpi_library"] = rt != nullptr ? rt->library_version() : std::string();
  d["mpi_shim"] = rt != nullptr ? rt->shim_path() : std::string();
  d["comm_timeout"] = comm::comm_timeout_seconds();
  return d;
}

}  // namespace

void bind_comm(py::module_& m) {
  m.def("distributed_info", &distributed_info,
        "This process's launch (mpirun environment) and MPI state; starts nothing.");
  m.def(
      "mpi_start",
      []() {
        {
          py::gil_scoped_release release;
          comm::MpiRuntime::get();
        }
        return distributed_info();
      },
      "Starts MPI in this process (idempotent); RuntimeError saying how to get MPI if it cannot.");
  m.def(
      "abort_job", [](int code) { comm::abort_job(code); }, py::arg("code") = 1,
      "MPI_Abort: ends every rank of the job, if MPI runs in this process; else returns.");

  py::class_<comm::Communicator>(
      m, "Communicator", "Collectives over every rank of the mpirun job (see comm/communicator.h).")
      .def(py::init([](const std::string& backend, const std::string& device) {
             py::gil_scoped_release release;
             return comm::create_communicator(backend, parse_device(device));
           }),
           py::arg("backend") = "auto", py::arg("device") = "cpu")
      .def_property_readonly("backend", &comm::Communicator::backend)
      .def_property_readonly("rank", &comm::Communicator::rank)
      .def_property_readonly("size", &comm::Communicator::size)
      .def_property_readonly("device", [](const comm::Communicator& c) { return c.device().str(); })
      .def_property(
          "overlap", [](const comm::Communicator& c) { return c.tiling().overlap; },
          [](comm::Communicator& c, bool v) { c.tiling().overlap = v; },
          "tiling-AllReduce on (True) or one GEMM then one all-reduce (False)")
      .def_property(
          "num_tiles", [](const comm::Communicator& c) { return c.tiling().num_tiles; },
          [](comm::Communicator& c, int v) {
            FA_CHECK(v >= 0, "num_tiles: expected >= 0 (0 = from the token count), got ", v);
            c.tiling().num_tiles = v;
          },
          "row tiles of the tiling-AllReduce; 0 = chosen from the token count")
      .def_property(
          "gemm_sms", [](const comm::Communicator& c) { return c.tiling().gemm_sms; },
          [](comm::Communicator& c, int v) {
            FA_CHECK(v >= -1, "gemm_sms: expected >= -1 (0 = all SMs, -1 = from the GEMM's ",
                     "size), got ", v);
            c.tiling().gemm_sms = v;
          },
          "GPU: SMs each tile GEMM of the tiling-AllReduce may use (cuBLAS SM count target), "
          "leaving the rest to the all-reduce beside it; 0 = all, -1 = chosen from the GEMM's size")
      .def_property(
          "gather_reduce", [](const comm::Communicator& c) { return c.tiling().gather_reduce; },
          [](comm::Communicator& c, bool v) { c.tiling().gather_reduce = v; },
          "GPU: the tiles' all-reduces as a copy-engine all-gather plus a sum kernel (NCCL >= "
          "2.28) instead of NCCL's all-reduce kernels")
      .def("choose_num_tiles", &comm::choose_num_tiles, py::arg("tokens"),
           "The tile count the row-parallel GEMMs use for this many tokens (GPUs: 1 unless "
           "num_tiles is set; plan_tiles adds the tile GEMMs' SMs).")
      .def(
          "plan_tiles",
          [](const comm::Communicator& c, int64_t tokens, int64_t cols, int64_t inner) {
            const comm::TilePlan p = comm::plan_tiles(c, tokens, cols, inner);
            return py::make_tuple(p.tiles, p.gemm_sms);
          },
          py::arg("tokens"), py::arg("cols"), py::arg("inner"),
          "(tiles, gemm_sms) of the row-parallel GEMM y[tokens, cols] = x[tokens, inner] @ w^T "
          "(comm/tiled_all_reduce.h: plan_tiles)")
      .def(
          "all_reduce_sum",
          [](comm::Communicator& c, const py::handle& buf, uintptr_t stream) {
            Tensor t = tensor_from_py(buf, "buf");
            const Context ctx = call_context(0, stream, t);
            py::gil_scoped_release release;
            c.all_reduce_sum(ctx, t);
          },
          py::arg("buf"), py::arg("stream") = 0, "buf = sum over ranks (in place).")
      .def(
          "all_reduce_sum_tiled",
          [](comm::Communicator& c, const py::handle& buf, int num_tiles, uintptr_t stream) {
            Tensor t = tensor_from_py(buf, "buf");
            const Context ctx = call_context(0, stream, t);
            py::gil_scoped_release release;
            comm::tiled_all_reduce(ctx, c, t, num_tiles, [](int64_t, int64_t) {});
          },
          py::arg("buf"), py::arg("num_tiles"), py::arg("stream") = 0,
          "The tiled all-reduce on data already in buf: row tile i's async all-reduce, then the "
          "next; the result equals all_reduce_sum.")
      .def(
          "linear_all_reduce",
          [](comm::Communicator& c, const py::handle& x, const py::handle& w, const py::handle& y,
             int num_threads, uintptr_t stream) {
            const Tensor xt = tensor_from_py(x, "x");
            const Tensor wt = tensor_from_py(w, "w");
            Tensor yt = tensor_from_py(y, "y");
            const Context ctx = call_context(num_threads, stream, yt);
            py::gil_scoped_release release;
            layers::linear_all_reduce(ctx, c, xt, wt, yt);
          },
          py::arg("x"), py::arg("w"), py::arg("y"), py::arg("num_threads") = 0,
          py::arg("stream") = 0,
          "y = sum over ranks of x @ w^T, as the row-parallel layers compute it (tiled per the "
          "overlap / num_tiles settings).")
      .def(
          "all_gather",
          [](comm::Communicator& c, const py::handle& in, const py::handle& out, uintptr_t stream) {
            const Tensor it = tensor_from_py(in, "in");
            Tensor ot = tensor_from_py(out, "out");
            const Context ctx = call_context(0, stream, ot);
            py::gil_scoped_release release;
            c.all_gather(ctx, it, ot);
          },
          py::arg("inp"), py::arg("out"), py::arg("stream") = 0,
          "out = every rank's inp, rank-major.")
      .def(
          "broadcast",
          [](comm::Communicator& c, const py::handle& buf, int root, uintptr_t stream) {
            Tensor t = tensor_from_py(buf, "buf");
            const Context ctx = call_context(0, stream, t);
            py::gil_scoped_release release;
            c.broadcast(ctx, t, root);
          },
          py::arg("buf"), py::arg("root") = 0, py::arg("stream") = 0)
      .def("barrier",
           [](comm::Communicator& c) {
             py::gil_scoped_release release;
             c.barrier();
           })
      .def("__repr__",
           [](const comm::Communicator& c) { return "Communicator(" + c.where() + ")"; });
}

}  // namespace fastattn::py_bind
