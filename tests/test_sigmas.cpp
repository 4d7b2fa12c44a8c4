// Continuous-time families, sigma lists and sigma <-> t against the 50-digit reference.
#include <catch2/catch.hpp>

#include <diffusion/sigmas.hpp>

#include <cmath>
#include <limits>
#include <string>

#include "support.hpp"

namespace {
const char* const times[] = {"0.0", "1e-05", "0.001", "0.01", "0.1", "0.5", "0.9", "1.0"};
}

TEST_CASE("VP SDE marginals match the reference", "[sigmas][reference]") {
  const auto& ref = test::reference::schedules();
  const diffusion::vp_sde vp{};
  double worst = 0;
  for (const char* ts : times) {
    const double t = std::strtod(ts, nullptr);
    INFO("t = " << ts);
    // beta(t) and log_mean_coeff are a few roundings of a polynomial: 2 ulp; alpha_bar = exp(2m)
    // adds |2m| ulp of condition (|2m| <= 10.1 at t = 1): 12 ulp; std/sigma via expm1: 3 ulp.
    const double e_beta = test::ulps(vp.beta(t), ref.get("vp", "beta", ts));
    const double e_lmc = test::ulps(vp.log_mean_coeff(t), ref.get("vp", "log_mean_coeff", ts));
    const double e_ab = test::ulps(vp.alpha_bar(t), ref.get("vp", "alpha_bar", ts));
    const double e_std = test::ulps(vp.marginal_std(t), ref.get("vp", "std", ts));
    const double e_sig = test::ulps(vp.sigma(t), ref.get("vp", "sigma", ts));
    CHECK(e_beta <= 2);
    CHECK(e_lmc <= 2);
    CHECK(e_ab <= 12);
    CHECK(e_std <= 12);
    CHECK(e_sig <= 12);
    worst = std::max({worst, e_beta, e_lmc, e_ab, e_std, e_sig});
  }
  WARN("VP SDE: max error " << worst << " ulp");
}

TEST_CASE("VE SDE sigma matches the reference", "[sigmas][reference]") {
  const auto& ref = test::reference::schedules();
  const diffusion::ve_sde ve{};
  for (const char* ts : times) {
    const double t = std::strtod(ts, nullptr);
    INFO("t = " << ts);
    // exp(t log 5000): condition |t log 5000| <= 8.6, so <= 10 ulp.
    CHECK(test::ulps(ve.sigma(t), ref.get("ve", "sigma", ts)) <= 10);
  }
}

TEST_CASE("Karras and geometric sigma lists match the reference", "[sigmas][reference]") {
  const auto& ref = test::reference::schedules();
  const auto k = diffusion::karras_sigmas(10, 0.0291675, 14.614642, 7.0);
  REQUIRE(k.size() == 11);
  CHECK(k.back() == 0.0);
  for (std::size_t i = 0; i < 10; ++i) {
    INFO("karras i = " << i);
    // pow(r, 7) amplifies the relative error of r sevenfold: <= 16 ulp.
    CHECK(test::ulps(k[i], ref.get("karras_10", "sigma", i)) <= 16);
  }
  const auto g = diffusion::geometric_sigmas(10, 0.01, 1.0);
  REQUIRE(g.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) {
    INFO("geometric i = " << i);
    CHECK(test::ulps(g[i], ref.get("geometric_10", "sigma", i)) <= 8);
  }
}

TEST_CASE("t <-> sigma by log-sigma interpolation matches the reference", "[sigmas][reference]") {
  const auto& ref = test::reference::schedules();
  for (const std::string ds : {"linear_1000", "cosine_1000", "zero_snr_scaled_linear_1000"}) {
    const diffusion::noise_schedule s(ref.betas(ds));
    for (const auto& [key, want] : ref.values) {
      const std::string prefix_t = ds + " t_to_sigma ", prefix_s = ds + " sigma_to_t ";
      if (key.rfind(prefix_t, 0) == 0) {
        const double t = std::strtod(key.c_str() + prefix_t.size(), nullptr);
        INFO(ds << " t_to_sigma(" << t << ")");
        // exp of an interpolated log: relative error ~ |log sigma| ulp (<= 6 here) + table error.
        CHECK(test::ulps(diffusion::t_to_sigma(s, t), want) <= 16);
      } else if (key.rfind(prefix_s, 0) == 0) {
        const double sigma = std::strtod(key.c_str() + prefix_s.size(), nullptr);
        INFO(ds << " sigma_to_t(" << sigma << ")");
        // The fractional part carries the error of (log s - log s_i)/(log s_{i+1} - log s_i):
        // absolute error of t <= 1e-12 (the gap of neighbouring logs is >= 1e-3).
        CHECK(diffusion::sigma_to_t(s, sigma) == Approx(want).margin(1e-12));
      }
    }
  }
}

TEST_CASE("t_to_sigma and sigma_to_t are inverse and reject out-of-range input", "[sigmas]") {
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
  for (double t : {0.0, 0.3, 17.5, 500.0, 998.25, 999.0}) {
    INFO("t = " << t);
    CHECK(diffusion::sigma_to_t(s, diffusion::t_to_sigma(s, t)) == Approx(t).margin(1e-9));
  }
  using Catch::Matchers::Contains;
  CHECK_THROWS_AS(diffusion::t_to_sigma(s, -0.5), std::out_of_range);
  CHECK_THROWS_WITH(diffusion::t_to_sigma(s, 999.5), Contains("t = 999.5") && Contains("[0, 999]"));
  CHECK_THROWS_WITH(diffusion::t_to_sigma(s, std::nan("")), Contains("t = nan"));
  CHECK_THROWS_WITH(diffusion::sigma_to_t(s, 100.0), Contains("sigma = 100") && Contains("outside"));
  CHECK_THROWS_AS(diffusion::sigma_to_t(s, 1e-3), std::out_of_range);

  const diffusion::noise_schedule z(diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(1000)));
  CHECK(diffusion::t_to_sigma(z, 999.0) == std::numeric_limits<double>::infinity());
  CHECK(diffusion::t_to_sigma(z, 998.5) == std::numeric_limits<double>::infinity());
  CHECK(diffusion::sigma_to_t(z, z[998].sigma) == 998.0);
}

TEST_CASE("sigma-list and SDE arguments are validated", "[sigmas][errors]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::karras_sigmas(1, 0.1, 10), Contains("n = 1"));
  CHECK_THROWS_WITH(diffusion::karras_sigmas(10, 10, 0.1), Contains("sigma_min = 10 must be < sigma_max = 0.1"));
  CHECK_THROWS_WITH(diffusion::karras_sigmas(10, 0.0, 10), Contains("sigma_min = 0"));
  CHECK_THROWS_WITH(diffusion::karras_sigmas(10, 0.1, 10, -1.0), Contains("rho = -1"));
  CHECK_THROWS_WITH(diffusion::geometric_sigmas(10, 0.1, std::nan("")), Contains("sigma_max = nan"));
  CHECK_THROWS_WITH((diffusion::vp_sde{.beta_min = 1.0, .beta_max = 0.5}.validate()), Contains("beta_min = 1"));
  CHECK_THROWS_WITH((diffusion::ve_sde{.sigma_min = -1.0}.validate()), Contains("sigma_min = -1"));
  CHECK_NOTHROW(diffusion::vp_sde{}.validate());
  CHECK_NOTHROW(diffusion::ve_sde{}.validate());
}
