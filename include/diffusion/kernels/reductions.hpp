/// @file
/// @brief Accurate, SIMD, optionally threaded reductions: sums, sums of squares, squared
/// distances, dot products, Euclidean norms and mapped sums, with a stated error bound each.
///
/// **Algorithm.** The n terms are cut into blocks of `reduction_block` elements. Inside a
/// block, term k goes to lane k mod 16 (`reduction_lanes`); each lane keeps a running sum
/// with Knuth's error-free TwoSum, the rounding errors gathered in a second accumulator
/// (Ogita, Rump & Oishi 2005, "Accurate sum and dot product", Algorithm Sum2, applied per
/// lane). The 16 lanes are then combined pairwise ((0,1), (2,3), …), and the block sums
/// pairwise in block order (a binary counter: block 2m with 2m+1, then pairs of pairs, …),
/// every combination again through TwoSum. The result is the high part plus the gathered
/// errors.
///
/// **Bound.** Every addition of the high parts is error-free-transformed and the tree has
/// depth \f$D \le n_\ell + 4 + \lceil\log_2\lceil n/B\rceil\rceil\f$ with \f$n_\ell = B/16 = 256\f$,
/// \f$B\f$ = `reduction_block`; the errors are summed in a tree of depth ≤ 2D. So for
/// computed terms \f$t_i\f$ (Ogita–Rump–Oishi, Proposition 4.5, with the tree depth in place of n)
/// \f[ \Bigl|\hat s - \sum t_i\Bigr| \le u\,\Bigl|\sum t_i\Bigr| + (1+u)\,\gamma_D\,\gamma_{2D}\sum |t_i|,
///     \qquad \gamma_k = \frac{k u}{1 - k u},\; u = 2^{-53}, \f]
/// and since \f$D \le 312\f$ for any n < 2⁶⁴, \f$(1+u)\gamma_D\gamma_{2D} < 2\cdot10^{5}\,u^2 \approx 2.2\cdot10^{-27}\f$:
/// the result is the exact sum rounded once, up to a term that matters only for sums
/// cancelling by more than ~10¹⁰. (A naive loop has \f$\gamma_{n-1}\sum|t_i|\f$.) The bound
/// assumes no partial sum of the high parts overflows (guaranteed when \f$\sum|t_i|\f$ < DBL_MAX);
/// TwoSum is exact under underflow, so no term for it. Each function's Doxygen comment adds
/// the rounding of its terms.
///
/// **float inputs are accumulated in double** (and the result is a double for both types):
/// the conversion is exact and costs one instruction per SIMD batch, while the kernel is bound
/// by the compensated additions and memory anyway; in return u is 2⁻⁵³ rather than 2⁻²⁴,
/// squares and products of floats are exact in double (24 + 24 ≤ 53 bits), so sum_of_squares
/// and dot of floats have no term error at all, and no square of a float can overflow.
///
/// **Reproducibility.** Lane, block and combination order depend on n only: the result is
/// bit-identical for every thread count of a @ref diffusion::parallel_policy (threads split on
/// multiples of `reduction_block`, the block sums are combined on the calling thread), for
/// every SIMD width (SSE2, AVX, AVX-512 and the scalar path give the same lanes), and for the
/// SIMD and scalar code paths (a term that is a product is kept from being fused into the
/// following addition by the compiler's floating-point contraction).
///
/// **Non-finite terms** propagate as in a naive sum (±∞, NaN); the error terms never turn an
/// infinite result into NaN.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/execution.hpp"
#include "../core/simd.hpp"
#include "../core/tensor.hpp"

/// Forces inlining of the reduction's per-batch building blocks (their accumulators must stay in registers).
#if defined(__GNUC__) || defined(__clang__)
#define DIFFUSION_REDUCE_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define DIFFUSION_REDUCE_INLINE __forceinline
#else
#define DIFFUSION_REDUCE_INLINE inline
#endif

/// @defgroup reductions Reductions
/// @brief Compensated, SIMD, thread-reproducible sums with stated error bounds (u = 2⁻⁵³ throughout).
/// @{

namespace diffusion {

/// @brief Elements per reduction block: the unit of thread splitting and of the fixed
/// combination order (a multiple of every SIMD width and of @ref reduction_lanes).
inline constexpr std::size_t reduction_block = 4096;

/// @brief Interleaved accumulators per block: term k of a block goes to lane k mod 16, in the
/// scalar path and for every SIMD width alike (16 is a multiple of 2, 4 and 8 doubles).
inline constexpr std::size_t reduction_lanes = 16;

static_assert(reduction_block % reduction_lanes == 0);

namespace detail {

#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE) || (XSIMD_WITH_NEON && !XSIMD_WITH_NEON64)
inline constexpr bool reduction_simd = false;  // no double batches: the scalar path only
using reduction_batch = double;
#else
inline constexpr bool reduction_simd = true;
using reduction_batch = xsimd::batch<double, simd::arch>;
static_assert(reduction_lanes % reduction_batch::size == 0);
#endif

/// The high part and the gathered rounding errors of a partial sum: value hi + lo.
struct partial_sum {
  double hi = 0.0, lo = 0.0;
};

/// Keeps the compiler from fusing the product that computed v into a following addition
/// (-ffp-contract=fast, GCC's default in GNU mode): TwoSum needs the rounded term, and the
/// scalar and SIMD paths must execute the same operations. No instruction is emitted.
template <class V>
DIFFUSION_REDUCE_INLINE V opaque(V v) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__SSE2__) || defined(__aarch64__))
  if constexpr (std::is_same_v<V, double>) {
#if defined(__SSE2__)
    asm("" : "+x"(v));
#else
    asm("" : "+w"(v));
#endif
  } else {
    typename V::register_type r = v;
#if defined(__SSE2__)
    if constexpr (sizeof r == 64)
      asm("" : "+v"(r));
    else
      asm("" : "+x"(r));
#else
    asm("" : "+w"(r));
#endif
    v = V(r);
  }
#endif
  return v;
}

/// One TwoSum step of a lane: s + c ← s + c + x, with s the rounded sum and c gathering the
/// exact rounding error of each addition (Knuth's TwoSum: 6 additions, no branch).
template <class V>
DIFFUSION_REDUCE_INLINE void lane_add(V& s, V& c, V x) noexcept {
  const V t = s + x;
  const V z = t - s;
  c = c + ((s - (t - z)) + (x - z));
  s = t;
}

/// (a.hi + a.lo) + (b.hi + b.lo): the high parts through TwoSum, the error parts added.
inline partial_sum combine(partial_sum a, partial_sum b) noexcept {
  double s = a.hi, c = a.lo + b.lo;
  lane_add(s, c, b.hi);
  return {s, c};
}

/// The final value: hi + lo, or hi alone when hi is not finite (lo is NaN then).
inline double value_of(partial_sum p) noexcept { return std::isfinite(p.hi) ? p.hi + p.lo : p.hi; }

/// Pairwise combination of block sums in block order, streaming (no allocation): after
/// block m the stack holds one partial sum per set bit of m, the oldest covering most blocks.
class pairwise_combiner {
 public:
  void push(partial_sum x) noexcept {
    for (std::size_t m = count_++; m & 1; m >>= 1) x = combine(stack_[--top_], x);
    stack_[top_++] = x;
  }
  [[nodiscard]] partial_sum result() const noexcept {
    if (top_ == 0) return {};
    std::size_t i = top_ - 1;
    partial_sum r = stack_[i];
    while (i-- > 0) r = combine(stack_[i], r);
    return r;
  }

 private:
  std::array<partial_sum, 8 * sizeof(std::size_t)> stack_{};
  std::size_t top_ = 0, count_ = 0;
};

/// A batch of doubles from `size` consecutive T (float converted exactly), unaligned.
template <class B, class T>
DIFFUSION_REDUCE_INLINE B load_as_double(const T* p) noexcept {
  if constexpr (std::is_same_v<T, double>) {
    return B::load_unaligned(p);
  } else {
    [[maybe_unused]] constexpr std::size_t bytes = sizeof(typename B::register_type);
#if defined(__AVX512F__)
    if constexpr (bytes == 64) return B(_mm512_cvtps_pd(_mm256_loadu_ps(p)));
#endif
#if defined(__AVX__)
    if constexpr (bytes == 32) return B(_mm256_cvtps_pd(_mm_loadu_ps(p)));
#endif
#if defined(__SSE2__)
    if constexpr (bytes == 16) return B(_mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#endif
#if defined(__aarch64__)
    if constexpr (bytes == 16) return B(vcvt_f64_f32(vld1_f32(p)));
#endif
    return B::load_unaligned(p);  // xsimd's generic converting load
  }
}

/// The built-in term kinds: a function of one or two inputs that works on double and on batches.
struct term_identity {
  static constexpr bool product = false;
  template <class V>
  DIFFUSION_REDUCE_INLINE static V apply(V x) noexcept { return x; }
};
struct term_square {
  static constexpr bool product = true;
  template <class V>
  DIFFUSION_REDUCE_INLINE static V apply(V x) noexcept { return x * x; }
};
struct term_squared_difference {
  static constexpr bool product = true;
  template <class V>
  DIFFUSION_REDUCE_INLINE static V apply(V x, V y) noexcept {
    const V d = x - y;
    return d * d;
  }
};
struct term_product {
  static constexpr bool product = true;
  template <class V>
  DIFFUSION_REDUCE_INLINE static V apply(V x, V y) noexcept { return x * y; }
};

/// The term of a built-in kind for element k of the inputs p..., as double or as a batch.
template <class Term, class V, class... T>
DIFFUSION_REDUCE_INLINE V term_at(std::size_t k, const T*... p) noexcept {
  V t;
  if constexpr (std::is_same_v<V, double>)
    t = Term::apply(static_cast<double>(p[k])...);
  else
    t = Term::apply(load_as_double<V>(p + k)...);
  if constexpr (Term::product) t = opaque(t);
  return t;
}

/// Folds the 16 lane sums of a block pairwise: (0,1), (2,3), … then pairs of pairs.
inline partial_sum fold_lanes(double (&s)[reduction_lanes], double (&c)[reduction_lanes]) noexcept {
  for (std::size_t w = reduction_lanes / 2; w >= 1; w /= 2)
    for (std::size_t j = 0; j < w; ++j) {
      const partial_sum r = combine({s[2 * j], c[2 * j]}, {s[2 * j + 1], c[2 * j + 1]});
      s[j] = r.hi;
      c[j] = r.lo;
    }
  return {s[0], c[0]};
}

/// The sum of the terms of elements [begin, begin + len) (len ≤ reduction_block) of a
/// built-in kind: SIMD over whole groups of 16, scalar for the rest, same lanes.
template <class Term, class... T>
partial_sum block_sum(std::size_t begin, std::size_t len, const T*... p) noexcept {
  constexpr std::size_t L = reduction_lanes;
  alignas(64) double s[L] = {}, c[L] = {};
  std::size_t k = 0;
  if constexpr (reduction_simd) {
    using B = reduction_batch;
    constexpr std::size_t W = B::size, G = L / W;
    B bs[G], bc[G];
    for (std::size_t g = 0; g < G; ++g) bs[g] = bc[g] = B(0.0);
    for (; k + L <= len; k += L)
      for (std::size_t g = 0; g < G; ++g) lane_add(bs[g], bc[g], term_at<Term, B>(begin + k + g * W, p...));
    for (std::size_t g = 0; g < G; ++g) {
      bs[g].store_aligned(s + g * W);
      bc[g].store_aligned(c + g * W);
    }
  }
  for (; k + L <= len; k += L)
    for (std::size_t j = 0; j < L; ++j) lane_add(s[j], c[j], term_at<Term, double>(begin + k + j, p...));
  for (std::size_t j = 0; k + j < len; ++j) lane_add(s[j], c[j], term_at<Term, double>(begin + k + j, p...));
  return fold_lanes(s, c);
}

/// The same lanes for a scalar term function f(k) → double (transform_sum, indexed_sum).
template <class F>
partial_sum block_sum_indexed(std::size_t begin, std::size_t len, F& f) {
  constexpr std::size_t L = reduction_lanes;
  double s[L] = {}, c[L] = {};
  std::size_t k = 0;
  for (; k + L <= len; k += L)
    for (std::size_t j = 0; j < L; ++j) lane_add(s[j], c[j], opaque(static_cast<double>(f(begin + k + j))));
  for (std::size_t j = 0; k + j < len; ++j) lane_add(s[j], c[j], opaque(static_cast<double>(f(begin + k + j))));
  return fold_lanes(s, c);
}

/// Runs `block(begin, len)` over the blocks of [0, n) under `policy` and combines the block
/// sums in the fixed pairwise order. Sequential (and single-thread parallel) runs allocate nothing.
template <execution_policy P, class Block>
double reduce_blocks(const P& policy, std::size_t n, Block&& block) {
  constexpr std::size_t B = reduction_block;
  if constexpr (std::is_same_v<std::remove_cvref_t<P>, parallel_policy>) {
    if (n > B && thread_count(policy, n) > 1) {
      std::vector<partial_sum> sums((n + B - 1) / B);
      for_each_range(policy, n, B, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; i += B) sums[i / B] = block(i, std::min(B, end - i));
      });
      pairwise_combiner acc;
      for (const partial_sum& p : sums) acc.push(p);
      return value_of(acc.result());
    }
  }
  pairwise_combiner acc;
  for (std::size_t i = 0; i < n; i += B) acc.push(block(i, std::min(B, n - i)));
  return value_of(acc.result());
}

template <class Term, execution_policy P, class... T>
double reduce_terms(const P& policy, std::size_t n, const T*... p) {
  return reduce_blocks(policy, n, [&](std::size_t begin, std::size_t len) { return block_sum<Term>(begin, len, p...); });
}

template <class X, class Y>
inline constexpr bool same_tensor_value_v = std::same_as<tensor_value_t<X>, tensor_value_t<Y>>;

/// max |x_k|, and whether every x_k is finite (for the overflow/underflow rescue of the norms).
template <class T>
std::pair<double, bool> max_abs(std::span<const T> x) noexcept {
  double m = 0.0;
  bool finite = true;
  for (const T v : x) {
    const double a = std::abs(static_cast<double>(v));
    finite = finite && std::isfinite(a);
    m = a > m ? a : m;
  }
  return {m, finite};
}

/// sqrt of a sum of squares that overflowed or lost accuracy to underflow, recomputed with the
/// terms scaled by 2^-e, the power of two that brings max |d_k| into [1/2, 1): `difference(k, e)`
/// returns d_k · 2^-e, scaling each input by ldexp (exact, and no scale factor that could itself
/// overflow). A rare path: scalar, one ldexp per input.
template <execution_policy P, class F>
double rescaled_norm(const P& policy, std::size_t n, double max_abs_value, F&& difference) {
  const int e = std::ilogb(max_abs_value) + 1;
  const double ss = reduce_blocks(policy, n, [&](std::size_t begin, std::size_t len) {
    auto f = [&](std::size_t k) {
      const double d = difference(k, -e);
      return d * d;
    };
    return block_sum_indexed(begin, len, f);
  });
  return std::ldexp(std::sqrt(ss), e);
}

/// Whether sqrt(ss) needs the rescue: ss overflowed, or is so small that squares of the
/// largest terms may have been subnormal (below 2^-960 the relative accuracy is not assured).
inline bool norm_needs_rescue(double ss) noexcept { return !(ss >= 0x1p-960 && ss <= std::numeric_limits<double>::max()); }

}  // namespace detail

/// @brief \f$\sum_{i<n} x_i\f$, compensated (see the file comment), float accumulated in double.
///
/// Bound (u = 2⁻⁵³, the terms are the inputs, exactly):
/// \f$|\hat s - s| \le u|s| + 2\cdot10^{5}\,u^2 \sum|x_i|\f$.
/// @param[in] x the values (any @ref diffusion::tensor; empty gives 0).
/// @param[in] policy @ref diffusion::seq (default) or a @ref diffusion::parallel_policy; the
///            result is bit-identical for both and every thread count.
/// @return the sum as a double.
template <tensor X, execution_policy P = sequential_policy>
[[nodiscard]] double sum(const X& x, const P& policy = {}) {
  const auto v = as_span(x);
  return detail::reduce_terms<detail::term_identity>(policy, v.size(), v.data());
}

/// @brief \f$\sum x_i^2\f$, compensated; float squares are exact in double.
///
/// Bound: \f$|\hat s - s| \le (u + u_t + 2\cdot10^{5}u^2)\,s\f$ with \f$u_t = 0\f$ for float and
/// \f$u_t = u\f$ for double (the rounding of each square), i.e. ≤ 1.0001u·s (float) and
/// ≤ 2.0001u·s (double), plus n·2⁻¹⁰⁷⁵ for double squares that underflow.
/// Overflows to +∞ only for double inputs with s > DBL_MAX (use @ref norm2 for a rescued norm).
/// @param[in] x the values.
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the sum of squares as a double.
template <tensor X, execution_policy P = sequential_policy>
[[nodiscard]] double sum_of_squares(const X& x, const P& policy = {}) {
  const auto v = as_span(x);
  return detail::reduce_terms<detail::term_square>(policy, v.size(), v.data());
}

/// @brief \f$\sum (x_i - y_i)^2\f$ (n times the MSE), compensated, differences formed in double.
///
/// Each term is \f$(x_i - y_i)^2(1+\theta)\f$ with \f$|\theta| \le \gamma_3\f$ (difference and square
/// rounded; for float inputs the difference is exact unless the exponents of x_i and y_i differ
/// by more than 29, so then \f$|\theta| \le u\f$). Bound:
/// \f$|\hat s - s| \le (u + \gamma_3 + 2\cdot10^{5}u^2)\,s \le 4.0001\,u\,s\f$ (≤ 2.0001u·s in the exact-difference case).
/// @param[in] x first operand (n elements).
/// @param[in] y second operand (n elements, same element type).
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the squared Euclidean distance as a double.
/// @throws std::invalid_argument naming x and y when their sizes differ.
template <tensor X, tensor Y, execution_policy P = sequential_policy>
[[nodiscard]] double squared_distance(const X& x, const Y& y, const P& policy = {}) {
  static_assert(detail::same_tensor_value_v<X, Y>, "squared_distance: x and y must have the same element type");
  const auto a = as_span(x);
  const auto b = as_span(y);
  detail::check_same_size("diffusion::squared_distance", "x", a.size(), "y", b.size());
  return detail::reduce_terms<detail::term_squared_difference>(policy, a.size(), a.data(), b.data());
}

/// @brief \f$\sum x_i y_i\f$, compensated; float products are exact in double.
///
/// Bound: \f$|\hat s - s| \le u|s| + (u_t + 2\cdot10^{5}u^2)\sum|x_i y_i|\f$, \f$u_t = 0\f$ for float,
/// \f$u_t = u\f$ for double (each product rounded; plus n·2⁻¹⁰⁷⁵ if products underflow). For float
/// inputs this is the correctly rounded dot product up to the u² term.
/// @param[in] x first operand (n elements).
/// @param[in] y second operand (n elements, same element type).
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the dot product as a double.
/// @throws std::invalid_argument naming x and y when their sizes differ.
template <tensor X, tensor Y, execution_policy P = sequential_policy>
[[nodiscard]] double dot(const X& x, const Y& y, const P& policy = {}) {
  static_assert(detail::same_tensor_value_v<X, Y>, "dot: x and y must have the same element type");
  const auto a = as_span(x);
  const auto b = as_span(y);
  detail::check_same_size("diffusion::dot", "x", a.size(), "y", b.size());
  return detail::reduce_terms<detail::term_product>(policy, a.size(), a.data(), b.data());
}

/// @brief The Euclidean norm \f$\lVert x\rVert_2 = \sqrt{\sum x_i^2}\f$, without overflow or underflow.
///
/// `sqrt(sum_of_squares(x))`; when that sum overflowed or is below 2⁻⁹⁶⁰ (only possible for
/// double inputs, or for an all-zero or tiny float x) the squares are recomputed from x scaled
/// by an exact power of two. Bound: \f$|\hat r - r| \le (u + (u + u_t)/2 + 10^{5}u^2)\,r\f$, i.e. ≤ 1.5001u·r
/// (float) and ≤ 2.0001u·r (double). Non-finite inputs give +∞ or NaN.
/// @param[in] x the values.
/// @param[in] policy sequential (default) or parallel, same result.
/// @return ‖x‖₂.
template <tensor X, execution_policy P = sequential_policy>
[[nodiscard]] double norm2(const X& x, const P& policy = {}) {
  const auto v = as_span(x);
  const double ss = sum_of_squares(v, policy);
  if (!detail::norm_needs_rescue(ss)) return std::sqrt(ss);
  const auto [m, finite] = detail::max_abs(v);
  if (!finite || m == 0.0) return std::sqrt(ss);  // ∞ / NaN inputs, or x = 0
  return detail::rescaled_norm(policy, v.size(), m, [v](std::size_t k, int e) {
    return std::ldexp(static_cast<double>(v[k]), e);
  });
}

/// @brief The Euclidean distance \f$\lVert x - y\rVert_2\f$, without overflow or underflow.
///
/// `sqrt(squared_distance(x, y))`, rescued as in @ref norm2 (x and y scaled by the same power of
/// two before subtracting). Bound: \f$|\hat r - r| \le (u + (u + \gamma_3)/2 + 10^{5}u^2)\,r\f$ ≤ 3.0001u·r
/// (≤ 2.0001u·r for float inputs whose differences are exact in double).
/// @param[in] x first operand (n elements).
/// @param[in] y second operand (n elements, same element type).
/// @param[in] policy sequential (default) or parallel, same result.
/// @return ‖x − y‖₂.
/// @throws std::invalid_argument naming x and y when their sizes differ.
template <tensor X, tensor Y, execution_policy P = sequential_policy>
[[nodiscard]] double distance2(const X& x, const Y& y, const P& policy = {}) {
  static_assert(detail::same_tensor_value_v<X, Y>, "distance2: x and y must have the same element type");
  const auto a = as_span(x);
  const auto b = as_span(y);
  detail::check_same_size("diffusion::distance2", "x", a.size(), "y", b.size());
  const double ss = detail::reduce_terms<detail::term_squared_difference>(policy, a.size(), a.data(), b.data());
  if (!detail::norm_needs_rescue(ss)) return std::sqrt(ss);
  const auto [ma, fa] = detail::max_abs(a);
  const auto [mb, fb] = detail::max_abs(b);
  const double m = ma > mb ? ma : mb;
  if (!(fa && fb) || m == 0.0) return std::sqrt(ss);
  return detail::rescaled_norm(policy, a.size(), m, [a, b](std::size_t k, int e) {
    return std::ldexp(static_cast<double>(a[k]), e) - std::ldexp(static_cast<double>(b[k]), e);
  });
}

/// @brief \f$\sum_{k<n} f(k)\f$ for any term function of the index, with the same blocks, lanes,
/// order and bound as @ref sum applied to the computed terms \f$t_k\f$ = f(k):
/// \f$|\hat s - \sum t_k| \le u|\sum t_k| + 2\cdot10^{5}u^2\sum|t_k|\f$ (f's own rounding is f's).
///
/// f is called exactly once per k, in increasing k within a block; under a
/// @ref diffusion::parallel_policy from several threads at once on disjoint blocks, so f may
/// write to element k of an output (the losses write their gradients this way) but must not
/// share other mutable state. An exception thrown by f propagates (the first one in block order).
/// @param[in] n the number of terms.
/// @param[in] f `f(std::size_t k)` returning a value convertible to double.
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the sum as a double.
template <class F, execution_policy P = sequential_policy>
  requires std::invocable<F&, std::size_t>
[[nodiscard]] double indexed_sum(std::size_t n, F&& f, const P& policy = {}) {
  return detail::reduce_blocks(policy, n, [&f](std::size_t begin, std::size_t len) {
    return detail::block_sum_indexed(begin, len, f);
  });
}

/// @brief \f$\sum_k f(x_k)\f$ (a mapped reduction, e.g. a per-element KL), x_k passed as double;
/// bound and threading as @ref indexed_sum.
/// @param[in] x the values.
/// @param[in] f `f(double)` returning a value convertible to double.
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the sum as a double.
template <tensor X, class F, execution_policy P = sequential_policy>
  requires std::invocable<F&, double>
[[nodiscard]] double transform_sum(const X& x, F&& f, const P& policy = {}) {
  const auto a = as_span(x);
  return indexed_sum(a.size(), [&f, a](std::size_t k) { return f(static_cast<double>(a[k])); }, policy);
}

/// @brief \f$\sum_k f(x_k, y_k)\f$ (e.g. a per-element decoder log-likelihood), inputs as double;
/// bound and threading as @ref indexed_sum.
/// @param[in] x first input (n elements).
/// @param[in] y second input (n elements, same element type).
/// @param[in] f `f(double, double)` returning a value convertible to double.
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the sum as a double.
/// @throws std::invalid_argument naming x and y when their sizes differ.
template <tensor X, tensor Y, class F, execution_policy P = sequential_policy>
  requires std::invocable<F&, double, double>
[[nodiscard]] double transform_sum(const X& x, const Y& y, F&& f, const P& policy = {}) {
  static_assert(detail::same_tensor_value_v<X, Y>, "transform_sum: x and y must have the same element type");
  const auto a = as_span(x);
  const auto b = as_span(y);
  detail::check_same_size("diffusion::transform_sum", "x", a.size(), "y", b.size());
  return indexed_sum(
      a.size(), [&f, a, b](std::size_t k) { return f(static_cast<double>(a[k]), static_cast<double>(b[k])); }, policy);
}

/// @brief \f$\sum_k f(x_k, y_k, z_k)\f$, inputs as double; bound and threading as @ref indexed_sum.
/// @param[in] x first input (n elements).
/// @param[in] y second input (n elements, same element type).
/// @param[in] z third input (n elements, same element type).
/// @param[in] f `f(double, double, double)` returning a value convertible to double.
/// @param[in] policy sequential (default) or parallel, same result.
/// @return the sum as a double.
/// @throws std::invalid_argument naming the argument whose size differs from x's.
template <tensor X, tensor Y, tensor Z, class F, execution_policy P = sequential_policy>
  requires std::invocable<F&, double, double, double>
[[nodiscard]] double transform_sum(const X& x, const Y& y, const Z& z, F&& f, const P& policy = {}) {
  static_assert(detail::same_tensor_value_v<X, Y> && detail::same_tensor_value_v<X, Z>,
                "transform_sum: x, y and z must have the same element type");
  const auto a = as_span(x);
  const auto b = as_span(y);
  const auto c = as_span(z);
  detail::check_same_size("diffusion::transform_sum", "y", b.size(), "x", a.size());
  detail::check_same_size("diffusion::transform_sum", "z", c.size(), "x", a.size());
  return indexed_sum(
      a.size(),
      [&f, a, b, c](std::size_t k) {
        return f(static_cast<double>(a[k]), static_cast<double>(b[k]), static_cast<double>(c[k]));
      },
      policy);
}

}  // namespace diffusion

/// @}
