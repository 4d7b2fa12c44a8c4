// DPM-Solver++(2M) SDE (dpmpp_2m_sde_step / dpmpp_2m_sde_sample) and the heun correction of
// DPM-Solver++(2M) against exact targets on Gaussian data: the η = 0 identity with dpmpp_2m_step,
// convergence order 2 of the heun ODE solver to the exact flow map, the exact law of the
// linear-Gaussian chain (Monte Carlo) and its convergence to the data law as the steps refine,
// batch invariance, and errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_karras.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support.hpp"

using diffusion::dpm_solver_type;
using Catch::Matchers::Contains;

namespace {

// The law of y = x - mu after DPM-Solver++(2M) SDE on 1-D data N(mu, sd^2) in sigma-space, where
// D(x; s) - mu = k(s) (x - mu), k = sd^2/(sd^2 + s^2): every step is linear in (y, p), p the previous
// D - mu, plus independent noise, so (mean, covariance) of (y, p) follow exactly. Written from the
// step's formula (h = log(s/s'), E = 1 - exp(-(1 + eta) h), x' = (s'/s) e^{-eta h} x + E D_hat +
// s' sqrt(1 - e^{-2 eta h}) z), independently of the library's code.
struct chain_law {
  double mean, var;
};
chain_law exact_chain(const std::vector<double>& sig, double mu, double sd, double eta, dpm_solver_type solver) {
  std::array<double, 2> m{-mu, 0.0};                   // E[y], E[p]; y starts at sigma_0 z - mu
  std::array<double, 4> c{sig[0] * sig[0], 0.0, 0.0, 0.0};  // Cov of (y, p), row-major
  double h_prev = 0.0;
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const double s = sig[i], sn = sig[i + 1], k = sd * sd / (sd * sd + s * s);
    double A[2][2], noise_var = 0.0;
    if (sn == 0.0) {  // x' = D
      A[0][0] = k, A[0][1] = 0.0;
    } else {
      const double h = std::log(s / sn), he = (1.0 + eta) * h, E = 1.0 - std::exp(-he);
      const double cx = sn / s * std::exp(-eta * h);
      double w = 0.0;
      if (i > 0) {
        const double r = h_prev / h;
        w = solver == dpm_solver_type::midpoint ? 0.5 / r : (1.0 / E - 1.0 / he) / r;
      }
      A[0][0] = cx + E * (1.0 + w) * k;
      A[0][1] = -E * w;
      noise_var = sn * sn * (1.0 - std::exp(-2.0 * eta * h));
      h_prev = h;
    }
    A[1][0] = k, A[1][1] = 0.0;
    const std::array<double, 2> m2{A[0][0] * m[0] + A[0][1] * m[1], A[1][0] * m[0] + A[1][1] * m[1]};
    std::array<double, 4> c2{};
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) {
        double v = 0.0;
        for (int u = 0; u < 2; ++u)
          for (int t = 0; t < 2; ++t) v += A[a][u] * c[static_cast<std::size_t>(2 * u + t)] * A[b][t];
        c2[static_cast<std::size_t>(2 * a + b)] = v;
      }
    c2[0] += noise_var;
    m = m2;
    c = c2;
  }
  return {mu + m[0], c[0]};
}

}  // namespace

TEMPLATE_TEST_CASE("DPM++ 2M SDE at eta = 0 with the midpoint correction is dpmpp_2m_step bit for bit",
                   "[samplers][dpmpp_sde]", float, double) {
  using T = TestType;
  const std::size_t n = 37;
  test::normal_source src(5);
  std::vector<T> x_a(n), x_b(n), prev_a(n), prev_b(n);
  for (auto& v : x_a) v = static_cast<T>(3.0 * src.normal());
  x_b = x_a;
  diffusion::dpmpp_2m_state<T> sa{prev_a}, sb{prev_b};
  // VP levels (alpha^2 + sigma^2 = 1), a zero-SNR-free descending list, ending at sigma = 0.
  const std::vector<double> sig = {0.999, 0.95, 0.8, 0.55, 0.3, 0.1, 0.02, 0.0};
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    std::vector<T> d(n);
    for (auto& v : d) v = static_cast<T>(src.normal());
    const diffusion::level_step l{diffusion::noise_level::preserving(sig[i] / std::sqrt(1 - sig[i] * sig[i])),
                                  sig[i + 1] == 0.0 ? diffusion::noise_level::exploding(0.0)
                                                    : diffusion::noise_level::preserving(sig[i + 1] / std::sqrt(1 - sig[i + 1] * sig[i + 1]))};
    const bool first_order = i == 3;  // and one forced first-order step in the middle
    diffusion::dpmpp_2m_step<T>(l, d, x_a, sa, first_order);
    diffusion::dpmpp_2m_sde_step<T>(l, d, x_b, sb, diffusion::kernels::no_noise{}, {.eta = 0.0}, first_order);
    INFO("step " << i);
    REQUIRE(x_a == x_b);
    REQUIRE(prev_a == prev_b);
    CHECK(sa.previous_h == sb.previous_h);
  }
  // In sigma-space the two sample loops agree too.
  diffusion::gaussian_data g({0.3, -0.2}, {0.5, 1.1});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{3};
  const auto ks = diffusion::karras_sigmas(15, 0.02, 30.0);
  std::vector<T> a(2 * 9), b(2 * 9);
  diffusion::dpmpp_2m_sample(D, a, 9, noise, ks);
  diffusion::dpmpp_2m_sde_sample(D, b, 9, noise, ks, {.eta = 0.0});
  CHECK(a == b);
}

TEST_CASE("DPM-Solver++(2M) with the heun correction converges at order 2 to the exact flow map",
          "[samplers][dpmpp_sde]") {
  // As test_sampler_karras: data N(mu, s^2) per dimension, the flow x(sigma) - mu = (x0 - mu)
  // sqrt(s^2 + sigma^2)/sqrt(s^2 + sigma0^2). Both loops (dpmpp_2m_sample with solver_type heun, and
  // the 2M SDE loop at eta = 0) give the same states.
  const std::vector<double> mu = {0.2, -0.5, 1.0}, sd = {0.5, 0.1, 1.5};
  diffusion::gaussian_data g(mu, sd);
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{0};
  const double smin = 0.02, smax = 80.0;
  std::vector<double> errors;
  const std::vector<std::size_t> Ns = {16, 32, 64, 128, 256};
  for (std::size_t N : Ns) {
    auto sig = diffusion::karras_sigmas(N, smin, smax);
    sig.pop_back();
    std::vector<double> x = {60.0, -40.0, 90.0};
    const std::vector<double> x_start = x;
    std::vector<double> y = x;
    diffusion::dpmpp_2m_sample(D, x, 1, noise, sig, {.solver_type = dpm_solver_type::heun, .draw_initial_noise = false});
    diffusion::dpmpp_2m_sde_sample(D, y, 1, noise, sig,
                                   {.eta = 0.0, .solver_type = dpm_solver_type::heun, .draw_initial_noise = false});
    CHECK(x == y);
    double err = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      const double exact = mu[k] + (x_start[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                       std::sqrt(sd[k] * sd[k] + smax * smax);
      err = std::max(err, std::abs(x[k] - exact));
    }
    errors.push_back(err);
  }
  for (std::size_t i = 2; i < errors.size(); ++i) {
    const double observed = std::log2(errors[i - 1] / errors[i]);
    INFO("N = " << Ns[i] << ": error " << errors[i] << ", observed order " << observed);
    CHECK(observed > 1.8);
    CHECK(observed < 2.3);
    WARN("DPM-Solver++(2M) heun, N = " << Ns[i] << ": max error " << errors[i] << ", order " << observed);
  }
}

TEST_CASE("DPM++ 2M SDE draws the exact law of its Gaussian chain, which tends to the data law",
          "[mc-law][samplers][dpmpp_sde][montecarlo]") {
  const double mu = 0.25, sd = 0.6;
  diffusion::gaussian_data g({mu}, {sd});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(2024);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  constexpr std::size_t N = 100000;
  // 100000 rows, 5 standard errors: false-failure probability < 6e-7 per check (8 checks).
  for (const double eta : {1.0, 0.5})
    for (const auto solver : {dpm_solver_type::midpoint, dpm_solver_type::heun}) {
      std::vector<double> x(N);
      diffusion::dpmpp_2m_sde_sample(D, x, N, noise, sig, {.eta = eta, .solver_type = solver});
      const chain_law law = exact_chain(sig, mu, sd, eta, solver);
      double em = 0, ev = 0;
      for (double xi : x) em += xi;
      em /= N;
      for (double xi : x) ev += (xi - em) * (xi - em);
      ev /= N - 1;
      const char* name = solver == dpm_solver_type::midpoint ? "midpoint" : "heun";
      INFO("eta " << eta << ", " << name << ": mean " << em << " vs " << law.mean << ", variance " << ev << " vs " << law.var);
      CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
      CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
      WARN("DPM++ 2M SDE eta " << eta << " " << name << " (30 steps): law N(" << law.mean << ", " << law.var
                               << "), sampled N(" << em << ", " << ev << "), data N(" << mu << ", " << sd * sd << ")");
    }
  // The chain is a consistent discretization of the reverse SDE: its exact law tends to the data's
  // N(mu, sd^2) as the steps refine (first order in the step for eta > 0).
  for (const auto solver : {dpm_solver_type::midpoint, dpm_solver_type::heun}) {
    double last_err = std::numeric_limits<double>::infinity();
    for (const std::size_t steps : {std::size_t{25}, std::size_t{50}, std::size_t{100}, std::size_t{200}, std::size_t{400}}) {
      const chain_law law = exact_chain(diffusion::karras_sigmas(steps, 0.002, 80.0), mu, sd, 1.0, solver);
      const double err = std::abs(law.var - sd * sd) + std::abs(law.mean - mu);
      INFO(steps << " steps: law N(" << law.mean << ", " << law.var << ")");
      CHECK(err < last_err);
      if (steps == 400) CHECK(err < 2e-3);
      last_err = err;
    }
  }
}

TEST_CASE("DPM++ 2M SDE is batch-invariant: a row does not depend on the batch around it", "[samplers][dpmpp_sde]") {
  diffusion::gaussian_data g({0.1, -0.3, 0.7}, {0.4, 0.8, 0.2});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(99);
  const auto sig = diffusion::karras_sigmas(10, 0.03, 15.0);
  std::vector<float> batch(7 * 3);
  diffusion::dpmpp_2m_sde_sample(D, batch, 7, noise, sig, {.solver_type = dpm_solver_type::heun});
  for (std::uint64_t r = 0; r < 7; ++r) {
    std::vector<float> one(3);
    diffusion::dpmpp_2m_sde_sample(D, one, 1, noise, sig, {.solver_type = dpm_solver_type::heun, .first_sample = r});
    INFO("row " << r);
    CHECK(std::equal(one.begin(), one.end(), batch.begin() + static_cast<std::ptrdiff_t>(3 * r)));
  }
}

TEST_CASE("DPM++ 2M SDE validates its step, options and noise", "[samplers][dpmpp_sde][errors]") {
  std::vector<double> x(4, 1.0), d(4, 0.5), prev(4), short_prev(3);
  diffusion::dpmpp_2m_state<double> st{prev};
  const diffusion::philox_normal noise(1);
  const auto z = diffusion::step_stream(noise, 0);
  using diffusion::sigma_step;
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_step<double>(sigma_step{1.0, 0.5}, d, x, st, z, {.eta = 1.5}),
                    Contains("dpmpp_2m_sde_step") && Contains("eta = 1.5 is outside the allowed range [0, 1]"));
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_step<double>(sigma_step{1.0, 0.5}, d, x, st, z, {.s_noise = -1.0}),
                    Contains("s_noise = -1"));
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_step<double>(sigma_step{1.0, 0.5}, d, x, st, diffusion::kernels::no_noise{}),
                    Contains("adds noise") && Contains("no noise was passed"));
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_step<double>(sigma_step{1.0, 0.5}, d, x, st, z,
                                                         {.solver_type = static_cast<dpm_solver_type>(7)}),
                    Contains("solver_type = 7"));
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_step<double>(sigma_step{0.5, 1.0}, d, x, st, z), Contains("sigma"));
  diffusion::dpmpp_2m_state<double> bad{short_prev};
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_step<double>(sigma_step{1.0, 0.5}, d, x, bad, z),
                    Contains("state.previous_denoised"));
  CHECK(x == std::vector<double>(4, 1.0));  // nothing written by a refused step
  // No noise needed where the step adds none: eta = 0, s_noise = 0, or the last step to sigma = 0.
  diffusion::dpmpp_2m_sde_step<double>(sigma_step{1.0, 0.5}, d, x, st, diffusion::kernels::no_noise{}, {.s_noise = 0.0});
  diffusion::dpmpp_2m_sde_step<double>(sigma_step{0.5, 0.0}, d, x, st, diffusion::kernels::no_noise{});
  CHECK(x == d);  // to sigma = 0 the state is D
  // The loop names itself and the option.
  diffusion::gaussian_data g({0.0}, {1.0});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  std::vector<double> xs(2);
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_sample(D, xs, 2, noise, diffusion::karras_sigmas(4, 0.1, 10.0), {.eta = -0.1}),
                    Contains("dpmpp_2m_sde_sample") && Contains("eta = -0.1"));
}

namespace {
// The law of y = x - mu after DPM-Solver++(3M) SDE (sigma-space, 1-D data N(mu, sd^2)), written from
// k-diffusion's sample_dpmpp_3m_sde formulas (d1_0, d1_1, d1, d2, phi_2, phi_3; order 2 with the heun
// correction phi_2 d) with the d2 term doubled (the third-order form the library uses by default,
// docs/conventions.md), independently of the library: the state (y, p1, p2), p the previous D - mu.
chain_law exact_chain_3m(const std::vector<double>& sig, double mu, double sd, double eta) {
  std::array<double, 3> m{-mu, 0.0, 0.0};
  std::array<std::array<double, 3>, 3> c{};
  c[0][0] = sig[0] * sig[0];
  double h1 = 0.0, h2 = 0.0;
  std::size_t stored = 0;
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const double s = sig[i], sn = sig[i + 1], k = sd * sd / (sd * sd + s * s);
    double row[3] = {0, 0, 0}, nv = 0.0;  // y' = row . (y, p1, p2) + noise; D - mu = k y
    if (sn == 0.0) {
      row[0] = k;
    } else {
      const double h = std::log(s / sn), he = (1.0 + eta) * h, E = -std::expm1(-he);
      row[0] = std::exp(-he) + E * k;
      const double phi2 = std::expm1(-he) / he + 1.0;
      if (stored >= 2) {
        const double r0 = h1 / h, r1 = h2 / h, phi3 = 2.0 * (phi2 / he - 0.5);
        // d1_0 = (D - D1)/r0, d1_1 = (D1 - D2)/r1, d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1), d2 = (d1_0 - d1_1)/(r0 + r1)
        const double w = r0 / (r0 + r1), v = 1.0 / (r0 + r1);
        // x += phi2 d1 - phi3 d2, as coefficients of (D, D1, D2):
        const double cD = (phi2 * (1 + w) - phi3 * v) / r0;
        const double cD1 = -(phi2 * (1 + w) - phi3 * v) / r0 - (phi2 * w - phi3 * v) / r1;
        const double cD2 = (phi2 * w - phi3 * v) / r1;
        row[0] += cD * k;
        row[1] += cD1;
        row[2] += cD2;
      } else if (stored == 1) {
        const double r = h1 / h;
        row[0] += phi2 / r * k;
        row[1] -= phi2 / r;
      }
      nv = sn * sn * -std::expm1(-2.0 * eta * h);
      h2 = h1;
      h1 = h;
      stored = std::min<std::size_t>(stored + 1, 2);
    }
    const double A[3][3] = {{row[0], row[1], row[2]}, {k, 0, 0}, {0, 1, 0}};
    std::array<double, 3> m2{};
    std::array<std::array<double, 3>, 3> c2{};
    for (int a = 0; a < 3; ++a)
      for (int u = 0; u < 3; ++u) m2[static_cast<std::size_t>(a)] += A[a][u] * m[static_cast<std::size_t>(u)];
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b)
        for (int u = 0; u < 3; ++u)
          for (int t = 0; t < 3; ++t)
            c2[static_cast<std::size_t>(a)][static_cast<std::size_t>(b)] +=
                A[a][u] * c[static_cast<std::size_t>(u)][static_cast<std::size_t>(t)] * A[b][t];
    c2[0][0] += nv;
    m = m2;
    c = c2;
  }
  return {mu + m[0], c[0][0]};
}
}  // namespace

TEST_CASE("DPM++ 3M SDE capped at order 2 is the 2M SDE step; unused history is never read", "[samplers][dpmpp_sde]") {
  const std::size_t n = 19;
  test::normal_source src(8);
  const diffusion::philox_normal noise(5);
  for (const double eta : {0.0, 1.0})
    for (const auto solver : {dpm_solver_type::midpoint, dpm_solver_type::heun}) {
      std::vector<double> xa(n), xb, pa(n), qa(n), qb(n, std::numeric_limits<double>::quiet_NaN());
      for (auto& v : xa) v = 2.0 * src.normal();
      xb = xa;
      diffusion::dpmpp_2m_state<double> s2{pa};
      diffusion::dpmpp_3m_state<double> s3;
      s3.previous_denoised = {std::span<double>(qa), std::span<double>(qb)};
      std::fill(qa.begin(), qa.end(), std::numeric_limits<double>::quiet_NaN());
      const std::vector<double> sig = {14.0, 9.0, 5.0, 2.5, 1.0, 0.3, 0.0};
      for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
        std::vector<double> d(n);
        for (auto& v : d) v = src.normal();
        const diffusion::level_step l = diffusion::as_level_step({sig[i], sig[i + 1]});
        const diffusion::dpmpp_sde_options o{eta, 1.0, solver};
        if (eta > 0.0 && sig[i + 1] > 0.0) {
          diffusion::dpmpp_2m_sde_step<double>(l, d, xa, s2, diffusion::step_stream(noise, i), o);
          diffusion::dpmpp_3m_sde_step<double>(l, d, xb, s3, diffusion::step_stream(noise, i), o, 2);
        } else {
          diffusion::dpmpp_2m_sde_step<double>(l, d, xa, s2, diffusion::kernels::no_noise{}, o);
          diffusion::dpmpp_3m_sde_step<double>(l, d, xb, s3, diffusion::kernels::no_noise{}, o, 2);
        }
        INFO("eta " << eta << ", heun " << (solver == dpm_solver_type::heun) << ", step " << i);
        for (std::size_t e = 0; e < n; ++e) REQUIRE(xb[e] == Approx(xa[e]).epsilon(1e-12).margin(1e-13));
      }
    }
}

TEST_CASE("DPM-Solver++(3M) converges at order 3 to the exact flow map", "[samplers][dpmpp_sde]") {
  const std::vector<double> mu = {0.2, -0.5, 1.0}, sd = {0.5, 0.1, 1.5};
  diffusion::gaussian_data g(mu, sd);
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{0};
  const double smin = 0.02, smax = 80.0;
  std::vector<double> errors, ref_errors;
  const std::vector<std::size_t> Ns = {16, 32, 64, 128, 256};
  for (std::size_t N : Ns) {
    auto sig = diffusion::karras_sigmas(N, smin, smax);
    sig.pop_back();
    std::vector<double> x = {60.0, -40.0, 90.0};
    const std::vector<double> x_start = x;
    diffusion::dpmpp_3m_sde_sample(D, x, 1, noise, sig, {.eta = 0.0, .draw_initial_noise = false});
    // The references' form, step by step: second order.
    std::vector<double> y = x_start, p0(3), p1(3), den(3);
    diffusion::dpmpp_3m_state<double> st;
    st.previous_denoised = {std::span<double>(p0), std::span<double>(p1)};
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
      D(std::span<const double>(y), std::vector<double>{sig[i]}, std::span<double>(den));
      diffusion::dpmpp_3m_sde_step<double>(diffusion::as_level_step({sig[i], sig[i + 1]}), den, y, st,
                                           diffusion::kernels::no_noise{}, {.eta = 0.0, .reference_3m = true});
    }
    double ref_err = 0;
    for (std::size_t k = 0; k < 3; ++k)
      ref_err = std::max(ref_err, std::abs(y[k] - (mu[k] + (x_start[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                                                  std::sqrt(sd[k] * sd[k] + smax * smax))));
    ref_errors.push_back(ref_err);
    double err = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      const double exact = mu[k] + (x_start[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                       std::sqrt(sd[k] * sd[k] + smax * smax);
      err = std::max(err, std::abs(x[k] - exact));
    }
    errors.push_back(err);
  }
  // As for LMS: the lower-order start runs at the largest sigmas, where the flow is nearly linear.
  for (std::size_t i = 3; i < errors.size(); ++i) {
    const double observed = std::log2(errors[i - 1] / errors[i]);
    INFO("N = " << Ns[i] << ": error " << errors[i] << ", observed order " << observed);
    CHECK(observed > 2.8);
    CHECK(observed < 3.3);
    WARN("DPM-Solver++(3M), N = " << Ns[i] << ": max error " << errors[i] << ", order " << observed);
    const double ref_observed = std::log2(ref_errors[i - 1] / ref_errors[i]);
    CHECK(ref_observed < 2.2);  // the references' D2 term: second order
    CHECK(ref_errors[i] > 3 * errors[i]);
    WARN("DPM-Solver++(3M) as the references write it, N = " << Ns[i] << ": max error " << ref_errors[i] << ", order "
                                                               << ref_observed);
  }
}

TEST_CASE("DPM++ 3M SDE draws the exact law of its Gaussian chain, which tends to the data law",
          "[samplers][dpmpp_sde][montecarlo]") {
  const double mu = 0.25, sd = 0.6;
  diffusion::gaussian_data g({mu}, {sd});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(77);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  constexpr std::size_t N = 100000;
  std::vector<double> x(N);
  // k-diffusion's 3M SDE: heun at order 2.
  diffusion::dpmpp_3m_sde_sample(D, x, N, noise, sig, {.eta = 1.0, .solver_type = dpm_solver_type::heun});
  const chain_law law = exact_chain_3m(sig, mu, sd, 1.0);
  double em = 0, ev = 0;
  for (double xi : x) em += xi;
  em /= N;
  for (double xi : x) ev += (xi - em) * (xi - em);
  ev /= N - 1;
  INFO("mean " << em << " vs " << law.mean << ", variance " << ev << " vs " << law.var);
  CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
  CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
  WARN("DPM++ 3M SDE eta 1 (30 steps): law N(" << law.mean << ", " << law.var << "), sampled N(" << em << ", " << ev << ")");
  // The bias of the 3M chain changes sign between 50 and 100 steps here, so the check is that it is
  // small at 400 steps and far below the 25-step one, not that it falls monotonically.
  const chain_law coarse = exact_chain_3m(diffusion::karras_sigmas(25, 0.002, 80.0), mu, sd, 1.0);
  const chain_law fine = exact_chain_3m(diffusion::karras_sigmas(400, 0.002, 80.0), mu, sd, 1.0);
  const double coarse_err = std::abs(coarse.var - sd * sd) + std::abs(coarse.mean - mu);
  const double fine_err = std::abs(fine.var - sd * sd) + std::abs(fine.mean - mu);
  INFO("25 steps: N(" << coarse.mean << ", " << coarse.var << "), 400 steps: N(" << fine.mean << ", " << fine.var << ")");
  CHECK(fine_err < 2e-3);
  CHECK(fine_err < 0.5 * coarse_err);
}

// ---------------------------------------------------------------------------------------------
// Brownian-tree noise (noise/brownian_tree.hpp): the same chains, and one Brownian path for every
// step count.

TEST_CASE("DPM++ 2M and 3M SDE driven by a Brownian tree draw the exact law of their Gaussian chain",
          "[mc-law][samplers][dpmpp_sde][brownian][montecarlo]") {
  // The tree's standardized increments over the disjoint steps are independent N(0, 1) (up to the
  // leaf deficit, below 1e-9 here), so the chain's law is the one with independent noise.
  const double mu = 0.25, sd = 0.6;
  constexpr std::size_t dims = 20, rows = 5000 / test::montecarlo_divisor, N = dims * rows;  // every (row, dimension) independent
  diffusion::gaussian_data g(std::vector<double>(dims, mu), std::vector<double>(dims, sd));
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(2025);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  const diffusion::brownian_tree tree(2026, 0.01, 20.0);
  // 5 standard errors: false-failure probability < 6e-7 per check (4 checks).
  for (const int order : {2, 3}) {
    std::vector<double> x(N);
    if (order == 2)
      diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, tree, sig, {.eta = 1.0});
    else
      diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, tree, sig, {.eta = 1.0, .solver_type = dpm_solver_type::heun});
    const chain_law law = order == 2 ? exact_chain(sig, mu, sd, 1.0, dpm_solver_type::midpoint)
                                     : exact_chain_3m(sig, mu, sd, 1.0);
    double em = 0, ev = 0;
    for (double xi : x) em += xi;
    em /= N;
    for (double xi : x) ev += (xi - em) * (xi - em);
    ev /= N - 1;
    INFO(order << "M SDE with the tree: mean " << em << " vs " << law.mean << ", variance " << ev << " vs " << law.var);
    CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
    CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
    WARN(order << "M SDE eta 1 with a Brownian tree (30 steps): law N(" << law.mean << ", " << law.var << "), sampled N("
               << em << ", " << ev << ")");
  }
}

TEST_CASE("DPM++ 2M and 3M SDE with a Brownian tree: samples converge pathwise as the steps double", "[mc-law][samplers][dpmpp_sde][brownian]") {
  // With one Brownian path for every step count, the N-step samples of a row converge to the solution
  // of the reverse SDE along that path (strong convergence). On Gaussian data the reverse SDE has
  // additive noise, where Euler-Maruyama-type schemes have strong order 1 (Kloeden & Platen 1992,
  // Thm. 10.2.2), so the difference d_N = RMS(x_N - x_2N) of successive refinements should halve
  // when N doubles. The test asks for d_2N <= 0.7 d_N (strong order >= 0.5, the order of any
  // consistent scheme; measured ratios in docs/accuracy.md) at N = 50 and 100. With independent
  // noise per step, x_N and x_2N are nearly independent draws (RMS ~ sqrt(2) sd = 0.85) that do not
  // converge at all: the contrast shows the test can fail.
  const double mu = 0.25, sd = 0.6;
  constexpr std::size_t dims = 8, rows = 500 / test::montecarlo_divisor, N = dims * rows;
  diffusion::gaussian_data g(std::vector<double>(dims, mu), std::vector<double>(dims, sd));
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(12);
  const diffusion::brownian_tree tree(13, 0.002, 80.0);
  const auto rms = [](const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (std::size_t k = 0; k < a.size(); ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
    return std::sqrt(s / static_cast<double>(a.size()));
  };
  for (const int order : {2, 3}) {
    const auto run = [&](std::size_t steps, bool with_tree) {
      const auto sig = diffusion::karras_sigmas(steps, 0.002, 80.0);
      std::vector<double> x(N);
      const diffusion::karras_options opt{.eta = 1.0, .solver_type = dpm_solver_type::heun};
      if (order == 2 && with_tree) diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, tree, sig, opt);
      if (order == 2 && !with_tree) diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, sig, opt);
      if (order == 3 && with_tree) diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, tree, sig, opt);
      if (order == 3 && !with_tree) diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, sig, opt);
      return x;
    };
    const auto x50 = run(50, true), x100 = run(100, true), x200 = run(200, true), x400 = run(400, true);
    const double d50 = rms(x50, x100), d100 = rms(x100, x200), d200 = rms(x200, x400);
    const double independent = rms(run(50, false), run(100, false));
    INFO(order << "M SDE: d50 " << d50 << ", d100 " << d100 << ", d200 " << d200 << ", independent " << independent);
    CHECK(independent > 0.5);  // ~ sqrt(2) sd; its standard error at 4000 values is ~0.01
    CHECK(d50 < 0.1 * independent);
    CHECK(d100 <= 0.7 * d50);
    CHECK(d200 <= 0.7 * d100);
    WARN(order << "M SDE (heun), Karras sigma 0.002 to 80, data N(0.25, 0.36): d_N = RMS(x_N - x_2N) = " << d50 << ", "
               << d100 << ", " << d200 << " at N = 50, 100, 200; independent noise at N = 50: " << independent);
  }
}

TEST_CASE("DPM++ 2M SDE with a Brownian tree: batch invariance and errors", "[samplers][dpmpp_sde][brownian][errors]") {
  diffusion::gaussian_data g({0.1, -0.3, 0.7}, {0.4, 0.8, 0.2});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(99);
  const diffusion::brownian_tree tree(98, 0.03, 15.0);
  const auto sig = diffusion::karras_sigmas(10, 0.03, 15.0);
  std::vector<float> batch(7 * 3);
  diffusion::dpmpp_2m_sde_sample(D, batch, 7, noise, tree, sig, {.solver_type = dpm_solver_type::heun});
  for (std::uint64_t r = 0; r < 7; ++r) {
    std::vector<float> one(3);
    diffusion::dpmpp_2m_sde_sample(D, one, 1, noise, tree, sig, {.solver_type = dpm_solver_type::heun, .first_sample = r});
    INFO("row " << r);
    CHECK(std::equal(one.begin(), one.end(), batch.begin() + static_cast<std::ptrdiff_t>(3 * r)));
  }
  // A list reaching outside the tree is refused before any model call, x untouched.
  const diffusion::brownian_tree narrow(98, 0.05, 15.0);
  std::vector<float> x(6, 2.0f);
  CHECK_THROWS_WITH(diffusion::dpmpp_2m_sde_sample(D, x, 2, noise, narrow, sig),
                    Contains("dpmpp_2m_sde_sample") && Contains("sigmas[9] = 0.03") &&
                        Contains("outside the Brownian tree's interval [0.05, 15]"));
  CHECK_THROWS_WITH(diffusion::dpmpp_3m_sde_sample(D, x, 2, noise, narrow, sig), Contains("dpmpp_3m_sde_sample"));
  CHECK(x == std::vector<float>(6, 2.0f));
  // eta = 0 never reads the tree: the ODE sampler, bit for bit.
  std::vector<double> a(3), b(3);
  diffusion::dpmpp_2m_sde_sample(D, a, 1, noise, tree, sig, {.eta = 0.0});
  diffusion::dpmpp_2m_sde_sample(D, b, 1, noise, sig, {.eta = 0.0});
  CHECK(a == b);
}

TEMPLATE_TEST_CASE("dpmpp_2m_sde_step fed by brownian_tree::fill in your own loop is the loop with the tree, bit for bit",
                   "[samplers][dpmpp_sde][brownian]", float, double) {
  using T = TestType;
  // 37 elements: the SIMD bulk and the scalar tail both run (a 3-element row let GCC -O3 warn about
  // the never-taken bulk path reading past the 12-byte buffer).
  constexpr std::size_t n = 37;
  std::vector<double> means(n), sds(n);
  for (std::size_t k = 0; k < n; ++k) {
    means[k] = 0.6 * std::sin(1.7 * static_cast<double>(k));
    sds[k] = 0.2 + 0.9 * std::abs(std::cos(0.9 * static_cast<double>(k)));
  }
  diffusion::gaussian_data g(means, sds);
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal noise(11);
  const diffusion::brownian_tree tree(12, 0.03, 20.0);
  const auto sig = diffusion::karras_sigmas(12, 0.03, 20.0);
  std::vector<T> start(n);
  test::normal_source src(4);
  for (auto& v : start) v = static_cast<T>(20.0 * src.normal());
  std::vector<T> a = start, b = start, den(n), prev(n), z(n);
  diffusion::dpmpp_2m_state<T> st{prev};
  const diffusion::dpmpp_sde_options o{.eta = 0.9, .solver_type = dpm_solver_type::heun};
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const std::vector<double> level{sig[i]};
    D(std::span<const T>(a), std::span<const double>(level), std::span<T>(den),
      static_cast<const diffusion::no_context*>(nullptr));
    const diffusion::sigma_step s{sig[i], sig[i + 1]};
    if (s.sigma_next > 0.0) {
      tree.fill(std::span<T>(z), 1, s.sigma, s.sigma_next, 0);  // (W(sigma_next) - W(sigma))/sqrt(sigma - sigma_next)
      diffusion::dpmpp_2m_sde_step<T>(s, den, a, st, std::span<const T>(z), o);
    } else {
      diffusion::dpmpp_2m_sde_step<T>(s, den, a, st, diffusion::kernels::no_noise{}, o);
    }
  }
  diffusion::dpmpp_2m_sde_sample(D, b, 1, noise, tree, sig,
                                 {.eta = 0.9, .solver_type = dpm_solver_type::heun, .draw_initial_noise = false});
  CHECK(a == b);
}
