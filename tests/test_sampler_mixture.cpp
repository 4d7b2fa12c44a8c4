// DDPM ancestral sampling (Algorithm 2, all 1000 steps, fixed_large) with the exact denoiser of
// a 2-D Gaussian mixture reproduces the mixture: component weights, means and standard
// deviations on 1e5 samples. Components are >= 4.7 standard deviations apart, so assigning a
// sample to the nearest mean misclassifies < 1e-5 of them. Tolerance: 5 standard errors per
// statistic (false-failure probability < 6e-7 each, < 1e-5 for the 15 checks), plus the
// discretization bias of the chain, which at 1000 steps is below 1e-3 in standard deviation
// (the exact recursion for one Gaussian component, see test_sampler_ddpm). Seed 2026.
// Runs ~20 s in Release: labelled "slow", excluded from the sanitizer preset.
#include <catch2/catch.hpp>

#include <diffusion/mixture.hpp>
#include <diffusion/sampler_ddpm.hpp>

#include <cmath>
#include <vector>

#include "support.hpp"

TEST_CASE("DDPM ancestral sampling reproduces a Gaussian mixture", "[samplers][ddpm][montecarlo][slow]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const std::vector<double> w = {0.5, 0.3, 0.2};
  const std::vector<std::vector<double>> mu = {{-1.5, 0.0}, {1.5, 1.0}, {0.0, -1.8}}, sd = {{0.3, 0.4}, {0.4, 0.25}, {0.35, 0.3}};
  diffusion::gaussian_mixture_data g(w, mu, sd);
  test::test_noise noise{2026};
  constexpr std::size_t N = 100000;
  std::vector<double> x(2 * N);
  diffusion::ddpm_sample(s, g, x, N, noise, {.variance = diffusion::variance_type::fixed_large});
  double count[3] = {}, sum[3][2] = {}, sq[3][2] = {};
  for (std::size_t i = 0; i < N; ++i) {
    std::size_t best = 0;
    double bd = 1e300;
    for (std::size_t c = 0; c < 3; ++c) {
      const double d = std::hypot(x[2 * i] - mu[c][0], x[2 * i + 1] - mu[c][1]);
      if (d < bd) {
        bd = d;
        best = c;
      }
    }
    ++count[best];
    for (std::size_t k = 0; k < 2; ++k) {
      sum[best][k] += x[2 * i + k];
      sq[best][k] += x[2 * i + k] * x[2 * i + k];
    }
  }
  for (std::size_t c = 0; c < 3; ++c) {
    const double p = count[c] / N;
    INFO("component " << c << ": weight " << p << " vs " << w[c]);
    CHECK(std::abs(p - w[c]) <= 5 * std::sqrt(w[c] * (1 - w[c]) / N));
    for (std::size_t k = 0; k < 2; ++k) {
      const double m = sum[c][k] / count[c], v = sq[c][k] / count[c] - m * m, sdev = std::sqrt(v);
      INFO("component " << c << ", dimension " << k << ": mean " << m << " vs " << mu[c][k] << ", sd " << sdev << " vs "
                        << sd[c][k]);
      CHECK(std::abs(m - mu[c][k]) <= 5 * sd[c][k] / std::sqrt(count[c]) + 1e-3);
      CHECK(std::abs(sdev - sd[c][k]) <= 5 * sd[c][k] / std::sqrt(2 * count[c]) + 1e-3);
      WARN("component " << c << " dim " << k << ": weight " << p << ", mean " << m << ", sd " << sdev << " (data "
                        << w[c] << ", " << mu[c][k] << ", " << sd[c][k] << ")");
    }
  }
}
