// SpillPathChooser: how a forward pass with host-resident KV (kvcache/spill_manager.h) reads the
// host part, chosen per step from measured times:
//   stream  the host blocks are copied to the GPU and attended there (pays PCIe bandwidth);
//   cpu     the CPU attends to them where they are, while the GPU does the device part, and
//           only q and the partial outputs cross the bus (pays CPU memory bandwidth).
// Prefill-sized passes (many queries: compute-bound) always stream on a GPU. Decode-sized ones
// ("auto") try both, then take the one with the lower measured seconds per host token,
// re-measuring the other every kReprobe steps. On the CPU backend both parts are in host
// memory and the cpu path reads them in place.
#pragma once

#include <cstdint>
#include <string>

#include "fastattn/layers/forward_batch.h"

namespace fastattn::runtime {

class SpillPathChooser {
 public:
  using Path = layers::ForwardBatch::SpillPath;
  static constexpr int64_t kPrefillTokens = 16;  // more queries than this: stream
  static constexpr int64_t kReprobe = 32;

  // mode: "auto", "cpu" or "stream" (InvalidArgument naming spill_attention otherwise).
  explicit SpillPathChooser(const std::string& mode = "auto");

  Path choose(bool on_gpu, int64_t num_tokens);
  // A finished step that used `path` over `host_tokens` host-resident tokens in `seconds`.
  void record(Path path, double seconds, int64_t host_tokens);
  // Measured seconds per host token of a path (0 = not measured yet).
  double cost(Path path) const { return cost_[static_cast<int>(path)]; }

 private:
  std::string mode_;
  double cost_[2] = {0.0, 0.0};
  int64_t decisions_ = 0;
};

}  // namespace fastattn::runtime
