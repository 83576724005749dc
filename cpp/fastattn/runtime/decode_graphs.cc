#include "fastattn/runtime/decode_graphs.h"

namespace fastattn::runtime {

bool decode_graphs_supported(const models::ModelConfig& c, int world_size, const char** why) {
  if (world_size > 1) {
    *why =
        "tensor-parallel sessions run their decode steps eagerly (NCCL inside a CUDA graph is "
        "not tested here yet)";
    return false;
  }
  if (!c.learned_positions() && c.rope.scaling == kernels::RopeScaling::kDynamicNTK) {
    *why =
        "dynamic-NTK RoPE changes its frequencies with the sequence length, which a captured "
        "step cannot follow";
    return false;
  }
  *why = "";
  return true;
}

}  // namespace fastattn::runtime
