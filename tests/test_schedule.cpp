// noise_schedule against the 50-digit reference: every per-step quantity, derived from the
// reference's own double betas, for every family; the published numbers of ../shared/SPEC.md;
// Bayes' rule for the posterior; and argument validation.
#include <catch2/catch.hpp>

#include <diffusion/schedule.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "support.hpp"

namespace {

struct quantity {
  const char* name;
  double diffusion::schedule_step::*member;
  double budget_ulps;  // see schedule.hpp: double-double tables rounded once
};

// Budgets: one rounding of a double-double value (0.5 ulp) plus its ~1e-30 relative error.
// log_snr and the clipped log-variance are log(hi) + lo/hi: the libm log adds ≤ 1 ulp.
const std::vector<quantity> quantities = {
    {"beta", &diffusion::schedule_step::beta, 0},
    {"alpha", &diffusion::schedule_step::alpha, 1},
    {"alpha_bar", &diffusion::schedule_step::alpha_bar, 1},
    {"alpha_bar_prev", &diffusion::schedule_step::alpha_bar_prev, 1},
    {"alpha_bar_next", &diffusion::schedule_step::alpha_bar_next, 1},
    {"one_minus_alpha_bar", &diffusion::schedule_step::one_minus_alpha_bar, 1},
    {"sqrt_alpha", &diffusion::schedule_step::sqrt_alpha, 1},
    {"sqrt_alpha_bar", &diffusion::schedule_step::sqrt_alpha_bar, 1},
    {"sqrt_alpha_bar_prev", &diffusion::schedule_step::sqrt_alpha_bar_prev, 1},
    {"sqrt_one_minus_alpha_bar", &diffusion::schedule_step::sqrt_one_minus_alpha_bar, 1},
    {"rsqrt_alpha", &diffusion::schedule_step::rsqrt_alpha, 1},
    {"rsqrt_alpha_bar", &diffusion::schedule_step::rsqrt_alpha_bar, 1},
    {"sigma", &diffusion::schedule_step::sigma, 1},
    {"snr", &diffusion::schedule_step::snr, 1},
    {"log_snr", &diffusion::schedule_step::log_snr, 2},
    {"posterior_variance", &diffusion::schedule_step::posterior_variance, 1},
    {"posterior_log_variance_clipped", &diffusion::schedule_step::posterior_log_variance_clipped, 2},
    {"posterior_mean_coef_x0", &diffusion::schedule_step::posterior_mean_coef_x0, 1},
    {"posterior_mean_coef_xt", &diffusion::schedule_step::posterior_mean_coef_xt, 1},
};

const std::vector<std::string> datasets = {
    "linear_1000",   "linear_4000",   "scaled_linear_1000", "cosine_1000", "cosine_4000",
    "sigmoid_1000",  "warmup10_1000", "warmup50_1000",      "const_1000",  "jsd_1000",
    "zero_snr_scaled_linear_1000",
};

}  // namespace

TEST_CASE("every schedule quantity is within its ulp budget of the 50-digit reference", "[schedule][reference]") {
  const auto& ref = test::reference::schedules();
  std::map<std::string, double> worst;  // per quantity, over all datasets
  for (const auto& ds : datasets) {
    const diffusion::noise_schedule s(ref.betas(ds));
    for (const auto& q : quantities) {
      for (std::size_t i : ref.indices(ds, q.name)) {
        const double want = ref.get(ds, q.name, i);
        const double got = s[i].*(q.member);
        const double err = test::ulps(got, want);
        worst[q.name] = std::max(worst[q.name], err);
        INFO(ds << " " << q.name << "[" << i << "] = " << got << ", reference " << want << ": " << err << " ulp");
        CHECK(err <= q.budget_ulps);
      }
    }
  }
  for (const auto& [name, err] : worst) WARN("max error of " << name << ": " << err << " ulp");
}

TEST_CASE("published numbers of the reference implementations and papers", "[schedule][published]") {
  SECTION("DDPM linear 1e-4..0.02, T = 1000") {
    const diffusion::noise_schedule s(diffusion::linear_betas(1000));
    CHECK(s[999].alpha_bar == Approx(4.03583e-5).epsilon(1e-5));
    CHECK(s[999].sqrt_alpha_bar == Approx(0.006353).epsilon(1e-4));
    CHECK(s[1].posterior_variance == Approx(5.4531877e-5).epsilon(1e-7));
    CHECK(s[0].posterior_log_variance_clipped == Approx(-9.8167251).epsilon(1e-7));
    CHECK(s[0].posterior_variance == 0.0);
  }
  SECTION("Stable Diffusion scaled_linear 0.00085..0.012 (Lin et al. 2023 Table 1)") {
    const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
    CHECK(s[999].sqrt_alpha_bar == Approx(0.068265).epsilon(1e-5));
    CHECK(s[999].snr == Approx(0.0046819).epsilon(1e-5));
    CHECK(s[999].sigma == Approx(14.614641).epsilon(1e-7));
    CHECK(s[0].sigma == Approx(0.0291672).epsilon(1e-5));
  }
  SECTION("cosine, T = 1000") {
    const diffusion::noise_schedule s(diffusion::cosine_betas(1000));
    CHECK(s[0].beta == Approx(4.12842e-5).epsilon(1e-5));
    CHECK(s[999].alpha_bar == Approx(2.428767e-9).epsilon(1e-6));
  }
  SECTION("zero terminal SNR: the limits at the last step") {
    const diffusion::noise_schedule s(diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(1000)));
    const auto& last = s[999];
    CHECK(last.alpha_bar == 0.0);
    CHECK(last.snr == 0.0);
    CHECK(last.log_snr == -std::numeric_limits<double>::infinity());
    CHECK(last.sigma == std::numeric_limits<double>::infinity());
    CHECK(last.sqrt_one_minus_alpha_bar == 1.0);
    CHECK(std::isfinite(last.posterior_variance));
    CHECK(last.posterior_mean_coef_xt == 0.0);
  }
}

TEST_CASE("the posterior is Bayes' rule applied to q(x_t|x_{t-1}) and q(x_{t-1}|x_0)", "[schedule][identity]") {
  // log q(x_t|x_{t-1}) + log q(x_{t-1}|x_0) - log q(x_{t-1}|x_t,x_0) must equal log q(x_t|x_0)
  // for every x_{t-1}: evaluated in long double at several points, from the raw betas.
  using ld = long double;
  auto log_normal = [](ld x, ld mean, ld var) {
    return -0.5L * std::log(2.0L * 3.14159265358979323846264338327950288L * var) - (x - mean) * (x - mean) / (2.0L * var);
  };
  for (const auto& betas : {diffusion::linear_betas(1000), diffusion::cosine_betas(1000)}) {
    const diffusion::noise_schedule s(betas);
    ld ab_prev = 1.0L;
    for (std::size_t i = 0; i < betas.size(); ++i) {
      const ld beta = betas[i], alpha = 1.0L - beta, ab = ab_prev * alpha;
      if (i > 0 && (i < 5 || i % 97 == 0 || i + 1 == betas.size())) {
        const ld x0 = 0.3L, xt = -0.7L;
        const auto& st = s[i];
        const ld mean = static_cast<ld>(st.posterior_mean_coef_x0) * x0 + static_cast<ld>(st.posterior_mean_coef_xt) * xt;
        const ld var = st.posterior_variance;
        const ld target = log_normal(xt, std::sqrt(ab) * x0, 1.0L - ab);
        for (ld x : {-2.0L, -0.5L, 0.0L, 0.25L, 1.5L}) {
          const ld lhs = log_normal(xt, std::sqrt(alpha) * x, beta) + log_normal(x, std::sqrt(ab_prev) * x0, 1.0L - ab_prev) -
                         log_normal(x, mean, var);
          INFO("i = " << i << ", x_{t-1} = " << static_cast<double>(x));
          // The terms are O(1/var) ~ 1e4 at small t; double coefficients give ~1e-16 relative each.
          CHECK(static_cast<double>(lhs) == Approx(static_cast<double>(target)).margin(1e-9));
        }
      }
      ab_prev = ab;
    }
  }
}

TEST_CASE("noise_schedule rejects invalid betas with the index, value and range", "[schedule][errors]") {
  using Catch::Matchers::Contains;
  using V = std::vector<double>;
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{}), Contains("betas is empty"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{0.1, 0.0, 0.2}), Contains("betas[1] = 0") && Contains("(0, 1)"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{0.1, -0.5}), Contains("betas[1] = -0.5"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{0.1, std::nan(""), 0.2}), Contains("betas[1] = nan"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{0.1, 1.0, 0.2}),
                    Contains("betas[1] = 1") && Contains("only at the last step"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{0.1, 1.5}), Contains("betas[1] = 1.5") && Contains("(0, 1]"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(V{0.1, std::numeric_limits<double>::infinity()}), Contains("betas[1] = inf"));
  CHECK_NOTHROW(diffusion::noise_schedule(V{0.1, 1.0}));
  const diffusion::noise_schedule s(V{0.1, 0.2});
  CHECK_THROWS_AS(s.at(2), std::out_of_range);
  CHECK_THROWS_WITH(s.at(2), Contains("timestep = 2") && Contains("[0, 2)"));
}

TEST_CASE("T = 1 and columns", "[schedule]") {
  const diffusion::noise_schedule s(std::vector<double>{0.25});
  CHECK(s.size() == 1);
  CHECK(s[0].alpha_bar == 0.75);
  CHECK(s[0].posterior_variance == 0.0);
  CHECK(s[0].posterior_log_variance_clipped == std::log(0.25));
  CHECK(s[0].alpha_bar_next == 0.0);
  const diffusion::noise_schedule l(diffusion::linear_betas(10, 0.1, 0.2));
  const auto col = l.column(&diffusion::schedule_step::alpha_bar);
  REQUIRE(col.size() == 10);
  CHECK(col[3] == l[3].alpha_bar);
}
