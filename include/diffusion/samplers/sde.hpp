/// @file
/// @brief The stochastic σ-space samplers: Euler ancestral (k-diffusion `sample_euler_ancestral`),
/// with the ancestral split written once (@ref diffusion::ancestral_step) for every ancestral
/// method, as a step function and a loop.
#pragma once

#include <algorithm>
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
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
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
  bool ok;
  if (a.sigma_up > 0.0 && !std::is_same_v<Z, kernels::no_noise>) {
    ok = kernels::affine2_noise(static_cast<T>(r), std::span<const T>(x), static_cast<T>(1.0 - r), denoised,
                                detail::coefficient<T>(where, "sigma_up * s_noise", a.sigma_up * opt.s_noise), z, x,
                                policy);
  } else {
    ok = kernels::affine2(static_cast<T>(r), std::span<const T>(x), static_cast<T>(1.0 - r), denoised, x, policy);
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
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::dpmpp_2m_sde_sample";
  detail::check_karras_options(where, opt);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  dpmpp_2m_state<T> state{loop.buffer(3)};
  const dpmpp_sde_options o{opt.eta, opt.s_noise, opt.solver_type};
  const bool noisy = opt.eta > 0.0 && opt.s_noise > 0.0;
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const level_step l = loop.step_levels(loop.sigma(i), i);
    if (noisy && loop.sigma(i + 1) > 0.0)
      dpmpp_2m_sde_step<T>(l, den, xs, state, loop.noise(i), o, false, loop.policy());
    else
      dpmpp_2m_sde_step<T>(l, den, xs, state, kernels::no_noise{}, o, false, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
