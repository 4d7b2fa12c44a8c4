// Batched training math (issue 13 item 2): per-row losses against the single-sample functions at
// each row's timestep (the same bits), gradients against the closed form w_b/B times the row's
// gradient and against central differences, q_sample handing back its noise (the same bits as the
// in-kernel q_sample and philox_normal::fill), the training-batch helper, and the refusals.
#include <catch2/catch.hpp>

#include <diffusion/losses.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "support.hpp"

namespace {
using Catch::Matchers::Contains;
using diffusion::prediction;
using diffusion::variance_type;

template <class T>
std::uint64_t bits(T x) {
  return std::bit_cast<std::uint64_t>(static_cast<double>(x));
}

// A batch of B rows of n elements: x0 in (-1, 1) on the 8-bit grid (for the discretized decoder),
// eps ~ N(0, 1), x_t at each row's step, a model output near the eps target with a variance block.
template <class T>
struct batch {
  std::size_t rows, n;
  std::vector<std::size_t> t;
  std::vector<T> x0, eps, xt, out;  // out: rows x 2n (prediction, then variance block)
  batch(const diffusion::noise_schedule& s, std::vector<std::size_t> ts, std::size_t n_, std::uint64_t seed)
      : rows(ts.size()), n(n_), t(std::move(ts)), x0(rows * n), eps(rows * n), xt(rows * n), out(2 * rows * n) {
    test::normal_source g(seed);
    for (std::size_t b = 0; b < rows; ++b)
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = b * n + k;
        x0[i] = static_cast<T>(-1.0 + 2.0 * std::round(127.5 + 100 * g.uniform() - 50) / 255.0);
        eps[i] = static_cast<T>(g.normal());
        xt[i] = static_cast<T>(s[t[b]].sqrt_alpha_bar * static_cast<double>(x0[i]) +
                               s[t[b]].sqrt_one_minus_alpha_bar * static_cast<double>(eps[i]));
        out[b * 2 * n + k] = static_cast<T>(static_cast<double>(eps[i]) + 0.3 * g.normal());
        out[b * 2 * n + n + k] = static_cast<T>(1.6 * g.uniform() - 0.8);
      }
  }
  std::span<const T> row(const std::vector<T>& v, std::size_t b) const { return std::span<const T>(v).subspan(b * n, n); }
  std::span<const T> out_row(std::size_t b, std::size_t m) const { return std::span<const T>(out).subspan(b * 2 * n, m); }
  // The output with m = n per row (no variance block).
  std::vector<T> means() const {
    std::vector<T> r(rows * n);
    for (std::size_t b = 0; b < rows; ++b)
      for (std::size_t k = 0; k < n; ++k) r[b * n + k] = out[b * 2 * n + k];
    return r;
  }
};

}  // namespace

TEMPLATE_TEST_CASE("batched simple_loss: each row is the single-sample loss at its own t, the gradient w_b/B times "
                   "the row's",
                   "[training][losses]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const batch<T> d(s, {0, 999, 17, 500, 17}, 9, 11);
  const std::vector<double> w{0.5, 2.0, 1.0, 0.0, 3.25};
  const double B = static_cast<double>(d.rows), n = static_cast<double>(d.n);
  // One rounding of T per gradient element: |error| <= u_T |g| (plus the double arithmetic, 4 u).
  const double tol = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2 + 4 * 0x1p-53;
  for (const auto kind : {prediction::epsilon, prediction::sample, prediction::v, prediction::flow_velocity}) {
    for (const std::size_t m : {d.n, 2 * d.n}) {
      INFO("kind " << static_cast<int>(kind) << ", row width " << m);
      const std::vector<T> out = m == d.n ? d.means() : d.out;
      std::vector<double> rl(d.rows);
      std::vector<T> grad(out.size(), T(7));
      const double value = diffusion::simple_loss(s, d.t, d.x0, d.eps, out, kind,
                                                  {.weights = w, .row_losses = rl, .grad = grad});
      double expected = 0.0;
      for (std::size_t b = 0; b < d.rows; ++b) {
        const auto o = std::span<const T>(out).subspan(b * m, d.n);
        std::vector<T> g1(d.n);
        const double l = diffusion::simple_loss<T>(s, d.t[b], d.row(d.x0, b), d.row(d.eps, b), o, kind, g1);
        CHECK(bits(rl[b]) == bits(l));  // the same terms, the same reduction
        expected += w[b] * l;
        // closed form: 2 w_b (yhat - y) / (B n), with y from the row's level
        const auto c = diffusion::target_coefficients(diffusion::noise_level::from_step(s[d.t[b]]), kind);
        for (std::size_t k = 0; k < d.n; ++k) {
          const double y = c.a * static_cast<double>(d.x0[b * d.n + k]) + c.b * static_cast<double>(d.eps[b * d.n + k]);
          const double g = 2 * w[b] * (static_cast<double>(o[k]) - y) / (B * n);
          CHECK(std::abs(static_cast<double>(grad[b * m + k]) - g) <= tol * std::abs(g) + 1e-300);
        }
        for (std::size_t k = d.n; k < m; ++k) CHECK(grad[b * m + k] == T(0));  // the variance block: L_simple does not read it
      }
      // the row sum is compensated: the mean of the weighted rows to a few u
      CHECK(value == Approx(expected / B).epsilon(8 * 0x1p-53));
      // without weights or outputs: the plain mean, the same rows
      const double plain = diffusion::simple_loss(s, d.t, d.x0, d.eps, out, kind);
      double mean = 0.0;
      for (std::size_t b = 0; b < d.rows; ++b) mean += rl[b];
      CHECK(plain == Approx(mean / B).epsilon(8 * 0x1p-53));
    }
  }
}

TEST_CASE("per-row t is what makes the v target right: one t for the whole batch is a different loss",
          "[training][losses]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const batch<double> d(s, {10, 900}, 4, 5);
  const std::vector<double> out = d.means();
  std::vector<double> rl(2);
  (void)diffusion::simple_loss(s, d.t, d.x0, d.eps, out, prediction::v, {.row_losses = rl});
  // The single-t form treats all 2n elements as one sample at t = 10: row 1's target differs.
  const double one_t = diffusion::simple_loss(s, 10, d.x0, d.eps, out, prediction::v);
  CHECK(one_t != Approx(0.5 * (rl[0] + rl[1])).epsilon(1e-3));
  // The single-t form reads model_output of exactly n or 2n: a 3-row layout passed with 2 rows' data is refused.
  CHECK_THROWS_WITH(diffusion::simple_loss(s, 10, d.x0, d.eps, std::vector<double>(3 * d.x0.size()), prediction::v),
                    Contains("model_output.size() = 24") && Contains("or twice it"));
}

TEST_CASE("batched vlb_term: rows equal the single-sample terms (L_0 included), gradients by finite differences",
          "[training][losses][gradient]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const batch<double> d(s, {0, 1, 250, 999}, 5, 21);
  const std::vector<double> w{1.5, 0.25, 1.0, 2.0};
  const double B = static_cast<double>(d.rows);
  for (const auto v : {variance_type::fixed_small, variance_type::learned, variance_type::learned_range}) {
    for (const auto kind : {prediction::epsilon, prediction::v}) {
      INFO("variance " << static_cast<int>(v) << ", kind " << static_cast<int>(kind));
      const diffusion::vlb_options opt{.variance = v};
      const std::size_t m = diffusion::learns_variance(v) ? 2 * d.n : d.n;
      std::vector<double> out = m == d.n ? d.means() : d.out;
      if (v == variance_type::learned)  // a log-variance near log beta
        for (std::size_t b = 0; b < d.rows; ++b)
          for (std::size_t k = 0; k < d.n; ++k) out[b * m + d.n + k] = std::log(s[d.t[b]].beta) + 0.5 * out[b * m + d.n + k];
      std::vector<double> rl(d.rows), grad(out.size());
      const double value = diffusion::vlb_term(s, d.t, d.x0, d.xt, out, kind, opt, {.weights = w, .row_losses = rl, .grad = grad});
      double expected = 0.0;
      for (std::size_t b = 0; b < d.rows; ++b) {
        std::vector<double> g1(m);
        const double l = diffusion::vlb_term<double>(s, d.t[b], d.row(d.x0, b), d.row(d.xt, b),
                                                     std::span<const double>(out).subspan(b * m, m), kind, opt, g1);
        CHECK(bits(rl[b]) == bits(l));
        expected += w[b] * l;
        // closed form: w_b / B times the row's gradient (the scale applied once, in double: 4 u)
        for (std::size_t k = 0; k < m; ++k) CHECK(grad[b * m + k] == Approx(w[b] / B * g1[k]).epsilon(4 * 0x1p-53).margin(1e-300));
      }
      CHECK(value == Approx(expected / B).epsilon(8 * 0x1p-53));
      // Central differences of the returned mean, h = 1e-6|x| + 1e-7: truncation ~1e-12, rounding
      // ~u|f|/h ~ 1e-10 (as tests/test_losses.cpp); tolerance 1e-6 relative + 1e-8.
      for (std::size_t k = 0; k < out.size(); k += 3) {
        std::vector<double> o = out;
        const double h = 1e-6 * std::abs(o[k]) + 1e-7;
        o[k] = out[k] + h;
        const double fp = diffusion::vlb_term(s, d.t, d.x0, d.xt, o, kind, opt, {.weights = w});
        o[k] = out[k] - h;
        const double fm = diffusion::vlb_term(s, d.t, d.x0, d.xt, o, kind, opt, {.weights = w});
        CHECK(grad[k] == Approx((fp - fm) / (2 * h)).epsilon(1e-6).margin(1e-8));
      }
    }
  }
}

TEST_CASE("batched hybrid_loss: parts are the weighted means of the single-sample parts; per-row totals; gradient",
          "[training][losses][gradient]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const batch<double> d(s, {0, 3, 640}, 6, 8);
  const std::vector<double> w{0.75, 1.25, 2.0};
  const double B = static_cast<double>(d.rows);
  std::vector<double> rl(d.rows), grad(d.out.size());
  const diffusion::hybrid_options opt{.variance = variance_type::learned_range, .lambda = 0.001};
  const auto r = diffusion::hybrid_loss(s, d.t, d.x0, d.xt, d.eps, d.out, opt, {.weights = w, .row_losses = rl, .grad = grad});
  double simple = 0.0, vlb = 0.0;
  for (std::size_t b = 0; b < d.rows; ++b) {
    std::vector<double> g1(2 * d.n);
    const auto one = diffusion::hybrid_loss<double>(s, d.t[b], d.row(d.x0, b), d.row(d.xt, b), d.row(d.eps, b),
                                                    d.out_row(b, 2 * d.n), opt.variance, opt.lambda, g1);
    CHECK(rl[b] == Approx(one.total).epsilon(4 * 0x1p-53));
    simple += w[b] * one.simple;
    vlb += w[b] * one.vlb;
    for (std::size_t k = 0; k < 2 * d.n; ++k)
      CHECK(grad[b * 2 * d.n + k] == Approx(w[b] / B * g1[k]).epsilon(8 * 0x1p-53).margin(1e-300));
  }
  CHECK(r.simple == Approx(simple / B).epsilon(8 * 0x1p-53));
  CHECK(r.vlb == Approx(vlb / B).epsilon(8 * 0x1p-53));
  CHECK(r.total == Approx(r.simple + 0.001 * 1000 / std::numbers::ln2 * r.vlb).epsilon(4 * 0x1p-53));
  // The variance blocks by central differences of the total (the prediction block's gradient is
  // L_simple's only: the VLB sees a frozen mean, so it is checked against the closed form above).
  for (std::size_t b = 0; b < d.rows; ++b)
    for (std::size_t k = d.n; k < 2 * d.n; ++k) {
      const std::size_t i = b * 2 * d.n + k;
      std::vector<double> o = d.out;
      const double h = 1e-6;
      o[i] = d.out[i] + h;
      const double fp = diffusion::hybrid_loss(s, d.t, d.x0, d.xt, d.eps, o, opt, {.weights = w}).total;
      o[i] = d.out[i] - h;
      const double fm = diffusion::hybrid_loss(s, d.t, d.x0, d.xt, d.eps, o, opt, {.weights = w}).total;
      CHECK(grad[i] == Approx((fp - fm) / (2 * h)).epsilon(1e-6).margin(1e-8));
    }
}

TEMPLATE_TEST_CASE("batched flow-matching loss: rows equal the single-sample loss, weights from sigma", "[training][flow]",
                   float, double) {
  using T = TestType;
  const std::size_t rows = 3, n = 7;
  test::normal_source g(4);
  std::vector<T> x0(rows * n), eps(rows * n), out(rows * n), grad(rows * n);
  for (std::size_t i = 0; i < rows * n; ++i) {
    x0[i] = static_cast<T>(g.normal());
    eps[i] = static_cast<T>(g.normal());
    out[i] = static_cast<T>(static_cast<double>(eps[i] - x0[i]) + 0.2 * g.normal());
  }
  const std::vector<double> sigmas{0.05, 0.5, 1.0}, w{1.0, 0.5, 2.0};
  std::vector<double> rl(rows);
  const double value = diffusion::flow_matching_loss(sigmas, diffusion::flow_weighting::sigma_sqrt, x0, eps, out,
                                                     {.weights = w, .row_losses = rl, .grad = grad});
  double expected = 0.0;
  const double tol = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2 + 4 * 0x1p-53;
  for (std::size_t b = 0; b < rows; ++b) {
    const auto r = [&](const std::vector<T>& v) { return std::span<const T>(v).subspan(b * n, n); };
    const double l = diffusion::flow_matching_loss<T>(r(x0), r(eps), r(out));
    CHECK(bits(rl[b]) == bits(l));
    const double wb = w[b] / (sigmas[b] * sigmas[b]);
    expected += wb * l;
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = b * n + k;
      const double ge = 2 * wb * (static_cast<double>(out[i]) - (static_cast<double>(eps[i]) - static_cast<double>(x0[i]))) /
                        static_cast<double>(rows * n);
      CHECK(std::abs(static_cast<double>(grad[i]) - ge) <= tol * std::abs(ge));
    }
  }
  CHECK(value == Approx(expected / static_cast<double>(rows)).epsilon(8 * 0x1p-53));
  CHECK_THROWS_WITH(diffusion::flow_matching_loss(std::vector<double>{0.5, 0.0, 1.0}, diffusion::flow_weighting::none, x0, eps, out),
                    Contains("sigmas[1] = 0") && Contains("(0, 1]"));
  CHECK_THROWS_WITH(diffusion::flow_matching_loss(std::vector<double>{0.5, 0.5}, diffusion::flow_weighting::none, x0, eps, out),
                    Contains("does not divide"));
  // tensor overloads, with and without the gradient, equal the span form
  std::vector<T> g1(n), g2(n);
  const std::vector<T> a(x0.begin(), x0.begin() + 7), e(eps.begin(), eps.begin() + 7), o(out.begin(), out.begin() + 7);
  const double l1 = diffusion::flow_matching_loss<T>(a, e, o, 0.5, g1);
  CHECK(bits(diffusion::flow_matching_loss(a, e, o, 0.5, g2)) == bits(l1));
  CHECK(bits(diffusion::flow_matching_loss(a, e, o, 0.5)) == bits(l1));
  for (std::size_t k = 0; k < n; ++k) CHECK(g1[k] == g2[k]);
}

TEMPLATE_TEST_CASE("simple_loss on any tensor has a gradient form, equal to the span form", "[training][losses]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const batch<T> d(s, {300}, 12, 9);
  const std::vector<T> out = d.means();
  std::vector<T> g1(d.n), g2(d.n);
  const double l1 = diffusion::simple_loss<T>(s, 300, d.x0, d.eps, out, prediction::v, g1);
  CHECK(bits(diffusion::simple_loss(s, 300, d.x0, d.eps, out, prediction::v, g2)) == bits(l1));
  for (std::size_t k = 0; k < d.n; ++k) CHECK(g1[k] == g2[k]);
}

TEMPLATE_TEST_CASE("q_sample hands back the noise it drew: the same bits as the in-kernel q_sample and fill",
                   "[training][forward]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const diffusion::philox_normal noise(2024);
  // lengths across the SIMD chunk and the noise chunk (512), with a ragged tail
  for (const std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{513}, std::size_t{1100}}) {
    INFO("n = " << n);
    std::vector<T> x0(2 * n), xt(2 * n), eps(2 * n), ref(2 * n), fill(n);
    test::normal_source g(n);
    for (auto& v : x0) v = static_cast<T>(g.normal());
    diffusion::q_sample(s, std::size_t{123}, std::span<const T>(x0).first(n), noise, 5, 9, std::span<T>(xt).first(n),
                        std::span<T>(eps).first(n));
    diffusion::q_sample(s, std::size_t{123}, std::span<const T>(x0).first(n), noise, 5, 9, std::span<T>(ref).first(n));
    noise.fill(5, 9, 0, std::span<T>(fill));
    for (std::size_t k = 0; k < n; ++k) {
      CHECK(xt[k] == ref[k]);
      CHECK(eps[k] == fill[k]);
    }
    // batched: row b is stream (first_sample + b, step)
    const std::vector<int> ts{999, 0};
    diffusion::q_sample(s, ts, x0, noise, 40, 3, xt, eps);
    diffusion::q_sample(s, ts, x0, noise, 40, 3, ref);
    for (std::size_t b = 0; b < 2; ++b) {
      noise.fill(40 + b, 3, 0, std::span<T>(fill));
      for (std::size_t k = 0; k < n; ++k) {
        CHECK(xt[b * n + k] == ref[b * n + k]);
        CHECK(eps[b * n + k] == fill[k]);
      }
    }
    // in place over x0: x_t written over the data, eps beside it
    std::vector<T> y = x0;
    diffusion::q_sample(s, ts, y, noise, 40, 3, y, eps);
    for (std::size_t k = 0; k < 2 * n; ++k) CHECK(y[k] == ref[k]);
  }
  std::vector<T> x0(8, T(0)), xt(8);
  CHECK_THROWS_WITH(diffusion::q_sample(s, std::size_t{1}, x0, noise, 0, 0, xt, xt), Contains("must not share memory"));
  CHECK_THROWS_WITH(diffusion::q_sample(s, std::size_t{1}, x0, noise, 0, 0, xt, std::vector<T>(7)),
                    Contains("noise_out.size() = 7"));
}

TEMPLATE_TEST_CASE("draw_training_batch: the sampler's t and weights, q_sample's x_t and noise, the target of the kind",
                   "[training]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::cosine_betas(1000));
  const diffusion::philox_normal noise(7);
  const std::size_t rows = 6, n = 33;
  std::vector<T> x0(rows * n);
  test::normal_source g(12);
  for (auto& v : x0) v = static_cast<T>(std::tanh(g.normal()));
  const diffusion::uniform_timestep_sampler uniform(1000, 99);
  for (const auto kind : {prediction::epsilon, prediction::sample, prediction::v, prediction::flow_velocity}) {
    INFO("kind " << static_cast<int>(kind));
    std::vector<std::size_t> t(rows), t_ref(rows);
    std::vector<T> eps(rows * n), xt(rows * n), target(rows * n), ref(rows * n), ref_eps(rows * n);
    // the uniform sampler without a weights buffer (every weight is 1)
    diffusion::draw_training_batch(s, uniform, noise, x0, {.timesteps = t, .weights = {}, .noise = eps, .xt = xt, .target = target},
                                   {.step = 17, .first_sample = 100, .kind = kind});
    uniform.sample(17, t_ref);
    CHECK(t == t_ref);
    diffusion::q_sample(s, t, x0, noise, 100, 17, ref, ref_eps);
    for (std::size_t i = 0; i < rows * n; ++i) {
      CHECK(xt[i] == ref[i]);
      CHECK(eps[i] == ref_eps[i]);
    }
    // the target: the one definition (target_coefficients) per row, as prediction_target writes it
    for (std::size_t b = 0; b < rows; ++b) {
      std::vector<T> want(n);
      diffusion::prediction_target(diffusion::noise_level::from_step(s[t[b]]), kind,
                                   std::span<const T>(x0).subspan(b * n, n), std::span<const T>(eps).subspan(b * n, n), want);
      for (std::size_t k = 0; k < n; ++k) CHECK(target[b * n + k] == want[k]);
    }
  }
  // importance sampling: weights filled by the sampler
  const diffusion::loss_second_moment_sampler is(1000, 3);
  std::vector<std::size_t> t(rows);
  std::vector<double> w(rows, -1.0);
  std::vector<T> eps(rows * n), xt(rows * n);
  diffusion::draw_training_batch(s, is, noise, x0, {.timesteps = t, .weights = w, .noise = eps, .xt = xt}, {.step = 2});
  // Uniform before warm-up: w = 1/(T p) with p the width of a CDF accumulated from T terms 1/T, each
  // partial sum within t·u of its value, so |p − 1/T| ≤ 2Tu and |w − 1| ≤ 2T²u (2.2e-10 at T = 1000).
  for (const double v : w) CHECK(v == Approx(1.0).epsilon(2.0 * 1000 * 1000 * 0x1p-53));
  CHECK_THROWS_WITH(diffusion::draw_training_batch(s, is, noise, x0, {.timesteps = t, .weights = {}, .noise = eps, .xt = xt}),
                    Contains("weights is empty"));
  CHECK_THROWS_WITH(diffusion::draw_training_batch(s, uniform, noise, x0,
                                                   {.timesteps = t, .weights = {}, .noise = eps, .xt = xt, .target = xt}),
                    Contains("target shares memory"));
  std::vector<std::size_t> t5(5);
  CHECK_THROWS_WITH(diffusion::draw_training_batch(s, uniform, noise, x0, {.timesteps = t5, .weights = {}, .noise = eps, .xt = xt}),
                    Contains("does not divide"));
  // a sampler for a longer schedule draws t >= T: refused, naming the row
  const diffusion::uniform_timestep_sampler wrong(100000, 1);
  CHECK_THROWS_AS(diffusion::draw_training_batch(s, wrong, noise, x0, {.timesteps = t, .weights = {}, .noise = eps, .xt = xt}),
                  std::out_of_range);
}

TEST_CASE("batched losses refuse bad rows, weights and buffers, and name non-finite inputs", "[training][errors]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(100));
  const batch<double> d(s, {1, 2}, 3, 1);
  const auto out = d.means();
  CHECK_THROWS_WITH(diffusion::simple_loss(s, std::vector<std::size_t>{1, 100}, d.x0, d.eps, out, prediction::epsilon),
                    Contains("timesteps[1] = 100") && Contains("[0, 100)"));
  CHECK_THROWS_WITH(diffusion::simple_loss(s, std::vector<std::size_t>{1, 2, 3, 4}, d.x0, d.eps, out, prediction::epsilon),
                    Contains("does not divide"));
  const std::vector<double> bad{1.0, -0.5};
  CHECK_THROWS_WITH(diffusion::simple_loss(s, d.t, d.x0, d.eps, out, prediction::epsilon, {.weights = bad}),
                    Contains("weights[1] = -0.5") && Contains("[0, inf)"));
  std::vector<double> rl(3), g(5);
  CHECK_THROWS_WITH(diffusion::simple_loss(s, d.t, d.x0, d.eps, out, prediction::epsilon, {.row_losses = rl}),
                    Contains("row_losses.size() = 3"));
  CHECK_THROWS_WITH(diffusion::simple_loss(s, d.t, d.x0, d.eps, out, prediction::epsilon, {.grad = g}), Contains("grad.size() = 5"));
  CHECK_THROWS_WITH(diffusion::simple_loss(s, d.t, d.x0, d.eps, out, prediction::score), Contains("score"));
  CHECK_THROWS_WITH(diffusion::vlb_term(s, d.t, d.x0, d.xt, out, prediction::epsilon, {.variance = variance_type::learned}),
                    Contains("model_output.size() = 6 must be 12"));
  CHECK_THROWS_WITH(diffusion::hybrid_loss(s, d.t, d.x0, d.xt, d.eps, d.out, {.variance = variance_type::fixed_small}),
                    Contains("learned"));
  std::vector<double> nan_eps = d.eps;
  nan_eps[4] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(diffusion::simple_loss(s, d.t, d.x0, nan_eps, out, prediction::epsilon), Contains("noise[4]"));
  // x0 outside [-1, 1] in a t = 0 row with the discretized decoder names the element of the batch
  std::vector<double> x0 = d.x0;
  x0[4] = 1.5;
  CHECK_THROWS_WITH(diffusion::vlb_term(s, std::vector<std::size_t>{5, 0}, x0, d.xt, out, prediction::epsilon, {}),
                    Contains("x0[4] = 1.5"));
}
