/// @file
/// @brief Scalar Gaussian building blocks of the variational bound: the normal CDF and its
/// logarithm accurate in both tails, log bin probabilities, the Gaussian KL divergence,
/// and the continuous and discretized (DDPM Eq. 13) Gaussian decoders.
///
/// All functions take and return double. Accuracy is measured against a 60-digit mpmath
/// reference (`tools/gen_losses_reference.py`) in `tests/test_distributions.cpp`.
///
/// Extreme arguments (the losses' promise holds here too: NaN is never returned):
/// - a NaN argument throws `std::domain_error` naming the function and every argument;
/// - infinite means and log-variances ±∞ (variance 0 or ∞) give the limit of the finite cases
///   where it exists, +∞ and −∞ included (a point mass inside its bin has probability 1, a KL
///   against a point mass is +∞), and throw `std::domain_error` where it does not (∞ − ∞:
///   two infinite means, or two log-variances that are both +∞ or both −∞);
/// - no intermediate overflows or underflows: \f$(\mu_1-\mu_2)^2e^{-\ell}\f$ with μ₁ = μ₂ and
///   ℓ = −1000 is 0 (not 0·∞ = NaN), and with |μ₁ − μ₂| = 1e200, ℓ = 900 it is 1e9·e^{−900}·1e400,
///   not ∞; large arguments go through an exponent-split product (≤ 12 ulp there).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <numbers>
#include <string>
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

/// An argument for an error message: its name and value.
struct named_argument {
  std::string_view name;
  double value;
};

/// Throws std::domain_error for a NaN argument, naming the function, the argument and all arguments.
[[noreturn]] inline void throw_nan_argument(std::string_view where, std::initializer_list<named_argument> args) {
  std::string first, all;
  for (const auto& a : args) {
    if (first.empty() && std::isnan(a.value)) first = std::string(a.name);
    all += (all.empty() ? "" : ", ") + std::string(a.name) + " = " + to_text(a.value);
  }
  throw_domain(where, first + " is NaN (arguments: " + all + ")");
}

/// Throws std::domain_error naming the function and its arguments, for a result with no limit.
[[noreturn]] inline void throw_undefined(std::string_view where, const std::string& why,
                                         std::initializer_list<named_argument> args) {
  std::string all;
  for (const auto& a : args) all += (all.empty() ? "" : ", ") + std::string(a.name) + " = " + to_text(a.value);
  throw_domain(where, why + " (arguments: " + all + ")");
}

/// Checks that no argument is NaN (cheap when none is).
inline void check_not_nan(std::string_view where, std::initializer_list<named_argument> args) {
  for (const auto& a : args)
    if (std::isnan(a.value)) throw_nan_argument(where, args);
}

/// \f$m\,2^k e^y\f$ for finite m > 0, |k| ≤ 10⁴ and finite y, without an intermediate overflow or
/// underflow: e^y is split into n ≤ 8 equal factors within e^{±700}, each product renormalized
/// by frexp, and the exponent applied once at the end (a subnormal result is rounded once).
/// Relative error ≤ (2n + 2) ulp; a result beyond the double range is ±∞ or 0, as the exact one rounds.
inline double scale_exp2(double m, int k, double y) {
  int e = 0;
  double r = std::frexp(m, &e);
  long exponent = static_cast<long>(k) + e;
  const double estimate = static_cast<double>(exponent) + y * std::numbers::log2e;  // log2 of the result ± 1
  if (estimate > 1100.0) return std::numeric_limits<double>::infinity();
  if (estimate < -1200.0) return 0.0;
  int n = 1;  // |y| < (1200 + 1100 + |exponent|)·ln 2, so n ≤ 16 for |k| ≤ 10⁴
  while (std::abs(y) / n > 700.0) n *= 2;
  const double f = std::exp(y / n);
  for (int i = 0; i < n; ++i) {
    int kk = 0;
    r = std::frexp(r * f, &kk);
    exponent += kk;
  }
  return std::ldexp(r, static_cast<int>(exponent));
}

/// \f$u\,e^y\f$ for u and y not NaN, u·e^y not ∞·0, without a spurious overflow or underflow;
/// u = 0 gives 0 for every y (the limit along finite y, which is what a zero numerator means).
/// Where e^y is a normal double this is the plain product u·exp(y).
inline double mul_exp(double u, double y) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (u == 0.0) return u;
  if (std::isinf(u)) return u;  // callers exclude y = −∞
  if (y == inf) return std::copysign(inf, u);
  if (y == -inf) return std::copysign(0.0, u);
  const double e = std::exp(y);
  if (e >= std::numeric_limits<double>::min() && e <= std::numeric_limits<double>::max()) return u * e;
  int k = 0;
  const double m = std::frexp(std::abs(u), &k);
  return std::copysign(scale_exp2(m, k, y), u);
}

/// \f$\tfrac12 z^2 e^{-\ell}\f$ for z and ℓ not NaN, without a spurious overflow or underflow:
/// 0 for z = 0 whatever ℓ (no 0·∞), +∞ for z = ±∞ or ℓ = −∞ (z ≠ 0), 0 for ℓ = +∞ (z finite);
/// NaN only for z = ±∞ with ℓ = +∞, which callers exclude. Where z², e^{−ℓ} and the product are
/// normal doubles this is the plain ½·(z·z·exp(−ℓ)).
inline double half_square_exp(double z, double lv) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  constexpr double lo = std::numeric_limits<double>::min(), hi = std::numeric_limits<double>::max();
  if (z == 0.0) return 0.0;
  if (std::isinf(z)) return lv == inf ? std::numeric_limits<double>::quiet_NaN() : inf;
  if (lv == inf) return 0.0;
  if (lv == -inf) return inf;
  const double z2 = z * z, e = std::exp(-lv);
  if (z2 >= lo && z2 <= hi && e >= lo && e <= hi) {
    const double t = z2 * e;
    if (t >= 2.0 * lo && t <= hi) return 0.5 * t;
  }
  int k = 0;
  const double m = std::frexp(std::abs(z), &k);
  return scale_exp2(m * m, 2 * k - 1, -lv);
}

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

/// \f$\tfrac12(e^x - 1 - x)\f$ for x not NaN: +∞ at x = ±∞, and ½e^x without overflowing
/// expm1 for 709 < x < 710.5 (where −1 − x is below 2^-1000 of the result).
inline double half_expm1_minus_x(double x) {
  if (x > 709.0) return x == std::numeric_limits<double>::infinity() ? x : scale_exp2(0.5, 0, x);
  return 0.5 * expm1_minus_x(x);
}

/// erfc(−x/√2) = 2Φ(x) without the error of rounding the argument: a = −x/√2 is formed as
/// a double-double (√½ itself as hi + lo), and erfc(a_hi + a_lo) = erfc(a_hi) − (2/√π)e^{−a_hi²} a_lo
/// to first order. Rounding a alone would cost a relative error of 2a²u (1e-13 at x = −30).
/// Exactly 0 and 2 at x = −∞ and +∞ (the correction term was ∞·0 there).
inline double erfc_neg_x_over_sqrt2(double x) {
  if (std::isinf(x)) return x > 0.0 ? 2.0 : 0.0;
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

/// \f$\log\sum_{k=0}^{12}(-1)^k(2k-1)!!/x^{2k}\f$, the log of the asymptotic series of the Mills
/// ratio (Abramowitz & Stegun 26.2.12), exact to double precision for x ≤ −20.
inline double log_mills_series(double x) {
  const double r = 1.0 / (x * x);
  double term = 1.0, sum = 1.0;
  for (int k = 1; k <= 12; ++k) {
    term *= -static_cast<double>(2 * k - 1) * r;
    sum += term;
  }
  return std::log(sum);
}

}  // namespace detail

/// @brief The standard normal CDF \f$\Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2)\f$.
///
/// The argument x/√2 is carried in double-double, so the relative error stays ≤ 4 ulp wherever
/// Φ(x) is a normal double (x ≳ −37.5) instead of growing as x²u; underflows to subnormals and 0
/// below, as the true value does. Use @ref log_normal_cdf in the far left tail.
/// @return 0 at x = −∞, 1 at +∞.
/// @throws std::domain_error for NaN.
inline double normal_cdf(double x) {
  if (std::isnan(x)) detail::throw_nan_argument("diffusion::normal_cdf", {{"x", x}});
  return 0.5 * detail::erfc_neg_x_over_sqrt2(x);
}

/// @brief \f$\log\Phi(x)\f$, accurate for every x.
///
/// For x ≥ −20: `log(½ erfc(−x/√2))` (for x > 0 as `log1p(−½ erfc(x/√2))`, which keeps the
/// digits of the tiny upper tail). For x < −20 the asymptotic series
/// \f$\log\Phi(x) = -\tfrac{x^2}{2} - \log(-x) - \tfrac12\log 2\pi + \log\sum_k (-1)^k\frac{(2k-1)!!}{x^{2k}}\f$
/// (Abramowitz & Stegun 26.2.12), whose 12 terms are exact to double precision there.
/// Measured error: ≤ 4 ulp relative, or 2e-16 absolute where |log Φ| < 1 (tested).
/// @return −∞ at x = −∞ (and where −x²/2 < −1.8e308), 0 at +∞.
/// @throws std::domain_error for NaN.
inline double log_normal_cdf(double x) {
  if (std::isnan(x)) detail::throw_nan_argument("diffusion::log_normal_cdf", {{"x", x}});
  if (x > 0.0) return std::log1p(-0.5 * detail::erfc_neg_x_over_sqrt2(-x));
  if (x >= -20.0) return std::log(0.5 * detail::erfc_neg_x_over_sqrt2(x));
  if (x == -std::numeric_limits<double>::infinity()) return x;
  return -0.5 * x * x - std::log(-x) - detail::log_sqrt_2pi + detail::log_mills_series(x);
}

/// @brief improved DDPM's tanh approximation
/// \f$\Phi(x) \approx \tfrac12\left(1 + \tanh\!\left(\sqrt{2/\pi}\,(x + 0.044715x^3)\right)\right)\f$
/// (`approx_standard_normal_cdf`), for parity with its losses only: its absolute error is
/// up to ~3e-4, and its left tail is wrong by orders of magnitude (it underflows near x ≈ −9).
/// @return 0 at x = −∞, 1 at +∞.
/// @throws std::domain_error for NaN.
inline double normal_cdf_tanh_approx(double x) {
  if (std::isnan(x)) detail::throw_nan_argument("diffusion::normal_cdf_tanh_approx", {{"x", x}});
  constexpr double k = 0.79788456080286535587989211986876373695;  // √(2/π)
  return 0.5 * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

namespace detail {

/// log(Φ(b) − Φ(a)) for a, b both in the far lower tail (a < b ≤ −20), given the midpoint c and the
/// half-width h (b − a = 2h, b + a = 2c): log Φ(a) − log Φ(b) is formed analytically,
/// \f$2hc - \log(a/b) + \log S(a) - \log S(b)\f$ (S the Mills-ratio series), not as the difference
/// of two numbers near −c²/2; so a bin 10⁷ standard deviations out keeps its digits even where
/// a and b round to the same double.
inline double log_far_tail_bin(double a, double b, double c, double h) {
  const double delta = 2.0 * h * c - std::log1p(-2.0 * h / b) + (log_mills_series(a) - log_mills_series(b));
  return log_normal_cdf(b) + log1mexp(std::min(delta, 0.0));
}

/// log(Φ(b) − Φ(a)) for a ≤ b, neither NaN, with the midpoint c = (a + b)/2, the half-width
/// h = (b − a)/2 ≥ 0 and log_width = log(b − a), each computed by the caller as accurately as it
/// can (they need not be consistent with the rounded a and b). An empty or vanishing bin gives −∞.
inline double log_bin_probability(double a, double b, double c, double h, double log_width) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (a == -inf) return b == inf ? 0.0 : log_normal_cdf(b);  // a = b = −∞: log Φ(−∞) = −∞
  if (b == inf) return log_normal_cdf(-a);                     // a = b = +∞: −∞
  if (h * (std::abs(c) + 1.0) <= 0.01) {
    // A narrow bin: integrate the Taylor series of phi about the midpoint,
    // P = 2h phi(c) sum_k He_2k(c) h^2k / (2k+1)!, with He the probabilists' Hermite
    // polynomials; the first omitted term is below (h(|c|+1))^8/9! < 3e-22.
    const double c2 = c * c, h2 = h * h;
    const double he2 = c2 - 1.0, he4 = (c2 - 6.0) * c2 + 3.0, he6 = ((c2 - 15.0) * c2 + 45.0) * c2 - 15.0;
    const double series = 1.0 + h2 * (he2 / 6.0 + h2 * (he4 / 120.0 + h2 * he6 / 5040.0));
    return log_width - 0.5 * c2 - log_sqrt_2pi + std::log(series);
  }
  if (b <= -20.0) return log_far_tail_bin(a, b, c, h);
  if (a >= 20.0) return log_far_tail_bin(-b, -a, -c, h);
  if (a >= 0.0) {
    const double la = log_normal_cdf(-a), lb = log_normal_cdf(-b);
    return la + log1mexp(lb - la);
  }
  if (b <= 0.0) {
    const double la = log_normal_cdf(a), lb = log_normal_cdf(b);
    return lb + log1mexp(la - lb);
  }
  return std::log(0.5 * (std::erf(b * inv_sqrt2) - std::erf(a * inv_sqrt2)));
}

}  // namespace detail

/// @brief \f$\log(\Phi(b) - \Phi(a))\f$ for a < b (either may be infinite), without cancellation.
///
/// A narrow bin (h(|c|+1) ≤ 0.01 for midpoint c and half-width h) integrates the Taylor series
/// of φ about c. A bin with an infinite end is log Φ(b) or log Φ(−a). Both ends beyond 20
/// standard deviations on one side: log Φ of the inner end plus log(1 − e^{Δ}) with
/// Δ = log Φ(outer) − log Φ(inner) formed analytically from the asymptotic series (no difference
/// of two numbers near −x²/2). Otherwise, both in the upper tail (a ≥ 0):
/// \f$\log\Phi(-a) + \log(1 - e^{\log\Phi(-b) - \log\Phi(-a)})\f$; both in the lower (b ≤ 0): the
/// mirror image; straddling 0: \f$\log(\tfrac12[\operatorname{erf}(b/\sqrt2) - \operatorname{erf}(a/\sqrt2)])\f$,
/// a sum of two positive terms. Relative error of the probability ≲ 1e-15·(1 + |log Φ|/|Δ log Φ|)
/// for |a|, |b| < 20: about 1e-13 for a bin of width 2/255 at 20 standard deviations; ≲ 1e-14 beyond
/// (tested). Far ends give −∞ only where the log is below −1.8e308.
/// @throws std::domain_error if a or b is NaN; std::invalid_argument unless a < b.
inline double log_normal_bin_probability(double a, double b) {
  constexpr std::string_view where = "diffusion::log_normal_bin_probability";
  detail::check_not_nan(where, {{"a", a}, {"b", b}});
  if (!(a < b)) detail::throw_invalid(where, "a = " + detail::to_text(a) + " must be < b = " + detail::to_text(b));
  // b − a and a + b may overflow (then the bin is wide and they are not used); 2h = b − a > 0
  // even where h itself underflows, so the width enters the narrow-bin formula as log(b − a).
  return detail::log_bin_probability(a, b, 0.5 * a + 0.5 * b, 0.5 * (b - a), std::log(b - a));
}

/// @brief \f$\mathrm{KL}(\mathcal N(\mu_1, e^{\ell_1})\,\|\,\mathcal N(\mu_2, e^{\ell_2}))
/// = \tfrac12\left(-1 + \ell_2 - \ell_1 + e^{\ell_1-\ell_2} + (\mu_1-\mu_2)^2 e^{-\ell_2}\right)\f$
/// (improved DDPM `normal_kl`; log-variance form), in nats.
///
/// Evaluated as \f$\tfrac12(\operatorname{expm1}(d) - d) + \tfrac12(\mu_1-\mu_2)^2e^{-\ell_2}\f$ with
/// \f$d = \ell_1 - \ell_2\f$ and a series for small d, so a KL of 1e-18 keeps its digits
/// (the textbook form returns rounding noise of ~1e-16 there). Accuracy ≤ 4 ulp (tested); ≤ 12 ulp
/// where a term leaves the double range on the way (|ℓ₂| > 708, or (μ₁ − μ₂)² overflows or underflows).
///
/// Extremes: equal means give a mean term of 0 for every ℓ₂ (so `gaussian_kl(0, −1000, 0, −1000)`
/// is 0), ℓ₁ − ℓ₂ = ±∞ gives +∞ (a point mass against a Gaussian, or the reverse), and so does an
/// infinite mean with the other finite.
/// @throws std::domain_error for a NaN argument, for ℓ₁ = ℓ₂ = ±∞ (the variance ratio is ∞/∞ or
///         0/0) and for μ₁ = μ₂ = ±∞ (∞ − ∞): these have no limit.
inline double gaussian_kl(double mean1, double log_var1, double mean2, double log_var2) {
  constexpr std::string_view where = "diffusion::gaussian_kl";
  const auto args = {detail::named_argument{"mean1", mean1}, detail::named_argument{"log_var1", log_var1},
                     detail::named_argument{"mean2", mean2}, detail::named_argument{"log_var2", log_var2}};
  detail::check_not_nan(where, args);
  if (log_var1 == log_var2 && std::isinf(log_var1))
    detail::throw_undefined(where, std::string("log_var1 = log_var2 = ") + (log_var1 > 0 ? "inf" : "-inf") +
                                       ": the variance ratio is " + (log_var1 > 0 ? "inf/inf" : "0/0") + ", undefined",
                            args);
  const double dm = mean1 - mean2;
  if (std::isnan(dm)) detail::throw_undefined(where, "mean1 - mean2 is inf - inf, undefined", args);
  const double d = log_var1 - log_var2;
  // d overflows only for finite log-variances of opposite signs: then ½(e^d − 1 − d) is +∞ for
  // d > 0 and ½(ℓ₂ − ℓ₁) − ½ (to 2^-1000 relative) for d < 0.
  const double variance_term = std::isinf(d) && std::isfinite(log_var1) && std::isfinite(log_var2) && d < 0.0
                                   ? 0.5 * log_var2 - 0.5 * log_var1 - 0.5
                                   : detail::half_expm1_minus_x(d);
  if (variance_term == std::numeric_limits<double>::infinity()) return variance_term;  // the mean term is ≥ 0
  return variance_term + detail::half_square_exp(dm, log_var2);
}

/// @brief \f$\mathrm{KL}(\mathcal N(\mu, e^{\ell})\,\|\,\mathcal N(0, 1)) = \tfrac12(e^\ell - 1 - \ell + \mu^2)\f$
/// (the prior term L_T of DDPM Eq. 5 per element), in nats. Accuracy ≤ 4 ulp (tested).
/// +∞ for ℓ = ±∞ or μ = ±∞, and finite wherever the exact value is (μ up to 1.9e154, ℓ up to 710.4).
/// @throws std::domain_error for a NaN argument.
inline double standard_normal_kl(double mean, double log_var) {
  detail::check_not_nan("diffusion::standard_normal_kl", {{"mean", mean}, {"log_var", log_var}});
  return detail::half_expm1_minus_x(log_var) + (0.5 * mean) * mean;
}

/// @brief \f$\log\mathcal N(x;\mu, e^{\ell}) = -\tfrac12(\log 2\pi + \ell + (x-\mu)^2e^{-\ell})\f$:
/// the continuous Gaussian decoder for continuous data, in nats.
///
/// Extremes: x = μ gives \f$-\tfrac12(\log 2\pi + \ell)\f$ for every finite ℓ (499.08 at ℓ = −1000,
/// not 0·∞) and +∞ at ℓ = −∞ (a point mass at x); x ≠ μ at ℓ = −∞, any x at ℓ = +∞ and an infinite
/// x − μ give −∞. ≤ 4 ulp, ≤ 12 ulp where (x − μ)² or e^{−ℓ} leaves the double range.
/// @throws std::domain_error for a NaN argument, and for x = μ = ±∞ (x − μ is ∞ − ∞).
inline double gaussian_log_likelihood(double x, double mean, double log_var) {
  constexpr std::string_view where = "diffusion::gaussian_log_likelihood";
  const auto args = {detail::named_argument{"x", x}, detail::named_argument{"mean", mean},
                     detail::named_argument{"log_var", log_var}};
  detail::check_not_nan(where, args);
  const double z = x - mean;
  if (std::isnan(z)) detail::throw_undefined(where, "x - mean is inf - inf, undefined", args);
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (log_var == inf) return -inf;
  if (log_var == -inf) return z == 0.0 ? inf : -inf;
  return -detail::log_sqrt_2pi - 0.5 * log_var - detail::half_square_exp(z, log_var);
}

/// @brief How the discretized decoder evaluates the normal CDF.
enum class cdf_method {
  exact,        ///< log_normal_bin_probability(): accurate everywhere (default).
  tanh_approx,  ///< improved DDPM's approximation, bin edges and clamp of probabilities at 1e-12, for parity only.
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
/// Which bin is open differs between the modes, and off the grid only:
/// - `cdf_method::exact`: the lowest bin is x ≤ −1 + h/2 and the highest x ≥ 1 − h/2 (the grid
///   cell nearest to ±1, for every bin count);
/// - `cdf_method::tanh_approx`: improved DDPM's `x < −0.999` and `x > 0.999` exactly, whatever
///   the bin count. For 256 bins both rules agree on the grid, but not off it: x = 0.999 is in the
///   highest bin for `exact` (log(1 − Φ(x − h))) and in an interior bin for `tanh_approx`
///   (log(Φ(x + h) − Φ(x − h)), much smaller).
///
/// With `cdf_method::exact` there is no clamp: a far-off mean gives the true, very negative
/// value, a bin far out in the tail keeps its digits (the bin is passed to the CDF as midpoint
/// and half-width), and a log-variance of ±∞ gives the limit: −∞ for an interior bin at ℓ = +∞
/// and log ½ for an open one; at ℓ = −∞ (a point mass at μ) 0 inside the bin, log ½ on its edge,
/// −∞ outside. In tanh_approx mode the arguments are computed as improved DDPM does,
/// `(x − μ ± h)·e^{−ℓ/2}`, then its clamp applies.
/// @param[in] x data value in [−1, 1] (on the grid; off-grid values use the bin centred on x).
/// @param[in] mean decoder mean μ (±∞ allowed).
/// @param[in] log_var decoder log-variance log σ² (improved DDPM passes ½ of it as `log_scales`; ±∞ allowed).
/// @param[in] opt bin count and CDF method.
/// @throws std::invalid_argument if x is outside [−1, 1], bins < 2 or the method is unknown;
///         std::domain_error if an argument is NaN, or μ = ±∞ with ℓ = +∞ ((x − μ)/σ is ∞/∞).
inline double discretized_gaussian_log_likelihood(double x, double mean, double log_var,
                                                  const discretized_decoder& opt = {}) {
  constexpr std::string_view where = "diffusion::discretized_gaussian_log_likelihood";
  const auto args = {detail::named_argument{"x", x}, detail::named_argument{"mean", mean},
                     detail::named_argument{"log_var", log_var}};
  detail::check_not_nan(where, args);
  if (opt.bins < 2) detail::throw_invalid(where, "bins = " + detail::to_text(opt.bins) + " must be >= 2");
  if (!(x >= -1.0 && x <= 1.0))
    detail::throw_invalid(where, "x = " + detail::to_text(x) + " is outside the allowed range [-1, 1]");
  if (opt.cdf != cdf_method::exact && opt.cdf != cdf_method::tanh_approx)
    detail::throw_invalid(where, "cdf = " + detail::to_text(static_cast<int>(opt.cdf)) +
                                     " is not one of cdf_method::exact, cdf_method::tanh_approx");
  constexpr double inf = std::numeric_limits<double>::infinity();
  const double h = 1.0 / static_cast<double>(opt.bins - 1);
  const double centered = x - mean;  // ±∞ for an infinite mean
  if (std::isinf(centered) && log_var == inf)
    detail::throw_undefined(where, "(x - mean)/sigma is inf/inf, undefined", args);
  // u/σ = u·e^{−ℓ/2}, without a spurious overflow or underflow; 0 for u = 0 at every ℓ.
  const double neg_half_lv = -0.5 * log_var;
  const auto scaled = [neg_half_lv](double u) { return detail::mul_exp(u, neg_half_lv); };
  if (opt.cdf == cdf_method::exact) {
    // Edges as (x ± h) − μ: x ± h is exact or nearly, so each edge is rounded about once.
    const double lower = (x - h) - mean, upper = (x + h) - mean;
    if (x <= -1.0 + 0.5 * h) return log_normal_cdf(scaled(upper));
    if (x >= 1.0 - 0.5 * h) return log_normal_cdf(-scaled(lower));
    return detail::log_bin_probability(scaled(lower), scaled(upper), scaled(centered), scaled(h),
                                       std::log(2.0 * h) + neg_half_lv);
  }
  // improved DDPM `discretized_gaussian_log_likelihood`, operation for operation.
  const double cdf_plus = normal_cdf_tanh_approx(scaled(centered + h));
  const double cdf_min = normal_cdf_tanh_approx(scaled(centered - h));
  const double log_cdf_plus = std::log(std::max(cdf_plus, 1e-12));
  const double log_one_minus_cdf_min = std::log(std::max(1.0 - cdf_min, 1e-12));
  if (x < -0.999) return log_cdf_plus;
  if (x > 0.999) return log_one_minus_cdf_min;
  return std::log(std::max(cdf_plus - cdf_min, 1e-12));
}

}  // namespace diffusion

/// @}
