// The GPU memory plan is host arithmetic: checked here on a Llama-7B shape with made-up device
// sizes (no GPU needed).
#include "fastattn/runtime/memory_plan.h"

#include "fastattn/runtime/decode_graphs.h"
#include "test_util.h"

using namespace fastattn;
using fastattn::runtime::MemoryPlanInput;
using fastattn::runtime::plan_gpu_memory;

namespace {

constexpr size_t kGiB = size_t{1} << 30;

models::ModelConfig llama7b() {
  models::ModelConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 4096;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 32;
  c.head_dim = 128;
  c.intermediate_size = 11008;
  c.max_position_embeddings = 4096;
  return c;
}

MemoryPlanInput input_80g() {
  MemoryPlanInput in;
  in.device_total = 80 * kGiB;
  in.weight_bytes = 13 * kGiB;
  in.device_free = in.device_total - in.weight_bytes - kGiB / 2;  // weights + CUDA context
  in.prefill_chunk_tokens = 2048;
  in.max_batch = 8;
  in.max_seq_len = 1 << 20;
  in.kv_block_size = 16;
  return in;
}

}  // namespace

TEST(kv_per_token_is_layers_x_kv_heads_x_head_dim_x_2_x_dtype) {
  const auto p = plan_gpu_memory(llama7b(), input_80g());
  CHECK(p.kv_bytes_per_token == size_t{32} * 32 * 128 * 2 * 2);
}

TEST(plan_stays_within_budget_and_uses_it) {
  const MemoryPlanInput in = input_80g();
  const auto p = plan_gpu_memory(llama7b(), in);
  const size_t used_before = in.device_total - in.device_free;
  CHECK(used_before + p.activations + p.kv_bytes <= p.budget);
  // Less than one block of every sequence's worth is left unused.
  const size_t block = p.kv_bytes_per_token * 16;
  CHECK(used_before + p.activations + p.kv_bytes + block * 8 > p.budget);
  CHECK(p.kv_tokens == p.kv_blocks * 16);
  CHECK(p.describe().find("KV cache") != std::string::npos);
}

TEST(kv_capped_by_what_the_sequences_can_use) {
  MemoryPlanInput in = input_80g();
  in.max_seq_len = 1000;
  in.max_batch = 2;
  const auto p = plan_gpu_memory(llama7b(), in);
  CHECK(p.kv_blocks == 2 * 63);  // ceil(1000 / 16) blocks per sequence
}

TEST(requested_tokens_that_fit_are_granted_exactly) {
  MemoryPlanInput in = input_80g();
  in.requested_cache_tokens = 1000;
  const auto p = plan_gpu_memory(llama7b(), in);
  CHECK(p.kv_tokens == 1008);
}

TEST(requested_tokens_that_do_not_fit_throw_with_the_plan) {
  MemoryPlanInput in = input_80g();
  in.requested_cache_tokens = int64_t{1} << 30;
  CHECK_THROWS(plan_gpu_memory(llama7b(), in), fastattn::Error, "max_cache_tokens");
}

TEST(weights_filling_the_gpu_leave_no_kv_and_throw) {
  MemoryPlanInput in = input_80g();
  in.device_free = kGiB / 4;
  CHECK_THROWS(plan_gpu_memory(llama7b(), in), fastattn::Error, "one block");
  in = input_80g();
  in.memory_fraction = 0.1;  // 8 GiB budget < 13 GiB of weights
  CHECK_THROWS(plan_gpu_memory(llama7b(), in), fastattn::Error, "one block");
}

TEST(bad_fraction_is_rejected) {
  MemoryPlanInput in = input_80g();
  in.memory_fraction = 1.5;
  CHECK_THROWS(plan_gpu_memory(llama7b(), in), fastattn::Error, "gpu_memory_fraction");
}

TEST_MAIN()

TEST(decode_graph_scratch_is_counted_before_the_kv_cache) {
  MemoryPlanInput in = input_80g();
  const auto eager = plan_gpu_memory(llama7b(), in);
  CHECK(eager.decode_graphs == 0);
  in.decode_graph_buckets = {1, 2, 4, 8};
  const auto graphed = plan_gpu_memory(llama7b(), in);
  CHECK(graphed.decode_graphs ==
        fastattn::runtime::decode_graph_bytes(llama7b(), DType::kFloat16, {1, 2, 4, 8}));
  // Each bucket: its rows' activations and logits, and 16 MiB for the split partials.
  CHECK(graphed.decode_graphs > 4 * (size_t{16} << 20));
  CHECK(graphed.decode_graphs < 4 * (size_t{32} << 20));
  const size_t used_before = in.device_total - in.device_free;
  CHECK(used_before + graphed.activations + graphed.decode_graphs + graphed.kv_bytes <=
        graphed.budget);
  CHECK(graphed.kv_blocks < eager.kv_blocks);
  CHECK(graphed.describe().find("decode graphs") != std::string::npos);
}

TEST(decode_graph_buckets_cover_every_batch_size_up_to_max_batch) {
  using fastattn::runtime::decode_graph_buckets;
  CHECK(decode_graph_buckets(1) == std::vector<int>{1});
  CHECK(decode_graph_buckets(3) == (std::vector<int>{1, 2, 3}));
  CHECK(decode_graph_buckets(8) == (std::vector<int>{1, 2, 4, 8}));
  CHECK(decode_graph_buckets(16) == (std::vector<int>{1, 2, 4, 8, 16}));
  CHECK(decode_graph_buckets(20) == (std::vector<int>{1, 2, 4, 8, 16, 20}));
  for (int max_batch = 1; max_batch <= 70; ++max_batch) {
    const std::vector<int> b = decode_graph_buckets(max_batch);
    CHECK(b.back() == max_batch);
    for (size_t i = 1; i < b.size(); ++i) CHECK(b[i] > b[i - 1]);
  }
}
