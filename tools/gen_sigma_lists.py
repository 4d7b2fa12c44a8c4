#!/usr/bin/python3
"""Independent high-precision reference data for the sigma lists of schedule/sigmas.hpp.

Writes ``sigma_lists.ref`` into the directory given on the command line (normally
``tests/data``).  Every value is computed with mpmath at ``mp.dps = 50`` from the exact
value of the input doubles and printed with 25 significant digits.  The script is written
from the formulas below (k-diffusion ``get_sigmas_*``, ComfyUI ``kl_optimal_scheduler``),
not from the C++ sources.  i runs over 0 .. n-1 and r_i = i/(n-1), exactly:

``karras``           (s_max^(1/rho) + r_i (s_min^(1/rho) - s_max^(1/rho)))^rho   (Karras et al. 2022, Eq. 5)
``exponential``      exp(log s_max + r_i (log s_min - log s_max))
``polyexponential``  exp(log s_min + (1 - r_i)^rho (log s_max - log s_min))
``kl_optimal``       tan((1 - r_i) atan s_max + r_i atan s_min)   (Sabour et al. 2024, arXiv:2404.14507)
``vp``               sqrt(exp(beta_d t^2/2 + beta_min t) - 1), t = 1 + r_i (eps_s - 1),
                     beta_d = beta_max - beta_min  (Song et al. 2021, the VP SDE's marginal)
``ays``              Align Your Steps (Sabour et al. 2024, arXiv:2404.14507, Appendix B.3 Table 3):
                     the 11 published levels tau_0 > ... > tau_10 (as decimal numbers, so the
                     reference uses their exact decimal values) interpolated log-linearly at the
                     position p = 10 r_i = j + w: exp((1 - w) log tau_j + w log tau_{j+1})
``beta``             s_min + x_i (s_max - s_min), x_i the Beta(alpha, beta) quantile of 1 - r_i
                     (Lee et al. 2024, arXiv:2407.12173; diffusers ``_convert_to_beta``)
``beta_quantile``    the Beta(alpha, beta) quantile of p = i/n (here n is a denominator, not a count)
``beta_timestep``    ComfyUI ``beta_scheduler`` before its de-duplication: round-half-even of
                     x (T - 1), x the Beta(alpha, beta) quantile of 1 - i/n (i = 0 .. n-1); the value
                     is an integer, and the line's ``gap`` is the distance of x (T - 1) to the nearest
                     half-integer (a computed quantile must be closer than that to round alike)
``linear_quadratic`` ComfyUI ``linear_quadratic_schedule`` (Mochi): with L linear steps of N and
                     tau = threshold_noise (its exact double value), s_i = i tau/L for i < L, else
                     s_i = a i^2 + b i + c, d = L - tau N, q = N - L, a = d/(L q^2), b = tau/L - 2d/q^2,
                     c = a L^2; sigma_i = 1 - s_i, i = 0 .. N-1.  Computed in exact rational arithmetic;
                     parameters whose list is not strictly decreasing are skipped (the library refuses them).

The quantile x of Beta(a, b) at p is the root of mpmath ``betainc(a, b, 0, x, regularized=True) = p``,
found by bisection and Newton's method in log x for p <= 1/2 and, through
1 - I_x(a, b) = I_{1-x}(b, a), in log(1 - x) from the exact complement 1 - p otherwise, then checked
to a relative residual below 1e-40.

Each list is followed by a 0 in the library (not written here).  Line format (4 fields):

    list  n=<n>,i=<i>,<parameters>  value      (parameters: key=value, doubles as repr())

Usage: python3 tools/gen_sigma_lists.py tests/data
"""
import sys
from fractions import Fraction

import mpmath as mp

mp.mp.dps = 50
SIG = 25


def fmt(x):
    x = mp.mpf(x)
    if x == 0:
        return '0'
    return mp.nstr(x, SIG, strip_zeros=False, min_fixed=1, max_fixed=0)


def ramp(i, n):
    return mp.mpf(i) / (n - 1)


def karras(i, n, smin, smax, rho):
    a, b = mp.mpf(smax) ** (1 / mp.mpf(rho)), mp.mpf(smin) ** (1 / mp.mpf(rho))
    return (a + ramp(i, n) * (b - a)) ** mp.mpf(rho)


def exponential(i, n, smin, smax):
    return mp.exp(mp.log(smax) + ramp(i, n) * (mp.log(smin) - mp.log(smax)))


def polyexponential(i, n, smin, smax, rho):
    return mp.exp(mp.log(smin) + (1 - ramp(i, n)) ** mp.mpf(rho) * (mp.log(smax) - mp.log(smin)))


def kl_optimal(i, n, smin, smax):
    r = ramp(i, n)
    return mp.tan((1 - r) * mp.atan(smax) + r * mp.atan(smin))


def vp(i, n, beta_min, beta_max, eps_s):
    t = 1 + ramp(i, n) * (mp.mpf(eps_s) - 1)
    bd = mp.mpf(beta_max) - mp.mpf(beta_min)
    return mp.sqrt(mp.expm1(bd * t * t / 2 + mp.mpf(beta_min) * t))


AYS = {
    'sd15': ['14.615', '6.475', '3.861', '2.697', '1.886', '1.396', '0.963', '0.652', '0.399', '0.152', '0.029'],
    'sdxl': ['14.615', '6.315', '3.771', '2.181', '1.342', '0.862', '0.555', '0.380', '0.234', '0.113', '0.029'],
    'deepfloyd_if': ['160.41', '8.081', '3.315', '1.885', '1.207', '0.785', '0.553', '0.293', '0.186', '0.030', '0.006'],
    'svd': ['700.00', '54.5', '15.886', '7.977', '4.248', '1.789', '0.981', '0.403', '0.173', '0.034', '0.002'],
}


def ays(i, n, model):
    tau = [mp.mpf(v) for v in AYS[model]]
    p = mp.mpf(10 * i) / (n - 1)
    j = int(mp.floor(p))
    if j == 10:
        return tau[10]
    w = p - j
    return mp.exp((1 - w) * mp.log(tau[j]) + w * mp.log(tau[j + 1]))


def beta_quantile(a, b, p):
    """x with I_x(a, b) = p, p an exact rational (fractions.Fraction) in (0, 1)."""
    a, b = mp.mpf(a), mp.mpf(b)
    if p > Fraction(1, 2):
        return 1 - beta_quantile_lower(b, a, 1 - p)
    return beta_quantile_lower(a, b, p)


def beta_quantile_lower(a, b, p):
    target = mp.mpf(p.numerator) / p.denominator
    f = lambda u: mp.betainc(a, b, 0, mp.exp(u), regularized=True) - target
    hi = mp.mpf(0)
    lo = mp.mpf(-20)
    while f(lo) > 0:
        lo *= 2
    for _ in range(60):  # bisection in u = log x, then Newton (dI/du = x^a (1 - x)^(b-1) / B(a, b))
        mid = (lo + hi) / 2
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    u = (lo + hi) / 2
    for _ in range(100):
        x = mp.exp(u)
        du = f(u) / (x ** a * (1 - x) ** (b - 1) / mp.beta(a, b))
        u -= du
        if abs(du) < mp.mpf(10) ** -48:
            break
    x = mp.exp(u)
    assert abs(f(u)) <= mp.mpf(10) ** -40 * target, (a, b, p)
    return x


def mpq(fr):
    return mp.mpf(fr.numerator) / fr.denominator


def linear_quadratic(i, n, tau, lin):
    tau = Fraction(tau)
    if n == 1:
        return Fraction(1)
    if i < lin:
        return 1 - Fraction(i) * tau / lin
    d = lin - tau * n
    q = n - lin
    a = d / (lin * q * q)
    b = tau / lin - 2 * d / (q * q)
    c = a * lin * lin
    return 1 - (a * i * i + b * i + c)


def beta_lines():
    out = []
    shapes = [(0.6, 0.6), (0.5, 2.0), (1.0, 1.0), (3.0, 0.3), (10.0, 10.0), (0.1, 0.1), (0.1, 10.0), (10.0, 0.1),
              (2.5, 0.25), (1.7, 4.2)]
    for a, b in shapes:
        for m, ks in ((16, range(1, 16)), (1000, (1, 2, 10, 100, 333, 500, 667, 900, 990, 998, 999)),
                      (10 ** 6, (1, 999999))):
            for k in ks:
                out.append(('beta_quantile', f'n={m},i={k},alpha={a!r},beta={b!r}',
                            beta_quantile(a, b, Fraction(k, m))))
    for n in (2, 3, 10, 25):
        for smin, smax in [(0.002, 80.0), (0.0291675, 14.614642), (0.03, 1.0), (1e-5, 1e5)]:
            for a, b in shapes[:4]:
                for i in range(n):
                    x = 0 if i == n - 1 else 1 if i == 0 else beta_quantile(a, b, Fraction(n - 1 - i, n - 1))
                    out.append(('beta', f'n={n},i={i},sigma_min={smin!r},sigma_max={smax!r},alpha={a!r},beta={b!r}',
                                mp.mpf(smin) + x * (mp.mpf(smax) - mp.mpf(smin))))
    for T in (1000, 100):
        for n in (1, 5, 20, 80):
            for a, b in shapes[:4]:
                for i in range(n):
                    x = 1 if i == 0 else beta_quantile(a, b, Fraction(n - i, n))
                    v = x * (T - 1)
                    t = int(mp.nint(v))  # mpmath rounds half to even, as numpy.rint
                    gap = abs(abs(v - mp.floor(v) - mp.mpf(1) / 2))
                    out.append(('beta_timestep', f'n={n},i={i},T={T},alpha={a!r},beta={b!r},gap={float(gap)!r}', t))
    for n in (1, 2, 3, 7, 50, 80, 1000):
        for tau in (0.025, 0.1, 0.5):
            lins = sorted({l for l in (n // 2, 1, n - 1) if 1 <= l < n}) if n > 1 else [0]
            for lin in lins:
                exact = [linear_quadratic(i, n, tau, lin) for i in range(n)] + [Fraction(0)]
                if any(exact[i + 1] >= exact[i] for i in range(n)):
                    continue  # not strictly decreasing: the library refuses these parameters
                for i in range(n):
                    if n > 60 and i % 7 and i < n - 3:
                        continue
                    out.append(('linear_quadratic', f'n={n},i={i},threshold_noise={tau!r},linear_steps={lin}',
                                mpq(linear_quadratic(i, n, tau, lin))))
    return out


def lines():
    out = []
    ranges = [(0.002, 80.0), (0.0291675, 14.614642), (0.03, 1.0), (1e-5, 1e5)]
    for n in (2, 3, 10, 25):
        for smin, smax in ranges:
            for rho in (7.0, 3.0, 1.0):
                for i in range(n):
                    out.append(('karras', f'n={n},i={i},sigma_min={smin!r},sigma_max={smax!r},rho={rho!r}',
                                karras(i, n, smin, smax, rho)))
            for i in range(n):
                out.append(('exponential', f'n={n},i={i},sigma_min={smin!r},sigma_max={smax!r}',
                            exponential(i, n, smin, smax)))
                out.append(('kl_optimal', f'n={n},i={i},sigma_min={smin!r},sigma_max={smax!r}',
                            kl_optimal(i, n, smin, smax)))
            for rho in (0.5, 1.0, 2.0):
                for i in range(n):
                    out.append(('polyexponential', f'n={n},i={i},sigma_min={smin!r},sigma_max={smax!r},rho={rho!r}',
                                polyexponential(i, n, smin, smax, rho)))
        for beta_min, beta_max, eps_s in ((0.1, 20.0, 1e-3), (0.1, 20.0, 1e-5), (1.0, 1.0, 0.5)):
            for i in range(n):
                out.append(('vp', f'n={n},i={i},beta_min={beta_min!r},beta_max={beta_max!r},eps_s={eps_s!r}',
                            vp(i, n, beta_min, beta_max, eps_s)))
    for model in AYS:
        for n in (2, 5, 11, 21, 32):
            for i in range(n):
                out.append(('ays', f'n={n},i={i},model={model}', ays(i, n, model)))
    return out + beta_lines()


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: %s OUTDIR\n' % argv[0])
        return 2
    rows = lines()
    with open(argv[1].rstrip('/') + '/sigma_lists.ref', 'w') as f:
        f.write('# sigma_lists.ref -- generated by tools/gen_sigma_lists.py (mpmath, mp.dps = 50); do not edit by hand\n')
        f.write('# rerun: python3 tools/gen_sigma_lists.py tests/data\n')
        f.write('# data line format: list n=..,i=..,params value   (exactly 3 whitespace-separated fields)\n')
        for name, args, value in rows:
            f.write(f'{name} {args} {fmt(value)}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
