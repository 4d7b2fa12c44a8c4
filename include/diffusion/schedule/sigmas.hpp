/// @file
/// @brief Continuous-time noise families (VP and VE SDEs), σ lists (Karras, geometric),
/// and the map between a discrete schedule's timestep and its noise level σ.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "noise_schedule.hpp"

/// @defgroup sigmas Continuous time and σ lists
/// @brief VP/VE SDE marginals (Song et al. 2021), Karras and geometric σ lists, σ ↔ t.
/// @{

namespace diffusion {

/// @brief The variance-preserving SDE of Song et al. 2021 (Eq. 11; DDPM's continuous limit):
/// \f$\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})\f$, t ∈ [0, 1].
///
/// Its marginal is \f$x_t = \sqrt{\bar\alpha(t)}\,x_0 + \sqrt{1-\bar\alpha(t)}\,\varepsilon\f$ with
/// \f$\log\sqrt{\bar\alpha(t)} = -\tfrac14 t^2(\beta_{\max}-\beta_{\min}) - \tfrac12 t\beta_{\min}\f$
/// (score_sde `VPSDE.marginal_prob`). Defaults are score_sde's.
struct vp_sde {
  double beta_min = 0.1;  ///< β(0).
  double beta_max = 20.0; ///< β(1).

  /// Throws std::invalid_argument unless 0 < β_min ≤ β_max, finite.
  void validate() const {
    constexpr std::string_view where = "diffusion::vp_sde";
    detail::check_positive(where, "beta_min", beta_min);
    detail::check_positive(where, "beta_max", beta_max);
    if (beta_min > beta_max)
      detail::throw_invalid(where, "beta_min = " + detail::to_text(beta_min) + " must be <= beta_max = " +
                                       detail::to_text(beta_max));
  }
  /// \f$\beta(t)\f$.
  [[nodiscard]] double beta(double t) const { return beta_min + t * (beta_max - beta_min); }
  /// \f$\log\sqrt{\bar\alpha(t)} = -\tfrac14 t^2(\beta_{\max}-\beta_{\min}) - \tfrac12 t\beta_{\min}\f$.
  [[nodiscard]] double log_mean_coeff(double t) const {
    return -0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min;
  }
  /// \f$\bar\alpha(t) = \exp(2\,\mathrm{log\_mean\_coeff}(t))\f$.
  [[nodiscard]] double alpha_bar(double t) const { return std::exp(2.0 * log_mean_coeff(t)); }
  /// Marginal standard deviation \f$\sqrt{1-\bar\alpha(t)}\f$, via `expm1` (accurate at small t).
  [[nodiscard]] double marginal_std(double t) const { return std::sqrt(-std::expm1(2.0 * log_mean_coeff(t))); }
  /// Equivalent VE noise level \f$\sigma(t) = \sqrt{(1-\bar\alpha)/\bar\alpha} = \sqrt{e^{-2m} - 1}\f$.
  [[nodiscard]] double sigma(double t) const { return std::sqrt(std::expm1(-2.0 * log_mean_coeff(t))); }
};

/// @brief The variance-exploding SDE of Song et al. 2021 (Eq. 9; NCSN's continuous limit):
/// \f$\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t\f$, t ∈ [0, 1]. Defaults are score_sde's CIFAR-10 values.
struct ve_sde {
  double sigma_min = 0.01; ///< σ(0).
  double sigma_max = 50.0; ///< σ(1).

  /// Throws std::invalid_argument unless 0 < σ_min < σ_max, finite.
  void validate() const {
    constexpr std::string_view where = "diffusion::ve_sde";
    detail::check_positive(where, "sigma_min", sigma_min);
    detail::check_positive(where, "sigma_max", sigma_max);
    if (!(sigma_min < sigma_max))
      detail::throw_invalid(where, "sigma_min = " + detail::to_text(sigma_min) + " must be < sigma_max = " +
                                       detail::to_text(sigma_max));
  }
  /// \f$\sigma(t) = \sigma_{\min}\exp(t\log(\sigma_{\max}/\sigma_{\min}))\f$.
  [[nodiscard]] double sigma(double t) const { return sigma_min * std::exp(t * std::log(sigma_max / sigma_min)); }
};

namespace detail {
inline void check_sigma_range(std::string_view where, double sigma_min, double sigma_max) {
  check_positive(where, "sigma_min", sigma_min);
  check_positive(where, "sigma_max", sigma_max);
  if (!(sigma_min < sigma_max))
    throw_invalid(where, "sigma_min = " + to_text(sigma_min) + " must be < sigma_max = " + to_text(sigma_max));
}
}  // namespace detail

/// @brief Karras et al. 2022 (Eq. 5) noise levels, descending, followed by a final 0
/// (k-diffusion `get_sigmas_karras`):
/// \f$\sigma_i = \left(\sigma_{\max}^{1/\rho} + \tfrac{i}{n-1}(\sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho})\right)^\rho\f$.
/// @param[in] n number of nonzero levels, n ≥ 2.
/// @param[in] sigma_min σ_min > 0.
/// @param[in] sigma_max σ_max > σ_min.
/// @param[in] rho ρ > 0 (Karras' default 7).
/// @return n + 1 values: σ_0 = σ_max, …, σ_{n−1} = σ_min, 0.
inline std::vector<double> karras_sigmas(std::size_t n, double sigma_min, double sigma_max, double rho = 7.0) {
  constexpr std::string_view where = "diffusion::karras_sigmas";
  if (n < 2) detail::throw_invalid(where, "n = " + detail::to_text(n) + " must be >= 2");
  detail::check_sigma_range(where, sigma_min, sigma_max);
  detail::check_positive(where, "rho", rho);
  const double a = std::pow(sigma_max, 1.0 / rho), b = std::pow(sigma_min, 1.0 / rho);
  std::vector<double> s(n + 1, 0.0);
  for (std::size_t i = 0; i < n; ++i) s[i] = std::pow(detail::ramp(i, n, a, b), rho);
  s[0] = sigma_max;
  s[n - 1] = sigma_min;
  return s;
}

namespace detail {
/// The n levels σ_i = f(ramp(i, n, a, b)) of a σ list, σ_0 = σ_max and σ_{n−1} = σ_min exactly, and a
/// final 0 when `final_zero`; validates n ≥ 2 and 0 < σ_min < σ_max, naming `where`.
template <class F>
std::vector<double> sigma_list(std::string_view where, std::size_t n, double sigma_min, double sigma_max, double a,
                               double b, bool final_zero, F f) {
  if (n < 2) throw_invalid(where, "n = " + to_text(n) + " must be >= 2");
  check_sigma_range(where, sigma_min, sigma_max);
  std::vector<double> s(final_zero ? n + 1 : n, 0.0);
  for (std::size_t i = 1; i + 1 < n; ++i) s[i] = f(ramp(i, n, a, b));
  s[0] = sigma_max;
  s[n - 1] = sigma_min;
  return s;
}
}  // namespace detail

/// @brief Geometric noise levels, descending: \f$\sigma_i = \sigma_{\max}(\sigma_{\min}/\sigma_{\max})^{i/(n-1)}\f$
/// (NCSN, Song & Ermon 2019 §4.2: σ from 1 to 0.01 with n = 10; no final 0).
/// @ref exponential_sigmas is the same list with k-diffusion's final 0.
/// @param[in] n number of levels, n ≥ 2.
/// @param[in] sigma_min σ_min > 0 (last).
/// @param[in] sigma_max σ_max > σ_min (first).
inline std::vector<double> geometric_sigmas(std::size_t n, double sigma_min, double sigma_max) {
  constexpr std::string_view where = "diffusion::geometric_sigmas";
  detail::check_sigma_range(where, sigma_min, sigma_max);
  return detail::sigma_list(where, n, sigma_min, sigma_max, std::log(sigma_max), std::log(sigma_min), false,
                            [](double l) { return std::exp(l); });
}

/// @brief k-diffusion `get_sigmas_exponential` (ComfyUI "exponential"; diffusers
/// `use_exponential_sigmas`): levels uniform in log σ,
/// \f$\sigma_i = \exp\!\big(\log\sigma_{\max} + \tfrac{i}{n-1}(\log\sigma_{\min} - \log\sigma_{\max})\big)\f$,
/// followed by a final 0.
/// @param[in] n number of nonzero levels, n ≥ 2; @param[in] sigma_min σ_min > 0; @param[in] sigma_max σ_max > σ_min.
/// @return n + 1 values: σ_max, …, σ_min, 0.
inline std::vector<double> exponential_sigmas(std::size_t n, double sigma_min, double sigma_max) {
  constexpr std::string_view where = "diffusion::exponential_sigmas";
  detail::check_sigma_range(where, sigma_min, sigma_max);
  return detail::sigma_list(where, n, sigma_min, sigma_max, std::log(sigma_max), std::log(sigma_min), true,
                            [](double l) { return std::exp(l); });
}

/// @brief k-diffusion `get_sigmas_polyexponential` (ComfyUI "polyexponential"): log σ a power ρ
/// of the ramp, \f$\sigma_i = \exp\!\big(\log\sigma_{\min} + (1 - \tfrac{i}{n-1})^\rho(\log\sigma_{\max} - \log\sigma_{\min})\big)\f$,
/// followed by a final 0. ρ = 1 is @ref exponential_sigmas; ρ > 1 spends more steps at low σ.
/// @param[in] n number of nonzero levels, n ≥ 2; @param[in] sigma_min σ_min > 0; @param[in] sigma_max σ_max > σ_min;
/// @param[in] rho ρ > 0 (k-diffusion's default 1).
/// @return n + 1 values: σ_max, …, σ_min, 0.
inline std::vector<double> polyexponential_sigmas(std::size_t n, double sigma_min, double sigma_max, double rho = 1.0) {
  constexpr std::string_view where = "diffusion::polyexponential_sigmas";
  detail::check_sigma_range(where, sigma_min, sigma_max);
  detail::check_positive(where, "rho", rho);
  const double lmin = std::log(sigma_min), span = std::log(sigma_max) - lmin;
  return detail::sigma_list(where, n, sigma_min, sigma_max, 1.0, 0.0, true,
                            [=](double r) { return std::exp(lmin + std::pow(r, rho) * span); });
}

/// @brief The KL-optimal σ list (Sabour, Fidler & Kreis 2024, "Align Your Steps", arXiv:2404.14507:
/// the schedule that is optimal for data concentrated at one point; ComfyUI `kl_optimal_scheduler`):
/// levels uniform in arctan σ,
/// \f$\sigma_i = \tan\!\big((1 - \tfrac{i}{n-1})\arctan\sigma_{\max} + \tfrac{i}{n-1}\arctan\sigma_{\min}\big)\f$,
/// followed by a final 0.
/// @param[in] n number of nonzero levels, n ≥ 2; @param[in] sigma_min σ_min > 0; @param[in] sigma_max σ_max > σ_min.
/// @return n + 1 values: σ_max, …, σ_min, 0.
inline std::vector<double> kl_optimal_sigmas(std::size_t n, double sigma_min, double sigma_max) {
  constexpr std::string_view where = "diffusion::kl_optimal_sigmas";
  detail::check_sigma_range(where, sigma_min, sigma_max);
  return detail::sigma_list(where, n, sigma_min, sigma_max, std::atan(sigma_max), std::atan(sigma_min), true,
                            [](double theta) { return std::tan(theta); });
}

/// @brief k-diffusion `get_sigmas_vp` (ComfyUI "vp"): the VP SDE's σ at times uniform from 1 down to
/// ε_s, \f$\sigma_i = \sigma_{VP}(t_i) = \sqrt{\exp(\tfrac12\beta_d t_i^2 + \beta_{\min}t_i) - 1}\f$,
/// \f$t_i = 1 + \tfrac{i}{n-1}(\varepsilon_s - 1)\f$, β_d = β_max − β_min (@ref vp_sde::sigma), followed by a
/// final 0. k-diffusion's defaults β_d = 19.9, β_min = 0.1 are `vp_sde{}`.
/// @param[in] n number of nonzero levels, n ≥ 2; @param[in] sde the VP SDE (validated);
/// @param[in] eps_s the last time ε_s ∈ (0, 1) (k-diffusion's default 1e-3).
/// @return n + 1 values: σ_VP(1), …, σ_VP(ε_s), 0.
inline std::vector<double> vp_sigmas(std::size_t n, const vp_sde& sde = {}, double eps_s = 1e-3) {
  constexpr std::string_view where = "diffusion::vp_sigmas";
  sde.validate();
  if (!(eps_s > 0.0 && eps_s < 1.0))
    detail::throw_invalid(where, "eps_s = " + detail::to_text(eps_s) + " is outside the allowed range (0, 1)");
  const double hi = sde.sigma(1.0), lo = sde.sigma(eps_s);
  if (!(lo > 0.0 && hi < std::numeric_limits<double>::infinity()))
    detail::throw_invalid(where, "the VP SDE's sigma at t = " + detail::to_text(lo > 0.0 ? 1.0 : eps_s) +
                                     " is not a positive finite double (beta_max = " + detail::to_text(sde.beta_max) + ")");
  return detail::sigma_list(where, n, lo, hi, 1.0, eps_s, true, [&sde](double t) { return sde.sigma(t); });
}

/// @brief Noise level at a fractional timestep of a discrete schedule, by linear
/// interpolation in log σ between the neighbouring steps (k-diffusion
/// `DiscreteSchedule.t_to_sigma`; diffusers interpolates σ itself, linearly, instead):
/// \f$\log\sigma(t) = (1-w)\log\sigma_{\lfloor t\rfloor} + w\log\sigma_{\lceil t\rceil}\f$, \f$w = t - \lfloor t\rfloor\f$.
///
/// t is a 0-based code index in [0, T−1]. Where σ_{k} = ∞ (zero terminal SNR, or ᾱ underflowed
/// to 0) every t > k − 1 maps to +∞.
/// @throws std::out_of_range if t is outside [0, T−1] or NaN.
inline double t_to_sigma(const noise_schedule& s, double t) {
  const double last = static_cast<double>(s.size() - 1);
  if (!(t >= 0.0 && t <= last))
    detail::throw_out_of_range("diffusion::t_to_sigma", "t = " + detail::to_text(t) +
                                                            " is outside the allowed range [0, " + detail::to_text(last) + "]");
  const double lo = std::floor(t);
  const auto i = static_cast<std::size_t>(lo);
  const double w = t - lo;
  if (w == 0.0) return s[i].sigma;
  // Between a finite σ and σ = +∞ (zero terminal SNR, or ᾱ underflowed) log σ is +∞ for every w > 0.
  if (!std::isfinite(s[i + 1].sigma)) return std::numeric_limits<double>::infinity();
  const double a = std::log(s[i].sigma), b = std::log(s[i + 1].sigma);
  return std::exp(a + w * (b - a));
}

namespace detail {
/// The number of leading steps with a finite σ (σ is nondecreasing in t; it is +∞ at a zero
/// terminal SNR step and where ᾱ has underflowed to 0).
inline std::size_t finite_sigma_steps(const noise_schedule& s) noexcept {
  const auto steps = s.steps();
  return static_cast<std::size_t>(
      std::partition_point(steps.begin(), steps.end(), [](const schedule_step& st) { return std::isfinite(st.sigma); }) -
      steps.begin());
}
}  // namespace detail

/// @brief The σ range of a discrete schedule: [σ_0, σ_max], σ_max the largest finite σ (σ_{T−1}, or
/// σ_{T−2} with a zero terminal SNR, or the last step before ᾱ underflows to 0). A σ list for a
/// sampler over a model trained on the schedule must lie in it (its last entry may be 0):
/// @ref sigma_to_t refuses anything outside.
/// @throws std::invalid_argument if no step has a finite σ.
inline std::pair<double, double> sigma_range(const noise_schedule& s) {
  const std::size_t n = detail::finite_sigma_steps(s);
  if (n == 0)
    detail::throw_invalid("diffusion::sigma_range",
                          "the schedule has no step with a finite sigma (zero terminal SNR, or alpha_bar underflowed to 0, "
                          "from its first step)");
  return {s[0].sigma, s[n - 1].sigma};
}

/// @brief Inverse of t_to_sigma(): the fractional 0-based timestep whose log-σ
/// interpolation gives σ (k-diffusion `DiscreteSchedule.sigma_to_t`, without its clamp).
/// @param[in] s the schedule (σ is increasing in t).
/// @param[in] sigma σ ∈ [σ_0, σ_max], where σ_max is the largest finite σ of the schedule.
/// @throws std::out_of_range if σ is outside that range (k-diffusion clamps silently; we do not).
inline double sigma_to_t(const noise_schedule& s, double sigma) {
  const std::size_t n = detail::finite_sigma_steps(s);  // the steps after have sigma = +inf
  if (n == 0)
    detail::throw_out_of_range("diffusion::sigma_to_t", "sigma = " + detail::to_text(sigma) +
                                                            " cannot be mapped: the schedule has no step with a finite "
                                                            "sigma (zero terminal SNR, or alpha_bar underflowed to 0, "
                                                            "from its first step)");
  const double smin = s[0].sigma, smax = s[n - 1].sigma;
  if (!(sigma >= smin && sigma <= smax))
    detail::throw_out_of_range("diffusion::sigma_to_t", "sigma = " + detail::to_text(sigma) +
                                                            " is outside the allowed range [" + detail::to_text(smin) +
                                                            ", " + detail::to_text(smax) + "] of the schedule");
  if (sigma == smax) return static_cast<double>(n - 1);
  // Largest i with sigma_i <= sigma (sigma is strictly increasing in i).
  const auto steps = s.steps();
  const auto it = std::upper_bound(steps.begin(), steps.begin() + static_cast<std::ptrdiff_t>(n), sigma,
                                   [](double v, const schedule_step& st) { return v < st.sigma; });
  const auto i = static_cast<std::size_t>(it - steps.begin()) - 1;
  const double a = std::log(s[i].sigma), b = std::log(s[i + 1].sigma);
  if (!(b > a)) return static_cast<double>(i);  // neighbours whose logarithms round alike (tiny beta)
  return static_cast<double>(i) + (std::log(sigma) - a) / (b - a);
}

}  // namespace diffusion

/// @}
