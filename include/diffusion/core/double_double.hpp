/// @file
/// @brief Double-double arithmetic (an unevaluated sum hi + lo, |lo| ≤ ulp(hi)/2) for the
/// schedule tables: internal (namespace `detail`).
///
/// Error-free transformations after Knuth (two_sum) and Dekker / Ogita–Rump–Oishi (two_prod
/// with FMA); multiplication and division as in Bailey's QD library (Hida, Li, Bailey 2001).
/// Relative error of each operation ~1e-32, so a running product over 4000 factors stays
/// exact to well below one ulp of double. Valid while no part underflows: |hi| ≥ 2^-960
/// keeps lo a normal number (the schedule refuses β below that bound for this reason).
#pragma once

#include <cmath>

namespace diffusion::detail {

/// A double-double value hi + lo. Arithmetic through the operators below (found by ADL).
struct dd {
  double hi = 0.0;  ///< The leading double.
  double lo = 0.0;  ///< The trailing correction, |lo| ≤ ulp(hi)/2.
};

/// s + e = a + b exactly.
inline dd two_sum(double a, double b) noexcept {
  const double s = a + b;
  const double bb = s - a;
  const double e = (a - (s - bb)) + (b - bb);
  return {s, e};
}
/// hi + lo = a with hi holding the top 26 bits (Veltkamp's split). Exact for every finite a:
/// above 2^995, where (2^27 + 1)·a would overflow, a is split scaled by 2^-28 (exact).
inline dd veltkamp_split(double a) noexcept {
  constexpr double big = 0x1p995;
  const bool scaled = a > big || a < -big;
  const double as = scaled ? a * 0x1p-28 : a;
  const double c = 134217729.0 * as;  // 2^27 + 1
  const double hi = c - (c - as);
  if (scaled) return {hi * 0x1p28, (as - hi) * 0x1p28};
  return {hi, as - hi};
}
/// p + e = a * b exactly: the fma instruction where the target has one; Dekker's product
/// otherwise, because a portable build's std::fma is a slow software routine (exact when p is
/// finite and the partial products do not underflow, which covers every schedule quantity).
inline dd two_prod(double a, double b) noexcept {
  const double p = a * b;
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return {p, std::fma(a, b, -p)};
#else
  const dd x = veltkamp_split(a), y = veltkamp_split(b);
  return {p, ((x.hi * y.hi - p) + x.hi * y.lo + x.lo * y.hi) + x.lo * y.lo};
#endif
}
/// s + e = a + b for |a| ≥ |b|.
inline dd quick_two_sum(double a, double b) noexcept {
  const double s = a + b;
  return {s, b - (s - a)};
}
/// Sum.
inline dd operator+(dd a, dd b) noexcept {
  dd s = two_sum(a.hi, b.hi);
  const dd t = two_sum(a.lo, b.lo);
  s.lo += t.hi;
  s = quick_two_sum(s.hi, s.lo);
  s.lo += t.lo;
  return quick_two_sum(s.hi, s.lo);
}
/// Negation.
inline dd operator-(dd a) noexcept { return {-a.hi, -a.lo}; }
/// Difference.
inline dd operator-(dd a, dd b) noexcept { return a + (-b); }
/// Product.
inline dd operator*(dd a, dd b) noexcept {
  dd p = two_prod(a.hi, b.hi);
  p.lo += a.hi * b.lo + a.lo * b.hi;
  return quick_two_sum(p.hi, p.lo);
}
/// Quotient (three correction steps).
inline dd operator/(dd a, dd b) noexcept {
  const double q1 = a.hi / b.hi;
  dd r = a - b * dd{q1, 0.0};
  const double q2 = r.hi / b.hi;
  r = r - b * dd{q2, 0.0};
  const double q3 = r.hi / b.hi;
  return quick_two_sum(q1, q2) + dd{q3, 0.0};
}
/// Square root by one Newton step on the double square root.
inline dd dd_sqrt(dd a) noexcept {
  if (a.hi <= 0.0) return {std::sqrt(a.hi), 0.0};
  const double x = std::sqrt(a.hi);
  const dd r = a - two_prod(x, x);
  return quick_two_sum(x, r.hi / (2.0 * x));
}
/// Natural logarithm: log(hi) + lo/hi (the first-order correction; error ≲ 2u).
inline double dd_log(dd a) noexcept { return std::log(a.hi) + a.lo / a.hi; }
/// 1 − b as a double-double, exact.
inline dd one_minus(double b) noexcept { return two_sum(1.0, -b); }
/// The double nearest hi + lo.
inline double to_double(dd a) noexcept { return a.hi + a.lo; }

/// Natural logarithm of m·2^e (m > 0 a double-double, e any int): log m + e·ln 2, with e·ln 2
/// formed in double-double (ln 2 = ln2_hi + ln2_lo, e·ln2_hi exact by two_prod) and the sum
/// rounded once: the error before that rounding is ≲ 2u·|log m| + 2^-100·|e|, so the result is
/// within one ulp, and two representations of nearly equal values (m·2^e and 2m·2^(e−1)) round
/// to different doubles only when the exact value lies that close to a rounding boundary. (A
/// double product e·ln 2 alone errs by up to half an ulp of e·ln 2, an ulp of the result.)
inline double dd_log_scaled(dd m, int e) noexcept {
  constexpr double ln2_hi = 0x1.62e42fefa39efp-1;   // ln 2 rounded to double
  constexpr double ln2_lo = 0x1.abc9e3b39803fp-56;  // ln 2 − ln2_hi, rounded (mpmath)
  const double k = static_cast<double>(e);          // exact: |e| < 2^31
  const dd scaled = two_prod(k, ln2_hi) + dd{k * ln2_lo, 0.0};
  return to_double(scaled + dd{std::log(m.hi), 0.0} + dd{m.lo / m.hi, 0.0});
}
}  // namespace diffusion::detail
