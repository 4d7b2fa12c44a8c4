/// @file
/// @brief What every sampler shares: the per-step callback (progress, cancellation, the
/// progressive-generation figure), preallocated work buffers, the check of the model's
/// output and of the library's own arithmetic, x̂₀ post-processing, and the one prologue and
/// epilogue of every sampling loop (`detail::sampler_loop`).
///
/// Noise: every sampler takes an explicit noise source with
/// `fill(sample, step, offset, std::span<T>)` (for example @ref diffusion::philox_normal); row b
/// at step k draws normals 0 … n−1 of stream (first_sample + b, k), and the initial x_T (when
/// the sampler draws it) of stream (first_sample + b, `initial_noise_step`). There is never a
/// hidden global generator, and the same seed gives bit-identical output.
///
/// Non-finite policy: after each model call the output is scanned; a NaN or ±∞ raises
/// `std::domain_error` naming the row, element, step index and timestep (disable with
/// `check_finite = false` in the options when the scan's memory pass matters). What the library
/// computes itself is checked too, at the cost of one flag per fused pass (kernels::map): a step
/// whose result overflows the element type (a coefficient too large for float, x̂₀ = (x − σε̂)/α
/// beyond the float range) raises `std::domain_error` naming the sampler and the step, never the
/// model.
///
/// State after an exception: a sampler that throws (the model's exception, a non-finite model
/// output, an overflow) leaves x holding the state after the last completed step: every step
/// writes x only in its final pass, after its model calls (docs/conventions.md).
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

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../models/denoiser.hpp"
#include "../models/sigma_space.hpp"
#include "../noise/philox.hpp"
#include "../process/parameterization.hpp"
#include "../process/posterior.hpp"
#include "../schedule/noise_schedule.hpp"
#include "../schedule/sigmas.hpp"

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
  double sigma;                ///< The noise level σ the step started from (σ-space ratio σ/α).
  std::span<const T> x;        ///< The state after the step (all rows).
  /// The model's x̂₀ from the first model evaluation of this step (at `sigma`), after
  /// clipping/thresholding (all rows): the same for every sampler, single- or multi-stage.
  std::span<const T> x0_pred;
  double sigma_next = 0.0;     ///< The noise level the step ended at (0: the data).
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
  std::vector<std::vector<T>> extra;  ///< further rows × n buffers of multistep and multi-stage samplers.

  /// @brief Buffer k of the extra ones, sized to `size` (grown on first use; reuse makes it free).
  std::span<T> extra_buffer(std::size_t k, std::size_t size) {
    if (extra.size() <= k) extra.resize(k + 1);
    if (extra[k].size() < size) extra[k].resize(size);
    return std::span<T>(extra[k]).first(size);
  }

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

/// @brief Optional buffers of a step function: where x̂₀ goes (rows × n; not written when empty)
/// and the scratch of dynamic thresholding (n elements; needed only with it).
template <storage_scalar T>
struct step_buffers {
  std::span<T> x0 = {};       ///< x̂₀ out, rows × n, after clipping/thresholding (empty: not written).
  std::span<T> scratch = {};  ///< At least n elements, for the per-row quantile of dynamic thresholding.
};

/// @brief The noise of one sampler step generated inside the fused kernel from `noise`: row b gets
/// normals 0 … n−1 of stream (first_sample + b, step), bit-identical to a buffer filled with
/// `noise.fill(first_sample + b, step, 0, …)` (the step functions set the row length n).
/// @param[in] noise the generator (must outlive the call); @param[in] step the stream step;
/// @param[in] first_sample the stream sample of row 0.
inline kernels::philox_stream step_stream(const philox_normal& noise, std::uint64_t step, std::uint64_t first_sample = 0) {
  return {&noise, first_sample, step};
}

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

/// Validates x and rows of a sampler; returns n (elements per row).
inline std::size_t sampler_rows(std::string_view where, std::size_t total, std::size_t rows) {
  return rows_split(where, total, rows, "x");
}

/// A step's noise for rows of n elements: a Philox stream with the default row length gets n (row
/// b is stream first_sample + b); buffers and no_noise pass through.
template <class Z>
Z rows_of(const Z& z, std::size_t n) noexcept {
  if constexpr (std::is_same_v<Z, kernels::philox_stream>) {
    Z r = z;
    if (r.row_length == std::numeric_limits<std::size_t>::max()) r.row_length = n;
    return r;
  } else {
    return z;
  }
}

/// A policy as the run-time parallel_policy the step options hold (sequential: one thread).
inline parallel_policy as_parallel(const sequential_policy&) noexcept { return parallel_policy{1}; }
inline parallel_policy as_parallel(const parallel_policy& p) noexcept { return p; }

/// Requires a noise operand to cover n elements: a buffer of exactly n normals, or a Philox stream
/// with its generator.
template <storage_scalar T, class Z>
void check_noise_operand(std::string_view where, const Z& z, std::size_t n) {
  if constexpr (std::is_same_v<Z, std::span<const compute_t<T>>>) {
    check_same_size(where, "noise", z.size(), "x", n);
  } else if constexpr (std::is_same_v<Z, kernels::philox_stream>) {
    if (z.source == nullptr) throw_invalid(where, "the noise stream has no generator (source is null)");
    if (z.row_length == 0) throw_invalid(where, "the noise stream's row_length is 0");
  }
}

/// Throws std::domain_error when a step's kernel reported a non-finite result: the step's arithmetic
/// overflowed, or (where the caller did not scan them: the public step functions do not) an input
/// array held a non-finite value. The loops scan every model output first, so there it is the former.
inline void require_finite_step(std::string_view where, bool finite, std::string_view what) {
  if (!finite)
    throw_domain(where, std::string(what) +
                            " produced a non-finite value: its arithmetic overflows the element type (values or "
                            "coefficients too large for float?), or an input array (state, model output, history, "
                            "noise) holds a non-finite value");
}
/// The same with the step's description built only on failure (no allocation on the way).
template <class What>
  requires std::is_invocable_r_v<std::string, What>
void require_finite_step(std::string_view where, bool finite, What&& what) {
  if (!finite) require_finite_step(where, false, std::string_view(what()));
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
void fill_initial_sigma_noise(std::string_view where, Noise& noise, std::uint64_t first_sample, std::span<T> x,
                              std::size_t rows, std::size_t n, double sigma0) {
  const T s = coefficient<T>(where, "sigmas[0]", sigma0);
  fill_initial_noise(noise, first_sample, x, rows, n);
  require_finite_step(where, kernels::scale(s, std::span<const T>(x), x), "the initial state sigmas[0] * z");
}

/// The model's time at σ for reports: what a @ref sigma_space_model passes to its model, σ
/// itself for other σ-space denoisers.
template <class SigmaModel>
double model_time(const SigmaModel& D, double sigma) {
  if constexpr (requires { D.time(sigma); })
    return D.time(sigma);
  else
    return sigma;
}

/// The one prologue and epilogue of every sampling loop: validates x and rows (naming the
/// sampler), picks the caller's workspace or a local one and sizes it, counts steps and model
/// calls, and runs the callback after each step.
template <real_scalar T, class Context>
class sampler_loop {
 public:
  sampler_loop(std::string_view where, std::span<T> x, std::size_t rows, const sampler_hooks<T, Context>& hooks,
               std::size_t width_factor)
      : where_(where), x_(x), rows_(rows), n_(sampler_rows(where, x.size(), rows)), hooks_(hooks),
        ws_(hooks.workspace ? *hooks.workspace : local_) {
    ws_.reserve(rows_, n_, width_factor * n_);
  }
  sampler_loop(const sampler_loop&) = delete;
  sampler_loop& operator=(const sampler_loop&) = delete;

  [[nodiscard]] std::string_view where() const noexcept { return where_; }
  [[nodiscard]] std::span<T> x() const noexcept { return x_; }
  [[nodiscard]] std::size_t rows() const noexcept { return rows_; }
  [[nodiscard]] std::size_t row_size() const noexcept { return n_; }
  [[nodiscard]] std::size_t size() const noexcept { return x_.size(); }
  [[nodiscard]] sampler_workspace<T>& ws() noexcept { return ws_; }
  [[nodiscard]] const parallel_policy& policy() const noexcept { return hooks_.execution; }
  [[nodiscard]] const Context* context() const noexcept { return hooks_.context; }
  [[nodiscard]] sample_result& result() noexcept { return result_; }

  /// A rows × n buffer of the workspace: 0 x̂₀, 1 noise, 2 and 3 the auxiliary states, 4… extra ones.
  [[nodiscard]] std::span<T> buffer(std::size_t k) {
    const std::size_t m = x_.size();
    switch (k) {
      case 0: return std::span<T>(ws_.x0).first(m);
      case 1: return std::span<T>(ws_.aux).first(m);
      case 2: return std::span<T>(ws_.aux2).first(m);
      case 3: return std::span<T>(ws_.aux3).first(m);
      default: return ws_.extra_buffer(k - 4, m);
    }
  }

  /// The epilogue of a step: counts it and runs the callback; false when the callback cancels.
  bool report(std::size_t count, double timestep, double sigma, double sigma_next, std::span<const T> x0) {
    ++result_.steps;
    if (hooks_.on_step &&
        !hooks_.on_step(step_info<T>{result_.steps, count, timestep, sigma, x_, x0, sigma_next})) {
      result_.completed = false;
      return false;
    }
    return true;
  }

 private:
  std::string_view where_;
  std::span<T> x_;
  std::size_t rows_, n_;
  const sampler_hooks<T, Context>& hooks_;
  sampler_workspace<T> local_;
  sampler_workspace<T>& ws_;
  sample_result result_{};
};

}  // namespace detail

}  // namespace diffusion

/// @}
