// Errors are exceptions whose message names the file, tensor, shape or option at fault.
// FA_CHECK(cond, parts...) checks user input: it throws fastattn::InvalidArgument whose message is
// the parts streamed together (for users: no source location). FA_ASSERT checks an internal
// invariant and adds the location (a failure is a bug here).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fastattn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Raised for bad user input (shapes, options, files); maps to Python ValueError.
class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& what) : Error(what) {}
};

// Raised when a file is missing, unreadable or does not match what it should hold.
class FileError : public Error {
 public:
  explicit FileError(const std::string& what) : Error(what) {}
};

// Raised when a memory budget or pool cannot hold what is asked of it.
class OutOfMemory : public Error {
 public:
  explicit OutOfMemory(const std::string& what) : Error(what) {}
};

namespace detail {
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}
}  // namespace detail

}  // namespace fastattn

#define FA_THROW_AS(ExcType, ...) throw ::fastattn::ExcType(::fastattn::detail::concat(__VA_ARGS__))

// Checks a condition on user input; throws InvalidArgument with the message.
#define FA_CHECK(cond, ...)                      \
  do {                                           \
    if (!(cond)) {                               \
      FA_THROW_AS(InvalidArgument, __VA_ARGS__); \
    }                                            \
  } while (0)

// Checks an internal invariant; a failure is a bug in fastattn, so the location is included.
#define FA_ASSERT(cond, ...)                                                         \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      FA_THROW_AS(Error, "internal error at ", __FILE__, ":", __LINE__, " (", #cond, \
                  "): ", ##__VA_ARGS__);                                             \
    }                                                                                \
  } while (0)
