#include "fastattn/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <unistd.h>

#include "fastattn/comm/mpi_runtime.h"
#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"
#include "fastattn/core/logging.h"

namespace fastattn::runtime {
namespace {

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : int64_t{0};
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

Engine::Engine(InferenceSession& session, const EngineOptions& options)
    : session_(session), options_(options) {
  const SessionOptions& so = session_.options();
  FA_CHECK(options_.max_running >= 0, "max_running: must be >= 0 (0 = the session's max_batch), ",
           "got ", options_.max_running);
  FA_CHECK(options_.step_tokens >= 0, "step_tokens: must be >= 0 (0 = the session's ",
           "prefill_chunk_tokens), got ", options_.step_tokens);
  if (options_.max_running == 0) options_.max_running = so.max_batch;
  if (options_.step_tokens == 0) options_.step_tokens = so.prefill_chunk_tokens;
  FA_CHECK(options_.max_running <= so.max_batch, "max_running ", options_.max_running,
           " exceeds the session's max_batch = ", so.max_batch,
           " (its buffers are sized for that many sequences)");
  FA_CHECK(options_.step_tokens <= std::max<int64_t>(so.prefill_chunk_tokens, so.max_batch),
           "step_tokens ", options_.step_tokens,
           " exceeds the session's prefill_chunk_tokens = ", so.prefill_chunk_tokens,
           " (its activation memory is planned for that many tokens)");
  FA_CHECK(options_.step_tokens > options_.max_running, "step_tokens (", options_.step_tokens,
           ") must exceed max_running (", options_.max_running,
           "): a step holds one token of every decoding request plus prefill chunks");
  FA_CHECK(options_.max_preempted_kv_bytes >= -1,
           "max_preempted_kv_bytes: must be >= 0, or -1 for ",
           "a quarter of the machine's memory; got ", options_.max_preempted_kv_bytes);
  stash_cap_bytes_ = options_.max_preempted_kv_bytes >= 0
                         ? options_.max_preempted_kv_bytes
                         : physical_memory_bytes() / 4 / std::max(session_.world_size(), 1);
  if (session_.world_size() > 1) {  // ranks that schedule differently would not stay together
    session_.tp_.check_same_on_all_ranks(Fingerprint()
                                             .add(static_cast<uint64_t>(options_.max_running))
                                             .add(static_cast<uint64_t>(options_.step_tokens))
                                             .add(options_.static_batching ? 1 : 0)
                                             .add(options_.preemption ? 1 : 0)
                                             .add(static_cast<uint64_t>(stash_cap_bytes_))
                                             .value(),
                                         "the Engine's options");
  }
  std::lock_guard<std::mutex> lock(session_.mu_);
  FA_CHECK(!session_.engine_attached_, "Engine: this session already has an engine");
  session_.engine_attached_ = true;
  session_.blocks_->reset();
  stats_.kv_blocks_total = total_blocks();
  stats_.kv_blocks_free = total_blocks();
  running_.reserve(static_cast<size_t>(options_.max_running));
}

Engine::~Engine() {
  std::lock_guard<std::mutex> lock(session_.mu_);
  session_.blocks_->reset();
  session_.engine_attached_ = false;
}

int64_t Engine::total_blocks() const {
  return session_.blocks_->device_blocks() + session_.blocks_->host_blocks();
}

void Engine::check_rank_zero(const char* what) const {
  FA_CHECK(session_.rank() == 0, what, ": rank ", session_.rank(), " of ", session_.world_size(),
           ": under mpirun rank 0 takes the requests; the other ranks call step() in a loop");
}

int64_t Engine::add_request(const std::vector<int64_t>& prompt, const RequestParams& params) {
  check_rank_zero("add_request");
  GenerateOptions o;
  o.max_new_tokens = params.max_new_tokens;
  o.sampling = params.sampling;
  o.stop_tokens = params.stop_tokens;
  session_.check_generate_options(o);
  FA_CHECK(params.max_new_tokens >= 1, "max_new_tokens: must be >= 1, got ", params.max_new_tokens);
  session_.check_prompt(prompt, 0, params.max_new_tokens);
  const int64_t context = static_cast<int64_t>(prompt.size()) + params.max_new_tokens - 1;
  const int64_t need = session_.blocks_->blocks_for(context);
  if (need > total_blocks()) {
    const int64_t bs = session_.blocks_->block_size();
    FA_THROW_AS(InvalidArgument, "prompt (", prompt.size(), " tokens) + max_new_tokens (",
                params.max_new_tokens, ") needs ", need * bs, " tokens of KV cache, more than ",
                "the pools hold (", total_blocks() * bs, " tokens): shorten the prompt or ",
                "max_new_tokens, or raise max_cache_tokens / host_kv_tokens");
  }
  Request r;
  r.prompt = prompt;
  r.params = params;
  r.reserved = need;
  r.out.reserve(static_cast<size_t>(params.max_new_tokens));
  std::lock_guard<std::mutex> lock(queue_mu_);
  r.id = next_id_++;
  FA_CHECK(!stop_requested_, "add_request: the engine is shutting down");
  live_[r.id] = true;
  (session_.world_size() > 1 ? incoming_ : waiting_).push_back(std::move(r));
  stats_.waiting = static_cast<int64_t>(waiting_.size());
  return next_id_ - 1;
}

bool Engine::cancel(int64_t request) {
  check_rank_zero("cancel");
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (live_.find(request) == live_.end()) return false;
  cancels_.push_back(request);
  return true;
}

bool Engine::has_work() const {
  std::lock_guard<std::mutex> lock(queue_mu_);
  return !waiting_.empty() || !incoming_.empty() || stats_.running > 0 || stats_.preempted > 0 ||
         !cancels_.empty() || (stop_requested_ && !stopped_);
}

void Engine::shutdown() {
  check_rank_zero("shutdown");
  std::lock_guard<std::mutex> lock(queue_mu_);
  stop_requested_ = true;
}

bool Engine::stopped() const {
  std::lock_guard<std::mutex> lock(queue_mu_);
  return stopped_;
}

namespace {

int64_t float_bits(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float bits_float(int64_t v) {
  const auto u = static_cast<uint32_t>(v);
  float f = 0;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

}  // namespace

// Message: [stop, #cancels, ids..., #new, per request: id, max_new, temperature, top_k, top_p,
// seed, #stops, stops..., #prompt, prompt...].
void Engine::sync_ranks() {
  std::vector<int64_t> msg;
  if (session_.rank() == 0) {
    std::lock_guard<std::mutex> lock(queue_mu_);
    msg.push_back(stop_requested_ ? 1 : 0);
    msg.push_back(static_cast<int64_t>(cancels_.size()));
    msg.insert(msg.end(), cancels_.begin(), cancels_.end());
    msg.push_back(static_cast<int64_t>(incoming_.size()));
    for (Request& r : incoming_) {
      const RequestParams& p = r.params;
      msg.insert(msg.end(),
                 {r.id, p.max_new_tokens, float_bits(p.sampling.temperature), p.sampling.top_k,
                  float_bits(p.sampling.top_p), static_cast<int64_t>(p.sampling.seed),
                  static_cast<int64_t>(p.stop_tokens.size())});
      msg.insert(msg.end(), p.stop_tokens.begin(), p.stop_tokens.end());
      msg.push_back(static_cast<int64_t>(r.prompt.size()));
      msg.insert(msg.end(), r.prompt.begin(), r.prompt.end());
      waiting_.push_back(std::move(r));
    }
    incoming_.clear();
  }
  session_.tp_.broadcast_int64s(msg, 0);
  if (session_.rank() == 0) return;
  size_t i = 0;
  auto next = [&] {
    FA_ASSERT(i < msg.size(), "engine step message cut short");
    return msg[i++];
  };
  std::lock_guard<std::mutex> lock(queue_mu_);
  stop_requested_ = next() != 0;
  for (int64_t n = next(); n > 0; --n) cancels_.push_back(next());
  for (int64_t n = next(); n > 0; --n) {
    Request r;
    r.id = next();
    RequestParams& p = r.params;
    p.max_new_tokens = next();
    p.sampling.temperature = bits_float(next());
    p.sampling.top_k = static_cast<int>(next());
    p.sampling.top_p = bits_float(next());
    p.sampling.seed = static_cast<uint64_t>(next());
    for (int64_t k = next(); k > 0; --k) p.stop_tokens.push_back(next());
    for (int64_t k = next(); k > 0; --k) r.prompt.push_back(next());
    r.reserved =
        session_.blocks_->blocks_for(static_cast<int64_t>(r.prompt.size()) + p.max_new_tokens - 1);
    live_[r.id] = true;
    next_id_ = r.id + 1;
    waiting_.push_back(std::move(r));
  }
}

std::string Engine::last_error() const {
  std::lock_guard<std::mutex> lock(queue_mu_);
  return last_error_;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(queue_mu_);
  return stats_;
}

void Engine::release(Request& r) {
  if (r.seq >= 0) session_.blocks_->free_sequence(r.seq);
  r.seq = -1;
  reserved_blocks_ -= r.reserved;
  r.reserved = 0;
}

void Engine::apply_cancellations(std::vector<EngineEvent>& events) {
  std::vector<int64_t> ids;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    ids.swap(cancels_);
    for (int64_t id : ids) {
      auto it = std::find_if(waiting_.begin(), waiting_.end(),
                             [id](const Request& r) { return r.id == id; });
      if (it == waiting_.end()) continue;
      waiting_.erase(it);
      live_.erase(id);
      events.push_back(EngineEvent{id, -1, true, FinishReason::kCancelled});
      ++stats_.cancelled;
    }
  }
  for (Request& r : running_) {
    if (std::find(ids.begin(), ids.end(), r.id) == ids.end()) continue;
    r.done = true;
    release(r);
    events.push_back(EngineEvent{r.id, -1, true, FinishReason::kCancelled});
  }
  int64_t parked = 0;  // preempted requests cancelled (their stash is dropped)
  for (auto it = preempted_.begin(); it != preempted_.end();) {
    if (std::find(ids.begin(), ids.end(), it->id) == ids.end()) {
      ++it;
      continue;
    }
    events.push_back(EngineEvent{it->id, -1, true, FinishReason::kCancelled});
    it = preempted_.erase(it);
    ++parked;
  }
  const auto gone =
      std::remove_if(running_.begin(), running_.end(), [](const Request& r) { return r.done; });
  const auto n = (running_.end() - gone) + parked;
  running_.erase(gone, running_.end());
  if (n > 0) {
    std::lock_guard<std::mutex> lock(queue_mu_);
    for (const EngineEvent& e : events) live_.erase(e.request);
    stats_.cancelled += n;
  }
}

void Engine::admit() {
  if (options_.static_batching && !running_.empty()) return;
  if (preempting()) {
    admit_or_resume();
  } else {
    admit_reserving();
  }
}

void Engine::admit_reserving() {
  std::lock_guard<std::mutex> lock(queue_mu_);
  const int64_t total = total_blocks();
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Request& r = waiting_.front();
    if (reserved_blocks_ + r.reserved > total) break;  // first come, first served: no overtaking
    reserved_blocks_ += r.reserved;
    r.seq = session_.blocks_->add_sequence();
    running_.push_back(std::move(r));
    waiting_.pop_front();
  }
}

bool Engine::plan_step() {
  InferenceSession& s = session_;
  BatchBuilder& b = s.builder_;
  b.clear();
  sample_.clear();
  rows_.clear();
  // Decodes first (one token each, fed the last sampled token), then prompt chunks.
  const bool pre = preempting();
  for (size_t i = 0; i < running_.size(); ++i) {
    Request& r = running_[i];
    if (r.out.empty() || r.preempt_now ||
        r.cached < static_cast<int64_t>(prefill_tokens(r).size())) {
      continue;  // not decoding: its prompt (or what it replays) is not all in yet
    }
    if (pre && !make_room(i, 1)) continue;  // r itself had to be preempted
    s.reserve_kv(r.seq, r.cached, r.cached + 1);
    b.add(*s.blocks_, r.seq, &r.out.back(), 1, r.cached);
    r.cached += 1;
    sample_.push_back(&r);
    rows_.push_back(b.last_row(b.num_seqs() - 1));
  }
  int64_t budget = options_.step_tokens - b.num_tokens();
  for (Request& r : running_) {
    if (budget <= 0) break;
    const std::vector<int64_t>& tokens = prefill_tokens(r);
    const auto len = static_cast<int64_t>(tokens.size());
    if (r.cached >= len || r.preempt_now) continue;
    // With preemption a prompt chunk takes only free blocks (it never preempts anyone); the
    // younger requests behind it would not fit either.
    const int64_t n = std::min(len - r.cached, pre ? std::min(budget, fitting_tokens(r)) : budget);
    if (n <= 0) break;
    s.reserve_kv(r.seq, r.cached, r.cached + n);
    b.add(*s.blocks_, r.seq, tokens.data() + r.cached, n, r.cached);
    r.cached += n;
    budget -= n;
    step_prompt_tokens_ += n;
    // Prompt complete: its last row gives the first new token (a replay ends with the last
    // generated token still to feed: the next step decodes it).
    if (r.cached == len && r.out.empty()) {
      sample_.push_back(&r);
      rows_.push_back(b.last_row(b.num_seqs() - 1));
    }
  }
  return b.num_seqs() > 0;
}

void Engine::sample_and_retire(std::vector<EngineEvent>& events) {
  InferenceSession& s = session_;
  const auto R = static_cast<int64_t>(sample_.size());
  if (R == 0) return;
  s.logits_.resize(DType::kFloat32, {R, s.config().vocab_size});
  s.model_->logits_for_rows(s.ctx_, s.scratch_, rows_, s.logits_.view());
  params_.resize(static_cast<size_t>(R));
  steps_.resize(static_cast<size_t>(R));
  for (size_t i = 0; i < sample_.size(); ++i) {
    params_[i] = sample_[i]->params.sampling;
    steps_[i] = sample_[i]->out.size();  // index of the token being drawn
  }
  s.sampled_.resize(DType::kInt32, {R});
  s.sampled_host_.resize(DType::kInt32, {R});
  kernels::sample(s.ctx_, s.logits_.view(), params_, steps_, s.sampled_.view());
  copy_tensor(s.ctx_, s.sampled_.view(), s.sampled_host_.view());
  synchronize(s.ctx_);
  const int32_t* tok = s.sampled_host_.data_as<int32_t>();
  for (size_t i = 0; i < sample_.size(); ++i) {
    Request& r = *sample_[i];
    r.out.push_back(tok[i]);
    const auto& stops = r.params.stop_tokens;
    FinishReason why = FinishReason::kNone;
    if (std::find(stops.begin(), stops.end(), tok[i]) != stops.end()) {
      why = FinishReason::kStop;
    } else if (static_cast<int64_t>(r.out.size()) >= r.params.max_new_tokens) {
      why = FinishReason::kLength;
    }
    events.push_back(EngineEvent{r.id, tok[i], why != FinishReason::kNone, why});
    if (why != FinishReason::kNone) {
      release(r);
      r.done = true;  // removed at the end of the step
    }
  }
}

std::vector<EngineEvent> Engine::step() {
  std::lock_guard<std::mutex> step_lock(step_mu_);
  std::lock_guard<std::mutex> session_lock(session_.mu_);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<EngineEvent> events;
  if (session_.world_size() > 1) sync_ranks();
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopped_) return events;
    if (stop_requested_) {  // the last step: everything left is cancelled
      for (const Request& r : waiting_) cancels_.push_back(r.id);
      for (const Request& r : running_) cancels_.push_back(r.id);
      for (const Request& r : preempted_) cancels_.push_back(r.id);
    }
  }
  apply_cancellations(events);
  admit();
  step_prompt_tokens_ = 0;
  bool ran = false;
  try {
    ran = plan_step();
    if (ran) {
      const layers::ForwardBatch batch = session_.builder_.build();
      const int64_t host_tokens =
          batch.has_host_kv() ? batch.host_cu_seqlens_k.data_as<int32_t>()[batch.num_seqs] : 0;
      const int64_t stream_before = session_.timings_.spill_stream_steps;
      const auto f0 = std::chrono::steady_clock::now();
      session_.forward(batch);
      sample_and_retire(events);
      if (host_tokens > 0) {  // teaches the spill path chooser, as the session's decode does
        session_.spill_paths_.record(
            session_.timings_.spill_stream_steps > stream_before
                ? layers::ForwardBatch::SpillPath::kStream
                : layers::ForwardBatch::SpillPath::kCpu,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count(),
            host_tokens);
      }
    }
  } catch (const std::exception& e) {
    // A failed pass leaves the running requests' KV half-written: they cannot go on. They end
    // with kError (their blocks freed, the pool stays whole); waiting and preempted ones stay
    // queued.
    for (Request& r : running_) {
      if (r.preempt_now) continue;  // preempted before the failure: its stash is whole
      release(r);
      r.done = true;
      events.push_back(EngineEvent{r.id, -1, true, FinishReason::kError});
    }
    sample_.clear();
    if (session_.world_size() > 1) {  // the ranks may no longer agree: end the job
      log_message(LogLevel::kError, detail::concat("rank ", session_.rank(), ": engine step ",
                                                   "failed under mpirun: ", e.what()));
      comm::abort_job(1);
    }
    std::lock_guard<std::mutex> lock(queue_mu_);
    last_error_ = e.what();
    ++stats_.errors;
  }
  size_t finished = 0;
  for (const Request& r : running_) finished += r.done ? 1 : 0;
  running_.erase(
      std::remove_if(running_.begin(), running_.end(), [](const Request& r) { return r.done; }),
      running_.end());
  park_preempted();
  const int64_t stash_bytes = stashed_bytes();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(queue_mu_);
  for (const EngineEvent& e : events) {
    if (e.finished) live_.erase(e.request);
  }
  stats_.finished += static_cast<int64_t>(finished);
  stats_.waiting = static_cast<int64_t>(waiting_.size());
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.preempted = static_cast<int64_t>(preempted_.size());
  stats_.preempted_kv_bytes = stash_bytes;
  stats_.recomputed = recomputed_;
  stats_.kv_blocks_free =
      session_.blocks_->free_device_blocks() + session_.blocks_->free_host_blocks();
  stats_.kv_blocks_reserved = reserved_blocks_;
  if (stop_requested_) stopped_ = true;
  if (ran) ++stats_.steps;
  stats_.prompt_tokens += step_prompt_tokens_;
  stats_.generated_tokens += static_cast<int64_t>(sample_.size());
  stats_.step_seconds += dt;
  return events;
}

}  // namespace fastattn::runtime
