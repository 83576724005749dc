// Minimal leveled logging to stderr. Level from FASTATTN_LOG_LEVEL (debug, info, warning, error;
// default warning) or set_log_level().
#pragma once

#include <string>

#include "fastattn/core/error.h"

namespace fastattn {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, const std::string& msg);

}  // namespace fastattn

#define FA_LOG(level, ...)                                              \
  do {                                                                  \
    if (static_cast<int>(::fastattn::LogLevel::level) >=                \
        static_cast<int>(::fastattn::log_level())) {                    \
      ::fastattn::log_message(::fastattn::LogLevel::level,              \
                              ::fastattn::detail::concat(__VA_ARGS__)); \
    }                                                                   \
  } while (0)
