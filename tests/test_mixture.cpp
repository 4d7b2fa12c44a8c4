// Exact mixture and empirical denoisers (mixture.hpp): against gaussian_data, against a
// long-double quadrature and a long-double direct softmax, against finite differences of the
// log-density, against each other, at the extreme noise levels, for float and double, in
// batches with mixed sigma, and their argument errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/mixture.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <stdexcept>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::prediction;
using ld = long double;
constexpr double u = 0x1p-53;
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr prediction kinds[] = {prediction::epsilon, prediction::sample, prediction::v, prediction::score,
                                    prediction::flow_velocity};

static_assert(diffusion::denoiser<diffusion::gaussian_mixture_data, float>);
static_assert(diffusion::denoiser<diffusion::gaussian_mixture_data, double>);
static_assert(diffusion::denoiser<diffusion::empirical_data, float>);
static_assert(diffusion::denoiser<diffusion::empirical_data, double>);

// Calls a denoiser on rows x (row-major) with one sigma per row.
template <class T, class M>
std::vector<T> run(const M& m, const std::vector<T>& x, const std::vector<double>& sigma) {
  std::vector<T> out(x.size());
  const std::vector<double> ts(sigma.size(), 0.0);
  const diffusion::denoiser_input<T> in{x, ts, sigma};
  m(in, std::span<T>(out));
  return out;
}

// c = sqrt(abar), d = sqrt(1 - abar) in long double.
struct cd {
  ld c, d;
};
cd levels(double sigma) {
  if (std::isinf(sigma)) return {0.0L, 1.0L};
  const ld s = sigma, r = std::sqrt(1.0L + s * s);
  return {1.0L / r, s / r};
}

// The empirical posterior computed directly in long double: E[x0 | x_t] with the direct squared
// distances, and the error budget of the library's double computation (mixture.hpp, class
// comment): each weight that matters (exponent within 45 of the largest) has an exponent error of
// at most delta = 16(n+8)u e_i from the expansion, or 4u(|x_t| + c|x_i|) sqrt(D_i)/(2d^2) from
// rounding the inputs of the direct evaluation. The normalized weights then move by at most
// 2 delta w_i, and since they sum to 1, E[x0] by at most 2 delta sum_i w_i |x_i - E[x0]|; the
// final weighted sum and division add 8u max|x_i|.
struct empirical_reference {
  std::vector<ld> x0;
  double budget;
};
empirical_reference empirical_posterior(const std::vector<double>& data, std::size_t n, double sigma,
                                        std::span<const double> xt) {
  const std::size_t N = data.size() / n;
  const auto [c, d] = levels(sigma);
  std::vector<ld> e(N), D(N), norm(N);
  ld xtn = 0, xmax = 0;
  for (std::size_t k = 0; k < n; ++k) xtn += static_cast<ld>(xt[k]) * xt[k];
  xtn = std::sqrt(xtn);
  for (std::size_t i = 0; i < N; ++i) {
    ld s = 0, nn = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const ld diff = xt[k] - c * data[i * n + k];
      s += diff * diff;
      nn += static_cast<ld>(data[i * n + k]) * data[i * n + k];
      xmax = std::max(xmax, std::abs(static_cast<ld>(data[i * n + k])));
    }
    D[i] = s;
    norm[i] = std::sqrt(nn);
    e[i] = s / (2 * d * d);
  }
  const ld emin = *std::min_element(e.begin(), e.end());
  std::vector<ld> x0(n, 0.0L);
  ld sum = 0, delta = 0;
  for (std::size_t i = 0; i < N; ++i) {
    const ld w = std::exp(-(e[i] - emin));
    sum += w;
    for (std::size_t k = 0; k < n; ++k) x0[k] += w * data[i * n + k];
    if (e[i] - emin <= 45)
      delta = std::max(delta, 16 * static_cast<ld>(n + 8) * u * e[i] + 4 * u * (xtn + c * norm[i]) * std::sqrt(D[i]) / (2 * d * d));
  }
  for (auto& v : x0) v /= sum;
  ld spread = 0;  // sum_i w_i max_k |x_ik - E[x0]_k|
  for (std::size_t i = 0; i < N; ++i) {
    ld dev = 0;
    for (std::size_t k = 0; k < n; ++k) dev = std::max(dev, std::abs(data[i * n + k] - x0[k]));
    spread += std::exp(-(e[i] - emin)) / sum * dev;
  }
  return {x0, static_cast<double>(2 * delta * spread + 8 * u * xmax)};
}

// Data: N points in [-1, 1]^n, pairwise squared distances at least min_d2 (by rejection).
std::vector<double> spread_points(std::size_t N, std::size_t n, double min_d2, std::uint64_t seed) {
  test::normal_source g(seed);
  std::vector<double> data;
  while (data.size() < N * n) {
    std::vector<double> p(n);
    for (auto& v : p) v = 2 * g.uniform() - 1;
    bool ok = true;
    for (std::size_t i = 0; ok && i < data.size() / n; ++i) {
      double s = 0;
      for (std::size_t k = 0; k < n; ++k) s += (p[k] - data[i * n + k]) * (p[k] - data[i * n + k]);
      ok = s >= min_d2;
    }
    if (ok) data.insert(data.end(), p.begin(), p.end());
  }
  return data;
}
}  // namespace

TEST_CASE("a one-component mixture is gaussian_data for every kind and sigma in [1e-3, 1e3] and +inf", "[mixture]") {
  // Both evaluate the same per-component formulas from the same r = x - c mu, c and d: the
  // mixture as d z/sd and mu + s (c s/sd) z with z = r/sd, sd = sqrt(c^2 s^2 + d^2) (at most 7
  // roundings per term), gaussian_data as d r/v and mu + c s^2 r/v (4), and the responsibility
  // is exactly 1. So they agree to 16u relative to the size of the terms: |eps|, |mu| + |x0 - mu|,
  // c|eps| + d(|mu| + |x0 - mu|) for v, |eps|/d for the score. Seed 31.
  const std::vector<double> mu{0.3, -1.2, 0.0, 2.5, -0.7}, s{0.8, 0.05, 1.0, 0.0, 2.0};
  const diffusion::gaussian_data g(mu, s);
  std::vector<double> sigmas;
  for (int i = -12; i <= 12; ++i) sigmas.push_back(std::pow(10.0, i / 4.0));
  sigmas.push_back(inf);
  test::normal_source rng(31);
  std::vector<double> x, row_sigma;
  for (double sigma : sigmas)
    for (int rep = 0; rep < 4; ++rep) {
      const auto [c, d] = levels(sigma);
      for (std::size_t k = 0; k < mu.size(); ++k)
        x.push_back(static_cast<double>(c) * (mu[k] + s[k] * rng.normal()) + static_cast<double>(d) * rng.normal() * (rep == 3 ? 30 : 1));
      row_sigma.push_back(sigma);
    }
  for (prediction kind : kinds) {
    const diffusion::gaussian_mixture_data m({2.5}, {mu}, {s}, kind);
    const auto got = run(m, x, row_sigma);
    double worst = 0;
    for (std::size_t r = 0; r < row_sigma.size(); ++r) {
      const double sigma = row_sigma[r];
      const auto [cl, dl] = levels(sigma);
      const double c = static_cast<double>(cl), d = static_cast<double>(dl);
      for (std::size_t k = 0; k < mu.size(); ++k) {
        const double xt = x[r * mu.size() + k];
        const double eps = g.posterior_mean_eps(k, sigma, xt), x0 = g.posterior_mean_x0(k, sigma, xt);
        const double x0_terms = std::abs(mu[k]) + std::abs(x0 - mu[k]);
        double want = 0, scale = 0;
        switch (kind) {
          case prediction::epsilon: want = eps, scale = std::abs(eps); break;
          case prediction::sample: want = x0, scale = x0_terms; break;
          case prediction::v: want = c * eps - d * x0, scale = c * std::abs(eps) + d * x0_terms; break;
          case prediction::score: want = -eps / d, scale = std::abs(eps) / d; break;
          case prediction::flow_velocity: want = eps - x0, scale = std::abs(eps) + x0_terms; break;
        }
        const double err = std::abs(got[r * mu.size() + k] - want);
        INFO(diffusion::to_string(kind) << " sigma " << sigma << " k " << k << ": " << got[r * mu.size() + k] << " vs " << want);
        CHECK(err <= 16 * u * scale);
        if (scale > 0) worst = std::max(worst, err / (u * scale));
      }
    }
    INFO(diffusion::to_string(kind) << ": worst error " << worst << " u relative to the terms");
    CHECK(worst <= 16);
  }
}

TEST_CASE("two components in 1-D: E[x0|x_t], E[eps|x_t] and log q_t match a long-double quadrature", "[mixture]") {
  // Reference: the integrals Z = int p(x0) N(x_t; c x0, d^2) dx0 and int x0 p(x0) N(...) dx0 by the
  // trapezoidal rule in long double over [lo, hi] covering 16 posterior standard deviations
  // beyond every component's posterior mean, with step (smallest posterior stddev)/16. For a
  // smooth integrand that decays like a Gaussian the trapezoidal rule converges geometrically
  // (error ~ exp(-2 pi^2 tau^2/h^2) = exp(-5000) here), so the reference is exact to long
  // double rounding, ~1e-18. Library budget: the log-responsibilities l_j (|l_j| <= L) carry
  // ~4u|l_j| each, so E[x0] is within 32u(1 + L) max_j |m_j| (m_j the component posterior
  // means) plus 8u|E|; the same with |eps_j| for E[eps], and 32u(1 + L) absolutely for log q.
  const std::vector<double> w{0.3, 0.7}, mu{-1.0, 1.5}, s{0.4, 0.8};
  const diffusion::gaussian_mixture_data m(w, {{mu[0]}, {mu[1]}}, {{s[0]}, {s[1]}});
  for (double sigma : {0.05, 0.3, 1.0, 4.0})
    for (double xt : {-2.0, -0.4, 0.3, 1.1, 2.5}) {
      const auto [c, d] = levels(sigma);
      ld lo = inf, hi = -inf, tau_min = inf, L = 0, mmax = 0, emax = 0;
      for (std::size_t j = 0; j < 2; ++j) {
        const ld v = c * c * s[j] * s[j] + d * d, tau = s[j] * d / std::sqrt(v);
        const ld mj = mu[j] + c * s[j] * s[j] * (xt - c * mu[j]) / v;
        const ld ej = d * (xt - c * mu[j]) / v;
        lo = std::min(lo, mj - 16 * tau);
        hi = std::max(hi, mj + 16 * tau);
        tau_min = std::min(tau_min, tau);
        const ld z = (xt - c * mu[j]) / std::sqrt(v);
        L = std::max(L, std::abs(std::log(static_cast<ld>(w[j])) - std::log(std::sqrt(v)) - z * z / 2));
        mmax = std::max(mmax, std::abs(mj));
        emax = std::max(emax, std::abs(ej));
      }
      const ld h = tau_min / 16;
      const auto steps = static_cast<std::size_t>(std::ceil((hi - lo) / h));
      ld Z = 0, M = 0;
      for (std::size_t i = 0; i <= steps; ++i) {
        const ld x0 = lo + (hi - lo) * static_cast<ld>(i) / static_cast<ld>(steps);
        ld p = 0;
        for (std::size_t j = 0; j < 2; ++j)
          p += w[j] * std::exp(-(x0 - mu[j]) * (x0 - mu[j]) / (2 * s[j] * s[j])) / (s[j] * std::sqrt(2 * std::numbers::pi_v<ld>));
        const ld f = p * std::exp(-(xt - c * x0) * (xt - c * x0) / (2 * d * d)) / (d * std::sqrt(2 * std::numbers::pi_v<ld>));
        const ld weight = (i == 0 || i == steps) ? 0.5L : 1.0L;
        Z += weight * f;
        M += weight * f * x0;
      }
      Z *= (hi - lo) / static_cast<ld>(steps);
      M *= (hi - lo) / static_cast<ld>(steps);
      const ld E = M / Z, Eeps = (xt - c * E) / d;
      std::vector<double> x0(1), eps(1);
      const std::vector<double> xv{xt};
      m.posterior_mean_x0(sigma, xv, x0);
      m.posterior_mean_eps(sigma, xv, eps);
      const double lq = m.log_density(sigma, xv);
      INFO("sigma " << sigma << " x_t " << xt << ": x0 " << x0[0] << " vs " << static_cast<double>(E) << ", eps " << eps[0]
                    << " vs " << static_cast<double>(Eeps) << ", log q " << lq << " vs " << static_cast<double>(std::log(Z)));
      CHECK(std::abs(x0[0] - E) <= 32 * u * (1 + L) * mmax + 8 * u * std::abs(E));
      CHECK(std::abs(eps[0] - Eeps) <= 32 * u * (1 + L) * emax + 8 * u * std::abs(Eeps));
      CHECK(std::abs(lq - std::log(Z)) <= 32 * u * (1 + L));
    }
}

TEST_CASE("the score is a central difference of log_density (Tweedie's formula)", "[mixture]") {
  // Step h = 1e-4 times the smallest marginal stddev tau: the truncation error h^2 |f'''|/6 is
  // ~1e-8 |f'| and the rounding error u |log q| / h is ~1e-11/tau, so 1e-6 relative to the
  // largest score component holds with a wide margin. Seed 47.
  const diffusion::gaussian_mixture_data m({1.0, 2.0, 0.5}, {{0.0, 1.0, -1.0}, {2.0, -1.0, 0.5}, {-1.5, 0.0, 0.0}},
                                           {{0.5, 0.3, 1.0}, {1.0, 0.2, 0.4}, {0.3, 0.3, 0.3}});
  const std::vector<double> data = spread_points(12, 3, 0.05, 46);
  const diffusion::empirical_data e(data, 3);
  test::normal_source rng(47);
  for (double sigma : {0.0, 0.05, 0.4, 1.0, 3.0, 20.0})
    for (int rep = 0; rep < 5; ++rep) {
      const auto [c, d] = levels(sigma);
      std::vector<double> x(3);
      for (auto& v : x) v = static_cast<double>(c) * 1.5 * rng.normal() + static_cast<double>(d) * rng.normal();
      const double tau = std::max(static_cast<double>(d), 0.2 * static_cast<double>(c)), h = 1e-4 * tau;
      auto check = [&](const auto& model, const char* name) {
        std::vector<double> score(3);
        model.score(sigma, x, score);
        double smax = 0;
        for (double v : score) smax = std::max(smax, std::abs(v));
        for (std::size_t k = 0; k < 3; ++k) {
          auto xp = x, xm = x;
          xp[k] += h;
          xm[k] -= h;
          const double fd = (model.log_density(sigma, xp) - model.log_density(sigma, xm)) / (xp[k] - xm[k]);
          INFO(name << " sigma " << sigma << " k " << k << ": score " << score[k] << " vs difference " << fd);
          CHECK(std::abs(fd - score[k]) <= 1e-6 * smax);
        }
      };
      check(m, "mixture");
      if (sigma > 0) check(e, "empirical");  // an empirical distribution has no density at sigma = 0
    }
}

TEST_CASE("empirical_data equals a mixture of its points with zero spread and equal weights", "[mixture][empirical]") {
  // Both compute the same posterior; each is within the long-double reference's budget
  // (empirical_posterior above; the mixture's exponents carry the same kind of error, 4u|l_j|).
  // Points 0.3 apart in [-1, 1]^6, N = 40; rows near a point, between points and far off. Seed 53.
  constexpr std::size_t N = 40, n = 6;
  const auto data = spread_points(N, n, 0.09, 52);
  std::vector<std::vector<double>> means, stddevs(N, std::vector<double>(n, 0.0));
  for (std::size_t i = 0; i < N; ++i) means.emplace_back(data.begin() + static_cast<std::ptrdiff_t>(i * n), data.begin() + static_cast<std::ptrdiff_t>((i + 1) * n));
  const diffusion::gaussian_mixture_data m(std::vector<double>(N, 1.0), means, stddevs, prediction::sample);
  const diffusion::empirical_data e(data, n, prediction::sample);
  test::normal_source rng(53);
  for (double sigma : {1e-3, 0.01, 0.1, 0.3, 1.0, 3.0, 30.0, inf})
    for (int rep = 0; rep < 6; ++rep) {
      const auto [c, d] = levels(sigma);
      std::vector<double> x(n);
      const std::size_t j = static_cast<std::size_t>(rng.uniform() * N);
      for (std::size_t k = 0; k < n; ++k)
        x[k] = static_cast<double>(c) * data[j * n + k] + static_cast<double>(d) * rng.normal() * (rep < 3 ? 1.0 : 5.0);
      const auto ref = empirical_posterior(data, n, sigma, x);
      const auto gm = run(m, x, {sigma}), ge = run(e, x, {sigma});
      for (std::size_t k = 0; k < n; ++k) {
        INFO("sigma " << sigma << " rep " << rep << " k " << k << ": mixture " << gm[k] << ", empirical " << ge[k] << ", reference "
                      << static_cast<double>(ref.x0[k]) << " (budget " << ref.budget << ")");
        CHECK(std::abs(ge[k] - ref.x0[k]) <= ref.budget);
        CHECK(std::abs(gm[k] - ref.x0[k]) <= ref.budget);
      }
    }
}

TEST_CASE("empirical_data: stable far from every point, exact at a point as sigma -> 0, the mean at zero SNR",
          "[mixture][empirical]") {
  constexpr std::size_t N = 30, n = 4;
  const auto data = spread_points(N, n, 0.04, 61);
  const diffusion::empirical_data e(data, n, prediction::sample);
  test::normal_source rng(62);

  SECTION("x_t 1e3 away at small sigma: one weight 1, the nearest point returned exactly") {
    for (double sigma : {1e-2, 1e-1}) {
      const auto [c, d] = levels(sigma);
      std::vector<double> x(n);
      for (auto& v : x) v = 1e3 * rng.normal();
      // The nearest c x_i in long double; the exponent gaps here are ~1e5 or more, so every other
      // weight underflows to 0 and the output is that point bit for bit.
      std::size_t best = 0;
      ld best_d = inf;
      for (std::size_t i = 0; i < N; ++i) {
        ld s = 0;
        for (std::size_t k = 0; k < n; ++k) s += (x[k] - c * data[i * n + k]) * (x[k] - c * data[i * n + k]);
        if (s < best_d) best_d = s, best = i;
      }
      std::vector<double> w(N), x0(n);
      e.posterior_weights(sigma, x, w);
      e.posterior_mean_x0(sigma, x, x0);
      INFO("sigma " << sigma << ", nearest " << best);
      CHECK(w[best] == 1.0);
      for (std::size_t i = 0; i < N; ++i)
        if (i != best) CHECK(w[i] == 0.0);
      for (std::size_t k = 0; k < n; ++k) CHECK(x0[k] == data[best * n + k]);
      CHECK(std::isfinite(e.log_density(sigma, x)));
    }
  }

  SECTION("x_t 1e3 away at sigma = 1: weights spread, within the reference budget") {
    std::vector<double> x(n);
    for (auto& v : x) v = 1e3 * rng.normal();
    const auto ref = empirical_posterior(data, n, 1.0, x);
    const auto got = run(e, x, {1.0});
    for (std::size_t k = 0; k < n; ++k) CHECK(std::abs(got[k] - ref.x0[k]) <= ref.budget);
  }

  SECTION("x_t = c x_j + d eps as sigma -> 0 returns x_j exactly, and eps within rounding") {
    // Other points are >= 0.2 away, so their exponents exceed 0.02/(2 d^2) >= 1e4: underflow.
    const diffusion::empirical_data eps_model(data, n, prediction::epsilon);
    for (double sigma : {1e-3, 1e-6, 1e-10, 1e-100, 1e-200, 1e-300}) {
      const auto [c, d] = levels(sigma);
      const std::size_t j = static_cast<std::size_t>(rng.uniform() * N);
      std::vector<double> x(n), eps(n);
      for (std::size_t k = 0; k < n; ++k) {
        eps[k] = rng.normal();
        x[k] = static_cast<double>(c) * data[j * n + k] + static_cast<double>(d) * eps[k];
      }
      const auto x0 = run(e, x, {sigma}), got_eps = run(eps_model, x, {sigma});
      INFO("sigma " << sigma << " point " << j);
      for (std::size_t k = 0; k < n; ++k) {
        CHECK(x0[k] == data[j * n + k]);
        // x_t was rounded (u|x_t|) and c x_j is rounded: eps is off by at most 2u(|x_t| + |x_j|)/d.
        const double tol = 2 * u * (std::abs(x[k]) + std::abs(data[j * n + k])) / static_cast<double>(d) + 4 * u * std::abs(eps[k]);
        if (tol < 1) CHECK(std::abs(got_eps[k] - eps[k]) <= tol);
      }
    }
  }

  SECTION("sigma = +inf: uniform weights, E[x0] = the data mean, eps = x_t, v = -mean, score = -x_t") {
    std::vector<ld> mean(n, 0.0L);
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t k = 0; k < n; ++k) mean[k] += data[i * n + k] / static_cast<ld>(N);
    std::vector<double> x(n);
    for (auto& v : x) v = rng.normal();
    std::vector<double> w(N);
    e.posterior_weights(inf, x, w);
    for (double wi : w) CHECK(wi == Approx(1.0 / N).epsilon(4 * u));
    // The mean is a sum of N terms of size <= 1 divided by N: error <= N u.
    const auto x0 = run(e, x, {inf});
    for (std::size_t k = 0; k < n; ++k) CHECK(std::abs(x0[k] - mean[k]) <= N * u);
    const auto eps = run(diffusion::empirical_data(data, n, prediction::epsilon), x, {inf});
    const auto v = run(diffusion::empirical_data(data, n, prediction::v), x, {inf});
    const auto score = run(diffusion::empirical_data(data, n, prediction::score), x, {inf});
    for (std::size_t k = 0; k < n; ++k) {
      CHECK(eps[k] == x[k]);
      CHECK(v[k] == -x0[k]);
      CHECK(score[k] == -x[k]);
    }
    CHECK(e.log_density(inf, x) == Approx(-0.5 * (n * std::log(2 * std::numbers::pi) + x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + x[3] * x[3])).epsilon(8 * u));
  }
}

TEST_CASE("empirical_data: the cancellation of the expanded norm is repaired near the data", "[mixture][empirical]") {
  // Points offset by 1e4 in every coordinate (|x|^2 ~ 4e8) with neighbours 1e-3 apart, sigma
  // 1e-3: the expansion |x_t|^2 - 2c x.x_t + c^2|x|^2 alone would err by ~(n+8)u 1.6e9 ~ 2e-6 in D,
  // i.e. ~1 in the exponents D/(2d^2); the direct recomputation brings every weight within the
  // reference budget. Seed 71.
  constexpr std::size_t N = 50, n = 4;
  test::normal_source rng(71);
  std::vector<double> data(N * n);
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t k = 0; k < n; ++k) data[i * n + k] = 1e4 + (i < 5 ? 1e-3 * rng.normal() : rng.normal());
  const diffusion::empirical_data e(data, n, prediction::sample);
  for (double sigma : {1e-4, 1e-3, 1e-2})
    for (std::size_t j = 0; j < 5; ++j) {
      const auto [c, d] = levels(sigma);
      std::vector<double> x(n);
      for (std::size_t k = 0; k < n; ++k) x[k] = static_cast<double>(c) * data[j * n + k] + static_cast<double>(d) * rng.normal();
      const auto ref = empirical_posterior(data, n, sigma, x);
      const auto got = run(e, x, {sigma});
      for (std::size_t k = 0; k < n; ++k) {
        INFO("sigma " << sigma << " near point " << j << " k " << k << ": " << got[k] << " vs " << static_cast<double>(ref.x0[k])
                      << " (budget " << ref.budget << ", offset from the point " << static_cast<double>(ref.x0[k] - data[j * n + k]) << ")");
        CHECK(std::abs(got[k] - ref.x0[k]) <= ref.budget);
      }
    }
}

TEST_CASE("the mixture at the extreme noise levels: sigma = 0, tiny sigma with point masses, +inf", "[mixture]") {
  const diffusion::gaussian_mixture_data points({1.0, 1.0, 2.0}, {{0.0, 0.0}, {1.0, 0.0}, {0.0, 1.0}},
                                                {{0.0, 0.0}, {0.0, 0.0}, {0.0, 0.0}}, prediction::sample);
  const diffusion::gaussian_mixture_data smooth({1.0, 3.0}, {{0.0, 0.0}, {1.0, -1.0}}, {{0.5, 1.0}, {0.2, 0.3}},
                                                prediction::sample);
  const std::vector<double> x{0.9, 0.2};
  // sigma = 0: x_t = x0, so the x0 prediction is x_t itself and eps, v are 0.
  for (prediction kind : {prediction::sample, prediction::epsilon, prediction::v}) {
    const diffusion::gaussian_mixture_data p({1.0, 1.0, 2.0}, {{0.0, 0.0}, {1.0, 0.0}, {0.0, 1.0}},
                                             {{0.0, 0.0}, {0.0, 0.0}, {0.0, 0.0}}, kind);
    const auto out = run(p, x, {0.0});
    CHECK(out[0] == (kind == prediction::sample ? x[0] : 0.0));
    CHECK(out[1] == (kind == prediction::sample ? x[1] : 0.0));
  }
  // sigma = 0, data with a density: the score is the data score -sum_j r_j (x - mu_j)/s_j^2.
  {
    std::vector<double> r(2), score(2);
    smooth.responsibilities(0.0, x, r);
    smooth.score(0.0, x, score);
    const double s0[2] = {0.5, 1.0}, s1[2] = {0.2, 0.3}, m1[2] = {1.0, -1.0};
    for (std::size_t k = 0; k < 2; ++k) {
      const double want = -r[0] * x[k] / (s0[k] * s0[k]) - r[1] * (x[k] - m1[k]) / (s1[k] * s1[k]);
      CHECK(score[k] == Approx(want).epsilon(16 * u));
    }
  }
  // Point masses as sigma -> 0, down to subnormal sigma: the nearest mean, exactly (below
  // sigma ~ 1e-154 every sum of z^2 overflows here and the log-space comparison decides).
  for (double sigma : {1e-3, 1e-100, 1e-200, 1e-310}) {
    INFO("sigma " << sigma);
    const auto out = run(points, x, {sigma});
    CHECK(out[0] == 1.0);
    CHECK(out[1] == 0.0);
  }
  // sigma = +inf: responsibilities are the weights, E[x0] the mixture mean, eps = x_t, score = -x_t.
  std::vector<double> r(3);
  points.responsibilities(inf, x, r);
  CHECK(r[0] == Approx(0.25).epsilon(4 * u));
  CHECK(r[2] == Approx(0.5).epsilon(4 * u));
  const auto out = run(points, x, {inf});
  CHECK(out[0] == Approx(0.25).epsilon(8 * u));
  CHECK(out[1] == Approx(0.5).epsilon(8 * u));
  std::vector<double> eps(2), score(2);
  points.posterior_mean_eps(inf, x, eps);
  points.score(inf, x, score);
  // Per component eps_j = x_t exactly; the sum of the responsibilities is 1 to 4u.
  for (std::size_t k = 0; k < 2; ++k) {
    CHECK(eps[k] == Approx(x[k]).epsilon(4 * u));
    CHECK(score[k] == Approx(-x[k]).epsilon(4 * u));
  }
  CHECK(points.log_density(inf, x) == Approx(-std::log(2 * std::numbers::pi) - 0.5 * (x[0] * x[0] + x[1] * x[1])).epsilon(8 * u));
  // Far from every component: responsibilities stay finite and sum to 1.
  const std::vector<double> far{3e3, -4e3};
  for (double sigma : {1e-2, 1.0}) {
    smooth.responsibilities(sigma, far, std::span<double>(r.data(), 2));
    CHECK(std::isfinite(r[0]));
    CHECK(r[0] + r[1] == Approx(1.0).epsilon(4 * u));
    CHECK(std::isfinite(smooth.log_density(sigma, far)));
  }
}

TEMPLATE_TEST_CASE("float and double tensors, a batch with mixed sigma equals row-by-row evaluation", "[mixture][empirical]",
                   float, double) {
  // Both models compute in double from the (converted) input and round once, so a float call
  // equals the double call on the same values rounded to float, bit for bit. Rows: 37 (more
  // than two blocks of 16 for empirical_data), sigma cycling through 0, +inf, small and large
  // values so that blocks mix sparse and dense weighted sums. Against a single-row call, the
  // mixture is bit-identical (the same code per row); empirical_data's batch product sums in a
  // different order, so both are compared with the long-double reference's budget. Seed 83.
  using T = TestType;
  constexpr std::size_t N = 64, n = 5, rows = 37;
  const auto data = spread_points(N, n, 0.05, 82);
  const std::vector<double> cycle{0.0, 0.02, inf, 0.3, 5.0, 1.0, 0.07, 200.0};
  test::normal_source rng(83);
  std::vector<double> sigma(rows);
  std::vector<T> x(rows * n);
  for (std::size_t r = 0; r < rows; ++r) {
    sigma[r] = cycle[r % cycle.size()];
    const auto [c, d] = levels(sigma[r]);
    const std::size_t j = static_cast<std::size_t>(rng.uniform() * N);
    for (std::size_t k = 0; k < n; ++k)
      x[r * n + k] = static_cast<T>(static_cast<double>(c) * data[j * n + k] + static_cast<double>(d) * rng.normal());
  }
  const std::vector<double> xd(x.begin(), x.end());
  std::vector<std::vector<double>> means, stddevs;
  for (std::size_t i = 0; i < 6; ++i) {
    means.emplace_back(data.begin() + static_cast<std::ptrdiff_t>(i * n), data.begin() + static_cast<std::ptrdiff_t>((i + 1) * n));
    stddevs.emplace_back(n, 0.1 * static_cast<double>(i + 1));
  }
  const std::vector<double> weights{1, 2, 3, 1, 2, 3};
  for (prediction kind : kinds) {
    INFO(diffusion::to_string(kind));
    // Score at sigma = 0 is refused for an empirical distribution: replace those rows' sigma.
    std::vector<double> sig = sigma;
    if (kind == prediction::score)
      for (auto& s : sig)
        if (s == 0.0) s = 1e-3;
    const diffusion::gaussian_mixture_data m(weights, means, stddevs, kind);
    const diffusion::empirical_data e(std::vector<T>(data.begin(), data.end()), n, kind);  // float data is widened exactly
    const std::vector<double> stored(e.data().begin(), e.data().end());
    const auto gm = run(m, x, sig), ge = run(e, x, sig);
    const auto dm = run(m, xd, sig), de = run(e, xd, sig);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CHECK(gm[i] == static_cast<T>(dm[i]));
      CHECK(ge[i] == static_cast<T>(de[i]));
    }
    for (std::size_t r = 0; r < rows; ++r) {
      const std::span<const double> row(xd.data() + r * n, n);
      const auto one_m = run(m, std::vector<double>(row.begin(), row.end()), {sig[r]});
      const auto one_e = run(e, std::vector<double>(row.begin(), row.end()), {sig[r]});
      for (std::size_t k = 0; k < n; ++k) CHECK(one_m[k] == dm[r * n + k]);
      if (kind != prediction::sample) continue;
      const auto ref = empirical_posterior(stored, n, sig[r], row);
      for (std::size_t k = 0; k < n; ++k) {
        INFO("row " << r << " sigma " << sig[r] << " k " << k);
        if (sig[r] == 0.0) {
          CHECK(de[r * n + k] == row[k]);
          continue;
        }
        CHECK(std::abs(de[r * n + k] - ref.x0[k]) <= ref.budget);
        CHECK(std::abs(one_e[k] - ref.x0[k]) <= ref.budget);
      }
    }
  }
}

TEST_CASE("empirical_data copies float or double data from any tensor, example after example", "[mixture][empirical]") {
  // A column-major n x N Eigen matrix holds one example per column, contiguously.
  Eigen::MatrixXf m(3, 2);
  m << 1.5f, -2.0f, 0.25f, 3.0f, 0.1f, 7.0f;
  const diffusion::empirical_data e(m, 3);
  REQUIRE(e.size() == 2);
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t k = 0; k < 3; ++k) CHECK(e.example(i)[k] == static_cast<double>(m(static_cast<Eigen::Index>(k), static_cast<Eigen::Index>(i))));
  const std::vector<double> v{1.5, 0.25, 0.1, -2.0, 3.0, 7.0};
  const diffusion::empirical_data from_span(std::span<const double>(v), 3), moved(std::vector<double>(v), 3);
  CHECK(std::vector<double>(from_span.data().begin(), from_span.data().end()) == v);
  CHECK(std::vector<double>(moved.data().begin(), moved.data().end()) == v);
  CHECK(e.mean()[0] == -0.25);  // (1.5 - 2)/2 and (0.25 + 3)/2, exact in binary
  CHECK(e.mean()[1] == 1.625);
}

TEST_CASE("argument errors name the argument, its index and the allowed range", "[mixture][errors]") {
  using Catch::Matchers::Contains;
  using V = std::vector<double>;
  using VV = std::vector<std::vector<double>>;
  using M = diffusion::gaussian_mixture_data;
  CHECK_THROWS_WITH(M(V{}, VV{}, VV{}), Contains("weights is empty"));
  CHECK_THROWS_WITH(M(V{1, 1}, VV{{0.0}}, VV{{1.0}, {1.0}}), Contains("means.size() = 1") && Contains("weights.size() = 2"));
  CHECK_THROWS_WITH(M(V{1, 1}, VV{{0.0}, {1.0}}, VV{{1.0}}), Contains("stddevs.size() = 1"));
  CHECK_THROWS_WITH(M(V{1}, VV{{}}, VV{{}}), Contains("means[0] is empty"));
  CHECK_THROWS_WITH(M(V{1, 1}, VV{{0.0, 1.0}, {1.0}}, VV{{1.0, 1.0}, {1.0, 1.0}}), Contains("means[1].size() = 1"));
  CHECK_THROWS_WITH(M(V{1, 1}, VV{{0.0, 1.0}, {1.0, 0.0}}, VV{{1.0, 1.0}, {1.0}}), Contains("stddevs[1].size() = 1"));
  CHECK_THROWS_WITH(M(V{1, -1}, VV{{0.0}, {1.0}}, VV{{1.0}, {1.0}}), Contains("weights[1] = -1") && Contains("> 0"));
  CHECK_THROWS_WITH(M(V{1, 0}, VV{{0.0}, {1.0}}, VV{{1.0}, {1.0}}), Contains("weights[1] = 0"));
  CHECK_THROWS_WITH(M(V{std::nan(""), 1}, VV{{0.0}, {1.0}}, VV{{1.0}, {1.0}}), Contains("weights[0] = nan"));
  CHECK_THROWS_WITH(M(V{1, inf}, VV{{0.0}, {1.0}}, VV{{1.0}, {1.0}}), Contains("weights[1] = inf"));
  CHECK_THROWS_WITH(M(V{1, 1}, VV{{0.0, 1.0}, {1.0, std::nan("")}}, VV{{1.0, 1.0}, {1.0, 1.0}}), Contains("means[1][1] = nan"));
  CHECK_THROWS_WITH(M(V{1, 1}, VV{{0.0, 1.0}, {1.0, 0.0}}, VV{{1.0, -0.5}, {1.0, 1.0}}),
                    Contains("stddevs[0][1] = -0.5") && Contains("[0, inf)"));
  CHECK_THROWS_WITH(M(V{1}, VV{{0.0}}, VV{{inf}}), Contains("stddevs[0][0] = inf"));
  CHECK_THROWS_AS(M(V{1}, VV{{0.0}}, VV{{-1.0}}), std::invalid_argument);

  const M m(V{1, 3}, VV{{0.0, 1.0}, {1.0, 0.0}}, VV{{1.0, 0.0}, {1.0, 1.0}});
  CHECK(m.weight(1) == Approx(0.75).epsilon(4 * u));
  CHECK_THROWS_AS(m.weight(2), std::out_of_range);
  CHECK_THROWS_AS(m.mean(2), std::out_of_range);
  CHECK_THROWS_AS(m.stddev(2), std::out_of_range);
  V out(2), out3(3), x{0.1, 0.2};
  CHECK_THROWS_WITH(m.posterior_mean_x0(-1.0, x, out), Contains("sigma = -1") && Contains("[0, inf]"));
  CHECK_THROWS_WITH(m.posterior_mean_x0(std::nan(""), x, out), Contains("sigma = nan"));
  CHECK_THROWS_WITH(m.posterior_mean_x0(1.0, V{0.1}, out), Contains("x.size() = 1"));
  CHECK_THROWS_WITH(m.posterior_mean_eps(1.0, x, out3), Contains("out.size() = 3"));
  CHECK_THROWS_WITH(m.responsibilities(1.0, x, out3), Contains("out.size() = 3"));
  CHECK_THROWS_AS(m.log_density(-2.0, x), std::invalid_argument);
  // A point mass (stddev 0) has no density at sigma = 0.
  CHECK(m.has_point_mass());
  CHECK_THROWS_AS(m.score(0.0, x, out), std::domain_error);
  CHECK_THROWS_AS(m.log_density(0.0, x), std::domain_error);
  CHECK_THROWS_AS(m.responsibilities(0.0, x, out), std::domain_error);
  const M ms(V{1, 3}, VV{{0.0, 1.0}, {1.0, 0.0}}, VV{{1.0, 0.0}, {1.0, 1.0}}, prediction::score);
  CHECK_THROWS_AS(run(ms, x, {0.0}), std::domain_error);
  CHECK_NOTHROW(run(ms, x, {1e-3}));

  using E = diffusion::empirical_data;
  CHECK_THROWS_WITH(E(V{}, 3), Contains("data is empty"));
  CHECK_THROWS_WITH(E(V{1, 2, 3}, 0), Contains("dim = 0") && Contains("[1, inf)"));
  CHECK_THROWS_WITH(E(V{1, 2, 3, 4}, 3), Contains("data.size() = 4") && Contains("dim = 3"));
  CHECK_THROWS_WITH(E(V{1, 2, 3, 4, std::nan(""), 6}, 2), Contains("data[4] (example 2, element 0) = nan"));
  CHECK_THROWS_WITH(E(std::vector<float>{1, 2, 3, std::numeric_limits<float>::infinity()}, 2), Contains("data[3] (example 1, element 1) = inf"));
  CHECK_THROWS_WITH(E(V{1e200, 1e200}, 2), Contains("example 0") && Contains("overflows"));
  const E e(V{0, 0, 1, 1, 2, 0}, 2);
  CHECK(e.size() == 3);
  CHECK_THROWS_AS(e.example(3), std::out_of_range);
  CHECK_THROWS_WITH(e.posterior_mean_x0(-0.5, x, out), Contains("sigma = -0.5"));
  CHECK_THROWS_WITH(e.posterior_mean_x0(1.0, V{1, 2, 3}, out), Contains("x.size() = 3"));
  CHECK_THROWS_WITH(e.posterior_weights(1.0, x, out), Contains("out.size() = 2"));
  CHECK_THROWS_AS(e.score(0.0, x, out), std::domain_error);
  CHECK_THROWS_AS(e.log_density(0.0, x), std::domain_error);
  CHECK_THROWS_AS(e.posterior_weights(0.0, x, out3), std::domain_error);
  CHECK_THROWS_AS(run(E(V{0, 0, 1, 1}, 2, prediction::score), x, {0.0}), std::domain_error);
  V x0(2);
  e.posterior_mean_x0(0.0, x, x0);  // sigma = 0: x_t itself
  CHECK(x0 == x);
}
