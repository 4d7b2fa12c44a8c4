/// @file
/// @brief Dense products of rows: every dot product of two sets of rows (\f$A B^\mathsf{T}\f$) and
/// weighted sums of rows (\f$W^\mathsf{T} B\f$), blocked for the cache, SIMD, with stated error
/// bounds — the two matrix products of an exact denoiser of a data set, without a linear-algebra
/// library. Like the rest of kernels/, they know arrays and coefficients only.
///
/// **Layout.** A set of rows is a row-major span: row i of b is b[i·n, (i+1)·n). Outputs are
/// row-major too; the dot products come "row of b major" (the m dot products of one row of b
/// are contiguous), which is the order in which the kernel produces them.
///
/// **SIMD and accumulators.** Both kernels are written once over a lane type V, the library's
/// batch `xsimd::batch<T, simd::arch>` for the bulk and T for the tail (as in elementwise.hpp),
/// and every product feeding a sum is @ref diffusion::simd::madd "simd::madd". Each register tile
/// has 8 independent accumulators of W lanes (enough to hide the latency of the additions):
/// kernels::row_dots 4 rows of a × 2 rows of b (3 × 2, 2 × 4, 1 × 8 for the last rows of a),
/// kernels::add_weighted_rows 4 output rows × 2 batches of columns (likewise 2 × 4, 1 × 8).
///
/// **Cache blocking.** row_dots takes the rows of a in chunks of about 128 KiB (they stay in L2)
/// and reads each row of b from memory once per chunk (once in all for the ≤ 16 rows of a that
/// a batch of queries usually has), four rows of b at a time (eight when a has fewer than three
/// rows), which stay in L1 while every tile of the chunk uses them. add_weighted_rows visits the
/// rows of b in groups of 32: the group is read from memory once, in strips of 8 batches of
/// columns, each strip reused from L1 by every output tile; an output tile is loaded and
/// stored once per group.
///
/// **Summation order and reproducibility.** row_dots sums lane ℓ of the bulk over the elements
/// k ≡ ℓ (mod W), then the W lanes (`xsimd::hadd`), then the tail elements in order: the result
/// depends on n and the SIMD width W only — not on the tile, the chunk, the number of rows, or
/// the thread split. add_weighted_rows adds the terms j = 0, 1, … to the output in that order,
/// each by one madd: bit-identical to the plain loop `out[k] = madd(w_j, b_j[k], out[k])` over j,
/// whatever the tiling, the SIMD width or the thread split.
///
/// **Error bounds** (u the unit roundoff of T, \f$\gamma_h = hu/(1 - hu)\f$; first-order standard
/// results, Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1): every term of a sum
/// passes through at most h roundings, whence \f$|\hat s - s| \le \gamma_h \sum |t|\f$.
/// - row_dots: a term passes through at most ⌊n/W⌋ roundings in its lane (its product
///   included), W − 1 in `hadd` and n mod W in the tail, and the bulk is empty when n < W: h ≤ n
///   for every W, so
///   \f[ |\widehat{a\cdot b} - a\cdot b| \le \gamma_n \sum_k |a_k b_k| \le \gamma_n \lVert a\rVert_2\lVert b\rVert_2, \f]
///   the standard bound of a dot product in any summation order.
/// - add_weighted_rows over J rows: h ≤ J + 1, so
///   \f[ |\widehat{out}_k - out_k| \le \gamma_{J+1}\Big(|out^{(0)}_k| + \sum_j |w_j\,b_{jk}|\Big). \f]
///
/// Over- and underflow are those of the plain loops; a NaN or ±∞ input propagates.
///
/// **Aliasing.** The outputs must not overlap the inputs.
///
/// **Threads.** Both take an execution policy (sequential by default): row_dots splits the rows
/// of b, add_weighted_rows the columns, and a parallel policy's `min_elements_per_thread`
/// counts multiply–adds. Each output element is computed by the same operations either way,
/// so the result is bit-identical for every thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/execution.hpp"
#include "../core/simd.hpp"
#include "elementwise.hpp"

/// @addtogroup kernels
/// @{

namespace diffusion::kernels {

namespace detail {

/// Lanes of V: its batch size, or 1 for a scalar.
template <class V>
inline constexpr std::size_t lane_count = [] {
  if constexpr (is_scalar_lane<V>)
    return std::size_t{1};
  else
    return V::size;
}();

/// The sum of V's lanes (xsimd::hadd), or V itself.
template <class V>
DIFFUSION_INLINE auto lane_sum(const V& v) noexcept {
  if constexpr (is_scalar_lane<V>)
    return v;
  else
    return xsimd::hadd(v);
}

// ---- row_dots -------------------------------------------------------------------------

/// Rows of a per register tile of row_dots, and the most accumulators (batches) of one tile.
inline constexpr std::size_t dot_a_tile = 4;
inline constexpr std::size_t tile_accumulators = 8;
/// Bytes of rows of a that row_dots keeps in cache while it streams b.
inline constexpr std::size_t dot_a_chunk_bytes = 128 * 1024;

/// Columns of a tile with R rows: as many as keep R × columns ≤ tile_accumulators (at least 1),
/// and at most `limit`.
template <std::size_t R, std::size_t limit>
inline constexpr std::size_t tile_columns = std::min(limit, std::max<std::size_t>(1, tile_accumulators / R));

/// One step of a dot tile at element k: acc[r·E + e] += a_r[k…] · b_e[k…] for R rows of a and E of b.
template <std::size_t R, std::size_t E, class V, class T>
DIFFUSION_INLINE void dot_step(std::array<V, R * E>& acc, const T* a, const T* b, std::size_t n, std::size_t k) noexcept {
  std::array<V, E> bv;
  for (std::size_t e = 0; e < E; ++e) bv[e] = kernels::detail::load<V>(b + e * n + k);
  for (std::size_t r = 0; r < R; ++r) {
    const V av = kernels::detail::load<V>(a + r * n + k);
    for (std::size_t e = 0; e < E; ++e) acc[r * E + e] = simd::madd(av, bv[e], acc[r * E + e]);
  }
}

/// The R × E dot products of rows a_0…a_{R−1} with rows b_0…b_{E−1} (each n long):
/// out[e·ldo + r] = a_r · b_e. The bulk in batches, then the tail, by the same dot_step.
template <std::size_t R, std::size_t E, class T>
DIFFUSION_INLINE void dot_tile(const T* a, const T* b, std::size_t n, T* out, std::size_t ldo) noexcept {
  using B = typename bulk_lane<T>::type;
  std::array<T, R * E> s{};
  std::size_t k = 0;
  if constexpr (!is_scalar_lane<B>) {
    std::array<B, R * E> acc;
    acc.fill(B(T(0)));
    for (; k + B::size <= n; k += B::size) dot_step<R, E>(acc, a, b, n, k);
    for (std::size_t i = 0; i < R * E; ++i) s[i] = lane_sum(acc[i]);
  }
  for (; k < n; ++k) dot_step<R, E>(s, a, b, n, k);
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t e = 0; e < E; ++e) out[e * ldo + r] = s[r * E + e];
}

/// R rows of a against the E rows of b from b on, in tiles of R × tile_columns<R, E>.
template <std::size_t R, std::size_t E, class T>
DIFFUSION_INLINE void dot_tiles(const T* a, const T* b, std::size_t n, T* out, std::size_t ldo) noexcept {
  constexpr std::size_t ET = tile_columns<R, E>;
  static_assert(E % ET == 0);
  for (std::size_t e = 0; e < E; e += ET) dot_tile<R, ET>(a, b + e * n, n, out + e * ldo, ldo);
}

/// Rows [0, m) of a against the E rows of b from b on: groups of 4 rows, then the remainder.
template <std::size_t E, class T>
void dot_rows_against(const T* a, std::size_t m, const T* b, std::size_t n, T* out, std::size_t ldo) noexcept {
  constexpr std::size_t R = dot_a_tile;
  std::size_t r = 0;
  for (; r + R <= m; r += R) dot_tiles<R, E>(a + r * n, b, n, out + r, ldo);
  switch (m - r) {
    case 3:
      dot_tiles<3, E>(a + r * n, b, n, out + r, ldo);
      break;
    case 2:
      dot_tiles<2, E>(a + r * n, b, n, out + r, ldo);
      break;
    case 1:
      dot_tiles<1, E>(a + r * n, b, n, out + r, ldo);
      break;
    default:
      break;
  }
}

/// Rows of b from i on in groups of E (kept in L1 while every tile of the chunk of a uses them);
/// returns the first row not done.
template <std::size_t E, class T>
std::size_t dot_groups(const T* a, std::size_t m, std::size_t ldo, const T* b, std::size_t i, std::size_t count,
                       std::size_t n, T* out) noexcept {
  for (; i + E <= count; i += E) dot_rows_against<E>(a, m, b + i * n, n, out + i * ldo, ldo);
  return i;
}

/// row_dots for the rows [0, count) of b from b on: out[i·ldo + r] = a_r · b_i, r < m.
/// Rows of b go in groups of 4 (8 when a has fewer than 3 rows, so that a tile still has 8
/// accumulators), then 4, 2, 1.
template <class T>
void row_dots_range(const T* a, std::size_t m, const T* b, std::size_t count, std::size_t n, T* out) noexcept {
  const std::size_t chunk = std::max<std::size_t>(dot_a_tile, dot_a_chunk_bytes / (n * sizeof(T)) / dot_a_tile * dot_a_tile);
  for (std::size_t r0 = 0; r0 < m; r0 += chunk) {
    const std::size_t rows = std::min(chunk, m - r0);
    const T* ar = a + r0 * n;
    T* o = out + r0;
    std::size_t i = rows < 3 ? dot_groups<8>(ar, rows, m, b, 0, count, n, o) : 0;
    i = dot_groups<4>(ar, rows, m, b, i, count, n, o);
    i = dot_groups<2>(ar, rows, m, b, i, count, n, o);
    dot_groups<1>(ar, rows, m, b, i, count, n, o);
  }
}

// ---- add_weighted_rows ----------------------------------------------------------------

/// Rows of b per group of add_weighted_rows; output rows per register tile; batches of columns
/// per strip (each strip of the group's rows is read from memory once and reused from L1).
inline constexpr std::size_t axpy_group = 32;
inline constexpr std::size_t axpy_rows = 4;
inline constexpr std::size_t axpy_strip = 8;

/// The R output rows × K lanes-of-V columns from col on: out[r·n + c] += Σ_j w[j·m + r]·rows[j][c]
/// for j < J, in order j = 0, 1, …
template <std::size_t R, std::size_t K, class V, class T>
DIFFUSION_INLINE void axpy_tile(const T* const* rows, std::size_t J, const T* w, std::size_t m, std::size_t col, T* out,
                                std::size_t n) noexcept {
  constexpr std::size_t width = lane_count<V>;
  std::array<V, R * K> acc;
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < K; ++c) acc[r * K + c] = kernels::detail::load<V>(out + r * n + col + c * width);
  for (std::size_t j = 0; j < J; ++j) {
    std::array<V, K> bv;
    for (std::size_t c = 0; c < K; ++c) bv[c] = kernels::detail::load<V>(rows[j] + col + c * width);
    for (std::size_t r = 0; r < R; ++r) {
      const V wr(w[j * m + r]);
      for (std::size_t c = 0; c < K; ++c) acc[r * K + c] = simd::madd(wr, bv[c], acc[r * K + c]);
    }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < K; ++c) kernels::detail::store(out + r * n + col + c * width, acc[r * K + c]);
}

/// R output rows × K lanes-of-V columns from col on, in tiles of R × tile_columns<R, K>.
template <std::size_t R, std::size_t K, class V, class T>
DIFFUSION_INLINE void axpy_tiles(const T* const* rows, std::size_t J, const T* w, std::size_t m, std::size_t col, T* out,
                                 std::size_t n) noexcept {
  constexpr std::size_t KT = tile_columns<R, K>, width = lane_count<V>;
  static_assert(K % KT == 0);
  for (std::size_t c = 0; c < K; c += KT) axpy_tile<R, KT, V>(rows, J, w, m, col + c * width, out, n);
}

/// All m output rows for the K lanes-of-V columns from col on: groups of 4 rows, then the remainder.
template <std::size_t K, class V, class T>
void axpy_columns(const T* const* rows, std::size_t J, const T* w, std::size_t m, std::size_t col, T* out,
                  std::size_t n) noexcept {
  constexpr std::size_t R = axpy_rows;
  std::size_t r = 0;
  for (; r + R <= m; r += R) axpy_tiles<R, K, V>(rows, J, w + r, m, col, out + r * n, n);
  switch (m - r) {
    case 3:
      axpy_tiles<3, K, V>(rows, J, w + r, m, col, out + r * n, n);
      break;
    case 2:
      axpy_tiles<2, K, V>(rows, J, w + r, m, col, out + r * n, n);
      break;
    case 1:
      axpy_tiles<1, K, V>(rows, J, w + r, m, col, out + r * n, n);
      break;
    default:
      break;
  }
}

/// add_weighted_rows for the columns [begin, end) and the J rows of b given by row(j): strips
/// of 8 batches, then 4, 2, 1 batches, then single columns.
template <class T, class Row>
void add_weighted_rows_range(std::size_t J, const Row& row, const T* w, std::size_t m, std::size_t n, T* out,
                             std::size_t begin, std::size_t end) noexcept {
  using B = typename bulk_lane<T>::type;
  constexpr std::size_t width = lane_count<B>;
  std::array<const T*, axpy_group> rows;
  for (std::size_t j0 = 0; j0 < J; j0 += axpy_group) {
    const std::size_t g = std::min(axpy_group, J - j0);
    for (std::size_t j = 0; j < g; ++j) rows[j] = row(j0 + j);
    const T* wg = w + j0 * m;
    std::size_t col = begin;
    if constexpr (!is_scalar_lane<B>) {
      for (; col + axpy_strip * width <= end; col += axpy_strip * width)
        axpy_columns<axpy_strip, B>(rows.data(), g, wg, m, col, out, n);
      if (col + 4 * width <= end) axpy_columns<4, B>(rows.data(), g, wg, m, col, out, n), col += 4 * width;
      if (col + 2 * width <= end) axpy_columns<2, B>(rows.data(), g, wg, m, col, out, n), col += 2 * width;
      if (col + width <= end) axpy_columns<1, B>(rows.data(), g, wg, m, col, out, n), col += width;
    }
    for (; col < end; ++col) axpy_columns<1, T>(rows.data(), g, wg, m, col, out, n);
  }
}

/// Column grain of add_weighted_rows' thread split (a multiple of every strip width).
inline constexpr std::size_t axpy_column_grain = 64;
/// Row grain of row_dots' thread split.
inline constexpr std::size_t dot_row_grain = 64;

/// The policy for a split over units that cost `work` multiply–adds each: a parallel policy's
/// min_elements_per_thread, which counts multiply–adds here, becomes a number of units.
template <class P>
P per_unit(const P& policy, std::size_t work) noexcept {
  if constexpr (std::is_same_v<P, parallel_policy>) {
    P p = policy;
    p.min_elements_per_thread = std::max<std::size_t>(1, policy.min_elements_per_thread / std::max<std::size_t>(1, work));
    return p;
  } else {
    return policy;
  }
}

}  // namespace detail

/// @brief Every dot product of a row of a with a row of b:
/// \f[ out_{i m + r} = \sum_{k<n} a_{r n + k}\, b_{i n + k},\qquad r < m = |a|/n,\; i < N = |b|/n. \f]
///
/// This is \f$(A B^\mathsf{T})^\mathsf{T}\f$ for row-major A (m × n) and B (N × n), stored so that the m
/// products of row i of b are contiguous. Error (file comment):
/// \f$|\widehat{out} - out| \le \gamma_n \sum_k |a_{rk} b_{ik}| \le \gamma_n \lVert a_r\rVert_2\lVert b_i\rVert_2\f$,
/// \f$\gamma_n = nu/(1-nu)\f$. The value of each product depends only on its two rows, n and the
/// SIMD width (not on m, N, the position of the rows or the thread split).
/// @param[in] a m rows of n elements, row-major.
/// @param[in] b N rows of n elements, row-major.
/// @param[in] n the row length, ≥ 1.
/// @param[out] out N·m values (must not overlap a or b).
/// @param[in] policy sequential (default) or parallel (splits the rows of b; same result).
/// @pre n ≥ 1, n divides a.size() and b.size(), out.size() = (a.size()/n)·(b.size()/n) (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void row_dots(std::span<const T> a, std::span<const T> b, std::size_t n, std::span<T> out, const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(n >= 1 && a.size() % n == 0 && b.size() % n == 0);
  const std::size_t m = a.size() / n, count = b.size() / n;
  DIFFUSION_ASSERT(out.size() == m * count);
  if (m == 0) return;
  diffusion::detail::for_each_range(detail::per_unit(policy, m * n), count, detail::dot_row_grain, [&](std::size_t begin, std::size_t end) {
    detail::row_dots_range(a.data(), m, b.data() + begin * n, end - begin, n, out.data() + begin * m);
  });
}

/// @brief Adds weighted sums of chosen rows of b to the m rows of out:
/// \f[ out_{r n + k} \mathrel{+}= \sum_{j<J} w_{j m + r}\; b_{\mathit{index}_j n + k},\qquad r < m = |out|/n,\; J = |\mathit{index}|. \f]
///
/// This is \f$out \mathrel{+}= W^\mathsf{T} B_{\mathit{index}}\f$ with W (J × m) row-major: the m weights of
/// visited row j are contiguous. The terms are added in the order j = 0, 1, …, each by one
/// simd::madd, so every output element equals, bit for bit, the plain loop
/// `for j: out[r·n+k] = madd(w[j·m+r], b[index[j]·n+k], out[r·n+k])`. Error (file comment):
/// \f$\le \gamma_{J+1}(|out^{(0)}| + \sum_j |w_{jm+r} b_{\mathit{index}_j n+k}|)\f$.
/// Zero weights cost as much as others: list only the rows that matter in `index`.
/// @param[in] w J·m weights, row j of W for visited row j.
/// @param[in] index J row numbers of b (any order, repeats allowed), each < b.size()/n.
/// @param[in] b rows of n elements, row-major.
/// @param[in] n the row length, ≥ 1.
/// @param[in,out] out m rows of n elements, added to (must not overlap w or b).
/// @param[in] policy sequential (default) or parallel (splits the columns; same result).
/// @pre n ≥ 1, n divides b.size() and out.size(), w.size() = J·m, every index < b.size()/n (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void add_weighted_rows(std::span<const T> w, std::span<const std::size_t> index, std::span<const T> b, std::size_t n,
                       std::span<T> out, const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(n >= 1 && b.size() % n == 0 && out.size() % n == 0);
  const std::size_t m = out.size() / n, J = index.size();
  DIFFUSION_ASSERT(w.size() == J * m);
  DIFFUSION_ASSERT(std::all_of(index.begin(), index.end(), [&](std::size_t i) { return i < b.size() / n; }));
  if (m == 0 || J == 0) return;
  const T* base = b.data();
  const std::size_t* idx = index.data();
  const auto row = [base, idx, n](std::size_t j) { return base + idx[j] * n; };
  diffusion::detail::for_each_range(detail::per_unit(policy, J * m), n, detail::axpy_column_grain, [&](std::size_t begin, std::size_t end) {
    detail::add_weighted_rows_range(J, row, w.data(), m, n, out.data(), begin, end);
  });
}

/// @brief kernels::add_weighted_rows over all rows of b in order (index = 0, 1, …, J − 1 with
/// J = b.size()/n): \f$out \mathrel{+}= W^\mathsf{T} B\f$. Same order, bits and bound.
/// @param[in] w J·m weights; @param[in] b J rows of n elements; @param[in] n the row length, ≥ 1;
/// @param[in,out] out m rows of n elements, added to; @param[in] policy sequential (default) or parallel.
/// @pre n ≥ 1, n divides b.size() and out.size(), w.size() = (b.size()/n)·(out.size()/n) (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void add_weighted_rows(std::span<const T> w, std::span<const T> b, std::size_t n, std::span<T> out,
                       const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(n >= 1 && b.size() % n == 0 && out.size() % n == 0);
  const std::size_t m = out.size() / n, J = b.size() / n;
  DIFFUSION_ASSERT(w.size() == J * m);
  if (m == 0 || J == 0) return;
  const T* base = b.data();
  const auto row = [base, n](std::size_t j) { return base + j * n; };
  diffusion::detail::for_each_range(detail::per_unit(policy, J * m), n, detail::axpy_column_grain, [&](std::size_t begin, std::size_t end) {
    detail::add_weighted_rows_range(J, row, w.data(), m, n, out.data(), begin, end);
  });
}

}  // namespace diffusion::kernels

/// @}
