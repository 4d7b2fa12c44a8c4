// The consistency samplers (samplers/consistency.hpp) and their scheduler classes: the
// distillation timesteps (diffusers' float64 indices, the exact ones past 2^51, refusals), LCM's
// boundary scalings against their definition in long double, lcm_step and tcd_step against the
// formulas written out here, TCD at gamma = 0 as the DDIM (Euler) step, the exact law of the TCD
// chain on Gaussian data (Monte Carlo), the EDM / LCM / TCD scheduler classes and their configs.
// diffusers parity of LCMScheduler, TCDScheduler and the EDM classes is in test_diffusers_reference,
// their scheduler_config.json keys in test_scheduler_json.
#include <catch2/catch.hpp>

#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;

TEST_CASE("consistency_timesteps: the LCM/TCD distillation schedule, as diffusers indexes it", "[consistency][timesteps]") {
  using diffusion::consistency_timesteps;
  const auto four = consistency_timesteps(1000, 4);
  REQUIRE(four.size() == 4);
  CHECK(four[0] == 999);
  CHECK(four[1] == 759);
  CHECK(four[2] == 499);
  CHECK(four[3] == 259);
  // One step: the top of the distillation schedule; all 50: every one of them.
  CHECK(consistency_timesteps(1000, 1)[0] == 999);
  const auto all = consistency_timesteps(1000, 50);
  for (std::size_t j = 0; j < 50; ++j) CHECK(all[j] == 999 - 20 * j);
  // strength 0.5: L = 25 (t = 499 … ), N = 4 at indices 0, 6, 12, 18.
  const auto half = consistency_timesteps(1000, 4, 50, 0.5);
  CHECK(half[0] == 499);
  CHECK(half[1] == 379);
  CHECK(half[2] == 259);
  CHECK(half[3] == 139);
  // numpy's floor(linspace(0, 30, 22, endpoint=False))[11] is 14 (11 * (30/22) = 14.999…), not 15:
  // original_steps 30 on T = 1000 (k = 33) gives (30 - 14) * 33 - 1.
  CHECK(consistency_timesteps(1000, 22, 30)[11] == 16 * 33 - 1);
  // Past 2^51 the exact floor(j L / N): T = L = SIZE_MAX, k = 1.
  constexpr std::size_t big = std::numeric_limits<std::size_t>::max();
  const auto huge = consistency_timesteps(big, 3, big);
  CHECK(huge[0] == big - 1);
  CHECK(huge[1] == big - big / 3 - 1);  // floor(L/3) exactly (L = 3q exactly for 2^64 - 1)
  CHECK(huge[2] == big - 2 * (big / 3) - 1);
  // The float64 product original_steps * strength near 2^64 stays below original_steps.
  CHECK(consistency_timesteps(big, 2, big, 0.9999999999999999).size() == 2);

  CHECK_THROWS_WITH(consistency_timesteps(1000, 51), Contains("num_steps = 51") && Contains("[1, 50]"));
  CHECK_THROWS_WITH(consistency_timesteps(1000, 0), Contains("num_steps = 0"));
  CHECK_THROWS_WITH(consistency_timesteps(1000, 30, 50, 0.5), Contains("num_steps = 30") && Contains("[1, 25]"));
  CHECK_THROWS_WITH(consistency_timesteps(1000, 4, 0), Contains("original_steps = 0"));
  CHECK_THROWS_WITH(consistency_timesteps(1000, 4, 1001), Contains("original_steps = 1001"));
  CHECK_THROWS_WITH(consistency_timesteps(0, 4), Contains("num_train_timesteps = 0"));
  for (const double bad : {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN()})
    CHECK_THROWS_WITH(consistency_timesteps(1000, 4, 50, bad), Contains("diffusion::consistency_timesteps") && Contains("strength"));
  CHECK_THROWS_WITH(consistency_timesteps(1000, 1, 50, 0.01), Contains("[1, 0]"));  // L = 0
}

TEST_CASE("lcm_boundary: the LCM scalings, within 2 ulp of their definition in long double", "[consistency]") {
  for (const double t : {0.0, 0.5, 1.0, 19.0, 259.0, 999.0, 1e6}) {
    for (const double sd : {0.5, 1.0}) {
      const auto c = diffusion::lcm_boundary(t, sd, 10.0);
      const long double tau = static_cast<long double>(t) * 10.0L, d = sd;
      const long double cs = d * d / (tau * tau + d * d), co = tau / std::sqrt(tau * tau + d * d);
      INFO("t " << t << ", sigma_data " << sd);
      CHECK(test::ulps(c.c_skip, static_cast<double>(cs)) <= 2);
      CHECK(test::ulps(c.c_out, static_cast<double>(co)) <= 2);
    }
  }
  // The boundary condition f(x, 0) = x, exactly.
  CHECK(diffusion::lcm_boundary(0.0).c_skip == 1.0);
  CHECK(diffusion::lcm_boundary(0.0).c_out == 0.0);
  // No overflow in tau^2.
  const auto far = diffusion::lcm_boundary(1e300, 0.5, 1.0);
  CHECK(far.c_out == 1.0);
  CHECK(far.c_skip >= 0.0);
  CHECK_THROWS_WITH(diffusion::lcm_boundary(-1.0), Contains("diffusion::lcm_boundary") && Contains("timestep = -1"));
  CHECK_THROWS_WITH(diffusion::lcm_boundary(1.0, 0.0), Contains("sigma_data"));
  CHECK_THROWS_WITH(diffusion::lcm_boundary(1.0, 0.5, -1.0), Contains("timestep_scaling"));
  CHECK_THROWS_WITH(diffusion::lcm_boundary(1e300, 0.5, 1e10), Contains("overflows"));
}

TEMPLATE_TEST_CASE("lcm_step and tcd_step are their formulas, with or without the intermediate output", "[consistency]", float,
                   double) {
  using T = TestType;
  const std::size_t n = 37;
  std::vector<T> x(n), x0(n), z(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = static_cast<T>(std::sin(0.7 * static_cast<double>(i)) * 1.5);
    x0[i] = static_cast<T>(std::cos(0.3 * static_cast<double>(i)));
    z[i] = static_cast<T>(std::sin(1.9 * static_cast<double>(i) + 0.2));
  }
  const double tol = std::is_same_v<T, float> ? 4e-6 : 1e-14;
  const auto c = diffusion::lcm_boundary(19.0);
  const auto to = diffusion::noise_level::preserving(0.8);
  SECTION("lcm_step") {
    std::vector<T> a = x, b = x, f(n);
    diffusion::lcm_step<T>(c, to, x0, a, std::span<const T>(z));
    diffusion::lcm_step<T>(c, to, x0, b, std::span<const T>(z), std::span<T>(f));
    for (std::size_t i = 0; i < n; ++i) {
      const double fi = c.c_skip * static_cast<double>(x[i]) + c.c_out * static_cast<double>(x0[i]);
      const double want = to.alpha * fi + to.sigma * static_cast<double>(z[i]);
      CHECK(std::abs(static_cast<double>(a[i]) - want) <= tol * (1 + std::abs(want)));
      CHECK(std::abs(static_cast<double>(b[i]) - want) <= tol * (1 + std::abs(want)));
      CHECK(std::abs(static_cast<double>(f[i]) - fi) <= tol * (1 + std::abs(fi)));
    }
    // The last step lands on the data: x' = f, no noise read.
    std::vector<T> d = x;
    diffusion::lcm_step<T>(c, diffusion::noise_level::preserving(0.0), x0, d, diffusion::kernels::no_noise{});
    for (std::size_t i = 0; i < n; ++i) {
      const double fi = c.c_skip * static_cast<double>(x[i]) + c.c_out * static_cast<double>(x0[i]);
      CHECK(std::abs(static_cast<double>(d[i]) - fi) <= tol * (1 + std::abs(fi)));
    }
    CHECK_THROWS_WITH(diffusion::lcm_step<T>(c, to, x0, d, diffusion::kernels::no_noise{}),
                      Contains("diffusion::lcm_step") && Contains("no noise was passed"));
    CHECK_THROWS_WITH(diffusion::lcm_step<T>(c, to, std::span<const T>(x0).first(n - 1), d, std::span<const T>(z)),
                      Contains("x0_pred"));
    CHECK_THROWS_WITH(diffusion::lcm_step<T>(c, to, x0, d, std::span<const T>(z).first(3)), Contains("noise"));
    CHECK_THROWS_WITH(diffusion::lcm_step<T>({std::numeric_limits<double>::infinity(), 0.0}, to, x0, d, std::span<const T>(z)),
                      Contains("c_skip"));
    std::vector<T> wrong(n - 2);
    CHECK_THROWS_WITH(diffusion::lcm_step<T>(c, to, x0, d, std::span<const T>(z), std::span<T>(wrong)), Contains("denoised"));
  }
  SECTION("tcd_step") {
    // VP levels from the SD schedule: the model at t = 759, the next timestep 499, gamma 0.3: s = 349.
    const diffusion::noise_schedule sd(diffusion::scaled_linear_betas(1000, 0.00085, 0.012));
    const std::size_t s_t = diffusion::tcd_intermediate_timestep(499, 0.3);
    CHECK(s_t == 349);
    const auto lv = [&](std::size_t t) { return diffusion::noise_level::preserving(sd[t].sigma); };
    const diffusion::level_step step{lv(759), lv(499)};
    const auto mid = lv(s_t);
    std::vector<T> a = x, b = x, xs(n);
    diffusion::tcd_step<T>(step, mid, x0, a, std::span<const T>(z));
    diffusion::tcd_step<T>(step, mid, x0, b, std::span<const T>(z), std::span<T>(xs));
    // diffusers' form: x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s) eps_hat, eps_hat = (x - sqrt(ab_t) x0)/sqrt(1 - ab_t);
    // x' = sqrt(ab'/ab_s) x_s + sqrt(1 - ab'/ab_s) z.
    const double ab_t = sd[759].alpha_bar, ab_n = sd[499].alpha_bar, ab_s = sd[s_t].alpha_bar;
    // The step is a weighted sum of x, x0 and z whose terms partly cancel, so its rounding error scales
    // with the magnitudes of the terms, not of the result: the bound is tol * (1 + sum of |term|), with
    // the weights of x and x0 in x_s (ws_x, ws_0) and in x' (w_x, w_0, w_z) from the formula above.
    const double ws_x = std::sqrt(1 - ab_s) / std::sqrt(1 - ab_t);
    const double ws_0 = std::sqrt(ab_s) - ws_x * std::sqrt(ab_t);
    const double w_x = std::sqrt(ab_n / ab_s) * ws_x, w_0 = std::sqrt(ab_n / ab_s) * ws_0, w_z = std::sqrt(1 - ab_n / ab_s);
    for (std::size_t i = 0; i < n; ++i) {
      const double xi = static_cast<double>(x[i]), di = static_cast<double>(x0[i]), zi = static_cast<double>(z[i]);
      const double eps = (xi - std::sqrt(ab_t) * di) / std::sqrt(1 - ab_t);
      const double xsi = std::sqrt(ab_s) * di + std::sqrt(1 - ab_s) * eps;
      const double want = std::sqrt(ab_n / ab_s) * xsi + std::sqrt(1 - ab_n / ab_s) * zi;
      const double scale_s = 1 + std::abs(ws_x * xi) + std::abs(ws_0 * di);
      const double scale = 1 + std::abs(w_x * xi) + std::abs(w_0 * di) + std::abs(w_z * zi);
      CHECK(std::abs(static_cast<double>(a[i]) - want) <= tol * scale);
      CHECK(std::abs(static_cast<double>(b[i]) - want) <= tol * scale);
      CHECK(std::abs(static_cast<double>(xs[i]) - xsi) <= tol * scale_s);
    }
    // gamma = 0: the intermediate level is the next one, and the step is DDIM's (euler_step), noise unread.
    std::vector<T> e = x, g = x;
    diffusion::tcd_step<T>(step, lv(499), x0, e, diffusion::kernels::no_noise{});
    diffusion::euler_step<T>(step, x0, g);
    for (std::size_t i = 0; i < n; ++i) CHECK(std::abs(static_cast<double>(e[i] - g[i])) <= 4 * tol * (1 + std::abs(static_cast<double>(g[i]))));
    CHECK_THROWS_WITH(diffusion::tcd_step<T>(step, mid, x0, e, diffusion::kernels::no_noise{}),
                      Contains("diffusion::tcd_step") && Contains("no noise was passed"));
    // An intermediate level noisier than the next one is refused.
    CHECK_THROWS_WITH(diffusion::tcd_step<T>(step, lv(600), x0, e, std::span<const T>(z)), Contains("noisier than the next level"));
    CHECK_THROWS_WITH(diffusion::tcd_step<T>(step, diffusion::noise_level::general(0.0, 1.0), x0, e, std::span<const T>(z)),
                      Contains("alpha = 0"));
  }
  CHECK_THROWS_WITH(diffusion::tcd_intermediate_timestep(10, 1.5), Contains("gamma = 1.5") && Contains("[0, 1]"));
  CHECK(diffusion::tcd_intermediate_timestep(500, 0.3) == 350);
  CHECK(diffusion::tcd_intermediate_timestep(7, 1.0) == 0);
  CHECK(diffusion::tcd_intermediate_timestep(7, 0.0) == 7);
}

namespace {
// The SD 1.5 LCM/TCD configuration.
diffusion::scheduler_config sd_config(diffusion::scheduler_kind k) {
  auto c = diffusion::scheduler_config::defaults_for(k);
  c.beta_start = 0.00085;
  c.beta_end = 0.012;
  c.beta_schedule = diffusion::beta_family::scaled_linear;
  return c;
}
}  // namespace

TEST_CASE("TCD draws the exact law of its Gaussian chain", "[mc-law][consistency][montecarlo]") {
  // 1-D data N(mu, sd^2), the exact eps-prediction model at each VP level; every TCD step is
  // x' = A x + B + C z, so the law stays Gaussian with (mean, variance) followed exactly here from
  // diffusers' formulas in alpha_bar (independently of the library's level code).
  const double mu = 0.3, sdv = 0.7;
  constexpr std::size_t rows = 200000;
  const diffusion::philox_normal noise(4242);
  for (const double gamma : {0.3, 1.0}) {
    for (const std::size_t steps : {std::size_t{4}, std::size_t{8}}) {
      auto cfg = sd_config(diffusion::scheduler_kind::tcd);
      cfg.eta = gamma;
      diffusion::scheduler sch(cfg);
      sch.set_timesteps(steps);
      const auto& tr = sch.training_schedule();
      std::vector<double> x(rows), out(rows);
      noise.fill(0, 0, 0, std::span<double>(x));  // x_T ~ N(0, 1)
      double m = 0.0, v = 1.0;
      for (std::size_t i = 0; i < steps; ++i) {
        const auto t = static_cast<std::size_t>(sch.timesteps()[i]);
        const double ab = tr[t].alpha_bar, a = std::sqrt(ab), s = std::sqrt(1 - ab);
        const double g = a * sdv * sdv / (ab * sdv * sdv + s * s);  // x0_hat = mu + g (x - a mu)
        for (std::size_t r = 0; r < rows; ++r) {
          const double x0h = mu + g * (x[r] - a * mu);
          out[r] = (x[r] - a * x0h) / s;
        }
        std::vector<double> z(rows);
        noise.fill(0, i + 1, 0, std::span<double>(z));
        sch.step<double>(i, out, x, std::span<const double>(z), rows);
        // The exact law: x_s = sqrt(ab_s) x0h + sqrt(1-ab_s) (x - a x0h)/s, x' = sqrt(ab'/ab_s) x_s + sqrt(1 - ab'/ab_s) z.
        const bool last = i + 1 == steps;
        const std::size_t tn = last ? 0 : static_cast<std::size_t>(sch.timesteps()[i + 1]);
        const auto ts = static_cast<std::size_t>(std::floor((1.0 - gamma) * static_cast<double>(tn)));
        const double ab_s = tr[ts].alpha_bar, ab_n = last ? ab_s : tr[tn].alpha_bar;
        // x_s = P x + Q with x0h = mu + g (x - a mu).
        const double cx0 = std::sqrt(ab_s) - std::sqrt(1 - ab_s) * a / s, cxx = std::sqrt(1 - ab_s) / s;
        const double P = cxx + cx0 * g, Q = cx0 * (mu - g * a * mu);
        const double r = std::sqrt(ab_n / ab_s);
        m = r * (P * m + Q);
        v = r * r * P * P * v + (1 - ab_n / ab_s);
      }
      double em = 0, ev = 0;
      for (double xi : x) em += xi;
      em /= rows;
      for (double xi : x) ev += (xi - em) * (xi - em);
      ev /= rows - 1;
      INFO("gamma " << gamma << ", " << steps << " steps: mean " << em << " vs " << m << ", variance " << ev << " vs " << v);
      // 5 standard errors: false-failure probability < 6e-7 per check (8 checks).
      CHECK(std::abs(em - m) <= 5 * std::sqrt(v / rows));
      CHECK(std::abs(ev - v) <= 5 * v * std::sqrt(2.0 / (rows - 1)));
    }
  }
}

TEST_CASE("scheduler: LCM, TCD and EDM classes, their lists, inputs and refusals", "[consistency][scheduler]") {
  using diffusion::scheduler_kind;
  SECTION("LCM") {
    diffusion::scheduler s(sd_config(scheduler_kind::lcm));
    s.set_timesteps(4);
    REQUIRE(s.timesteps().size() == 4);
    CHECK(s.timesteps()[1] == 759.0);
    CHECK(s.sigmas().back() == 0.0);  // the last step lands on the data
    CHECK(s.init_noise_sigma() == 1.0);
    std::vector<double> x{0.5, -1.2}, out{0.1, 0.2}, in(2);
    s.scale_model_input<double>(x, 0, in);
    CHECK(in == x);
    CHECK_THROWS_WITH(s.step<double>(0, out, x), Contains("LCMScheduler") && Contains("no noise was passed"));
    // clip_sample clips x0_hat before the consistency function: with the model predicting the
    // sample, f = c_skip x + c_out clip(x0).
    auto cc = sd_config(scheduler_kind::lcm);
    cc.prediction_type = diffusion::prediction::sample;
    cc.clip_sample = true;
    diffusion::scheduler clipped(cc);
    clipped.set_timesteps(1);
    std::vector<double> y{0.5, -1.2}, pred{3.0, -0.25}, f(2);
    clipped.step<double>(0, pred, y, diffusion::kernels::no_noise{}, 1, f);
    const auto c = diffusion::lcm_boundary(999.0);
    CHECK(y[0] == Approx(c.c_skip * 0.5 + c.c_out * 1.0).epsilon(1e-15));
    CHECK(y[1] == Approx(c.c_skip * -1.2 + c.c_out * -0.25).epsilon(1e-15));
    CHECK(f == y);
    CHECK_THROWS_WITH(s.set_timesteps(51), Contains("num_steps = 51"));
    auto bad = sd_config(scheduler_kind::lcm);
    bad.original_inference_steps = 0;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("original_inference_steps = 0"));
  }
  SECTION("TCD") {
    auto c = sd_config(scheduler_kind::tcd);
    CHECK(c.eta == 0.3);
    diffusion::scheduler s(c);
    s.set_timesteps(4);
    CHECK(s.sigmas().back() == s.training_schedule()[0].sigma);  // diffusers' last level: timestep 0
    std::vector<double> x{0.5, -1.2}, out{0.1, 0.2};
    CHECK_THROWS_WITH(s.step<double>(0, out, x), Contains("TCDScheduler") && Contains("no noise was passed"));
    // gamma = 0 needs no noise and is DDIM to the next timestep.
    c.eta = 0.0;
    diffusion::scheduler det(c);
    det.set_timesteps(4);
    std::vector<double> y = x;
    det.step<double>(0, out, y);
    const auto& tr = det.training_schedule();
    const double a = tr[999].alpha_bar, an = tr[759].alpha_bar;
    for (std::size_t e = 0; e < 2; ++e) {
      const double x0 = (x[e] - std::sqrt(1 - a) * out[e]) / std::sqrt(a);
      CHECK(y[e] == Approx(std::sqrt(an) * x0 + std::sqrt(1 - an) * out[e]).epsilon(1e-13));
    }
    c.eta = 1.5;
    CHECK_THROWS_WITH(diffusion::scheduler(c), Contains("gamma") && Contains("[0, 1]"));
    c.eta = 0.3;
    c.thresholding = true;
    CHECK_THROWS_WITH(diffusion::scheduler(c), Contains("thresholding is not supported by TCDScheduler"));
  }
  SECTION("EDM") {
    auto c = diffusion::scheduler_config::defaults_for(scheduler_kind::edm_euler);
    diffusion::scheduler s(c);
    s.set_timesteps(10);
    const auto ref = diffusion::karras_sigmas(10, 0.002, 80.0, 7.0);
    REQUIRE(s.sigmas().size() == 11);
    for (std::size_t i = 0; i < 10; ++i) {
      CHECK(s.sigmas()[i] == ref[i]);
      CHECK(s.timesteps()[i] == 0.25 * std::log(ref[i]));  // c_noise
    }
    CHECK(s.sigmas().back() == 0.0);
    CHECK(s.init_noise_sigma() == 80.0);
    std::vector<double> x{40.0, -20.0}, in(2), F{0.3, -0.1};
    s.scale_model_input<double>(x, 0, in);
    CHECK(in[0] == Approx(40.0 / std::sqrt(80.0 * 80.0 + 0.25)).epsilon(1e-15));
    // Euler on D = c_skip x + c_out F: x' = x + (s1 - s0)(x - D)/s0.
    const double s0 = ref[0], s1 = ref[1], cs = 0.25 / (s0 * s0 + 0.25), co = s0 * 0.5 / std::sqrt(s0 * s0 + 0.25);
    std::vector<double> y = x;
    s.step<double>(0, F, y);
    for (std::size_t e = 0; e < 2; ++e) {
      const double D = cs * x[e] + co * F[e];
      CHECK(y[e] == Approx(x[e] + (s1 - s0) * (x[e] - D) / s0).epsilon(1e-13));
    }
    // sigma_schedule exponential, final sigma_min.
    c.sigma_schedule = diffusion::edm_sigma_schedule::exponential;
    c.final_sigmas_type = diffusion::final_sigma::sigma_min;
    diffusion::scheduler e(c);
    e.set_timesteps(5);
    CHECK(e.sigmas().back() == e.sigmas()[4]);
    CHECK(e.sigmas()[0] == Approx(80.0).epsilon(1e-15));
    CHECK(e.sigmas()[4] == Approx(0.002).epsilon(1e-14));
    CHECK_THROWS_WITH(e.set_timesteps(1), Contains("num_inference_steps = 1") && Contains("[2, inf)"));
    CHECK_THROWS_AS(e.training_schedule(), std::logic_error);
    auto bad = c;
    bad.prediction_type = diffusion::prediction::sample;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("prediction_type = sample") && Contains("EDMEulerScheduler"));
    bad = c;
    bad.sigma_max = 0.001;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("sigma_max = 0.001"));
    bad = c;
    bad.use_karras_sigmas = true;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("use_karras_sigmas") && Contains("sigma_schedule"));
  }
}
