// Switches read from the environment (debugging and A/B knobs, documented where they are read).
#pragma once

namespace fastattn {

// Unset or empty: fallback; "0": false; "1": true; anything else throws InvalidArgument naming
// the variable and its value.
bool env_flag(const char* name, bool fallback);

}  // namespace fastattn
