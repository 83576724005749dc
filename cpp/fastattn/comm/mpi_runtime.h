// The process's MPI: found and started on first use, shared by every MPI-backed communicator.
//
// The core does not link MPI. MPI support is the shim library libfastattn_mpi.so (built when CMake
// finds MPI; comm/mpi/fa_mpi_shim.h), loaded with dlopen from, in order: $FASTATTN_MPI_SHIM, the
// directory of the binary holding this code (the Python package), the build tree. Before it,
// libmpi itself is preloaded from $FASTATTN_MPI_LIBRARY or, under Open MPI 5's mpirun, from the
// launcher's $OMPI_LIBDIR_LOC (so the library matches the mpirun that started the job); else the
// shim's own run path finds it.
//
// MPI is initialised (MPI_THREAD_MULTIPLE) on first use unless something else (mpi4py) already
// did; MPI_Finalize then runs at process exit. A failing rank should call abort_job() (the Python
// package does so for uncaught exceptions): the other ranks are then ended instead of waiting in a
// collective. Waits also give up after comm_timeout_seconds().
#pragma once

#include <string>

#include "fastattn/comm/mpi/fa_mpi_shim.h"

namespace fastattn::comm {

// What the launcher (mpirun / mpiexec / srun) told this process through its environment, read
// without starting MPI. launched = false for a process started on its own.
struct LaunchInfo {
  bool launched = false;
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;
  std::string source;  // the environment variable that told, e.g. "OMPI_COMM_WORLD_SIZE"
};
LaunchInfo detect_launch();

// Seconds a collective waits for the other ranks before it throws CommError:
// $FASTATTN_COMM_TIMEOUT (seconds, 0 = forever), default 300.
double comm_timeout_seconds();

// Function table of the loaded shim.
struct MpiApi {
#define FA_MPI_FN(name) decltype(&::name) name = nullptr;
  FA_MPI_FN(fa_mpi_abi_version)
  FA_MPI_FN(fa_mpi_init)
  FA_MPI_FN(fa_mpi_initialized)
  FA_MPI_FN(fa_mpi_finalized)
  FA_MPI_FN(fa_mpi_finalize)
  FA_MPI_FN(fa_mpi_abort)
  FA_MPI_FN(fa_mpi_library_version)
  FA_MPI_FN(fa_mpi_error_string)
  FA_MPI_FN(fa_mpi_thread_multiple_level)
  FA_MPI_FN(fa_mpi_thread_serialized_level)
  FA_MPI_FN(fa_mpi_world_dup)
  FA_MPI_FN(fa_mpi_comm_free)
  FA_MPI_FN(fa_mpi_comm_rank)
  FA_MPI_FN(fa_mpi_comm_size)
  FA_MPI_FN(fa_mpi_local_rank)
  FA_MPI_FN(fa_mpi_iallreduce_sum)
  FA_MPI_FN(fa_mpi_iallreduce_max_int64)
  FA_MPI_FN(fa_mpi_iallgather)
  FA_MPI_FN(fa_mpi_ibcast)
  FA_MPI_FN(fa_mpi_ibarrier)
  FA_MPI_FN(fa_mpi_test)
#undef FA_MPI_FN
};

// True when this build has the MPI shim (CMake found MPI), whether or not it loads here.
bool mpi_built();

class MpiRuntime {
 public:
  // Loads the shim and initialises MPI on the first call. Throws CommError saying what is
  // missing and how to get it.
  static MpiRuntime& get();
  // The runtime if MPI was started by this process (or another library), else null; never
  // starts MPI.
  static MpiRuntime* if_started();

  const MpiApi& api() const { return api_; }
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  bool thread_multiple() const { return thread_multiple_; }
  const std::string& library_version() const { return library_version_; }
  const std::string& shim_path() const { return shim_path_; }

  // Throws CommError "rank R: <what>: <MPI message>" when rc is not 0.
  void check(int rc, const char* what) const;
  // Polls a request until done, yielding the CPU while it waits. Throws CommError on an MPI
  // error or after comm_timeout_seconds() (naming `what` and the rank).
  void wait(fa_mpi_request* req, const char* what) const;

  // MPI_Finalize now (collective: every rank must call it), if this process started MPI and it
  // is still running. Used when every rank fails the same way (e.g. a tp_size / world size
  // mismatch), so each reports its error and exits instead of being killed.
  void finalize();

 private:
  MpiRuntime();
  MpiApi api_;
  std::string shim_path_;
  std::string library_version_;
  int world_rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  bool thread_multiple_ = false;
  bool initialized_here_ = false;
};

// Ends every rank of the job (MPI_Abort) if MPI is running in this process; returns otherwise
// (nothing to abort). For a rank that failed while the others may wait for it.
void abort_job(int code);

}  // namespace fastattn::comm
