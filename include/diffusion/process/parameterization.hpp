/// @file
/// @brief The one noise-process model of the library and its one conversion table.
///
/// Every process the library knows is, at each instant, a noise level (α, σ) with
/// \f[ x = \alpha\,x_0 + \sigma\,\varepsilon,\qquad \varepsilon \sim \mathcal N(0, I): \f]
/// - discrete variance-preserving (DDPM tables): \f$\alpha = \sqrt{\bar\alpha_t}\f$, \f$\sigma = \sqrt{1-\bar\alpha_t}\f$
///   (@ref diffusion::noise_level::from_step);
/// - continuous VP (Song et al. 2021, Eq. 11): the same with \f$\bar\alpha(t)\f$ of @ref diffusion::vp_sde;
/// - variance exploding and EDM (Karras et al. 2022): \f$\alpha = 1\f$ (@ref diffusion::noise_level::exploding);
/// - rectified flow (Liu et al. 2022; Esser et al. 2024): \f$\alpha = 1 - \sigma\f$, σ ∈ [0, 1]
///   (@ref diffusion::noise_level::flow).
///
/// Every level has an EDM noise ratio \f$\sigma/\alpha\f$ (the σ of Karras' σ-space, where
/// \f$x/\alpha = x_0 + (\sigma/\alpha)\,\varepsilon\f$), a log-SNR \f$\log(\alpha^2/\sigma^2)\f$ and DPM-Solver's
/// \f$\lambda = \log(\alpha/\sigma)\f$ (Lu et al. 2022), half the log-SNR.
///
/// The conversions between the prediction kinds (ε, x₀, v, score, flow velocity) are written
/// once, here, as affine maps \f$out = a\,x + b\,in\f$ over (α, σ): samplers, losses, the σ-space
/// adapter, guidance and the analytic models all take their coefficients from
/// @ref diffusion::conversion_coefficients.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../schedule/noise_schedule.hpp"
#include "prediction.hpp"

/// @defgroup parameterization Noise levels and parameterizations
/// @brief The noise level (α, σ) of every process and the conversions between ε, x₀, v, score and
/// flow-velocity predictions.
/// @{

namespace diffusion {

/// @brief Coefficients of an affine map \f$out = a\,x + b\,in\f$ (or \f$a\,x_0 + b\,\varepsilon\f$).
struct affine_coefficients {
  double a;  ///< Coefficient of the first input.
  double b;  ///< Coefficient of the second input.
};

/// @brief A noise level: \f$x = \alpha\,x_0 + \sigma\,\varepsilon\f$, with the squares and sums the
/// conversions need held once, exactly where the process knows them (for a DDPM table the
/// correctly rounded ᾱ and 1 − ᾱ, and α² + σ² = 1 exactly).
///
/// Build one with a factory: @ref from_step (a discrete schedule's step), @ref preserving
/// (variance preserving, from the EDM ratio σ/α), @ref exploding (α = 1), @ref flow
/// (α = 1 − σ), or @ref general.
struct noise_level {
  double alpha;             ///< α ≥ 0, the signal coefficient.
  double sigma;             ///< σ ≥ 0, the noise coefficient.
  double alpha_sq;          ///< α².
  double sigma_sq;          ///< σ².
  double norm_sq;           ///< α² + σ² (1 for a variance-preserving process).
  double alpha_plus_sigma;  ///< α + σ (1 for rectified flow).

  /// @brief Any (α, σ), both finite and ≥ 0, not both 0; squares and sums rounded once.
  /// @throws std::invalid_argument otherwise.
  static noise_level general(double alpha, double sigma) {
    constexpr std::string_view where = "diffusion::noise_level::general";
    if (!(alpha >= 0.0 && std::isfinite(alpha)))
      detail::throw_invalid(where, "alpha = " + detail::to_text(alpha) + " is outside the allowed range [0, inf)");
    if (!(sigma >= 0.0 && std::isfinite(sigma)))
      detail::throw_invalid(where, "sigma = " + detail::to_text(sigma) + " is outside the allowed range [0, inf)");
    if (alpha == 0.0 && sigma == 0.0) detail::throw_invalid(where, "alpha and sigma are both 0");
    return {alpha, sigma, alpha * alpha, sigma * sigma, alpha * alpha + sigma * sigma, alpha + sigma};
  }

  /// @brief The level of step t of a discrete variance-preserving schedule: \f$\alpha = \sqrt{\bar\alpha_t}\f$,
  /// \f$\sigma = \sqrt{1-\bar\alpha_t}\f$, with the table's correctly rounded ᾱ_t and 1 − ᾱ_t as the squares
  /// and α² + σ² = 1 exactly (DDPM Eq. 4).
  static noise_level from_step(const schedule_step& st) noexcept {
    return {st.sqrt_alpha_bar, st.sqrt_one_minus_alpha_bar, st.alpha_bar, st.one_minus_alpha_bar, 1.0,
            st.sqrt_alpha_bar + st.sqrt_one_minus_alpha_bar};
  }

  /// @brief A variance-preserving level from the EDM ratio ρ = σ/α ∈ [0, +∞]:
  /// \f$\alpha = 1/\sqrt{1+\rho^2}\f$, \f$\sigma = \rho/\sqrt{1+\rho^2}\f$ (so \f$\bar\alpha = 1/(1+\rho^2)\f$), each
  /// without cancellation and, unlike a plain 1 + ρ², without overflow for ρ > 2^500; ρ = +∞ is
  /// zero terminal SNR (α = 0, σ = 1). α² + σ² is taken as exactly 1.
  /// @pre ρ ≥ 0 (asserted; NaN gives NaN).
  static noise_level preserving(double ratio) noexcept {
    DIFFUSION_ASSERT(!(ratio < 0.0));
    if (std::isinf(ratio)) return {0.0, 1.0, 0.0, 1.0, 1.0, 1.0};
    if (ratio > 0x1p500) {  // 1 + ρ² rounds to ρ²: α = 1/ρ and σ = 1 are exact to 2^-1000
      const double a = 1.0 / ratio;
      return {a, 1.0, a * a, 1.0, 1.0, 1.0 + a};
    }
    const double q = 1.0 + ratio * ratio, r = std::sqrt(q);
    const double a = 1.0 / r, s = ratio / r;
    return {a, s, 1.0 / q, ratio * ratio / q, 1.0, a + s};
  }

  /// @brief A variance-exploding / EDM level: α = 1, σ ≥ 0 (Song et al. 2021 Eq. 9; Karras et al. 2022).
  /// @pre σ ≥ 0 (asserted).
  static noise_level exploding(double sigma) noexcept {
    DIFFUSION_ASSERT(!(sigma < 0.0));
    return {1.0, sigma, 1.0, sigma * sigma, 1.0 + sigma * sigma, 1.0 + sigma};
  }

  /// @brief A rectified-flow level: \f$x = (1-s)\,x_0 + s\,\varepsilon\f$, s ∈ [0, 1]; α + σ = 1 exactly.
  /// @pre 0 ≤ s ≤ 1 (asserted).
  static noise_level flow(double s) noexcept {
    DIFFUSION_ASSERT(s >= 0.0 && s <= 1.0);
    const double a = 1.0 - s;
    return {a, s, a * a, s * s, a * a + s * s, 1.0};
  }

  /// @brief The EDM noise ratio σ/α (Karras' σ): +∞ where α = 0.
  [[nodiscard]] double ratio() const noexcept {
    return alpha == 0.0 ? std::numeric_limits<double>::infinity() : sigma / alpha;
  }
  /// @brief The log signal-to-noise ratio \f$\log(\alpha^2/\sigma^2)\f$ (Kingma et al. 2021): −∞ at α = 0, +∞ at σ = 0.
  [[nodiscard]] double log_snr() const noexcept { return 2.0 * lambda(); }
  /// @brief DPM-Solver's \f$\lambda = \log(\alpha/\sigma)\f$ (Lu et al. 2022 §3.1), half the log-SNR.
  [[nodiscard]] double lambda() const noexcept { return std::log(alpha) - std::log(sigma); }
};

namespace detail {
/// The message of a conversion that divides by zero at a level.
[[noreturn]] inline void throw_conversion_undefined(std::string_view where, prediction from, prediction to,
                                                    std::string_view why) {
  throw_domain(where, "converting " + std::string(to_string(from)) + " to " + std::string(to_string(to)) + " " +
                          std::string(why));
}

/// A positive quantity held as m·2^e (m = 0 or 0.5 ≤ m < 1): the conversion coefficients are
/// quotients of α, σ, r and k, and forming them on m and e cannot overflow or underflow before the
/// final result does (the scaling is exact, so the roundings are those of the plain formula).
struct scaled {
  double m;
  int e;
};
inline scaled to_scaled(double x) noexcept {
  int e = 0;
  const double m = std::frexp(x, &e);
  return {m, e};
}
inline scaled operator*(scaled a, scaled b) noexcept { return {a.m * b.m, a.e + b.e}; }
inline scaled operator/(scaled a, scaled b) noexcept { return {a.m / b.m, a.e - b.e}; }
inline scaled operator-(scaled a) noexcept { return {-a.m, a.e}; }
inline double value(scaled a) noexcept { return std::ldexp(a.m, a.e); }

inline bool is_normal_positive(double x) noexcept {
  return x >= std::numeric_limits<double>::min() && x <= std::numeric_limits<double>::max();
}

/// α, σ, r = √(α² + σ²), r², k = α + σ and σ² of a level as scaled quantities. The level's
/// stored squares and sums are used where they are normal numbers (they are the correctly rounded
/// ones for a DDPM table, and r = 1 exactly for a VP level); where they overflowed or underflowed
/// they are formed again on α and σ scaled by a common power of two.
struct level_scales {
  scaled alpha, sigma, r, r2, k, sigma_sq;
  explicit level_scales(const noise_level& l) noexcept
      : alpha(to_scaled(l.alpha)), sigma(to_scaled(l.sigma)), r{}, r2{}, k{}, sigma_sq{} {
    const int e = l.alpha > l.sigma ? alpha.e : sigma.e;
    const double a1 = std::ldexp(l.alpha, -e), s1 = std::ldexp(l.sigma, -e);  // max(a1, s1) ∈ [0.5, 1)
    if (is_normal_positive(l.norm_sq)) {
      r2 = to_scaled(l.norm_sq);
      r = to_scaled(l.norm_sq == 1.0 ? 1.0 : std::sqrt(l.norm_sq));
    } else {
      const double n1 = a1 * a1 + s1 * s1;
      r2 = to_scaled(n1) * scaled{0.5, 1 + 2 * e};
      r = to_scaled(std::sqrt(n1)) * scaled{0.5, 1 + e};
    }
    k = is_normal_positive(l.alpha_plus_sigma) ? to_scaled(l.alpha_plus_sigma)
                                               : to_scaled(a1 + s1) * scaled{0.5, 1 + e};
    sigma_sq = is_normal_positive(l.sigma_sq) ? to_scaled(l.sigma_sq) : sigma * sigma;
  }
};

/// The pair (a, b), refused with the level named if a coefficient overflows a double.
inline affine_coefficients finite_pair(std::string_view where, const noise_level& l, prediction from, prediction to,
                                       double a, double b) {
  if (!std::isfinite(a) || !std::isfinite(b))
    throw_domain(where, "converting " + std::string(to_string(from)) + " to " + std::string(to_string(to)) +
                            " at alpha = " + to_text(l.alpha) + ", sigma = " + to_text(l.sigma) +
                            " needs a coefficient beyond the double range (" + to_text(a) + ", " + to_text(b) + ")");
  return {a, b};
}
}  // namespace detail

/// @brief The definition of each prediction kind at a level, as a combination of the data and the
/// noise: \f$\text{kind} = a\,x_0 + b\,\varepsilon\f$ (the targets a model of that kind is trained on).
/// | kind | (a, b) |
/// |---|---|
/// | ε | (0, 1) |
/// | x₀ | (1, 0) |
/// | v | (−σ/r, α/r), r = √(α² + σ²) (Salimans & Ho 2022 §4) |
/// | score | (0, −1/σ) (Tweedie's formula, Song et al. 2021) |
/// | u | (−1, 1) (Lipman et al. 2023; Esser et al. 2024) |
/// @throws std::domain_error for the score at σ = 0 (the data's own score is not a function of x₀ and ε)
///         or where 1/σ overflows.
inline affine_coefficients target_coefficients(const noise_level& l, prediction kind) {
  switch (kind) {
    case prediction::epsilon: return {0.0, 1.0};
    case prediction::sample: return {1.0, 0.0};
    case prediction::v: {
      const detail::level_scales q(l);
      return {-detail::value(q.sigma / q.r), detail::value(q.alpha / q.r)};
    }
    case prediction::score:
      if (l.sigma == 0.0)
        detail::throw_domain("diffusion::target_coefficients", "the score target divides by sigma = 0 (the noise-free level)");
      return detail::finite_pair("diffusion::target_coefficients", l, kind, kind, 0.0, -1.0 / l.sigma);
    case prediction::flow_velocity: return {-1.0, 1.0};
  }
  detail::throw_invalid("diffusion::target_coefficients", "unknown prediction kind");
}

/// @brief The noise level of 0-based step t of a discrete schedule (@ref noise_level::from_step).
/// @throws std::out_of_range if t ≥ T.
inline noise_level level_at(const noise_schedule& s, std::size_t t) { return noise_level::from_step(s.at(t)); }

/// @brief Coefficients of the conversion between two prediction kinds at one noise level:
/// \f$out = a\,x + b\,in\f$ for \f$x = \alpha\,x_0 + \sigma\,\varepsilon\f$.
///
/// With r² = α² + σ² (r = 1 for a variance-preserving level), k = α + σ, the kinds are
/// \f$v = (\alpha\varepsilon - \sigma x_0)/r\f$, score \f$= -\varepsilon/\sigma\f$ and flow velocity \f$u = \varepsilon - x_0\f$:
/// | from \ to | ε | x₀ | v | score | u |
/// |---|---|---|---|---|---|
/// | ε | (0, 1) | (1/α, −σ/α) | (−σ/(αr), r/α) | (0, −1/σ) | (−1/α, k/α) |
/// | x₀ | (1/σ, −α/σ) | (0, 1) | (α/(σr), −r/σ) | (−1/σ², α/σ²) | (1/σ, −k/σ) |
/// | v | (σ/r², α/r) | (α/r², −σ/r) | (0, 1) | (−1/r², −α/(σr)) | ((σ − α)/r², k/r) |
/// | score | (0, −σ) | (1/α, σ²/α) | (−σ/(αr), −σr/α) | (0, 1) | (−1/α, −σk/α) |
/// | u | (1/k, α/k) | (1/k, −σ/k) | ((α − σ)/(kr), r/k) | (−1/(σk), −α/(σk)) | (0, 1) |
///
/// (x₀ from ε is DDPM Eq. 15 / iDDPM `_predict_xstart_from_eps`; the score row is Tweedie's
/// formula, \f$\nabla\log q(x) = -\varepsilon/\sigma\f$; the u row solves \f$x = \alpha x_0 + \sigma\varepsilon\f$,
/// \f$u = \varepsilon - x_0\f$.) Each coefficient is at most two operations on the level's entries,
/// each correctly rounded for a DDPM table: ≤ 3 ulp (tested against 50-digit values). The
/// operations run on mantissas and exponents (exact power-of-two scaling), so no intermediate
/// overflows or underflows where the coefficient itself is a normal double (α·r for α = 10^-200,
/// α² + σ² for α = 10^200).
/// @throws std::domain_error where the conversion divides by α = 0 (zero terminal SNR: x₀ cannot
///         be recovered from ε, score or u there) or by σ = 0 (the data itself: ε cannot be recovered
///         from x₀ there), or where a coefficient is beyond the double range (1/α for α = 10^-320).
inline affine_coefficients conversion_coefficients(const noise_level& l, prediction from, prediction to) {
  constexpr std::string_view where = "diffusion::conversion_coefficients";
  if (from == to) return {0.0, 1.0};
  using P = prediction;
  // Which divisor each row needs: ε and score need α for x₀, v and u; x₀ needs σ for ε, v,
  // score and u; v needs σ for the score only; u needs σ for the score.
  const bool needs_alpha = (from == P::epsilon || from == P::score) && to != P::epsilon && to != P::score;
  const bool needs_sigma = (from == P::sample && to != P::sample) || (from == P::v && to == P::score) ||
                           (from == P::flow_velocity && to == P::score) || (from == P::epsilon && to == P::score);
  if (needs_alpha && l.alpha == 0.0)
    detail::throw_conversion_undefined(where, from, to, "divides by alpha = 0 (zero terminal SNR)");
  if (needs_sigma && l.sigma == 0.0)
    detail::throw_conversion_undefined(where, from, to, "divides by sigma = 0 (the noise-free level)");
  const detail::level_scales q(l);
  const detail::scaled a = q.alpha, s = q.sigma, r = q.r, r2 = q.r2, k = q.k, one{0.5, 1};
  auto pair = [&](detail::scaled x, detail::scaled y) {
    return detail::finite_pair(where, l, from, to, detail::value(x), detail::value(y));
  };
  switch (from) {
    case P::epsilon:
      if (to == P::sample) return pair(one / a, -(s / a));
      if (to == P::v) return pair(-(s / (a * r)), r / a);
      if (to == P::score) return pair({0.0, 0}, -(one / s));
      return pair(-(one / a), k / a);  // u
    case P::sample:
      if (to == P::epsilon) return pair(one / s, -(a / s));
      if (to == P::v) return pair(a / (s * r), -(r / s));
      if (to == P::score) return pair(-(one / q.sigma_sq), a / q.sigma_sq);
      return pair(one / s, -(k / s));  // u
    case P::v:
      if (to == P::epsilon) return pair(s / r2, a / r);
      if (to == P::sample) return pair(a / r2, -(s / r));
      if (to == P::score) return pair(-(one / r2), -(a / (s * r)));
      return pair(detail::to_scaled(l.sigma - l.alpha) / r2, k / r);  // u
    case P::score:
      if (to == P::epsilon) return pair({0.0, 0}, -s);
      if (to == P::sample) return pair(one / a, q.sigma_sq / a);
      if (to == P::v) return pair(-(s / (a * r)), -((s * r) / a));
      return pair(-(one / a), -((s * k) / a));  // u
    case P::flow_velocity:
      if (to == P::epsilon) return pair(one / k, a / k);
      if (to == P::sample) return pair(one / k, -(s / k));
      if (to == P::v) return pair(detail::to_scaled(l.alpha - l.sigma) / (k * r), r / k);
      return pair(-(one / (s * k)), -(a / (s * k)));  // score
  }
  detail::throw_invalid(where, "unknown prediction kind");
}

/// @brief @ref conversion_coefficients at 0-based step t of a discrete schedule (the level
/// @ref noise_level::from_step): with \f$c = \sqrt{\bar\alpha_t}\f$, \f$d = \sqrt{1-\bar\alpha_t}\f$ the VP rows of
/// the table read ε → x₀ = (1/c, −d/c), x₀ → ε = (1/d, −c/d), v → ε = (d, c), v → x₀ = (c, −d), …
/// @throws std::out_of_range if t ≥ T; std::domain_error where the conversion divides by
///         c = 0 (zero terminal SNR, last step: x₀ and v cannot be recovered from ε or score there).
inline affine_coefficients conversion_coefficients(const noise_schedule& s, std::size_t t, prediction from,
                                                   prediction to) {
  const noise_level l = level_at(s, t);
  if (l.alpha != 0.0) return conversion_coefficients(l, from, to);
  try {
    return conversion_coefficients(l, from, to);
  } catch (const std::domain_error&) {
    detail::throw_conversion_undefined("diffusion::conversion_coefficients", from, to,
                                       "divides by sqrt(alpha_bar) = 0 at t = " + detail::to_text(t) +
                                           " (zero terminal SNR); use v or sample prediction at that step");
  }
}

}  // namespace diffusion

/// @}
