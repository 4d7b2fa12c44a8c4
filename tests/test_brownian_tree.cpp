// The Brownian tree (noise/brownian_tree.hpp): the law of its increments (Monte Carlo: standardized
// increments over disjoint intervals are independent N(0, 1); W(t) - W(t0) has variance t - t0; at a
// shallow depth the stated piecewise-linear law, deficit included), consistency under refinement
// (partition sums, repeated and reordered queries, swapped ends, chunk prefixes), batch invariance,
// and the errors. The samplers driven by a tree are tested in test_sampler_dpmpp_sde.cpp and
// test_sampler_singlestep.cpp.
//
// Monte Carlo checks: fixed seeds, N = 100000 independent values, 5 standard errors (normal
// approximation: false-failure probability 5.7e-7 per check for a random seed); each test states
// its number of checks.
#include <catch2/catch.hpp>

#include <diffusion/noise.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;

namespace {

struct moments {
  double mean, var;
};

moments moments_of(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  double s = 0.0;
  for (double x : v) s += (x - m) * (x - m);
  return {m, s / static_cast<double>(v.size() - 1)};
}

double correlation(const std::vector<double>& a, const std::vector<double>& b) {
  const moments ma = moments_of(a), mb = moments_of(b);
  double c = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) c += (a[i] - ma.mean) * (b[i] - mb.mean);
  return c / static_cast<double>(a.size() - 1) / std::sqrt(ma.var * mb.var);
}

template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  return {v.begin(), v.end()};
}

// Raw increments W(b) - W(a) of `rows` samples x n elements, as double.
template <class T>
std::vector<double> raw_increments(const diffusion::brownian_tree& tree, double a, double b, std::size_t rows,
                                   std::size_t n) {
  std::vector<T> out(rows * n);
  for (std::size_t r = 0; r < rows; ++r) tree.increment(r, a, b, std::span<T>(out).subspan(r * n, n));
  return as_double(out);
}

}  // namespace

TEMPLATE_TEST_CASE("brownian_tree: standardized increments over disjoint intervals are independent N(0, 1)",
                   "[mc-law][noise][brownian]", float, double) {
  using T = TestType;
  const diffusion::brownian_tree tree(20261205, 0.03, 14.6);
  constexpr std::size_t rows = 1000, n = 100, N = rows * n;
  // Three adjacent intervals walked downwards, as a sampler reads them (9 checks: < 6e-6 in all).
  const double sig[] = {10.0, 4.0, 0.5, 0.1};
  std::vector<std::vector<double>> z;
  for (int i = 0; i < 3; ++i) {
    std::vector<T> out(N);
    tree.fill(std::span<T>(out), rows, sig[i], sig[i + 1], 0);
    z.push_back(as_double(out));
  }
  const double se_mean = 1.0 / std::sqrt(double(N)), se_var = std::sqrt(2.0 / double(N - 1));
  for (int i = 0; i < 3; ++i) {
    const moments m = moments_of(z[static_cast<std::size_t>(i)]);
    INFO("interval [" << sig[i + 1] << ", " << sig[i] << "]: mean " << m.mean << ", variance " << m.var);
    CHECK(std::abs(m.mean) <= 5 * se_mean);
    CHECK(std::abs(m.var - 1.0) <= 5 * se_var);
  }
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = i + 1; j < 3; ++j) {
      const double r = correlation(z[i], z[j]);
      INFO("correlation of intervals " << i << " and " << j << ": " << r);
      CHECK(std::abs(r) <= 5 * se_mean);
    }
}

TEMPLATE_TEST_CASE("brownian_tree: W(t) - W(t0) has variance t - t0, and at depth D the stated interpolated law",
                   "[mc-law][noise][brownian]", float, double) {
  using T = TestType;
  constexpr std::size_t rows = 1000, n = 100, N = rows * n;
  const double se_var = std::sqrt(2.0 / double(N - 1));
  // 6 checks: < 4e-6 in all.
  {
    const diffusion::brownian_tree tree(77, 0.002, 80.0);
    for (const double t : {3.3, 61.0}) {
      const moments m = moments_of(raw_increments<T>(tree, 0.002, t, rows, n));
      const double v = t - 0.002;
      INFO("t = " << t << ": mean " << m.mean << ", variance " << m.var << " vs " << v);
      CHECK(std::abs(m.mean) <= 5 * std::sqrt(v / N));
      CHECK(std::abs(m.var - v) <= 5 * v * se_var);
    }
  }
  // Depth 2 on [0, 1] (grid 0, 1/4, 1/2, 3/4, 1; leaf width w = 1/4): on grid points the exact
  // variance; 0.1 and 0.6 both sit at theta = 0.4 in their leaves, so the variance is
  // 0.5 - 2 w theta (1 - theta) = 0.38 (the interpolation's deficit, not 0.5).
  const diffusion::brownian_tree shallow(5, 0.0, 1.0, 2);
  const moments grid = moments_of(raw_increments<T>(shallow, 0.25, 0.75, rows, n));
  const moments off = moments_of(raw_increments<T>(shallow, 0.1, 0.6, rows, n));
  INFO("grid 0.5: variance " << grid.var << "; off-grid 0.38: variance " << off.var);
  CHECK(std::abs(grid.var - 0.5) <= 5 * 0.5 * se_var);
  CHECK(std::abs(off.var - 0.38) <= 5 * 0.38 * se_var);
}

TEMPLATE_TEST_CASE("brownian_tree: increments over any partition sum to the whole; queries are pure functions",
                   "[noise][brownian]", float, double) {
  using T = TestType;
  const double t0 = 0.002, t1 = 80.0, a = 0.05, b = 12.0;
  const diffusion::brownian_tree tree(31337, t0, t1);
  constexpr std::size_t n = 1000;
  // Bound (file comment of brownian_tree.hpp): each increment of K <= 65 terms is within
  // (K + 2) u sum |c_j xi_j| of its exact value, and sum |c_j| <= |b - a|/sqrt(T) + 2 sum_d sqrt(w_d)/2
  // <= (1 + 1/(1 - 2^-1/2)) sqrt(T) = 4.42 sqrt(T); |xi| <= 5.77 (float), 8.57 (double); the partition's
  // coefficients telescope up to one rounding each. The test sums in double (exact enough).
  const double u = std::numeric_limits<T>::epsilon() / 2, xi_max = sizeof(T) == 4 ? 5.77 : 8.57;
  const double per_increment = (65 + 3) * u * 4.42 * xi_max * std::sqrt(t1 - t0);
  test::normal_source g(8);
  std::vector<std::vector<double>> partitions;
  std::vector<double> geometric;  // downwards, from b to a, as a sampler's sigma list
  for (int i = 0; i <= 36; ++i) geometric.push_back(b * std::pow(a / b, i / 36.0));
  partitions.push_back(geometric);
  std::vector<double> uniform;
  for (int i = 0; i <= 10; ++i) uniform.push_back(a + (b - a) * i / 10.0);
  partitions.push_back(uniform);
  std::vector<double> random{a, b};
  for (int i = 0; i < 23; ++i) random.push_back(a + (b - a) * g.uniform());
  std::sort(random.begin(), random.end());
  partitions.push_back(random);
  for (const auto& p : partitions) {
    std::vector<double> sum(n, 0.0);
    for (std::size_t i = 0; i + 1 < p.size(); ++i) {
      std::vector<T> piece(n);
      tree.increment(3, p[i], p[i + 1], std::span<T>(piece));
      for (std::size_t k = 0; k < n; ++k) sum[k] += static_cast<double>(piece[k]);
    }
    std::vector<T> whole(n);  // over [p.front(), p.back()] (the ends may round off a and b)
    tree.increment(3, p.front(), p.back(), std::span<T>(whole));
    double worst = 0.0;
    for (std::size_t k = 0; k < n; ++k) worst = std::max(worst, std::abs(sum[k] - static_cast<double>(whole[k])));
    const double bound = static_cast<double>(p.size()) * per_increment;
    INFO(p.size() - 1 << " pieces: largest |sum - whole| = " << worst << ", bound " << bound);
    CHECK(worst <= bound);
    WARN("brownian_tree<" << (sizeof(T) == 4 ? "float" : "double") << "> partition of [" << a << ", " << b << "] into "
                          << p.size() - 1 << " pieces: largest |sum - whole| = " << worst);
  }
  // The same query twice, queries in another order, and the ends swapped: the same bits.
  std::vector<T> x1(n), y1(n), x2(n), y2(n), swapped(n);
  tree.increment(3, 0.7, 1.9, std::span<T>(x1));
  tree.increment(4, 30.0, 2.0, std::span<T>(y1));
  tree.increment(4, 30.0, 2.0, std::span<T>(y2));
  tree.increment(3, 0.7, 1.9, std::span<T>(x2));
  tree.increment(3, 1.9, 0.7, std::span<T>(swapped));
  CHECK(x1 == x2);
  CHECK(y1 == y2);
  for (std::size_t k = 0; k < n; ++k) swapped[k] = -swapped[k];
  CHECK(swapped == x1);
  // Element k does not depend on the row length (the 512-element chunks, the SIMD bulk and tail).
  for (const std::size_t len : {std::size_t{1}, std::size_t{7}, std::size_t{513}}) {
    std::vector<T> prefix(len);
    tree.increment(3, 0.7, 1.9, std::span<T>(prefix));
    INFO("length " << len);
    CHECK(std::equal(prefix.begin(), prefix.end(), x1.begin()));
  }
}

TEMPLATE_TEST_CASE("brownian_tree: row b depends only on first_sample + b, never on the batch or the threads", "[noise][brownian]",
                   float, double) {
  using T = TestType;
  const diffusion::brownian_tree tree(99, 0.03, 14.6);
  constexpr std::size_t n = 37;
  std::vector<T> batch(7 * n);
  tree.fill(std::span<T>(batch), 7, 5.0, 4.2, 10);
  for (std::size_t r = 0; r < 7; ++r) {
    std::vector<T> one(n);
    tree.fill(std::span<T>(one), 1, 5.0, 4.2, 10 + r);
    INFO("row " << r);
    CHECK(std::equal(one.begin(), one.end(), batch.begin() + static_cast<std::ptrdiff_t>(r * n)));
  }
  // Any thread split (ranges of multiples of 512 elements crossing rows of 1000): the same bits.
  std::vector<T> seq_out(5 * 1000), par_out(5 * 1000);
  tree.fill(std::span<T>(seq_out), 5, 9.0, 2.0, 3);
  tree.fill(std::span<T>(par_out), 5, 9.0, 2.0, 3, diffusion::parallel_policy{3, 100});
  CHECK(seq_out == par_out);
  // Different seeds and different samples give different values.
  const diffusion::brownian_tree other(100, 0.03, 14.6);
  std::vector<T> o(n);
  other.fill(std::span<T>(o), 1, 5.0, 4.2, 10);
  CHECK_FALSE(std::equal(o.begin(), o.end(), batch.begin()));
  CHECK_FALSE(std::equal(batch.begin(), batch.begin() + n, batch.begin() + n));
}

TEST_CASE("brownian_tree: refuses bad intervals, depths, queries and sizes", "[noise][brownian][errors]") {
  using diffusion::brownian_tree;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(brownian_tree(1, 2.0, 1.0), Contains("brownian_tree") && Contains("t_min < t_max"));
  CHECK_THROWS_WITH(brownian_tree(1, 1.0, 1.0), Contains("t_min < t_max"));
  CHECK_THROWS_WITH(brownian_tree(1, 0.0, inf), Contains("t_max = inf"));
  CHECK_THROWS_WITH(brownian_tree(1, nan, 1.0), Contains("t_min = nan"));
  CHECK_THROWS_WITH(brownian_tree(1, -1e308, 1e308), Contains("finite width"));
  CHECK_THROWS_WITH(brownian_tree(1, 0.0, 1.0, 0), Contains("depth = 0 is outside the allowed range [1, 32]"));
  CHECK_THROWS_WITH(brownian_tree(1, 0.0, 1.0, 33), Contains("depth = 33"));
  const brownian_tree tree(1, 0.1, 10.0, 10);
  std::vector<float> out(6);
  const std::span<float> s(out);
  CHECK_THROWS_WITH(tree.fill(s, 2, 11.0, 5.0, 0),
                    Contains("brownian_tree::fill") && Contains("sigma = 11 is outside the tree's interval [0.1, 10]"));
  CHECK_THROWS_WITH(tree.fill(s, 2, 5.0, 0.0, 0), Contains("sigma_next = 0 is outside"));
  CHECK_THROWS_WITH(tree.fill(s, 2, nan, 5.0, 0), Contains("sigma = nan"));
  CHECK_THROWS_WITH(tree.fill(s, 2, 5.0, inf, 0), Contains("sigma_next = inf"));
  CHECK_THROWS_WITH(tree.fill(s, 2, 5.0, 5.0, 0), Contains("|sigma_next - sigma| = 0 must be > 0"));
  // Depth 10 over a width of 9.9: leaf 0.00967; a narrower interval is refused.
  CHECK_THROWS_WITH(tree.fill(s, 2, 5.0, 4.995, 0), Contains("leaf width") && Contains("depth 10"));
  CHECK_THROWS_WITH(tree.fill(s, 0, 5.0, 4.0, 0), Contains("rows = 0"));
  CHECK_THROWS_WITH(tree.fill(s, 4, 5.0, 4.0, 0), Contains("rows = 4 does not divide out.size() = 6"));
  CHECK_THROWS_WITH(tree.fill(std::span<float>(), 1, 5.0, 4.0, 0), Contains("out is empty"));
  CHECK_THROWS_WITH(tree.increment(0, 0.05, 1.0, s), Contains("brownian_tree::increment") && Contains("a = 0.05"));
  CHECK(out == std::vector<float>(6, 0.0f));  // nothing written by a refused call
  // The ends are allowed; a = b gives 0.
  tree.fill(s, 3, 10.0, 0.1, 0);
  tree.increment(0, 2.0, 2.0, s);
  CHECK(out == std::vector<float>(6, 0.0f));
}

TEST_CASE("brownian_tree: DPM++ SDE's two reads compose to the read of the whole step", "[noise][brownian]") {
  // z1 over [sigma_m, sigma] and z2 over [sigma_next, sigma_m]: rho z1 + sqrt(1 - rho^2) z2, with
  // rho = sqrt((sigma - sigma_m)/(sigma - sigma_next)), is (W(sigma_next) - W(sigma))/sqrt(sigma - sigma_next):
  // the normalized sum of a two-piece partition. Bound: three increments of <= 65 terms each (as in
  // the partition test), divided by sqrt(sigma - sigma_next), plus the combination's roundings.
  const double t0 = 0.03, t1 = 14.6, s = 3.0, sn = 2.5, sm = std::sqrt(s * sn);
  const diffusion::brownian_tree tree(55, t0, t1);
  constexpr std::size_t n = 2000;
  std::vector<double> z1(n), z2(n), whole(n);
  tree.fill(std::span<double>(z1), 1, s, sm, 0);
  tree.fill(std::span<double>(z2), 1, sm, sn, 0);
  tree.fill(std::span<double>(whole), 1, s, sn, 0);
  const double rho = std::sqrt((s - sm) / (s - sn)), rho_c = std::sqrt((1.0 - rho) * (1.0 + rho));
  const double u = std::numeric_limits<double>::epsilon() / 2;
  const double bound = 3 * (65 + 3) * u * 4.42 * 8.57 * std::sqrt(t1 - t0) / std::sqrt(s - sn) + 8 * u * 8.57;
  double worst = 0.0;
  for (std::size_t k = 0; k < n; ++k) worst = std::max(worst, std::abs(rho * z1[k] + rho_c * z2[k] - whole[k]));
  INFO("largest difference " << worst << ", bound " << bound);
  CHECK(worst <= bound);
}
