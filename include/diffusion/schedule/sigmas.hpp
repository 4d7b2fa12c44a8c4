/// @file
/// @brief Continuous-time noise families (VP and VE SDEs), σ lists (Karras, exponential, KL-optimal, VP, AYS, beta,
/// linear-quadratic, ComfyUI's), the de-duplication of rounded timesteps,
/// and the map between a discrete schedule's timestep and its noise level σ.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <concepts>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/double_double.hpp"
#include "../core/errors.hpp"
#include "beta_quantile.hpp"
#include "noise_schedule.hpp"
#include "timesteps.hpp"

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

/// n + extra levels (zeros), or std::invalid_argument naming `where` when they cannot be allocated
/// (n + 1 for a list with its final 0 cannot wrap around).
inline std::vector<double> level_table(std::string_view where, std::size_t n, std::size_t extra) {
  return allocate_table<double>(where, "n = " + to_text(n), n, "levels", extra);
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
  if (!(b > 0.0 && a < std::numeric_limits<double>::infinity()))
    detail::throw_invalid(where, "rho = " + detail::to_text(rho) + " is too small for sigma_min = " + detail::to_text(sigma_min) +
                                     ", sigma_max = " + detail::to_text(sigma_max) +
                                     ": sigma^(1/rho) leaves the double range (" + detail::to_text(b) + " to " +
                                     detail::to_text(a) + ")");
  std::vector<double> s = detail::level_table(where, n, 1);
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
  std::vector<double> s = level_table(where, n, final_zero ? 1 : 0);
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

/// @brief DPM-Solver's uniform-λ steps (Lu et al. 2022, "DPM-Solver", §3.3 and Appendix D.1: the
/// "logSNR" step size schedule; diffusers `use_lu_lambdas`): n levels uniform in the half log-SNR
/// λ = log(α/σ) from λ_min to λ_max, as σ-space ratios ρ = σ/α = e^{−λ} (the scheduler's σ),
/// \f$\sigma_i = \exp\!\big(-\lambda_{\min} - \tfrac{i}{n-1}(\lambda_{\max} - \lambda_{\min})\big)\f$, followed by a final 0.
/// Since −λ = log ρ, this is @ref diffusion::exponential_sigmas "exponential_sigmas" between
/// \f$e^{-\lambda_{\max}}\f$ and \f$e^{-\lambda_{\min}}\f$ (which it calls): uniform in λ is uniform in log ρ.
/// @param[in] n number of nonzero levels, n ≥ 2; @param[in] lambda_min λ of the noisiest level (finite);
/// @param[in] lambda_max λ of the least noisy level, > λ_min (finite).
/// @return n + 1 values: \f$e^{-\lambda_{\min}}\f$, …, \f$e^{-\lambda_{\max}}\f$, 0.
/// @throws std::invalid_argument for n < 2, a non-finite λ, or λ_min ≥ λ_max (naming the argument).
inline std::vector<double> logsnr_uniform_sigmas(std::size_t n, double lambda_min, double lambda_max) {
  constexpr std::string_view where = "diffusion::logsnr_uniform_sigmas";
  detail::check_finite(where, "lambda_min", lambda_min);
  detail::check_finite(where, "lambda_max", lambda_max);
  if (!(lambda_min < lambda_max))
    detail::throw_invalid(where, "lambda_min = " + detail::to_text(lambda_min) + " must be < lambda_max = " + detail::to_text(lambda_max));
  const double sigma_max = std::exp(-lambda_min), sigma_min = std::exp(-lambda_max);
  if (!(sigma_min > 0.0 && std::isfinite(sigma_max)))
    detail::throw_invalid(where, "lambda_min = " + detail::to_text(lambda_min) + ", lambda_max = " + detail::to_text(lambda_max) +
                                     " give sigma = exp(-lambda) outside (0, inf) in double (|lambda| <= 708)");
  if (n < 2) detail::throw_invalid(where, "n = " + detail::to_text(n) + " must be >= 2");
  return exponential_sigmas(n, sigma_min, sigma_max);
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

// ---------------------------------------------------------------------------------------
// σ lists picked from a model's discrete schedule (ComfyUI's schedulers) and tabulated ones
// ---------------------------------------------------------------------------------------

namespace detail {
/// Requires n ≥ 1 and a schedule whose σ is finite at every step (the lists below read the table).
inline void check_table_list(std::string_view where, const noise_schedule& s, std::size_t n) {
  if (n == 0) throw_invalid(where, "n = 0 must be >= 1");
  if (finite_sigma_steps(s) != s.size())
    throw_invalid(where, "sigma is infinite at t = " + to_text(finite_sigma_steps(s)) +
                             " (zero terminal SNR, or alpha_bar underflowed); these lists read every step's sigma, "
                             "so pass a schedule whose sigmas are finite or a list with an explicit sigma_max");
}
}  // namespace detail

/// @brief ComfyUI's "simple" scheduler: n levels read from the table at evenly spaced timesteps from
/// the top, \f$\sigma_k = \sigma_{T-1-\lfloor kT/n\rfloor}\f$, k = 0 … n − 1, followed by a final 0.
/// The floor is exact (integer arithmetic); ComfyUI forms k·(T/n) in floating point, which lands one
/// timestep lower where kT/n is an integer that the product misses (e.g. T = 1000, n = 38, k = 19:
/// 499 instead of 500; docs/conventions.md).
/// @param[in] s the model's schedule (every σ finite); @param[in] n the number of levels, 1 ≤ n ≤ T.
/// @return n + 1 values, descending, ending in 0.
inline std::vector<double> simple_sigmas(const noise_schedule& s, std::size_t n) {
  constexpr std::string_view where = "diffusion::simple_sigmas";
  detail::check_table_list(where, s, n);
  const std::size_t T = s.size();
  if (n > T) detail::throw_invalid(where, "n = " + detail::to_text(n) + " is outside the allowed range [1, " + detail::to_text(T) + "]");
  std::vector<double> out = detail::level_table(where, n, 1);
  for (std::size_t k = 0; k < n; ++k) {
    // ⌊kT/n⌋ = k⌊T/n⌋ + ⌊k (T mod n)/n⌋, exact for every size_t (k < n).
    const std::size_t t = k * (T / n) + detail::mul_div(k, T % n, n).quotient;
    out[k] = s[T - 1 - t].sigma;
  }
  return out;
}

/// @brief ComfyUI's "ddim_uniform" scheduler: the table's σ at t = 1, 1 + c, 1 + 2c, … < T with the
/// stride c = max(⌊T/n⌋, 1), in descending order, followed by a final 0. As in ComfyUI the list has
/// ⌈(T − 1)/c⌉ levels, which can be one more than n (T = 1000, n = 7: c = 142, 8 levels); and where
/// σ_1 ≈ 0 (|σ_1| ≤ 1e-5) the stride is ⌊T/(n + 1)⌋ and no 0 is appended (the list ends at σ_1).
/// @param[in] s the model's schedule (T ≥ 2, every σ finite); @param[in] n the number of steps asked for, n ≥ 1.
/// @return the levels, descending.
inline std::vector<double> ddim_uniform_sigmas(const noise_schedule& s, std::size_t n) {
  constexpr std::string_view where = "diffusion::ddim_uniform_sigmas";
  detail::check_table_list(where, s, n);
  const std::size_t T = s.size();
  if (T < 2) detail::throw_invalid(where, "the schedule has T = 1 step; ddim_uniform starts at t = 1");
  const bool first_is_zero = std::abs(s[1].sigma) <= 1e-5;
  // ⌊T/(n + 1)⌋ where σ_1 ≈ 0, written so that n + 1 cannot wrap (n ≥ T gives 0 either way).
  const std::size_t stride = std::max<std::size_t>(first_is_zero ? (n >= T ? 0 : T / (n + 1)) : T / n, 1);
  std::vector<double> out;
  for (std::size_t t = 1; t < T; t += stride) out.push_back(s[t].sigma);
  std::reverse(out.begin(), out.end());
  if (!first_is_zero) out.push_back(0.0);
  return out;
}

/// @brief ComfyUI's "normal" and "sgm_uniform" schedulers: timesteps uniform from T − 1 down to 0 and
/// the σ of each by @ref t_to_sigma (log-σ interpolation), followed by a final 0.
/// "normal" takes n timesteps including both ends; "sgm_uniform" (`sgm` = true; Stability's SGM
/// sampling, used by SDXL Turbo and Lightning) takes n + 1 and drops the last, so it never evaluates
/// the model at t = 0. (ComfyUI's "normal" adds a step and drops the final 0 when σ_0 ≈ 0; a VP
/// table's σ_0 = √(β₀/(1 − β₀)) is not.)
/// @param[in] s the model's schedule (every σ finite, T ≥ 2); @param[in] n levels, n ≥ 1 (n ≥ 2 for "normal");
/// @param[in] sgm false: "normal", true: "sgm_uniform".
/// @return n + 1 values, descending, ending in 0.
inline std::vector<double> normal_sigmas(const noise_schedule& s, std::size_t n, bool sgm = false) {
  constexpr std::string_view where = "diffusion::normal_sigmas";
  detail::check_table_list(where, s, n);
  const std::size_t T = s.size();
  if (T < 2) detail::throw_invalid(where, "the schedule has T = 1 step; the timesteps run from T - 1 to 0");
  if (!sgm && n < 2) detail::throw_invalid(where, "n = 1 must be >= 2 for \"normal\" (its timesteps include both ends)");
  const std::size_t points = sgm ? n + 1 : n;
  const double top = static_cast<double>(T - 1);
  std::vector<double> out = detail::level_table(where, n, 1);
  for (std::size_t k = 0; k < n; ++k) out[k] = t_to_sigma(s, detail::ramp(k, points, top, 0.0));
  return out;
}

/// @brief The schedules published with Align Your Steps (Sabour, Fidler & Kreis 2024,
/// arXiv:2404.14507, Appendix B.3, Table 3): 10-step σ lists optimized for these models.
enum class ays_model {
  sd15,          ///< Stable Diffusion 1.5: 14.615 … 0.029.
  sdxl,          ///< SDXL: 14.615 … 0.029.
  deepfloyd_if,  ///< DeepFloyd-IF stage 1: 160.41 … 0.006.
  svd,           ///< Stable Video Diffusion: 700.00 … 0.002.
};

/// @brief An Align-Your-Steps σ list for n steps: the published 11 levels (@ref ays_model) when n = 11,
/// otherwise their log-linear interpolation to n levels (NVIDIA's how-to, as ComfyUI and A1111 do
/// it): with the table \f$\tau_0 > \dots > \tau_{10}\f$ at positions j/10,
/// \f$\sigma_k = \exp\big((1 - w)\log\tau_j + w\log\tau_{j+1}\big)\f$ at position k/(n − 1) = (j + w)/10;
/// positions that fall on a table entry return it exactly. Followed by a final 0.
/// @param[in] m the model; @param[in] n the number of levels, n ≥ 2 (the table's 11 for its own 10 steps + σ_min).
/// @return n + 1 values, descending, ending in 0.
inline std::vector<double> ays_sigmas(ays_model m, std::size_t n) {
  constexpr std::string_view where = "diffusion::ays_sigmas";
  static constexpr double tables[4][11] = {
      {14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029},
      {14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029},
      {160.41, 8.081, 3.315, 1.885, 1.207, 0.785, 0.553, 0.293, 0.186, 0.030, 0.006},
      {700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002}};
  const auto idx = static_cast<std::size_t>(m);
  if (idx > 3) detail::throw_invalid(where, "model = " + detail::to_text(idx) + " is not one of the published tables");
  if (n < 2) detail::throw_invalid(where, "n = " + detail::to_text(n) + " must be >= 2");
  const double* tau = tables[idx];
  std::vector<double> out = detail::level_table(where, n, 1);
  for (std::size_t k = 0; k < n; ++k) {
    // Position in table units, p = 10k/(n − 1) = j + w; exact when the division is.
    const std::size_t num = 10 * k, den = n - 1;
    const std::size_t j = num / den, rem = num % den;
    if (rem == 0) {
      out[k] = tau[j];
      continue;
    }
    const double w = static_cast<double>(rem) / static_cast<double>(den);
    const double a = std::log(tau[j]), b = std::log(tau[j + 1]);
    out[k] = std::exp(a + w * (b - a));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Beta σ lists (Lee et al. 2024), the linear-quadratic flow list, rounded-timestep collisions
// ---------------------------------------------------------------------------------------

namespace detail {
/// Requires the Beta shape parameters in [0.1, 10], the range over which detail::beta_quantile is tested.
inline void check_beta_shape(std::string_view where, double alpha, double beta) {
  for (const auto& [name, v] : {std::pair{"alpha", alpha}, std::pair{"beta", beta}})
    if (!(v >= 0.1 && v <= 10.0))
      throw_invalid(where, std::string(name) + " = " + to_text(v) +
                               " is outside the allowed range [0.1, 10] (the range the Beta quantile is tested over)");
}
}  // namespace detail

/// @brief Beta σ list (Lee et al. 2024, "Beta Sampling is All You Need", arXiv:2407.12173, §3; diffusers
/// `use_beta_sigmas`, `_convert_to_beta`): levels at the Beta(α, β) quantiles of a uniform ramp,
/// \f$\sigma_i = \sigma_{\min} + F^{-1}_{\alpha,\beta}\!\big(1 - \tfrac{i}{n-1}\big)(\sigma_{\max} - \sigma_{\min})\f$,
/// i = 0 … n − 1, F⁻¹ the inverse of the regularized incomplete beta function \f$I_x(\alpha, \beta)\f$;
/// followed by a final 0. α = β < 1 spends more steps at both ends (the paper's and diffusers' 0.6);
/// α = β = 1 is the linear ramp. The quantile level 1 − i/(n − 1) and its complement i/(n − 1) are
/// formed exactly (diffusers: `1 - np.linspace(0, 1, n)`, an ulp apart at most).
/// @param[in] n number of nonzero levels, n ≥ 2; @param[in] sigma_min σ_min > 0; @param[in] sigma_max σ_max > σ_min;
/// @param[in] alpha α ∈ [0.1, 10]; @param[in] beta β ∈ [0.1, 10].
/// @return n + 1 values: σ_max, …, σ_min, 0 (σ_0 and σ_{n−1} exact).
inline std::vector<double> beta_sigmas(std::size_t n, double sigma_min, double sigma_max, double alpha = 0.6,
                                       double beta = 0.6) {
  constexpr std::string_view where = "diffusion::beta_sigmas";
  if (n < 2) detail::throw_invalid(where, "n = " + detail::to_text(n) + " must be >= 2");
  detail::check_sigma_range(where, sigma_min, sigma_max);
  detail::check_beta_shape(where, alpha, beta);
  std::vector<double> s = detail::level_table(where, n, 1);
  const double den = static_cast<double>(n - 1), span = sigma_max - sigma_min;
  for (std::size_t i = 1; i + 1 < n; ++i) {
    const double p = static_cast<double>(n - 1 - i) / den, q = static_cast<double>(i) / den;
    s[i] = sigma_min + detail::beta_quantile(alpha, beta, p, q) * span;
  }
  s[0] = sigma_max;
  s[n - 1] = sigma_min;
  return s;
}

/// @brief ComfyUI's "beta" scheduler (`beta_scheduler`, after Lee et al. 2024, arXiv:2407.12173): the
/// Beta(α, β) quantiles of 1 − k/n, k = 0 … n − 1, placed on the model's timesteps and rounded,
/// \f$t_k = \mathrm{round}\big(F^{-1}_{\alpha,\beta}(1 - k/n)\,(T - 1)\big)\f$ (half to even, as `numpy.rint`),
/// keeping the first of each run of equal timesteps (as ComfyUI; see @ref deduplicate_timesteps).
/// 0-based code timesteps, strictly decreasing, t_0 = T − 1; fewer than n where quantiles round alike.
/// ComfyUI forms 1 − k·(1/n) in float64; here the level and its complement are exact rationals.
/// @param[in] T the number of training timesteps, T ≥ 2; @param[in] n the number of steps asked for, n ≥ 1;
/// @param[in] alpha α ∈ [0.1, 10]; @param[in] beta β ∈ [0.1, 10].
inline std::vector<std::size_t> beta_timesteps(std::size_t T, std::size_t n, double alpha = 0.6, double beta = 0.6) {
  constexpr std::string_view where = "diffusion::beta_timesteps";
  if (T < 2) detail::throw_invalid(where, "T = " + detail::to_text(T) + " must be >= 2");
  if (n == 0) detail::throw_invalid(where, "n = 0 must be >= 1");
  detail::check_beta_shape(where, alpha, beta);
  std::vector<std::size_t> t;
  t.reserve(n);
  const double top = static_cast<double>(T - 1), den = static_cast<double>(n);
  for (std::size_t k = 0; k < n; ++k) {
    const double x = detail::beta_quantile(alpha, beta, static_cast<double>(n - k) / den, static_cast<double>(k) / den);
    const auto tk = static_cast<std::size_t>(std::nearbyint(x * top));  // default rounding mode: half to even
    if (t.empty() || tk != t.back()) t.push_back(tk);
  }
  return t;
}

/// @brief ComfyUI's "beta" scheduler as a σ list: the table's σ at each of @ref beta_timesteps
/// (T = the schedule's size), followed by a final 0. A different list from @ref beta_sigmas, which
/// places the quantiles between σ_min and σ_max instead of on the timesteps.
/// @param[in] s the model's schedule (T ≥ 2, every σ finite); @param[in] n steps asked for, n ≥ 1;
/// @param[in] alpha α ∈ [0.1, 10]; @param[in] beta β ∈ [0.1, 10].
/// @return the levels, descending, ending in 0 (at most n + 1 values).
inline std::vector<double> beta_table_sigmas(const noise_schedule& s, std::size_t n, double alpha = 0.6, double beta = 0.6) {
  detail::check_table_list("diffusion::beta_table_sigmas", s, n);
  const auto t = beta_timesteps(s.size(), n, alpha, beta);
  std::vector<double> out(t.size() + 1, 0.0);
  for (std::size_t k = 0; k < t.size(); ++k) out[k] = s[t[k]].sigma;
  return out;
}

/// @brief ComfyUI's "linear_quadratic" scheduler (`linear_quadratic_schedule`, from Genmo's Mochi): a flow
/// σ list in [0, 1], \f$\sigma_i = 1 - s_i\f$, i = 0 … n − 1, followed by a final 0, with s linear over the
/// first L steps up to the threshold τ and quadratic after, reaching 1 at i = n:
/// \f$s_i = i\tau/L\f$ for i < L, \f$s_i = a i^2 + b i + c\f$ for L ≤ i ≤ n, \f$d = L - \tau n\f$, q = n − L,
/// \f$a = d/(Lq^2)\f$, \f$b = \tau/L - 2d/q^2\f$, \f$c = aL^2\f$ (continuous at L, s_n = 1). Evaluated as
/// \f$\sigma_i = (L - i\tau)/L\f$ and, with j = n − i, \f$\sigma_i = j\big((2q - j)L + \tau(q^2 - n(2q - j))\big)/(Lq^2)\f$,
/// integers exact and the rest in double-double: each level is the double nearest the exact value of the
/// formula at the double τ (ComfyUI evaluates the polynomial in float64 and subtracts from 1). n = 1 gives
/// {1, 0}, as in ComfyUI. ComfyUI multiplies the list by the model's σ_max (1 for a flow model).
/// @param[in] n steps, 1 ≤ n ≤ 2²⁴ (so the integers above are exact in double).
/// @param[in] threshold_noise τ ∈ (0, 1), the noise level 1 − τ reached after the linear part (Mochi's 0.025).
/// @param[in] linear_steps L ∈ [1, n − 1] (default ⌊n/2⌋, as ComfyUI's `None`); unused when n = 1.
/// @pre the list must be strictly decreasing: τ > 0, and where d < 0 (the quadratic slows towards the end)
/// \f$\tau q^2 + d(2q - 1) > 0\f$; otherwise std::invalid_argument naming the values.
/// @return n + 1 values: 1, …, 0.
inline std::vector<double> linear_quadratic_sigmas(std::size_t n, double threshold_noise = 0.025,
                                                   std::optional<std::size_t> linear_steps = std::nullopt) {
  constexpr std::string_view where = "diffusion::linear_quadratic_sigmas";
  constexpr std::size_t max_n = std::size_t{1} << 24;
  if (n == 0 || n > max_n)
    detail::throw_invalid(where, "n = " + detail::to_text(n) + " is outside the allowed range [1, 16777216]");
  detail::check_open(where, "threshold_noise", threshold_noise, 0.0, 1.0);
  if (n == 1) return {1.0, 0.0};
  const std::size_t L = linear_steps.value_or(n / 2);
  if (L < 1 || L >= n)
    detail::throw_invalid(where, "linear_steps = " + detail::to_text(L) + " is outside the allowed range [1, " +
                                     detail::to_text(n - 1) + "]");
  const double tau = threshold_noise, N = static_cast<double>(n), Ld = static_cast<double>(L),
               q = static_cast<double>(n - L);
  // Strictly decreasing iff the smallest difference, at j = 0 when d < 0, is positive:
  // tau (q² − n(2q − 1)) + L(2q − 1) > 0, one rounding of exact integers, so its sign is exact.
  if (std::fma(tau, q * q - N * (2.0 * q - 1.0), Ld * (2.0 * q - 1.0)) <= 0.0)
    detail::throw_invalid(where, "threshold_noise = " + detail::to_text(tau) + " with linear_steps = " + detail::to_text(L) +
                                     " of n = " + detail::to_text(n) +
                                     " makes the quadratic part turn back (the list would not decrease strictly); "
                                     "allowed: threshold_noise (q^2 - n(2q - 1)) + linear_steps (2q - 1) > 0, q = n - linear_steps");
  using detail::dd;
  std::vector<double> s = detail::level_table(where, n, 1);
  for (std::size_t i = 0; i < L; ++i)
    s[i] = detail::to_double((dd{Ld, 0.0} - detail::two_prod(static_cast<double>(i), tau)) / dd{Ld, 0.0});
  const dd den = detail::two_prod(Ld * q, q);
  for (std::size_t i = L; i < n; ++i) {
    const double j = static_cast<double>(n - i), A = (2.0 * q - j) * Ld, B = q * q - N * (2.0 * q - j);
    const dd num = detail::two_prod(j, A) + dd{tau, 0.0} * detail::two_prod(j, B);
    s[i] = detail::to_double(num / den);
  }
  return s;
}

/// @brief De-duplicates a list of rounded timesteps (diffusers #5687, #12771: Karras or other σ lists
/// mapped to timesteps and rounded can repeat a timestep when the training schedule is short or the step
/// count large). The rule: the timesteps must be non-increasing; of each run of equal timesteps the FIRST
/// is kept with its σ, the later ones and their σ are removed; a final σ past the last timestep (the list's
/// terminal level, e.g. 0) is kept. Afterwards the timesteps are strictly decreasing and `sigmas[k]` is
/// still the level of `timesteps[k]`; the sampler steps from each kept level straight to the next kept one.
/// (The same rule as ComfyUI's "beta" scheduler and as diffusers' DPMSolverMultistepScheduler with
/// `np.unique(…, return_index=True)` before #4986; diffusers' current classes keep duplicates.)
/// @param[in,out] timesteps non-increasing (integers or floating point; NaN refused).
/// @param[in,out] sigmas the levels: as many as the timesteps, or one more (the terminal level).
/// @return the number of steps removed.
/// @throws std::invalid_argument if the sizes disagree or a timestep exceeds the one before it.
template <class Timestep>
  requires std::integral<Timestep> || std::floating_point<Timestep>
std::size_t deduplicate_timesteps(std::vector<Timestep>& timesteps, std::vector<double>& sigmas) {
  constexpr std::string_view where = "diffusion::deduplicate_timesteps";
  const std::size_t n = timesteps.size();
  if (sigmas.size() != n && sigmas.size() != n + 1)
    detail::throw_invalid(where, "sigmas has " + detail::to_text(sigmas.size()) + " entries; allowed: " + detail::to_text(n) +
                                     " or " + detail::to_text(n + 1) + " (one per timestep, and optionally a terminal level)");
  for (std::size_t k = 1; k < n; ++k)
    if (!(timesteps[k] <= timesteps[k - 1]))
      detail::throw_invalid(where, "timesteps[" + detail::to_text(k) + "] = " + detail::to_text(timesteps[k]) +
                                       " must be <= timesteps[" + detail::to_text(k - 1) + "] = " +
                                       detail::to_text(timesteps[k - 1]) + " (a non-increasing list)");
  if (n > 0 && !(timesteps[0] == timesteps[0]))
    detail::throw_invalid(where, "timesteps[0] is NaN");
  std::size_t kept = 0;
  for (std::size_t k = 0; k < n; ++k) {
    if (kept > 0 && timesteps[k] == timesteps[kept - 1]) continue;
    timesteps[kept] = timesteps[k];
    sigmas[kept] = sigmas[k];
    ++kept;
  }
  const std::size_t dropped = n - kept;
  if (sigmas.size() == n + 1) sigmas[kept] = sigmas[n];
  timesteps.resize(kept);
  sigmas.resize(sigmas.size() - dropped);
  return dropped;
}

}  // namespace diffusion

/// @}
