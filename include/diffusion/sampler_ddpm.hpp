/// @file
/// @brief DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021)
/// with η, its deterministic inversion, on full or respaced timestep sequences.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "denoiser.hpp"
#include "execution.hpp"
#include "gaussian.hpp"
#include "kernels.hpp"
#include "noise.hpp"
#include "sampling.hpp"
#include "schedule.hpp"
#include "tensor.hpp"
#include "timesteps.hpp"

/// @defgroup sampler_ddpm DDPM and DDIM samplers
/// @brief Ancestral sampling (DDPM Algorithm 2), DDIM with η (Song et al. 2021, Eq. 12), DDIM inversion.
/// @{

namespace diffusion {

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

/// ddpm_step for any noise operand (rows of n elements): see ddpm_step.
template <real_scalar T, class Z, class P>
void ddpm_step_impl(const noise_schedule& s, std::size_t j, prediction kind, variance_type v, const x0_processing& proc,
                    std::span<const T> x, std::span<const T> model_out, const Z& z, std::span<T> x0,
                    std::span<T> x_next, std::span<T> scratch, const P& policy) {
  const std::size_t n = scratch.size(), rows = x.size() / n;
  const bool learned = learns_variance(v);
  const std::size_t width = learned ? 2 * n : n;
  DIFFUSION_ASSERT(model_out.size() == rows * width && x0.size() == x.size() && x_next.size() == x.size());
  const schedule_step& st = s[j];
  const affine_coefficients to_x0 = conversion_coefficients(s, j, kind, prediction::sample);
  const T c0 = static_cast<T>(st.posterior_mean_coef_x0), ct = static_cast<T>(st.posterior_mean_coef_xt);
  const T ax = static_cast<T>(to_x0.a), bx = static_cast<T>(to_x0.b);
  if (j == 0 || !learned) {
    // Fixed variance: one standard deviation for the whole tensor (no noise at j = 0).
    const T sd = j == 0 ? T(0) : static_cast<T>(std::exp(0.5 * fixed_log_variance(s, j, v)));
    const kernels::ddpm_coefficients<T> c{ax, bx, proc.clip && !proc.threshold, static_cast<T>(proc.clip_value), c0, ct, sd};
    if (!proc.threshold && !learned) {  // one fused pass over all rows
      if (j == 0)
        kernels::ddpm_ancestral(c, x, model_out, kernels::no_noise{}, x0, x_next, policy);
      else
        kernels::ddpm_ancestral(c, x, model_out, z, x0, x_next, policy);
      return;
    }
    for (std::size_t b = 0; b < rows; ++b) {
      const auto xb = x.subspan(b * n, n), ob = model_out.subspan(b * width, n);
      const auto x0b = x0.subspan(b * n, n), xn = x_next.subspan(b * n, n);
      if (!proc.threshold) {
        kernels::ddpm_ancestral(c, xb, ob, kernels::no_noise{}, x0b, xn, policy);  // j = 0, learned variance
        continue;
      }
      // Dynamic thresholding needs the row's quantile of |x̂₀| first: two passes.
      kernels::affine2(ax, xb, bx, ob, x0b, policy);
      process_x0_row(proc, x0b, scratch);
      if (j == 0)
        kernels::affine2(c0, std::span<const T>(x0b), ct, xb, xn, policy);
      else
        kernels::affine2_noise(c0, std::span<const T>(x0b), ct, xb, sd, row_noise(z, b, n), xn, policy);
    }
    return;
  }
  // Learned variance (j > 0, so never no_noise): σ per element from the model's variance
  // block (std::exp, scalar), the noise still generated chunk-wise inside the loop.
  if constexpr (!std::is_same_v<Z, kernels::no_noise>) {
  const double log_beta = std::log(st.beta), log_bt = st.posterior_log_variance_clipped;
  for (std::size_t b = 0; b < rows; ++b) {
    const auto xb = x.subspan(b * n, n), ob = model_out.subspan(b * width, n);
    const auto x0b = x0.subspan(b * n, n), xn = x_next.subspan(b * n, n);
    const T* var = model_out.data() + b * width + n;
    kernels::affine2(ax, xb, bx, ob, x0b, policy);
    process_x0_row(proc, x0b, scratch);
    kernels::detail::for_each_scalar<T>(policy, n, row_noise(z, b, n), [&](std::size_t k, const T* zk) {
      const T mean = kernels::madd(c0, x0b[k], ct * xb[k]);
      double lv = static_cast<double>(var[k]);
      if (v == variance_type::learned_range) {
        const double f = 0.5 * (lv + 1.0);
        DIFFUSION_ASSERT(f >= 0.0 && f <= 1.0);
        lv = f * log_beta + (1.0 - f) * log_bt;
      }
      xn[k] = kernels::madd(static_cast<T>(std::exp(0.5 * lv)), *zk, mean);
    });
  }
  }
}

}  // namespace detail

/// @brief One DDPM ancestral step for all rows at step j of a (possibly respaced) schedule:
/// \f$\hat x_0\f$ from the model output, optional clip/threshold, then
/// \f$x_{j-1} = \tilde\mu_j(x_j, \hat x_0) + \sigma_j z\f$ with no noise at j = 0 (DDPM Algorithm 2, Eq. 11 for ε).
///
/// Runs on the fused kernel kernels::ddpm_ancestral (one pass: x̂₀, clip, posterior mean,
/// noise), except that dynamic thresholding (a per-row quantile) takes two passes and a
/// learned variance takes a scalar `std::exp` per element.
/// @param[in] s the sampling schedule (respaced or full).
/// @param[in] j 0-based step in `s`.
/// @param[in] kind what the model output predicts.
/// @param[in] v the reverse variance.
/// @param[in] proc x̂₀ post-processing.
/// @param[in] x rows × n, the state x_j.
/// @param[in] model_out rows × width (width = n, or 2n for a learned variance).
/// @param[in] z rows × n normal noise (ignored at j = 0).
/// @param[out] x0 rows × n: the processed x̂₀.
/// @param[out] x_next rows × n: x_{j−1}; may alias x.
/// @param[in,out] scratch n elements (dynamic thresholding).
/// @param[in] policy threads of the kernels (bit-identical for any count).
/// @pre sizes agree (asserted); learned_range outputs in [−1, 1] (asserted).
template <real_scalar T, execution_policy P = sequential_policy>
void ddpm_step(const noise_schedule& s, std::size_t j, prediction kind, variance_type v, const x0_processing& proc,
               std::span<const T> x, std::span<const T> model_out, std::span<const T> z, std::span<T> x0,
               std::span<T> x_next, std::span<T> scratch, const P& policy = P{}) {
  DIFFUSION_ASSERT(j == 0 || z.size() == x.size());
  if (j == 0)
    detail::ddpm_step_impl<T>(s, j, kind, v, proc, x, model_out, kernels::no_noise{}, x0, x_next, scratch, policy);
  else
    detail::ddpm_step_impl<T>(s, j, kind, v, proc, x, model_out, z, x0, x_next, scratch, policy);
}

/// @brief The fused DDPM ancestral step with its noise generated inside the kernel: as the
/// buffer form of ddpm_step with z row b = normals 0 … n−1 of stream (first_sample + b, step)
/// of `noise` (bit-identical to filling a buffer with philox_normal::fill at those addresses),
/// without a noise buffer or its memory pass.
/// @param[in] s the sampling schedule; @param[in] j 0-based step in `s`; @param[in] kind the
/// model output kind; @param[in] v the reverse variance; @param[in] proc x̂₀ post-processing;
/// @param[in] x rows × n; @param[in] model_out rows × width; @param[in] noise the generator;
/// @param[in] first_sample stream sample of row 0; @param[in] step stream step;
/// @param[out] x0 rows × n: x̂₀; @param[out] x_next rows × n (may alias x);
/// @param[in,out] scratch n elements; @param[in] policy threads (bit-identical for any count).
template <real_scalar T, execution_policy P = sequential_policy>
void ddpm_step(const noise_schedule& s, std::size_t j, prediction kind, variance_type v, const x0_processing& proc,
               std::span<const T> x, std::span<const T> model_out, const philox_normal& noise,
               std::uint64_t first_sample, std::uint64_t step, std::span<T> x0, std::span<T> x_next,
               std::span<T> scratch, const P& policy = P{}) {
  const kernels::philox_stream z{&noise, first_sample, step, 0, scratch.size()};
  if (j == 0)
    detail::ddpm_step_impl<T>(s, j, kind, v, proc, x, model_out, kernels::no_noise{}, x0, x_next, scratch, policy);
  else
    detail::ddpm_step_impl<T>(s, j, kind, v, proc, x, model_out, z, x0, x_next, scratch, policy);
}

/// @brief DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): from x_T ~ N(0, I), for each
/// visited timestep call the model, form \f$p_\theta(x_{t-1}|x_t)\f$ and draw from it; the result
/// overwrites `x`.
///
/// With `opt.timesteps` the schedule is respaced onto them (β'_j = 1 − ᾱ_{τ_j}/ᾱ_{τ_{j−1}},
/// improved DDPM `SpacedDiffusion`) and the model is called with the original τ_j. The noise of
/// the k-th step (k = 0 first) of row b is stream (first_sample + b, k).
/// @param[in] s the training schedule.
/// @param[in] model a denoiser (2n outputs per row for a learned variance).
/// @param[in,out] x rows × n: x_T in (or drawn), x₀ out.
/// @param[in] rows batch size.
/// @param[in] noise the noise source.
/// @param[in] opt options.
/// @param[in] hooks callback, workspace, context.
/// @return whether it completed, steps and model calls.
/// @throws std::invalid_argument for bad sizes or options; std::domain_error for non-finite model output.
template <class Model, mutable_tensor X, class Noise, class Context = no_context>
sample_result ddpm_sample(const noise_schedule& s, Model& model, X&& x, std::size_t rows, Noise& noise,
                          const ddpm_options& opt = {},
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(denoiser<Model, T, Context>, "ddpm_sample: Model must be a diffusion::denoiser for this element type");
  constexpr std::string_view where = "diffusion::ddpm_sample";
  auto xs = as_mutable_span(x);
  const std::size_t n = detail::sampler_rows(where, xs.size(), rows);
  detail::check_x0_processing(where, opt.x0);
  const std::size_t width = learns_variance(opt.variance) ? 2 * n : n;
  std::optional<respaced_schedule> resp;
  if (opt.timesteps) resp = respace(s, *opt.timesteps);
  const noise_schedule& ss = resp ? resp->schedule : s;
  sampler_workspace<T> local;
  sampler_workspace<T>& ws = hooks.workspace ? *hooks.workspace : local;
  ws.reserve(rows, n, width);
  if (opt.draw_initial_noise) detail::fill_initial_noise(noise, opt.first_sample, xs, rows, n);
  sample_result result{};
  const std::size_t K = ss.size();
  for (std::size_t k = 0; k < K; ++k) {
    const std::size_t j = K - 1 - k;
    const double tau = static_cast<double>(resp ? resp->timestep_map[j] : j);
    auto out = detail::call_model_at<Model, T, Context>(where, model, xs, rows, width, tau, ss[j].sigma, ws,
                                                        hooks.context, opt.check_finite, k, result.model_calls);
    if (opt.variance == variance_type::learned_range)
      for (std::size_t b = 0; b < rows; ++b)
        detail::check_learned_range<T>(where, opt.variance, std::span<const T>(out).subspan(b * width + n, n));
    auto z = std::span<T>(ws.aux).first(rows * n);
    auto x0 = std::span<T>(ws.x0).first(rows * n);
    const auto scratch = std::span<T>(ws.scratch).first(n);
    if constexpr (detail::is_philox<Noise>) {  // noise generated inside the fused kernel
      ddpm_step<T>(ss, j, model.predicts(), opt.variance, opt.x0, xs, out, noise, opt.first_sample, k, x0, xs, scratch,
                   hooks.execution);
    } else {
      if (j > 0) detail::fill_step_noise(noise, opt.first_sample, k, z, rows, n);
      ddpm_step<T>(ss, j, model.predicts(), opt.variance, opt.x0, xs, out, z, x0, xs, scratch, hooks.execution);
    }
    ++result.steps;
    if (hooks.on_step && !hooks.on_step(step_info<T>{k + 1, K, tau, ss[j].sigma, xs, x0})) {
      result.completed = false;
      break;
    }
  }
  return result;
}

/// @brief Options of @ref ddim_sample.
struct ddim_options {
  /// η ≥ 0: 0 is deterministic DDIM, 1 has DDPM's posterior variance (Song et al. 2021, Eq. 16).
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

namespace detail {

/// ddim_step for any noise operand.
template <real_scalar T, class Z, class P>
void ddim_step_impl(const noise_schedule& s, std::size_t t, std::optional<std::size_t> p, double eta, prediction kind,
                    const x0_processing& proc, bool use_clipped_model_output, std::span<const T> x,
                    std::span<const T> model_out, const Z& z, std::span<T> x0, std::span<T> x_next,
                    std::span<T> scratch, const P& policy) {
  const std::size_t n = scratch.size(), rows = x.size() / n;
  const schedule_step& st = s[t];
  const double ab_p = p ? s[*p].alpha_bar : 1.0, om_p = p ? s[*p].one_minus_alpha_bar : 0.0;
  const double var = (p && *p < t) ? skip_posterior(s, t, *p).variance : 0.0;
  const double sigma = eta * std::sqrt(var);
  const double dir = std::sqrt(std::max(om_p - sigma * sigma, 0.0));
  const affine_coefficients to_x0 = conversion_coefficients(s, t, kind, prediction::sample);
  const affine_coefficients to_eps = conversion_coefficients(s, t, kind, prediction::epsilon);
  const bool recompute = use_clipped_model_output && (proc.clip || proc.threshold);
  // eps = (x - sqrt(ab) x0) / sqrt(1 - ab) when recomputed from the processed x0.
  const kernels::ddim_coefficients<T> c{
      .x0_from_x = static_cast<T>(to_x0.a),
      .x0_from_out = static_cast<T>(to_x0.b),
      .clip = proc.clip && !proc.threshold,
      .clip_value = static_cast<T>(proc.clip_value),
      .eps_from_x0 = recompute,
      .eps_from_x = recompute ? static_cast<T>(1.0 / st.sqrt_one_minus_alpha_bar) : static_cast<T>(to_eps.a),
      .eps_from_other =
          recompute ? static_cast<T>(-st.sqrt_alpha_bar / st.sqrt_one_minus_alpha_bar) : static_cast<T>(to_eps.b),
      .coef_x0 = static_cast<T>(std::sqrt(ab_p)),
      .coef_eps = static_cast<T>(dir),
      .sigma = static_cast<T>(sigma)};
  if (proc.threshold) {
    kernels::affine2(c.x0_from_x, x, c.x0_from_out, model_out, x0, policy);
    for (std::size_t b = 0; b < rows; ++b) detail::process_x0_row(proc, x0.subspan(b * n, n), scratch);
  }
  if (sigma > 0.0 && !std::is_same_v<Z, kernels::no_noise>)
    kernels::ddim(c, x, model_out, z, proc.threshold, x0, x_next, policy);
  else
    kernels::ddim(c, x, model_out, kernels::no_noise{}, proc.threshold, x0, x_next, policy);
}

}  // namespace detail

/// @brief One DDIM step from timestep t to p (Song et al. 2021, Eq. 12):
/// \f$x_p = \sqrt{\bar\alpha_p}\,\hat x_0 + \sqrt{1-\bar\alpha_p-\sigma^2}\,\hat\varepsilon + \sigma z\f$ with
/// \f$\sigma^2 = \eta^2\,\frac{1-\bar\alpha_p}{1-\bar\alpha_t}\left(1 - \frac{\bar\alpha_t}{\bar\alpha_p}\right)\f$, the skip-posterior
/// variance (@ref skip_posterior) times η². `p = std::nullopt` means the final step with ᾱ_p = 1.
/// @param[in] s schedule.
/// @param[in] t the current 0-based timestep.
/// @param[in] p the target 0-based timestep (p < t, or p = t = 0 for the `first_step` final), or none for ᾱ_p = 1.
/// @param[in] eta η ≥ 0.
/// @param[in] kind model output kind; @param[in] proc x̂₀ processing;
/// @param[in] use_clipped_model_output recompute ε̂ from the processed x̂₀.
/// @param[in] x rows × n; @param[in] model_out rows × n; @param[in] z noise, rows × n (ignored when σ = 0);
/// @param[out] x0 processed x̂₀; @param[out] x_next may alias x; @param[in,out] scratch n elements;
/// @param[in] policy threads of the kernels (bit-identical for any count).
///
/// Runs on the fused kernel kernels::ddim (one pass); with dynamic thresholding (a per-row
/// quantile of |x̂₀|) x̂₀ is formed and thresholded first, then the fused pass reads it.
template <real_scalar T, execution_policy P = sequential_policy>
void ddim_step(const noise_schedule& s, std::size_t t, std::optional<std::size_t> p, double eta, prediction kind,
               const x0_processing& proc, bool use_clipped_model_output, std::span<const T> x,
               std::span<const T> model_out, std::span<const T> z, std::span<T> x0, std::span<T> x_next,
               std::span<T> scratch, const P& policy = P{}) {
  detail::ddim_step_impl<T>(s, t, p, eta, kind, proc, use_clipped_model_output, x, model_out, z, x0, x_next, scratch,
                            policy);
}

/// @brief ddim_step with the noise generated inside the fused kernel: row b's z is normals
/// 0 … n−1 of stream (first_sample + b, step) of `noise`, bit-identical to the buffer form with
/// a buffer filled by philox_normal::fill at those addresses.
/// @param[in] s schedule; @param[in] t the current 0-based timestep; @param[in] p the target timestep
/// or none; @param[in] eta η ≥ 0; @param[in] kind model output kind; @param[in] proc x̂₀ processing;
/// @param[in] use_clipped_model_output recompute ε̂ from the processed x̂₀; @param[in] x rows × n;
/// @param[in] model_out rows × n; @param[in] noise the generator; @param[in] first_sample stream
/// sample of row 0; @param[in] step stream step; @param[out] x0 processed x̂₀;
/// @param[out] x_next may alias x; @param[in,out] scratch n elements; @param[in] policy threads.
template <real_scalar T, execution_policy P = sequential_policy>
void ddim_step(const noise_schedule& s, std::size_t t, std::optional<std::size_t> p, double eta, prediction kind,
               const x0_processing& proc, bool use_clipped_model_output, std::span<const T> x,
               std::span<const T> model_out, const philox_normal& noise, std::uint64_t first_sample,
               std::uint64_t step, std::span<T> x0, std::span<T> x_next, std::span<T> scratch, const P& policy = P{}) {
  detail::ddim_step_impl<T>(s, t, p, eta, kind, proc, use_clipped_model_output, x, model_out,
                            kernels::philox_stream{&noise, first_sample, step, 0, scratch.size()}, x0, x_next, scratch,
                            policy);
}


/// @brief DDIM sampling (Song et al. 2021) over a strictly decreasing timestep list.
///
/// With η = 0 this integrates the probability-flow ODE; it is Euler's method in σ-space
/// (Karras et al. 2022, §3), first order. The next timestep is read from the list (never
/// t − T/N). The noise of the k-th step of row b is stream (first_sample + b, k).
/// @param[in] s the training schedule; @param[in] model the denoiser (n outputs per row);
/// @param[in,out] x rows × n; @param[in] rows batch size; @param[in] noise the source (used for
/// x_T and when η > 0); @param[in] steps the timesteps; @param[in] opt options; @param[in] hooks callback etc.
/// @throws std::invalid_argument for η < 0 or NaN, bad sizes, or `steps` of another T.
template <class Model, mutable_tensor X, class Noise, class Context = no_context>
sample_result ddim_sample(const noise_schedule& s, Model& model, X&& x, std::size_t rows, Noise& noise,
                          const timestep_sequence& steps, const ddim_options& opt = {},
                          const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(denoiser<Model, T, Context>, "ddim_sample: Model must be a diffusion::denoiser for this element type");
  constexpr std::string_view where = "diffusion::ddim_sample";
  if (!(opt.eta >= 0.0 && std::isfinite(opt.eta)))
    detail::throw_invalid(where, "eta = " + detail::to_text(opt.eta) + " is outside the allowed range [0, inf)");
  if (steps.num_train_timesteps() != s.size())
    detail::throw_invalid(where, "steps.num_train_timesteps() = " + detail::to_text(steps.num_train_timesteps()) +
                                     " differs from the schedule's size " + detail::to_text(s.size()));
  auto xs = as_mutable_span(x);
  const std::size_t n = detail::sampler_rows(where, xs.size(), rows);
  detail::check_x0_processing(where, opt.x0);
  sampler_workspace<T> local;
  sampler_workspace<T>& ws = hooks.workspace ? *hooks.workspace : local;
  ws.reserve(rows, n, n);
  if (opt.draw_initial_noise) detail::fill_initial_noise(noise, opt.first_sample, xs, rows, n);
  sample_result result{};
  const std::size_t K = steps.size();
  for (std::size_t k = 0; k < K; ++k) {
    const std::size_t t = steps[k];
    std::optional<std::size_t> p = steps.previous(k);
    if (!p && opt.final == ddim_options::final_alpha::first_step) p = 0;
    auto out = detail::call_model_at<Model, T, Context>(where, model, xs, rows, n, static_cast<double>(t), s[t].sigma, ws,
                                                        hooks.context, opt.check_finite, k, result.model_calls);
    auto z = std::span<T>(ws.aux).first(rows * n);
    auto x0 = std::span<T>(ws.x0).first(rows * n);
    const auto scratch = std::span<T>(ws.scratch).first(n);
    if (opt.eta > 0.0 && p && *p < t)  // noise: in the fused kernel for philox_normal, else through ws.aux
      detail::ddim_step_impl<T>(s, t, p, opt.eta, model.predicts(), opt.x0, opt.use_clipped_model_output, xs, out,
                                detail::step_noise(noise, opt.first_sample, k, z, rows, n), x0, xs, scratch,
                                hooks.execution);
    else
      detail::ddim_step_impl<T>(s, t, p, opt.eta, model.predicts(), opt.x0, opt.use_clipped_model_output, xs, out,
                                kernels::no_noise{}, x0, xs, scratch, hooks.execution);
    ++result.steps;
    if (hooks.on_step && !hooks.on_step(step_info<T>{k + 1, K, static_cast<double>(t), s[t].sigma, xs, x0})) {
      result.completed = false;
      break;
    }
  }
  return result;
}

/// @brief DDIM inversion (Song et al. 2021 §4.3; diffusers `DDIMInverseScheduler`): the η = 0 map
/// run forward, image → noise, visiting `steps` in increasing order: from x at level s (ᾱ = 1 for
/// the data before the first step) to \f$x_t = \sqrt{\bar\alpha_t}\hat x_0 + \sqrt{1-\bar\alpha_t}\hat\varepsilon\f$,
/// with the model evaluated at the current level (its first call at the first visited timestep).
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
  auto xs = as_mutable_span(x);
  const std::size_t n = detail::sampler_rows(where, xs.size(), rows);
  sampler_workspace<T> local;
  sampler_workspace<T>& ws = hooks.workspace ? *hooks.workspace : local;
  ws.reserve(rows, n, n);
  sample_result result{};
  const std::size_t K = steps.size();
  for (std::size_t k = 0; k < K; ++k) {
    // Visit ascending: the model is evaluated at the current level `cur` (the previous target),
    // the first time at the lowest visited timestep, as diffusers' inverse scheduler does.
    const std::size_t t = steps[K - 1 - k];
    const std::size_t cur = k == 0 ? t : steps[K - k];
    auto out = detail::call_model_at<Model, T, Context>(where, model, xs, rows, n, static_cast<double>(cur), s[cur].sigma,
                                                        ws, hooks.context, true, k, result.model_calls);
    const affine_coefficients to_x0 = k == 0 ? affine_coefficients{1.0, 0.0} : conversion_coefficients(s, cur, model.predicts(), prediction::sample);
    const affine_coefficients to_eps = conversion_coefficients(s, cur, model.predicts(), prediction::epsilon);
    auto x0 = std::span<T>(ws.x0).first(rows * n);
    const T cx = static_cast<T>(s[t].sqrt_alpha_bar), ce = static_cast<T>(s[t].sqrt_one_minus_alpha_bar);
    const T ax = static_cast<T>(to_x0.a), bx = static_cast<T>(to_x0.b);
    const T ae = static_cast<T>(to_eps.a), be = static_cast<T>(to_eps.b);
    const bool first = k == 0;
    T* xp = xs.data();
    const T* op = out.data();
    T* hp = x0.data();
    kernels::detail::for_each_lane<T>(hooks.execution, rows * n, [&](auto lane, std::size_t i) {
      using V = typename decltype(lane)::type;
      using kernels::detail::load;
      // At the first step x is the data itself (ᾱ = 1): x̂₀ = x, and ε̂ comes from the model at t.
      const V xv = load<V>(xp + i), ov = load<V>(op + i);
      const V xh = first ? xv : kernels::madd(V(ax), xv, V(bx) * ov);
      const V eh = kernels::madd(V(ae), xv, V(be) * ov);
      kernels::detail::store(hp + i, xh);
      kernels::detail::store(xp + i, kernels::madd(V(cx), xh, V(ce) * eh));
    });
    ++result.steps;
    if (hooks.on_step && !hooks.on_step(step_info<T>{k + 1, K, static_cast<double>(t), s[t].sigma, xs, x0})) {
      result.completed = false;
      break;
    }
  }
  return result;
}

}  // namespace diffusion

/// @}
