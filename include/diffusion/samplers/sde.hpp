/// @file
/// @brief The stochastic σ-space samplers: Euler ancestral (k-diffusion `sample_euler_ancestral`),
/// with the ancestral split written once (@ref diffusion::ancestral_step) for every ancestral
/// method, as a step function and a loop.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "common.hpp"
#include "ode.hpp"
#include "sigma_common.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

/// @brief The ancestral split of a step from σ_from to σ_to (k-diffusion `get_ancestral_step`):
/// \f$\sigma_\uparrow = \min\!\left(\sigma_{to},\ \eta\sqrt{\sigma_{to}^2(\sigma_{from}^2 - \sigma_{to}^2)/\sigma_{from}^2}\right)\f$,
/// \f$\sigma_\downarrow = \sqrt{\sigma_{to}^2 - \sigma_\uparrow^2}\f$, so that a deterministic move to σ_down
/// plus noise of σ_up lands at σ_to in distribution.
struct ancestral_split {
  double sigma_down;  ///< σ↓.
  double sigma_up;    ///< σ↑.
};

/// @brief Computes @ref ancestral_split for 0 ≤ σ_to < σ_from and η ≥ 0.
inline ancestral_split ancestral_step(double sigma_from, double sigma_to, double eta) {
  if (eta == 0.0 || sigma_to == 0.0) return {sigma_to, 0.0};
  const double up = std::min(sigma_to, eta * sigma_to * std::sqrt(1.0 - (sigma_to / sigma_from) * (sigma_to / sigma_from)));
  return {std::sqrt((sigma_to - up) * (sigma_to + up)), up};
}

/// @brief Options of an ancestral step.
struct ancestral_options {
  double eta = 1.0;      ///< η ∈ [0, 1] (0: plain Euler).
  double s_noise = 1.0;  ///< Scale of the added noise, ≥ 0.
};

/// @brief One Euler-ancestral step (k-diffusion `sample_euler_ancestral`): Euler from σ to σ_down, then
/// noise of σ_up (@ref ancestral_step), in one pass:
/// \f$x' = r\,x + (1 - r)\,D + S_\text{noise}\sigma_\uparrow z\f$, \f$r = \sigma_\downarrow/\sigma\f$.
/// @param[in] s the step (σ_next < σ); @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in] z the normals (a buffer of x.size(), a kernels::philox_stream; unused when σ_up = 0);
/// @param[in] opt η and S_noise; @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, options or sizes; std::domain_error on overflow.
///
/// T may be a 16-bit storage type (x and D in it): the noise is then float (a buffer of float or a
/// Philox stream generating float), the step computed in float and rounded once to T on store.
template <storage_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, compute_t<T>>
void euler_ancestral_step(sigma_step s, std::span<const T> denoised, std::span<T> x, const Z& z,
                          const ancestral_options& opt = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::euler_ancestral_step";
  detail::check_sigma_step(where, s);
  detail::check_eta_and_s_noise(where, opt.eta, opt.s_noise);
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const ancestral_split a = ancestral_step(s.sigma, s.sigma_next, opt.eta);
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (a.sigma_up > 0.0 && opt.s_noise > 0.0)
      detail::throw_invalid(where, "the step adds noise (sigma_up = " + detail::to_text(a.sigma_up) +
                                       " > 0) but no noise was passed");
  } else {
    detail::check_noise_operand<T>(where, z, x.size());
  }
  const double r = a.sigma_down / s.sigma;
  using C = compute_t<T>;
  bool ok;
  if (a.sigma_up > 0.0 && !std::is_same_v<Z, kernels::no_noise>) {
    ok = kernels::affine2_noise(static_cast<C>(r), std::span<const T>(x), static_cast<C>(1.0 - r), denoised,
                                detail::coefficient<C>(where, "sigma_up * s_noise", a.sigma_up * opt.s_noise), z, x,
                                policy);
  } else {
    ok = kernels::affine2(static_cast<C>(r), std::span<const T>(x), static_cast<C>(1.0 - r), denoised, x, policy);
  }
  detail::require_finite_step(where, ok, "the Euler-ancestral step");
}

namespace detail {
/// A rectified-flow step: 0 ≤ σ_next < σ ≤ 1.
inline void check_flow_step(std::string_view where, sigma_step s) {
  if (!(s.sigma > 0.0 && s.sigma <= 1.0 && s.sigma_next >= 0.0 && s.sigma_next < s.sigma))
    throw_invalid(where, "sigma = " + to_text(s.sigma) + ", sigma_next = " + to_text(s.sigma_next) +
                             ": a flow step needs 0 <= sigma_next < sigma <= 1");
}
}  // namespace detail

/// @brief The σ_down of a rectified-flow ancestral step (ComfyUI `sample_euler_ancestral_RF`):
/// \f$\sigma_\downarrow = \sigma_{to}\left(1 + (\sigma_{to}/\sigma_{from} - 1)\,\eta\right)\f$ (η = 0: σ_to, no noise;
/// η = 1: \f$\sigma_{to}^2/\sigma_{from}\f$).
inline double rf_sigma_down(double sigma_from, double sigma_to, double eta) noexcept {
  return sigma_to * (1.0 + (sigma_to / sigma_from - 1.0) * eta);
}

/// @brief One ancestral step of a rectified-flow state (ComfyUI `sample_euler_ancestral_RF`; the
/// step stable-diffusion.cpp #1363/#1436 needed): Euler from σ to σ_down (@ref rf_sigma_down) in
/// the flow's scale, then the signal rescale and fresh noise that land on σ_to:
/// \f$x' = \frac{1-\sigma_{to}}{1-\sigma_\downarrow}\left(r\,x + (1 - r)D\right) + S_\text{noise}\sqrt{\sigma_{to}^2 - \left(\frac{(1-\sigma_{to})\sigma_\downarrow}{1-\sigma_\downarrow}\right)^2}\,z\f$,
/// r = σ_down/σ, in one pass (@ref renoise_step after @ref euler_step). Reusing the σ-space split
/// on a flow state lands at the wrong signal level and blurs images.
/// @param[in] s the step (flow σ, 0 ≤ σ_to < σ ≤ 1); @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in] z the normals (unused when σ_down = σ_to or σ_to = 0); @param[in] opt η ∈ [0, 1], S_noise;
/// @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, options, sizes, or missing noise; std::domain_error on overflow.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void rf_ancestral_step(sigma_step s, std::span<const T> denoised, std::span<T> x, const Z& z,
                       const ancestral_options& opt = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::rf_ancestral_step";
  detail::check_flow_step(where, s);
  detail::check_eta_and_s_noise(where, opt.eta, opt.s_noise);
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const double down = s.sigma_next == 0.0 ? 0.0 : rf_sigma_down(s.sigma, s.sigma_next, opt.eta);
  const double r = down / s.sigma;
  const double scale = (1.0 - s.sigma_next) / (1.0 - down);  // α_to / α_down
  const double kept = scale * down;
  const double c = opt.s_noise * std::sqrt(std::max(0.0, (s.sigma_next - kept) * (s.sigma_next + kept)));
  bool ok;
  if (c > 0.0) {
    if constexpr (std::is_same_v<Z, kernels::no_noise>) {
      detail::throw_invalid(where, "the step adds noise but no noise was passed");
    } else {
      detail::check_noise_operand<T>(where, z, x.size());
      ok = kernels::affine2_noise(static_cast<T>(scale * r), std::span<const T>(x), static_cast<T>(scale * (1.0 - r)),
                                  denoised, detail::coefficient<T>(where, "the added noise's scale", c), z, x, policy);
    }
  } else {
    ok = kernels::affine2(static_cast<T>(scale * r), std::span<const T>(x), static_cast<T>(scale * (1.0 - r)), denoised, x,
                          policy);
  }
  detail::require_finite_step(where, ok, "the rectified-flow ancestral step");
}

/// @brief One Euler step of the rectified-flow ODE dx/dσ = u from the model's velocity, in one pass:
/// \f$x' = x + (\sigma_{next} - \sigma)\,u\f$ (Liu et al. 2022; Esser et al. 2024; diffusers
/// FlowMatchEulerDiscreteScheduler.step). The same step as @ref diffusion::euler_step "euler_step" on flow levels
/// with D = x − σu, without forming D.
/// @param[in] s the step (0 ≤ σ_next < σ ≤ 1); @param[in] velocity u = ε − x₀ predicted at (x, σ);
/// @param[in,out] x the state; @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step or sizes, or partially overlapping arrays;
///         std::domain_error when the result is not finite.
template <real_scalar T, execution_policy P = sequential_policy>
void flow_euler_step(sigma_step s, std::span<const T> velocity, std::span<T> x, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::flow_euler_step";
  detail::check_flow_step(where, s);
  detail::check_same_size(where, "velocity", velocity.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "velocity", velocity, "x", x);
  detail::require_finite_step(
      where,
      kernels::affine2(T{1}, std::span<const T>(x), static_cast<T>(s.sigma_next - s.sigma), velocity, x, policy),
      "the flow Euler step");
}

/// @brief diffusers' `stochastic_sampling` step of FlowMatchEulerDiscreteScheduler, in one pass:
/// x̂₀ = x − σu noised afresh to σ_next, \f$x' = (1-\sigma_{next})(x - \sigma u) + \sigma_{next} z\f$
/// (the forward process at σ_next; σ_next = 0 gives x̂₀).
/// @param[in] s the step (0 ≤ σ_next < σ ≤ 1); @param[in] velocity u at (x, σ); @param[in,out] x the state;
/// @param[in] z the normals (a buffer of x's size or kernels::philox_stream; unused at σ_next = 0);
/// @param[in] policy threads.
/// @throws std::invalid_argument for a bad step or sizes, or missing noise; std::domain_error when the result is
///         not finite.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void flow_stochastic_step(sigma_step s, std::span<const T> velocity, std::span<T> x, const Z& z, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::flow_stochastic_step";
  detail::check_flow_step(where, s);
  detail::check_same_size(where, "velocity", velocity.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "velocity", velocity, "x", x);
  const double keep = 1.0 - s.sigma_next;
  bool ok;
  if (s.sigma_next > 0.0) {
    if constexpr (std::is_same_v<Z, kernels::no_noise>) {
      detail::throw_invalid(where, "the step adds noise but no noise was passed");
    } else {
      detail::check_noise_operand<T>(where, z, x.size());
      ok = kernels::affine2_noise(static_cast<T>(keep), std::span<const T>(x), static_cast<T>(-keep * s.sigma), velocity,
                                  static_cast<T>(s.sigma_next), z, x, policy);
    }
  } else {
    ok = kernels::affine2(T{1}, std::span<const T>(x), static_cast<T>(-s.sigma), velocity, x, policy);
  }
  detail::require_finite_step(where, ok, "the stochastic flow step");
}


// ---------------------------------------------------------------------------------------
// DPM-Solver++(2M) SDE
// ---------------------------------------------------------------------------------------

/// @brief Options of one DPM-Solver++(2M) SDE step.
struct dpmpp_sde_options {
  double eta = 1.0;      ///< η ∈ [0, 1]: 1 the reverse SDE (diffusers' `sde-dpmsolver++`), 0 the ODE step.
  double s_noise = 1.0;  ///< Scale of the added noise, ≥ 0.
  dpm_solver_type solver_type = dpm_solver_type::midpoint;  ///< The second-order correction.
  /// DPM-Solver++(3M) only: use the reference implementations' third-order term (Lu et al.'s
  /// `dpm_solver_pytorch`, diffusers, k-diffusion), which is half the Taylor term and so makes the
  /// method second order (docs/conventions.md); false (default): the third-order term.
  bool reference_3m = false;
  /// DPM-Solver++(3M) with η = 1 only: diffusers' `sde-dpmsolver++` third-order update
  /// (`multistep_dpm_solver_third_order_update`), whose D₂ weight
  /// \f$\alpha'\left(\frac{1 - e^{-2h} - 2h}{(2h)^2} - \frac12\right) = -\alpha'(\varphi_3 + 1)\f$ has the sign of its ½
  /// flipped: k-diffusion's `sample_dpmpp_3m_sde` has \f$-\alpha'\varphi_3\f$ and the Taylor term is
  /// \f$-2\alpha'\varphi_3\f$ (φ₃ at h_η = 2h; docs/conventions.md). For replaying diffusers only; the step is then
  /// first order in the drift. Not with `reference_3m`.
  bool diffusers_sde_3m = false;
};

/// @brief One DPM-Solver++(2M) SDE step between two levels of the state's process (Lu et al. 2022b,
/// "DPM-Solver++", Appendix: the SDE solver for the data-prediction model; k-diffusion
/// `sample_dpmpp_2m_sde`, diffusers `sde-dpmsolver++` at η = 1). With λ = log(α/σ), h = λ' − λ,
/// \f$h_\eta = (1 + \eta)h\f$:
/// \f[ x' = \frac{\sigma'}{\sigma}e^{-\eta h}x + \alpha'\left(1 - e^{-h_\eta}\right)\hat D
///          + \sigma'\sqrt{1 - e^{-2\eta h}}\,S_\text{noise}\,z, \f]
/// \f$\hat D\f$ as @ref dpm_solver_type with \f$r = h_\text{prev}/h\f$; first order (\f$\hat D = D\f$)
/// at the first step, when `first_order` is set, and when σ' = 0 (then x' = α'D, no noise). η = 0
/// with the midpoint correction is @ref diffusion::dpmpp_2m_step "dpmpp_2m_step" bit for bit. One
/// pass with the noise drawn in registers; writes D into the history.
/// @param[in] s the level step; @param[in] denoised D at s.from; @param[in,out] x the state;
/// @param[in,out] state the history (as for dpmpp_2m_step); @param[in] z the step's noise
/// (kernels::no_noise allowed only where the step adds none); @param[in] opt η, S_noise, the solver type;
/// @param[in] first_order take a first-order step; @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, options or sizes, or missing noise; std::domain_error on
/// overflow.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpmpp_2m_sde_step(const level_step& s, std::span<const T> denoised, std::span<T> x, dpmpp_2m_state<T>& state,
                       const Z& z, const dpmpp_sde_options& opt = {}, bool first_order = false, const P& policy = P{}) {
  detail::dpmpp_2m_update<T>("diffusion::dpmpp_2m_sde_step", s, denoised, x, state, z, opt.eta, opt.s_noise,
                             opt.solver_type, first_order, policy);
}

/// @brief The σ-space form of @ref diffusion::dpmpp_2m_sde_step "dpmpp_2m_sde_step" (α = 1 at both
/// ends; λ = −log σ): k-diffusion's `sample_dpmpp_2m_sde` step.
/// @param[in] s the step; @param[in] denoised D(x; σ); @param[in,out] x the state; @param[in,out] state
/// the history; @param[in] z the noise; @param[in] opt options; @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpmpp_2m_sde_step(sigma_step s, std::span<const T> denoised, std::span<T> x, dpmpp_2m_state<T>& state,
                       const Z& z, const dpmpp_sde_options& opt = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::dpmpp_2m_sde_step";
  detail::check_sigma_step(where, s);
  detail::dpmpp_2m_update<T>(where, as_level_step(s), denoised, x, state, z, opt.eta, opt.s_noise, opt.solver_type,
                             false, policy);
}

/// @brief Euler-ancestral sampling (k-diffusion `sample_euler_ancestral`): per step one model call and one
/// @ref euler_ancestral_step with the noise of stream step i — @ref rf_ancestral_step when the
/// denoiser's state is a rectified flow (ComfyUI `sample_euler_ancestral_RF`). Its terminal law matches the
/// exact one of the linear-Gaussian chain on Gaussian data (tests/test_sampler_karras.cpp).
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise;
/// the churn is not used); @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result euler_ancestral_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                                     std::span<const double> sigmas, const karras_options& opt = {},
                                     const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::euler_ancestral_sample";
  detail::check_karras_options(where, opt);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  const ancestral_options a{opt.eta, opt.s_noise};
  const bool flow = loop.process() == state_process::rectified_flow;
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    const sigma_step s{loop.sigma(i), loop.sigma(i + 1)};
    loop.denoise(xs, s.sigma, den, i);
    const bool noisy = flow ? s.sigma_next > 0.0 && a.eta > 0.0 && a.s_noise > 0.0
                            : ancestral_step(s.sigma, s.sigma_next, a.eta).sigma_up > 0.0;
    if (flow && noisy)
      rf_ancestral_step<T>(s, den, xs, loop.noise(i), a, loop.policy());
    else if (flow)
      rf_ancestral_step<T>(s, den, xs, kernels::no_noise{}, a, loop.policy());
    else if (noisy)
      euler_ancestral_step<T>(s, den, xs, loop.noise(i), a, loop.policy());
    else
      euler_ancestral_step<T>(s, den, xs, kernels::no_noise{}, a, loop.policy());
    if (!loop.report(loop.steps(), loop.time(s.sigma), s.sigma, s.sigma_next, den)) break;
  }
  return loop.result();
}


// ---------------------------------------------------------------------------------------
// DPM-Solver++(3M) and 3M SDE
// ---------------------------------------------------------------------------------------

/// @brief The history of DPM-Solver++(3M): the two previous steps' denoised outputs (newest first)
/// and their λ steps, in caller-owned buffers (no allocation).
template <real_scalar T>
struct dpmpp_3m_state {
  std::array<std::span<T>, 2> previous_denoised{};  ///< D of the previous step and of the one before.
  std::array<double, 2> previous_h{};               ///< h of the previous step and of the one before.
  std::size_t count = 0;                            ///< Outputs stored (0, 1 or 2).
};

/// @brief One DPM-Solver++(3M) step, deterministic (η = 0) or the 3M SDE, between two levels of the
/// state's process (Lu et al. 2022b, the third-order multistep data-prediction solver; diffusers
/// `multistep_dpm_solver_third_order_update`; k-diffusion `sample_dpmpp_3m_sde`). With λ = log(α/σ),
/// h = λ' − λ, \f$h_\eta = (1 + \eta)h\f$, \f$E = 1 - e^{-h_\eta}\f$, \f$\varphi_2 = 1 - E/h_\eta\f$,
/// \f$\varphi_3 = \varphi_2/h_\eta - \tfrac12\f$, r₀ = h₋₁/h, r₁ = h₋₂/h and the divided differences
/// \f$D_{1,0} = (D - D_{-1})/r_0\f$, \f$D_{1,1} = (D_{-1} - D_{-2})/r_1\f$,
/// \f$D_1 = D_{1,0} + \frac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1})\f$, \f$D_2 = \frac{D_{1,0} - D_{1,1}}{r_0 + r_1}\f$:
/// \f[ x' = \frac{\sigma'}{\sigma}e^{-\eta h}x + \alpha'\left(E\,D + \varphi_2 D_1 - 2\varphi_3 D_2\right)
///          + \sigma'\sqrt{1 - e^{-2\eta h}}\,S_\text{noise}\,z. \f]
/// D₂ ≈ h²D''/2 (D as a function of λ), and the exponential integrator's third term is
/// \f$\int_0^{h} e^{-(h-u)}\tfrac{u^2}{2}du\,D'' = -h^2\varphi_3 D''\f$ (η = 0), hence the factor 2;
/// the references write \f$-\varphi_3 D_2\f$, which is second order (`opt.reference_3m` reproduces it);
/// diffusers' `sde-dpmsolver++` writes \f$-(\varphi_3 + 1)D_2\f$ (`opt.diffusers_sde_3m` reproduces it).
/// The order is min(stored + 1, 3, `max_order`) — 1 at σ' = 0 —, and at order 2 the correction is
/// `opt.solver_type`'s (@ref diffusion::dpm_solver_type "dpm_solver_type": diffusers' default midpoint; k-diffusion's 3M SDE uses
/// heun). One pass; the history is updated in place.
/// @param[in] s the level step; @param[in] denoised D at s.from; @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] z the step's noise (kernels::no_noise where the step adds
/// none); @param[in] opt η, S_noise, the order-2 correction; @param[in] max_order 1, 2 or 3 (diffusers'
/// `lower_order_final` passes less at the last steps); @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, options, order or sizes, or missing noise;
/// std::domain_error on overflow.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpmpp_3m_sde_step(const level_step& s, std::span<const T> denoised, std::span<T> x, dpmpp_3m_state<T>& state,
                       const Z& z, const dpmpp_sde_options& opt = {}, std::size_t max_order = 3, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::dpmpp_3m_sde_step";
  detail::check_level_step(where, s);
  detail::check_eta_and_s_noise(where, opt.eta, opt.s_noise);
  if (!(opt.solver_type == dpm_solver_type::midpoint || opt.solver_type == dpm_solver_type::heun))
    detail::throw_invalid(where, "solver_type = " + detail::to_text(static_cast<int>(opt.solver_type)) + " is not midpoint or heun");
  if (opt.diffusers_sde_3m && (opt.eta != 1.0 || opt.reference_3m))
    detail::throw_invalid(where, "opt.diffusers_sde_3m (diffusers' sde-dpmsolver++ third-order term) needs eta = 1 and "
                                 "reference_3m = false; got eta = " + detail::to_text(opt.eta) +
                                     ", reference_3m = " + (opt.reference_3m ? "true" : "false"));
  if (max_order < 1 || max_order > 3)
    detail::throw_invalid(where, "max_order = " + detail::to_text(max_order) + " is outside the allowed range [1, 3]");
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  // Literal names: a built std::string would allocate at every step (test_allocations).
  detail::check_same_size(where, "state.previous_denoised[0]", state.previous_denoised[0].size(), "x", x.size());
  detail::check_same_size(where, "state.previous_denoised[1]", state.previous_denoised[1].size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const bool lands_on_data = s.to.sigma == 0.0;
  const double ratio = s.to.sigma / s.from.sigma;
  const double h = lands_on_data ? 0.0 : detail::lambda_difference(s);  // λ' − λ
  const double h_eta = opt.eta == 0.0 ? h : h * (1.0 + opt.eta);
  const double E = lands_on_data ? 1.0 : -std::expm1(-h_eta);
  const double cx_d = opt.eta == 0.0 || lands_on_data ? ratio : ratio * std::exp(-opt.eta * h);
  const double noise_scale =
      opt.eta == 0.0 || lands_on_data ? 0.0 : s.to.sigma * std::sqrt(-std::expm1(-2.0 * opt.eta * h)) * opt.s_noise;
  const std::size_t k = lands_on_data ? 1 : std::min({state.count + 1, std::size_t{3}, max_order});
  // x' = cx x + α'(a0 D + a1 D₋₁ + a2 D₋₂) + cz z.
  double a0 = E, a1 = 0.0, a2 = 0.0;
  if (k >= 2) {
    const double phi2 = 1.0 - E / h_eta, r0 = state.previous_h[0] / h;
    if (k == 2) {
      const double c = opt.solver_type == dpm_solver_type::midpoint ? 0.5 * E : phi2;  // times D1 = (D − D₋₁)/r0
      a0 += c / r0;
      a1 -= c / r0;
    } else {
      // The D₂ term: 2φ₃ (third order), the references' φ₃, or diffusers' SDE φ₃ + 1.
      const double phi3_ref = phi2 / h_eta - 0.5;
      const double phi3 = opt.diffusers_sde_3m ? phi3_ref + 1.0 : (opt.reference_3m ? 1.0 : 2.0) * phi3_ref;
      const double r1 = state.previous_h[1] / h, sum = r0 + r1;
      const double A = phi2 * (1.0 + r0 / sum) - phi3 / sum;  // coefficient of D_{1,0}
      const double B = -phi2 * r0 / sum + phi3 / sum;         // coefficient of D_{1,1}
      a0 += A / r0;
      a1 += -A / r0 + B / r1;
      a2 = -B / r1;
    }
  }
  const T cx = static_cast<T>(cx_d), c0 = static_cast<T>(s.to.alpha * a0), c1 = static_cast<T>(s.to.alpha * a1),
          c2 = static_cast<T>(s.to.alpha * a2);
  // The older history slot receives D (at order 3 it is read first, element by element), then the
  // slots swap. History not used at this order is not read (its buffers may hold anything).
  const std::span<T> older = state.previous_denoised[1];
  const std::span<const T> xc(x), p0(state.previous_denoised[0]), p1(state.previous_denoised[1]);
  using kernels::madd;
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (noise_scale > 0.0)
      detail::throw_invalid(where, "the step adds noise (eta = " + detail::to_text(opt.eta) + ", s_noise = " +
                                       detail::to_text(opt.s_noise) + ", sigma_next = " + detail::to_text(s.to.sigma) +
                                       ") but no noise was passed");
  } else {
    detail::check_noise_operand<T>(where, z, x.size());  // a noise operand passed must fit, used or not
  }
  const T cz = detail::coefficient<T>(where, "sigma_next * sqrt(1 - exp(-2 eta h)) * s_noise", noise_scale);
  auto combine = [cx, c0, c1, c2](auto xv, auto dv, auto q0, auto q1) {
    using V = decltype(xv);
    return madd(V(cx), xv, madd(V(c0), dv, madd(V(c1), q0, V(c2) * q1)));
  };
  auto with_noise = [cz](auto v, auto... zv) {  // + cz z when the kernel draws noise
    using V = decltype(v);
    if constexpr (sizeof...(zv) == 1)
      return madd(V(cz), zv..., v);
    else
      return v;
  };
  bool ok = true;
  if (k == 1)
    ok = kernels::map(policy, z, kernels::outputs(x, older), kernels::inputs<T>(xc, denoised), [=](auto xv, auto dv, auto... zv) {
      using V = decltype(xv);
      return std::array<V, 2>{with_noise(combine(xv, dv, V(0), V(0)), zv...), dv};
    });
  else if (k == 2)
    ok = kernels::map(policy, z, kernels::outputs(x, older), kernels::inputs<T>(xc, denoised, p0),
                      [=](auto xv, auto dv, auto q0, auto... zv) {
                        using V = decltype(xv);
                        return std::array<V, 2>{with_noise(combine(xv, dv, q0, V(0)), zv...), dv};
                      });
  else
    ok = kernels::map(policy, z, kernels::outputs(x, older), kernels::inputs<T>(xc, denoised, p0, p1),
                      [=](auto xv, auto dv, auto q0, auto q1, auto... zv) {
                        using V = decltype(xv);
                        return std::array<V, 2>{with_noise(combine(xv, dv, q0, q1), zv...), dv};
                      });
  detail::require_finite_step(where, ok, "the DPM-Solver++(3M) step");
  std::swap(state.previous_denoised[0], state.previous_denoised[1]);
  state.previous_h[1] = state.previous_h[0];
  state.previous_h[0] = h;
  state.count = std::min<std::size_t>(state.count + 1, 2);
}

namespace detail {
/// The loop of DPM-Solver++(2M) SDE (Order 2) and (3M) SDE (Order 3): one model call and one step per
/// σ, the noise of stream step i where the step adds noise, no_noise elsewhere.
/// With a Brownian tree, the noise of step i is the tree's standardized increment over [σ_{i+1}, σ_i].
template <std::size_t Order, class SigmaModel, real_scalar T, class Noise, class Context>
sample_result dpmpp_sde_loop(std::string_view where, SigmaModel& D, std::span<T> x, std::size_t rows, Noise& noise,
                             std::span<const double> sigmas, const karras_options& opt,
                             const sampler_hooks<T, Context>& hooks, const brownian_tree* tree = nullptr) {
  check_karras_options(where, opt);
  if (tree != nullptr) check_tree_covers(where, *tree, sigmas);
  sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, x, rows, noise, sigmas, opt.first_sample,
                                                    opt.draw_initial_noise, opt.check_finite, hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  std::conditional_t<Order == 2, dpmpp_2m_state<T>, dpmpp_3m_state<T>> state{};
  if constexpr (Order == 2)
    state.previous_denoised = loop.buffer(3);
  else
    state.previous_denoised = {loop.buffer(2), loop.buffer(3)};
  const dpmpp_sde_options o{opt.eta, opt.s_noise, opt.solver_type};
  const bool noisy = opt.eta > 0.0 && opt.s_noise > 0.0;
  auto step = [&](const level_step& l, const auto& z) {
    if constexpr (Order == 2)
      dpmpp_2m_sde_step<T>(l, den, xs, state, z, o, false, loop.policy());
    else
      dpmpp_3m_sde_step<T>(l, den, xs, state, z, o, 3, loop.policy());
  };
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const level_step l = loop.step_levels(loop.sigma(i), i);
    if (noisy && loop.sigma(i + 1) > 0.0 && tree != nullptr)
      step(l, loop.noise(*tree, loop.sigma(i), loop.sigma(i + 1)));
    else if (noisy && loop.sigma(i + 1) > 0.0)
      step(l, loop.noise(i));
    else
      step(l, kernels::no_noise{});
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}
}  // namespace detail

/// @brief DPM-Solver++(2M) SDE sampling (k-diffusion `sample_dpmpp_2m_sde`, ComfyUI `dpmpp_2m_sde`):
/// one model call and one @ref diffusion::dpmpp_2m_sde_step "dpmpp_2m_sde_step" per step over the
/// state's process (VE, VP or rectified flow levels), with the noise of stream step i (independent
/// across steps, as diffusers draws it; k-diffusion's default Brownian-tree noise has the same law
/// per step). First order at the first step and to σ = 0. Second order in the ODE limit η = 0.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise,
/// `solver_type`; the churn is not used); @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_2m_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                                  const karras_options& opt = {},
                                  const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::dpmpp_sde_loop<2>("diffusion::dpmpp_2m_sde_sample", D, as_mutable_span(x), rows, noise, sigmas, opt, hooks);
}

/// @brief DPM-Solver++(2M) SDE sampling with Brownian-tree noise (k-diffusion `sample_dpmpp_2m_sde` with its
/// default `BrownianTreeNoiseSampler`): as the overload above, but the noise of step i is the tree's
/// standardized increment \f$(W(\sigma_{i+1}) - W(\sigma_i))/\sqrt{\sigma_i - \sigma_{i+1}}\f$ (@ref brownian_tree::fill),
/// so that runs with different step counts share one Brownian path (their results converge to the
/// solution of the reverse SDE for that path). `noise` draws only the initial x = σ₀z.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the initial noise; @param[in] tree the Brownian tree, in the list's σ, covering every
/// σ > 0 of the list; @param[in] sigmas the σ list; @param[in] opt options; @param[in] hooks hooks.
/// @throws as the overload above; std::invalid_argument for a σ outside the tree's interval (before any
/// model call) or a step narrower than the tree's leaf width.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_2m_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, const brownian_tree& tree,
                                  std::span<const double> sigmas, const karras_options& opt = {},
                                  const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::dpmpp_sde_loop<2>("diffusion::dpmpp_2m_sde_sample", D, as_mutable_span(x), rows, noise, sigmas, opt,
                                   hooks, &tree);
}

/// @brief DPM-Solver++(3M) sampling, deterministic (η = 0) or the 3M SDE (k-diffusion
/// `sample_dpmpp_3m_sde`, ComfyUI `dpmpp_3m_sde`): one model call and one
/// @ref diffusion::dpmpp_3m_sde_step "dpmpp_3m_sde_step" per step over the state's process, the noise
/// of stream step i; orders 1, 2, 3, 3, … and 1 to σ = 0.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise,
/// `solver_type` for the order-2 step; the churn is not used); @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_3m_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                                  const karras_options& opt = {},
                                  const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::dpmpp_sde_loop<3>("diffusion::dpmpp_3m_sde_sample", D, as_mutable_span(x), rows, noise, sigmas, opt, hooks);
}

/// @brief DPM-Solver++(3M) SDE sampling with Brownian-tree noise (k-diffusion `sample_dpmpp_3m_sde` with its
/// default `BrownianTreeNoiseSampler`): the noise of step i is the tree's standardized increment over
/// [σ_{i+1}, σ_i], as in the 2M SDE overload with a tree.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the initial noise; @param[in] tree the Brownian tree covering every σ > 0 of the list;
/// @param[in] sigmas the σ list; @param[in] opt options; @param[in] hooks hooks.
/// @throws as the 2M SDE overload with a tree.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_3m_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, const brownian_tree& tree,
                                  std::span<const double> sigmas, const karras_options& opt = {},
                                  const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::dpmpp_sde_loop<3>("diffusion::dpmpp_3m_sde_sample", D, as_mutable_span(x), rows, noise, sigmas, opt,
                                   hooks, &tree);
}

}  // namespace diffusion

/// @}
