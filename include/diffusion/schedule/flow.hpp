/// @file
/// @brief Rectified-flow timestep schedules: SD3's static shift, Flux's resolution-dependent
/// ("dynamic") shift with its exponential or linear time shift, the terminal stretch, inverted
/// and custom σ lists, and the timestep ↔ σ map of the flow-matching schedulers.
///
/// A rectified-flow model (Liu et al. 2022; Esser et al. 2024, "SD3") is trained on
/// \f$x_\sigma = (1-\sigma)\,x_0 + \sigma\,\varepsilon\f$, σ ∈ [0, 1], with the timestep t = σ·N (N =
/// `num_train_timesteps`, 1000). Samplers walk a descending σ list from (near) 1 to 0; the shifts
/// move its mass towards σ = 1, where high-resolution images need more steps (SD3 §5.3.2).
///
/// Where diffusers' FlowMatchEulerDiscreteScheduler differs: it keeps the training σ table after
/// the shift and places the inference σ between that table's (shifted) ends before shifting them
/// again (diffusers #13243), so its smallest σ is shift(shift(1/N)) instead of shift(1/N). This
/// library shifts once (@ref diffusion::flow_sigmas); `flow_schedule_options::diffusers_double_shift`
/// reproduces diffusers' numbers (docs/conventions.md).
#pragma once

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"

/// @defgroup flow_schedules Flow-matching schedules
/// @brief SD3's shift, Flux's dynamic shift, terminal stretch, σ lists of rectified-flow models.
/// @{

namespace diffusion {

/// @brief SD3's static shift (Esser et al. 2024, Eq. 23; diffusers `shift`):
/// \f$\sigma' = \frac{s\,\sigma}{1 + (s - 1)\,\sigma}\f$, which maps [0, 1] onto itself (0 → 0, 1 → 1) and
/// is the time shift of a resolution change by the factor √s.
///
/// Evaluated as \f$s\sigma/((1 - \sigma) + s\sigma)\f$: both terms of the denominator are ≥ 0, so there is no
/// cancellation for any s > 0 (1 + (s − 1)σ cancels for s < 1 near σ = 1), 1 ↦ s/s = 1 exactly and the
/// result never exceeds 1. Relative error ≤ (2 + 2(1 − σ'))·2⁻⁵³, so ≤ 4 ulp for σ ∈ [0, 1] (rounding
/// analysis, tested against 50-digit values in tests/test_flow_reference.cpp).
/// @param[in] sigma σ ∈ [0, 1]; @param[in] shift s > 0 (SD3: 3.0).
/// @throws std::invalid_argument outside those ranges.
inline double sd3_shift(double sigma, double shift) {
  constexpr std::string_view where = "diffusion::sd3_shift";
  if (!(sigma >= 0.0 && sigma <= 1.0))
    detail::throw_invalid(where, "sigma = " + detail::to_text(sigma) + " is outside the allowed range [0, 1]");
  detail::check_positive(where, "shift", shift);
  const double b = shift * sigma;
  return b / ((1.0 - sigma) + b);
}

/// @brief How Flux's μ shifts a σ (diffusers `time_shift_type`).
enum class time_shift_kind {
  /// \f$\sigma' = \frac{e^\mu}{e^\mu + (1/\sigma - 1)^p}\f$ (Flux, diffusers "exponential"); with p = 1
  /// it is @ref sd3_shift with s = e^μ.
  exponential,
  /// \f$\sigma' = \frac{\mu}{\mu + (1/\sigma - 1)^p}\f$ (diffusers "linear", used by some video models).
  linear,
};

namespace detail {
/// (1 − σ')/σ' of the time shift, from σ and 1 − σ (r = (1 − σ)/σ): \f$r^p e^{-\mu}\f$ or \f$r^p/\mu\f$. Where
/// \f$r^p\f$ overflows against \f$e^{-\mu} = 0\f$ (or underflows against ∞) the product would be NaN; there
/// it is \f$\exp(p(\log(1-\sigma) - \log\sigma) - \mu)\f$, which is not.
inline double time_shift_odds(time_shift_kind kind, double mu, double sigma, double complement, double power) {
  const double r = complement / sigma;
  const double q = power == 1.0 ? r : std::pow(r, power);
  if (kind != time_shift_kind::exponential) return q / mu;
  const double odds = q * std::exp(-mu);
  return odds == odds ? odds : std::exp(power * (std::log(complement) - std::log(sigma)) - mu);
}
}  // namespace detail

/// @brief The time shift of Flux (diffusers `_time_shift_exponential` / `_time_shift_linear`), for
/// σ ∈ [0, 1]: exponential \f$e^\mu/(e^\mu + (1/\sigma - 1)^p)\f$, linear \f$\mu/(\mu + (1/\sigma - 1)^p)\f$; 0 ↦ 0, 1 ↦ 1.
///
/// Evaluated as \f$1/(1 + m^{-1}((1-\sigma)/\sigma)^p)\f$ (m = e^μ or μ), which has no cancellation: relative
/// error ≤ (2 + K(1 − σ'))·2⁻⁵³ with K = 5 (exponential, p = 1), 2p + 5 (exponential, p ≠ 1), 3 (linear,
/// p = 1), 2p + 3 (linear, p ≠ 1) where `exp` and `pow` are within 1 ulp: ≤ 7 ulp for Flux's p = 1 (rounding
/// analysis, tested against 50-digit values in tests/test_flow_reference.cpp). Not covered: where
/// \f$m^{-1}((1-\sigma)/\sigma)^p\f$ overflows (σ below about \f$m^{-1/p}\f$·2^(−1024/p), e.g. a subnormal σ) the
/// result is 0, although the true value, about \f$m\sigma^p\f$, can be a (sub)normal double; nor |μ| > 708,
/// where e^−μ leaves the normal range.
/// @param[in] kind exponential or linear; @param[in] mu μ (finite; > 0 for linear);
/// @param[in] sigma σ ∈ [0, 1]; @param[in] power p > 0 (diffusers' `sigma` argument, 1.0).
/// @throws std::invalid_argument outside those ranges.
inline double time_shift(time_shift_kind kind, double mu, double sigma, double power = 1.0) {
  constexpr std::string_view where = "diffusion::time_shift";
  detail::check_enum(where, "kind", kind, 2, "exponential, linear");
  detail::check_finite(where, "mu", mu);
  if (kind == time_shift_kind::linear) detail::check_positive(where, "mu", mu);
  detail::check_positive(where, "power", power);
  if (!(sigma >= 0.0 && sigma <= 1.0))
    detail::throw_invalid(where, "sigma = " + detail::to_text(sigma) + " is outside the allowed range [0, 1]");
  if (sigma == 0.0) return 0.0;
  if (sigma == 1.0) return 1.0;  // 0 · e^−μ would be NaN where e^−μ overflows (μ < −709.78)
  return 1.0 / (1.0 + detail::time_shift_odds(kind, mu, sigma, 1.0 - sigma, power));
}

/// @brief Flux's resolution-dependent μ (diffusers `calculate_shift`): linear in the image's
/// sequence length L (latent patches) between (L₀, μ₀) and (L₁, μ₁):
/// \f$\mu = \mu_0 + (L - L_0)\,\frac{\mu_1 - \mu_0}{L_1 - L_0}\f$. Flux defaults: (256, 0.5) and (4096, 1.15).
struct flux_shift_parameters {
  double base_image_seq_len = 256.0;   ///< L₀.
  double max_image_seq_len = 4096.0;   ///< L₁ > L₀.
  double base_shift = 0.5;             ///< μ₀.
  double max_shift = 1.15;             ///< μ₁.
};

namespace detail {
inline void check_flux_shift(std::string_view where, const flux_shift_parameters& p) {
  check_finite(where, "base_shift", p.base_shift);
  check_finite(where, "max_shift", p.max_shift);
  if (!(p.max_image_seq_len > p.base_image_seq_len && std::isfinite(p.max_image_seq_len) &&
        std::isfinite(p.base_image_seq_len)))
    throw_invalid(where, "max_image_seq_len = " + to_text(p.max_image_seq_len) +
                             " must be finite and > base_image_seq_len = " + to_text(p.base_image_seq_len));
}
}  // namespace detail

/// @brief μ for an image of `image_seq_len` latent patches (@ref flux_shift_parameters): e.g. a
/// 1024² Flux image has 64² = 4096 patches and μ = 1.15. Values beyond L₁ extrapolate linearly, as
/// diffusers does.
/// @throws std::invalid_argument for non-finite parameters or L₁ ≤ L₀.
inline double flux_mu(double image_seq_len, const flux_shift_parameters& p = {}) {
  constexpr std::string_view where = "diffusion::flux_mu";
  detail::check_finite(where, "image_seq_len", image_seq_len);
  detail::check_flux_shift(where, p);
  const double m = (p.max_shift - p.base_shift) / (p.max_image_seq_len - p.base_image_seq_len);
  return p.base_shift + m * (image_seq_len - p.base_image_seq_len);
}

/// @brief Options of @ref flow_sigmas (diffusers FlowMatchEulerDiscreteScheduler's keys).
struct flow_schedule_options {
  std::size_t num_train_timesteps = 1000;  ///< N: t = σ·N, and the smallest training σ is 1/N.
  double shift = 1.0;                      ///< SD3's static shift s > 0 (1: none; SD3 3.0), when `dynamic` is false.
  bool dynamic = false;                    ///< Flux's dynamic shift with `mu` instead of `shift` (`use_dynamic_shifting`).
  double mu = 0.0;                         ///< μ of the dynamic shift (@ref flux_mu).
  time_shift_kind kind = time_shift_kind::exponential;  ///< `time_shift_type`.
  double shift_terminal = 0.0;  ///< ∈ [0, 1): stretch so that the last σ before 0 equals it (0: off).
  bool invert = false;          ///< `invert_sigmas`: σ → 1 − σ, ending at 1 (for models trained reversed).
  /// Reproduce diffusers' double shift of the generated list (its #13243): the σ are placed between
  /// the shifted training ends and shifted again. Off: shifted once.
  bool diffusers_double_shift = false;
};

/// @brief A flow-matching σ list and the model's timestep at each σ.
struct flow_timesteps {
  std::vector<double> sigmas;     ///< n descending σ, then the final 0 (1 when inverted): n + 1 values.
  std::vector<double> timesteps;  ///< t = σ·N for each of the first n σ.
};

namespace detail {

inline void check_flow_options(std::string_view where, const flow_schedule_options& o) {
  check_enum(where, "kind", o.kind, 2, "exponential, linear");
  if (o.num_train_timesteps == 0) throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  if (!o.dynamic) check_positive(where, "shift", o.shift);
  if (o.dynamic) {
    check_finite(where, "mu", o.mu);
    if (o.kind == time_shift_kind::linear) check_positive(where, "mu", o.mu);
  }
  if (!(o.shift_terminal >= 0.0 && o.shift_terminal < 1.0))
    throw_invalid(where, "shift_terminal = " + to_text(o.shift_terminal) + " is outside the allowed range [0, 1)");
}

/// A σ with its complement 1 − σ, each to a few ulp: the lists carry both, so that neither the
/// terminal stretch nor the inversion subtracts nearly equal numbers (1 − σ near σ = 1).
struct sigma_pair {
  double sigma;
  double complement;
};

/// The shift of a pair: sd3_shift as sσ/((1 − σ) + sσ) with its complement (1 − σ)/((1 − σ) + sσ), or
/// Flux's time shift (p = 1) as 1/(1 + S) and S/(1 + S), S = (1 − σ)/(σ m).
inline sigma_pair apply_flow_shift(const flow_schedule_options& o, sigma_pair x) {
  if (o.dynamic) {
    if (x.sigma == 0.0) return {0.0, 1.0};
    if (x.complement == 0.0) return {1.0, 0.0};
    const double odds = time_shift_odds(o.kind, o.mu, x.sigma, x.complement, 1.0);
    return {1.0 / (1.0 + odds), std::isinf(odds) ? 1.0 : odds / (1.0 + odds)};
  }
  const double b = o.shift * x.sigma, d = x.complement + b;
  return {b / d, x.complement / d};
}

/// Shift, terminal stretch, inversion and the final σ of a list of unshifted σ (with their complements).
inline flow_timesteps finish_flow_sigmas(std::string_view where, const flow_schedule_options& o,
                                         std::vector<sigma_pair> s) {
  for (sigma_pair& v : s) v = apply_flow_shift(o, v);
  if (o.shift_terminal > 0.0) {
    // diffusers' stretch_shift_to_terminal: 1 − σ scaled so that the last becomes 1 − terminal,
    // 1 − σ'' = (1 − σ)/scale, scale = (1 − σ_last)/(1 − terminal). Where 1 − σ'' > 1/2 the σ'' itself
    // is taken from σ'' = ((σ − σ_last) + terminal·(1 − σ))/(1 − σ_last), a sum of terms ≥ 0: the last
    // σ'' is the terminal to an ulp instead of 1 minus a number near 1 − terminal.
    const sigma_pair last = s.back();
    if (!(last.complement > 0.0))
      throw_invalid(where, "shift_terminal needs a last sigma below 1 (the list ends at " + to_text(last.sigma) + ")");
    const double scale = last.complement / (1.0 - o.shift_terminal);
    for (sigma_pair& v : s) {
      const double c = v.complement / scale;
      v.sigma = c <= 0.5 ? 1.0 - c : ((v.sigma - last.sigma) + o.shift_terminal * v.complement) / last.complement;
      v.complement = c;
    }
  }
  flow_timesteps out;
  const double N = static_cast<double>(o.num_train_timesteps);
  for (const sigma_pair& v : s) {
    const double sigma = o.invert ? v.complement : v.sigma;
    out.sigmas.push_back(sigma);
    out.timesteps.push_back(sigma * N);
  }
  out.sigmas.push_back(o.invert ? 1.0 : 0.0);
  return out;
}

}  // namespace detail

/// @brief n inference σ of a rectified-flow model (diffusers FlowMatchEulerDiscreteScheduler's
/// `set_timesteps(n)`, shifted once): the unshifted σ evenly spaced from 1 to 1/N,
/// \f$\sigma_i = 1 - \frac{i}{n-1}\left(1 - \frac1N\right)\f$, then @ref sd3_shift (or Flux's @ref time_shift with μ),
/// the optional terminal stretch and inversion, then a final 0. Timesteps t_i = σ_i·N.
///
/// Each σ is computed together with 1 − σ (the unshifted pair without cancellation, the shifts and
/// the stretch on both), so no step subtracts nearly equal numbers and the inverted lists are as
/// accurate as the plain ones: every σ and timestep is within a few ulp of the exact list (the
/// bounds are derived, and tested against 50-digit values, in tests/test_flow_reference.cpp).
/// @param[in] n inference steps ≥ 1 (n = 1 gives σ = 1 alone); @param[in] opt options.
/// @throws std::invalid_argument for n = 0 or bad options.
inline flow_timesteps flow_sigmas(std::size_t n, const flow_schedule_options& opt = {}) {
  constexpr std::string_view where = "diffusion::flow_sigmas";
  detail::check_flow_options(where, opt);
  if (n == 0) detail::throw_invalid(where, "n = 0 must be >= 1");
  // The training table's ends, 1 and 1/N (with 1 − 1/N = (N − 1)/N, both correctly rounded); diffusers
  // shifts the low end first (the high end stays 1).
  const double N = static_cast<double>(opt.num_train_timesteps);
  detail::sigma_pair lo{1.0 / N, (N - 1.0) / N};
  if (opt.diffusers_double_shift && !opt.dynamic) lo = detail::apply_flow_shift(opt, lo);
  // numpy.linspace(N, lo·N, n)/N: σ_i = ((n − 1 − i) + i·lo)/(n − 1) and 1 − σ_i = i·(1 − lo)/(n − 1), each
  // in two or three roundings (numpy's 1 + i·(lo − 1)/(n − 1) loses up to ~n ulp near lo); the last is lo.
  std::vector<detail::sigma_pair> s =
      detail::allocate_table<detail::sigma_pair>(where, "n = " + detail::to_text(n), n, "levels");
  const double m = static_cast<double>(n - 1);
  for (std::size_t i = 0; i < n; ++i) {
    const double k = static_cast<double>(i);
    s[i] = i == 0 ? detail::sigma_pair{1.0, 0.0}
                  : (i + 1 == n ? lo : detail::sigma_pair{std::fma(k, lo.sigma, m - k) / m, k * lo.complement / m});
  }
  return detail::finish_flow_sigmas(where, opt, std::move(s));
}

/// @brief A custom list of unshifted σ (descending, in (0, 1]) through the same shift, stretch and
/// inversion as @ref flow_sigmas (diffusers shifts `set_timesteps(sigmas=…)` too: the Flux pipeline
/// passes linspace(1, 1/n, n) with μ); a final 0 is appended.
/// @throws std::invalid_argument for an empty or non-decreasing list, values outside (0, 1], bad options.
inline flow_timesteps flow_sigmas(std::span<const double> unshifted, const flow_schedule_options& opt = {}) {
  constexpr std::string_view where = "diffusion::flow_sigmas";
  detail::check_flow_options(where, opt);
  if (unshifted.empty()) detail::throw_invalid(where, "sigmas is empty");
  for (std::size_t i = 0; i < unshifted.size(); ++i) {
    if (!(unshifted[i] > 0.0 && unshifted[i] <= 1.0))
      detail::throw_invalid(where, "sigmas[" + detail::to_text(i) + "] = " + detail::to_text(unshifted[i]) +
                                       " is outside the allowed range (0, 1]");
    if (i > 0 && !(unshifted[i] < unshifted[i - 1]))
      detail::throw_invalid(where, "sigmas must be strictly decreasing: sigmas[" + detail::to_text(i) + "] = " +
                                       detail::to_text(unshifted[i]) + " >= sigmas[" + detail::to_text(i - 1) + "]");
  }
  std::vector<detail::sigma_pair> s;
  for (const double v : unshifted) s.push_back({v, 1.0 - v});
  return detail::finish_flow_sigmas(where, opt, std::move(s));
}

/// @brief The model timestep of a flow σ, t = σ·N (the flow-matching schedulers' map).
/// @throws std::invalid_argument for σ outside [0, 1] or N = 0.
inline double flow_timestep(double sigma, std::size_t num_train_timesteps = 1000) {
  constexpr std::string_view where = "diffusion::flow_timestep";
  if (!(sigma >= 0.0 && sigma <= 1.0))
    detail::throw_invalid(where, "sigma = " + detail::to_text(sigma) + " is outside the allowed range [0, 1]");
  if (num_train_timesteps == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
  return sigma * static_cast<double>(num_train_timesteps);
}

}  // namespace diffusion

/// @}
