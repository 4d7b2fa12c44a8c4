// Classifier-free guidance: the endpoints w = 1 and w = 0, linearity in w with its rounding bound,
// the rescale (phi = 0 is plain guidance, phi = 1 restores the conditional row std), the exact
// guided epsilon of two Gaussian data models, invariance of plain guidance under the change of
// prediction kind, the learned-variance layout, use inside a sampler, and errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/guidance.hpp>
#include <diffusion/sampler_ddpm.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::prediction;

// A model whose output is a table chosen by the context: the same object serves as the
// conditional and the unconditional model (with two contexts), as a text-to-image model does.
template <class T>
struct table {
  std::vector<T> values;
};
struct table_model {
  prediction kind = prediction::epsilon;
  int calls = 0;
  [[nodiscard]] prediction predicts() const { return kind; }
  template <class T>
  void operator()(const diffusion::denoiser_input<T, table<T>>& in, std::span<T> out) {
    ++calls;
    REQUIRE(in.context != nullptr);
    REQUIRE(out.size() == in.context->values.size());
    std::copy(in.context->values.begin(), in.context->values.end(), out.begin());
  }
};

template <class T>
std::vector<T> normals(std::uint64_t seed, std::size_t n, double scale, double shift) {
  std::vector<T> v(n);
  test::test_noise{seed}.fill(0, 0, 0, std::span<T>(v));
  for (auto& e : v) e = static_cast<T>(shift + scale * static_cast<double>(e));
  return v;
}

template <class T>
diffusion::denoiser_input<T, diffusion::no_context> input_for(const std::vector<T>& x, const std::vector<double>& ts,
                                                             const std::vector<double>& sig) {
  return {x, ts, sig, nullptr};
}

// Row statistics in long double: sum of squared deviations and of squares.
template <class T>
std::pair<long double, long double> row_sums(std::span<const T> v) {
  long double m = 0, ss = 0, sq = 0;
  for (T e : v) m += static_cast<long double>(e);
  m /= static_cast<long double>(v.size());
  for (T e : v) {
    const long double d = static_cast<long double>(e) - m;
    ss += d * d;
    sq += static_cast<long double>(e) * static_cast<long double>(e);
  }
  return {ss, sq};
}
}  // namespace

static_assert(diffusion::denoiser<diffusion::classifier_free_guidance<diffusion::gaussian_data>, double>);
static_assert(diffusion::denoiser<diffusion::classifier_free_guidance<diffusion::gaussian_data>, float>);
static_assert(diffusion::denoiser<diffusion::classifier_free_guidance<table_model, table_model, table<float>>, float>);

TEMPLATE_TEST_CASE("guidance endpoints and linearity in w", "[guidance]", float, double) {
  using T = TestType;
  const double u = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2;
  constexpr std::size_t rows = 4, n = 16;
  const table<T> cond{normals<T>(1, rows * n, 1.0, 0.2)}, uncond{normals<T>(2, rows * n, 0.8, -0.1)};
  table_model m;
  const std::vector<T> x(rows * n, T(0));
  const std::vector<double> ts(rows, 500.0), sig(rows, 1.0);
  const auto in = input_for(x, ts, sig);
  std::vector<T> out(rows * n);

  // w = 1: exactly the conditional output, one model call; w = 0: exactly the unconditional one.
  diffusion::classifier_free_guidance cfg(m, m, {.guidance_scale = 1.0}, &cond, &uncond);
  cfg(in, std::span<T>(out));
  CHECK(out == cond.values);
  CHECK(m.calls == 1);
  cfg.set_options({.guidance_scale = 0.0});
  cfg(in, std::span<T>(out));
  CHECK(out == uncond.values);
  // Linearity: out(w) = u + w (c - u) within the bound u_T (2|w||c - u| + |out|) of the documented evaluation.
  for (double w : {-1.0, 0.5, 2.0, 7.5, 20.0}) {
    cfg.set_options({.guidance_scale = w});
    cfg(in, std::span<T>(out));
    for (std::size_t k = 0; k < out.size(); ++k) {
      const long double c = static_cast<long double>(cond.values[k]), un = static_cast<long double>(uncond.values[k]);
      const long double exact = un + static_cast<long double>(w) * (c - un);
      const double bound = u * (2 * std::abs(w) * static_cast<double>(std::abs(c - un)) + std::abs(static_cast<double>(exact)));
      INFO("w = " << w << ", element " << k);
      CHECK(static_cast<double>(std::abs(static_cast<long double>(out[k]) - exact)) <= bound * (1 + 4 * u));
    }
  }
  // The free function agrees with the wrapper and may work in place.
  std::vector<T> in_place = cond.values;
  diffusion::apply_guidance<T>(in_place, uncond.values, rows, {.guidance_scale = 20.0}, in_place);
  CHECK(in_place == out);
}

TEMPLATE_TEST_CASE("guidance rescale: phi = 0 is plain guidance, phi = 1 restores the conditional std per row",
                   "[guidance]", float, double) {
  using T = TestType;
  const double u = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2;
  constexpr std::size_t rows = 3, n = 256;
  const table<T> cond{normals<T>(3, rows * n, 1.0, 0.05)}, uncond{normals<T>(4, rows * n, 0.9, 0.0)};
  table_model m;
  const std::vector<T> x(rows * n, T(0));
  const std::vector<double> ts(rows, 10.0), sig(rows, 0.1);
  const auto in = input_for(x, ts, sig);
  std::vector<T> plain(rows * n), phi0(rows * n), phi1(rows * n), half(rows * n);
  diffusion::classifier_free_guidance cfg(m, m, {.guidance_scale = 7.5}, &cond, &uncond);
  cfg(in, std::span<T>(plain));
  cfg.set_options({.guidance_scale = 7.5, .guidance_rescale = 0.0});
  cfg(in, std::span<T>(phi0));
  CHECK(phi0 == plain);
  cfg.set_options({.guidance_scale = 7.5, .guidance_rescale = 1.0});
  cfg(in, std::span<T>(phi1));
  cfg.set_options({.guidance_scale = 7.5, .guidance_rescale = 0.7});
  cfg(in, std::span<T>(half));
  for (std::size_t b = 0; b < rows; ++b) {
    const auto [ss_c, sq_c] = row_sums<T>(std::span<const T>(cond.values).subspan(b * n, n));
    const auto [ss_g, sq_g] = row_sums<T>(std::span<const T>(plain).subspan(b * n, n));
    const auto [ss_1, sq_1] = row_sums<T>(std::span<const T>(phi1).subspan(b * n, n));
    // std(out) = |f_T| std(g) up to the rounding of f (u) and of each product f g_k (u |g_k|),
    // which moves the std by at most u |g| / |g - mean(g)|; the factor, from compensated double sums,
    // a square root and a division, is within 8 double roundings.
    const double want = std::sqrt(static_cast<double>(ss_c)), got = std::sqrt(static_cast<double>(ss_1));
    const double ud = std::numeric_limits<double>::epsilon() / 2;
    const double tol = 2 * u * (1 + std::sqrt(static_cast<double>(sq_g / ss_g))) + 8 * ud;
    INFO("row " << b << ": std ratio " << got / want);
    CHECK(std::abs(got / want - 1) <= tol);
    // phi = 0.7: out = (0.7 r + 0.3) g with r = std(c)/std(g), element by element (one rounding of f, one of the product).
    const double r = std::sqrt(static_cast<double>(ss_c / ss_g)), f = 0.7 * r + 0.3;
    for (std::size_t k = b * n; k < (b + 1) * n; ++k)
      CHECK(std::abs(static_cast<double>(half[k]) - f * static_cast<double>(plain[k])) <=
            (2 * u + 8 * ud) * std::abs(f * static_cast<double>(plain[k])));
    // diffusers' formula, with torch.std's (n - 1) normalisation on both: the same ratio.
    const double std_text = std::sqrt(static_cast<double>(ss_c) / (n - 1)), std_cfg = std::sqrt(static_cast<double>(ss_g) / (n - 1));
    CHECK(std_text / std_cfg == Approx(r).epsilon(1e-14));
  }
}

TEST_CASE("guided epsilon of two exact Gaussian denoisers equals the analytic formula", "[guidance]") {
  // Conditional data N(mu_c, s_c^2), unconditional N(mu_u, s_u^2) per dimension. At noise level
  // sigma (VP: c = 1/sqrt(1 + sigma^2), d = sigma c) each marginal is N(c mu, c^2 s^2 + d^2), so
  // eps_i = -d grad log p_i = d (x - c mu_i)/(c^2 s_i^2 + d^2) and the guided epsilon is
  // d [w (x - c mu_c)/v_c + (1 - w)(x - c mu_u)/v_u]: the score of p_c^w p_u^(1 - w).
  const std::vector<double> mu_c = {0.5, -0.3, 1.2, 0.0}, s_c = {0.4, 0.7, 0.2, 1.0};
  const std::vector<double> mu_u = {0.0, 0.1, 0.4, -0.6}, s_u = {1.0, 0.9, 0.8, 0.5};
  diffusion::gaussian_data gc(mu_c, s_c), gu(mu_u, s_u);
  constexpr std::size_t rows = 5, n = 4;
  const std::vector<double> x = normals<double>(11, rows * n, 1.0, 0.0);
  const std::vector<double> ts = {10, 100, 300, 700, 999}, sig = {0.05, 0.4, 1.0, 3.0, 80.0};
  const auto in = input_for(x, ts, sig);
  const double u = std::numeric_limits<double>::epsilon() / 2;
  for (double w : {0.0, 1.0, 3.0, 7.5}) {
    for (double phi : {0.0, 0.7}) {
      diffusion::classifier_free_guidance cfg(gc, gu, {.guidance_scale = w, .guidance_rescale = phi});
      std::vector<double> out(rows * n);
      cfg(in, std::span<double>(out));
      for (std::size_t b = 0; b < rows; ++b) {
        using ld = long double;
        const ld sg = static_cast<ld>(sig[b]), c = 1 / std::sqrt(1 + sg * sg), d = sg * c, wl = static_cast<ld>(w);
        std::vector<ld> e_c(n), g(n);
        ld emax = 0;
        for (std::size_t k = 0; k < n; ++k) {
          const ld xk = static_cast<ld>(x[b * n + k]), mc = static_cast<ld>(mu_c[k]), mu = static_cast<ld>(mu_u[k]);
          const ld vc = c * c * static_cast<ld>(s_c[k] * s_c[k]) + d * d;  // s^2 exact enough: one rounding
          const ld vu = c * c * static_cast<ld>(s_u[k] * s_u[k]) + d * d;
          e_c[k] = d * (xk - c * mc) / vc;
          const ld e_u = d * (xk - c * mu) / vu;
          g[k] = d * (wl * (xk - c * mc) / vc + (1 - wl) * (xk - c * mu) / vu);
          emax = std::max({emax, std::abs(e_c[k]), std::abs(e_u)});
        }
        // Each exact eps from gaussian_data carries about 10 roundings (<= 16u relative); the
        // combination amplifies absolute errors by at most 1 + 2|w|; the rescale by the
        // conditioning of the std ratio (|e| / |e - mean| for both rows).
        const double e = 16 * u * (1 + 2 * std::abs(w)) * static_cast<double>(emax);
        long double f = 1;
        double cond_ratio = 0;
        if (phi > 0 && w != 1) {
          long double mc = 0, mg = 0, ssc = 0, ssg = 0;
          for (std::size_t k = 0; k < n; ++k) mc += e_c[k], mg += g[k];
          mc /= n;
          mg /= n;
          for (std::size_t k = 0; k < n; ++k) ssc += (e_c[k] - mc) * (e_c[k] - mc), ssg += (g[k] - mg) * (g[k] - mg);
          f = static_cast<ld>(phi) * std::sqrt(ssc / ssg) + (1 - static_cast<ld>(phi));
          cond_ratio = phi * static_cast<double>(std::sqrt(ssc / ssg)) * std::sqrt(static_cast<double>(n)) *
                       (1 / static_cast<double>(std::sqrt(ssc)) + 1 / static_cast<double>(std::sqrt(ssg)));
        }
        for (std::size_t k = 0; k < n; ++k) {
          const long double want = f * g[k];
          const double tol = static_cast<double>(std::abs(f)) * e + static_cast<double>(std::abs(g[k])) * cond_ratio * e +
                             2 * u * static_cast<double>(std::abs(want));
          INFO("w = " << w << ", phi = " << phi << ", row " << b << ", element " << k);
          CHECK(std::abs(static_cast<long double>(out[b * n + k]) - want) <= static_cast<long double>(tol));
        }
      }
    }
  }
}

TEST_CASE("plain guidance commutes with the change of prediction kind but the rescale does not", "[guidance]") {
  // x0 = (x - d eps)/c and v = eps/c - (d/c) x are affine in eps with the same x: guiding
  // x0 or v gives the x0 or v of the guided eps (to rounding).
  const std::vector<double> mu_c = {0.5, -0.3, 1.2}, s_c = {0.4, 0.7, 0.2}, mu_u = {0.0, 0.1, 0.4}, s_u = {1.0, 0.9, 0.8};
  constexpr std::size_t rows = 3, n = 3;
  const std::vector<double> x = normals<double>(12, rows * n, 1.0, 0.0), ts = {10, 400, 900}, sig = {0.1, 1.0, 5.0};
  const auto in = input_for(x, ts, sig);
  diffusion::gaussian_data ec(mu_c, s_c), eu(mu_u, s_u);
  diffusion::gaussian_data xc(mu_c, s_c, prediction::sample), xu(mu_u, s_u, prediction::sample);
  diffusion::gaussian_data vc(mu_c, s_c, prediction::v), vu(mu_u, s_u, prediction::v);
  for (double phi : {0.0, 1.0}) {
    const diffusion::guidance_options opt{.guidance_scale = 4.0, .guidance_rescale = phi};
    diffusion::classifier_free_guidance ge(ec, eu, opt), gx(xc, xu, opt), gv(vc, vu, opt);
    CHECK(gx.predicts() == prediction::sample);
    CHECK(gv.predicts() == prediction::v);
    std::vector<double> e(rows * n), x0(rows * n), v(rows * n);
    ge(in, std::span<double>(e));
    gx(in, std::span<double>(x0));
    gv(in, std::span<double>(v));
    double worst_x = 0, worst_v = 0;
    for (std::size_t b = 0; b < rows; ++b) {
      const double c = 1 / std::sqrt(1 + sig[b] * sig[b]), d = sig[b] * c;
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = b * n + k;
        worst_x = std::max(worst_x, std::abs(x0[i] - (x[i] - d * e[i]) / c) / (1 + std::abs(x0[i])));
        worst_v = std::max(worst_v, std::abs(v[i] - (e[i] / c - d / c * x[i])) / (1 + std::abs(v[i])));
      }
    }
    INFO("phi = " << phi << ": worst x0 mismatch " << worst_x << ", v mismatch " << worst_v);
    if (phi == 0) {
      // 1e-12: the conversions divide by c down to 0.196 and the w = 4 combination amplifies each
      // side's ~16u error by 1 + 2w = 9: 9 * 16u / 0.196 ~ 8e-14, with margin for |x| / c.
      CHECK(worst_x < 1e-12);
      CHECK(worst_v < 1e-12);
    } else {
      CHECK(worst_x > 1e-3);  // rescaling in x0-space is a different operation from rescaling eps
    }
  }
}

TEST_CASE("guidance with a learned variance: the prediction block is guided, the variance is the conditional's",
          "[guidance]") {
  constexpr std::size_t rows = 2, n = 3;
  const table<double> cond{{1, 2, 3, 0.1, 0.2, 0.3, 4, 5, 6, 0.4, 0.5, 0.6}};
  const table<double> uncond{{0, 1, 1, -0.1, -0.2, -0.3, 1, 1, 2, -0.4, -0.5, -0.6}};
  table_model m;
  const std::vector<double> x(rows * n, 0.0), ts(rows, 1.0), sig(rows, 1.0);
  diffusion::classifier_free_guidance cfg(m, m, {.guidance_scale = 2.0}, &cond, &uncond);
  std::vector<double> out(rows * 2 * n);
  cfg(input_for(x, ts, sig), std::span<double>(out));
  CHECK(out == std::vector<double>{2, 3, 5, 0.1, 0.2, 0.3, 7, 9, 10, 0.4, 0.5, 0.6});
}

TEST_CASE("a guided model drives a sampler and at w = 1 it is the conditional model", "[guidance]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  diffusion::gaussian_data gc({0.5, -0.5}, {0.3, 0.3}), gu({0.0, 0.0}, {1.0, 1.0});
  test::test_noise noise{21};
  const auto seq = diffusion::inference_timesteps(1000, 20, diffusion::timestep_spacing::trailing);
  std::vector<double> a(2 * 6), b(2 * 6), c(2 * 6);
  diffusion::classifier_free_guidance cfg(gc, gu, {.guidance_scale = 1.0});
  diffusion::ddim_sample(s, cfg, a, 6, noise, seq, {.eta = 1.0});
  diffusion::ddim_sample(s, gc, b, 6, noise, seq, {.eta = 1.0});
  CHECK(a == b);
  // Any other scale is a different (finite) sample from the same noise.
  cfg.set_options({.guidance_scale = 3.0});
  diffusion::ddim_sample(s, cfg, c, 6, noise, seq, {.eta = 1.0});
  CHECK(c != b);
  for (double v : c) CHECK(std::isfinite(v));
}

TEST_CASE("guidance errors", "[guidance][errors]") {
  using Catch::Matchers::Contains;
  diffusion::gaussian_data ge({0.0}, {1.0}), gv({0.0}, {1.0}, prediction::v);
  CHECK_THROWS_AS(diffusion::classifier_free_guidance(ge, gv), std::invalid_argument);
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, gv),
                    Contains("conditional.predicts() = epsilon differs from unconditional.predicts() = v"));
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, ge, {.guidance_scale = nan}), Contains("guidance_scale = nan"));
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, ge, {.guidance_scale = inf}), Contains("guidance_scale = inf"));
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, ge, {.guidance_scale = -inf}), Contains("guidance_scale = -inf"));
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, ge, {.guidance_rescale = 1.5}),
                    Contains("guidance_rescale = 1.5 is outside the allowed range [0, 1]"));
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, ge, {.guidance_rescale = -0.1}), Contains("guidance_rescale = -0.1"));
  CHECK_THROWS_WITH(diffusion::classifier_free_guidance(ge, ge, {.guidance_rescale = nan}), Contains("guidance_rescale = nan"));
  diffusion::classifier_free_guidance cfg(ge, ge);
  CHECK_THROWS_WITH(cfg.set_options({.guidance_scale = nan}), Contains("guidance_scale = nan"));
  CHECK(cfg.options().guidance_scale == 7.5);  // unchanged after a refused update
  const std::vector<double> a(6, 1.0), b(4, 1.0);
  std::vector<double> out(6);
  CHECK_THROWS_WITH(diffusion::apply_guidance<double>(a, b, 2, {}, out), Contains("differs from unconditional.size() = 4"));
  CHECK_THROWS_WITH(diffusion::apply_guidance<double>(a, a, 4, {}, out), Contains("rows = 4 does not divide out.size() = 6"));
  CHECK_THROWS_WITH(diffusion::apply_guidance<double>(a, a, 2, {.guidance_scale = nan}, out), Contains("guidance_scale = nan"));
  // The rescale needs a spread: rows of one element (or constant rows) have std 0.
  CHECK_THROWS_AS(diffusion::apply_guidance<double>(a, a, 6, {.guidance_rescale = 0.5}, out), std::domain_error);
  CHECK_THROWS_WITH(diffusion::apply_guidance<double>(a, a, 2, {.guidance_rescale = 0.5}, out),
                    Contains("row 0 of the guided output has no spread"));
  // Output neither n nor 2n per row.
  const std::vector<double> x(2, 0.0), ts(2, 1.0), sig(2, 1.0);
  std::vector<double> wrong(6);
  diffusion::classifier_free_guidance g1(ge, ge, {.guidance_scale = 2.0});
  CHECK_THROWS_WITH(g1(input_for(x, ts, sig), std::span<double>(wrong)), Contains("out has 3 elements per row"));
}

namespace {
// A row-wise model conditioned on one integer label per row: row b's output is x_b·(1 + label_b) + t_b/8
// (a variance block, when asked for, holds the label). It counts its calls and the rows it was given.
struct label_model {
  bool learned_variance = false;
  int calls = 0;
  std::size_t rows_seen = 0;
  [[nodiscard]] prediction predicts() const { return prediction::epsilon; }
  template <class T>
  void operator()(const diffusion::denoiser_input<T, std::vector<int>>& in, std::span<T> out) {
    ++calls;
    rows_seen = in.rows();
    REQUIRE(in.context != nullptr);
    REQUIRE(in.context->size() == in.rows());
    const std::size_t n = in.row_size(), width = learned_variance ? 2 * n : n;
    REQUIRE(out.size() == in.rows() * width);
    for (std::size_t b = 0; b < in.rows(); ++b) {
      const T f = static_cast<T>(1 + (*in.context)[b]), tb = static_cast<T>(in.timesteps[b] / 8.0);
      for (std::size_t k = 0; k < n; ++k) out[b * width + k] = in.x[b * n + k] * f + tb;
      for (std::size_t k = n; k < width; ++k) out[b * width + k] = static_cast<T>((*in.context)[b]);
    }
  }
};
}  // namespace

static_assert(diffusion::denoiser<diffusion::batched_classifier_free_guidance<label_model, std::vector<int>>, float>);
static_assert(diffusion::denoiser<diffusion::batched_classifier_free_guidance<label_model, std::vector<int>>, double>);

TEST_CASE("batched guidance: one model call on 2B rows, unconditional half first, exact values", "[guidance][batched]") {
  // B = 2 rows of n = 3; labels: unconditional 0, conditional 1 and 3. With w = 2 every value is an
  // exact small binary fraction: u = x + t/8, c = x(1 + l) + t/8, u + 2(c − u) = x(1 + 2l) + t/8.
  constexpr std::size_t rows = 2, n = 3;
  const std::vector<double> x{1, 2, 3, -1, 0.5, 4}, ts{8, 16}, sig{1, 1};
  const std::vector<int> batched{0, 0, 1, 3};  // rows [0, B): unconditional; [B, 2B): conditional
  label_model m;
  diffusion::batched_classifier_free_guidance cfg(m, {.guidance_scale = 2.0}, &batched);
  std::vector<double> out(rows * n);
  cfg(input_for(x, ts, sig), std::span<double>(out));
  CHECK(m.calls == 1);
  CHECK(m.rows_seen == 2 * rows);
  CHECK(out == std::vector<double>{1 * 3 + 1, 2 * 3 + 1, 3 * 3 + 1, -1 * 7 + 2, 0.5 * 7 + 2, 4 * 7 + 2});
  // A learned variance: the prediction block is guided, the variance block is the conditional half's label.
  m.learned_variance = true;
  std::vector<double> out2(rows * 2 * n);
  cfg(input_for(x, ts, sig), std::span<double>(out2));
  CHECK(m.calls == 2);
  CHECK(out2 == std::vector<double>{4, 7, 10, 1, 1, 1, -5, 5.5, 30, 3, 3, 3});
  // w = 1: the conditional half itself (both halves still computed by the one call).
  cfg.set_options({.guidance_scale = 1.0});
  cfg(input_for(x, ts, sig), std::span<double>(out2));
  CHECK(m.calls == 3);
  CHECK(out2 == std::vector<double>{3, 5, 7, 1, 1, 1, -2, 4, 18, 3, 3, 3});
}

TEMPLATE_TEST_CASE("batched guidance equals two separate passes bit for bit, in a sampler, with half the calls",
                   "[guidance][batched]", float, double) {
  using T = TestType;
  constexpr std::size_t rows = 3, n = 4, steps = 10;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const auto seq = diffusion::inference_timesteps(1000, steps, diffusion::timestep_spacing::trailing);
  const std::vector<int> cond{1, 2, 0}, uncond{0, 0, 0};
  std::vector<int> batched(uncond);
  batched.insert(batched.end(), cond.begin(), cond.end());
  for (const double phi : {0.0, 0.7}) {
    const diffusion::guidance_options opt{.guidance_scale = 3.5, .guidance_rescale = phi};
    label_model one, two;
    diffusion::batched_classifier_free_guidance fused(one, opt, &batched);
    diffusion::classifier_free_guidance separate(two, two, opt, &cond, &uncond);
    test::test_noise noise{7};
    std::vector<T> a(rows * n), b(rows * n);
    const auto ra = diffusion::ddim_sample(s, fused, a, rows, noise, seq, {.eta = 1.0});
    const auto rb = diffusion::ddim_sample(s, separate, b, rows, noise, seq, {.eta = 1.0});
    CHECK(a == b);
    CHECK(one.calls == static_cast<int>(steps));      // one network call per step
    CHECK(two.calls == static_cast<int>(2 * steps));  // two without batching
    CHECK(ra.model_calls == rb.model_calls);
    for (T v : a) CHECK(std::isfinite(v));
  }
}

TEST_CASE("batched guidance errors", "[guidance][batched][errors]") {
  using Catch::Matchers::Contains;
  label_model m;
  const std::vector<int> batched{0, 0, 1, 1};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(diffusion::batched_classifier_free_guidance(m, {.guidance_scale = nan}, &batched),
                    Contains("diffusion::batched_classifier_free_guidance: guidance_scale = nan"));
  CHECK_THROWS_WITH(diffusion::batched_classifier_free_guidance(m, {.guidance_rescale = 2.0}, &batched),
                    Contains("guidance_rescale = 2 is outside the allowed range [0, 1]"));
  diffusion::batched_classifier_free_guidance cfg(m, {.guidance_scale = 2.0}, &batched);
  const std::vector<double> x(4, 0.0), ts(2, 1.0), sig(2, 1.0);
  std::vector<double> wrong(6);
  CHECK_THROWS_WITH(cfg(input_for(x, ts, sig), std::span<double>(wrong)), Contains("out has 3 elements per row; expected 2 or 4"));
  CHECK(m.calls == 0);  // refused before the model is called
}
