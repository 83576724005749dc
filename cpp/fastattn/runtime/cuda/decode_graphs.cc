// DecodeGraphs (runtime/decode_graphs.h): fixed input buffers, per-bucket pools, lazy capture.
#include <cuda_runtime.h>

#include <cstring>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"
#include "fastattn/kernels/cuda/attention/decode/decode_cuda.h"
#include "fastattn/kernels/sampling.h"
#include "fastattn/runtime/decode_graphs.h"

namespace fastattn::runtime {
namespace {

constexpr int64_t kRowInts = static_cast<int64_t>(sizeof(kernels::SampleRow) / sizeof(int32_t));

int64_t align4(int64_t n) { return (n + 3) / 4 * 4; }  // int32 offsets at 16-byte boundaries

}  // namespace

// One batch size: the scratch its graphs write, drawn from its own pool, and its graphs.
struct DecodeGraphs::Bucket {
  Bucket(int n, Allocator* upstream, const models::DecoderModel& model)
      : size(n),
        pool(std::make_unique<PoolAllocator>(upstream)),
        scratch(pool.get()),
        logits(pool.get(), DType::kFloat32, {n, model.config().vocab_size}),
        sampled(pool.get(), DType::kInt32, {n}) {}
  int size;
  std::unique_ptr<PoolAllocator> pool;  // outlives everything below that holds its memory
  models::ModelScratch scratch;
  OwnedTensor logits;
  OwnedTensor sampled;
  std::map<int, std::unique_ptr<gpu::Graph>> graphs;  // by decode split count
  std::set<int> warmed;                               // split counts run once eagerly
};

DecodeGraphs::DecodeGraphs(const Context& ctx, const models::DecoderModel& model,
                           kvcache::KvCache& cache, int max_batch, int64_t max_blocks_per_seq)
    : ctx_(ctx),
      model_(model),
      cache_(cache),
      max_batch_(max_batch),
      width_(std::max<int64_t>(max_blocks_per_seq, 1)) {
  const int64_t B = max_batch;
  off_ids_ = 0;
  off_pos_ = off_ids_ + B;
  off_slot_ = off_pos_ + B;
  off_cu_q_ = off_slot_ + B;
  off_seqlens_ = off_cu_q_ + B + 1;
  off_cu_k_ = off_seqlens_ + B;
  off_rows_ = align4(off_cu_k_ + B + 1);
  off_table_ = align4(off_rows_ + B * kRowInts);
  const int64_t total = off_table_ + B * width_;
  inputs_ = OwnedTensor(ctx.allocator, DType::kInt32, {total});
  staging_ = OwnedTensor(pinned_host_allocator(), DType::kInt32, {total});
  std::memset(staging_.view().data(), 0, staging_.view().nbytes());
  for (int n : decode_graph_buckets(max_batch)) {
    buckets_.push_back(std::make_unique<Bucket>(n, ctx.allocator, model));
  }
}

DecodeGraphs::~DecodeGraphs() {
  // Replays may still be queued: let them finish before their graphs and memory go.
  cudaStreamSynchronize(static_cast<cudaStream_t>(ctx_.stream));
  for (auto& b : buckets_) b->graphs.clear();
}

bool DecodeGraphs::accepts(const layers::ForwardBatch& host) const {
  return !host.has_host_kv() && host.num_seqs >= 1 && host.num_seqs <= max_batch_ &&
         host.num_tokens == host.num_seqs && host.max_seqlen_q == 1 &&
         host.block_table.size(1) <= width_;
}

DecodeGraphs::Bucket& DecodeGraphs::bucket_for(int batch) {
  for (auto& b : buckets_) {
    if (b->size >= batch) return *b;
  }
  FA_THROW_AS(InvalidArgument, "decode graphs: a batch of ", batch, " exceeds max_batch ",
              max_batch_);
}

void DecodeGraphs::upload(const layers::ForwardBatch& host,
                          const std::vector<kernels::SampleRow>& rows, int size) {
  const int B = host.num_seqs;
  int32_t* s = staging_.data_as<int32_t>();
  const auto copy_ints = [&](int64_t off, const Tensor& t) {
    std::memcpy(s + off, t.data(), static_cast<size_t>(t.numel()) * sizeof(int32_t));
  };
  copy_ints(off_ids_, host.token_ids);
  copy_ints(off_pos_, host.positions);
  copy_ints(off_slot_, host.slot_mapping);
  copy_ints(off_cu_q_, host.cu_seqlens_q);
  copy_ints(off_seqlens_, host.seqlens_k);
  copy_ints(off_cu_k_, host.cu_seqlens_k);
  std::memcpy(s + off_rows_, rows.data(), rows.size() * sizeof(kernels::SampleRow));
  // Padding rows: token 0 at position 0, no KV slot (the cache write skips -1), no keys, greedy.
  const int32_t last_k = s[off_cu_k_ + B];
  for (int r = B; r < size; ++r) {
    s[off_ids_ + r] = 0;
    s[off_pos_ + r] = 0;
    s[off_slot_ + r] = -1;
    s[off_cu_q_ + r + 1] = r + 1;
    s[off_seqlens_ + r] = 0;
    s[off_cu_k_ + r + 1] = last_k;
    kernels::SampleRow greedy;
    greedy.top_k = 1;
    std::memcpy(s + off_rows_ + r * kRowInts, &greedy, sizeof(greedy));
  }
  // The block tables: row pitch width_; only the columns in use are copied.
  const int64_t w = host.block_table.size(1);
  const int32_t* table = host.block_table.data_as<const int32_t>();
  for (int r = 0; r < B; ++r) {
    std::memcpy(s + off_table_ + r * width_, table + r * host.block_table.stride(0),
                static_cast<size_t>(w) * sizeof(int32_t));
  }
  int32_t* d = inputs_.data_as<int32_t>();
  detail::copy_bytes(ctx_, d, ctx_.device, s, staging_.view().device(),
                     static_cast<size_t>(off_table_) * sizeof(int32_t));
  detail::cuda_copy_2d(ctx_, d + off_table_, static_cast<size_t>(width_) * sizeof(int32_t),
                       s + off_table_, static_cast<size_t>(width_) * sizeof(int32_t),
                       static_cast<size_t>(w) * sizeof(int32_t), static_cast<size_t>(B));
}

layers::ForwardBatch DecodeGraphs::device_batch(const layers::ForwardBatch& host, int size,
                                                int splits) const {
  int32_t* d = inputs_.data_as<int32_t>();
  const int64_t n = size;
  const Device dev = ctx_.device;
  layers::ForwardBatch b;
  b.num_tokens = n;
  b.num_seqs = size;
  b.token_ids = Tensor(d + off_ids_, DType::kInt32, {n}, dev);
  b.positions = Tensor(d + off_pos_, DType::kInt32, {n}, dev);
  b.slot_mapping = Tensor(d + off_slot_, DType::kInt32, {n}, dev);
  b.cu_seqlens_q = Tensor(d + off_cu_q_, DType::kInt32, {n + 1}, dev);
  b.seqlens_k = Tensor(d + off_seqlens_, DType::kInt32, {n}, dev);
  b.cu_seqlens_k = Tensor(d + off_cu_k_, DType::kInt32, {n + 1}, dev);
  b.block_table = Tensor(d + off_table_, DType::kInt32, {n, width_}, dev);
  b.max_seqlen_q = 1;
  b.max_seqlen_k = host.max_seqlen_k;
  b.max_total_len = host.max_total_len;
  b.cu_seqlens_k_host_total = host.cu_seqlens_k_host_total;
  b.decode_num_splits = splits;
  return b;
}

void DecodeGraphs::enqueue(Bucket& b, const layers::ForwardBatch& batch) {
  Context ctx = ctx_;
  ctx.allocator = b.pool.get();  // scratch and kernel workspaces from the bucket's pool
  kernels::cuda::decode_reset_split_counters(ctx);
  model_.forward(ctx, batch, cache_, b.scratch);
  model_.logits_all(ctx, b.scratch, b.logits.view());
  const Tensor rows(inputs_.data_as<int32_t>() + off_rows_, DType::kInt32,
                    {batch.num_seqs, kRowInts}, ctx.device);
  kernels::sample_prepared(ctx, b.logits.view(), rows, b.sampled.view());
}

void DecodeGraphs::step(const layers::ForwardBatch& host,
                        const std::vector<kernels::SampleRow>& rows, int32_t* tokens) {
  FA_CHECK(accepts(host), "decode graphs: this batch is not a graph-capturable decode step");
  FA_CHECK(rows.size() == static_cast<size_t>(host.num_seqs), "decode graphs: ", rows.size(),
           " sampler rows for ", host.num_seqs, " sequences");
  Bucket& b = bucket_for(host.num_seqs);
  const models::ModelConfig& c = model_.config();
  kernels::cuda::DecodeSplitQuery q;
  q.dtype = model_.activation_dtype();
  q.head_dim = c.head_dim;
  q.batch = b.size;
  q.num_heads_q = c.local_heads();
  q.num_heads_k = c.local_kv_heads();
  q.max_seqlen_q = 1;
  q.max_seqlen_k = host.max_seqlen_k;
  q.window_left = c.window_left();
  const int splits = kernels::cuda::decode_num_splits(ctx_.device.index, q);

  upload(host, rows, b.size);
  const layers::ForwardBatch batch = device_batch(host, b.size, splits);
  auto it = b.graphs.find(splits);
  if (it != b.graphs.end()) {
    it->second->launch(ctx_.stream);
    ++stats_.replays;
  } else if (b.warmed.count(splits) == 0) {
    enqueue(b, batch);  // first time: eagerly, which also initialises what kernels set up lazily
    b.warmed.insert(splits);
    ++stats_.eager;
  } else {
    std::unique_ptr<gpu::Graph> g = gpu::Graph::capture(ctx_.stream, [&] { enqueue(b, batch); });
    g->launch(ctx_.stream);
    b.graphs[splits] = std::move(g);
    ++stats_.captures;
    ++stats_.replays;
  }
  last_ = &b;
  last_batch_ = host.num_seqs;
  detail::copy_bytes(ctx_, tokens, Device{DeviceType::kCPU, 0}, b.sampled.data_as<int32_t>(),
                     ctx_.device, static_cast<size_t>(host.num_seqs) * sizeof(int32_t));
  synchronize(ctx_);
}

Tensor DecodeGraphs::last_logits() const {
  FA_CHECK(last_ != nullptr, "decode graphs: no step has run yet");
  return last_->logits.view().slice(0, 0, last_batch_);
}

}  // namespace fastattn::runtime
