/// @file
/// @brief Scalar Gaussian building blocks of the variational bound: the normal CDF and its
/// logarithm accurate in both tails, log bin probabilities, the Gaussian KL divergence,
/// and the continuous and discretized (DDPM Eq. 13) Gaussian decoders.
///
/// All functions take and return double. Accuracy is measured against a 60-digit mpmath
/// reference (`tools/gen_losses_reference.py`) in `tests/test_distributions.cpp`.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"

/// @defgroup distributions Gaussian distributions
/// @brief Φ and log Φ, log(Φ(b) − Φ(a)), Gaussian KL, continuous and discretized decoders (DDPM Eq. 13).
/// @{

namespace diffusion {

namespace detail {

inline constexpr double inv_sqrt2 = 0.70710678118654752440084436210484903928;
inline constexpr double log_sqrt_2pi = 0.91893853320467274178032973640561763986;  // ½ log 2π

/// e^x − 1 − x without cancellation: a Taylor series for |x| < 0.5 (relative error ≤ 2 ulp),
/// `expm1(x) − x` elsewhere (where the two terms do not cancel by more than a factor 4).
inline double expm1_minus_x(double x) {
  if (std::abs(x) < 0.5) {
    // x²/2! + x³/3! + …; 20 terms leave a remainder below 0.5^22/22! < 1e-27.
    double term = x * x / 2.0, sum = 0.0;
    for (int k = 3; k <= 22; ++k) {
      sum += term;
      term *= x / k;
    }
    return sum + term;
  }
  return std::expm1(x) - x;
}

/// erfc(−x/√2) = 2Φ(x) without the error of rounding the argument: a = −x/√2 is formed as
/// a double-double (√½ itself as hi + lo), and erfc(a_hi + a_lo) = erfc(a_hi) − (2/√π)e^{−a_hi²} a_lo
/// to first order. Rounding a alone would cost a relative error of 2a²u (1e-13 at x = −30).
inline double erfc_neg_x_over_sqrt2(double x) {
  constexpr double c_hi = 0.70710678118654757, c_lo = -4.8336466567264567e-17;  // √½ = c_hi + c_lo
  const double a_hi = -x * c_hi;
  const double a_lo = std::fma(-x, c_hi, -a_hi) - x * c_lo;
  constexpr double two_over_sqrt_pi = 1.1283791670955125739;
  return std::erfc(a_hi) - two_over_sqrt_pi * std::exp(-a_hi * a_hi) * a_lo;
}

/// log(1 − e^x) for x ≤ 0 (Mächler 2012, "Accurately computing log(1 − exp(−|a|))").
inline double log1mexp(double x) {
  return x > -std::numbers::ln2 ? std::log(-std::expm1(x)) : std::log1p(-std::exp(x));
}

}  // namespace detail

/// @brief The standard normal CDF \f$\Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2)\f$.
///
/// The argument x/√2 is carried in double-double, so the relative error stays ≤ 4 ulp wherever
/// Φ(x) is a normal double (x ≳ −37.5) instead of growing as x²u; underflows to subnormals and 0
/// below, as the true value does. Use @ref log_normal_cdf in the far left tail.
inline double normal_cdf(double x) { return 0.5 * detail::erfc_neg_x_over_sqrt2(x); }

/// @brief \f$\log\Phi(x)\f$, accurate for every finite x.
///
/// For x ≥ −20: `log(½ erfc(−x/√2))` (for x > 0 as `log1p(−½ erfc(x/√2))`, which keeps the
/// digits of the tiny upper tail). For x < −20 the asymptotic series
/// \f$\log\Phi(x) = -\tfrac{x^2}{2} - \log(-x) - \tfrac12\log 2\pi + \log\sum_k (-1)^k\frac{(2k-1)!!}{x^{2k}}\f$
/// (Abramowitz & Stegun 26.2.12), whose 12 terms are exact to double precision there.
/// Measured error: ≤ 4 ulp relative, or 2e-16 absolute where |log Φ| < 1 (tested).
/// @return −∞ at x = −∞, 0 at +∞, NaN for NaN.
inline double log_normal_cdf(double x) {
  if (std::isnan(x)) return x;
  if (x > 0.0) return std::log1p(-0.5 * detail::erfc_neg_x_over_sqrt2(-x));
  if (x >= -20.0) return std::log(0.5 * detail::erfc_neg_x_over_sqrt2(x));
  if (x == -std::numeric_limits<double>::infinity()) return x;
  const double r = 1.0 / (x * x);
  double term = 1.0, sum = 1.0;
  for (int k = 1; k <= 12; ++k) {
    term *= -static_cast<double>(2 * k - 1) * r;
    sum += term;
  }
  return -0.5 * x * x - std::log(-x) - detail::log_sqrt_2pi + std::log(sum);
}

/// @brief improved DDPM's tanh approximation
/// \f$\Phi(x) \approx \tfrac12\left(1 + \tanh\!\left(\sqrt{2/\pi}\,(x + 0.044715x^3)\right)\right)\f$
/// (`approx_standard_normal_cdf`), for parity with its losses only: its absolute error is
/// up to ~3e-4, and its left tail is wrong by orders of magnitude (it underflows near x ≈ −9).
inline double normal_cdf_tanh_approx(double x) {
  constexpr double k = 0.79788456080286535587989211986876373695;  // √(2/π)
  return 0.5 * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

/// @brief \f$\log(\Phi(b) - \Phi(a))\f$ for a < b (either may be infinite), without cancellation.
///
/// A narrow bin (h(|c|+1) ≤ 0.01 for midpoint c and half-width h) integrates the Taylor series
/// of φ about c. Otherwise, both in the upper tail (a ≥ 0): \f$\log\Phi(-a) + \log(1 - e^{\log\Phi(-b) - \log\Phi(-a)})\f$;
/// both in the lower (b ≤ 0): the mirror image; straddling 0:
/// \f$\log(\tfrac12[\operatorname{erf}(b/\sqrt2) - \operatorname{erf}(a/\sqrt2)])\f$, a sum of two positive
/// terms. Relative error of the probability ≲ 1e-15·(1 + |log Φ|/|Δ log Φ|): about 1e-13 for a
/// bin of width 2/255 at 50 standard deviations (tested).
/// @throws std::invalid_argument unless a < b (NaN included).
inline double log_normal_bin_probability(double a, double b) {
  if (!(a < b))
    detail::throw_invalid("diffusion::log_normal_bin_probability",
                          "a = " + detail::to_text(a) + " must be < b = " + detail::to_text(b));
  const double c = 0.5 * (a + b), h = 0.5 * (b - a);
  if (h * (std::abs(c) + 1.0) <= 0.01) {
    // A narrow bin: integrate the Taylor series of phi about the midpoint,
    // P = 2h phi(c) sum_k He_2k(c) h^2k / (2k+1)!, with He the probabilists' Hermite
    // polynomials; the first omitted term is below (h(|c|+1))^8/9! < 3e-22.
    const double c2 = c * c, h2 = h * h;
    const double he2 = c2 - 1.0, he4 = (c2 - 6.0) * c2 + 3.0, he6 = ((c2 - 15.0) * c2 + 45.0) * c2 - 15.0;
    const double series = 1.0 + h2 * (he2 / 6.0 + h2 * (he4 / 120.0 + h2 * he6 / 5040.0));
    return std::log(2.0 * h) - 0.5 * c2 - detail::log_sqrt_2pi + std::log(series);
  }
  if (a >= 0.0) {
    const double la = log_normal_cdf(-a), lb = log_normal_cdf(-b);
    return la + detail::log1mexp(lb - la);
  }
  if (b <= 0.0) {
    const double la = log_normal_cdf(a), lb = log_normal_cdf(b);
    return lb + detail::log1mexp(la - lb);
  }
  return std::log(0.5 * (std::erf(b * detail::inv_sqrt2) - std::erf(a * detail::inv_sqrt2)));
}

/// @brief \f$\mathrm{KL}(\mathcal N(\mu_1, e^{\ell_1})\,\|\,\mathcal N(\mu_2, e^{\ell_2}))
/// = \tfrac12\left(-1 + \ell_2 - \ell_1 + e^{\ell_1-\ell_2} + (\mu_1-\mu_2)^2 e^{-\ell_2}\right)\f$
/// (improved DDPM `normal_kl`; log-variance form), in nats.
///
/// Evaluated as \f$\tfrac12(\operatorname{expm1}(d) - d + (\mu_1-\mu_2)^2e^{-\ell_2})\f$ with
/// \f$d = \ell_1 - \ell_2\f$ and a series for small d, so a KL of 1e-18 keeps its digits
/// (the textbook form returns rounding noise of ~1e-16 there). Accuracy ≤ 4 ulp (tested).
inline double gaussian_kl(double mean1, double log_var1, double mean2, double log_var2) {
  const double d = log_var1 - log_var2, dm = mean1 - mean2;
  return 0.5 * (detail::expm1_minus_x(d) + dm * dm * std::exp(-log_var2));
}

/// @brief \f$\mathrm{KL}(\mathcal N(\mu, e^{\ell})\,\|\,\mathcal N(0, 1)) = \tfrac12(e^\ell - 1 - \ell + \mu^2)\f$
/// (the prior term L_T of DDPM Eq. 5 per element), in nats. Accuracy ≤ 4 ulp (tested).
inline double standard_normal_kl(double mean, double log_var) {
  return 0.5 * (detail::expm1_minus_x(log_var) + mean * mean);
}

/// @brief \f$\log\mathcal N(x;\mu, e^{\ell}) = -\tfrac12(\log 2\pi + \ell + (x-\mu)^2e^{-\ell})\f$:
/// the continuous Gaussian decoder for continuous data, in nats.
inline double gaussian_log_likelihood(double x, double mean, double log_var) {
  const double z = x - mean;
  return -detail::log_sqrt_2pi - 0.5 * log_var - 0.5 * z * z * std::exp(-log_var);
}

/// @brief How the discretized decoder evaluates the normal CDF.
enum class cdf_method {
  exact,        ///< log_normal_bin_probability(): accurate everywhere (default).
  tanh_approx,  ///< improved DDPM's approximation and its clamp of probabilities at 1e-12, for parity only.
};

/// @brief Options of the discretized Gaussian decoder of DDPM Eq. 13.
struct discretized_decoder {
  /// Number of levels of the data grid on [−1, 1] (256 for 8-bit images); at least 2.
  std::size_t bins = 256;
  /// How Φ is computed.
  cdf_method cdf = cdf_method::exact;
};

/// @brief \f$\log p(x_0 = x \mid \mu, \sigma^2)\f$ under the discretized decoder of DDPM Eq. 13:
/// the Gaussian mass of the bin \f$[x - h, x + h]\f$, \f$h = 1/(\text{bins}-1)\f$, with the lowest
/// bin open to −∞ and the highest to +∞, in nats.
///
/// A value is in the lowest bin when x ≤ −1 + h/2 and in the highest when x ≥ 1 − h/2
/// (improved DDPM tests x < −0.999 and x > 0.999, which agrees for 256 bins). With
/// `cdf_method::exact` there is no clamp: a far-off mean gives the true, very negative value.
/// @param[in] x data value in [−1, 1] (on the grid; off-grid values use the bin centred on x).
/// @param[in] mean decoder mean μ.
/// @param[in] log_var decoder log-variance log σ² (improved DDPM passes ½ of it as `log_scales`).
/// @param[in] opt bin count and CDF method.
/// @throws std::invalid_argument if x is outside [−1, 1] or NaN, or bins < 2.
inline double discretized_gaussian_log_likelihood(double x, double mean, double log_var,
                                                  const discretized_decoder& opt = {}) {
  constexpr std::string_view where = "diffusion::discretized_gaussian_log_likelihood";
  if (opt.bins < 2) detail::throw_invalid(where, "bins = " + detail::to_text(opt.bins) + " must be >= 2");
  if (!(x >= -1.0 && x <= 1.0))
    detail::throw_invalid(where, "x = " + detail::to_text(x) + " is outside the allowed range [-1, 1]");
  const double h = 1.0 / static_cast<double>(opt.bins - 1);
  const double inv_std = std::exp(-0.5 * log_var);
  const bool lowest = x <= -1.0 + 0.5 * h, highest = x >= 1.0 - 0.5 * h;
  constexpr double inf = std::numeric_limits<double>::infinity();
  const double lo = lowest ? -inf : (x - h - mean) * inv_std;
  const double hi = highest ? inf : (x + h - mean) * inv_std;
  if (opt.cdf == cdf_method::exact) return log_normal_bin_probability(lo, hi);
  // improved DDPM `discretized_gaussian_log_likelihood`, operation for operation.
  const double cdf_plus = normal_cdf_tanh_approx(hi), cdf_min = normal_cdf_tanh_approx(lo);
  const double log_cdf_plus = std::log(std::max(cdf_plus, 1e-12));
  const double log_one_minus_cdf_min = std::log(std::max(1.0 - cdf_min, 1e-12));
  if (lowest) return log_cdf_plus;
  if (highest) return log_one_minus_cdf_min;
  return std::log(std::max(cdf_plus - cdf_min, 1e-12));
}

}  // namespace diffusion

/// @}
