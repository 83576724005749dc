#include "fastattn/runtime/batch_builder.h"

#include <algorithm>

#include "fastattn/core/error.h"

namespace fastattn::runtime {

void BatchBuilder::reserve(int64_t max_tokens, int max_seqs, int64_t max_blocks_per_seq) {
  const auto t = static_cast<size_t>(max_tokens);
  const auto b = static_cast<size_t>(max_seqs);
  ids_.reserve(t);
  positions_.reserve(t);
  slots_.reserve(t);
  cu_q_.reserve(b + 1);
  seqlens_k_.reserve(b);
  tables_.reserve(b);
  block_table_.reserve(b * static_cast<size_t>(std::max<int64_t>(max_blocks_per_seq, 1)));
}

void BatchBuilder::clear() {
  ids_.clear();
  positions_.clear();
  slots_.clear();
  cu_q_.assign(1, 0);
  seqlens_k_.clear();
  tables_.clear();
}

void BatchBuilder::add(const kvcache::BlockManager& blocks, kvcache::BlockManager::SeqId seq,
                       const int64_t* ids, int64_t n, int64_t start) {
  FA_ASSERT(n > 0 && start >= 0, "empty or negative batch entry");
  FA_ASSERT(blocks.capacity(seq) >= start + n, "KV blocks not reserved for ", start + n, " tokens");
  for (int64_t i = 0; i < n; ++i) {
    ids_.push_back(static_cast<int32_t>(ids[i]));
    positions_.push_back(static_cast<int32_t>(start + i));
    slots_.push_back(blocks.slot(seq, start + i));
  }
  cu_q_.push_back(cu_q_.back() + static_cast<int32_t>(n));
  seqlens_k_.push_back(static_cast<int32_t>(start + n));
  tables_.push_back(&blocks.block_table(seq));
}

layers::ForwardBatch BatchBuilder::build() {
  const int B = num_seqs();
  FA_ASSERT(B > 0, "empty batch");
  // Each row holds the sequence's whole reserved table; shorter rows are padded with block 0,
  // which the attention kernel never reads (it stops at seqlens_k).
  size_t max_blocks = 1;
  for (int b = 0; b < B; ++b) max_blocks = std::max(max_blocks, tables_[static_cast<size_t>(b)]->size());
  block_table_.assign(static_cast<size_t>(B) * max_blocks, 0);
  for (int b = 0; b < B; ++b) {
    const std::vector<int32_t>& t = *tables_[static_cast<size_t>(b)];
    std::copy(t.begin(), t.end(), block_table_.begin() + static_cast<int64_t>(b * max_blocks));
  }
  layers::ForwardBatch fb;
  fb.no_cached_prefix = true;
  for (int b = 0; b < B; ++b) {
    const auto i = static_cast<size_t>(b);
    const int32_t q_len = cu_q_[i + 1] - cu_q_[i];
    fb.max_seqlen_q = std::max(fb.max_seqlen_q, q_len);
    fb.max_seqlen_k = std::max(fb.max_seqlen_k, seqlens_k_[i]);
    fb.no_cached_prefix = fb.no_cached_prefix && seqlens_k_[i] == q_len;
  }
  fb.num_tokens = num_tokens();
  fb.num_seqs = B;
  const int64_t T = fb.num_tokens;
  fb.token_ids = Tensor(ids_.data(), DType::kInt32, {T});
  fb.positions = Tensor(positions_.data(), DType::kInt32, {T});
  fb.slot_mapping = Tensor(slots_.data(), DType::kInt32, {T});
  fb.cu_seqlens_q = Tensor(cu_q_.data(), DType::kInt32, {static_cast<int64_t>(B) + 1});
  fb.seqlens_k = Tensor(seqlens_k_.data(), DType::kInt32, {static_cast<int64_t>(B)});
  fb.block_table = Tensor(block_table_.data(), DType::kInt32,
                          {static_cast<int64_t>(B), static_cast<int64_t>(max_blocks)});
  return fb;
}

}  // namespace fastattn::runtime
