// Dense row products (kernels/linear.hpp) against plain long-double loops. row_dots: every
// product within γ_n Σ|a_k b_k| (the stated bound) of the long-double value, and bit-identical
// whatever the number and position of the rows, the thread count and the alignment.
// add_weighted_rows: bit-identical to the plain loop out = madd(w, b, out) over j in order (its
// documented contract), within γ_(J+1)(|out0| + Σ|w b|) of the long-double value, for any index
// list. Lengths 1 … 3·width + 1 and longer, rows 1 … 17, offsets 0 and 1 (misaligned).
#include <catch2/catch.hpp>

#include <diffusion/kernels/linear.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "support.hpp"

namespace {

using ld = long double;

template <class T>
constexpr double unit_roundoff = std::is_same_v<T, float> ? 0x1p-24 : 0x1p-53;

// γ_h = h u / (1 − h u) for T.
template <class T>
double gamma(std::size_t h) {
  const double hu = static_cast<double>(h) * unit_roundoff<T>;
  return hu / (1.0 - hu);
}

// The long-double reference's own rounding: each of its h operations errs by 2^-64 relative
// (x86 extended precision; on platforms where long double is double this is the double bound).
double reference_error(std::size_t h) {
  const double u_ld = static_cast<double>(std::numeric_limits<ld>::epsilon()) / 2;
  return 2.0 * static_cast<double>(h + 1) * u_ld;
}

// Length of a batch of T (1 where xsimd has none).
template <class T>
constexpr std::size_t width = diffusion::kernels::detail::lane_count<typename diffusion::kernels::detail::bulk_lane<T>::type>;

// The lengths of the checks: 1 … 3·width + 1, and a few longer ones (odd, image-like).
template <class T>
std::vector<std::size_t> lengths() {
  std::vector<std::size_t> n;
  for (std::size_t k = 1; k <= 3 * width<T> + 1; ++k) n.push_back(k);
  for (std::size_t k : {24u, 37u, 100u, 784u}) n.push_back(k);
  return n;
}

// `count` values in [-1, 1), after `offset` leading values (so the data may start misaligned).
template <class T>
std::vector<T> values(test::normal_source& g, std::size_t offset, std::size_t count) {
  std::vector<T> v(offset + count);
  for (auto& x : v) x = static_cast<T>(2 * g.uniform() - 1);
  return v;
}

}  // namespace

TEMPLATE_TEST_CASE("row_dots: every product within gamma_n sum|a b| of the long-double value", "[linear]", float, double) {
  using T = TestType;
  constexpr std::uint64_t seed = 101;
  INFO("seed " << seed);
  test::normal_source g(seed);
  for (std::size_t n : lengths<T>())
    for (std::size_t m : {1u, 2u, 3u, 4u, 5u, 7u, 16u, 17u})
      for (std::size_t N : {1u, 2u, 3u, 5u, 8u, 13u})
        for (std::size_t offset : {0u, 1u}) {
          const auto abuf = values<T>(g, offset, m * n), bbuf = values<T>(g, offset, N * n);
          const std::span<const T> a(abuf.data() + offset, m * n), b(bbuf.data() + offset, N * n);
          std::vector<T> out(N * m);
          diffusion::kernels::row_dots<T>(a, b, n, out);
          for (std::size_t i = 0; i < N; ++i)
            for (std::size_t r = 0; r < m; ++r) {
              ld exact = 0, abs_sum = 0;
              for (std::size_t k = 0; k < n; ++k) {
                const ld t = static_cast<ld>(a[r * n + k]) * static_cast<ld>(b[i * n + k]);
                exact += t;
                abs_sum += t < 0 ? -t : t;
              }
              const ld tol = static_cast<ld>(gamma<T>(n) + reference_error(n)) * abs_sum;
              INFO("n " << n << " m " << m << " N " << N << " offset " << offset << " row " << r << " example " << i);
              CHECK(std::abs(static_cast<ld>(out[i * m + r]) - exact) <= tol);
            }
        }
}

TEMPLATE_TEST_CASE("row_dots: a product does not depend on the other rows, their number, the threads or the alignment",
                   "[linear]", float, double) {
  using T = TestType;
  constexpr std::uint64_t seed = 102;
  INFO("seed " << seed);
  test::normal_source g(seed);
  for (std::size_t n : lengths<T>()) {
    constexpr std::size_t m = 11, N = 70;  // 2 tiles of 4 rows + 3; 17 groups of 4 examples + 2
    const auto abuf = values<T>(g, 1, m * n), bbuf = values<T>(g, 1, N * n);
    const std::span<const T> a(abuf.data() + 1, m * n), b(bbuf.data() + 1, N * n);
    std::vector<T> all(N * m);
    diffusion::kernels::row_dots<T>(a, b, n, all);
    // Each row of a alone, against each row of b alone, from aligned copies.
    for (std::size_t r = 0; r < m; ++r) {
      const std::vector<T> ar(a.begin() + static_cast<std::ptrdiff_t>(r * n), a.begin() + static_cast<std::ptrdiff_t>((r + 1) * n));
      std::vector<T> row(N);
      diffusion::kernels::row_dots<T>(ar, b, n, row);
      for (std::size_t i = 0; i < N; ++i) {
        INFO("n " << n << " row " << r << " example " << i);
        CHECK(row[i] == all[i * m + r]);
        const std::vector<T> bi(b.begin() + static_cast<std::ptrdiff_t>(i * n), b.begin() + static_cast<std::ptrdiff_t>((i + 1) * n));
        T one = 0;
        diffusion::kernels::row_dots<T>(ar, bi, n, std::span<T>(&one, 1));
        CHECK(one == all[i * m + r]);
      }
    }
    // Every thread count (the split is over the rows of b, at multiples of 64).
    for (unsigned threads : {2u, 3u, 7u}) {
      std::vector<T> par(N * m);
      diffusion::kernels::row_dots<T>(a, b, n, par, diffusion::parallel_policy{threads, 1});
      INFO("n " << n << " threads " << threads);
      CHECK(par == all);
    }
  }
}

TEST_CASE("row_dots: many rows of a are taken in cache-sized chunks with the same products", "[linear]") {
  // 784 doubles per row: a chunk of 128 KiB holds 20 rows of a; 30 rows make two chunks (20, 10).
  constexpr std::uint64_t seed = 103;
  INFO("seed " << seed);
  test::normal_source g(seed);
  constexpr std::size_t n = 784, m = 30, N = 9;
  const auto a = values<double>(g, 0, m * n), b = values<double>(g, 0, N * n);
  std::vector<double> all(N * m);
  diffusion::kernels::row_dots<double>(a, b, n, all);
  for (std::size_t r = 0; r < m; ++r) {
    std::vector<double> row(N);
    diffusion::kernels::row_dots<double>(std::span<const double>(a).subspan(r * n, n), b, n, row);
    for (std::size_t i = 0; i < N; ++i) CHECK(row[i] == all[i * m + r]);
  }
}

TEMPLATE_TEST_CASE("add_weighted_rows: the plain madd loop bit for bit, within gamma_(J+1) of the long-double sum",
                   "[linear]", float, double) {
  using T = TestType;
  constexpr std::uint64_t seed = 104;
  INFO("seed " << seed);
  test::normal_source g(seed);
  for (std::size_t n : lengths<T>())
    for (std::size_t m : {1u, 2u, 3u, 4u, 5u, 16u})
      for (std::size_t J : {1u, 2u, 31u, 32u, 33u, 70u})
        for (std::size_t offset : {0u, 1u}) {
          constexpr std::size_t rows_of_b = 40;
          const auto bbuf = values<T>(g, offset, rows_of_b * n), wbuf = values<T>(g, offset, J * m);
          const std::span<const T> b(bbuf.data() + offset, rows_of_b * n), w(wbuf.data() + offset, J * m);
          std::vector<std::size_t> index(J);
          for (auto& i : index) i = static_cast<std::size_t>(g.uniform() * rows_of_b);  // any order, repeats
          const auto obuf = values<T>(g, offset, m * n);
          std::vector<T> out_buf = obuf;
          const std::span<T> out(out_buf.data() + offset, m * n);
          diffusion::kernels::add_weighted_rows<T>(w, index, b, n, out);
          for (std::size_t r = 0; r < m; ++r)
            for (std::size_t k = 0; k < n; ++k) {
              T plain = obuf[offset + r * n + k];
              ld exact = static_cast<ld>(plain), abs_sum = static_cast<ld>(plain < 0 ? -plain : plain);
              for (std::size_t j = 0; j < J; ++j) {
                plain = diffusion::simd::madd(w[j * m + r], b[index[j] * n + k], plain);
                const ld t = static_cast<ld>(w[j * m + r]) * static_cast<ld>(b[index[j] * n + k]);
                exact += t;
                abs_sum += t < 0 ? -t : t;
              }
              INFO("n " << n << " m " << m << " J " << J << " offset " << offset << " row " << r << " column " << k);
              CHECK(out[r * n + k] == plain);
              CHECK(std::abs(static_cast<ld>(out[r * n + k]) - exact) <= static_cast<ld>(gamma<T>(J + 1) + reference_error(J)) * abs_sum);
            }
        }
}

TEMPLATE_TEST_CASE("add_weighted_rows: all rows in order, every thread count, nothing to add", "[linear]", float, double) {
  using T = TestType;
  constexpr std::uint64_t seed = 105;
  INFO("seed " << seed);
  test::normal_source g(seed);
  for (std::size_t n : {1u, 7u, 64u, 65u, 200u}) {
    constexpr std::size_t m = 6, J = 45;
    const auto b = values<T>(g, 0, J * n), w = values<T>(g, 0, J * m), start = values<T>(g, 0, m * n);
    std::vector<std::size_t> identity(J);
    for (std::size_t j = 0; j < J; ++j) identity[j] = j;
    std::vector<T> with_index = start, without = start;
    diffusion::kernels::add_weighted_rows<T>(w, identity, b, n, with_index);
    diffusion::kernels::add_weighted_rows<T>(w, b, n, without);
    INFO("n " << n);
    CHECK(without == with_index);
    for (unsigned threads : {2u, 3u, 7u}) {
      std::vector<T> par = start, par_index = start;
      diffusion::kernels::add_weighted_rows<T>(w, b, n, par, diffusion::parallel_policy{threads, 1});
      diffusion::kernels::add_weighted_rows<T>(w, identity, b, n, par_index, diffusion::parallel_policy{threads, 1});
      INFO("threads " << threads);
      CHECK(par == without);
      CHECK(par_index == without);
    }
    // No rows to add (J = 0), or no output rows (m = 0): nothing changes.
    std::vector<T> unchanged = start;
    diffusion::kernels::add_weighted_rows<T>(std::span<const T>(), std::span<const std::size_t>(), b, n, unchanged);
    CHECK(unchanged == start);
    std::vector<T> none;
    diffusion::kernels::add_weighted_rows<T>(std::span<const T>(), b, n, none);
    std::vector<T> no_products;
    diffusion::kernels::row_dots<T>(std::span<const T>(), b, n, no_products);
    CHECK(none.empty());
    CHECK(no_products.empty());
  }
}
