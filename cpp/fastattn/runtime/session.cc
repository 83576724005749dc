#include "fastattn/runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <limits>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"
#include "fastattn/core/logging.h"

namespace fastattn::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Returns every sequence's KV blocks to the pool when a call ends, normally or by an exception.
struct FreeAllOnExit {
  kvcache::SpillBlockManager& blocks;
  ~FreeAllOnExit() { blocks.reset(); }
};

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

struct InferenceSession::Sequence {
  size_t index = 0;  // request index in the batch
  const std::vector<int64_t>* prompt = nullptr;
  kvcache::SpillBlockManager::SeqId id = 0;
  int64_t cached = 0;  // tokens already written to the KV cache
  std::vector<int64_t>* out = nullptr;
  bool done = false;
};

InferenceSession::InferenceSession(const std::string& model_dir, const SessionOptions& options)
    : options_(options), spill_paths_(options.spill_attention) {
  const Device device = check_options(options);
  const models::WeightLoad load = models::weight_load_from_name(options.load);
  init(models::load_model_config(model_dir), device, model_dir,
       [&] { return std::make_unique<models::DecoderModel>(model_dir, tp_.rank(), device, load); });
}

InferenceSession::InferenceSession(const models::ModelConfig& config,
                                   const std::map<std::string, Tensor>& weights,
                                   const SessionOptions& options, std::shared_ptr<const void> owner)
    : options_(options), spill_paths_(options.spill_attention) {
  const Device device = check_options(options);
  const std::string source = "in-memory weights";
  init(config, device, source, [&] {
    const std::string label = source + " of rank " + std::to_string(tp_.rank());
    return std::make_unique<models::DecoderModel>(
        config, models::WeightStore::from_memory(weights, label, std::move(owner)), tp_.rank(),
        device);
  });
}

Device InferenceSession::check_options(const SessionOptions& options) const {
  const Device device = rank_device(options.device);  // "cuda" under mpirun: the local rank's GPU
#if !defined(FASTATTN_WITH_CUDA)
  FA_CHECK(device.type == DeviceType::kCPU, "device '", options.device,
           "': this build has no CUDA support (built for CPU only); use device='cpu'");
#endif
  FA_CHECK(options.num_threads >= 0, "num_threads: must be >= 0 (0 = default), got ",
           options.num_threads);
  FA_CHECK(options.max_batch >= 1, "max_batch: must be >= 1, got ", options.max_batch);
  FA_CHECK(options.max_seq_len >= 0 && options.max_seq_len <= std::numeric_limits<int32_t>::max(),
           "max_seq_len: must be in 1..2^31-1 (or 0 for the model's max_position_embeddings), ",
           "got ", options.max_seq_len);
  FA_CHECK(options.kv_block_size >= 1 && options.kv_block_size <= 4096,
           "kv_block_size: must be in 1..4096, got ", options.kv_block_size);
  FA_CHECK(options.max_cache_tokens >= 0, "max_cache_tokens: must be >= 0 (0 = default), got ",
           options.max_cache_tokens);
  FA_CHECK(options.prefill_chunk_tokens >= 1, "prefill_chunk_tokens: must be >= 1, got ",
           options.prefill_chunk_tokens);
  (void)models::weight_load_from_name(options.load);  // InvalidArgument naming a bad value
  if (options.kv_dtype != "auto") {
    const DType kv_dtype = dtype_from_name(options.kv_dtype, "kv_dtype");
    FA_CHECK(is_floating(kv_dtype), "kv_dtype: must be auto, float32, float16 or bfloat16, got '",
             options.kv_dtype, "'");
  }
  return device;
}

void InferenceSession::init(
    const models::ModelConfig& cfg, const Device& device, const std::string& source,
    const std::function<std::unique_ptr<models::DecoderModel>()>& make_model) {
  // Before any weight is mapped: tp_size against the mpirun job (an error on every rank when
  // they differ), and the communicator (none for one rank: no MPI needed).
  tp_ = TensorParallel(cfg, device, TensorParallelOptions{options_.tp_overlap, options_.tp_tiles});

  setup_device(device);
  ctx_.comm = tp_.comm();
  scratch_ = models::ModelScratch(ctx_.allocator);
  logits_ = OwnedTensor(ctx_.allocator, DType::kFloat32, {0});
  sampled_ = OwnedTensor(ctx_.allocator, DType::kInt32, {0});
  sampled_host_ = OwnedTensor(pinned_host_allocator(), DType::kInt32, {0});
  device_batch_ = std::make_unique<DeviceBatch>(ctx_.allocator, pinned_host_allocator());
  // A rank whose shard fails to load must not leave the others waiting: all ranks throw.
  tp_.run_on_all_ranks("loading the model", [&] { model_ = make_model(); });
  resolve_options();

  const DType kv_dtype = resolve_kv_dtype();
  options_.kv_dtype = dtype_name(kv_dtype);
  const int bs = options_.kv_block_size;
  const int64_t num_blocks = plan_cache_blocks(kv_dtype);
  cache_ = std::make_unique<kvcache::KvCache>(model_->kv_cache_config(num_blocks, bs, kv_dtype),
                                              ctx_.allocator);
  const int64_t host_blocks = (options_.host_kv_tokens + bs - 1) / bs;
  if (host_blocks > 0) {
    FA_CHECK(config().window_left() < 0, "host_kv_tokens: ", config().file, " uses a sliding ",
             "window, whose old keys are never attended: size max_cache_tokens to the window ",
             "instead of spilling to the host");
    const int64_t min_device = (options_.prefill_chunk_tokens + bs - 1) / bs + options_.max_batch;
    FA_CHECK(num_blocks >= min_device, "host_kv_tokens: the device KV pool (", num_blocks * bs,
             " tokens) must hold at least one prefill chunk plus a block per sequence (",
             min_device * bs, " tokens) for spilling to work; lower prefill_chunk_tokens or ",
             "max_batch, or give the device pool more memory");
    host_cache_ = std::make_unique<kvcache::KvCache>(
        model_->kv_cache_config(host_blocks, bs, kv_dtype),
        device.type == DeviceType::kCUDA ? pinned_host_allocator() : host_allocator());
  }
  blocks_ = std::make_unique<kvcache::SpillBlockManager>(num_blocks, host_blocks, bs);
  plan_.host_kv_tokens = host_blocks * bs;
  plan_.host_kv_bytes = host_cache_ ? host_cache_->nbytes() : 0;
  if (device.type != DeviceType::kCUDA) {
    plan_.weights = model_->weight_bytes();
    plan_.kv_blocks = num_blocks;
    plan_.kv_tokens = num_blocks * bs;
    plan_.kv_bytes = cache_->nbytes();
  }
  const int64_t max_blocks_per_seq = (options_.max_seq_len + bs - 1) / bs;
  builder_.reserve(std::max<int64_t>(options_.prefill_chunk_tokens, options_.max_batch),
                   options_.max_batch, max_blocks_per_seq);
  if (device.type == DeviceType::kCUDA && options_.cuda_graphs) {
    const char* why = "";
    if (decode_graphs_supported(config(), tp_.world_size(), &why)) {
#if defined(FASTATTN_WITH_CUDA)
      graphs_ = std::make_unique<DecodeGraphs>(ctx_, *model_, *cache_, options_.max_batch,
                                               max_blocks_per_seq);
#endif
    } else {
      graphs_off_reason_ = why;
      if (options_.verbose && tp_.rank() == 0) {
        log_message(LogLevel::kInfo, detail::concat("CUDA graphs off: ", why));
      }
    }
  }
  sample_params_.reserve(static_cast<size_t>(options_.max_batch));
  sample_steps_.reserve(static_cast<size_t>(options_.max_batch));
  rows_.reserve(static_cast<size_t>(options_.max_batch));

  if (options_.verbose && tp_.rank() == 0) {
    log_message(LogLevel::kInfo,
                detail::concat(
                    "loaded ", source, " (", config().architecture, ", ", config().num_layers,
                    " layers, ", mib(weight_bytes()), " of weights mapped); KV cache ",
                    mib(kv_cache_bytes()), " for ", num_blocks * bs, " tokens (", num_blocks,
                    " blocks of ", bs, ", ", options_.kv_dtype, "); max_batch ", options_.max_batch,
                    ", max_seq_len ", options_.max_seq_len, ", threads ", options_.num_threads));
  }
  if (options_.verbose) {
    log_message(LogLevel::kInfo,
                detail::concat("memory plan on ", device.str(), ": ", plan_.describe()));
  }
}

void InferenceSession::setup_device(const Device& device) {
  ctx_ = cpu_context(options_.num_threads);
  if (device.type != DeviceType::kCUDA) return;
#if defined(FASTATTN_WITH_CUDA)
  gpu::use_device(device.index);
  stream_ = std::make_unique<gpu::Stream>();
  ctx_.device = device;
  ctx_.allocator = device_allocator(device.index);
  ctx_.stream = stream_->get();
#endif
}

DType InferenceSession::resolve_kv_dtype() const {
  const DType act = model_->activation_dtype();
  if (options_.kv_dtype == "auto") return act;
  const DType kv = dtype_from_name(options_.kv_dtype, "kv_dtype");
  FA_CHECK(ctx_.device.type == DeviceType::kCPU || kv == act, "kv_dtype '", options_.kv_dtype,
           "': a GPU session keeps the KV cache in the model's dtype (", dtype_name(act),
           "); pass kv_dtype='auto'");
  return kv;
}

int64_t InferenceSession::plan_cache_blocks(DType kv_dtype) {
  const int bs = options_.kv_block_size;
  if (ctx_.device.type != DeviceType::kCUDA) {
    if (options_.max_cache_tokens == 0) {
      options_.max_cache_tokens =
          static_cast<int64_t>(options_.max_batch) * std::min<int64_t>(options_.max_seq_len, 4096);
    }
    return (options_.max_cache_tokens + bs - 1) / bs;
  }
#if defined(FASTATTN_WITH_CUDA)
  const gpu::DeviceInfo mem = gpu::current_device_memory();
  MemoryPlanInput in;
  in.device_total = mem.total_bytes;
  // Blocks our caching allocator holds but no one uses (a session freed before this one) are
  // free for this session: the allocator gives them back to the driver when a request fails.
  in.device_free = std::min(
      mem.total_bytes, mem.free_bytes + device_allocator_stats(ctx_.device.index).cached_bytes);
  in.weight_bytes = model_->device_weight_bytes();
  in.memory_fraction = options_.gpu_memory_fraction;
  in.activation_dtype = model_->activation_dtype();
  in.prefill_chunk_tokens = options_.prefill_chunk_tokens;
  in.max_batch = options_.max_batch;
  in.max_seq_len = options_.max_seq_len;
  in.kv_block_size = bs;
  in.kv_dtype = kv_dtype;
  in.requested_cache_tokens = options_.max_cache_tokens;
  const char* why = "";
  if (options_.cuda_graphs && decode_graphs_supported(config(), tp_.world_size(), &why)) {
    in.decode_graph_buckets = decode_graph_buckets(options_.max_batch);
  }
  if (in.requested_cache_tokens == 0 && options_.gpu_kv_budget > 0) {
    // A KV budget: a fraction of the GPU's memory, or bytes.
    const double bytes = options_.gpu_kv_budget <= 1.0
                             ? options_.gpu_kv_budget * static_cast<double>(mem.total_bytes)
                             : options_.gpu_kv_budget;
    kvcache::KvCacheConfig kc = model_->kv_cache_config(1, bs, kv_dtype);
    const double per_token = static_cast<double>(kvcache::KvCache::bytes_per_token(kc));
    in.requested_cache_tokens = static_cast<int64_t>(bytes / per_token) / bs * bs;
    FA_CHECK(in.requested_cache_tokens >= bs, "gpu_kv_budget ", options_.gpu_kv_budget,
             " is below one KV block (", static_cast<int64_t>(per_token) * bs, " bytes)");
  }
  plan_ = plan_gpu_memory(config(), in);
  options_.max_cache_tokens = plan_.kv_tokens;
  return plan_.kv_blocks;
#else
  (void)kv_dtype;
  return 0;
#endif
}

void InferenceSession::forward(layers::ForwardBatch host_batch) {
  if (host_batch.has_host_kv()) {
    host_batch.spill_path =
        spill_paths_.choose(ctx_.device.type == DeviceType::kCUDA, host_batch.num_tokens);
    (host_batch.spill_path == layers::ForwardBatch::SpillPath::kStream
         ? timings_.spill_stream_steps
         : timings_.spill_cpu_steps)++;
  }
  const layers::ForwardBatch batch = device_batch_->upload(ctx_, host_batch);
  model_->forward(ctx_, batch, *cache_, scratch_, host_cache_.get());
}

void InferenceSession::reserve_kv(kvcache::SpillBlockManager::SeqId seq, int64_t start,
                                  int64_t end) {
  blocks_->reserve(seq, end, start, [this](const std::vector<kvcache::SpillMove>& moves) {
    // Queued on the session stream: ordered after the passes that wrote the blocks and before
    // any later write into the freed device blocks, without a host wait.
    const kvcache::KvCacheConfig& c = cache_->config();
    const size_t block_bytes = static_cast<size_t>(c.block_size) *
                               static_cast<size_t>(c.num_kv_heads) *
                               static_cast<size_t>(c.head_dim) * dtype_size(c.dtype);
    for (int l = 0; l < c.num_layers; ++l) {
      for (const kvcache::SpillMove& m : moves) {
        const auto src = static_cast<size_t>(m.device_block) * block_bytes;
        const auto dst = static_cast<size_t>(m.host_block) * block_bytes;
        detail::copy_bytes(ctx_, static_cast<char*>(host_cache_->k(l).data()) + dst,
                           host_cache_->k(l).device(),
                           static_cast<const char*>(cache_->k(l).data()) + src,
                           cache_->k(l).device(), block_bytes);
        detail::copy_bytes(ctx_, static_cast<char*>(host_cache_->v(l).data()) + dst,
                           host_cache_->v(l).device(),
                           static_cast<const char*>(cache_->v(l).data()) + src,
                           cache_->v(l).device(), block_bytes);
      }
    }
  });
}

void InferenceSession::check_fits(const std::vector<int64_t>& totals) const {
  int64_t need = 0;
  for (int64_t t : totals) need += blocks_->blocks_for(t);
  const int64_t have = blocks_->free_device_blocks() + blocks_->free_host_blocks();
  if (need > have) {
    const int64_t bs = blocks_->block_size();
    FA_THROW_AS(OutOfMemory, "KV cache: this batch needs ", need * bs, " tokens of cache (", need,
                " blocks of ", bs, " for the prompts + max_new_tokens) but the cache holds ",
                have * bs, " (device ", blocks_->device_blocks() * bs, " + host ",
                blocks_->host_blocks() * bs, " tokens). Memory plan: ", plan_.describe(),
                ". Raise max_cache_tokens / gpu_kv_budget / host_kv_tokens, or lower the batch or ",
                "max_new_tokens");
  }
}

InferenceSession::~InferenceSession() = default;

void InferenceSession::check_no_engine(const char* what) const {
  FA_CHECK(!engine_attached_, what, ": this session is driven by an Engine (in-flight batching); ",
           "submit requests to the Engine, or use another session");
}

void InferenceSession::resolve_options() {
  const models::ModelConfig& c = config();
  if (options_.max_seq_len == 0) options_.max_seq_len = c.max_position_embeddings;
  // A learned position table has no row past max_position_embeddings: refuse, do not warn.
  FA_CHECK(!c.learned_positions() || options_.max_seq_len <= c.max_position_embeddings,
           "max_seq_len ", options_.max_seq_len, " exceeds the model's max_position_embeddings ",
           c.max_position_embeddings, ": ", c.file, " has learned absolute position embeddings ",
           "(position_embedding 'learned'), with no row for later positions; lower max_seq_len");
  if (options_.max_seq_len > c.max_position_embeddings) {
    FA_LOG(kWarning, "max_seq_len ", options_.max_seq_len, " exceeds the model's ",
           "max_position_embeddings ", c.max_position_embeddings,
           ": positions beyond it were not trained");
  }
  options_.num_threads = context_threads(ctx_);
  ctx_.num_threads = options_.num_threads;
}

void InferenceSession::check_prompt(const std::vector<int64_t>& prompt, size_t index,
                                    int64_t max_new) const {
  const int64_t vocab = config().vocab_size;
  const int64_t len = static_cast<int64_t>(prompt.size());
  FA_CHECK(len > 0, "prompt ", index, " is empty; every prompt needs at least one token");
  for (size_t p = 0; p < prompt.size(); ++p) {
    FA_CHECK(prompt[p] >= 0 && prompt[p] < vocab, "prompt ", index, ", position ", p, ": token id ",
             prompt[p], " is out of range [0, ", vocab, ")");
  }
  FA_CHECK(len <= options_.max_seq_len, "prompt ", index, " has ", len,
           " tokens, more than max_seq_len = ", options_.max_seq_len);
  // (subtracted, not added: len <= max_seq_len holds here, and len + max_new could overflow)
  FA_CHECK(max_new <= options_.max_seq_len - len, "prompt ", index, " (", len,
           " tokens) + max_new_tokens (", max_new, ") = ", len + max_new,
           " exceeds max_seq_len = ", options_.max_seq_len);
}

void InferenceSession::check_generate_options(const GenerateOptions& o) const {
  FA_CHECK(o.max_new_tokens >= 0, "max_new_tokens: must be >= 0, got ", o.max_new_tokens);
  const kernels::SamplingParams& s = o.sampling;
  FA_CHECK(s.temperature >= 0.0f, "temperature: must be >= 0 (0 = greedy), got ", s.temperature);
  FA_CHECK(s.top_k >= 0, "top_k: must be >= 0 (0 = no limit), got ", s.top_k);
  FA_CHECK(s.top_p > 0.0f && s.top_p <= 1.0f, "top_p: must be in (0, 1], got ", s.top_p);
  for (int64_t t : o.stop_tokens) {
    FA_CHECK(t >= 0 && t < config().vocab_size, "stop_tokens: token id ", t,
             " is out of range [0, ", config().vocab_size, ")");
  }
}

std::vector<std::vector<int64_t>> InferenceSession::generate(
    const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& o) {
  std::lock_guard<std::mutex> lock(mu_);
  if (tp_.world_size() > 1) {  // first: a rank whose arguments differ must not fail alone
    Fingerprint f;
    for (const auto& p : prompts) f.add_tokens(p);
    f.add(prompts.size()).add(o.max_new_tokens).add(o.sampling.seed).add(o.sampling.top_k);
    f.add_float(o.sampling.temperature).add_float(o.sampling.top_p).add_tokens(o.stop_tokens);
    tp_.check_same_on_all_ranks(f.value(), "generate()'s prompts and options");
  }
  check_no_engine("generate()");
  FA_CHECK(!prompts.empty(), "prompts: empty list; pass at least one prompt");
  FA_CHECK(static_cast<int64_t>(prompts.size()) <= options_.max_batch, "batch of ", prompts.size(),
           " prompts exceeds max_batch = ", options_.max_batch);
  check_generate_options(o);
  for (size_t i = 0; i < prompts.size(); ++i) check_prompt(prompts[i], i, o.max_new_tokens);

  timings_ = Timings();
  std::vector<std::vector<int64_t>> outputs(prompts.size());
  if (o.max_new_tokens == 0) return outputs;

  // The batch must fit the KV pools as a whole (the last new token is never fed back), so it
  // either fits or fails before any work, never half-way through. Slots are then reserved
  // step by step, which is when older blocks may spill to the host pool.
  const FreeAllOnExit free_on_exit{*blocks_};
  std::vector<int64_t> totals;
  for (const auto& p : prompts)
    totals.push_back(static_cast<int64_t>(p.size()) + o.max_new_tokens - 1);
  check_fits(totals);
  std::vector<Sequence> seqs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Sequence& s = seqs[i];
    s.index = i;
    s.prompt = &prompts[i];
    s.id = blocks_->add_sequence();
    s.out = &outputs[i];
    s.out->reserve(static_cast<size_t>(o.max_new_tokens));
  }

  const auto t0 = Clock::now();
  const bool go_on = prefill(seqs, o);
  timings_.prefill_seconds = seconds_since(t0);
  if (!go_on) return outputs;
  const auto t1 = Clock::now();
  decode(seqs, o);
  timings_.decode_seconds = seconds_since(t1);
  return outputs;
}

bool InferenceSession::prefill(std::vector<Sequence>& seqs, const GenerateOptions& o) {
  std::vector<Sequence*> finishing;
  finishing.reserve(seqs.size());
  size_t cur = 0;   // sequence being prefilled
  int64_t pos = 0;  // its next prompt position
  while (cur < seqs.size()) {
    builder_.clear();
    finishing.clear();
    rows_.clear();
    int64_t budget = options_.prefill_chunk_tokens;
    while (cur < seqs.size() && budget > 0) {
      Sequence& s = seqs[cur];
      const int64_t len = static_cast<int64_t>(s.prompt->size());
      const int64_t n = std::min(len - pos, budget);
      reserve_kv(s.id, pos, pos + n);
      builder_.add(*blocks_, s.id, s.prompt->data() + pos, n, pos);
      budget -= n;
      pos += n;
      s.cached = pos;
      if (pos == len) {  // prompt complete: its last row gives the first new token
        finishing.push_back(&s);
        rows_.push_back(builder_.last_row(builder_.num_seqs() - 1));
        ++cur;
        pos = 0;
      }
    }
    const layers::ForwardBatch batch = builder_.build();
    forward(batch);
    timings_.prefill_tokens += batch.num_tokens;
    if (finishing.empty()) continue;
    logits_.resize(DType::kFloat32, {static_cast<int64_t>(rows_.size()), config().vocab_size});
    model_->logits_for_rows(ctx_, scratch_, rows_, logits_.view());
    sample_and_append(finishing, o);
    if (!report_step(finishing, o)) return false;
  }
  return true;
}

void InferenceSession::decode(std::vector<Sequence>& seqs, const GenerateOptions& o) {
  std::vector<Sequence*> active;
  active.reserve(seqs.size());
  for (Sequence& s : seqs) {
    if (!s.done) active.push_back(&s);
  }
  while (!active.empty()) {
    builder_.clear();
    for (Sequence* s : active) {
      reserve_kv(s->id, s->cached, s->cached + 1);
      builder_.add(*blocks_, s->id, &s->out->back(), 1, s->cached);
      s->cached += 1;
    }
    const auto t0 = Clock::now();
    layers::ForwardBatch batch = builder_.build();
    const int64_t host_tokens =
        batch.has_host_kv() ? batch.host_cu_seqlens_k.data_as<int32_t>()[batch.num_seqs] : 0;
    const int64_t stream_before = timings_.spill_stream_steps;
    if (!decode_step_graphed(batch, active, o)) {
      forward(batch);
      // One token per sequence: every row needs logits, so the LM head runs on the whole batch.
      logits_.resize(DType::kFloat32, {static_cast<int64_t>(active.size()), config().vocab_size});
      model_->logits_all(ctx_, scratch_, logits_.view());
      sample_and_append(active, o);  // waits for the step
    }
    if (host_tokens > 0) {
      spill_paths_.record(timings_.spill_stream_steps > stream_before
                              ? layers::ForwardBatch::SpillPath::kStream
                              : layers::ForwardBatch::SpillPath::kCpu,
                          seconds_since(t0), host_tokens);
    }
    ++timings_.decode_steps;
    if (!report_step(active, o)) break;
    active.erase(std::remove_if(active.begin(), active.end(), [](Sequence* s) { return s->done; }),
                 active.end());
  }
}

void InferenceSession::prepare_sampling(const std::vector<Sequence*>& which,
                                        const GenerateOptions& o) {
  const size_t R = which.size();
  sample_params_.resize(R);
  sample_steps_.resize(R);
  for (size_t r = 0; r < R; ++r) {
    sample_params_[r] = o.sampling;
    sample_params_[r].seed = o.sampling.seed + which[r]->index;
    sample_steps_[r] = which[r]->out->size();  // index of the token being drawn
  }
  sampled_host_.resize(DType::kInt32, {static_cast<int64_t>(R)});
}

bool InferenceSession::decode_step_graphed(const layers::ForwardBatch& batch,
                                           std::vector<Sequence*>& which,
                                           const GenerateOptions& o) {
#if defined(FASTATTN_WITH_CUDA)
  if (!graphs_ || !graphs_->accepts(batch)) return false;
  prepare_sampling(which, o);
  sample_rows_.clear();
  for (size_t r = 0; r < which.size(); ++r) {
    sample_rows_.push_back(kernels::prepare_sample_row(sample_params_[r], sample_steps_[r]));
  }
  const DecodeGraphStats before = graphs_->stats();
  graphs_->step(batch, sample_rows_, sampled_host_.data_as<int32_t>());  // waits for the step
  timings_.decode_graph_captures += graphs_->stats().captures - before.captures;
  timings_.decode_graph_steps += graphs_->stats().replays - before.replays;
  last_step_graphed_ = true;
  append_tokens(which, o);
  return true;
#else
  (void)batch;
  (void)which;
  (void)o;
  return false;
#endif
}

void InferenceSession::sample_and_append(std::vector<Sequence*>& which, const GenerateOptions& o) {
  const size_t R = which.size();
  prepare_sampling(which, o);
  sampled_.resize(DType::kInt32, {static_cast<int64_t>(R)});
  kernels::sample(ctx_, logits_.view(), sample_params_, sample_steps_, sampled_.view());
  copy_tensor(ctx_, sampled_.view(), sampled_host_.view());
  synchronize(ctx_);  // a GPU step's only wait: the host needs the tokens
  last_step_graphed_ = false;
  append_tokens(which, o);
}

void InferenceSession::append_tokens(std::vector<Sequence*>& which, const GenerateOptions& o) {
  const size_t R = which.size();
  const int32_t* tok = sampled_host_.data_as<int32_t>();
  for (size_t r = 0; r < R; ++r) {
    Sequence& s = *which[r];
    s.out->push_back(tok[r]);
    const bool stop =
        std::find(o.stop_tokens.begin(), o.stop_tokens.end(), tok[r]) != o.stop_tokens.end();
    if (stop || static_cast<int64_t>(s.out->size()) >= o.max_new_tokens) s.done = true;
  }
}

bool InferenceSession::report_step(const std::vector<Sequence*>& which, const GenerateOptions& o) {
  if (!o.on_step) return true;
  step_tokens_.clear();
  for (const Sequence* s : which) step_tokens_.push_back(StepToken{s->index, s->out->back()});
  bool go_on = false;
  std::exception_ptr error;
  try {
    go_on = o.on_step(step_tokens_);
  } catch (...) {
    error = std::current_exception();
  }
  // Every rank stops at the same step, so none is left waiting in the next step's collectives.
  if (tp_.world_size() > 1) go_on = !tp_.any_rank(!go_on);
  if (error) std::rethrow_exception(error);
  return go_on;
}

void InferenceSession::logits_into(const std::vector<int64_t>& prompt, Tensor& out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (tp_.world_size() > 1) {
    tp_.check_same_on_all_ranks(Fingerprint().add_tokens(prompt).value(), "logits()'s prompt");
  }
  check_no_engine("logits()");
  check_prompt(prompt, 0, 0);
  const int64_t len = static_cast<int64_t>(prompt.size());
  check_dtype(out, "logits out", DType::kFloat32);
  check_shape(out, "logits out", {len, config().vocab_size});
  check_last_dim_contiguous(out, "logits out");
  check_cpu(out, "logits out");

  timings_ = Timings();
  const auto t0 = Clock::now();
  const FreeAllOnExit free_on_exit{*blocks_};
  check_fits({len});
  const kvcache::SpillBlockManager::SeqId seq = blocks_->add_sequence();
  for (int64_t pos = 0; pos < len; pos += options_.prefill_chunk_tokens) {
    const int64_t n = std::min(options_.prefill_chunk_tokens, len - pos);
    builder_.clear();
    reserve_kv(seq, pos, pos + n);
    builder_.add(*blocks_, seq, prompt.data() + pos, n, pos);
    forward(builder_.build());
    Tensor rows = out.slice(0, pos, pos + n);
    if (ctx_.device.type == DeviceType::kCUDA) {
      logits_.resize(DType::kFloat32, {n, config().vocab_size});
      model_->logits_all(ctx_, scratch_, logits_.view());
      std::vector<int64_t> all(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
      copy_rows(ctx_, logits_.view(), all, rows);
      synchronize(ctx_);
    } else {
      model_->logits_all(ctx_, scratch_, rows);
    }
  }
  timings_.prefill_tokens = len;
  timings_.prefill_seconds = seconds_since(t0);
}

Tensor InferenceSession::step_logits() const {
#if defined(FASTATTN_WITH_CUDA)
  if (last_step_graphed_) return graphs_->last_logits();
#endif
  return logits_.view();
}

void InferenceSession::copy_step_logits(Tensor& out) const {
  const Tensor logits = step_logits();
  check_shape(out, "step logits out", logits.shape());
  copy_matrix(ctx_, logits, out);
  synchronize(ctx_);
}

bool InferenceSession::uses_cuda_graphs() const {
#if defined(FASTATTN_WITH_CUDA)
  return graphs_ != nullptr;
#else
  return false;
#endif
}

OwnedTensor InferenceSession::logits(const std::vector<int64_t>& prompt) {
  OwnedTensor out(host_allocator(), DType::kFloat32,
                  {static_cast<int64_t>(prompt.size()), config().vocab_size});
  logits_into(prompt, out.view());
  return out;
}

}  // namespace fastattn::runtime
