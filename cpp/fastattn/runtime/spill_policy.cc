#include "fastattn/runtime/spill_policy.h"

#include "fastattn/core/error.h"

namespace fastattn::runtime {

SpillPathChooser::SpillPathChooser(const std::string& mode) : mode_(mode) {
  FA_CHECK(mode == "auto" || mode == "cpu" || mode == "stream",
           "spill_attention: must be auto, cpu or stream, got '", mode, "'");
}

SpillPathChooser::Path SpillPathChooser::choose(bool on_gpu, int64_t num_tokens) {
  if (mode_ == "cpu") return Path::kCpu;
  if (mode_ == "stream") return Path::kStream;
  if (!on_gpu) return Path::kCpu;
  if (num_tokens > kPrefillTokens) return Path::kStream;
  const double stream = cost(Path::kStream), cpu = cost(Path::kCpu);
  if (stream == 0.0) return Path::kStream;
  if (cpu == 0.0) return Path::kCpu;
  const Path best = stream <= cpu ? Path::kStream : Path::kCpu;
  const Path other = best == Path::kStream ? Path::kCpu : Path::kStream;
  return ++decisions_ % kReprobe == 0 ? other : best;
}

void SpillPathChooser::record(Path path, double seconds, int64_t host_tokens) {
  if (host_tokens <= 0 || seconds <= 0.0) return;
  double& c = cost_[static_cast<int>(path)];
  const double now = seconds / static_cast<double>(host_tokens);
  c = c == 0.0 ? now : 0.75 * c + 0.25 * now;  // smoothed: one noisy step does not flip it
}

}  // namespace fastattn::runtime
