/// @file
/// @brief UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
/// of Diffusion Models", arXiv 2302.04867) in its data-prediction form: the multistep predictor
/// UniP-p and the corrector UniC-p, as one step function over the levels of the state's process
/// (@ref diffusion::level_step "level_step"s of σ-space, variance-preserving and rectified-flow states) and a σ-space loop.
///
/// **One call, two updates.** UniC corrects the state the previous call predicted, using the model
/// output at that predicted state (so the corrector costs no model call), and UniP then predicts the
/// next state from the corrected one. A call therefore does what one `step()` of diffusers'
/// UniPCMultistepScheduler does, in the same order:
/// @code
/// diffusion::unipc_state<float> st{.denoised = {h0, h1}, .last_sample = last};  // caller-owned (order 2)
/// for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
///   D(x, sigmas[i], denoised);                               // the model at the predicted x
///   diffusion::unipc_step<float>(diffusion::sigma_step{sigmas[i], sigmas[i + 1]}, denoised, x, st,
///                                {.order = 2}, std::min<std::size_t>(2, sigmas.size() - 1 - i));
/// }
/// @endcode
/// (compiled in tests/test_sampler_unipc.cpp, "unipc_sample is unipc_step in a loop"; the last argument
/// is diffusers' `lower_order_final`).
/// The corrected state of a step exists only inside the next call: the state after the last call is
/// the last prediction (no model output comes after it to correct it with), as in diffusers.
///
/// **The update** (λ = log(α/σ), h = λ_t − λ_s > 0 from level s to level t, \f$E = 1 - e^{-h}\f$): with the
/// model outputs \f$M_0\f$ at λ_s and \f$M_j\f$ at \f$\lambda_s + r_j h\f$ and the divided differences
/// \f$\Delta_j = (M_j - M_0)/r_j\f$,
/// \f[ x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t\Big(E\,M_0 + \sum_j g_j\,\Delta_j\Big), \f]
/// the exponential integrator of the probability-flow ODE in data prediction (DPM-Solver++'s first-order
/// step plus a correction). The weights solve the order conditions
/// \f$\sum_j g_j r_j^{k-1} = \gamma_k = k!\,h\,\varphi_{k+1}(-h)\f$, k = 1 … q (q the number of differences),
/// \f$\varphi_k\f$ the exponential-integrator functions (\f$\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z\f$, \f$\varphi_0 = e^z\f$): the paper's
/// \f$R_p(h)\,a_p = \varphi_p(h)/B(h)\f$ with \f$g = -B(h)\,a\f$ in its data-prediction sign (B cancels where
/// the system is solved). The predictor UniP-p uses q = p − 1 earlier outputs (r_j < 0); the corrector
/// UniC-p uses the p outputs its predictor used and the new output at the predicted level (r = 1).
/// Where the references use a fixed weight instead of solving a 1 × 1 system — UniP-2 and UniC-1,
/// \f$a = \tfrac12\f$ — B(h) decides it (@ref diffusion::unipc_variant): \f$g = h/2\f$ (bh1) or
/// \f$g = E/2\f$ (bh2); both equal \f$\gamma_1 = h/2 + O(h^2)\f$ to leading order, so the order is kept.
///
/// **Orders.** UniP-p is of order p; UniC-p raises it to p + 1 (the paper's Theorem 3.1). Measured on
/// Gaussian data in tests/test_sampler_unipc.cpp and listed in docs/accuracy.md.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "common.hpp"
#include "sigma_common.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

/// @brief The B(h) of UniPC (Zhao et al. 2023, §3.1: any B(h) = O(h) keeps the order), which decides the
/// fixed weight ½ of UniP-2 and UniC-1 (diffusers' and ComfyUI's `solver_type` / `variant`). In the
/// data-prediction form the references evaluate B at −h: bh1 \f$B = -h\f$, bh2 \f$B = e^{-h} - 1\f$; the
/// weight of the single difference is then \f$g = -\tfrac12 B\f$.
enum class unipc_variant {
  bh1,  ///< \f$B_1(h) = h\f$: \f$g = h/2\f$ (the paper recommends it for unconditional sampling with few steps).
  bh2,  ///< \f$B_2(h) = e^h - 1\f$: \f$g = (1 - e^{-h})/2\f$ (diffusers' default; recommended for guided sampling).
};

/// @brief Options of one @ref diffusion::unipc_step "unipc_step".
struct unipc_options {
  /// The largest predictor order p, 1 … 3 (diffusers' `solver_order`, default 2); also the number of
  /// history buffers @ref unipc_state must hold. Keep it fixed over a run.
  std::size_t order = 2;
  unipc_variant variant = unipc_variant::bh2;  ///< B(h) of the fixed weights (diffusers' `solver_type`).
  /// Correct the state the previous call predicted before predicting (UniC). False for one call is
  /// diffusers' `disable_corrector` entry for the previous step index.
  bool use_corrector = true;
};

/// @brief The history of UniPC, in caller-owned buffers of the state's size (no allocation): the model
/// outputs (x̂₀) of the latest calls, newest first, with their λ, and what the corrector restarts from.
/// Value-initialize it (count = 0, last_order = 0) at the start of a run.
template <real_scalar T>
struct unipc_state {
  /// x̂₀ of the latest calls, newest first; the first `order` (@ref unipc_options::order) must have the
  /// state's size. The step rotates these views: slot 0 is always the newest.
  std::array<std::span<T>, 3> denoised{};
  std::array<double, 3> lambda{};  ///< λ = log(α/σ) of each stored output (−∞ at α = 0).
  std::size_t count = 0;           ///< Outputs stored (0 at the start, at most `order`).
  /// The state the last prediction started from (the corrector recomputes the prediction from it).
  /// Needed when `use_corrector` is set; when it is empty, no correction can follow.
  std::span<T> last_sample{};
  double last_sigma = 0.0;      ///< σ of the level of `last_sample`.
  noise_level last_to{};        ///< The level the last prediction landed on (the next call must start there).
  std::size_t last_order = 0;   ///< The order p of the last prediction; 0: nothing to correct.
};

namespace detail {

/// The exponential-integrator functions φ₁ … φ₄ at z (Hochbruck & Ostermann 2010):
/// \f$\varphi_k(z) = \int_0^1 e^{(1-\theta)z}\frac{\theta^{k-1}}{(k-1)!}d\theta\f$, so \f$\varphi_0 = e^z\f$,
/// \f$\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z\f$ and \f$\varphi_k(0) = 1/k!\f$. The recurrence cancels for small
/// |z| (φ₄ loses a factor 1/|z|³ of accuracy), so |z| < 2 uses the series \f$\sum_{n \ge 0} z^n/(n+k)!\f$ (31 terms:
/// the first omitted one is below 2³¹/32! < 1e−25 relative), whose cancellation at z < 0 costs at most a factor
/// φ_k(|z|)/φ_k(−|z|) < 8; |z| ≥ 2 uses the recurrence from expm1, which carries the error of φ₁ with a factor
/// 1/|z| ≤ ½ per step. Tested within 32 ulps of a long-double reference. Element k − 1 of the result is φ_k(z).
inline std::array<double, 4> phi_functions(double z) {
  std::array<double, 4> phi{};
  if (std::abs(z) < 2.0) {
    // φ_k = (1/k!)(1 + z/(k+1)(1 + z/(k+2)(1 + …))), nested from the 30th term inwards.
    double inv_fact = 1.0;  // 1/k!
    for (std::size_t k = 1; k <= 4; ++k) {
      inv_fact /= static_cast<double>(k);
      double s = 1.0;
      for (std::size_t n = 30; n >= 1; --n) s = 1.0 + z * s / static_cast<double>(k + n);
      phi[k - 1] = s * inv_fact;
    }
    return phi;
  }
  phi[0] = std::expm1(z) / z;
  double inv_fact = 1.0;  // 1/k!
  for (std::size_t k = 1; k < 4; ++k) {
    phi[k] = (phi[k - 1] - inv_fact) / z;
    inv_fact /= static_cast<double>(k + 1);
  }
  return phi;
}


/// λ = log(α/σ) of a level, written so that α = 1 gives −log σ exactly (−∞ at α = 0, +∞ at σ = 0).
inline double log_snr_half(const noise_level& l) noexcept { return std::log(l.alpha) - std::log(l.sigma); }

/// The weights \f$g_j = \sum_k \gamma_k\,[\tau^{k-1}]\,\ell_j(\tau)\f$ for q ≤ N distinct nodes r, \f$\ell_j\f$ the Lagrange
/// basis on the nodes: with moments \f$\gamma_k = \int \tau^{k-1} w(\tau)\,d\tau\f$ of a weight w, \f$g_j = \int \ell_j w\f$
/// (the exact integral of the interpolant), and the solution of the transposed Vandermonde system
/// \f$\sum_j g_j r_j^{k-1} = \gamma_k\f$, k = 1 … q, in closed form.
template <std::size_t N>
std::array<double, N> lagrange_moment_weights(std::span<const double> r, const std::array<double, N>& gamma) {
  std::array<double, N> g{};
  const std::size_t q = r.size();
  for (std::size_t j = 0; j < q; ++j) {
    std::array<double, N> poly{};  // Π_{m≠j} (τ − r_m), lowest power first
    poly[0] = 1.0;
    double den = 1.0;
    std::size_t degree = 0;
    for (std::size_t m = 0; m < q; ++m) {
      if (m == j) continue;
      ++degree;  // poly ← poly · (τ − r_m), highest power first (degree ≤ N − 1)
      for (std::size_t k = degree; k >= 1; --k) poly[k] = poly[k - 1] - r[m] * poly[k];
      poly[0] *= -r[m];
      den *= r[j] - r[m];
    }
    double s = 0.0;
    for (std::size_t k = 0; k < q; ++k) s += gamma[k] * poly[k];
    g[j] = s / den;
  }
  return g;
}

/// The weights of the UniPC order conditions \f$\sum_j g_j r_j^{k-1} = \gamma_k\f$, k = 1 … q, for q ≤ 3 distinct
/// nodes r (`lagrange_moment_weights`: the transposed Vandermonde
/// system the references hand to a linear solver, solved in closed form).
inline std::array<double, 3> unipc_weights(std::span<const double> r, const std::array<double, 3>& gamma) {
  return lagrange_moment_weights<3>(r, gamma);
}

/// The coefficients of one UniPC update from level s to level t (the formula of the file comment):
/// \f$x_t = \text{ratio}\cdot x_s + \text{m0}\cdot M_0 + \sum_j \text{earlier}_j M_j + \text{newest}\cdot M_\text{new}\f$,
/// with the earlier outputs at nodes r (< 0) and, for the corrector, the new output at r = 1.
struct unipc_coefficients {
  double ratio = 0.0;                ///< σ_t/σ_s.
  double m0 = 0.0;                   ///< Of the output at level s.
  std::array<double, 3> earlier{};   ///< Of the earlier outputs, in the order of the nodes.
  double newest = 0.0;               ///< Of the output at level t (corrector only).
};

/// The coefficients for h = λ_t − λ_s (finite, > 0, or +∞ at σ_t = 0 with no earlier outputs), α_t, the
/// ratio σ_t/σ_s, the nodes of the earlier outputs and whether the output at t takes part (UniC).
inline unipc_coefficients unipc_update_coefficients(double ratio, double alpha_t, double h, std::span<const double> r,
                                                    bool with_newest, unipc_variant variant) {
  unipc_coefficients c;
  c.ratio = ratio;
  const double E = std::isinf(h) ? 1.0 : -std::expm1(-h);
  std::array<double, 4> nodes{};
  std::copy(r.begin(), r.end(), nodes.begin());
  const std::size_t q = r.size() + (with_newest ? 1 : 0);
  if (with_newest) nodes[r.size()] = 1.0;
  std::array<double, 3> g{};
  if (q == 1) {
    // UniP-2 and UniC-1: the references' fixed a = 1/2, g = −B(−h)/2.
    g[0] = variant == unipc_variant::bh1 ? 0.5 * h : 0.5 * E;
  } else if (q >= 2) {
    const auto phi = phi_functions(-h);
    const std::array<double, 3> gamma{h * phi[1], 2.0 * h * phi[2], 6.0 * h * phi[3]};  // k! h φ_{k+1}(−h)
    g = unipc_weights(std::span<const double>(nodes.data(), q), gamma);
  }
  double sum = 0.0;
  for (std::size_t j = 0; j < q; ++j) sum += g[j] / nodes[j];
  c.m0 = alpha_t * (E - sum);
  for (std::size_t j = 0; j < r.size(); ++j) c.earlier[j] = alpha_t * g[j] / nodes[j];
  if (with_newest) c.newest = alpha_t * g[r.size()];
  return c;
}

/// The coefficients of the fused UniPC pass, as T.
template <real_scalar T>
struct unipc_pass_coefficients {
  T rc{}, kc_new{};          // correction: xc = rc·last + kc_new·D + Σ kc_old[j]·old_j
  std::array<T, 3> kc_old{};
  T rp{}, kp_new{};          // prediction: x' = rp·xc + kp_new·D + Σ kp_old[j]·old_j
  std::array<T, 3> kp_old{};
};

/// One pass over the elements: reads the base (x, or last_sample when correcting), the new output and
/// M earlier outputs; writes x' (and the corrected base into last_sample when SaveLast) and the new
/// output into the history slot that becomes the newest.
template <std::size_t M, bool Correct, bool SaveLast, real_scalar T, execution_policy P>
bool unipc_pass(const P& policy, std::span<T> x, std::span<T> last, std::span<T> slot, std::span<const T> denoised,
                const std::array<std::span<T>, 3>& old, const unipc_pass_coefficients<T>& c) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    using kernels::madd;
    const std::span<const T> base = Correct ? std::span<const T>(last) : std::span<const T>(x);
    auto body = [c](auto bv, auto dv, auto... ov) {
      using V = decltype(bv);
      V xc = bv;
      if constexpr (Correct) {
        xc = madd(V(c.kc_new), dv, V(c.rc) * bv);
        ((xc = madd(V(c.kc_old[I]), ov, xc)), ...);
      }
      V xn = madd(V(c.rp), xc, V(c.kp_new) * dv);
      ((xn = madd(V(c.kp_old[I]), ov, xn)), ...);
      if constexpr (SaveLast)
        return std::array<V, 3>{xn, xc, dv};
      else
        return std::array<V, 2>{xn, dv};
    };
    if constexpr (SaveLast)
      return kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, last, slot),
                          kernels::inputs<T>(base, denoised, std::span<const T>(old[I])...), body);
    else
      return kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, slot),
                          kernels::inputs<T>(base, denoised, std::span<const T>(old[I])...), body);
  }(std::make_index_sequence<M>{});
}

/// Requires two arrays not to share memory at all (an output that another output or input must not alias).
template <class A, class B>
void check_disjoint(std::string_view where, std::string_view a_name, std::span<A> a, std::string_view b_name,
                    std::span<B> b) {
  if (a.empty() || b.empty()) return;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data()), b0 = reinterpret_cast<std::uintptr_t>(b.data());
  if (a0 < b0 + b.size_bytes() && b0 < a0 + a.size_bytes())
    throw_invalid(where, std::string(a_name) + " and " + std::string(b_name) + " share memory; they must be distinct arrays");
}

/// Requires valid UniPC options: order in [1, 3], a known variant.
inline void check_unipc_options(std::string_view where, const unipc_options& o) {
  if (o.order < 1 || o.order > 3)
    throw_invalid(where, "order = " + to_text(o.order) + " is outside the allowed range [1, 3]");
  if (!(o.variant == unipc_variant::bh1 || o.variant == unipc_variant::bh2))
    throw_invalid(where, "variant = " + to_text(static_cast<int>(o.variant)) + " is not bh1 or bh2");
}

/// The UniPC step (@ref diffusion::unipc_step "unipc_step") under the name of its caller.
template <real_scalar T, execution_policy P>
void unipc_update(std::string_view where, const level_step& s, std::span<const T> denoised, std::span<T> x,
                  unipc_state<T>& st, const unipc_options& o, std::size_t max_order, const P& policy) {
  check_level_step(where, s);
  check_unipc_options(where, o);
  if (max_order < 1 || max_order > 3)
    throw_invalid(where, "max_order = " + to_text(max_order) + " is outside the allowed range [1, 3]");
  const std::size_t n = x.size();
  check_same_size(where, "denoised", denoised.size(), "x", n);
  check_no_partial_overlap(where, "denoised", denoised, "x", x);
  for (std::size_t j = 0; j < o.order; ++j) {
    const indexed_name name("state.denoised[", j, "]");
    check_same_size(where, name, st.denoised[j].size(), "x", n);
    check_disjoint(where, name, st.denoised[j], "x", x);
    if (st.denoised[j].data() != denoised.data()) check_disjoint(where, name, st.denoised[j], "denoised", denoised);
  }
  if (o.use_corrector && st.last_sample.empty())
    throw_invalid(where, "use_corrector is set but state.last_sample is empty; it must have x.size() = " + to_text(n) +
                             " elements");
  if (!st.last_sample.empty()) {
    check_same_size(where, "state.last_sample", st.last_sample.size(), "x", n);
    check_disjoint(where, "state.last_sample", st.last_sample, "x", x);
    check_disjoint(where, "state.last_sample", st.last_sample, "denoised", denoised);
    for (std::size_t j = 0; j < o.order; ++j)
      check_disjoint(where, "state.last_sample", st.last_sample, indexed_name("state.denoised[", j, "]"), st.denoised[j]);
  }
  if (st.count > o.order || st.last_order > o.order)
    throw_invalid(where, "the state holds " + to_text(st.count) + " outputs and a prediction of order " +
                             to_text(st.last_order) + ", more than order = " + to_text(o.order) +
                             " allows: keep the order fixed during a run (or reset the state)");
  const double lambda_s = log_snr_half(s.from), lambda_t = log_snr_half(s.to);
  if (!(lambda_t > lambda_s))
    throw_invalid(where, "the step must go to a less noisy level: log(alpha/sigma) goes from " + to_text(lambda_s) +
                             " to " + to_text(lambda_t));
  if (st.count > 0 && !(lambda_s > st.lambda[0]))
    throw_invalid(where, "the step starts at log(alpha/sigma) = " + to_text(lambda_s) +
                             ", not above the previous output's " + to_text(st.lambda[0]) +
                             " (the history is for levels that get less noisy)");

  // UniC-p: correct the last prediction with this output (p = the last prediction's order).
  const bool correct = o.use_corrector && st.last_order > 0;
  unipc_coefficients cc{};
  if (correct) {
    if (!(s.from.alpha == st.last_to.alpha && s.from.sigma == st.last_to.sigma))
      throw_invalid(where, "the step starts at alpha = " + to_text(s.from.alpha) + ", sigma = " + to_text(s.from.sigma) +
                               " but the last prediction landed on alpha = " + to_text(st.last_to.alpha) +
                               ", sigma = " + to_text(st.last_to.sigma) + "; the corrector needs the same level");
    const double hc = lambda_s - st.lambda[0];
    std::array<double, 2> r{};
    for (std::size_t j = 1; j < st.last_order; ++j) r[j - 1] = (st.lambda[j] - st.lambda[0]) / hc;
    cc = unipc_update_coefficients(s.from.sigma / st.last_sigma, s.from.alpha, hc,
                                   std::span<const double>(r.data(), st.last_order - 1), true, o.variant);
  }

  // UniP-p: p = min(order, max_order, 1 + the earlier outputs at finite λ); 1 from α = 0 and to σ = 0.
  const bool lands_on_data = s.to.sigma == 0.0;
  std::size_t usable = 0;
  while (usable < st.count && std::isfinite(st.lambda[usable])) ++usable;
  const std::size_t p =
      lands_on_data || !std::isfinite(lambda_s) ? 1 : std::min({o.order, max_order, usable + 1});
  const double h = lambda_t - lambda_s;
  std::array<double, 2> r{};
  for (std::size_t j = 1; j < p; ++j) r[j - 1] = (st.lambda[j - 1] - lambda_s) / h;
  const unipc_coefficients pc = unipc_update_coefficients(lands_on_data ? 0.0 : s.to.sigma / s.from.sigma, s.to.alpha, h,
                                                          std::span<const double>(r.data(), p - 1), false, o.variant);

  // One pass: x' (and the corrected base) from the base, the new output and M earlier outputs.
  unipc_pass_coefficients<T> k;
  k.rc = coefficient<T>(where, "the corrector's sigma ratio", cc.ratio);
  k.kc_new = coefficient<T>(where, "the corrector's weight of denoised", cc.newest);
  k.kc_old[0] = coefficient<T>(where, "the corrector's weight of state.denoised[0]", cc.m0);
  for (std::size_t j = 1; j < 3; ++j)
    k.kc_old[j] = coefficient<T>(where, "the corrector's weight of an earlier output", cc.earlier[j - 1]);
  k.rp = coefficient<T>(where, "the predictor's sigma ratio", pc.ratio);
  k.kp_new = coefficient<T>(where, "the predictor's weight of denoised", pc.m0);
  for (std::size_t j = 0; j < 2; ++j)
    k.kp_old[j] = coefficient<T>(where, "the predictor's weight of an earlier output", pc.earlier[j]);
  const std::size_t m = std::max(correct ? st.last_order : std::size_t{0}, p - 1);
  const std::span<T> slot = st.denoised[o.order - 1];  // the oldest slot, read (if at all) before it is written
  const bool save = !st.last_sample.empty();
  auto run = [&]<bool C, bool S>() {
    switch (m) {
      case 0: return unipc_pass<0, C, S, T>(policy, x, st.last_sample, slot, denoised, st.denoised, k);
      case 1: return unipc_pass<1, C, S, T>(policy, x, st.last_sample, slot, denoised, st.denoised, k);
      case 2: return unipc_pass<2, C, S, T>(policy, x, st.last_sample, slot, denoised, st.denoised, k);
      default: return unipc_pass<3, C, S, T>(policy, x, st.last_sample, slot, denoised, st.denoised, k);
    }
  };
  const bool ok = correct ? run.template operator()<true, true>()
                          : (save ? run.template operator()<false, true>() : run.template operator()<false, false>());
  if (!ok) {
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(denoised[i]))
        throw_domain(where, "denoised[" + to_text(i) + "] = " + to_text(static_cast<double>(denoised[i])) +
                                " is not finite (the model's output)");
    require_finite_step(where, false, correct ? "the UniPC step (UniC and UniP)" : "the UniPC step (UniP)");
  }

  // The history: the new output becomes slot 0.
  std::rotate(st.denoised.begin(), st.denoised.begin() + static_cast<std::ptrdiff_t>(o.order - 1),
              st.denoised.begin() + static_cast<std::ptrdiff_t>(o.order));
  std::rotate(st.lambda.begin(), st.lambda.begin() + static_cast<std::ptrdiff_t>(o.order - 1),
              st.lambda.begin() + static_cast<std::ptrdiff_t>(o.order));
  st.lambda[0] = lambda_s;
  st.count = std::min(st.count + 1, o.order);
  st.last_sigma = s.from.sigma;
  st.last_to = s.to;
  // No correction follows a step to the data or one with h = ∞ (from α = 0: UniC's weights are not defined).
  st.last_order = save && !lands_on_data && std::isfinite(lambda_s) ? p : 0;
}

}  // namespace detail

/// @brief One UniPC step between two levels of the state's process (Zhao et al. 2023, the multistep
/// UniPC-p with data prediction; diffusers' UniPCMultistepScheduler.step with `predict_x0`): first UniC
/// corrects x — the state the previous call predicted — with this call's model output, then UniP
/// predicts the state at `s.to` from the corrected x. With λ = log(α/σ), h = λ_t − λ_s, \f$E = 1 - e^{-h}\f$:
/// \f[ x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t\Big(E\,M_0 + \sum_j g_j\frac{M_j - M_0}{r_j}\Big), \f]
/// the weights g from the order conditions \f$\sum_j g_j r_j^{k-1} = k!\,h\,\varphi_{k+1}(-h)\f$ (the paper's
/// \f$R_p(h)a_p = \varphi_p(h)/B(h)\f$, §3.1 and §3.2), or the fixed \f$-\tfrac12 B(-h)\f$ of
/// @ref unipc_variant where there is one difference.
///
/// - **UniC** (when `o.use_corrector` and the previous call predicted x, of order p): s = the previous
///   call's start (its x is `state.last_sample`), t = this call's start; \f$M_0\f$ = the previous output,
///   the p − 1 outputs before it at their nodes, and this call's `denoised` at r = 1. The corrected x
///   replaces x as the start of the prediction (order p + 1, the paper's Theorem 3.1).
/// - **UniP** of order \f$p = \min(\text{order}, \text{max\_order}, 1 + \text{stored})\f$: s = this call's start,
///   \f$M_0\f$ = `denoised`, the p − 1 latest stored outputs at nodes \f$r_j = (\lambda_j - \lambda_s)/h < 0\f$.
///   p = 1 (DPM-Solver++(1), i.e. DDIM) when σ_t = 0 (then \f$x_t = \alpha_t D\f$) and from α = 0 (λ = −∞, the
///   noise end of a flow), and an output taken at α = 0 is never an earlier output; no correction
///   follows either step.
///
/// One fused pass reads x (or `state.last_sample`), `denoised` and the history it needs, and writes x,
/// `state.last_sample` (the corrected start, when that buffer is given) and `denoised` into the history
/// (whose views rotate so that slot 0 is the newest). x after the call equals diffusers' `prev_sample`.
/// @param[in] s the level step (λ must increase: \f$\lambda_t > \lambda_s\f$, and λ_s above the last stored
///            output's); @param[in] denoised x̂₀ = D(x) at s.from, evaluated at the predicted x;
/// @param[in,out] x the state: in, the previous call's prediction at s.from (or the initial state); out, the
///            prediction at s.to; @param[in,out] st the history (value-initialized at the start of a run);
/// @param[in] o order (1 … 3), B(h) variant, whether to correct; @param[in] max_order 1 … 3, a cap for this call
///            (diffusers' `lower_order_final`: min(order, steps left)); @param[in] policy threads
///            (bit-identical for any count).
/// @pre x, denoised, the first `o.order` history buffers and `state.last_sample` are distinct arrays (x may
///      not alias `denoised` partially); `state.last_sample` has x's size when `o.use_corrector` is set.
/// @throws std::invalid_argument for a bad step, order (outside [1, 3]), variant, max_order, sizes, aliasing,
///         history (more outputs than `order`, a start not below the last one's λ, a corrector whose start is
///         not the last prediction's level); std::domain_error for a non-finite `denoised` (naming the element)
///         or an overflowing step. Nothing is written when it throws std::invalid_argument.
template <real_scalar T, execution_policy P = sequential_policy>
void unipc_step(const level_step& s, std::span<const T> denoised, std::span<T> x, unipc_state<T>& st,
                const unipc_options& o = {}, std::size_t max_order = 3, const P& policy = P{}) {
  detail::unipc_update<T>("diffusion::unipc_step", s, denoised, x, st, o, max_order, policy);
}

/// @brief The σ-space form of @ref diffusion::unipc_step "unipc_step" (α = 1 at both ends, λ = −log σ;
/// ComfyUI's `uni_pc` / `uni_pc_bh2` on a σ list).
/// @param[in] s the step (σ > 0, 0 ≤ σ_next < σ); @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in,out] st the history; @param[in] o options; @param[in] max_order the cap of this call;
/// @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, execution_policy P = sequential_policy>
void unipc_step(sigma_step s, std::span<const T> denoised, std::span<T> x, unipc_state<T>& st,
                const unipc_options& o = {}, std::size_t max_order = 3, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::unipc_step";
  detail::check_sigma_step(where, s);
  detail::unipc_update<T>(where, as_level_step(s), denoised, x, st, o, max_order, policy);
}

/// @brief Options of @ref unipc_sample.
struct unipc_sample_options {
  unipc_options solver{};          ///< Order (default 2), B(h) variant (default bh2), corrector (default on).
  /// Cap the order at the steps left, min(order, N − i) at step i (diffusers' `lower_order_final`,
  /// default true): the last step is first order, the one before at most second order.
  bool lower_order_final = true;
  std::uint64_t first_sample = 0;  ///< Stream index of row 0.
  bool draw_initial_noise = true;  ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;        ///< Scan every model output.
};

/// @brief UniPC sampling over a σ list (Zhao et al. 2023; ComfyUI `uni_pc` (bh1) / `uni_pc_bh2`, diffusers'
/// UniPCMultistepScheduler on its σ list): per step one model call at the predicted state and one
/// @ref diffusion::unipc_step "unipc_step" over the state's process (σ-space, or the model's rectified-flow
/// levels), the order rising from 1 as the history fills and, with `lower_order_final`, falling at the end.
/// The last step is not corrected (no model call follows it). Measured orders in docs/accuracy.md.
/// @param[in] D the σ-space denoiser (@ref sigma_space_model); @param[in,out] x rows × n: the state at σ_0 in
/// (or drawn), the sample out; @param[in] rows batch size; @param[in] noise the noise source (initial draw
/// only); @param[in] sigmas strictly decreasing, positive, the last may be 0; @param[in] opt options;
/// @param[in] hooks callback, workspace, context, threads.
/// @throws as @ref euler_sample; std::invalid_argument for an order outside [1, 3] or an unknown variant.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result unipc_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                           const unipc_sample_options& opt = {},
                           const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::unipc_sample";
  detail::check_unipc_options(where, opt.solver);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  unipc_state<T> st;
  for (std::size_t j = 0; j < opt.solver.order; ++j) st.denoised[j] = loop.buffer(2 + j);
  if (opt.solver.use_corrector) st.last_sample = loop.buffer(5);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const std::size_t cap = opt.lower_order_final ? std::min(opt.solver.order, loop.steps() - i) : opt.solver.order;
    detail::unipc_update<T>(where, loop.step_levels(loop.sigma(i), i), den, xs, st, opt.solver, cap, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
