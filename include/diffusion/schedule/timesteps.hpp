/// @file
/// @brief Choosing N inference timesteps out of T, and respacing a schedule onto them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
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
/// @param[in] num_train_timesteps T ≥ 1.
/// @param[in] num_steps N, 1 ≤ N ≤ T.
/// @param[in] spacing see @ref timestep_spacing.
/// @param[in] steps_offset added to every leading timestep.
/// @return the N timesteps, descending.
/// @throws std::invalid_argument for N = 0 or N > T, or when leading + offset reaches T
///         (diffusers #10003 indexes past the end there instead).
inline timestep_sequence inference_timesteps(std::size_t num_train_timesteps, std::size_t num_steps,
                                             timestep_spacing spacing, std::size_t steps_offset = 0) {
  constexpr std::string_view where = "diffusion::inference_timesteps";
  const std::size_t T = num_train_timesteps, N = num_steps;
  if (T == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  if (N == 0 || N > T)
    detail::throw_invalid(where, "num_steps = " + detail::to_text(N) + " is outside the allowed range [1, " +
                                     detail::to_text(T) + "] (num_train_timesteps)");
  std::vector<std::size_t> t(N);
  switch (spacing) {
    case timestep_spacing::linspace: {
      // numpy.linspace: y_i = i * ((T-1)/(N-1)), last set to T-1 exactly; then round half to even.
      const double step = N > 1 ? static_cast<double>(T - 1) / static_cast<double>(N - 1) : 0.0;
      for (std::size_t i = 0; i < N; ++i) {
        const double y = i + 1 == N && N > 1 ? static_cast<double>(T - 1) : static_cast<double>(i) * step;
        t[N - 1 - i] = static_cast<std::size_t>(std::nearbyint(y));
      }
      break;
    }
    case timestep_spacing::leading: {
      const std::size_t ratio = T / N;
      const std::size_t base = (N - 1) * ratio;  // < T
      if (steps_offset >= T - base)             // base + steps_offset >= T, without wrapping around
        detail::throw_invalid(where, "leading spacing with steps_offset = " + detail::to_text(steps_offset) +
                                         " and num_steps = " + detail::to_text(N) + " gives timestep " +
                                         detail::to_text(base) + " + " + detail::to_text(steps_offset) +
                                         ", outside the allowed range [0, " + detail::to_text(T) + ")");
      for (std::size_t i = 0; i < N; ++i) t[N - 1 - i] = i * ratio + steps_offset;
      break;
    }
    case timestep_spacing::trailing: {
      // numpy.arange(T, 0, -T/N): start + i*delta with delta = (start + step) - start; round half to even; minus 1.
      const double start = static_cast<double>(T);
      const double step = -start / static_cast<double>(N);
      const double delta = (start + step) - start;
      for (std::size_t i = 0; i < N; ++i) {
        const double y = i == 0 ? start : start + static_cast<double>(i) * delta;
        t[i] = static_cast<std::size_t>(std::nearbyint(y)) - 1;
      }
      break;
    }
    default:
      detail::throw_invalid(where, "spacing is not one of linspace, leading, trailing");
  }
  return timestep_sequence(std::move(t), T);
}

namespace detail {
/// Parses a non-empty run of decimal digits into a positive count; throws otherwise.
inline std::size_t parse_count(std::string_view where, std::string_view spec, std::string_view token) {
  if (token.empty())
    throw_invalid(where, "spacing \"" + std::string(spec) + "\" has an empty count; expected \"ddimN\" or a "
                                                            "comma-separated list of positive integers");
  std::size_t v = 0;
  for (char c : token) {
    if (c < '0' || c > '9')
      throw_invalid(where, "spacing \"" + std::string(spec) + "\" has the count \"" + std::string(token) +
                               "\", which is not a positive integer; expected \"ddimN\" or a "
                               "comma-separated list of positive integers");
    if (v > (std::size_t{1} << 40))
      throw_invalid(where, "spacing \"" + std::string(spec) + "\": the count \"" + std::string(token) + "\" is too large");
    v = v * 10 + static_cast<std::size_t>(c - '0');
  }
  if (v == 0) throw_invalid(where, "spacing \"" + std::string(spec) + "\" has a count of 0; counts must be >= 1");
  return v;
}
}  // namespace detail

/// @brief improved DDPM's `space_timesteps` (Nichol & Dhariwal 2021 §4, `respace.py`):
/// which of T timesteps to keep, from a string.
///
/// - `"ddimN"`: the smallest integer stride s in [1, T) with |range(0, T, s)| = N
///   (so, as in iDDPM, `"ddim1"` is never possible);
/// - `"a,b,c"`: split T into as many sections (the first T mod k one longer), and take
///   `round(j·(size−1)/(count−1))` in each, j = 0 … count−1, accumulating the stride by
///   repeated addition and rounding half to even as Python does.
///
/// Stricter than iDDPM: counts must be plain positive decimal integers (iDDPM's `int()`
/// also takes " 5", "+5" and "1_0", and a count of 0 silently takes nothing).
/// @param[in] num_train_timesteps T ≥ 1.
/// @param[in] spec the spacing string.
/// @return the kept timesteps, descending.
/// @throws std::invalid_argument for a malformed string or an impossible request
///         ("ddim7" with T = 10, a section asked for more steps than it has).
inline timestep_sequence space_timesteps(std::size_t num_train_timesteps, std::string_view spec) {
  constexpr std::string_view where = "diffusion::space_timesteps";
  const std::size_t T = num_train_timesteps;
  if (T == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  std::vector<std::size_t> kept;
  if (spec.starts_with("ddim")) {
    const std::size_t n = detail::parse_count(where, spec, spec.substr(4));
    for (std::size_t s = 1; s < T; ++s) {
      if ((T + s - 1) / s == n) {
        for (std::size_t t = 0; t < T; t += s) kept.push_back(t);
        break;
      }
    }
    if (kept.empty())
      detail::throw_invalid(where, "spacing \"" + std::string(spec) + "\": cannot take exactly " +
                                       detail::to_text(n) + " of " + detail::to_text(T) +
                                       " timesteps with an integer stride in [1, " + detail::to_text(T) + ")");
  } else {
    std::vector<std::size_t> counts;
    std::size_t pos = 0;
    while (true) {
      const std::size_t comma = spec.find(',', pos);
      counts.push_back(detail::parse_count(where, spec, spec.substr(pos, comma == spec.npos ? spec.npos : comma - pos)));
      if (comma == spec.npos) break;
      if (counts.size() == T)  // and a comma follows: at least T + 1 sections
        detail::throw_invalid(where, "spacing \"" + std::string(spec) + "\" has more sections than the " +
                                         detail::to_text(T) + " timesteps");
      pos = comma + 1;
    }
    const std::size_t size_per = T / counts.size(), extra = T % counts.size();
    std::size_t start = 0;
    for (std::size_t k = 0; k < counts.size(); ++k) {
      const std::size_t size = size_per + (k < extra ? 1 : 0);
      const std::size_t count = counts[k];
      if (size < count)
        detail::throw_invalid(where, "spacing \"" + std::string(spec) + "\": section " + detail::to_text(k) +
                                         " has " + detail::to_text(size) + " timesteps, fewer than the " +
                                         detail::to_text(count) + " asked for");
      const double stride =
          count <= 1 ? 1.0 : static_cast<double>(size - 1) / static_cast<double>(count - 1);
      double cur = 0.0;
      for (std::size_t j = 0; j < count; ++j) {
        kept.push_back(start + static_cast<std::size_t>(std::nearbyint(cur)));
        cur += stride;
      }
      start += size;
    }
  }
  std::sort(kept.begin(), kept.end(), std::greater<>{});
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  return timestep_sequence(std::move(kept), T);
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
