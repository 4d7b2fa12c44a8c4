// DDPM ancestral and DDIM against exact targets on Gaussian data: the exact output law of the
// ancestral chain (a linear-Gaussian recursion), the exact probability-flow map with measured
// convergence order, DDIM eta = 1 against DDPM, inversion, callbacks, reproducibility, errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_ddpm.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::prediction;
using diffusion::variance_type;

// For 1-D Gaussian data the model's x0_hat is affine in x_t, so the ancestral chain is
// x <- A x + B + sigma z with known A, B: the output is exactly N(m, v) with m, v from this
// recursion (x_T ~ N(0, 1)).
struct gaussian_law {
  double mean, var;
};
gaussian_law ancestral_law(const diffusion::noise_schedule& ss, double mu, double sd, variance_type v) {
  double m = 0.0, var = 1.0;
  for (std::size_t j = ss.size(); j-- > 0;) {
    const auto& st = ss[j];
    // x0_hat = mu + k (x - c mu), k = c s^2 / (c^2 s^2 + d^2)
    const double c = st.sqrt_alpha_bar, kk = c * sd * sd / (st.alpha_bar * sd * sd + st.one_minus_alpha_bar);
    const double A = st.posterior_mean_coef_x0 * kk + st.posterior_mean_coef_xt;
    const double B = st.posterior_mean_coef_x0 * (mu - kk * c * mu);
    m = A * m + B;
    var = A * A * var + (j > 0 ? std::exp(diffusion::fixed_log_variance(ss, j, v)) : 0.0);
  }
  return {m, var};
}

template <class F>
std::vector<double> run_rows(std::size_t rows, F f) {
  std::vector<double> x(rows);
  f(x);
  return x;
}

void check_moments(const std::vector<double>& x, double mean, double var, const char* what) {
  const double n = static_cast<double>(x.size());
  double m = 0, m2 = 0;
  for (double v : x) m += v;
  m /= n;
  for (double v : x) m2 += (v - m) * (v - m);
  const double sv = m2 / (n - 1);
  INFO(what << ": mean " << m << " vs " << mean << ", variance " << sv << " vs " << var);
  // 5 standard errors: false-failure probability < 6e-7 per check.
  CHECK(std::abs(m - mean) <= 5 * std::sqrt(var / n));
  CHECK(std::abs(sv - var) <= 5 * var * std::sqrt(2 / (n - 1)));
}
}  // namespace

TEST_CASE("DDPM ancestral sampling draws exactly the law of its Gaussian chain", "[samplers][ddpm][montecarlo]") {
  // 1-D data N(0.4, 0.5^2), exact denoiser, 100000 samples (rows) at once, seed 11.
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const double mu = 0.4, sd = 0.5;
  diffusion::gaussian_data g({mu}, {sd});
  test::test_noise noise{11};
  constexpr std::size_t N = 100000;
  for (auto v : {variance_type::fixed_small, variance_type::fixed_large}) {
    const auto seq = diffusion::inference_timesteps(1000, 50, diffusion::timestep_spacing::trailing);
    std::vector<double> x(N);
    diffusion::ddpm_sample(s, g, x, N, noise, {.variance = v, .timesteps = seq});
    const auto law = ancestral_law(diffusion::respace(s, seq).schedule, mu, sd, v);
    check_moments(x, law.mean, law.var, v == variance_type::fixed_small ? "fixed_small" : "fixed_large");
    WARN("DDPM 50 steps, " << (v == variance_type::fixed_small ? "fixed_small" : "fixed_large")
                           << ": output N(" << law.mean << ", " << law.var << ") vs data N(" << mu << ", " << sd * sd
                           << ")");
  }
  // The documented bias, from the exact recursion: fixed_small (beta~, optimal for a point mass)
  // under-disperses and fixed_large (beta, optimal for N(0, 1)) over-disperses data of variance
  // 0.25 (DDPM §3.2), and both biases shrink with more steps.
  const auto seq50 = diffusion::respace(s, diffusion::inference_timesteps(1000, 50, diffusion::timestep_spacing::trailing)).schedule;
  const auto small50 = ancestral_law(seq50, mu, sd, variance_type::fixed_small), large50 = ancestral_law(seq50, mu, sd, variance_type::fixed_large);
  const auto small1000 = ancestral_law(s, mu, sd, variance_type::fixed_small), large1000 = ancestral_law(s, mu, sd, variance_type::fixed_large);
  CHECK(small50.var < sd * sd);
  CHECK(large50.var > sd * sd);
  CHECK(small1000.var < sd * sd);
  CHECK(large1000.var > sd * sd);
  CHECK(std::abs(small1000.var - sd * sd) < std::abs(small50.var - sd * sd) / 10);
  CHECK(std::abs(large1000.var - sd * sd) < std::abs(large50.var - sd * sd) / 4);
  WARN("DDPM 1000 steps: variance " << small1000.var << " (fixed_small), " << large1000.var << " (fixed_large) vs " << sd * sd);
}

TEST_CASE("DDIM with eta = 0 converges to the exact probability-flow map at first order", "[samplers][ddim]") {
  // For Gaussian data the flow in sigma-space is x(sigma) - mu = (x0 - mu) sqrt(s^2 + sigma^2)/sqrt(s^2 + sigma0^2).
  // DDIM's state in VP scale is x_vp = x/sqrt(1 + sigma^2). Ending at the first step's noise
  // level (final_alpha::first_step) compares like with like.
  const diffusion::noise_schedule s(diffusion::cosine_betas(1000));
  const double mu = -0.3, sd = 0.7;
  diffusion::gaussian_data g({mu}, {sd});
  test::test_noise noise{0};
  const double x_start = 1.3;  // VP state at t = 999
  std::vector<double> errors;
  const std::vector<std::size_t> Ns = {10, 20, 40, 80, 160};
  for (std::size_t N : Ns) {
    const auto seq = diffusion::inference_timesteps(1000, N, diffusion::timestep_spacing::linspace);
    std::vector<double> x{x_start};
    diffusion::ddim_sample(s, g, x, 1, noise, seq, {.final = diffusion::ddim_options::final_alpha::first_step,
                                                    .draw_initial_noise = false});
    const double s_hi = s[999].sigma, s_lo = s[0].sigma;
    const double xv = x_start * std::sqrt(1 + s_hi * s_hi);
    const double exact_ve = mu + (xv - mu) * std::sqrt(sd * sd + s_lo * s_lo) / std::sqrt(sd * sd + s_hi * s_hi);
    const double got_ve = x[0] * std::sqrt(1 + s_lo * s_lo);
    errors.push_back(std::abs(got_ve - exact_ve));
  }
  for (std::size_t i = 1; i < errors.size(); ++i) {
    const double order = std::log2(errors[i - 1] / errors[i]);
    INFO("N = " << Ns[i] << ": error " << errors[i] << ", observed order " << order);
    CHECK(order > 0.85);
    CHECK(order < 1.15);
    WARN("DDIM eta = 0, N = " << Ns[i] << ": error " << errors[i] << ", order " << order);
  }
}

TEST_CASE("DDIM with eta = 1 is DDPM's ancestral step with the posterior variance", "[samplers][ddim]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  diffusion::gaussian_data g({0.1, -0.2, 0.3}, {0.5, 0.2, 1.0});
  test::test_noise noise{5};
  const auto seq = diffusion::inference_timesteps(1000, 25, diffusion::timestep_spacing::leading, 1);
  std::vector<double> a(3 * 8), b(3 * 8);
  diffusion::ddpm_sample(s, g, a, 8, noise, {.variance = variance_type::fixed_small, .timesteps = seq});
  diffusion::ddim_sample(s, g, b, 8, noise, seq, {.eta = 1.0});
  // Same noise streams, algebraically identical steps: agreement to rounding over 25 steps.
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).margin(1e-12));
}

TEST_CASE("DDIM inversion followed by DDIM sampling returns the image, better with more steps", "[samplers][ddim]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  diffusion::gaussian_data g({0.2, -0.4}, {0.6, 0.3});
  test::test_noise noise{0};
  double prev = std::numeric_limits<double>::infinity();
  for (std::size_t N : {10u, 50u, 250u}) {
    const auto seq = diffusion::inference_timesteps(1000, N, diffusion::timestep_spacing::linspace);
    std::vector<double> x{0.5, -0.1};
    diffusion::ddim_invert(s, g, x, 1, seq);
    diffusion::ddim_sample(s, g, x, 1, noise, seq, {.draw_initial_noise = false});
    const double err = std::hypot(x[0] - 0.5, x[1] + 0.1);
    INFO("N = " << N << ": reconstruction error " << err);
    CHECK(err < prev);
    prev = err;
  }
  CHECK(prev < 0.05);
}

TEMPLATE_TEST_CASE("samplers are bit-reproducible, report each step, and can be cancelled", "[samplers]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  diffusion::gaussian_data g({0.0, 0.5}, {1.0, 0.2});
  test::test_noise noise{42};
  const auto seq = diffusion::inference_timesteps(1000, 20, diffusion::timestep_spacing::trailing);
  std::vector<T> a(2 * 4), b(2 * 4);
  diffusion::ddpm_sample(s, g, a, 4, noise, {.timesteps = seq});
  diffusion::ddpm_sample(s, g, b, 4, noise, {.timesteps = seq});
  CHECK(a == b);
  diffusion::ddpm_sample(s, g, b, 4, noise, {.timesteps = seq, .first_sample = 1});
  CHECK(a != b);
  // Rows are independent streams: row 1 of a batch equals row 0 of a batch starting at sample 1.
  std::vector<T> one(2);
  diffusion::ddpm_sample(s, g, one, 1, noise, {.timesteps = seq, .first_sample = 1});
  CHECK(one[0] == a[2]);
  CHECK(one[1] == a[3]);

  std::vector<std::size_t> seen;
  std::vector<double> ts;
  diffusion::sampler_hooks<T> hooks{.on_step = [&](const diffusion::step_info<T>& info) {
    seen.push_back(info.index);
    ts.push_back(info.timestep);
    CHECK(info.count == 20);
    CHECK(info.x0_pred.size() == 8);
    return info.index < 5;  // cancel after the 5th step
  }};
  const auto r = diffusion::ddpm_sample(s, g, a, 4, noise, {.timesteps = seq}, hooks);
  CHECK_FALSE(r.completed);
  CHECK(r.steps == 5);
  CHECK(r.model_calls == 5);
  CHECK(seen == std::vector<std::size_t>{1, 2, 3, 4, 5});
  CHECK(ts[0] == 999.0);
}

TEST_CASE("dynamic thresholding follows Imagen/diffusers", "[samplers]") {
  // Row |x0| = 0..9 (10 values) and p = 0.5: quantile at position 4.5 -> 4.5; s = 4.5;
  // x0 <- clamp(x0, -4.5, 4.5) / 4.5.
  std::vector<double> x0 = {0, -1, 2, -3, 4, -5, 6, -7, 8, -9}, scratch(10);
  diffusion::x0_processing p{.threshold = true, .threshold_options = {.percentile = 0.5, .max_value = 10.0}};
  diffusion::detail::process_x0_row<double>(p, x0, scratch);
  CHECK(x0[4] == Approx(4.0 / 4.5));
  CHECK(x0[5] == Approx(-1.0));
  CHECK(x0[9] == Approx(-1.0));
  // s is clamped below at 1: small values pass unchanged.
  std::vector<double> small = {0.1, -0.2, 0.3};
  diffusion::detail::process_x0_row<double>(p, small, scratch);
  CHECK(small == std::vector<double>{0.1, -0.2, 0.3});
}

TEST_CASE("the sigma-space view recovers x0 for every prediction kind", "[samplers][sigma]") {
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
  for (auto kind : {prediction::epsilon, prediction::sample, prediction::v, prediction::score}) {
    diffusion::gaussian_data g({0.3}, {0.8}, kind);
    diffusion::sigma_space_model<diffusion::gaussian_data> D(g, &s);
    const std::vector<double> x = {1.7, -0.4}, sig = {s[10].sigma, 3.0};
    std::vector<double> x0(2);
    D(std::span<const double>(x), std::span<const double>(sig), std::span<double>(x0));
    for (std::size_t b = 0; b < 2; ++b) {
      INFO("kind " << static_cast<int>(kind) << " row " << b);
      // In sigma-space, E[x0 | x] at level sigma with x = x0 + sigma eps is the same as in VP scale.
      const double want = g.posterior_mean_x0(0, sig[b], x[b] / std::sqrt(1 + sig[b] * sig[b]));
      CHECK(x0[b] == Approx(want).epsilon(1e-12));
    }
    CHECK(D.last_times()[1] == Approx(diffusion::sigma_to_t(s, 3.0)));
  }
}

TEST_CASE("sampler errors: NaN from the model, bad options, bad sizes", "[samplers][errors]") {
  using Catch::Matchers::Contains;
  const diffusion::noise_schedule s(diffusion::linear_betas(100, 1e-3, 0.05));
  test::test_noise noise{1};
  auto bad = diffusion::make_denoiser(prediction::epsilon, [](const diffusion::denoiser_input<double>& in, std::span<double> out) {
    for (auto& o : out) o = 0.0;
    if (in.timesteps[0] < 90) out[1] = std::numeric_limits<double>::quiet_NaN();
  });
  std::vector<double> x(4);
  CHECK_THROWS_AS(diffusion::ddpm_sample(s, bad, x, 2, noise), std::domain_error);
  CHECK_THROWS_WITH(diffusion::ddpm_sample(s, bad, x, 2, noise),
                    Contains("nan at row 0, element 1 in step 10 (timestep 89)"));
  diffusion::gaussian_data g({0.0, 0.0}, {1.0, 1.0});
  const auto seq = diffusion::inference_timesteps(100, 10, diffusion::timestep_spacing::linspace);
  CHECK_THROWS_WITH(diffusion::ddim_sample(s, g, x, 2, noise, seq, {.eta = -0.5}), Contains("eta = -0.5"));
  CHECK_THROWS_WITH(diffusion::ddim_sample(s, g, x, 2, noise, seq, {.eta = std::nan("")}), Contains("eta = nan"));
  CHECK_THROWS_WITH(diffusion::ddim_sample(s, g, x, 3, noise, seq), Contains("rows = 3 does not divide x.size() = 4"));
  CHECK_THROWS_WITH(diffusion::ddim_sample(s, g, x, 2, noise, diffusion::inference_timesteps(1000, 10, diffusion::timestep_spacing::linspace)),
                    Contains("differs from the schedule's size 100"));
  CHECK_THROWS_WITH(diffusion::ddpm_sample(s, g, x, 2, noise, {.x0 = {.clip = true, .clip_value = 0.0}}), Contains("clip_value = 0"));
  CHECK_THROWS_WITH(diffusion::ddpm_sample(s, g, x, 2, noise, {.x0 = {.threshold = true, .threshold_options = {.percentile = 1.5}}}),
                    Contains("percentile = 1.5"));
  std::vector<double> empty;
  CHECK_THROWS_WITH(diffusion::ddpm_sample(s, g, empty, 1, noise), Contains("x is empty"));
  // A non-finite variance output is refused, naming the element (finite learned_range outputs
  // outside [-1, 1] extrapolate, as improved DDPM does: tested below).
  auto infinite = diffusion::make_denoiser(prediction::epsilon, [](const diffusion::denoiser_input<double>&, std::span<double> out) {
    for (auto& o : out) o = 0.5;
    out[out.size() - 1] = std::numeric_limits<double>::infinity();
  });
  CHECK_THROWS_WITH(diffusion::ddpm_sample(s, infinite, x, 2, noise, {.variance = variance_type::learned_range}),
                    Contains("the denoiser wrote inf at row 1, element 3"));
}

TEST_CASE("learned variances reproduce the fixed ones when the model outputs them", "[samplers][ddpm]") {
  // A model that writes the exact eps and, as its variance block, log beta~ (learned), or the
  // learned_range end points v = -1 (log beta~ clipped) and v = +1 (log beta): the samples must
  // equal fixed_small and fixed_large with the same noise.
  const diffusion::noise_schedule s(diffusion::cosine_betas(200));
  diffusion::gaussian_data g({0.2, -0.3}, {0.5, 0.9});
  test::test_noise noise{8};
  const auto seq = diffusion::space_timesteps(200, "ddim20");
  const auto ss = diffusion::respace(s, seq);
  auto model_with = [&](auto variance_of) {
    return diffusion::make_denoiser(prediction::epsilon, [&, variance_of](const diffusion::denoiser_input<double>& in, std::span<double> out) {
      const std::size_t n = in.row_size();
      for (std::size_t r = 0; r < in.rows(); ++r) {
        g(diffusion::denoiser_input<double>{in.x.subspan(r * n, n), in.timesteps.subspan(r, 1), in.sigma.subspan(r, 1)},
          out.subspan(2 * n * r, n));
        // the sampling schedule's step of this timestep
        const auto it = std::find(ss.timestep_map.begin(), ss.timestep_map.end(), static_cast<std::size_t>(in.timesteps[r]));
        const std::size_t j = static_cast<std::size_t>(it - ss.timestep_map.begin());
        for (std::size_t k = 0; k < n; ++k) out[2 * n * r + n + k] = variance_of(j);
      }
    });
  };
  auto run = [&](auto& m, variance_type v) {
    std::vector<double> x(2 * 3);
    diffusion::ddpm_sample(s, m, x, 3, noise, {.variance = v, .timesteps = seq});
    return x;
  };
  auto learned = model_with([&](std::size_t j) { return ss.schedule[j].posterior_log_variance_clipped; });
  auto range_lo = model_with([](std::size_t) { return -1.0; });
  auto range_hi = model_with([](std::size_t) { return 1.0; });
  const auto small = run(g, variance_type::fixed_small), large = run(g, variance_type::fixed_large);
  const auto a = run(learned, variance_type::learned), b = run(range_lo, variance_type::learned_range),
             c = run(range_hi, variance_type::learned_range);
  for (std::size_t i = 0; i < small.size(); ++i) {
    CHECK(a[i] == Approx(small[i]).epsilon(1e-13));
    CHECK(b[i] == Approx(small[i]).epsilon(1e-13));
    CHECK(c[i] == Approx(large[i]).epsilon(1e-13));
  }
}

TEST_CASE("DDIM use_clipped_model_output recomputes eps from the clipped x0", "[samplers][ddim]") {
  // One step t -> p with a model whose x0 prediction exceeds the clip: with the option, the
  // step is x_p = sqrt(ab_p) x0c + sqrt(1 - ab_p) eps_c with eps_c = (x_t - sqrt(ab_t) x0c)/sqrt(1 - ab_t).
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const std::size_t t = 600, p = 500;
  const std::vector<double> x = {2.5, -0.2}, out = {-2.0, 0.3};  // eps predictions
  std::vector<double> x0(2), a(2), b(2), z(2), scratch(2);
  const diffusion::x0_processing clip{.clip = true};
  diffusion::ddim_step<double>(s, t, p, 0.0, prediction::epsilon, clip, false, x, out, z, x0, a, scratch);
  diffusion::ddim_step<double>(s, t, p, 0.0, prediction::epsilon, clip, true, x, out, z, x0, b, scratch);
  for (std::size_t k = 0; k < 2; ++k) {
    const double x0_raw = (x[k] - s[t].sqrt_one_minus_alpha_bar * out[k]) / s[t].sqrt_alpha_bar;
    const double x0c = std::clamp(x0_raw, -1.0, 1.0);
    CHECK(x0[k] == Approx(x0c).epsilon(1e-14));
    const double eps_c = (x[k] - s[t].sqrt_alpha_bar * x0c) / s[t].sqrt_one_minus_alpha_bar;
    CHECK(b[k] == Approx(s[p].sqrt_alpha_bar * x0c + s[p].sqrt_one_minus_alpha_bar * eps_c).epsilon(1e-13));
    CHECK(a[k] == Approx(s[p].sqrt_alpha_bar * x0c + s[p].sqrt_one_minus_alpha_bar * out[k]).epsilon(1e-13));
  }
  CHECK(a[0] != b[0]);  // the first element is clipped, so the two differ there
}
