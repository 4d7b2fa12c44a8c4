// Guidance that belongs to the sampler, and the guidance combinations beyond CFG:
// - CFG++ (samplers/cfg_pp.hpp): with D_guided = D_uncond each step is its plain step to rounding
//   (Euler on σ-space, VP and flow levels; Euler ancestral with the same noise; DPM++ 2M with its
//   history); a full CFG++ Euler run on exact Gaussian models (two means) against a scalar
//   re-implementation of the paper's Algorithm 1 written here; the loop cfgpp_sample (the same reference in
//   σ-space, two model calls per step, the plain samplers at λ = 0); errors.
// - APG (models/guidance.hpp): the split Δ = Δ∥ + Δ⊥ (orthogonal, Δ∥ along D_c), η = 1 without
//   threshold or momentum is plain CFG, the threshold caps the norm, the momentum recursion.
// - CFG-Zero*: s* against a brute-force scan, w = 1 gives v_c, zero-init, a zero unconditional row.
// - The three-pass (perturbed-attention / skip-layer) combination.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/guidance.hpp>
#include <diffusion/samplers.hpp>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "support.hpp"

namespace {
using diffusion::level_step;
using diffusion::noise_level;

template <class T>
std::vector<T> normals(std::uint64_t seed, std::size_t n, double scale = 1.0, double shift = 0.0) {
  std::vector<T> v(n);
  test::test_noise{seed}.fill(0, 0, 0, std::span<T>(v));
  for (auto& e : v) e = static_cast<T>(shift + scale * static_cast<double>(e));
  return v;
}

template <class T>
double unit_roundoff() {
  return std::numeric_limits<T>::epsilon() / 2;
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

template <class T>
std::span<const T> cs(const std::vector<T>& v) {
  return std::span<const T>(v);
}

// The level steps the identities run on: σ-space, variance-preserving (ς = σ/α from 3 to 1.2),
// rectified flow (σ from 0.8 to 0.55), and each kind's last step to the data.
std::vector<level_step> identity_steps() {
  return {{noise_level::exploding(3.0), noise_level::exploding(1.7)},
          {noise_level::preserving(3.0), noise_level::preserving(1.2)},
          {noise_level::flow(0.8), noise_level::flow(0.55)},
          {noise_level::exploding(0.4), noise_level::exploding(0.0)},
          {noise_level::preserving(0.3), noise_level::preserving(0.0)},
          {noise_level::flow(0.2), noise_level::flow(0.0)}};
}
}  // namespace

TEMPLATE_TEST_CASE("cfgpp_euler_step with D_guided = D_uncond is euler_step to rounding", "[cfg_pp]", float, double) {
  using T = TestType;
  const std::size_t n = 37;  // SIMD bulk and a scalar tail
  const auto x0 = normals<T>(11, n, 2.0), d = normals<T>(12, n, 0.7, 0.1);
  for (const auto& s : identity_steps()) {
    std::vector<T> a = x0, b = x0;
    diffusion::cfgpp_euler_step<T>(s, cs(d), cs(d), std::span<T>(a));
    diffusion::euler_step<T>(s, cs(d), std::span<T>(b));
    const double r = s.to.sigma / s.from.sigma;
    const auto xd = widen(x0);
    for (std::size_t k = 0; k < n; ++k) {
      // Both are three-term sums of |r x|, |α' D|, |α r D| with ≤ 3 roundings each, plus the rounding
      // of their coefficients (α' − αr is one coefficient in euler_step, two in CFG++).
      const double mag = std::abs(r * xd[k]) + (s.to.alpha + s.from.alpha * r) * std::abs(static_cast<double>(d[k]));
      REQUIRE(std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])) <= 8 * unit_roundoff<T>() * mag);
    }
  }
  // The σ-space overload is the level form.
  std::vector<T> a = x0, b = x0;
  const auto dc = normals<T>(13, n, 0.5);
  diffusion::cfgpp_euler_step<T>(diffusion::sigma_step{2.0, 1.5}, cs(dc), cs(d), std::span<T>(a));
  diffusion::cfgpp_euler_step<T>(level_step{noise_level::exploding(2.0), noise_level::exploding(1.5)}, cs(dc), cs(d),
                                 std::span<T>(b));
  REQUIRE(a == b);
}

TEMPLATE_TEST_CASE("cfgpp_euler_ancestral_step with D_guided = D_uncond is euler_ancestral_step to rounding",
                   "[cfg_pp]", float, double) {
  using T = TestType;
  const std::size_t n = 37;
  const auto x0 = normals<T>(21, n, 3.0), d = normals<T>(22, n, 0.8), z = normals<T>(23, n);
  for (const double eta : {0.0, 0.5, 1.0}) {
    for (const diffusion::sigma_step s : {diffusion::sigma_step{3.0, 1.7}, diffusion::sigma_step{0.5, 0.0}}) {
      const diffusion::ancestral_options opt{.eta = eta, .s_noise = 0.9};
      std::vector<T> a = x0, b = x0;
      diffusion::cfgpp_euler_ancestral_step<T>(s, cs(d), cs(d), std::span<T>(a), cs(z), opt);
      diffusion::euler_ancestral_step<T>(s, cs(d), std::span<T>(b), cs(z), opt);
      const auto split = diffusion::ancestral_step(s.sigma, s.sigma_next, eta);
      const double r = split.sigma_down / s.sigma;
      const auto xd = widen(x0), zd = widen(z);
      for (std::size_t k = 0; k < n; ++k) {
        const double mag = std::abs(r * xd[k]) + (1.0 + r) * std::abs(static_cast<double>(d[k])) +
                           std::abs(split.sigma_up * 0.9 * zd[k]);
        REQUIRE(std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])) <= 10 * unit_roundoff<T>() * mag);
      }
    }
  }
}

TEST_CASE("cfgpp_euler_ancestral_step lands on the target level in law on VP and flow states", "[cfg_pp]") {
  // Deterministic part at (α', α'ς↓) and noise α'ς↑ S z: the variance of the added noise plus the
  // carried σ-part is σ'² exactly when S_noise = 1. Checked through the coefficients: x = σ ε_u with
  // D_u = D_λ = 0 gives x' = α'ς↓ ε + α'ς↑ z, so with ε = z = 1, x' = α'(ς↓ + ς↑) — and with ε = 1,
  // z = 0 (no noise) x'² + (α'ς↑)² = σ'².
  for (const level_step& s : {level_step{noise_level::preserving(2.0), noise_level::preserving(0.7)},
                             level_step{noise_level::flow(0.9), noise_level::flow(0.4)},
                             level_step{noise_level::flow(1.0), noise_level::flow(0.4)}}) {
    std::vector<double> x(1, s.from.sigma), zero(1, 0.0), nz(1, 0.0);
    diffusion::cfgpp_euler_ancestral_step<double>(s, cs(zero), cs(zero), std::span<double>(x), cs(nz));
    const double rt = s.to.sigma / s.to.alpha;
    const double rf = s.from.alpha > 0.0 ? s.from.sigma / s.from.alpha : std::numeric_limits<double>::infinity();
    const auto split = diffusion::ancestral_step(rf, rt, 1.0);
    CHECK(x[0] == Approx(s.to.alpha * split.sigma_down).epsilon(1e-15));
    CHECK(x[0] * x[0] + (s.to.alpha * split.sigma_up) * (s.to.alpha * split.sigma_up) ==
          Approx(s.to.sigma * s.to.sigma).epsilon(1e-14));
  }
}

TEMPLATE_TEST_CASE("cfgpp_dpmpp_2m_step with D_guided = D_uncond is dpmpp_2m_step to rounding", "[cfg_pp]", float,
                   double) {
  using T = TestType;
  const std::size_t n = 37;
  const std::vector<double> ratios = {5.0, 2.5, 1.1, 0.4, 0.0};  // VP levels by ς; the last step lands on the data
  std::vector<T> ha(n), hb(n);
  diffusion::dpmpp_2m_state<T> sa{std::span<T>(ha)}, sb{std::span<T>(hb)};
  auto x = normals<T>(31, n, 1.0);
  for (std::size_t i = 0; i + 1 < ratios.size(); ++i) {
    const level_step s{noise_level::preserving(ratios[i]), noise_level::preserving(ratios[i + 1])};
    const auto d = normals<T>(40 + i, n, 0.6, 0.2);
    std::vector<T> a = x, b = x;
    diffusion::cfgpp_dpmpp_2m_step<T>(s, cs(d), cs(d), std::span<T>(a), sa);
    diffusion::dpmpp_2m_step<T>(s, cs(d), std::span<T>(b), sb);
    REQUIRE(sa.has_previous == sb.has_previous);
    REQUIRE(sa.previous_h == sb.previous_h);
    REQUIRE(ha == hb);  // both hold D
    const double r = s.to.sigma / s.from.sigma;
    const auto xd = widen(x);
    for (std::size_t k = 0; k < n; ++k) {
      // Terms r x, α'D, α r D, and the correction (≤ α'(1 − e^{−h})(|D| + |D_prev|)/(2r_h) ≤ 2α'(|D| + |D_prev|) here).
      const double mag = std::abs(r * xd[k]) + 3.0 * (s.to.alpha + s.from.alpha * r) *
                                                  (std::abs(static_cast<double>(d[k])) + 1.0);
      REQUIRE(std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])) <= 10 * unit_roundoff<T>() * mag);
    }
    x = a;
  }
}

TEST_CASE("cfgpp_dpmpp_2m_step in sigma-space is ComfyUI's update", "[cfg_pp]") {
  // x' = D_g − e^{−h} D_u + e^{−h} x − expm1(−h)(1/(2r))(D_g − D_u,prev), h = log σ − log σ', written out here.
  const double s0 = 4.0, s1 = 2.0, s2 = 0.7;
  const std::vector<double> x0 = {0.3, -1.2, 2.5}, g0 = {0.1, 0.4, -0.2}, u0 = {0.05, 0.3, -0.1};
  const std::vector<double> g1 = {0.2, 0.1, 0.3}, u1 = {0.15, -0.05, 0.25};
  std::vector<double> hist(3), x = x0;
  diffusion::dpmpp_2m_state<double> st{std::span<double>(hist)};
  diffusion::cfgpp_dpmpp_2m_step<double>(diffusion::sigma_step{s0, s1}, cs(g0), cs(u0), std::span<double>(x), st);
  std::vector<double> ref(3);
  const double h0 = std::log(s0) - std::log(s1), h1 = std::log(s1) - std::log(s2), rr = h0 / h1;
  for (std::size_t k = 0; k < 3; ++k) ref[k] = g0[k] - std::exp(-h0) * u0[k] + std::exp(-h0) * x0[k];
  for (std::size_t k = 0; k < 3; ++k) CHECK(x[k] == Approx(ref[k]).epsilon(1e-15).margin(1e-15));
  diffusion::cfgpp_dpmpp_2m_step<double>(diffusion::sigma_step{s1, s2}, cs(g1), cs(u1), std::span<double>(x), st);
  for (std::size_t k = 0; k < 3; ++k) {
    const double want = g1[k] - std::exp(-h1) * u1[k] + std::exp(-h1) * ref[k] -
                        std::expm1(-h1) * (1.0 / (2.0 * rr)) * (g1[k] - u0[k]);
    CHECK(x[k] == Approx(want).epsilon(1e-14).margin(1e-15));
  }
  CHECK(hist == u1);
}

TEST_CASE("A CFG++ Euler run on exact Gaussian models matches a scalar re-implementation of Algorithm 1",
          "[cfg_pp][gaussian]") {
  // Data x₀ ~ N(μ, s²) per element; the conditional model has mean μ_c, the unconditional μ_u, both exact:
  // on a VP state x = αx₀ + σε, D(x) = μ + s²α/(α²s² + σ²)(x − αμ). The library run forms D_λ with
  // apply_guidance (w = λ) and steps with cfgpp_euler_step over VP levels; the reference is the paper's
  // DDIM CFG++ written per element: x̂₀ = D_u + λ(D_c − D_u), ε̂_u = (x − α D_u)/σ, x' = α' x̂₀ + σ' ε̂_u.
  const std::size_t n = 16;
  const double s2 = 0.49, lambda = 0.6;
  std::vector<double> mu_c(n), mu_u(n);
  for (std::size_t k = 0; k < n; ++k) {
    mu_c[k] = 0.5 + 0.1 * static_cast<double>(k);
    mu_u[k] = -0.3 + 0.05 * static_cast<double>(k);
  }
  const std::size_t steps = 25;
  std::vector<double> ratios(steps + 1);
  for (std::size_t i = 0; i < steps; ++i)  // ς from 14.6 down to 0.03, Karras ρ = 7
    ratios[i] = std::pow(std::pow(14.6, 1.0 / 7) + static_cast<double>(i) / (steps - 1) *
                                                       (std::pow(0.03, 1.0 / 7) - std::pow(14.6, 1.0 / 7)),
                         7.0);
  ratios[steps] = 0.0;
  const auto z = normals<double>(51, n);
  const noise_level start = noise_level::preserving(ratios[0]);
  std::vector<double> x(n), ref(n);
  for (std::size_t k = 0; k < n; ++k) x[k] = ref[k] = start.sigma * z[k];  // x_T ~ N(0, σ²) on the VP state
  auto denoise = [&](const std::vector<double>& mu, const noise_level& l, const std::vector<double>& at) {
    std::vector<double> d(n);
    const double g = s2 * l.alpha / (l.alpha * l.alpha * s2 + l.sigma * l.sigma);
    for (std::size_t k = 0; k < n; ++k) d[k] = mu[k] + g * (at[k] - l.alpha * mu[k]);
    return d;
  };
  std::vector<double> guided(n);
  for (std::size_t i = 0; i < steps; ++i) {
    const noise_level a = noise_level::preserving(ratios[i]), b = noise_level::preserving(ratios[i + 1]);
    const auto dc = denoise(mu_c, a, x), du = denoise(mu_u, a, x);
    diffusion::apply_guidance<double>(cs(dc), cs(du), 1, {.guidance_scale = lambda}, std::span<double>(guided));
    diffusion::cfgpp_euler_step<double>(level_step{a, b}, cs(guided), cs(du), std::span<double>(x));
    // The reference: its own α, σ of the VP level ς (α = 1/√(1 + ς²), σ = ς α).
    const double al = 1.0 / std::sqrt(1.0 + ratios[i] * ratios[i]), si = ratios[i] * al;
    const double al2 = 1.0 / std::sqrt(1.0 + ratios[i + 1] * ratios[i + 1]), si2 = ratios[i + 1] * al2;
    const double g = s2 * al / (al * al * s2 + si * si);
    for (std::size_t k = 0; k < n; ++k) {
      const double dck = mu_c[k] + g * (ref[k] - al * mu_c[k]), duk = mu_u[k] + g * (ref[k] - al * mu_u[k]);
      const double x0hat = duk + lambda * (dck - duk);
      const double eps_u = (ref[k] - al * duk) / si;
      ref[k] = al2 * x0hat + si2 * eps_u;
    }
  }
  for (std::size_t k = 0; k < n; ++k) {
    INFO("element " << k << ": library " << x[k] << ", reference " << ref[k]);
    REQUIRE(std::abs(x[k] - ref[k]) <= 1e-12 * std::max(1.0, std::abs(ref[k])));
  }
}

TEST_CASE("CFG++ steps: bit-identical for any thread count", "[cfg_pp][threads]") {
  const std::size_t n = (std::size_t{1} << 17) + 5;
  const auto x0 = normals<float>(61, n, 2.0), g = normals<float>(62, n, 0.5), u = normals<float>(63, n, 0.4),
             z = normals<float>(64, n);
  const level_step s{noise_level::preserving(2.0), noise_level::preserving(1.0)};
  std::vector<float> a = x0, b = x0;
  diffusion::cfgpp_euler_ancestral_step<float>(s, cs(g), cs(u), std::span<float>(a), cs(z));
  diffusion::cfgpp_euler_ancestral_step<float>(s, cs(g), cs(u), std::span<float>(b), cs(z), {},
                                               diffusion::parallel_policy{.threads = 4, .min_elements_per_thread = 1024});
  REQUIRE(a == b);
}

TEST_CASE("CFG++ steps: errors", "[cfg_pp][errors]") {
  std::vector<double> x(4, 0.0), g(4, 0.0), u(3, 0.0), h(4, 0.0), z(4, 0.0);
  CHECK_THROWS_AS(diffusion::cfgpp_euler_step<double>(diffusion::sigma_step{1.0, 0.5}, cs(g), cs(u), std::span<double>(x)),
                  std::invalid_argument);
  u.resize(4);
  CHECK_THROWS_AS(diffusion::cfgpp_euler_step<double>(diffusion::sigma_step{0.0, 0.5}, cs(g), cs(u), std::span<double>(x)),
                  std::invalid_argument);
  // An ancestral step that adds noise needs noise, and must not increase σ/α.
  CHECK_THROWS_AS(diffusion::cfgpp_euler_ancestral_step<double>(diffusion::sigma_step{1.0, 0.5}, cs(g), cs(u),
                                                                std::span<double>(x), diffusion::kernels::no_noise{}),
                  std::invalid_argument);
  CHECK_THROWS_AS(diffusion::cfgpp_euler_ancestral_step<double>(diffusion::sigma_step{0.5, 1.0}, cs(g), cs(u),
                                                                std::span<double>(x), cs(z)),
                  std::invalid_argument);
  CHECK_THROWS_AS(diffusion::cfgpp_euler_ancestral_step<double>(diffusion::sigma_step{1.0, 0.5}, cs(g), cs(u),
                                                                std::span<double>(x), cs(z), {.eta = 1.5}),
                  std::invalid_argument);
  std::vector<double> short_hist(3);
  diffusion::dpmpp_2m_state<double> st{std::span<double>(short_hist)};
  CHECK_THROWS_AS(diffusion::cfgpp_dpmpp_2m_step<double>(diffusion::sigma_step{1.0, 0.5}, cs(g), cs(u),
                                                         std::span<double>(x), st),
                  std::invalid_argument);
  // Overflow of the element type is a domain error naming the step.
  std::vector<float> xf(4, 3e38f), gf(4, 3e38f), uf(4, -3e38f);
  CHECK_THROWS_AS(diffusion::cfgpp_euler_step<float>(diffusion::sigma_step{1.0, 0.9}, std::span<const float>(gf),
                                                     std::span<const float>(uf), std::span<float>(xf)),
                  std::domain_error);
}

// ---------------------------------------------------------------------------------------
// APG
// ---------------------------------------------------------------------------------------

TEST_CASE("APG: the parallel and orthogonal parts of the update", "[apg]") {
  // With w = 2 the output is D_c + Δ⊥ + ηΔ∥: η = 0 gives Δ⊥, η = 1 − η = 0 the difference gives Δ∥.
  const std::size_t n = 50, rows = 2;
  const auto c = normals<double>(71, rows * n, 1.0, 0.3), u = normals<double>(72, rows * n, 1.1);
  std::vector<double> o0(rows * n), o1(rows * n);
  diffusion::apply_apg<double>(cs(c), cs(u), rows, {.guidance_scale = 2.0, .eta = 0.0}, nullptr, std::span<double>(o0));
  diffusion::apply_apg<double>(cs(c), cs(u), rows, {.guidance_scale = 2.0, .eta = 1.0}, nullptr, std::span<double>(o1));
  for (std::size_t b = 0; b < rows; ++b) {
    std::vector<double> perp(n), par(n), delta(n);
    double pp = 0, qq = 0, pq = 0, cc = 0, qc = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = b * n + k;
      perp[k] = o0[i] - c[i];
      par[k] = o1[i] - o0[i];
      delta[k] = c[i] - u[i];
      pp += perp[k] * perp[k];
      qq += par[k] * par[k];
      pq += perp[k] * par[k];
      cc += c[i] * c[i];
      qc += par[k] * c[i];
    }
    // Δ⊥ ⟂ Δ∥ and Δ⊥ ⟂ D_c, to the rounding of the outputs (each ≤ a few u of |D_c| + |Δ|: 1e-14 of the norms).
    CHECK(std::abs(pq) <= 1e-13 * std::sqrt(pp * qq));
    double pc = 0;
    for (std::size_t k = 0; k < n; ++k) pc += perp[k] * c[b * n + k];
    CHECK(std::abs(pc) <= 1e-13 * std::sqrt(pp * cc));
    // Δ∥ is along D_c: Δ∥ − (⟨Δ∥, D_c⟩/⟨D_c, D_c⟩) D_c = 0.
    for (std::size_t k = 0; k < n; ++k) CHECK(std::abs(par[k] - qc / cc * c[b * n + k]) <= 1e-13 * std::sqrt(qq));
    // Reconstruction Δ∥ + Δ⊥ = Δ.
    for (std::size_t k = 0; k < n; ++k) CHECK(std::abs(par[k] + perp[k] - delta[k]) <= 1e-14 * (std::abs(c[b * n + k]) + 4));
  }
}

TEMPLATE_TEST_CASE("APG with eta = 1 and no threshold or momentum is classifier-free guidance", "[apg]", float, double) {
  using T = TestType;
  const std::size_t n = 37, rows = 3;
  const auto c = normals<T>(81, rows * n, 1.0), u = normals<T>(82, rows * n, 1.2, 0.1);
  const auto cd = widen(c), ud = widen(u);
  for (const double w : {0.0, 1.0, 3.5, 7.5}) {
    std::vector<T> a(rows * n), b(rows * n);
    diffusion::apply_apg<T>(cs(c), cs(u), rows, {.guidance_scale = w, .eta = 1.0}, nullptr, std::span<T>(a));
    diffusion::apply_guidance<T>(cs(c), cs(u), rows, {.guidance_scale = w}, std::span<T>(b));
    for (std::size_t k = 0; k < rows * n; ++k) {
      // APG: madd(w − 1, c − u, 1·c); CFG: madd(w, c − u, u): each ≤ u(2|w||c − u| + |c| + |u| + |out|).
      const double mag = 2 * w * std::abs(cd[k] - ud[k]) + std::abs(cd[k]) + std::abs(ud[k]) +
                         std::abs(static_cast<double>(b[k]));
      REQUIRE(std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])) <= 2 * unit_roundoff<T>() * mag);
    }
  }
}

TEST_CASE("APG: the norm threshold caps the update's norm exactly, per row", "[apg]") {
  const std::size_t n = 64, rows = 2;
  auto c = normals<double>(91, rows * n, 1.0), u = normals<double>(92, rows * n, 1.0);
  for (std::size_t k = n; k < 2 * n; ++k) u[k] = c[k] - 0.01 * (u[k] - c[k]);  // row 1: ‖Δ‖ ≈ 0.14, under the cap
  const double r = 2.0, w = 5.0;
  std::vector<double> out(rows * n), plain(rows * n);
  diffusion::apply_apg<double>(cs(c), cs(u), rows, {.guidance_scale = w, .eta = 1.0, .norm_threshold = r}, nullptr,
                               std::span<double>(out));
  diffusion::apply_guidance<double>(cs(c), cs(u), rows, {.guidance_scale = w}, std::span<double>(plain));
  double norm0 = 0, delta0 = 0;
  for (std::size_t k = 0; k < n; ++k) {
    norm0 += (out[k] - c[k]) * (out[k] - c[k]);
    delta0 += (c[k] - u[k]) * (c[k] - u[k]);
  }
  REQUIRE(std::sqrt(delta0) > r);                                   // row 0 is over the cap
  CHECK(std::abs(std::sqrt(norm0) / (w - 1) - r) <= 1e-14 * r * 8);  // ‖(w − 1)·fΔ‖ = (w − 1)r
  for (std::size_t k = n; k < 2 * n; ++k)  // row 1 is untouched: plain CFG to rounding
    CHECK(std::abs(out[k] - plain[k]) <= 1e-15 * (2 * w * std::abs(c[k] - u[k]) + std::abs(c[k]) + std::abs(u[k]) + 1));
}

TEST_CASE("APG: the momentum recursion against a hand computation", "[apg]") {
  const std::size_t n = 5;
  const double beta = -0.5, w = 3.0;
  std::vector<double> avg(n, 123.0);  // garbage before the first step: has_average = false ignores it
  diffusion::apg_state<double> st{std::span<double>(avg)};
  std::vector<double> hand(n, 0.0), out(n);
  for (std::uint64_t i = 0; i < 3; ++i) {
    const auto c = normals<double>(100 + i, n, 1.0), u = normals<double>(200 + i, n, 1.0);
    diffusion::apply_apg<double>(cs(c), cs(u), 1, {.guidance_scale = w, .eta = 1.0, .momentum = beta}, &st,
                                 std::span<double>(out));
    for (std::size_t k = 0; k < n; ++k) hand[k] = (c[k] - u[k]) + (i == 0 ? 0.0 : beta * hand[k]);
    for (std::size_t k = 0; k < n; ++k) {
      CHECK(avg[k] == Approx(hand[k]).epsilon(1e-15).margin(1e-15));
      CHECK(out[k] == Approx(c[k] + (w - 1) * hand[k]).epsilon(1e-15).margin(1e-14));  // η = 1: D_c + (w − 1)Δ̄
    }
  }
  CHECK(st.has_average);
  // Momentum without a state is refused; options out of range too.
  std::vector<double> c(n, 1.0), u(n, 0.0);
  CHECK_THROWS_AS(diffusion::apply_apg<double>(cs(c), cs(u), 1, {.momentum = 0.5}, nullptr, std::span<double>(out)),
                  std::invalid_argument);
  CHECK_THROWS_AS(diffusion::apply_apg<double>(cs(c), cs(u), 1, {.momentum = 1.5}, &st, std::span<double>(out)),
                  std::invalid_argument);
  CHECK_THROWS_AS(diffusion::apply_apg<double>(cs(c), cs(u), 1, {.norm_threshold = -1.0}, nullptr, std::span<double>(out)),
                  std::invalid_argument);
  CHECK_THROWS_AS(diffusion::apply_apg<double>(cs(c), cs(u), 2, {}, nullptr, std::span<double>(out)),
                  std::invalid_argument);  // 5 elements do not split into 2 rows
}

TEST_CASE("APG: a zero conditional row has no parallel part", "[apg]") {
  std::vector<double> c(4, 0.0), u = {1.0, -2.0, 0.5, 3.0}, out(4);
  diffusion::apply_apg<double>(cs(c), cs(u), 1, {.guidance_scale = 4.0, .eta = 0.0}, nullptr, std::span<double>(out));
  for (std::size_t k = 0; k < 4; ++k) CHECK(out[k] == -3.0 * u[k]);  // D_c + (w − 1)Δ⊥, Δ⊥ = Δ = −u
}

// ---------------------------------------------------------------------------------------
// CFG-Zero*
// ---------------------------------------------------------------------------------------

TEST_CASE("CFG-Zero*: s* minimizes the residual (brute-force scan)", "[cfg_zero_star]") {
  const std::size_t n = 40;
  const auto c = normals<double>(301, n, 1.0, 0.2), u = normals<double>(302, n, 0.8, 0.1);
  const double s = diffusion::cfg_zero_star_scale<double>(cs(c), cs(u));
  auto residual = [&](double t) {
    double r = 0;
    for (std::size_t k = 0; k < n; ++k) r += (c[k] - t * u[k]) * (c[k] - t * u[k]);
    return r;
  };
  double best = std::numeric_limits<double>::infinity(), arg = 0;
  const double step = 1e-4;
  for (int j = -40000; j <= 40000; ++j) {
    const double t = step * j;
    if (const double r = residual(t); r < best) best = r, arg = t;
  }
  CHECK(std::abs(arg - s) <= step / 2 + 1e-12);  // the grid's minimizer is the grid point nearest s*
  CHECK(residual(s) <= best);
  // w = 1 is the conditional velocity exactly; a zero unconditional row gives s* = 0 and w·v_c.
  std::vector<double> out(n);
  diffusion::apply_cfg_zero_star<double>(cs(c), cs(u), 1, 5, {.guidance_scale = 1.0, .zero_init_steps = 1},
                                         std::span<double>(out));
  CHECK(out == c);
  const std::vector<double> zero(n, 0.0);
  CHECK(diffusion::cfg_zero_star_scale<double>(cs(c), cs(zero)) == 0.0);
  diffusion::apply_cfg_zero_star<double>(cs(c), cs(zero), 1, 5, {.guidance_scale = 3.0}, std::span<double>(out));
  for (std::size_t k = 0; k < n; ++k) CHECK(out[k] == 3.0 * c[k]);
}

TEMPLATE_TEST_CASE("CFG-Zero*: the guided velocity and zero-init", "[cfg_zero_star]", float, double) {
  using T = TestType;
  const std::size_t n = 33, rows = 2;
  const auto c = normals<T>(311, rows * n, 1.0), u = normals<T>(312, rows * n, 0.9, 0.2);
  const double w = 4.0;
  std::vector<T> out(rows * n, T{7});
  for (std::size_t step = 0; step < 2; ++step) {  // K = 2: steps 0 and 1 output zero
    diffusion::apply_cfg_zero_star<T>(cs(c), cs(u), rows, step, {.guidance_scale = w, .zero_init_steps = 2},
                                      std::span<T>(out));
    for (const T e : out) REQUIRE(e == T{0});
  }
  diffusion::apply_cfg_zero_star<T>(cs(c), cs(u), rows, 2, {.guidance_scale = w, .zero_init_steps = 2}, std::span<T>(out));
  const auto cd = widen(c), ud = widen(u);
  for (std::size_t b = 0; b < rows; ++b) {
    long double cu = 0, uu = 0, abs_cu = 0;
    for (std::size_t k = b * n; k < (b + 1) * n; ++k) {
      cu += static_cast<long double>(cd[k]) * ud[k];
      uu += static_cast<long double>(ud[k]) * ud[k];
      abs_cu += std::abs(static_cast<long double>(cd[k]) * ud[k]);
    }
    const double s = static_cast<double>(cu / uu);
    // dot and sum_of_squares bounds (reductions.hpp): u|s·uu| + u_t Σ|c u| and 2.0001u·uu, then a division:
    // |ŝ − s| ≤ 4u(|s| + Σ|c u|/uu) in double.
    const double ud_round = std::numeric_limits<double>::epsilon() / 2;
    const double bound = 4 * ud_round * (std::abs(s) + static_cast<double>(abs_cu / uu));
    CHECK(std::abs(diffusion::cfg_zero_star_scale<T>(std::span<const T>(c).subspan(b * n, n),
                                                     std::span<const T>(u).subspan(b * n, n)) -
                   s) <= bound);
    for (std::size_t k = b * n; k < (b + 1) * n; ++k) {
      const double want = s * ud[k] + w * (cd[k] - s * ud[k]);  // the paper's form
      // madd(w, c, k u) with k rounded to T: ≤ u(|w c| + 2|k u|) + u|want|.
      const double mag = std::abs(w * cd[k]) + 2 * std::abs((1 - w) * s * ud[k]) + std::abs(want);
      REQUIRE(std::abs(static_cast<double>(out[k]) - want) <= 2 * unit_roundoff<T>() * mag);
    }
  }
}

// ---------------------------------------------------------------------------------------
// A third model pass
// ---------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("apply_perturbed_guidance: D_u + w(D_c - D_u) + s(D_c - D_p)", "[perturbed_guidance]", float, double) {
  using T = TestType;
  const std::size_t n = 37;
  const auto c = normals<T>(401, n), u = normals<T>(402, n, 1.1), p = normals<T>(403, n, 0.9, 0.1);
  std::vector<T> out(n), cfg(n);
  // s = 0 is classifier-free guidance bit for bit.
  diffusion::apply_perturbed_guidance<T>(cs(c), cs(u), cs(p), {.guidance_scale = 5.0, .perturbed_scale = 0.0},
                                         std::span<T>(out));
  diffusion::apply_guidance<T>(cs(c), cs(u), 1, {.guidance_scale = 5.0}, std::span<T>(cfg));
  REQUIRE(out == cfg);
  const double w = 5.0, s = 3.0;
  diffusion::apply_perturbed_guidance<T>(cs(c), cs(u), cs(p), {.guidance_scale = w, .perturbed_scale = s},
                                         std::span<T>(out));
  for (std::size_t k = 0; k < n; ++k) {
    const double ck = static_cast<double>(c[k]), uk = static_cast<double>(u[k]), pk = static_cast<double>(p[k]);
    const double want = uk + w * (ck - uk) + s * (ck - pk);
    const double mag = 2 * w * std::abs(ck - uk) + 2 * s * std::abs(ck - pk) + std::abs(uk) + 2 * std::abs(want);
    REQUIRE(std::abs(static_cast<double>(out[k]) - want) <= 2 * unit_roundoff<T>() * mag);
  }
  // In place on the conditional array.
  std::vector<T> inplace = c;
  diffusion::apply_perturbed_guidance<T>(cs(inplace), cs(u), cs(p), {.guidance_scale = w, .perturbed_scale = s},
                                         std::span<T>(inplace));
  REQUIRE(inplace == out);
  CHECK_THROWS_AS(diffusion::apply_perturbed_guidance<T>(cs(c), cs(u), std::span<const T>(p).first(3),
                                                         {.guidance_scale = w}, std::span<T>(out)),
                  std::invalid_argument);
  CHECK_THROWS_AS(diffusion::apply_perturbed_guidance<T>(cs(c), cs(u), cs(p),
                                                         {.perturbed_scale = std::numeric_limits<double>::infinity()},
                                                         std::span<T>(out)),
                  std::invalid_argument);
}

TEST_CASE("cfgpp_sample: Algorithm 1 on exact Gaussian models, two calls per step, and the plain samplers at lambda = 0",
          "[cfg_pp][gaussian]") {
  // σ-space: data N(μ, s²) per element, exact denoisers D(x; σ) = μ + s²/(s² + σ²)(x − μ) with the means μ_c and
  // μ_u; the reference is the paper's DDIM CFG++ written per element: x̂₀ = D_u + λ(D_c − D_u),
  // x' = x̂₀ + σ'(x − D_u)/σ.
  const std::size_t n = 6, rows = 2;
  const double sd = 0.7, lambda = 0.6;
  std::vector<double> mu_c(n), mu_u(n);
  for (std::size_t k = 0; k < n; ++k) {
    mu_c[k] = 0.5 + 0.1 * static_cast<double>(k);
    mu_u[k] = -0.3 + 0.05 * static_cast<double>(k);
  }
  diffusion::gaussian_data gc(mu_c, std::vector<double>(n, sd)), gu(mu_u, std::vector<double>(n, sd));
  diffusion::sigma_space_model<diffusion::gaussian_data> Dc(gc), Du(gu);
  const diffusion::philox_normal noise(88);
  const auto sig = diffusion::karras_sigmas(20, 0.03, 14.6);
  const auto x0 = normals<double>(71, rows * n, sig[0]);
  std::vector<double> x = x0;
  std::size_t reported = 0;
  diffusion::sampler_hooks<double> hooks;
  hooks.on_step = [&](const diffusion::step_info<double>&) {
    ++reported;
    return true;
  };
  const auto r = diffusion::cfgpp_sample(Dc, Du, x, rows, noise, sig, {.guidance_scale = lambda, .draw_initial_noise = false}, hooks);
  CHECK(r.model_calls == 2 * (sig.size() - 1));
  CHECK(reported == sig.size() - 1);
  std::vector<double> ref = x0;
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const double s = sig[i], sn = sig[i + 1], g = sd * sd / (sd * sd + s * s);
    for (std::size_t e = 0; e < rows * n; ++e) {
      const std::size_t k = e % n;
      const double dc = mu_c[k] + g * (ref[e] - mu_c[k]), du = mu_u[k] + g * (ref[e] - mu_u[k]);
      ref[e] = du + lambda * (dc - du) + sn * (ref[e] - du) / s;
    }
  }
  for (std::size_t e = 0; e < rows * n; ++e) CHECK(x[e] == Approx(ref[e]).epsilon(1e-12).margin(1e-13));
  // λ = 0: the plain samplers on the unconditional model, the same noise streams.
  const auto same = [](const std::vector<double>& a, const std::vector<double>& b) {
    double most = 0.0;
    for (std::size_t e = 0; e < a.size(); ++e) most = std::max(most, std::abs(a[e] - b[e]) / std::max(1.0, std::abs(b[e])));
    return most;
  };
  for (const auto m : {diffusion::cfgpp_method::euler, diffusion::cfgpp_method::euler_ancestral, diffusion::cfgpp_method::dpmpp_2m}) {
    std::vector<double> a = x0, b = x0;
    diffusion::cfgpp_sample(Dc, Du, a, rows, noise, sig, {.method = m, .guidance_scale = 0.0, .draw_initial_noise = false});
    if (m == diffusion::cfgpp_method::euler)
      diffusion::euler_sample(Du, b, rows, noise, sig, {.draw_initial_noise = false});
    else if (m == diffusion::cfgpp_method::euler_ancestral)
      diffusion::euler_ancestral_sample(Du, b, rows, noise, sig, {.draw_initial_noise = false});
    else
      diffusion::dpmpp_2m_sample(Du, b, rows, noise, sig, {.draw_initial_noise = false});
    INFO("method " << static_cast<int>(m));
    CHECK(same(a, b) <= 1e-13);
  }
  // Errors.
  std::vector<double> y = x0;
  CHECK_THROWS_WITH(diffusion::cfgpp_sample(Dc, Du, y, rows, noise, sig, {.guidance_scale = std::nan("")}),
                    Catch::Matchers::Contains("cfgpp_sample") && Catch::Matchers::Contains("guidance_scale"));
  CHECK_THROWS_WITH(diffusion::cfgpp_sample(Dc, Du, y, rows, noise, sig, {.method = diffusion::cfgpp_method::euler_ancestral, .eta = 2.0}),
                    Catch::Matchers::Contains("cfgpp_sample") && Catch::Matchers::Contains("eta"));
}
