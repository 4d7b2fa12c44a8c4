/// @file
/// @brief The posterior of DDPM, q(x_{t−1}|x_t, x₀) (Eq. 6–7), its general skip q(x_s|x_t, x₀),
/// and the reverse-process variances (DDPM §3.2, improved DDPM §3.1): the one place where
/// the fixed and learned log-variances are formed.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "../core/config.hpp"
#include "../core/double_double.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../schedule/noise_schedule.hpp"
#include "batch.hpp"
#include "combine.hpp"
#include "parameterization.hpp"

/// @addtogroup gaussian
/// @{

namespace diffusion {

// ---------------------------------------------------------------------------------------
// Posterior
// ---------------------------------------------------------------------------------------

/// @brief A Gaussian posterior \f$q(x_s|x_t,x_0) = \mathcal N(c_0\,x_0 + c_t\,x_t,\ \tilde\sigma^2 I)\f$.
struct gaussian_posterior {
  double coef_x0;       ///< \f$c_0\f$, the x₀ coefficient of the mean.
  double coef_xt;       ///< \f$c_t\f$, the x_t coefficient of the mean.
  double variance;      ///< \f$\tilde\sigma^2\f$.
  double log_variance;  ///< \f$\log\tilde\sigma^2\f$ (−∞ where the variance is 0).
  /// \f$\log\tilde\sigma^2\f$ with improved DDPM's clip: at the first step the second step's value.
  double log_variance_clipped;
};

/// @brief \f$q(x_{t-1}|x_t,x_0)\f$ (DDPM Eq. 6–7):
/// \f$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t\f$,
/// \f$\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t\f$.
///
/// At 0-based step 0 the target is the data: ᾱ_prev = 1, so \f$c_0 = 1\f$, \f$c_t = 0\f$, \f$\tilde\beta = 0\f$.
/// @throws std::out_of_range if t ≥ T.
inline gaussian_posterior posterior(const noise_schedule& s, std::size_t t) {
  const schedule_step& st = s.at(t);
  return {st.posterior_mean_coef_x0, st.posterior_mean_coef_xt, st.posterior_variance,
          t == 0 ? -std::numeric_limits<double>::infinity() : std::log(st.posterior_variance),
          st.posterior_log_variance_clipped};
}

/// @brief The skip posterior \f$q(x_s|x_t,x_0)\f$ for 0-based steps s < t (the DDIM/respacing
/// generalisation of DDPM Eq. 7; Kingma et al. 2021 Eq. 26–28). With \f$\alpha_{t|s} = \bar\alpha_t/\bar\alpha_s\f$:
/// \f$c_0 = \frac{\sqrt{\bar\alpha_s}(1-\alpha_{t|s})}{1-\bar\alpha_t}\f$,
/// \f$c_t = \frac{\sqrt{\alpha_{t|s}}(1-\bar\alpha_s)}{1-\bar\alpha_t}\f$,
/// \f$\tilde\sigma^2 = \frac{(1-\bar\alpha_s)(1-\alpha_{t|s})}{1-\bar\alpha_t}\f$.
///
/// Evaluated in double-double, with \f$1-\alpha_{t|s} = 1 - \prod_{s<i\le t}(1-\beta_i)\f$ accumulated from the
/// betas without cancellation (@ref noise_schedule::one_minus_alpha_bar_ratio_dd), so nearby steps and
/// tiny betas keep every digit; with s = t − 1 it equals @ref posterior. Defined also when ᾱ_t = 0.
/// @throws std::out_of_range if t ≥ T; std::invalid_argument unless s < t.
inline gaussian_posterior skip_posterior(const noise_schedule& sched, std::size_t t, std::size_t s) {
  constexpr std::string_view where = "diffusion::skip_posterior";
  detail::check_index(where, "t", t, sched.size());
  if (!(s < t))
    detail::throw_invalid(where, "s = " + detail::to_text(s) + " must be < t = " + detail::to_text(t));
  using detail::dd;
  const dd om_t = sched.one_minus_alpha_bar_dd(t), om_s = sched.one_minus_alpha_bar_dd(s);
  const dd one_minus_ratio = sched.one_minus_alpha_bar_ratio_dd(t, s);  // 1 − α_{t|s}, no cancellation
  const dd ab_t = sched.alpha_bar_dd(t), ab_s = sched.alpha_bar_dd(s);
  // α_{t|s} = 1 − q where q ≤ 1/2, else the quotient itself (neither form cancels there).
  const dd ratio = one_minus_ratio.hi <= 0.5 || ab_s.hi == 0.0 ? dd{1.0, 0.0} - one_minus_ratio : ab_t / ab_s;
  const dd var = om_s * (one_minus_ratio / om_t);
  const double lv = detail::dd_log(var);
  const dd sqrt_ab_s = ab_s.hi != 0.0 ? detail::dd_sqrt(ab_s) : dd{sched[s].sqrt_alpha_bar, 0.0};
  return {detail::to_double(sqrt_ab_s * (one_minus_ratio / om_t)),
          detail::to_double(detail::dd_sqrt(ratio) * (om_s / om_t)), detail::to_double(var), lv, lv};
}

/// @brief The posterior \f$q(x_s|x_t,x_0)\f$ between any two levels of one Gaussian process, s less noisy than t
/// (Kingma et al. 2021, Eq. 26–28): with \f$\alpha_{t|s} = \alpha_t/\alpha_s\f$ and \f$\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2\f$,
/// \f$c_t = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}\f$, \f$c_0 = \frac{\alpha_s\sigma_{t|s}^2}{\sigma_t^2}\f$,
/// \f$\tilde\sigma^2 = \frac{\sigma_{t|s}^2\sigma_s^2}{\sigma_t^2}\f$. For rectified flow (@ref noise_level::flow) this is the
/// posterior of the flow's forward process; for a DDPM table it is @ref skip_posterior.
///
/// \f$\sigma_{t|s}^2 = (\sigma_t\alpha_s - \alpha_t\sigma_s)(\sigma_t\alpha_s + \alpha_t\sigma_s)/\alpha_s^2\f$ with the difference of
/// products formed exactly (two_prod), so nearby levels keep their digits (for flow it is σ_t − σ_s).
/// @param[in] t the noisier level (σ_t > 0); @param[in] s the target level (α_s > 0, σ_s ≥ 0).
/// @throws std::invalid_argument unless s is at most as noisy as t (σ_tα_s ≥ α_tσ_s) and the levels are valid.
inline gaussian_posterior level_posterior(const noise_level& t, const noise_level& s) {
  constexpr std::string_view where = "diffusion::level_posterior";
  if (!(t.sigma > 0.0 && std::isfinite(t.sigma) && t.alpha >= 0.0))
    detail::throw_invalid(where, "t: sigma = " + detail::to_text(t.sigma) + " must be finite and > 0");
  if (!(s.alpha > 0.0 && std::isfinite(s.alpha) && s.sigma >= 0.0 && std::isfinite(s.sigma)))
    detail::throw_invalid(where, "s: alpha = " + detail::to_text(s.alpha) + " must be finite and > 0");
  using detail::dd;
  const dd diff = detail::two_prod(t.sigma, s.alpha) - detail::two_prod(t.alpha, s.sigma);  // σ_t α_s − α_t σ_s
  const double d = detail::to_double(diff);
  if (!(d >= 0.0))
    detail::throw_invalid(where, "s (alpha = " + detail::to_text(s.alpha) + ", sigma = " + detail::to_text(s.sigma) +
                                     ") is noisier than t (alpha = " + detail::to_text(t.alpha) + ", sigma = " +
                                     detail::to_text(t.sigma) + "): the posterior needs s before t");
  const double sum = t.sigma * s.alpha + t.alpha * s.sigma;
  const double var_ts = d * sum / s.alpha_sq;  // σ²_{t|s}
  const double var = var_ts * (s.sigma_sq / t.sigma_sq);
  return {s.alpha * (var_ts / t.sigma_sq), (t.alpha / s.alpha) * (s.sigma_sq / t.sigma_sq), var,
          var > 0.0 ? std::log(var) : -std::numeric_limits<double>::infinity(),
          var > 0.0 ? std::log(var) : -std::numeric_limits<double>::infinity()};
}

/// @brief The posterior mean \f$\tilde\mu = c_0\,x_0 + c_t\,x_t\f$ of a @ref gaussian_posterior, element-wise.
/// @param[in] p the posterior (from posterior() or skip_posterior()).
/// @param[in] x0 data (or a prediction of it).
/// @param[in] xt the noisy sample, same size.
/// @param[out] mean may alias x0 or xt (exactly; a partial overlap is refused).
/// @throws std::invalid_argument if sizes differ or are 0, or arrays overlap partially;
///         std::domain_error for a coefficient or result beyond the element type's range.
template <tensor X0, tensor XT, mutable_tensor Out>
void posterior_mean(const gaussian_posterior& p, const X0& x0, const XT& xt, Out&& mean) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, Out>,
                "posterior_mean: x0, xt and mean must have the same element type");
  constexpr std::string_view where = "diffusion::posterior_mean";
  const detail::combine_names nm{"x0", "xt", "mean"};
  const auto q = detail::combine_check(where, nm, x0, xt, mean, true);
  detail::combine(where, nm, q, {"coef_x0", "coef_xt"}, affine_coefficients{p.coef_x0, p.coef_xt});
}

/// @brief \f$\tilde\mu_t(x_t, x_0)\f$ of DDPM Eq. 7 at 0-based step t.
template <tensor X0, tensor XT, mutable_tensor Out>
void posterior_mean(const noise_schedule& s, std::size_t t, const X0& x0, const XT& xt, Out&& mean) {
  posterior_mean(posterior(s, t), x0, xt, std::forward<Out>(mean));
}

/// @brief Batched \f$\tilde\mu_t\f$ of DDPM Eq. 7, one timestep per row.
template <timestep_range R, tensor X0, tensor XT, mutable_tensor Out>
void posterior_mean(const noise_schedule& s, const R& timesteps, const X0& x0, const XT& xt, Out&& mean) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, Out>,
                "posterior_mean: x0, xt and mean must have the same element type");
  constexpr std::string_view where = "diffusion::posterior_mean";
  const detail::combine_names nm{"x0", "xt", "mean"};
  const auto q = detail::combine_check(where, nm, x0, xt, mean, false);
  detail::combine_rows(where, nm, s, timesteps, q, {"coef_x0", "coef_xt"}, [&s](std::size_t t) {
    return affine_coefficients{s[t].posterior_mean_coef_x0, s[t].posterior_mean_coef_xt};
  });
}

// ---------------------------------------------------------------------------------------
// The reverse-process variance
// ---------------------------------------------------------------------------------------

/// @brief The reverse-process variance \f$\Sigma_\theta(x_t, t) = \sigma_t^2 I\f$ (DDPM §3.2; improved DDPM §3.1).
enum class variance_type {
  /// \f$\sigma_t^2 = \tilde\beta_t\f$, log-variance clipped at the first step (improved DDPM): optimal for a point-mass x₀.
  fixed_small,
  /// \f$\sigma_t^2 = \beta_t\f$, with \f$\tilde\beta_2\f$ at the first step (improved DDPM): optimal for x₀ ~ N(0, I).
  fixed_large,
  /// The model outputs \f$\log\sigma_t^2\f$ per element.
  learned,
  /// The model outputs v per element and
  /// \f$\log\sigma_t^2 = \tfrac{v+1}{2}\log\beta_t + \tfrac{1-v}{2}\log\tilde\beta_t\f$ (improved DDPM Eq. 15, clipped log β̃).
  /// v is meant to lie in [−1, 1] but is not constrained: outside it the formula extrapolates, as
  /// improved DDPM's `p_mean_variance` does (docs/conventions.md); only a non-finite v is an error.
  learned_range,
};

/// @brief True when the model writes a variance block per row.
constexpr bool learns_variance(variance_type v) noexcept {
  return v == variance_type::learned || v == variance_type::learned_range;
}

/// @brief The fixed reverse log-variance at 0-based step t, as improved DDPM's `p_mean_variance`:
/// `fixed_small` → clipped \f$\log\tilde\beta_t\f$; `fixed_large` → \f$\log\beta_t\f$, except
/// \f$\log\tilde\beta_2\f$ at the first step (with T = 1, \f$\log\beta_1\f$).
/// @throws std::invalid_argument for a learned type (it has no fixed value); std::out_of_range if t ≥ T.
inline double fixed_log_variance(const noise_schedule& s, std::size_t t, variance_type v) {
  const schedule_step& st = s.at(t);
  if (v == variance_type::fixed_small) return st.posterior_log_variance_clipped;
  if (v == variance_type::fixed_large) {
    if (t == 0) return s.size() > 1 ? s[1].posterior_log_variance_clipped : std::log(st.beta);
    return std::log(st.beta);
  }
  detail::throw_invalid("diffusion::fixed_log_variance", "variance type is learned; the model provides it");
}

/// @brief The reverse log-variance of one step as a function of the model's variance output: the one
/// place where `learned` and `learned_range` outputs become \f$\log\sigma_t^2\f$.
///
/// - fixed types: \f$\ell\f$ = @ref fixed_log_variance, independent of the output;
/// - `learned`: \f$\ell = o\f$;
/// - `learned_range`: \f$\ell = \tfrac{o+1}{2}\log\beta_t + \tfrac{1-o}{2}\log\tilde\beta_t\f$ (improved DDPM Eq. 15, with
///   the clipped \f$\log\tilde\beta_t\f$), for any real o (extrapolated outside [−1, 1]).
struct reverse_log_variance {
  variance_type type;      ///< The variance type.
  double fixed;            ///< \f$\ell\f$ for the fixed types (0 for the learned ones).
  double log_beta;         ///< \f$\log\beta_t\f$.
  double log_beta_tilde;   ///< clipped \f$\log\tilde\beta_t\f$.

  /// @brief The step's constants (DDPM §3.2, improved DDPM Eq. 15). @throws std::out_of_range if t ≥ T.
  static reverse_log_variance at(const noise_schedule& s, std::size_t t, variance_type v) {
    const schedule_step& st = s.at(t);
    return {v, learns_variance(v) ? 0.0 : fixed_log_variance(s, t, v), std::log(st.beta),
            st.posterior_log_variance_clipped};
  }
  /// @brief \f$\ell(o)\f$ for the model's variance output o (ignored by the fixed types).
  [[nodiscard]] double operator()(double o) const noexcept {
    switch (type) {
      case variance_type::learned: return o;
      case variance_type::learned_range: {
        const double f = 0.5 * (o + 1.0);
        return f * log_beta + (1.0 - f) * log_beta_tilde;
      }
      default: return fixed;
    }
  }
  /// @brief \f$d\ell/do\f$: 1 (`learned`), \f$\tfrac12(\log\beta_t - \log\tilde\beta_t)\f$ (`learned_range`), 0 (fixed).
  [[nodiscard]] double derivative() const noexcept {
    switch (type) {
      case variance_type::learned: return 1.0;
      case variance_type::learned_range: return 0.5 * (log_beta - log_beta_tilde);
      default: return 0.0;
    }
  }
};

namespace detail {
/// Throws std::domain_error at the first non-finite variance output (any finite output is a valid
/// variance for both learned types).
template <class T>
void check_variance_output(std::string_view where, variance_type v, std::span<const T> var_out) {
  if (!learns_variance(v)) return;
  for (std::size_t k = 0; k < var_out.size(); ++k) {
    const double x = static_cast<double>(var_out[k]);
    if (!std::isfinite(x))
      throw_domain(where, "variance output[" + to_text(k) + "] = " + to_text(x) + " is not finite");
  }
}
}  // namespace detail

}  // namespace diffusion

/// @}
