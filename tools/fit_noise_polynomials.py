#!/usr/bin/env python3
# tools/fit_noise_polynomials.py: the Remez fits behind the log and sincos polynomial
# coefficients of include/diffusion/noise.hpp (written for this project).
# Rerun: /usr/bin/python3 tools/fit_noise_polynomials.py   (python3-mpmath; prints the coefficients)
# Minimax (Remez) fits for diffusion/noise.hpp's log and sincos polynomials.
# Run: python3 fit.py   (mpmath 1.3, 60 digits)
import mpmath as mp
mp.mp.dps = 60

def remez(g, w, a, b, n, iters=40):
    """Minimise max |w(y) (P(y) - g(y))| over [a,b], P of degree n-1 (n coefficients)."""
    m = n + 1
    # Chebyshev extrema as initial reference
    ref = [ (a+b)/2 - (b-a)/2*mp.cos(mp.pi*j/(m-1)) for j in range(m)]
    for it in range(iters):
        A = mp.matrix(m, m); rhs = mp.matrix(m, 1)
        for j, y in enumerate(ref):
            for i in range(n): A[j, i] = y**i
            A[j, n] = (-1)**j / w(y)
            rhs[j] = g(y)
        sol = mp.lu_solve(A, rhs)
        c = [sol[i] for i in range(n)]; E = sol[n]
        err = lambda y: w(y)*(sum(c[i]*y**i for i in range(n)) - g(y))
        # locate extrema on a fine grid, then refine
        N = 4000
        ys = [a + (b-a)*k/N for k in range(N+1)]
        es = [err(y) for y in ys]
        ext = []
        # split into sign-alternating segments, take max |e| in each
        seg = [0]
        for k in range(1, N+1):
            if mp.sign(es[k]) != mp.sign(es[seg[-1]]) and es[k] != 0:
                seg.append(k)
        segs = seg + [N+1]
        for s in range(len(segs)-1):
            lo, hi = segs[s], segs[s+1]
            kbest = max(range(lo, hi), key=lambda k: abs(es[k]))
            ext.append(ys[kbest])
        if len(ext) < m:
            break
        # keep m points with largest |e| while alternating: take best contiguous window
        if len(ext) > m:
            best = max(range(len(ext)-m+1), key=lambda s: min(abs(err(y)) for y in ext[s:s+m]))
            ext = ext[best:best+m]
        ref = ext
    maxerr = max(abs(e) for e in es)
    return c, E, maxerr

def show(name, c, E, maxerr):
    print(f"# {name}: levelled error {mp.nstr(abs(E), 5)}, max {mp.nstr(maxerr, 5)}")
    for i, ci in enumerate(c):
        print(f"  c{i} = {mp.nstr(ci, 25)}")

twopi = 2*mp.pi
# sin(2 pi f) = f * S(f^2),  |f| <= 1/8; relative error
S = lambda y: mp.sin(twopi*mp.sqrt(y))/mp.sqrt(y) if y > 0 else twopi
# cos(2 pi f) = 1 + y * C(y); error in cos relative to cos: w = y / cos
C = lambda y: (mp.cos(twopi*mp.sqrt(y)) - 1)/y if y > 0 else -twopi**2/2
# ln(1+f) = 2 atanh(s) = 2 s + s z P(z), z = s^2, |s| <= (sqrt2-1)/(sqrt2+1); error rel to ln ~ 2s: w = z/2
smax = (mp.sqrt(2)-1)/(mp.sqrt(2)+1)
def P(z):
    if z == 0: return mp.mpf(2)/3
    s = mp.sqrt(z)
    return (2*mp.atanh(s)/s - 2)/z
yb = mp.mpf(1)/64
import sys
for n in [4,5,6,7,8]:
    c,E,me = remez(S, lambda y: 1/S(y), mp.mpf(0), yb, n); show(f"S n={n}", c, E, me)
for n in [4,5,6,7,8]:
    c,E,me = remez(C, lambda y: (y if y>0 else mp.mpf(0))/mp.cos(twopi*mp.sqrt(y)) + mp.mpf(10)**-40, mp.mpf(0), yb, n); show(f"C n={n}", c, E, me)
for n in [2,3,4,5,6,7,8]:
    c,E,me = remez(P, lambda z: z/2 + mp.mpf(10)**-40, mp.mpf(0), smax**2, n); show(f"P n={n}", c, E, me)
