// The few CUDA runtime services a GPU session needs (CUDA builds only; defined in cuda/).
#pragma once

#if defined(FASTATTN_WITH_CUDA)
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace fastattn::runtime::gpu {

struct DeviceInfo {
  std::string name;
  int compute_capability = 0;  // e.g. 90
  size_t total_bytes = 0;
  size_t free_bytes = 0;
};

// CUDA devices visible (0 when there is no driver or no GPU).
int device_count();

// Checks the device exists (InvalidArgument naming it and the count otherwise), makes it the
// calling thread's current device and describes it.
DeviceInfo use_device(int device);
// Free / total bytes of the current device now.
DeviceInfo current_device_memory();

// A non-blocking stream on the current device, owned by the holder.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void* get() const { return stream_; }

 private:
  void* stream_ = nullptr;
};

// A CUDA graph captured from the work queued on a stream, instantiated for replay.
class Graph {
 public:
  // Captures what record() queues on `stream` (thread-local capture mode: meanwhile this thread
  // may not make calls that would synchronise) and instantiates it. If record() throws or the
  // capture fails, the capture is ended and discarded, the stream is usable again, and the
  // exception propagates (a CUDA error as fastattn::Error naming the call).
  static std::unique_ptr<Graph> capture(void* stream, const std::function<void()>& record);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  // Queues one replay on `stream`.
  void launch(void* stream) const;
  size_t num_nodes() const { return nodes_; }

 private:
  Graph() = default;
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  size_t nodes_ = 0;
};

}  // namespace fastattn::runtime::gpu
#endif
