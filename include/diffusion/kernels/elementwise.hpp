/// @file
/// @brief Element-wise kernels: the only loops over tensor elements. They know arrays and
/// coefficients, not diffusion vocabulary; the coefficients come from the formula layers.
///
/// **SIMD.** Every kernel is written once, as a generic body over a "lane" type V that is
/// either `xsimd::batch<T, A>` (the bulk of the array, unaligned loads and stores) or T itself
/// (the tail). Both evaluate the same IEEE operations in the same order, so the SIMD and the
/// scalar results are bit-identical and do not depend on the length, the alignment or the
/// split of the array. A is the library's one architecture choice, simd::arch (core/simd.hpp:
/// AVX2 with FMA whenever the build has it, else xsimd's best for the build).
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
#include <array>
#include <atomic>
#include <tuple>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/execution.hpp"
#include "../core/half.hpp"
#include "../core/half_simd.hpp"
#include "../core/simd.hpp"
#include "../core/tensor.hpp"
#include "../noise/philox.hpp"

/// @defgroup kernels Element-wise kernels
/// @brief out = a·x + b·y and friends, and the fused sampler steps, over spans of float or
/// double (kernels::map, affine2, affine2_noise and ddim also over float16 / bfloat16 storage, computed in float): SIMD (xsimd) with a bit-identical scalar tail, optional threads.
/// @{

namespace diffusion::kernels {

/// @brief The grain of every thread split, and the most noise a fused kernel holds at once (on
/// the stack: 2 KiB of float, 4 KiB of double); a multiple of every SIMD width and of the
/// generator's SIMD chunk, so that a split never cuts a chunk of normals.
inline constexpr std::size_t noise_chunk = 512;

/// @brief Whether kernels::madd is one fused operation in this build (simd::fused_madd).
inline constexpr bool fused_madd = simd::fused_madd;

/// @brief The multiply–add of every kernel: simd::madd (core/simd.hpp), for scalars and batches.
using simd::madd;

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
inline constexpr bool has_batch = simd::has_batch<T>;

/// The lane type of the bulk loop: a batch of T, or T where xsimd has no batch of T.
template <class T, bool = has_batch<T>>
struct bulk_lane {
  using type = T;
};
template <class T>
struct bulk_lane<T, true> {
  using type = xsimd::batch<T, simd::arch>;
};

template <class V>
inline constexpr bool is_scalar_lane = std::is_floating_point_v<V>;

/// A lane of V loaded from p; a 16-bit storage type is widened to float (exact).
template <class V, class S>
DIFFUSION_INLINE V load(const S* p) noexcept {
  if constexpr (half_scalar<S>) {
    if constexpr (is_scalar_lane<V>)
      return static_cast<float>(*p);
    else
      return simd::load_widened<V>(p);
  } else if constexpr (is_scalar_lane<V>) {
    return *p;
  } else {
    return V::load_unaligned(p);
  }
}

template <class V, class T>
DIFFUSION_INLINE void store(T* p, const V& v) noexcept {
  if constexpr (is_scalar_lane<V>)
    *p = v;
  else
    v.store_unaligned(p);
}

/// Rounds a float lane once to the 16-bit storage type at p; returns the stored values widened back.
template <half_scalar S, class V>
DIFFUSION_INLINE V store_narrowed(S* p, const V& v) noexcept {
  if constexpr (is_scalar_lane<V>) {
    *p = S(v);
    return static_cast<float>(*p);
  } else {
    return simd::store_narrowed(p, v);
  }
}

/// std::clamp(v, lo, hi) exactly (NaN and signed zeros pass through): v < lo ? lo : hi < v ? hi : v.
template <class V>
DIFFUSION_INLINE V clamp(const V& v, const V& lo, const V& hi) noexcept {
  if constexpr (is_scalar_lane<V>)
    return std::clamp(v, lo, hi);
  else
    return xsimd::select(v < lo, lo, xsimd::select(hi < v, hi, v));
}

/// Runs body(std::type_identity<V>{}, k, z + (k − begin)) over [begin, end): whole batches
/// first (V a batch), then the tail (V = T).
template <class T, class Body>
DIFFUSION_INLINE void lanes(std::size_t begin, std::size_t end, const T* z, Body& body) {
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
DIFFUSION_INLINE void lanes_fixed(std::size_t begin, const T* z, Body& body) {
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

/// Whether a body saw only finite outputs (bodies without that bookkeeping: true).
template <class Body>
DIFFUSION_INLINE bool body_finite(const Body& body) noexcept {
  if constexpr (requires { body.finite(); })
    return body.finite();
  else
    return true;
}

template <class T, class Body>
bool run_range(std::size_t begin, std::size_t end, const no_noise&, const Body& shared_body) {
  Body body = shared_body;
  lanes<T>(begin, end, static_cast<const T*>(nullptr), body);
  return body_finite(body);
}

template <class T, class Body>
bool run_range(std::size_t begin, std::size_t end, const std::span<const T>& z, const Body& shared_body) {
  Body body = shared_body;
  lanes<T>(begin, end, z.data() + begin, body);
  return body_finite(body);
}

/// In-kernel noise: each row's part is cut at multiples of noise_chunk within the row (so
/// that the normals' SIMD chunks line up); where the noise addresses allow it, the normals
/// are made one SIMD chunk of the generator at a time (philox_row::chunk) and consumed at once, so
/// that the body's loads and stores overlap the generator's arithmetic; elsewhere
/// (unaligned offsets, the ends) fill writes the rest of the piece.
template <class T, class Body>
bool run_range(std::size_t begin, std::size_t end, const philox_stream& z, const Body& shared_body) {
  using row_noise = diffusion::detail::philox_row<T>;
  constexpr std::size_t simd_chunk = row_noise::chunk;
  static_assert(simd_chunk == 0 || noise_chunk % simd_chunk == 0);
  Body body = shared_body;
  alignas(64) T buf[noise_chunk];
  const std::size_t row = z.row_length;
  std::size_t i = begin;
  while (i < end) {
    const std::size_t b = i / row;
    std::size_t in_row = i - b * row;
    const std::size_t row_end = end - i <= row - in_row ? end : i + (row - in_row);  // of this row's part
    if (row_end - i < std::max<std::size_t>(simd_chunk, 1)) {  // no whole SIMD chunk: fill alone
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
      if constexpr (simd_chunk != 0) {
        const std::size_t m = noise.simd_chunks_at(k, len) * simd_chunk;
        const auto run = m != 0 ? noise.simd_run(k) : decltype(noise.simd_run(k)){};
        for (; done < m; done += simd_chunk) {
          noise.simd_chunk(run, k + done, buf);
          lanes_fixed<T, simd_chunk>(i + done, static_cast<const T*>(buf), body);
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
  return body_finite(body);
}

/// Runs the kernel body over [0, n) under the policy; false if a range saw a non-finite output.
template <class T, class Z, class P, class Body>
bool run(const P& policy, std::size_t n, const Z& z, Body&& body) {
  if constexpr (std::is_same_v<std::remove_cvref_t<P>, sequential_policy>) {
    return n == 0 || run_range<T>(0, n, z, body);
  } else {
    std::atomic<bool> finite{true};
    diffusion::detail::for_each_range(policy, n, noise_chunk, [&](std::size_t begin, std::size_t end) {
      if (!run_range<T>(begin, end, z, body)) finite.store(false, std::memory_order_relaxed);
    });
    return finite.load(std::memory_order_relaxed);
  }
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
// The generic fused kernel
// ---------------------------------------------------------------------------------------

namespace detail {

template <class V, class S, std::size_t... I>
DIFFUSION_INLINE std::array<V, sizeof...(I)> load_all(const std::array<const S*, sizeof...(I)>& p, std::size_t k,
                                                       std::index_sequence<I...>) noexcept {
  return {kernels::detail::load<V>(p[I] + k)...};
}

/// The body of kernels::map: loads the inputs, calls f, stores the outputs, and keeps a running
/// sum of r − r over every output lane (0 while all are finite, NaN once one is ±∞ or NaN): the
/// one flag per pass that tells a caller that its arithmetic overflowed. S is the storage type
/// of the arrays, T = compute_t<S> the lanes' type: a 16-bit S is widened on load and rounded once
/// on store, and the flag sees the stored values (a finite float may round to ±∞).
template <class S, class Z, std::size_t NO, std::size_t NI, class F>
struct map_body {
  using T = compute_t<S>;
  using bulk = typename bulk_lane<T>::type;
  std::array<S*, NO> op;
  std::array<const S*, NI> ip;
  F f;
  bulk acc_bulk = bulk(T(0));
  T acc_tail = T(0);

  template <class V>
  DIFFUSION_INLINE void track(const V& r) noexcept {
    if constexpr (is_scalar_lane<V>)
      acc_tail = acc_tail + (r - r);
    else
      acc_bulk = acc_bulk + (r - r);
  }
  template <class V>
  DIFFUSION_INLINE void put(S* p, const V& r) noexcept {
    if constexpr (half_scalar<S>) {
      track(kernels::detail::store_narrowed(p, r));
    } else {
      track(r);
      kernels::detail::store(p, r);
    }
  }
  template <class L>
  DIFFUSION_INLINE void operator()(L, std::size_t k, const T* zp) noexcept {
    using V = typename L::type;
    const std::array<V, NI> v = load_all<V, S>(ip, k, std::make_index_sequence<NI>{});
    const auto r = [&] {
      if constexpr (std::is_same_v<Z, no_noise>)
        return std::apply(f, v);
      else
        return std::apply([&](const auto&... a) { return f(a..., kernels::detail::load<V>(zp)); }, v);
    }();
    if constexpr (NO == 1) {
      const V out = r;
      put(op[0] + k, out);
    } else {
      static_assert(std::tuple_size_v<std::remove_cvref_t<decltype(r)>> == NO, "kernels::map: f must return NO lanes");
      for (std::size_t j = 0; j < NO; ++j) put(op[j] + k, r[j]);
    }
  }
  [[nodiscard]] bool finite() const noexcept {
    T sum = acc_tail;
    if constexpr (!is_scalar_lane<bulk>) sum = sum + xsimd::hadd(acc_bulk);
    return sum == sum;
  }
};

/// The body of kernels::map_scalar: one scalar call per element, with the same finiteness flag.
template <class T, class Z, std::size_t NI, class F>
struct map_scalar_body {
  T* op;
  std::array<const T*, NI> ip;
  F f;
  T acc = T(0);
  template <class L>
  DIFFUSION_INLINE void operator()(L, std::size_t k, const T* zp) noexcept {
    using V = typename L::type;
    constexpr std::size_t w = [] { if constexpr (is_scalar_lane<V>) return std::size_t{1}; else return V::size; }();
    for (std::size_t i = 0; i < w; ++i) {
      const T r = [&]<std::size_t... I>(std::index_sequence<I...>) {
        if constexpr (std::is_same_v<Z, no_noise>)
          return f(ip[I][k + i]...);
        else
          return f(ip[I][k + i]..., zp[i]);
      }(std::make_index_sequence<NI>{});
      acc = acc + (r - r);
      op[k + i] = r;
    }
  }
  [[nodiscard]] bool finite() const noexcept { return acc == acc; }
};

}  // namespace detail

/// @brief The generic fused element-wise kernel: one pass over NI inputs (and optionally a noise
/// operand) writing NO outputs, with a body written once for the SIMD bulk and the scalar tail.
///
/// For each element k, `f` is called with the lanes of the inputs at k (and, unless Z is
/// kernels::no_noise, the lane of the noise at k as the last argument) and returns the NO output
/// lanes: one value of the lane type for NO = 1, else a `std::array` of NO values. The lane type
/// V is `xsimd::batch<T, simd::arch>` in the bulk and T in the tail, T = @ref diffusion::compute_t "compute_t<S>" of
/// the storage type S of the arrays (S itself for float and double; float for @ref diffusion::float16 and
/// @ref diffusion::bfloat16, widened exactly on load and rounded once, to nearest even, on store, so that
/// a step on 16-bit arrays is the float step on the widened inputs rounded once); the body must use the same
/// IEEE operations on both (`+ − × ÷`, kernels::madd (simd::madd) for every product that feeds a sum,
/// kernels::clamp()), so that SIMD and scalar give the same bits. Broadcast a coefficient c
/// as `V(c)`.
///
/// Every input is read once and every output written once; an output may be the same array as
/// any input (each element is read before it is written), partially overlapping arrays are not
/// allowed. The split over threads is that of every kernel (bit-identical for any count). Every
/// named kernel below is an instance of it, and so are the samplers' less common updates (Heun's
/// two stages, the multistep solvers' linear combinations): no sampler reaches into
/// `kernels::detail`.
/// @param[in] policy sequential or parallel.
/// @param[in] z the noise operand (buffer, kernels::philox_stream or kernels::no_noise).
/// @param[out] out NO output arrays of n elements (kernels::outputs).
/// @param[in] in NI input arrays of n elements (kernels::inputs).
/// @param[in] f the body.
/// @return true when every output is finite: the one flag per pass by which callers tell an
///         overflow of their own arithmetic from bad input (its cost: an add per output lane).
/// @pre all arrays (and a noise buffer) have the same size (asserted).
template <storage_scalar S, class Z, execution_policy P, std::size_t NO, std::size_t NI, class F>
  requires noise_operand<Z, compute_t<S>>
bool map(const P& policy, const Z& z, const std::array<std::span<S>, NO>& out,
         const std::array<std::span<const S>, NI>& in, F f) noexcept {
  using T = compute_t<S>;
  static_assert(NO >= 1, "kernels::map: at least one output");
  const std::size_t n = out[0].size();
  detail::map_body<S, Z, NO, NI, F> body{{}, {}, f};
  for (std::size_t j = 0; j < NO; ++j) {
    DIFFUSION_ASSERT(out[j].size() == n);
    body.op[j] = out[j].data();
  }
  for (std::size_t j = 0; j < NI; ++j) {
    DIFFUSION_ASSERT(in[j].size() == n);
    body.ip[j] = in[j].data();
  }
  DIFFUSION_ASSERT(detail::size_ok<T>(z, n));
  return detail::run<T>(policy, n, z, body);
}

/// @brief The output list of kernels::map(): `kernels::outputs(x, d)`.
/// @param[in] first the first output; @param[in] rest the others (spans of the same T).
template <storage_scalar T, class... S>
std::array<std::span<T>, 1 + sizeof...(S)> outputs(std::span<T> first, S... rest) noexcept {
  return {first, std::span<T>(rest)...};
}

/// @brief The input list of kernels::map(): `kernels::inputs<T>(x, denoised)`.
/// @param[in] first the first input; @param[in] rest the others (anything a span of const T is made from).
template <storage_scalar T, class... S>
std::array<std::span<const T>, 1 + sizeof...(S)> inputs(std::span<const T> first, const S&... rest) noexcept {
  return {first, std::span<const T>(rest)...};
}

/// @brief kernels::map() for bodies that have no bit-identical SIMD form (such as `std::exp` per
/// element): `f` is called element by element with scalars T (inputs, then the noise value unless
/// Z is no_noise) and returns one T. The noise is still generated chunk-wise inside the pass.
/// Float and double arrays only (16-bit storage goes through kernels::map()).
/// @param[in] policy sequential or parallel; @param[in] z the noise operand;
/// @param[out] out the output (may alias an input); @param[in] in NI inputs; @param[in] f the body.
/// @return true when every output is finite.
template <real_scalar T, class Z, execution_policy P, std::size_t NI, class F>
  requires noise_operand<Z, T>
bool map_scalar(const P& policy, const Z& z, std::span<T> out, const std::array<std::span<const T>, NI>& in,
                F f) noexcept {
  const std::size_t n = out.size();
  std::array<const T*, NI> ip{};
  for (std::size_t j = 0; j < NI; ++j) {
    DIFFUSION_ASSERT(in[j].size() == n);
    ip[j] = in[j].data();
  }
  DIFFUSION_ASSERT(detail::size_ok<T>(z, n));
  return detail::run<T>(policy, n, z, detail::map_scalar_body<T, Z, NI, F>{out.data(), ip, f});
}

/// @brief `std::clamp(v, lo, hi)` on a lane (scalar or batch) exactly: NaN and signed zeros pass through.
/// @param[in] v the value; @param[in] lo lower bound; @param[in] hi upper bound.
template <class V>
DIFFUSION_INLINE V clamp(const V& v, const V& lo, const V& hi) noexcept {
  return detail::clamp(v, lo, hi);
}

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
/// @return true when every output is finite.
/// @pre all three spans have the same size (asserted).
template <storage_scalar T, execution_policy P = sequential_policy>
bool affine2(compute_t<T> a, std::span<const T> x, compute_t<T> b, std::span<const T> y, std::span<T> out,
             const P& policy = P{}) noexcept {
  return map(policy, no_noise{}, outputs(out), inputs<T>(x, y), [a, b](auto xv, auto yv) {
    using V = decltype(xv);
    return madd(V(a), xv, V(b) * yv);
  });
}

/// @brief \f$out_k = a\,x_k\f$ (one rounding: error \f$\le u|ax|\f$).
/// @param[in] a factor; @param[in] x input; @param[out] out result (may alias x);
/// @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
/// @pre same sizes (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
bool scale(T a, std::span<const T> x, std::span<T> out, const P& policy = P{}) noexcept {
  return map(policy, no_noise{}, outputs(out), inputs<T>(x), [a](auto xv) {
    using V = decltype(xv);
    return V(a) * xv;
  });
}

/// @brief Classifier-free guidance combination (Ho & Salimans 2022, Eq. 6 with w = their w + 1):
/// \f$out_k = u_k + w\,(c_k - u_k)\f$, evaluated as `madd(w, c − u, u)`.
///
/// Error: \f$\le u(2|w||c - u| + |out|)\f$ (FMA: \f$u(|w||c-u| + |out|)\f$); exactly c at w = 1
/// whenever c − u is exact (Sterbenz), and u at w = 0.
/// @param[in] w guidance scale; @param[in] conditional c; @param[in] unconditional u;
/// @param[out] out result (may alias either input); @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
/// @pre same sizes (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
bool guidance_combine(T w, std::span<const T> conditional, std::span<const T> unconditional, std::span<T> out,
                      const P& policy = P{}) noexcept {
  return map(policy, no_noise{}, outputs(out), inputs<T>(conditional, unconditional), [w](auto c, auto u) {
    using V = decltype(c);
    return madd(V(w), c - u, u);
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
/// @param[in] z the normals: a buffer of out.size(), a kernels::philox_stream or kernels::no_noise;
/// @param[out] out result (may alias x or y); @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
/// @pre equal sizes (asserted).
template <storage_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, compute_t<T>>
bool affine2_noise(compute_t<T> a, std::span<const T> x, compute_t<T> b, std::span<const T> y, compute_t<T> c,
                   const Z& z, std::span<T> out, const P& policy = P{}) noexcept {
  if constexpr (std::is_same_v<Z, no_noise>) {
    return affine2(a, x, b, y, out, policy);
  } else {
    return map(policy, z, outputs(out), inputs<T>(x, y), [a, b, c](auto xv, auto yv, auto zv) {
      using V = decltype(xv);
      return madd(V(c), zv, madd(V(a), xv, V(b) * yv));
    });
  }
}

/// @brief kernels::affine2_noise with the normals generated inside the kernel: element k gets
/// normal `offset + k` of stream (sample, step) of `noise`, as `noise.fill(sample, step, offset, ...)`
/// would write it (bit-identical).
/// @param[in] a coefficient of x; @param[in] x first input; @param[in] b coefficient of y;
/// @param[in] y second input; @param[in] c noise scale; @param[in] noise the generator;
/// @param[in] sample stream coordinate; @param[in] step stream coordinate;
/// @param[in] offset index of the first normal; @param[out] out result (may alias x or y);
/// @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
template <real_scalar T, execution_policy P = sequential_policy>
bool affine2_noise(T a, std::span<const T> x, T b, std::span<const T> y, T c, const philox_normal& noise,
                   std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out,
                   const P& policy = P{}) noexcept {
  return affine2_noise(a, x, b, y, c, philox_stream{&noise, sample, step, offset}, out, policy);
}

/// @brief \f$out_k = a\,x_k + b\,z_k\f$, evaluated as `madd(a, x, b*z)`: the forward process
/// \f$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon\f$ (DDPM Eq. 4, Algorithm 1 line 5).
///
/// Error: as kernels::affine2, \f$\le 2u(|ax| + |bz|)\f$.
/// @param[in] a coefficient of x; @param[in] x input; @param[in] b noise scale;
/// @param[in] z the normals (buffer or kernels::philox_stream); @param[out] out result (may alias x);
/// @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
bool affine_noise(T a, std::span<const T> x, T b, const Z& z, std::span<T> out, const P& policy = P{}) noexcept {
  if constexpr (std::is_same_v<Z, no_noise>) {
    return map(policy, z, outputs(out), inputs<T>(x), [a](auto xv) {
      using V = decltype(xv);
      return madd(V(a), xv, V(T(0)));
    });
  } else {
    return map(policy, z, outputs(out), inputs<T>(x), [a, b](auto xv, auto zv) {
      using V = decltype(xv);
      return madd(V(a), xv, V(b) * zv);
    });
  }
}

/// @brief \f$out_k = x_k + c\,z_k\f$, evaluated as `madd(c, z, x)`: Karras et al. 2022,
/// Algorithm 2 line 5 (the churn, \f$\hat x = x + \sqrt{\hat\sigma^2 - \sigma^2}\,\epsilon\f$) and the
/// noise of an ancestral step.
///
/// Error: \f$\le u|out|\f$ with FMA, \f$u(|cz| + |out|)\f$ without.
/// @param[in] c noise scale; @param[in] x input; @param[in] z the normals (buffer or
/// kernels::philox_stream); @param[out] out result (may alias x); @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
bool add_noise(T c, std::span<const T> x, const Z& z, std::span<T> out, const P& policy = P{}) noexcept {
  if constexpr (std::is_same_v<Z, no_noise>) {
    return map(policy, z, outputs(out), inputs<T>(x), [](auto xv) { return xv; });
  } else {
    return map(policy, z, outputs(out), inputs<T>(x), [c](auto xv, auto zv) {
      using V = decltype(xv);
      return madd(V(c), zv, xv);
    });
  }
}

/// @brief One unadjusted Langevin step (Song & Ermon 2019, Algorithm 1 line 6):
/// \f$out_k = x_k + c\,(D_k - x_k) + g\,z_k\f$, evaluated as `madd(g, z, madd(c, D − x, x))`, with
/// \f$c = \alpha/\sigma^2\f$ and \f$g = \sqrt{2\alpha}\f$ (so that \f$c(D - x) = \alpha\,s(x,\sigma)\f$).
///
/// Error: \f$\le u(|c||D - x| + |x + c(D - x)| + |out|)\f$ with FMA (plus \f$u(|c(D-x)| + |gz|)\f$ without).
/// @param[in] c drift coefficient α/σ²; @param[in] g noise scale √(2α); @param[in] x state;
/// @param[in] denoised D(x; σ); @param[in] z the normals (buffer or kernels::philox_stream);
/// @param[out] out the new state (may alias x or denoised); @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
bool langevin(T c, T g, std::span<const T> x, std::span<const T> denoised, const Z& z, std::span<T> out,
              const P& policy = P{}) noexcept {
  if constexpr (std::is_same_v<Z, no_noise>) {
    return map(policy, z, outputs(out), inputs<T>(x, denoised), [c](auto xv, auto dv) {
      using V = decltype(xv);
      return madd(V(c), dv - xv, xv);
    });
  } else {
    return map(policy, z, outputs(out), inputs<T>(x, denoised), [c, g](auto xv, auto dv, auto zv) {
      using V = decltype(xv);
      return madd(V(g), zv, madd(V(c), dv - xv, xv));
    });
  }
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
/// \f[ \hat x_0 = \mathrm{clamp}(a\,x_t + b\,\text{out}),\quad
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
/// model_out; empty: not written); @param[out] x_next \f$x_{t-1}\f$ (may alias x or model_out);
/// @param[in] policy sequential (default) or parallel.
/// @return true when every output (x̂₀ and x_{t−1}) is finite.
/// @pre equal sizes (asserted).
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, T>
bool ddpm_ancestral(const ddpm_coefficients<T>& c, std::span<const T> x, std::span<const T> model_out, const Z& z,
                    std::span<T> x0, std::span<T> x_next, const P& policy = P{}) noexcept {
  const auto body = [c](auto xv, auto ov, auto... zv) {
    using V = decltype(xv);
    V h = madd(V(c.x0_from_x), xv, V(c.x0_from_out) * ov);
    if (c.clip) h = clamp(h, V(-c.clip_value), V(c.clip_value));
    V r = madd(V(c.mean_x0), h, V(c.mean_xt) * xv);
    if constexpr (sizeof...(zv) == 1) r = madd(V(c.sigma), zv..., r);
    return std::array<V, 2>{h, r};
  };
  if (x0.empty())  // x̂₀ not wanted: one output
    return map(policy, z, outputs(x_next), inputs<T>(x, model_out), [body](auto... v) { return body(v...)[1]; });
  return map(policy, z, outputs(x0, x_next), inputs<T>(x, model_out), body);
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
/// @param[in,out] x0 \f$\hat x_0\f$ (output, or input with x0_given; must not alias x or model_out;
/// empty without x0_given: not written);
/// @param[out] x_next \f$x_p\f$ (may alias x or model_out); @param[in] policy sequential (default) or parallel.
/// @return true when every output is finite.
/// @pre equal sizes (asserted).
template <storage_scalar T, class Z, execution_policy P = sequential_policy>
  requires noise_operand<Z, compute_t<T>>
bool ddim(const ddim_coefficients<compute_t<T>>& c, std::span<const T> x, std::span<const T> model_out, const Z& z,
          bool x0_given, std::span<T> x0, std::span<T> x_next, const P& policy = P{}) noexcept {
  const auto finish = [c](auto xv, auto ov, auto h, auto... zv) {
    using V = decltype(xv);
    const V eps = madd(V(c.eps_from_x), xv, V(c.eps_from_other) * (c.eps_from_x0 ? h : ov));
    V r = madd(V(c.coef_x0), h, V(c.coef_eps) * eps);
    if constexpr (sizeof...(zv) == 1) r = madd(V(c.sigma), zv..., r);
    return r;
  };
  if (x0_given)
    return map(policy, z, outputs(x_next), inputs<T>(x, model_out, x0),
               [finish](auto xv, auto ov, auto h, auto... zv) { return finish(xv, ov, h, zv...); });
  const auto body = [c, finish](auto xv, auto ov, auto... zv) {
    using V = decltype(xv);
    V h = madd(V(c.x0_from_x), xv, V(c.x0_from_out) * ov);
    if (c.clip) h = clamp(h, V(-c.clip_value), V(c.clip_value));
    return std::array<V, 2>{h, finish(xv, ov, h, zv...)};
  };
  if (x0.empty())  // x̂₀ not wanted: one output
    return map(policy, z, outputs(x_next), inputs<T>(x, model_out), [body](auto... v) { return body(v...)[1]; });
  return map(policy, z, outputs(x0, x_next), inputs<T>(x, model_out), body);
}

}  // namespace diffusion::kernels

/// @}
