#!/usr/bin/python3
"""Independent high-precision reference for the SA-Solver coefficients.

What it computes
================
One text file, ``sa_solver.ref``, written into the directory given on the
command line (normally ``tests/data``).  It is written from the paper's
formulas (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models", arXiv 2309.05019, Eq. (10) data-prediction
form, predictor Eq. (12), corrector Eq. (13)) and diffusers'
``SASolverScheduler`` order-2 modification only; it does not read the C++
sources.  Every value is computed with mpmath at ``mp.dps = 40`` by numerical
quadrature (``mp.quad``) of the integrand, not by the closed forms the library
uses, and printed with 25 significant digits.

For a step from lambda_s to lambda_t (lambda = log(alpha/sigma),
h = lambda_t - lambda_s), stochasticity tau and k = 1 + tau^2, the update of the
data-prediction SA-Solver with alpha_t = 1 and sigma_t / sigma_s = 1 is

    x_t = e^{-tau^2 h} x_s + sum_j w_j D_j + sqrt(1 - e^{-2 tau^2 h}) xi,
    w_j = k * Integral_{lambda_s}^{lambda_t} e^{k (lambda - lambda_t)} l_j(lambda) d lambda,

l_j the Lagrange basis on the node lambdas.  With exactly two nodes diffusers
adds Delta to w_0 and subtracts it from w_1:

    predictor (nodes lambda_s, lambda_prev):
        Delta = k (h^2/2 - (h k - 1 + e^{-k h}) / k^2) / (lambda_s - lambda_prev)
    corrector (nodes lambda_t, lambda_s):
        Delta = k (h/2 - (h k - 1 + e^{-k h}) / (k^2 h))

Line format (after ``#`` comments), whitespace-separated:

    kind tau lambda_s lambda_t n node_1 ... node_n w_1 ... w_n ratio noise

kind is ``P`` (predictor: node_1 = lambda_s, then earlier lambdas) or ``C``
(corrector: node_1 = lambda_t, node_2 = lambda_s, then earlier lambdas).
Inputs are printed with ``repr(float)`` (exact doubles); ``ratio`` is
e^{-tau^2 h} and ``noise`` is sqrt(1 - e^{-2 tau^2 h}).

Rerun (deterministic output):

    /usr/bin/python3 tools/gen_sa_solver_reference.py tests/data
"""
import os
import sys

import mpmath
from mpmath import mp, mpf

mp.dps = 40


def lagrange(nodes, j, x):
    v = mpf(1)
    for m, lm in enumerate(nodes):
        if m != j:
            v *= (x - lm) / (nodes[j] - lm)
    return v


def case(kind, tau, lam_s, lam_t, earlier):
    tau_m, ls, lt = mpf(tau), mpf(lam_s), mpf(lam_t)
    k = 1 + tau_m ** 2
    h = lt - ls
    if kind == "P":
        nodes = [lam_s] + earlier
    else:
        nodes = [lam_t, lam_s] + earlier
    nm = [mpf(v) for v in nodes]
    w = []
    for j in range(len(nm)):
        f = lambda lam, j=j: k * mpmath.exp(k * (lam - lt)) * lagrange(nm, j, lam)
        w.append(mpmath.quad(f, [ls, lt]))
    if len(nm) == 2:
        if kind == "P":
            delta = k * (h ** 2 / 2 - (h * k - 1 + mpmath.exp(-k * h)) / k ** 2) / (nm[0] - nm[1])
        else:
            delta = k * (h / 2 - (h * k - 1 + mpmath.exp(-k * h)) / (k ** 2 * h))
        w[0] += delta
        w[1] -= delta
    ratio = mpmath.exp(-(tau_m ** 2) * h)
    noise = mpmath.sqrt(1 - mpmath.exp(-2 * tau_m ** 2 * h))
    fields = [kind, repr(tau), repr(lam_s), repr(lam_t), str(len(nodes))]
    fields += [repr(v) for v in nodes]
    fields += [sci(v) for v in w]
    fields += [sci(ratio), sci(noise)]
    return " ".join(fields)


def sci(x):
    """25 significant digits in scientific notation, like printf("%.24e")."""
    x = mpf(x)
    if x == 0:
        return "0"
    s = mpmath.nstr(x, 25, min_fixed=mp.inf, max_fixed=-mp.inf, strip_zeros=False)
    return s


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    lines = ["# SA-Solver coefficients by quadrature: see tools/gen_sa_solver_reference.py for the format."]
    lam_s = -1.25
    # Earlier lambdas: spacings that are neither equal nor round.
    for h in (0.03125, 0.4, 1.7):
        lam_t = lam_s + h
        earlier_all = [lam_s - 0.9 * h, lam_s - 2.1 * h, lam_s - 2.9 * h]
        for tau in (0.0, 0.5, 1.0):
            for order in (1, 2, 3, 4):
                lines.append(case("P", tau, lam_s, lam_t, earlier_all[: order - 1]))
            for order in (1, 2, 3, 4):
                corr_earlier = earlier_all[: max(order - 2, 0)]
                if order == 1:
                    # The corrector of order 1 uses the output at lambda_t only.
                    lines.append(case_c1(tau, lam_s, lam_t))
                else:
                    lines.append(case("C", tau, lam_s, lam_t, corr_earlier))
    with open(os.path.join(out_dir, "sa_solver.ref"), "w") as f:
        f.write("\n".join(lines) + "\n")


def case_c1(tau, lam_s, lam_t):
    """Corrector of order 1: the single node lambda_t (diffusers' lambda_list = [lambda_t])."""
    tau_m, ls, lt = mpf(tau), mpf(lam_s), mpf(lam_t)
    k = 1 + tau_m ** 2
    h = lt - ls
    w0 = mpmath.quad(lambda lam: k * mpmath.exp(k * (lam - lt)), [ls, lt])
    ratio = mpmath.exp(-(tau_m ** 2) * h)
    noise = mpmath.sqrt(1 - mpmath.exp(-2 * tau_m ** 2 * h))
    return " ".join(["C", repr(tau), repr(lam_s), repr(lam_t), "1", repr(lam_t), sci(w0), sci(ratio), sci(noise)])


if __name__ == "__main__":
    main()
