// Regression tests of the defects found from outside (issue 14): each reproducer, and siblings of
// its class. Every check here failed before its fix.
#include <catch2/catch.hpp>

#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;
using diffusion::prediction;
using diffusion::variance_type;

TEST_CASE("item 1: sigma_to_t on a one-step zero-SNR schedule is an error, not an out-of-bounds read", "[defects]") {
  const diffusion::noise_schedule one(std::vector<double>{1.0});
  CHECK_THROWS_AS(diffusion::sigma_to_t(one, 1.0), std::out_of_range);
  CHECK_THROWS_WITH(diffusion::sigma_to_t(one, 1.0), Contains("zero terminal SNR"));
  CHECK_THROWS_AS(diffusion::sigma_range(one), std::invalid_argument);
  // The one-step schedule that is not zero-SNR maps its only sigma to t = 0.
  const diffusion::noise_schedule single(std::vector<double>{0.5});
  CHECK(diffusion::sigma_to_t(single, single[0].sigma) == 0.0);
  // Neighbouring sigmas that round alike (tiny beta) give a finite t.
  const diffusion::noise_schedule tiny(std::vector<double>{0.1, 1e-300, 0.2});
  CHECK(std::isfinite(diffusion::sigma_to_t(tiny, tiny[1].sigma)));
}

TEST_CASE("fuzz findings: schedules whose alpha_bar underflows, beta = 2^-1000, extreme (alpha, sigma)", "[defects][fuzz]") {
  const double inf = std::numeric_limits<double>::infinity();
  // beta = 2^-1000, the smallest accepted: Dekker's product without FMA overflowed in its split (NaN sigma).
  const diffusion::noise_schedule small(std::vector<double>{0x1p-1000});
  CHECK(small[0].sigma == Approx(std::sqrt(0x1p-1000)).epsilon(1e-15));
  CHECK(small[0].log_snr == Approx(1000.0 * std::log(2.0)).epsilon(1e-15));
  // beta = 0.5 for 2200 steps: alpha_bar = 2^-2200 has underflowed, sigma = +inf from where
  // 2^-t/2 passes the double range (t ≈ 2048) though every beta < 1. That is not zero terminal SNR.
  const diffusion::noise_schedule halves(diffusion::constant_betas(2200, 0.5));
  CHECK_FALSE(halves.zero_terminal_snr());
  CHECK(halves[2199].sigma == inf);
  const auto [lo, hi] = diffusion::sigma_range(halves);
  CHECK(std::isfinite(hi));
  CHECK(hi > 1e300);
  CHECK(lo == halves[0].sigma);
  CHECK_THROWS_AS(diffusion::sigma_to_t(halves, inf), std::out_of_range);
  const double t_hi = diffusion::sigma_to_t(halves, hi);
  CHECK(halves[static_cast<std::size_t>(t_hi)].sigma == hi);
  CHECK(diffusion::t_to_sigma(halves, 2198.5) == inf);  // between two infinite sigmas: +inf, not NaN
  CHECK(diffusion::t_to_sigma(halves, t_hi + 0.5) == inf);
  // Conversions whose coefficient overflows a double are refused; those with a normal coefficient
  // are exact although alpha*r underflows or alpha^2 + sigma^2 overflows on the way.
  CHECK_THROWS_AS(diffusion::conversion_coefficients(diffusion::noise_level::general(4.9406564584124654e-324, 1.0),
                                                     prediction::epsilon, prediction::sample),
                  std::domain_error);
  CHECK_THROWS_WITH(diffusion::conversion_coefficients(diffusion::noise_level::general(4.9406564584124654e-324, 1.0),
                                                       prediction::epsilon, prediction::sample),
                    Contains("beyond the double range"));
  for (const double m : {1e-200, 1e200}) {
    INFO("alpha = sigma = " << m);
    const auto l = diffusion::noise_level::general(m, m);
    const auto c = diffusion::conversion_coefficients(l, prediction::epsilon, prediction::v);  // (-s/(a r), r/a)
    CHECK(c.a == Approx(-1.0 / (m * std::sqrt(2.0))).epsilon(1e-15));
    CHECK(c.b == Approx(std::sqrt(2.0)).epsilon(1e-15));
    const auto t = diffusion::target_coefficients(l, prediction::v);
    CHECK(t.a == Approx(-1.0 / std::sqrt(2.0)).epsilon(1e-15));
    CHECK(t.b == Approx(1.0 / std::sqrt(2.0)).epsilon(1e-15));
  }
}

TEST_CASE("fuzz findings: log-SNR far below the double range is monotone and within 1 ulp", "[defects][fuzz]") {
  // beta_0 = 1/2, then 4950 steps of beta = 1 - 2^-53 (each multiplies alpha_bar by 2^-53 exactly), then
  // two steps of beta = 2^-40: alpha_bar = 2^-262351 (1 - 2^-40)^k is held as mantissa * 2^e, and the
  // mantissa crosses 1/2 there (renormalized to ~1 with e - 1). log_snr was log m + double(e * ln 2),
  // whose rounding (up to half an ulp of 1.8e5) made log_snr increase by an ulp at step 4951 (found by
  // an unseeded fuzz_schedule run). References from mpmath at 200 bits:
  //   L(i) = -(1 + 53 i) ln 2 - log(1 - 2^-(1 + 53 i)),  L(4950 + k) = L(4950) + k log1p(-2^-40).
  std::vector<double> betas{0.5};
  betas.insert(betas.end(), 4950, 1.0 - 0x1p-53);
  betas.insert(betas.end(), 2, 0x1p-40);
  const diffusion::noise_schedule s(betas);
  for (std::size_t t = 1; t < s.size(); ++t) {
    INFO("t = " << t);
    REQUIRE(s[t].log_snr <= s[t - 1].log_snr);
  }
  const std::pair<std::size_t, double> reference[] = {
      {1, -0x1.2b708872320e2p+5},     {18, -0x1.4afa4fb4bdd88p+9},    {19, -0x1.5d589f2fe5107p+9},
      {20, -0x1.6fb6eeab0c487p+9},    {1000, -0x1.1f02fcc874ba4p+15}, {4950, -0x1.632bed9054504p+17},
      {4951, -0x1.632bed9054504p+17}, {4952, -0x1.632bed9054504p+17}};
  for (const auto& [t, value] : reference) {
    INFO("t = " << t << ": log_snr = " << s[t].log_snr << ", reference " << value);
    CHECK(test::ulps(s[t].log_snr, value) <= 1);
  }
  // The same near-ties in every scaling: the first beta and the small betas varied.
  for (const double first : {0.3, 0.5, 0.7, 0.9})
    for (int k = 30; k <= 60; k += 3) {
      std::vector<double> b{first};
      b.insert(b.end(), 3000, 1.0 - 0x1p-53);
      b.insert(b.end(), 3, std::ldexp(1.0, -k));
      const diffusion::noise_schedule deep(b);
      for (std::size_t t = 1; t < deep.size(); ++t) {
        INFO("beta_0 = " << first << ", small beta = 2^-" << k << ", t = " << t);
        REQUIRE(deep[t].log_snr <= deep[t - 1].log_snr);
      }
    }
}

TEST_CASE("item 4: corrector_steps = SIZE_MAX is refused, not wrapped", "[defects]") {
  diffusion::gaussian_data g({0.0}, {1.0});
  diffusion::sigma_space_model D(g);
  test::test_noise noise{1};
  std::vector<double> x(2);
  CHECK_THROWS_WITH(diffusion::predictor_corrector_sample(D, x, 2, noise, std::vector<double>{1.0, 0.5},
                                                          {.corrector_steps = std::numeric_limits<std::size_t>::max()}),
                    Contains("corrector_steps = 18446744073709551615"));
}

TEST_CASE("item 6: tiny betas keep every table entry finite and within 1 ulp, or are refused", "[defects]") {
  // Refused with the reason below 2^-1000 = 9.33e-302.
  CHECK_THROWS_WITH(diffusion::noise_schedule(diffusion::constant_betas(1000, 1e-305)), Contains("below the smallest allowed"));
  CHECK_THROWS_WITH(diffusion::noise_schedule(std::vector<double>{1e-310, 0.01}), Contains("betas[0] = 1e-310"));
  // Accepted tiny betas: no NaN anywhere, and 1 - alpha_bar exact (no cancellation).
  const double b = 1e-300;  // the reproducer: accepted, and every entry finite
  const diffusion::noise_schedule s(diffusion::constant_betas(1000, b));
  for (std::size_t t = 0; t < s.size(); ++t) {
    const auto& st = s[t];
    INFO("t = " << t);
    for (double v : {st.alpha_bar, st.one_minus_alpha_bar, st.sigma, st.snr, st.log_snr, st.posterior_variance,
                     st.posterior_log_variance_clipped, st.posterior_mean_coef_x0, st.posterior_mean_coef_xt})
      CHECK(std::isfinite(v));
    // 1 - (1 - b)^(t+1) = (t+1) b (1 - t b / 2 + ...): the b^2 term is far below an ulp.
    CHECK(test::ulps(st.one_minus_alpha_bar, static_cast<double>(t + 1) * b) <= 1);
    CHECK(test::ulps(st.posterior_variance, t == 0 ? 0.0 : b * static_cast<double>(t) / static_cast<double>(t + 1)) <= 2);
  }
  // A long schedule whose alpha_bar underflows double keeps finite log-SNR and correctly rounded sigma.
  const diffusion::noise_schedule deep(diffusion::constant_betas(4000, 0.5));
  CHECK(deep[3999].alpha_bar == 0.0);  // 2^-4000 underflows
  CHECK(deep[3999].log_snr == Approx(-4000.0 * std::log(2.0)).epsilon(1e-15));
  CHECK(std::isinf(deep[3999].sigma));
  CHECK(deep[1000].log_snr == Approx(-1001.0 * std::log(2.0)).epsilon(1e-14));
  // The float sampler on tiny betas: finite output.
  const diffusion::noise_schedule small(diffusion::constant_betas(50, 1e-30));
  diffusion::gaussian_data g({0.1}, {1.0});
  std::vector<float> x(8);
  test::test_noise noise{2};
  diffusion::ddpm_sample(small, g, x, 8, noise);
  for (float v : x) CHECK(std::isfinite(v));
  // min_snr_weight at a huge but finite SNR is finite.
  CHECK(std::isfinite(diffusion::min_snr_weight(s, 0, 5.0, prediction::epsilon)));
}

TEST_CASE("item 8: rescale_zero_terminal_snr always returns a valid schedule or refuses with the reason", "[defects]") {
  const auto a = diffusion::rescale_zero_terminal_snr(std::vector<double>{0.01, 1e-40});
  REQUIRE(a.size() == 2);
  CHECK(a[0] == 0.01);
  CHECK(a[1] == 1.0);
  CHECK_NOTHROW(diffusion::noise_schedule(a));
  CHECK_THROWS_WITH(diffusion::rescale_zero_terminal_snr(std::vector<double>{0.01, 0.02, 1e-17}),
                    Contains("index 1") && Contains("rounds to 1"));
  // Small betas in the middle of a realistic schedule: valid, and the first beta unchanged.
  auto betas = diffusion::scaled_linear_betas(1000);
  betas[500] = 1e-30;
  const auto r = diffusion::rescale_zero_terminal_snr(betas);
  CHECK(r[0] == betas[0]);
  CHECK_NOTHROW(diffusion::noise_schedule(r));
  // respace on a schedule with a tiny beta names respace and the timesteps, not an argument the user did not pass.
  const diffusion::noise_schedule s(std::vector<double>{0.5, 1e-300, 0.999999999999999, 0.3});
  CHECK_NOTHROW(diffusion::respace(s, diffusion::timestep_sequence({3, 1}, 4)));
}

TEST_CASE("item 9: ddim_step validates like its sampler", "[defects]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(100));
  std::vector<float> x(4, 0.5f), out(4, 0.1f);
  using diffusion::kernels::no_noise;
  CHECK_THROWS_AS(diffusion::ddim_step<float>(s, {100, 50}, out, x, no_noise{}), std::out_of_range);
  CHECK_THROWS_WITH(diffusion::ddim_step<float>(s, {50, 60}, out, x, no_noise{}), Contains("prev = 60 must be < t = 50"));
  CHECK_THROWS_WITH(diffusion::ddim_step<float>(s, {50, 40}, out, x, no_noise{}, {.eta = std::nan("")}), Contains("eta = nan"));
  CHECK_THROWS_WITH(diffusion::ddim_step<float>(s, {50, 40}, out, x, no_noise{}, {.eta = -0.5}), Contains("eta = -0.5"));
  CHECK_THROWS_WITH(diffusion::ddim_step<float>(s, {50, 40}, out, x, no_noise{}, {.eta = 0.5}), Contains("pass a noise operand"));
  // The positional pre-0.2 form validates the same way.
  std::vector<float> z(4), x0(4), scratch(4);
  CHECK_THROWS_AS(diffusion::ddim_step<float>(s, 100, std::nullopt, 0.0, prediction::epsilon, {}, false, x, out, z, x0, x,
                                              scratch),
                  std::out_of_range);
  CHECK_THROWS_WITH(diffusion::ddim_step<float>(s, 50, 50, 0.0, prediction::epsilon, {}, false, x, out, z, x0, x, scratch),
                    Contains("prev = 50"));
  CHECK_THROWS_AS(diffusion::ddpm_step<float>(s, 100, out, x, no_noise{}), std::out_of_range);
}

TEST_CASE("item 10: DDIM with eta = 2 is refused naming the step, not clamped", "[defects]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  diffusion::gaussian_data g({0.0}, {1.0});
  test::test_noise noise{3};
  std::vector<double> x(4);
  const auto steps = diffusion::inference_timesteps(1000, 10, diffusion::timestep_spacing::leading);
  CHECK_THROWS_WITH(diffusion::ddim_sample(s, g, x, 4, noise, steps, {.eta = 2.0}),
                    Contains("eta = 2 makes the variance exceed") && Contains("the largest eta allowed there is"));
  // eta = 1 is always allowed, and the variance identity holds without cancellation.
  CHECK_NOTHROW(diffusion::ddim_sample(s, g, x, 4, noise, steps, {.eta = 1.0}));
  const auto k = diffusion::ddim_coefficients_at(s, {900, 800}, 1.0);
  const double om_p = s[800].one_minus_alpha_bar;
  CHECK(k.direction * k.direction + k.sigma * k.sigma == Approx(om_p).epsilon(1e-14));
}

TEST_CASE("item 11: the library's own overflow is reported as such, not as the model's", "[defects]") {
  diffusion::gaussian_data g({0.0}, {1.0});
  diffusion::sigma_space_model D(g);
  test::test_noise noise{4};
  std::vector<float> x(4);
  // sigma_0 = 1e39 is +inf in float: the initial draw sigma_0 z cannot be formed.
  CHECK_THROWS_WITH(diffusion::karras_sample(diffusion::karras_method::euler, D, x, 4, noise,
                                             std::vector<double>{1e39, 1.0, 0.0}),
                    Contains("sigmas[0] = 1e+39 is not finite as float") && !Contains("denoiser wrote"));
  // An eps-prediction of 1e37 at t = T - 1: x0 = (x - d eps)/c overflows float; the step says so.
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  auto big = diffusion::make_denoiser(prediction::epsilon, [](const diffusion::denoiser_input<float>&, std::span<float> out) {
    for (auto& o : out) o = 1e37f;
  });
  std::vector<float> xf(4, 1.0f);
  CHECK_THROWS_WITH(diffusion::ddpm_sample(s, big, xf, 4, noise, {.draw_initial_noise = false}),
                    Contains("diffusion::ddpm_step") && Contains("non-finite"));
  // x then holds that step's non-finite result (documented in conventions.md: detecting it costs one
  // flag in the fused pass, restoring x would cost a second buffer).
  // apply_guidance<float> with w = 1e300; convert_prediction<float> with coefficients beyond float.
  std::vector<float> c(4, 1.0f), u(4, 0.5f), o(4);
  CHECK_THROWS_WITH(diffusion::apply_guidance<float>(c, u, 1, {.guidance_scale = 1e300}, o),
                    Contains("guidance_scale = 1e+300 is not finite as float"));
  const diffusion::noise_schedule steep(diffusion::constant_betas(200, 0.9));  // alpha_bar ~ 1e-200 at the end
  CHECK_THROWS_WITH(diffusion::convert_prediction(steep, 199, prediction::epsilon, prediction::sample, c, u, o),
                    Contains("not finite as float"));
  // q_sample of finite inputs whose result overflows float.
  std::vector<float> huge(4, 3e38f);
  CHECK_THROWS_WITH(diffusion::q_sample(s, 500, huge, huge, o), Contains("xt has a non-finite element"));
}

TEST_CASE("item 12: partial overlap of an input and an output is refused at API entry", "[defects]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  std::vector<float> buf(1001, 0.5f), eps(1000, 1.0f);
  const std::span<const float> in(buf.data(), 1000);
  const std::span<float> out(buf.data() + 1, 1000);
  CHECK_THROWS_WITH(diffusion::q_sample(s, 500, in, eps, out), Contains("overlap partially"));
  CHECK_THROWS_WITH(diffusion::velocity_target(s, 500, in, eps, out), Contains("overlap partially"));
  CHECK_THROWS_WITH(diffusion::posterior_mean(s, 500, in, eps, out), Contains("overlap partially"));
  CHECK_THROWS_WITH(diffusion::convert_prediction(s, 500, prediction::epsilon, prediction::sample, in, eps, out),
                    Contains("overlap partially"));
  CHECK_THROWS_WITH(diffusion::apply_guidance<float>(in, eps, 1, {}, out), Contains("overlap partially"));
  // Exact aliasing (in place) stays allowed.
  std::vector<float> a(1000, 0.5f);
  CHECK_NOTHROW(diffusion::q_sample(s, 500, a, eps, a));
  // Step functions too.
  std::vector<double> xs(9, 0.1), den(8, 0.0);
  CHECK_THROWS_WITH(diffusion::euler_step<double>(diffusion::sigma_step{1.0, 0.5}, std::span<const double>(xs.data(), 8),
                                                  std::span<double>(xs.data() + 1, 8)),
                    Contains("overlap partially"));
}

TEST_CASE("item 13: after a model exception, Euler and Heun with churn leave x at the last completed step", "[defects]") {
  diffusion::gaussian_data g({0.2, -0.1}, {0.5, 1.5});
  int calls = 0;
  int fail_at = 0;
  auto flaky = diffusion::make_denoiser(prediction::epsilon, [&](const diffusion::denoiser_input<double>& in, std::span<double> out) {
    if (++calls == fail_at) throw std::runtime_error("model failed");
    g(in, out);
  });
  diffusion::sigma_space_model D(flaky, diffusion::sigma_timesteps);
  const auto sig = diffusion::karras_sigmas(8, 0.05, 10.0);
  for (auto method : {diffusion::karras_method::euler, diffusion::karras_method::heun}) {
    for (int fail : {3, 4}) {  // Heun: the first and the second evaluation of a step
      std::vector<double> x(4), reference(4);
      test::test_noise noise{5};
      std::size_t completed = 0;
      diffusion::sampler_hooks<double> hooks{.on_step = [&](const diffusion::step_info<double>& info) {
        completed = info.index;
        std::copy(info.x.begin(), info.x.end(), reference.begin());
        return true;
      }};
      calls = 0;
      fail_at = fail;
      CHECK_THROWS_WITH(diffusion::karras_sample(method, D, x, 2, noise, sig, {.s_churn = 40.0}, hooks),
                        Contains("model failed"));
      INFO("method " << static_cast<int>(method) << " failing call " << fail << ", completed steps " << completed);
      REQUIRE(completed > 0);
      CHECK(x == reference);
    }
  }
}

TEST_CASE("item 14: learned_range outside [-1, 1] extrapolates the same way in every entry point", "[defects]") {
  const diffusion::noise_schedule s(diffusion::cosine_betas(100));
  const std::size_t t = 40;
  const double v = 1.7;  // outside [-1, 1]
  const auto lv = diffusion::reverse_log_variance::at(s, t, variance_type::learned_range);
  const double want = 0.5 * (v + 1.0) * std::log(s[t].beta) + 0.5 * (1.0 - v) * s[t].posterior_log_variance_clipped;
  CHECK(lv(v) == Approx(want).epsilon(1e-15));
  // vlb_term: the KL with that log-variance.
  const std::vector<double> x0{0.3}, xt{0.1}, out{0.2, v};
  const double kl = diffusion::vlb_term(s, t, x0, xt, out, prediction::epsilon, {.variance = variance_type::learned_range});
  CHECK(std::isfinite(kl));
  // ddpm_step: the noise scale exp(lv/2), checked by two noises differing by 1 in one element.
  std::vector<double> xa{0.1}, xb{0.1};
  const std::vector<double> z0{0.0}, z1{1.0};
  const diffusion::ddpm_step_options opt{.variance = variance_type::learned_range};
  diffusion::ddpm_step<double>(s, t, out, xa, std::span<const double>(z0), opt);
  diffusion::ddpm_step<double>(s, t, out, xb, std::span<const double>(z1), opt);
  CHECK(xb[0] - xa[0] == Approx(std::exp(0.5 * want)).epsilon(1e-13));
  // Heun reports the x0 of the step's first evaluation, with sigma_next.
  diffusion::gaussian_data g({0.3}, {0.5}, prediction::sample);
  diffusion::sigma_space_model D(g);
  test::test_noise noise{6};
  std::vector<double> x{1.5};
  const auto sig = diffusion::karras_sigmas(5, 0.1, 5.0);
  std::vector<double> first_eval;
  diffusion::heun_sample(D, x, 1, noise, sig, {.draw_initial_noise = false},
                         {.on_step = [&](const diffusion::step_info<double>& info) {
                           if (info.index == 1) {
                             first_eval.assign(info.x0_pred.begin(), info.x0_pred.end());
                             CHECK(info.sigma == sig[0]);
                             CHECK(info.sigma_next == sig[1]);
                           }
                           return true;
                         }});
  REQUIRE(first_eval.size() == 1);
  CHECK(first_eval[0] == Approx(g.posterior_mean_x0(0, sig[0], 1.5 / std::sqrt(1.0 + sig[0] * sig[0]))).epsilon(1e-14));
}

TEST_CASE("item 15: the sampler row check names rows and x", "[defects]") {
  diffusion::gaussian_data g({0.0}, {1.0});
  diffusion::sigma_space_model D(g);
  test::test_noise noise{7};
  std::vector<double> x(6);
  const auto sig = diffusion::karras_sigmas(5, 0.1, 5.0);
  CHECK_THROWS_WITH(diffusion::karras_sample(diffusion::karras_method::euler, D, x, 4, noise, sig),
                    Contains("rows = 4 does not divide x.size() = 6") && !Contains("timesteps"));
  CHECK_THROWS_WITH(diffusion::karras_sample(diffusion::karras_method::euler, D, x, 0, noise, sig),
                    Contains("rows = 0 must be >= 1"));
}

// A count that sizes a table (timesteps, betas, levels) is an argument like any other: one that cannot
// be had is an std::invalid_argument naming the function and the count, never std::bad_alloc,
// std::length_error, a wrapped n + 1 (an empty vector then written past its end) or a division by 0.
TEST_CASE("counts that size a table: too large is a clear error, never an allocation failure or a wrap", "[defects][overflow]") {
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  // 2^61 doubles exceed max_size(); SIZE_MAX + 1 levels wrap to 0. (Counts that fit in address space
  // but not in memory are left out: with AddressSanitizer or overcommit they abort or succeed instead of
  // throwing; the test of loss_second_moment_sampler covers the std::bad_alloc path where it can.)
  for (const std::size_t n : {max, max - 1, std::size_t{1} << 61}) {
    INFO("n = " << n);
    CHECK_THROWS_WITH(diffusion::linear_betas(n), Contains("diffusion::linear_betas") && Contains("num_timesteps = ") &&
                                                      Contains("more than can be allocated"));
    CHECK_THROWS_AS(diffusion::cosine_betas(n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::scaled_linear_betas(n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::sigmoid_betas(n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::constant_betas(n, 0.01), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::jsd_betas(n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::iddpm_linear_betas(n), std::invalid_argument);
    CHECK_THROWS_WITH(diffusion::karras_sigmas(n, 0.002, 80.0),
                      Contains("diffusion::karras_sigmas") && Contains("n = ") && Contains("levels"));
    CHECK_THROWS_AS(diffusion::exponential_sigmas(n, 0.002, 80.0), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::geometric_sigmas(n, 0.002, 80.0), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::polyexponential_sigmas(n, 0.002, 80.0), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::kl_optimal_sigmas(n, 0.002, 80.0), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::logsnr_uniform_sigmas(n, -5.0, 5.0), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::vp_sigmas(n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::beta_sigmas(n, 0.002, 80.0), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::ays_sigmas(diffusion::ays_model::sd15, n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::linear_quadratic_sigmas(n), std::invalid_argument);
    CHECK_THROWS_WITH(diffusion::flow_sigmas(n), Contains("diffusion::flow_sigmas") && Contains("n = "));
    const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
    CHECK_THROWS_AS(diffusion::simple_sigmas(s, n), std::invalid_argument);
    CHECK_THROWS_AS(diffusion::normal_sigmas(s, n, true), std::invalid_argument);
  }
  // ddim_uniform's stride ⌊T/(n + 1)⌋ (where σ_1 ≈ 0) divided by n + 1 = 0 at n = SIZE_MAX; any n ≥ T
  // gives stride 1, every table step.
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
  CHECK(diffusion::ddim_uniform_sigmas(s, max).size() == 1000);  // t = 1 … 999 and the final 0
  std::vector<double> tiny(1000, 1e-12);  // σ_1 ≈ 0: the branch that adds 1 to n
  tiny[999] = 0.5;
  const diffusion::noise_schedule flat(tiny);
  CHECK(diffusion::ddim_uniform_sigmas(flat, max).size() == 999);
  CHECK(diffusion::ddim_uniform_sigmas(flat, 999).size() == 999);
  // The scheduler classes with their own list (IPNDM, flow, EDM): N is not bounded by T there.
  for (const auto k : {diffusion::scheduler_kind::ipndm, diffusion::scheduler_kind::flow_match_euler,
                       diffusion::scheduler_kind::edm_euler}) {
    diffusion::scheduler sched(diffusion::scheduler_config::defaults_for(k));
    CHECK_THROWS_WITH(sched.set_timesteps(max), Contains("diffusion::scheduler::set_timesteps") &&
                                                    Contains("num_inference_steps = 18446744073709551615") &&
                                                    Contains("more than can be allocated"));
    sched.set_timesteps(4);  // and it still works
    CHECK(sched.timesteps().size() == 4);
  }
}

// Scalar parameters at the edges of the double range: an error or a finite, right answer, never a silent
// NaN or infinity (found by a sweep over NaN, ±inf, 0, subnormals, 1e±300 for every parameter).
TEST_CASE("schedule parameters at the edges of the double range", "[defects][overflow]") {
  constexpr double tiny = std::numeric_limits<double>::denorm_min();
  // EDM's loss weight overflows where sigma * sigma_data underflowed first: an error, not +inf.
  CHECK_THROWS_WITH(diffusion::edm_loss_weight(1e-300, 0.5), Contains("diffusion::edm_loss_weight") && Contains("exceeds"));
  CHECK_THROWS_AS(diffusion::edm_loss_weight(0.5, tiny), std::domain_error);
  CHECK(diffusion::edm_loss_weight(1e-150, 1.0) == Approx(1e300).epsilon(1e-15));  // finite, no underflow on the way
  CHECK(diffusion::edm_loss_weight(2.0, 0.5) == Approx(4.25 / 0.25 / 4.0).epsilon(1e-15));
  // Flux's time shift with mu far outside +-709 at a subnormal or near-1 sigma: r^p overflowed against
  // e^-mu = 0 (NaN); the log form gives the limit.
  CHECK(diffusion::time_shift(diffusion::time_shift_kind::exponential, 1e300, tiny) == 1.0);
  CHECK(diffusion::time_shift(diffusion::time_shift_kind::exponential, -1e300, 1.0 - 1e-16, 40.0) == 0.0);
  CHECK(diffusion::time_shift(diffusion::time_shift_kind::exponential, 2.0, 0.5) ==
        Approx(1.0 / (1.0 + std::exp(-2.0))).epsilon(1e-15));
  diffusion::flow_schedule_options o;
  o.dynamic = true;
  o.mu = 1e300;
  for (const double v : diffusion::flow_sigmas(8, o).sigmas) CHECK(std::isfinite(v));
  // Karras' rho so small that sigma^(1/rho) leaves the double range: refused, naming rho.
  CHECK_THROWS_WITH(diffusion::karras_sigmas(10, 0.002, 80.0, 1e-8), Contains("diffusion::karras_sigmas") && Contains("rho"));
  CHECK_THROWS_WITH(diffusion::karras_sigmas(10, 0.002, 80.0, 1e-3), Contains("rho"));
  CHECK(std::isfinite(diffusion::karras_sigmas(10, 0.002, 80.0, 0.1)[5]));
  // The cosine schedule with a huge offset s: the angles' squares underflowed (0/0); now its betas are
  // finite where the ratios are representable, and an error where even the angles underflow.
  for (const double b : diffusion::cosine_betas(10, 1e300)) CHECK((b > 0.0 && b <= 0.999));
  // As s → ∞, ᾱ_t ∝ sin²(c(T − t)) with c → 0, so β_i → 1 − ((k − 1)/k)², k = T − i (the last is clipped).
  const auto huge = diffusion::cosine_betas(10, 1e300);
  for (std::size_t i = 0; i + 1 < huge.size(); ++i) {
    const double k = static_cast<double>(huge.size() - i);
    CHECK(huge[i] == Approx(1.0 - ((k - 1.0) / k) * ((k - 1.0) / k)).epsilon(1e-14));
  }
  CHECK_THROWS_WITH(diffusion::cosine_betas(10, 1.7e308), Contains("diffusion::cosine_betas") && Contains("s = "));
}

// An enum cast from an integer (a value read from a file, say) is an argument like any other: every
// function that switches on one refuses a value outside its enumerators by name. Before, seven of them
// fell through to a default silently (flow_loss_weight returned 1, flow_sigma_sampler the uniform draw, the
// scheduler ran its default algorithm, final σ, time shift or EDM list).
TEST_CASE("enumerators out of range are refused by name", "[defects][enums]") {
  for (const int v : {-1, 2, 4, 99}) {
    INFO("value " << v);
    using diffusion::scheduler_kind;
    auto refused = [](scheduler_kind k, auto&& set) {
      auto c = diffusion::scheduler_config::defaults_for(k);
      set(c);
      return [c] { diffusion::scheduler s(c); };
    };
    if (v >= 4 || v < 0)
      CHECK_THROWS_WITH(refused(scheduler_kind::dpm_solver_multistep,
                                [v](auto& c) { c.algorithm_type = static_cast<diffusion::dpm_algorithm>(v); })(),
                        Contains("algorithm_type = ") && Contains("is not one of"));
    CHECK_THROWS_WITH(refused(scheduler_kind::dpm_solver_multistep,
                              [v](auto& c) { c.final_sigmas_type = static_cast<diffusion::final_sigma>(v == 4 ? 2 : v); })(),
                      Contains("final_sigmas_type"));
    CHECK_THROWS_WITH(refused(scheduler_kind::flow_match_euler,
                              [v](auto& c) { c.time_shift_type = static_cast<diffusion::time_shift_kind>(v == 4 ? 2 : v); })(),
                      Contains("time_shift_type"));
    CHECK_THROWS_WITH(refused(scheduler_kind::edm_euler,
                              [v](auto& c) { c.sigma_schedule = static_cast<diffusion::edm_sigma_schedule>(v == 4 ? 2 : v); })(),
                      Contains("sigma_schedule"));
    CHECK_THROWS_WITH(diffusion::edm_preconditioning(1.0, 0.5, static_cast<diffusion::edm_variant>(v == 4 ? 2 : v)),
                      Contains("diffusion::edm_preconditioning") && Contains("variant"));
    CHECK_THROWS_WITH(diffusion::time_shift(static_cast<diffusion::time_shift_kind>(v == 4 ? 2 : v), 0.5, 0.5),
                      Contains("diffusion::time_shift") && Contains("kind"));
    diffusion::flow_schedule_options o;
    o.kind = static_cast<diffusion::time_shift_kind>(v == 4 ? 2 : v);
    CHECK_THROWS_WITH(diffusion::flow_sigmas(8, o), Contains("diffusion::flow_sigmas") && Contains("kind"));
    if (v != 2)
      CHECK_THROWS_WITH(diffusion::flow_loss_weight(static_cast<diffusion::flow_weighting>(v == 4 ? 3 : v), 0.5),
                        Contains("diffusion::flow_loss_weight") && Contains("weighting"));
    diffusion::flow_sigma_sampler f;
    f.density = static_cast<diffusion::flow_density>(v == 2 ? 4 : v);
    CHECK_THROWS_WITH(f(0, 0), Contains("diffusion::flow_sigma_sampler") && Contains("density"));
  }
}
