/// @file
/// @brief The library's error conventions and the argument-check helpers.
///
/// Errors: a bad argument at an API boundary throws a standard exception whose
/// message names the function, the argument, its value and the allowed range:
/// - `std::invalid_argument` for a value outside its domain (β ∉ (0,1), NaN, T = 0,
///   a malformed spacing string, sizes that disagree);
/// - `std::out_of_range` for an index outside its range (a timestep ≥ T);
/// - `std::domain_error` for an operation that is undefined at an otherwise valid
///   argument (an ε → x₀ conversion where ᾱ = 0), and for a non-finite value the library
///   computed or a model returned.
/// Nothing is silently clamped. Hot inner loops only use @ref DIFFUSION_ASSERT.
#pragma once

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"

namespace diffusion {
namespace detail {


/// Shortest round-trip text of a number, for error messages.
inline std::string to_text(double x) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  return ec == std::errc{} ? std::string(buf, end) : std::string("?");
}
inline std::string to_text(float x) { return to_text(static_cast<double>(x)); }
template <std::integral I>
std::string to_text(I x) {
  return std::to_string(x);
}
inline std::string to_text(std::string_view s) { return std::string(s); }

/// Builds "where: message" and throws `std::invalid_argument`.
[[noreturn]] inline void throw_invalid(std::string_view where, const std::string& what) {
  throw std::invalid_argument(std::string(where) + ": " + what);
}
/// Builds "where: message" and throws `std::out_of_range`.
[[noreturn]] inline void throw_out_of_range(std::string_view where, const std::string& what) {
  throw std::out_of_range(std::string(where) + ": " + what);
}
/// Builds "where: message" and throws `std::domain_error`.
[[noreturn]] inline void throw_domain(std::string_view where, const std::string& what) {
  throw std::domain_error(std::string(where) + ": " + what);
}

/// Requires `lo < x < hi` (open interval), finite.
inline void check_open(std::string_view where, std::string_view name, double x, double lo, double hi) {
  if (!(x > lo && x < hi))
    throw_invalid(where, std::string(name) + " = " + to_text(x) + " is outside the allowed range (" + to_text(lo) +
                             ", " + to_text(hi) + ")");
}
/// Requires `lo < x <= hi`.
inline void check_open_closed(std::string_view where, std::string_view name, double x, double lo, double hi) {
  if (!(x > lo && x <= hi))
    throw_invalid(where, std::string(name) + " = " + to_text(x) + " is outside the allowed range (" + to_text(lo) +
                             ", " + to_text(hi) + "]");
}
/// Requires a finite, strictly positive value.
inline void check_positive(std::string_view where, std::string_view name, double x) {
  if (!(x > 0.0 && std::isfinite(x)))
    throw_invalid(where, std::string(name) + " = " + to_text(x) + " must be finite and > 0");
}
/// Requires a finite value.
inline void check_finite(std::string_view where, std::string_view name, double x) {
  if (!std::isfinite(x)) throw_invalid(where, std::string(name) + " = " + to_text(x) + " must be finite");
}
/// Requires an index `i < n`.
inline void check_index(std::string_view where, std::string_view name, std::size_t i, std::size_t n) {
  if (i >= n)
    throw_out_of_range(where, std::string(name) + " = " + to_text(i) + " is outside the allowed range [0, " +
                                  to_text(n) + ")");
}

/// @brief An argument name with an index, `prefix` j `suffix` ("state.eps[2]", "the weight of eps_1"),
/// formed in a fixed buffer: the per-step checks of a history's slots name them without allocating
/// (a std::string of more than 15 characters would allocate at every step). Longer names are cut.
class indexed_name {
 public:
  indexed_name(std::string_view prefix, std::size_t j, std::string_view suffix = {}) noexcept {
    append(prefix);
    char digits[24] = {};
    const auto r = std::to_chars(digits, digits + sizeof digits, j);
    append(std::string_view(digits, static_cast<std::size_t>(r.ptr - digits)));
    append(suffix);
  }
  /// The name.
  operator std::string_view() const noexcept { return {buf_, len_}; }

 private:
  void append(std::string_view s) noexcept {
    const std::size_t n = s.size() < sizeof buf_ - len_ ? s.size() : sizeof buf_ - len_;
    for (std::size_t i = 0; i < n; ++i) buf_[len_ + i] = s[i];
    len_ += n;
  }
  char buf_[96] = {};
  std::size_t len_ = 0;
};

/// Requires an enumerator of E among its `count` declared values 0 … count − 1 (an enum cast from an integer,
/// say read from a file, may hold any value): std::invalid_argument naming the argument and the allowed ones.
template <class E>
  requires std::is_enum_v<E>
void check_enum(std::string_view where, std::string_view name, E value, std::size_t count, std::string_view allowed) {
  const auto v = static_cast<std::underlying_type_t<E>>(value);
  if (std::cmp_less(v, 0) || std::cmp_greater_equal(v, count))
    throw_invalid(where, std::string(name) + " = " + to_text(static_cast<long long>(v)) + " is not one of " +
                             std::string(allowed));
}

/// Reserves room for count + extra elements in v, a table whose length the caller chose (a number of
/// timesteps, of levels, of steps), or throws std::invalid_argument naming `where`, the request (`what`,
/// e.g. "num_timesteps = 5000000000") and the unit when it cannot be had: count + extra overflows size_t,
/// exceeds the vector's max_size(), or the allocation fails (std::bad_alloc, std::length_error). A request
/// that fits in address space but not in memory may still meet the operating system's out-of-memory
/// handling: the library cannot see that limit.
template <class T>
void reserve_table(std::string_view where, std::string_view what, std::vector<T>& v, std::size_t count,
                   std::string_view unit, std::size_t extra = 0) {
  const auto refuse = [&] {
    throw_invalid(where, std::string(what) + " asks for " + to_text(count) + (extra ? " + " + to_text(extra) : "") +
                             " " + std::string(unit) + ", more than can be allocated (" + to_text(v.max_size()) +
                             " at most, and only as far as memory allows)");
  };
  if (count > v.max_size() || extra > v.max_size() - count) refuse();
  try {
    v.reserve(count + extra);
  } catch (const std::bad_alloc&) {
    refuse();
  } catch (const std::length_error&) {
    refuse();
  }
}

/// count + extra copies of value (reserve_table's checks and message, then the fill).
template <class T>
std::vector<T> allocate_table(std::string_view where, std::string_view what, std::size_t count, std::string_view unit,
                              std::size_t extra = 0, const T& value = T{}) {
  std::vector<T> v;
  reserve_table(where, what, v, count, unit, extra);
  v.assign(count + extra, value);
  return v;
}

/// A coefficient computed in double, as T; throws std::domain_error (naming it) when it is not
/// finite in T (a σ of 1e39 is +∞ in float).
template <real_scalar T>
T coefficient(std::string_view where, std::string_view name, double value) {
  const T v = static_cast<T>(value);
  if (!std::isfinite(v))
    throw_domain(where, std::string(name) + " = " + to_text(value) + " is not finite as " +
                            (sizeof(T) == sizeof(float) ? "float" : "double") +
                            ": the library's arithmetic would overflow the element type");
  return v;
}

/// Throws std::domain_error when a public tensor function's kernel reported a non-finite output
/// (a non-finite input, or a result beyond the range of the element type).
inline void require_finite_output(std::string_view where, bool finite, std::string_view output) {
  if (!finite)
    throw_domain(where, std::string(output) +
                            " has a non-finite element: an input is not finite, or the result overflows the "
                            "element type");
}

}  // namespace detail
}  // namespace diffusion
