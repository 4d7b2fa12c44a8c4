/// @file
/// @brief Two exponential-integrator samplers of ComfyUI's list: the second-order multistep "RES"
/// solver (Zhang et al. 2023, arXiv 2308.02157; ComfyUI `sample_res_multistep` and
/// `sample_res_multistep_ancestral`) and the extended reverse-time SDE solver ER-SDE-Solver-1/2/3
/// (Cui et al. 2023, arXiv 2309.06169; ComfyUI `sample_er_sde`), each as a step function with a
/// caller-owned history and a σ-space loop over it (σ-space, variance-preserving and rectified-flow
/// levels alike: every formula is written in λ = log(α/σ) or ς = σ/α).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "common.hpp"
#include "ode.hpp"
#include "sde.hpp"
#include "sigma_common.hpp"
#include "unipc.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

// ---------------------------------------------------------------------------------------
// RES multistep
// ---------------------------------------------------------------------------------------

/// @brief The history of the RES multistep step: the same as DPM-Solver++(2M)'s (the previous D and
/// the λ length h of the previous step's deterministic part), caller-owned.
template <real_scalar T>
using res_multistep_state = dpmpp_2m_state<T>;

namespace detail {

/// The split of a level step in ς = σ/α (@ref ancestral_step on the ratios): the deterministic part
/// lands on σ_d = α_to ς↓ (σ_to itself at η = 0), then α_to ς↑ S_noise z is added.
struct level_split {
  double sigma_down;  ///< σ_d = α_to ς↓, in the state's units.
  double noise;       ///< α_to ς↑ S_noise.
};

inline level_split split_level_step(const level_step& s, double eta, double s_noise) {
  if (eta == 0.0 || s.to.sigma == 0.0) return {s.to.sigma, 0.0};
  const ancestral_split a = ancestral_step(s.from.sigma / s.from.alpha, s.to.sigma / s.to.alpha, eta);
  return {s.to.alpha * a.sigma_down, s.to.alpha * a.sigma_up * s_noise};
}

}  // namespace detail

/// @brief One step of the second-order multistep RES solver (Zhang et al. 2023, "Improved Order Analysis
/// and Design of Exponential Integrator for Diffusion Models Sampling", arXiv 2308.02157, Sec. 4 and
/// the multistep form of its Algorithm 1; ComfyUI `res_multistep`), optionally ancestral. With
/// λ = log(α/σ), the split of η in ς = σ/α (σ_d = α'ς↓, @ref ancestral_step), h = λ_d − λ and
/// \f$c_2 = -h_\text{prev}/h\f$ (the previous D lies at λ − h_prev):
/// \f[ x' = \frac{\sigma_d}{\sigma}x + \alpha' h\left(b_1 D + b_2 D_\text{prev}\right) + \alpha'\varsigma_\uparrow S_\text{noise} z,
///     \qquad b_2 = \frac{\varphi_2(-h)}{c_2},\ b_1 = \varphi_1(-h) - b_2, \f]
/// the order conditions of the paper's Eq. 16 (b₁ + b₂ = φ₁, b₂c₂ = φ₂): the exact integral of D
/// linear in λ through the two nodes, i.e.
/// \f$x' = \frac{\sigma_d}{\sigma}x + \alpha'\left[(1 - e^{-h})D + \frac{h^2\varphi_2(-h)}{h_\text{prev}}(D - D_\text{prev})\right]\f$.
/// DPM-Solver++(2M) (@ref diffusion::dpmpp_2m_step "dpmpp_2m_step") has the same form with
/// \f$\frac{h(1 - e^{-h})}{2h_\text{prev}}\f$ in place of \f$\frac{h^2\varphi_2(-h)}{h_\text{prev}}\f$
/// (\f$h\varphi_2(-h) = \tfrac h2 - \tfrac{h^2}6 + O(h^3)\f$ against \f$\tfrac{1 - e^{-h}}2 = \tfrac h2 - \tfrac{h^2}4 + O(h^3)\f$):
/// both second order, their states O(h²) apart. First order (b₂ = 0, the DDIM step to σ_d) at the
/// first step and where σ_d = 0 (to σ = 0; then x' = α'D). φ_k from @ref detail::phi_functions.
/// One pass with the noise drawn in registers; writes D into the history and h into
/// `state.previous_h` (+∞ where σ_d = 0, so that the next step is first order, as ComfyUI's).
/// @param[in] s the level step (s.from.σ > 0); @param[in] denoised D at s.from; @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] z the step's normals (kernels::no_noise where the step adds
/// none); @param[in] opt η ∈ [0, 1] (0: ComfyUI `sample_res_multistep`), S_noise ≥ 0;
/// @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step, options or sizes, or missing noise; std::domain_error when
///         the result is not finite.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void res_multistep_step(const level_step& s, std::span<const T> denoised, std::span<T> x, res_multistep_state<T>& state,
                        const Z& z, const ancestral_options& opt = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::res_multistep_step";
  detail::check_level_step(where, s);
  detail::check_eta_and_s_noise(where, opt.eta, opt.s_noise);
  if (!(s.to.sigma / s.to.alpha < s.from.sigma / s.from.alpha))
    detail::throw_invalid(where, "the step goes from sigma/alpha = " + detail::to_text(s.from.sigma / s.from.alpha) +
                                     " to " + detail::to_text(s.to.sigma / s.to.alpha) + "; it must decrease");
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_same_size(where, "state.previous_denoised", state.previous_denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const detail::level_split sp = detail::split_level_step(s, opt.eta, opt.s_noise);
  const bool lands = sp.sigma_down == 0.0;
  // λ_d − λ with λ_d = log(α'/σ_d): +∞ from α = 0 (the first step of a flow list at σ = 1).
  const double h = lands ? std::numeric_limits<double>::infinity()
                         : detail::lambda_difference({s.from, noise_level::general(s.to.alpha, sp.sigma_down)});
  const double E = lands ? 1.0 : -std::expm1(-h);
  const bool second = state.has_previous && !lands;
  // w = h²φ₂(−h)/h_prev: the weight of D − D_prev (0 when h_prev = ∞).
  const double w = second ? h * (h * detail::phi_functions(-h)[1]) / state.previous_h : 0.0;
  const T cx = static_cast<T>(sp.sigma_down / s.from.sigma), c0 = static_cast<T>(s.to.alpha * (E + w)),
          c1 = static_cast<T>(-s.to.alpha * w);
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (sp.noise > 0.0)
      detail::throw_invalid(where, "the step adds noise (eta = " + detail::to_text(opt.eta) + ", s_noise = " +
                                       detail::to_text(opt.s_noise) + ") but no noise was passed");
  } else {
    detail::check_noise_operand<T>(where, z, x.size());  // a noise operand passed must fit, used or not
  }
  const T cz = detail::coefficient<T>(where, "alpha_next * sigma_up * s_noise", sp.noise);
  auto with_noise = [cz](auto v, auto... zv) {
    using V = decltype(v);
    if constexpr (sizeof...(zv) == 1)
      return kernels::madd(V(cz), zv..., v);
    else
      return v;
  };
  const std::span<const T> xc(x);
  bool ok;
  if (second)
    ok = kernels::map(policy, z, kernels::outputs(x, state.previous_denoised),
                      kernels::inputs<T>(xc, denoised, std::span<const T>(state.previous_denoised)),
                      [=](auto xv, auto dv, auto pv, auto... zv) {
                        using V = decltype(xv);
                        const V det = kernels::madd(V(cx), xv, kernels::madd(V(c0), dv, V(c1) * pv));
                        return std::array<V, 2>{with_noise(det, zv...), dv};
                      });
  else  // the previous D is not read (its buffer may hold anything)
    ok = kernels::map(policy, z, kernels::outputs(x, state.previous_denoised), kernels::inputs<T>(xc, denoised),
                      [=](auto xv, auto dv, auto... zv) {
                        using V = decltype(xv);
                        return std::array<V, 2>{with_noise(kernels::madd(V(cx), xv, V(c0) * dv), zv...), dv};
                      });
  detail::require_finite_step(where, ok, "the RES multistep step");
  state.previous_h = h;
  state.has_previous = true;
}

/// @brief The deterministic RES multistep step (η = 0, ComfyUI `sample_res_multistep`): as the
/// noise-taking form with kernels::no_noise.
/// @param[in] s the level step; @param[in] denoised D at s.from; @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] policy threads.
/// @throws as the noise-taking form.
template <real_scalar T, execution_policy P = sequential_policy>
void res_multistep_step(const level_step& s, std::span<const T> denoised, std::span<T> x, res_multistep_state<T>& state,
                        const P& policy = P{}) {
  res_multistep_step<T>(s, denoised, x, state, kernels::no_noise{}, ancestral_options{.eta = 0.0}, policy);
}

namespace detail {
/// The loop of both RES samplers: one model call and one @ref res_multistep_step per step, the noise of
/// stream step i where the step adds noise.
template <bool Ancestral, class SigmaModel, real_scalar T, class Noise, class Context>
sample_result res_multistep_loop(std::string_view where, SigmaModel& D, std::span<T> x, std::size_t rows, Noise& noise,
                                 std::span<const double> sigmas, const karras_options& opt,
                                 const sampler_hooks<T, Context>& hooks) {
  check_karras_options(where, opt);
  sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, x, rows, noise, sigmas, opt.first_sample,
                                                    opt.draw_initial_noise, opt.check_finite, hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  res_multistep_state<T> state{loop.buffer(3)};
  const ancestral_options a{Ancestral ? opt.eta : 0.0, opt.s_noise};
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const level_step l = loop.step_levels(loop.sigma(i), i);
    if (split_level_step(l, a.eta, a.s_noise).noise > 0.0)
      res_multistep_step<T>(l, den, xs, state, loop.noise(i), a, loop.policy());
    else
      res_multistep_step<T>(l, den, xs, state, kernels::no_noise{}, a, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}
}  // namespace detail

/// @brief RES multistep sampling (ComfyUI `sample_res_multistep`): one model call and one deterministic
/// @ref res_multistep_step per step over the state's process; first order at the first step and to
/// σ = 0, second order overall (tests/test_sampler_res.cpp).
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source (initial draw only); @param[in] sigmas the σ list; @param[in] opt
/// options (first_sample, draw_initial_noise, check_finite; the churn, η and S_noise are not used);
/// @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result res_multistep_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                                   const karras_options& opt = {},
                                   const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::res_multistep_loop<false>("diffusion::res_multistep_sample", D, as_mutable_span(x), rows, noise, sigmas,
                                           opt, hooks);
}

/// @brief Ancestral RES multistep sampling (ComfyUI `sample_res_multistep_ancestral`): per step one
/// model call and one @ref res_multistep_step with η and S_noise (split in ς = σ/α) and the noise of
/// stream step i. Its terminal law on Gaussian data is the exact law of its linear-Gaussian chain
/// (tests/test_sampler_res.cpp).
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise;
/// the churn is not used); @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result res_multistep_ancestral_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                                             std::span<const double> sigmas, const karras_options& opt = {},
                                             const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::res_multistep_loop<true>("diffusion::res_multistep_ancestral_sample", D, as_mutable_span(x), rows, noise,
                                          sigmas, opt, hooks);
}

}  // namespace diffusion

/// @}
