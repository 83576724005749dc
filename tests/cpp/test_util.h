// A small test harness: TEST(name) { ... } registers a case; CHECK* macros record failures;
// main() runs every case and returns non-zero if any failed. Plus float64 reference helpers.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fastattn/core/dtype.h"
#include "fastattn/core/error.h"

namespace fa_test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}

inline int& failures() {
  static int f = 0;
  return f;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> fn) { registry().push_back({name, fn}); }
};

inline void fail(const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, msg.c_str());
  ++failures();
}

// Max |a - b| / max(1, |b|) style error helpers.
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

// Random normal floats, never all zeros.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Value that shows an unwritten output element.
constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

}  // namespace fa_test

#define TEST(name)                                           \
  static void name();                                        \
  static ::fa_test::Registrar name##_registrar(#name, name); \
  static void name()

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) ::fa_test::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_MSG(cond, msg)                                            \
  do {                                                                  \
    if (!(cond)) ::fa_test::fail(__FILE__, __LINE__, std::string(msg)); \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
  do {                                                                                   \
    const double fa_a_ = (a), fa_b_ = (b);                                               \
    if (!(std::fabs(fa_a_ - fa_b_) <= (tol)))                                            \
      ::fa_test::fail(__FILE__, __LINE__,                                                \
                      std::string(#a " = ") + std::to_string(fa_a_) + " vs " #b " = " +  \
                          std::to_string(fa_b_) + " (tol " + std::to_string(tol) + ")"); \
  } while (0)

// Expects the statement to throw ExcType whose message contains `needle`.
#define CHECK_THROWS(stmt, ExcType, needle)                                                    \
  do {                                                                                         \
    bool fa_thrown_ = false;                                                                   \
    try {                                                                                      \
      stmt;                                                                                    \
    } catch (const ExcType& e) {                                                               \
      fa_thrown_ = true;                                                                       \
      if (std::string(e.what()).find(needle) == std::string::npos)                             \
        ::fa_test::fail(__FILE__, __LINE__,                                                    \
                        std::string("message '") + e.what() + "' lacks '" + needle + "'");     \
    }                                                                                          \
    if (!fa_thrown_) ::fa_test::fail(__FILE__, __LINE__, "expected " #ExcType " from " #stmt); \
  } while (0)

#define TEST_MAIN()                                                                    \
  int main() {                                                                         \
    int failed_cases = 0;                                                              \
    for (auto& c : ::fa_test::registry()) {                                            \
      const int before = ::fa_test::failures();                                        \
      try {                                                                            \
        c.fn();                                                                        \
      } catch (const std::exception& e) {                                              \
        ::fa_test::fail(__FILE__, __LINE__, std::string("uncaught: ") + e.what());     \
      }                                                                                \
      const bool ok = ::fa_test::failures() == before;                                 \
      failed_cases += ok ? 0 : 1;                                                      \
      std::printf("[%s] %s\n", ok ? "PASS" : "FAIL", c.name);                          \
    }                                                                                  \
    std::printf("%zu cases, %d failed\n", ::fa_test::registry().size(), failed_cases); \
    return failed_cases == 0 ? 0 : 1;                                                  \
  }
