// Shared helpers of the libFuzzer targets in tests/fuzz/: a reader that turns the fuzz bytes
// into sizes and doubles biased toward the edges of their ranges, and the failure report.
// Build and run: scripts/fuzz.sh [seconds]
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace fuzz {

// Prints what went wrong and traps, so that libFuzzer keeps the input as a crash.
[[noreturn]] inline void fail(const char* target, const std::string& input, const std::string& what) {
  std::fprintf(stderr, "\nINVARIANT VIOLATED in %s (%s): %s\n", target, input.c_str(), what.c_str());
  __builtin_trap();
}

// Round-trip text of a double.
inline std::string text(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}
inline std::string text(std::uint64_t x) { return std::to_string(x); }

// Consumes the fuzz bytes front to back; past the end every read is 0.
class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  [[nodiscard]] bool empty() const { return n_ == 0; }
  [[nodiscard]] std::size_t left() const { return n_; }
  const std::uint8_t* rest() const { return p_; }

  std::uint8_t u8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | u8() << 8); }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | u8();
    return v;
  }

  // A size_t from the whole range, biased toward its edges: small, near a power of two, near
  // SIZE_MAX, or any 64-bit value.
  std::size_t size_any() {
    const unsigned mode = u8() % 6;
    switch (mode) {
      case 0: return u16() % 5001;
      case 1: return std::numeric_limits<std::size_t>::max() - u16() % 300;
      case 2: {
        const unsigned k = u8() % 64;
        const auto delta = static_cast<std::int8_t>(u8());
        return (std::size_t{1} << k) + static_cast<std::size_t>(static_cast<std::int64_t>(delta));
      }
      default: return u64();
    }
  }

  // A double biased toward trouble: 0, −0, the subnormals, the smallest normal, 2^-1000, 1 and
  // its neighbours, powers of ten from 1e-320 to 1e308, the largest double, ±∞, NaN, a random
  // fraction in (0, 1), or any 64-bit pattern.
  double real() {
    constexpr double inf = std::numeric_limits<double>::infinity();
    const unsigned mode = u8() % 16;
    switch (mode) {
      case 0: return 0.0;
      case 1: return -0.0;
      case 2: return std::numeric_limits<double>::denorm_min() * static_cast<double>(1 + u8());
      case 3: return std::numeric_limits<double>::min() * (1.0 + u8() / 256.0);
      case 4: return std::ldexp(1.0, -1000 - static_cast<int>(u8() % 8));
      case 5: return 1.0;
      case 6: return std::nextafter(1.0, 0.0);
      case 7: return std::nextafter(1.0, 2.0);
      case 8: return std::pow(10.0, static_cast<int>(u16() % 629) - 320);
      case 9: return std::numeric_limits<double>::max();
      case 10: return (u8() & 1) ? inf : -inf;
      case 11: return std::numeric_limits<double>::quiet_NaN();
      case 12:
      case 13: return (static_cast<double>(u64() >> 11) + 0.5) * 0x1p-53;  // (0, 1)
      default: {
        double x;
        const std::uint64_t bits = u64();
        std::memcpy(&x, &bits, sizeof x);
        return x;
      }
    }
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

// A beta list for a schedule: each entry either a special value (the smallest accepted beta
// 2^-1000, values just below it, 1 − 2^-53, 1, 0.5, 0, a negative value, NaN, ∞), a log-uniform
// value in [2^-1000, 1), or anything reader::real gives; a repeat count makes long schedules
// (up to ~5000 steps) from a few bytes. With `valid_only`, every entry is mapped into the
// accepted range [2^-1000, 1), and the last may be 1 (zero terminal SNR).
inline std::vector<double> betas(reader& r, bool valid_only) {
  std::vector<double> out;
  const std::size_t groups = 1 + r.u8() % 12;
  for (std::size_t g = 0; g < groups && out.size() < 5000; ++g) {
    const unsigned mode = r.u8() % 10;
    double b = 0.0;
    switch (mode) {
      case 0: b = 0x1p-1000; break;
      case 1: b = std::nextafter(0x1p-1000, 0.0); break;
      case 2: b = std::nextafter(1.0, 0.0); break;
      case 3: b = 1.0; break;
      case 4: b = 0.5; break;
      case 5:
      case 6: b = std::exp2(-static_cast<double>(r.u64() >> 11) * 0x1p-53 * 1000.0); break;  // log-uniform
      default: b = r.real(); break;
    }
    if (valid_only && !(b >= 0x1p-1000 && b < 1.0)) {
      const double f = (static_cast<double>(r.u64() >> 11) + 0.5) * 0x1p-53;
      b = std::exp2(-f * 1000.0);  // in [2^-1000, 1)
      if (!(b >= 0x1p-1000 && b < 1.0)) b = 0.5;
    }
    const unsigned rep_mode = r.u8();
    const std::size_t repeat = rep_mode < 200 ? 1 + rep_mode % 8 : 1 + (static_cast<std::size_t>(rep_mode) - 200) * 90;
    for (std::size_t k = 0; k < repeat && out.size() < 5000; ++k) out.push_back(b);
  }
  if (valid_only && (r.u8() & 3) == 0 && out.size() >= 2) out.back() = 1.0;  // zero terminal SNR
  return out;
}

}  // namespace fuzz
