/// @file
/// @brief Beta schedules: the discrete noise levels β_i of the forward process.
///
/// Every function returns `std::vector<double>` of length T, indexed 0-based: entry i
/// is the paper's β_t for t = i + 1 (Ho et al. 2020, §2 and §4). The result is
/// ready for @ref diffusion::noise_schedule. All are computed in double from
/// formulas chosen to avoid cancellation; each is within a few ulps of the exact
/// value of its definition (measured against an mpmath reference in
/// `tests/test_betas.cpp`).
#pragma once

#include <cmath>
#include <limits>
#include <cstddef>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#include "../core/config.hpp"
#include "../core/double_double.hpp"
#include "../core/errors.hpp"

/// @defgroup betas Beta schedules
/// @brief Families of β_i (linear, scaled_linear, cosine, sigmoid, DDPM-TF's, user)
/// and the zero-terminal-SNR rescale.
/// @{

namespace diffusion {

namespace detail {

inline void check_timesteps(std::string_view where, std::size_t num_timesteps) {
  if (num_timesteps == 0) throw_invalid(where, "num_timesteps = 0 must be >= 1");
}

/// T betas, all `value`, or std::invalid_argument naming `where` when T of them cannot be allocated.
inline std::vector<double> beta_table(std::string_view where, std::size_t num_timesteps, double value = 0.0) {
  return allocate_table<double>(where, "num_timesteps = " + to_text(num_timesteps), num_timesteps, "betas", 0, value);
}

inline void check_ramp(std::string_view where, double beta_start, double beta_end) {
  check_open(where, "beta_start", beta_start, 0.0, 1.0);
  check_open(where, "beta_end", beta_end, 0.0, 1.0);
  if (beta_start > beta_end)
    throw_invalid(where, "beta_start = " + to_text(beta_start) + " must be <= beta_end = " + to_text(beta_end) +
                             " (this family is an increasing ramp; pass explicit betas for other shapes)");
}

/// ((n-1-i)·a + i·b)/(n-1): a linear interpolation exact at both ends, with no
/// cancellation for a, b > 0 (error ≤ 1.5 ulp).
inline double ramp(std::size_t i, std::size_t n, double a, double b) {
  if (n == 1) return a;
  const double m = static_cast<double>(n - 1);
  const double k = static_cast<double>(i);
  return std::fma(k, b, (m - k) * a) / m;
}

}  // namespace detail

/// @brief Linear schedule (DDPM §4): \f$\beta_i = \beta_s + (\beta_e - \beta_s)\,\frac{i}{T-1}\f$.
///
/// DDPM uses β_s = 1e-4, β_e = 0.02 with T = 1000. improved DDPM scales both ends
/// by 1000/T for other T (see @ref iddpm_linear_betas). For T = 1 the single β is β_s
/// (numpy `linspace` convention).
/// @param[in] num_timesteps T ≥ 1.
/// @param[in] beta_start β_s ∈ (0, 1).
/// @param[in] beta_end β_e ∈ (0, 1), β_s ≤ β_e.
/// @return T betas, 0-based. Accuracy: ≤ 2 ulp of the exact formula (tested).
/// @throws std::invalid_argument for T = 0 or an end outside (0, 1) or β_s > β_e.
inline std::vector<double> linear_betas(std::size_t num_timesteps, double beta_start = 1e-4, double beta_end = 0.02) {
  constexpr std::string_view where = "diffusion::linear_betas";
  detail::check_timesteps(where, num_timesteps);
  detail::check_ramp(where, beta_start, beta_end);
  std::vector<double> b = detail::beta_table(where, num_timesteps);
  for (std::size_t i = 0; i < num_timesteps; ++i) b[i] = detail::ramp(i, num_timesteps, beta_start, beta_end);
  return b;
}

/// @brief improved DDPM's linear schedule: @ref linear_betas with both ends scaled by 1000/T
/// (Nichol & Dhariwal 2021, `get_named_beta_schedule("linear")`), so that T = 1000
/// gives DDPM's 1e-4 … 0.02 and T = 4000 gives 2.5e-5 … 0.005.
/// @param[in] num_timesteps T ≥ 1 (T ≥ 21 keeps the scaled β_e below 1).
inline std::vector<double> iddpm_linear_betas(std::size_t num_timesteps) {
  detail::check_timesteps("diffusion::iddpm_linear_betas", num_timesteps);
  const double scale = 1000.0 / static_cast<double>(num_timesteps);
  return linear_betas(num_timesteps, scale * 1e-4, scale * 0.02);
}

/// @brief Scaled-linear schedule (LDM / Stable Diffusion; DDPM-TF "quad"):
/// \f$\beta_i = \left(\sqrt{\beta_s} + (\sqrt{\beta_e}-\sqrt{\beta_s})\frac{i}{T-1}\right)^2\f$.
///
/// Stable Diffusion uses β_s = 0.00085, β_e = 0.012, T = 1000 (Rombach et al. 2022).
/// @param[in] num_timesteps T ≥ 1.
/// @param[in] beta_start β_s ∈ (0, 1).
/// @param[in] beta_end β_e ∈ (0, 1), β_s ≤ β_e.
/// @return T betas. Accuracy: ≤ 3 ulp (tested).
inline std::vector<double> scaled_linear_betas(std::size_t num_timesteps, double beta_start = 0.00085,
                                               double beta_end = 0.012) {
  constexpr std::string_view where = "diffusion::scaled_linear_betas";
  detail::check_timesteps(where, num_timesteps);
  detail::check_ramp(where, beta_start, beta_end);
  const double a = std::sqrt(beta_start), b = std::sqrt(beta_end);
  std::vector<double> out = detail::beta_table(where, num_timesteps);
  for (std::size_t i = 0; i < num_timesteps; ++i) {
    const double r = detail::ramp(i, num_timesteps, a, b);
    out[i] = r * r;
  }
  return out;
}

/// @brief Betas from a continuous ᾱ(τ), τ ∈ [0, 1]:
/// \f$\beta_i = \min\!\left(1 - \frac{\bar\alpha((i+1)/T)}{\bar\alpha(i/T)},\ \beta_{\max}\right)\f$
/// (improved DDPM Eq. 17 and `betas_for_alpha_bar`; diffusers' `betas_for_alpha_bar`).
///
/// Note the subtraction `1 − ratio` loses about log10(1/β) digits when β is small:
/// that is inherent to a black-box ᾱ. @ref cosine_betas uses an exact identity instead.
/// @tparam AlphaBar callable `double(double)`, strictly decreasing, positive on [0, 1).
/// @param[in] num_timesteps T ≥ 1.
/// @param[in] alpha_bar ᾱ(τ).
/// @param[in] max_beta β_max ∈ (0, 1]; 1 allows a zero terminal SNR (ᾱ(1) = 0).
/// @throws std::invalid_argument when the function yields a β outside (0, 1] or NaN, naming τ.
template <class AlphaBar>
std::vector<double> betas_from_alpha_bar(std::size_t num_timesteps, AlphaBar&& alpha_bar, double max_beta = 0.999) {
  constexpr std::string_view where = "diffusion::betas_from_alpha_bar";
  detail::check_timesteps(where, num_timesteps);
  detail::check_open_closed(where, "max_beta", max_beta, 0.0, 1.0);
  const double n = static_cast<double>(num_timesteps);
  std::vector<double> b = detail::beta_table(where, num_timesteps);
  for (std::size_t i = 0; i < num_timesteps; ++i) {
    const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
    const double a1 = static_cast<double>(alpha_bar(t1)), a2 = static_cast<double>(alpha_bar(t2));
    const double beta = std::min(1.0 - a2 / a1, max_beta);
    if (!(beta > 0.0 && beta <= 1.0))
      detail::throw_invalid(where, "alpha_bar(" + detail::to_text(t1) + ") = " + detail::to_text(a1) +
                                       " and alpha_bar(" + detail::to_text(t2) + ") = " + detail::to_text(a2) +
                                       " give beta[" + detail::to_text(i) + "] = " + detail::to_text(beta) +
                                       ", outside the allowed range (0, 1]; alpha_bar must be positive and "
                                       "strictly decreasing");
    b[i] = beta;
  }
  return b;
}

/// @brief Cosine schedule of improved DDPM (Nichol & Dhariwal 2021, Eq. 17):
/// \f$\bar\alpha(\tau) = \cos^2\!\left(\frac{\tau + s}{1 + s}\frac{\pi}{2}\right)\f$,
/// \f$\beta_i = \min(1 - \bar\alpha(\tfrac{i+1}{T})/\bar\alpha(\tfrac{i}{T}), \beta_{\max})\f$.
///
/// Evaluated through the identity
/// \f$1 - \cos^2 b/\cos^2 a = \sin(u_i + u_{i+1})\sin(u_i - u_{i+1})/\sin^2 u_i\f$ with
/// \f$u_i = \frac{\pi}{2}\frac{T - i}{T(1+s)}\f$ (and \f$\sin(\pi - x)\f$ for arguments past π/2), which has no cancellation: accurate to a few
/// ulps where the textbook form loses ~12 digits at small i (iDDPM and diffusers
/// differ from the exact value by up to ~1e-12 relative there).
/// @param[in] num_timesteps T ≥ 1.
/// @param[in] s offset s ≥ 0 (default 0.008).
/// @param[in] max_beta β_max ∈ (0, 1] (default 0.999; with T = 1000 exactly the last β is clipped).
/// @return T betas. Accuracy: ≤ 4 ulp (tested).
inline std::vector<double> cosine_betas(std::size_t num_timesteps, double s = 0.008, double max_beta = 0.999) {
  constexpr std::string_view where = "diffusion::cosine_betas";
  detail::check_timesteps(where, num_timesteps);
  if (!(s >= 0.0 && std::isfinite(s)))
    detail::throw_invalid(where, "s = " + detail::to_text(s) + " is outside the allowed range [0, inf)");
  detail::check_open_closed(where, "max_beta", max_beta, 0.0, 1.0);
  const double n = static_cast<double>(num_timesteps);
  const double scale = std::numbers::pi / 2.0 / (n * (1.0 + s));
  const double sin_delta = std::sin(scale);
  std::vector<double> b = detail::beta_table(where, num_timesteps);
  for (std::size_t i = 0; i < num_timesteps; ++i) {
    const double k = static_cast<double>(num_timesteps - i);  // T - i
    const double su = std::sin(scale * k);
    // sin(u_i + u_{i+1}) with u_i + u_{i+1} = scale (2k - 1) up to pi: past pi/2 use
    // sin(pi - x), where pi - x = scale (2 T s + 2 i + 1) is a sum of positive terms.
    const double m = 2.0 * k - 1.0;
    const double x = m <= n * (1.0 + s) ? scale * m : scale * (2.0 * n * s + 2.0 * static_cast<double>(i) + 1.0);
    // su² underflows for a very large s (scale below ~1e-150): the two ratios, each O(1), do not.
    const double beta = su > 1e-150 ? std::sin(x) * sin_delta / (su * su) : (std::sin(x) / su) * (sin_delta / su);
    if (!(beta > 0.0 && beta < std::numeric_limits<double>::infinity()))
      detail::throw_invalid(where, "s = " + detail::to_text(s) + " is too large for T = " + detail::to_text(num_timesteps) +
                                       ": beta[" + detail::to_text(i) + "] = " + detail::to_text(beta) +
                                       " is not a positive double (the angles underflow)");
    b[i] = std::min(beta, max_beta);
  }
  return b;
}

/// @brief Sigmoid schedule (diffusers `DDPMScheduler`, "sigmoid"; Jabri et al. 2022):
/// \f$\beta_i = \beta_s + (\beta_e - \beta_s)\,\mathrm{sigmoid}(x_i)\f$, \f$x_i = -6 + 12\frac{i}{T-1}\f$.
///
/// Computed as β_s·sigmoid(−x) + β_e·sigmoid(x) in double (diffusers computes it in float32).
/// @param[in] num_timesteps T ≥ 1 (T = 1 gives x = −6).
/// @param[in] beta_start β_s ∈ (0, 1).
/// @param[in] beta_end β_e ∈ (0, 1), β_s ≤ β_e.
/// @return T betas. Accuracy: ≤ 4 ulp (tested).
inline std::vector<double> sigmoid_betas(std::size_t num_timesteps, double beta_start = 1e-4, double beta_end = 0.02) {
  constexpr std::string_view where = "diffusion::sigmoid_betas";
  detail::check_timesteps(where, num_timesteps);
  detail::check_ramp(where, beta_start, beta_end);
  std::vector<double> b = detail::beta_table(where, num_timesteps);
  const double m = num_timesteps > 1 ? static_cast<double>(num_timesteps - 1) : 1.0;
  for (std::size_t i = 0; i < num_timesteps; ++i) {
    // x = 6 (2i - (T-1)) / (T-1): the numerator is an exact integer.
    const double x = 6.0 * (2.0 * static_cast<double>(i) - m) / m;
    const double sig_pos = 1.0 / (1.0 + std::exp(-x));
    const double sig_neg = 1.0 / (1.0 + std::exp(x));
    b[i] = beta_start * sig_neg + beta_end * sig_pos;
  }
  return b;
}

/// @brief DDPM-TF's warm-up schedule (`_warmup_beta` in Ho et al.'s `diffusion_utils_2.py`):
/// β = β_e everywhere except the first W = ⌊T·f⌋ steps, which ramp linearly from β_s to β_e.
/// DDPM-TF's "warmup10" is f = 0.1 and "warmup50" is f = 0.5.
/// @param[in] num_timesteps T ≥ 1.
/// @param[in] beta_start β_s ∈ (0, 1).
/// @param[in] beta_end β_e ∈ (0, 1), β_s ≤ β_e.
/// @param[in] warmup_fraction f ∈ [0, 1]; W is computed as `int(T * f)` in double, as DDPM-TF does.
inline std::vector<double> warmup_betas(std::size_t num_timesteps, double beta_start, double beta_end,
                                        double warmup_fraction) {
  constexpr std::string_view where = "diffusion::warmup_betas";
  detail::check_timesteps(where, num_timesteps);
  detail::check_ramp(where, beta_start, beta_end);
  if (!(warmup_fraction >= 0.0 && warmup_fraction <= 1.0))
    detail::throw_invalid(where, "warmup_fraction = " + detail::to_text(warmup_fraction) +
                                     " is outside the allowed range [0, 1]");
  const auto w = static_cast<std::size_t>(static_cast<double>(num_timesteps) * warmup_fraction);
  std::vector<double> b = detail::beta_table(where, num_timesteps, beta_end);
  for (std::size_t i = 0; i < w; ++i) b[i] = detail::ramp(i, w, beta_start, beta_end);
  return b;
}

/// @brief Constant schedule (DDPM-TF "const"): β_i = β for all i.
/// @param[in] num_timesteps T ≥ 1.
/// @param[in] beta β ∈ (0, 1).
inline std::vector<double> constant_betas(std::size_t num_timesteps, double beta) {
  constexpr std::string_view where = "diffusion::constant_betas";
  detail::check_timesteps(where, num_timesteps);
  detail::check_open(where, "beta", beta, 0.0, 1.0);
  return detail::beta_table(where, num_timesteps, beta);
}

/// @brief DDPM-TF's "jsd" schedule: \f$\beta_i = 1/(T - i)\f$, i.e. 1/T, 1/(T−1), …, 1.
///
/// The last β is exactly 1, so ᾱ at the last step is 0 (a zero terminal SNR schedule:
/// see @ref noise_schedule for what that implies). Each β is correctly rounded.
/// @param[in] num_timesteps T ≥ 1.
inline std::vector<double> jsd_betas(std::size_t num_timesteps) {
  constexpr std::string_view where = "diffusion::jsd_betas";
  detail::check_timesteps(where, num_timesteps);
  std::vector<double> b = detail::beta_table(where, num_timesteps);
  for (std::size_t i = 0; i < num_timesteps; ++i) b[i] = 1.0 / static_cast<double>(num_timesteps - i);
  return b;
}

namespace detail {

/// The smallest β a schedule accepts, 2^-1000 ≈ 9.33e-302: above it every table quantity
/// (β̃ ≥ min β / 2 included) is a normal double held to 1 ulp; below it β̃ and the
/// double-double low parts fall into the subnormal range.
inline constexpr double min_beta = 0x1p-1000;

/// Validates a beta list as @ref noise_schedule requires: finite, in [2^-1000, 1), and 1
/// allowed only at the last step.
inline void check_betas(std::string_view where, std::span<const double> betas) {
  if (betas.empty()) throw_invalid(where, "betas is empty; a schedule needs at least one step");
  for (std::size_t i = 0; i < betas.size(); ++i) {
    const double b = betas[i];
    const bool last = i + 1 == betas.size();
    if (b >= min_beta && (b < 1.0 || (last && b == 1.0))) continue;
    std::string msg = "betas[" + to_text(i) + "] = " + to_text(b) + " is outside the allowed range (0, 1)";
    if (b == 1.0) msg += "; 1 is allowed only at the last step (zero terminal SNR)";
    else if (last && !(b > 0.0 && b < min_beta)) msg = "betas[" + to_text(i) + "] = " + to_text(b) + " is outside the allowed range (0, 1] for the last step";
    else if (b > 0.0 && b < min_beta)
      msg = "betas[" + to_text(i) + "] = " + to_text(b) +
            " is below the smallest allowed beta 2^-1000 = 9.33e-302 (below it the posterior variance and the "
            "double-double tables underflow and lose the 1-ulp accuracy)";
    throw_invalid(where, msg);
  }
}
}  // namespace detail

/// @brief Rescales a schedule to zero terminal SNR (Lin et al. 2023, Algorithm 1;
/// diffusers `rescale_zero_terminal_snr`).
///
/// With \f$r_i = \sqrt{\bar\alpha_i}\f$: \f$r'_i = (r_i - r_{T-1})\,\frac{r_0}{r_0 - r_{T-1}}\f$,
/// \f$\bar\alpha'_i = r_i'^2\f$, \f$\beta'_i = 1 - \bar\alpha'_i/\bar\alpha'_{i-1}\f$ (with
/// \f$\bar\alpha'_{-1} = 1\f$). The first β is unchanged and the last becomes exactly 1.
///
/// Evaluated without any difference of nearby numbers: with \f$P_k = \prod_{j>k}(1-\beta_j)\f$
/// (= ᾱ_{T−1}/ᾱ_k) and \f$Q_k = 1 - P_k\f$ (accumulated as \f$Q_{k-1} = Q_k + \beta_k(1 - Q_k)\f$),
/// \f$u_i = 1 - r'_i/r'_{i-1} = \frac{\beta_i(1 + \sqrt{P_{i-1}})}{Q_{i-1}(1 + \sqrt{1-\beta_i})}\f$ and
/// \f$\beta'_i = u_i(2 - u_i)\f$, in double-double: each β' is within 1 ulp of the exact transform
/// of the given doubles however small the betas (diffusers does it in float32/float64 with
/// `1 − ratio` cancellation, and returns NaN once ᾱ_{T−1} rounds to ᾱ_0).
/// @param[in] betas T ≥ 2 betas, valid for @ref noise_schedule, not already ending at 1.
/// @return T betas with β'_{T−1} = 1, always a valid schedule.
/// @throws std::invalid_argument for invalid betas, and when an interior β' rounds to 1 in
///         double (the exact value is below 1 by less than 2^-54: the betas after it are too
///         small for the rescaled schedule to be represented; the message names the index).
inline std::vector<double> rescale_zero_terminal_snr(std::span<const double> betas) {
  constexpr std::string_view where = "diffusion::rescale_zero_terminal_snr";
  using detail::dd;
  detail::check_betas(where, betas);
  const std::size_t n = betas.size();
  if (n < 2) detail::throw_invalid(where, "betas.size() = 1 must be >= 2 (the first and last step must differ)");
  if (betas[n - 1] == 1.0) detail::throw_invalid(where, "betas already end at 1 (zero terminal SNR)");
  const dd one{1.0, 0.0};
  // P[k] and Q[k] for k = n−1 … 0, backwards.
  std::vector<dd> P(n), Q(n);
  P[n - 1] = one;
  Q[n - 1] = dd{0.0, 0.0};
  for (std::size_t k = n - 1; k-- > 0;) {
    const double b = betas[k + 1];
    P[k] = P[k + 1] * detail::one_minus(b);
    Q[k] = Q[k + 1] + dd{b, 0.0} * (one - Q[k + 1]);
  }
  std::vector<double> out(n);
  out[0] = betas[0];
  out[n - 1] = 1.0;
  for (std::size_t i = 1; i + 1 < n; ++i) {
    const double b = betas[i];
    const dd u = (dd{b, 0.0} * (one + detail::dd_sqrt(P[i - 1]))) /
                 (Q[i - 1] * (one + detail::dd_sqrt(detail::one_minus(b))));
    const dd beta = u * (dd{2.0, 0.0} - u);
    out[i] = detail::to_double(beta);
    if (!(out[i] < 1.0))
      detail::throw_invalid(where, "the rescaled beta at index " + detail::to_text(i) + " is 1 - " +
                                       detail::to_text(detail::to_double(one - beta)) +
                                       ", which rounds to 1 in double (a schedule allows 1 only at the last step): the "
                                       "betas after index " + detail::to_text(i) +
                                       " are too small for the rescaled schedule to be represented");
  }
  return out;
}

}  // namespace diffusion

/// @}
