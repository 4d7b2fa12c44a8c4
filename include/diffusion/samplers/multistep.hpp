/// @file
/// @brief The noise-prediction multistep solvers: DEIS (Zhang & Chen 2023, the ρAB/log-ρ exponential
/// integrator), PLMS (Liu et al. 2022, PNDM's pseudo linear multistep method, with diffusers'
/// PNDMScheduler start) and iPNDM (Zhang & Chen 2023, Adams–Bashforth on the σ-space slope, fixed or
/// variable step), each as a step function with a caller-owned history and a σ-space loop.
///
/// **The ε form.** DEIS and PLMS integrate the probability-flow ODE written for y = x/α in ρ = σ/α (the
/// EDM ratio; DDIM's ODE, Song et al. 2021 Eq. 14): \f$dy/d\rho = \varepsilon(x)\f$ with
/// \f$\varepsilon = (x - \alpha D)/\sigma\f$. Both therefore run on the levels (α, σ) of any process through a
/// @ref diffusion::level_step "level_step", as long as the step starts at α > 0 (ρ finite; PLMS's first call
/// may start from α = 0, see @ref diffusion::plms_step "plms_step"). Over one step
/// from level s to level t (λ = log(α/σ) = −log ρ, h = λ_t − λ_s > 0):
/// \f[ x_t = \frac{\alpha_t}{\alpha_s}x_s + \alpha_t\int_{\rho_s}^{\rho_t}\hat\varepsilon(\rho)\,d\rho, \f]
/// with \f$\hat\varepsilon\f$ the method's approximation of ε. A constant \f$\hat\varepsilon\f$ gives DDIM's transfer
/// \f$x_t = \frac{\alpha_t}{\alpha_s}x_s + (\sigma_t - \alpha_t\rho_s)\hat\varepsilon\f$ (PNDM Eq. 9), evaluated as
/// \f$\sigma_t - \alpha_t\rho_s = -\sigma_t\operatorname{expm1}(h)\f$.
///
/// **Driving the steps from a diffusers-shaped loop.** Each call takes the model's output at the
/// level the state is at, as x̂₀ (`denoised`; convert an ε or v output with @ref diffusion::conversion_coefficients,
/// or pass ε through x̂₀ = (x − σε)/α, which the step inverts exactly up to rounding). For diffusers'
/// DEISMultistepScheduler, call k is @ref diffusion::deis_step "deis_step" over
/// {preserving(σ_k), preserving(σ_{k+1})} with `order` = `solver_order` and max_order = min(order, N − k)
/// when `lower_order_final` applies (diffusers: only for N < 15). For PNDMScheduler (`skip_prk_steps`),
/// call k is @ref diffusion::plms_step "plms_step" over the levels of timesteps[k] and timesteps[k + 1]
/// of its list (the final level after the last): the list repeats its second timestep, and that
/// repeated call {t₁, t₁} is the correction of the improved-Euler start (tests/test_sampler_multistep.cpp
/// replays both schedulers' runs).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
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
#include "ode.hpp"
#include "sigma_common.hpp"
#include "unipc.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

namespace detail {

/// The Adams–Bashforth weights of order k = 1 … 4 on an equal grid, newest first:
/// \f$\int_{t_n}^{t_n + \Delta}f \approx \Delta\sum_j b_j f_{n-j}\f$ (Hairer, Nørsett & Wanner, *Solving ODEs I*,
/// §III.1, Table 1.1): (1), (3, −1)/2, (23, −16, 5)/12, (55, −59, 37, −9)/24. PNDM Eq. 12 and iPNDM use them.
inline std::array<double, 4> adams_bashforth_weights(std::size_t k) {
  switch (k) {
    case 1: return {1.0, 0.0, 0.0, 0.0};
    case 2: return {1.5, -0.5, 0.0, 0.0};
    case 3: return {23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0, 0.0};
    default: return {55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0};
  }
}

/// DDIM's transfer with a given ε (PNDM Eq. 9; DDIM Eq. 12 with η = 0): \f$x' = a\,x + c\,\hat\varepsilon\f$,
/// a = α'/α, \f$c = \sigma' - \alpha'\sigma/\alpha = -\sigma'\operatorname{expm1}(h)\f$ (h = λ' − λ ≥ 0; c = −α'σ/α at
/// σ' = 0, where h = ∞). The start must have α > 0.
struct eps_transfer {
  double a;  ///< α'/α.
  double c;  ///< The weight of ε.
};
inline eps_transfer eps_transfer_coefficients(const level_step& s) {
  const double a = s.to.alpha / s.from.alpha;
  if (s.to.sigma == 0.0) return {a, -a * s.from.sigma};
  return {a, -s.to.sigma * std::expm1(log_snr_half(s.to) - log_snr_half(s.from))};
}

/// Requires the start of an ε-form step to have α > 0 (ρ = σ/α finite).
inline void check_eps_form_start(std::string_view where, const level_step& s) {
  if (!(s.from.alpha > 0.0))
    throw_invalid(where, "the step starts at alpha = " + to_text(s.from.alpha) + ", sigma = " + to_text(s.from.sigma) +
                             "; the noise-prediction form needs alpha > 0 (a flow list cannot start at sigma = 1)");
}

/// One pass of an ε-form multistep update with M earlier outputs: \f$\varepsilon_0 = (x - \alpha_s D)/\sigma_s\f$ into
/// slots[0], \f$x' = a\,x + w_0\varepsilon_0 + \sum_{j=1}^{M} w_j\varepsilon_j + c_z z\f$ with ε_j from slots[j] and z the
/// normals of the noise operand (no term for kernels::no_noise).
template <std::size_t M, real_scalar T, class Z, execution_policy P>
bool eps_multistep_pass(const P& policy, const Z& z, std::span<T> x, std::span<const T> denoised,
                        const std::array<std::span<T>, 4>& slots, T alpha_s, T inv_sigma_s, T a,
                        const std::array<T, 4>& w, T cz) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    using kernels::madd;
    return kernels::map(policy, z, kernels::outputs(x, slots[0]),
                        kernels::inputs<T>(std::span<const T>(x), denoised, std::span<const T>(slots[I + 1])...),
                        [=](auto xv, auto dv, auto... rest) {
                          using V = decltype(xv);
                          const std::array<V, sizeof...(rest)> r{rest...};  // the M earlier ε, then z
                          const V e0 = madd(V(-alpha_s), dv, xv) * V(inv_sigma_s);
                          V xn = madd(V(w[0]), e0, V(a) * xv);
                          ((xn = madd(V(w[I + 1]), r[I], xn)), ...);
                          if constexpr (sizeof...(rest) > M) xn = madd(V(cz), r[M], xn);
                          return std::array<V, 2>{xn, e0};
                        });
  }(std::make_index_sequence<M>{});
}

/// Runs @ref eps_multistep_pass with M = k − 1 (k = 1 … 4).
template <real_scalar T, class Z, execution_policy P>
bool eps_multistep_pass(const P& policy, const Z& z, std::size_t k, std::span<T> x, std::span<const T> denoised,
                        const std::array<std::span<T>, 4>& slots, T alpha_s, T inv_sigma_s, T a, const std::array<T, 4>& w,
                        T cz = T(0)) {
  switch (k) {
    case 1: return eps_multistep_pass<0, T>(policy, z, x, denoised, slots, alpha_s, inv_sigma_s, a, w, cz);
    case 2: return eps_multistep_pass<1, T>(policy, z, x, denoised, slots, alpha_s, inv_sigma_s, a, w, cz);
    case 3: return eps_multistep_pass<2, T>(policy, z, x, denoised, slots, alpha_s, inv_sigma_s, a, w, cz);
    default: return eps_multistep_pass<3, T>(policy, z, x, denoised, slots, alpha_s, inv_sigma_s, a, w, cz);
  }
}

/// Requires `count` history buffers of x's size, none sharing memory with x or denoised (`name`: the
/// slots' name up to the index, "state.eps[").
template <real_scalar T>
void check_history(std::string_view where, std::string_view name, const std::array<std::span<T>, 4>& slots,
                   std::size_t count, std::span<const T> denoised, std::span<T> x) {
  for (std::size_t j = 0; j < count; ++j) {
    const indexed_name nj(name, j, "]");
    check_same_size(where, nj, slots[j].size(), "x", x.size());
    check_disjoint(where, nj, slots[j], "x", x);
    check_disjoint(where, nj, slots[j], "denoised", denoised);
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// DEIS
// ---------------------------------------------------------------------------------------

/// @brief The history of DEIS: the ε of the latest calls, newest first, with their λ, in caller-owned
/// buffers (no allocation). Value-initialize it (count = 0) at the start of a run.
template <real_scalar T>
struct deis_state {
  /// ε of the latest calls, newest first; the first `order` (the step's argument) must have x's size.
  /// The step rotates these views: slot 0 is always the newest. (Four slots, as the other ε-form
  /// histories; DEIS uses at most three.)
  std::array<std::span<T>, 4> eps{};
  std::array<double, 4> lambda{};  ///< λ = log(α/σ) of each stored ε.
  std::size_t count = 0;           ///< Outputs stored (0 at the start, at most `order`).
};

namespace detail {
/// What the ε-history steps (@ref diffusion::deis_step "deis_step", @ref diffusion::dpm_solver_step "dpm_solver_step")
/// decide before their weights: λ at both ends, the order k of this call and the nodes
/// r_j = (λ_{j−1} − λ_s)/h of the earlier outputs (r_0 = 0).
struct eps_step_plan {
  double lambda_s, lambda_t;
  bool lands_on_data;
  std::size_t k;
  std::array<double, 3> nodes;
};

/// Validates an ε-history step (levels, order and max_order in [1, 3], sizes, aliasing, the history,
/// λ increasing and above the newest stored output's) and plans it: k = 1 on a step to σ = 0, else
/// min(stored + 1, order, max_order).
template <real_scalar T>
eps_step_plan eps_step_prologue(std::string_view where, const level_step& s, std::span<const T> denoised, std::span<T> x,
                                const deis_state<T>& st, std::size_t order, std::size_t max_order) {
  check_level_step(where, s);
  check_eps_form_start(where, s);
  if (order < 1 || order > 3) throw_invalid(where, "order = " + to_text(order) + " is outside the allowed range [1, 3]");
  if (max_order < 1 || max_order > 3)
    throw_invalid(where, "max_order = " + to_text(max_order) + " is outside the allowed range [1, 3]");
  check_same_size(where, "denoised", denoised.size(), "x", x.size());
  check_no_partial_overlap(where, "denoised", denoised, "x", x);
  check_history(where, "state.eps[", st.eps, order, denoised, x);
  if (st.count > order)
    throw_invalid(where, "the state holds " + to_text(st.count) + " outputs, more than order = " + to_text(order) +
                             " allows: keep the order fixed during a run (or reset the state)");
  eps_step_plan p{log_snr_half(s.from), log_snr_half(s.to), s.to.sigma == 0.0, 1, {}};
  if (!(p.lambda_t > p.lambda_s))
    throw_invalid(where, "the step must go to a less noisy level: log(alpha/sigma) goes from " + to_text(p.lambda_s) +
                             " to " + to_text(p.lambda_t));
  if (st.count > 0 && !(p.lambda_s > st.lambda[0]))
    throw_invalid(where, "the step starts at log(alpha/sigma) = " + to_text(p.lambda_s) + ", not above the previous output's " +
                             to_text(st.lambda[0]) + " (the history is for levels that get less noisy)");
  if (!p.lands_on_data) {
    p.k = std::min({st.count + 1, order, max_order});
    const double h = p.lambda_t - p.lambda_s;
    // earlier outputs are st.lambda[0 … k−2] before the rotation
    for (std::size_t j = 1; j < p.k; ++j) p.nodes[j] = (st.lambda[j - 1] - p.lambda_s) / h;
  }
  return p;
}

/// Finishes an ε-history step from the weights w of ε_0 … ε_{k−1} (σ_t or α_t folded in): the weights
/// as T, the history rotated (the oldest slot becomes slot 0, written by the pass), and the one pass
/// x' = (α_t/α_s) x + Σ_j w_j ε_j + c_z z with ε_0 = (x − α_s D)/σ_s (z: the noise operand, validated by
/// the caller; c_z = noise_scale, 0 for kernels::no_noise).
template <real_scalar T, execution_policy P, class Z = kernels::no_noise>
void eps_step_commit(std::string_view where, const level_step& s, const eps_step_plan& plan, const std::array<double, 4>& w,
                     std::span<const T> denoised, std::span<T> x, deis_state<T>& st, std::size_t order, const P& policy,
                     std::string_view what, const Z& z = kernels::no_noise{}, double noise_scale = 0.0) {
  std::array<T, 4> wt{};
  for (std::size_t j = 0; j < plan.k; ++j) wt[j] = coefficient<T>(where, indexed_name("the weight of eps_", j), w[j]);
  const T a = coefficient<T>(where, "alpha_t / alpha_s", s.to.alpha / s.from.alpha);
  const T as = coefficient<T>(where, "alpha_s", s.from.alpha);
  const T inv = coefficient<T>(where, "1 / sigma_s", 1.0 / s.from.sigma);
  std::rotate(st.eps.begin(), st.eps.begin() + static_cast<std::ptrdiff_t>(order - 1),
              st.eps.begin() + static_cast<std::ptrdiff_t>(order));
  std::rotate(st.lambda.begin(), st.lambda.begin() + static_cast<std::ptrdiff_t>(order - 1),
              st.lambda.begin() + static_cast<std::ptrdiff_t>(order));
  st.lambda[0] = plan.lambda_s;
  st.count = std::min(st.count + 1, order);
  const T cz = coefficient<T>(where, "the noise's scale", noise_scale);
  require_finite_step(where, eps_multistep_pass<T>(policy, z, plan.k, x, denoised, st.eps, as, inv, a, wt, cz), what);
}
}  // namespace detail

/// @brief One DEIS step between two levels of the state's process (Zhang & Chen 2023, "Fast Sampling of
/// Diffusion Models with Exponential Integrator", arXiv 2204.13902: the multistep exponential integrator
/// of ε, ρAB-DEIS, with the polynomial extrapolation of ε in log ρ instead of ρ — diffusers' DEISMultistepScheduler, `algorithm_type="deis"`,
/// `solver_type="logrho"`). With ρ = σ/α, λ = −log ρ, h = λ_t − λ_s > 0, and \f$\ell_j\f$ the Lagrange basis
/// on the k newest outputs' log ρ:
/// \f[ x_t = \frac{\alpha_t}{\alpha_s}x_s + \alpha_t\sum_{j<k} C_j\,\varepsilon_j,\qquad
///     C_j = \int_{\rho_s}^{\rho_t}\ell_j(\log\rho)\,d\rho = -\rho_t\,h\sum_{m<k} m!\,\varphi_{m+1}(h)\,[\theta^m]\,\ell_j, \f]
/// the basis written in θ = (λ − λ_s)/h on the nodes \f$r_j = (\lambda_j - \lambda_s)/h\f$ (r₀ = 0, earlier
/// outputs r_j < 0), \f$\varphi_m\f$ the exponential-integrator functions (the integral of
/// \f$e^{-h\theta}\theta^m\f$ over [0, 1] is \f$e^{-h}m!\,\varphi_{m+1}(h)\f$). Order 1 is DDIM
/// (\f$\alpha_t C_0 = -\sigma_t\operatorname{expm1}(h)\f$).
///
/// The order is k = min(stored + 1, `order`, `max_order`), and 1 at σ_t = 0 (x_t = α_t D: log ρ_t = −∞,
/// where no polynomial in log ρ is integrable by this formula). ε = (x − α_s D)/σ_s is formed in the
/// pass and stored; one fused pass reads x, `denoised` and the k − 1 earlier ε.
/// @param[in] s the level step (α > 0 at the start; λ must increase, and λ_s must be above the last stored
///            output's); @param[in] denoised x̂₀ = D(x) at s.from; @param[in,out] x the state;
/// @param[in,out] st the history; @param[in] order 1 … 3, the history length (diffusers' `solver_order`;
///            keep it fixed over a run); @param[in] max_order 1 … 3, this call's cap (`lower_order_final`);
/// @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step (α = 0 at the start, λ not increasing), order, max_order,
///         sizes, aliasing or history; std::domain_error for a coefficient or result that is not finite in T.
template <real_scalar T, execution_policy P = sequential_policy>
void deis_step(const level_step& s, std::span<const T> denoised, std::span<T> x, deis_state<T>& st,
               std::size_t order = 3, std::size_t max_order = 3, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::deis_step";
  const detail::eps_step_plan plan = detail::eps_step_prologue<T>(where, s, denoised, x, st, order, max_order);
  std::array<double, 4> w{};  // weights of ε_0 … ε_{k−1}, α_t folded in
  if (plan.lands_on_data) {
    w[0] = -s.to.alpha * (s.from.sigma / s.from.alpha);
  } else {
    const double h = plan.lambda_t - plan.lambda_s;
    const auto phi = detail::phi_functions(h);
    const auto g = detail::unipc_weights(std::span<const double>(plan.nodes.data(), plan.k), {phi[0], phi[1], 2.0 * phi[2]});
    for (std::size_t j = 0; j < plan.k; ++j) w[j] = -s.to.sigma * h * g[j];
  }
  detail::eps_step_commit<T>(where, s, plan, w, denoised, x, st, order, policy, "the DEIS step");
}

/// @brief Options of @ref deis_sample.
struct deis_sample_options {
  std::size_t order = 3;           ///< 1 … 3 (diffusers' `solver_order`, default 2; ComfyUI's `max_order` 3).
  /// Cap the order at the steps left, min(order, N − i) at step i (diffusers' `lower_order_final`, which
  /// diffusers applies only below 15 steps).
  bool lower_order_final = true;
  std::uint64_t first_sample = 0;  ///< Stream index of row 0.
  bool draw_initial_noise = true;  ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;        ///< Scan every model output.
};

/// @brief DEIS sampling over a σ list (log-ρ DEIS of Zhang & Chen 2023 over the state's process: σ-space, or
/// the model's rectified-flow levels): one model call and one @ref diffusion::deis_step "deis_step" per step,
/// the order rising from 1 as the history fills. Measured orders in docs/accuracy.md.
/// @param[in] D the σ-space denoiser (@ref sigma_space_model); @param[in,out] x rows × n: the state at σ_0 in
/// (or drawn), the sample out; @param[in] rows batch size; @param[in] noise the noise source (initial draw
/// only); @param[in] sigmas strictly decreasing, positive, the last may be 0; @param[in] opt options;
/// @param[in] hooks callback, workspace, context, threads.
/// @throws as @ref euler_sample; std::invalid_argument for an order outside [1, 3] or a flow list from σ = 1.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result deis_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                          const deis_sample_options& opt = {},
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::deis_sample";
  if (opt.order < 1 || opt.order > 3)
    detail::throw_invalid(where, "order = " + detail::to_text(opt.order) + " is outside the allowed range [1, 3]");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  deis_state<T> st;
  for (std::size_t j = 0; j < opt.order; ++j) st.eps[j] = loop.buffer(2 + j);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const std::size_t cap = opt.lower_order_final ? std::min(opt.order, loop.steps() - i) : opt.order;
    deis_step<T>(loop.step_levels(loop.sigma(i), i), den, xs, st, opt.order, cap, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

// ---------------------------------------------------------------------------------------
// PLMS (PNDM)
// ---------------------------------------------------------------------------------------

/// @brief The history of PLMS: the ε of the latest calls (newest first) and what the improved-Euler start
/// restarts from, in caller-owned buffers (no allocation). Value-initialize it at the start of a run.
template <real_scalar T>
struct plms_state {
  /// ε of the latest calls, newest first; the first `order` (the step's argument) must have x's size.
  std::array<std::span<T>, 4> eps{};
  std::size_t count = 0;  ///< Outputs stored (0 at the start, at most `order`).
  /// x at the first call's level (diffusers' `cur_sample`): the improved-Euler start restarts from it.
  /// Empty: no such start (the first step is DDIM and the order rises from 1).
  std::span<T> start{};
  noise_level start_level{};        ///< The level of `start`.
  noise_level landed{};             ///< The level the first step landed on.
  bool correction_pending = false;  ///< The next call is the start's correction, at {landed, landed}.
  double last_lambda = 0.0;         ///< λ of the newest stored ε.
};

/// @brief One step of PLMS, the pseudo linear multistep method of PNDM (Liu et al. 2022, "Pseudo Numerical
/// Methods for Diffusion Models on Manifolds", Eq. 12 with the transfer of Eq. 9), in diffusers'
/// PNDMScheduler form with `skip_prk_steps` (the Stable Diffusion setting; CompVis' PLMS sampler):
/// \f[ x_t = \frac{\alpha_t}{\alpha_s}x_s + (\sigma_t - \alpha_t\rho_s)\,\hat\varepsilon,\qquad
///     \hat\varepsilon = \sum_{j<k} b^{(k)}_j\varepsilon_j, \f]
/// ρ = σ/α, with the Adams–Bashforth weights b of order k = min(stored + 1, `order`) on an equal grid,
/// (1), (3, −1)/2, (23, −16, 5)/12, (55, −59, 37, −9)/24, whatever the spacing of the levels.
///
/// **The improved-Euler start** (when `st.start` is given): the first call saves x into `st.start`, takes the
/// DDIM step with ε₀ and sets `st.correction_pending`; the caller then evaluates the model at the new x and
/// calls again with the level step {t₁, t₁} (diffusers' repeated timestep), which replaces x by the transfer
/// of `st.start` from t₀ to t₁ with \f$\hat\varepsilon = (\varepsilon_0 + \varepsilon_1)/2\f$. That ε₁ is not stored: the next
/// call is second order with ε₀ as its earlier output, as in diffusers.
/// **A start from pure noise** (α = 0 at the first call, without the improved-Euler start: zero terminal SNR,
/// diffusers' IPNDMScheduler): ρ = ∞, and the first call takes the limit of the transfer,
/// \f$x_t = \alpha_t D + \sigma_t\varepsilon_0\f$ with \f$\varepsilon_0 = x/\sigma_s\f$ (first order), storing ε₀ as usual.
/// @param[in] s the level step (α > 0 at the start, except that first call; λ increasing; {t₁, t₁} for the correction);
/// @param[in] denoised x̂₀ = D(x) at s.from; @param[in,out] x the state; @param[in,out] st the history;
/// @param[in] order 1 … 4, the history length (PNDM: 4; keep it fixed over a run); @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, order, sizes, aliasing or history (in particular a call other
///         than {t₁, t₁} while the correction is pending, or {t, t} when it is not); std::domain_error for a
///         coefficient or result that is not finite in T.
template <real_scalar T, execution_policy P = sequential_policy>
void plms_step(const level_step& s, std::span<const T> denoised, std::span<T> x, plms_state<T>& st,
               std::size_t order = 4, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::plms_step";
  detail::check_level_step(where, s);
  // A start from pure noise (α_s = 0): only the first call of a run without the improved-Euler start.
  const bool from_noise = s.from.alpha == 0.0 && st.count == 0 && st.start.empty() && !st.correction_pending;
  if (!from_noise) detail::check_eps_form_start(where, s);
  if (order < 1 || order > 4)
    detail::throw_invalid(where, "order = " + detail::to_text(order) + " is outside the allowed range [1, 4]");
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  detail::check_history(where, "state.eps[", st.eps, order, denoised, x);
  if (!st.start.empty()) {
    detail::check_same_size(where, "state.start", st.start.size(), "x", x.size());
    detail::check_disjoint(where, "state.start", st.start, "x", x);
    detail::check_disjoint(where, "state.start", st.start, "denoised", denoised);
    for (std::size_t j = 0; j < order; ++j)
      detail::check_disjoint(where, "state.start", st.start, detail::indexed_name("state.eps[", j, "]"), st.eps[j]);
  }
  if (st.count > order)
    detail::throw_invalid(where, "the state holds " + detail::to_text(st.count) + " outputs, more than order = " +
                                     detail::to_text(order) + " allows: keep the order fixed during a run (or reset the state)");
  const bool same_level = s.from.alpha == s.to.alpha && s.from.sigma == s.to.sigma;
  const T as = detail::coefficient<T>(where, "alpha_s", s.from.alpha);
  const T inv = detail::coefficient<T>(where, "1 / sigma_s", 1.0 / s.from.sigma);
  using kernels::madd;

  if (st.correction_pending) {
    if (!(same_level && s.from.alpha == st.landed.alpha && s.from.sigma == st.landed.sigma) || st.start.empty())
      detail::throw_invalid(where, "the improved-Euler start's correction is pending: this call must be the level step "
                                   "from and to the level the first step landed on (alpha = " +
                                       detail::to_text(st.landed.alpha) + ", sigma = " + detail::to_text(st.landed.sigma) +
                                       "), with state.start kept");
    const auto tr = detail::eps_transfer_coefficients({st.start_level, st.landed});
    const T a = detail::coefficient<T>(where, "alpha_1 / alpha_0", tr.a);
    const T c = detail::coefficient<T>(where, "the weight of (eps_0 + eps_1)/2", 0.5 * tr.c);
    const bool ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x),
                                 kernels::inputs<T>(std::span<const T>(st.start), std::span<const T>(x), denoised,
                                                    std::span<const T>(st.eps[0])),
                                 [=](auto x0v, auto xv, auto dv, auto e0) {
                                   using V = decltype(xv);
                                   const V e1 = madd(V(-as), dv, xv) * V(inv);
                                   return madd(V(c), e0 + e1, V(a) * x0v);
                                 });
    st.correction_pending = false;
    detail::require_finite_step(where, ok, "the correction of the improved-Euler start");
    return;
  }
  if (same_level)
    detail::throw_invalid(where, "the step starts and ends at the same level (alpha = " + detail::to_text(s.from.alpha) +
                                     ", sigma = " + detail::to_text(s.from.sigma) +
                                     ") but no improved-Euler correction is pending");
  const double lambda_s = detail::log_snr_half(s.from), lambda_t = detail::log_snr_half(s.to);
  if (!(lambda_t > lambda_s))
    detail::throw_invalid(where, "the step must go to a less noisy level: log(alpha/sigma) goes from " +
                                     detail::to_text(lambda_s) + " to " + detail::to_text(lambda_t));
  if (st.count > 0 && !(lambda_s > st.last_lambda))
    detail::throw_invalid(where, "the step starts at log(alpha/sigma) = " + detail::to_text(lambda_s) +
                                     ", not above the previous output's " + detail::to_text(st.last_lambda) +
                                     " (the history is for levels that get less noisy)");
  if (from_noise) {
    // ρ_s = ∞: the limit of the transfer, x_t = α_t D + σ_t ε₀ with ε₀ = x/σ_s (DDIM from pure noise, first order).
    const T at = detail::coefficient<T>(where, "alpha_t", s.to.alpha), sg = detail::coefficient<T>(where, "sigma_t", s.to.sigma);
    std::rotate(st.eps.begin(), st.eps.begin() + static_cast<std::ptrdiff_t>(order - 1),
                st.eps.begin() + static_cast<std::ptrdiff_t>(order));
    st.count = 1;
    st.last_lambda = lambda_s;  // −∞: every later level is above it
    const bool ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, st.eps[0]),
                                 kernels::inputs<T>(std::span<const T>(x), denoised), [=](auto xv, auto dv) {
                                   using V = decltype(xv);
                                   const V e0 = xv * V(inv);
                                   return std::array<V, 2>{madd(V(at), dv, V(sg) * e0), e0};
                                 });
    detail::require_finite_step(where, ok, "the step from pure noise");
    return;
  }
  const std::size_t k = std::min(st.count + 1, order);
  const auto tr = detail::eps_transfer_coefficients(s);
  const auto b = detail::adams_bashforth_weights(k);
  std::array<T, 4> w{};
  for (std::size_t j = 0; j < k; ++j) w[j] = detail::coefficient<T>(where, detail::indexed_name("the weight of eps_", j), tr.c * b[j]);
  const T a = detail::coefficient<T>(where, "alpha_t / alpha_s", tr.a);
  std::rotate(st.eps.begin(), st.eps.begin() + static_cast<std::ptrdiff_t>(order - 1),
              st.eps.begin() + static_cast<std::ptrdiff_t>(order));
  const bool starting = st.count == 0 && !st.start.empty();
  st.count = k;
  st.last_lambda = lambda_s;
  bool ok = true;
  if (starting) {
    // DDIM with ε₀, keeping x and ε₀ for the correction.
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, st.eps[0], st.start),
                      kernels::inputs<T>(std::span<const T>(x), denoised), [=](auto xv, auto dv) {
                        using V = decltype(xv);
                        const V e0 = madd(V(-as), dv, xv) * V(inv);
                        return std::array<V, 3>{madd(V(w[0]), e0, V(a) * xv), e0, xv};
                      });
    st.start_level = s.from;
    st.landed = s.to;
    st.correction_pending = s.to.sigma > 0.0;  // a one-step run to the data has nothing to correct with
  } else {
    ok = detail::eps_multistep_pass<T>(policy, kernels::no_noise{}, k, x, denoised, st.eps, as, inv, a, w);
  }
  detail::require_finite_step(where, ok, "the PLMS step");
}

/// @brief Options of @ref plms_sample.
struct plms_sample_options {
  std::size_t order = 4;              ///< 1 … 4 (PNDM: 4).
  bool improved_euler_start = true;   ///< The start of diffusers' PNDMScheduler (one more model call).
  std::uint64_t first_sample = 0;     ///< Stream index of row 0.
  bool draw_initial_noise = true;     ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;           ///< Scan every model output.
};

/// @brief PLMS sampling over a σ list (PNDM's pseudo linear multistep method, Liu et al. 2022, with diffusers'
/// start): per step one model call and one @ref diffusion::plms_step "plms_step" over the state's process;
/// with the improved-Euler start the first step takes a second model call at σ_1 and the correction
/// (N + 1 model calls for N steps). The callback reports each step once, after its last call.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source (initial draw only); @param[in] sigmas the σ list; @param[in] opt options;
/// @param[in] hooks hooks.
/// @throws as @ref euler_sample; std::invalid_argument for an order outside [1, 4] or a flow list from σ = 1.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result plms_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                          const plms_sample_options& opt = {},
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::plms_sample";
  if (opt.order < 1 || opt.order > 4)
    detail::throw_invalid(where, "order = " + detail::to_text(opt.order) + " is outside the allowed range [1, 4]");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  plms_state<T> st;
  for (std::size_t j = 0; j < opt.order; ++j) st.eps[j] = loop.buffer(2 + j);
  if (opt.improved_euler_start) st.start = loop.buffer(6);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const level_step l = loop.step_levels(loop.sigma(i), i);
    plms_step<T>(l, den, xs, st, opt.order, loop.policy());
    if (st.correction_pending) {
      loop.denoise(xs, loop.sigma(i + 1), loop.buffer(7), i);
      plms_step<T>({l.to, l.to}, std::span<const T>(loop.buffer(7)), xs, st, opt.order, loop.policy());
    }
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

// ---------------------------------------------------------------------------------------
// iPNDM
// ---------------------------------------------------------------------------------------

/// @brief Options of one @ref diffusion::ipndm_step "ipndm_step".
struct ipndm_options {
  std::size_t order = 4;       ///< 1 … 4 (ComfyUI's `max_order`, default 4); the history length.
  /// False: the Adams–Bashforth weights of an equal grid (ComfyUI `ipndm`); true: the variable-step weights,
  /// the exact integral of the Lagrange interpolant in σ (@ref lms_coefficients; ComfyUI's `ipndm_v` uses
  /// closed-form weights that agree at orders 1–2 and on equal steps, docs/conventions.md).
  bool variable_step = false;
};

/// @brief One iPNDM step in σ (the improved PNDM of Zhang & Chen 2023, arXiv 2204.13902: PNDM's linear
/// multistep method applied to the σ-space slope, with a lower-order start instead of pseudo Runge–Kutta steps;
/// ComfyUI `sample_ipndm`, `sample_ipndm_v`): \f$d_0 = (x - D)/\sigma\f$,
/// \f[ x' = x + (\sigma' - \sigma)\sum_{j<k} b^{(k)}_j d_j \f]
/// with the Adams–Bashforth weights b of order k = min(stored + 1, `order`), or, with `variable_step`,
/// \f$x' = x + \sum_j c_j d_j\f$ with the @ref lms_coefficients of the k newest slopes' σ (then the step is
/// @ref lms_step's). At σ' = 0 the step returns x' = D exactly (ComfyUI's last step). One pass; the slope
/// is written into the history, as in @ref lms_step, whose @ref lms_state it shares.
/// @param[in] s the step (σ below the previous step's); @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] o order and weights; @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, order, sizes or history; std::domain_error on overflow.
template <real_scalar T, execution_policy P = sequential_policy>
void ipndm_step(sigma_step s, std::span<const T> denoised, std::span<T> x, lms_state<T>& state,
                const ipndm_options& o = {}, const P& policy = P{}) {
  detail::slope_multistep_update<T>(
      "diffusion::ipndm_step", s, denoised, x, state, o.order, detail::slope_final_step::denoised,
      [&](std::span<const double> nodes, double sigma_next, std::size_t k) {
        if (o.variable_step) return lms_coefficients(nodes, sigma_next);
        auto b = detail::adams_bashforth_weights(k);
        for (double& v : b) v *= sigma_next - nodes[0];
        return b;
      },
      policy);
}

/// @brief Options of @ref ipndm_sample.
struct ipndm_sample_options {
  ipndm_options solver{};          ///< Order (default 4) and the weights (default: equal grid).
  std::uint64_t first_sample = 0;  ///< Stream index of row 0.
  bool draw_initial_noise = true;  ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;        ///< Scan every model output.
};

/// @brief iPNDM sampling over a σ list (ComfyUI `ipndm`, or `ipndm_v` with `solver.variable_step`): one model
/// call and one @ref diffusion::ipndm_step "ipndm_step" per step, the order rising from 1 as the history fills,
/// the last step to σ = 0 returning D. The slope (x − D)/σ is dx/dσ for a σ-space and a rectified-flow state
/// alike, so both integrate in σ. Measured orders in docs/accuracy.md.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source (initial draw only); @param[in] sigmas the σ list; @param[in] opt options;
/// @param[in] hooks hooks.
/// @throws as @ref euler_sample; std::invalid_argument for an order outside [1, 4].
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result ipndm_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                           const ipndm_sample_options& opt = {},
                           const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::ipndm_sample";
  if (opt.solver.order < 1 || opt.solver.order > 4)
    detail::throw_invalid(where, "order = " + detail::to_text(opt.solver.order) + " is outside the allowed range [1, 4]");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  lms_state<T> state;
  for (std::size_t j = 0; j < opt.solver.order; ++j) state.slopes[j] = loop.buffer(2 + j);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    ipndm_step<T>({loop.sigma(i), loop.sigma(i + 1)}, den, xs, state, opt.solver, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
