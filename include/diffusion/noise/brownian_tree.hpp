/// @file
/// @brief A Brownian motion on an interval built by Lévy's midpoint construction over Philox
/// streams (@ref diffusion::brownian_tree): the noise of an interval is a pure function of
/// (seed, sample, interval), so that the noise between two levels is the same at any step
/// count, any batch size and any thread count.
///
/// **Construction** (Lévy 1939; Ciesielski 1961; e.g. Karatzas & Shreve, *Brownian Motion and
/// Stochastic Calculus*, §2.3): on [t₀, t₁] with T = t₁ − t₀, W(t₀) = 0, W(t₁) = √T ξ₀, and the
/// midpoint m of a dyadic node [l, r] of width w is drawn from the Brownian bridge between its ends,
/// \f$W(m) = \tfrac12\bigl(W(l) + W(r)\bigr) + \tfrac12\sqrt{w}\,\xi_j\f$. Unrolled, this is the
/// Schauder (tent-function) series
/// \f[ W_D(t) = \xi_0\frac{t - t_0}{\sqrt T} + \sum_{d=0}^{D-1}\ \sum_{i=0}^{2^d-1} \xi_{2^d+i}\,
///     \frac{w_d/2 - |t - m_{d,i}|}{\sqrt{w_d}}\Big|_{+}, \qquad w_d = T\,2^{-d}, \f]
/// the tent of node j = 2^d + i (heap numbering: node 1 is [t₀, t₁], the children of j are 2j and
/// 2j + 1) peaking at its midpoint \f$m_{d,i}\f$ with height \f$\sqrt{w_d}/2\f$. At most one node per
/// level has a non-zero tent at a given t, so W_D(t) and an increment W_D(b) − W_D(a) are sums of
/// at most D + 1 and 2D + 1 terms.
///
/// **Addressing.** ξ_j of element k of sample b is normal number k of the Philox stream
/// (sample b, step j) of `philox_normal(seed ^ brownian_tree::seed_tag)` (ξ₀ is step 0). The tag
/// keeps the tree's streams apart from those of a `philox_normal(seed)` used for the sampler's
/// own noise with the same seed.
///
/// **Law at depth D.** W_D is the piecewise-linear interpolation, on the grid
/// \f$t_0 + iT2^{-D}\f$ (leaf width \f$w = T2^{-D}\f$), of an exact Brownian motion: its values on
/// the grid have the exact joint law; between grid points it is the bridge mean (no bridge noise),
/// so for a < b in different leaves \f$\operatorname{Var}(W_D(b) - W_D(a)) = (b - a) - w\theta_a(1-\theta_a)
/// - w\theta_b(1-\theta_b)\f$ (θ the position within the leaf, in [0, 1)): a relative deficit of at
/// most \f$w/(2(b-a))\f$. Increments over disjoint intervals are independent except through a shared
/// leaf (covariance at most w/4). The default D = 32 gives w = T·2⁻³²: for σ ∈ [0.002, 80],
/// w = 1.9·10⁻⁸, so a relative deficit ≤ 10⁻³ for steps wider than 10⁻⁵ and ≤ 10⁻⁶ for steps
/// wider than 10⁻².
///
/// **Arithmetic.** The coefficient of node j in W_D(b) − W_D(a) is the difference of its two tent
/// values, formed in double from the points' distances to the node's ends, each computed by one
/// formula of (node, point), so that over a partition of [a, b] the coefficients telescope up to
/// the rounding of the differences (≤ u|coefficient|; products feed sums only through simd::madd,
/// so compiler contraction cannot break the telescoping or the symmetry below);
/// cast to T, the terms are summed in T in a fixed order (increasing node index) with
/// @ref diffusion::simd::madd, one SIMD body for the bulk and the tail. Hence an increment of K
/// terms is within \f$(K + 2)u_T\sum_j|c_j\xi_j|\f$ of its exact value on the same ξ, and a value is a
/// pure function of (seed, sample, element, a, b): bit-identical for every batch split, chunking and
/// thread count; swapping a and b negates it bit for bit.
///
/// Dependencies: core (config, errors, execution, simd, tensor), philox.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/simd.hpp"
#include "../core/tensor.hpp"
#include "philox.hpp"

/// @addtogroup noise
/// @{

namespace diffusion {

namespace detail {

/// One term ξ_node·coef of a Brownian-tree value.
struct brownian_term {
  std::uint32_t node;
  double coef;
};

/// The terms of W_D(b) − W_D(a): at most one root term and two per level.
struct brownian_terms {
  std::array<brownian_term, 65> term{};
  std::size_t size = 0;
  void push(std::uint32_t node, double coef) noexcept {
    if (coef != 0.0) term[size++] = {node, coef};
  }
};

/// out[k] ← madd(c, z[k], out[k]) for k < n: one body for the SIMD bulk and the scalar tail
/// (bit-identical, whatever the length and alignment).
template <real_scalar T>
void brownian_accumulate(T c, const T* z, T* out, std::size_t n) noexcept {
  const auto body = [&](auto lane, std::size_t k) {
    using V = typename decltype(lane)::type;
    if constexpr (std::is_same_v<V, T>) {
      out[k] = simd::madd(c, z[k], out[k]);
    } else {
      simd::madd(V(c), V::load_unaligned(z + k), V::load_unaligned(out + k)).store_unaligned(out + k);
    }
  };
  std::size_t k = 0;
  if constexpr (simd::has_batch<T>) {
    using B = xsimd::batch<T, simd::arch>;
    for (; k + B::size <= n; k += B::size) body(std::type_identity<B>{}, k);
  }
  for (; k < n; ++k) body(std::type_identity<T>{}, k);
}

}  // namespace detail

/// @brief A Brownian motion W on [t_min, t_max] per (sample, element), built by Lévy's midpoint
/// construction to a fixed depth over Philox streams (file comment: the series, the addressing and
/// the exact law at depth D), and the standardized increments of k-diffusion's
/// `BrownianTreeNoiseSampler` for the SDE samplers.
///
/// A value is a pure function of (seed, sample, element, interval): querying an interval twice or in
/// any order gives the same bits; the increments over a partition of [a, b] sum to the increment over
/// [a, b] (to rounding: each is a sum of at most 2D + 1 terms); row b of a batch depends only on
/// `first_sample + b`, never on the batch size or the thread count.
///
/// Use with the SDE samplers (t = σ, as k-diffusion):
/// @code
/// const diffusion::brownian_tree tree(seed, sigmas[sigmas.size() - 2], sigmas[0]);  // [σ_min, σ_max] over σ > 0
/// diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, tree, sigmas);
/// @endcode
/// Cost of one query: one Philox normal per element for each of at most 2D + 1 nodes (D = 32: ≤ 65);
/// no allocation (a stack buffer of 512 elements); an execution policy splits the elements over threads.
class brownian_tree {
 public:
  /// @brief The largest depth: node indices are Philox step coordinates (32 bits), 2^D − 1 < 2^32.
  static constexpr std::size_t max_depth = 32;
  /// @brief The default depth (leaf width T·2⁻³²).
  static constexpr std::size_t default_depth = 32;
  /// @brief XOR-ed into the seed for the tree's generator ("Brownian" in ASCII), so that the tree's
  /// streams differ from those of `philox_normal(seed)`.
  static constexpr std::uint64_t seed_tag = 0x42726F776E69616Eull;

  /// @brief The tree over [t_min, t_max] with the given seed and depth.
  /// @param[in] seed the seed (the generator is `philox_normal(seed ^ seed_tag)`).
  /// @param[in] t_min, t_max the interval, finite, t_min < t_max (t_max − t_min finite).
  /// @param[in] depth D ∈ [1, 32]: levels of midpoints; leaf width (t_max − t_min)·2^−D.
  /// @throws std::invalid_argument for a bad interval or depth.
  brownian_tree(std::uint64_t seed, double t_min, double t_max, std::size_t depth = default_depth)
      : source_(seed ^ seed_tag), seed_(seed), t0_(t_min), t1_(t_max), width_(t_max - t_min), depth_(depth) {
    constexpr std::string_view where = "diffusion::brownian_tree";
    detail::check_finite(where, "t_min", t_min);
    detail::check_finite(where, "t_max", t_max);
    if (!(t_min < t_max && std::isfinite(width_)))
      detail::throw_invalid(where, "the interval [t_min, t_max] = [" + detail::to_text(t_min) + ", " +
                                       detail::to_text(t_max) + "] must have t_min < t_max and a finite width");
    if (depth < 1 || depth > max_depth)
      detail::throw_invalid(where, "depth = " + detail::to_text(depth) + " is outside the allowed range [1, " +
                                       detail::to_text(max_depth) + "]");
    root_scale_ = 1.0 / std::sqrt(width_);
  }

  /// @brief The seed given at construction.
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }
  /// @brief The lower end t₀ of the interval.
  [[nodiscard]] double t_min() const noexcept { return t0_; }
  /// @brief The upper end t₁ of the interval.
  [[nodiscard]] double t_max() const noexcept { return t1_; }
  /// @brief The depth D.
  [[nodiscard]] std::size_t depth() const noexcept { return depth_; }
  /// @brief The leaf width \f$w = (t_1 - t_0)2^{-D}\f$: W_D is linear on each leaf.
  [[nodiscard]] double leaf_width() const noexcept { return std::ldexp(width_, -static_cast<int>(depth_)); }

  /// @brief The raw increment \f$W_D(b) - W_D(a)\f$ of one sample, element k in out[k].
  ///
  /// Law: Gaussian, mean 0, variance \f$|b - a|\f$ less the leaf deficit of the file comment
  /// (exactly |b − a| when a and b are grid points); a = b gives 0.
  /// @param[in] sample the sample (stream coordinate, taken mod 2^32, e.g. the batch row).
  /// @param[in] a, b the ends, finite, in [t_min, t_max].
  /// @param[out] out the increments of elements 0 … out.size() − 1.
  /// @throws std::invalid_argument for an end outside the interval or not finite.
  template <real_scalar T>
  void increment(std::uint64_t sample, double a, double b, std::span<T> out) const {
    constexpr std::string_view where = "diffusion::brownian_tree::increment";
    check_time(where, "a", a);
    check_time(where, "b", b);
    accumulate(terms(a, b), 1.0, sample, 0, out);
  }

  /// @brief The standardized increments \f$z = \bigl(W_D(\sigma_\text{next}) - W_D(\sigma)\bigr)/\sqrt{|\sigma_\text{next} - \sigma|}\f$
  /// of k-diffusion's `BrownianTreeNoiseSampler(sigma, sigma_next)` for `rows` rows: row r is sample
  /// `first_sample + r`. Each z is N(0, 1) up to the leaf deficit (relative variance deficit
  /// ≤ w/(2|σ_next − σ|), w = @ref leaf_width); the z of disjoint intervals are independent (up to a
  /// shared leaf). The buffer is the `noise` operand of the SDE steps.
  /// @param[out] out rows × n normals (n = out.size()/rows).
  /// @param[in] rows the batch rows, ≥ 1, dividing out.size().
  /// @param[in] sigma, sigma_next the interval's ends (either order), finite, in [t_min, t_max],
  ///            |σ_next − σ| ≥ leaf_width() (narrower, both ends could share a leaf, where W_D is
  ///            linear and z would not be standard).
  /// @param[in] first_sample the sample of row 0.
  /// @param[in] policy threads: the elements are split in ranges of multiples of 512; each value is
  ///            the same for every split (bit-identical for any thread count).
  /// @throws std::invalid_argument for bad ends, a zero-length or sub-leaf interval, or bad sizes.
  template <real_scalar T, execution_policy P = sequential_policy>
  void fill(std::span<T> out, std::size_t rows, double sigma, double sigma_next, std::uint64_t first_sample,
            const P& policy = P{}) const {
    constexpr std::string_view where = "diffusion::brownian_tree::fill";
    const std::size_t n = detail::rows_split(where, out.size(), rows, "out");
    check_time(where, "sigma", sigma);
    check_time(where, "sigma_next", sigma_next);
    const double delta = std::abs(sigma_next - sigma);
    if (!(delta >= leaf_width()) || delta == 0.0)
      detail::throw_invalid(where, "|sigma_next - sigma| = " + detail::to_text(delta) +
                                       " must be > 0 and >= the leaf width " + detail::to_text(leaf_width()) +
                                       " of the tree (depth " + detail::to_text(depth_) +
                                       "; increase the depth for narrower intervals)");
    const detail::brownian_terms t = terms(sigma, sigma_next);
    const double scale = 1.0 / std::sqrt(delta);
    detail::for_each_range(policy, out.size(), chunk, [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end;) {  // the range's pieces of rows
        const std::size_t r = i / n, stop = std::min(end, (r + 1) * n);
        accumulate(t, scale, first_sample + r, i - r * n, out.subspan(i, stop - i));
        i = stop;
      }
    });
  }

  /// @brief Whether [lo, hi] lies in the tree's interval (what a sampler checks before its first step).
  [[nodiscard]] bool covers(double lo, double hi) const noexcept { return lo >= t0_ && hi <= t1_ && lo <= hi; }

 private:
  void check_time(std::string_view where, std::string_view name, double t) const {
    if (!(t >= t0_ && t <= t1_))
      detail::throw_invalid(where, std::string(name) + " = " + detail::to_text(t) + " is outside the tree's interval [" +
                                       detail::to_text(t0_) + ", " + detail::to_text(t1_) + "]");
  }

  /// The terms of W_D(b) − W_D(a), in increasing node order. The tent of node (d, i) at t is
  /// e·slope with e = t − l left of the midpoint and r − t right of it (slope = 1/√w_d, the same on
  /// both sides), so a coefficient is (e_b − e_a)·slope, e_b·slope or −e_a·slope: no product feeds a
  /// sum except through simd::madd, so compiler contraction cannot change a coefficient (and the
  /// same point always gives the same e).
  [[nodiscard]] detail::brownian_terms terms(double a, double b) const noexcept {
    detail::brownian_terms out;
    out.push(0, (b - a) * root_scale_);
    std::uint64_t ia = 0, ib = 0;  // positions of a's and b's nodes within their level
    bool joint = true;             // a and b in the same node
    for (std::size_t d = 0; d < depth_; ++d) {
      const double w = std::ldexp(width_, -static_cast<int>(d)), half = 0.5 * w, slope = 1.0 / std::sqrt(w);
      // Node (d, i) spans [t0 + w i, t0 + w (i + 1)], midpoint t0 + (w/2)(2i + 1), each one madd: a
      // child's ends are the same doubles as its parent's (w (i + 1) = (w/2)(2i + 2) exactly), so the
      // nodes nest exactly.
      const auto level = std::uint64_t{1} << d;
      // The distance e of t from the nearer end of node (d, i), and the side of the midpoint t is on.
      const auto offset = [&](std::uint64_t i, double t, bool& right) {
        const double m = simd::madd(half, static_cast<double>(2 * i + 1), t0_);
        right = !(t < m);
        return right ? simd::madd(w, static_cast<double>(i + 1), t0_) - t : t - simd::madd(w, static_cast<double>(i), t0_);
      };
      bool ra = false, rb = false;
      const double ea = offset(ia, a, ra), eb = offset(ib, b, rb);
      if (joint) {
        out.push(static_cast<std::uint32_t>(level + ia), (eb - ea) * slope);
        joint = ra == rb;
        ib = 2 * ia + (rb ? 1 : 0);
        ia = 2 * ia + (ra ? 1 : 0);
      } else {
        const auto na = static_cast<std::uint32_t>(level + ia), nb = static_cast<std::uint32_t>(level + ib);
        if (na < nb) {
          out.push(na, -ea * slope);
          out.push(nb, eb * slope);
        } else {
          out.push(nb, eb * slope);
          out.push(na, -ea * slope);
        }
        ia = 2 * ia + (ra ? 1 : 0);
        ib = 2 * ib + (rb ? 1 : 0);
      }
    }
    return out;
  }

  /// out = Σ scale·coef_j ξ_j over the terms, for elements offset, offset + 1, … of one sample: term by
  /// term (the order of the sum), each node's stream made 512 normals at a time into a stack buffer.
  template <real_scalar T>
  void accumulate(const detail::brownian_terms& t, double scale, std::uint64_t sample, std::size_t offset,
                  std::span<T> out) const {
    alignas(64) T buf[chunk];
    std::fill(out.begin(), out.end(), T(0));
    for (std::size_t j = 0; j < t.size; ++j) {
      const detail::philox_row<T> stream(source_.key(), sample, t.term[j].node);
      const T c = static_cast<T>(t.term[j].coef * scale);
      for (std::size_t e = 0; e < out.size(); e += chunk) {
        const std::size_t len = std::min(chunk, out.size() - e);
        stream.fill(offset + e, std::span<T>(buf, len));
        detail::brownian_accumulate(c, buf, out.data() + e, len);
      }
    }
  }

  static constexpr std::size_t chunk = 512;  ///< Elements per stack buffer and grain of a thread split.
  philox_normal source_;
  std::uint64_t seed_;
  double t0_, t1_, width_;
  std::size_t depth_;
  double root_scale_ = 0.0;
};

}  // namespace diffusion

/// @}
