// The samplers of samplers/res.hpp against exact targets on Gaussian data. RES multistep: its first
// step is the DDIM/Euler step, order 2 on the exact flow map (σ-space and rectified-flow states),
// its distance to DPM-Solver++(2M) at the same N, the exact law of the ancestral chain (Monte Carlo)
// and its convergence to the data law, the step in your own loop against the sample loop, errors.
// ER-SDE: see the second half.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_karras.hpp>
#include <diffusion/samplers/res.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;

namespace {

using gauss_model = diffusion::sigma_space_model<diffusion::gaussian_data>;

// Max error against the exact flow map of data N(mu, sd^2) per dimension, x(sigma) - mu = (x0 - mu)
// sqrt(sd^2 + sigma^2)/sqrt(sd^2 + sigma0^2), over a Karras list from 80 to 0.02 (no final 0).
template <class Run>
double flow_map_error(Run run, std::size_t N) {
  const std::vector<double> mu = {0.2, -0.5, 1.0}, sd = {0.5, 0.1, 1.5};
  diffusion::gaussian_data g(mu, sd);
  gauss_model D(g);
  const double smin = 0.02, smax = 80.0;
  auto sig = diffusion::karras_sigmas(N, smin, smax);
  sig.pop_back();
  std::vector<double> x = {60.0, -40.0, 90.0};
  const std::vector<double> x0 = x;
  run(D, x, sig);
  double err = 0;
  for (std::size_t k = 0; k < 3; ++k)
    err = std::max(err, std::abs(x[k] - (mu[k] + (x0[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                                      std::sqrt(sd[k] * sd[k] + smax * smax))));
  return err;
}

// k-diffusion's get_ancestral_step, written here independently of the library.
std::pair<double, double> split(double from, double to, double eta) {
  if (to == 0.0) return {0.0, 0.0};
  const double up = std::min(to, eta * std::sqrt(to * to * (from * from - to * to) / (from * from)));
  return {std::sqrt(to * to - up * up), up};
}

struct chain_law {
  double mean, var;
};

// The law of y = x - mu after ancestral RES on 1-D data N(mu, sd^2) in sigma-space: D - mu = k y with
// k = sd^2/(sd^2 + s^2), so each step is linear in (y, p), p = D_prev - mu, plus independent noise.
// From the step's formula: h = log(s/s_d), x' = (s_d/s) x + (1 - e^{-h}) D + w (D - D_prev) + s_up z,
// w = (h - 1 + e^{-h})/h_prev (= h^2 phi_2(-h)/h_prev), w = 0 at the first step and where s_d = 0.
chain_law exact_res_chain(const std::vector<double>& sig, double mu, double sd, double eta) {
  std::array<double, 2> m{-mu, 0.0};
  std::array<double, 4> c{sig[0] * sig[0], 0.0, 0.0, 0.0};
  double h_prev = 0.0;
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const double s = sig[i], k = sd * sd / (sd * sd + s * s);
    const auto [sd_, up] = split(s, sig[i + 1], eta);
    double A[2][2];
    if (sd_ == 0.0) {
      A[0][0] = k, A[0][1] = 0.0;
      h_prev = std::numeric_limits<double>::infinity();
    } else {
      const double h = std::log(s / sd_), E = -std::expm1(-h);
      const double w = i == 0 ? 0.0 : (h + std::expm1(-h)) / h_prev;
      A[0][0] = sd_ / s + (E + w) * k;
      A[0][1] = -w;
      h_prev = h;
    }
    A[1][0] = k, A[1][1] = 0.0;
    const std::array<double, 2> m2{A[0][0] * m[0] + A[0][1] * m[1], A[1][0] * m[0]};
    std::array<double, 4> c2{};
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) {
        double v = 0.0;
        for (int u = 0; u < 2; ++u)
          for (int t = 0; t < 2; ++t) v += A[a][u] * c[static_cast<std::size_t>(2 * u + t)] * A[b][t];
        c2[static_cast<std::size_t>(2 * a + b)] = v;
      }
    c2[0] += up * up;
    m = m2;
    c = c2;
  }
  return {mu + m[0], c[0]};
}

}  // namespace

TEMPLATE_TEST_CASE("the first RES multistep step is the DDIM/Euler step", "[samplers][res]", float, double) {
  using T = TestType;
  const std::size_t n = 29;
  test::normal_source src(8);
  std::vector<T> x(n), d(n), prev(n, T{0});
  for (auto& v : x) v = static_cast<T>(2.0 * src.normal());
  for (auto& v : d) v = static_cast<T>(src.normal());
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-6;  // a few roundings of the coefficients
  // VP, sigma-space and flow levels; the deterministic step against euler_step.
  const std::vector<diffusion::level_step> steps = {
      {diffusion::noise_level::preserving(3.0), diffusion::noise_level::preserving(1.2)},
      {diffusion::noise_level::exploding(14.0), diffusion::noise_level::exploding(9.5)},
      {diffusion::noise_level::flow(0.8), diffusion::noise_level::flow(0.6)},
      {diffusion::noise_level::flow(1.0), diffusion::noise_level::flow(0.9)},  // from alpha = 0
      {diffusion::noise_level::exploding(0.5), diffusion::noise_level::exploding(0.0)}};
  for (const auto& l : steps) {
    std::vector<T> a = x, b = x;
    diffusion::res_multistep_state<T> st{prev};
    diffusion::res_multistep_step<T>(l, d, a, st);
    diffusion::euler_step<T>(l, d, b);
    INFO("from (" << l.from.alpha << ", " << l.from.sigma << ") to (" << l.to.alpha << ", " << l.to.sigma << ")");
    for (std::size_t k = 0; k < n; ++k)
      CHECK(std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])) <= tol * (1.0 + std::abs(static_cast<double>(b[k]))));
    CHECK(prev == d);  // the history holds D
    CHECK(st.has_previous);
  }
  // The ancestral first step in sigma-space is the Euler-ancestral step with the same normals.
  std::vector<T> z(n);
  for (auto& v : z) v = static_cast<T>(src.normal());
  const diffusion::sigma_step s{7.0, 3.0};
  std::vector<T> a = x, b = x;
  diffusion::res_multistep_state<T> st{prev};
  diffusion::res_multistep_step<T>(diffusion::as_level_step(s), d, a, st, std::span<const T>(z), {.eta = 0.8, .s_noise = 0.9});
  diffusion::euler_ancestral_step<T>(s, d, b, std::span<const T>(z), {.eta = 0.8, .s_noise = 0.9});
  for (std::size_t k = 0; k < n; ++k)
      CHECK(std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])) <= tol * (1.0 + std::abs(static_cast<double>(b[k]))));
}

TEST_CASE("RES multistep converges at order 2 to the exact flow map; DPM-Solver++(2M) beside it",
          "[samplers][res]") {
  // RES and DPM-Solver++(2M) differ only in the weight of D - D_prev: h^2 phi_2(-h)/h_prev against
  // h(1 - e^{-h})/(2 h_prev), equal to O(h^3) (h phi_2(-h) = h/2 - h^2/6 + ..., (1 - e^{-h})/2 = h/2 -
  // h^2/4 + ...): both second order, and the distance between their results falls at order 2 too.
  test::test_noise noise{0};
  auto res = [&](gauss_model& D, std::vector<double>& x, const std::vector<double>& sig) {
    diffusion::res_multistep_sample(D, x, 1, noise, sig, {.draw_initial_noise = false});
  };
  auto dpm = [&](gauss_model& D, std::vector<double>& x, const std::vector<double>& sig) {
    diffusion::dpmpp_2m_sample(D, x, 1, noise, sig, {.draw_initial_noise = false});
  };
  const std::vector<std::size_t> Ns = {16, 32, 64, 128, 256};
  std::vector<double> e_res, e_dpm, dist;
  for (std::size_t N : Ns) {
    e_res.push_back(flow_map_error(res, N));
    e_dpm.push_back(flow_map_error(dpm, N));
    // The distance between the two at N steps.
    diffusion::gaussian_data g({0.2, -0.5, 1.0}, {0.5, 0.1, 1.5});
    gauss_model D(g);
    auto sig = diffusion::karras_sigmas(N, 0.02, 80.0);
    sig.pop_back();
    std::vector<double> a = {60.0, -40.0, 90.0}, b = a;
    res(D, a, sig);
    dpm(D, b, sig);
    double d = 0;
    for (std::size_t k = 0; k < 3; ++k) d = std::max(d, std::abs(a[k] - b[k]));
    dist.push_back(d);
  }
  for (std::size_t i = 2; i < Ns.size(); ++i) {
    const double o_res = std::log2(e_res[i - 1] / e_res[i]), o_dpm = std::log2(e_dpm[i - 1] / e_dpm[i]),
                 o_dist = std::log2(dist[i - 1] / dist[i]);
    INFO("N = " << Ns[i] << ": RES error " << e_res[i] << " (order " << o_res << "), DPM-Solver++(2M) " << e_dpm[i]
                << " (order " << o_dpm << "), distance " << dist[i] << " (order " << o_dist << ")");
    CHECK(o_res > 1.8);
    CHECK(o_res < 2.3);
    CHECK(o_dpm > 1.8);
    CHECK(o_dpm < 2.3);
    CHECK(o_dist > 1.8);
    CHECK(o_dist < 2.3);
    WARN("N = " << Ns[i] << ": RES multistep max error " << e_res[i] << " (order " << o_res << "), DPM-Solver++(2M) "
                << e_dpm[i] << " (order " << o_dpm << "), distance " << dist[i]);
  }
}

namespace {
struct flow_gauss {
  double mu, s;
  [[nodiscard]] double mean(double sig) const { return (1.0 - sig) * mu; }
  [[nodiscard]] double var(double sig) const { return (1.0 - sig) * (1.0 - sig) * s * s + sig * sig; }
  [[nodiscard]] double velocity(double sig, double x) const {
    return -mu + (sig - (1.0 - sig) * s * s) / var(sig) * (x - mean(sig));
  }
};
}  // namespace

TEST_CASE("RES multistep on rectified-flow states converges at order 2", "[samplers][res][flow]") {
  const flow_gauss g{0.4, 0.6};
  auto model = diffusion::make_denoiser(diffusion::prediction::flow_velocity,
                                        [g](const diffusion::denoiser_input<double>& in, std::span<double> out) {
                                          const std::size_t n = in.row_size();
                                          for (std::size_t r = 0; r < in.rows(); ++r) {
                                            const double sig = in.sigma[r] / (1.0 + in.sigma[r]);  // sigma: the ratio
                                            for (std::size_t k = 0; k < n; ++k) out[r * n + k] = g.velocity(sig, in.x[r * n + k]);
                                          }
                                        });
  diffusion::sigma_space_model D(model, diffusion::flow_time{1000});
  const std::vector<double> x_start = {-1.2, 0.3, 0.9, 2.1};
  const double a = 0.999, b = 0.001, la = std::log((1 - a) / a), lb = std::log((1 - b) / b);
  auto error = [&](std::size_t n) {
    std::vector<double> sg(n + 1);
    for (std::size_t i = 0; i <= n; ++i)
      sg[i] = 1.0 / (1.0 + std::exp(la + (lb - la) * static_cast<double>(i) / static_cast<double>(n)));
    std::vector<double> x = x_start;
    test::test_noise noise{1};
    diffusion::res_multistep_sample(D, x, 4, noise, sg, {.draw_initial_noise = false});
    double worst = 0;
    for (std::size_t k = 0; k < x.size(); ++k)
      worst = std::max(worst, std::abs(x[k] - (g.mean(b) + std::sqrt(g.var(b) / g.var(a)) * (x_start[k] - g.mean(a)))));
    return worst;
  };
  for (std::size_t n : {32u, 64u, 128u}) {
    const double e1 = error(n), e2 = error(2 * n), order = std::log2(e1 / e2);
    INFO("N = " << 2 * n << ": error " << e2 << ", order " << order);
    CHECK(order > 1.8);
    CHECK(order < 2.3);
    WARN("RES multistep on a flow state, N = " << 2 * n << ": max error " << e2 << ", order " << order);
  }
}

TEMPLATE_TEST_CASE("RES multistep steps in your own loop are the sample loops bit for bit", "[samplers][res]", float,
                   double) {
  using T = TestType;
  diffusion::gaussian_data g({0.3, -0.2, 0.6}, {0.5, 1.1, 0.2});
  gauss_model D(g);
  const diffusion::philox_normal noise(11);
  const auto sig = diffusion::karras_sigmas(12, 0.03, 20.0);
  const std::size_t n = 3;
  std::vector<T> start(n);
  test::normal_source src(4);
  for (auto& v : start) v = static_cast<T>(20.0 * src.normal());
  for (const double eta : {0.0, 0.6}) {
    std::vector<T> a = start, b = start, den(n), prev(n);
    diffusion::res_multistep_state<T> st{prev};
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
      const std::vector<double> ss{sig[i]};
      D(std::span<const T>(a), std::span<const double>(ss), std::span<T>(den), static_cast<const diffusion::no_context*>(nullptr));
      const auto l = diffusion::as_level_step({sig[i], sig[i + 1]});
      if (eta > 0.0 && sig[i + 1] > 0.0)
        diffusion::res_multistep_step<T>(l, den, a, st, diffusion::step_stream(noise, i), {.eta = eta});
      else
        diffusion::res_multistep_step<T>(l, den, a, st, diffusion::kernels::no_noise{}, {.eta = eta});
    }
    if (eta > 0.0)
      diffusion::res_multistep_ancestral_sample(D, b, 1, noise, sig, {.eta = eta, .draw_initial_noise = false});
    else
      diffusion::res_multistep_sample(D, b, 1, noise, sig, {.draw_initial_noise = false});
    INFO("eta " << eta);
    CHECK(a == b);
  }
}

TEST_CASE("ancestral RES multistep draws the exact law of its Gaussian chain, which tends to the data law",
          "[mc-law][samplers][res][montecarlo]") {
  const double mu = 0.25, sd = 0.6;
  diffusion::gaussian_data g({mu}, {sd});
  gauss_model D(g);
  const diffusion::philox_normal noise(2025);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  constexpr std::size_t N = 100000;
  // 100000 rows, 5 standard errors: false-failure probability < 6e-7 per check (4 checks).
  for (const double eta : {1.0, 0.5}) {
    std::vector<double> x(N);
    diffusion::res_multistep_ancestral_sample(D, x, N, noise, sig, {.eta = eta});
    const chain_law law = exact_res_chain(sig, mu, sd, eta);
    double em = 0, ev = 0;
    for (double xi : x) em += xi;
    em /= N;
    for (double xi : x) ev += (xi - em) * (xi - em);
    ev /= N - 1;
    INFO("eta " << eta << ": mean " << em << " vs " << law.mean << ", variance " << ev << " vs " << law.var);
    CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
    CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
    WARN("ancestral RES eta " << eta << " (30 steps): law N(" << law.mean << ", " << law.var << "), sampled N(" << em
                              << ", " << ev << "), data N(" << mu << ", " << sd * sd << ")");
  }
  // The exact law tends to the data's N(mu, sd^2) as the steps refine.
  double last_err = std::numeric_limits<double>::infinity();
  for (const std::size_t steps : {std::size_t{25}, std::size_t{50}, std::size_t{100}, std::size_t{200}, std::size_t{400}}) {
    const chain_law law = exact_res_chain(diffusion::karras_sigmas(steps, 0.002, 80.0), mu, sd, 1.0);
    const double err = std::abs(law.var - sd * sd) + std::abs(law.mean - mu);
    INFO(steps << " steps: law N(" << law.mean << ", " << law.var << ")");
    CHECK(err < last_err);
    if (steps == 400) CHECK(err < 2e-3);
    WARN("ancestral RES eta 1, " << steps << " steps: |var - sd^2| + |mean - mu| = " << err);
    last_err = err;
  }
}

TEST_CASE("RES multistep validates its step, options and noise", "[samplers][res][errors]") {
  std::vector<double> x(4, 1.0), d(4, 0.5), prev(4), z(4, 0.1), small(3);
  diffusion::res_multistep_state<double> st{prev};
  const auto l = diffusion::as_level_step({2.0, 1.0});
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(l, d, x, st, diffusion::kernels::no_noise{}, {.eta = 1.0}),
                    Contains("diffusion::res_multistep_step") && Contains("no noise was passed"));
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(l, d, x, st, std::span<const double>(z), {.eta = 1.5}),
                    Contains("eta = 1.5") && Contains("[0, 1]"));
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(l, d, x, st, std::span<const double>(z), {.s_noise = -1.0}),
                    Contains("s_noise = -1"));
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(diffusion::as_level_step({1.0, 2.0}), d, x, st),
                    Contains("must decrease"));
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(l, small, x, st), Contains("denoised"));
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(l, d, x, st, std::span<const double>(small), {.eta = 1.0}),
                    Contains("noise"));
  diffusion::res_multistep_state<double> bad{small};
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>(l, d, x, bad), Contains("state.previous_denoised"));
  CHECK_THROWS_WITH(diffusion::res_multistep_step<double>({diffusion::noise_level::exploding(0.0), diffusion::noise_level::exploding(0.0)}, d, x, st),
                    Contains("sigma > 0"));
  CHECK_FALSE(st.has_previous);  // nothing above changed the history
  // A step whose result overflows float is a domain_error naming the step.
  std::vector<float> xf(2, 3e38f), df(2, 3e38f), pf(2);
  diffusion::res_multistep_state<float> sf{pf};
  CHECK_THROWS_WITH(diffusion::res_multistep_step<float>({diffusion::noise_level::exploding(1.0), diffusion::noise_level::general(1e10, 1.0)}, df, xf, sf),
                    Contains("diffusion::res_multistep_step") && Contains("non-finite"));
}

// ---------------------------------------------------------------------------------------
// ER-SDE
// ---------------------------------------------------------------------------------------

namespace {

double default_phi(double s) { return s * (std::exp(std::pow(s, 0.3)) + 10.0); }

// The stage integrals c2 = int_{st}^{ss} (phi(st)/phi(u) - 1) du and c3 = int (u - ss)(phi(st)/phi(u) - 1) du
// by composite Simpson in v = log u (4000 intervals), written here independently of the library.
template <class Phi>
std::pair<double, double> simpson_integrals(Phi phi, double ss, double st) {
  const std::size_t m = 4000;
  const double a = std::log(st), b = std::log(ss), hv = (b - a) / static_cast<double>(m), pt = phi(st);
  double c2 = 0, c3 = 0;
  for (std::size_t j = 0; j <= m; ++j) {
    const double u = std::exp(a + hv * static_cast<double>(j));
    const double w = (j == 0 || j == m) ? 1.0 : (j % 2 == 1 ? 4.0 : 2.0);
    const double f = (pt / phi(u) - 1.0) * u;
    c2 += w * f;
    c3 += w * f * (u - ss);
  }
  return {c2 * hv / 3.0, c3 * hv / 3.0};
}

// The exact law of y = x - mu after ER-SDE on 1-D data N(mu, sd^2) in sigma-space (varsigma = sigma): with
// D - mu = k y the step is linear in (y, p1, p2) (p_j = D_{-j} - mu): y' = r y + (1 - r) k y + c2 D1 +
// c3' D2 + sqrt(st^2 - ss^2 r^2) z, D1 = (k y - p1)/(ss - s1), D2 = (D1 - (p1 - p2)/(s1 - s2))/(ss - s2),
// c3' = 2 c3 + (ss - s1) c2 (reference: 2 c3); x' = D at sigma = 0.
template <class Phi>
chain_law exact_er_chain(const std::vector<double>& sig, double mu, double sd, Phi phi, std::size_t max_stage,
                         bool reference) {
  std::array<double, 3> m{-mu, 0.0, 0.0};
  std::array<std::array<double, 3>, 3> c{};
  c[0][0] = sig[0] * sig[0];
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const double ss = sig[i], st = sig[i + 1], k = sd * sd / (sd * sd + ss * ss);
    std::array<std::array<double, 3>, 3> A{};
    double nv = 0;
    A[1][0] = k;  // p1' = D - mu
    A[2][1] = 1;  // p2' = p1
    if (st == 0.0) {
      A[0][0] = k;
    } else {
      const std::size_t stage = std::min(i + 1, max_stage);
      const double r = phi(st) / phi(ss);
      A[0][0] = r + (1 - r) * k;
      nv = st * st - ss * ss * r * r;
      if (stage >= 2) {
        const auto [c2, c3] = simpson_integrals(phi, ss, st);
        const double s1 = sig[i - 1];
        // D1 = (k y - p1)/(ss - s1)
        const std::array<double, 3> D1{k / (ss - s1), -1 / (ss - s1), 0.0};
        for (std::size_t j = 0; j < 3; ++j) A[0][j] += c2 * D1[j];
        if (stage == 3) {
          const double s2 = sig[i - 2], cc = reference ? 2 * c3 : 2 * c3 + (ss - s1) * c2;
          const std::array<double, 3> Dold{0.0, 1 / (s1 - s2), -1 / (s1 - s2)};
          for (std::size_t j = 0; j < 3; ++j) A[0][j] += cc * (D1[j] - Dold[j]) / (ss - s2);
        }
      }
    }
    std::array<double, 3> m2{};
    std::array<std::array<double, 3>, 3> c2m{};
    for (std::size_t a = 0; a < 3; ++a)
      for (std::size_t u = 0; u < 3; ++u) m2[a] += A[a][u] * m[u];
    for (std::size_t a = 0; a < 3; ++a)
      for (std::size_t b = 0; b < 3; ++b)
        for (std::size_t u = 0; u < 3; ++u)
          for (std::size_t t = 0; t < 3; ++t) c2m[a][b] += A[a][u] * c[u][t] * A[b][t];
    c2m[0][0] += nv;
    m = m2;
    c = c2m;
  }
  return {mu + m[0], c[0][0]};
}

}  // namespace

TEST_CASE("the ER-SDE stage integrals match their closed forms for phi(s) = s and a Simpson rule for the default phi",
          "[samplers][er_sde]") {
  const diffusion::er_sde_ode_noise_scale ode;
  for (const auto& [ss, st] : std::vector<std::pair<double, double>>{{80.0, 40.0}, {1.0, 0.9}, {0.03, 0.002}, {5.0, 1e-3}}) {
    const auto [c2, c3] = diffusion::detail::er_sde_integrals("test", ode, ss, st, st);
    const double L = std::log(ss / st);
    const double e2 = st * L - (ss - st);  // int (st/u - 1) du
    const double e3 = st * (ss - st) - st * ss * L - (ss * ss - st * st) / 2 + ss * (ss - st);
    INFO("s = " << ss << " -> " << st);
    CHECK(std::abs(c2 - e2) <= 1e-13 * std::abs(e2) + 1e-15 * ss);
    CHECK(std::abs(c3 - e3) <= 1e-13 * std::abs(e3) + 1e-15 * ss * ss);
    const diffusion::er_sde_default_noise_scale def;
    const auto [d2, d3] = diffusion::detail::er_sde_integrals("test", def, ss, st, def(st));
    const auto [r2, r3] = simpson_integrals(default_phi, ss, st);
    // Simpson with 4000 intervals: relative error far below 1e-9 on these smooth integrands.
    CHECK(std::abs(d2 - r2) <= 1e-9 * std::abs(r2));
    CHECK(std::abs(d3 - r3) <= 1e-9 * std::abs(r3));
  }
}

TEST_CASE("ER-SDE with phi(s) = s is an ODE solver of order 1, 2, 3 by stage; the references' stage 3 is order 2",
          "[samplers][er_sde]") {
  test::test_noise noise{0};
  struct variant {
    std::size_t stage;
    bool reference;
    double order;
  };
  for (const variant v : {variant{1, false, 1.0}, variant{2, false, 2.0}, variant{3, false, 3.0}, variant{3, true, 2.0}}) {
    auto run = [&](gauss_model& D, std::vector<double>& x, const std::vector<double>& sig) {
      diffusion::er_sde_sample(D, x, 1, noise, sig,
                               diffusion::er_sde_options<diffusion::er_sde_ode_noise_scale>{
                                   .max_stage = v.stage, .reference_stage3 = v.reference, .draw_initial_noise = false});
    };
    // The first steps run at stages 1 and 2, whose local errors (O(h^2), O(h^3) in varsigma) limit the
    // global order of stage 3 to 2 as N grows; before that term dominates (N <= 128 here) stage 3 falls
    // faster than h^3. So: stage 1, 2 and the references' stage 3 at N = 128 -> 256, stage 3 over 32 -> 128.
    const std::vector<std::size_t> Ns = {32, 64, 128, 256};
    std::vector<double> e;
    for (std::size_t N : Ns) e.push_back(flow_map_error(run, N));
    for (std::size_t i = 1; i < Ns.size(); ++i)
      WARN("ER-SDE ODE limit stage " << v.stage << (v.reference ? " (reference)" : "") << ", N = " << Ns[i]
                                     << ": max error " << e[i] << ", order " << std::log2(e[i - 1] / e[i]));
    const bool pre = v.stage == 3 && !v.reference;
    const double o = pre ? std::log2(e[0] / e[2]) / 2 : std::log2(e[2] / e[3]);
    INFO("stage " << v.stage << (v.reference ? " (reference)" : "") << ": order " << o);
    CHECK(o > v.order - 0.2);
    if (!pre) CHECK(o < v.order + 0.3);
  }
  // Stage 1 is the DDIM/Euler step.
  std::vector<double> a = {3.0, -1.0}, b = a, d = {0.5, 0.2};
  diffusion::er_sde_state<double> st{};
  diffusion::er_sde_step<double>(diffusion::as_level_step({2.0, 1.3}), d, a, st, diffusion::kernels::no_noise{},
                                 diffusion::er_sde_options<diffusion::er_sde_ode_noise_scale>{.max_stage = 1});
  diffusion::euler_step<double>(diffusion::as_level_step({2.0, 1.3}), d, b);
  for (std::size_t k = 0; k < 2; ++k) CHECK(std::abs(a[k] - b[k]) <= 1e-12 * (1 + std::abs(b[k])));
}

TEST_CASE("ER-SDE draws the exact law of its Gaussian chain, which tends to the data law",
          "[mc-law][samplers][er_sde][montecarlo]") {
  const double mu = 0.25, sd = 0.6;
  diffusion::gaussian_data g({mu}, {sd});
  gauss_model D(g);
  const diffusion::philox_normal noise(77);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  constexpr std::size_t N = 100000;
  // 100000 rows, 5 standard errors: false-failure probability < 6e-7 per check (6 checks).
  for (const std::size_t stage : {std::size_t{1}, std::size_t{2}, std::size_t{3}}) {
    std::vector<double> x(N);
    diffusion::er_sde_sample(D, x, N, noise, sig, {.max_stage = stage});
    const chain_law law = exact_er_chain(sig, mu, sd, default_phi, stage, false);
    double em = 0, ev = 0;
    for (double xi : x) em += xi;
    em /= N;
    for (double xi : x) ev += (xi - em) * (xi - em);
    ev /= N - 1;
    INFO("stage " << stage << ": mean " << em << " vs " << law.mean << ", variance " << ev << " vs " << law.var);
    CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
    CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
    WARN("ER-SDE stage " << stage << " (30 steps): law N(" << law.mean << ", " << law.var << "), sampled N(" << em << ", "
                         << ev << "), data N(" << mu << ", " << sd * sd << ")");
  }
  // As the steps refine the exact law converges (to the law of the reverse SDE from the prior
  // N(0, sigma_max^2) down to sigma_min, then D), and that limit is the data law up to the prior's
  // mismatch: its mean is mu - 4.56e-4 here (bounded by the ODE's |mu| sd/sigma_max = 1.9e-3), its variance
  // sd^2 - 5e-6 (the last denoise at sigma_min alone removes sd^2 sigma_min^2/(sd^2 + sigma_min^2) = 4e-6).
  for (const bool reference : {false, true}) {
    const chain_law lim = exact_er_chain(diffusion::karras_sigmas(1600, 0.002, 80.0), mu, sd, default_phi, 3, reference);
    CHECK(std::abs(lim.mean - mu) < std::abs(mu) * sd / 80.0);
    CHECK(std::abs(lim.var - sd * sd) < 1e-5);
    double last_err = std::numeric_limits<double>::infinity();
    for (const std::size_t steps : {std::size_t{25}, std::size_t{50}, std::size_t{100}, std::size_t{200}, std::size_t{400}}) {
      const chain_law law = exact_er_chain(diffusion::karras_sigmas(steps, 0.002, 80.0), mu, sd, default_phi, 3, reference);
      const double err = std::abs(law.var - lim.var) + std::abs(law.mean - lim.mean);
      INFO(steps << " steps: law N(" << law.mean << ", " << law.var << "), limit N(" << lim.mean << ", " << lim.var << ")");
      CHECK(err < last_err);
      WARN("ER-SDE stage 3" << (reference ? " (reference)" : "") << ", " << steps
                            << " steps: distance to the 1600-step law " << err << "; to the data law "
                            << std::abs(law.var - sd * sd) + std::abs(law.mean - mu));
      last_err = err;
    }
  }
}

TEST_CASE("ER-SDE validates its step, options, noise-scale function and noise", "[samplers][er_sde][errors]") {
  std::vector<double> x(4, 1.0), d(4, 0.5), p0(4), p1(4), z(4, 0.1), small(3);
  diffusion::er_sde_state<double> st{};
  st.previous_denoised = {p0, p1};
  const auto l = diffusion::as_level_step({2.0, 1.0});
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, st, diffusion::kernels::no_noise{}, diffusion::er_sde_options<>{}),
                    Contains("diffusion::er_sde_step") && Contains("no noise was passed"));
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, st, std::span<const double>(z), diffusion::er_sde_options<>{.max_stage = 4}),
                    Contains("max_stage = 4") && Contains("[1, 3]"));
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, st, std::span<const double>(z), diffusion::er_sde_options<>{.s_noise = -1.0}),
                    Contains("s_noise = -1"));
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(diffusion::as_level_step({1.0, 2.0}), d, x, st, std::span<const double>(z),
                                                   diffusion::er_sde_options<>{}),
                    Contains("must decrease"));
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>({diffusion::noise_level::flow(1.0), diffusion::noise_level::flow(0.5)}, d, x, st,
                                                   std::span<const double>(z), diffusion::er_sde_options<>{}),
                    Contains("alpha = 0"));
  struct shrinking {  // phi(s)/s decreasing: negative variance
    double operator()(double s) const { return std::sqrt(s); }
  };
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, st, std::span<const double>(z), diffusion::er_sde_options<shrinking>{}),
                    Contains("must not decrease"));
  struct negative {
    double operator()(double s) const { return -s; }
  };
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, st, std::span<const double>(z), diffusion::er_sde_options<negative>{}),
                    Contains("noise-scale function") && Contains("> 0"));
  diffusion::er_sde_state<double> bad{};
  bad.previous_denoised = {small, p1};
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, bad, std::span<const double>(z), diffusion::er_sde_options<>{}),
                    Contains("state.previous_denoised[0]"));
  CHECK_THROWS_WITH(diffusion::er_sde_step<double>(l, d, x, st, std::span<const double>(small), diffusion::er_sde_options<>{}),
                    Contains("noise"));
  CHECK(st.count == 0);
  diffusion::gaussian_data g1({0.0}, {1.0});
  gauss_model D(g1);
  test::test_noise tn{1};
  std::vector<double> one(1);
  CHECK_THROWS_WITH(diffusion::er_sde_sample(D, one, 1, tn, std::vector<double>{2.0, 1.0, 0.0}, {.max_stage = 0}),
                    Contains("diffusion::er_sde_sample") && Contains("max_stage = 0"));
}
