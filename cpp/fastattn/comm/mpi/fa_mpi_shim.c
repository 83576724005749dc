/* The MPI shim: thin C wrappers over MPI, compiled against the MPI headers found at build time
 * and loaded by the core with dlopen (see fa_mpi_shim.h for why). No logic lives here beyond
 * boxing MPI handles. */
#include "fa_mpi_shim.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

struct fa_mpi_comm {
  MPI_Comm comm;
};

struct fa_mpi_request {
  MPI_Request req;
};

static MPI_Datatype to_mpi_type(int dtype) {
  switch (dtype) {
    case FA_MPI_FLOAT32:
      return MPI_FLOAT;
    case FA_MPI_FLOAT64:
      return MPI_DOUBLE;
    case FA_MPI_INT32:
      return MPI_INT32_T;
    case FA_MPI_INT64:
      return MPI_INT64_T;
    default:
      return MPI_BYTE;
  }
}

static int new_request(fa_mpi_request** out) {
  *out = (fa_mpi_request*)malloc(sizeof(fa_mpi_request));
  return *out == NULL ? MPI_ERR_NO_MEM : MPI_SUCCESS;
}

/* Frees the box when the MPI call failed (no request was started). */
static int started(int rc, fa_mpi_request** req) {
  if (rc != MPI_SUCCESS) {
    free(*req);
    *req = NULL;
  }
  return rc;
}

int fa_mpi_abi_version(void) { return FA_MPI_SHIM_ABI_VERSION; }

int fa_mpi_init(int* provided, int* initialized_here) {
  int flag = 0;
  int rc = MPI_Initialized(&flag);
  if (rc != MPI_SUCCESS) return rc;
  *initialized_here = 0;
  if (flag) return MPI_Query_thread(provided);
  rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, provided);
  if (rc == MPI_SUCCESS) *initialized_here = 1;
  return rc;
}

int fa_mpi_initialized(int* flag) { return MPI_Initialized(flag); }
int fa_mpi_finalized(int* flag) { return MPI_Finalized(flag); }
int fa_mpi_finalize(void) { return MPI_Finalize(); }
int fa_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
int fa_mpi_thread_multiple_level(void) { return MPI_THREAD_MULTIPLE; }
int fa_mpi_thread_serialized_level(void) { return MPI_THREAD_SERIALIZED; }

void fa_mpi_library_version(char* buf, int len) {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  if (len <= 0) return;
  buf[0] = '\0';
  if (MPI_Get_library_version(v, &n) != MPI_SUCCESS) return;
  strncpy(buf, v, (size_t)len - 1);
  buf[len - 1] = '\0';
}

void fa_mpi_error_string(int code, char* buf, int len) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (len <= 0) return;
  if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) {
    strncpy(s, "unknown MPI error", sizeof(s));
  }
  strncpy(buf, s, (size_t)len - 1);
  buf[len - 1] = '\0';
}

int fa_mpi_world_dup(fa_mpi_comm** out) {
  int rc;
  *out = (fa_mpi_comm*)malloc(sizeof(fa_mpi_comm));
  if (*out == NULL) return MPI_ERR_NO_MEM;
  /* Errors on the world communicator return too, so a failure in the dup itself is reported. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  rc = MPI_Comm_dup(MPI_COMM_WORLD, &(*out)->comm);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler((*out)->comm, MPI_ERRORS_RETURN);
  if (rc != MPI_SUCCESS) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

int fa_mpi_comm_free(fa_mpi_comm* comm) {
  int rc = MPI_Comm_free(&comm->comm);
  free(comm);
  return rc;
}

int fa_mpi_comm_rank(fa_mpi_comm* comm, int* rank) { return MPI_Comm_rank(comm->comm, rank); }
int fa_mpi_comm_size(fa_mpi_comm* comm, int* size) { return MPI_Comm_size(comm->comm, size); }

int fa_mpi_local_rank(fa_mpi_comm* comm, int* local_rank, int* local_size) {
  MPI_Comm node;
  int rc = MPI_Comm_split_type(comm->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return rc;
  rc = MPI_Comm_rank(node, local_rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(node, local_size);
  MPI_Comm_free(&node);
  return rc;
}

int fa_mpi_iallreduce_sum(fa_mpi_comm* comm, void* buf, int count, int dtype,
                          fa_mpi_request** req) {
  int rc = new_request(req);
  if (rc != MPI_SUCCESS) return rc;
  return started(MPI_Iallreduce(MPI_IN_PLACE, buf, count, to_mpi_type(dtype), MPI_SUM, comm->comm,
                                &(*req)->req),
                 req);
}

int fa_mpi_iallreduce_max_int64(fa_mpi_comm* comm, int64_t* buf, int count, fa_mpi_request** req) {
  int rc = new_request(req);
  if (rc != MPI_SUCCESS) return rc;
  return started(
      MPI_Iallreduce(MPI_IN_PLACE, buf, count, MPI_INT64_T, MPI_MAX, comm->comm, &(*req)->req),
      req);
}

int fa_mpi_iallgather(fa_mpi_comm* comm, const void* in, void* out, int bytes_per_rank,
                      fa_mpi_request** req) {
  int rc = new_request(req);
  if (rc != MPI_SUCCESS) return rc;
  return started(MPI_Iallgather(in, bytes_per_rank, MPI_BYTE, out, bytes_per_rank, MPI_BYTE,
                                comm->comm, &(*req)->req),
                 req);
}

int fa_mpi_ibcast(fa_mpi_comm* comm, void* buf, int bytes, int root, fa_mpi_request** req) {
  int rc = new_request(req);
  if (rc != MPI_SUCCESS) return rc;
  return started(MPI_Ibcast(buf, bytes, MPI_BYTE, root, comm->comm, &(*req)->req), req);
}

int fa_mpi_ibarrier(fa_mpi_comm* comm, fa_mpi_request** req) {
  int rc = new_request(req);
  if (rc != MPI_SUCCESS) return rc;
  return started(MPI_Ibarrier(comm->comm, &(*req)->req), req);
}

int fa_mpi_test(fa_mpi_request* req, int* done) {
  int rc = MPI_Test(&req->req, done, MPI_STATUS_IGNORE);
  if (rc == MPI_SUCCESS && *done) free(req);
  return rc;
}
