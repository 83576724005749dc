#include "fastattn/core/env.h"

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

}  // namespace fastattn
