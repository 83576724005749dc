// Switches read from the environment (debugging and A/B knobs, documented where they are read).
#pragma once

namespace fastattn {

// Unset or empty: fallback; "0": false; "1": true; anything else throws InvalidArgument naming
// the variable and its value.
bool env_flag(const char* name, bool fallback);

// Unset or empty: fallback; else a decimal integer in [lo, hi], or InvalidArgument naming the
// variable, its value and the range.
long long env_int(const char* name, long long fallback, long long lo, long long hi);

// env_int over [0, INT_MAX] as an int (counts and indices: threads, CTAs, ranks).
int env_count(const char* name, int fallback);

}  // namespace fastattn
