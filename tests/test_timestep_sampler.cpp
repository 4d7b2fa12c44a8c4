// Training timestep samplers: frequencies by chi-square tests (critical values for a
// false-failure probability of 1e-6, computed with mpmath: 9 dof 44.811, 19 dof 63.677),
// improved DDPM's probabilities exactly, unbiasedness of the importance weights by Monte
// Carlo, reproducibility, errors.
#include <catch2/catch.hpp>

#include <diffusion/timestep_sampler.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

namespace {
double chi_square(const std::vector<std::size_t>& counts, const std::vector<double>& p, std::size_t n) {
  double x2 = 0;
  for (std::size_t t = 0; t < counts.size(); ++t) {
    const double e = p[t] * static_cast<double>(n);
    x2 += (static_cast<double>(counts[t]) - e) * (static_cast<double>(counts[t]) - e) / e;
  }
  return x2;
}
}  // namespace

TEST_CASE("the uniform sampler is uniform, reproducible and addressable", "[timestep_sampler]") {
  const diffusion::uniform_timestep_sampler s(10, 1234);
  constexpr std::size_t batch = 1000, steps = 100;
  std::vector<std::size_t> counts(10, 0), t(batch);
  std::vector<double> w(batch);
  for (std::uint64_t k = 0; k < steps; ++k) {
    s.sample(k, t, w);
    for (std::size_t i = 0; i < batch; ++i) {
      ++counts[t[i]];
      CHECK(w[i] == 1.0);
    }
  }
  CHECK(chi_square(counts, std::vector<double>(10, 0.1), batch * steps) < 44.811);
  std::vector<std::size_t> a(16), b(16);
  std::vector<double> wa(16), wb(16);
  s.sample(7, a, wa);
  s.sample(7, b, wb);
  CHECK(a == b);
  s.sample(8, b, wb);
  CHECK(a != b);
  // Draw i of a step does not depend on the batch size.
  std::vector<std::size_t> c(4);
  std::vector<double> wc(4);
  s.sample(7, c, wc);
  CHECK(std::equal(c.begin(), c.end(), a.begin()));
}

TEST_CASE("the loss-second-moment sampler follows improved DDPM", "[timestep_sampler]") {
  constexpr std::size_t T = 20, H = 10;
  diffusion::loss_second_moment_sampler s(T, 99, H, 0.001);
  CHECK_FALSE(s.warmed_up());
  for (double p : s.probabilities()) CHECK(p == Approx(1.0 / T));
  // Losses L_t = (t + 1) (1 + 0.1 j) for the j-th entry: sqrt(mean L^2) = (t + 1) m, m the
  // root mean square of 1 + 0.1 j over j < 10.
  for (std::size_t j = 0; j < H; ++j) {
    std::vector<std::size_t> ts(T);
    std::vector<double> ls(T);
    for (std::size_t t = 0; t < T; ++t) {
      ts[t] = t;
      ls[t] = static_cast<double>(t + 1) * (1.0 + 0.1 * static_cast<double>(j));
    }
    CHECK_FALSE(s.warmed_up());
    s.update(ts, ls);
  }
  REQUIRE(s.warmed_up());
  const auto p = s.probabilities();
  const double sum = static_cast<double>(T * (T + 1) / 2);
  for (std::size_t t = 0; t < T; ++t) CHECK(p[t] == Approx(0.999 * static_cast<double>(t + 1) / sum + 0.001 / T).epsilon(1e-12));

  // Frequencies follow p; weights are 1/(T p); E[w L] is the uniform mean of L (unbiased).
  constexpr std::size_t batch = 1000, steps = 100;
  std::vector<std::size_t> counts(T, 0), t(batch);
  std::vector<double> w(batch), wl;
  for (std::uint64_t k = 0; k < steps; ++k) {
    s.sample(k, t, w);
    for (std::size_t i = 0; i < batch; ++i) {
      ++counts[t[i]];
      CHECK(w[i] == Approx(1.0 / (T * p[t[i]])).epsilon(1e-12));
      wl.push_back(w[i] * static_cast<double>(t[i] + 1));  // a loss proportional to t + 1
    }
  }
  CHECK(chi_square(counts, p, batch * steps) < 63.677);
  const double n = static_cast<double>(wl.size());
  const double mean = std::accumulate(wl.begin(), wl.end(), 0.0) / n;
  double var = 0;
  for (double v : wl) var += (v - mean) * (v - mean);
  const double se = std::sqrt(var / (n - 1) / n);
  CHECK(std::abs(mean - (T + 1) / 2.0) <= 5 * se);  // false-failure probability < 6e-7

  // The history is a ring: after 10 more updates of t = 0 with loss 0, p_0 falls to the uniform floor.
  for (int j = 0; j < 10; ++j) s.update(std::vector<std::size_t>{0}, std::vector<double>{0.0});
  CHECK(s.probabilities()[0] == Approx(0.001 / T).epsilon(1e-12));
}

TEST_CASE("the multiply-shift bound equals the 128-bit product's high half", "[timestep_sampler]") {
  // Checked against long double-free arithmetic: (2^64 - 1) * n >> 64 = n - 1, and 2^63 * n >> 64 = n / 2.
  for (std::size_t n : {std::size_t{1}, std::size_t{10}, std::size_t{1000}, std::size_t{1} << 40, ~std::size_t{0}}) {
    CHECK(diffusion::detail::bounded(~std::uint64_t{0}, n) == n - 1);
    CHECK(diffusion::detail::bounded(std::uint64_t{1} << 63, n) == n / 2);
    CHECK(diffusion::detail::bounded(0, n) == 0);
  }
}

TEST_CASE("timestep samplers reject bad arguments", "[timestep_sampler][errors]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::uniform_timestep_sampler(0, 1), Contains("num_timesteps = 0"));
  CHECK_THROWS_WITH(diffusion::loss_second_moment_sampler(10, 1, 0), Contains("history = 0"));
  CHECK_THROWS_WITH(diffusion::loss_second_moment_sampler(10, 1, 10, 1.5), Contains("uniform_prob = 1.5"));
  diffusion::loss_second_moment_sampler s(10, 1);
  CHECK_THROWS_AS(s.update(std::vector<std::size_t>{10}, std::vector<double>{1.0}), std::out_of_range);
  CHECK_THROWS_WITH(s.update(std::vector<std::size_t>{1}, std::vector<double>{-1.0}), Contains("losses[0] = -1"));
  CHECK_THROWS_WITH(s.update(std::vector<std::size_t>{1}, std::vector<double>{std::nan("")}), Contains("losses[0] = nan"));
  CHECK_THROWS_WITH(s.update(std::vector<std::size_t>{1, 2}, std::vector<double>{1.0}), Contains("differs from losses.size() = 1"));
  std::vector<std::size_t> t(3);
  std::vector<double> w(2);
  CHECK_THROWS_WITH(s.sample(0, t, w), Contains("timesteps.size() = 3 differs from weights.size() = 2"));
}

TEST_CASE("the uniform sampler draws without a weights buffer", "[timestep_sampler]") {
  const diffusion::uniform_timestep_sampler s(1000, 77);
  std::vector<std::size_t> a(64), b(64);
  std::vector<double> w(64, 0.0);
  s.sample(3, a);
  s.sample(3, b, w);
  CHECK(a == b);  // the same draws as the form with weights
  for (double x : w) CHECK(x == 1.0);
  s.sample(3, std::span<std::size_t>{});  // an empty batch is fine
  for (std::size_t t : a) CHECK(t < 1000);
}

// Issue 14: T·history wrapped to 0 and update() wrote outside the table; squares of 1e200 overflowed
// to a NaN probability.
TEST_CASE("the loss-second-moment sampler refuses tables it cannot hold and never overflows",
          "[timestep_sampler][errors][overflow]") {
  using Catch::Matchers::Contains;
  // 2^20 · 2^44 = 2^64 wraps to 0.
  CHECK_THROWS_WITH(diffusion::loss_second_moment_sampler(std::size_t{1} << 20, 1, std::size_t{1} << 44),
                    Contains("num_timesteps = 1048576") && Contains("history = 17592186044416") &&
                        Contains("overflows size_t"));
  CHECK_THROWS_AS(diffusion::loss_second_moment_sampler(std::size_t{1} << 20, 1, std::size_t{1} << 44),
                  std::invalid_argument);
  // 2^60 doubles: more than a vector holds; 2^56 doubles (512 PiB): not allocatable.
  CHECK_THROWS_WITH(diffusion::loss_second_moment_sampler(std::size_t{1} << 20, 1, std::size_t{1} << 40),
                    Contains("history = 1099511627776") && Contains("more than a vector holds"));
#if !defined(__SANITIZE_ADDRESS__)
  // (AddressSanitizer aborts on an allocation this large instead of throwing std::bad_alloc.)
  CHECK_THROWS_WITH(diffusion::loss_second_moment_sampler(std::size_t{1} << 20, 1, std::size_t{1} << 36),
                    Contains("num_timesteps = 1048576") && Contains("cannot be allocated"));
#endif
  CHECK_THROWS_WITH(diffusion::loss_second_moment_sampler(SIZE_MAX, 1, 2), Contains("overflows size_t"));

  // Squares of 1e200 (and of the largest double) overflow; the root mean square does not.
  for (double big : {1e200, std::numeric_limits<double>::max()}) {
    INFO("loss = " << big);
    diffusion::loss_second_moment_sampler s(2, 5, 1, 0.001);
    s.update(std::vector<std::size_t>{0, 1}, std::vector<double>{big, big});
    REQUIRE(s.warmed_up());
    const auto p = s.probabilities();
    CHECK(p[0] == 0.5);
    CHECK(p[1] == 0.5);
    std::vector<std::size_t> t(1000);
    std::vector<double> w(1000);
    s.sample(0, t, w);
    for (double x : w) CHECK(x == 1.0);
  }
  {
    // History 2: RMS(max, max) = max, RMS(max, 0) = max/√2; p ∝ (1, 1/√2), mixed with 0.001 uniform.
    const double big = std::numeric_limits<double>::max();
    diffusion::loss_second_moment_sampler s(2, 5, 2, 0.001);
    for (int k = 0; k < 2; ++k) s.update(std::vector<std::size_t>{0, 1}, std::vector<double>{big, k == 0 ? big : 0.0});
    const auto p = s.probabilities();
    const double want0 = 0.999 / (1.0 + 1.0 / std::sqrt(2.0)) + 0.0005;
    CHECK(p[0] == Approx(want0).epsilon(1e-14));
    CHECK(p[1] == Approx(1.0 - want0).epsilon(1e-14));
  }
  {
    // uniform_prob = 0 and losses 600 decades apart: p_0 = 1e-310 (subnormal) or 0; weights stay finite.
    for (double tiny : {1e-10, 1e-300, 0.0}) {
      INFO("tiny loss = " << tiny);
      diffusion::loss_second_moment_sampler s(3, 11, 1, 0.0);
      s.update(std::vector<std::size_t>{0, 1, 2}, std::vector<double>{tiny, 1e300, tiny});
      for (double q : s.probabilities()) CHECK((std::isfinite(q) && q >= 0.0));
      std::vector<std::size_t> t(10000);
      std::vector<double> w(10000);
      for (std::uint64_t k = 0; k < 10; ++k) {
        s.sample(k, t, w);
        for (std::size_t i = 0; i < t.size(); ++i) {
          CHECK(t[i] == 1);
          CHECK(w[i] == Approx(1.0 / 3.0).epsilon(1e-15));
        }
      }
    }
  }
}
