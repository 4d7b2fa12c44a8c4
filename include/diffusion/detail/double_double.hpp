// Double-double arithmetic (an unevaluated sum hi + lo, |lo| <= ulp(hi)/2) for the
// schedule tables. Error-free transformations after Knuth (two_sum) and Dekker /
// Ogita–Rump–Oishi (two_prod with FMA); multiplication and division as in
// Bailey's QD library papers (Hida, Li, Bailey 2001). Relative error of each
// operation ~1e-32, so a running product over 4000 factors stays exact to well
// below one ulp of double.
#pragma once

#include <cmath>

namespace diffusion::detail {

struct dd {
  double hi = 0.0;
  double lo = 0.0;
};

/// s + e = a + b exactly.
inline dd two_sum(double a, double b) {
  double s = a + b;
  double bb = s - a;
  double e = (a - (s - bb)) + (b - bb);
  return {s, e};
}
/// hi + lo = a with hi holding the top 26 bits (Veltkamp's split; exact for |a| < 2^996).
inline dd split(double a) {
  const double c = 134217729.0 * a;  // 2^27 + 1
  const double hi = c - (c - a);
  return {hi, a - hi};
}
/// p + e = a * b exactly: the fma instruction where the target has one; Dekker's product
/// otherwise, because a portable build's std::fma is a slow software routine (exact for
/// |a|, |b| < 2^996 and no underflow, which covers every schedule quantity).
inline dd two_prod(double a, double b) {
  double p = a * b;
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return {p, std::fma(a, b, -p)};
#else
  const dd x = split(a), y = split(b);
  return {p, ((x.hi * y.hi - p) + x.hi * y.lo + x.lo * y.hi) + x.lo * y.lo};
#endif
}
inline dd quick_two_sum(double a, double b) {
  double s = a + b;
  return {s, b - (s - a)};
}
inline dd add(dd a, dd b) {
  dd s = two_sum(a.hi, b.hi);
  dd t = two_sum(a.lo, b.lo);
  s.lo += t.hi;
  s = quick_two_sum(s.hi, s.lo);
  s.lo += t.lo;
  return quick_two_sum(s.hi, s.lo);
}
inline dd neg(dd a) { return {-a.hi, -a.lo}; }
inline dd sub(dd a, dd b) { return add(a, neg(b)); }
inline dd mul(dd a, dd b) {
  dd p = two_prod(a.hi, b.hi);
  p.lo += a.hi * b.lo + a.lo * b.hi;
  return quick_two_sum(p.hi, p.lo);
}
inline dd div(dd a, dd b) {
  double q1 = a.hi / b.hi;
  dd r = sub(a, mul(b, dd{q1, 0.0}));
  double q2 = r.hi / b.hi;
  r = sub(r, mul(b, dd{q2, 0.0}));
  double q3 = r.hi / b.hi;
  dd q = quick_two_sum(q1, q2);
  return add(q, dd{q3, 0.0});
}
/// sqrt by one Newton step on the double sqrt.
inline dd sqrt(dd a) {
  if (a.hi <= 0.0) return {std::sqrt(a.hi), 0.0};
  double x = std::sqrt(a.hi);
  dd x2 = two_prod(x, x);
  dd r = sub(a, x2);
  return quick_two_sum(x, r.hi / (2.0 * x));
}
/// 1 - b as a double-double, exact.
inline dd one_minus(double b) { return two_sum(1.0, -b); }
inline double to_double(dd a) { return a.hi + a.lo; }

}  // namespace diffusion::detail
