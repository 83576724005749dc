#include "fastattn/runtime/gpu_runtime.h"

#include <cuda_runtime.h>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/error.h"

namespace fastattn::runtime::gpu {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    count = 0;
  }
  return count;
}

DeviceInfo use_device(int device) {
  const int count = device_count();
  FA_CHECK(device >= 0 && device < count, "device 'cuda:", device, "' does not exist: ", count,
           " CUDA device(s) visible", count == 0 ? " (no driver or no GPU?)" : "");
  FA_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  FA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info = current_device_memory();
  info.name = prop.name;
  info.compute_capability = prop.major * 10 + prop.minor;
  return info;
}

DeviceInfo current_device_memory() {
  DeviceInfo info;
  FA_CUDA_CHECK(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
  return info;
}

Stream::Stream() {
  cudaStream_t s = nullptr;
  FA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
}

Stream::~Stream() {
  if (stream_ != nullptr) {
    cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
    cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  }
}

std::unique_ptr<Graph> Graph::capture(void* stream, const std::function<void()>& record) {
  const auto s = static_cast<cudaStream_t>(stream);
  FA_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    record();
  } catch (...) {
    // End the capture whatever state it is in, so the stream takes ordinary work again.
    if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  FA_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  std::unique_ptr<Graph> g(new Graph());
  g->graph_ = graph;
  FA_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &g->nodes_));
  cudaGraphExec_t exec = nullptr;
  // (WithFlags: the same call on CUDA 11.4+ and 12 / 13, whose cudaGraphInstantiate differ)
  FA_CUDA_CHECK(cudaGraphInstantiateWithFlags(&exec, graph, 0));
  g->exec_ = exec;
  return g;
}

Graph::~Graph() {
  if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_ != nullptr) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
}

void Graph::launch(void* stream) const {
  FA_CUDA_CHECK(
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream)));
}

}  // namespace fastattn::runtime::gpu
