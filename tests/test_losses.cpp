// Losses against exact closed forms on Gaussian data (analytic.hpp), Monte Carlo with
// standard-error tolerances, the identity of Eq. 12, finite-difference gradients, and errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/losses.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <limits>
#include <numbers>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::prediction;
using diffusion::variance_type;
constexpr double u = 0x1p-53;

// The exact model's output (eps) for one row x_t at step t.
std::vector<double> optimal_eps(const diffusion::gaussian_data& g, const diffusion::noise_schedule& s, std::size_t t,
                                const std::vector<double>& xt) {
  std::vector<double> out(xt.size());
  const double ts = static_cast<double>(t), sigma = s[t].sigma;
  const diffusion::denoiser_input<double> in{xt, std::span<const double>(&ts, 1), std::span<const double>(&sigma, 1)};
  g(in, std::span<double>(out));
  return out;
}
}  // namespace

TEST_CASE("DDPM §3.2: the true reverse variance is beta_t for N(0, I) data and beta_tilde_t for a point mass",
          "[losses][analytic]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const diffusion::gaussian_data standard({0.0}, {1.0}), point({0.3}, {0.0});
  for (std::size_t t = 1; t < 1000; t += 111) {
    INFO("t = " << t);
    // beta~ + c0^2 (1 - ab) = beta exactly; three roundings in double.
    CHECK(standard.true_reverse_variance(s, t, 0) == Approx(s[t].beta).epsilon(8 * u));
    CHECK(point.true_reverse_variance(s, t, 0) == s[t].posterior_variance);
  }
}

TEST_CASE("each VLB term equals its closed form for the optimal denoiser (true, fixed_small, fixed_large)",
          "[losses][analytic]") {
  const diffusion::noise_schedule s(diffusion::cosine_betas(1000));
  const diffusion::gaussian_data g({0.2, -0.5, 0.0, 0.9}, {0.5, 0.1, 1.0, 0.05});
  test::normal_source rng(101);
  double worst = 0;
  for (std::size_t t : {1u, 2u, 10u, 100u, 500u, 900u, 998u, 999u}) {
    const auto& st = s[t];
    std::vector<double> x0(4), xt(4);
    for (std::size_t k = 0; k < 4; ++k) {
      x0[k] = g.mean()[k] + g.stddev()[k] * rng.normal();
      xt[k] = st.sqrt_alpha_bar * x0[k] + st.sqrt_one_minus_alpha_bar * rng.normal();
    }
    const auto eps_hat = optimal_eps(g, s, t, xt);
    for (auto kind : {variance_type::fixed_small, variance_type::fixed_large, variance_type::learned}) {
      // Closed form in long double: the exact posterior mean mu~ against the exact reverse mean
      // mu* = c0 E[x0|x_t] + ct x_t with variance sigma^2.
      long double total = 0, tol = 0;
      std::vector<double> out = eps_hat;
      if (kind == variance_type::learned) out.resize(8);
      for (std::size_t k = 0; k < 4; ++k) {
        const long double lv = kind == variance_type::learned ? std::log(static_cast<long double>(g.true_reverse_variance(s, t, k)))
                                                              : diffusion::fixed_log_variance(s, t, kind);
        if (kind == variance_type::learned) out[4 + k] = static_cast<double>(lv);
        const long double c0 = st.posterior_mean_coef_x0, ct = st.posterior_mean_coef_xt;
        const long double mu = c0 * x0[k] + ct * xt[k];
        const long double mstar = c0 * g.posterior_mean_x0(k, st.sigma, xt[k]) + ct * xt[k];
        const long double bt = st.posterior_variance, var = std::exp(lv);
        total += 0.5L * (lv - std::log(bt) - 1.0L + bt / var + (mu - mstar) * (mu - mstar) / var);
        // Error budget: the library forms x0_hat = a x_t + b eps_hat and the mean from it; each
        // rounding is u times the magnitude of its terms (4 of them), and eps_hat itself carries
        // ~4u. The KL's sensitivity to the mean is |mu - mean| / var.
        const auto ab = diffusion::conversion_coefficients(s, t, prediction::epsilon, prediction::sample);
        const long double dmu =
            8 * u * (std::abs(c0) * (std::abs(ab.a * xt[k]) + std::abs(ab.b * eps_hat[k])) + std::abs(ct * xt[k]));
        tol += (std::abs(mu - mstar) * dmu + dmu * dmu) / var + 16 * u * (1 + bt / var);
      }
      const double want = static_cast<double>(total / 4), budget = static_cast<double>(tol / 4);
      const double got = diffusion::vlb_term(s, t, x0, xt, out, prediction::epsilon, {.variance = kind});
      INFO("t = " << t << " variance " << static_cast<int>(kind) << ": " << got << " vs " << want << " (budget " << budget << ")");
      CHECK(std::abs(got - want) <= budget);
      worst = std::max(worst, std::abs(got - want) / std::max(std::abs(want), 1e-300));
    }
  }
  WARN("VLB term vs closed form: max relative error " << worst);
}

TEST_CASE("the bound exceeds the exact NLL only by the prior mismatch with the true reverse variance",
          "[losses][analytic]") {
  // Closed-form expectations, continuous decoder, cosine schedule at T = 10 … 4000.
  const diffusion::gaussian_data g({0.3, -0.2}, {0.4, 0.8});
  struct row {
    std::size_t T;
    double true_gap, small_gap, large_gap;
    double late_small, late_large, kl_large;  // KL-term gaps against the true variance
  };
  std::vector<row> rows;
  for (std::size_t T : {10u, 100u, 1000u, 4000u}) {
    const diffusion::noise_schedule s(diffusion::cosine_betas(T));
    double bound_true = 0, bound_small = 0, bound_large = 0, nll = 0, mismatch = 0;
    double late_small = 0, late_large = 0, kl_large = 0;
    for (std::size_t k = 0; k < g.dim(); ++k) {
      const double prior = g.expected_prior_term(s, k);
      bound_true += prior + g.expected_decoder_nll(s, k, std::log(g.true_reverse_variance(s, 0, k)));
      bound_small += prior + g.expected_decoder_nll(s, k, diffusion::fixed_log_variance(s, 0, variance_type::fixed_small));
      bound_large += prior + g.expected_decoder_nll(s, k, diffusion::fixed_log_variance(s, 0, variance_type::fixed_large));
      for (std::size_t t = 1; t < T; ++t) {
        const double kt = g.expected_kl_term(s, t, k, std::log(g.true_reverse_variance(s, t, k)));
        const double ks = g.expected_kl_term(s, t, k, diffusion::fixed_log_variance(s, t, variance_type::fixed_small));
        const double kl = g.expected_kl_term(s, t, k, diffusion::fixed_log_variance(s, t, variance_type::fixed_large));
        bound_true += kt;
        bound_small += ks;
        bound_large += kl;
        kl_large += kl - kt;
        if (t > T / 10) {
          late_small += ks - kt;
          late_large += kl - kt;
        }
      }
      nll += g.nll(k);
      mismatch += g.prior_mismatch(s, k);
    }
    INFO("T = " << T);
    // Telescoping of DDPM Eq. 5 with q's own reverse kernels: exact up to the rounding of T terms.
    CHECK(bound_true - nll == Approx(mismatch).margin(1e-12 * static_cast<double>(T)));
    CHECK(bound_small >= bound_true);
    CHECK(bound_large >= bound_true);
    rows.push_back({T, bound_true - nll, bound_small - nll, bound_large - nll, late_small, late_large, kl_large});
  }
  for (std::size_t i = 1; i < rows.size(); ++i) {
    // The KL terms after the first tenth of the steps lose their variance gap as 1/T for both
    // fixed variances (beta~/beta -> 1 there), and all KL terms do for fixed_large.
    CHECK(rows[i].late_small < rows[i - 1].late_small);
    CHECK(rows[i].late_large < rows[i - 1].late_large);
    CHECK(rows[i].kl_large < rows[i - 1].kl_large);
  }
  CHECK(rows[3].late_small < rows[2].late_small / 3.5);  // 1/T: a factor 4 from T = 1000 to 4000
  CHECK(rows[3].late_large < rows[2].late_large / 3.5);
  // What does NOT vanish (so the "the gap shrinks as T grows" holds only for the parts
  // above): L_0 decodes with improved DDPM's clipped variance beta~_2, so its gap tends to
  // 1/2 (r - 1 - log r) with r = Var[x0|x1] / beta~_2 -> 2 as beta_1/beta_2 -> 1, i.e.
  // 1/2 (1 - log 2) = 0.1534 per dimension; and fixed_small's first steps keep a T-independent
  // gap (beta~_t / Var[x_{t-1}|x_t] ~ (t-1)/t in step units).
  {
    const diffusion::noise_schedule s(diffusion::cosine_betas(4000));
    for (std::size_t k = 0; k < g.dim(); ++k) {
      const double r = g.true_reverse_variance(s, 0, k) / std::exp(s[0].posterior_log_variance_clipped);
      const double l0_gap = g.expected_decoder_nll(s, k, s[0].posterior_log_variance_clipped) -
                            g.expected_decoder_nll(s, k, std::log(g.true_reverse_variance(s, 0, k)));
      CHECK(l0_gap == Approx(0.5 * (r - 1 - std::log(r))).epsilon(1e-12));
      CHECK(l0_gap == Approx(0.5 * (1 - std::log(2.0))).epsilon(0.05));
    }
  }
  for (const auto& r : rows)
    WARN("T = " << r.T << ": bound - NLL (nats, sum over 2 dims): true variance " << r.true_gap << ", fixed_small "
                << r.small_gap << ", fixed_large " << r.large_gap << "; KL-term gap after T/10: small "
                << r.late_small << ", large " << r.late_large);
}

TEST_CASE("L_T is about 1e-5 bits/dim for the linear schedule on data in [-1, 1] (DDPM §4)", "[losses][published]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  std::vector<double> x0(256);
  for (std::size_t k = 0; k < 256; ++k) x0[k] = -1.0 + 2.0 * static_cast<double>(k) / 255.0;
  const double bits = diffusion::to_bits(diffusion::prior_term(s, x0));
  // Closed form: 0.5 (ab E[x^2] - ab - log1p(-ab)) / ln 2, E[x^2] = (256+1)/(3*255) on this grid.
  const double ab = s[999].alpha_bar, ex2 = 257.0 / 765.0;
  CHECK(bits == Approx(0.5 * (ab * ex2 - ab - std::log1p(-ab)) / std::numbers::ln2).epsilon(1e-13));
  CHECK(bits > 0.8e-5);
  CHECK(bits < 1.2e-5);
  WARN("L_T, linear schedule, uniform 8-bit data: " << bits << " bits/dim");
}

TEST_CASE("Monte Carlo means of L_simple and of VLB terms match their closed forms", "[losses][montecarlo]") {
  // N = 40000 draws of (x0, eps) per step; tolerance 5 standard errors of the sample mean
  // (false-failure probability < 6e-7 per check, < 1e-5 over the 16 checks). Seed 7.
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const diffusion::gaussian_data g({0.1}, {0.6});
  test::normal_source rng(7);
  constexpr std::size_t N = 40000;
  for (std::size_t t : {1u, 50u, 400u, 999u}) {
    const auto& st = s[t];
    std::vector<double> simple(N), kl_small(N), kl_true(N);
    const double lv_true = std::log(g.true_reverse_variance(s, t, 0));
    for (std::size_t i = 0; i < N; ++i) {
      const std::vector<double> x0{g.mean()[0] + g.stddev()[0] * rng.normal()}, eps{rng.normal()};
      const std::vector<double> xt{st.sqrt_alpha_bar * x0[0] + st.sqrt_one_minus_alpha_bar * eps[0]};
      const auto eh = optimal_eps(g, s, t, xt);
      simple[i] = diffusion::simple_loss(s, t, x0, eps, eh, prediction::epsilon);
      kl_small[i] = diffusion::vlb_term(s, t, x0, xt, eh, prediction::epsilon, {.variance = variance_type::fixed_small});
      const std::vector<double> out{eh[0], lv_true};
      kl_true[i] = diffusion::vlb_term(s, t, x0, xt, out, prediction::epsilon, {.variance = variance_type::learned});
    }
    auto check = [&](const std::vector<double>& v, double want, const char* what) {
      double m = 0, m2 = 0;
      for (double x : v) m += x;
      m /= N;
      for (double x : v) m2 += (x - m) * (x - m);
      const double se = std::sqrt(m2 / (N - 1) / N);
      INFO(what << " at t = " << t << ": " << m << " vs " << want << ", se " << se);
      CHECK(std::abs(m - want) <= 5 * se + 1e-15);
    };
    // E||eps - E[eps|x_t]||^2 = Var[eps|x_t] = ab s^2 / (ab s^2 + 1 - ab).
    const double s2 = g.stddev()[0] * g.stddev()[0];
    check(simple, st.alpha_bar * s2 / (st.alpha_bar * s2 + st.one_minus_alpha_bar), "L_simple");
    check(kl_small, g.expected_kl_term(s, t, 0, diffusion::fixed_log_variance(s, t, variance_type::fixed_small)),
          "L_{t-1} fixed_small");
    check(kl_true, g.expected_kl_term(s, t, 0, lv_true), "L_{t-1} true variance");
  }
}

TEST_CASE("Eq. 12: with a fixed variance, L_{t-1} is lambda_t times the eps-MSE", "[losses]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  test::normal_source rng(12);
  for (std::size_t t : {1u, 10u, 300u, 999u}) {
    for (auto v : {variance_type::fixed_small, variance_type::fixed_large}) {
      std::vector<double> x0(8), eps(8), xt(8), eh(8);
      for (std::size_t k = 0; k < 8; ++k) {
        x0[k] = 0.5 * rng.normal();
        eps[k] = rng.normal();
        eh[k] = eps[k] + 0.3 * rng.normal();
        xt[k] = s[t].sqrt_alpha_bar * x0[k] + s[t].sqrt_one_minus_alpha_bar * eps[k];
      }
      const double kl = diffusion::vlb_term(s, t, x0, xt, eh, prediction::epsilon, {.variance = v});
      const double mse = diffusion::simple_loss(s, t, x0, eps, eh, prediction::epsilon);
      // The constant C of Eq. 12 is the KL of the variances alone.
      const double c = 0.5 * diffusion::detail::expm1_minus_x(std::log(s[t].posterior_variance) -
                                                               diffusion::fixed_log_variance(s, t, v));
      INFO("t = " << t);
      // The mean difference is formed from x_t, which cancels: relative accuracy ~1e-9 at small t.
      CHECK(kl - c == Approx(diffusion::vlb_weight(s, t, v) * mse).epsilon(1e-8));
    }
  }
}

TEST_CASE("min-SNR-gamma weights are well defined at SNR = 0 and for huge SNR", "[losses]") {
  const diffusion::noise_schedule z(diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(1000)));
  REQUIRE(z[999].snr == 0.0);
  CHECK(diffusion::min_snr_weight(z, 999, 5.0, prediction::epsilon) == 1.0);
  CHECK(diffusion::min_snr_weight(z, 999, 5.0, prediction::sample) == 0.0);
  CHECK(diffusion::min_snr_weight(z, 999, 5.0, prediction::v) == 0.0);
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const double snr0 = s[0].snr;  // ~1e4
  CHECK(diffusion::min_snr_weight(s, 0, 5.0, prediction::epsilon) == Approx(5.0 / snr0));
  CHECK(diffusion::min_snr_weight(s, 0, 5.0, prediction::sample) == 5.0);
  CHECK(diffusion::min_snr_weight(s, 0, 5.0, prediction::v) == Approx(5.0 / (snr0 + 1)));
  CHECK(diffusion::min_snr_weight(s, 999, 5.0, prediction::epsilon) == 1.0);
  CHECK_THROWS_WITH(diffusion::min_snr_weight(s, 0, 0.0, prediction::epsilon), Catch::Matchers::Contains("gamma = 0"));
  CHECK_THROWS_WITH(diffusion::min_snr_weight(s, 0, 5.0, prediction::score), Catch::Matchers::Contains("score"));
}

TEST_CASE("gradients match central finite differences", "[losses][gradient]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  test::normal_source rng(3);
  const std::size_t n = 5;
  auto fd_check = [&](auto f, std::vector<double> out, const std::vector<double>& grad, const char* what) {
    // Central differences with h = 1e-6 |x| + 1e-7: truncation O(h^2 f''') ~ 1e-12, rounding
    // ~ u |f| / h ~ 1e-10 for |f| ~ 1; tolerance 1e-6 relative + 1e-8.
    for (std::size_t k = 0; k < out.size(); ++k) {
      const double h = 1e-6 * std::abs(out[k]) + 1e-7, x = out[k];
      out[k] = x + h;
      const double fp = f(out);
      out[k] = x - h;
      const double fm = f(out);
      out[k] = x;
      const double fd = (fp - fm) / (2 * h);
      INFO(what << " element " << k << ": analytic " << grad[k] << ", finite difference " << fd);
      CHECK(grad[k] == Approx(fd).epsilon(1e-6).margin(1e-8));
    }
  };
  for (std::size_t t : {0u, 1u, 250u}) {
    std::vector<double> x0(n), xt(n);
    for (std::size_t k = 0; k < n; ++k) {
      // on the 8-bit grid, for the discretized decoder
      x0[k] = -1.0 + 2.0 * std::round(127.5 + 100 * rng.uniform() - 50) / 255.0;
      xt[k] = s[t].sqrt_alpha_bar * x0[k] + s[t].sqrt_one_minus_alpha_bar * rng.normal();
    }
    for (auto kind : {prediction::epsilon, prediction::sample, prediction::v}) {
      for (auto v : {variance_type::fixed_small, variance_type::learned, variance_type::learned_range}) {
        for (auto dec : {diffusion::vlb_options::decoder_kind::discretized, diffusion::vlb_options::decoder_kind::continuous}) {
          if (t > 0 && dec == diffusion::vlb_options::decoder_kind::continuous) continue;
          const diffusion::vlb_options opt{.variance = v, .decoder = dec};
          std::vector<double> out(diffusion::learns_variance(v) ? 2 * n : n);
          for (std::size_t k = 0; k < n; ++k) out[k] = 0.9 * x0[k] + 0.1 * rng.normal();
          if (v == variance_type::learned)
            for (std::size_t k = 0; k < n; ++k) out[n + k] = std::log(s[t].beta) + 0.3 * rng.normal();
          if (v == variance_type::learned_range)
            for (std::size_t k = 0; k < n; ++k) out[n + k] = 1.6 * rng.uniform() - 0.8;
          std::vector<double> grad(out.size());
          diffusion::vlb_term(s, t, x0, xt, out, kind, opt, grad);
          fd_check([&](const std::vector<double>& o) { return diffusion::vlb_term(s, t, x0, xt, o, kind, opt); }, out,
                   grad, "vlb_term");
        }
      }
    }
    std::vector<double> eps(n), out(2 * n), grad(2 * n);
    for (std::size_t k = 0; k < n; ++k) {
      eps[k] = rng.normal();
      out[k] = eps[k] + 0.2 * rng.normal();
      out[n + k] = 1.6 * rng.uniform() - 0.8;
    }
    std::vector<double> g1(n);
    diffusion::simple_loss<double>(s, t, x0, eps, std::span<const double>(out).first(n), prediction::v, g1);
    fd_check([&](const std::vector<double>& o) { return diffusion::simple_loss(s, t, x0, eps, o, prediction::v); },
             std::vector<double>(out.begin(), out.begin() + static_cast<long>(n)), g1, "simple_loss");
    // hybrid: the mean block's gradient is L_simple's only (the VLB sees a frozen mean).
    diffusion::hybrid_loss<double>(s, t, x0, xt, eps, out, variance_type::learned_range, 0.001, grad);
    auto total = [&](const std::vector<double>& o) {
      return diffusion::hybrid_loss<double>(s, t, x0, xt, eps, o, variance_type::learned_range).total;
    };
    std::vector<double> var_only(grad.begin() + static_cast<long>(n), grad.end());
    // variance block: finite differences of the total in the variance outputs.
    for (std::size_t k = 0; k < n; ++k) {
      std::vector<double> o = out;
      const double h = 1e-6;
      o[n + k] += h;
      const double fp = total(o);
      o[n + k] -= 2 * h;
      const double fm = total(o);
      CHECK(var_only[k] == Approx((fp - fm) / (2 * h)).epsilon(1e-6).margin(1e-8));
      CHECK(grad[k] == Approx(g1.empty() ? 0.0 : 2 * (out[k] - eps[k]) / static_cast<double>(n)).epsilon(1e-12));
    }
  }
}

TEST_CASE("bad loss inputs raise, and non-finite inputs are reported, never propagated", "[losses][errors]") {
  using Catch::Matchers::Contains;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const std::vector<double> x0{0.5, -0.5}, xt{0.1, 0.2}, out{0.3, 0.4};
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 5, x0, std::vector<double>{1.0}, out, prediction::epsilon),
                    Contains("x0.size() = 2 differs from xt.size() = 1"));
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 5, x0, xt, out, prediction::epsilon, {.variance = variance_type::learned}),
                    Contains("model_output.size() = 2 must be 4"));
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 5, x0, xt, std::vector<double>{0.3, 0.4, 0.0, std::nan("")}, prediction::epsilon,
                                        {.variance = variance_type::learned_range}),
                    Contains("variance output[1] = nan") && Contains("not finite"));
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 0, std::vector<double>{0.5, 1.2}, xt, out, prediction::epsilon),
                    Contains("x0[1] = 1.2") && Contains("discretized decoder"));
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 0, x0, xt, out, prediction::epsilon,
                                        {.discretized = {.bins = 1}}),
                    Contains("bins = 1"));
  CHECK_THROWS_AS(diffusion::vlb_term(s, 1000, x0, xt, out, prediction::epsilon), std::out_of_range);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(diffusion::vlb_term(s, 5, x0, xt, std::vector<double>{0.3, nan}, prediction::epsilon), std::domain_error);
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 5, x0, xt, std::vector<double>{0.3, nan}, prediction::epsilon),
                    Contains("model_output[1] = nan is not finite"));
  CHECK_THROWS_WITH(diffusion::simple_loss(s, 5, x0, std::vector<double>{inf, 0.0}, out, prediction::epsilon),
                    Contains("noise[0] = inf"));
  CHECK_THROWS_WITH(diffusion::prior_term(s, std::vector<double>{nan}), Contains("x0[0] = nan"));
  CHECK_THROWS_WITH(diffusion::vlb_term(s, 5, x0, xt, std::vector<double>{0.3, 0.4, -800.0, 0.0}, prediction::epsilon,
                                        {.variance = variance_type::learned}),
                    Contains("overflow with finite inputs"));
  CHECK_THROWS_WITH(diffusion::simple_loss(s, 5, x0, x0, out, prediction::score), Contains("score"));
  CHECK_THROWS_WITH(diffusion::prior_term(s, std::vector<float>{}), Contains("x0 is empty"));
  CHECK_THROWS_WITH(diffusion::hybrid_loss<double>(s, 5, x0, xt, x0, std::vector<double>(4), variance_type::fixed_small),
                    Contains("learned"));
}

namespace {
// The exact denoiser plus the true reverse log-variance as a "learned" variance block.
struct exact_with_variance {
  const diffusion::gaussian_data* g;
  const diffusion::noise_schedule* s;
  [[nodiscard]] prediction predicts() const { return prediction::epsilon; }
  void operator()(const diffusion::denoiser_input<double>& in, std::span<double> out) const {
    const std::size_t n = in.row_size();
    for (std::size_t r = 0; r < in.rows(); ++r) {
      const diffusion::denoiser_input<double> row{in.x.subspan(r * n, n), in.timesteps.subspan(r, 1), in.sigma.subspan(r, 1)};
      (*g)(row, out.subspan(2 * n * r, n));
      const auto t = static_cast<std::size_t>(in.timesteps[r]);
      for (std::size_t k = 0; k < n; ++k) out[2 * n * r + n + k] = std::log(g->true_reverse_variance(*s, t, k));
    }
  }
};
}  // namespace

TEST_CASE("the whole-bound loop averages to the closed-form bound, with the true variance to NLL + prior mismatch",
          "[losses][analytic][montecarlo]") {
  // T = 50 cosine steps, 2 dimensions, 4000 samples; each per-sample total is an unbiased
  // estimate of the expected bound, so the batch mean must be within 5 standard errors
  // (false-failure probability < 6e-7 per check). Noise seed 99.
  const diffusion::noise_schedule s(diffusion::cosine_betas(50));
  const diffusion::gaussian_data g({0.3, -0.2}, {0.4, 0.8});
  constexpr std::size_t rows = 4000;
  test::normal_source rng(5);
  std::vector<double> x0(rows * 2);
  for (std::size_t b = 0; b < rows; ++b)
    for (std::size_t k = 0; k < 2; ++k) x0[b * 2 + k] = g.mean()[k] + g.stddev()[k] * rng.normal();
  test::test_noise noise{99};
  const diffusion::vlb_options cont{.variance = variance_type::learned,
                                    .decoder = diffusion::vlb_options::decoder_kind::continuous};
  exact_with_variance model{&g, &s};
  const auto r = diffusion::variational_bound(s, model, x0, rows, cont, noise);
  REQUIRE(r.total.size() == rows);
  double m = 0, m2 = 0;
  for (double v : r.total) m += v;
  m /= rows;
  for (double v : r.total) m2 += (v - m) * (v - m);
  const double se = std::sqrt(m2 / (rows - 1) / rows);
  double want = 0;  // per element: mean over the 2 dims of NLL + mismatch
  for (std::size_t k = 0; k < 2; ++k) want += (g.nll(k) + g.prior_mismatch(s, k)) / 2;
  INFO("bound " << m << " +- " << se << ", NLL + mismatch " << want);
  CHECK(std::abs(m - want) <= 5 * se);
  WARN("whole bound, true variance, T = 50: " << m << " +- " << se << " nats/dim vs NLL + mismatch " << want);

  // fixed_small with the eps-only model: the mean of the loop equals the sum of expected terms.
  diffusion::gaussian_data eps_model = g;
  const auto rs = diffusion::variational_bound(s, eps_model, x0, rows,
                                               {.decoder = diffusion::vlb_options::decoder_kind::continuous}, noise);
  double ms = 0, ms2 = 0;
  for (double v : rs.total) ms += v;
  ms /= rows;
  for (double v : rs.total) ms2 += (v - ms) * (v - ms);
  const double ses = std::sqrt(ms2 / (rows - 1) / rows);
  double want_s = 0;
  for (std::size_t k = 0; k < 2; ++k) {
    double b = g.expected_prior_term(s, k) + g.expected_decoder_nll(s, k, s[0].posterior_log_variance_clipped);
    for (std::size_t t = 1; t < 50; ++t) b += g.expected_kl_term(s, t, k, s[t].posterior_log_variance_clipped);
    want_s += b / 2;
  }
  CHECK(std::abs(ms - want_s) <= 5 * ses);
  // eps-MSE of the exact model is Var[eps|x_t] on average; spot-check one step.
  double e = 0;
  for (std::size_t b = 0; b < rows; ++b) e += rs.eps_mse[b * 50 + 25];
  e /= rows;
  double var_eps = 0;
  for (std::size_t k = 0; k < 2; ++k) {
    const double s2 = g.stddev()[k] * g.stddev()[k];
    var_eps += s[25].alpha_bar * s2 / (s[25].alpha_bar * s2 + s[25].one_minus_alpha_bar) / 2;
  }
  CHECK(e == Approx(var_eps).epsilon(0.05));  // 4000 x 2 draws of a chi-square-like mean: ~2% s.e.

  // Reproducible: the same noise gives the same terms, and a batch split changes nothing.
  const auto again = diffusion::variational_bound(s, eps_model, std::span<const double>(x0).subspan(2, 2), 1,
                                                  {.decoder = diffusion::vlb_options::decoder_kind::continuous}, noise, 1);
  for (std::size_t t = 0; t < 50; ++t) CHECK(again.terms[t] == rs.terms[50 + t]);
}

TEST_CASE("losses reduce through reductions.hpp: the same bits with and without the gradient", "[losses][reductions]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const std::size_t n = 3 * diffusion::reduction_block + 37;  // several blocks and a ragged tail
  test::normal_source g(77);
  std::vector<float> x0(n), eps(n), xt(n), out(2 * n), grad(2 * n);
  for (std::size_t k = 0; k < n; ++k) {
    x0[k] = static_cast<float>(std::tanh(g.normal()));
    eps[k] = static_cast<float>(g.normal());
    xt[k] = static_cast<float>(s[400].sqrt_alpha_bar * static_cast<double>(x0[k]) +
                               s[400].sqrt_one_minus_alpha_bar * static_cast<double>(eps[k]));
    out[k] = eps[k] + static_cast<float>(0.1 * g.normal());
    out[n + k] = static_cast<float>(0.9 * std::tanh(g.normal()));
  }
  const std::span<const float> x0s(x0), es(eps), xts(xt), outs(out), mean_out = outs.first(n);
  for (const auto kind : {prediction::epsilon, prediction::sample, prediction::v}) {
    INFO("kind " << static_cast<int>(kind));
    const double plain = diffusion::simple_loss<float>(s, 400, x0s, es, outs, kind);
    const double with_grad = diffusion::simple_loss<float>(s, 400, x0s, es, outs, kind, std::span<float>(grad).first(n));
    CHECK(std::bit_cast<std::uint64_t>(plain) == std::bit_cast<std::uint64_t>(with_grad));
  }
  // L_simple with the eps target is exactly squared_distance / n (u-accurate whatever n).
  CHECK(diffusion::simple_loss<float>(s, 400, x0s, es, outs, prediction::epsilon) ==
        diffusion::squared_distance(mean_out, es) / static_cast<double>(n));
  for (const auto v : {variance_type::fixed_small, variance_type::learned_range}) {
    const auto o = v == variance_type::fixed_small ? mean_out : outs;
    const diffusion::vlb_options opt{.variance = v};
    const double plain = diffusion::vlb_term<float>(s, 400, x0s, xts, o, prediction::epsilon, opt);
    const double with_grad =
        diffusion::vlb_term<float>(s, 400, x0s, xts, o, prediction::epsilon, opt, std::span<float>(grad).first(o.size()));
    CHECK(std::bit_cast<std::uint64_t>(plain) == std::bit_cast<std::uint64_t>(with_grad));
  }
}
