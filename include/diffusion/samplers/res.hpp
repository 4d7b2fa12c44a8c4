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
/// first step and where σ_d = 0 (to σ = 0; then x' = α'D). φ_k from `detail::phi_functions` (samplers/unipc.hpp).
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

// ---------------------------------------------------------------------------------------
// ER-SDE-Solver
// ---------------------------------------------------------------------------------------

/// @brief The noise-scale function of ComfyUI's `sample_er_sde` (Cui et al. 2023, the "ER SDE 5" of
/// Sec. 5, their recommended choice): \f$\phi(\varsigma) = \varsigma\left(e^{\varsigma^{0.3}} + 10\right)\f$.
struct er_sde_default_noise_scale {
  /// φ(ς) for ς > 0.
  double operator()(double s) const { return s * (std::exp(std::pow(s, 0.3)) + 10.0); }
};

/// @brief The noise-scale function \f$\phi(\varsigma) = \varsigma\f$, for which the ER-SDE is the
/// probability-flow ODE (Cui et al. 2023, Sec. 3.2): the solver adds no noise and is an ODE solver
/// of order = stage (stage 1 is DDIM).
struct er_sde_ode_noise_scale {
  /// φ(ς) = ς.
  double operator()(double s) const noexcept { return s; }
};

/// @brief Options of the ER-SDE step and loop. A noise-scale function φ must be positive and finite on
/// (0, ∞) with φ(ς)/ς non-decreasing (the added variance \f$\varsigma_t^2 - \varsigma_s^2 r^2\f$ is then ≥ 0);
/// a step where it is not is refused.
template <class NoiseScale = er_sde_default_noise_scale>
struct er_sde_options {
  NoiseScale noise_scale{};         ///< φ (ComfyUI's `noise_scaler`).
  std::size_t max_stage = 3;        ///< 1, 2 or 3 (ComfyUI's `max_stage`).
  double s_noise = 1.0;             ///< Scale of the added noise, ≥ 0.
  /// Stage 3 as the references (Cui et al.'s `er_sde_solver.py`, ComfyUI) write it, \f$c_3 D_u\f$ with
  /// \f$D_u = 2D[\varsigma_s, \varsigma_{-1}, \varsigma_{-2}]\f$: the Taylor term with a divided difference for D′
  /// that is only first-order accurate, so the method is second order (docs/conventions.md). false
  /// (default): the integral of the Newton interpolant through the three nodes, third order.
  bool reference_stage3 = false;
  std::uint64_t first_sample = 0;   ///< Loop: stream index of row 0.
  bool draw_initial_noise = true;   ///< Loop: set x = σ_0 z first; false: x holds it.
  bool check_finite = true;         ///< Loop: scan every model output.
};

/// @brief The history of the ER-SDE step: the two previous denoised outputs (newest first) and the ς at
/// which each was evaluated, in caller-owned buffers.
template <real_scalar T>
struct er_sde_state {
  std::array<std::span<T>, 2> previous_denoised{};  ///< D₋₁ and D₋₂.
  std::array<double, 2> previous_ratio{};           ///< ς₋₁ and ς₋₂ (ς = σ/α of their levels).
  std::size_t count = 0;                            ///< Outputs stored (0, 1 or 2).
};

namespace detail {

/// The 8-point Gauss–Legendre rule on [−1, 1] (nodes by Newton's iteration on P₈ to rounding, once).
struct gauss_legendre_rule {
  std::array<double, 8> node{}, weight{};
};
inline const gauss_legendre_rule& gauss_legendre_8() {
  static const gauss_legendre_rule rule = [] {
    gauss_legendre_rule q;
    constexpr int n = 8;
    for (int i = 0; i < n; ++i) {
      double x = std::cos(std::numbers::pi * (i + 0.75) / (n + 0.5)), dp = 1.0;
      for (int it = 0; it < 100; ++it) {
        double p0 = 1.0, p1 = x;
        for (int k = 2; k <= n; ++k) {
          const double p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
          p0 = p1;
          p1 = p2;
        }
        dp = n * (x * p1 - p0) / (x * x - 1.0);
        const double dx = p1 / dp;
        x -= dx;
        if (std::abs(dx) < 1e-17) break;
      }
      q.node[static_cast<std::size_t>(i)] = x;
      q.weight[static_cast<std::size_t>(i)] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
    return q;
  }();
  return rule;
}

/// φ(ς), required finite and > 0.
template <class NoiseScale>
double er_sde_phi(std::string_view where, const NoiseScale& phi, double s) {
  const double v = static_cast<double>(phi(s));
  if (!(v > 0.0 && std::isfinite(v)))
    throw_invalid(where, "the noise-scale function gives phi(" + to_text(s) + ") = " + to_text(v) +
                             "; it must be finite and > 0 on the step's levels");
  return v;
}

/// The ER-SDE stage integrals over [ς_t, ς_s] (Cui et al. 2023, the solvers' Eqs. for stages 2, 3,
/// integrated by parts into cancellation-free form), with W(u) = φ(ς_t)/φ(u) − 1:
/// \f$c_2 = \int_{\varsigma_t}^{\varsigma_s} W\,du = (\varsigma_t - \varsigma_s) + \phi(\varsigma_t)\int \frac{du}{\phi(u)}\f$,
/// \f$c_3 = \int_{\varsigma_t}^{\varsigma_s} (u - \varsigma_s)W\,du = \tfrac12(\varsigma_t - \varsigma_s)^2 + \phi(\varsigma_t)\int\frac{u - \varsigma_s}{\phi(u)}du\f$.
/// Evaluated in v = log u (where the default φ's integrand is an entire function) by composite
/// 8-point Gauss–Legendre on panels of length ≤ 1/2 in v: exact for integrands polynomial of
/// degree ≤ 15 in v on each panel. ComfyUI uses a 200-point Riemann sum in ς.
inline constexpr double er_sde_panel = 0.5;
template <class NoiseScale>
std::pair<double, double> er_sde_integrals(std::string_view where, const NoiseScale& phi, double s_from, double s_to,
                                           double phi_to) {
  const auto& q = gauss_legendre_8();
  const double a = std::log(s_to), b = std::log(s_from), len = b - a;
  const auto panels = static_cast<std::size_t>(std::max(1.0, std::ceil(len / er_sde_panel)));
  const double half = 0.5 * len / static_cast<double>(panels);
  double c2 = 0.0, c3 = 0.0;
  for (std::size_t p = 0; p < panels; ++p) {
    const double mid = a + (2.0 * static_cast<double>(p) + 1.0) * half;
    for (std::size_t j = 0; j < 8; ++j) {
      const double u = std::exp(mid + half * q.node[j]);
      const double W = phi_to / er_sde_phi(where, phi, u) - 1.0;
      const double wu = q.weight[j] * half * u * W;
      c2 += wu;
      c3 += wu * (u - s_from);
    }
  }
  return {c2, c3};
}

}  // namespace detail

/// @brief One step of the ER-SDE-Solver (Cui et al. 2023, "Elucidating the Solution Space of Extended
/// Reverse-Time SDE for Diffusion Models", arXiv 2309.06169, Algorithms 1–3 in their VP data-prediction
/// form; ComfyUI `sample_er_sde`) between two levels of the state's process. With ς = σ/α, φ the
/// noise-scale function, \f$r = \phi(\varsigma_t)/\phi(\varsigma_s)\f$:
/// \f[ \frac{x'}{\alpha'} = r\frac{x}{\alpha} + (1 - r)D + c_2 D_1 + c_3' D_2 + \sqrt{\varsigma_t^2 - \varsigma_s^2 r^2}\,S_\text{noise}\,z, \f]
/// the exact solution of the ER-SDE with D expanded around ς_s (c₂, c₃ the stage integrals,
/// detail::er_sde_integrals), \f$D_1 = D[\varsigma_s, \varsigma_{-1}] = (D - D_{-1})/(\varsigma_s - \varsigma_{-1})\f$,
/// \f$D_2 = D[\varsigma_s, \varsigma_{-1}, \varsigma_{-2}]\f$ and \f$c_3' = 2c_3 + (\varsigma_s - \varsigma_{-1})c_2\f$ (the Newton
/// interpolant; `reference_stage3`: \f$2c_3\f$, the references' form). The stage is min(stored + 1,
/// `max_stage`): 1 is the first-order solver (DDIM for φ(ς) = ς). A step to σ = 0 is x' = α'D. The
/// added variance is written \f$\varsigma_t^2(1 - q)(1 + q)\f$ with \f$q = \frac{\phi(\varsigma_t)/\varsigma_t}{\phi(\varsigma_s)/\varsigma_s}\f$
/// (exactly 0 for φ(ς) = ς). One pass with the noise drawn in registers; writes D into the history.
/// @param[in] s the level step (α > 0 at the start: a flow list cannot start at σ = 1; ς must decrease);
/// @param[in] denoised D at s.from; @param[in,out] x the state; @param[in,out] state the history;
/// @param[in] z the step's normals (kernels::no_noise where the step adds none); @param[in] opt φ, the
/// stage, S_noise; @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step, options, sizes, a noise-scale function that is not
/// positive and finite or whose φ(ς)/ς decreases over the step, or missing noise; std::domain_error when
/// the result is not finite.
template <real_scalar T, class Z, class NoiseScale, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void er_sde_step(const level_step& s, std::span<const T> denoised, std::span<T> x, er_sde_state<T>& state, const Z& z,
                 const er_sde_options<NoiseScale>& opt, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::er_sde_step";
  detail::check_level_step(where, s);
  if (!(s.from.alpha > 0.0))
    detail::throw_invalid(where, "the step starts at alpha = " + detail::to_text(s.from.alpha) +
                                     "; ER-SDE needs alpha > 0 (a finite sigma/alpha: a flow list cannot start at sigma = 1)");
  if (opt.max_stage < 1 || opt.max_stage > 3)
    detail::throw_invalid(where, "max_stage = " + detail::to_text(opt.max_stage) + " is outside the allowed range [1, 3]");
  if (!(opt.s_noise >= 0.0 && std::isfinite(opt.s_noise)))
    detail::throw_invalid(where, "s_noise = " + detail::to_text(opt.s_noise) + " is outside the allowed range [0, inf)");
  const double rs = s.from.sigma / s.from.alpha, rt = s.to.sigma == 0.0 ? 0.0 : s.to.sigma / s.to.alpha;
  if (!(rt < rs))
    detail::throw_invalid(where, "the step goes from sigma/alpha = " + detail::to_text(rs) + " to " + detail::to_text(rt) +
                                     "; it must decrease");
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "denoised", denoised, "x", x);
  const bool lands = s.to.sigma == 0.0;
  const std::size_t stage = lands ? 1 : std::min(state.count + 1, opt.max_stage);
  // History: max_stage − 1 buffers (none at max_stage 1), all of x's size.
  for (std::size_t j = 0; j + 1 < opt.max_stage; ++j)
    detail::check_same_size(where, detail::indexed_name("state.previous_denoised[", j, "]"),
                            state.previous_denoised[j].size(), "x", x.size());
  // x' = cx x + α'(a0 D + a1 D₋₁ + a2 D₋₂) + cz z.
  double cx_d = 0.0, a0 = 1.0, a1 = 0.0, a2 = 0.0, noise = 0.0;
  if (!lands) {
    const double phi_s = detail::er_sde_phi(where, opt.noise_scale, rs), phi_t = detail::er_sde_phi(where, opt.noise_scale, rt);
    const double r = phi_t / phi_s, q = (phi_t / rt) / (phi_s / rs);
    if (!(q <= 1.0))
      detail::throw_invalid(where, "the noise-scale function gives phi(s)/s = " + detail::to_text(phi_t / rt) + " at s = " +
                                       detail::to_text(rt) + " above " + detail::to_text(phi_s / rs) + " at s = " +
                                       detail::to_text(rs) + "; phi(s)/s must not decrease (negative added variance)");
    cx_d = s.to.alpha / s.from.alpha * r;
    a0 = 1.0 - r;
    noise = s.to.alpha * rt * std::sqrt((1.0 - q) * (1.0 + q)) * opt.s_noise;
    if (stage >= 2) {
      const auto [c2, c3] = detail::er_sde_integrals(where, opt.noise_scale, rs, rt, phi_t);
      const double d1 = rs - state.previous_ratio[0];  // < 0
      a0 += c2 / d1;
      a1 -= c2 / d1;
      if (stage == 3) {
        const double d2 = state.previous_ratio[0] - state.previous_ratio[1];
        const double e = (opt.reference_stage3 ? 2.0 * c3 : 2.0 * c3 + d1 * c2) / (rs - state.previous_ratio[1]);
        a0 += e / d1;
        a1 += -e / d1 - e / d2;
        a2 = e / d2;
      }
    }
  }
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (noise > 0.0)
      detail::throw_invalid(where, "the step adds noise (s_noise = " + detail::to_text(opt.s_noise) +
                                       ", sigma_next = " + detail::to_text(s.to.sigma) + ") but no noise was passed");
  } else {
    detail::check_noise_operand<T>(where, z, x.size());
  }
  const T cx = static_cast<T>(cx_d), c0 = static_cast<T>(s.to.alpha * a0), c1 = static_cast<T>(s.to.alpha * a1),
          c2 = static_cast<T>(s.to.alpha * a2);
  const T cz = detail::coefficient<T>(where, "alpha_next * sqrt(s_next^2 - s^2 r^2) * s_noise", noise);
  using kernels::madd;
  auto with_noise = [cz](auto v, auto... zv) {
    using V = decltype(v);
    if constexpr (sizeof...(zv) == 1)
      return madd(V(cz), zv..., v);
    else
      return v;
  };
  // D goes into the last slot (at stage 3 read first, element by element), then the slots rotate so
  // that it is the newest; unused history is not read; at max_stage 1 nothing is stored.
  const std::span<T> older = opt.max_stage == 1 ? std::span<T>{} : state.previous_denoised[opt.max_stage - 2];
  const std::span<const T> xc(x), p0(state.previous_denoised[0]), p1(state.previous_denoised[1]);
  bool ok;
  auto store = [&](auto body, auto... in) {
    if (older.empty())
      return kernels::map(policy, z, kernels::outputs(x), kernels::inputs<T>(xc, denoised, in...),
                          [=](auto... v) { return body(v...); });
    return kernels::map(policy, z, kernels::outputs(x, older), kernels::inputs<T>(xc, denoised, in...),
                        [=](auto xv, auto dv, auto... v) {
                          using V = decltype(xv);
                          return std::array<V, 2>{body(xv, dv, v...), dv};
                        });
  };
  if (stage == 1)
    ok = store([=](auto xv, auto dv, auto... zv) {
      using V = decltype(xv);
      return with_noise(madd(V(cx), xv, V(c0) * dv), zv...);
    });
  else if (stage == 2)
    ok = store(
        [=](auto xv, auto dv, auto q0, auto... zv) {
          using V = decltype(xv);
          return with_noise(madd(V(cx), xv, madd(V(c0), dv, V(c1) * q0)), zv...);
        },
        p0);
  else
    ok = store(
        [=](auto xv, auto dv, auto q0, auto q1, auto... zv) {
          using V = decltype(xv);
          return with_noise(madd(V(cx), xv, madd(V(c0), dv, madd(V(c1), q0, V(c2) * q1))), zv...);
        },
        p0, p1);
  detail::require_finite_step(where, ok, "the ER-SDE step");
  if (opt.max_stage == 3) std::swap(state.previous_denoised[0], state.previous_denoised[1]);
  state.previous_ratio[1] = state.previous_ratio[0];
  state.previous_ratio[0] = rs;
  state.count = std::min<std::size_t>(state.count + 1, 2);
}

/// @brief ER-SDE sampling (ComfyUI `sample_er_sde`, default φ and `max_stage` 3): one model call and one
/// @ref er_sde_step per step over the state's process (σ-space, or rectified flow with ς = σ/(1 − σ)),
/// the noise of stream step i; stages 1, 2, 3, 3, … and x = α'D to σ = 0.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list (a flow list must start below 1);
/// @param[in] opt φ, max_stage, S_noise, first_sample, draw_initial_noise, check_finite; @param[in] hooks hooks.
/// @throws as @ref euler_sample; std::invalid_argument for a list starting at α = 0 or a bad φ.
template <class SigmaModel, mutable_tensor X, class Noise, class NoiseScale = er_sde_default_noise_scale,
          class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result er_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                            const er_sde_options<NoiseScale>& opt = {},
                            const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::er_sde_sample";
  if (opt.max_stage < 1 || opt.max_stage > 3)
    detail::throw_invalid(where, "max_stage = " + detail::to_text(opt.max_stage) + " is outside the allowed range [1, 3]");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  if (loop.level(sigmas[0]).alpha == 0.0)
    detail::throw_invalid(where, "sigmas[0] = " + detail::to_text(sigmas[0]) +
                                     " is a level with alpha = 0 (pure noise); ER-SDE needs a finite sigma/alpha at the "
                                     "start (begin the flow list below 1)");
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  er_sde_state<T> state{};
  state.previous_denoised = {loop.buffer(2), loop.buffer(3)};
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    loop.denoise(xs, loop.sigma(i), den, i);
    const level_step l = loop.step_levels(loop.sigma(i), i);
    bool noisy = false;
    if (l.to.sigma > 0.0 && opt.s_noise > 0.0) {
      const double rs = l.from.sigma / l.from.alpha, rt = l.to.sigma / l.to.alpha;
      noisy = static_cast<double>(opt.noise_scale(rt)) / rt < static_cast<double>(opt.noise_scale(rs)) / rs;
    }
    if (noisy)
      er_sde_step<T>(l, den, xs, state, loop.noise(i), opt, loop.policy());
    else
      er_sde_step<T>(l, den, xs, state, kernels::no_noise{}, opt, loop.policy());
    if (!loop.report(loop.steps(), loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
