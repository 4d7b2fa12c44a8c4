/// @file
/// @brief A model seen in σ-space (Karras et al. 2022, §2 and Table 1): the denoiser
/// \f$D(x;\sigma) = \hat x_0\f$ for \f$x = x_0 + \sigma\varepsilon\f$, built from a model trained on any process of
/// the library, and the @ref diffusion::sigma_denoiser concept the σ-space samplers take.
///
/// A σ-space state x at noise ratio σ is the state \f$x_m = \alpha_m x\f$ of the model's own process at
/// the level \f$(\alpha_m, \sigma_m)\f$ with \f$\sigma_m/\alpha_m = \sigma\f$. The adapter calls the model with \f$x_m\f$, the
/// model's own time for that level and σ, and turns its prediction into x̂₀ with the one conversion
/// table (process/parameterization.hpp). How the model's time and level follow from σ is the
/// adapter's time map:
/// | time map | process | level \f$(\alpha_m, \sigma_m)\f$ | model time |
/// |---|---|---|---|
/// | @ref diffusion::discrete_time | a DDPM table (diffusers, LDM) | \f$(1, \sigma)/\sqrt{1+\sigma^2}\f$ | @ref diffusion::sigma_to_t "sigma_to_t" (log-σ interpolation, k-diffusion) |
/// | @ref diffusion::sigma_time | VP analytic models, continuous-time VE/VP networks that take σ | \f$(1, \sigma)/\sqrt{1+\sigma^2}\f$ | σ itself |
/// | @ref diffusion::flow_time | rectified-flow models (SD3, Flux): the state is flow-scale, σ ∈ [0, 1] | (1 − σ, σ) | σ·N |
///
/// The state a sampler carries is in σ-space (x₀ + σε, α = 1) for the variance-preserving time
/// maps, and in the flow's own scale ((1 − σ)x₀ + σε) for @ref diffusion::flow_time, where σ = 1 is
/// pure noise (its σ-space ratio would be infinite); the adapter reports the state's process
/// (`state_process()`) and level (`state_level(σ)`), and the σ-space samplers step between those
/// levels (samplers/sigma_common.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../process/parameterization.hpp"
#include "../schedule/noise_schedule.hpp"
#include "../schedule/sigmas.hpp"
#include "denoiser.hpp"

/// @defgroup sigma_space The σ-space adapter
/// @brief A model of any process as Karras' denoiser D(x; σ), and the concept of such a denoiser.
/// @{

namespace diffusion {

/// @brief The process of the state a σ-space sampler carries (how x and σ relate to x₀ and ε).
enum class state_process {
  /// Karras' σ-space: \f$x = x_0 + \sigma\varepsilon\f$, σ ∈ [0, ∞) (@ref noise_level::exploding).
  sigma_space,
  /// Rectified flow: \f$x = (1-\sigma)x_0 + \sigma\varepsilon\f$, σ ∈ [0, 1] (@ref noise_level::flow).
  rectified_flow,
};

/// @brief The noise level of a state of process `p` at σ.
inline noise_level state_level(state_process p, double sigma) noexcept {
  return p == state_process::rectified_flow ? noise_level::flow(sigma) : noise_level::exploding(sigma);
}

/// @brief The time map of a model trained on a discrete variance-preserving schedule (DDPM, LDM,
/// Stable Diffusion): level \f$\alpha_m = 1/\sqrt{1+\sigma^2}\f$, time @ref sigma_to_t(schedule, σ) (fractional
/// between steps, k-diffusion's `DiscreteSchedule`).
struct discrete_time {
  const noise_schedule* schedule;  ///< The training schedule (not owned; must outlive the adapter).
  /// The state is in σ-space.
  static constexpr state_process process = state_process::sigma_space;
  /// The model's level at σ.
  [[nodiscard]] noise_level level(double sigma) const noexcept { return noise_level::preserving(sigma); }
  /// The model's timestep at σ. @throws std::out_of_range outside the schedule's σ range.
  [[nodiscard]] double time(double sigma) const { return sigma_to_t(*schedule, sigma); }
  /// The σ range the model can be called at: [σ_0, largest finite σ] of the schedule.
  [[nodiscard]] std::pair<double, double> range() const { return sigma_range(*schedule); }
};

/// @brief The time map of a variance-preserving model that reads σ itself as its time: analytic
/// models, continuous-time networks conditioned on σ (score_sde, NCSN). Choose it explicitly with
/// @ref diffusion::sigma_timesteps.
struct sigma_time {
  /// The state is in σ-space.
  static constexpr state_process process = state_process::sigma_space;
  /// The model's level at σ.
  [[nodiscard]] noise_level level(double sigma) const noexcept { return noise_level::preserving(sigma); }
  /// σ itself.
  [[nodiscard]] double time(double sigma) const noexcept { return sigma; }
  /// [0, +∞].
  [[nodiscard]] std::pair<double, double> range() const noexcept {
    return {0.0, std::numeric_limits<double>::infinity()};
  }
};

/// @brief The time map of a rectified-flow model (SD3, Flux, …; Esser et al. 2024): the sampler's
/// state is flow-scale, \f$x = (1-\sigma)x_0 + \sigma\varepsilon\f$ with σ ∈ [0, 1], the model is called with x
/// itself and the timestep σ·N (diffusers' flow-matching schedulers), and its output (a flow
/// velocity, or any kind) is turned into x̂₀ at the level (1 − σ, σ).
struct flow_time {
  std::size_t num_train_timesteps = 1000;  ///< N.
  /// The state is in the flow's own scale.
  static constexpr state_process process = state_process::rectified_flow;
  /// The model's level (and the state's) at σ.
  [[nodiscard]] noise_level level(double sigma) const noexcept { return noise_level::flow(sigma); }
  /// σ·N.
  [[nodiscard]] double time(double sigma) const noexcept { return sigma * static_cast<double>(num_train_timesteps); }
  /// [0, 1].
  [[nodiscard]] std::pair<double, double> range() const noexcept { return {0.0, 1.0}; }
};

/// @brief Tag: call the model with σ as its timestep (@ref sigma_time), for a model that is not
/// @ref diffusion::sigma_conditioned "sigma_conditioned" but reads σ all the same.
inline constexpr sigma_time sigma_timesteps{};

/// @brief Options of @ref sigma_space_model.
struct sigma_space_options {
  /// The model writes a variance block per row (2n values; `variance_type::learned` or
  /// `learned_range`): the block is ignored here.
  bool learned_variance = false;
};

/// @brief A denoiser in σ-space over the model's own process (see the file comment).
///
/// Given rows x at noise ratios σ_b it calls the model once on \f$x_m = \alpha_m x\f$ with the rows' model
/// times and σ, then forms \f$D = \hat x_0 = (a\,\alpha_m)\,x + b\,\text{out}\f$ with (a, b) =
/// @ref diffusion::conversion_coefficients "conversion_coefficients"(level, predicts(), sample) of the model's level: for ε,
/// \f$x - \sigma\hat\varepsilon\f$; for v, \f$c_\text{in}^2x - \sigma c_\text{in}\hat v\f$ (\f$c_\text{in} = \alpha_m\f$); for the score,
/// \f$x + \sigma^2 c_\text{in}\widehat\nabla\f$ (the model's score is with respect to its own input).
///
/// Buffers (the scaled input, the model's output, the per-row times) are held per element type
/// and grow on the first call (or @ref reserve): no allocation per call at a fixed size.
/// @tparam Model the wrapped @ref denoiser.
/// @tparam TimeMap @ref discrete_time or @ref sigma_time.
template <class Model, class TimeMap = discrete_time>
class sigma_space_model {
 public:
  /// @brief A model trained on the discrete schedule `schedule` (referenced, must outlive the adapter).
  sigma_space_model(Model& wrapped, const noise_schedule& schedule, const sigma_space_options& opt = {})
    requires std::is_same_v<TimeMap, discrete_time>
      : model_(&wrapped), map_{&schedule}, opt_(opt) {}

  /// @brief The pre-0.2 form: a schedule pointer and the learned-variance flag. A null schedule is
  /// accepted only for a @ref diffusion::sigma_conditioned "sigma_conditioned" model (σ is then its time input).
  /// @throws std::invalid_argument for a null schedule and a model that reads timesteps.
  sigma_space_model(Model& wrapped, const noise_schedule* schedule, bool learned_variance = false)
    requires std::is_same_v<TimeMap, discrete_time>
      : model_(&wrapped), map_{schedule}, opt_{learned_variance} {
    if (schedule == nullptr && !sigma_conditioned<Model>)
      detail::throw_invalid("diffusion::sigma_space_model",
                            "schedule is null, but the model reads timesteps: pass its training schedule (or "
                            "diffusion::sigma_timesteps if it really takes sigma as its time input)");
  }

  /// @brief A model that reads σ (@ref diffusion::sigma_conditioned "sigma_conditioned": the analytic models): no schedule needed.
  explicit sigma_space_model(Model& wrapped, const sigma_space_options& opt = {})
    requires std::is_same_v<TimeMap, discrete_time>
      : model_(&wrapped), map_{nullptr}, opt_(opt) {
    static_assert(sigma_conditioned<Model>,
                  "sigma_space_model(model): this model reads timesteps, not sigma; pass its training schedule, "
                  "sigma_space_model(model, schedule), or diffusion::sigma_timesteps if it takes sigma");
  }

  /// @brief A model called with σ as its timestep (@ref sigma_timesteps), chosen explicitly.
  sigma_space_model(Model& wrapped, sigma_time, const sigma_space_options& opt = {})
    requires std::is_same_v<TimeMap, sigma_time>
      : model_(&wrapped), map_{}, opt_(opt) {}

  /// @brief A rectified-flow model (@ref flow_time): the state is flow-scale, σ ∈ [0, 1].
  sigma_space_model(Model& wrapped, flow_time map, const sigma_space_options& opt = {})
    requires std::is_same_v<TimeMap, flow_time>
      : model_(&wrapped), map_(map), opt_(opt) {
    if (map.num_train_timesteps == 0)
      detail::throw_invalid("diffusion::sigma_space_model", "flow_time: num_train_timesteps = 0 must be >= 1");
  }

  /// The process of the sampler's state (σ-space, or the flow's scale for @ref flow_time).
  [[nodiscard]] static constexpr diffusion::state_process state_process() noexcept { return TimeMap::process; }
  /// The state's noise level at σ.
  [[nodiscard]] noise_level state_level(double sigma) const noexcept {
    return diffusion::state_level(TimeMap::process, sigma);
  }

  /// What the wrapped model predicts.
  [[nodiscard]] prediction predicts() const { return model_->predicts(); }

  /// @brief Elements per row the wrapped model writes: n, or 2n for a learned variance.
  [[nodiscard]] std::size_t output_width(std::size_t n) const noexcept { return opt_.learned_variance ? 2 * n : n; }

  /// @brief The σ range the model can be called at ([σ_0, largest finite σ] of a discrete
  /// schedule; [0, +∞] otherwise): a σ list for a sampler must lie in it (the last σ may be 0).
  [[nodiscard]] std::pair<double, double> sigma_range() const {
    if constexpr (std::is_same_v<TimeMap, discrete_time>) {
      if (map_.schedule == nullptr) return sigma_time{}.range();
    }
    return map_.range();
  }

  /// @brief The model's time at σ (for the step callback and messages).
  [[nodiscard]] double time(double sigma) const {
    if constexpr (std::is_same_v<TimeMap, discrete_time>) {
      if (map_.schedule == nullptr) return sigma;
    }
    return map_.time(sigma);
  }

  /// @brief Sizes the buffers for calls of up to `rows` rows of n elements of type T.
  template <real_scalar T>
  void reserve(std::size_t rows, std::size_t n) {
    auto& b = buffers_.template get<T>();
    if (b.input.size() < rows * n) b.input.resize(rows * n);
    if (b.output.size() < rows * output_width(n)) b.output.resize(rows * output_width(n));
    if (times_.size() < rows) {
      times_.resize(rows);
      ratios_.resize(rows);
    }
  }

  /// @brief Writes \f$D(x_b;\sigma_b)\f$ for each row b into `denoised`.
  /// @param[in] x rows of the σ-space state.
  /// @param[in] sigmas one σ per row, > 0 (finite, or +∞ for a zero-terminal-SNR model).
  /// @param[out] denoised rows of x̂₀ (may not alias x).
  /// @param[in] context conditioning passed to the model.
  /// @throws what the model throws; std::out_of_range for a σ outside a discrete schedule's range.
  template <real_scalar T, class Context = no_context>
  void operator()(std::span<const T> x, std::span<const double> sigmas, std::span<T> denoised,
                  const Context* context = nullptr) {
    static_assert(denoiser<Model, T, Context>,
                  "sigma_space_model: the wrapped model is not a diffusion::denoiser for this element type and context");
    const std::size_t rows = sigmas.size(), n = x.size() / rows;
    DIFFUSION_ASSERT(rows > 0 && x.size() == rows * n && denoised.size() == x.size());
    reserve<T>(rows, n);
    auto& b = buffers_.template get<T>();
    auto xin = std::span<T>(b.input).first(x.size());
    for (std::size_t r = 0; r < rows; ++r) {
      const double sg = sigmas[r];
      times_[r] = time(sg);
      // denoiser_input::sigma is the model's noise ratio σ/α: σ itself for a σ-space state.
      ratios_[r] = TimeMap::process == state_process::rectified_flow ? map_.level(sg).ratio() : sg;
      kernels::scale(static_cast<T>(input_scale(sg)), x.subspan(r * n, n), xin.subspan(r * n, n));
    }
    const denoiser_input<T, Context> in{xin, std::span<const double>(times_).first(rows),
                                        std::span<const double>(ratios_).first(rows), context};
    const std::size_t width = output_width(n);
    auto out = std::span<T>(b.output).first(rows * width);
    (*model_)(in, out);
    const prediction kind = model_->predicts();
    for (std::size_t r = 0; r < rows; ++r) {
      const noise_level l = level(sigmas[r]);
      const affine_coefficients k = conversion_coefficients(l, kind, prediction::sample);  // x̂₀ = a x_m + b out
      kernels::affine2(static_cast<T>(k.a * input_scale(sigmas[r])), x.subspan(r * n, n), static_cast<T>(k.b),
                       std::span<const T>(out).subspan(r * width, n), denoised.subspan(r * n, n));
    }
  }

  /// @brief The model's times of the rows of the last call (what @ref denoiser_input::timesteps held).
  [[nodiscard]] std::span<const double> last_times() const noexcept { return times_; }

 private:
  [[nodiscard]] noise_level level(double sigma) const noexcept { return map_.level(sigma); }
  // x_m = scale · x: the model's α over the state's (α_m for a σ-space state, 1 for a flow state).
  [[nodiscard]] double input_scale(double sigma) const noexcept {
    return TimeMap::process == state_process::rectified_flow ? 1.0 : map_.level(sigma).alpha;
  }

  Model* model_;
  TimeMap map_;
  sigma_space_options opt_;
  detail::per_element_type<detail::io_buffers> buffers_;
  std::vector<double> times_, ratios_;
};

/// @cond DIFFUSION_INTERNAL
template <class Model>
sigma_space_model(Model&, const noise_schedule&) -> sigma_space_model<Model, discrete_time>;
template <class Model>
sigma_space_model(Model&, const noise_schedule&, const sigma_space_options&) -> sigma_space_model<Model, discrete_time>;
template <class Model>
sigma_space_model(Model&, const noise_schedule*) -> sigma_space_model<Model, discrete_time>;
template <class Model>
sigma_space_model(Model&, const noise_schedule*, bool) -> sigma_space_model<Model, discrete_time>;
template <class Model>
sigma_space_model(Model&) -> sigma_space_model<Model, discrete_time>;
template <class Model>
sigma_space_model(Model&, const sigma_space_options&) -> sigma_space_model<Model, discrete_time>;
template <class Model>
sigma_space_model(Model&, sigma_time) -> sigma_space_model<Model, sigma_time>;
template <class Model>
sigma_space_model(Model&, sigma_time, const sigma_space_options&) -> sigma_space_model<Model, sigma_time>;
template <class Model>
sigma_space_model(Model&, flow_time) -> sigma_space_model<Model, flow_time>;
template <class Model>
sigma_space_model(Model&, flow_time, const sigma_space_options&) -> sigma_space_model<Model, flow_time>;
/// @endcond

/// @brief A denoiser in σ-space: what the σ-space samplers (Euler, Heun, DPM-Solver++, Langevin, …)
/// call: `D(x, sigmas, denoised, context)` writes \f$D(x_b;\sigma_b)\f$ for rows of x, one σ per row
/// (@ref diffusion::sigma_space_model "sigma_space_model", or a user type of that shape).
template <class D, class T, class Context = no_context>
concept sigma_denoiser = real_scalar<T> && requires(D& d, std::span<const T> x, std::span<const double> sigmas,
                                                    std::span<T> out, const Context* ctx) { d(x, sigmas, out, ctx); };

}  // namespace diffusion

/// @}
