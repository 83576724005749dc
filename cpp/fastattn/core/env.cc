#include "fastattn/core/env.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "fastattn/core/error.h"

namespace fastattn {

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || v[0] == '\0') return fallback;
  if (std::strcmp(v, "0") == 0) return false;
  if (std::strcmp(v, "1") == 0) return true;
  FA_THROW_AS(InvalidArgument, "environment variable ", name, ": expected 0 or 1, got '", v, "'");
}

long long env_int(const char* name, long long fallback, long long lo, long long hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || v[0] == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(v, &end, 10);
  FA_CHECK(errno == 0 && end != v && *end == '\0' && value >= lo && value <= hi,
           "environment variable ", name, ": expected an integer in [", lo, ", ", hi, "], got '", v,
           "'");
  return value;
}

int env_count(const char* name, int fallback) {
  return static_cast<int>(env_int(name, fallback, 0, INT_MAX));
}

}  // namespace fastattn
