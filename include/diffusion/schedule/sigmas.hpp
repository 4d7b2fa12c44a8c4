/// @file
/// @brief Continuous-time noise families (VP and VE SDEs), σ lists (Karras, exponential, KL-optimal, VP, AYS, ComfyUI's),
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
  std::vector<double> out(n + 1, 0.0);
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
  const std::size_t steps = first_is_zero ? n + 1 : n;
  const std::size_t stride = std::max<std::size_t>(T / steps, 1);
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
  std::vector<double> out(n + 1, 0.0);
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
  std::vector<double> out(n + 1, 0.0);
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

}  // namespace diffusion

/// @}
