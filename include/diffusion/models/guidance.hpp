/// @file
/// @brief Classifier-free guidance (Ho & Salimans 2022) with the guidance rescale of Lin et al.
/// 2023: a free function on model outputs and a @ref diffusion::denoiser wrapper that combines a
/// conditional and an unconditional model; beside it the other combinations of model outputs:
/// adaptive projected guidance (@ref diffusion::apply_apg), CFG-Zero* (@ref diffusion::apply_cfg_zero_star)
/// and guidance with a third, perturbed pass (@ref diffusion::apply_perturbed_guidance "apply_perturbed_guidance": PAG, skip-layer
/// guidance), and @ref diffusion::batched_classifier_free_guidance "batched_classifier_free_guidance" (the conditional and
/// unconditional passes as one model call on 2B rows). Guidance that changes the sampler's step (CFG++) is
/// samplers/cfg_pp.hpp.
///
/// Convention: the guidance scale w is diffusers' `guidance_scale`,
/// \f$\tilde\varepsilon = \varepsilon_u + w(\varepsilon_c - \varepsilon_u)\f$, so w = 1 is the conditional model alone and
/// w = 0 the unconditional one. Ho & Salimans write Eq. 6 as
/// \f$\tilde\varepsilon = (1 + w')\varepsilon_c - w'\varepsilon_u\f$: their w' is our w − 1.
///
/// The combination is applied to the models' own outputs, whatever they predict (ε, x₀, v or
/// score), as diffusers does. Plain guidance does not depend on that choice: the weights (1 − w, w)
/// sum to 1 and every conversion between prediction kinds is affine in the output with the same
/// x_t, so guiding x̂₀ or v̂ gives exactly the x̂₀ or v̂ of the guided ε̂. The rescale does depend
/// on it (the standard deviation of x̂₀ is not that of ε̂), except between ε and score (a common factor).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../kernels/reductions.hpp"
#include "../process/prediction.hpp"
#include "denoiser.hpp"

/// @defgroup guidance Classifier-free guidance
/// @brief \f$\tilde\varepsilon = \varepsilon_u + w(\varepsilon_c - \varepsilon_u)\f$ (Ho & Salimans 2022, Eq. 6) and its rescale
/// (Lin et al. 2023, §3.4), as a function and as a denoiser wrapper; APG, CFG-Zero* and three-pass guidance.
/// @{

namespace diffusion {

/// @brief Parameters of classifier-free guidance.
struct guidance_options {
  /// w, finite (diffusers' `guidance_scale`, default 7.5 as in its Stable Diffusion pipeline):
  /// 1 = conditional alone, 0 = unconditional alone, > 1 extrapolates. Any finite w is honoured
  /// (diffusers skips guidance, i.e. uses the conditional model, whenever w ≤ 1).
  double guidance_scale = 7.5;
  /// φ ∈ [0, 1] (diffusers' `guidance_rescale`; Lin et al. use 0.7): the share of the rescaled output.
  /// 0 is plain guidance.
  double guidance_rescale = 0.0;
};

namespace detail {

inline void check_guidance_options(std::string_view where, const guidance_options& opt) {
  if (!std::isfinite(opt.guidance_scale))
    throw_invalid(where, "guidance_scale = " + to_text(opt.guidance_scale) + " must be finite");
  if (!(opt.guidance_rescale >= 0.0 && opt.guidance_rescale <= 1.0))
    throw_invalid(where, "guidance_rescale = " + to_text(opt.guidance_rescale) + " is outside the allowed range [0, 1]");
}

/// Σ (v_k − v̄)² of one row: the mean and the squared deviations by the compensated sums of
/// reductions.hpp.
template <real_scalar T>
double guidance_centered_sum_squares(std::span<const T> v) {
  const double mean = sum(v) / static_cast<double>(v.size());
  return transform_sum(v, [mean](double e) {
    const double d = e - mean;
    return d * d;
  });
}

/// Guidance of row b (w ≠ 1, options valid): see apply_guidance. `ob` may alias `cb` or `ub`.
template <real_scalar T>
void guidance_row(std::string_view where, std::span<const T> cb, std::span<const T> ub, std::span<T> ob, std::size_t b,
                  const guidance_options& opt) {
  const double w = opt.guidance_scale, phi = opt.guidance_rescale;
  const std::size_t n = ob.size();
  const double ss_c = phi > 0.0 ? guidance_centered_sum_squares(cb) : 0.0;  // before ob may overwrite cb
  if (w == 0.0) {
    if (ob.data() != ub.data()) std::copy(ub.begin(), ub.end(), ob.begin());
  } else {
    require_finite_output(where, kernels::guidance_combine(coefficient<T>(where, "guidance_scale", w), cb, ub, ob),
                          "the guided output");
  }
  if (phi > 0.0) {
    const double ss_g = guidance_centered_sum_squares(std::span<const T>(ob));
    if (!(ss_g > 0.0))
      throw_domain(where, "row " + to_text(b) + " of the guided output has no spread (std = 0 over " + to_text(n) +
                              " elements): guidance_rescale = " + to_text(phi) + " is undefined there");
    const T f = coefficient<T>(where, "the rescale factor", phi * std::sqrt(ss_c / ss_g) + (1.0 - phi));
    require_finite_output(where, kernels::scale(f, std::span<const T>(ob), ob), "the guided output");
  }
}

}  // namespace detail

/// @brief Classifier-free guidance of a batch of model outputs, with the optional rescale:
///
/// \f$\tilde\varepsilon = \varepsilon_u + w(\varepsilon_c - \varepsilon_u)\f$ (Ho & Salimans 2022, Eq. 6, with w = their w + 1), then per row
/// (Lin et al. 2023, §3.4, Eqs. 15–16; diffusers `rescale_noise_cfg`)
/// \f$\varepsilon_\text{rescaled} = \tilde\varepsilon\,\operatorname{std}(\varepsilon_c)/\operatorname{std}(\tilde\varepsilon)\f$,
/// \f$\varepsilon_\text{final} = \phi\,\varepsilon_\text{rescaled} + (1 - \phi)\,\tilde\varepsilon
///   = \bigl(\phi\,\operatorname{std}(\varepsilon_c)/\operatorname{std}(\tilde\varepsilon) + 1 - \phi\bigr)\tilde\varepsilon\f$.
///
/// std is over all elements of a row about the row's mean. diffusers calls `torch.std`, whose default
/// is the unbiased (n − 1) estimate; the normalisation cancels in the ratio, which we form as
/// \f$\sqrt{\sum(\varepsilon_c - \bar\varepsilon_c)^2 / \sum(\tilde\varepsilon - \bar{\tilde\varepsilon})^2}\f$ with compensated double sums,
/// so the result is diffusers' for any normalisation.
///
/// Accuracy: \f$\tilde\varepsilon\f$ is `madd(w, fl(ε_c − ε_u), ε_u)` in T (kernels::guidance_combine, SIMD), within
/// \f$u(2|w||\varepsilon_c - \varepsilon_u| + |\tilde\varepsilon|)\f$ (u the unit roundoff of T), and exactly ε_c at w = 1 (the
/// rescale is then the identity and skipped) and ε_u at w = 0; the rescale factor is computed in
/// double and applied with one rounding.
/// @param[in] conditional rows × n: the conditional model's output.
/// @param[in] unconditional rows × n: the unconditional model's output.
/// @param[in] rows batch size (the rescale works per row).
/// @param[in] opt w and φ.
/// @param[out] out rows × n: the guided output; may alias either input.
/// @throws std::invalid_argument for a non-finite w, φ ∉ [0, 1] or sizes that disagree;
/// std::domain_error when φ > 0 and a row of \f$\tilde\varepsilon\f$ has no spread (its std is 0, e.g. rows of one element).
template <real_scalar T>
void apply_guidance(std::span<const T> conditional, std::span<const T> unconditional, std::size_t rows,
                    const guidance_options& opt, std::span<T> out) {
  constexpr std::string_view where = "diffusion::apply_guidance";
  detail::check_guidance_options(where, opt);
  detail::check_same_size(where, "conditional", conditional.size(), "unconditional", unconditional.size());
  detail::check_same_size(where, "conditional", conditional.size(), "out", out.size());
  detail::check_no_partial_overlap(where, "conditional", conditional, "out", out);
  detail::check_no_partial_overlap(where, "unconditional", unconditional, "out", out);
  const std::size_t n = detail::rows_split(where, out.size(), rows, "out");
  if (opt.guidance_scale == 1.0) {  // the conditional output itself; the rescale factor is then exactly 1
    if (out.data() != conditional.data()) std::copy(conditional.begin(), conditional.end(), out.begin());
    return;
  }
  for (std::size_t b = 0; b < rows; ++b)
    detail::guidance_row<T>(where, conditional.subspan(b * n, n), unconditional.subspan(b * n, n), out.subspan(b * n, n),
                            b, opt);
}

// ---------------------------------------------------------------------------------------
// A third model pass: perturbed-attention and skip-layer guidance
// ---------------------------------------------------------------------------------------

/// @brief Scales of guidance with a third, perturbed prediction.
struct perturbed_guidance_options {
  double guidance_scale = 7.5;   ///< w of classifier-free guidance, finite (as @ref guidance_options).
  double perturbed_scale = 3.0;  ///< s, finite: the weight of \f$D_c - D_p\f$ (PAG's scale; SLG's `skip_layer_guidance_scale`).
};

/// @brief Guidance from three predictions of one step: conditional \f$D_c\f$, unconditional \f$D_u\f$ and a
/// perturbed conditional one \f$D_p\f$ (the same model with a degraded forward pass):
/// \f$\tilde D = D_u + w(D_c - D_u) + s(D_c - D_p)\f$.
///
/// This is how perturbed-attention guidance (Ahn et al. 2024, arXiv 2403.17377, §3.3 "PAG with CFG":
/// the self-attention map of chosen layers replaced by the identity) and skip-layer guidance (SD 3.5;
/// diffusers `SkipLayerGuidance`: chosen transformer blocks skipped) are expressed: the perturbation is
/// the caller's model call (a third pass, e.g. a model flag or a context that selects the layers), the
/// combination is this function. s = 0 is @ref apply_guidance without rescale; w = 1 drops the
/// unconditional pass (\f$\tilde D = D_c + s(D_c - D_p)\f$, PAG alone). Like plain guidance it is an affine
/// combination with weights summing to 1 (1 − w, w + s, −s), so it gives the same result in every
/// prediction kind (ε, x₀, v: see the file comment). diffusers' formula (its default, non-"original" form) is this one.
///
/// Evaluated in one pass as `madd(s, c − p, madd(w, c − u, u))`: exactly u + w(c − u) (kernels::guidance_combine) at s = 0.
/// @param[in] conditional rows × n; @param[in] unconditional rows × n (not read at w = 1);
/// @param[in] perturbed rows × n; @param[in] opt w and s;
/// @param[out] out the guided output (may alias any input); @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for non-finite scales, sizes that disagree or partial overlaps;
/// std::domain_error when the result overflows T.
template <real_scalar T, execution_policy P = sequential_policy>
void apply_perturbed_guidance(std::span<const T> conditional, std::span<const T> unconditional,
                              std::span<const T> perturbed, const perturbed_guidance_options& opt, std::span<T> out,
                              const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::apply_perturbed_guidance";
  detail::check_finite(where, "guidance_scale", opt.guidance_scale);
  detail::check_finite(where, "perturbed_scale", opt.perturbed_scale);
  detail::check_same_size(where, "conditional", conditional.size(), "out", out.size());
  detail::check_same_size(where, "unconditional", unconditional.size(), "out", out.size());
  detail::check_same_size(where, "perturbed", perturbed.size(), "out", out.size());
  detail::check_no_partial_overlap(where, "conditional", conditional, "out", out);
  detail::check_no_partial_overlap(where, "unconditional", unconditional, "out", out);
  detail::check_no_partial_overlap(where, "perturbed", perturbed, "out", out);
  const T w = detail::coefficient<T>(where, "guidance_scale", opt.guidance_scale);
  const T sc = detail::coefficient<T>(where, "perturbed_scale", opt.perturbed_scale);
  const bool ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(out),
                               kernels::inputs<T>(conditional, unconditional, perturbed), [w, sc](auto c, auto u, auto p) {
                                 using V = decltype(c);
                                 return kernels::madd(V(sc), c - p, kernels::madd(V(w), c - u, u));
                               });
  detail::require_finite_output(where, ok, "the guided output");
}

// ---------------------------------------------------------------------------------------
// Adaptive projected guidance
// ---------------------------------------------------------------------------------------

/// @brief Parameters of adaptive projected guidance (Sadat et al. 2024, arXiv 2410.02416).
struct apg_options {
  /// w, finite: the scale of @ref guidance_options (η = 1 without threshold or momentum is plain guidance at w).
  double guidance_scale = 7.5;
  /// η, finite: the weight of the component of the update parallel to \f$D_c\f$ (the paper uses 0; 1 keeps it).
  double eta = 0.0;
  /// r ≥ 0: the update's norm per row is capped at r (the paper's rescaling, §4.2); 0 = no cap.
  double norm_threshold = 0.0;
  /// β ∈ [−1, 1]: the running average \f$\bar\Delta \leftarrow \Delta + \beta\bar\Delta\f$ (§4.3; the paper uses
  /// negative values, e.g. −0.5). 0 = no momentum (then no state is needed).
  double momentum = 0.0;
};

/// @brief The caller-owned momentum of @ref diffusion::apply_apg "apply_apg": the running average \f$\bar\Delta\f$ of the
/// guidance differences (rows × n, of the outputs' size). Reset `has_average` at the start of each run.
template <real_scalar T>
struct apg_state {
  std::span<T> running_average;  ///< \f$\bar\Delta\f$, written by @ref apply_apg.
  bool has_average = false;      ///< False before the first step (\f$\bar\Delta = 0\f$).
};

namespace detail {
inline void check_apg_options(std::string_view where, const apg_options& opt) {
  check_finite(where, "guidance_scale", opt.guidance_scale);
  check_finite(where, "eta", opt.eta);
  if (!(opt.norm_threshold >= 0.0 && std::isfinite(opt.norm_threshold)))
    throw_invalid(where, "norm_threshold = " + to_text(opt.norm_threshold) + " is outside the allowed range [0, inf)");
  if (!(opt.momentum >= -1.0 && opt.momentum <= 1.0))
    throw_invalid(where, "momentum = " + to_text(opt.momentum) + " is outside the allowed range [-1, 1]");
}

/// One row of APG: Δ is c − u (`m` empty) or the running average `m`. Returns the pass's finiteness.
template <real_scalar T>
bool apg_row(std::string_view where, std::span<const T> c, std::span<const T> u, std::span<const T> m, std::span<T> out,
             const apg_options& opt) {
  const bool averaged = !m.empty();
  // ‖Δ‖ and ⟨Δ, D_c⟩ by compensated sums (differences formed in double: no cancellation in ⟨c − u, c⟩).
  const double norm = averaged ? norm2(m) : distance2(c, u);
  const double along = averaged ? dot(m, c) : transform_sum(c, u, [](double a, double b) { return (a - b) * a; });
  const double cc = sum_of_squares(c);
  const double f = opt.norm_threshold > 0.0 && norm > opt.norm_threshold ? opt.norm_threshold / norm : 1.0;
  // Δ∥ = p D_c with p = f⟨Δ, D_c⟩/⟨D_c, D_c⟩ (0 when D_c = 0: the projection onto {0}).
  const double p = cc > 0.0 ? f * along / cc : 0.0;
  // D_c + (w − 1)(fΔ − p D_c + η p D_c) = a D_c + b Δ.
  const double wm1 = opt.guidance_scale - 1.0;
  const T a = coefficient<T>(where, "1 + (w - 1)(eta - 1) p", 1.0 + wm1 * (opt.eta - 1.0) * p);
  const T b = coefficient<T>(where, "(w - 1) * the threshold factor", wm1 * f);
  if (averaged)
    return kernels::map(sequential_policy{}, kernels::no_noise{}, kernels::outputs(out), kernels::inputs<T>(c, m),
                        [a, b](auto cv, auto mv) {
                          using V = decltype(cv);
                          return kernels::madd(V(b), mv, V(a) * cv);
                        });
  return kernels::map(sequential_policy{}, kernels::no_noise{}, kernels::outputs(out), kernels::inputs<T>(c, u),
                      [a, b](auto cv, auto uv) {
                        using V = decltype(cv);
                        return kernels::madd(V(b), cv - uv, V(a) * cv);
                      });
}
}  // namespace detail

/// @brief Adaptive projected guidance (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High
/// Guidance Scales in Diffusion Models", arXiv 2410.02416, Algorithm 1), per row of a batch:
///
/// \f$\Delta = D_c - D_u\f$; with momentum \f$\bar\Delta \leftarrow \Delta + \beta\bar\Delta\f$ and Δ := \f$\bar\Delta\f$ (§4.3);
/// with a threshold \f$\Delta \leftarrow \Delta\min(1, r/\lVert\Delta\rVert)\f$ (§4.2);
/// \f$\Delta_\parallel = \frac{\langle\Delta, D_c\rangle}{\langle D_c, D_c\rangle}D_c\f$, \f$\Delta_\perp = \Delta - \Delta_\parallel\f$ (Eq. 8);
/// \f$\tilde D = D_c + (w - 1)(\Delta_\perp + \eta\,\Delta_\parallel)\f$ (Eq. 9).
///
/// Which space: the paper and ComfyUI's APG node apply it to the denoised prediction \f$D = \hat x_0\f$ (ComfyUI's
/// `conds_out`), diffusers' `AdaptiveProjectedGuidance` to whatever the model outputs (ε for Stable Diffusion).
/// Unlike plain guidance the result depends on that choice (the projection onto \f$D_c\f$ is not affine), so pass
/// x̂₀ for the paper's method. Norms and projections are over all elements of a row (one sample), as both references do.
///
/// Scale conventions (w here is the paper's): diffusers' `use_original_formulation=True` with
/// `guidance_scale` = w − 1 is this; its default form \f$D_u + w(\Delta_\perp + \eta\Delta_\parallel)\f$ agrees only at
/// η = 1 without threshold or momentum; ComfyUI's node computes \f$D_c + w_\text{node}(\ldots)\f$, i.e. w = w_node + 1.
///
/// Accuracy: the norm, ⟨Δ, D_c⟩ and ⟨D_c, D_c⟩ are compensated double sums (kernels/reductions.hpp; without momentum
/// Δ is formed in double inside them), the two coefficients a, b of \f$\tilde D = a D_c + b\Delta\f$ are computed in double,
/// and the output is one pass `madd(b, Δ, a·D_c)` in T. The momentum update \f$\bar\Delta \leftarrow (D_c - D_u) + \beta\bar\Delta\f$
/// is one pass in T (the state's type, as the references keep it in the tensor's dtype).
/// @param[in] conditional rows × n: \f$D_c\f$; @param[in] unconditional rows × n: \f$D_u\f$; @param[in] rows the batch size;
/// @param[in] opt w, η, r, β; @param[in,out] state the momentum (required when β ≠ 0; `nullptr` otherwise);
/// @param[out] out rows × n, the guided output (may alias either input).
/// @throws std::invalid_argument for options out of range, β ≠ 0 without a state, sizes that disagree or partial
///         overlaps; std::domain_error when a coefficient or the output overflows T.
template <real_scalar T>
void apply_apg(std::span<const T> conditional, std::span<const T> unconditional, std::size_t rows,
               const apg_options& opt, apg_state<T>* state, std::span<T> out) {
  constexpr std::string_view where = "diffusion::apply_apg";
  detail::check_apg_options(where, opt);
  detail::check_same_size(where, "conditional", conditional.size(), "unconditional", unconditional.size());
  detail::check_same_size(where, "conditional", conditional.size(), "out", out.size());
  detail::check_no_partial_overlap(where, "conditional", conditional, "out", out);
  detail::check_no_partial_overlap(where, "unconditional", unconditional, "out", out);
  const std::size_t n = detail::rows_split(where, out.size(), rows, "out");
  if (opt.momentum != 0.0 && state == nullptr)
    detail::throw_invalid(where, "momentum = " + detail::to_text(opt.momentum) +
                                     " needs a state (the running average); pass an apg_state");
  std::span<T> avg;
  if (state != nullptr) {
    avg = state->running_average;
    detail::check_same_size(where, "state->running_average", avg.size(), "out", out.size());
    detail::check_no_partial_overlap(where, "state->running_average", std::span<const T>(avg), "out", std::span<const T>(out));
    detail::check_no_partial_overlap(where, "state->running_average", std::span<const T>(avg), "conditional", conditional);
    detail::check_no_partial_overlap(where, "state->running_average", std::span<const T>(avg), "unconditional",
                                     unconditional);
    if (avg.data() == out.data() || avg.data() == conditional.data() || avg.data() == unconditional.data())
      detail::throw_invalid(where, "state->running_average must be its own array (it is also an input or the output)");
    bool ok;
    if (state->has_average) {
      const T beta = static_cast<T>(opt.momentum);
      ok = kernels::map(sequential_policy{}, kernels::no_noise{}, kernels::outputs(avg),
                        kernels::inputs<T>(conditional, unconditional, std::span<const T>(avg)), [beta](auto c, auto u, auto m) {
                          using V = decltype(c);
                          return kernels::madd(V(beta), m, c - u);
                        });
    } else {
      ok = kernels::map(sequential_policy{}, kernels::no_noise{}, kernels::outputs(avg),
                        kernels::inputs<T>(conditional, unconditional), [](auto c, auto u) { return c - u; });
    }
    detail::require_finite_output(where, ok, "the running average");
    state->has_average = true;
  }
  bool ok = true;
  for (std::size_t b = 0; b < rows; ++b)
    ok = detail::apg_row<T>(where, conditional.subspan(b * n, n), unconditional.subspan(b * n, n),
                            avg.empty() ? std::span<const T>() : std::span<const T>(avg).subspan(b * n, n),
                            out.subspan(b * n, n), opt) && ok;
  detail::require_finite_output(where, ok, "the guided output");
}

// ---------------------------------------------------------------------------------------
// CFG-Zero*
// ---------------------------------------------------------------------------------------

/// @brief Parameters of CFG-Zero* (Fan et al. 2025, arXiv 2503.18886).
struct cfg_zero_star_options {
  double guidance_scale = 4.0;      ///< w, finite (as @ref diffusion::guidance_options "guidance_options": w = 1 is the conditional model).
  std::size_t zero_init_steps = 1;  ///< K: steps 0 … K − 1 output zero (§3.2 "zero-init"; diffusers' `zero_init_steps`).
};

/// @brief The optimized scale of CFG-Zero* for one row (Fan et al. 2025, Eq. 8 with Theorem 1):
/// \f$s^* = \langle v_c, v_u\rangle/\lVert v_u\rVert^2\f$, the minimizer of \f$\lVert v_c - s\,v_u\rVert^2\f$ over s.
/// Compensated double sums. A row with \f$v_u = 0\f$ gives 0 (every s is a minimizer there, and the guided
/// output does not depend on it); diffusers adds 1e-8 to the denominator instead.
/// @param[in] conditional one row of \f$v_c\f$; @param[in] unconditional one row of \f$v_u\f$.
/// @return s*.
/// @throws std::invalid_argument when the sizes differ.
template <real_scalar T>
[[nodiscard]] double cfg_zero_star_scale(std::span<const T> conditional, std::span<const T> unconditional) {
  detail::check_same_size("diffusion::cfg_zero_star_scale", "conditional", conditional.size(), "unconditional",
                          unconditional.size());
  const double uu = sum_of_squares(unconditional);
  return uu > 0.0 ? dot(conditional, unconditional) / uu : 0.0;
}

/// @brief CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
/// arXiv 2503.18886, Algorithm 1), per row: at steps `step` < K the output is 0 (zero-init: the first
/// steps of a flow sampler do not move the state); afterwards
/// \f$\tilde v = s^* v_u + w(v_c - s^* v_u) = w\,v_c + (1 - w)s^*v_u\f$ with s* from @ref cfg_zero_star_scale.
///
/// Written for flow-matching velocities, as the paper and diffusers' `ClassifierFreeZeroStarGuidance` apply it (on
/// the model output); the zero output is a zero velocity only for a velocity model. Evaluated as
/// `madd(w, v_c, k·v_u)` with k = (1 − w)s* in double: exactly v_c at w = 1.
/// @param[in] conditional rows × n: \f$v_c\f$; @param[in] unconditional rows × n: \f$v_u\f$; @param[in] rows the batch size;
/// @param[in] step the 0-based index of the sampler step; @param[in] opt w and K;
/// @param[out] out rows × n (may alias either input).
/// @throws std::invalid_argument for a non-finite w, sizes that disagree or partial overlaps;
///         std::domain_error when a coefficient or the output overflows T.
template <real_scalar T>
void apply_cfg_zero_star(std::span<const T> conditional, std::span<const T> unconditional, std::size_t rows,
                         std::size_t step, const cfg_zero_star_options& opt, std::span<T> out) {
  constexpr std::string_view where = "diffusion::apply_cfg_zero_star";
  detail::check_finite(where, "guidance_scale", opt.guidance_scale);
  detail::check_same_size(where, "conditional", conditional.size(), "unconditional", unconditional.size());
  detail::check_same_size(where, "conditional", conditional.size(), "out", out.size());
  detail::check_no_partial_overlap(where, "conditional", conditional, "out", out);
  detail::check_no_partial_overlap(where, "unconditional", unconditional, "out", out);
  const std::size_t n = detail::rows_split(where, out.size(), rows, "out");
  if (step < opt.zero_init_steps) {
    std::fill(out.begin(), out.end(), T{0});
    return;
  }
  const T w = detail::coefficient<T>(where, "guidance_scale", opt.guidance_scale);
  bool ok = true;
  for (std::size_t b = 0; b < rows; ++b) {
    const auto cb = conditional.subspan(b * n, n), ub = unconditional.subspan(b * n, n);
    const T k = detail::coefficient<T>(where, "(1 - w) s*", (1.0 - opt.guidance_scale) * cfg_zero_star_scale(cb, ub));
    ok = kernels::map(sequential_policy{}, kernels::no_noise{}, kernels::outputs(out.subspan(b * n, n)),
                      kernels::inputs<T>(cb, ub), [w, k](auto c, auto u) {
                        using V = decltype(c);
                        return kernels::madd(V(w), c, V(k) * u);
                      }) && ok;
  }
  detail::require_finite_output(where, ok, "the guided output");
}

/// @brief A denoiser that applies classifier-free guidance to two denoisers: a conditional one
/// called with `conditional_context` and an unconditional one with `unconditional_context`
/// (often the same model object with an empty prompt). It satisfies the @ref denoiser concept for
/// any element type both models support, and predicts what they predict.
///
/// Each call evaluates the unconditional model into an internal buffer and the conditional model
/// into `out`, then calls @ref apply_guidance (two model calls on the same input; a model that
/// batches its two contexts can implement that itself). A model that is not needed is not called:
/// only the conditional one at w = 1, only the unconditional one at w = 0 with φ = 0. The buffer
/// grows on the first call (or @ref reserve) and is reused: no allocation per call at a fixed size.
///
/// Models that learn their variance write 2n per row (`[prediction | variance]`): the guidance
/// applies to the prediction block and the variance block is the conditional model's, as in
/// diffusers' DeepFloyd IF and unCLIP pipelines. The context of the incoming @ref denoiser_input
/// is ignored: the wrapper's own contexts are used.
/// @tparam Conditional the conditional denoiser type.
/// @tparam Unconditional the unconditional denoiser type.
/// @tparam ConditionalContext the conditional model's context type.
/// @tparam UnconditionalContext the unconditional model's context type.
template <class Conditional, class Unconditional = Conditional, class ConditionalContext = no_context,
          class UnconditionalContext = ConditionalContext>
class classifier_free_guidance {
 public:
  /// @param[in] conditional the conditional model (referenced, not copied).
  /// @param[in] unconditional the unconditional model (referenced; may be the same object).
  /// @param[in] opt w and φ.
  /// @param[in] conditional_context the conditioning passed to the conditional model (referenced).
  /// @param[in] unconditional_context the conditioning passed to the unconditional model (referenced).
  /// @throws std::invalid_argument if the two models predict different kinds, for a non-finite w or φ ∉ [0, 1].
  classifier_free_guidance(Conditional& conditional, Unconditional& unconditional, const guidance_options& opt = {},
                           const ConditionalContext* conditional_context = nullptr,
                           const UnconditionalContext* unconditional_context = nullptr)
      : cond_(&conditional), uncond_(&unconditional), cond_ctx_(conditional_context), uncond_ctx_(unconditional_context) {
    constexpr std::string_view where = "diffusion::classifier_free_guidance";
    const prediction pc = conditional.predicts(), pu = unconditional.predicts();
    if (pc != pu)
      detail::throw_invalid(where, "conditional.predicts() = " + std::string(to_string(pc)) +
                                       " differs from unconditional.predicts() = " + std::string(to_string(pu)) +
                                       "; guidance combines outputs of the same kind");
    set_options(opt);
  }

  /// The guided model reads σ when both models do (@ref diffusion::sigma_conditioned "sigma_conditioned").
  static constexpr bool conditions_on_sigma = sigma_conditioned<Conditional> && sigma_conditioned<Unconditional>;

  /// What both models predict.
  [[nodiscard]] prediction predicts() const { return cond_->predicts(); }

  /// The current w and φ.
  [[nodiscard]] const guidance_options& options() const noexcept { return opt_; }

  /// @brief Changes w and φ (e.g. a guidance schedule from a step callback).
  /// @param[in] opt the new options.
  /// @throws std::invalid_argument for a non-finite w or φ ∉ [0, 1].
  void set_options(const guidance_options& opt) {
    detail::check_guidance_options("diffusion::classifier_free_guidance", opt);
    opt_ = opt;
  }

  /// @brief Sizes the internal buffer for calls of up to `elements` output elements of type T.
  /// @param[in] elements rows × width of the largest call.
  template <real_scalar T>
  void reserve(std::size_t elements) {
    auto& buf = buffer<T>();
    if (buf.size() < elements) buf.resize(elements);
  }

  /// @brief Writes the guided prediction for every row of `in`.
  /// @param[in] in the batch (its context is ignored).
  /// @param[out] out rows × n, or rows × 2n for models that learn their variance.
  /// @throws std::invalid_argument if `out` is neither n nor 2n per row; std::domain_error as @ref apply_guidance.
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) {
    static_assert(denoiser<Conditional, T, ConditionalContext>,
                  "classifier_free_guidance: the conditional model is not a denoiser for this element type and context");
    static_assert(denoiser<Unconditional, T, UnconditionalContext>,
                  "classifier_free_guidance: the unconditional model is not a denoiser for this element type and context");
    constexpr std::string_view where = "diffusion::classifier_free_guidance";
    const std::size_t rows = in.rows(), width = detail::rows_split(where, out.size(), rows, "out");
    const std::size_t n = in.row_size();
    if (width != n && width != 2 * n)
      detail::throw_invalid(where, "out has " + detail::to_text(width) + " elements per row; expected " +
                                       detail::to_text(n) + " or " + detail::to_text(2 * n) + " (learned variance)");
    DIFFUSION_ASSERT(cond_->predicts() == uncond_->predicts());
    const denoiser_input<T, ConditionalContext> ci{in.x, in.timesteps, in.sigma, cond_ctx_};
    const denoiser_input<T, UnconditionalContext> ui{in.x, in.timesteps, in.sigma, uncond_ctx_};
    const double w = opt_.guidance_scale;
    if (w == 1.0) {
      (*cond_)(ci, out);
      return;
    }
    if (w == 0.0 && opt_.guidance_rescale == 0.0) {
      (*uncond_)(ui, out);
      return;
    }
    reserve<T>(out.size());
    auto u = std::span<T>(buffer<T>()).first(out.size());
    (*uncond_)(ui, u);
    (*cond_)(ci, out);
    for (std::size_t b = 0; b < rows; ++b)  // the prediction block of each row; a variance block stays the conditional's
      detail::guidance_row<T>(where, std::span<const T>(out).subspan(b * width, n), std::span<const T>(u).subspan(b * width, n),
                              out.subspan(b * width, n), b, opt_);
  }

 private:
  template <class T>
  std::vector<T>& buffer() noexcept {
    if constexpr (std::is_same_v<T, float>)
      return buf_float_;
    else
      return buf_double_;
  }

  Conditional* cond_;
  Unconditional* uncond_;
  const ConditionalContext* cond_ctx_;
  const UnconditionalContext* uncond_ctx_;
  guidance_options opt_{};
  std::vector<float> buf_float_;
  std::vector<double> buf_double_;
};

/// @brief Classifier-free guidance with ONE call of the underlying model on 2B rows (the batched
/// pass of diffusers' pipelines): a @ref diffusion::denoiser that, for a batch of B rows, calls `model`
/// once on the rows $[x;\,x]$ with the timesteps and σ repeated, and combines the two halves as
/// @ref diffusion::classifier_free_guidance "classifier_free_guidance" does (Ho & Salimans 2022, Eq. 6, with
/// the rescale of Lin et al. 2023): $	ildearepsilon = arepsilon_u + w(arepsilon_c - arepsilon_u)$.
///
/// Row order (diffusers' `torch.cat([negative_prompt_embeds, prompt_embeds])` and `noise_pred.chunk(2)`):
/// rows [0, B) of the model call are the unconditional pass, rows [B, 2B) the conditional one. The
/// model is called with `batched_context`, which describes all 2B rows in that order (e.g. 2B class labels,
/// or a text embedding tensor of 2B rows); the library never looks inside it, and the context of the
/// incoming @ref diffusion::denoiser_input "denoiser_input" is ignored.
///
/// Copies: x (B × n), the timesteps and σ are copied twice into an internal buffer of 2B rows, and the
/// model writes its 2B rows into a second buffer (a forward on 2B rows needs the doubled input, as
/// diffusers' `torch.cat([latents] * 2)`). The buffers grow on the first call and are reused: no
/// allocation per call at a fixed size. Both halves are always evaluated (also at w = 1 or w = 0: the
/// batched context describes 2B rows), so the model is called exactly once per evaluation.
///
/// The result equals, bit for bit, @ref diffusion::classifier_free_guidance "classifier_free_guidance" with a conditional
/// and an unconditional model that compute the same rows (the same @ref diffusion::apply_guidance "apply_guidance" row combination; tested),
/// whenever the model's rows do not depend on the batch they are computed in. Models that learn their
/// variance write 2n per row: the prediction block is guided, the variance block is the conditional half's.
/// @tparam Model the denoiser type (called on 2B rows with `BatchedContext`).
/// @tparam BatchedContext the conditioning of the 2B rows.
template <class Model, class BatchedContext = no_context>
class batched_classifier_free_guidance {
 public:
  /// @param[in] model the model (referenced, not copied).
  /// @param[in] opt w and φ.
  /// @param[in] batched_context the conditioning of the 2B rows, unconditional half first (referenced).
  /// @throws std::invalid_argument for a non-finite w or φ ∉ [0, 1].
  batched_classifier_free_guidance(Model& model, const guidance_options& opt = {},
                                   const BatchedContext* batched_context = nullptr)
      : model_(&model), ctx_(batched_context) {
    set_options(opt);
  }

  /// The guided model reads σ when the model does (@ref diffusion::sigma_conditioned "sigma_conditioned").
  static constexpr bool conditions_on_sigma = sigma_conditioned<Model>;

  /// What the model predicts.
  [[nodiscard]] prediction predicts() const { return model_->predicts(); }

  /// The current w and φ.
  [[nodiscard]] const guidance_options& options() const noexcept { return opt_; }

  /// @brief Changes w and φ (e.g. a guidance schedule from a step callback).
  /// @param[in] opt the new options.
  /// @throws std::invalid_argument for a non-finite w or φ ∉ [0, 1].
  void set_options(const guidance_options& opt) {
    detail::check_guidance_options("diffusion::batched_classifier_free_guidance", opt);
    opt_ = opt;
  }

  /// @brief Replaces the conditioning of the 2B rows (referenced; unconditional half first).
  /// @param[in] batched_context the new context.
  void set_context(const BatchedContext* batched_context) noexcept { ctx_ = batched_context; }

  /// @brief Writes the guided prediction for every row of `in` after one model call on 2B rows.
  /// @param[in] in the batch of B rows (its context is ignored).
  /// @param[out] out B × n, or B × 2n for models that learn their variance.
  /// @throws std::invalid_argument if `out` is neither n nor 2n per row; std::domain_error as @ref diffusion::apply_guidance "apply_guidance".
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) {
    static_assert(denoiser<Model, T, BatchedContext>,
                  "batched_classifier_free_guidance: the model is not a denoiser for this element type and the batched context");
    constexpr std::string_view where = "diffusion::batched_classifier_free_guidance";
    const std::size_t rows = in.rows(), width = detail::rows_split(where, out.size(), rows, "out");
    const std::size_t n = in.row_size();
    if (width != n && width != 2 * n)
      detail::throw_invalid(where, "out has " + detail::to_text(width) + " elements per row; expected " +
                                       detail::to_text(n) + " or " + detail::to_text(2 * n) + " (learned variance)");
    detail::check_same_size(where, "in.x", in.x.size(), "rows * row_size", rows * n);
    auto& buf = buffers_.template get<T>();
    if (buf.input.size() < 2 * rows * n) buf.input.resize(2 * rows * n);
    if (buf.output.size() < 2 * rows * width) buf.output.resize(2 * rows * width);
    if (times_.size() < 4 * rows) times_.resize(4 * rows);
    const auto x2 = std::span<T>(buf.input).first(2 * rows * n);
    const auto o2 = std::span<T>(buf.output).first(2 * rows * width);
    const auto t2 = std::span<double>(times_).first(2 * rows), s2 = std::span<double>(times_).subspan(2 * rows, 2 * rows);
    for (std::size_t half = 0; half < 2; ++half) {
      std::copy(in.x.begin(), in.x.end(), x2.begin() + static_cast<std::ptrdiff_t>(half * rows * n));
      std::copy(in.timesteps.begin(), in.timesteps.end(), t2.begin() + static_cast<std::ptrdiff_t>(half * rows));
      std::copy(in.sigma.begin(), in.sigma.end(), s2.begin() + static_cast<std::ptrdiff_t>(half * rows));
    }
    const denoiser_input<T, BatchedContext> batched{x2, t2, s2, ctx_};
    (*model_)(batched, o2);
    const std::span<const T> u = o2.first(rows * width), c = o2.subspan(rows * width);
    for (std::size_t b = 0; b < rows; ++b) {
      const auto cb = c.subspan(b * width, width), ub = u.subspan(b * width, width);
      const auto ob = out.subspan(b * width, width);
      if (opt_.guidance_scale == 1.0) {  // the conditional half itself (the rescale factor is then exactly 1)
        std::copy(cb.begin(), cb.end(), ob.begin());
        continue;
      }
      detail::guidance_row<T>(where, cb.first(n), ub.first(n), ob.first(n), b, opt_);
      if (width == 2 * n) std::copy(cb.begin() + static_cast<std::ptrdiff_t>(n), cb.end(), ob.begin() + static_cast<std::ptrdiff_t>(n));
    }
  }

 private:
  Model* model_;
  const BatchedContext* ctx_;
  guidance_options opt_{};
  detail::per_element_type<detail::io_buffers> buffers_;
  std::vector<double> times_;
};

}  // namespace diffusion

/// @}
