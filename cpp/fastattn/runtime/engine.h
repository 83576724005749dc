// Engine: in-flight (continuous) batching over an InferenceSession's model, KV pools and block
// manager. Requests join a queue at any time (add_request, any thread); each step():
//   1. applies cancellations (their KV blocks go back to the pool at once);
//   2. resumes preempted requests, oldest first, then admits waiting ones, oldest first, while
//      the running batch has room (max_running) and the KV pools have room (see "KV pressure");
//   3. runs ONE forward pass holding one new token of every decoding request plus chunks of the
//      prompts being prefilled, up to step_tokens tokens in all (so a long prompt is spread over
//      several steps and never stalls the running decodes);
//   4. samples a token for every request whose prompt is complete (per-request sampling, seed and
//      step counter: a request's tokens do not depend on what runs beside it), and retires the
//      requests that hit a stop token or max_new_tokens, freeing their KV blocks.
// KV pressure (EngineOptions::preemption):
//   on (default): a request is admitted when the pools' free blocks hold its prompt + 1 token
//      on top of what the running requests are still owed (the rest of their prompts, one
//      token each). Decodes grow; when a step's tokens do not fit, the youngest running requests
//      (latest arrival) are preempted, oldest request first served: each one's KV blocks are
//      copied to host memory outside the pools (runtime/kv_stash.h) and freed, and it waits in a
//      preempted queue. A preempted request resumes, before any new request is admitted, once
//      the pools hold its context + 1 token again: its KV is copied back into fresh blocks and
//      it goes on from the same token (nothing is recomputed; its tokens equal an unpreempted
//      run). The oldest running request is never preempted for a younger one, and a request's
//      whole context fits the pools (add_request checks), so every request finishes.
//      Host memory for the stashes is capped (max_preempted_kv_bytes): a preemption whose stash
//      would pass the cap drops the request's KV instead, and on resumption its prompt and the
//      tokens it had generated are prefilled again (recomputed, as vLLM's recompute mode does;
//      the tokens that follow may then differ from an unpreempted run where two logits are
//      nearly tied, since prefill and decode kernels round differently).
//   off, and in static batching: admission reserves the whole context (prompt + max_new_tokens
//      - 1 tokens) in the accounting, so a running request never runs out of KV and nothing is
//      preempted; a request that does not fit waits in the queue.
//   Either way a session with host_kv_tokens also moves the older blocks of long sequences to its
//   host pool as in generate() (kvcache/spill_manager.h); preemption acts when both pools are full.
// The session is borrowed: it must outlive the engine, and while the engine lives the session's
// own generate() / logits() refuse (they would reset the engine's sequences).
//
// Under mpirun (a tensor-parallel session), rank 0 schedules: only it takes requests and
// cancellations, and every rank calls step() in lock step. Each step begins with rank 0
// broadcasting what arrived since the last one (new requests, cancellations, shutdown); every
// rank then admits, plans, runs and samples the same way (the same logits and seeds give the
// same tokens), so the ranks' engines stay identical. The other ranks call step() in a loop until
// stopped(); rank 0 keeps stepping (an empty step is one small broadcast) while idle, so that
// they are not left waiting past FASTATTN_COMM_TIMEOUT. A forward pass that fails under mpirun
// ends the job (comm::abort_job): the ranks could no longer agree.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fastattn/kernels/sampling.h"
#include "fastattn/runtime/kv_stash.h"
#include "fastattn/runtime/session.h"

namespace fastattn::runtime {

struct EngineOptions {
  int max_running = 0;      // requests in the running batch; 0 = the session's max_batch
  int64_t step_tokens = 0;  // tokens of one forward pass; 0 = the session's prefill_chunk_tokens
  // Static batching (for comparison): new requests are admitted only when none is running.
  bool static_batching = false;
  // Under KV pressure preempt the youngest running requests to host memory and resume them
  // later (see the header comment); false: reserve each request's whole context at admission.
  bool preemption = true;
  // Host memory the preempted requests' KV may hold at once; a preemption past it recomputes
  // (see above). -1: a quarter of the machine's physical memory; 0: always recompute.
  int64_t max_preempted_kv_bytes = -1;
};

struct RequestParams {
  int64_t max_new_tokens = 16;
  kernels::SamplingParams sampling;  // seed: this request's own (as a batch of one would have)
  std::vector<int64_t> stop_tokens;  // the stop token is emitted, then the request finishes
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason r);

// What a step did for one request: a new token (token >= 0), and whether the request finished.
// A request cancelled while running or waiting gets one event with token -1, kCancelled; when a
// forward pass fails (e.g. out of memory), each running request gets token -1, kError (their
// blocks are freed; last_error() has the message) and the waiting ones stay queued.
struct EngineEvent {
  int64_t request = 0;
  int64_t token = -1;
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
};

struct EngineStats {
  int64_t waiting = 0;          // requests in the queue
  int64_t running = 0;          // admitted (prefilling or decoding)
  int64_t kv_blocks_total = 0;  // device + host pool
  int64_t kv_blocks_free = 0;   // free in both pools now
  // Promised to running requests by the admission accounting: without preemption their whole
  // contexts, with preemption what they are still owed (the rest of their prompts + 1 token).
  int64_t kv_blocks_reserved = 0;
  int64_t steps = 0;
  int64_t prompt_tokens = 0;     // prefilled so far
  int64_t generated_tokens = 0;  // sampled so far
  int64_t finished = 0;
  int64_t cancelled = 0;
  int64_t errors = 0;              // failed steps
  int64_t preempted = 0;           // requests preempted now (their KV in host memory)
  int64_t preemptions = 0;         // requests preempted so far
  int64_t resumed = 0;             // preempted requests resumed so far
  int64_t preempted_kv_bytes = 0;  // host memory holding the preempted requests' KV now
  int64_t recomputed = 0;          // preemptions that dropped the KV (host cap reached)
  double step_seconds = 0.0;       // time spent in step() (forward passes and sampling)
};

class Engine {
 public:
  // Throws InvalidArgument for bad options or a session that already has an engine. Under
  // mpirun every rank constructs one with the same options (rank 0 schedules).
  Engine(InferenceSession& session, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; returns its id. Bad input (empty prompt, token out of range, context over
  // max_seq_len or over what the KV pools can ever hold, bad sampling) throws InvalidArgument
  // naming what is wrong. Any thread; rank 0 only under mpirun.
  int64_t add_request(const std::vector<int64_t>& prompt, const RequestParams& params);
  // Cancels a waiting or running request: its blocks are freed at the next step, which reports
  // it once (token -1, kCancelled). False if the id is unknown or already finished. Any thread.
  bool cancel(int64_t request);
  // One scheduling step (one forward pass when anything is runnable). Returns the events of
  // this step, empty when there is nothing to do. One thread at a time. Does not throw for a
  // failed forward pass (see EngineEvent).
  std::vector<EngineEvent> step();
  bool has_work() const;
  // Makes the next step the last (on every rank): it cancels what is left and stopped() turns
  // true. Any thread; rank 0 only under mpirun.
  void shutdown();
  bool stopped() const;
  int rank() const { return session_.rank(); }
  int world_size() const { return session_.world_size(); }
  std::string last_error() const;  // the message of the last failed step ("" if none)
  EngineStats stats() const;
  const EngineOptions& options() const { return options_; }
  InferenceSession& session() { return session_; }

 private:
  struct Request {
    int64_t id = 0;
    std::vector<int64_t> prompt;
    RequestParams params;
    kvcache::SpillBlockManager::SeqId seq = -1;
    int64_t cached = 0;    // tokens written to the KV cache
    int64_t reserved = 0;  // blocks promised by the admission accounting
    std::vector<int64_t> out;
    bool done = false;         // finished or cancelled: leaves running_ at the end of the step
    bool preempt_now = false;  // preempted this step: moves to preempted_ at the end of it
    KvStash stash;             // a preempted request's KV
    // Preempted by recompute: the tokens to prefill again (prompt + all generated tokens but
    // the last, which the next decode step feeds); empty otherwise.
    std::vector<int64_t> replay;
  };
  // The tokens r prefills: its prompt, or what it replays after a recompute preemption.
  static const std::vector<int64_t>& prefill_tokens(const Request& r) {
    return r.replay.empty() ? r.prompt : r.replay;
  }
  // Under mpirun: rank 0's new requests, cancellations and shutdown flag, broadcast to all.
  void sync_ranks();
  void check_rank_zero(const char* what) const;
  void apply_cancellations(std::vector<EngineEvent>& events);
  bool preempting() const { return options_.preemption && !options_.static_batching; }
  void admit();
  void admit_reserving();  // preemption off: whole contexts reserved (engine.cc)
  // Preemption on (engine_preemption.cc): resumes the preempted, then admits, as the header says.
  void admit_or_resume();
  int64_t free_blocks() const;                  // free in both pools
  int64_t held_blocks(const Request& r) const;  // blocks r's sequence holds
  // Tokens r's context needs by the end of its next step once its prompt is in: the prompt (or
  // what is cached) + 1, at most prompt + max_new_tokens - 1.
  static int64_t next_context(const Request& r);
  // Blocks the running requests are still owed: the rest of their prompts, one token each.
  int64_t owed_blocks() const;
  // Frees blocks for running_[i] to add `tokens` tokens, preempting the youngest running
  // requests not yet planned this step (running_[i] itself last). False if i was preempted.
  bool make_room(size_t i, int64_t tokens);
  // Prompt tokens running request r can add without preempting anyone.
  int64_t fitting_tokens(const Request& r) const;
  // Host bytes the preempted requests' KV holds (those preempted this step included).
  int64_t stashed_bytes() const;
  void preempt(Request& r);
  bool resume(Request& r);  // false (r unchanged) when the pools cannot take it back now
  // Moves this step's preempted requests from running_ to preempted_ (id order).
  void park_preempted();
  // Builds this step's batch into the session's builder; fills sample_ with the requests that
  // get a token (row of their last token in rows_). False if nothing is runnable.
  bool plan_step();
  void sample_and_retire(std::vector<EngineEvent>& events);
  void release(Request& r);
  int64_t total_blocks() const;

  InferenceSession& session_;
  EngineOptions options_;
  mutable std::mutex queue_mu_;  // guards the queues, cancels_, next_id_, live_, stats_, stop
  std::deque<Request> waiting_;
  std::deque<Request> incoming_;  // rank 0 under mpirun: added since the last step's broadcast
  bool stop_requested_ = false;
  bool stopped_ = false;
  std::vector<int64_t> cancels_;
  std::unordered_map<int64_t, bool> live_;  // ids waiting or running
  int64_t next_id_ = 0;
  std::mutex step_mu_;             // one step() at a time
  std::vector<Request> running_;   // arrival (id) order (only the stepping thread touches it)
  std::deque<Request> preempted_;  // id order (only the stepping thread touches it)
  int64_t reserved_blocks_ = 0;
  int64_t step_prompt_tokens_ = 0;
  int64_t stash_cap_bytes_ = 0;  // max_preempted_kv_bytes resolved (engine.cc)
  int64_t recomputed_ = 0;       // preemptions by recompute so far (stepping thread)
  std::vector<Request*> sample_;
  std::vector<int64_t> rows_;
  std::vector<kernels::SamplingParams> params_;
  std::vector<uint64_t> steps_;
  EngineStats stats_;
  std::string last_error_;
};

}  // namespace fastattn::runtime
