#!/usr/bin/python3
"""Independent high-precision reference-data generator for the loss functions.

What it computes
================
One text file of reference values, ``losses.ref``, written into the directory
given on the command line (normally ``tests/data``).  Every value is computed
with mpmath at ``mp.dps = 60`` from the exact value of the input doubles
(``mpf(float)`` is exact), and printed with 25 significant digits.

Functions (the first field of every data line):

``normal_cdf``
    Phi(x) = erfc(-x/sqrt(2)) / 2.  For x < -38.5 or so the result is below
    the smallest double (about 4.9e-324).  The true value is still printed,
    e.g. ``1.07...e-349``, and ``strtod`` turns it into 0 or a subnormal.
``normal_logcdf``
    log Phi(x).  For x <= 0 it is log(erfc(-x/sqrt(2))/2).  For x > 0 it is
    log1p(-Q(x)) with Q(x) = erfc(x/sqrt(2))/2, so log Phi stays accurate
    when Phi is close to 1 (it is about -Q(x), a true tiny negative number).
``normal_log_bin``
    log(Phi(b) - Phi(a)) for a < b.  a may be -inf and b may be +inf.  The
    mass is computed so that nothing close to 1 is subtracted: Q(a) - Q(b)
    with upper tails when a >= 0, Phi(b) - Phi(a) when b <= 0, and
    log1p(-(Phi(a) + Q(b))) when a < 0 < b.
``discretized_gaussian_loglik``
    The exact form of DDPM Eq. 13 (Ho, Jain, Abbeel 2020) and of
    improved-diffusion ``losses.discretized_gaussian_log_likelihood``.  Data
    x lies on a grid of ``bins`` levels in [-1, 1], with half-width
    h = 1/(bins-1).  log_scale is the log of the standard deviation
    (improved-diffusion passes 0.5 * log_variance).  The bin edges are x-h
    and x+h, with two exceptions: the lower edge is -inf when
    x <= -1 + h/2, and the upper edge is +inf when x >= 1 - h/2.  (For 256
    bins improved-diffusion tests x < -0.999 and x > 0.999; the rule here
    gives the same result on the grid.)  The value is
    log(Phi((upper - mean) e^-log_scale) - Phi((lower - mean) e^-log_scale)),
    evaluated like ``normal_log_bin``.  h is the exact rational 1/(bins-1),
    and the edges are exact too: no double rounding of x +- h.
``gaussian_kl``
    KL(N(m1, e^lv1) || N(m2, e^lv2))
    = 1/2 (-1 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2)^2 exp(-lv2)),
    as in improved-diffusion ``losses.normal_kl``.
``standard_normal_kl``
    KL(N(m, e^lv) || N(0, 1)) = 1/2 (-1 - lv + e^lv + m^2).
``gaussian_loglik``
    log N(x; mean, e^log_var) = -1/2 (log(2 pi) + log_var + (x - mean)^2 e^-log_var).
``normal_cdf_tanh``
    improved-diffusion ``approx_standard_normal_cdf``:
    1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).  Here 0.044715 is the
    exact decimal, and the value is evaluated at 60 digits through the
    identity 1/2 (1 + tanh u) = 1/(1 + exp(-2u)), which avoids cancellation
    for negative x.

Self-checks
===========
* Each value is computed twice, at 60 and at 100 digits.  The script asserts
  that the two agree to a relative 1e-35 and print the same 25 digits.  This
  catches any cancellation that the formulas did not avoid.  The tolerance is
  not 1e-50 because at |x| = 1e10, Phi(x) = exp(-x^2/2 ...) turns the
  1e-60 relative error of x/sqrt(2) into about 1e-41.  Everywhere else the
  agreement is much closer.
* Known values:
  Phi(-1) = 0.158655253931457051414767454367962077522087033273395609...,
  log Phi(-40) = -804.608442013753788166606832918609936200149631998777923...,
  and KL(N(0,1) || N(0,1)) = 0.
* mpmath.ncdf agrees with the erfc form.
* For x <= -20, log Phi(x) agrees with the asymptotic (Mills-ratio) series.
* When the two Gaussians are nearly equal, gaussian_kl agrees with its
  second-order expansion.
* normal_cdf_tanh agrees with the direct tanh form.
* With the exact rational grid levels (not their double roundings) the
  discretized likelihood sums to 1 over the whole grid, for every bins and
  parameter set used.

Formatting
==========
Each value is rounded half-to-even to 25 significant digits and printed in
``printf("%.24e")`` style.  The exponent may have more than 3 digits for
values far outside double range (for example Phi(-1e10) ~ 1e-21714724095162591393).
The exceptions are ``0``, ``inf`` and ``-inf``.  The script asserts that the
60-digit value is not close enough to a rounding midpoint to make the
25-digit rounding uncertain.  Each input double in the args field is printed
with Python's shortest round-trip ``repr``, so ``strtod`` recovers the exact
bits.  Infinite inputs are printed as ``inf`` / ``-inf``.  ``bins`` is
printed as an integer.

Output is deterministic: no dates, no randomness, fixed ordering.

Rerun
=====
    /usr/bin/python3 tools/gen_losses_reference.py tests/data

(needs Debian's python3-mpmath; the ``python3`` first on PATH may be a
different interpreter without it).
"""

import math
import os
import sys
from fractions import Fraction

import mpmath
from mpmath import mp, mpf

DPS = 60
CHECK_DPS = 100
mp.dps = DPS

SIG_DIGITS = 25
INF = mpf('inf')
NINF = mpf('-inf')


# ---------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------

def fmt(x):
    """25 significant digits, scientific, printf("%.24e")-like exponent.

    0 -> '0', +-infinity -> 'inf' / '-inf'.  Rounding is half-to-even. It
    runs at extra working precision, so exponents far beyond double range are
    handled too.  It asserts that the rounding direction is not in doubt.
    """
    x = mpf(x)
    if mpmath.isnan(x):
        raise ValueError('NaN in output')
    if mpmath.isinf(x):
        return 'inf' if x > 0 else '-inf'
    if x == 0:
        return '0'
    neg = x < 0
    with mp.workdps(DPS + 60):
        ax = abs(x)
        e = int(mpmath.floor(mpmath.log10(ax)))
        while ax >= mpf(10) ** (e + 1):
            e += 1
        while ax < mpf(10) ** e:
            e -= 1
        m = ax * mpf(10) ** (SIG_DIGITS - 1 - e)  # in [1e24, 1e25)
        fl = int(mpmath.floor(m))
        frac = m - fl
        # the 60-digit value fixes m to about 1e-35; demand a clear margin
        assert abs(frac - mpf('0.5')) > mpf('1e-30'), 'too close to a rounding midpoint: %s' % x
        n = fl + 1 if frac > mpf('0.5') else fl
    if n >= 10 ** SIG_DIGITS:
        n //= 10
        e += 1
    digits = str(n)
    assert len(digits) == SIG_DIGITS, digits
    s = digits[0] + '.' + digits[1:] + 'e' + ('-' if e < 0 else '+') + '%02d' % abs(e)
    return ('-' if neg else '') + s


def fmt_double(d):
    """Shortest round-trip repr of a Python float (strtod recovers it)."""
    d = float(d)
    if math.isinf(d):
        return 'inf' if d > 0 else '-inf'
    assert float(repr(d)) == d
    return repr(d)


def args_str(*xs):
    return ','.join(x if isinstance(x, str) else fmt_double(x) for x in xs)


def frac_to_double(fr):
    """Correctly rounded double of an exact rational."""
    return fr.numerator / fr.denominator


# ---------------------------------------------------------------------------
# the functions (evaluated at the current mp precision)
# ---------------------------------------------------------------------------

def to_mpf(d):
    """Exact value of a double (inf allowed)."""
    return mpf(float(d))


def upper_tail(z):
    """Q(z) = 1 - Phi(z) = erfc(z/sqrt(2))/2, accurate in relative terms."""
    if mpmath.isinf(z):
        return mpf(0) if z > 0 else mpf(1)
    return mpmath.erfc(z / mpmath.sqrt(2)) / 2


def ncdf(z):
    """Phi(z) = erfc(-z/sqrt(2))/2."""
    return upper_tail(-z)


def log_ncdf(z):
    if z <= 0:
        p = ncdf(z)
        return NINF if p == 0 else mpmath.log(p)
    return mpmath.log1p(-upper_tail(z))


def log_bin_mass(a, b):
    """log(Phi(b) - Phi(a)), a < b (mpf, may be infinite)."""
    assert a < b
    if a < 0 < b:
        # mass = 1 - Phi(a) - Q(b): both tails are small or moderate, log1p keeps the digits
        tails = ncdf(a) + upper_tail(b)
        assert tails < 1
        return mpmath.log1p(-tails)
    if a >= 0:
        mass = upper_tail(a) - upper_tail(b)
    else:
        mass = ncdf(b) - ncdf(a)
    assert mass > 0
    return mpmath.log(mass)


def f_normal_cdf(x):
    return ncdf(to_mpf(x))


def f_normal_logcdf(x):
    return log_ncdf(to_mpf(x))


def f_normal_log_bin(a, b):
    return log_bin_mass(to_mpf(a), to_mpf(b))


def dgl_edges(x, bins):
    """Exact bin edges (mpf, possibly infinite) for data x on a `bins`-level grid.

    x is a double (used as its exact value) or an mpf (used as is).
    """
    xm = x if isinstance(x, mpf) else to_mpf(x)
    h = mpf(1) / (bins - 1)
    lower = NINF if xm <= -1 + h / 2 else xm - h
    upper = INF if xm >= 1 - h / 2 else xm + h
    return lower, upper


def f_discretized_gaussian_loglik(x, mean, log_scale, bins):
    lower, upper = dgl_edges(x, bins)
    mu = to_mpf(mean)
    inv = mpmath.exp(-to_mpf(log_scale))
    zl = NINF if mpmath.isinf(lower) else (lower - mu) * inv
    zu = INF if mpmath.isinf(upper) else (upper - mu) * inv
    return log_bin_mass(zl, zu)


def f_gaussian_kl(m1, lv1, m2, lv2):
    m1, lv1, m2, lv2 = map(to_mpf, (m1, lv1, m2, lv2))
    return (-1 + lv2 - lv1 + mpmath.exp(lv1 - lv2) + (m1 - m2) ** 2 * mpmath.exp(-lv2)) / 2


def f_standard_normal_kl(m, lv):
    m, lv = to_mpf(m), to_mpf(lv)
    return (-1 - lv + mpmath.exp(lv) + m * m) / 2


def f_gaussian_loglik(x, mean, log_var):
    x, mean, lv = map(to_mpf, (x, mean, log_var))
    return -(mpmath.log(2 * mpmath.pi) + lv + (x - mean) ** 2 * mpmath.exp(-lv)) / 2


GELU_C = '0.044715'


def f_normal_cdf_tanh(x):
    x = to_mpf(x)
    u = mpmath.sqrt(2 / mpmath.pi) * (x + mpf(GELU_C) * x ** 3)
    return 1 / (1 + mpmath.exp(-2 * u))


def evaluate(fn, *args):
    """Value at DPS digits; asserts agreement with a CHECK_DPS-digit recomputation.

    The two must agree to 1e-35 relative and give the same 25-digit string.
    """
    with mp.workdps(DPS):
        v = fn(*args)
    with mp.workdps(CHECK_DPS):
        w = fn(*args)
        if mpmath.isinf(w) or w == 0:
            assert v == w, (fn.__name__, args, v, w)
        else:
            # 60-digit inputs like x/sqrt(2) carry relative error ~1e-60, which the
            # function amplifies by up to ~x^2 (x = 1e10 gives ~1e-41): demand 1e-35
            assert abs(v - w) <= mpf('1e-35') * abs(w), (fn.__name__, args, v, w)
    assert fmt(v) == fmt(w), (fn.__name__, args, v, w)
    return v


# ---------------------------------------------------------------------------
# case lists
# ---------------------------------------------------------------------------

def cdf_inputs():
    special = [0.0, 1e-300, -1e-300]
    for v in (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 20.0, 37.0, 38.5, 40.0, 100.0, 1000.0, 1e10):
        special += [v, -v]
    grid = [float(k) for k in range(-30, 11)]
    assert len(grid) == 41
    return sorted(set(special + grid))


LOG_BIN_CENTRES = [-40.0, -20.0, -8.0, -3.0, -1.0, -0.3, 0.0, 0.4, 2.0, 5.0, 9.0, 21.0, 39.0]
LOG_BIN_HALF_WIDTHS = [1e-6, 0.39215686274509803, 0.5, 3.0]


def log_bin_cases():
    assert 0.39215686274509803 == 1 / 255 * (1 / 0.01) == 100 / 255
    out = []
    for c in LOG_BIN_CENTRES:
        for h in LOG_BIN_HALF_WIDTHS:
            a, b = c - h, c + h  # the doubles actually printed and used
            assert a < b
            out.append((a, b))
    for c in LOG_BIN_CENTRES:
        out.append((-math.inf, c))
        out.append((c, math.inf))
    return out


def grid_point(k, bins):
    """Correctly rounded double of -1 + 2k/(bins-1)."""
    return frac_to_double(Fraction(2 * k, bins - 1) - 1)


DGL_K_256 = [0, 1, 64, 127, 128, 200, 254, 255]
# off-grid extras named in the spec: 0 (between levels 127 and 128) and -128/255
DGL_EXTRA_X = [frac_to_double(Fraction(-128, 255)), 0.0]
DGL_MEANS = [-1.0, -0.3, 0.0, 0.7, 1.0, 5.0, -12.0, 40.0]
DGL_LOG_SCALES = [-6.0, -3.0, -1.0, 0.0, 1.0]
DGL2_MEANS = [-1.0, -0.3, 0.0, 0.7, 1.0, 5.0]
DGL2_LOG_SCALES = [-3.0, 0.0, 1.0]
DGL16_K = [0, 7, 15]


def dgl_cases():
    out = []
    xs = [grid_point(k, 256) for k in DGL_K_256] + DGL_EXTRA_X
    assert DGL_EXTRA_X[0] == -0.5019607843137255
    xs = sorted(set(xs))
    for x in xs:
        for m in DGL_MEANS:
            for ls in DGL_LOG_SCALES:
                out.append((x, m, ls, 256))
    for x in (-1.0, 1.0):
        for m in DGL2_MEANS:
            for ls in DGL2_LOG_SCALES:
                out.append((x, m, ls, 2))
    for k in DGL16_K:
        x = grid_point(k, 16)
        for m in DGL_MEANS:
            for ls in DGL_LOG_SCALES:
                out.append((x, m, ls, 16))
    return out


KL_MEANS = [0.0, 0.1, -3.0, 1e-8]
KL_LOGVARS = [-10.0, -2.0, 0.0, 1e-9, 1.5]
KL_NEAR = [(0.0, 0.5, 0.0, 0.5 + 1e-8), (1.0, -4.0, 1.0 + 1e-9, -4.0), (0.0, 1e-12, 0.0, 0.0)]


def kl_cases():
    out = []
    for m1 in KL_MEANS:
        for m2 in KL_MEANS:
            for lv1 in KL_LOGVARS:
                for lv2 in KL_LOGVARS:
                    out.append((m1, lv1, m2, lv2))
    return out + KL_NEAR


SNKL_MEANS = [0.0, 0.5, -2.0, 1e-6]
SNKL_LOGVARS = [-20.0, -1.0, -1e-7, 0.0, 1e-7, 2.0]

LL_X = [0.0, 1.0, -3.5]
LL_MEANS = [0.0, 0.25]
LL_LOGVARS = [-8.0, 0.0, 3.0]

TANH_X = [-3.0, -1.0, 0.0, 0.5, 2.0, 4.0]


# ---------------------------------------------------------------------------
# independent cross-checks
# ---------------------------------------------------------------------------

def close(x, y, tol):
    return abs(x - y) <= mpf(tol) * abs(y)


def self_checks():
    with mp.workdps(DPS):
        assert close(f_normal_cdf(-1.0),
                     mpf('0.158655253931457051414767454367962077522087033273395609012606'), '1e-55')
        assert close(f_normal_logcdf(-40.0),
                     mpf('-804.608442013753788166606832918609936200149631998777923179648'), '1e-55')
        assert f_gaussian_kl(0.0, 0.0, 0.0, 0.0) == 0
        assert f_standard_normal_kl(0.0, 0.0) == 0
        # mpmath.ncdf vs the erfc form
        for x in cdf_inputs():
            if abs(x) <= 40:
                assert close(f_normal_cdf(x), mpmath.ncdf(mpf(x)), '1e-50'), x
        # Mills-ratio asymptotic series for log Phi(x), x <= -20
        for x in cdf_inputs():
            if x <= -20:
                z = mpf(x)
                s, term = mpf(1), mpf(1)
                for k in range(1, 60):
                    term *= -(2 * k - 1) / z ** 2
                    if abs(term) < mpf('1e-70'):
                        break
                    s += term
                ref = -z * z / 2 - mpmath.log(-z) - mpmath.log(2 * mpmath.pi) / 2 + mpmath.log(s)
                if x <= -37:
                    assert close(f_normal_logcdf(x), ref, '1e-50'), x
                else:  # the asymptotic series is only good to ~z^2/e terms for moderate z
                    assert close(f_normal_logcdf(x), ref, '1e-7'), x
        # log Phi(x) for x > 0: compare with log(Phi) where Phi is not too close to 1
        for x in (0.5, 1.0, 2.0, 3.0):
            assert close(f_normal_logcdf(x), mpmath.log(mpmath.ncdf(mpf(x))), '1e-50')
        # bin with infinite edges = cdf / upper tail
        assert close(f_normal_log_bin(-math.inf, 2.0), f_normal_logcdf(2.0), '1e-55')
        assert close(f_normal_log_bin(2.0, math.inf), f_normal_logcdf(-2.0), '1e-55')
        # second-order expansion of KL for nearly equal Gaussians
        for m1, lv1, m2, lv2 in KL_NEAR:
            d = mpf(lv1) - mpf(lv2)
            # -1 - d + e^d = d^2/2 + d^3/6 + d^4/24 + O(d^5)
            ref = (d * d / 2 + d ** 3 / 6 + d ** 4 / 24 + (mpf(m1) - mpf(m2)) ** 2 * mpmath.exp(-mpf(lv2))) / 2
            assert close(f_gaussian_kl(m1, lv1, m2, lv2), ref, '1e-20')
        # KL with the standard normal as second argument
        for m in SNKL_MEANS:
            for lv in SNKL_LOGVARS:
                a, b = f_standard_normal_kl(m, lv), f_gaussian_kl(m, lv, 0.0, 0.0)
                assert a == b or close(a, b, '1e-55')
        # tanh form
        for x in TANH_X:
            u = mpmath.sqrt(2 / mpmath.pi) * (mpf(x) + mpf(GELU_C) * mpf(x) ** 3)
            assert close(f_normal_cdf_tanh(x), (1 + mpmath.tanh(u)) / 2, '1e-50')
        # discretized likelihood: total mass over the grid is 1
        for bins in (2, 16, 256):
            for m in DGL_MEANS:
                for ls in DGL_LOG_SCALES:
                    tot = mpf(0)
                    for k in range(bins):  # exact rational grid levels, so the bins tile the line exactly
                        xk = mpf(2 * k) / (bins - 1) - 1
                        tot += mpmath.exp(f_discretized_gaussian_loglik(xk, m, ls, bins))
                    assert abs(tot - 1) < mpf('1e-50'), (bins, m, ls, tot)
        # edge rule: only the extreme grid levels get infinite edges
        for bins in (2, 16, 256):
            for k in range(bins):
                lo, up = dgl_edges(grid_point(k, bins), bins)
                assert mpmath.isinf(lo) == (k == 0) and mpmath.isinf(up) == (k == bins - 1)


# ---------------------------------------------------------------------------
# losses.ref
# ---------------------------------------------------------------------------

def losses_lines():
    H = []
    h = H.append
    h('# losses.ref -- generated by tools/gen_losses_reference.py (mpmath, mp.dps = 60); do not edit by hand')
    h('# rerun: /usr/bin/python3 tools/gen_losses_reference.py tests/data')
    h('# data line format: function quantity args value   (exactly 4 whitespace-separated fields)')
    h('# args: comma-separated inputs; each is an exact double in shortest round-trip repr (strtod recovers it),')
    h('#   or inf / -inf; bins (discretized_gaussian_loglik) is an integer. All values are computed at 60 digits')
    h('#   from the exact values of those doubles (checked: a 100-digit recomputation agrees to 1e-35 relative, same 25 digits)')
    h('# value: 25 significant digits, d.ddd...e+XX (round-half-even of the 60-digit value), or 0, inf, -inf;')
    h('#   values outside double range are printed as they are (exponent may have many digits, e.g. e-21714724095162591393);')
    h('#   strtod gives 0 / a subnormal for them (the C++ side decides what to expect)')
    h('# Q(z) = 1 - Phi(z) = erfc(z/sqrt(2))/2 (upper tail)')
    h('# normal_cdf value x          : Phi(x) = erfc(-x/sqrt(2))/2')
    h('# normal_logcdf value x       : log Phi(x); for x > 0 evaluated as log1p(-Q(x)) (a tiny negative number for large x)')
    h('# normal_log_bin value a,b    : log(Phi(b) - Phi(a)), a < b, a may be -inf, b may be inf;')
    h('#   evaluated as log(Q(a) - Q(b)) if a >= 0, log(Phi(b) - Phi(a)) if b <= 0, else log1p(-(Phi(a) + Q(b))).')
    h('#   Cases: a = c-h, b = c+h (double arithmetic, printed), for')
    h('#   c in {%s}, h in {%s},' % (', '.join(map(fmt_double, LOG_BIN_CENTRES)),
                                    ', '.join(map(fmt_double, LOG_BIN_HALF_WIDTHS))))
    h('#   h = 0.39215686274509803 is the double 1/255*(1/0.01); plus (-inf, c) and (c, inf)')
    h('# discretized_gaussian_loglik value x,mean,log_scale,bins : DDPM Eq. 13 / improved-diffusion')
    h('#   discretized_gaussian_log_likelihood, exact: h = 1/(bins-1) (exact rational), log_scale = log std dev')
    h('#   (iDDPM passes 0.5*log_variance); lower = -inf if x <= -1 + h/2 else x - h; upper = inf if x >= 1 - h/2')
    h('#   else x + h (edges exact, not rounded to double); value = log(Phi((upper-mean) e^-log_scale)')
    h('#   - Phi((lower-mean) e^-log_scale)). Grid x = -1 + 2k/(bins-1) correctly rounded to double;')
    h('#   bins=256: k in {%s} plus the off-grid x = -128/255 (-0.5019607843137255) and 0,'
      % ','.join(map(str, DGL_K_256)))
    h('#     mean in {%s}, log_scale in {%s}' % (','.join(map(fmt_double, DGL_MEANS)),
                                                ','.join(map(fmt_double, DGL_LOG_SCALES))))
    h('#   bins=2 (grid {-1, 1}): x in {-1, 1}, mean in {%s}, log_scale in {%s}'
      % (','.join(map(fmt_double, DGL2_MEANS)), ','.join(map(fmt_double, DGL2_LOG_SCALES))))
    h('#   bins=16: k in {%s}, same means and log_scales as bins=256' % ','.join(map(str, DGL16_K)))
    h('#   checked: with exact rational levels the likelihood sums to 1 over the grid (bins 2, 16, 256, all mean/log_scale above)')
    h('# gaussian_kl value m1,lv1,m2,lv2 : KL(N(m1, e^lv1) || N(m2, e^lv2))')
    h('#   = 1/2 (-1 + lv2 - lv1 + exp(lv1 - lv2) + (m1 - m2)^2 exp(-lv2))   (iDDPM normal_kl)')
    h('# standard_normal_kl value m,lv   : KL(N(m, e^lv) || N(0, 1)) = 1/2 (-1 - lv + e^lv + m^2)')
    h('# gaussian_loglik value x,mean,log_var : log N(x; mean, e^log_var)')
    h('#   = -1/2 (log(2 pi) + log_var + (x - mean)^2 e^-log_var)')
    h('# normal_cdf_tanh value x     : iDDPM approx_standard_normal_cdf 1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),')
    h('#   0.044715 taken as the exact decimal, evaluated at 60 digits as 1/(1 + exp(-2u)) (same function)')
    h('# spot values: Phi(-1) = 0.158655253931457051414767..., log Phi(-40) = -804.608442013753788166606...,')
    h('#   KL(N(0,1) || N(0,1)) = 0')

    body = []
    B = body.append

    def emit(name, fn, args, printed_args=None):
        v = evaluate(fn, *args)
        B('%s value %s %s' % (name, printed_args if printed_args is not None else args_str(*args), fmt(v)))

    xs = cdf_inputs()
    for x in xs:
        emit('normal_cdf', f_normal_cdf, (x,))
    for x in xs:
        emit('normal_logcdf', f_normal_logcdf, (x,))
    for a, b in log_bin_cases():
        emit('normal_log_bin', f_normal_log_bin, (a, b))
    for x, m, ls, bins in dgl_cases():
        emit('discretized_gaussian_loglik', f_discretized_gaussian_loglik, (x, m, ls, bins),
             args_str(x, m, ls, str(bins)))
    for c in kl_cases():
        emit('gaussian_kl', f_gaussian_kl, c)
    for m in SNKL_MEANS:
        for lv in SNKL_LOGVARS:
            emit('standard_normal_kl', f_standard_normal_kl, (m, lv))
    for x in LL_X:
        for m in LL_MEANS:
            for lv in LL_LOGVARS:
                emit('gaussian_loglik', f_gaussian_loglik, (x, m, lv))
    for x in TANH_X:
        emit('normal_cdf_tanh', f_normal_cdf_tanh, (x,))

    keys = set()
    for line in body:
        f = line.split()
        assert len(f) == 4, line
        key = (f[0], f[2])
        assert key not in keys, line
        keys.add(key)
    return H + body


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: %s OUTDIR\n' % argv[0])
        return 2
    outdir = argv[1]
    self_checks()
    lines = losses_lines()
    path = os.path.join(outdir, 'losses.ref')
    with open(path, 'w', newline='\n') as f:
        f.write('\n'.join(lines) + '\n')
    counts = {}
    for line in lines:
        if not line.startswith('#'):
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    sys.stderr.write('wrote %s: %s\n' % (path, ', '.join('%s=%d' % kv for kv in counts.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
