/// @file
/// @brief DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021) with η,
/// its deterministic inversion, on full or respaced timestep sequences: the step functions you
/// call from your own loop and the loops over them.
///
/// A step takes the model's output at x_t and updates x in place; x̂₀ goes to an optional
/// buffer. The noise of a step is kernels::no_noise, a buffer of normals (rows × n), or a
/// Philox stream generated inside the fused kernel (@ref diffusion::step_stream):
/// @code
/// for (std::size_t k = 0; k < steps.size(); ++k) {
///   model(x, steps[k], eps);                                          // your model call
///   diffusion::ddim_step<float>(s, {steps[k], steps.next(k)}, eps, x, diffusion::kernels::no_noise{});
/// }
/// @endcode
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
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
#include "../models/denoiser.hpp"
#include "../noise/philox.hpp"
#include "../process/parameterization.hpp"
#include "../process/posterior.hpp"
#include "../schedule/noise_schedule.hpp"
#include "../schedule/timesteps.hpp"
#include "common.hpp"

/// @defgroup sampler_ddpm DDPM and DDIM samplers
/// @brief Ancestral sampling (DDPM Algorithm 2), DDIM with η (Song et al. 2021, Eq. 12), DDIM inversion.
/// @{

namespace diffusion {

// ---------------------------------------------------------------------------------------
// DDPM
// ---------------------------------------------------------------------------------------

/// @brief Options of one @ref ddpm_step.
struct ddpm_step_options {
  prediction kind = prediction::epsilon;               ///< What the model output predicts.
  variance_type variance = variance_type::fixed_small;  ///< The reverse variance (learned: 2n outputs per row).
  x0_processing x0{};                                   ///< x̂₀ clipping or dynamic thresholding.
  std::size_t rows = 1;                                 ///< Rows of x (thresholding and noise streams are per row).
  parallel_policy execution{1};                         ///< Threads (bit-identical for any count).
};

namespace detail {

/// The noise operand of row b of a step's operand (rows of n elements).
template <real_scalar T>
std::span<const T> row_noise(std::span<const T> z, std::size_t b, std::size_t n) noexcept {
  return z.subspan(b * n, n);
}
inline kernels::philox_stream row_noise(const kernels::philox_stream& z, std::size_t b, std::size_t) noexcept {
  return {z.source, z.first_sample + b, z.step, z.offset, z.row_length};
}
inline kernels::no_noise row_noise(kernels::no_noise, std::size_t, std::size_t) noexcept { return {}; }

/// The checks of a step's arrays: sizes (x rows × n, output rows × width, noise, x̂₀), the
/// scratch a threshold needs, and no partial overlap.
template <storage_scalar T, class Z>
std::size_t check_step_arrays(std::string_view where, std::size_t rows, std::size_t width_factor,
                              std::span<const T> model_output, std::span<T> x, const Z& noise,
                              const step_buffers<T>& buffers, const x0_processing& proc) {
  const std::size_t n = sampler_rows(where, x.size(), rows);
  if (model_output.size() != rows * n * width_factor)
    check_same_size(where, "model_output", model_output.size(),
                    "rows x width (width = " + to_text(width_factor) + " x the row size)", rows * n * width_factor);
  check_noise_operand<T>(where, noise, x.size());
  if (!buffers.x0.empty()) check_same_size(where, "buffers.x0", buffers.x0.size(), "x", x.size());
  if (proc.threshold) {
    if constexpr (half_scalar<T>)
      throw_invalid(where, "dynamic thresholding is not offered on 16-bit storage (float16, bfloat16): "
                           "step float or double arrays, or clip x0 instead");
    if (buffers.x0.empty()) throw_invalid(where, "dynamic thresholding needs buffers.x0 (rows x n) for x0");
    if (buffers.scratch.size() < n)
      throw_invalid(where, "dynamic thresholding needs buffers.scratch of at least the row size " + to_text(n) +
                               " (it has " + to_text(buffers.scratch.size()) + ")");
  }
  check_no_partial_overlap(where, "model_output", model_output, "x", x);
  check_no_partial_overlap(where, "buffers.x0", buffers.x0, "x", x);
  if (!buffers.x0.empty() && (buffers.x0.data() == x.data() || buffers.x0.data() == model_output.data()))
    throw_invalid(where, "buffers.x0 must not be x or model_output");
  check_x0_processing(where, proc);
  return n;
}

/// ddpm_step for any noise operand on validated arrays.
template <real_scalar T, class Z>
void ddpm_step_impl(std::string_view where, const noise_schedule& s, std::size_t j, const ddpm_step_options& opt,
                    std::span<const T> x, std::span<const T> model_out, const Z& z, std::span<T> x0,
                    std::span<T> x_next, std::span<T> scratch) {
  const std::size_t rows = opt.rows, n = x.size() / rows;
  const variance_type v = opt.variance;
  const x0_processing& proc = opt.x0;
  const auto& policy = opt.execution;
  const bool learned = learns_variance(v);
  const std::size_t width = learned ? 2 * n : n;
  const schedule_step& st = s[j];
  const affine_coefficients to_x0 = conversion_coefficients(s, j, opt.kind, prediction::sample);
  const T c0 = static_cast<T>(st.posterior_mean_coef_x0), ct = static_cast<T>(st.posterior_mean_coef_xt);
  const T ax = coefficient<T>(where, "the x0 coefficient of x", to_x0.a);
  const T bx = coefficient<T>(where, "the x0 coefficient of the model output", to_x0.b);
  const auto what = [j] { return "the DDPM step at j = " + to_text(j); };
  if (j == 0 || !learned) {
    // Fixed variance: one standard deviation for the whole tensor (no noise at j = 0).
    const T sd = j == 0 ? T(0) : static_cast<T>(std::exp(0.5 * fixed_log_variance(s, j, v)));
    const kernels::ddpm_coefficients<T> c{ax, bx, proc.clip && !proc.threshold, static_cast<T>(proc.clip_value), c0, ct, sd};
    if (!proc.threshold && !learned) {  // one fused pass over all rows
      const bool ok = j == 0 ? kernels::ddpm_ancestral(c, x, model_out, kernels::no_noise{}, x0, x_next, policy)
                             : kernels::ddpm_ancestral(c, x, model_out, z, x0, x_next, policy);
      require_finite_step(where, ok, what);
      return;
    }
    for (std::size_t b = 0; b < rows; ++b) {
      const auto xb = x.subspan(b * n, n), ob = model_out.subspan(b * width, n);
      const auto x0b = x0.empty() ? x0 : x0.subspan(b * n, n), xn = x_next.subspan(b * n, n);
      bool ok;
      if (!proc.threshold) {
        ok = kernels::ddpm_ancestral(c, xb, ob, kernels::no_noise{}, x0b, xn, policy);  // j = 0, learned variance
      } else {
        // Dynamic thresholding needs the row's quantile of |x̂₀| first: two passes.
        ok = kernels::affine2(ax, xb, bx, ob, x0b, policy);
        process_x0_row(proc, x0b, scratch);
        ok = ok && (j == 0 ? kernels::affine2(c0, std::span<const T>(x0b), ct, xb, xn, policy)
                           : kernels::affine2_noise(c0, std::span<const T>(x0b), ct, xb, sd, row_noise(z, b, n), xn, policy));
      }
      require_finite_step(where, ok, what);
    }
    return;
  }
  // Learned variance (j > 0, so never no_noise): σ per element from the model's variance
  // block (std::exp, scalar), the noise still generated chunk-wise inside the loop.
  if constexpr (!std::is_same_v<Z, kernels::no_noise>) {
    const reverse_log_variance log_var = reverse_log_variance::at(s, j, v);
    const bool clip = proc.clip && !proc.threshold;
    const T cv = static_cast<T>(proc.clip_value);
    for (std::size_t b = 0; b < rows; ++b) {
      const auto xb = x.subspan(b * n, n), ob = model_out.subspan(b * width, n), var = model_out.subspan(b * width + n, n);
      const auto xn = x_next.subspan(b * n, n);
      bool ok;
      if (x0.empty()) {  // x̂₀ (with the clip) formed inline, not stored
        ok = kernels::map_scalar(policy, row_noise(z, b, n), xn, kernels::inputs<T>(xb, ob, var),
                                 [=](T xk, T ok_, T vk, T zk) {
                                   T h = kernels::madd(ax, xk, bx * ok_);
                                   if (clip) h = std::clamp(h, -cv, cv);
                                   const T mean = kernels::madd(c0, h, ct * xk);
                                   return kernels::madd(static_cast<T>(std::exp(0.5 * log_var(static_cast<double>(vk)))),
                                                        zk, mean);
                                 });
      } else {
        const auto x0b = x0.subspan(b * n, n);
        ok = kernels::affine2(ax, xb, bx, ob, x0b, policy);
        if (proc.clip || proc.threshold) process_x0_row(proc, x0b, scratch);
        ok = ok && kernels::map_scalar(policy, row_noise(z, b, n), xn, kernels::inputs<T>(xb, std::span<const T>(x0b), var),
                                       [c0, ct, log_var](T xk, T x0k, T vk, T zk) {
                                         const T mean = kernels::madd(c0, x0k, ct * xk);
                                         return kernels::madd(static_cast<T>(std::exp(0.5 * log_var(static_cast<double>(vk)))),
                                                              zk, mean);
                                       });
      }
      require_finite_step(where, ok, what);
    }
  }
}

}  // namespace detail

/// @brief One DDPM ancestral step for all rows at step j of a (possibly respaced) schedule:
/// \f$\hat x_0\f$ from the model output, optional clip/threshold, then
/// \f$x_{j-1} = \tilde\mu_j(x_j, \hat x_0) + \sigma_j z\f$ with no noise at j = 0 (DDPM Algorithm 2, Eq. 11 for ε;
/// the variance of `opt.variance`, learned ones from the model's second block).
///
/// Runs on the fused kernel kernels::ddpm_ancestral (one pass: x̂₀, clip, posterior mean, noise),
/// except that dynamic thresholding (a per-row quantile) takes two passes and a learned variance a
/// scalar `std::exp` per element.
/// @param[in] s the sampling schedule (respaced or full); @param[in] j 0-based step in `s`;
/// @param[in] model_output rows × width (width = n, or 2n for a learned variance);
/// @param[in,out] x rows × n: x_j in, x_{j−1} out;
/// @param[in] noise kernels::no_noise (only at j = 0), a buffer of rows × n normals, or a Philox stream
/// (@ref diffusion::step_stream "step_stream": row b is stream first_sample + b);
/// @param[in] opt prediction kind, variance, x̂₀ processing, rows, threads;
/// @param[in] buffers x̂₀ out (optional; required with thresholding, with a scratch of n).
/// @throws std::out_of_range for j ≥ T; std::invalid_argument for sizes, options, missing noise or
///         partially overlapping arrays; std::domain_error when the step overflows T.
template <real_scalar T, class Z>
  requires kernels::noise_operand<Z, T>
void ddpm_step(const noise_schedule& s, std::size_t j, std::span<const T> model_output, std::span<T> x, const Z& noise,
               const ddpm_step_options& opt = {}, const step_buffers<T>& buffers = {}) {
  constexpr std::string_view where = "diffusion::ddpm_step";
  detail::check_index(where, "j", j, s.size());
  const std::size_t n = detail::check_step_arrays<T>(where, opt.rows, learns_variance(opt.variance) ? 2 : 1,
                                                     model_output, x, noise, buffers, opt.x0);
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (j > 0) detail::throw_invalid(where, "step j = " + detail::to_text(j) + " > 0 adds noise; pass a noise operand");
  }
  detail::ddpm_step_impl<T>(where, s, j, opt, std::span<const T>(x), model_output, detail::rows_of(noise, n),
                            buffers.x0, x, buffers.scratch);
}

namespace detail {
/// The rows of a pre-0.2 positional step, whose row size is the size of its `scratch` (n > 0
/// dividing x.size()); x_next must have x's size.
inline std::size_t legacy_rows(std::string_view where, std::size_t x_size, std::size_t x_next_size, std::size_t n) {
  if (n == 0 || x_size % n != 0)
    throw_invalid(where, "scratch.size() = " + to_text(n) + " must be the row size (it divides x.size() = " +
                             to_text(x_size) + ")");
  check_same_size(where, "x_next", x_next_size, "x", x_size);
  return x_size / n;
}
}  // namespace detail

/// @brief The pre-0.2 positional form of @ref ddpm_step (buffer noise), validated as the new one.
/// @param[in] s schedule; @param[in] j step; @param[in] kind prediction; @param[in] v variance;
/// @param[in] proc x̂₀ processing; @param[in] x rows × n; @param[in] model_out rows × width;
/// @param[in] z rows × n normals (ignored at j = 0); @param[out] x0 x̂₀; @param[out] x_next may alias x;
/// @param[in,out] scratch n elements; @param[in] policy threads.
template <real_scalar T, execution_policy P = sequential_policy>
void ddpm_step(const noise_schedule& s, std::size_t j, prediction kind, variance_type v, const x0_processing& proc,
               std::span<const T> x, std::span<const T> model_out, std::span<const T> z, std::span<T> x0,
               std::span<T> x_next, std::span<T> scratch, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::ddpm_step";
  detail::check_index(where, "j", j, s.size());
  const ddpm_step_options opt{kind, v, proc, detail::legacy_rows(where, x.size(), x_next.size(), scratch.size()),
                              detail::as_parallel(policy)};
  detail::check_no_partial_overlap(where, "x", x, "x_next", x_next);
  detail::check_step_arrays<T>(where, opt.rows, learns_variance(v) ? 2 : 1, model_out, x_next,
                               j == 0 ? std::span<const T>(x) : z, step_buffers<T>{x0, scratch}, proc);
  if (j == 0)
    detail::ddpm_step_impl<T>(where, s, j, opt, x, model_out, kernels::no_noise{}, x0, x_next, scratch);
  else
    detail::ddpm_step_impl<T>(where, s, j, opt, x, model_out, z, x0, x_next, scratch);
}

/// @brief The pre-0.2 positional form of @ref ddpm_step with the noise generated inside the kernel:
/// row b's z is normals 0 … n−1 of stream (first_sample + b, step) of `noise`.
/// @param[in] s schedule; @param[in] j step; @param[in] kind prediction; @param[in] v variance;
/// @param[in] proc x̂₀ processing; @param[in] x rows × n; @param[in] model_out rows × width;
/// @param[in] noise the generator; @param[in] first_sample stream sample of row 0; @param[in] step stream step;
/// @param[out] x0 x̂₀; @param[out] x_next may alias x; @param[in,out] scratch n elements; @param[in] policy threads.
template <real_scalar T, execution_policy P = sequential_policy>
void ddpm_step(const noise_schedule& s, std::size_t j, prediction kind, variance_type v, const x0_processing& proc,
               std::span<const T> x, std::span<const T> model_out, const philox_normal& noise,
               std::uint64_t first_sample, std::uint64_t step, std::span<T> x0, std::span<T> x_next,
               std::span<T> scratch, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::ddpm_step";
  detail::check_index(where, "j", j, s.size());
  const ddpm_step_options opt{kind, v, proc, detail::legacy_rows(where, x.size(), x_next.size(), scratch.size()),
                              detail::as_parallel(policy)};
  detail::check_no_partial_overlap(where, "x", x, "x_next", x_next);
  const kernels::philox_stream z{&noise, first_sample, step, 0, scratch.size()};
  detail::check_step_arrays<T>(where, opt.rows, learns_variance(v) ? 2 : 1, model_out, x_next, z,
                               step_buffers<T>{x0, scratch}, proc);
  if (j == 0)
    detail::ddpm_step_impl<T>(where, s, j, opt, x, model_out, kernels::no_noise{}, x0, x_next, scratch);
  else
    detail::ddpm_step_impl<T>(where, s, j, opt, x, model_out, z, x0, x_next, scratch);
}

/// @brief Options of @ref ddpm_sample.
struct ddpm_options {
  /// The reverse variance σ_t² (DDPM §3.2: β̃_t or β_t; learned types read the model's variance block).
  variance_type variance = variance_type::fixed_small;
  /// x̂₀ clipping or dynamic thresholding before the posterior mean (none in Algorithm 2).
  x0_processing x0{};
  /// Timesteps to visit (descending); empty = all T. Other lists respace the schedule (improved DDPM §4).
  std::optional<timestep_sequence> timesteps{};
  /// Stream index of row 0 in the noise source.
  std::uint64_t first_sample = 0;
  /// Draw x_T ~ N(0, I) into x first; false: x already holds x_T.
  bool draw_initial_noise = true;
  /// Scan every model output for NaN/±∞.
  bool check_finite = true;
};

/// @brief DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): from x_T ~ N(0, I), for each
/// visited timestep call the model, form \f$p_\theta(x_{t-1}|x_t)\f$ and draw from it (@ref ddpm_step);
/// the result overwrites `x`.
///
/// With `opt.timesteps` the schedule is respaced onto them (β'_j = 1 − ᾱ_{τ_j}/ᾱ_{τ_{j−1}},
/// improved DDPM `SpacedDiffusion`) and the model is called with the original τ_j. The noise of
/// the k-th step (k = 0 first) of row b is stream (first_sample + b, k).
/// @param[in] s the training schedule; @param[in] model a denoiser (2n outputs per row for a learned
/// variance); @param[in,out] x rows × n: x_T in (or drawn), x₀ out; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] opt options; @param[in] hooks callback, workspace, context.
/// @return whether it completed, steps and model calls.
/// @throws std::invalid_argument for bad sizes or options; std::domain_error for non-finite model
///         output or an overflowing step.
template <class Model, mutable_tensor X, class Noise, class Context = no_context>
  requires noise_source_for<Noise, tensor_value_t<X>>
sample_result ddpm_sample(const noise_schedule& s, Model& model, X&& x, std::size_t rows, Noise& noise,
                          const ddpm_options& opt = {},
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(denoiser<Model, T, Context>, "ddpm_sample: Model must be a diffusion::denoiser for this element type");
  constexpr std::string_view where = "diffusion::ddpm_sample";
  detail::check_x0_processing(where, opt.x0);
  const std::size_t width_factor = learns_variance(opt.variance) ? 2 : 1;
  detail::sampler_loop<T, Context> loop(where, as_mutable_span(x), rows, hooks, width_factor);
  const std::size_t n = loop.row_size(), width = width_factor * n;
  std::optional<respaced_schedule> resp;
  if (opt.timesteps) resp = respace(s, *opt.timesteps);
  const noise_schedule& ss = resp ? resp->schedule : s;
  const auto xs = loop.x();
  if (opt.draw_initial_noise) detail::fill_initial_noise(noise, opt.first_sample, xs, rows, n);
  const ddpm_step_options step_opt{model.predicts(), opt.variance, opt.x0, rows, hooks.execution};
  const auto x0 = loop.buffer(0);
  const step_buffers<T> buffers{x0, std::span<T>(loop.ws().scratch).first(n)};
  const std::size_t K = ss.size();
  for (std::size_t k = 0; k < K; ++k) {
    const std::size_t j = K - 1 - k;
    const double tau = static_cast<double>(resp ? resp->timestep_map[j] : j);
    // The model is called at its training timestep's level (the training table's σ, not the
    // respaced table's, which may differ in the last bit).
    const double sigma = resp ? s[resp->timestep_map[j]].sigma : s[j].sigma;
    auto out = detail::call_model_at<Model, T, Context>(where, model, xs, rows, width, tau, sigma, loop.ws(),
                                                        loop.context(), opt.check_finite, k, loop.result().model_calls);
    if (j == 0)
      ddpm_step<T>(ss, j, out, xs, kernels::no_noise{}, step_opt, buffers);
    else
      ddpm_step<T>(ss, j, out, xs, detail::step_noise(noise, opt.first_sample, k, loop.buffer(1), rows, n), step_opt,
                   buffers);
    if (!loop.report(K, tau, sigma, j > 0 ? (resp ? s[resp->timestep_map[j - 1]].sigma : s[j - 1].sigma) : 0.0, x0)) break;
  }
  return loop.result();
}

// ---------------------------------------------------------------------------------------
// DDIM
// ---------------------------------------------------------------------------------------

/// @brief The target of a discrete step after timestep t: another timestep, or the data.
inline constexpr std::size_t to_data = static_cast<std::size_t>(-1);

/// @brief A discrete transition from timestep t to `prev` (< t), or to the data (@ref diffusion::to_data "to_data":
/// ᾱ_prev = 1, diffusers' `set_alpha_to_one`), or from t = 0 to itself (ᾱ_prev = ᾱ_0,
/// `set_alpha_to_one = False` at the last step).
struct timestep_transition {
  std::size_t t;              ///< The current 0-based timestep (the model was evaluated there).
  std::size_t prev = to_data;  ///< The target timestep, or @ref to_data.
};

/// @brief Options of one @ref ddim_step.
struct ddim_step_options {
  prediction kind = prediction::epsilon;  ///< What the model output predicts.
  /// η ≥ 0: 0 is deterministic DDIM, 1 DDPM's posterior variance (Song et al. 2021, Eq. 16); η > 1 only
  /// where the variance stays below 1 − ᾱ_prev (refused otherwise, naming the step).
  double eta = 0.0;
  x0_processing x0{};                     ///< x̂₀ clipping or dynamic thresholding.
  bool use_clipped_model_output = false;  ///< Recompute ε̂ from the processed x̂₀ (diffusers' option).
  std::size_t rows = 1;                   ///< Rows of x.
  parallel_policy execution{1};           ///< Threads (bit-identical for any count).
};

/// @brief Options of @ref ddim_sample.
struct ddim_options {
  /// η ≥ 0: 0 is deterministic DDIM, 1 has DDPM's posterior variance (Song et al. 2021, Eq. 16);
  /// η > 1 is accepted only when the variance stays below 1 − ᾱ_prev at every step.
  double eta = 0.0;
  /// The ᾱ after the last visited timestep.
  enum class final_alpha {
    one,         ///< ᾱ = 1 (diffusers `set_alpha_to_one = True`): the output is x̂₀.
    first_step,  ///< ᾱ at step 0 (`False`, Stable Diffusion's setting): the output stays at that noise level.
  };
  /// Which final ᾱ.
  final_alpha final = final_alpha::one;
  /// Recompute ε̂ from the processed x̂₀ (diffusers `use_clipped_model_output`).
  bool use_clipped_model_output = false;
  /// x̂₀ clipping or dynamic thresholding.
  x0_processing x0{};
  /// Stream index of row 0.
  std::uint64_t first_sample = 0;
  /// Draw x_T ~ N(0, I) into x first.
  bool draw_initial_noise = true;
  /// Scan every model output for NaN/±∞.
  bool check_finite = true;
};

/// @brief The coefficients of a DDIM step (Song et al. 2021, Eq. 12, 16): σ and the ε̂ weight.
struct ddim_step_coefficients {
  double alpha_bar_prev;  ///< ᾱ_prev (1 for the data).
  double sigma;           ///< \f$\sigma = \eta\sqrt{(1-\bar\alpha_p)(1-\bar\alpha_t/\bar\alpha_p)/(1-\bar\alpha_t)}\f$.
  double direction;       ///< \f$\sqrt{1-\bar\alpha_p-\sigma^2}\f$.
};

/// @brief @ref ddim_step_coefficients of a transition, with \f$1-\bar\alpha_p-\sigma^2 = \frac{1-\bar\alpha_p}{1-\bar\alpha_t}
/// \left(\frac{\bar\alpha_t(1-\bar\alpha_p)}{\bar\alpha_p} - (\eta^2 - 1)\,q\right)\f$, \f$q = 1 - \bar\alpha_t/\bar\alpha_p\f$, so that
/// η ≤ 1 adds positive terms only (no cancellation, never negative).
/// @throws std::out_of_range for t ≥ T; std::invalid_argument for a bad target, a non-finite or negative η,
///         or η > 1 where the variance exceeds 1 − ᾱ_prev (naming t, prev and the largest η allowed).
inline ddim_step_coefficients ddim_coefficients_at(const noise_schedule& s, timestep_transition tr, double eta) {
  constexpr std::string_view where = "diffusion::ddim_step";
  detail::check_index(where, "t", tr.t, s.size());
  if (!(eta >= 0.0 && std::isfinite(eta)))
    detail::throw_invalid(where, "eta = " + detail::to_text(eta) + " is outside the allowed range [0, inf)");
  if (tr.prev == to_data) return {1.0, 0.0, 0.0};
  if (!(tr.prev < tr.t || (tr.prev == 0 && tr.t == 0)))
    detail::throw_invalid(where, "prev = " + detail::to_text(tr.prev) + " must be < t = " + detail::to_text(tr.t) +
                                     " (or to_data; prev = t only at t = 0)");
  const schedule_step& st = s[tr.t];
  const schedule_step& sp = s[tr.prev];
  if (tr.prev == tr.t) return {sp.alpha_bar, 0.0, sp.sqrt_one_minus_alpha_bar};
  const double q = detail::to_double(s.one_minus_alpha_bar_ratio_dd(tr.t, tr.prev));  // 1 − ᾱ_t/ᾱ_p
  const double a = st.alpha_bar * sp.one_minus_alpha_bar / sp.alpha_bar;             // ᾱ_t(1 − ᾱ_p)/ᾱ_p
  const double bracket = eta <= 1.0 ? a + (1.0 - eta) * (1.0 + eta) * q : a - (eta - 1.0) * (eta + 1.0) * q;
  if (!(bracket >= 0.0))
    detail::throw_invalid(where, "eta = " + detail::to_text(eta) + " makes the variance exceed 1 - alpha_bar_prev at t = " +
                                     detail::to_text(tr.t) + " -> prev = " + detail::to_text(tr.prev) +
                                     " (the largest eta allowed there is " + detail::to_text(std::sqrt(1.0 + a / q)) + ")");
  if (eta == 0.0) return {sp.alpha_bar, 0.0, sp.sqrt_one_minus_alpha_bar};
  const double var = skip_posterior(s, tr.t, tr.prev).variance;
  return {sp.alpha_bar, eta * std::sqrt(var), std::sqrt(sp.one_minus_alpha_bar * (bracket / st.one_minus_alpha_bar))};
}

namespace detail {

/// ddim_step for any noise operand on validated arrays (T: a storage type; thresholding only for
/// float and double, refused by check_step_arrays otherwise).
template <storage_scalar T, class Z>
void ddim_step_impl(std::string_view where, const noise_schedule& s, timestep_transition tr,
                    const ddim_step_coefficients& k, const ddim_step_options& opt, std::span<const T> x,
                    std::span<const T> model_out, const Z& z, std::span<T> x0, std::span<T> x_next,
                    std::span<T> scratch) {
  [[maybe_unused]] const std::size_t rows = opt.rows, n = x.size() / rows;
  const x0_processing& proc = opt.x0;
  const affine_coefficients to_x0 = conversion_coefficients(s, tr.t, opt.kind, prediction::sample);
  const bool recompute = opt.use_clipped_model_output && (proc.clip || proc.threshold);
  // ε̂ from the model output, or (recomputed) from the processed x̂₀: both conversions of the one table.
  const affine_coefficients to_eps = recompute ? conversion_coefficients(s, tr.t, prediction::sample, prediction::epsilon)
                                               : conversion_coefficients(s, tr.t, opt.kind, prediction::epsilon);
  using C = compute_t<T>;  // the arithmetic type (float for 16-bit storage)
  const kernels::ddim_coefficients<C> c{
      .x0_from_x = coefficient<C>(where, "the x0 coefficient of x", to_x0.a),
      .x0_from_out = coefficient<C>(where, "the x0 coefficient of the model output", to_x0.b),
      .clip = proc.clip && !proc.threshold,
      .clip_value = static_cast<C>(proc.clip_value),
      .eps_from_x0 = recompute,
      .eps_from_x = coefficient<C>(where, "the eps coefficient of x", to_eps.a),
      .eps_from_other = coefficient<C>(where, "the eps coefficient of the prediction", to_eps.b),
      .coef_x0 = static_cast<C>(std::sqrt(k.alpha_bar_prev)),
      .coef_eps = static_cast<C>(k.direction),
      .sigma = static_cast<C>(k.sigma)};
  bool ok = true;
  if constexpr (real_scalar<T>) {
    if (proc.threshold) {
      ok = kernels::affine2(c.x0_from_x, x, c.x0_from_out, model_out, x0, opt.execution);
      for (std::size_t b = 0; b < rows; ++b) process_x0_row(proc, x0.subspan(b * n, n), scratch);
    }
  }
  if (k.sigma > 0.0 && !std::is_same_v<Z, kernels::no_noise>)
    ok = ok && kernels::ddim(c, x, model_out, z, proc.threshold, x0, x_next, opt.execution);
  else
    ok = ok && kernels::ddim(c, x, model_out, kernels::no_noise{}, proc.threshold, x0, x_next, opt.execution);
  require_finite_step(where, ok, [&tr] { return "the DDIM step at t = " + to_text(tr.t); });
}

}  // namespace detail

/// @brief One DDIM step from timestep t to prev (Song et al. 2021, Eq. 12):
/// \f$x_p = \sqrt{\bar\alpha_p}\,\hat x_0 + \sqrt{1-\bar\alpha_p-\sigma^2}\,\hat\varepsilon + \sigma z\f$ with
/// \f$\sigma^2 = \eta^2\,\frac{1-\bar\alpha_p}{1-\bar\alpha_t}\left(1 - \frac{\bar\alpha_t}{\bar\alpha_p}\right)\f$ (the skip-posterior
/// variance times η², @ref ddim_coefficients_at); prev = @ref to_data means ᾱ_p = 1.
///
/// Runs on the fused kernel kernels::ddim (one pass); with dynamic thresholding x̂₀ is formed and
/// thresholded first, then the fused pass reads it.
/// @param[in] s schedule; @param[in] tr the transition t → prev; @param[in] model_output rows × n;
/// @param[in,out] x rows × n: x_t in, x_prev out; @param[in] noise kernels::no_noise (η = 0), a buffer or
/// a Philox stream (@ref step_stream); @param[in] opt kind, η, x̂₀ processing, rows, threads;
/// @param[in] buffers x̂₀ out (optional; required with thresholding, with a scratch of n).
/// @throws std::out_of_range for t ≥ T; std::invalid_argument for a bad target, η, sizes, missing
///         noise (η > 0) or overlap, or dynamic thresholding on 16-bit storage; std::domain_error when
///         the step overflows T.
///
/// T may be a 16-bit storage type (@ref diffusion::float16, @ref diffusion::bfloat16) for x, the model
/// output and x̂₀: the noise is then float, the step computed in float and rounded once to T on store
/// (clipping is offered, dynamic thresholding is not).
template <storage_scalar T, class Z>
  requires kernels::noise_operand<Z, compute_t<T>>
void ddim_step(const noise_schedule& s, timestep_transition tr, std::span<const T> model_output, std::span<T> x,
               const Z& noise, const ddim_step_options& opt = {}, const step_buffers<T>& buffers = {}) {
  constexpr std::string_view where = "diffusion::ddim_step";
  const ddim_step_coefficients k = ddim_coefficients_at(s, tr, opt.eta);
  const std::size_t n = detail::check_step_arrays<T>(where, opt.rows, 1, model_output, x, noise, buffers, opt.x0);
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (k.sigma > 0.0) detail::throw_invalid(where, "eta = " + detail::to_text(opt.eta) + " > 0 adds noise; pass a noise operand");
  }
  detail::ddim_step_impl<T>(where, s, tr, k, opt, std::span<const T>(x), model_output, detail::rows_of(noise, n),
                            buffers.x0, x, buffers.scratch);
}

namespace detail {
/// What the two pre-0.2 positional forms of ddim_step share: the transition, its coefficients
/// and the options, with the row size read from `scratch` (validated).
struct legacy_ddim_setup {
  timestep_transition tr;
  ddim_step_coefficients k;
  ddim_step_options opt;
};
template <execution_policy P>
legacy_ddim_setup legacy_ddim_prologue(std::string_view where, const noise_schedule& s, std::size_t t,
                                       std::optional<std::size_t> p, double eta, prediction kind,
                                       const x0_processing& proc, bool use_clipped_model_output, std::size_t x_size,
                                       std::size_t x_next_size, std::size_t n, const P& policy) {
  const timestep_transition tr{t, p ? *p : to_data};
  const ddim_step_coefficients k = ddim_coefficients_at(s, tr, eta);
  const std::size_t rows = legacy_rows(where, x_size, x_next_size, n);
  return {tr, k, ddim_step_options{kind, eta, proc, use_clipped_model_output, rows, as_parallel(policy)}};
}
}  // namespace detail

/// @brief The pre-0.2 positional form of @ref ddim_step (`p = std::nullopt` is @ref to_data), validated as
/// the new one.
/// @param[in] s schedule; @param[in] t current timestep; @param[in] p target or none; @param[in] eta η;
/// @param[in] kind prediction; @param[in] proc x̂₀ processing; @param[in] use_clipped_model_output option;
/// @param[in] x rows × n; @param[in] model_out rows × n; @param[in] z noise (ignored when σ = 0);
/// @param[out] x0 x̂₀; @param[out] x_next may alias x; @param[in,out] scratch n elements; @param[in] policy threads.
template <real_scalar T, execution_policy P = sequential_policy>
void ddim_step(const noise_schedule& s, std::size_t t, std::optional<std::size_t> p, double eta, prediction kind,
               const x0_processing& proc, bool use_clipped_model_output, std::span<const T> x,
               std::span<const T> model_out, std::span<const T> z, std::span<T> x0, std::span<T> x_next,
               std::span<T> scratch, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::ddim_step";
  const auto [tr, k, opt] = detail::legacy_ddim_prologue(where, s, t, p, eta, kind, proc, use_clipped_model_output,
                                                         x.size(), x_next.size(), scratch.size(), policy);
  detail::check_no_partial_overlap(where, "x", x, "x_next", x_next);
  detail::check_step_arrays<T>(where, opt.rows, 1, model_out, x_next, k.sigma > 0.0 ? z : std::span<const T>(x),
                               step_buffers<T>{x0, scratch}, proc);
  detail::ddim_step_impl<T>(where, s, tr, k, opt, x, model_out, z, x0, x_next, scratch);
}

/// @brief The pre-0.2 positional form of @ref ddim_step with the noise generated inside the fused kernel.
/// @param[in] s schedule; @param[in] t current timestep; @param[in] p target or none; @param[in] eta η;
/// @param[in] kind prediction; @param[in] proc x̂₀ processing; @param[in] use_clipped_model_output option;
/// @param[in] x rows × n; @param[in] model_out rows × n; @param[in] noise the generator;
/// @param[in] first_sample stream sample of row 0; @param[in] step stream step; @param[out] x0 x̂₀;
/// @param[out] x_next may alias x; @param[in,out] scratch n elements; @param[in] policy threads.
template <real_scalar T, execution_policy P = sequential_policy>
void ddim_step(const noise_schedule& s, std::size_t t, std::optional<std::size_t> p, double eta, prediction kind,
               const x0_processing& proc, bool use_clipped_model_output, std::span<const T> x,
               std::span<const T> model_out, const philox_normal& noise, std::uint64_t first_sample,
               std::uint64_t step, std::span<T> x0, std::span<T> x_next, std::span<T> scratch, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::ddim_step";
  const auto [tr, k, opt] = detail::legacy_ddim_prologue(where, s, t, p, eta, kind, proc, use_clipped_model_output,
                                                         x.size(), x_next.size(), scratch.size(), policy);
  detail::check_no_partial_overlap(where, "x", x, "x_next", x_next);
  const kernels::philox_stream z{&noise, first_sample, step, 0, scratch.size()};
  detail::check_step_arrays<T>(where, opt.rows, 1, model_out, x_next, z, step_buffers<T>{x0, scratch}, proc);
  detail::ddim_step_impl<T>(where, s, tr, k, opt, x, model_out, z, x0, x_next, scratch);
}

/// @brief DDIM sampling (Song et al. 2021) over a strictly decreasing timestep list (@ref ddim_step per
/// timestep).
///
/// With η = 0 this integrates the probability-flow ODE; it is Euler's method in σ-space
/// (Karras et al. 2022, §3), first order. The next timestep is read from the list (never
/// t − T/N). The noise of the k-th step of row b is stream (first_sample + b, k). Every step's
/// η is checked before the first model call.
/// @param[in] s the training schedule; @param[in] model the denoiser (n outputs per row);
/// @param[in,out] x rows × n; @param[in] rows batch size; @param[in] noise the source (used for
/// x_T and when η > 0); @param[in] steps the timesteps; @param[in] opt options; @param[in] hooks callback etc.
/// @throws std::invalid_argument for η < 0, NaN, or too large at some step, bad sizes, or `steps` of another T.
template <class Model, mutable_tensor X, class Noise, class Context = no_context>
  requires noise_source_for<Noise, tensor_value_t<X>>
sample_result ddim_sample(const noise_schedule& s, Model& model, X&& x, std::size_t rows, Noise& noise,
                          const timestep_sequence& steps, const ddim_options& opt = {},
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(denoiser<Model, T, Context>, "ddim_sample: Model must be a diffusion::denoiser for this element type");
  constexpr std::string_view where = "diffusion::ddim_sample";
  if (steps.num_train_timesteps() != s.size())
    detail::throw_invalid(where, "steps.num_train_timesteps() = " + detail::to_text(steps.num_train_timesteps()) +
                                     " differs from the schedule's size " + detail::to_text(s.size()));
  detail::check_x0_processing(where, opt.x0);
  const std::size_t K = steps.size();
  auto transition = [&](std::size_t k) {
    const std::optional<std::size_t> p = steps.previous(k);
    return timestep_transition{steps[k], p ? *p : (opt.final == ddim_options::final_alpha::first_step ? 0 : to_data)};
  };
  for (std::size_t k = 0; k < K; ++k) (void)ddim_coefficients_at(s, transition(k), opt.eta);  // η for every step first
  detail::sampler_loop<T, Context> loop(where, as_mutable_span(x), rows, hooks, 1);
  const std::size_t n = loop.row_size();
  const auto xs = loop.x();
  if (opt.draw_initial_noise) detail::fill_initial_noise(noise, opt.first_sample, xs, rows, n);
  const ddim_step_options step_opt{model.predicts(), opt.eta, opt.x0, opt.use_clipped_model_output, rows, hooks.execution};
  const auto x0 = loop.buffer(0);
  const step_buffers<T> buffers{x0, std::span<T>(loop.ws().scratch).first(n)};
  for (std::size_t k = 0; k < K; ++k) {
    const timestep_transition tr = transition(k);
    auto out = detail::call_model_at<Model, T, Context>(where, model, xs, rows, n, static_cast<double>(tr.t),
                                                        s[tr.t].sigma, loop.ws(), loop.context(), opt.check_finite, k,
                                                        loop.result().model_calls);
    if (ddim_coefficients_at(s, tr, opt.eta).sigma > 0.0)  // noise: in the fused kernel for philox_normal, else a buffer
      ddim_step<T>(s, tr, out, xs, detail::step_noise(noise, opt.first_sample, k, loop.buffer(1), rows, n), step_opt,
                   buffers);
    else
      ddim_step<T>(s, tr, out, xs, kernels::no_noise{}, step_opt, buffers);
    const double sigma_next = tr.prev == to_data ? 0.0 : s[tr.prev].sigma;
    if (!loop.report(K, static_cast<double>(tr.t), s[tr.t].sigma, sigma_next, x0)) break;
  }
  return loop.result();
}

// ---------------------------------------------------------------------------------------
// DDIM inversion
// ---------------------------------------------------------------------------------------

/// @brief One step of DDIM inversion (Song et al. 2021 §4.3; diffusers `DDIMInverseScheduler`): the η = 0
/// map run forward from level `from` to timestep `to` > from:
/// \f$x_{to} = \sqrt{\bar\alpha_{to}}\,\hat x_0 + \sqrt{1-\bar\alpha_{to}}\,\hat\varepsilon\f$ with x̂₀ and ε̂ from the model
/// output at `from`. With from = @ref to_data (the first step, x is the data: ᾱ = 1) x̂₀ = x and ε̂ is the
/// model's output at `to` converted at that level, as diffusers' inverse scheduler does.
/// @param[in] s schedule; @param[in] from the level of x (a timestep < to, or to_data);
/// @param[in] to the target timestep; @param[in] model_output rows × n, of kind `kind`, evaluated at
/// `from` (at `to` when from = to_data); @param[in,out] x the state; @param[in] kind what the model predicts;
/// @param[out] x0 optional x̂₀ (rows × n); @param[in] policy threads.
/// @throws std::out_of_range for a timestep ≥ T; std::invalid_argument unless from < to (or to_data), sizes;
///         std::domain_error on overflow.
template <real_scalar T, execution_policy P = sequential_policy>
void ddim_inversion_step(const noise_schedule& s, std::size_t from, std::size_t to, std::span<const T> model_output,
                         std::span<T> x, prediction kind, std::span<T> x0 = {}, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::ddim_inversion_step";
  detail::check_index(where, "to", to, s.size());
  if (from != to_data && !(from < to))
    detail::throw_invalid(where, "from = " + detail::to_text(from) + " must be < to = " + detail::to_text(to) +
                                     " (or to_data for the data itself)");
  detail::check_same_size(where, "model_output", model_output.size(), "x", x.size());
  if (!x0.empty()) detail::check_same_size(where, "x0", x0.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "model_output", model_output, "x", x);
  const bool first = from == to_data;
  const std::size_t cur = first ? to : from;
  const affine_coefficients to_x0 = first ? affine_coefficients{1.0, 0.0} : conversion_coefficients(s, cur, kind, prediction::sample);
  const affine_coefficients to_eps = conversion_coefficients(s, cur, kind, prediction::epsilon);
  const T cx = static_cast<T>(s[to].sqrt_alpha_bar), ce = static_cast<T>(s[to].sqrt_one_minus_alpha_bar);
  const T ax = detail::coefficient<T>(where, "the x0 coefficient of x", to_x0.a);
  const T bx = detail::coefficient<T>(where, "the x0 coefficient of the model output", to_x0.b);
  const T ae = detail::coefficient<T>(where, "the eps coefficient of x", to_eps.a);
  const T be = detail::coefficient<T>(where, "the eps coefficient of the model output", to_eps.b);
  const auto body = [=](auto xv, auto ov) {
    using V = decltype(xv);
    // At the first step x is the data itself (ᾱ = 1): x̂₀ = x, and ε̂ comes from the model at `to`.
    const V xh = first ? xv : kernels::madd(V(ax), xv, V(bx) * ov);
    const V eh = kernels::madd(V(ae), xv, V(be) * ov);
    return std::array<V, 2>{xh, kernels::madd(V(cx), xh, V(ce) * eh)};
  };
  bool ok;
  if (x0.empty())
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x), kernels::inputs<T>(std::span<const T>(x), model_output),
                      [body](auto xv, auto ov) { return body(xv, ov)[1]; });
  else
    ok = kernels::map(policy, kernels::no_noise{}, kernels::outputs(x0, x),
                      kernels::inputs<T>(std::span<const T>(x), model_output), body);
  detail::require_finite_step(where, ok, [to] { return "the inversion step to t = " + detail::to_text(to); });
}

/// @brief DDIM inversion (Song et al. 2021 §4.3; diffusers `DDIMInverseScheduler`): the η = 0 map run
/// forward, image → noise, visiting `steps` in increasing order with @ref diffusion::ddim_inversion_step "ddim_inversion_step": from x
/// at level s (ᾱ = 1 for the data before the first step) to the next, the model evaluated at the
/// current level (its first call at the first visited timestep).
/// @param[in] s schedule; @param[in] model denoiser; @param[in,out] x rows × n: x₀ in, x_T out;
/// @param[in] rows batch size; @param[in] steps timesteps (visited in reverse of their order);
/// @param[in] hooks callback etc.
template <class Model, mutable_tensor X, class Context = no_context>
sample_result ddim_invert(const noise_schedule& s, Model& model, X&& x, std::size_t rows, const timestep_sequence& steps,
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(denoiser<Model, T, Context>, "ddim_invert: Model must be a diffusion::denoiser for this element type");
  constexpr std::string_view where = "diffusion::ddim_invert";
  if (steps.num_train_timesteps() != s.size())
    detail::throw_invalid(where, "steps.num_train_timesteps() = " + detail::to_text(steps.num_train_timesteps()) +
                                     " differs from the schedule's size " + detail::to_text(s.size()));
  detail::sampler_loop<T, Context> loop(where, as_mutable_span(x), rows, hooks, 1);
  const std::size_t n = loop.row_size();
  const auto xs = loop.x();
  const auto x0 = loop.buffer(0);
  const std::size_t K = steps.size();
  for (std::size_t k = 0; k < K; ++k) {
    // Visit ascending: the model is evaluated at the current level `cur` (the previous target),
    // the first time at the lowest visited timestep, as diffusers' inverse scheduler does.
    const std::size_t t = steps[K - 1 - k];
    const std::size_t from = k == 0 ? to_data : steps[K - k];
    const std::size_t cur = k == 0 ? t : from;
    auto out = detail::call_model_at<Model, T, Context>(where, model, xs, rows, n, static_cast<double>(cur),
                                                        s[cur].sigma, loop.ws(), loop.context(), true, k,
                                                        loop.result().model_calls);
    ddim_inversion_step<T>(s, from, t, out, xs, model.predicts(), x0, hooks.execution);
    if (!loop.report(K, static_cast<double>(t), s[t].sigma, k + 1 < K ? s[steps[K - 2 - k]].sigma : s[t].sigma, x0)) break;
  }
  return loop.result();
}

}  // namespace diffusion

/// @}
