/// @file
/// @brief The regularized incomplete beta function \f$I_x(a, b)\f$ and its inverse (the quantile of a
/// Beta(a, b) distribution), for the beta σ lists of sigmas.hpp: internal (namespace `detail`).
///
/// Rules and bounds, stated once:
/// - \f$I_x(a,b) = \frac{x^a (1-x)^b}{a B(a,b)}\,\mathrm{CF}(a, b, x)\f$ with the continued fraction of
///   Numerical Recipes §6.4 (DiDonato & Morris 1992, Eq. 2.4 of "Algorithm 708"), evaluated by the modified
///   Lentz method; for x above the mean (a + 1)/(a + b + 2) the complement is evaluated instead, through
///   \f$1 - I_x(a,b) = I_{1-x}(b,a)\f$, so the smaller tail is never a difference with 1.
/// - The quantile solves the smaller tail's equation (\f$I_x = p\f$ if p ≤ q, else \f$1 - I_x = q\f$) for the
///   smaller of x and 1 − x (the side of 1/2 the root lies on, found from \f$I_{1/2}\f$), by Halley steps kept
///   inside a bracket that every evaluation shrinks, with bisection when a step leaves it.
/// - Exact cases: p = 0 → 0, q = 0 → 1; a = b: \f$I_{1/2} = 1/2\f$ exactly, so the root's side is exact,
///   ppf(1/2) = 1/2, and ppf for (q, p) is 1 − ppf for (p, q) bit for bit (both solve the same equation).
/// - Domain of the stated accuracy: a, b ∈ [0.1, 10] and results x ≥ 1e-290 (below, x^a may be subnormal).
///   The error of x is that of the computed tail divided by the elasticity x·I'(x)/I(x) (which tends to a
///   at x → 0): the tested budget and the measured error are in docs/accuracy.md.
#pragma once

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "../core/double_double.hpp"

namespace diffusion::detail {

/// 1/B(a, b) = Γ(a + b)/(Γ(a)Γ(b)), with the rounding e of s = a + b corrected to first order:
/// Γ(s + e) = Γ(s)(1 + ψ(s)e), ψ(s) ≈ log s − 1/(2s) − 1/(12s²) for s ≥ 2 (below, |sψ(s)| ≤ 1.1 and the
/// correction is < 0.6u, not applied). Finite for a, b ∈ (0, 85].
inline double inverse_beta_function(double a, double b) noexcept {
  const dd s = two_sum(a, b);
  double g = std::tgamma(s.hi);
  if (s.hi >= 2.0) {
    const double psi = std::log(s.hi) - 0.5 / s.hi - 1.0 / (12.0 * s.hi * s.hi);
    g *= 1.0 + psi * s.lo;
  }
  return g / (std::tgamma(a) * std::tgamma(b));
}

/// The continued fraction CF(a, b, x) of I_x(a, b) = x^a(1 − x)^b CF/(a B(a, b)) (modified Lentz; converges
/// fast for x < (a + 1)/(a + b + 2)). Stops when a factor is within 2⁻⁵⁴ of 1, or after 2000 terms.
inline double beta_continued_fraction(double a, double b, double x) noexcept {
  constexpr double tiny = 1e-300, eps = 0x1p-54;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0, d = 1.0 - qab * x / qap;
  if (std::fabs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 2000; ++m) {
    const double dm = m, m2 = 2.0 * dm;
    double aa = dm * (b - dm) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + dm) * (qab + dm) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) <= eps) break;
  }
  return h;
}

/// Both tails of the Beta(a, b) distribution at x (exact; y = 1 − x is formed exactly as a double-double):
/// {I_x(a, b), 1 − I_x(a, b)}, the one evaluated by the continued fraction accurate to its own size, the
/// other 1 minus it. `rb` is inverse_beta_function(a, b). The factor y^b is pow(ŷ, b)(1 + b·δ/ŷ) for
/// y = ŷ + δ, so the rounding of 1 − x (which alone would cost b·u/2) does not enter.
inline std::pair<double, double> beta_tails(double a, double b, double x, double rb) noexcept {
  if (x <= 0.0) return {0.0, 1.0};
  if (x >= 1.0) return {1.0, 0.0};
  const dd y = one_minus(x);
  double front = std::pow(x, a) * (std::pow(y.hi, b) * (1.0 + b * y.lo / y.hi)) * rb;
  if (!(front >= std::numeric_limits<double>::min()))  // x^a or y^b under the normal range: log form
    front = std::exp(a * std::log(x) + b * std::log1p(-x) + std::log(rb));
  if (x * (a + b + 2.0) < a + 1.0) {
    const double lower = front * beta_continued_fraction(a, b, x) / a;
    return {lower, 1.0 - lower};
  }
  const double upper = front * beta_continued_fraction(b, a, y.hi) / b;
  return {1.0 - upper, upper};
}

/// x ∈ [0, 1/2] with I_x(a, b) = p (and 1 − I_x = q), the root known to lie in [0, 1/2]; solves the
/// smaller tail's equation by safeguarded Halley steps.
inline double beta_quantile_lower_half(double a, double b, double p, double q) noexcept {
  const double rb = inverse_beta_function(a, b);
  const bool use_lower = p <= q;
  const auto f = [&](double x) {
    const auto [lower, upper] = beta_tails(a, b, x, rb);
    return use_lower ? lower - p : q - upper;
  };
  double lo = 0.0, hi = 0.5;
  // Start: the small-x asymptote I ≈ x^a/(a B), inside the bracket, else its middle.
  double x = std::pow(p * a / rb, 1.0 / a);
  if (!(x > lo && x < hi)) x = 0.25;
  for (int it = 0; it < 4000; ++it) {
    const double fx = f(x);
    if (fx == 0.0) return x;
    (fx < 0.0 ? lo : hi) = x;
    const double y = 1.0 - x;
    const double pdf = std::exp((a - 1.0) * std::log(x) + (b - 1.0) * std::log1p(-x)) * rb;
    double step = fx / pdf;
    const double curvature = (a - 1.0) / x - (b - 1.0) / y;  // f''/f'
    const double halley = 1.0 - 0.5 * step * curvature;
    if (halley > 0.5 && halley < 2.0) step /= halley;
    double next = x - step;
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    if (next == x || std::fabs(next - x) <= 0x1p-56 * x) return next;
    if (std::nextafter(lo, hi) >= hi) return std::fabs(f(lo)) <= std::fabs(f(hi)) ? lo : hi;
    x = next;
  }
  return x;
}

/// The quantile of Beta(a, b): x ∈ [0, 1] with \f$I_x(a, b) = p\f$, given p and its complement q = 1 − p
/// (pass both when the caller knows them more accurately than 1 − p: the smaller one is the equation
/// solved). Requires a, b > 0 finite, p, q ∈ [0, 1], p + q = 1 to rounding (asserted by callers).
inline double beta_quantile(double a, double b, double p, double q) noexcept {
  if (p <= 0.0) return 0.0;
  if (q <= 0.0) return 1.0;
  double half_lower = 0.5, half_upper = 0.5;  // I_{1/2}(a, a) = 1/2 exactly
  if (a != b) std::tie(half_lower, half_upper) = beta_tails(a, b, 0.5, inverse_beta_function(a, b));
  if (a == b && p == q) return 0.5;
  const bool root_in_lower_half = p <= q ? p <= half_lower : q >= half_upper;
  if (root_in_lower_half) return beta_quantile_lower_half(a, b, p, q);
  return 1.0 - beta_quantile_lower_half(b, a, q, p);
}

/// beta_quantile(a, b, p, 1 − p) (exact for p ≥ 1/2; for p < 1/2 the equation solved is p's).
inline double beta_quantile(double a, double b, double p) noexcept { return beta_quantile(a, b, p, 1.0 - p); }

}  // namespace diffusion::detail
