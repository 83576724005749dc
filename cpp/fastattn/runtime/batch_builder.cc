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
  host_seqlens_k_.reserve(b);
  seqs_.reserve(b);
  ends_.reserve(b);
  tables_.reserve(b);
  host_tables_.reserve(b);
  block_table_.reserve(b * static_cast<size_t>(std::max<int64_t>(max_blocks_per_seq, 1)));
}

void BatchBuilder::clear() {
  ids_.clear();
  positions_.clear();
  slots_.clear();
  cu_q_.assign(1, 0);
  seqs_.clear();
  ends_.clear();
}

void BatchBuilder::add(const kvcache::SpillBlockManager& blocks,
                       kvcache::SpillBlockManager::SeqId seq, const int64_t* ids, int64_t n,
                       int64_t start) {
  FA_ASSERT(n > 0 && start >= 0, "empty or negative batch entry");
  FA_ASSERT(blocks_ == nullptr || blocks_ == &blocks, "one block manager per batch");
  FA_ASSERT(blocks.capacity(seq) >= start + n, "KV blocks not reserved for ", start + n, " tokens");
  blocks_ = &blocks;
  for (int64_t i = 0; i < n; ++i) {
    ids_.push_back(static_cast<int32_t>(ids[i]));
    positions_.push_back(static_cast<int32_t>(start + i));
    slots_.push_back(blocks.slot(seq, start + i));
  }
  cu_q_.push_back(cu_q_.back() + static_cast<int32_t>(n));
  seqs_.push_back(seq);
  ends_.push_back(start + n);
}

// Rows of the tables padded with block 0 to the longest (kernels stop at the key counts).
void BatchBuilder::fill_table(const std::vector<const std::vector<int32_t>*>& tables,
                              std::vector<int32_t>& out, size_t* width) {
  size_t w = 1;
  for (const auto* t : tables) w = std::max(w, t->size());
  out.assign(tables.size() * w, 0);
  for (size_t b = 0; b < tables.size(); ++b) {
    std::copy(tables[b]->begin(), tables[b]->end(), out.begin() + static_cast<int64_t>(b * w));
  }
  *width = w;
}

layers::ForwardBatch BatchBuilder::build() {
  const int B = num_seqs();
  FA_ASSERT(B > 0, "empty batch");
  tables_.clear();
  host_tables_.clear();
  seqlens_k_.clear();
  host_seqlens_k_.clear();
  layers::ForwardBatch fb;
  fb.no_cached_prefix = true;
  bool spilled = false;
  for (int b = 0; b < B; ++b) {
    const auto i = static_cast<size_t>(b);
    const int64_t host = blocks_->host_tokens(seqs_[i]);
    const int32_t q_len = cu_q_[i + 1] - cu_q_[i];
    tables_.push_back(&blocks_->device_table(seqs_[i]));
    host_tables_.push_back(&blocks_->host_table(seqs_[i]));
    seqlens_k_.push_back(static_cast<int32_t>(ends_[i] - host));
    host_seqlens_k_.push_back(static_cast<int32_t>(host));
    spilled = spilled || host > 0;
    fb.max_seqlen_q = std::max(fb.max_seqlen_q, q_len);
    fb.max_seqlen_k = std::max(fb.max_seqlen_k, seqlens_k_.back());
    fb.max_host_seqlen_k = std::max(fb.max_host_seqlen_k, host_seqlens_k_.back());
    fb.no_cached_prefix = fb.no_cached_prefix && ends_[i] == q_len;
    fb.max_total_len = std::max(fb.max_total_len, ends_[i]);
  }
  size_t width = 1;
  fill_table(tables_, block_table_, &width);
  fb.num_tokens = num_tokens();
  fb.num_seqs = B;
  const int64_t T = fb.num_tokens;
  const auto b64 = static_cast<int64_t>(B);
  fb.token_ids = Tensor(ids_.data(), DType::kInt32, {T});
  fb.positions = Tensor(positions_.data(), DType::kInt32, {T});
  fb.slot_mapping = Tensor(slots_.data(), DType::kInt32, {T});
  fb.cu_seqlens_q = Tensor(cu_q_.data(), DType::kInt32, {b64 + 1});
  fb.seqlens_k = Tensor(seqlens_k_.data(), DType::kInt32, {b64});
  fb.block_table = Tensor(block_table_.data(), DType::kInt32, {b64, static_cast<int64_t>(width)});
  cu_k_.assign(1, 0);
  for (int32_t n : seqlens_k_) cu_k_.push_back(cu_k_.back() + n);
  fb.cu_seqlens_k = Tensor(cu_k_.data(), DType::kInt32, {b64 + 1});
  fb.cu_seqlens_k_host_total = cu_k_.back();
  fb.block_table_host = fb.block_table;
  fb.seqlens_k_host = fb.seqlens_k;
  if (spilled) {
    fill_table(host_tables_, host_block_table_, &width);
    fb.host_seqlens_k = Tensor(host_seqlens_k_.data(), DType::kInt32, {b64});
    fb.host_block_table =
        Tensor(host_block_table_.data(), DType::kInt32, {b64, static_cast<int64_t>(width)});
    fb.host_cu_seqlens_q = Tensor(cu_q_.data(), DType::kInt32, {b64 + 1});
    host_cu_k_.assign(1, 0);
    for (int32_t n : host_seqlens_k_) host_cu_k_.push_back(host_cu_k_.back() + n);
    fb.host_cu_seqlens_k = Tensor(host_cu_k_.data(), DType::kInt32, {b64 + 1});
  }
  return fb;
}

}  // namespace fastattn::runtime
