// Reductions against an exact reference: a fixed-point accumulator of 32-bit limbs written
// here (every double is an integer multiple of 2^-1074, so sums of doubles, and of the exact
// products split by fma, are represented without rounding). The stated bounds are checked
// on random and on ill-conditioned data built so that the naive loop fails them; thread
// counts 1, 2, 3, 7 and the scalar path give the same bits; bad input raises.
#include <catch2/catch.hpp>

#include <diffusion/reductions.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <numeric>
#include <set>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support.hpp"

namespace {

constexpr double u = 0x1p-53;
constexpr double K = 2e5;  // (1 + u) γ_D γ_2D ≤ K u² for every n < 2^64 (reductions.hpp)
constexpr std::size_t B = diffusion::reduction_block;

/// Σ of doubles without rounding: value = Σ limb[i] 2^(32 i + base), limbs kept unnormalized
/// (each add changes three limbs by < 2^33, so 2^30 adds fit in int64).
class exact_sum {
 public:
  void add(double x) {
    if (x == 0.0) return;
    if (!std::isfinite(x)) throw std::logic_error("exact_sum: non-finite term");
    int e = 0;
    const double m = std::frexp(x, &e);
    const auto mant = static_cast<std::int64_t>(std::ldexp(m, 53));  // exact: |mant| < 2^53
    const int p = e - 53 - base;
    if (p < 0) throw std::logic_error("exact_sum: below the accumulator's range");
    const auto q = static_cast<std::size_t>(p / 32);
    const int r = p % 32;
    const std::uint64_t a = static_cast<std::uint64_t>(mant < 0 ? -mant : mant);
    const std::uint64_t lo = (a & 0xFFFFFFFFu) << r, hi = (a >> 32) << r;
    const std::int64_t sign = mant < 0 ? -1 : 1;
    limb_[q] += sign * static_cast<std::int64_t>(lo & 0xFFFFFFFFu);
    limb_[q + 1] += sign * static_cast<std::int64_t>((lo >> 32) + (hi & 0xFFFFFFFFu));
    limb_[q + 2] += sign * static_cast<std::int64_t>(hi >> 32);
  }
  /// x·y exactly: the rounded product and its error (fma is exact).
  void add_product(double x, double y) {
    const double p = x * y;
    add(p);
    add(std::fma(x, y, -p));
  }
  /// (x − y)² exactly: x − y = d + e (TwoSum), (d + e)² = d² + 2de + e².
  void add_squared_difference(double x, double y) {
    const double d = x - y, z = d - x, e = (x - (d - z)) - (y + z);
    add_product(d, d);
    add_product(2.0 * d, e);
    add_product(e, e);
  }
  /// The value rounded to double (relative error ≤ 2u).
  [[nodiscard]] double value() const {
    std::array<std::int64_t, limbs> l = limb_;
    normalize(l);
    double sign = 1.0;
    if (l[limbs - 1] < 0) {
      for (auto& v : l) v = -v;
      normalize(l);
      sign = -1.0;
    }
    std::size_t h = limbs;
    while (h > 0 && l[h - 1] == 0) --h;
    if (h == 0) return 0.0;
    double v = 0.0;
    for (std::size_t i = h; i-- > 0 && i + 3 >= h;)
      v += std::ldexp(static_cast<double>(l[i]), 32 * static_cast<int>(i) + base);
    return sign * v;
  }

 private:
  static constexpr int base = -1152;
  static constexpr std::size_t limbs = 80;  // up to 2^(80·32 − 1152) = 2^1408
  static void normalize(std::array<std::int64_t, limbs>& l) {
    for (std::size_t i = 0; i + 1 < limbs; ++i) {
      const std::int64_t carry = (l[i] >= 0 ? l[i] : l[i] - 0xFFFFFFFF) / 0x100000000;  // floor division
      l[i] -= carry * 0x100000000;
      l[i + 1] += carry;
    }
  }
  std::array<std::int64_t, limbs> limb_{};
};

/// Random values of mixed sign with exponents spread over [-spread, spread].
template <class T>
std::vector<T> spread_values(std::size_t n, int spread, std::uint64_t seed) {
  test::normal_source g(seed);
  std::vector<T> v(n);
  for (auto& x : v) {
    const int e = static_cast<int>(g.next_u64() % static_cast<std::uint64_t>(2 * spread + 1)) - spread;
    x = static_cast<T>(std::ldexp(g.normal(), e));
  }
  return v;
}

/// Σ|t_i| and the exact Σ t_i for the terms of each reduction (doubles are exact).
struct reference {
  exact_sum exact;
  double abs_sum = 0.0;
};
template <class T>
reference ref_sum(std::span<const T> x) {
  reference r;
  for (const T v : x) {
    r.exact.add(static_cast<double>(v));
    r.abs_sum += std::abs(static_cast<double>(v));
  }
  return r;
}
template <class T>
reference ref_squares(std::span<const T> x) {
  reference r;
  for (const T v : x) {
    r.exact.add_product(static_cast<double>(v), static_cast<double>(v));
    r.abs_sum += static_cast<double>(v) * static_cast<double>(v);
  }
  return r;
}
template <class T>
reference ref_squared_distance(std::span<const T> x, std::span<const T> y) {
  reference r;
  for (std::size_t k = 0; k < x.size(); ++k) {
    r.exact.add_squared_difference(static_cast<double>(x[k]), static_cast<double>(y[k]));
    const double d = static_cast<double>(x[k]) - static_cast<double>(y[k]);
    r.abs_sum += d * d;
  }
  return r;
}
template <class T>
reference ref_dot(std::span<const T> x, std::span<const T> y) {
  reference r;
  for (std::size_t k = 0; k < x.size(); ++k) {
    r.exact.add_product(static_cast<double>(x[k]), static_cast<double>(y[k]));
    r.abs_sum += std::abs(static_cast<double>(x[k]) * static_cast<double>(y[k]));
  }
  return r;
}

/// |computed − exact| (itself computed exactly, then rounded) and the exact value.
struct error {
  double abs, exact;
};
error error_of(const reference& r, double computed) {
  exact_sum d = r.exact;
  d.add(-computed);
  return {std::abs(d.value()), r.exact.value()};
}

/// u_t: the rounding of one term (0 when the term is exact in double).
template <class T>
constexpr double term_rounding = std::is_same_v<T, float> ? 0.0 : u;

/// Lengths: all of 0 … 3·16 + 1, then around one, two and three blocks.
std::vector<std::size_t> test_lengths() {
  std::vector<std::size_t> n;
  for (std::size_t k = 0; k <= 3 * diffusion::reduction_lanes + 1; ++k) n.push_back(k);
  for (std::size_t b : {std::size_t{1}, std::size_t{2}, std::size_t{3}})
    for (std::size_t d : {std::size_t{17}, std::size_t{16}, std::size_t{1}})
      n.insert(n.end(), {b * B - d, b * B + d});
  n.insert(n.end(), {B, 2 * B, 3 * B, 5 * B + 4095});
  return n;
}

}  // namespace

TEST_CASE("the exact reference accumulator is exact", "[reductions][reference]") {
  exact_sum s;
  s.add(1e300);
  s.add(1.0);
  s.add(-1e300);
  s.add(0x1p-1074);
  CHECK(s.value() == 1.0);  // 1 + 2^-1074 rounds to 1
  s.add(-1.0);
  CHECK(s.value() == 0x1p-1074);
  exact_sum p;
  p.add_product(1.0 + 0x1p-30, 1.0 - 0x1p-30);  // 1 − 2^-60: not a double, held exactly
  p.add(-1.0);
  CHECK(p.value() == -0x1p-60);
  exact_sum q;
  q.add_squared_difference(1e16, -1.0);  // (1e16 + 1)² = 1e32 + 2e16 + 1
  q.add_product(-1e16, 1e16);
  q.add(-2e16);
  CHECK(q.value() == 1.0);
  // A long double reference agrees on a well-conditioned sum to its own precision.
  const auto v = spread_values<double>(1000, 3, 5);
  exact_sum e;
  long double ld = 0.0L;
  for (const double x : v) {
    e.add(x);
    ld += static_cast<long double>(x);
  }
  CHECK(std::abs(static_cast<double>(ld) - e.value()) <= 1e-13 * std::abs(e.value()));
}

TEMPLATE_TEST_CASE("every reduction meets its stated bound at every length and misaligned start",
                   "[reductions][bound]", float, double) {
  using T = TestType;
  constexpr double ut = term_rounding<T>;
  const double g3 = 3 * u / (1 - 3 * u);
  const auto lengths = test_lengths();
  const std::size_t max_n = *std::max_element(lengths.begin(), lengths.end());
  const auto xs = spread_values<T>(max_n + 8, 4, 11), ys = spread_values<T>(max_n + 8, 4, 12);
  std::array<double, 4> worst{};  // max |error| / (u |exact|) per reduction, for the report
  auto note = [&](std::size_t i, const error& e) {
    if (e.exact != 0.0) worst[i] = std::max(worst[i], e.abs / (u * std::abs(e.exact)));
  };
  for (const std::size_t n : lengths)
    for (const std::size_t offset : {0u, 1u, 3u, 7u}) {
      INFO("n = " << n << ", offset = " << offset);
      const std::span<const T> x(xs.data() + offset, n), y(ys.data() + offset, n);
      {
        const auto r = ref_sum(x);
        const auto e = error_of(r, diffusion::sum(x));
        note(0, e);
        CHECK(e.abs <= u * std::abs(e.exact) + K * u * u * r.abs_sum);
      }
      {
        const auto r = ref_squares(x);
        const auto e = error_of(r, diffusion::sum_of_squares(x));
        note(1, e);
        CHECK(e.abs <= (u + ut + K * u * u) * e.exact);
        const double nrm = diffusion::norm2(x), exact_norm = std::sqrt(e.exact);
        CHECK(std::abs(nrm - exact_norm) <= (1.5 * u + 0.5 * ut + 1e5 * u * u) * exact_norm);
      }
      {
        const auto r = ref_squared_distance(x, y);
        const auto e = error_of(r, diffusion::squared_distance(x, y));
        note(2, e);
        CHECK(e.abs <= (u + g3 + K * u * u) * e.exact);
        const double nrm = diffusion::distance2(x, y), exact_norm = std::sqrt(e.exact);
        CHECK(std::abs(nrm - exact_norm) <= (u + 0.5 * (u + g3) + 1e5 * u * u) * exact_norm);
      }
      {
        const auto r = ref_dot(x, y);
        const auto e = error_of(r, diffusion::dot(x, y));
        note(3, e);
        CHECK(e.abs <= u * std::abs(e.exact) + (ut + K * u * u) * r.abs_sum);
      }
    }
  WARN((std::is_same_v<T, float> ? "float" : "double")
       << " inputs, worst |error| / (u |s|) over all lengths and offsets: sum " << worst[0] << ", sum_of_squares "
       << worst[1] << ", squared_distance " << worst[2] << ", dot " << worst[3]);
}

TEMPLATE_TEST_CASE("float sums of squares and dot products are exact up to one rounding of the result",
                   "[reductions][bound]", float) {
  // Float squares and products are exact in double, so the error is the final rounding
  // (≤ u|s|) plus the u² term: at most one ulp of the result on well-conditioned data.
  const auto x = spread_values<float>(3 * B + 123, 10, 21), y = spread_values<float>(3 * B + 123, 10, 22);
  const auto rs = ref_squares<float>(x);
  const double ss = diffusion::sum_of_squares(x);
  CHECK(test::ulps(ss, rs.exact.value()) <= 1.0);
  const auto rd = ref_dot<float>(x, y);
  const auto e = error_of(rd, diffusion::dot(x, y));
  CHECK(e.abs <= u * std::abs(e.exact) + K * u * u * rd.abs_sum);
}

TEMPLATE_TEST_CASE("ill-conditioned sums: the bound holds and a naive loop exceeds it", "[reductions][bound]", float,
                   double) {
  using T = TestType;
  // Pairs v, -v with exponents over ±(20 for float, 40 for double) and a few small values
  // whose sum is exact: the exact sum is known, the naive sum is dominated by the rounding
  // of partial sums of size ~2^spread.
  const int spread = std::is_same_v<T, float> ? 20 : 40;
  for (const std::uint64_t seed : {1u, 2u, 3u}) {
    for (const std::size_t half : {std::size_t{1000}, std::size_t{3 * B + 5}}) {
      INFO("seed = " << seed << ", pairs = " << half);
      auto v = spread_values<T>(half, spread, seed);
      std::vector<T> x(v);
      for (const T a : v) x.push_back(-a);
      x.insert(x.end(), {T(1), T(0.5), T(0.125)});
      test::normal_source g(seed + 100);
      for (std::size_t i = x.size() - 1; i > 0; --i) std::swap(x[i], x[g.next_u64() % (i + 1)]);  // Fisher–Yates
      const double exact = 1.625;
      const auto r = ref_sum<T>(x);
      REQUIRE(r.exact.value() == exact);
      const double bound = u * exact + K * u * u * r.abs_sum;
      const double ours = diffusion::sum(x);
      CHECK(std::abs(ours - exact) <= bound);
      T naive = 0;  // the plain loop in the input type
      for (const T a : x) naive += a;
      double naive_double = 0.0;  // and in double
      for (const T a : x) naive_double += static_cast<double>(a);
      CHECK(std::abs(static_cast<double>(naive) - exact) > bound);
      if (seed == 1)
        WARN("ill-conditioned " << (std::is_same_v<T, float> ? "float" : "double") << ", n = " << x.size()
                                << ": |ours - s| = " << std::abs(ours - exact) << ", bound = " << bound
                                << ", naive loop in the input type " << std::abs(static_cast<double>(naive) - exact)
                                << ", naive in double " << std::abs(naive_double - exact));
      if constexpr (std::is_same_v<T, double>) CHECK(std::abs(naive_double - exact) > bound);
      // The transform path (scalar lanes) gives the same bits.
      CHECK(diffusion::transform_sum(x, [](double a) { return a; }) == ours);
    }
  }
}

TEST_CASE("a sum whose terms cancel to 1e-20 of their magnitude stays within u|s| + K u^2 sum|x|", "[reductions][bound]") {
  // Condition number ~1e20: beyond a naive double sum (error ~1e-16 Σ|x|), and the bound's
  // u² term (~1e-27 Σ|x|) still resolves it.
  std::vector<double> x;
  for (int i = 0; i < 5000; ++i) {
    const double big = std::ldexp(1.0 + i * 0x1p-20, 40 - i % 13);
    x.insert(x.end(), {big, 1e-7 * (i % 3 == 0 ? 1.0 : -0.5), -big});
  }
  const auto r = ref_sum<double>(x);
  const auto e = error_of(r, diffusion::sum(x));
  CHECK(e.abs <= u * std::abs(e.exact) + K * u * u * r.abs_sum);
  CHECK(std::abs(e.exact) < 1e-18 * r.abs_sum);
}

TEST_CASE("thread counts 1, 2, 3 and 7 give the bits of the sequential run", "[reductions][threads]") {
  const std::size_t n = 7 * B + 1000;
  const auto xf = spread_values<float>(n, 6, 31), yf = spread_values<float>(n, 6, 32);
  const auto xd = spread_values<double>(n, 6, 33), yd = spread_values<double>(n, 6, 34);
  auto kl = [](double a) { return 0.5 * (a * a - 1.0) - std::log1p(0.1 * a * a); };
  auto three = [](double a, double b, double c) { return a * b - c; };
  const std::array<double, 10> expected{diffusion::sum(xf),
                                        diffusion::sum(xd),
                                        diffusion::sum_of_squares(xf),
                                        diffusion::sum_of_squares(xd),
                                        diffusion::squared_distance(xf, yf),
                                        diffusion::squared_distance(xd, yd),
                                        diffusion::dot(xd, yd),
                                        diffusion::norm2(xd),
                                        diffusion::transform_sum(xf, kl),
                                        diffusion::transform_sum(xd, yd, xd, three)};
  for (const unsigned threads : {1u, 2u, 3u, 7u}) {
    INFO("threads = " << threads);
    const diffusion::parallel_policy p{threads, 1};
    const std::array<double, 10> got{diffusion::sum(xf, p),
                                     diffusion::sum(xd, p),
                                     diffusion::sum_of_squares(xf, p),
                                     diffusion::sum_of_squares(xd, p),
                                     diffusion::squared_distance(xf, yf, p),
                                     diffusion::squared_distance(xd, yd, p),
                                     diffusion::dot(xd, yd, p),
                                     diffusion::norm2(xd, p),
                                     diffusion::transform_sum(xf, kl, p),
                                     diffusion::transform_sum(xd, yd, xd, three, p)};
    for (std::size_t i = 0; i < got.size(); ++i) {
      INFO("reduction " << i);
      CHECK(std::bit_cast<std::uint64_t>(got[i]) == std::bit_cast<std::uint64_t>(expected[i]));
    }
    // The split really used that many threads: one id per block range.
    std::vector<std::thread::id> ids(n);
    const double s = diffusion::indexed_sum(n, [&](std::size_t k) {
      ids[k] = std::this_thread::get_id();
      return xd[k];
    }, p);
    CHECK(std::bit_cast<std::uint64_t>(s) == std::bit_cast<std::uint64_t>(expected[1]));
    // (a finished worker's id may be reused by the next one; the calling thread's never is)
    const std::size_t distinct = std::set<std::thread::id>(ids.begin(), ids.end()).size();
    CHECK(distinct >= std::min<std::size_t>(threads, 2));
    CHECK(distinct <= threads);
  }
}

TEST_CASE("the SIMD and scalar paths give the same bits", "[reductions][simd]") {
  // transform_sum and indexed_sum use scalar lanes; the built-in kinds use xsimd batches.
  for (const std::size_t n : test_lengths()) {
    INFO("n = " << n);
    const auto xf = spread_values<float>(n, 8, 41), yf = spread_values<float>(n, 8, 42);
    const auto xd = spread_values<double>(n, 8, 43), yd = spread_values<double>(n, 8, 44);
    CHECK(diffusion::transform_sum(xf, [](double a) { return a; }) == diffusion::sum(xf));
    CHECK(diffusion::transform_sum(xd, [](double a) { return a * a; }) == diffusion::sum_of_squares(xd));
    CHECK(diffusion::transform_sum(xf, yf, [](double a, double b) { return (a - b) * (a - b); }) ==
          diffusion::squared_distance(xf, yf));
    CHECK(diffusion::transform_sum(xd, yd, [](double a, double b) {
            const double d = a - b;
            return d * d;
          }) == diffusion::squared_distance(xd, yd));
    CHECK(diffusion::indexed_sum(n, [&](std::size_t k) { return xd[k] * yd[k]; }) == diffusion::dot(xd, yd));
  }
}

TEST_CASE("results do not depend on the SIMD width of the build", "[reductions][simd]") {
  // The lanes, blocks and combination order are fixed, so SSE2, AVX2, AVX-512 and scalar
  // builds all give these bits (recorded from a default x86-64 build; the
  // same in -march=native AVX2+FMA and AVX2-without-FMA builds).
  const std::size_t n = 3 * B + 77;
  const auto xf = spread_values<float>(n, 8, 51), yf = spread_values<float>(n, 8, 52);
  const auto xd = spread_values<double>(n, 8, 53), yd = spread_values<double>(n, 8, 54);
  CHECK(diffusion::sum(xf) == -0x1.f838e5201b227p+10);
  CHECK(diffusion::sum(xd) == 0x1.c7508200154d5p+9);
  CHECK(diffusion::sum_of_squares(xd) == 0x1.daa625d3a13bp+25);
  CHECK(diffusion::squared_distance(xf, yf) == 0x1.d1e360de1e7ccp+26);
  CHECK(diffusion::squared_distance(xd, yd) == 0x1.e71e8295c03f8p+26);
  CHECK(diffusion::dot(xd, yd) == -0x1.272b21c977af1p+19);
}

TEST_CASE("known sums: empty, constant, integers, and non-finite terms", "[reductions]") {
  const std::vector<double> empty;
  CHECK(diffusion::sum(empty) == 0.0);
  CHECK(diffusion::norm2(empty) == 0.0);
  CHECK(diffusion::dot(empty, empty) == 0.0);
  const std::vector<float> tenth(5 * B + 3, 0.1f);  // exact: (5B + 3) × float(0.1)
  CHECK(diffusion::sum(tenth) == static_cast<double>(tenth.size()) * static_cast<double>(0.1f));
  std::vector<double> ints(100000);
  std::iota(ints.begin(), ints.end(), 1.0);
  CHECK(diffusion::sum(ints) == 5000050000.0);
  CHECK(diffusion::sum_of_squares(ints) == 333338333350000.0);  // n(n+1)(2n+1)/6, exact in double
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> with_inf(100, 1.0);
  with_inf[37] = inf;
  CHECK(diffusion::sum(with_inf) == inf);
  CHECK(diffusion::sum_of_squares(with_inf) == inf);
  CHECK(diffusion::norm2(with_inf) == inf);
  with_inf[38] = -inf;
  CHECK(std::isnan(diffusion::sum(with_inf)));
  std::vector<float> with_nan(50, 1.0f);
  with_nan[3] = static_cast<float>(nan);
  CHECK(std::isnan(diffusion::sum(with_nan)));
  CHECK(std::isnan(diffusion::norm2(with_nan)));
}

TEST_CASE("norms neither overflow nor underflow", "[reductions]") {
  CHECK(diffusion::norm2(std::vector<double>{3e300, 4e300}) == Approx(5e300).epsilon(4 * u));
  CHECK(diffusion::norm2(std::vector<double>{3e-300, 4e-300}) == Approx(5e-300).epsilon(4 * u));
  CHECK(diffusion::distance2(std::vector<double>{1.5e308, 0.0}, std::vector<double>{-1.5e308, 0.0}) ==
        std::numeric_limits<double>::infinity());  // the distance itself exceeds DBL_MAX
  CHECK(diffusion::distance2(std::vector<double>{1e308, 3e-310}, std::vector<double>{-0.5e308, 0.0}) ==
        Approx(1.5e308).epsilon(4 * u));
  CHECK(diffusion::distance2(std::vector<double>{3e-310, 0.0}, std::vector<double>{0.0, -4e-310}) ==
        Approx(5e-310).epsilon(1e-4));  // subnormal inputs carry only ~14 bits
  CHECK(diffusion::norm2(std::vector<float>{3e-38f, 4e-38f}) == Approx(5e-38).epsilon(2e-7));
}

TEST_CASE("mismatched sizes raise, naming the arguments", "[reductions][errors]") {
  using Catch::Matchers::Contains;
  const std::vector<double> a(5), b(4);
  CHECK_THROWS_AS(diffusion::squared_distance(a, b), std::invalid_argument);
  CHECK_THROWS_WITH(diffusion::squared_distance(a, b),
                    Contains("diffusion::squared_distance") && Contains("x.size() = 5 differs from y.size() = 4"));
  CHECK_THROWS_WITH(diffusion::dot(a, b), Contains("diffusion::dot") && Contains("x.size() = 5 differs from y.size() = 4"));
  CHECK_THROWS_WITH(diffusion::distance2(a, b), Contains("x.size() = 5 differs from y.size() = 4"));
  CHECK_THROWS_WITH(diffusion::transform_sum(a, b, [](double p, double q) { return p * q; }),
                    Contains("diffusion::transform_sum") && Contains("x.size() = 5 differs from y.size() = 4"));
  CHECK_THROWS_WITH(diffusion::transform_sum(a, a, b, [](double p, double q, double r) { return p * q * r; }),
                    Contains("z.size() = 4 differs from x.size() = 5"));
  CHECK_THROWS_WITH(diffusion::transform_sum(b, a, b, [](double p, double q, double r) { return p * q * r; }),
                    Contains("y.size() = 5 differs from x.size() = 4"));
}

TEST_CASE("an exception thrown by the term function propagates from every thread count", "[reductions][errors]") {
  const std::size_t n = 4 * B;
  auto f = [](std::size_t k) -> double {
    if (k == 3 * B + 5) throw std::runtime_error("term 3B+5 failed");
    return 1.0;
  };
  CHECK_THROWS_WITH(diffusion::indexed_sum(n, f), "term 3B+5 failed");
  for (const unsigned threads : {2u, 3u})
    CHECK_THROWS_WITH(diffusion::indexed_sum(n, f, diffusion::parallel_policy{threads, 1}), "term 3B+5 failed");
}
