/// @file
/// @brief Choosing N inference timesteps out of T, and respacing a schedule onto them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/double_double.hpp"
#include "../core/errors.hpp"
#include "noise_schedule.hpp"

/// @defgroup timesteps Timestep selection and respacing
/// @brief diffusers-compatible spacings, improved DDPM's `space_timesteps`, respaced schedules.
/// @{

namespace diffusion {

/// @brief A strictly decreasing list of 0-based training timesteps, the order in which a
/// sampler visits them (the paper's t = value + 1).
///
/// The step after position k is position k + 1; after the last comes the data x₀.
/// @ref previous is read from the list itself, never computed as t − T/N (the
/// arithmetic form is wrong for linspace and trailing spacing: diffusers #9261, #11347).
class timestep_sequence {
 public:
  /// @brief Wraps a user list.
  /// @param[in] timesteps strictly decreasing, non-empty, each < num_train_timesteps.
  /// @param[in] num_train_timesteps T of the schedule the timesteps index into.
  /// @throws std::invalid_argument if the list is empty or not strictly decreasing;
  ///         std::out_of_range if a value is ≥ T.
  timestep_sequence(std::vector<std::size_t> timesteps, std::size_t num_train_timesteps)
      : t_(std::move(timesteps)), num_train_(num_train_timesteps) {
    constexpr std::string_view where = "diffusion::timestep_sequence";
    if (num_train_ == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
    if (t_.empty()) detail::throw_invalid(where, "timesteps is empty");
    for (std::size_t k = 0; k < t_.size(); ++k) {
      if (t_[k] >= num_train_)
        detail::throw_out_of_range(where, "timesteps[" + detail::to_text(k) + "] = " + detail::to_text(t_[k]) +
                                              " is outside the allowed range [0, " + detail::to_text(num_train_) + ")");
      if (k > 0 && t_[k] >= t_[k - 1])
        detail::throw_invalid(where, "timesteps must be strictly decreasing: timesteps[" + detail::to_text(k) +
                                         "] = " + detail::to_text(t_[k]) + " >= timesteps[" + detail::to_text(k - 1) +
                                         "] = " + detail::to_text(t_[k - 1]));
    }
  }

  /// Number of inference steps N.
  [[nodiscard]] std::size_t size() const noexcept { return t_.size(); }
  /// T of the schedule these timesteps index into.
  [[nodiscard]] std::size_t num_train_timesteps() const noexcept { return num_train_; }
  /// Timestep at position k, unchecked (asserts).
  [[nodiscard]] std::size_t operator[](std::size_t k) const noexcept {
    DIFFUSION_ASSERT(k < t_.size());
    return t_[k];
  }
  /// The timesteps, descending.
  [[nodiscard]] std::span<const std::size_t> values() const noexcept { return t_; }
  /// Iterator to the first (largest) timestep.
  [[nodiscard]] auto begin() const noexcept { return t_.begin(); }
  /// Iterator past the last (smallest) timestep.
  [[nodiscard]] auto end() const noexcept { return t_.end(); }

  /// @brief The timestep visited after position k, or `std::nullopt` after the last
  /// (the next state is the data x₀).
  /// @throws std::out_of_range if k ≥ size().
  [[nodiscard]] std::optional<std::size_t> previous(std::size_t k) const {
    detail::check_index("diffusion::timestep_sequence::previous", "position", k, t_.size());
    if (k + 1 == t_.size()) return std::nullopt;
    return t_[k + 1];
  }
  /// @brief The timestep that follows the value t in this list (diffusers'
  /// `previous_timestep`, read from the list), or `std::nullopt` if t is the last.
  /// @throws std::invalid_argument if t is not in the list.
  [[nodiscard]] std::optional<std::size_t> previous_of(std::size_t t) const {
    const auto it = std::lower_bound(t_.begin(), t_.end(), t, std::greater<>{});
    if (it == t_.end() || *it != t)
      detail::throw_invalid("diffusion::timestep_sequence::previous_of",
                            "t = " + detail::to_text(t) + " is not one of the sequence's timesteps");
    return previous(static_cast<std::size_t>(it - t_.begin()));
  }

  /// Equal lists over the same T.
  friend bool operator==(const timestep_sequence&, const timestep_sequence&) = default;

 private:
  std::vector<std::size_t> t_;
  std::size_t num_train_;
};

namespace detail {

/// The quotient and remainder of an exact integer division.
struct quotient_remainder {
  std::size_t quotient, remainder;
};

/// \f$(\lfloor ab/d\rfloor,\ ab \bmod d)\f$ for a, b < d, exactly and without overflow for every
/// size_t: binary long multiplication that keeps the partial product reduced modulo d.
inline quotient_remainder mul_div(std::size_t a, std::size_t b, std::size_t d) noexcept {
  DIFFUSION_ASSERT(a < d && b < d);
  std::size_t q = 0, r = 0;  // invariant: q·d + r = a·(b >> bit), r < d
  for (int bit = std::numeric_limits<std::size_t>::digits - 1; bit >= 0; --bit) {
    q <<= 1;  // q ≤ a·b/d < b: never overflows
    if (r >= d - r) {
      r -= d - r;
      ++q;
    } else {
      r += r;
    }
    if ((b >> bit) & 1u) {
      if (r >= d - a) {
        r -= d - a;
        ++q;
      } else {
        r += a;
      }
    }
  }
  return {q, r};
}

/// \f$i\cdot n/d\f$ rounded half to even, exactly, for 0 ≤ i ≤ d, d ≥ 1 (the result is ≤ n).
inline std::size_t scaled_round_half_even(std::size_t i, std::size_t n, std::size_t d) noexcept {
  DIFFUSION_ASSERT(d >= 1 && i <= d);
  if (i == d) return n;
  // i·n/d = i·(n / d) + i·(n mod d)/d, the second part by mul_div (i, n mod d < d).
  const auto [q, r] = mul_div(i, n % d, d);
  std::size_t v = i * (n / d) + q;  // ≤ i·n/d < n
  if (r > d - r || (r == d - r && (v & 1u) != 0)) ++v;
  return v;
}

/// True when a·b < 2^bits, for a, b ≥ 1 (no overflow).
inline bool product_below_pow2(std::size_t a, std::size_t b, int bits) noexcept {
  const std::size_t limit = std::size_t{1} << bits;
  return a < limit && b <= (limit - 1) / a;
}

/// An empty vector with room for n timesteps, or std::invalid_argument naming the request when n cannot
/// be allocated (detail::reserve_table).
inline std::vector<std::size_t> allocate_timesteps(std::string_view where, std::string_view what, std::size_t n) {
  std::vector<std::size_t> v;
  reserve_table(where, what, v, n, "timesteps");
  return v;
}

/// A user string for an error message: quoted, at most 60 characters, with `"`, `\` and every
/// byte outside printable ASCII escaped (`\x00`), and the full length stated when truncated.
inline std::string quote_text(std::string_view s) {
  constexpr std::size_t max_chars = 60;
  constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  const std::size_t shown = std::min(s.size(), max_chars);
  for (std::size_t k = 0; k < shown; ++k) {
    const auto c = static_cast<unsigned char>(s[k]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  out += '"';
  if (shown < s.size()) out += " (the first " + to_text(shown) + " of " + to_text(s.size()) + " characters)";
  return out;
}

}  // namespace detail

/// @brief How inference_timesteps() places N steps in [0, T−1] (diffusers' `timestep_spacing`;
/// Lin et al. 2023 Table 2 compares them).
enum class timestep_spacing {
  /// `round(linspace(0, T−1, N))`, reversed: includes both T−1 and 0.
  linspace,
  /// `arange(N)·(T // N) + steps_offset`, reversed: never reaches T−1 (diffusers #2585).
  leading,
  /// `round(arange(T, 0, −T/N)) − 1`: starts at T−1 and may skip 0 (Lin et al. 2023 recommend it).
  trailing,
};

/// @brief N inference timesteps out of T, exactly as diffusers' DDIM/DDPM schedulers choose them.
///
/// Rounding is numpy's round-half-to-even (so trailing with T = 1000, N = 16 gives 811,
/// not 812). As in diffusers, `steps_offset` applies to `leading` only; the other
/// spacings ignore it (stated here because it surprises: Stable Diffusion 1.x configs set
/// `steps_offset = 1` with leading spacing).
///
/// Every T a size_t holds is served, in integer arithmetic that cannot overflow. For N·T < 2^51
/// (every practical schedule) linspace and trailing repeat numpy's float64 operations, so the
/// result is bit-identical to diffusers, including where float64 rounding moves a value that is
/// exactly halfway (T = 26, N = 23 gives 13 where the exact half-to-even rounding of 11·25/22 is
/// 12); below that bound those operations provably give N distinct timesteps in [0, T−1]. Above
/// it, where float64 can no longer hold the timesteps apart (numpy then returns duplicates, or
/// values ≥ T), the values are the exact rationals \f$i(T-1)/(N-1)\f$ (linspace) and
/// \f$T(N-i)/N - 1\f$ (trailing), rounded half to even.
/// @param[in] num_train_timesteps T ≥ 1.
/// @param[in] num_steps N, 1 ≤ N ≤ T.
/// @param[in] spacing see @ref timestep_spacing.
/// @param[in] steps_offset added to every leading timestep.
/// @return the N timesteps, descending.
/// @throws std::invalid_argument for N = 0 or N > T, when leading + offset reaches T
///         (diffusers #10003 indexes past the end there instead), or when N timesteps cannot
///         be allocated.
inline timestep_sequence inference_timesteps(std::size_t num_train_timesteps, std::size_t num_steps,
                                             timestep_spacing spacing, std::size_t steps_offset = 0) {
  constexpr std::string_view where = "diffusion::inference_timesteps";
  const std::size_t T = num_train_timesteps, N = num_steps;
  if (T == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  if (N == 0 || N > T)
    detail::throw_invalid(where, "num_steps = " + detail::to_text(N) + " is outside the allowed range [1, " +
                                     detail::to_text(T) + "] (num_train_timesteps)");
  if (spacing != timestep_spacing::linspace && spacing != timestep_spacing::leading &&
      spacing != timestep_spacing::trailing)
    detail::throw_invalid(where, "spacing = " + detail::to_text(static_cast<int>(spacing)) +
                                     " is not one of linspace, leading, trailing");
  if (spacing == timestep_spacing::leading) {
    const std::size_t base = (N - 1) * (T / N);  // < T
    if (steps_offset >= T - base)                // base + steps_offset >= T, without wrapping around
      detail::throw_invalid(where, "leading spacing with steps_offset = " + detail::to_text(steps_offset) +
                                       " and num_steps = " + detail::to_text(N) + " gives timestep " +
                                       detail::to_text(base) + " + " + detail::to_text(steps_offset) +
                                       ", outside the allowed range [0, " + detail::to_text(T) + ")");
  }
  // numpy's float64 arithmetic is exact enough below this bound (see the doc comment).
  const bool as_numpy = detail::product_below_pow2(N, T, 51);
  std::vector<std::size_t> t = detail::allocate_timesteps(where, "num_steps = " + detail::to_text(N), N);
  t.resize(N);
  switch (spacing) {
    case timestep_spacing::linspace: {
      if (as_numpy) {
        // numpy.linspace: y_i = i * ((T-1)/(N-1)), last set to T-1 exactly; then round half to even.
        const double step = N > 1 ? static_cast<double>(T - 1) / static_cast<double>(N - 1) : 0.0;
        for (std::size_t i = 0; i < N; ++i) {
          const double y = i + 1 == N && N > 1 ? static_cast<double>(T - 1) : static_cast<double>(i) * step;
          t[N - 1 - i] = static_cast<std::size_t>(std::nearbyint(y));
        }
      } else {
        for (std::size_t i = 0; i < N; ++i)
          t[N - 1 - i] = N == 1 ? 0 : detail::scaled_round_half_even(i, T - 1, N - 1);
      }
      break;
    }
    case timestep_spacing::leading: {
      const std::size_t ratio = T / N;  // checked above: (N − 1)·ratio + steps_offset < T
      for (std::size_t i = 0; i < N; ++i) t[N - 1 - i] = i * ratio + steps_offset;
      break;
    }
    case timestep_spacing::trailing: {
      if (as_numpy) {
        // numpy.arange(T, 0, -T/N): start + i*delta with delta = (start + step) - start; round half to even; minus 1.
        const double start = static_cast<double>(T);
        const double step = -start / static_cast<double>(N);
        const double delta = (start + step) - start;
        for (std::size_t i = 0; i < N; ++i) {
          const double y = i == 0 ? start : start + static_cast<double>(i) * delta;
          t[i] = static_cast<std::size_t>(std::nearbyint(y)) - 1;
        }
      } else {
        // T(N - i)/N ≥ T/N ≥ 1, so the rounded value is ≥ 1.
        for (std::size_t i = 0; i < N; ++i) t[i] = detail::scaled_round_half_even(N - i, T, N) - 1;
      }
      break;
    }
  }
  return timestep_sequence(std::move(t), T);
}

namespace detail {
/// Parses a non-empty run of decimal digits into a positive count; throws otherwise.
inline std::size_t parse_count(std::string_view where, std::string_view spec, std::string_view token) {
  const auto grammar = "; expected \"ddimN\" or a comma-separated list of positive integers";
  if (token.empty()) throw_invalid(where, "spacing " + quote_text(spec) + " has an empty count" + grammar);
  std::size_t v = 0;
  for (char c : token) {
    if (c < '0' || c > '9')
      throw_invalid(where, "spacing " + quote_text(spec) + " has the count " + quote_text(token) +
                               ", which is not a positive integer" + grammar);
    const auto digit = static_cast<std::size_t>(c - '0');
    if (v > (std::numeric_limits<std::size_t>::max() - digit) / 10)
      throw_invalid(where, "spacing " + quote_text(spec) + ": the count " + quote_text(token) +
                               " is too large (more than " + to_text(std::numeric_limits<std::size_t>::max()) + ")");
    v = v * 10 + digit;
  }
  if (v == 0) throw_invalid(where, "spacing " + quote_text(spec) + " has a count of 0; counts must be >= 1");
  return v;
}
}  // namespace detail

/// @brief improved DDPM's `space_timesteps` (Nichol & Dhariwal 2021 §4, `respace.py`):
/// which of T timesteps to keep, from a string.
///
/// - `"ddimN"`: the smallest integer stride s in [1, T) with |range(0, T, s)| = N
///   (so, as in iDDPM, `"ddim1"` is never possible); s = ⌈T/N⌉ when that works, found in O(1);
/// - `"a,b,c"`: split T into as many sections (the first T mod k one longer), and take
///   `round(j·(size−1)/(count−1))` in each, j = 0 … count−1. Where count·size < 2^50 (every
///   practical schedule) this accumulates the stride by repeated float64 addition and rounds half
///   to even, as Python does, so the result is bit-identical to iDDPM's; that accumulation
///   provably stays within a quarter step there. Above the bound, where it would drift by whole
///   timesteps (iDDPM then returns duplicates or indices outside the section), the exact rational
///   is rounded half to even in integer arithmetic.
///
/// Every T a size_t holds is served without overflow. Stricter than iDDPM: counts must be plain
/// positive decimal integers (iDDPM's `int()` also takes " 5", "+5" and "1_0", and a count of 0
/// silently takes nothing). Error messages quote at most 60 characters of the string, with
/// non-printable bytes escaped.
/// @param[in] num_train_timesteps T ≥ 1.
/// @param[in] spec the spacing string.
/// @return the kept timesteps, descending.
/// @throws std::invalid_argument for a malformed string or an impossible request
///         ("ddim7" with T = 10, a section asked for more steps than it has), or when the kept
///         timesteps cannot be allocated.
inline timestep_sequence space_timesteps(std::size_t num_train_timesteps, std::string_view spec) {
  constexpr std::string_view where = "diffusion::space_timesteps";
  const std::size_t T = num_train_timesteps;
  if (T == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  std::vector<std::size_t> kept;
  if (spec.starts_with("ddim")) {
    const std::size_t n = detail::parse_count(where, spec, spec.substr(4));
    // |range(0, T, s)| = ⌈T/s⌉ falls as s grows, and ⌈T/s⌉ ≤ n exactly when s ≥ ⌈T/n⌉: the
    // smallest candidate is s = ⌈T/n⌉, and no stride works if it does not.
    const std::size_t s = T / n + (T % n != 0 ? 1 : 0);
    if (!(s < T && T / s + (T % s != 0 ? 1 : 0) == n))
      detail::throw_invalid(where, "spacing " + detail::quote_text(spec) + ": cannot take exactly " +
                                       detail::to_text(n) + " of " + detail::to_text(T) +
                                       " timesteps with an integer stride in [1, " + detail::to_text(T) + ")");
    kept = detail::allocate_timesteps(where, "spacing " + detail::quote_text(spec), n);
    for (std::size_t k = n; k-- > 0;) kept.push_back(k * s);  // (n − 1)·s < T: no overflow
  } else {
    std::vector<std::size_t> counts;
    std::size_t pos = 0;
    while (true) {
      const std::size_t comma = spec.find(',', pos);
      counts.push_back(detail::parse_count(where, spec, spec.substr(pos, comma == spec.npos ? spec.npos : comma - pos)));
      if (comma == spec.npos) break;
      if (counts.size() == T)  // and a comma follows: at least T + 1 sections
        detail::throw_invalid(where, "spacing " + detail::quote_text(spec) + " has more sections than the " +
                                         detail::to_text(T) + " timesteps");
      pos = comma + 1;
    }
    const std::size_t size_per = T / counts.size(), extra = T % counts.size();
    std::size_t total = 0;  // ≤ T once every section is checked
    for (std::size_t k = 0; k < counts.size(); ++k) {
      const std::size_t size = size_per + (k < extra ? 1 : 0);
      if (size < counts[k])
        detail::throw_invalid(where, "spacing " + detail::quote_text(spec) + ": section " + detail::to_text(k) +
                                         " has " + detail::to_text(size) + " timesteps, fewer than the " +
                                         detail::to_text(counts[k]) + " asked for");
      total += counts[k];
    }
    kept = detail::allocate_timesteps(where, "spacing " + detail::quote_text(spec), total);
    std::size_t start = 0;
    for (std::size_t k = 0; k < counts.size(); ++k) {
      const std::size_t size = size_per + (k < extra ? 1 : 0);
      const std::size_t count = counts[k];
      if (count == 1) {
        kept.push_back(start);
      } else if (detail::product_below_pow2(count, size, 50)) {
        const double stride = static_cast<double>(size - 1) / static_cast<double>(count - 1);
        double cur = 0.0;
        for (std::size_t j = 0; j < count; ++j) {
          kept.push_back(start + static_cast<std::size_t>(std::nearbyint(cur)));
          cur += stride;
        }
      } else {
        for (std::size_t j = 0; j < count; ++j) kept.push_back(start + detail::scaled_round_half_even(j, size - 1, count - 1));
      }
      start += size;
    }
  }
  std::sort(kept.begin(), kept.end(), std::greater<>{});
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  return timestep_sequence(std::move(kept), T);
}

/// @brief The timesteps of multistep consistency sampling for Latent Consistency Models and
/// Trajectory Consistency Distillation (Luo et al. 2023 §4.3 and Algorithm 3; Zheng et al. 2024
/// §4.3), as diffusers' LCMScheduler and TCDScheduler choose them: the distillation schedule of
/// `original_steps` timesteps \f$t_i = (i + 1)\lfloor T/\text{original\_steps}\rfloor - 1\f$,
/// \f$i < L = \lfloor \text{original\_steps}\cdot\text{strength}\rfloor\f$, is reversed and N of them are taken at the
/// indices \f$\lfloor j\cdot(L/N)\rfloor\f$, j = 0 … N−1.
///
/// The index is formed as numpy forms `floor(linspace(0, L, N, endpoint=False))`: the product
/// j·(L/N) in float64, so the list is bit-identical to diffusers (as @ref inference_timesteps is).
/// That product can fall just below an integer: with L = 30, N = 22 index 11 is 14 where
/// ⌊11·30/22⌋ = 15. No N differs for the default L = 50. For L·N ≥ 2^51, where float64 cannot
/// hold the indices apart, the exact \f$\lfloor jL/N\rfloor\f$ is used.
/// @param[in] num_train_timesteps T ≥ 1.
/// @param[in] num_steps N, 1 ≤ N ≤ L.
/// @param[in] original_steps the distillation schedule's length (diffusers' `original_inference_steps`, 50), 1 … T.
/// @param[in] strength the fraction of the distillation schedule used (image-to-image; diffusers' `strength`), in (0, 1].
/// @return the N timesteps, descending (the first is \f$L\lfloor T/\text{original\_steps}\rfloor - 1\f$).
/// @throws std::invalid_argument for T = 0, original_steps outside [1, T], strength outside (0, 1],
///         or N outside [1, L].
inline timestep_sequence consistency_timesteps(std::size_t num_train_timesteps, std::size_t num_steps,
                                               std::size_t original_steps = 50, double strength = 1.0) {
  constexpr std::string_view where = "diffusion::consistency_timesteps";
  const std::size_t T = num_train_timesteps, N = num_steps;
  if (T == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  if (original_steps == 0 || original_steps > T)
    detail::throw_invalid(where, "original_steps = " + detail::to_text(original_steps) +
                                     " is outside the allowed range [1, " + detail::to_text(T) + "] (num_train_timesteps)");
  if (!(strength > 0.0 && strength <= 1.0))
    detail::throw_invalid(where, "strength = " + detail::to_text(strength) + " is outside the allowed range (0, 1]");
  // diffusers' int(original_steps * strength), never above original_steps (the float64 product of a
  // size_t near 2^64 can round up to 2^64, which does not convert back).
  const double product = std::floor(static_cast<double>(original_steps) * strength);
  const std::size_t L = strength == 1.0 || product >= 0x1p64 ? original_steps
                                                             : std::min(original_steps, static_cast<std::size_t>(product));
  if (N == 0 || N > L)
    detail::throw_invalid(where, "num_steps = " + detail::to_text(N) + " is outside the allowed range [1, " +
                                     detail::to_text(L) + "] (original_steps * strength = " +
                                     detail::to_text(original_steps) + " * " + detail::to_text(strength) + ")");
  const std::size_t k = T / original_steps;
  const bool as_numpy = detail::product_below_pow2(N, L, 51);
  const double step = static_cast<double>(L) / static_cast<double>(N);
  std::vector<std::size_t> t = detail::allocate_timesteps(where, "num_steps = " + detail::to_text(N), N);
  t.resize(N);
  for (std::size_t j = 0; j < N; ++j) {
    // j·L/N = j·(L / N) + j·(L mod N)/N exactly (mul_div: j, L mod N < N).
    const std::size_t idx = as_numpy ? static_cast<std::size_t>(std::floor(static_cast<double>(j) * step))
                                     : j * (L / N) + detail::mul_div(j, L % N, N).quotient;
    t[j] = (L - idx) * k - 1;  // the reversed list's entry idx: (L − idx)·k − 1 ≥ k − 1 ≥ 0
  }
  return timestep_sequence(std::move(t), T);
}

/// @brief A schedule over a subset of timesteps, and the original timestep of each new step.
struct respaced_schedule {
  /// The K-step schedule; step j has \f$\bar\alpha'_j = \bar\alpha_{\tau_j}\f$.
  noise_schedule schedule;
  /// \f$\tau_j\f$, ascending: call the model with `timestep_map[j]` at new step j
  /// (improved DDPM's `_WrappedModel`; its `rescale_timesteps` option is the caller's business).
  std::vector<std::size_t> timestep_map;
};

/// @brief Respaces a schedule onto kept timesteps (improved DDPM `SpacedDiffusion`, §4):
/// \f$\beta'_j = 1 - \bar\alpha_{\tau_j}/\bar\alpha_{\tau_{j-1}}\f$ with \f$\bar\alpha_{\tau_{-1}} = 1\f$,
/// so that the new chain has the same marginals \f$q(x_{\tau_j}|x_0)\f$ at the kept steps.
///
/// Each β' is computed from the double-double ᾱ as \f$(\bar\alpha_{\tau_{j-1}} - \bar\alpha_{\tau_j})/\bar\alpha_{\tau_{j-1}}\f$,
/// within 1 ulp of the exact value (the `1 − ratio` form loses digits when steps are dense).
/// @param[in] base the full schedule.
/// @param[in] kept timesteps of `base` (for example from @ref space_timesteps).
/// @throws std::invalid_argument if `kept` indexes a schedule of a different T.
inline respaced_schedule respace(const noise_schedule& base, const timestep_sequence& kept) {
  constexpr std::string_view where = "diffusion::respace";
  if (kept.num_train_timesteps() != base.size())
    detail::throw_invalid(where, "kept.num_train_timesteps() = " + detail::to_text(kept.num_train_timesteps()) +
                                     " differs from the schedule's size " + detail::to_text(base.size()));
  std::vector<std::size_t> map(kept.begin(), kept.end());
  std::reverse(map.begin(), map.end());
  std::vector<double> betas(map.size());
  for (std::size_t j = 0; j < map.size(); ++j) {
    // β'_j = 1 − ᾱ_{τ_j}/ᾱ_{τ_{j−1}}: a product over the skipped steps, without cancellation.
    betas[j] = detail::to_double(
        base.one_minus_alpha_bar_ratio_dd(map[j], j == 0 ? noise_schedule::npos : map[j - 1]));
    // A valid base gives valid β' (each ≥ the smallest β it spans), except that β' may round to 1
    // where the base's ᾱ falls below 2^-54 of the previous kept step's: report that here.
    if (!(betas[j] < 1.0) && j + 1 < map.size())
      detail::throw_invalid(where, "the respaced beta of kept timestep " + detail::to_text(map[j]) + " (after " +
                                       (j == 0 ? std::string("the data") : "kept timestep " + detail::to_text(map[j - 1])) +
                                       ") rounds to 1: alpha_bar falls below 2^-54 of its previous value there; keep a "
                                       "timestep in between");
  }
  return {noise_schedule(std::move(betas)), std::move(map)};
}

}  // namespace diffusion

/// @}
