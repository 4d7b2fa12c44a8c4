/// @file
/// @brief Element-wise kernels: the only loops over tensor elements. They know arrays and
/// coefficients, not diffusion vocabulary; the coefficients come from the formula layers.
///
/// **SIMD.** Every kernel is written once, as a generic body over a "lane" type V that is
/// either `xsimd::batch<T, A>` (the bulk of the array, unaligned loads and stores) or T itself
/// (the tail). Both evaluate the same IEEE operations in the same order, so the SIMD and the
/// scalar results are bit-identical and do not depend on the length, the alignment or the
/// split of the array. A is the architecture of the noise layer (`detail::noise_arch` in
/// noise.hpp: AVX2 with FMA whenever the build has it, else xsimd's best for the build).
///
/// **Multiply–add rule.** Every product that feeds a sum is written as kernels::madd: one
/// fused operation where the SIMD target has a fused multiply–add (FMA3, FMA4, NEON), a rounded
/// product and a rounded sum elsewhere — never a software `std::fma`. No other product feeds a
/// sum, so compiler contraction (`-ffp-contract`) cannot change a result.
///
/// **Fused steps.** The sampler updates are single-pass kernels: each input is read once and
/// each output written once. Their Gaussian noise z is either a caller's buffer
/// (`std::span<const T>`, for any noise source) or is generated inside the kernel from a
/// diffusion::philox_normal stream (kernels::philox_stream): one SIMD chunk of the generator
/// at a time (32 normals on SSE2 and AVX2), consumed at once from a small stack buffer, so that
/// the kernel's loads and stores overlap the generator's arithmetic; because Philox is counter
/// based, this gives the same bits as a buffer filled with philox_normal::fill at the same
/// addresses.
///
/// **Aliasing.** An output may be the same array as any input (each element is read before
/// it is written); partially overlapping arrays are not allowed.
///
/// **Threads.** Every kernel takes an execution policy (execution.hpp; sequential by
/// default). Element k depends only on the inputs at k and the noise address of k, so the
/// result is bit-identical for every thread count; ranges are split at multiples of
/// kernels::noise_chunk (a multiple of every SIMD width).
///
/// **Error bounds.** u is the unit roundoff of T (2⁻²⁴ for float, 2⁻⁵³ for double); a
/// coefficient is taken as given (exact in T); bounds are first order in u.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "config.hpp"
#include "execution.hpp"
#include "noise.hpp"
#include "tensor.hpp"

/// Forces inlining of the kernels' per-lane bodies into their loops.
#if defined(__GNUC__) || defined(__clang__)
#define DIFFUSION_KERNEL_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define DIFFUSION_KERNEL_INLINE __forceinline
#else
#define DIFFUSION_KERNEL_INLINE inline
#endif

/// @defgroup kernels Element-wise kernels
/// @brief out = a·x + b·y and friends, and the fused sampler steps, over spans of float or
/// double: SIMD (xsimd) with a bit-identical scalar tail, optional threads.
/// @{

namespace diffusion::kernels {

/// @brief The grain of every thread split, and the most noise a fused kernel holds at once (on
/// the stack: 2 KiB of float, 4 KiB of double); a multiple of every SIMD width and of the
/// generator's SIMD chunk, so that a split never cuts a chunk of normals.
inline constexpr std::size_t noise_chunk = 512;

/// @brief Whether kernels::madd is one fused operation in this build (the SIMD target has a
/// fused multiply–add: FMA3, FMA4 or NEON).
inline constexpr bool fused_madd = diffusion::detail::noise_fused_madd;

/// @brief \f$a x + c\f$: one rounding where the build's SIMD target has a fused multiply–add
/// (kernels::fused_madd, e.g. `-march=native` on x86-64 with FMA3), a rounded product and a
/// rounded sum otherwise: a portable build never calls `std::fma`, which is a slow software
/// routine without the instruction. Error: \f$\le u|ax + c|\f$ fused, \f$\le u(|ax| + |ax + c|)\f$ otherwise.
/// @param[in] a multiplier; @param[in] x multiplicand; @param[in] c addend.
template <real_scalar T>
constexpr T madd(T a, T x, T c) noexcept {
  if constexpr (fused_madd)
    return std::fma(a, x, c);
  else
    return a * x + c;
}

/// @brief kernels::madd lane by lane on xsimd batches, with the same rounding as the scalar form.
/// @param[in] a multiplier; @param[in] x multiplicand; @param[in] c addend.
template <class T, class A>
DIFFUSION_KERNEL_INLINE xsimd::batch<T, A> madd(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& x,
                                                const xsimd::batch<T, A>& c) noexcept {
  if constexpr (fused_madd)
    return xsimd::fma(a, x, c);
  else
    return a * x + c;
}

/// @brief No noise: the kernels that take a noise operand add none (e.g. the last DDPM step).
struct no_noise {};

/// @brief Normals generated inside a fused kernel from a diffusion::philox_normal: element i of
/// the kernel's arrays gets normal number \f$\mathit{offset} + (i \bmod L)\f$ of the stream
/// \f$(\mathit{first\_sample} + \lfloor i / L\rfloor,\ \mathit{step})\f$, L = `row_length`.
///
/// With the default L (the largest size) the whole array is one stream from `offset` on; with
/// L = n the rows of n elements are the sampler's streams (row b is stream
/// (first_sample + b, step), offsets from `offset`). The values are bit-identical to those
/// philox_normal::fill writes at the same addresses.
struct philox_stream {
  const philox_normal* source;  ///< The generator (not owned; must outlive the call).
  std::uint64_t first_sample;   ///< Stream coordinate of row 0 (e.g. the batch row).
  std::uint64_t step;           ///< Stream coordinate shared by all rows (e.g. the sampler step).
  std::uint64_t offset = 0;     ///< Index of the first normal of every row.
  /// Elements per row, ≥ 1.
  std::size_t row_length = std::numeric_limits<std::size_t>::max();
};

/// @brief A noise operand of a fused kernel: a buffer of normals (same size as the output),
/// a kernels::philox_stream, or kernels::no_noise.
template <class Z, class T>
concept noise_operand = std::is_same_v<Z, std::span<const T>> || std::is_same_v<Z, philox_stream> ||
                        std::is_same_v<Z, no_noise>;

namespace detail {

template <class T>
inline constexpr bool has_batch = diffusion::detail::noise_has_batch<T>;

/// The lane type of the bulk loop: a batch of T, or T where xsimd has no batch of T.
template <class T, bool = has_batch<T>>
struct bulk_lane {
  using type = T;
};
template <class T>
struct bulk_lane<T, true> {
  using type = xsimd::batch<T, diffusion::detail::noise_arch>;
};

template <class V>
inline constexpr bool is_scalar_lane = std::is_floating_point_v<V>;

template <class V, class T>
DIFFUSION_KERNEL_INLINE V load(const T* p) noexcept {
  if constexpr (is_scalar_lane<V>)
    return *p;
  else
    return V::load_unaligned(p);
}

template <class V, class T>
DIFFUSION_KERNEL_INLINE void store(T* p, const V& v) noexcept {
  if constexpr (is_scalar_lane<V>)
    *p = v;
  else
    v.store_unaligned(p);
}

/// std::clamp(v, lo, hi) exactly (NaN and signed zeros pass through): v < lo ? lo : hi < v ? hi : v.
template <class V>
DIFFUSION_KERNEL_INLINE V clamp(const V& v, const V& lo, const V& hi) noexcept {
  if constexpr (is_scalar_lane<V>)
    return std::clamp(v, lo, hi);
  else
    return xsimd::select(v < lo, lo, xsimd::select(hi < v, hi, v));
}

/// Runs body(std::type_identity<V>{}, k, z + (k − begin)) over [begin, end): whole batches
/// first (V a batch), then the tail (V = T).
template <class T, class Body>
DIFFUSION_KERNEL_INLINE void lanes(std::size_t begin, std::size_t end, const T* z, Body& body) {
  using B = typename bulk_lane<T>::type;
  std::size_t k = begin;
  if constexpr (!is_scalar_lane<B>) {
    constexpr std::size_t w = B::size;
    for (; k + 2 * w <= end; k += 2 * w) {  // two independent batches per iteration
      body(std::type_identity<B>{}, k, z ? z + (k - begin) : nullptr);
      body(std::type_identity<B>{}, k + w, z ? z + (k + w - begin) : nullptr);
    }
    for (; k + w <= end; k += w) body(std::type_identity<B>{}, k, z ? z + (k - begin) : nullptr);
  }
  for (; k < end; ++k) body(std::type_identity<T>{}, k, z ? z + (k - begin) : nullptr);
}

/// Runs body over the N elements from begin on as whole batches (N a multiple of the width).
template <class T, std::size_t N, class Body>
DIFFUSION_KERNEL_INLINE void lanes_fixed(std::size_t begin, const T* z, Body& body) {
  using B = typename bulk_lane<T>::type;
  static_assert(!is_scalar_lane<B> && N % B::size == 0);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (body(std::type_identity<B>{}, begin + I * B::size, z + I * B::size), ...);
  }(std::make_index_sequence<N / B::size>{});
}

// The range [begin, end) of a kernel with noise operand z. Each runs a local copy of the
// body: xsimd's stores may alias anything, so the values a body holds by value (the kernels
// capture their pointers and coefficients by value) stay in registers only in an object
// whose address does not escape.

template <class T, class Body>
void run_range(std::size_t begin, std::size_t end, const no_noise&, const Body& shared_body) {
  Body body = shared_body;
  lanes<T>(begin, end, static_cast<const T*>(nullptr), body);
}

template <class T, class Body>
void run_range(std::size_t begin, std::size_t end, const std::span<const T>& z, const Body& shared_body) {
  Body body = shared_body;
  lanes<T>(begin, end, z.data() + begin, body);
}

/// In-kernel noise: each row's part is cut at multiples of noise_chunk within the row (so
/// that the normals' SIMD chunks line up); where the noise addresses allow it, the normals
/// are made one SIMD chunk of the generator at a time (philox_row::chunk) and consumed at once, so
/// that the body's loads and stores overlap the generator's arithmetic; elsewhere
/// (unaligned offsets, the ends) fill writes the rest of the piece.
template <class T, class Body>
void run_range(std::size_t begin, std::size_t end, const philox_stream& z, const Body& shared_body) {
  using row_noise = diffusion::detail::philox_row<T>;
  constexpr std::size_t simd = row_noise::chunk;
  static_assert(simd == 0 || noise_chunk % simd == 0);
  Body body = shared_body;
  alignas(64) T buf[noise_chunk];
  const std::size_t row = z.row_length;
  std::size_t i = begin;
  while (i < end) {
    const std::size_t b = i / row;
    std::size_t in_row = i - b * row;
    const std::size_t row_end = end - i <= row - in_row ? end : i + (row - in_row);  // of this row's part
    if (row_end - i < std::max<std::size_t>(simd, 1)) {  // no whole SIMD chunk: fill alone
      z.source->fill(z.first_sample + b, z.step, z.offset + in_row, std::span<T>(buf, row_end - i));
      lanes<T>(i, row_end, static_cast<const T*>(buf), body);
      i = row_end;
      continue;
    }
    const row_noise noise(z.source->key(), z.first_sample + b, z.step);
    while (i < row_end) {
      const std::size_t len = std::min(row_end - i, noise_chunk - in_row % noise_chunk);
      const std::uint64_t k = z.offset + in_row;
      std::size_t done = 0;
      if constexpr (simd != 0) {
        const std::size_t m = noise.simd_chunks_at(k, len) * simd;
        const auto run = m != 0 ? noise.simd_run(k) : decltype(noise.simd_run(k)){};
        for (; done < m; done += simd) {
          noise.simd_chunk(run, k + done, buf);
          lanes_fixed<T, simd>(i + done, static_cast<const T*>(buf), body);
        }
      }
      if (done < len) {
        noise.fill(k + done, std::span<T>(buf, len - done));
        lanes<T>(i + done, i + len, static_cast<const T*>(buf), body);
      }
      i += len;
      in_row += len;
    }
  }
}

/// Runs the kernel body over [0, n) under the policy.
template <class T, class Z, class P, class Body>
void run(const P& policy, std::size_t n, const Z& z, Body&& body) {
  diffusion::detail::for_each_range(policy, n, noise_chunk,
                                    [&](std::size_t begin, std::size_t end) { run_range<T>(begin, end, z, body); });
}

template <class T, class Z>
constexpr bool size_ok(const Z& z, std::size_t n) noexcept {
  if constexpr (std::is_same_v<Z, std::span<const T>>)
    return z.size() == n;
  else if constexpr (std::is_same_v<Z, philox_stream>)
    return z.source != nullptr && z.row_length != 0;
  else
    return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Linear kernels
// ---------------------------------------------------------------------------------------

/// @brief \f$out_k = a\,x_k + b\,y_k\f$, evaluated as `madd(a, x, b*y)` in T.
///
/// Error: \f$|out - (ax + by)| \le u(|ax| + 2|by|)\f$ without FMA and \f$u(|by| + |ax + by|)\f$
/// with it; in both cases at most \f$2u(|ax| + |by|)\f$.
/// @param[in] a coefficient of x; @param[in] x first input; @param[in] b coefficient of y;
/// @param[in] y second input; @param[out] out result (may alias x or y);
/// @param[in] policy sequential (default) or parallel.
/// @pre all three spans have the same size (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void affine2(T a, std::span<const T> x, T b, std::span<const T> y, std::span<T> out, const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && y.size() == out.size());
  const T *xp = x.data(), *yp = y.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), no_noise{}, [=](auto lane, std::size_t k, const T*) {
    using V = typename decltype(lane)::type;
    detail::store(op + k, madd(V(a), detail::load<V>(xp + k), V(b) * detail::load<V>(yp + k)));
  });
}

/// @brief \f$out_k = a\,x_k\f$ (one rounding: error \f$\le u|ax|\f$).
/// @param[in] a factor; @param[in] x input; @param[out] out result (may alias x);
/// @param[in] policy sequential (default) or parallel.
/// @pre same sizes (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void scale(T a, std::span<const T> x, std::span<T> out, const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size());
  const T* xp = x.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), no_noise{}, [=](auto lane, std::size_t k, const T*) {
    using V = typename decltype(lane)::type;
    detail::store(op + k, V(a) * detail::load<V>(xp + k));
  });
}

/// @brief Classifier-free guidance combination (Ho & Salimans 2022, Eq. 6 with w = their w + 1):
/// \f$out_k = u_k + w\,(c_k - u_k)\f$, evaluated as `madd(w, c − u, u)`.
///
/// Error: \f$\le u(2|w||c - u| + |out|)\f$ (FMA: \f$u(|w||c-u| + |out|)\f$); exactly c at w = 1
/// whenever c − u is exact (Sterbenz), and u at w = 0.
/// @param[in] w guidance scale; @param[in] conditional c; @param[in] unconditional u;
/// @param[out] out result (may alias either input); @param[in] policy sequential (default) or parallel.
/// @pre same sizes (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void guidance_combine(T w, std::span<const T> conditional, std::span<const T> unconditional, std::span<T> out,
                      const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(conditional.size() == out.size() && unconditional.size() == out.size());
  const T *cp = conditional.data(), *up = unconditional.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), no_noise{}, [=](auto lane, std::size_t k, const T*) {
    using V = typename decltype(lane)::type;
    const V u = detail::load<V>(up + k);
    detail::store(op + k, madd(V(w), detail::load<V>(cp + k) - u, u));
  });
}

// ---------------------------------------------------------------------------------------
// Kernels with noise
// ---------------------------------------------------------------------------------------

/// @brief \f$out_k = a\,x_k + b\,y_k + c\,z_k\f$, evaluated as `madd(c, z, madd(a, x, b*y))`: a
/// posterior mean plus noise (DDPM Algorithm 2 line 4: \f$x_{t-1} = \tilde\mu + \sigma_t z\f$; the
/// VE predictors; Euler ancestral, Karras-style, as x ← σ↓-step + σ↑ z).
///
/// Error: at most \f$2u(|ax| + |by|) + u|out|\f$ (without FMA \f$u(|ax| + 2|by| + |cz| + |out|)\f$).
/// @param[in] a coefficient of x; @param[in] x first input; @param[in] b coefficient of y;
/// @param[in] y second input; @param[in] c noise scale;
/// @param[in] z the normals: a buffer of out.size() or a kernels::philox_stream;
/// @param[out] out result (may alias x or y); @param[in] policy sequential (default) or parallel.
/// @pre equal sizes (asserted).
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
void affine2_noise(T a, std::span<const T> x, T b, std::span<const T> y, T c, const Z& z, std::span<T> out,
                   const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && y.size() == out.size() && detail::size_ok<T>(z, out.size()));
  const T *xp = x.data(), *yp = y.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), z, [=](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    V r = madd(V(a), detail::load<V>(xp + k), V(b) * detail::load<V>(yp + k));
    if constexpr (!std::is_same_v<Z, no_noise>) r = madd(V(c), detail::load<V>(zp), r);
    detail::store(op + k, r);
  });
}

/// @brief kernels::affine2_noise with the normals generated inside the kernel: element k gets
/// normal `offset + k` of stream (sample, step) of `noise`, as `noise.fill(sample, step, offset, ...)`
/// would write it (bit-identical).
/// @param[in] a coefficient of x; @param[in] x first input; @param[in] b coefficient of y;
/// @param[in] y second input; @param[in] c noise scale; @param[in] noise the generator;
/// @param[in] sample stream coordinate; @param[in] step stream coordinate;
/// @param[in] offset index of the first normal; @param[out] out result (may alias x or y);
/// @param[in] policy sequential (default) or parallel.
template <real_scalar T, execution_policy P = sequential_policy>
void affine2_noise(T a, std::span<const T> x, T b, std::span<const T> y, T c, const philox_normal& noise,
                   std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out,
                   const P& policy = P{}) noexcept {
  affine2_noise(a, x, b, y, c, philox_stream{&noise, sample, step, offset}, out, policy);
}

/// @brief \f$out_k = a\,x_k + b\,z_k\f$, evaluated as `madd(a, x, b*z)`: the forward process
/// \f$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon\f$ (DDPM Eq. 4, Algorithm 1 line 5).
///
/// Error: as kernels::affine2, \f$\le 2u(|ax| + |bz|)\f$.
/// @param[in] a coefficient of x; @param[in] x input; @param[in] b noise scale;
/// @param[in] z the normals (buffer or kernels::philox_stream); @param[out] out result (may alias x);
/// @param[in] policy sequential (default) or parallel.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
void affine_noise(T a, std::span<const T> x, T b, const Z& z, std::span<T> out, const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && detail::size_ok<T>(z, out.size()));
  const T* xp = x.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), z, [=](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    if constexpr (std::is_same_v<Z, no_noise>)
      detail::store(op + k, madd(V(a), detail::load<V>(xp + k), V(T(0))));
    else
      detail::store(op + k, madd(V(a), detail::load<V>(xp + k), V(b) * detail::load<V>(zp)));
  });
}

/// @brief \f$out_k = x_k + c\,z_k\f$, evaluated as `madd(c, z, x)`: Karras et al. 2022,
/// Algorithm 2 line 5 (the churn, \f$\hat x = x + \sqrt{\hat\sigma^2 - \sigma^2}\,\epsilon\f$) and the
/// noise of an ancestral step.
///
/// Error: \f$\le u|out|\f$ with FMA, \f$u(|cz| + |out|)\f$ without.
/// @param[in] c noise scale; @param[in] x input; @param[in] z the normals (buffer or
/// kernels::philox_stream); @param[out] out result (may alias x); @param[in] policy sequential (default) or parallel.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
void add_noise(T c, std::span<const T> x, const Z& z, std::span<T> out, const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && detail::size_ok<T>(z, out.size()));
  const T* xp = x.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), z, [=](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    if constexpr (std::is_same_v<Z, no_noise>)
      detail::store(op + k, detail::load<V>(xp + k));
    else
      detail::store(op + k, madd(V(c), detail::load<V>(zp), detail::load<V>(xp + k)));
  });
}

/// @brief One unadjusted Langevin step (Song & Ermon 2019, Algorithm 1 line 6):
/// \f$out_k = x_k + c\,(D_k - x_k) + g\,z_k\f$, evaluated as `madd(g, z, madd(c, D − x, x))`, with
/// \f$c = \alpha/\sigma^2\f$ and \f$g = \sqrt{2\alpha}\f$ (so that \f$c(D - x) = \alpha\,s(x,\sigma)\f$).
///
/// Error: \f$\le u(|c||D - x| + |x + c(D - x)| + |out|)\f$ with FMA (plus \f$u(|c(D-x)| + |gz|)\f$ without).
/// @param[in] c drift coefficient α/σ²; @param[in] g noise scale √(2α); @param[in] x state;
/// @param[in] denoised D(x; σ); @param[in] z the normals (buffer or kernels::philox_stream);
/// @param[out] out the new state (may alias x or denoised); @param[in] policy sequential (default) or parallel.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
void langevin(T c, T g, std::span<const T> x, std::span<const T> denoised, const Z& z, std::span<T> out,
              const P& policy = P{}) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && denoised.size() == out.size() && detail::size_ok<T>(z, out.size()));
  const T *xp = x.data(), *dp = denoised.data();
  T* op = out.data();
  detail::run<T>(policy, out.size(), z, [=](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    const V xv = detail::load<V>(xp + k);
    V r = madd(V(c), detail::load<V>(dp + k) - xv, xv);
    if constexpr (!std::is_same_v<Z, no_noise>) r = madd(V(g), detail::load<V>(zp), r);
    detail::store(op + k, r);
  });
}

// ---------------------------------------------------------------------------------------
// Fused sampler steps
// ---------------------------------------------------------------------------------------

/// @brief Coefficients of kernels::ddpm_ancestral, in T (computed in double by the caller).
template <real_scalar T>
struct ddpm_coefficients {
  T x0_from_x;         ///< a of \f$\hat x_0 = a\,x_t + b\,\text{out}\f$ (conversion_coefficients to sample).
  T x0_from_out;       ///< b of the same.
  bool clip = false;   ///< Clamp \f$\hat x_0\f$ to [−clip_value, clip_value].
  T clip_value = T(1);  ///< The clamp bound (> 0).
  T mean_x0;           ///< \f$c_0\f$ of the posterior mean \f$\tilde\mu = c_0\hat x_0 + c_t x_t\f$ (DDPM Eq. 7).
  T mean_xt;           ///< \f$c_t\f$ of the same.
  T sigma;             ///< The reverse standard deviation σ_t (unused with kernels::no_noise).
};

/// @brief The fused DDPM ancestral step (Ho et al. 2020, Algorithm 2, line 4, with x̂₀ formed first
/// as in Eq. 15 and the posterior mean of Eq. 7), one pass over the arrays:
/// \f[ \hat x_0 = \operatorname{clamp}(a\,x_t + b\,\text{out}),\quad
///     x_{t-1} = c_0\,\hat x_0 + c_t\,x_t + \sigma z, \f]
/// evaluated as `x0 = madd(a, x, b*out)`, optional `std::clamp`, `mean = madd(c0, x0, ct*x)`,
/// `x_next = madd(σ, z, mean)` (no noise term with kernels::no_noise, as at t = 1).
///
/// Dynamic thresholding needs a per-row quantile of |x̂₀| before the mean, so it is not fused:
/// form x̂₀ with kernels::affine2, threshold each row, then call kernels::affine2_noise
/// (ddpm_step does this).
///
/// Error: x̂₀ within \f$2u(|ax| + |b\,\text{out}|)\f$ (clamping adds none); \f$x_{t-1}\f$ within
/// \f$2u(|c_0\hat x_0| + |c_t x|) + u|x_{t-1}| + |c_0|\,\delta\hat x_0\f$.
/// @param[in] c the coefficients; @param[in] x x_t; @param[in] model_out the model's prediction
/// (n per element of x, the variance block excluded); @param[in] z the normals (buffer,
/// kernels::philox_stream or kernels::no_noise); @param[out] x0 \f$\hat x_0\f$ (must not alias x or
/// model_out); @param[out] x_next \f$x_{t-1}\f$ (may alias x or model_out);
/// @param[in] policy sequential (default) or parallel.
/// @pre equal sizes (asserted).
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
void ddpm_ancestral(const ddpm_coefficients<T>& c, std::span<const T> x, std::span<const T> model_out, const Z& z,
                    std::span<T> x0, std::span<T> x_next, const P& policy = P{}) noexcept {
  const std::size_t n = x_next.size();
  DIFFUSION_ASSERT(x.size() == n && model_out.size() == n && x0.size() == n && detail::size_ok<T>(z, n));
  const T *xp = x.data(), *mp = model_out.data();
  T *x0p = x0.data(), *op = x_next.data();
  detail::run<T>(policy, n, z, [=](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    const V xv = detail::load<V>(xp + k);
    V h = madd(V(c.x0_from_x), xv, V(c.x0_from_out) * detail::load<V>(mp + k));
    if (c.clip) h = detail::clamp(h, V(-c.clip_value), V(c.clip_value));
    V r = madd(V(c.mean_x0), h, V(c.mean_xt) * xv);
    if constexpr (!std::is_same_v<Z, no_noise>) r = madd(V(c.sigma), detail::load<V>(zp), r);
    detail::store(x0p + k, h);
    detail::store(op + k, r);
  });
}

/// @brief Coefficients of kernels::ddim, in T (computed in double by the caller).
template <real_scalar T>
struct ddim_coefficients {
  T x0_from_x;          ///< a of \f$\hat x_0 = a\,x_t + b\,\text{out}\f$.
  T x0_from_out;        ///< b of the same.
  bool clip = false;    ///< Clamp \f$\hat x_0\f$ to [−clip_value, clip_value].
  T clip_value = T(1);   ///< The clamp bound (> 0).
  /// Take ε̂ from the processed x̂₀, \f$\hat\varepsilon = e_x x_t + e_0\hat x_0\f$ (diffusers
  /// `use_clipped_model_output`), instead of \f$e_x x_t + e_o\,\text{out}\f$.
  bool eps_from_x0 = false;
  T eps_from_x;          ///< \f$e_x\f$.
  T eps_from_other;      ///< \f$e_o\f$ (from out) or \f$e_0\f$ (from x̂₀, with eps_from_x0).
  T coef_x0;             ///< \f$\sqrt{\bar\alpha_p}\f$.
  T coef_eps;            ///< \f$\sqrt{1 - \bar\alpha_p - \sigma^2}\f$.
  T sigma;               ///< σ = η·(skip-posterior std) (unused with kernels::no_noise).
};

/// @brief The fused DDIM step (Song et al. 2021, Eq. 12), one pass over the arrays:
/// \f[ x_p = \sqrt{\bar\alpha_p}\,\hat x_0 + \sqrt{1-\bar\alpha_p-\sigma^2}\,\hat\varepsilon + \sigma z, \f]
/// with \f$\hat x_0\f$ = clamp(madd(a, x, b·out)) and \f$\hat\varepsilon\f$ = madd(e_x, x, e_o·out) (or from
/// x̂₀), evaluated as `madd(σ, z, madd(c_x0, x̂₀, c_ε·ε̂))` (no noise term with kernels::no_noise,
/// η = 0). With `x0_given` the kernel reads x̂₀ from `x0` instead of forming it (the second pass
/// after dynamic thresholding, which needs a per-row quantile and stays two-pass).
///
/// Error: x̂₀ and ε̂ each within \f$2u\f$ of the sum of their terms' magnitudes; \f$x_p\f$ within
/// \f$2u(|c_{x0}\hat x_0| + |c_\varepsilon\hat\varepsilon|) + u|x_p|\f$ plus the propagated errors of x̂₀ and ε̂.
/// @param[in] c the coefficients; @param[in] x x_t; @param[in] model_out the prediction;
/// @param[in] z the normals (buffer, kernels::philox_stream or kernels::no_noise);
/// @param[in] x0_given read x̂₀ from `x0` (already processed) instead of computing it;
/// @param[in,out] x0 \f$\hat x_0\f$ (output, or input with x0_given; must not alias x or model_out);
/// @param[out] x_next \f$x_p\f$ (may alias x or model_out); @param[in] policy sequential (default) or parallel.
/// @pre equal sizes (asserted).
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
void ddim(const ddim_coefficients<T>& c, std::span<const T> x, std::span<const T> model_out, const Z& z, bool x0_given,
          std::span<T> x0, std::span<T> x_next, const P& policy = P{}) noexcept {
  const std::size_t n = x_next.size();
  DIFFUSION_ASSERT(x.size() == n && model_out.size() == n && x0.size() == n && detail::size_ok<T>(z, n));
  const T *xp = x.data(), *mp = model_out.data();
  T *x0p = x0.data(), *op = x_next.data();
  detail::run<T>(policy, n, z, [=](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    const V xv = detail::load<V>(xp + k), ov = detail::load<V>(mp + k);
    V h;
    if (x0_given) {
      h = detail::load<V>(x0p + k);
    } else {
      h = madd(V(c.x0_from_x), xv, V(c.x0_from_out) * ov);
      if (c.clip) h = detail::clamp(h, V(-c.clip_value), V(c.clip_value));
    }
    const V eps = madd(V(c.eps_from_x), xv, V(c.eps_from_other) * (c.eps_from_x0 ? h : ov));
    V r = madd(V(c.coef_x0), h, V(c.coef_eps) * eps);
    if constexpr (!std::is_same_v<Z, no_noise>) r = madd(V(c.sigma), detail::load<V>(zp), r);
    if (!x0_given) detail::store(x0p + k, h);
    detail::store(op + k, r);
  });
}

namespace detail {

/// A generic element-wise kernel for the samplers' less common updates: body(lane, k) loads,
/// computes with madd only, and stores; run over [0, n) under the policy.
template <real_scalar T, class P, class Body>
void for_each_lane(const P& policy, std::size_t n, Body&& body) {
  run<T>(policy, n, no_noise{}, [&](auto lane, std::size_t k, const T*) { body(lane, k); });
}

/// As for_each_lane, but body(k, z_k) is scalar only (for bodies with operations that have no
/// bit-identical SIMD form, such as std::exp); z_k points at the noise of element k (null
/// with no_noise).
template <real_scalar T, class Z, class P, class Body>
void for_each_scalar(const P& policy, std::size_t n, const Z& z, Body&& body) {
  run<T>(policy, n, z, [&](auto lane, std::size_t k, const T* zp) {
    using V = typename decltype(lane)::type;
    if constexpr (is_scalar_lane<V>) {
      body(k, zp);
    } else {
      for (std::size_t i = 0; i < V::size; ++i) body(k + i, zp ? zp + i : nullptr);
    }
  });
}

}  // namespace detail

}  // namespace diffusion::kernels

/// @}
