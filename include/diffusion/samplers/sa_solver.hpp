/// @file
/// @brief SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion
/// Models", NeurIPS 2023, arXiv 2309.05019) in its data-prediction form: the stochastic Adams predictor
/// (SA-Predictor, orders 1–4) and corrector (SA-Corrector, orders 1–4) as one step function over the
/// levels of the state's process (@ref diffusion::level_step "level_step"s of σ-space, variance-preserving
/// and rectified-flow states), as diffusers' SASolverScheduler.
///
/// **The SDE and its exact solution.** With λ = log(α/σ) and a stochasticity τ ≥ 0 (the paper's τ(t)),
/// the reverse SDE of the paper's Eq. (7) in data prediction D = x̂₀ has the variation-of-constants solution
/// (the paper's Eq. (10), data-prediction form, Appendix A) from level s to level t, h = λ_t − λ_s, k = 1 + τ²:
/// \f[ x_t = \frac{\sigma_t}{\sigma_s}e^{-\tau^2 h}x_s
///     + \sigma_t k \int_{\lambda_s}^{\lambda_t} e^{k\lambda - \tau^2\lambda_t} D(\lambda)\,d\lambda
///     + \sigma_t\sqrt{1 - e^{-2\tau^2 h}}\,\xi, \qquad \xi \sim N(0, I). \f]
/// τ = 0 is the probability-flow ODE (DPM-Solver++'s exponential integrator); τ = 1 is the reverse SDE
/// of DPM-Solver++(SDE).
///
/// **The stochastic Adams steps** (the paper's Eq. (12) predictor and Eq. (13) corrector) replace D by its
/// Lagrange interpolant through the model outputs at nodes \f$\theta_j = (\lambda_j - \lambda_s)/h\f$ and integrate
/// exactly: with \f$\ell_j\f$ the Lagrange basis on the nodes and \f$z = -kh\f$,
/// \f[ x_t = \frac{\sigma_t}{\sigma_s}e^{-\tau^2 h}x_s + \alpha_t k h\sum_j g_j D_j + \sigma_t\sqrt{-\operatorname{expm1}(-2\tau^2h)}\,\xi,
///     \qquad g_j = \int_0^1 e^{z(1-\theta)}\ell_j(\theta)\,d\theta = \sum_m m!\,\varphi_{m+1}(z)\,[\theta^m]\ell_j, \f]
/// \f$\varphi_k\f$ the exponential-integrator functions (`detail::phi_functions`). The
/// predictor of order p uses the newest output (θ = 0) and the p − 1 before it (θ < 0); the corrector of order
/// c recomputes the same step from the same start with the same ξ, using the output at the predicted state
/// (θ = 1), the output at the start (θ = 0) and the c − 2 before it. With exactly two nodes the first moment
/// \f$1!\,\varphi_2(z)\f$ is replaced by ½ (diffusers' "modification similar to UniPC", an O(h³) change of the
/// local step that keeps the order). diffusers writes the same integrals over absolute λ
/// (\f$\int e^{k\lambda}\lambda^m d\lambda\f$ in closed form); this header integrates over θ ∈ [0, 1], which is the same
/// number without the cancellation of large \f$e^{k\lambda_t}\lambda_t^m\f$ terms.
///
/// **One call, two updates** (as UniPC's @ref diffusion::unipc_step "unipc_step" and one `step()` of diffusers'
/// scheduler): the corrector first corrects the state the previous call predicted, with this call's model
/// output and the previous call's τ and ξ, then the predictor predicts the next state from the corrected one.
/// The state after the last call is the last prediction.
///
/// **Orders** (τ = 0, where the step is deterministic): the predictor of order p alone is of order p; with
/// the corrector of order c the pair is of order min(c, p + 1). Measured on Gaussian data in
/// tests/test_sampler_sa_solver.cpp and listed in docs/accuracy.md.
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
#include "unipc.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

/// @brief Options of one @ref diffusion::sa_solver_step "sa_solver_step" (diffusers' SASolverScheduler keys).
struct sa_solver_options {
  std::size_t predictor_order = 2;  ///< p, 1 … 4 (diffusers' `predictor_order`, default 2). Keep it fixed over a run.
  std::size_t corrector_order = 2;  ///< c, 1 … 4 (diffusers' `corrector_order`, default 2). Keep it fixed over a run.
  /// Correct the state the previous call predicted (SA-Corrector). diffusers always corrects.
  bool use_corrector = true;
};

/// @brief The number of history buffers SA-Solver with these options reads: max(p, c − 1) (c only with the
/// corrector), diffusers' `max(predictor_order, corrector_order - 1)`.
/// @param[in] o the options (not validated here).
inline std::size_t sa_solver_history(const sa_solver_options& o) noexcept {
  return std::max(o.predictor_order, o.use_corrector && o.corrector_order > 0 ? o.corrector_order - 1 : std::size_t{0});
}

/// @brief The history of SA-Solver, in caller-owned buffers of the state's size (no allocation): the model
/// outputs (x̂₀) of the latest calls, newest first, with their λ, the start and the noise of the last
/// prediction (which the corrector recomputes). Value-initialize it at the start of a run.
template <real_scalar T>
struct sa_solver_state {
  /// x̂₀ of the latest calls, newest first; the first @ref diffusion::sa_solver_history "sa_solver_history"(o)
  /// must have the state's size. The step rotates these views: slot 0 is always the newest.
  std::array<std::span<T>, 4> denoised{};
  std::array<double, 4> lambda{};  ///< λ = log(α/σ) of each stored output (−∞ at α = 0).
  std::size_t count = 0;           ///< Outputs stored.
  /// The state the last prediction started from (needed when `use_corrector` is set).
  std::span<T> last_sample{};
  /// The noise ξ of the last prediction (needed when the corrector follows a prediction with τ > 0).
  std::span<T> last_noise{};
  noise_level last_from{};      ///< The level of `last_sample`.
  noise_level last_to{};        ///< The level the last prediction landed on (the next call must start there).
  double last_tau = 0.0;        ///< τ of the last prediction (the corrector uses it, as diffusers).
  std::size_t last_order = 0;   ///< The order of the next correction; 0: nothing to correct.
};

namespace detail {

/// The coefficients of one SA-Solver update from s to t: \f$x_t = \text{ratio}\cdot x_s + \sum_j w_j D_j + \text{noise}\cdot\xi\f$.
struct sa_solver_coefficients {
  double ratio = 0.0;           ///< \f$e^{-\tau^2 h}\sigma_t/\sigma_s\f$.
  std::array<double, 4> w{};    ///< \f$\alpha_t k h g_j\f$, in the order of the nodes.
  double noise = 0.0;           ///< \f$\sigma_t\sqrt{1 - e^{-2\tau^2 h}}\f$.
};

/// The coefficients of the file comment for h = λ_t − λ_s (finite and > 0, or +∞ with one node: the limit
/// x_t = α_t D₀ + (σ_t/σ_s)x_s at τ = 0, α_t D₀ + σ_t ξ at τ > 0), τ ≥ 0, the nodes θ_j (distinct, at most 4), σ_t/σ_s, σ_t and α_t. With two nodes the first
/// moment is ½ (diffusers' order-2 modification, the paper's code).
inline sa_solver_coefficients sa_solver_update_coefficients(double sigma_ratio, double sigma_t, double alpha_t, double h,
                                                            double tau, std::span<const double> nodes) {
  sa_solver_coefficients c;
  if (std::isinf(h)) {  // e^{-h} = 0: x_t = α_t D₀ + (σ_t/σ_s)x_s at τ = 0, α_t D₀ + σ_t ξ at τ > 0
    c.w[0] = alpha_t;
    c.ratio = tau > 0.0 ? 0.0 : sigma_ratio;
    c.noise = tau > 0.0 ? sigma_t : 0.0;
    return c;
  }
  const double tau2 = tau * tau, k = 1.0 + tau2;
  const auto phi = phi_functions(-k * h);
  const std::array<double, 4> moments{phi[0], nodes.size() == 2 ? 0.5 : phi[1], 2.0 * phi[2], 6.0 * phi[3]};
  const auto g = lagrange_moment_weights<4>(nodes, moments);
  for (std::size_t j = 0; j < nodes.size(); ++j) c.w[j] = alpha_t * k * h * g[j];
  c.ratio = std::exp(-tau2 * h) * sigma_ratio;
  c.noise = sigma_t * std::sqrt(-std::expm1(-2.0 * tau2 * h));
  return c;
}

/// The coefficients of the fused pass, as T.
template <real_scalar T>
struct sa_solver_pass_coefficients {
  T rc{}, kc_new{}, kc_z{};  // correction: xc = rc·last + kc_new·D + Σ kc_old[j]·old_j + kc_z·last_noise
  std::array<T, 4> kc_old{};
  T rp{}, kp_new{}, kp_z{};  // prediction: x' = rp·xc + kp_new·D + Σ kp_old[j]·old_j + kp_z·noise
  std::array<T, 4> kp_old{};
};

/// One pass over the elements: reads the base (x, or last_sample when correcting), the new output, the
/// noise, the last noise and M earlier outputs; writes x', the corrected base into last_sample (SaveLast),
/// the noise into last_noise (SaveNoise) and the new output into the history slot that becomes the newest.
template <std::size_t M, bool Correct, bool SaveLast, bool SaveNoise, real_scalar T, execution_policy P>
bool sa_solver_pass(const P& policy, std::span<T> x, std::span<T> last, std::span<T> last_noise, std::span<T> slot,
                    std::span<const T> denoised, std::span<const T> noise, std::span<const T> old_noise,
                    const std::array<std::span<T>, 4>& old, const sa_solver_pass_coefficients<T>& c) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    using kernels::madd;
    const std::span<const T> base = Correct ? std::span<const T>(last) : std::span<const T>(x);
    auto body = [c](auto bv, auto dv, auto zv, auto lzv, auto... ov) {
      using V = decltype(bv);
      V xc = bv;
      if constexpr (Correct) {
        xc = madd(V(c.kc_new), dv, V(c.rc) * bv);
        ((xc = madd(V(c.kc_old[I]), ov, xc)), ...);
        xc = madd(V(c.kc_z), lzv, xc);
      }
      V xn = madd(V(c.rp), xc, V(c.kp_new) * dv);
      ((xn = madd(V(c.kp_old[I]), ov, xn)), ...);
      xn = madd(V(c.kp_z), zv, xn);
      if constexpr (SaveLast && SaveNoise)
        return std::array<V, 4>{xn, xc, zv, dv};
      else if constexpr (SaveLast)
        return std::array<V, 3>{xn, xc, dv};
      else
        return std::array<V, 2>{xn, dv};
    };
    const auto in = kernels::inputs<T>(base, denoised, noise, old_noise, std::span<const T>(old[I])...);
    if constexpr (SaveLast && SaveNoise)
      return kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, last, last_noise, slot), in, body);
    else if constexpr (SaveLast)
      return kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, last, slot), in, body);
    else
      return kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, slot), in, body);
  }(std::make_index_sequence<M>{});
}

/// Requires valid SA-Solver options: both orders in [1, 4].
inline void check_sa_solver_options(std::string_view where, const sa_solver_options& o) {
  if (o.predictor_order < 1 || o.predictor_order > 4)
    throw_invalid(where, "predictor_order = " + to_text(o.predictor_order) + " is outside the allowed range [1, 4]");
  if (o.corrector_order < 1 || o.corrector_order > 4)
    throw_invalid(where, "corrector_order = " + to_text(o.corrector_order) + " is outside the allowed range [1, 4]");
}

/// The SA-Solver step (@ref diffusion::sa_solver_step "sa_solver_step") under the name of its caller.
template <real_scalar T, execution_policy P>
void sa_solver_update(std::string_view where, const level_step& s, std::span<const T> denoised, std::span<T> x,
                      std::span<const T> noise, sa_solver_state<T>& st, double tau, const sa_solver_options& o,
                      std::size_t max_order, const P& policy) {
  check_level_step(where, s);
  check_sa_solver_options(where, o);
  if (max_order < 1) throw_invalid(where, "max_order = 0 is outside the allowed range [1, inf)");
  if (!(std::isfinite(tau) && tau >= 0.0))
    throw_invalid(where, "tau = " + to_text(tau) + " is outside the allowed range [0, inf)");
  const std::size_t n = x.size(), H = sa_solver_history(o);
  check_same_size(where, "denoised", denoised.size(), "x", n);
  check_no_partial_overlap(where, "denoised", denoised, "x", x);
  for (std::size_t j = 0; j < H; ++j) {
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
    for (std::size_t j = 0; j < H; ++j)
      check_disjoint(where, "state.last_sample", st.last_sample, indexed_name("state.denoised[", j, "]"), st.denoised[j]);
  }
  if (!noise.empty()) {
    check_same_size(where, "noise", noise.size(), "x", n);
    check_disjoint(where, "noise", noise, "x", x);
  }
  if (!st.last_noise.empty()) {
    check_same_size(where, "state.last_noise", st.last_noise.size(), "x", n);
    check_disjoint(where, "state.last_noise", st.last_noise, "x", x);
    check_disjoint(where, "state.last_noise", st.last_noise, "denoised", denoised);
    if (!st.last_sample.empty()) check_disjoint(where, "state.last_noise", st.last_noise, "state.last_sample", st.last_sample);
    for (std::size_t j = 0; j < H; ++j)
      check_disjoint(where, "state.last_noise", st.last_noise, indexed_name("state.denoised[", j, "]"), st.denoised[j]);
  }
  if (st.count > H || (st.last_order > 0 && st.last_order > o.corrector_order))
    throw_invalid(where, "the state holds " + to_text(st.count) + " outputs and a correction of order " +
                             to_text(st.last_order) + ", more than the options allow (history " + to_text(H) +
                             "): keep the orders fixed during a run (or reset the state)");
  const double lambda_s = log_snr_half(s.from), lambda_t = log_snr_half(s.to);
  if (!(lambda_t > lambda_s))
    throw_invalid(where, "the step must go to a less noisy level: log(alpha/sigma) goes from " + to_text(lambda_s) +
                             " to " + to_text(lambda_t));
  if (st.count > 0 && !(lambda_s > st.lambda[0]))
    throw_invalid(where, "the step starts at log(alpha/sigma) = " + to_text(lambda_s) +
                             ", not above the previous output's " + to_text(st.lambda[0]) +
                             " (the history is for levels that get less noisy)");

  // SA-Corrector of order c = st.last_order: from the last prediction's start to this call's start.
  const bool correct = o.use_corrector && st.last_order > 0;
  sa_solver_coefficients cc{};
  if (correct) {
    if (!(s.from.alpha == st.last_to.alpha && s.from.sigma == st.last_to.sigma))
      throw_invalid(where, "the step starts at alpha = " + to_text(s.from.alpha) + ", sigma = " + to_text(s.from.sigma) +
                               " but the last prediction landed on alpha = " + to_text(st.last_to.alpha) +
                               ", sigma = " + to_text(st.last_to.sigma) + "; the corrector needs the same level");
    if (st.last_tau > 0.0 && st.last_noise.empty())
      throw_invalid(where, "the last prediction had tau = " + to_text(st.last_tau) +
                               " > 0 but state.last_noise is empty: the corrector needs its noise");
    const double hc = lambda_s - st.lambda[0];
    std::array<double, 4> r{1.0, 0.0, 0.0, 0.0};  // the new output at θ = 1, the start's at 0, earlier ones < 0
    for (std::size_t j = 1; j < st.last_order; ++j) r[j] = (st.lambda[j - 1] - st.lambda[0]) / hc;
    cc = sa_solver_update_coefficients(s.from.sigma / st.last_from.sigma, s.from.sigma, s.from.alpha, hc, st.last_tau,
                                       std::span<const double>(r.data(), st.last_order));
  }

  // SA-Predictor of order p = min(p, max_order, 1 + the outputs at finite λ); 1 from α = 0 and to σ = 0.
  const bool lands_on_data = s.to.sigma == 0.0;
  std::size_t usable = 0;
  while (usable < st.count && std::isfinite(st.lambda[usable])) ++usable;
  const std::size_t p =
      lands_on_data || !std::isfinite(lambda_s) ? 1 : std::min({o.predictor_order, max_order, usable + 1});
  const double h = lambda_t - lambda_s;
  std::array<double, 4> r{};
  for (std::size_t j = 1; j < p; ++j) r[j] = (st.lambda[j - 1] - lambda_s) / h;
  const sa_solver_coefficients pc = sa_solver_update_coefficients(lands_on_data ? 0.0 : s.to.sigma / s.from.sigma,
                                                                  s.to.sigma, s.to.alpha, h, lands_on_data ? 0.0 : tau,
                                                                  std::span<const double>(r.data(), p));
  if (pc.noise > 0.0 && noise.empty())
    throw_invalid(where, "tau = " + to_text(tau) + " > 0 adds noise but no noise was passed; it must have x.size() = " +
                             to_text(n) + " elements");

  sa_solver_pass_coefficients<T> k;
  k.rc = coefficient<T>(where, "the corrector's sigma ratio", cc.ratio);
  k.kc_new = coefficient<T>(where, "the corrector's weight of denoised", cc.w[0]);
  for (std::size_t j = 1; j < 4; ++j)
    k.kc_old[j - 1] = coefficient<T>(where, "the corrector's weight of a stored output", cc.w[j]);
  k.kc_z = coefficient<T>(where, "the corrector's noise scale", cc.noise);
  k.rp = coefficient<T>(where, "the predictor's sigma ratio", pc.ratio);
  k.kp_new = coefficient<T>(where, "the predictor's weight of denoised", pc.w[0]);
  for (std::size_t j = 1; j < 4; ++j)
    k.kp_old[j - 1] = coefficient<T>(where, "the predictor's weight of a stored output", pc.w[j]);
  k.kp_z = coefficient<T>(where, "the predictor's noise scale", pc.noise);
  // Absent noise operands are replaced by `denoised` under a zero weight (a finite array of the right size).
  const std::span<const T> z = noise.empty() ? denoised : noise;
  const std::span<const T> lz = correct && cc.noise > 0.0 ? std::span<const T>(st.last_noise) : denoised;
  const std::size_t m = std::max(correct ? st.last_order - 1 : std::size_t{0}, p - 1);
  const std::span<T> slot = st.denoised[H - 1];  // the oldest slot, read (if at all) before it is written
  const bool save = !st.last_sample.empty(), save_noise = save && !noise.empty() && !st.last_noise.empty();
  auto run = [&]<bool C, bool S, bool Z>() {
    switch (m) {
      case 0: return sa_solver_pass<0, C, S, Z, T>(policy, x, st.last_sample, st.last_noise, slot, denoised, z, lz, st.denoised, k);
      case 1: return sa_solver_pass<1, C, S, Z, T>(policy, x, st.last_sample, st.last_noise, slot, denoised, z, lz, st.denoised, k);
      case 2: return sa_solver_pass<2, C, S, Z, T>(policy, x, st.last_sample, st.last_noise, slot, denoised, z, lz, st.denoised, k);
      case 3: return sa_solver_pass<3, C, S, Z, T>(policy, x, st.last_sample, st.last_noise, slot, denoised, z, lz, st.denoised, k);
      default: return sa_solver_pass<4, C, S, Z, T>(policy, x, st.last_sample, st.last_noise, slot, denoised, z, lz, st.denoised, k);
    }
  };
  bool ok = false;
  if (correct)
    ok = save_noise ? run.template operator()<true, true, true>() : run.template operator()<true, true, false>();
  else if (save)
    ok = save_noise ? run.template operator()<false, true, true>() : run.template operator()<false, true, false>();
  else
    ok = run.template operator()<false, false, false>();
  if (!ok) {
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(denoised[i]))
        throw_domain(where, "denoised[" + to_text(i) + "] = " + to_text(static_cast<double>(denoised[i])) +
                                " is not finite (the model's output)");
    for (std::size_t i = 0; i < noise.size(); ++i)
      if (!std::isfinite(noise[i]))
        throw_domain(where, "noise[" + to_text(i) + "] = " + to_text(static_cast<double>(noise[i])) + " is not finite");
    require_finite_step(where, false, correct ? "the SA-Solver step (corrector and predictor)" : "the SA-Solver step (predictor)");
  }

  // The history: the new output becomes slot 0.
  std::rotate(st.denoised.begin(), st.denoised.begin() + static_cast<std::ptrdiff_t>(H - 1),
              st.denoised.begin() + static_cast<std::ptrdiff_t>(H));
  std::rotate(st.lambda.begin(), st.lambda.begin() + static_cast<std::ptrdiff_t>(H - 1),
              st.lambda.begin() + static_cast<std::ptrdiff_t>(H));
  st.lambda[0] = lambda_s;
  st.count = std::min(st.count + 1, H);
  st.last_from = s.from;
  st.last_to = s.to;
  st.last_tau = pc.noise > 0.0 ? tau : 0.0;
  // The next correction: the output at the predicted level and up to c − 1 stored ones at finite λ (diffusers'
  // min(corrector_order, lower_order_nums + 2)), capped at max_order + 1 (its `lower_order_final`). None after a
  // step to the data or one from α = 0.
  std::size_t usable_next = 0;
  while (usable_next < st.count && std::isfinite(st.lambda[usable_next])) ++usable_next;
  st.last_order = save && !lands_on_data && std::isfinite(lambda_s)
                      ? std::min({o.corrector_order, max_order + 1, usable_next + 1})
                      : 0;
}

}  // namespace detail

/// @brief One SA-Solver step between two levels of the state's process (Xue et al. 2023, data prediction;
/// diffusers' SASolverScheduler.step with `algorithm_type="data_prediction"`): first the SA-Corrector (the
/// paper's Eq. (13)) corrects x — the state the previous call predicted — with this call's model output,
/// then the SA-Predictor (Eq. (12)) predicts the state at `s.to` from the corrected x. With λ = log(α/σ),
/// h = λ_t − λ_s, k = 1 + τ², the nodes θ_j of the outputs \f$D_j\f$:
/// \f[ x_t = \frac{\sigma_t}{\sigma_s}e^{-\tau^2h}x_s + \alpha_t k h\sum_j g_j D_j + \sigma_t\sqrt{1 - e^{-2\tau^2h}}\,\xi,
///     \qquad g_j = \sum_m m!\,\varphi_{m+1}(-kh)\,[\theta^m]\ell_j \f]
/// (the first moment ½ with two nodes, as diffusers).
///
/// - **SA-Corrector** (when `o.use_corrector` and the previous call predicted x): s = the previous call's start
///   (`state.last_sample`), t = this call's start, τ and ξ those of the previous prediction (`state.last_tau`,
///   `state.last_noise`), the nodes 1 (this call's `denoised`), 0 and the earlier outputs; its order is
///   min(c, previous max_order + 1, 1 + stored outputs) (diffusers' warm-up and `lower_order_final`).
/// - **SA-Predictor** of order \f$\min(p, \text{max\_order}, 1 + \text{stored})\f$: s = this call's start, nodes 0
///   (`denoised`) and \f$(\lambda_j - \lambda_s)/h < 0\f$. Order 1 and no noise when σ_t = 0 (then \f$x_t = \alpha_t D\f$);
///   order 1 from α = 0; no correction follows either.
///
/// τ = 0 is a deterministic multistep ODE solver (order 1 is DPM-Solver++(1), i.e. DDIM). One fused pass reads
/// x (or `state.last_sample`), `denoised`, the noises and the history it needs, and writes x, `state.last_sample`,
/// `state.last_noise` (the noise, when both are given) and `denoised` into the history (whose views rotate so
/// that slot 0 is the newest). x after the call equals diffusers' `prev_sample` given the same noise.
/// @param[in] s the level step (λ must increase, and λ_s lie above the last stored output's);
/// @param[in] denoised x̂₀ = D(x) at s.from; @param[in,out] x in: the previous call's prediction at s.from (or
///            the initial state); out: the prediction at s.to; @param[in] noise ξ ~ N(0, I) of this step (x's
///            size; may be empty when τ = 0 or σ_t = 0); @param[in,out] st the history (value-initialized at
///            the start of a run); @param[in] tau τ ≥ 0 of this step's prediction (diffusers' `tau_func` at this
///            step's timestep); @param[in] o orders (1 … 4) and whether to correct; @param[in] max_order ≥ 1, a
///            cap on this call's predictor order, and max_order + 1 on the next call's corrector: pass the steps
///            left, N − i at step i, for diffusers' `lower_order_final` (predictor min(p, N − i), corrector
///            min(c, N − i + 1)), or 4 for none;
///            @param[in] policy threads (bit-identical for any count).
/// @pre x, denoised, noise, the history buffers, `state.last_sample` and `state.last_noise` are distinct arrays.
/// @throws std::invalid_argument for a bad step, order, max_order, τ (negative or not finite), sizes, aliasing,
///         history, missing noise; std::domain_error for a non-finite `denoised` or noise (naming the element)
///         or an overflowing step. Nothing is written when it throws std::invalid_argument.
template <real_scalar T, execution_policy P = sequential_policy>
void sa_solver_step(const level_step& s, std::span<const T> denoised, std::span<T> x, std::span<const T> noise,
                    sa_solver_state<T>& st, double tau, const sa_solver_options& o = {}, std::size_t max_order = 4,
                    const P& policy = P{}) {
  detail::sa_solver_update<T>("diffusion::sa_solver_step", s, denoised, x, noise, st, tau, o, max_order, policy);
}

/// @brief The σ-space form of @ref diffusion::sa_solver_step "sa_solver_step" (α = 1 at both ends, λ = −log σ).
/// @param[in] s the step (σ > 0, 0 ≤ σ_next < σ); @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in] noise ξ; @param[in,out] st the history; @param[in] tau τ; @param[in] o options;
/// @param[in] max_order the cap of this call; @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, execution_policy P = sequential_policy>
void sa_solver_step(sigma_step s, std::span<const T> denoised, std::span<T> x, std::span<const T> noise,
                    sa_solver_state<T>& st, double tau, const sa_solver_options& o = {}, std::size_t max_order = 4,
                    const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::sa_solver_step";
  detail::check_sigma_step(where, s);
  detail::sa_solver_update<T>(where, as_level_step(s), denoised, x, noise, st, tau, o, max_order, policy);
}

/// @brief Options of @ref diffusion::sa_solver_sample "sa_solver_sample".
struct sa_solver_sample_options {
  sa_solver_options solver{};  ///< Orders (default 2 and 2), corrector (default on).
  /// τ where the step starts at σ_i ∈ [tau_sigma_min, tau_sigma_max], 0 elsewhere (diffusers' `tau_func`
  /// is a function of the timestep; its default, τ = 1 for timesteps 200 … 800, is this window at the σ of
  /// those timesteps on the model's schedule). τ = 0 everywhere is the ODE solver.
  double tau = 1.0;
  double tau_sigma_min = 0.0;                                       ///< Lower end of the τ window.
  double tau_sigma_max = std::numeric_limits<double>::infinity();   ///< Upper end of the τ window.
  /// Cap the predictor at min(p, N − i) and the corrector at min(c, N − i + 1) (diffusers' `lower_order_final`,
  /// default true).
  bool lower_order_final = true;
  std::uint64_t first_sample = 0;  ///< Stream index of row 0.
  bool draw_initial_noise = true;  ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;        ///< Scan every model output.
};

/// @brief SA-Solver sampling over a σ list (Xue et al. 2023; diffusers' SASolverScheduler on its σ list): per
/// step one model call at the predicted state and one @ref diffusion::sa_solver_step "sa_solver_step" over the
/// state's process (σ-space, or the model's rectified-flow levels), with τ_i = `tau` inside the σ window, the
/// normals of step i the stream (sample, i) of `noise` (the library's convention), the orders rising
/// from 1 as the history fills and, with `lower_order_final`, falling at the end. The last step is not
/// corrected (no model call follows it). Measured orders and laws in docs/accuracy.md.
/// @param[in] D the σ-space denoiser (@ref diffusion::sigma_space_model "sigma_space_model"); @param[in,out] x rows × n: the state at σ_0 in
/// (or drawn), the sample out; @param[in] rows batch size; @param[in] noise the noise source; @param[in] sigmas
/// strictly decreasing, positive, the last may be 0; @param[in] opt options; @param[in] hooks callback,
/// workspace, context, threads.
/// @throws as @ref diffusion::euler_sample "euler_sample"; std::invalid_argument for an order outside [1, 4], a τ that is negative or not
/// finite, or a τ window with tau_sigma_min > tau_sigma_max (or NaN).
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result sa_solver_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                               const sa_solver_sample_options& opt = {},
                               const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::sa_solver_sample";
  detail::check_sa_solver_options(where, opt.solver);
  if (!(std::isfinite(opt.tau) && opt.tau >= 0.0))
    detail::throw_invalid(where, "tau = " + detail::to_text(opt.tau) + " is outside the allowed range [0, inf)");
  if (!(opt.tau_sigma_min <= opt.tau_sigma_max))
    detail::throw_invalid(where, "the tau window [" + detail::to_text(opt.tau_sigma_min) + ", " +
                                     detail::to_text(opt.tau_sigma_max) + "] is empty or not a number");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  const auto z = loop.buffer(1);
  sa_solver_state<T> st;
  for (std::size_t j = 0; j < sa_solver_history(opt.solver); ++j) st.denoised[j] = loop.buffer(2 + j);
  if (opt.solver.use_corrector) st.last_sample = loop.buffer(6);
  const bool noisy = opt.tau > 0.0;
  if (noisy && opt.solver.use_corrector) st.last_noise = loop.buffer(7);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const double s = loop.sigma(i);
    const double tau = noisy && s >= opt.tau_sigma_min && s <= opt.tau_sigma_max ? opt.tau : 0.0;
    std::span<const T> zi{};
    if (tau > 0.0 && loop.sigma(i + 1) > 0.0) {
      detail::fill_step_noise(noise, opt.first_sample, i, z, rows, loop.row_size());
      zi = z;
    }
    const std::size_t cap = opt.lower_order_final ? loop.steps() - i : 4;
    detail::sa_solver_update<T>(where, loop.step_levels(s, i), den, xs, zi, st, tau, opt.solver, cap, loop.policy());
    if (!loop.report(loop.steps(), loop.time(s), s, loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
