/// @file
/// @brief Score-based samplers in σ-space: NCSN annealed Langevin dynamics (Song & Ermon 2019,
/// Algorithm 1, with NCSNv2's final denoising step) and the predictor–corrector sampler of the
/// variance-exploding SDE (Song et al. 2021, Algorithms 2–4, in the order score_sde runs it).
///
/// Both work on \f$x = x_0 + \sigma\varepsilon\f$ and take the score from a σ-space denoiser D
/// (@ref diffusion::sigma_space_model around any VP model, or any callable of its shape) by
/// Tweedie's formula: \f$s(x, \sigma) = \nabla_x\log p_\sigma(x) = (D(x;\sigma) - x)/\sigma^2\f$.
///
/// Noise streams (row b always uses stream sample `first_sample + b`, so a row's result does
/// not depend on the batch it is in, except with @ref diffusion::corrector_norms::batch_mean):
/// - the initial state \f$x = \sigma_0 z\f$: stream step @ref diffusion::initial_noise_step;
/// - annealed Langevin, iteration j (0-based) at level i (0-based): stream step
///   \f$i\cdot n_\text{steps\_each} + j\f$, the iteration's global 0-based index;
/// - predictor–corrector with C corrector iterations per level (C = 0 without a corrector):
///   corrector iteration j at level i uses stream step \f$i(C+1) + j\f$ and the predictor at
///   level i stream step \f$i(C+1) + C\f$ (score_sde's order: the corrector at σ_i, then the
///   predictor from σ_i; its evaluation count is N(C + 1)). The last predictor step draws nothing.
///
/// Buffers: everything lives in the @ref diffusion::sampler_workspace (`x0` holds D(x; σ), `aux`
/// the noise, `sigmas` the per-row σ handed to D, which copies it there itself); nothing is
/// allocated inside the loops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../models/denoiser.hpp"
#include "../core/execution.hpp"
#include "../kernels/elementwise.hpp"
#include "../kernels/reductions.hpp"
#include "common.hpp"
#include "sigma_common.hpp"
#include "../core/tensor.hpp"

/// @defgroup sampler_langevin Langevin and predictor–corrector samplers
/// @brief Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1) and the VE
/// predictor–corrector sampler (Song et al. 2021, Algorithms 2–4).
/// @{

namespace diffusion {

// ---------------------------------------------------------------------------------------
// Step functions
// ---------------------------------------------------------------------------------------

namespace detail {
/// langevin_step for any noise operand: kernels::langevin with c = α/σ², g = √(2α) in T; throws
/// std::domain_error (naming `where`) when a coefficient or the result is not finite in T.
template <real_scalar T, class Z, class P>
void langevin_step_impl(std::string_view where, double step_size, double sigma, std::span<const T> x,
                        std::span<const T> denoised, const Z& z, std::span<T> x_next, const P& policy) {
  const T c = coefficient<T>(where, "step_size / sigma^2", step_size / (sigma * sigma));
  const T g = coefficient<T>(where, "sqrt(2 step_size)", std::sqrt(2.0 * step_size));
  require_finite_step(where, kernels::langevin(c, g, x, denoised, z, x_next, policy), "the Langevin step");
}

/// The argument checks of the public predictor and Langevin steps: sizes, partial overlaps.
template <real_scalar T>
void check_move_arrays(std::string_view where, std::span<const T> x, std::span<const T> denoised, std::span<const T> z,
                       bool needs_noise, std::span<T> x_next) {
  check_same_size(where, "denoised", denoised.size(), "x", x.size());
  check_same_size(where, "x_next", x_next.size(), "x", x.size());
  if (needs_noise) check_same_size(where, "z", z.size(), "x", x.size());
  const std::span<const T> out(x_next);
  check_no_partial_overlap(where, "x", x, "x_next", out);
  check_no_partial_overlap(where, "denoised", denoised, "x_next", out);
  if (needs_noise) check_no_partial_overlap(where, "z", z, "x_next", out);
}
}  // namespace detail

/// @brief One unadjusted Langevin step at noise level σ, in the convention of the released NCSN
/// code (`anneal_Langevin_dynamics`) and score_sde's `LangevinCorrector`:
/// \f$x' = x + \alpha\,s(x,\sigma) + \sqrt{2\alpha}\,z\f$ with \f$s = (D(x;\sigma) - x)/\sigma^2\f$, evaluated as
/// `madd(√(2α), z, madd(α/σ², D − x, x))` in T (kernels::madd), coefficients computed in double.
///
/// The paper (Song & Ermon 2019, §2.2 and Algorithm 1, line 6) writes the same step as
/// \f$x + \tfrac{\alpha'}{2}s + \sqrt{\alpha'}\,z\f$: the two agree with \f$\alpha' = 2\alpha\f$. The code's
/// convention is the one whose published defaults (ε = 2·10⁻⁵) produced the paper's samples, so
/// it is the one used here, and α is the code's step size.
///
/// For a Gaussian target \f$\mathcal N(m, v)\f$ (the exact score) the chain is
/// \f$x' - m = (1 - \alpha/v)(x - m) + \sqrt{2\alpha}\,z\f$; for 0 < α < 2v its stationary law is
/// \f$\mathcal N\bigl(m, v/(1 - \alpha/(2v))\bigr)\f$: the O(α) bias of the unadjusted chain
/// (tested in tests/test_sampler_langevin.cpp to Monte Carlo accuracy).
/// @param[in] step_size α > 0.
/// @param[in] sigma σ > 0, the level of the score.
/// @param[in] x the state (any number of rows).
/// @param[in] denoised D(x; σ), same size.
/// @param[in] z standard normal noise, same size.
/// @param[out] x_next the new state; may alias x or denoised (the same array, not a partial overlap).
/// @param[in] policy threads of the kernel (bit-identical for any count).
/// @throws std::invalid_argument for a step size or σ that is not finite and > 0, or arrays of different
///         sizes or partially overlapping; std::domain_error when a coefficient or the result is not finite
///         in T (nothing is returned silently non-finite).
///
/// Runs on kernels::langevin (error bound there); annealed_langevin_sample generates z inside
/// that kernel for philox_normal.
template <real_scalar T, execution_policy P = sequential_policy>
void langevin_step(double step_size, double sigma, std::span<const T> x, std::span<const T> denoised,
                   std::span<const T> z, std::span<T> x_next, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::langevin_step";
  detail::check_positive(where, "step_size", step_size);
  detail::check_positive(where, "sigma", sigma);
  detail::check_move_arrays(where, x, denoised, z, true, x_next);
  detail::langevin_step_impl<T>(where, step_size, sigma, x, denoised, z, x_next, policy);
}

namespace detail {
/// The VE predictor move shared by both predictors: x' = r²x + (1 − r²)D + (noise_scale·√(1 − r²)) z,
/// r = σ_next/σ, with no noise at σ_next = 0 (kernels::affine2_noise / kernels::affine2).
/// Throws std::domain_error (naming `where`) when the result is not finite.
template <real_scalar T, class Z, class P = sequential_policy>
void ve_predictor_move(std::string_view where, double sigma, double sigma_next, double noise_scale, std::span<const T> x,
                       std::span<const T> denoised, const Z& z, std::span<T> x_next, const P& policy = P{}) {
  DIFFUSION_ASSERT(denoised.size() == x.size() && x_next.size() == x.size());
  const double r = sigma_next / sigma, q = (1.0 - r) * (1.0 + r);
  const T a = static_cast<T>(r * r), b = static_cast<T>(q);
  const T g = coefficient<T>(where, "the predictor's noise scale", noise_scale * std::sqrt(q));
  const bool ok = sigma_next > 0.0 ? kernels::affine2_noise(a, x, b, denoised, g, z, x_next, policy)
                                   : kernels::affine2(a, x, b, denoised, x_next, policy);
  require_finite_step(where, ok, "the predictor step");
}

/// The checks of the public VE predictors: 0 ≤ σ_next < σ, both finite; the arrays.
template <real_scalar T>
void check_ve_predictor(std::string_view where, double sigma, double sigma_next, std::span<const T> x,
                        std::span<const T> denoised, std::span<const T> z, std::span<T> x_next) {
  check_positive(where, "sigma", sigma);
  if (!(sigma_next >= 0.0 && sigma_next < sigma))
    throw_invalid(where, "sigma_next = " + to_text(sigma_next) + " is outside the allowed range [0, sigma = " +
                             to_text(sigma) + ")");
  check_move_arrays(where, x, denoised, z, sigma_next > 0.0, x_next);
}
}  // namespace detail

/// @brief The reverse-diffusion predictor of the VE SDE (Song et al. 2021, Eq. 47 and Algorithm 2,
/// lines 3–5; score_sde `ReverseDiffusionPredictor`) from σ to σ_next < σ:
/// \f$x' = x + (\sigma^2 - \sigma_\text{next}^2)\,s(x,\sigma) + \sqrt{\sigma^2 - \sigma_\text{next}^2}\,z
///      = r^2x + (1 - r^2)D(x;\sigma) + \sigma\sqrt{1-r^2}\,z\f$, \f$r = \sigma_\text{next}/\sigma\f$,
/// with \f$1 - r^2 = (1-r)(1+r)\f$.
///
/// At σ_next = 0 no noise is added and the result is exactly D(x; σ): score_sde's `x_mean`, which
/// its sampler returns with `denoise = True` (it adds noise of std σ to the state it discards).
/// @param[in] sigma σ > 0.
/// @param[in] sigma_next 0 ≤ σ_next < σ.
/// @param[in] x the state; @param[in] denoised D(x; σ);
/// @param[in] z standard normal noise (not read when σ_next = 0).
/// @param[out] x_next the new state; may alias x or denoised.
/// @throws std::invalid_argument for σ not finite and > 0, σ_next outside [0, σ), arrays of different sizes
///         (z only where σ_next > 0) or partially overlapping; std::domain_error for a non-finite result.
template <real_scalar T>
void reverse_diffusion_predictor_step(double sigma, double sigma_next, std::span<const T> x, std::span<const T> denoised,
                                      std::span<const T> z, std::span<T> x_next) {
  constexpr std::string_view where = "diffusion::reverse_diffusion_predictor_step";
  detail::check_ve_predictor(where, sigma, sigma_next, x, denoised, z, x_next);
  detail::ve_predictor_move(where, sigma, sigma_next, sigma, x, denoised, z, x_next);
}

/// @brief The ancestral-sampling predictor of the VE SDE (Song et al. 2021, Appendix F, Eq. 46;
/// score_sde `AncestralSamplingPredictor.vesde_update_fn`) from σ to σ_next < σ: the same mean as
/// @ref reverse_diffusion_predictor_step and the smaller noise of the posterior
/// \f$q(x_{\sigma_\text{next}} \mid x_\sigma, x_0 = D)\f$:
/// \f$x' = r^2x + (1 - r^2)D(x;\sigma) + \sigma_\text{next}\sqrt{1-r^2}\,z\f$, i.e. std
/// \f$\sqrt{\sigma_\text{next}^2(\sigma^2-\sigma_\text{next}^2)/\sigma^2}\f$. At σ_next = 0 the result is exactly D(x; σ).
/// @param[in] sigma σ > 0.
/// @param[in] sigma_next 0 ≤ σ_next < σ.
/// @param[in] x the state; @param[in] denoised D(x; σ);
/// @param[in] z standard normal noise (not read when σ_next = 0).
/// @param[out] x_next the new state; may alias x or denoised.
/// @throws as @ref diffusion::reverse_diffusion_predictor_step "reverse_diffusion_predictor_step".
template <real_scalar T>
void ve_ancestral_predictor_step(double sigma, double sigma_next, std::span<const T> x, std::span<const T> denoised,
                                 std::span<const T> z, std::span<T> x_next) {
  constexpr std::string_view where = "diffusion::ve_ancestral_predictor_step";
  detail::check_ve_predictor(where, sigma, sigma_next, x, denoised, z, x_next);
  detail::ve_predictor_move(where, sigma, sigma_next, sigma_next, x, denoised, z, x_next);
}

namespace detail {

/// Requires levels × per_level noise-stream steps to stay below initial_noise_step.
inline void langevin_check_stream_steps(std::string_view where, std::size_t levels, std::size_t per_level) {
  if (per_level > (initial_noise_step - 1) / levels)
    throw_invalid(where, to_text(levels) + " levels x " + to_text(per_level) +
                             " noise draws per level exceed the " + to_text(initial_noise_step - 1) +
                             " stream steps below initial_noise_step");
}

}  // namespace detail

/// @brief The signal-to-noise step size of the score-SDE Langevin corrector (Song et al. 2021,
/// Algorithm 4 with α = 1 for the VE SDE; score_sde `LangevinCorrector`) for one row:
/// \f$\epsilon = 2\left(r\,\lVert z\rVert_2 / \lVert s\rVert_2\right)^2\f$ with \f$\lVert s\rVert_2 = \lVert D(x;\sigma) - x\rVert_2/\sigma^2\f$,
/// computed as \f$2(r\sigma^2)^2\,\textstyle\sum z_k^2 / \sum (D_k - x_k)^2\f$.
///
/// Both sums are the compensated reductions of reductions.hpp (sum_of_squares(),
/// squared_distance()): each within about 4u of its value (u = 2⁻⁵³) whatever the row length, so
/// ε is within about 10u.
/// @param[in] snr the target signal-to-noise ratio r > 0.
/// @param[in] sigma σ > 0.
/// @param[in] x one row of the state.
/// @param[in] denoised D(x; σ) for that row.
/// @param[in] z the row's noise.
/// @return ε; +∞ when D(x; σ) = x (a vanishing score: the rule is undefined there, also for z = 0) or when
///         ε overflows; never NaN.
/// @throws std::invalid_argument for snr or σ not finite and > 0, or arrays of different sizes.
template <real_scalar T>
[[nodiscard]] double langevin_snr_step_size(double snr, double sigma, std::span<const T> x, std::span<const T> denoised,
                                            std::span<const T> z) {
  constexpr std::string_view where = "diffusion::langevin_snr_step_size";
  detail::check_positive(where, "snr", snr);
  detail::check_positive(where, "sigma", sigma);
  detail::check_same_size(where, "denoised", denoised.size(), "x", x.size());
  detail::check_same_size(where, "z", z.size(), "x", x.size());
  const double zz = sum_of_squares(z), dd = squared_distance(denoised, x);
  if (!(dd > 0.0)) return std::numeric_limits<double>::infinity();  // also dd NaN from a non-finite input
  const double rs2 = snr * sigma * sigma;
  const double eps = 2.0 * rs2 * rs2 * (zz / dd);
  return eps == eps ? eps : std::numeric_limits<double>::infinity();
}

// ---------------------------------------------------------------------------------------
// Annealed Langevin dynamics
// ---------------------------------------------------------------------------------------

/// @brief Options of @ref annealed_langevin_sample (NCSN's defaults).
struct annealed_langevin_options {
  /// ε > 0 of α_i = ε σ_i²/σ_L² (NCSN's `step_lr`, 2e-5 for CIFAR-10 with σ = 1 … 0.01, L = 10).
  double epsilon = 2e-5;
  /// Langevin iterations per level, ≥ 1 (NCSN: 100).
  std::size_t n_steps_each = 100;
  /// After the last level, replace x by \f$D(x;\sigma_L) = x + \sigma_L^2 s(x,\sigma_L)\f$ (NCSNv2's `denoise`,
  /// Jolicoeur-Martineau et al. 2021): one more model call. Off in NCSN's Algorithm 1.
  bool final_denoise = false;
  /// Stream index of row 0.
  std::uint64_t first_sample = 0;
  /// Start from \f$x = \sigma_1 z\f$, \f$z \sim \mathcal N(0, I)\f$ (the VE prior, as score_sde); false: x holds
  /// the initial state (NCSN draws it uniform on [0, 1]: do that yourself and pass it in).
  bool draw_initial_noise = true;
  /// Scan every D(x; σ) for NaN/±∞.
  bool check_finite = true;
};

/// @brief NCSN annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): for each level σ_i of
/// a strictly decreasing list σ_1 > … > σ_L > 0, with \f$\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2\f$, run
/// `n_steps_each` iterations of @ref langevin_step
/// \f$x \leftarrow x + \alpha_i\,s(x,\sigma_i) + \sqrt{2\alpha_i}\,z\f$, \f$s = (D(x;\sigma_i) - x)/\sigma_i^2\f$.
///
/// For Gaussian data the whole chain is linear, so its output law is known exactly
/// (tests/test_sampler_langevin.cpp compares 10⁵ samples per dimension with it, within 5 standard
/// errors). That law is biased against the data: at the small levels α_i is far below the marginal
/// variance s² + σ_i², so they cannot mix and the spread set near σ ≈ 0.1 survives. For data N(0.3, 0.5²) and 10 geometric levels 1 … 0.01 the
/// output variance exceeds the data's by 3.16 % with NCSN's defaults (ε = 2e-5, 100 iterations;
/// 3.08 % with `final_denoise`), and by 4.2 % with ε = 1e-4 and 20 iterations (measured 0.2636 against
/// the exact 0.2606 and the data's 0.25); the mean is unbiased. At one level with many iterations
/// the chain reaches the stationary law of @ref langevin_step (tested at α/v = 0.3: variance
/// v/(1 − α/(2v)), 17.6 % above v).
///
/// Noise: iteration j of level i (0-based) uses stream step i·n_steps_each + j; the callback runs
/// after every iteration with `index` = that step + 1, `count` = L·n_steps_each, `sigma` = σ_i,
/// `timestep` the model's time at σ_i (what a `sigma_space_model` passes its model; σ itself for
/// other σ-space denoisers) and `x0_pred` = D(x; σ_i) before the update.
/// @param[in] D the σ-space denoiser: `D(std::span<const T> x, std::span<const double> sigmas,
///   std::span<T> x0, sampler_workspace<T>&, const Context*)` (@ref sigma_space_model).
/// @param[in,out] x rows × n: the initial state in (or drawn), the sample out.
/// @param[in] rows batch size.
/// @param[in] noise the noise source.
/// @param[in] sigmas σ_1 > … > σ_L > 0 (e.g. geometric_sigmas()).
/// @param[in] opt options.
/// @param[in] hooks callback, workspace, context.
/// @return whether it completed, steps (Langevin iterations) and model calls (+1 for the final denoising).
/// @throws std::invalid_argument for an empty, non-positive or non-decreasing σ list, ε ≤ 0,
/// n_steps_each = 0, or bad sizes; std::domain_error when D(x; σ) is not finite (naming the row,
/// element and stream step).
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
sample_result annealed_langevin_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                                       const annealed_langevin_options& opt = {},
                                       const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(sigma_denoiser<SigmaModel, T, Context>,
                "annealed_langevin_sample: D must be a sigma-space denoiser (see sigma_space_model)");
  constexpr std::string_view where = "diffusion::annealed_langevin_sample";
  detail::check_level_list(where, sigmas);
  detail::check_positive(where, "epsilon", opt.epsilon);
  if (opt.n_steps_each == 0) detail::throw_invalid(where, "n_steps_each = 0 must be >= 1");
  const std::size_t L = sigmas.size(), K = opt.n_steps_each;
  detail::langevin_check_stream_steps(where, L, K);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks, detail::sigma_list_kind::levels);
  const auto xs = loop.x();
  const auto den = loop.buffer(0);
  const double sigma_last = sigmas[L - 1];
  for (std::size_t i = 0; i < L; ++i) {
    const double sigma = sigmas[i], ratio = sigma / sigma_last;
    const double alpha = opt.epsilon * ratio * ratio;
    for (std::size_t j = 0; j < K; ++j) {
      const std::size_t k = i * K + j;
      loop.denoise(xs, sigma, den, k);
      detail::langevin_step_impl<T>(where, alpha, sigma, xs, den, loop.noise(k), xs, loop.policy());
      if (!loop.report(L * K, loop.time(sigma), sigma, sigma, den)) return loop.result();
    }
  }
  if (opt.final_denoise) {
    loop.denoise(xs, sigma_last, den, L * K);
    std::copy(den.begin(), den.end(), xs.begin());
  }
  return loop.result();
}

// ---------------------------------------------------------------------------------------
// Predictor–corrector (score SDE, VE)
// ---------------------------------------------------------------------------------------

/// @brief The predictor of predictor_corrector_sample() (score_sde names in parentheses).
enum class pc_predictor {
  reverse_diffusion,  ///< @ref reverse_diffusion_predictor_step (score_sde's `reverse_diffusion`, its VE default).
  ancestral,          ///< @ref ve_ancestral_predictor_step (score_sde's `ancestral_sampling`).
  none,               ///< Corrector only (annealed Langevin with the SNR step rule).
};

/// @brief The corrector of predictor_corrector_sample() (or none).
enum class pc_corrector {
  langevin,  ///< Langevin with the signal-to-noise step rule (Song et al. 2021, Algorithm 4; score_sde `langevin`).
  none,      ///< Predictor only.
};

/// @brief Which norms enter the corrector's step size \f$\epsilon = 2(r\lVert z\rVert/\lVert s\rVert)^2\f$.
enum class corrector_norms {
  /// Each row its own ε from its own norms (default): rows stay independent of the batch.
  per_row,
  /// score_sde's parity mode: one ε for the batch from the batch means of the per-row norms
  /// (`torch.norm(…, dim=-1).mean()`); a row's result then depends on the other rows.
  batch_mean,
};

/// @brief Options of @ref predictor_corrector_sample (score_sde's VE CIFAR-10 settings).
struct predictor_corrector_options {
  pc_predictor predictor = pc_predictor::reverse_diffusion;  ///< The predictor, or none.
  pc_corrector corrector = pc_corrector::langevin;           ///< The corrector, or none.
  /// Corrector iterations per level, ≥ 1 when the corrector is on (score_sde's `n_steps_each`, 1).
  std::size_t corrector_steps = 1;
  /// Target signal-to-noise ratio r > 0 of the corrector (score_sde: 0.16 for VE CIFAR-10, our default;
  /// 0.075–0.17 for its other VE configurations).
  double snr = 0.16;
  /// How the corrector's norms are taken.
  corrector_norms norms = corrector_norms::per_row;
  /// Corrector-only runs (predictor none): finish with x ← D(x; σ_N) (one more model call).
  /// score_sde returns x undenoised there (false). With a predictor the last predictor step
  /// already lands on D(x; σ_N) and this is ignored.
  bool final_denoise = false;
  /// Stream index of row 0.
  std::uint64_t first_sample = 0;
  /// Start from \f$x = \sigma_1 z\f$ (score_sde's `prior_sampling`); false: x holds the initial state.
  bool draw_initial_noise = true;
  /// Scan every D(x; σ) for NaN/±∞.
  bool check_finite = true;
};

/// @brief The predictor–corrector sampler of the variance-exploding SDE (Song et al. 2021, §4.2,
/// Algorithms 2 and 4; score_sde `get_pc_sampler`) on levels σ_1 > … > σ_N > 0 followed by 0.
///
/// At each level i, as score_sde's loop runs it:
/// 1. corrector (C = `corrector_steps` iterations): \f$\epsilon = 2(r\lVert z\rVert/\lVert s\rVert)^2\f$
///    (@ref langevin_snr_step_size, per row or batch-mean), then @ref langevin_step with step ε;
/// 2. predictor from σ_i to σ_{i+1} (σ_{N+1} = 0): @ref reverse_diffusion_predictor_step or
///    @ref ve_ancestral_predictor_step. The last one lands exactly on D(x; σ_N) without noise, which
///    is score_sde's `x_mean` returned with `denoise = True`.
///
/// The paper's Algorithm 2 listing runs the predictor into a level before correcting at it; score_sde's
/// code (followed here) corrects at σ_i before predicting from it, so the first level gets a
/// corrector and the run ends on a predictor step.
///
/// Measured on data N(0.3, 0.5²) with 100 geometric levels 50 … 0.01 (10⁵ samples each,
/// tests/test_sampler_langevin.cpp): predictor-only chains are linear and match their exact laws
/// within 5 standard errors; those laws over-disperse by 9.1 % (reverse diffusion) and under-disperse
/// by 8.2 % (ancestral) at this coarse spacing. The full PC sampler (snr 0.16, one corrector step)
/// over-disperses by 2.9 % on rows of 1024 elements (measured variance 0.25735 against the 0.25734 of
/// a moment recursion that is exact for Gaussian rows) and by 2.5 % in the long-row limit; with
/// per-row norms on short rows the corrector's noise is inflated by (n + 2)/(n − 2) on average, which
/// gives +9.0 % at n = 64; with @ref corrector_norms::batch_mean the step is one number for the batch
/// and the long-row value holds (measured 0.25633 against 0.25635 at n = 64, 1600 rows).
///
/// Noise: corrector iteration j at level i uses stream step i(C+1) + j, the predictor i(C+1) + C
/// (C = 0 without a corrector). The callback runs after every corrector iteration and every
/// predictor step (`count` = N·(C + [predictor])), with `sigma` = σ_i and `x0_pred` = D(x; σ_i).
/// @param[in] D the σ-space denoiser (@ref sigma_space_model or a callable of its shape).
/// @param[in,out] x rows × n: the initial state in (or drawn), the sample out.
/// @param[in] rows batch size.
/// @param[in] noise the noise source.
/// @param[in] sigmas σ_1 > … > σ_N > 0 (e.g. geometric_sigmas(), the VE SDE's discretization).
/// @param[in] opt options.
/// @param[in] hooks callback, workspace, context.
/// @return whether it completed, steps (corrector iterations + predictor steps) and model calls.
/// @throws std::invalid_argument for a bad σ list or options (snr ≤ 0, corrector_steps = 0 with
/// the corrector on, neither predictor nor corrector) or sizes; std::domain_error for a non-finite
/// D(x; σ), or a row whose score vanishes (the SNR step is then undefined), naming the stream step.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
sample_result predictor_corrector_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                                         std::span<const double> sigmas, const predictor_corrector_options& opt = {},
                                         const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(sigma_denoiser<SigmaModel, T, Context>,
                "predictor_corrector_sample: D must be a sigma-space denoiser (see sigma_space_model)");
  constexpr std::string_view where = "diffusion::predictor_corrector_sample";
  detail::check_level_list(where, sigmas);
  const bool use_corrector = opt.corrector == pc_corrector::langevin;
  const bool use_predictor = opt.predictor != pc_predictor::none;
  if (!use_corrector && !use_predictor)
    detail::throw_invalid(where, "predictor and corrector are both none; nothing to run");
  if (use_corrector) {
    detail::check_positive(where, "snr", opt.snr);
    if (opt.corrector_steps == 0)
      detail::throw_invalid(where, "corrector_steps = 0 must be >= 1 with the langevin corrector (use corrector none)");
  }
  const std::size_t N = sigmas.size(), C = use_corrector ? opt.corrector_steps : 0;
  if (C >= initial_noise_step)  // (C + 1) below must not wrap
    detail::throw_invalid(where, "corrector_steps = " + detail::to_text(C) + " is outside the allowed range [1, " +
                                     detail::to_text(initial_noise_step - 1) + "]");
  detail::langevin_check_stream_steps(where, N, C + 1);
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks, detail::sigma_list_kind::levels);
  const auto xs = loop.x();
  const auto den = loop.buffer(0), z = loop.buffer(1);
  const std::size_t n = loop.row_size();
  auto vanishing_score = [&](const std::string& which, std::size_t step, double sigma) {
    detail::throw_domain(where, "the score of " + which + " is 0 (D(x; sigma) = x) in step " + detail::to_text(step) +
                                    " (sigma " + detail::to_text(sigma) +
                                    "): the corrector's step 2 (snr |z|/|s|)^2 is undefined");
  };
  const std::size_t count = N * (C + (use_predictor ? 1 : 0));
  for (std::size_t i = 0; i < N; ++i) {
    const double sigma = sigmas[i], sigma_next = i + 1 < N ? sigmas[i + 1] : 0.0;
    for (std::size_t j = 0; j < C; ++j) {
      const std::size_t k = i * (C + 1) + j;
      loop.denoise(xs, sigma, den, k);
      detail::fill_step_noise(noise, opt.first_sample, static_cast<std::uint64_t>(k), z, rows, n);
      if (opt.norms == corrector_norms::per_row) {
        for (std::size_t b = 0; b < rows; ++b) {
          const auto xb = std::span<const T>(xs).subspan(b * n, n), db = std::span<const T>(den).subspan(b * n, n);
          const auto zb = std::span<const T>(z).subspan(b * n, n);
          const double eps = langevin_snr_step_size<T>(opt.snr, sigma, xb, db, zb);
          if (!std::isfinite(eps)) vanishing_score("row " + detail::to_text(b), k, sigma);
          langevin_step<T>(eps, sigma, xb, db, zb, xs.subspan(b * n, n), loop.policy());
        }
      } else {
        double z_norms = 0.0, d_norms = 0.0;  // sums over rows of |z_b| and |D_b - x_b|
        for (std::size_t b = 0; b < rows; ++b) {
          z_norms += norm2(std::span<const T>(z).subspan(b * n, n));
          d_norms += distance2(std::span<const T>(den).subspan(b * n, n), std::span<const T>(xs).subspan(b * n, n));
        }
        const double ratio = opt.snr * sigma * sigma * z_norms / d_norms;  // r |z|_mean / |s|_mean
        const double eps = 2.0 * ratio * ratio;
        if (!std::isfinite(eps)) vanishing_score("every row", k, sigma);
        langevin_step<T>(eps, sigma, xs, den, z, xs, loop.policy());
      }
      if (!loop.report(count, loop.time(sigma), sigma, sigma, den)) return loop.result();
    }
    if (use_predictor) {
      const std::size_t k = i * (C + 1) + C;
      loop.denoise(xs, sigma, den, k);
      const double scale = opt.predictor == pc_predictor::reverse_diffusion ? sigma : sigma_next;
      if (sigma_next > 0.0)  // the noise generated inside the kernel for philox_normal
        detail::ve_predictor_move<T>(where, sigma, sigma_next, scale, xs, den, loop.noise(k), xs, loop.policy());
      else
        detail::ve_predictor_move<T>(where, sigma, sigma_next, scale, xs, den, kernels::no_noise{}, xs, loop.policy());
      if (!loop.report(count, loop.time(sigma), sigma, sigma_next, den)) return loop.result();
    }
  }
  if (!use_predictor && opt.final_denoise) {
    loop.denoise(xs, sigmas[N - 1], den, N * (C + 1));
    std::copy(den.begin(), den.end(), xs.begin());
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
