/// @file
/// @brief The deterministic σ-space solvers of the probability-flow ODE: Euler (Karras et al. 2022,
/// Algorithm 2 with its "churn"), Heun (Algorithm 2) and DPM-Solver++(2M) (Lu et al. 2022), each as a
/// step function you call from your own loop (with its explicit state where it has one) and as a
/// loop over a σ list.
///
/// The step functions take the denoiser's output D(x; σ) (from your model through
/// @ref diffusion::sigma_space_model, or any σ-space model) and update x in place:
/// @code
/// diffusion::dpmpp_2m_state<float> state(history);     // caller-owned history buffer
/// for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
///   D(x, sigmas[i], denoised);                         // your model call
///   diffusion::dpmpp_2m_step<float>({sigmas[i], sigmas[i + 1]}, denoised, x, state);
/// }
/// @endcode
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
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

// ---------------------------------------------------------------------------------------
// Euler
// ---------------------------------------------------------------------------------------

/// @brief One Euler step of the probability-flow ODE between two levels of the state's process
/// (DDIM with η = 0, Song et al. 2021 Eq. 12, in any scale):
/// \f$x' = \frac{\sigma'}{\sigma}\,x + \left(\alpha' - \alpha\frac{\sigma'}{\sigma}\right)D\f$, D = x̂₀ from the model at (α, σ).
/// In σ-space (α = α' = 1) this is Karras' \f$x + (\sigma' - \sigma)(x - D)/\sigma\f$; for rectified flow
/// (α = 1 − σ) it is \f$x + (\sigma' - \sigma)\,u\f$ with u = (x − D)/σ, diffusers' FlowMatchEuler step.
///
/// Evaluated as kernels::affine2 with the two coefficients rounded to T: error \f$\le 2u(|r x| + |c D|)\f$
/// beyond the rounding of the coefficients.
/// @param[in] s the level step; @param[in] denoised D (x̂₀) at s.from; @param[in,out] x the state;
/// @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step or sizes, or partially overlapping arrays;
///         std::domain_error when the result overflows T.
///
/// T may be a 16-bit storage type (@ref diffusion::float16, @ref diffusion::bfloat16): the step is
/// then computed in float and rounded once to T on store (docs/conventions.md).
template <storage_scalar T, execution_policy P = sequential_policy>
void euler_step(const level_step& s, std::span<const T> denoised, std::span<T> x, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::euler_step";
  detail::check_level_step(where, s);
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const double r = s.to.sigma / s.from.sigma;
  const double c = s.to.alpha - s.from.alpha * r;
  using C = compute_t<T>;
  detail::require_finite_step(
      where, kernels::affine2(static_cast<C>(r), std::span<const T>(x), static_cast<C>(c), denoised, x, policy),
      "the Euler step");
}

/// @brief One Euler step of the probability-flow ODE: \f$x' = x + (\sigma_{next} - \sigma)\frac{x - D}{\sigma}
/// = r\,x + (1 - r)\,D\f$, \f$r = \sigma_{next}/\sigma\f$ (Karras Algorithm 2, line 8; DDIM in σ-space).
///
/// Evaluated as kernels::affine2 with r and 1 − r rounded to T: error \f$\le 2u(|r x| + |(1-r)D|)\f$
/// beyond the rounding of the coefficients.
/// @param[in] s the step (σ > 0, σ_next ≥ 0); @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step or sizes, or partially overlapping arrays;
///         std::domain_error when the result overflows T (T: float, double, or a 16-bit storage type).
template <storage_scalar T, execution_policy P = sequential_policy>
void euler_step(sigma_step s, std::span<const T> denoised, std::span<T> x, const P& policy = P{}) {
  detail::check_sigma_step("diffusion::euler_step", s);
  euler_step<T>(as_level_step(s), denoised, x, policy);
}

/// @brief The pre-0.2 form of @ref diffusion::euler_step "euler_step": from x at σ to `out` at σ_to.
/// @param[in] x state at σ; @param[in] denoised D(x; σ); @param[in] sigma σ > 0; @param[in] sigma_to target σ ≥ 0;
/// @param[out] out may alias x or denoised; @param[in] policy threads (bit-identical for any count).
template <real_scalar T, execution_policy P = sequential_policy>
void euler_step(std::span<const T> x, std::span<const T> denoised, double sigma, double sigma_to, std::span<T> out,
                const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::euler_step";
  detail::check_sigma_step(where, {sigma, sigma_to});
  detail::check_same_size(where, "x", x.size(), "out", out.size());
  detail::check_same_size(where, "denoised", denoised.size(), "out", out.size());
  detail::check_no_partial_overlap(where, "x", x, "out", out);
  detail::check_no_partial_overlap(where, "denoised", denoised, "out", out);
  const double r = sigma_to / sigma;
  detail::require_finite_step(where, kernels::affine2(static_cast<T>(r), x, static_cast<T>(1.0 - r), denoised, out, policy),
                              "the Euler step");
}

/// @brief Adds Karras' churn (Algorithm 2, lines 5–6): \f$x \leftarrow x + \sqrt{\hat\sigma^2 - \sigma^2}\,S_\text{noise}\,z\f$,
/// moving x from σ to \f$\hat\sigma\f$ ≥ σ (@ref churned_sigma).
/// @param[in] sigma σ; @param[in] sigma_hat \f$\hat\sigma\f$ ≥ σ; @param[in] s_noise S_noise ≥ 0;
/// @param[in,out] x the state; @param[in] z the normals (buffer, kernels::philox_stream); @param[in] policy threads.
/// @throws std::invalid_argument unless 0 < σ ≤ σ̂ (finite); std::domain_error on overflow.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void churn_step(double sigma, double sigma_hat, double s_noise, std::span<T> x, const Z& z, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::churn_step";
  if (!(sigma > 0.0 && sigma <= sigma_hat && std::isfinite(sigma_hat)))
    detail::throw_invalid(where, "sigma = " + detail::to_text(sigma) + " and sigma_hat = " + detail::to_text(sigma_hat) +
                                     " must satisfy 0 < sigma <= sigma_hat < inf");
  const T c = detail::coefficient<T>(where, "the churn's noise scale",
                                     std::sqrt((sigma_hat - sigma) * (sigma_hat + sigma)) * s_noise);
  detail::require_finite_step(where, kernels::add_noise(c, std::span<const T>(x), z, x, policy), "the churn");
}

/// @brief Moves a state to a noisier level of its process by adding fresh noise: from (α, σ) to
/// (α', σ') with \f$\alpha'\sigma/\alpha \le \sigma'\f$,
/// \f$x' = \frac{\alpha'}{\alpha}x + S_\text{noise}\sqrt{\sigma'^2 - (\alpha'\sigma/\alpha)^2}\,z\f$, so that
/// \f$x = \alpha x_0 + \sigma\varepsilon\f$ becomes \f$\alpha' x_0 + \sigma'\varepsilon'\f$ in law (S_noise = 1). In σ-space it
/// is @ref churn_step; for rectified flow it is the renoising of ComfyUI's `*_RF` samplers.
/// @param[in] s from (α > 0) and to; @param[in] s_noise S_noise ≥ 0; @param[in,out] x the state;
/// @param[in] z the normals; @param[in] policy threads.
/// @throws std::invalid_argument unless the target is at least as noisy (α'σ/α ≤ σ'); std::domain_error on overflow.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void renoise_step(const level_step& s, double s_noise, std::span<T> x, const Z& z, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::renoise_step";
  if (!(s.from.alpha > 0.0))
    detail::throw_invalid(where, "the state's level has alpha = " + detail::to_text(s.from.alpha) + "; it must be > 0");
  const double scale = s.to.alpha / s.from.alpha, kept = scale * s.from.sigma;
  if (!(kept <= s.to.sigma && std::isfinite(s.to.sigma)))
    detail::throw_invalid(where, "the target level (sigma = " + detail::to_text(s.to.sigma) +
                                     ") is less noisy than the state (" + detail::to_text(kept) + " after rescaling)");
  const T c = detail::coefficient<T>(where, "the added noise's scale",
                                     std::sqrt((s.to.sigma - kept) * (s.to.sigma + kept)) * s_noise);
  detail::require_finite_step(
      where, kernels::affine_noise(static_cast<T>(scale), std::span<const T>(x), c, z, x, policy), "the renoising");
}

// ---------------------------------------------------------------------------------------
// Heun
// ---------------------------------------------------------------------------------------

/// @brief The buffers Heun's method carries between its two stages: the slope
/// \f$d = (x - D(x;\sigma))/\sigma\f$ and the Euler point \f$x + (\sigma_{next} - \sigma)\,d\f$ where the model is evaluated
/// next. Caller-owned, of the state's size (no allocation).
template <real_scalar T>
struct heun_state {
  std::span<T> derivative;  ///< d at σ (written by @ref heun_predict).
  std::span<T> x_eval;      ///< The Euler point (written by @ref heun_predict): evaluate D there at σ_next.
};

/// @brief Heun's first stage (Karras Algorithm 2, lines 7–8): from D(x; σ), \f$d = (x - D)/\sigma\f$ and the
/// Euler point \f$x_2 = x + (\sigma_{next} - \sigma)\,d\f$ into the state; x is not changed.
/// @param[in] s the step; @param[in] denoised D(x; σ); @param[in] x the state at σ;
/// @param[out] state the slope and the Euler point; @param[in] policy threads.
/// @return true when @ref heun_correct must follow (σ_next > 0); false at σ_next = 0, where nothing is
///         written and the step is @ref euler_step (Karras skips the correction there).
/// @throws std::invalid_argument for a bad step or sizes; std::domain_error on overflow.
template <real_scalar T, execution_policy P = sequential_policy>
bool heun_predict(sigma_step s, std::span<const T> denoised, std::span<const T> x, const heun_state<T>& state,
                  const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::heun_predict";
  detail::check_sigma_step(where, s);
  if (s.sigma_next == 0.0) return false;
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_same_size(where, "state.derivative", state.derivative.size(), "x", x.size());
  detail::check_same_size(where, "state.x_eval", state.x_eval.size(), "x", x.size());
  const T inv = static_cast<T>(1.0 / s.sigma), dt = static_cast<T>(s.sigma_next - s.sigma);
  const bool ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(state.derivative, state.x_eval),
                               kernels::inputs<T>(x, denoised), [inv, dt](auto xv, auto dv) {
                                 using V = decltype(xv);
                                 const V d = (xv - dv) * V(inv);
                                 return std::array<V, 2>{d, kernels::madd(V(dt), d, xv)};
                               });
  detail::require_finite_step(where, ok, "Heun's Euler stage");
  return true;
}

/// @brief Heun's second stage (Karras Algorithm 2, lines 9–11): from D(x₂; σ_next) at the Euler point,
/// \f$x' = x + (\sigma_{next} - \sigma)\,\tfrac12(d + d_2)\f$, \f$d_2 = (x_2 - D_2)/\sigma_{next}\f$ (second order: the
/// trapezoidal rule).
/// @param[in] s the step (σ_next > 0); @param[in] denoised D(x₂; σ_next); @param[in] x the step's start (at σ);
/// @param[in] state from @ref heun_predict; @param[out] out the result (may alias x); @param[in] policy threads.
/// @throws std::invalid_argument for a bad step (σ_next = 0) or sizes; std::domain_error on overflow.
template <real_scalar T, execution_policy P = sequential_policy>
void heun_correct(sigma_step s, std::span<const T> denoised, std::span<const T> x, const heun_state<T>& state,
                  std::span<T> out, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::heun_correct";
  detail::check_sigma_step(where, s);
  if (!(s.sigma_next > 0.0)) detail::throw_invalid(where, "sigma_next = 0: Heun's last step has no second stage");
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_same_size(where, "out", out.size(), "x", x.size());
  detail::check_same_size(where, "state.derivative", state.derivative.size(), "x", x.size());
  detail::check_same_size(where, "state.x_eval", state.x_eval.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "x", x, "out", out);
  // x' = x + (s_next − s)(d + d2)/2, d2 = (x2 − D2)/s_next; d + d2 is a multiply-add.
  const T inv2 = static_cast<T>(1.0 / s.sigma_next), half_dt = static_cast<T>(0.5 * (s.sigma_next - s.sigma));
  const bool ok = kernels::map(
      policy, kernels::no_noise{}, kernels::outputs(out),
      kernels::inputs<T>(x, denoised, std::span<const T>(state.x_eval), std::span<const T>(state.derivative)),
      [inv2, half_dt](auto xv, auto d2v, auto x2, auto d) {
        using V = decltype(xv);
        const V sum = kernels::madd(x2 - d2v, V(inv2), d);
        return kernels::madd(V(half_dt), sum, xv);
      });
  detail::require_finite_step(where, ok, "Heun's correction");
}

// ---------------------------------------------------------------------------------------
// DPM-Solver++(2M)
// ---------------------------------------------------------------------------------------

/// @brief The history of DPM-Solver++(2M): the previous step's denoised output and its log-σ step
/// h. Caller-owned buffer (no allocation); `has_previous` false at the start (first order). T may be a
/// 16-bit storage type (the history is then stored in it, rounded once per step).
template <storage_scalar T>
struct dpmpp_2m_state {
  std::span<T> previous_denoised;  ///< D of the previous step (written by @ref dpmpp_2m_step).
  double previous_h = 0.0;         ///< h of the previous step.
  bool has_previous = false;       ///< False before the first step: the step is then first order.
};

/// @brief One DPM-Solver++(2M) step (Lu et al. 2022, Algorithm 2, in k-diffusion's σ form with
/// λ = −log σ, h = log σ − log σ_next):
/// \f$x' = \frac{\sigma_{next}}{\sigma}x - \operatorname{expm1}(-h)\,\hat D\f$,
/// \f$\hat D = (1 + \frac1{2r})D - \frac1{2r}D_\text{prev}\f$, \f$r = h_\text{prev}/h\f$; first order (\f$\hat D = D\f$) at
/// the first step and when σ_next = 0 (k-diffusion's convention). Updates the history.
/// @param[in] s the step; @param[in] denoised D(x; σ); @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] policy threads.
/// @throws std::invalid_argument for a bad step or sizes; std::domain_error on overflow.
template <storage_scalar T, execution_policy P = sequential_policy>
void dpmpp_2m_step(sigma_step s, std::span<const T> denoised, std::span<T> x, dpmpp_2m_state<T>& state,
                   const P& policy = P{}) {
  detail::check_sigma_step("diffusion::dpmpp_2m_step", s);
  dpmpp_2m_step<T>(as_level_step(s), denoised, x, state, false, policy);
}

namespace detail {
/// The DPM-Solver++(2M) update, deterministic (η = 0, `z` = no_noise) or the 2M SDE (η > 0):
/// with λ = log(α/σ), h = λ' − λ, \f$h_\eta = (1 + \eta)h\f$, \f$E = -\operatorname{expm1}(-h_\eta)\f$,
/// x' = (σ'/σ)e^{−ηh} x + α' E D̂ + σ' √(−expm1(−2ηh)) s_noise z, D̂ as @ref dpm_solver_type
/// (D itself at first order). One pass; writes D into the history. Validates everything.
template <storage_scalar T, class Z, execution_policy P>
void dpmpp_2m_update(std::string_view where, const level_step& s, std::span<const T> denoised, std::span<T> x,
                     dpmpp_2m_state<T>& state, const Z& z, double eta, double s_noise, dpm_solver_type solver,
                     bool first_order, const P& policy) {
  check_level_step(where, s);
  check_eta_and_s_noise(where, eta, s_noise);
  if (!(solver == dpm_solver_type::midpoint || solver == dpm_solver_type::heun))
    throw_invalid(where, "solver_type = " + to_text(static_cast<int>(solver)) + " is not midpoint or heun");
  check_same_size(where, "denoised", denoised.size(), "x", x.size());
  check_same_size(where, "state.previous_denoised", state.previous_denoised.size(), "x", x.size());
  check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const bool lands_on_data = s.to.sigma == 0.0;
  const double ratio = s.to.sigma / s.from.sigma;
  const double h = lands_on_data ? 0.0 : lambda_difference(s);  // λ' − λ
  const double h_eta = eta == 0.0 ? h : h * (1.0 + eta);
  const double em = lands_on_data ? -1.0 : std::expm1(-h_eta);  // −E
  // e^{−ηh} is 1 at η = 0 (also where h = ∞, the start of a flow at σ = 1).
  const double cx_d = eta == 0.0 || lands_on_data ? ratio : ratio * std::exp(-eta * h);
  const double noise_scale = eta == 0.0 || lands_on_data ? 0.0 : s.to.sigma * std::sqrt(-std::expm1(-2.0 * eta * h)) * s_noise;
  using C = compute_t<T>;  // the arithmetic type (float for 16-bit storage)
  const C cx = static_cast<C>(cx_d), cd = static_cast<C>(-(s.to.alpha * em));
  const bool second = state.has_previous && !lands_on_data && !first_order;
  // D̂ = a D + b D_prev, a = 1 + w, b = −w.
  double w = 0.0;
  if (second) {
    const double r = state.previous_h / h;
    w = solver == dpm_solver_type::midpoint ? 1.0 / (2.0 * r) : (1.0 / (-em) - 1.0 / h_eta) / r;
  }
  const C a = static_cast<C>(1.0 + w), b = static_cast<C>(-w);
  bool ok = true;
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (noise_scale > 0.0)
      throw_invalid(where, "the step adds noise (eta = " + to_text(eta) + ", s_noise = " + to_text(s_noise) +
                               ", sigma_next = " + to_text(s.to.sigma) + ") but no noise was passed");
    if (!second) {
      ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.previous_denoised),
                        kernels::inputs<T>(std::span<const T>(x), denoised), [cx, cd](auto xv, auto dv) {
                          using V = decltype(xv);
                          return std::array<V, 2>{kernels::madd(V(cx), xv, V(cd) * dv), dv};
                        });
    } else {
      // x <- cx x + cd (a D + b D_prev), and D_prev <- D, in one pass.
      ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.previous_denoised),
                        kernels::inputs<T>(std::span<const T>(x), denoised, std::span<const T>(state.previous_denoised)),
                        [cx, cd, a, b](auto xv, auto dv, auto pv) {
                          using V = decltype(xv);
                          const V dh = kernels::madd(V(a), dv, V(b) * pv);
                          return std::array<V, 2>{kernels::madd(V(cx), xv, V(cd) * dh), dv};
                        });
    }
  } else {
    check_noise_operand<T>(where, z, x.size());  // a noise operand passed must fit, used or not
    const C cz = coefficient<C>(where, "sigma_next * sqrt(1 - exp(-2 eta h)) * s_noise", noise_scale);
    // x <- cx x + cd (a D + b D_prev) + cz z, and D_prev <- D, in one pass (noise in registers).
    ok = kernels::map(policy, z, kernels::outputs(x, state.previous_denoised),
                      kernels::inputs<T>(std::span<const T>(x), denoised, std::span<const T>(state.previous_denoised)),
                      [cx, cd, a, b, cz](auto xv, auto dv, auto pv, auto zv) {
                        using V = decltype(xv);
                        const V dh = kernels::madd(V(a), dv, V(b) * pv);
                        return std::array<V, 2>{kernels::madd(V(cz), zv, kernels::madd(V(cx), xv, V(cd) * dh)), dv};
                      });
  }
  require_finite_step(where, ok, eta == 0.0 ? "the DPM-Solver++(2M) step" : "the DPM-Solver++(2M) SDE step");
  if (!lands_on_data) state.previous_h = h;
  state.has_previous = true;
}
}  // namespace detail

/// @brief One DPM-Solver++(2M) step between two levels of the state's process (Lu et al. 2022, Eq. 9 and
/// Algorithm 2, the data-prediction form, as diffusers' DPMSolverMultistepScheduler writes it in VP
/// scale): with λ = log(α/σ), h = λ' − λ,
/// \f$x' = \frac{\sigma'}{\sigma}x - \alpha'\operatorname{expm1}(-h)\,\hat D\f$, \f$\hat D = (1 + \frac1{2r})D - \frac1{2r}D_\text{prev}\f$,
/// \f$r = h_\text{prev}/h\f$. First order (\f$\hat D = D\f$) at the first step, when σ' = 0, and when
/// `first_order` is set (diffusers' `lower_order_final` / `euler_at_final`). In σ-space it is the
/// @ref sigma_step form bit for bit. The `heun` correction and the SDE form are
/// @ref diffusion::dpmpp_2m_sde_step "dpmpp_2m_sde_step" (η = 0 there is this step).
/// @param[in] s the level step; @param[in] denoised D at s.from; @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] first_order take a first-order step;
/// @param[in] policy threads.
/// @throws std::invalid_argument for a bad step or sizes; std::domain_error on overflow.
/// T may be a 16-bit storage type (x, D and the history in it; computed in float, rounded once on store).
template <storage_scalar T, execution_policy P = sequential_policy>
void dpmpp_2m_step(const level_step& s, std::span<const T> denoised, std::span<T> x, dpmpp_2m_state<T>& state,
                   bool first_order = false, const P& policy = P{}) {
  detail::dpmpp_2m_update<T>("diffusion::dpmpp_2m_step", s, denoised, x, state, kernels::no_noise{}, 0.0, 1.0,
                             dpm_solver_type::midpoint, first_order, policy);
}

// ---------------------------------------------------------------------------------------
// Linear multistep (LMS)
// ---------------------------------------------------------------------------------------

/// @brief The coefficients of the linear multistep method in σ (k-diffusion `linear_multistep_coeff`,
/// diffusers LMSDiscreteScheduler `get_lms_coefficient`): with nodes σ_0 (the current level),
/// σ_1, …, σ_{k−1} (the previous ones, in that order) and the Lagrange basis \f$\ell_j\f$ on them,
/// \f[ c_j = \int_{\sigma_0}^{\sigma_{next}} \ell_j(\tau)\,d\tau,\qquad
///     \ell_j(\tau) = \prod_{m \ne j}\frac{\tau - \sigma_m}{\sigma_j - \sigma_m}, \f]
/// so that \f$x' = x + \sum_j c_j d_j\f$ integrates the interpolating polynomial of the slopes
/// \f$d_j = (x_j - D_j)/\sigma_j\f$ (Adams–Bashforth on a variable grid). Computed exactly (to
/// rounding) by two-point Gauss–Legendre quadrature, which integrates the cubic \f$\ell_j\f$ exactly;
/// the references integrate numerically (`scipy.integrate.quad`, epsrel 1e-4).
/// @param[in] nodes k = 1 … 4 distinct finite levels, the current first; @param[in] sigma_next the level the step ends at.
/// @return c_0 … c_{k−1} (the rest 0).
/// @throws std::invalid_argument for k outside [1, 4], a repeated or non-finite node.
inline std::array<double, 4> lms_coefficients(std::span<const double> nodes, double sigma_next) {
  constexpr std::string_view where = "diffusion::lms_coefficients";
  const std::size_t k = nodes.size();
  if (k < 1 || k > 4) detail::throw_invalid(where, "the order " + detail::to_text(k) + " is outside the allowed range [1, 4]");
  if (!std::isfinite(sigma_next)) detail::throw_invalid(where, "sigma_next = " + detail::to_text(sigma_next) + " must be finite");
  for (std::size_t j = 0; j < k; ++j) {
    if (!std::isfinite(nodes[j])) detail::throw_invalid(where, "nodes[" + detail::to_text(j) + "] = " + detail::to_text(nodes[j]) + " must be finite");
    for (std::size_t m = 0; m < j; ++m)
      if (nodes[m] == nodes[j])
        detail::throw_invalid(where, "nodes[" + detail::to_text(m) + "] and nodes[" + detail::to_text(j) + "] are both " +
                                         detail::to_text(nodes[j]) + "; the levels must be distinct");
  }
  // Gauss–Legendre, 2 points on [a, b]: (b − a)/2 · (f(m − h/√3) + f(m + h/√3)), m = (a + b)/2, h = (b − a)/2.
  const double a = nodes[0], half = 0.5 * (sigma_next - a), mid = a + half, off = half / std::numbers::sqrt3;
  std::array<double, 4> c{};
  for (std::size_t j = 0; j < k; ++j) {
    double lo = 1.0, hi = 1.0;
    for (std::size_t m = 0; m < k; ++m) {
      if (m == j) continue;
      const double den = nodes[j] - nodes[m];
      lo *= ((mid - off) - nodes[m]) / den;
      hi *= ((mid + off) - nodes[m]) / den;
    }
    c[j] = half * (lo + hi);
  }
  return c;
}

/// @brief The history of the linear multistep method: up to four slopes d = (x − D)/σ of the latest
/// steps, newest first, in caller-owned buffers (no allocation), and their levels.
template <real_scalar T>
struct lms_state {
  std::array<std::span<T>, 4> slopes{};  ///< Buffers of x.size() each; the first `order` are used.
  std::array<double, 4> sigmas{};        ///< σ of each stored slope, newest first.
  std::size_t count = 0;                 ///< Slopes stored (0 at the start).
};

namespace detail {
/// How the multistep methods on the σ-space slope d = (x − D)/σ end a step (@ref lms_step, @ref ipndm_step).
enum class slope_final_step {
  integrate,  ///< x' = x + Σ c_j d_j at every step (LMS: the step to σ' = 0 is integrated too).
  denoised,   ///< x' = D exactly where σ' = 0 (iPNDM, as ComfyUI's "denoising step").
};

/// The step of a linear multistep method on the slopes d = (x − D)/σ, shared by @ref lms_step and
/// @ref ipndm_step: validates, rotates the history (the oldest slot becomes slot 0), and in one pass writes
/// d₀ into slot 0 and \f$x' = x + \sum_{j<k} c_j d_j\f$ with k = min(stored + 1, order) and
/// c = coefficients(newest-first σ's of the k slopes, σ', k) (at σ' = 0 with `slope_final_step::denoised`,
/// x' = D instead). Coefficients is `std::array<double, 4>(std::span<const double>, double, std::size_t)`.
template <real_scalar T, class Coefficients, execution_policy P>
void slope_multistep_update(std::string_view where, sigma_step s, std::span<const T> denoised, std::span<T> x,
                            lms_state<T>& state, std::size_t order, slope_final_step last, Coefficients&& coefficients,
                            const P& policy) {
  check_sigma_step(where, s);
  if (order < 1 || order > 4) throw_invalid(where, "order = " + to_text(order) + " is outside the allowed range [1, 4]");
  if (!(s.sigma_next < s.sigma))
    throw_invalid(where, "sigma_next = " + to_text(s.sigma_next) + " must be < sigma = " + to_text(s.sigma));
  if (state.count > 0 && !(s.sigma < state.sigmas[0]))
    throw_invalid(where, "sigma = " + to_text(s.sigma) + " must be below the previous step's " +
                             to_text(state.sigmas[0]) + " (the history is for a descending list)");
  check_same_size(where, "denoised", denoised.size(), "x", x.size());
  check_no_partial_overlap(where, "denoised", denoised, "x", x);
  for (std::size_t j = 0; j < order; ++j)
    check_same_size(where, indexed_name("state.slopes[", j, "]"), state.slopes[j].size(), "x", x.size());
  // The oldest slot becomes the newest; the others move one back.
  std::rotate(state.slopes.begin(), state.slopes.begin() + static_cast<std::ptrdiff_t>(order - 1),
              state.slopes.begin() + static_cast<std::ptrdiff_t>(order));
  std::rotate(state.sigmas.begin(), state.sigmas.begin() + static_cast<std::ptrdiff_t>(order - 1),
              state.sigmas.begin() + static_cast<std::ptrdiff_t>(order));
  state.sigmas[0] = s.sigma;
  const std::size_t k = std::min(state.count + 1, order);
  const T inv = static_cast<T>(1.0 / s.sigma);
  const std::span<const T> xc(x);
  using kernels::madd;
  auto first = [inv](auto xv, auto dv) { return (xv - dv) * decltype(xv)(inv); };
  bool ok = true;
  if (last == slope_final_step::denoised && s.sigma_next == 0.0) {
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.slopes[0]), kernels::inputs<T>(xc, denoised),
                      [=](auto xv, auto dv) {
                        using V = decltype(xv);
                        return std::array<V, 2>{dv, first(xv, dv)};
                      });
    require_finite_step(where, ok, "the multistep step to sigma = 0");
    state.count = k;
    return;
  }
  const std::array<double, 4> c = coefficients(std::span<const double>(state.sigmas.data(), k), s.sigma_next, k);
  const T c0 = static_cast<T>(c[0]), c1 = static_cast<T>(c[1]), c2 = static_cast<T>(c[2]), c3 = static_cast<T>(c[3]);
  switch (k) {
    case 1:
      ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.slopes[0]), kernels::inputs<T>(xc, denoised),
                        [=](auto xv, auto dv) {
                          using V = decltype(xv);
                          const V d0 = first(xv, dv);
                          return std::array<V, 2>{madd(V(c0), d0, xv), d0};
                        });
      break;
    case 2:
      ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.slopes[0]),
                        kernels::inputs<T>(xc, denoised, std::span<const T>(state.slopes[1])), [=](auto xv, auto dv, auto d1) {
                          using V = decltype(xv);
                          const V d0 = first(xv, dv);
                          return std::array<V, 2>{madd(V(c0), d0, madd(V(c1), d1, xv)), d0};
                        });
      break;
    case 3:
      ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.slopes[0]),
                        kernels::inputs<T>(xc, denoised, std::span<const T>(state.slopes[1]), std::span<const T>(state.slopes[2])),
                        [=](auto xv, auto dv, auto d1, auto d2) {
                          using V = decltype(xv);
                          const V d0 = first(xv, dv);
                          return std::array<V, 2>{madd(V(c0), d0, madd(V(c1), d1, madd(V(c2), d2, xv))), d0};
                        });
      break;
    default:
      ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.slopes[0]),
                        kernels::inputs<T>(xc, denoised, std::span<const T>(state.slopes[1]), std::span<const T>(state.slopes[2]),
                                           std::span<const T>(state.slopes[3])),
                        [=](auto xv, auto dv, auto d1, auto d2, auto d3) {
                          using V = decltype(xv);
                          const V d0 = first(xv, dv);
                          return std::array<V, 2>{madd(V(c0), d0, madd(V(c1), d1, madd(V(c2), d2, madd(V(c3), d3, xv)))), d0};
                        });
      break;
  }
  require_finite_step(where, ok, "the linear multistep step");
  state.count = k;
}
}  // namespace detail

/// @brief One step of the linear multistep method in σ (k-diffusion `sample_lms`, diffusers
/// LMSDiscreteScheduler): \f$d_0 = (x - D)/\sigma\f$, \f$x' = x + \sum_{j<k} c_j d_j\f$ with
/// @ref lms_coefficients on the levels of the k = min(stored + 1, order) newest slopes. Order 1 is
/// Euler. One pass: the new slope is written into the history (replacing the oldest) while x is updated.
/// @param[in] s the step (σ must be below the previous step's σ); @param[in] denoised D(x; σ);
/// @param[in,out] x the state; @param[in,out] state the history; @param[in] order 1 … 4 (k-diffusion's and
/// diffusers' default 4); @param[in] policy threads.
/// @throws std::invalid_argument for a bad step, order, sizes or history buffers; std::domain_error on overflow.
template <real_scalar T, execution_policy P = sequential_policy>
void lms_step(sigma_step s, std::span<const T> denoised, std::span<T> x, lms_state<T>& state, std::size_t order = 4,
              const P& policy = P{}) {
  detail::slope_multistep_update<T>(
      "diffusion::lms_step", s, denoised, x, state, order, detail::slope_final_step::integrate,
      [](std::span<const double> nodes, double sigma_next, std::size_t) { return lms_coefficients(nodes, sigma_next); },
      policy);
}

// ---------------------------------------------------------------------------------------
// The loops
// ---------------------------------------------------------------------------------------

namespace detail {
/// The churn of step i of a σ-space loop (Euler, Heun): σ̂, and the churned state (x itself when
/// there is no churn, else `buffer` = x + √(σ̂² − σ²) S_noise z — @ref renoise_step for a flow
/// state — so that x changes only in the step's last pass).
template <class Loop, real_scalar T>
std::pair<double, std::span<const T>> apply_churn(Loop& loop, const karras_options& opt, std::size_t i,
                                                  std::span<const T> x, std::span<T> buffer) {
  const double s_i = loop.sigma(i), s_hat = churned_sigma(opt, s_i, loop.steps());
  if (!(s_hat > s_i)) return {s_i, x};
  std::copy(x.begin(), x.end(), buffer.begin());
  if (loop.process() == state_process::sigma_space)
    churn_step<T>(s_i, s_hat, opt.s_noise, buffer, loop.noise(i), loop.policy());
  else
    renoise_step<T>({loop.level(s_i), loop.level(s_hat)}, opt.s_noise, buffer, loop.noise(i), loop.policy());
  return {s_hat, std::span<const T>(buffer)};
}
/// The churned levels of a σ list, checked against the model's range before the first step.
template <class Loop>
void check_churned_levels(Loop& loop, const karras_options& opt) {
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    const double s_hat = churned_sigma(opt, loop.sigma(i), loop.steps());
    if (s_hat > loop.sigma(i)) loop.check_level(s_hat, i, "the churned sigma");
  }
}
}  // namespace detail

/// @brief Euler sampling of the probability-flow ODE over a descending σ list (Karras et al. 2022,
/// Algorithm 2 with Euler steps; k-diffusion `sample_euler`), with the optional churn: each step i
/// adds @ref churn_step to \f$\hat\sigma\f$ (@ref churned_sigma), evaluates D, then @ref euler_step to σ_{i+1}.
/// First order (measured in tests/test_sampler_karras.cpp on Gaussian data).
/// @param[in] D the σ-space denoiser (@ref sigma_space_model); @param[in,out] x rows × n: the state at σ_0 in
/// (or drawn), the sample out; @param[in] rows batch size; @param[in] noise the noise source (initial
/// draw and churn); @param[in] sigmas strictly decreasing, positive, the last may be 0; @param[in] opt options;
/// @param[in] hooks callback, workspace, context, threads.
/// @throws std::invalid_argument for a bad σ list, options or sizes; std::out_of_range for a σ outside
/// the model's range; std::domain_error for non-finite model output or an overflowing step.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result euler_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                           const karras_options& opt = {}, const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::euler_sample";
  detail::check_karras_options(where, opt);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  detail::check_churned_levels(loop, opt);
  const auto xs = loop.x();
  const auto den = loop.buffer(0), churned = loop.buffer(2);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    const auto [s_hat, at] = detail::apply_churn(loop, opt, i, std::span<const T>(xs), churned);
    loop.denoise(at, s_hat, den, i);
    if (at.data() != xs.data()) std::copy(at.begin(), at.end(), xs.begin());
    euler_step<T>(loop.step_levels(s_hat, i), den, xs, loop.policy());
    if (!loop.report(loop.steps(), loop.time(s_hat), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

/// @brief Heun sampling (Karras et al. 2022, Algorithm 2; k-diffusion `sample_heun`): per step the churn,
/// D at \f$(x, \hat\sigma)\f$, @ref heun_predict, D at the Euler point, @ref heun_correct; the last step to
/// σ = 0 is Euler. Second order, two model calls per step (one on the last).
///
/// x changes only in each step's last pass, so after an exception (from the model, in either
/// evaluation) it holds the state after the last completed step. The callback's x̂₀ is D of the
/// first evaluation (at σ̂).
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options; @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result heun_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                          const karras_options& opt = {}, const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::heun_sample";
  detail::check_karras_options(where, opt);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  detail::check_churned_levels(loop, opt);
  const auto xs = loop.x();
  const auto den = loop.buffer(0), den2 = loop.buffer(2), churned = loop.buffer(3);
  const heun_state<T> state{loop.buffer(4), loop.buffer(5)};
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    const double s_next = loop.sigma(i + 1);
    const auto [s_hat, at] = detail::apply_churn(loop, opt, i, std::span<const T>(xs), churned);
    loop.denoise(at, s_hat, den, i);
    if (heun_predict<T>({s_hat, s_next}, den, at, state, loop.policy())) {
      loop.denoise(std::span<const T>(state.x_eval), s_next, den2, i);
      heun_correct<T>({s_hat, s_next}, den2, at, state, xs, loop.policy());
    } else {
      euler_step<T>(at, den, s_hat, s_next, xs, loop.policy());
    }
    if (!loop.report(loop.steps(), loop.time(s_hat), loop.sigma(i), s_next, den)) break;
  }
  return loop.result();
}

/// @brief DPM-Solver++(2M) sampling (Lu et al. 2022, Algorithm 2; k-diffusion `sample_dpmpp_2m`): one model
/// call and one @ref dpmpp_2m_step per step, first order at the first step and to σ = 0. Second order.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source (initial draw only); @param[in] sigmas the σ list; @param[in] opt options
/// (`solver_type`: midpoint, k-diffusion's form, or heun; the churn, η and S_noise are not used);
/// @param[in] hooks hooks.
/// @throws as @ref euler_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_2m_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                              const karras_options& opt = {},
                              const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::dpmpp_2m_sample";
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  dpmpp_2m_state<T> state{loop.buffer(3)};
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    detail::dpmpp_2m_update<T>(where, loop.step_levels(loop.sigma(i), i), den, xs, state, kernels::no_noise{}, 0.0, 1.0,
                               opt.solver_type, false, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

/// @brief Options of @ref lms_sample.
struct lms_options {
  std::size_t order = 4;               ///< 1 … 4 (k-diffusion's and diffusers' default 4).
  std::uint64_t first_sample = 0;      ///< Stream index of row 0.
  bool draw_initial_noise = true;      ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;            ///< Scan every model output.
};

/// @brief Linear multistep sampling in σ (k-diffusion `sample_lms`): one model call and one
/// @ref lms_step per step, the order rising from 1 as the history fills. The slope (x − D)/σ is
/// dx/dσ for a σ-space state and for a rectified-flow state alike, so both integrate in σ. Order k
/// is exact for slopes that are polynomials of degree < k in σ once k slopes are stored. The
/// lower-order start limits the global order to 2 as N → ∞, but it runs at the largest σ, where the
/// flow is nearly linear, so the measured orders are 1.00, 1.98, 2.95, 3.86 at N = 256
/// (docs/accuracy.md).
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source (initial draw only); @param[in] sigmas the σ list; @param[in] opt options;
/// @param[in] hooks hooks.
/// @throws as @ref euler_sample; std::invalid_argument for an order outside [1, 4].
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result lms_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                         const lms_options& opt = {}, const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::lms_sample";
  if (opt.order < 1 || opt.order > 4)
    detail::throw_invalid(where, "order = " + detail::to_text(opt.order) + " is outside the allowed range [1, 4]");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  lms_state<T> state;
  for (std::size_t j = 0; j < opt.order; ++j) state.slopes[j] = loop.buffer(2 + j);
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    lms_step<T>({loop.sigma(i), loop.sigma(i + 1)}, den, xs, state, opt.order, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
