// Forward process, posterior and conversions: against the 50-digit reference, against the
// Markov chain of DDPM Eq. 2 by Monte Carlo, and against each other (round trips).
#include <catch2/catch.hpp>

#include <diffusion/gaussian.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::prediction;
constexpr prediction kinds[] = {prediction::epsilon, prediction::sample, prediction::v, prediction::score};
constexpr prediction all_kinds[] = {prediction::epsilon, prediction::sample, prediction::v, prediction::score,
                                    prediction::flow_velocity};
const char* short_name(prediction p) {
  switch (p) {
    case prediction::epsilon: return "eps";
    case prediction::sample: return "x0";
    case prediction::v: return "v";
    case prediction::score: return "score";
    case prediction::flow_velocity: return "u";
  }
  return "?";
}
template <class T>
double D(T x) {
  return static_cast<double>(x);
}
template <class T>
std::vector<T> normals(std::size_t n, std::uint64_t seed) {
  test::normal_source g(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(g.normal());
  return v;
}
}  // namespace

TEST_CASE("forward marginal of Eq. 4 equals the Markov chain of Eq. 2 (Monte Carlo)", "[gaussian][montecarlo]") {
  // Simulate x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z step by step for N paths and
  // compare the empirical mean and variance with q_marginal. Tolerance 5 standard errors
  // per check: false-failure probability < 6e-7 each, < 1e-5 for the 12 checks. Seed 20261127.
  const auto betas = diffusion::linear_betas(100, 1e-3, 0.05);
  const diffusion::noise_schedule s(betas);
  constexpr std::size_t N = 100000;
  constexpr double x0 = 0.8;
  test::normal_source g(20261127);
  std::vector<double> x(N, x0);
  for (std::size_t i = 0; i < betas.size(); ++i) {
    const double a = std::sqrt(1.0 - betas[i]), b = std::sqrt(betas[i]);
    for (auto& xi : x) xi = a * xi + b * g.normal();
    if (i == 0 || i == 9 || i == 49 || i == 99) {
      double mean = 0, m2 = 0;
      for (double xi : x) mean += xi;
      mean /= N;
      for (double xi : x) m2 += (xi - mean) * (xi - mean);
      const double var = m2 / (N - 1);
      const auto q = diffusion::q_marginal(s, i);
      INFO("step " << i << ": mean " << mean << " vs " << q.mean_coef * x0 << ", var " << var << " vs " << q.variance);
      CHECK(std::abs(mean - q.mean_coef * x0) <= 5.0 * std::sqrt(q.variance / N));
      CHECK(std::abs(var - q.variance) <= 5.0 * q.variance * std::sqrt(2.0 / (N - 1)));
      CHECK(q.std * q.std == Approx(q.variance).epsilon(4e-16));
    }
  }
}

TEMPLATE_TEST_CASE("q_sample and velocity_target apply Eq. 4 and v = sqrt(ab) eps - sqrt(1-ab) x0", "[gaussian]", float,
                   double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::cosine_betas(1000));
  const std::size_t n = 37;
  const auto x0 = normals<T>(n, 1), eps = normals<T>(n, 2);
  std::vector<T> xt(n), v(n);
  const double u = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2;
  for (std::size_t t : {0u, 1u, 500u, 999u}) {
    diffusion::q_sample(s, t, x0, eps, xt);
    diffusion::velocity_target(s, t, x0, eps, v);
    const double c = s[t].sqrt_alpha_bar, d = s[t].sqrt_one_minus_alpha_bar;
    for (std::size_t k = 0; k < n; ++k) {
      const double ax = c * D(x0[k]), by = d * D(eps[k]);
      // coefficient rounding to T (u each) + fma(a, x, b*y) (u|by| + u|result|).
      const double bound = 3 * u * (std::abs(ax) + std::abs(by)) + 1e-300;
      CHECK(std::abs(static_cast<double>(xt[k]) - (ax + by)) <= bound);
      const double vbound = 3 * u * (std::abs(c * D(eps[k])) + std::abs(d * D(x0[k]))) + 1e-300;
      CHECK(std::abs(static_cast<double>(v[k]) - (c * D(eps[k]) - d * D(x0[k]))) <= vbound);
    }
  }
  SECTION("batch: one timestep per row equals the per-row calls; in place is allowed") {
    const std::vector<int> ts = {3, 999, 0, 250};
    std::vector<T> a(4 * 5), b(4 * 5), e(4 * 5), out(4 * 5);
    auto xa = normals<T>(20, 3), ea = normals<T>(20, 4);
    diffusion::q_sample(s, ts, xa, ea, out);
    for (std::size_t r = 0; r < 4; ++r) {
      std::vector<T> row(5);
      diffusion::q_sample(s, static_cast<std::size_t>(ts[r]), std::span<const T>(xa).subspan(5 * r, 5),
                          std::span<const T>(ea).subspan(5 * r, 5), row);
      for (std::size_t k = 0; k < 5; ++k) CHECK(out[5 * r + k] == row[k]);
    }
    diffusion::q_sample(s, ts, xa, ea, xa);  // in place over x0
    CHECK(xa == out);
  }
}

TEST_CASE("posterior and skip posterior match the reference, skip with s = t-1 is Eq. 7", "[gaussian][reference]") {
  const auto& ref = test::reference::schedules();
  double worst = 0;
  for (const std::string ds : {"linear_1000", "cosine_1000", "zero_snr_scaled_linear_1000"}) {
    const diffusion::noise_schedule s(ref.betas(ds));
    for (const auto& [key, want] : ref.values) {
      const std::string prefix = ds + " skip_";
      if (key.rfind(prefix, 0) != 0) continue;
      const auto sp = key.find(' ', prefix.size());
      const std::string q = key.substr(prefix.size(), sp - prefix.size());
      const std::string idx = key.substr(sp + 1);
      const std::size_t t = std::stoul(idx.substr(0, idx.find(':'))), s_to = std::stoul(idx.substr(idx.find(':') + 1));
      const auto p = diffusion::skip_posterior(s, t, s_to);
      const double got = q == "coef_x0" ? p.coef_x0 : q == "coef_xt" ? p.coef_xt : p.variance;
      const double err = test::ulps(got, want);
      worst = std::max(worst, err);
      INFO(ds << " skip " << q << " " << idx << ": " << got << " vs " << want);
      CHECK(err <= 1);
    }
    for (std::size_t t = 1; t < s.size(); t += 37) {
      const auto a = diffusion::posterior(s, t), b = diffusion::skip_posterior(s, t, t - 1);
      INFO(ds << " t = " << t);
      CHECK(test::ulps(a.coef_x0, b.coef_x0) <= 2);
      CHECK(test::ulps(a.coef_xt, b.coef_xt) <= 2);
      CHECK(test::ulps(a.variance, b.variance) <= 2);
      CHECK(a.log_variance == Approx(b.log_variance).epsilon(1e-15));
    }
  }
  WARN("skip posterior: max error " << worst << " ulp");
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const auto p0 = diffusion::posterior(s, 0);
  CHECK(p0.coef_x0 == 1.0);
  CHECK(p0.coef_xt == 0.0);
  CHECK(p0.variance == 0.0);
  CHECK(p0.log_variance == -std::numeric_limits<double>::infinity());
  CHECK(p0.log_variance_clipped == s[1].posterior_log_variance_clipped);
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::skip_posterior(s, 5, 5), Contains("s = 5 must be < t = 5"));
  CHECK_THROWS_AS(diffusion::skip_posterior(s, 1000, 5), std::out_of_range);
}

TEMPLATE_TEST_CASE("posterior_mean applies Eq. 7 per element and per row", "[gaussian]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const auto x0 = normals<T>(12, 5), xt = normals<T>(12, 6);
  std::vector<T> m(12), mb(12);
  const double u = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2;
  diffusion::posterior_mean(s, 10, x0, xt, m);
  for (std::size_t k = 0; k < 12; ++k) {
    const double ax = s[10].posterior_mean_coef_x0 * D(x0[k]), by = s[10].posterior_mean_coef_xt * D(xt[k]);
    CHECK(std::abs(static_cast<double>(m[k]) - (ax + by)) <= 3 * u * (std::abs(ax) + std::abs(by)));
  }
  const std::vector<std::size_t> ts = {10, 10, 10};
  diffusion::posterior_mean(s, ts, x0, xt, mb);
  CHECK(m == mb);
}

TEST_CASE("conversion coefficients match the reference for all 12 pairs", "[gaussian][reference]") {
  const auto& ref = test::reference::schedules();
  double worst = 0;
  for (const std::string ds : {"linear_1000", "cosine_1000", "zero_snr_scaled_linear_1000"}) {
    const diffusion::noise_schedule s(ref.betas(ds));
    for (prediction from : kinds)
      for (prediction to : kinds) {
        if (from == to) continue;
        const std::string q = std::string("conv_") + short_name(from) + "_" + short_name(to);
        for (std::size_t t : ref.indices(ds, q + "_a")) {
          const auto k = diffusion::conversion_coefficients(s, t, from, to);
          const double ea = test::ulps(k.a, ref.get(ds, q + "_a", t)), eb = test::ulps(k.b, ref.get(ds, q + "_b", t));
          INFO(ds << " " << q << " t = " << t << ": a " << k.a << " (" << ea << " ulp), b " << k.b << " (" << eb << " ulp)");
          // Each coefficient is at most two roundings of table entries that are within 1 ulp.
          CHECK(ea <= 3);
          CHECK(eb <= 3);
          worst = std::max({worst, ea, eb});
        }
      }
  }
  WARN("conversion coefficients: max error " << worst << " ulp");
}

TEMPLATE_TEST_CASE("conversions round-trip and agree with the forward process", "[gaussian]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
  const std::size_t n = 16;
  const auto x0 = normals<T>(n, 7), eps = normals<T>(n, 8);
  for (std::size_t t : {0u, 100u, 999u}) {
    std::vector<T> xt(n), v(n), tmp(n), back(n);
    diffusion::q_sample(s, t, x0, eps, xt);
    diffusion::velocity_target(s, t, x0, eps, v);
    // Exact kinds from (x0, eps) computed in double for reference.
    const double c = s[t].sqrt_alpha_bar, d = s[t].sqrt_one_minus_alpha_bar;
    auto truth = [&](prediction p, std::size_t k) {
      switch (p) {
        case prediction::epsilon: return static_cast<double>(eps[k]);
        case prediction::sample: return static_cast<double>(x0[k]);
        case prediction::v: return c * D(eps[k]) - d * D(x0[k]);
        case prediction::score: return -static_cast<double>(eps[k]) / d;
        case prediction::flow_velocity: return D(eps[k]) - D(x0[k]);
      }
      return 0.0;
    };
    for (prediction from : all_kinds) {
      std::vector<T> in(n);
      for (std::size_t k = 0; k < n; ++k) in[k] = static_cast<T>(truth(from, k));
      for (prediction to : all_kinds) {
        diffusion::convert_prediction(s, t, from, to, xt, in, tmp);
        const auto ab = diffusion::conversion_coefficients(s, t, from, to);
        for (std::size_t k = 0; k < n; ++k) {
          // Error: the rounding of xt and in (u|a xt| + u|b in|) plus the kernel's 3u(|a xt| + |b in|).
          const double scale = std::abs(ab.a * D(xt[k])) + std::abs(ab.b * D(in[k]));
          const double tol = 8 * D(std::numeric_limits<T>::epsilon() / 2) * scale;
          INFO("t = " << t << " " << short_name(from) << " -> " << short_name(to) << " k = " << k);
          CHECK(std::abs(static_cast<double>(tmp[k]) - truth(to, k)) <= tol);
        }
      }
    }
  }
}

TEST_CASE("conversions at a zero terminal SNR step raise where they divide by sqrt(alpha_bar) = 0", "[gaussian][errors]") {
  const diffusion::noise_schedule z(diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(1000)));
  using Catch::Matchers::Contains;
  CHECK_THROWS_AS(diffusion::conversion_coefficients(z, 999, prediction::epsilon, prediction::sample), std::domain_error);
  CHECK_THROWS_WITH(diffusion::conversion_coefficients(z, 999, prediction::score, prediction::v),
                    Contains("sqrt(alpha_bar) = 0 at t = 999") && Contains("zero terminal SNR"));
  // v -> x0 is fine there: x0 = -v.
  const auto k = diffusion::conversion_coefficients(z, 999, prediction::v, prediction::sample);
  CHECK(k.a == 0.0);
  CHECK(k.b == -1.0);
  std::vector<float> xt(6, 1.0f), in(6, 2.0f), out(6);
  const std::vector<std::size_t> ts = {0, 999};
  CHECK_THROWS_AS(diffusion::convert_prediction(z, ts, prediction::epsilon, prediction::sample, xt, in, out),
                  std::domain_error);
  CHECK(out == std::vector<float>(6, 0.0f));  // validated before anything was written
}

TEST_CASE("tensor functions reject bad sizes, empty tensors and bad timesteps", "[gaussian][errors]") {
  using Catch::Matchers::Contains;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  std::vector<float> a(6), b(6), c(5), out(6), empty;
  CHECK_THROWS_WITH(diffusion::q_sample(s, 0, a, c, out), Contains("x0.size() = 6 differs from noise.size() = 5"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, 0, a, b, c), Contains("xt.size() = 5"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, 0, empty, empty, empty), Contains("x0 is empty"));
  CHECK_THROWS_AS(diffusion::q_sample(s, 1000, a, b, out), std::out_of_range);
  CHECK_THROWS_WITH(diffusion::q_sample(s, 1000, a, b, out), Contains("timestep = 1000") && Contains("[0, 1000)"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, std::vector<int>{1, 2, 3, 4}, a, b, out),
                    Contains("batch size 4") && Contains("does not divide the tensor size 6"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, std::vector<long>{1, -1}, a, b, out), Contains("timesteps[1] = -1"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, std::vector<int>{1, 1000}, a, b, out), Contains("timesteps[1] = 1000"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, std::vector<int>{}, a, b, out), Contains("timesteps is empty"));
  CHECK_THROWS_WITH(diffusion::posterior_mean(s, 0, a, c, out), Contains("x0.size() = 6 differs from xt.size() = 5"));
  CHECK_THROWS_WITH(diffusion::convert_prediction(s, 0, prediction::v, prediction::epsilon, a, c, out), Contains("in.size() = 5"));
  CHECK_THROWS_WITH(diffusion::velocity_target(s, 0, a, b, c), Contains("v.size() = 5"));
}

TEST_CASE("Eigen arrays and user spans are accepted, a non-contiguous Eigen block is refused", "[gaussian][tensor]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  Eigen::ArrayXXf x0 = Eigen::ArrayXXf::Constant(3, 4, 1.0f), eps = Eigen::ArrayXXf::Zero(3, 4), xt(3, 4);
  diffusion::q_sample(s, 999, x0, eps, xt);
  CHECK((xt == static_cast<float>(s[999].sqrt_alpha_bar)).all());
  Eigen::MatrixXd big = Eigen::MatrixXd::Ones(4, 4);
  Eigen::VectorXd out(4);
  auto block = big.block(0, 0, 2, 2);
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::q_sample(s, 0, block, block, out), Contains("not contiguous"));
  auto col = big.col(1);  // a column of a column-major matrix is contiguous
  diffusion::q_sample(s, 0, col, col, out);
  CHECK(out[0] == Approx(s[0].sqrt_alpha_bar + s[0].sqrt_one_minus_alpha_bar));
}
