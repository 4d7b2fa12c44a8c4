#!/usr/bin/python3
"""Independent high-precision reference-data generator for the diffusion math library.

What it computes
================
Two text files of reference values, written into the directory given on the
command line (normally ``tests/data``):

``schedules.ref``
    Noise-schedule quantities computed with mpmath at ``mp.dps = 50``:

    * discrete beta schedules (linear, iDDPM-scaled linear, scaled_linear,
      iDDPM cosine, diffusers sigmoid, DDPM-TF warmup, constant, JSD, and
      zero-terminal-SNR rescaled scaled_linear).  The betas are defined exactly
      (rational arithmetic where possible, else 50 digits) and then rounded to
      the nearest IEEE double; that list of doubles is printed in full as
      ``beta_in`` and *every derived quantity is computed at 50 digits from
      those doubles* (``mpf(float)`` is exact), so a double-precision
      implementation that reproduces ``beta_in`` bit-exactly can be compared
      with the derived values without any schedule-construction error mixed in;
    * derived quantities at a sparse set of step indices: alpha, alpha_bar,
      its prev/next shifts, square roots and reciprocal square roots,
      sigma = sqrt((1-abar)/abar), snr, log_snr, the DDPM posterior variance,
      iDDPM's clipped log posterior variance and the posterior mean coefficients;
    * extras for three datasets: the general skip posterior q(x_s | x_t, x_0),
      affine conversion coefficients between eps / x0 / v / score predictions,
      k-diffusion style sigma<->t log-linear interpolation, and iDDPM
      respaced betas;
    * continuous-time VP / VE SDE quantities (score_sde ``sde_lib.py``), a
      Karras et al. sigma list (k-diffusion ``get_sigmas_karras``) and an NCSN
      geometric sigma list.

``timesteps.ref``
    Integer timestep lists, computed with numpy exactly as diffusers
    ``DDIMScheduler.set_timesteps`` does for ``timestep_spacing`` in
    {linspace, leading, trailing}, and with a faithful reimplementation of
    improved-diffusion's ``space_timesteps`` (Python float accumulation and
    Python's half-to-even ``round``).

Conventions followed
====================
* Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM):
  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); posterior
  q(x_{t-1} | x_t, x_0) with variance beta_t (1 - abar_{t-1}) / (1 - abar_t)
  and mean coefficients beta_t sqrt(abar_{t-1}) / (1 - abar_t) (on x_0) and
  (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) (on x_t).  Paper time
  t = 1..T is code index i = t - 1 = 0..T-1 everywhere in the files.
* hojonathanho/diffusion ``diffusion_utils_2.py`` (``get_beta_schedule``):
  linear, const, jsd (beta_i = 1/(T - i)), warmup (``_warmup_beta``: the
  first W = int(T * frac) betas are linspace(b0, b1, W), the rest b1).
* openai/improved-diffusion ``gaussian_diffusion.py``: linear schedule scaled
  by 1000/T, cosine schedule abar(tau) = cos^2((tau + s)/(1 + s) * pi/2) with
  s = 0.008 and beta clipped at 0.999, ``alphas_cumprod_prev`` (= 1 at i = 0),
  ``alphas_cumprod_next`` (= 0 at i = T-1),
  ``posterior_log_variance_clipped`` (index 0 uses the variance at index 1);
  ``respace.py``: ``space_timesteps`` and ``SpacedDiffusion`` respaced betas
  beta'_j = 1 - abar_{tau_j} / abar_{tau_{j-1}}, abar_{tau_{-1}} = 1.
* huggingface diffusers schedulers: ``scaled_linear`` (linspace of sqrt(beta),
  squared), ``sigmoid`` (DDPMScheduler: sigmoid(linspace(-6, 6, T)) scaled
  into [b0, b1]), ``rescale_zero_terminal_snr`` (Lin et al. 2023, "Common
  Diffusion Noise Schedules and Sample Steps are Flawed"), and
  ``DDIMScheduler.set_timesteps`` timestep spacings.
* crowsonkb/k-diffusion: ``DiscreteSchedule.t_to_sigma`` / ``sigma_to_t``
  (interpolation linear in log sigma, with its clamping: the lower index is
  clamped to T-2 and the weight to [0, 1]) and ``get_sigmas_karras``
  (with a trailing 0 appended).
* yang-song/score_sde ``sde_lib.py``: VPSDE (beta_min = 0.1, beta_max = 20,
  log_mean_coeff = -t^2 (beta_max - beta_min)/4 - t beta_min/2) and VESDE
  (sigma = sigma_min (sigma_max/sigma_min)^t, sigma_min = 0.01,
  sigma_max = 50).
* Prediction-type conversions use x_t = c x_0 + d eps with c = sqrt(abar),
  d = sqrt(1 - abar), v = c eps - d x_0 (Salimans & Ho 2022), score = -eps/d.
  For every ordered pair (from, to) of {eps, x0, v, score} the coefficients
  (A, B) of to = A x_t + B from are obtained by solving the 2x2 linear system
  in the (x_0, eps) basis by Cramer's rule at 50 digits; the script checks the
  residual and a few closed forms.

Numeric policy: everything numeric uses mpmath with ``mp.dps = 50``.  Decimal
constants in the schedule definitions (1e-4, 0.02, 0.00085, 0.012, 0.008,
0.999, 0.1, 20, 0.01, 50, 0.0291675, 14.614642) are exact decimals
(``mpf('...')`` / ``Fraction('...')``); rounding a high-precision beta to a
double is round-to-nearest-even and the script asserts that no such value lies
within 1e-40 (relative) of a rounding midpoint, so the rounding is certain.
Inputs that a C++ caller passes as doubles (continuous times t, fractional
step times, sigma values for sigma_to_t) are used as the exact value of that
double, which is what the index field shows via ``repr(float)``.

Output is deterministic: no dates, no randomness, fixed ordering.

Rerun
=====
    /usr/bin/python3 tools/gen_reference.py tests/data

(needs Debian's python3-mpmath and python3-numpy; the ``python3`` first on
PATH may be a different interpreter without them).
"""

import math
import os
import sys
from fractions import Fraction

import mpmath
import numpy as np
from mpmath import mp, mpf

mp.dps = 50

SIG_DIGITS = 25
INF = mpf('inf')
NINF = mpf('-inf')


# ---------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------

def _to_fraction(x):
    """Exact rational value of a finite mpf."""
    sign, man, exp, _bc = x._mpf_
    f = Fraction(man) * (Fraction(2) ** exp)
    return -f if sign else f


def fmt(x):
    """25 significant digits, scientific, printf("%.24e")-like exponent.

    0 -> '0', +-infinity -> 'inf' / '-inf'.  Rounding of the exact binary
    value to 25 digits is round-half-even, done in exact rational arithmetic.
    """
    x = mpf(x)
    if mpmath.isnan(x):
        raise ValueError('NaN in output')
    if mpmath.isinf(x):
        return 'inf' if x > 0 else '-inf'
    if x == 0:
        return '0'
    f = _to_fraction(x)
    neg = f < 0
    f = abs(f)
    e = int(mpmath.floor(mpmath.log10(abs(x))))
    # fix possible off-by-one of the float log10 estimate
    while f >= Fraction(10) ** (e + 1):
        e += 1
    while f < Fraction(10) ** e:
        e -= 1
    scale = Fraction(10) ** (e - (SIG_DIGITS - 1))
    n = round(f / scale)  # Fraction.__round__ is half-to-even
    if n >= 10 ** SIG_DIGITS:
        e += 1
        scale = Fraction(10) ** (e - (SIG_DIGITS - 1))
        n = round(f / scale)
    digits = str(n)
    assert len(digits) == SIG_DIGITS, digits
    s = digits[0] + '.' + digits[1:] + 'e' + ('-' if e < 0 else '+') + '%02d' % abs(e)
    return ('-' if neg else '') + s


def fmt_double(d):
    """Shortest round-trip repr of a Python float (strtod recovers it)."""
    d = float(d)
    assert float(repr(d)) == d
    return repr(d)


# ---------------------------------------------------------------------------
# rounding to double
# ---------------------------------------------------------------------------

def to_double(x):
    """Round a 50-digit mpf to the nearest double, asserting it is unambiguous."""
    x = mpf(x)
    if x == 0:
        return 0.0
    d = mpmath.libmp.to_float(x._mpf_, rnd=mpmath.libmp.round_nearest)
    md = mpf(d)
    if md != x:
        nb = math.nextafter(d, math.inf if x > md else -math.inf)
        mid = (md + mpf(nb)) / 2  # exact at this precision
        assert abs(x - md) <= abs(x - mpf(nb)), 'not nearest'
        assert abs(x - mid) > mpf('1e-40') * abs(x), 'too close to a rounding midpoint: %s' % x
    return d


def frac_to_double(fr):
    """Correctly rounded double of an exact rational (Python int/int division)."""
    return fr.numerator / fr.denominator


# ---------------------------------------------------------------------------
# discrete beta schedules (as exact values, then rounded to doubles)
# ---------------------------------------------------------------------------

def betas_linear(T, b0, b1):
    """Rational linspace(b0, b1, T), correctly rounded; cross-checked with mpf."""
    out = []
    for i in range(T):
        fr = b0 + (b1 - b0) * Fraction(i, T - 1)
        d = frac_to_double(fr)
        assert d == to_double(mpf(fr.numerator) / fr.denominator)
        out.append(d)
    return out


def betas_scaled_linear(T, b0, b1):
    s0, s1 = mpmath.sqrt(b0), mpmath.sqrt(b1)
    return [to_double((s0 + (s1 - s0) * mpf(i) / (T - 1)) ** 2) for i in range(T)]


def betas_cosine(T, s=mpf('0.008'), max_beta=mpf('0.999')):
    def abar(tau):
        return mpmath.cos((tau + s) / (1 + s) * mpmath.pi / 2) ** 2
    out = []
    for i in range(T):
        b = 1 - abar(mpf(i + 1) / T) / abar(mpf(i) / T)
        out.append(to_double(min(b, max_beta)))
    return out


def betas_sigmoid(T, b0, b1):
    out = []
    for i in range(T):
        x = mpf(-6) + mpf(12) * i / (T - 1)
        out.append(to_double(mpf(1) / (1 + mpmath.exp(-x)) * (b1 - b0) + b0))
    return out


def betas_warmup(T, b0, b1, frac):
    W = int(T * frac)  # DDPM-TF: warmup_time = int(num_diffusion_timesteps * warmup_frac)
    out = [frac_to_double(b1)] * T
    for i in range(W):
        out[i] = frac_to_double(b0 + (b1 - b0) * Fraction(i, W - 1))
    return out, W


def betas_const(T, b):
    return [frac_to_double(b)] * T


def betas_jsd(T):
    return [frac_to_double(Fraction(1, T - i)) for i in range(T)]


def betas_zero_snr_from(beta_in):
    """diffusers rescale_zero_terminal_snr at 50 digits on the given doubles."""
    abar = []
    p = mpf(1)
    for b in beta_in:
        p *= (1 - mpf(b))
        abar.append(p)
    r = [mpmath.sqrt(a) for a in abar]
    r0, rT = r[0], r[-1]
    rp = [(x - rT) * r0 / (r0 - rT) for x in r]
    abar2 = [x * x for x in rp]
    alphas = [abar2[0]] + [abar2[i] / abar2[i - 1] for i in range(1, len(abar2))]
    out = [to_double(1 - a) for a in alphas]
    assert out[-1] == 1.0
    return out


# ---------------------------------------------------------------------------
# derived quantities
# ---------------------------------------------------------------------------

QUANTITIES = [
    'beta', 'alpha', 'alpha_bar', 'alpha_bar_prev', 'alpha_bar_next',
    'one_minus_alpha_bar', 'sqrt_alpha', 'sqrt_alpha_bar', 'sqrt_alpha_bar_prev',
    'sqrt_one_minus_alpha_bar', 'rsqrt_alpha', 'rsqrt_alpha_bar', 'sigma', 'snr',
    'log_snr', 'posterior_variance', 'posterior_log_variance_clipped',
    'posterior_mean_coef_x0', 'posterior_mean_coef_xt',
]


def rsqrt(x):
    return INF if x == 0 else 1 / mpmath.sqrt(x)


def derive(beta_in):
    T = len(beta_in)
    beta = [mpf(b) for b in beta_in]  # exact
    alpha = [1 - b for b in beta]
    abar = []
    p = mpf(1)
    for a in alpha:
        p *= a
        abar.append(p)
    abar_prev = [mpf(1)] + abar[:-1]
    abar_next = abar[1:] + [mpf(0)]
    q = {k: [None] * T for k in QUANTITIES}
    for i in range(T):
        b, a, ab, abp = beta[i], alpha[i], abar[i], abar_prev[i]
        q['beta'][i] = b
        q['alpha'][i] = a
        q['alpha_bar'][i] = ab
        q['alpha_bar_prev'][i] = abp
        q['alpha_bar_next'][i] = abar_next[i]
        q['one_minus_alpha_bar'][i] = 1 - ab
        q['sqrt_alpha'][i] = mpmath.sqrt(a)
        q['sqrt_alpha_bar'][i] = mpmath.sqrt(ab)
        q['sqrt_alpha_bar_prev'][i] = mpmath.sqrt(abp)
        q['sqrt_one_minus_alpha_bar'][i] = mpmath.sqrt(1 - ab)
        q['rsqrt_alpha'][i] = rsqrt(a)
        q['rsqrt_alpha_bar'][i] = rsqrt(ab)
        if ab == 0:
            q['sigma'][i] = INF
            q['snr'][i] = mpf(0)
            q['log_snr'][i] = NINF
        else:
            q['sigma'][i] = mpmath.sqrt((1 - ab) / ab)
            q['snr'][i] = ab / (1 - ab)
            q['log_snr'][i] = mpmath.log(ab / (1 - ab))
        q['posterior_variance'][i] = b * (1 - abp) / (1 - ab)
        q['posterior_mean_coef_x0'][i] = b * mpmath.sqrt(abp) / (1 - ab)
        q['posterior_mean_coef_xt'][i] = (1 - abp) * mpmath.sqrt(a) / (1 - ab)
    pv = q['posterior_variance']
    assert pv[0] == 0
    q['posterior_log_variance_clipped'] = [mpmath.log(pv[1])] + [mpmath.log(v) for v in pv[1:]]
    return q


def index_set(T):
    step = 400 if T == 4000 else 100
    s = {0, 1, 2, 3, 4, 5, 10, 20, 50, 100, 200}
    s |= set(range(step, T, step))
    s |= {T - 3, T - 2, T - 1}
    return sorted(i for i in s if 0 <= i < T)


# ---------------------------------------------------------------------------
# extras
# ---------------------------------------------------------------------------

SKIP_PAIRS = [(1, 0), (10, 9), (100, 50), (500, 499), (999, 979), (999, 0),
              (998, 997), (50, 10), (999, 998)]


def skip_posterior(abar, t, s):
    at, as_ = abar[t], abar[s]
    a = at / as_
    return {
        'skip_coef_x0': mpmath.sqrt(as_) * (1 - a) / (1 - at),
        'skip_coef_xt': mpmath.sqrt(a) * (1 - as_) / (1 - at),
        'skip_variance': (1 - as_) * (1 - a) / (1 - at),
    }


KINDS = ['eps', 'x0', 'v', 'score']


def conversion_coeffs(ab):
    """(A, B) with to = A*x_t + B*from, for all ordered pairs of distinct kinds."""
    c, d = mpmath.sqrt(ab), mpmath.sqrt(1 - ab)
    assert c != 0 and d != 0
    # coordinates in the (x0, eps) basis
    vec = {
        'xt': (c, d),
        'eps': (mpf(0), mpf(1)),
        'x0': (mpf(1), mpf(0)),
        'v': (-d, c),
        'score': (mpf(0), -1 / d),
    }

    def det(u, w):
        return u[0] * w[1] - w[0] * u[1]

    out = {}
    xt = vec['xt']
    for fk in KINDS:
        for tk in KINDS:
            if fk == tk:
                continue
            fv, tv = vec[fk], vec[tk]
            D = det(xt, fv)
            A = det(tv, fv) / D
            B = det(xt, tv) / D
            # residual check: A*xt + B*from == to
            for k in range(2):
                res = A * xt[k] + B * fv[k] - tv[k]
                assert abs(res) < mpf('1e-45') * (1 + abs(A) + abs(B)), (fk, tk, res)
            for val in (A, B):
                assert val == 0 or abs(val) > mpf('1e-30'), (fk, tk, val)
            out[(fk, tk)] = (A, B)
    # closed-form spot checks (independent of the solver)
    tol = mpf('1e-45')

    def close(x, y):
        return abs(x - y) <= tol * (1 + abs(y))
    assert close(out[('eps', 'x0')][0], 1 / c) and close(out[('eps', 'x0')][1], -d / c)
    assert close(out[('x0', 'eps')][0], 1 / d) and close(out[('x0', 'eps')][1], -c / d)
    assert close(out[('v', 'x0')][0], c) and close(out[('v', 'x0')][1], -d)
    assert close(out[('v', 'eps')][0], d) and close(out[('v', 'eps')][1], c)
    assert out[('eps', 'score')][0] == 0 and close(out[('eps', 'score')][1], -1 / d)
    assert close(out[('eps', 'v')][0], -d / c) and close(out[('eps', 'v')][1], 1 / c)
    return out


def t_to_sigma(sig, t):
    t = mpf(t)
    lo = int(mpmath.floor(t))
    hi = int(mpmath.ceil(t))
    w = t - lo
    return mpmath.exp((1 - w) * mpmath.log(sig[lo]) + w * mpmath.log(sig[hi]))


def sigma_to_t(sig, s):
    """k-diffusion DiscreteSchedule.sigma_to_t (quantize=False) at 50 digits."""
    T = len(sig)
    ls = mpmath.log(mpf(s))
    logs = [mpmath.log(x) for x in sig]
    low = 0
    for i in range(T):  # last i with sigma_i <= s (0 if none), as cumsum().argmax()
        if ls - logs[i] >= 0:
            low = i
    low = min(low, T - 2)
    high = low + 1
    lo_l, hi_l = logs[low], logs[high]
    if mpmath.isinf(hi_l):
        w = mpf(0)  # (low - ls)/(low - inf) -> 0
    else:
        w = (lo_l - ls) / (lo_l - hi_l)
    w = min(max(w, mpf(0)), mpf(1))
    return (1 - w) * low + w * high


T_FRAC = [0.0, 0.5, 10.25, 500.75, 998.5, 999.0]


def respaced_betas(abar, kept):
    out = []
    last = mpf(1)
    for t in sorted(kept):
        out.append(1 - abar[t] / last)
        last = abar[t]
    return out


# ---------------------------------------------------------------------------
# schedules.ref
# ---------------------------------------------------------------------------

def build_discrete():
    """Returns an ordered list of (name, beta_in, note)."""
    F = Fraction
    ds = []
    ds.append(('linear_1000', betas_linear(1000, F('1e-4'), F('0.02')),
               'beta_i = b0 + (b1-b0) i/(T-1), b0=1e-4, b1=0.02'))
    s = F(1000, 4000)
    ds.append(('linear_4000', betas_linear(4000, s * F('1e-4'), s * F('0.02')),
               'iDDPM linear scaled by 1000/T: b0=2.5e-5, b1=5e-3'))
    sl = betas_scaled_linear(1000, mpf('0.00085'), mpf('0.012'))
    ds.append(('scaled_linear_1000', sl,
               'beta_i = (sqrt(b0) + (sqrt(b1)-sqrt(b0)) i/(T-1))^2, b0=0.00085, b1=0.012'))
    ds.append(('cosine_1000', betas_cosine(1000),
               'iDDPM cosine, s=0.008, beta clipped at 0.999'))
    ds.append(('cosine_4000', betas_cosine(4000),
               'iDDPM cosine, s=0.008, beta clipped at 0.999'))
    ds.append(('sigmoid_1000', betas_sigmoid(1000, mpf('1e-4'), mpf('0.02')),
               'diffusers sigmoid: sigmoid(-6 + 12 i/(T-1)) (b1-b0) + b0'))
    w10, W10 = betas_warmup(1000, F('1e-4'), F('0.02'), 0.1)
    w50, W50 = betas_warmup(1000, F('1e-4'), F('0.02'), 0.5)
    assert (W10, W50) == (100, 500)
    ds.append(('warmup10_1000', w10, 'DDPM-TF warmup: first W=100 linspace(1e-4,0.02,W), rest 0.02'))
    ds.append(('warmup50_1000', w50, 'DDPM-TF warmup: first W=500 linspace(1e-4,0.02,W), rest 0.02'))
    ds.append(('const_1000', betas_const(1000, F('0.02')), 'all 0.02'))
    ds.append(('jsd_1000', betas_jsd(1000), 'beta_i = 1/(T-i)'))
    ds.append(('zero_snr_scaled_linear_1000', betas_zero_snr_from(sl),
               'rescale_zero_terminal_snr of scaled_linear_1000 beta_in (50 digits), rounded'))
    return ds


EXTRA_DATASETS = ('linear_1000', 'cosine_1000', 'zero_snr_scaled_linear_1000')


def schedules_lines():
    out = []
    H = out.append
    H('# schedules.ref -- generated by tools/gen_reference.py (mpmath, mp.dps = 50); do not edit by hand')
    H('# rerun: /usr/bin/python3 tools/gen_reference.py tests/data')
    H('# data line format: dataset quantity index value   (exactly 4 whitespace-separated fields)')
    H('# value: 25 significant digits, d.ddd...e+XX (round-half-even of the 50-digit value), or 0, inf, -inf;')
    H('#   quantity beta_in: the exact double, shortest round-trip repr (strtod recovers it bit-exactly)')
    H('# index: 0-based step index i (paper t = i+1); t:s for skip-posterior pairs; for continuous-time')
    H('#   datasets and for t_to_sigma / sigma_to_t the input double printed with repr(float)')
    H('# discrete schedules: betas defined exactly (rationals or 50 digits) and rounded to nearest double = beta_in;')
    H('#   ALL derived quantities are computed at 50 digits from the beta_in doubles, not from unrounded betas')
    H('# alpha_bar_prev[0] = 1, alpha_bar_next[T-1] = 0, posterior_variance[0] = 0,')
    H('#   posterior_log_variance_clipped[0] = log(posterior_variance[1]) (iDDPM)')
    H('# where alpha_bar = 0 (last step of jsd_1000, zero_snr_scaled_linear_1000): alpha = 0, rsqrt_alpha = inf,')
    H('#   rsqrt_alpha_bar = inf, sigma = inf, snr = 0, log_snr = -inf')
    H('# extras (linear_1000, cosine_1000, zero_snr_scaled_linear_1000):')
    H('#   skip_coef_x0/skip_coef_xt/skip_variance at t:s : q(x_s|x_t,x_0), a = abar_t/abar_s,')
    H('#     coef_x0 = sqrt(abar_s)(1-a)/(1-abar_t), coef_xt = sqrt(a)(1-abar_s)/(1-abar_t), var = (1-abar_s)(1-a)/(1-abar_t)')
    H('#   conv_<from>_<to>_a / _b at index i: to = a*x_t + b*from, kinds eps, x0, v = c*eps - d*x0, score = -eps/d,')
    H('#     x_t = c*x0 + d*eps, c = sqrt(abar_i), d = sqrt(1-abar_i); solved as a 2x2 system (Cramer) at 50 digits')
    H('#   t_to_sigma at t (repr of the input double): exp((1-w) log sigma_floor(t) + w log sigma_ceil(t)), w = t - floor(t)')
    H('#   sigma_to_t at s: k-diffusion DiscreteSchedule.sigma_to_t (low = last i with sigma_i <= s, 0 if none,')
    H('#     clamped to T-2; w = (log s - log sigma_low)/(log sigma_low+1 - log sigma_low) clamped to [0,1]; t = low + w).')
    H('#     Inputs s are the DOUBLE roundings of the high-precision sigma_0, 1.5*sigma_0, 1.0, sqrt(sigma_500*sigma_501),')
    H('#     sigma_999; the index field is repr() of that double and the value is computed from that exact double')
    H('#     (so e.g. sigma_0 rounded below the table start gives 0 by the clamp, not a tiny negative t).')
    H('#   respaced_beta (linear_1000: kept 0,20,...,980 = iDDPM ddim50; linear_1000_custom: kept 0,1,2,500,999):')
    H('#     beta\'_j = 1 - abar_{tau_j}/abar_{tau_{j-1}}, abar_{tau_{-1}} = 1, from beta_in')
    H('# continuous: vp (score_sde VPSDE beta_min=0.1 beta_max=20), ve (VESDE sigma_min=0.01 sigma_max=50):')
    H('#   t is the exact double shown in the index field; the SDE constants are exact decimals')
    H('#   vp: beta = bmin + t(bmax-bmin); log_mean_coeff = -t^2(bmax-bmin)/4 - t bmin/2; alpha_bar = exp(2 lmc);')
    H('#       std = sqrt(1-alpha_bar); sigma = std/sqrt(alpha_bar).   ve: sigma = smin (smax/smin)^t')
    H('# karras_10: k-diffusion get_sigmas_karras(n=10, sigma_min=0.0291675, sigma_max=14.614642, rho=7), index 10 = 0')
    H('# geometric_10: NCSN exp(linspace(log 1, log 0.01, 10)) (descending)')
    H('# derived-quantity indices: {0,1,2,3,4,5,10,20,50,100,200} U {multiples of 100 (400 for T=4000)} U {T-3,T-2,T-1}')

    ds = build_discrete()
    for name, beta_in, note in ds:
        H('# dataset %s T=%d: %s' % (name, len(beta_in), note))

    body = []
    B = body.append
    for name, beta_in, note in ds:
        T = len(beta_in)
        for i, b in enumerate(beta_in):
            B('%s beta_in %d %s' % (name, i, fmt_double(b)))
        q = derive(beta_in)
        idx = index_set(T)
        for qn in QUANTITIES:
            for i in idx:
                B('%s %s %d %s' % (name, qn, i, fmt(q[qn][i])))
        if name not in EXTRA_DATASETS:
            continue
        abar = q['alpha_bar']
        sig = q['sigma']
        for (t, s) in SKIP_PAIRS:
            sp = skip_posterior(abar, t, s)
            # consistency with the one-step posterior
            if s == t - 1:
                for a_, b_ in (('skip_coef_x0', 'posterior_mean_coef_x0'),
                               ('skip_coef_xt', 'posterior_mean_coef_xt'),
                               ('skip_variance', 'posterior_variance')):
                    assert abs(sp[a_] - q[b_][t]) <= mpf('1e-40') * (1 + abs(q[b_][t]))
            for k in ('skip_coef_x0', 'skip_coef_xt', 'skip_variance'):
                B('%s %s %d:%d %s' % (name, k, t, s, fmt(sp[k])))
        conv_idx = [0, 10, 500, 998] + ([] if abar[999] == 0 else [999])
        convs = {i: conversion_coeffs(abar[i]) for i in conv_idx}
        for fk in KINDS:
            for tk in KINDS:
                if fk == tk:
                    continue
                for part, j in (('a', 0), ('b', 1)):
                    for i in conv_idx:
                        B('%s conv_%s_%s_%s %d %s' % (name, fk, tk, part, i, fmt(convs[i][(fk, tk)][j])))
        for t in T_FRAC:
            lo, hi = math.floor(t), math.ceil(t)
            if mpmath.isinf(sig[lo]) or mpmath.isinf(sig[hi]):
                continue
            B('%s t_to_sigma %s %s' % (name, fmt_double(t), fmt(t_to_sigma(sig, t))))
        smax = sig[-1]
        s_inputs = [sig[0]]
        if sig[0] * mpf('1.5') < smax:
            s_inputs.append(sig[0] * mpf('1.5'))
        s_inputs.append(mpf(1))
        s_inputs.append(mpmath.sqrt(sig[500] * sig[501]))
        if not mpmath.isinf(sig[999]):
            s_inputs.append(sig[999])
        for sv in s_inputs:
            d = to_double(sv)
            B('%s sigma_to_t %s %s' % (name, fmt_double(d), fmt(sigma_to_t(sig, d))))
        if name == 'linear_1000':
            rb = respaced_betas(abar, range(0, 1000, 20))
            assert len(rb) == 50
            for j, v in enumerate(rb):
                B('%s respaced_beta %d %s' % (name, j, fmt(v)))
            rb = respaced_betas(abar, [0, 1, 2, 500, 999])
            for j, v in enumerate(rb):
                B('%s respaced_beta %d %s' % ('linear_1000_custom', j, fmt(v)))

    # continuous-time
    ts = [0.0, 1e-05, 0.001, 0.01, 0.1, 0.5, 0.9, 1.0]
    bmin, bmax = mpf('0.1'), mpf('20')
    for t in ts:
        tm = mpf(t)
        beta = bmin + tm * (bmax - bmin)
        lmc = -tm ** 2 * (bmax - bmin) / 4 - tm * bmin / 2
        ab = mpmath.exp(2 * lmc)
        std = mpmath.sqrt(1 - ab)
        sigma = std / mpmath.sqrt(ab)
        for qn, v in (('beta', beta), ('log_mean_coeff', lmc), ('alpha_bar', ab),
                      ('std', std), ('sigma', sigma)):
            B('vp %s %s %s' % (qn, fmt_double(t), fmt(v)))
    smin, smax = mpf('0.01'), mpf('50')
    for t in ts:
        B('ve sigma %s %s' % (fmt_double(t), fmt(smin * (smax / smin) ** mpf(t))))
    n, kmin, kmax, rho = 10, mpf('0.0291675'), mpf('14.614642'), mpf(7)
    a_, b_ = kmax ** (1 / rho), kmin ** (1 / rho)
    for i in range(n):
        B('karras_10 sigma %d %s' % (i, fmt((a_ + mpf(i) / (n - 1) * (b_ - a_)) ** rho)))
    B('karras_10 sigma %d %s' % (n, fmt(0)))
    l0, l1 = mpmath.log(1), mpmath.log(mpf('0.01'))
    for i in range(10):
        B('geometric_10 sigma %d %s' % (i, fmt(mpmath.exp(l0 + (l1 - l0) * mpf(i) / 9))))

    for line in body:
        assert len(line.split()) == 4, line
    return out + body


# ---------------------------------------------------------------------------
# timesteps.ref
# ---------------------------------------------------------------------------

def diffusers_timesteps(T, N, spacing, steps_offset):
    """numpy replica of diffusers DDIMScheduler.set_timesteps (N <= T)."""
    if spacing == 'linspace':
        ts = np.linspace(0, T - 1, N).round()[::-1].copy().astype(np.int64)
    elif spacing == 'leading':
        step_ratio = T // N
        ts = (np.arange(0, N) * step_ratio).round()[::-1].copy().astype(np.int64)
        ts += steps_offset
    elif spacing == 'trailing':
        step_ratio = T / N
        ts = np.round(np.arange(T, 0, -step_ratio)).astype(np.int64)
        ts -= 1
    else:
        raise ValueError(spacing)
    return [int(x) for x in ts]


def iddpm_space_timesteps(num_timesteps, section_counts):
    """Own reimplementation of improved_diffusion.respace.space_timesteps.

    Returns a sorted list, or raises ValueError exactly where iDDPM does.
    """
    if section_counts.startswith('ddim'):
        want = int(section_counts[4:])
        for stride in range(1, num_timesteps):
            r = range(0, num_timesteps, stride)
            if len(r) == want:
                return sorted(r)
        raise ValueError('no integer stride gives %d steps' % want)
    counts = [int(x) for x in section_counts.split(',')]
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    steps = set()
    for k, count in enumerate(counts):
        size = size_per + (1 if k < extra else 0)
        if size < count:
            raise ValueError('section of %d steps cannot hold %d' % (size, count))
        frac_stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.add(start + round(cur))  # Python round: half-to-even on the float
            cur += frac_stride
        start += size
    return sorted(steps)


N_LIST = [1, 2, 3, 4, 6, 7, 10, 16, 20, 25, 33, 50, 100, 250, 333, 999, 1000]
IDDPM_CASES = [
    (1000, ['ddim50', 'ddim10', 'ddim25', 'ddim100', 'ddim1000', 'ddim7', '250',
            '10,15,20', '50,50', '1,2,3', '100,200,300,400', '1000', '999', '1']),
    (10, ['ddim5', 'ddim2', 'ddim10', 'ddim3', 'ddim7', '3,3', '5', '10', '11', '2,2,2,2']),
    (4000, ['ddim50', '100']),
]


def timesteps_lines():
    body = []
    odd = []
    for T in (1000, 10, 7, 4000):
        Ns = sorted(set([n for n in N_LIST if n <= T] + [T]))
        for N in Ns:
            for spacing, offsets in (('linspace', (0,)), ('leading', (0, 1)), ('trailing', (0,))):
                for off in offsets:
                    ts = diffusers_timesteps(T, N, spacing, off)
                    if len(ts) != N:
                        odd.append('T=%d N=%d %s -> %d elements' % (T, N, spacing, len(ts)))
                    body.append('diffusers %d %d %s %d %s' % (T, N, spacing, off, ','.join(map(str, ts))))
    for T, specs in IDDPM_CASES:
        for spec in specs:
            try:
                ts = iddpm_space_timesteps(T, spec)
                body.append('iddpm %d %s %s' % (T, spec, ','.join(map(str, ts))))
            except ValueError:
                body.append('iddpm %d %s error' % (T, spec))
    head = [
        '# timesteps.ref -- generated by tools/gen_reference.py (numpy %s); do not edit by hand' % np.__version__,
        '# rerun: /usr/bin/python3 tools/gen_reference.py tests/data',
        '# diffusers T N spacing steps_offset t0,t1,...   : DDIMScheduler.set_timesteps replica (numpy), order as produced',
        '#   linspace: np.linspace(0, T-1, N).round()[::-1].astype(int64)            (steps_offset not applied)',
        '#   leading : (np.arange(0, N) * (T // N)).round()[::-1].astype(int64) + steps_offset',
        '#   trailing: np.round(np.arange(T, 0, -(T / N))).astype(int64) - 1         (steps_offset not applied)',
        '# iddpm T spec t0,t1,...  (sorted ascending) or  iddpm T spec error :',
        '#   improved_diffusion respace.space_timesteps reimplementation (float accumulation, Python round half-to-even)',
    ]
    if odd:
        head.append('# NOTE: numpy arange produced a length != N for: ' + '; '.join(odd))
    else:
        head.append('# NOTE: for every case above numpy arange produced exactly N elements')
    # informational: trailing-spacing N values (not among the cases above) where numpy's
    # arange(T, 0, -T/N) has N+1 elements; the extra last element is ~-1e-12 and becomes timestep -1
    for T in (1000, 4000):
        bad = [N for N in range(1, T + 1) if len(np.arange(T, 0, -(T / N))) != N]
        if bad:
            head.append('# info (no data lines): trailing T=%d: numpy arange gives N+1 elements (last timestep -1) '
                        'for %d values of N, smallest: %s' % (T, len(bad), ','.join(map(str, bad[:12]))))
    head.append('# note: leading with steps_offset=1 and N=T yields timestep T (outside 0..T-1), exactly as diffusers does')
    return head + body, odd


# ---------------------------------------------------------------------------

def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: /usr/bin/python3 tools/gen_reference.py OUTDIR\n')
        return 2
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    lines = schedules_lines()
    with open(os.path.join(outdir, 'schedules.ref'), 'w', newline='\n') as f:
        f.write('\n'.join(lines) + '\n')
    tl, odd = timesteps_lines()
    with open(os.path.join(outdir, 'timesteps.ref'), 'w', newline='\n') as f:
        f.write('\n'.join(tl) + '\n')
    for o in odd:
        sys.stderr.write('note: ' + o + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
