/// @file
/// @brief The steps of distilled few-step models: Latent Consistency Models' multistep consistency
/// sampling (Luo et al. 2023, §4.2–4.3; Song et al. 2023, Algorithm 1) and Trajectory Consistency
/// Distillation's strategic stochastic sampling (Zheng et al. 2024, §4.3).
///
/// Both run over a list of training timesteps (@ref diffusion::consistency_timesteps "consistency_timesteps"),
/// evaluate the model once per step and move the state between the levels (α, σ) of its process
/// (process/parameterization.hpp); the state lives at the model's scale (a variance-preserving
/// x_t for the latent-diffusion models these are distilled from). The caller converts the model's
/// output to x̂₀ with the one conversion table (@ref diffusion::conversion_coefficients
/// "conversion_coefficients"), as for every other step.
#pragma once

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../process/parameterization.hpp"
#include "common.hpp"
#include "sigma_common.hpp"

/// @defgroup consistency_samplers Consistency samplers
/// @brief LCM and TCD steps for distilled models.
/// @{

namespace diffusion {

/// @brief The boundary-condition scalings of a consistency function
/// \f$f(x, t) = c_\text{skip}(t)\,x + c_\text{out}(t)\,\hat x_0(x, t)\f$ (Luo et al. 2023, Eq. 9).
struct consistency_boundary {
  double c_skip;  ///< The weight of the state x, 1 at t = 0.
  double c_out;   ///< The weight of the model's x̂₀, 0 at t = 0.
};

/// @brief Latent Consistency Models' scalings at a training timestep t, as the LCM reference
/// implementation (and diffusers' LCMScheduler) forms them with \f$\tau = t\cdot\text{timestep\_scaling}\f$:
/// \f$c_\text{skip} = \frac{\sigma_d^2}{\tau^2 + \sigma_d^2}\f$, \f$c_\text{out} = \frac{\tau}{\sqrt{\tau^2 + \sigma_d^2}}\f$
/// (consistency models, Song et al. 2023 Appendix C, with t − ε replaced by τ and without the
/// factor σ_d in c_out). They satisfy the boundary condition f(x, 0) = x; at the scaling 10 and
/// t ≥ 100, \f$c_\text{skip} < 2.6\cdot10^{-7}\f$, so f is x̂₀ to that accuracy.
/// @param[in] timestep t ≥ 0 (finite); @param[in] sigma_data σ_d > 0 (0.5);
/// @param[in] timestep_scaling > 0 (diffusers' `timestep_scaling`, 10).
/// @throws std::invalid_argument for a value outside those ranges or τ not finite.
inline consistency_boundary lcm_boundary(double timestep, double sigma_data = 0.5, double timestep_scaling = 10.0) {
  constexpr std::string_view where = "diffusion::lcm_boundary";
  if (!(timestep >= 0.0 && std::isfinite(timestep)))
    detail::throw_invalid(where, "timestep = " + detail::to_text(timestep) + " is outside the allowed range [0, inf)");
  detail::check_positive(where, "sigma_data", sigma_data);
  detail::check_positive(where, "timestep_scaling", timestep_scaling);
  const double tau = timestep * timestep_scaling;
  if (!std::isfinite(tau))
    detail::throw_invalid(where, "timestep * timestep_scaling = " + detail::to_text(timestep) + " * " +
                                     detail::to_text(timestep_scaling) + " overflows");
  const double r = std::hypot(tau, sigma_data);  // √(τ² + σ_d²), no overflow
  const double q = sigma_data / r;
  return {q * q, tau / r};
}

/// @brief One step of multistep consistency sampling (Song et al. 2023, Algorithm 1; Luo et al.
/// 2023, Algorithm 3): the consistency function \f$f = c_\text{skip}x + c_\text{out}\hat x_0\f$ at the
/// model's level, then the forward process to the next level,
/// \f$x' = \alpha' f + \sigma' z\f$. At the last step pass the data level
/// (`noise_level::preserving(0.0)`): x' = f and no noise is read.
/// One pass when `denoised` is empty; two when f is also written there.
/// @param[in] c the scalings at the step's timestep (@ref lcm_boundary);
/// @param[in] to the level (α', σ') of the next timestep;
/// @param[in] x0_pred x̂₀ from the model's output at the current level (after any clipping);
/// @param[in,out] x the state; @param[in] z normals (a buffer of x.size(), a Philox stream, or
/// kernels::no_noise where σ' = 0); @param[out] denoised optional f (diffusers' `denoised`), x.size();
/// @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for non-finite scalings, sizes, partial overlaps, or σ' > 0 without noise;
///         std::domain_error when the result overflows T.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void lcm_step(consistency_boundary c, noise_level to, std::span<const T> x0_pred, std::span<T> x, const Z& z,
              std::span<T> denoised = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::lcm_step";
  if (!(std::isfinite(c.c_skip) && std::isfinite(c.c_out)))
    detail::throw_invalid(where, "the scalings c_skip = " + detail::to_text(c.c_skip) + ", c_out = " +
                                     detail::to_text(c.c_out) + " must be finite");
  detail::check_same_size(where, "x0_pred", x0_pred.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "x0_pred", x0_pred, "x", x);
  const bool noisy = to.sigma > 0.0;
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (noisy)
      detail::throw_invalid(where, "the step adds noise (the next level has sigma = " + detail::to_text(to.sigma) +
                                       ") but no noise was passed");
  } else {
    detail::check_noise_operand<T>(where, z, x.size());
  }
  const T cs = detail::coefficient<T>(where, "c_skip", c.c_skip), co = detail::coefficient<T>(where, "c_out", c.c_out);
  bool ok = true;
  if (!denoised.empty()) {
    detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
    detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
    detail::check_no_partial_overlap(where, "denoised", denoised, "x0_pred", x0_pred);
    ok = kernels::affine2(cs, std::span<const T>(x), co, x0_pred, denoised, policy);
    detail::require_finite_step(where, ok, "the consistency function");
    const T a = detail::coefficient<T>(where, "alpha of the next level", to.alpha);
    if (noisy) {
      if constexpr (!std::is_same_v<Z, kernels::no_noise>)
        ok = kernels::affine_noise(a, std::span<const T>(denoised), detail::coefficient<T>(where, "sigma of the next level", to.sigma),
                                   z, x, policy);
    } else {
      ok = kernels::scale(a, std::span<const T>(denoised), x, policy);
    }
  } else {
    // x' = α' c_skip x + α' c_out x̂₀ + σ' z, in one pass.
    const T a = detail::coefficient<T>(where, "alpha * c_skip", to.alpha * c.c_skip);
    const T b = detail::coefficient<T>(where, "alpha * c_out", to.alpha * c.c_out);
    if (noisy) {
      if constexpr (!std::is_same_v<Z, kernels::no_noise>)
        ok = kernels::affine2_noise(a, std::span<const T>(x), b, x0_pred,
                                    detail::coefficient<T>(where, "sigma of the next level", to.sigma), z, x, policy);
    } else {
      ok = kernels::affine2(a, std::span<const T>(x), b, x0_pred, x, policy);
    }
  }
  detail::require_finite_step(where, ok, "the consistency step");
}

/// @brief TCD's intermediate timestep \f$s = \lfloor(1 - \gamma)\,t'\rfloor\f$ (Zheng et al. 2024, §4.3,
/// "strategic stochastic sampling"; γ is diffusers' `eta`), formed in float64 as diffusers forms it.
/// γ = 0 gives s = t' (deterministic, DDIM-like); γ = 1 gives s = 0 (a consistency model's full renoising).
/// @param[in] next_timestep t', the next timestep of the list (0 after the last);
/// @param[in] gamma γ ∈ [0, 1].
/// @throws std::invalid_argument for γ outside [0, 1].
inline std::size_t tcd_intermediate_timestep(std::size_t next_timestep, double gamma) {
  if (!(gamma >= 0.0 && gamma <= 1.0))
    detail::throw_invalid("diffusion::tcd_intermediate_timestep",
                          "gamma = " + detail::to_text(gamma) + " is outside the allowed range [0, 1]");
  // (1 − γ)t' ≤ t' and ≥ 0: the conversion back is exact for t' < 2^53 and never exceeds t'.
  const double s = std::floor((1.0 - gamma) * static_cast<double>(next_timestep));
  const auto v = static_cast<std::size_t>(s);
  return v > next_timestep ? next_timestep : v;
}

/// @brief One step of TCD's strategic stochastic sampling (Zheng et al. 2024, §4.3 and Algorithm 4):
/// the deterministic flow from the model's level (α, σ) to the intermediate level (α_s, σ_s)
/// of \f$s = \lfloor(1-\gamma)t'\rfloor\f$,
/// \f$x_s = \alpha_s\hat x_0 + \sigma_s\hat\varepsilon = \frac{\sigma_s}{\sigma}x + \left(\alpha_s - \alpha\frac{\sigma_s}{\sigma}\right)\hat x_0\f$,
/// then the forward process from s to the next level (α', σ'),
/// \f$x' = \frac{\alpha'}{\alpha_s}x_s + \sqrt{\sigma'^2 - (\alpha'\sigma_s/\alpha_s)^2}\,z\f$.
/// With s = t' (γ = 0, or the last step, where diffusers takes x' = x_s) no noise is read.
/// One pass, x' = A x + B x̂₀ + C z, when `noised` is empty; two when x_s is also written there.
/// @param[in] s from: the model's level (σ > 0); to: the next level (α', σ');
/// @param[in] mid the intermediate level (α_s > 0), no noisier than `to`: \f$\alpha'\sigma_s/\alpha_s \le \sigma'\f$;
/// @param[in] x0_pred x̂₀ at s.from; @param[in,out] x the state; @param[in] z normals (or
/// kernels::no_noise when no noise is added); @param[out] noised optional x_s (diffusers'
/// `pred_noised_sample`); @param[in] policy threads.
/// @throws std::invalid_argument for a bad level step, a `mid` noisier than `to`, sizes, partial
///         overlaps, or noise needed and not passed; std::domain_error when the result overflows T.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void tcd_step(const level_step& s, noise_level mid, std::span<const T> x0_pred, std::span<T> x, const Z& z,
              std::span<T> noised = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::tcd_step";
  detail::check_level_step(where, s);
  if (!(mid.alpha > 0.0))
    detail::throw_invalid(where, "the intermediate level has alpha = " + detail::to_text(mid.alpha) + "; it must be > 0");
  detail::check_same_size(where, "x0_pred", x0_pred.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "x0_pred", x0_pred, "x", x);
  const double r = mid.sigma / s.from.sigma;              // σ_s/σ
  const double b_mid = mid.alpha - s.from.alpha * r;      // x_s = r x + b_mid x̂₀
  const double scale = s.to.alpha / mid.alpha;            // α'/α_s
  const double kept = scale * mid.sigma;                  // the noise x_s carries to the next level
  if (!(kept <= s.to.sigma))
    detail::throw_invalid(where, "the intermediate level (sigma = " + detail::to_text(mid.sigma) +
                                     ") is noisier than the next level (sigma = " + detail::to_text(s.to.sigma) +
                                     " < " + detail::to_text(kept) + " after rescaling)");
  const double added = std::sqrt((s.to.sigma - kept) * (s.to.sigma + kept));
  const bool noisy = added > 0.0;
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (noisy)
      detail::throw_invalid(where, "the step adds noise (sigma' = " + detail::to_text(s.to.sigma) +
                                       " above the intermediate level's " + detail::to_text(kept) + ") but no noise was passed");
  } else {
    detail::check_noise_operand<T>(where, z, x.size());
  }
  bool ok = true;
  if (!noised.empty()) {
    detail::check_same_size(where, "noised", noised.size(), "x", x.size());
    detail::check_no_partial_overlap(where, "noised", noised, "x", x);
    detail::check_no_partial_overlap(where, "noised", noised, "x0_pred", x0_pred);
    ok = kernels::affine2(detail::coefficient<T>(where, "sigma_s / sigma", r), std::span<const T>(x),
                          detail::coefficient<T>(where, "alpha_s - alpha sigma_s / sigma", b_mid), x0_pred, noised, policy);
    detail::require_finite_step(where, ok, "the flow to the intermediate level");
    const T a = detail::coefficient<T>(where, "alpha' / alpha_s", scale);
    if (noisy) {
      if constexpr (!std::is_same_v<Z, kernels::no_noise>)
        ok = kernels::affine_noise(a, std::span<const T>(noised), detail::coefficient<T>(where, "the added noise's scale", added), z,
                                   x, policy);
    } else {
      ok = kernels::scale(a, std::span<const T>(noised), x, policy);
    }
  } else {
    const T A = detail::coefficient<T>(where, "the coefficient of x", scale * r);
    const T B = detail::coefficient<T>(where, "the coefficient of x0_pred", scale * b_mid);
    if (noisy) {
      if constexpr (!std::is_same_v<Z, kernels::no_noise>)
        ok = kernels::affine2_noise(A, std::span<const T>(x), B, x0_pred,
                                    detail::coefficient<T>(where, "the added noise's scale", added), z, x, policy);
    } else {
      ok = kernels::affine2(A, std::span<const T>(x), B, x0_pred, x, policy);
    }
  }
  detail::require_finite_step(where, ok, "the TCD step");
}

}  // namespace diffusion

/// @}
