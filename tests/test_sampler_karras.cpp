// Karras-family samplers against exact targets on Gaussian data: the exact probability-flow
// map (convergence orders), the exact law of the stochastic chains (Monte Carlo), DDIM = Euler
// in sigma-space, and errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_ddpm.hpp>
#include <diffusion/sampler_karras.hpp>

#include <cmath>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::karras_method;

const char* name(karras_method m) {
  switch (m) {
    case karras_method::euler: return "Euler";
    case karras_method::euler_ancestral: return "Euler ancestral";
    case karras_method::heun: return "Heun";
    case karras_method::dpmpp_2m: return "DPM-Solver++(2M)";
  }
  return "?";
}
}  // namespace

TEST_CASE("Euler, Heun and DPM-Solver++(2M) converge to the exact flow map at orders 1, 2, 2", "[samplers][karras]") {
  // Data N(mu, s^2) per dimension; the flow is x(sigma) - mu = (x0 - mu) sqrt(s^2 + sigma^2)/sqrt(s^2 + sigma0^2).
  const std::vector<double> mu = {0.2, -0.5, 1.0}, sd = {0.5, 0.1, 1.5};
  diffusion::gaussian_data g(mu, sd);
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{0};
  const double smin = 0.02, smax = 80.0;
  for (auto [method, order] : {std::pair{karras_method::euler, 1.0}, std::pair{karras_method::heun, 2.0},
                               std::pair{karras_method::dpmpp_2m, 2.0}}) {
    std::vector<double> errors;
    const std::vector<std::size_t> Ns = {16, 32, 64, 128, 256};
    for (std::size_t N : Ns) {
      auto sig = diffusion::karras_sigmas(N, smin, smax);
      sig.pop_back();  // end at sigma_min: compare with the flow there, not with a final jump to 0
      std::vector<double> x = {60.0, -40.0, 90.0};
      const std::vector<double> x_start = x;
      diffusion::karras_sample(method, D, x, 1, noise, sig, {.draw_initial_noise = false});
      double err = 0;
      for (std::size_t k = 0; k < 3; ++k) {
        const double exact = mu[k] + (x_start[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                         std::sqrt(sd[k] * sd[k] + smax * smax);
        err = std::max(err, std::abs(x[k] - exact));
      }
      errors.push_back(err);
    }
    for (std::size_t i = 2; i < errors.size(); ++i) {
      const double observed = std::log2(errors[i - 1] / errors[i]);
      INFO(name(method) << " N = " << Ns[i] << ": error " << errors[i] << ", observed order " << observed);
      CHECK(observed > order - 0.2);
      CHECK(observed < order + 0.3);
      WARN(name(method) << ", N = " << Ns[i] << ": max error " << errors[i] << ", order " << observed);
    }
  }
}

TEST_CASE("DDIM with eta = 0 is Euler in sigma-space", "[samplers][karras][ddim]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  diffusion::gaussian_data g({0.3, -0.1}, {0.4, 0.9});
  test::test_noise noise{2};
  const auto seq = diffusion::inference_timesteps(1000, 30, diffusion::timestep_spacing::trailing);
  std::vector<double> sig;
  for (std::size_t t : seq) sig.push_back(s[t].sigma);
  sig.push_back(0.0);
  std::vector<double> vp = {0.7, -1.2};
  std::vector<double> ve = {vp[0] * std::sqrt(1 + sig[0] * sig[0]), vp[1] * std::sqrt(1 + sig[0] * sig[0])};
  diffusion::ddim_sample(s, g, vp, 1, noise, seq, {.draw_initial_noise = false});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g, &s);
  diffusion::karras_sample(karras_method::euler, D, ve, 1, noise, sig, {.draw_initial_noise = false});
  CHECK(vp[0] == Approx(ve[0]).epsilon(1e-12));
  CHECK(vp[1] == Approx(ve[1]).epsilon(1e-12));
}

TEST_CASE("Euler ancestral and churned Euler draw the exact law of their Gaussian chains", "[samplers][karras][montecarlo]") {
  // 1-D data N(mu, s^2): D(x; sigma) = mu + k (x - mu), k = s^2/(s^2 + sigma^2), so every step is
  // x - mu <- a (x - mu) + b z: mean and variance follow exactly. 100000 rows, 5 s.e. (p < 6e-7 each).
  const double mu = 0.25, sd = 0.6;
  diffusion::gaussian_data g({mu}, {sd});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{77};
  const auto sig = diffusion::karras_sigmas(40, 0.01, 20.0);
  constexpr std::size_t N = 100000;
  for (auto method : {karras_method::euler_ancestral, karras_method::euler}) {
    const diffusion::karras_options opt{.s_churn = method == karras_method::euler ? 20.0 : 0.0, .s_tmin = 0.05, .s_tmax = 10.0};
    std::vector<double> x(N);
    diffusion::karras_sample(method, D, x, N, noise, sig, opt);
    double m = 0.0, v = sig[0] * sig[0];  // law of x - mu: starts at N(-mu, sigma0^2)
    m = -mu;
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
      const double s_i = sig[i], s_next = sig[i + 1];
      if (method == karras_method::euler) {
        const double s_hat = diffusion::churned_sigma(opt, s_i, sig.size() - 1);
        v += s_hat * s_hat - s_i * s_i;
        const double k = sd * sd / (sd * sd + s_hat * s_hat), a = 1.0 + (s_next - s_hat) * (1.0 - k) / s_hat;
        m *= a;
        v *= a * a;
      } else {
        const auto split = diffusion::ancestral_step(s_i, s_next, 1.0);
        const double k = sd * sd / (sd * sd + s_i * s_i), a = 1.0 + (split.sigma_down - s_i) * (1.0 - k) / s_i;
        m *= a;
        v = a * a * v + split.sigma_up * split.sigma_up;
      }
    }
    double em = 0, ev = 0;
    for (double xi : x) em += xi;
    em /= N;
    for (double xi : x) ev += (xi - em) * (xi - em);
    ev /= N - 1;
    INFO(name(method) << ": mean " << em << " vs " << mu + m << ", variance " << ev << " vs " << v);
    CHECK(std::abs(em - (mu + m)) <= 5 * std::sqrt(v / N));
    CHECK(std::abs(ev - v) <= 5 * v * std::sqrt(2.0 / (N - 1)));
    WARN(name(method) << " (40 steps): law N(" << mu + m << ", " << v << ") vs data N(" << mu << ", " << sd * sd << ")");
  }
}

TEST_CASE("the ancestral split lands at sigma_to, churn is capped at sqrt(2) - 1", "[samplers][karras]") {
  for (double eta : {0.0, 0.5, 1.0}) {
    const auto a = diffusion::ancestral_step(2.0, 1.3, eta);
    CHECK(a.sigma_down * a.sigma_down + a.sigma_up * a.sigma_up == Approx(1.3 * 1.3).epsilon(1e-15));
  }
  CHECK(diffusion::ancestral_step(2.0, 1.3, 0.0).sigma_up == 0.0);
  CHECK(diffusion::ancestral_step(2.0, 0.0, 1.0).sigma_down == 0.0);
  const diffusion::karras_options opt{.s_churn = 1000.0};
  CHECK(diffusion::churned_sigma(opt, 2.0, 10) == Approx(2.0 * std::sqrt(2.0)));
  CHECK(diffusion::churned_sigma({.s_churn = 1.0, .s_tmin = 3.0}, 2.0, 10) == 2.0);
}

TEST_CASE("Karras samplers validate sigma lists and options", "[samplers][karras][errors]") {
  using Catch::Matchers::Contains;
  diffusion::gaussian_data g({0.0}, {1.0});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{0};
  std::vector<double> x(2);
  auto run = [&](std::vector<double> sig, diffusion::karras_options o = {}) {
    return diffusion::karras_sample(karras_method::heun, D, x, 2, noise, sig, o);
  };
  CHECK_THROWS_WITH(run({1.0}), Contains("sigmas.size() = 1"));
  CHECK_THROWS_WITH(run({1.0, 2.0}), Contains("strictly decreasing"));
  CHECK_THROWS_WITH(run({1.0, 0.0, 0.0}), Contains("sigmas[1] = 0"));
  CHECK_THROWS_WITH(run({1.0, -0.5}), Contains("sigmas[1] = -0.5"));
  CHECK_THROWS_WITH(run({std::nan(""), 0.0}), Contains("sigmas[0] = nan"));
  CHECK_THROWS_WITH(run({1.0, 0.0}, {.s_churn = -1.0}), Contains("s_churn = -1"));
  CHECK_THROWS_WITH(run({1.0, 0.0}, {.eta = 1.5}), Contains("eta = 1.5"));
  CHECK_THROWS_WITH(run({1.0, 0.0}, {.s_tmin = 2.0, .s_tmax = 1.0}), Contains("s_tmin = 2 must be <= s_tmax = 1"));
  CHECK_NOTHROW(run({1.0, 0.0}));
}

TEST_CASE("a model with a learned variance block works through the sigma-space view", "[samplers][karras]") {
  // The model writes 2n per row; the sampler must size its buffers for that (regression test).
  diffusion::gaussian_data g({0.2, -0.1, 0.4}, {0.5, 0.7, 0.2});
  auto with_variance = diffusion::make_denoiser(diffusion::prediction::epsilon, [&](const diffusion::denoiser_input<double>& in, std::span<double> out) {
    const std::size_t n = in.row_size();
    for (std::size_t r = 0; r < in.rows(); ++r) {
      g(diffusion::denoiser_input<double>{in.x.subspan(r * n, n), in.timesteps.subspan(r, 1), in.sigma.subspan(r, 1)},
        out.subspan(2 * n * r, n));
      for (std::size_t k = 0; k < n; ++k) out[2 * n * r + n + k] = -3.0;
    }
  });
  diffusion::sigma_space_model plain(g);
  diffusion::sigma_space_model learned(with_variance, diffusion::sigma_timesteps, {.learned_variance = true});
  test::test_noise noise{0};
  const auto sig = diffusion::karras_sigmas(12, 0.02, 20.0);
  std::vector<double> a(3 * 5, 1.0), b(3 * 5, 1.0);
  diffusion::karras_sample(karras_method::heun, plain, a, 5, noise, sig, {.draw_initial_noise = false});
  diffusion::karras_sample(karras_method::heun, learned, b, 5, noise, sig, {.draw_initial_noise = false});
  CHECK(a == b);
}
