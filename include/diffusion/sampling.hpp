/// @file
/// @brief What every sampler shares: the per-step callback (progress, cancellation, the
/// progressive-generation figure), preallocated work buffers, the check of the model's
/// output, x̂₀ post-processing, and the σ-space view of a model used by the Karras and
/// Langevin families.
///
/// Noise: every sampler takes an explicit noise source with
/// `fill(sample, step, offset, std::span<T>)` (for example @ref diffusion::philox_normal); row b
/// at step k draws normals 0 … n−1 of stream (first_sample + b, k), and the initial x_T (when
/// the sampler draws it) of stream (first_sample + b, `initial_noise_step`). There is never a
/// hidden global generator, and the same seed gives bit-identical output.
///
/// Non-finite model output policy: after each model call the output is scanned; a NaN or ±∞
/// raises `std::domain_error` naming the row, element, step index and timestep (disable with
/// `check_finite = false` in the options when the scan's memory pass matters).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "denoiser.hpp"
#include "execution.hpp"
#include "gaussian.hpp"
#include "kernels.hpp"
#include "noise.hpp"
#include "schedule.hpp"
#include "sigmas.hpp"
#include "tensor.hpp"

/// @defgroup sampling Sampling infrastructure
/// @brief Callbacks, workspaces, output checks, x̂₀ clipping and dynamic thresholding, the σ-space model view.
/// @{

namespace diffusion {

/// @brief The stream step index of the initial noise x_T drawn by a sampler.
inline constexpr std::uint64_t initial_noise_step = 0xFFFFFFFFull;

/// @brief What a sampler reports after each step (DDPM Fig. 6 needs exactly `x0_pred` per step).
template <real_scalar T>
struct step_info {
  std::size_t index;           ///< Steps done so far, 1 … count.
  std::size_t count;           ///< Total number of steps of the loop.
  double timestep;             ///< The model's (0-based, possibly fractional) timestep at this step.
  double sigma;                ///< The noise level σ the step started from.
  std::span<const T> x;        ///< The state after the step (all rows).
  std::span<const T> x0_pred;  ///< The model's x̂₀ at this step, after clipping/thresholding (all rows).
};

/// @brief Called after each step; return false to cancel the loop (the state is left as it is).
template <real_scalar T>
using step_callback = std::function<bool(const step_info<T>&)>;

/// @brief How a sampling loop ended.
struct sample_result {
  bool completed = true;        ///< False if the callback cancelled.
  std::size_t steps = 0;        ///< Steps done.
  std::size_t model_calls = 0;  ///< Denoiser evaluations.
};

/// @brief Dynamic thresholding of x̂₀ (Saharia et al. 2022, Imagen §2.3; diffusers
/// `_threshold_sample`): per row, s = the `percentile` quantile of |x̂₀| (linear interpolation,
/// as `torch.quantile`), clamped to [1, `max_value`]; then x̂₀ ← clamp(x̂₀, −s, s)/s.
struct dynamic_threshold {
  double percentile = 0.995;  ///< In [0, 1].
  double max_value = 1.0;     ///< ≥ 1 (diffusers' `sample_max_value`).
};

/// @brief Post-processing of the predicted x̂₀ before it forms the next state.
struct x0_processing {
  /// Clamp x̂₀ to [−clip_value, clip_value] (improved DDPM's `clip_denoised`; not in DDPM Algorithm 2).
  bool clip = false;
  /// The clamp bound (> 0).
  double clip_value = 1.0;
  /// Dynamic thresholding, applied instead of `clip` when enabled.
  bool threshold = false;
  /// Its parameters.
  dynamic_threshold threshold_options{};
};

/// @brief Buffers a sampler needs, allocated once (by the caller, to reuse across calls, or by
/// the sampler at its start) and never per step.
template <real_scalar T>
struct sampler_workspace {
  std::vector<T> model_out;       ///< rows × width (width = n, or 2n for learned variance).
  std::vector<T> x0;              ///< rows × n: x̂₀.
  std::vector<T> aux;             ///< rows × n: noise, or a second state for two-stage samplers.
  std::vector<T> aux2;            ///< rows × n: a third state (Heun's second point).
  std::vector<T> aux3;            ///< rows × n: a fourth state (Heun's second slope, DPM-Solver++'s history).
  std::vector<T> model_in;        ///< rows × n: the scaled model input of sigma_space_model.
  std::vector<double> timesteps;  ///< rows.
  std::vector<double> sigmas;     ///< rows: the levels passed to the model.
  std::vector<double> levels;     ///< rows: the levels a σ-space sampler asks for.
  std::vector<T> scratch;         ///< n: quantiles.

  /// Sizes every buffer for `rows` rows of n elements and a model output of `width` per row.
  void reserve(std::size_t rows, std::size_t n, std::size_t width) {
    model_out.resize(rows * width);
    x0.resize(rows * n);
    aux.resize(rows * n);
    aux2.resize(rows * n);
    aux3.resize(rows * n);
    model_in.resize(rows * n);
    timesteps.resize(rows);
    sigmas.resize(rows);
    levels.resize(rows);
    scratch.resize(n);
  }
};

/// @brief The hooks every sampling loop accepts: a step callback, caller-owned work buffers
/// (to avoid even the one allocation at the start of a call), and the conditioning context.
template <real_scalar T, class Context = no_context>
struct sampler_hooks {
  step_callback<T> on_step{};                ///< Called after every step; may cancel.
  sampler_workspace<T>* workspace = nullptr;  ///< Reused buffers, or null to allocate once per call.
  const Context* context = nullptr;          ///< Passed to every model call.
  /// Threads of the element-wise kernels (execution.hpp). The default, one thread, runs on the
  /// calling thread and allocates nothing; any thread count gives bit-identical results.
  /// (Starting threads allocates: a step with more than one thread is not allocation-free.)
  parallel_policy execution{1};
};

namespace detail {

/// Validates x and rows; returns n (elements per row).
inline std::size_t sampler_rows(std::string_view where, std::size_t total, std::size_t rows) {
  return row_length(where, total, rows);
}

/// Throws std::domain_error at the first non-finite element of a model output.
template <real_scalar T>
void check_model_output(std::string_view where, std::span<const T> out, std::size_t width, std::size_t step,
                        double timestep) {
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]))
      throw_domain(where, "the denoiser wrote " + to_text(static_cast<double>(out[i])) + " at row " +
                              to_text(i / width) + ", element " + to_text(i % width) + " in step " + to_text(step) +
                              " (timestep " + to_text(timestep) + ")");
}

/// Applies x0_processing to one row in place.
template <real_scalar T>
void process_x0_row(const x0_processing& p, std::span<T> x0, std::span<T> scratch) {
  if (p.threshold) {
    for (std::size_t k = 0; k < x0.size(); ++k) scratch[k] = std::abs(x0[k]);
    // torch.quantile(..., interpolation="linear"): position q (n - 1) between order statistics.
    const double pos = p.threshold_options.percentile * static_cast<double>(x0.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const double frac = pos - static_cast<double>(lo);
    auto first = scratch.begin(), nth = first + static_cast<std::ptrdiff_t>(lo);
    std::nth_element(first, nth, scratch.begin() + static_cast<std::ptrdiff_t>(x0.size()));
    const double a = static_cast<double>(*nth);
    double b = a;
    if (frac > 0.0) b = static_cast<double>(*std::min_element(nth + 1, scratch.begin() + static_cast<std::ptrdiff_t>(x0.size())));
    const double q = a + frac * (b - a);
    const double s = std::clamp(q, 1.0, p.threshold_options.max_value);
    const T st = static_cast<T>(s), inv = static_cast<T>(1.0 / s);
    for (auto& v : x0) v = std::clamp(v, -st, st) * inv;
  } else if (p.clip) {
    const T c = static_cast<T>(p.clip_value);
    for (auto& v : x0) v = std::clamp(v, -c, c);
  }
}

inline void check_x0_processing(std::string_view where, const x0_processing& p) {
  if (p.clip) check_positive(where, "clip_value", p.clip_value);
  if (p.threshold) {
    if (!(p.threshold_options.percentile >= 0.0 && p.threshold_options.percentile <= 1.0))
      throw_invalid(where, "threshold percentile = " + to_text(p.threshold_options.percentile) +
                               " is outside the allowed range [0, 1]");
    if (!(p.threshold_options.max_value >= 1.0 && std::isfinite(p.threshold_options.max_value)))
      throw_invalid(where, "threshold max_value = " + to_text(p.threshold_options.max_value) +
                               " is outside the allowed range [1, inf)");
  }
}

/// Whether a sampler can generate its noise inside the fused kernels: only for
/// diffusion::philox_normal (a generic noise_source goes through a buffer).
template <class Noise>
inline constexpr bool is_philox = std::is_same_v<std::remove_cvref_t<Noise>, philox_normal>;

/// Fills rows of `x` with the initial noise streams.
template <class Noise, real_scalar T>
void fill_initial_noise(Noise& noise, std::uint64_t first_sample, std::span<T> x, std::size_t rows, std::size_t n) {
  for (std::size_t b = 0; b < rows; ++b) noise.fill(first_sample + b, initial_noise_step, 0, x.subspan(b * n, n));
}

/// Fills rows of `z` with the noise of step k.
template <class Noise, real_scalar T>
void fill_step_noise(Noise& noise, std::uint64_t first_sample, std::uint64_t k, std::span<T> z, std::size_t rows,
                     std::size_t n) {
  for (std::size_t b = 0; b < rows; ++b) noise.fill(first_sample + b, k, 0, z.subspan(b * n, n));
}

/// The noise operand of step k for rows × n elements: a kernels::philox_stream (row b is
/// stream (first_sample + b, k), generated inside the fused kernels) for philox_normal, else
/// `buffer` filled from the generic source.
template <class Noise, real_scalar T>
auto step_noise(Noise& noise, std::uint64_t first_sample, std::uint64_t k, std::span<T> buffer, std::size_t rows,
                std::size_t n) {
  if constexpr (is_philox<Noise>) {
    (void)buffer;
    (void)rows;
    return kernels::philox_stream{&noise, first_sample, k, 0, n};
  } else {
    fill_step_noise(noise, first_sample, k, buffer, rows, n);
    return std::span<const T>(buffer);
  }
}

/// One model call of the discrete-time samplers at one timestep for all rows: fills the
/// per-row timestep and σ, calls the model into ws.model_out, counts it and (optionally)
/// checks its output. Returns the output rows × width.
template <class Model, real_scalar T, class Context>
std::span<T> call_model_at(std::string_view where, Model& model, std::span<const T> x, std::size_t rows,
                           std::size_t width, double timestep, double sigma, sampler_workspace<T>& ws,
                           const Context* context, bool check, std::size_t step, std::size_t& calls) {
  std::fill_n(ws.timesteps.begin(), rows, timestep);
  std::fill_n(ws.sigmas.begin(), rows, sigma);
  const denoiser_input<T, Context> in{x, std::span<const double>(ws.timesteps).first(rows),
                                      std::span<const double>(ws.sigmas).first(rows), context};
  auto out = std::span<T>(ws.model_out).first(rows * width);
  model(in, out);
  ++calls;
  if (check) check_model_output<T>(where, out, width, step, timestep);
  return out;
}

/// Draws the initial state of a σ-space sampler, x = σ_0 z, into every row.
template <class Noise, real_scalar T>
void fill_initial_sigma_noise(Noise& noise, std::uint64_t first_sample, std::span<T> x, std::size_t rows,
                              std::size_t n, double sigma0) {
  fill_initial_noise(noise, first_sample, x, rows, n);
  kernels::scale(static_cast<T>(sigma0), std::span<const T>(x), x);
}

/// One call of a σ-space model D at a single level σ for all rows, into `den`, with the
/// output check; the per-row level buffer is ws.levels.
template <class SigmaModel, real_scalar T, class Context>
void denoise_at(std::string_view where, SigmaModel& D, std::span<const T> x, double sigma, std::span<T> den,
                sampler_workspace<T>& ws, const Context* context, bool check, std::size_t step) {
  auto levels = std::span<double>(ws.levels);
  std::fill(levels.begin(), levels.end(), sigma);
  D(x, std::span<const double>(levels), den, ws, context);
  if (check) check_model_output<T>(where, den, den.size() / levels.size(), step, ws.timesteps[0]);
}

}  // namespace detail

/// @brief A model seen in σ-space (Karras et al. 2022, §2 and Table 1): the denoiser
/// \f$D(x;\sigma) = \hat x_0\f$ for \f$x = x_0 + \sigma\varepsilon\f$, built from a model trained on the
/// variance-preserving \f$x_t = \sqrt{\bar\alpha}x_0 + \sqrt{1-\bar\alpha}\varepsilon\f$ with \f$\bar\alpha = 1/(1+\sigma^2)\f$.
///
/// The model is called with \f$c_\text{in}x = x/\sqrt{1+\sigma^2}\f$, its timestep \f$t(\sigma)\f$ from
/// @ref sigma_to_t on `schedule` (fractional between steps: k-diffusion's `DiscreteSchedule`
/// convention), and σ; its prediction is converted to x̂₀ (ε: \f$x - \sigma\hat\varepsilon\f$;
/// v: \f$c_\text{in}^2x - \sigma c_\text{in}\hat v\f$; score: \f$x + \sigma^2 c_\text{in}\,\widehat{\nabla}\f$, the model's score
/// being with respect to its own input \f$c_\text{in}x\f$). A model that learns its variance writes 2n per
/// row; the variance block is ignored here.
/// Without a schedule (a continuous-time model) the timestep passed is σ itself.
template <class Model>
class sigma_space_model {
 public:
  /// @param[in] model the wrapped denoiser (referenced, not copied).
  /// @param[in] schedule the training schedule for σ → t, or null.
  /// @param[in] learned_variance true if the model writes a variance block (2n per row).
  explicit sigma_space_model(Model& model, const noise_schedule* schedule = nullptr, bool learned_variance = false)
      : model_(&model), schedule_(schedule), width_factor_(learned_variance ? 2 : 1) {}

  /// @brief Elements per row the wrapped model writes: n, or 2n for a learned variance.
  [[nodiscard]] std::size_t output_width(std::size_t n) const noexcept { return n * width_factor_; }

  /// @brief Writes \f$D(x_b;\sigma_b)\f$ for each row b into `x0`.
  /// @param[in] x rows of the σ-space state.
  /// @param[in] sigmas one σ per row, finite and > 0.
  /// @param[out] x0 rows of x̂₀.
  /// @param[in,out] ws work buffers (model_in, model_out, timesteps, sigmas are used).
  /// @param[in] context conditioning passed to the model.
  template <real_scalar T, class Context = no_context>
  void operator()(std::span<const T> x, std::span<const double> sigmas, std::span<T> x0, sampler_workspace<T>& ws,
                  const Context* context = nullptr) {
    const std::size_t rows = sigmas.size(), n = x.size() / rows;
    auto xin = std::span<T>(ws.model_in).first(x.size());
    for (std::size_t b = 0; b < rows; ++b) {
      const double sg = sigmas[b], cin = 1.0 / std::sqrt(1.0 + sg * sg);
      ws.timesteps[b] = schedule_ ? sigma_to_t(*schedule_, sg) : sg;
      ws.sigmas[b] = sg;
      kernels::scale(static_cast<T>(cin), x.subspan(b * n, n), xin.subspan(b * n, n));
    }
    const denoiser_input<T, Context> in{xin, std::span<const double>(ws.timesteps).first(rows),
                                        std::span<const double>(ws.sigmas).first(rows), context};
    const std::size_t width = n * width_factor_;
    auto out = std::span<T>(ws.model_out).first(rows * width);
    (*model_)(in, out);
    const prediction kind = model_->predicts();
    for (std::size_t b = 0; b < rows; ++b) {
      const double sg = sigmas[b], cin = 1.0 / std::sqrt(1.0 + sg * sg);
      affine_coefficients k{0.0, 1.0};  // x0 = a x + b out, in terms of the sigma-space x
      switch (kind) {
        case prediction::epsilon: k = {1.0, -sg}; break;
        case prediction::sample: k = {0.0, 1.0}; break;
        case prediction::v: k = {cin * cin, -sg * cin}; break;
        case prediction::score: k = {1.0, sg * sg * cin}; break;
      }
      kernels::affine2(static_cast<T>(k.a), x.subspan(b * n, n), static_cast<T>(k.b),
                       std::span<const T>(out).subspan(b * width, n), x0.subspan(b * n, n));
    }
  }

 private:
  Model* model_;
  const noise_schedule* schedule_;
  std::size_t width_factor_;
};

}  // namespace diffusion

/// @}
