/// @file
/// @brief CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for
/// Diffusion Models", arXiv 2406.08070): guidance that belongs to the sampler. The step moves to
/// the guided x̂₀ but renoises along the *unconditional* noise estimate, so each step takes two
/// model outputs: the guided denoised \f$D_\lambda = D_u + \lambda(D_c - D_u)\f$ (form it with
/// @ref diffusion::apply_guidance at w = λ) and the unconditional denoised \f$D_u\f$.
///
/// Steps (each one fused pass, bit-identical for any thread count), over a @ref diffusion::level_step so
/// that σ-space, variance-preserving and flow states are served by one body:
/// - @ref diffusion::cfgpp_euler_step "cfgpp_euler_step": the paper's Algorithm 1 (DDIM with CFG++), ComfyUI `sample_euler_cfg_pp`;
/// - @ref diffusion::cfgpp_euler_ancestral_step "cfgpp_euler_ancestral_step": ComfyUI `sample_euler_ancestral_cfg_pp`;
/// - @ref diffusion::cfgpp_dpmpp_2m_step "cfgpp_dpmpp_2m_step": ComfyUI `sample_dpmpp_2m_cfg_pp`;
///
/// and their loop, @ref diffusion::cfgpp_sample "cfgpp_sample", over a conditional and an unconditional σ-space
/// denoiser.
///
/// With \f$D_\lambda = D_u\f$ (λ = 0, or a model that ignores its condition) each is its plain step
/// (@ref diffusion::euler_step "euler_step", @ref diffusion::euler_ancestral_step "euler_ancestral_step",
/// @ref diffusion::dpmpp_2m_step "dpmpp_2m_step") to rounding: the coefficients are regrouped, not changed.
///
/// Scale: the paper's λ ∈ [0, 1] plays the role of CFG's w at a smaller value (λ = 1 is the
/// conditional model; the paper maps w ∈ [1, 12.5] of CFG to λ ∈ [0, 1]). The steps take D_λ as given
/// and do not check λ.
/// @code
/// diffusion::apply_guidance<float>(cond, uncond, rows, {.guidance_scale = 0.6}, guided);  // D_λ
/// diffusion::cfgpp_euler_step<float>({sigma, sigma_next}, guided, uncond, x);
/// @endcode
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../models/guidance.hpp"
#include "common.hpp"
#include "ode.hpp"
#include "sde.hpp"
#include "sigma_common.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

namespace detail {
/// The checks every CFG++ step shares: the level step, the sizes of the three arrays, no partial overlap.
template <real_scalar T>
void check_cfgpp_operands(std::string_view where, const level_step& s, std::span<const T> guided,
                          std::span<const T> unconditional, std::span<const T> x) {
  check_level_step(where, s);
  check_same_size(where, "guided", guided.size(), "x", x.size());
  check_same_size(where, "unconditional", unconditional.size(), "x", x.size());
  check_no_partial_overlap(where, "guided", guided, "x", x);
  check_no_partial_overlap(where, "unconditional", unconditional, "x", x);
}
}  // namespace detail

/// @brief One CFG++ Euler (DDIM, η = 0) step between two levels of the state's process (Chung et al.
/// 2024, Algorithm 1; ComfyUI `sample_euler_cfg_pp`): land on the guided x̂₀ and renoise with the
/// unconditional noise estimate \f$\hat\varepsilon_u = (x - \alpha D_u)/\sigma\f$,
/// \f$x' = \alpha' D_\lambda + \sigma'\hat\varepsilon_u = \frac{\sigma'}{\sigma}x + \alpha' D_\lambda - \alpha\frac{\sigma'}{\sigma}D_u\f$.
/// In σ-space (α = α' = 1) this is \f$D_\lambda + \sigma'(x - D_u)/\sigma\f$ (ComfyUI's form).
///
/// Evaluated as `madd(r, x, madd(α', D_λ, c_u·D_u))` with r = σ'/σ and \f$c_u = -\alpha r\f$ rounded to T: error
/// \f$\le 3u(|r x| + |\alpha' D_\lambda| + |c_u D_u|)\f$ beyond the rounding of the coefficients (u the unit roundoff of T).
/// @param[in] s the level step; @param[in] guided \f$D_\lambda\f$ at s.from; @param[in] unconditional \f$D_u\f$ at s.from;
/// @param[in,out] x the state; @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step or sizes, or partially overlapping arrays;
///         std::domain_error when the result overflows T.
template <real_scalar T, execution_policy P = sequential_policy>
void cfgpp_euler_step(const level_step& s, std::span<const T> guided, std::span<const T> unconditional, std::span<T> x,
                      const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::cfgpp_euler_step";
  detail::check_cfgpp_operands<T>(where, s, guided, unconditional, x);
  const double r = s.to.sigma / s.from.sigma;
  const T cx = static_cast<T>(r), cg = static_cast<T>(s.to.alpha), cu = static_cast<T>(-s.from.alpha * r);
  const bool ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x),
                               kernels::inputs<T>(std::span<const T>(x), guided, unconditional),
                               [cx, cg, cu](auto xv, auto gv, auto uv) {
                                 using V = decltype(xv);
                                 return kernels::madd(V(cx), xv, kernels::madd(V(cg), gv, V(cu) * uv));
                               });
  detail::require_finite_step(where, ok, "the CFG++ Euler step");
}

/// @brief The σ-space form of @ref diffusion::cfgpp_euler_step "cfgpp_euler_step":
/// \f$x' = D_\lambda + \sigma_{next}(x - D_u)/\sigma\f$.
/// @param[in] s the step (σ > 0, σ_next ≥ 0); @param[in] guided \f$D_\lambda(x;\sigma)\f$;
/// @param[in] unconditional \f$D_u(x;\sigma)\f$; @param[in,out] x the state; @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, execution_policy P = sequential_policy>
void cfgpp_euler_step(sigma_step s, std::span<const T> guided, std::span<const T> unconditional, std::span<T> x,
                      const P& policy = P{}) {
  detail::check_sigma_step("diffusion::cfgpp_euler_step", s);
  cfgpp_euler_step<T>(as_level_step(s), guided, unconditional, x, policy);
}

/// @brief One CFG++ Euler-ancestral step (ComfyUI `sample_euler_ancestral_cfg_pp`; Chung et al. 2024,
/// §3 with DDIM's stochastic form): the ancestral split (@ref ancestral_step, η) of the step in the EDM
/// ratio ς = σ/α gives ς↓ and ς↑; then, in one pass,
/// \f$x' = \alpha' D_\lambda + \alpha'\varsigma_\downarrow\hat\varepsilon_u + \alpha'\varsigma_\uparrow S_\text{noise} z\f$,
/// \f$\hat\varepsilon_u = (x - \alpha D_u)/\sigma\f$. In σ-space: \f$x' = D_\lambda + \sigma_\downarrow(x - D_u)/\sigma + S_\text{noise}\sigma_\uparrow z\f$,
/// which is @ref diffusion::euler_ancestral_step "euler_ancestral_step" when \f$D_\lambda = D_u\f$. On any process
/// the deterministic part lands at (α', α'ς↓) and the noise brings it to (α', σ') in law (S_noise = 1).
/// A start at α = 0 (a flow's σ = 1, ς = ∞) is allowed: ε̂_u = x/σ there.
///
/// Error: \f$\le 4u(|c_x x| + |\alpha' D_\lambda| + |c_u D_u| + |c_z z|)\f$ beyond the coefficients' rounding.
/// @param[in] s the level step (ς' ≤ ς, α' > 0 unless σ' = 0); @param[in] guided \f$D_\lambda\f$;
/// @param[in] unconditional \f$D_u\f$; @param[in,out] x the state;
/// @param[in] z the normals (a buffer of x's size or a kernels::philox_stream; unused when ς↑·S_noise = 0);
/// @param[in] opt η ∈ [0, 1] and S_noise ≥ 0; @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step (one that does not decrease ς), options, sizes, or noise
///         missing where the step adds some; std::domain_error when the result overflows T.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void cfgpp_euler_ancestral_step(const level_step& s, std::span<const T> guided, std::span<const T> unconditional,
                                std::span<T> x, const Z& z, const ancestral_options& opt = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::cfgpp_euler_ancestral_step";
  detail::check_cfgpp_operands<T>(where, s, guided, unconditional, x);
  detail::check_eta_and_s_noise(where, opt.eta, opt.s_noise);
  const bool lands_on_data = s.to.sigma == 0.0;
  if (!lands_on_data && !(s.to.alpha > 0.0))
    detail::throw_invalid(where, "the step ends at alpha = " + detail::to_text(s.to.alpha) + ", sigma = " +
                                     detail::to_text(s.to.sigma) + "; a step that does not land on the data needs alpha > 0");
  // ς = σ/α (∞ at α = 0); ς_to/ς_from = 0 there, which ancestral_step handles.
  const double ratio_from = s.from.alpha > 0.0 ? s.from.sigma / s.from.alpha : std::numeric_limits<double>::infinity();
  const double ratio_to = lands_on_data ? 0.0 : s.to.sigma / s.to.alpha;
  if (!(ratio_to <= ratio_from))
    detail::throw_invalid(where, "the step goes from sigma/alpha = " + detail::to_text(ratio_from) + " to " +
                                     detail::to_text(ratio_to) + "; an ancestral step must not increase the noise");
  const ancestral_split a = ancestral_step(ratio_from, ratio_to, opt.eta);
  const double cx_d = lands_on_data ? 0.0 : s.to.alpha * a.sigma_down / s.from.sigma;
  const double noise_scale = s.to.alpha * a.sigma_up * opt.s_noise;
  const T cx = static_cast<T>(cx_d), cg = static_cast<T>(s.to.alpha), cu = static_cast<T>(-s.from.alpha * cx_d);
  bool ok;
  if (noise_scale > 0.0) {
    if constexpr (std::is_same_v<Z, kernels::no_noise>) {
      detail::throw_invalid(where, "the step adds noise (alpha' * sigma_up * s_noise = " + detail::to_text(noise_scale) +
                                       " > 0) but no noise was passed");
    } else {
      detail::check_noise_operand<T>(where, z, x.size());
      const T cz = detail::coefficient<T>(where, "alpha' * sigma_up * s_noise", noise_scale);
      ok = kernels::map(policy, z, kernels::outputs(x), kernels::inputs<T>(std::span<const T>(x), guided, unconditional),
                        [cx, cg, cu, cz](auto xv, auto gv, auto uv, auto zv) {
                          using V = decltype(xv);
                          return kernels::madd(V(cz), zv, kernels::madd(V(cx), xv, kernels::madd(V(cg), gv, V(cu) * uv)));
                        });
    }
  } else {
    if constexpr (!std::is_same_v<Z, kernels::no_noise>) detail::check_noise_operand<T>(where, z, x.size());
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x),
                      kernels::inputs<T>(std::span<const T>(x), guided, unconditional), [cx, cg, cu](auto xv, auto gv, auto uv) {
                        using V = decltype(xv);
                        return kernels::madd(V(cx), xv, kernels::madd(V(cg), gv, V(cu) * uv));
                      });
  }
  detail::require_finite_step(where, ok, "the CFG++ Euler-ancestral step");
}

/// @brief The σ-space form of @ref diffusion::cfgpp_euler_ancestral_step "cfgpp_euler_ancestral_step"
/// (ComfyUI's on a σ-space model): \f$x' = D_\lambda + \sigma_\downarrow(x - D_u)/\sigma + S_\text{noise}\sigma_\uparrow z\f$.
/// @param[in] s the step; @param[in] guided \f$D_\lambda\f$; @param[in] unconditional \f$D_u\f$; @param[in,out] x the state;
/// @param[in] z the normals; @param[in] opt η and S_noise; @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void cfgpp_euler_ancestral_step(sigma_step s, std::span<const T> guided, std::span<const T> unconditional, std::span<T> x,
                                const Z& z, const ancestral_options& opt = {}, const P& policy = P{}) {
  detail::check_sigma_step("diffusion::cfgpp_euler_ancestral_step", s);
  cfgpp_euler_ancestral_step<T>(as_level_step(s), guided, unconditional, x, z, opt, policy);
}

/// @brief One CFG++ DPM-Solver++(2M) step (ComfyUI `sample_dpmpp_2m_cfg_pp`, written over (α, σ) levels):
/// with λ = log(α/σ), h = λ' − λ, r = h_prev/h,
/// \f$x' = \frac{\sigma'}{\sigma}x + \alpha' D_\lambda - \alpha' e^{-h} D_u
///   + \alpha'(1 - e^{-h})\frac{1}{2r}\left(D_\lambda - D_{u,\text{prev}}\right)\f$,
/// the history holding the *unconditional* D of the previous step. The first-order part is
/// @ref diffusion::cfgpp_euler_step "cfgpp_euler_step" (\f$\alpha' e^{-h} = \alpha\sigma'/\sigma\f$); the correction is
/// ComfyUI's, which differences the guided output against the previous unconditional one. With
/// \f$D_\lambda = D_u\f$ it is @ref diffusion::dpmpp_2m_step "dpmpp_2m_step" with the same history. First order at the
/// first step, when σ' = 0 (then x' = α'D_λ) and when `first_order` is set, as dpmpp_2m_step.
///
/// One pass (x and the history written together). Error \f$\le 4u\f$ times the sum of the four terms' magnitudes,
/// beyond the coefficients' rounding.
/// @param[in] s the level step; @param[in] guided \f$D_\lambda\f$; @param[in] unconditional \f$D_u\f$ (stored in the history);
/// @param[in,out] x the state; @param[in,out] state the history (@ref dpmpp_2m_state, holding \f$D_u\f$);
/// @param[in] first_order take a first-order step; @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for a bad step or sizes; std::domain_error when the result overflows T.
template <real_scalar T, execution_policy P = sequential_policy>
void cfgpp_dpmpp_2m_step(const level_step& s, std::span<const T> guided, std::span<const T> unconditional,
                         std::span<T> x, dpmpp_2m_state<T>& state, bool first_order = false, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::cfgpp_dpmpp_2m_step";
  detail::check_cfgpp_operands<T>(where, s, guided, unconditional, x);
  detail::check_same_size(where, "state.previous_denoised", state.previous_denoised.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "state.previous_denoised", std::span<const T>(state.previous_denoised), "x",
                                   std::span<const T>(x));
  const bool lands_on_data = s.to.sigma == 0.0;
  const double ratio = s.to.sigma / s.from.sigma;
  const double h = lands_on_data ? 0.0 : detail::lambda_difference(s);
  const bool second = state.has_previous && !lands_on_data && !first_order;
  // k = α'(1 − e^{−h})/(2r): the weight of the correction (D_λ − D_{u,prev}).
  const double k = second ? -s.to.alpha * std::expm1(-h) / (2.0 * (state.previous_h / h)) : 0.0;
  const T cx = static_cast<T>(ratio), cg = static_cast<T>(s.to.alpha + k), cu = static_cast<T>(-s.from.alpha * ratio),
          cp = static_cast<T>(-k);
  bool ok;
  if (!second) {
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.previous_denoised),
                      kernels::inputs<T>(std::span<const T>(x), guided, unconditional),
                      [cx, cg, cu](auto xv, auto gv, auto uv) {
                        using V = decltype(xv);
                        return std::array<V, 2>{kernels::madd(V(cx), xv, kernels::madd(V(cg), gv, V(cu) * uv)), uv};
                      });
  } else {
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x, state.previous_denoised),
                      kernels::inputs<T>(std::span<const T>(x), guided, unconditional,
                                         std::span<const T>(state.previous_denoised)),
                      [cx, cg, cu, cp](auto xv, auto gv, auto uv, auto pv) {
                        using V = decltype(xv);
                        const V rest = kernels::madd(V(cg), gv, kernels::madd(V(cu), uv, V(cp) * pv));
                        return std::array<V, 2>{kernels::madd(V(cx), xv, rest), uv};
                      });
  }
  detail::require_finite_step(where, ok, "the CFG++ DPM-Solver++(2M) step");
  if (!lands_on_data) state.previous_h = h;
  state.has_previous = true;
}

/// @brief The σ-space form of @ref diffusion::cfgpp_dpmpp_2m_step "cfgpp_dpmpp_2m_step" (ComfyUI's, h = log σ − log σ'):
/// \f$x' = D_\lambda + \frac{\sigma'}{\sigma}(x - D_u) + (1 - \frac{\sigma'}{\sigma})\frac1{2r}(D_\lambda - D_{u,\text{prev}})\f$.
/// @param[in] s the step; @param[in] guided \f$D_\lambda\f$; @param[in] unconditional \f$D_u\f$; @param[in,out] x the state;
/// @param[in,out] state the history; @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, execution_policy P = sequential_policy>
void cfgpp_dpmpp_2m_step(sigma_step s, std::span<const T> guided, std::span<const T> unconditional, std::span<T> x,
                         dpmpp_2m_state<T>& state, const P& policy = P{}) {
  detail::check_sigma_step("diffusion::cfgpp_dpmpp_2m_step", s);
  cfgpp_dpmpp_2m_step<T>(as_level_step(s), guided, unconditional, x, state, false, policy);
}

/// @brief The CFG++ step a @ref diffusion::cfgpp_sample "cfgpp_sample" run takes.
enum class cfgpp_method {
  euler,            ///< @ref diffusion::cfgpp_euler_step "cfgpp_euler_step" (ComfyUI `euler_cfg_pp`).
  euler_ancestral,  ///< @ref diffusion::cfgpp_euler_ancestral_step "cfgpp_euler_ancestral_step" (`euler_ancestral_cfg_pp`).
  dpmpp_2m,         ///< @ref diffusion::cfgpp_dpmpp_2m_step "cfgpp_dpmpp_2m_step" (`dpmpp_2m_cfg_pp`).
};

/// @brief Options of @ref diffusion::cfgpp_sample "cfgpp_sample".
struct cfgpp_sample_options {
  cfgpp_method method = cfgpp_method::euler;  ///< The step.
  /// λ of \f$D_\lambda = D_u + \lambda(D_c - D_u)\f$ (the paper's scale, typically in [0, 1]; any finite value).
  double guidance_scale = 0.6;
  double eta = 1.0;                ///< η ∈ [0, 1] of the ancestral step (euler_ancestral only).
  double s_noise = 1.0;            ///< S_noise ≥ 0 of the ancestral step (euler_ancestral only).
  std::uint64_t first_sample = 0;  ///< Stream index of row 0.
  bool draw_initial_noise = true;  ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;        ///< Scan every model output.
};

/// @brief CFG++ sampling over a σ list (Chung et al. 2024; ComfyUI's `*_cfg_pp` samplers): per step the
/// unconditional and the conditional σ-space denoisers at x, \f$D_\lambda = D_u + \lambda(D_c - D_u)\f$
/// (@ref diffusion::apply_guidance "apply_guidance" at w = λ), and one CFG++ step of `opt.method` over the
/// state's process (σ-space, or the models' rectified-flow levels). Two model calls per step (counted in
/// `model_calls`; a model that batches its two passes can be given as both, with a context it reads); the
/// ancestral step draws the Philox stream of step i; the callback reports \f$D_\lambda\f$ as x̂₀. At λ = 0
/// the run is @ref euler_sample, @ref euler_ancestral_sample (σ-space) or @ref dpmpp_2m_sample on the
/// unconditional model, to rounding.
/// @param[in] conditional D_c (σ-space denoiser); @param[in] unconditional D_u (the same state process);
/// @param[in,out] x rows × n: the state at σ_0 in (or drawn), the sample out; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas strictly decreasing, positive, the last may be 0;
/// @param[in] opt method, λ, η, S_noise; @param[in] hooks callback, workspace, context (passed to both
/// models), threads.
/// @throws as @ref euler_sample; std::invalid_argument for a non-finite λ, η ∉ [0, 1], S_noise < 0, an unknown
/// method, or models whose state processes differ.
template <class Conditional, class Unconditional, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<Conditional, tensor_value_t<X>, Context> && sigma_denoiser<Unconditional, tensor_value_t<X>, Context> &&
           noise_source_for<Noise, tensor_value_t<X>>
sample_result cfgpp_sample(Conditional& conditional, Unconditional& unconditional, X&& x, std::size_t rows, Noise& noise,
                           std::span<const double> sigmas, const cfgpp_sample_options& opt = {},
                           const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::cfgpp_sample";
  if (!std::isfinite(opt.guidance_scale))
    detail::throw_invalid(where, "guidance_scale = " + detail::to_text(opt.guidance_scale) + " must be finite");
  if (!(opt.method == cfgpp_method::euler || opt.method == cfgpp_method::euler_ancestral || opt.method == cfgpp_method::dpmpp_2m))
    detail::throw_invalid(where, "method = " + detail::to_text(static_cast<int>(opt.method)) +
                                     " is not euler, euler_ancestral or dpmpp_2m");
  if (opt.method == cfgpp_method::euler_ancestral) detail::check_eta_and_s_noise(where, opt.eta, opt.s_noise);
  detail::sigma_sampler<Conditional, T, Noise, Context> loop(where, conditional, as_mutable_span(x), rows, noise, sigmas,
                                                             opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                             hooks);
  sampler_hooks<T, Context> quiet = hooks;  // the unconditional pass: the same buffers and threads, no callback
  quiet.on_step = {};
  detail::sigma_sampler<Unconditional, T, Noise, Context> loop_u(where, unconditional, loop.x(), rows, noise, sigmas,
                                                                 opt.first_sample, false, opt.check_finite, quiet);
  if (loop.process() != loop_u.process())
    detail::throw_invalid(where, "the conditional and the unconditional model have different state processes");
  const auto xs = loop.x();
  const std::span<T> dc = loop.buffer(0), du = loop.buffer(2), guided = loop.buffer(3), previous = loop.buffer(4);
  dpmpp_2m_state<T> st{previous, 0.0, false};
  const guidance_options g{.guidance_scale = opt.guidance_scale};
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    const double sg = loop.sigma(i);
    loop_u.denoise(xs, sg, du, i);
    loop.denoise(xs, sg, dc, i);
    apply_guidance<T>(dc, du, rows, g, guided);
    const level_step l = loop.step_levels(sg, i);
    const std::span<const T> gd(guided), ud(du);
    switch (opt.method) {
      case cfgpp_method::euler: cfgpp_euler_step<T>(l, gd, ud, xs, loop.policy()); break;
      case cfgpp_method::euler_ancestral:
        cfgpp_euler_ancestral_step<T>(l, gd, ud, xs, loop.noise(i), {opt.eta, opt.s_noise}, loop.policy());
        break;
      default: cfgpp_dpmpp_2m_step<T>(l, gd, ud, xs, st, false, loop.policy()); break;
    }
    loop.result().model_calls += 1;  // the unconditional call (loop_u counts its own)
    if (!loop.report(loop.steps(), loop.time(sg), sg, loop.sigma(i + 1), gd)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
