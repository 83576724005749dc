// InferenceSession: loads an exported model and serves batches of requests: the prompts are
// prefilled together as varlen batches (in chunks of at most prefill_chunk_tokens tokens, so
// activation memory stays bounded), then decoded together one token per step; a sequence leaves
// the batch when it emits a stop token or reaches max_new_tokens. KV blocks come from a paged pool
// (KvCache + SpillBlockManager; with host_kv_tokens, a second, host pool takes the older tokens
// of sequences that outgrow the device pool) and are returned after every call, so a session serves any number of
// calls. Calls are serialised (one at a time per session).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/sampling.h"
#include "fastattn/kvcache/kv_cache.h"
#include "fastattn/kvcache/spill_manager.h"
#include "fastattn/models/decoder_model.h"
#include "fastattn/runtime/batch_builder.h"
#include "fastattn/runtime/decode_graphs.h"
#include "fastattn/runtime/device_batch.h"
#include "fastattn/runtime/distributed.h"
#include "fastattn/runtime/gpu_runtime.h"
#include "fastattn/runtime/memory_plan.h"
#include "fastattn/runtime/spill_policy.h"

namespace fastattn::runtime {

class Engine;  // runtime/engine.h: in-flight batching over a session's model and KV pools

struct SessionOptions {
  // "cpu", "cuda" or "cuda:N" (CUDA builds). On a GPU the activations and the KV cache are in
  // the weights' dtype (float16 / bfloat16 / float32).
  std::string device = "cpu";
  int num_threads = 0;      // CPU threads for the kernels; 0 = OpenMP's default
  int max_batch = 8;        // most prompts per generate() call
  int64_t max_seq_len = 0;  // prompt + new tokens per sequence; 0 = max_position_embeddings
  int kv_block_size = 16;   // tokens per KV-cache block
  // auto | float32 | float16 | bfloat16. auto: float32 on the CPU, the weights' dtype on a GPU
  // (the only one a GPU session accepts).
  std::string kv_dtype = "auto";
  // KV pool size in tokens over all sequences (rounded up to whole blocks). 0 = the default: on
  // the CPU max_batch * min(max_seq_len, 4096); on a GPU what the memory budget leaves after the
  // weights and activations (at most max_batch * max_seq_len).
  int64_t max_cache_tokens = 0;
  // GPU only: the share of the device's memory this session may use in all.
  double gpu_memory_fraction = 0.9;
  // GPU only: the device KV pool's budget: <= 1 a fraction of the GPU's memory, > 1 bytes;
  // 0 = what the memory plan leaves (max_cache_tokens, if given, wins).
  double gpu_kv_budget = 0;
  // Host KV pool (pinned memory on a GPU) in tokens over all sequences: the older tokens of
  // sequences that outgrow the device pool spill there (kvcache/spill_manager.h). 0 = no spill.
  int64_t host_kv_tokens = 0;
  // How attention reads spilled KV: auto (measured per step), cpu or stream (runtime/spill_policy.h).
  std::string spill_attention = "auto";
  int64_t prefill_chunk_tokens = 2048;  // token budget of one prefill forward pass
  // GPU only: run decode steps as captured CUDA graphs (runtime/decode_graphs.h), one launch per
  // step instead of ~10 per layer. Steps a graph cannot take (spilled KV, tensor parallelism,
  // dynamic-NTK RoPE) run eagerly. Ignored on the CPU.
  bool cuda_graphs = true;
  bool verbose = false;  // log model size and KV-cache memory at load
  // How the weight files are held: "mmap" (read-only mappings; the files must not change while
  // the session lives) or "copy" (read into memory the session owns). models/weight_store.h.
  std::string load = "mmap";
  // Tensor parallelism (a model exported with tp_size = N, run by `mpirun -n N`): the
  // row-parallel GEMMs overlap their all-reduce with the next row tile's GEMM (tiling-AllReduce);
  // tp_tiles = 0 lets comm/tiled_all_reduce.h's plan_tiles choose (CPU ranks: from the token
  // count; GPUs: no tiling), tp_overlap = false turns it off.
  bool tp_overlap = true;
  int tp_tiles = 0;
};

// One token produced by a step of generate(): request `index` of the batch got `token`.
struct StepToken {
  size_t index = 0;
  int64_t token = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  // Request i of a batch samples with seed sampling.seed + i (and its own step counter), so its
  // tokens do not depend on the other requests: to reproduce it alone, pass seed + i.
  kernels::SamplingParams sampling;
  // A sequence stops after emitting one of these; the stop token is included in its output.
  // The config's eos_token_id is not added implicitly.
  std::vector<int64_t> stop_tokens;
  // Called on the calling thread after every pass that produced tokens (a prefill pass that
  // finished prompts, then each decode step) with the new tokens, in request order. Returning
  // false stops the call early: every request keeps the tokens it has and generate() returns
  // them. An exception thrown by the hook ends the call (the KV blocks are freed first) and
  // propagates. Under mpirun the ranks agree after each call of their hooks: when any rank's
  // hook returns false or throws, every rank stops at that same step (ranks whose hook threw
  // rethrow, the others return their tokens). Used for streaming, stop strings and Ctrl-C.
  std::function<bool(const std::vector<StepToken>&)> on_step;
};

// Measured by the last generate() or logits() call (each call resets them). Prefill covers the
// prompt forward passes and the first sampled token; decode covers the batched steps after it.
struct Timings {
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0.0;
  int64_t decode_steps = 0;  // batched steps (one token for every sequence still running)
  double decode_seconds = 0.0;
  // Forward passes that attended to host-resident KV, by path (runtime/spill_policy.h).
  int64_t spill_stream_steps = 0;
  int64_t spill_cpu_steps = 0;
  // Decode steps run as CUDA graph replays (a batch bucket's first step at a split count runs
  // eagerly, its second is captured), and graphs captured during the call.
  int64_t decode_graph_steps = 0;
  int64_t decode_graph_captures = 0;
  double prefill_tokens_per_s() const {
    return prefill_seconds > 0 ? static_cast<double>(prefill_tokens) / prefill_seconds : 0.0;
  }
  double decode_ms_per_step() const {
    return decode_steps > 0 ? 1e3 * decode_seconds / static_cast<double>(decode_steps) : 0.0;
  }
};

class InferenceSession {
 public:
  // Throws FileError for a broken model directory, InvalidArgument for bad options.
  InferenceSession(const std::string& model_dir, const SessionOptions& options = {});
  // In-memory weights: `config` (models::parse_model_config of a config.json text) and THIS
  // process's rank's tensors by name (docs/FORMAT.md "Tensors of rank r"; under mpirun the rank
  // is the MPI rank), contiguous, in host memory. On the CPU the session uses them in place:
  // they must stay alive and unchanged while it lives (`owner`, if given, is held until then);
  // on a GPU they are copied at load and `owner` is dropped after. Throws FileError naming a
  // missing or mis-shaped tensor, InvalidArgument for bad options.
  InferenceSession(const models::ModelConfig& config, const std::map<std::string, Tensor>& weights,
                   const SessionOptions& options = {}, std::shared_ptr<const void> owner = nullptr);
  ~InferenceSession();

  // New tokens of each prompt (not the prompt itself). Bad input throws InvalidArgument naming
  // the prompt, position or option; a KV pool too small for the batch throws OutOfMemory.
  std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerateOptions& options);

  // Logits at every position of the prompt into out: float32 [len(prompt), vocab_size], rows may
  // be strided (last dim contiguous).
  void logits_into(const std::vector<int64_t>& prompt, Tensor& out);
  // Same, into a new tensor.
  OwnedTensor logits(const std::vector<int64_t>& prompt);

  const Timings& timings() const { return timings_; }
  // float32 [B, vocab] logits of the last step of generate() (B = the sequences it sampled
  // for), on the session's device; valid until the next step. Meant for on_step hooks and
  // checks; not locked (call it from the generating thread).
  Tensor step_logits() const;
  // Copies step_logits() into `out` (host float32 of the same shape) and waits for the copy.
  void copy_step_logits(Tensor& out) const;
  // Whether decode steps run as CUDA graphs in this session (see SessionOptions::cuda_graphs),
  // and if not, why (empty when they do or the option is off).
  bool uses_cuda_graphs() const;
  const std::string& cuda_graphs_off_reason() const { return graphs_off_reason_; }
  const models::ModelConfig& config() const { return model_->config(); }
  // The options with defaults resolved (max_seq_len, max_cache_tokens, num_threads).
  const SessionOptions& options() const { return options_; }
  size_t kv_cache_bytes() const { return cache_->nbytes(); }
  size_t weight_bytes() const { return model_->weight_bytes(); }
  // GPU sessions: how device memory was divided at load (empty describe() on the CPU).
  const MemoryPlan& memory_plan() const { return plan_; }
  // This process's tensor-parallel rank and the number of ranks (0 and 1 without mpirun).
  int rank() const { return tp_.rank(); }
  int world_size() const { return tp_.world_size(); }
  // Device-pool blocks spilled to the host pool since the session started.
  int64_t spilled_blocks() const { return blocks_->spilled_blocks_total(); }
  size_t host_kv_bytes() const { return host_cache_ ? host_cache_->nbytes() : 0; }

 private:
  // The Engine drives the model, the KV pools and the block manager directly, step by step;
  // while one is attached, generate() and logits() refuse (they would reset its sequences).
  friend class Engine;
  bool engine_attached_ = false;  // guarded by mu_
  void check_no_engine(const char* what) const;

  struct Sequence;
  // The constructors' shared parts: options checked (returns the device), then everything after
  // the config is known; make_model builds this rank's model (on every rank together).
  Device check_options(const SessionOptions& options) const;
  void init(const models::ModelConfig& cfg, const Device& device, const std::string& source,
            const std::function<std::unique_ptr<models::DecoderModel>()>& make_model);
  void resolve_options();
  void setup_device(const Device& device);
  DType resolve_kv_dtype() const;
  int64_t plan_cache_blocks(DType kv_dtype);
  // Forward pass over a host-built batch (index tensors uploaded on a GPU).
  void forward(layers::ForwardBatch host_batch);
  // Reserves the KV slots of sequence s up to `end` tokens (its tokens from `start` on stay on
  // the device), spilling older blocks to the host pool when the device pool is short.
  void reserve_kv(kvcache::SpillBlockManager::SeqId seq, int64_t start, int64_t end);
  void check_fits(const std::vector<int64_t>& totals) const;
  void check_prompt(const std::vector<int64_t>& prompt, size_t index, int64_t max_new) const;
  void check_generate_options(const GenerateOptions& o) const;
  // Both return false when o.on_step stopped the call.
  bool prefill(std::vector<Sequence>& seqs, const GenerateOptions& o);
  void decode(std::vector<Sequence>& seqs, const GenerateOptions& o);
  // Samples one token for each sequence in `which` from rows of logits_; appends them.
  void sample_and_append(std::vector<Sequence*>& which, const GenerateOptions& o);
  // Fills sample_params_ / sample_steps_ for the rows of `which`.
  void prepare_sampling(const std::vector<Sequence*>& which, const GenerateOptions& o);
  // Appends the tokens in sampled_host_ to `which` and marks finished sequences.
  void append_tokens(std::vector<Sequence*>& which, const GenerateOptions& o);
  // One decode step through the CUDA graphs, if they take this batch; false otherwise.
  bool decode_step_graphed(const layers::ForwardBatch& batch, std::vector<Sequence*>& which,
                           const GenerateOptions& o);
  // Calls o.on_step with the tokens `which` just got; returns false when the call must stop
  // (on every rank). Rethrows the hook's exception after the ranks have agreed.
  bool report_step(const std::vector<Sequence*>& which, const GenerateOptions& o);

  SessionOptions options_;
  TensorParallel tp_;  // the communicator outlives everything that uses it
#if defined(FASTATTN_WITH_CUDA)
  std::unique_ptr<gpu::Stream> stream_;  // declared before everything that queues work on it
#endif
  Context ctx_;
  MemoryPlan plan_;
  SpillPathChooser spill_paths_;
  std::unique_ptr<models::DecoderModel> model_;
  std::unique_ptr<kvcache::KvCache> cache_;
  std::unique_ptr<kvcache::KvCache> host_cache_;  // the host pool (spilled KV), if any
  std::unique_ptr<kvcache::SpillBlockManager> blocks_;
  models::ModelScratch scratch_;
  BatchBuilder builder_;
  OwnedTensor logits_;        // [B, vocab] for sampling
  OwnedTensor sampled_;       // int32 [B], on the model's device
  OwnedTensor sampled_host_;  // int32 [B]: the tokens on the host
  std::unique_ptr<DeviceBatch> device_batch_;
#if defined(FASTATTN_WITH_CUDA)
  std::unique_ptr<DecodeGraphs> graphs_;  // decode steps as CUDA graphs (null: eager)
  std::vector<kernels::SampleRow> sample_rows_;
#endif
  bool last_step_graphed_ = false;
  std::string graphs_off_reason_;
  std::vector<kernels::SamplingParams> sample_params_;
  std::vector<uint64_t> sample_steps_;
  std::vector<int64_t> rows_;
  std::vector<StepToken> step_tokens_;
  Timings timings_;
  std::mutex mu_;
};

}  // namespace fastattn::runtime
