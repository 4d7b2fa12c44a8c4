/// @file
/// @brief Classifier-free guidance (Ho & Salimans 2022) with the guidance rescale of Lin et al.
/// 2023: a free function on model outputs and a @ref diffusion::denoiser wrapper that combines a
/// conditional and an unconditional model.
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
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../kernels/reductions.hpp"
#include "../process/prediction.hpp"
#include "denoiser.hpp"

/// @defgroup guidance Classifier-free guidance
/// @brief \f$\tilde\varepsilon = \varepsilon_u + w(\varepsilon_c - \varepsilon_u)\f$ (Ho & Salimans 2022, Eq. 6) and its rescale
/// (Lin et al. 2023, §3.4), as a function and as a denoiser wrapper.
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

}  // namespace diffusion

/// @}
