/* The C interface between the core and MPI. The core does not link MPI: the shim (this header's
 * fa_mpi_shim.c, built as a small shared library `libfastattn_mpi.so` against the MPI found at
 * build time) is loaded with dlopen when a process first needs MPI (comm/mpi_runtime.cc). So a
 * build or an install without MPI works, and `import fastattention` never needs libmpi.
 *
 * Handles are opaque; every function returns 0 or an MPI error code (fa_mpi_error_string()
 * describes it). Counts are element counts that fit an int (the caller splits larger buffers). */
#ifndef FASTATTN_COMM_MPI_FA_MPI_SHIM_H_
#define FASTATTN_COMM_MPI_FA_MPI_SHIM_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FA_MPI_SHIM_ABI_VERSION 1

typedef struct fa_mpi_comm fa_mpi_comm;
typedef struct fa_mpi_request fa_mpi_request;

/* Element types of reductions (FA_MPI_BYTE only for gather / broadcast). */
enum fa_mpi_dtype {
  FA_MPI_BYTE = 0,
  FA_MPI_FLOAT32 = 1,
  FA_MPI_FLOAT64 = 2,
  FA_MPI_INT32 = 3,
  FA_MPI_INT64 = 4
};

int fa_mpi_abi_version(void);
/* MPI_Init_thread(MPI_THREAD_MULTIPLE) unless MPI is already initialised (e.g. by mpi4py):
 * *provided = the thread level, *initialized_here = 1 when this call initialised MPI. */
int fa_mpi_init(int* provided, int* initialized_here);
int fa_mpi_initialized(int* flag);
int fa_mpi_finalized(int* flag);
int fa_mpi_finalize(void);
int fa_mpi_abort(int code);
/* "Open MPI v5.0.x ..." (truncated to len). */
void fa_mpi_library_version(char* buf, int len);
void fa_mpi_error_string(int code, char* buf, int len);
int fa_mpi_thread_multiple_level(void);
int fa_mpi_thread_serialized_level(void);

/* A duplicate of MPI_COMM_WORLD whose errors return codes (MPI_ERRORS_RETURN). */
int fa_mpi_world_dup(fa_mpi_comm** out);
int fa_mpi_comm_free(fa_mpi_comm* comm);
int fa_mpi_comm_rank(fa_mpi_comm* comm, int* rank);
int fa_mpi_comm_size(fa_mpi_comm* comm, int* size);
/* Rank and size among the processes of this node (MPI_Comm_split_type SHARED). */
int fa_mpi_local_rank(fa_mpi_comm* comm, int* local_rank, int* local_size);

/* Non-blocking collectives; *req completes through fa_mpi_test. */
int fa_mpi_iallreduce_sum(fa_mpi_comm* comm, void* buf, int count, int dtype, fa_mpi_request** req);
int fa_mpi_iallreduce_max_int64(fa_mpi_comm* comm, int64_t* buf, int count, fa_mpi_request** req);
int fa_mpi_iallgather(fa_mpi_comm* comm, const void* in, void* out, int bytes_per_rank,
                      fa_mpi_request** req);
int fa_mpi_ibcast(fa_mpi_comm* comm, void* buf, int bytes, int root, fa_mpi_request** req);
int fa_mpi_ibarrier(fa_mpi_comm* comm, fa_mpi_request** req);
/* *done = 1 when the request has completed; the request is then freed. */
int fa_mpi_test(fa_mpi_request* req, int* done);

#ifdef __cplusplus
}
#endif

#endif /* FASTATTN_COMM_MPI_FA_MPI_SHIM_H_ */
