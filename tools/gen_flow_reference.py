#!/usr/bin/python3
"""Independent high-precision reference data for the rectified-flow schedules.

What it computes
================
One text file, ``flow.ref``, written into the directory given on the command
line (normally ``tests/data``).  Every value is computed with mpmath at
``mp.dps = 50`` from the exact value of the input doubles (``mpf(float)`` is
exact; the inputs are printed with ``repr(float)``, so ``strtod`` recovers the
same bits) and printed with 25 significant digits.  The script is written from
the formulas below only; it does not read the C++ sources.

``sd3_shift``
    SD3's static shift (Esser et al. 2024, "Scaling Rectified Flow
    Transformers for High-Resolution Image Synthesis", Eq. 23; diffusers
    FlowMatchEulerDiscreteScheduler ``shift``):
    sigma' = s sigma / (1 + (s - 1) sigma).  Grid: sigma in {0, 2^-1074,
    1e-300, 1e-8, ..., 1 - 2^-53, 1} plus 64 points of the golden-ratio
    sequence in (0, 1); shifts {0.1, 0.5, 1, 3, e^1.15 (as a double), 6, 1e6}
    (without sigma = 2^-1074 with s = 0.5: the value, 2^-1075 (1 + 2^-1075),
    is a rounding midpoint to 1e-324, which 50 digits cannot decide).
``time_shift``
    Flux's time shift, diffusers ``FlowMatchEulerDiscreteScheduler.
    _time_shift_exponential`` / ``_time_shift_linear`` (argument ``sigma`` of
    diffusers = the power p here):
    exponential  e^mu / (e^mu + (1/sigma - 1)^p),
    linear       mu / (mu + (1/sigma - 1)^p);  0 -> 0, 1 -> 1.
    mu in {-2, 0.5, 1.15, 3} (linear: mu > 0 only), p in {1, 2}; sigma on the
    grid above without the subnormal 2^-1074 (see "Domain" below).
``flux_mu``
    diffusers ``calculate_shift``: mu = m L + b with m = (mu1 - mu0)/(L1 - L0),
    b = mu0 - m L0, i.e. mu0 + (L - L0)(mu1 - mu0)/(L1 - L0), in exact rational
    arithmetic (so an exact 0 stays 0), for Flux's (256, 0.5)-(4096, 1.15),
    LTX-Video's (1024, 0.95)-(4096, 2.05) and a made-up (256, -0.5)-(4096, 0.5)
    whose mu crosses 0.
``flow_timestep``
    t = sigma N, for N in {1, 7, 1000, 4000}.
``flow_sigmas``
    Whole sigma lists of FlowMatchEulerDiscreteScheduler.set_timesteps(n),
    defined mathematically, every step exact at 50 digits:

    1. unshifted sigma_i = hi + i (lo - hi)/(n - 1), i = 0..n-1 (n = 1: hi);
       hi = 1, lo = 1/N (the training table's ends, N = num_train_timesteps;
       diffusers: np.linspace(t_max, t_min, n)/N).  With the
       ``diffusers_double_shift`` option (and a static shift) the ends are
       shifted first, hi = shift(1) = 1, lo = shift(1/N), as diffusers'
       __init__ shifts its training table (diffusers #13243).  A case may
       instead give a custom list of unshifted doubles (``flow_input`` lines;
       the Flux pipeline passes np.linspace(1, 1/n, n)).
    2. shift each sigma once: sd3_shift with s, or time_shift(kind, mu,
       sigma, 1) when ``dynamic`` (diffusers use_dynamic_shifting).
    3. shift_terminal T > 0 (diffusers ``stretch_shift_to_terminal``):
       sigma <- 1 - (1 - sigma)/scale, scale = (1 - sigma_last)/(1 - T).
    4. invert (diffusers ``invert_sigmas``): sigma <- 1 - sigma.
    5. timesteps t_i = sigma_i N for the n values; the list gets a final 0
       (1 when inverted).
``conversion``
    The affine conversions out = a x + b in between the prediction kinds at a
    rectified-flow level (alpha, sigma) = (1 - s, s), s the input double and
    1 - s exact here: x = alpha x0 + sigma eps and, in the (x0, eps) basis,
    epsilon = (0, 1), sample = x0 = (1, 0),
    v = (alpha eps - sigma x0)/r = (-sigma/r, alpha/r), r = sqrt(alpha^2 + sigma^2)
    (Salimans & Ho 2022 Sec. 4), score = -eps/sigma = (0, -1/sigma)
    (Tweedie's formula), flow = u = eps - x0 = (-1, 1) (Liu et al. 2022;
    Lipman et al. 2023; Esser et al. 2024).  For every ordered pair
    (from, to) of the five kinds (from == to included: (0, 1)), (a, b) solves
    a (alpha, sigma) + b from = to by Cramer's rule; s in {1e-6, 0.01, 0.5,
    0.99, 1 - 1e-9}.

Domain
======
Every value printed lies in the double range or rounds to 0.  The subnormal
input 2^-1074 is used for sd3_shift (whose result is a representable
subnormal) but time_shift gets no subnormal sigma: there 1/sigma - 1 is above
the largest double, a range that include/diffusion/schedule/flow.hpp
documents as not covered (its result is 0 where the true one, about
e^mu sigma, is a subnormal).

Self-checks
===========
* Every value is computed twice, at 50 and at 100 digits; the two must agree
  to a relative 1e-40 (the formulas have no cancellation that the extra
  digits do not absorb).
* Rounding certainty: the printed digits must read back (Python's correctly
  rounded ``float``) as the correctly rounded double of the exact value; a
  value within 5e-26 of a rounding midpoint gets 30, 35 or 40 digits for
  that.  Values within 1e-40 of a midpoint (exact midpoints: inputs with a
  few more bits than a double, e.g. flux_mu's 0.5 + 0.5 * 1.15) cannot be
  read back as "the" double; they are listed in the file's header.
* Identities: exponential time shift with p = 1 equals sd3_shift with
  s = e^mu; shift(0) = 0 and shift(1) = 1; flux_mu(L0) = mu0 and
  flux_mu(L1) = mu1; the last stretched sigma equals T; each conversion
  applied to (x0, eps) = (0.3, -1.7) gives the target; conversions compose
  (a -> b -> c equals a -> c) and closed forms (sample from epsilon:
  (1/alpha, -sigma/alpha); flow from v: ((sigma - alpha)/r^2, 1/r)).

Output is deterministic: no dates, no randomness, fixed ordering.

Rerun
=====
    python3 tools/gen_flow_reference.py tests/data

(needs only mpmath, e.g. Debian's python3-mpmath with /usr/bin/python3).
"""

import math
import os
import sys
from fractions import Fraction

import mpmath
from mpmath import mp, mpf

DPS = 50
CHECK_DPS = 100
SIG_DIGITS = 25
mp.dps = DPS


# ---------------------------------------------------------------------------
# formatting and rounding
# ---------------------------------------------------------------------------

def _to_fraction(x):
    """Exact rational value of a finite mpf."""
    sign, man, exp, _bc = mpf(x)._mpf_
    f = Fraction(man) * (Fraction(2) ** exp)
    return -f if sign else f


def fmt(x, digits=SIG_DIGITS):
    """`digits` significant digits, printf("%.24e") style for 25, round-half-even; 0 -> '0'."""
    x = mpf(x)
    if not mpmath.isfinite(x):
        raise ValueError('non-finite value %s' % x)
    if x == 0:
        return '0'
    f = _to_fraction(x)
    neg = f < 0
    f = abs(f)
    e = int(mpmath.floor(mpmath.log10(abs(x))))
    while f >= Fraction(10) ** (e + 1):
        e += 1
    while f < Fraction(10) ** e:
        e -= 1
    n = round(f / Fraction(10) ** (e - (digits - 1)))  # half-to-even
    if n >= 10 ** digits:
        e += 1
        n = round(f / Fraction(10) ** (e - (digits - 1)))
    text = str(n)
    assert len(text) == digits, text
    s = text[0] + '.' + text[1:] + 'e' + ('-' if e < 0 else '+') + '%02d' % abs(e)
    return ('-' if neg else '') + s


def fmt_double(d):
    """Shortest round-trip repr of a Python float (strtod recovers it)."""
    d = float(d)
    assert float(repr(d)) == d
    return repr(d)


def nearest_double(f):
    """Correctly rounded double of an exact rational (int/int true division rounds correctly)."""
    return f.numerator / f.denominator


MIDPOINTS = []  # values that are (within 1e-40 of) a rounding midpoint between two doubles


def checked(x):
    """Format a 50-digit value; assert that the digits read back as its correctly rounded double.

    A value within 5e-26 (relative) of a midpoint between two doubles gets more digits (up to
    40), so that its digits still round to the right double.  Exception: an exact value on a midpoint between two doubles (inputs with a few more bits
    than a double, such as 0.5 + 0.5 * 1.15, land there) is printed as is, slightly off the
    midpoint, and recorded; a reader must compare with the exact value, not the double.
    """
    x = mpf(x)
    s = fmt(x)
    if x == 0:
        return s
    f = _to_fraction(x)
    d = nearest_double(f)
    if d != 0 and Fraction(d) != f:
        for nb in (math.nextafter(d, -math.inf), math.nextafter(d, math.inf)):
            mid = (Fraction(d) + Fraction(nb)) / 2
            if abs(f - mid) <= Fraction(1, 10 ** 40) * abs(f):
                MIDPOINTS.append(s)
                return s
    for digits in (30, 35, 40):
        if float(s) == d:
            break
        s = fmt(x, digits)
    assert float(s) == d, 'the printed digits %s do not round to %r' % (s, d)
    return s


def at_two_precisions(fn, *args):
    """fn(*args) at DPS digits, asserted to agree with CHECK_DPS digits to 1e-40 relative."""
    with mp.workdps(CHECK_DPS):
        ref = fn(*args)
    with mp.workdps(DPS):
        val = fn(*args)
    if isinstance(val, (list, tuple)):
        assert len(val) == len(ref)
        for v, r in zip(val, ref):
            assert close(v, r), (fn.__name__, args, v, r)
    else:
        assert close(val, ref), (fn.__name__, args, val, ref)
    return val


def close(a, b, rel='1e-40'):
    a, b = mpf(a), mpf(b)
    if a == b:
        return True
    return abs(a - b) <= mpf(rel) * max(abs(a), abs(b))


# ---------------------------------------------------------------------------
# the formulas (inputs are Python floats, used exactly)
# ---------------------------------------------------------------------------

def f_sd3_shift(sigma, shift):
    """Esser et al. 2024 Eq. 23: s sigma / (1 + (s - 1) sigma)."""
    x, s = mpf(sigma), mpf(shift)
    return s * x / (1 + (s - 1) * x)


def f_time_shift(kind, mu, sigma, power):
    """diffusers _time_shift_exponential / _time_shift_linear."""
    m = mpmath.exp(mpf(mu)) if kind == 'exponential' else mpf(mu)
    x = mpf(sigma)
    if x == 0:
        return mpf(0)
    q = (1 / x - 1) ** mpf(power)  # 0^p = 0 at sigma = 1
    return m / (m + q)


def f_flux_mu(seq_len, base_seq_len, max_seq_len, base_shift, max_shift):
    """diffusers calculate_shift: m = (mu1 - mu0)/(L1 - L0), b = mu0 - m L0, mu = L m + b (exact rationals)."""
    L, L0, L1, mu0, mu1 = (Fraction(v) for v in (seq_len, base_seq_len, max_seq_len, base_shift, max_shift))
    m = (mu1 - mu0) / (L1 - L0)
    b = mu0 - m * L0
    mu = L * m + b
    return mpf(mu.numerator) / mu.denominator


def f_flow_timestep(sigma, N):
    return mpf(sigma) * N


def f_flow_sigmas(case):
    """(sigmas incl. the final 0 or 1, timesteps) of one flow case, exactly."""
    N = case['N']

    def shift(x):
        if case['dynamic']:
            return f_time_shift(case['kind'], case['mu'], x, 1.0)
        s = mpf(case['shift'])
        return s * x / (1 + (s - 1) * x)

    if case['custom'] is not None:
        sig = [mpf(v) for v in case['custom']]
    else:
        n = case['n']
        hi, lo = mpf(1), mpf(1) / N
        if case['double_shift'] and not case['dynamic']:
            hi, lo = shift(hi), shift(lo)
        sig = [hi] if n == 1 else [hi + i * (lo - hi) / (n - 1) for i in range(n)]
    sig = [shift(x) for x in sig]
    T = mpf(case['terminal'])
    if T > 0:
        one_minus = [1 - x for x in sig]
        scale = one_minus[-1] / (1 - T)
        sig = [1 - om / scale for om in one_minus]
    if case['invert']:
        sig = [1 - x for x in sig]
    timesteps = [x * N for x in sig]
    return sig + [mpf(1) if case['invert'] else mpf(0)] + timesteps


KINDS = ('epsilon', 'sample', 'v', 'score', 'flow')  # diffusion::to_string(prediction)


def target(kind, alpha, sigma):
    """A prediction kind as (coefficient of x0, coefficient of eps)."""
    r = mpmath.sqrt(alpha * alpha + sigma * sigma)
    return {
        'epsilon': (mpf(0), mpf(1)),
        'sample': (mpf(1), mpf(0)),
        'v': (-sigma / r, alpha / r),
        'score': (mpf(0), -1 / sigma),
        'flow': (mpf(-1), mpf(1)),
    }[kind]


def f_conversion(s, frm, to):
    """(a, b) with to = a x + b from at the flow level (1 - s, s): Cramer's rule in the (x0, eps) basis."""
    sigma = mpf(s)
    alpha = 1 - sigma
    p, q = target(frm, alpha, sigma)
    P, Q = target(to, alpha, sigma)
    det = alpha * q - sigma * p
    a = (P * q - Q * p) / det
    b = (alpha * Q - sigma * P) / det
    return [a, b]


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------

def golden_sigmas(count):
    """Deterministic points spread over (0, 1): frac(k phi), k = 1..count, as doubles."""
    phi = (1 + mpmath.sqrt(5)) / 2
    return [float(mpmath.frac(k * phi)) for k in range(1, count + 1)]


SIGMA_EDGES = [0.0, 2.0 ** -1074, 1e-300, 1e-8, 1e-3, 0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 0.75,
               0.9, 0.99, 0.999, 1.0 - 1e-8, 1.0 - 2.0 ** -52, 1.0 - 2.0 ** -53, 1.0]
SIGMAS = SIGMA_EDGES + golden_sigmas(64)
SHIFTS = [0.1, 0.5, 1.0, 3.0, math.exp(1.15), 6.0, 1e6]
MUS_EXPONENTIAL = [-2.0, 0.5, 1.15, 3.0]
MUS_LINEAR = [0.5, 1.15, 3.0]
POWERS = [1.0, 2.0]
TIME_SHIFT_SIGMAS = [x for x in SIGMAS if x == 0.0 or x >= 2.0 ** -1022]

FLUX_DEFAULT = (256.0, 4096.0, 0.5, 1.15)
FLUX_PARAMS = [
    FLUX_DEFAULT,                  # Flux.1
    (1024.0, 4096.0, 0.95, 2.05),  # LTX-Video
    (256.0, 4096.0, -0.5, 0.5),    # made up: mu crosses 0 (cancellation in mu0 + m (L - L0))
]
SEQ_LENS = [1.0, 64.0, 256.0, 1000.0, 1024.0, 2000.0, 2176.0, 3000.0, 4096.0, 6144.0, 16384.0, 1e6]

TIMESTEP_NS = [1, 7, 1000, 4000]
TIMESTEP_SIGMAS = [0.0, 1e-300, 1e-8, 0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0 - 2.0 ** -53, 1.0] + golden_sigmas(16)

LEVELS = [1e-6, 0.01, 0.5, 0.99, 1.0 - 1e-9]


def numpy_linspace(start, stop, num):
    """np.linspace(start, stop, num) in float64, as numpy computes it (step, i*step + start, last = stop)."""
    div = num - 1
    step = (stop - start) / div
    out = [i * step + start for i in range(num)]
    out[-1] = stop
    return out


def flow_case(name, n=None, N=1000, shift=1.0, dynamic=False, mu=0.0, kind='exponential', terminal=0.0,
              invert=False, double_shift=False, custom=None):
    if custom is not None:
        n = len(custom)
    return dict(name=name, n=n, N=N, shift=shift, dynamic=dynamic, mu=mu, kind=kind, terminal=terminal,
                invert=invert, double_shift=double_shift, custom=custom)


FLOW_CASES = [
    flow_case('unshifted_10', 10),
    flow_case('unshifted_1000', 1000),
    flow_case('sd3_28', 28, shift=3.0),
    flow_case('sd3_1', 1, shift=3.0),
    flow_case('sd3_2', 2, shift=3.0),
    flow_case('shift_0.1_20', 20, shift=0.1),
    flow_case('flux_28', 28, dynamic=True, mu=1.15),
    flow_case('flux_50', 50, dynamic=True, mu=1.15),
    flow_case('linear_mu1.15_28', 28, dynamic=True, mu=1.15, kind='linear'),
    flow_case('linear_mu0.5_20', 20, dynamic=True, mu=0.5, kind='linear'),
    flow_case('sd3_terminal0.02_28', 28, shift=3.0, terminal=0.02),
    flow_case('ltx_terminal0.1_40', 40, dynamic=True, mu=2.05, terminal=0.1),
    flow_case('sd3_invert_10', 10, shift=3.0, invert=True),
    flow_case('sd3_terminal0.02_invert_28', 28, shift=3.0, terminal=0.02, invert=True),
    flow_case('sd3_double_28', 28, shift=3.0, double_shift=True),
    flow_case('double_shift0.1_20', 20, shift=0.1, double_shift=True),
    flow_case('flux_double_28', 28, dynamic=True, mu=1.15, double_shift=True),  # dynamic: no double shift
    flow_case('sd3_N4000_25', 25, N=4000, shift=3.0),
    flow_case('flux_custom_28', dynamic=True, mu=1.15, custom=numpy_linspace(1.0, 1.0 / 28, 28)),
    flow_case('sd3_custom_5', shift=3.0, custom=[1.0, 0.8, 0.5, 0.1, 1e-8]),
]


# ---------------------------------------------------------------------------
# self-checks
# ---------------------------------------------------------------------------

def self_checks():
    with mp.workdps(DPS):
        for mu in MUS_EXPONENTIAL:  # exponential time shift with p = 1 is sd3_shift with s = e^mu
            s = mpmath.exp(mpf(mu))
            for x in TIME_SHIFT_SIGMAS:
                assert close(f_time_shift('exponential', mu, x, 1.0), s * mpf(x) / (1 + (s - 1) * mpf(x))), (mu, x)
        for s in SHIFTS:
            assert f_sd3_shift(0.0, s) == 0 and f_sd3_shift(1.0, s) == 1
        for L0, L1, mu0, mu1 in FLUX_PARAMS:
            assert close(f_flux_mu(L0, L0, L1, mu0, mu1), mpf(mu0), '1e-48')
            assert close(f_flux_mu(L1, L0, L1, mu0, mu1), mpf(mu1), '1e-48')
        for case in FLOW_CASES:
            if case['terminal'] > 0 and not case['invert']:
                vals = f_flow_sigmas(case)
                assert close(vals[case['n'] - 1], mpf(case['terminal']), '1e-45')
        x0, eps = mpf('0.3'), mpf('-1.7')
        for s in LEVELS:
            sigma = mpf(s)
            alpha = 1 - sigma
            x = alpha * x0 + sigma * eps
            coef = {}
            for frm in KINDS:
                p, q = target(frm, alpha, sigma)
                for to in KINDS:
                    a, b = f_conversion(s, frm, to)
                    coef[frm, to] = (a, b)
                    P, Q = target(to, alpha, sigma)
                    inp = p * x0 + q * eps
                    err = abs(a * x + b * inp - (P * x0 + Q * eps))
                    assert err <= mpf('1e-45') * (abs(a * x) + abs(b * inp)), (s, frm, to)
            for f1 in KINDS:
                for f2 in KINDS:
                    for f3 in KINDS:
                        a12, b12 = coef[f1, f2]
                        a23, b23 = coef[f2, f3]
                        a13, b13 = coef[f1, f3]
                        assert abs(a23 + b23 * a12 - a13) <= mpf('1e-40') * (abs(a23) + abs(b23 * a12)), (s, f1, f2, f3)
                        assert close(b23 * b12, b13), (s, f1, f2, f3)
            r = mpmath.sqrt(alpha ** 2 + sigma ** 2)
            assert close(coef['epsilon', 'sample'][0], 1 / alpha) and close(coef['epsilon', 'sample'][1], -sigma / alpha)
            assert close(coef['v', 'flow'][0], (sigma - alpha) / r ** 2)
            assert close(coef['v', 'flow'][1], 1 / r)


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

HEADER = """\
# flow.ref -- generated by tools/gen_flow_reference.py (mpmath, mp.dps = 50); do not edit by hand
# rerun: python3 tools/gen_flow_reference.py tests/data
# data line format: function quantity args value   (exactly 4 whitespace-separated fields)
#   args: comma-separated key=value; input doubles in Python's shortest round-trip repr (strtod recovers
#     them bit-exactly), integers as integers; every value is computed from the exact input doubles
#   value: 25 significant digits, d.ddd...e+XX (round-half-even of the 50-digit value; up to 40 digits where 25
#     would read back as the wrong double), or 0; flow_input: the input double (repr); flow_case: '-'.
#     The digits read back (strtod) as the correctly rounded double of the exact value, except for the
#     values on a rounding midpoint between two doubles listed below: compare errors with the exact value
#     (e.g. read as long double), not with that double
# sd3_shift value sigma=,shift=          s sigma/(1 + (s-1) sigma)  (Esser et al. 2024 Eq. 23)
# time_shift <kind> mu=,sigma=,power=    exponential: e^mu/(e^mu + (1/sigma - 1)^p); linear: mu/(mu + (1/sigma - 1)^p);
#                                        sigma = 0 -> 0 (diffusers _time_shift_exponential/_linear; p = its 'sigma')
# flux_mu value seq_len=,base_seq_len=,max_seq_len=,base_shift=,max_shift=
#                                        mu0 + (L - L0)(mu1 - mu0)/(L1 - L0)  (diffusers calculate_shift)
# flow_timestep value sigma=,N=          sigma N
# flow_case options name=,n=,N=,shift=,dynamic=,mu=,kind=,terminal=,invert=,double_shift=,custom=  -
#   one line per sigma list (flow_schedule_options); custom=1: the unshifted list is given by flow_input lines
# flow_input unshifted case=,i=          the custom unshifted list (input doubles)
# flow_sigmas sigma case=,i=             i = 0..n: the n sigmas and the final 0 (1 when inverted)
# flow_sigmas timestep case=,i=          i = 0..n-1: sigma_i N
#   definition: unshifted sigma_i = hi + i (lo - hi)/(n-1) (n = 1: hi), hi = 1, lo = 1/N; double_shift=1 with a
#   static shift: hi = shift(1), lo = shift(1/N) first (diffusers #13243); then shift once (sd3_shift with shift,
#   or time_shift(kind, mu, ., 1) when dynamic=1); terminal > 0: sigma <- 1 - (1 - sigma)/scale,
#   scale = (1 - sigma_last)/(1 - terminal); invert=1: sigma <- 1 - sigma. All exact at 50 digits.
# conversion a|b s=,from=,to=            to = a x + b from at the flow level alpha = 1 - s (exact), sigma = s:
#   x = alpha x0 + sigma eps; epsilon, sample = x0, v = (alpha eps - sigma x0)/sqrt(alpha^2 + sigma^2),
#   score = -eps/sigma, flow = eps - x0 (the names of diffusion::to_string(prediction)); Cramer's rule
"""


def kv(**pairs):
    out = []
    for k, v in pairs.items():
        if isinstance(v, bool):
            v = int(v)
        out.append('%s=%s' % (k, fmt_double(v) if isinstance(v, float) else v))
    return ','.join(out)


def flow_lines():
    lines = []
    for x in SIGMAS:
        for s in SHIFTS:
            if x == 2.0 ** -1074 and s == 0.5:
                continue  # 2^-1075 (1 + 2^-1075): a rounding midpoint to 1e-324, undecidable at 50 digits
            lines.append('sd3_shift value %s %s' % (kv(sigma=x, shift=s), checked(at_two_precisions(f_sd3_shift, x, s))))
    for kind, mus in (('exponential', MUS_EXPONENTIAL), ('linear', MUS_LINEAR)):
        for mu in mus:
            for p in POWERS:
                for x in TIME_SHIFT_SIGMAS:
                    v = at_two_precisions(f_time_shift, kind, mu, x, p)
                    lines.append('time_shift %s %s %s' % (kind, kv(mu=mu, sigma=x, power=p), checked(v)))
    for L0, L1, mu0, mu1 in FLUX_PARAMS:
        for L in SEQ_LENS:
            v = at_two_precisions(f_flux_mu, L, L0, L1, mu0, mu1)
            lines.append('flux_mu value %s %s' % (
                kv(seq_len=L, base_seq_len=L0, max_seq_len=L1, base_shift=mu0, max_shift=mu1), checked(v)))
    for N in TIMESTEP_NS:
        for x in TIMESTEP_SIGMAS:
            lines.append('flow_timestep value %s %s' % (kv(sigma=x, N=N), checked(at_two_precisions(f_flow_timestep, x, N))))
    for c in FLOW_CASES:
        n = c['n']
        lines.append('flow_case options %s -' % kv(
            name=c['name'], n=n, N=c['N'], shift=float(c['shift']), dynamic=c['dynamic'], mu=float(c['mu']),
            kind=c['kind'], terminal=float(c['terminal']), invert=c['invert'], double_shift=c['double_shift'],
            custom=c['custom'] is not None))
        if c['custom'] is not None:
            for i, v in enumerate(c['custom']):
                lines.append('flow_input unshifted %s %s' % (kv(case=c['name'], i=i), fmt_double(v)))
        vals = at_two_precisions(f_flow_sigmas, c)
        sig, ts = vals[:n + 1], vals[n + 1:]
        for i, v in enumerate(sig):
            lines.append('flow_sigmas sigma %s %s' % (kv(case=c['name'], i=i), checked(v)))
        for i, v in enumerate(ts):
            lines.append('flow_sigmas timestep %s %s' % (kv(case=c['name'], i=i), checked(v)))
    for s in LEVELS:
        for frm in KINDS:
            for to in KINDS:
                a, b = at_two_precisions(f_conversion, s, frm, to)
                args = kv(s=s, **{'from': frm, 'to': to})
                lines.append('conversion a %s %s' % (args, checked(a)))
                lines.append('conversion b %s %s' % (args, checked(b)))
    return lines


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: %s OUTDIR\n' % argv[0])
        return 2
    self_checks()
    data = flow_lines()
    lines = HEADER.rstrip('\n').split('\n')
    lines.append('# values on a rounding midpoint: %s' % (' '.join(sorted(set(MIDPOINTS))) or 'none'))
    lines += data
    for line in lines:
        assert line.startswith('#') or len(line.split()) == 4, line
    path = os.path.join(argv[1], 'flow.ref')
    with open(path, 'w', newline='\n') as f:
        f.write('\n'.join(lines) + '\n')
    counts = {}
    for line in lines:
        if not line.startswith('#'):
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    sys.stderr.write('wrote %s: %s\n' % (path, ', '.join('%s=%d' % kv_ for kv_ in counts.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
