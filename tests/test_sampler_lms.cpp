// The linear multistep method in sigma (lms_coefficients, lms_step, lms_sample): the coefficients
// integrate every polynomial of degree < k exactly (exact targets), a full history integrates a
// cubic slope exactly, order 1 is Euler, the measured convergence orders on the exact flow map of
// Gaussian data, and errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_karras.hpp>

#include <array>
#include <cmath>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;

TEST_CASE("LMS coefficients integrate the polynomials of degree < k exactly", "[samplers][lms]") {
  test::normal_source src(11);
  for (int trial = 0; trial < 200; ++trial) {
    // A descending non-uniform grid: nodes s0 > s1 > s2 > s3, the step from s0 down to b < s0.
    std::array<double, 4> nodes{};
    double s = 0.5 + 20.0 * std::abs(src.normal());
    for (auto& v : nodes) {
      v = s;
      s += 0.05 + 3.0 * std::abs(src.normal());  // older levels are larger
    }
    const double b = trial % 5 == 0 ? 0.0 : nodes[0] * (0.2 + 0.7 * std::abs(std::sin(src.normal())));
    for (std::size_t k = 1; k <= 4; ++k) {
      const auto c = diffusion::lms_coefficients(std::span<const double>(nodes.data(), k), b);
      for (std::size_t j = k; j < 4; ++j) CHECK(c[j] == 0.0);
      for (std::size_t p = 0; p < k; ++p) {
        // sum_j c_j nodes_j^p = (b^{p+1} - s0^{p+1}) / (p + 1)
        double got = 0.0, scale = 0.0;
        for (std::size_t j = 0; j < k; ++j) {
          got += c[j] * std::pow(nodes[j], static_cast<double>(p));
          scale += std::abs(c[j] * std::pow(nodes[j], static_cast<double>(p)));
        }
        const double want = (std::pow(b, static_cast<double>(p + 1)) - std::pow(nodes[0], static_cast<double>(p + 1))) /
                            static_cast<double>(p + 1);
        INFO("trial " << trial << ", k = " << k << ", p = " << p);
        CHECK(std::abs(got - want) <= 64 * 0x1p-52 * scale);
      }
    }
  }
  // k = 1 is the Euler step: c_0 = sigma_next - sigma exactly.
  const std::array<double, 1> one{3.7};
  CHECK(diffusion::lms_coefficients(one, 1.1)[0] == 1.1 - 3.7);
}

TEST_CASE("a full LMS history integrates a cubic slope exactly", "[samplers][lms]") {
  // dx/dsigma = p(sigma), p cubic: the model D(x; sigma) = x - sigma p(sigma) has exactly that slope.
  auto p = [](double s) { return 0.3 - 0.2 * s + 0.05 * s * s - 0.004 * s * s * s; };
  auto P = [](double s) { return 0.3 * s - 0.1 * s * s + 0.05 / 3 * s * s * s - 0.001 * s * s * s * s; };
  const std::vector<double> sig = {9.0, 7.5, 5.0, 3.2, 2.0, 0.7};
  std::vector<double> x(1, 1.25), den(1);
  std::array<std::vector<double>, 4> slopes;
  diffusion::lms_state<double> st;
  for (std::size_t j = 0; j < 4; ++j) {
    slopes[j].resize(1);
    st.slopes[j] = slopes[j];
  }
  // Steps 0..2 fill the history (lower orders, not exact); from then on each step is exact.
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    den[0] = x[0] - sig[i] * p(sig[i]);
    const double before = x[0];
    diffusion::lms_step<double>({sig[i], sig[i + 1]}, den, x, st, 4);
    if (i >= 3) {
      INFO("step " << i);
      CHECK(x[0] - before == Approx(P(sig[i + 1]) - P(sig[i])).epsilon(1e-13));
    }
  }
  CHECK(st.count == 4);
  CHECK(st.sigmas[0] == sig[sig.size() - 2]);
}

TEST_CASE("LMS of order 1 is Euler, and the orders converge on the exact flow map", "[samplers][lms]") {
  const std::vector<double> mu = {0.2, -0.5, 1.0}, sd = {0.5, 0.1, 1.5};
  diffusion::gaussian_data g(mu, sd);
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{0};
  {
    const auto sig = diffusion::karras_sigmas(20, 0.02, 80.0);
    std::vector<double> a = {60.0, -40.0, 90.0}, b = a;
    diffusion::lms_sample(D, a, 1, noise, sig, {.order = 1, .draw_initial_noise = false});
    diffusion::euler_sample(D, b, 1, noise, sig, {.draw_initial_noise = false});
    for (std::size_t k = 0; k < 3; ++k) CHECK(a[k] == Approx(b[k]).epsilon(1e-12));
  }
  const double smin = 0.02, smax = 80.0;
  for (std::size_t order = 1; order <= 4; ++order) {
    std::vector<double> errors;
    const std::vector<std::size_t> Ns = {16, 32, 64, 128, 256};
    for (std::size_t N : Ns) {
      auto sig = diffusion::karras_sigmas(N, smin, smax);
      sig.pop_back();
      std::vector<double> x = {60.0, -40.0, 90.0};
      const std::vector<double> x_start = x;
      diffusion::lms_sample(D, x, 1, noise, sig, {.order = order, .draw_initial_noise = false});
      double err = 0;
      for (std::size_t k = 0; k < 3; ++k) {
        const double exact = mu[k] + (x_start[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                         std::sqrt(sd[k] * sd[k] + smax * smax);
        err = std::max(err, std::abs(x[k] - exact));
      }
      errors.push_back(err);
    }
    // Order k's local error is O(h^{k+1}) once the history is full. The first k - 1 steps run at
    // lower orders, but they are taken at the largest sigmas, where the flow is nearly linear in sigma
    // (x'' ~ s^2/sigma^3 ~ 1e-5 here), so their error stays below the main term for these N and the
    // observed order is k within 0.2 at N = 128 and 256 (asymptotically it would fall to 2).
    for (std::size_t i = 3; i < errors.size(); ++i) {
      const double observed = std::log2(errors[i - 1] / errors[i]);
      INFO("order " << order << ", N = " << Ns[i] << ": error " << errors[i] << ", observed order " << observed);
      CHECK(observed > static_cast<double>(order) - 0.2);
      CHECK(observed < static_cast<double>(order) + 0.3);
      WARN("LMS order " << order << ", N = " << Ns[i] << ": max error " << errors[i] << ", order " << observed);
    }
  }
}

TEST_CASE("LMS validates its step, order and history", "[samplers][lms][errors]") {
  std::vector<double> x(3, 1.0), d(3, 0.5), s0(3), s1(3), short_buf(2);
  diffusion::lms_state<double> st;
  st.slopes[0] = s0;
  st.slopes[1] = s1;
  using diffusion::sigma_step;
  CHECK_THROWS_WITH(diffusion::lms_step<double>(sigma_step{2.0, 1.0}, d, x, st, 5), Contains("lms_step") && Contains("order = 5"));
  CHECK_THROWS_WITH(diffusion::lms_step<double>(sigma_step{2.0, 1.0}, d, x, st, 4), Contains("state.slopes[2]"));
  CHECK_THROWS_WITH(diffusion::lms_step<double>(sigma_step{1.0, 2.0}, d, x, st, 2), Contains("sigma_next = 2 must be < sigma = 1"));
  diffusion::lms_step<double>(sigma_step{2.0, 1.0}, d, x, st, 2);
  CHECK_THROWS_WITH(diffusion::lms_step<double>(sigma_step{3.0, 1.5}, d, x, st, 2), Contains("below the previous step's 2"));
  CHECK_THROWS_WITH(diffusion::lms_coefficients(std::vector<double>{1.0, 1.0}, 0.5), Contains("both 1"));
  CHECK_THROWS_WITH(diffusion::lms_coefficients(std::vector<double>{}, 0.5), Contains("order 0"));
  diffusion::gaussian_data g({0.0}, {1.0});
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  test::test_noise noise{1};
  std::vector<double> xs(2);
  CHECK_THROWS_WITH(diffusion::lms_sample(D, xs, 2, noise, diffusion::karras_sigmas(4, 0.1, 10.0), {.order = 0}),
                    Contains("lms_sample") && Contains("order = 0"));
}
