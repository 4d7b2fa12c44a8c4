/// @file
/// @brief What the σ-space samplers share: a step from σ to σ_next, the σ list check (against the
/// model's range too), Karras' churn, and the σ-space loop (prologue, model call, noise, epilogue)
/// that every σ-space `*_sample` function runs on.
///
/// A σ-space sampler integrates the probability-flow ODE \f$dx/d\sigma = (x - D(x;\sigma))/\sigma\f$ (Karras
/// et al. 2022, Eq. 4 with σ(t) = t) or its SDE variants on x = x₀ + σε, over a descending σ list
/// whose last entry may be 0, with a denoiser D in σ-space (@ref diffusion::sigma_space_model).
/// Noise: step i of row b uses stream (first_sample + b, i); the initial \f$x = \sigma_0 z\f$ uses stream
/// step @ref diffusion::initial_noise_step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../models/sigma_space.hpp"
#include "../noise/brownian_tree.hpp"
#include "../process/parameterization.hpp"
#include "common.hpp"

/// @defgroup sigma_samplers σ-space samplers
/// @brief Euler, Heun, DPM-Solver++ and their SDE variants on Karras' σ-space (Karras et al. 2022).
/// @{

namespace diffusion {

/// @brief One σ-space transition, from σ to σ_next (Karras' σ-space: x = x₀ + σε, α = 1).
struct sigma_step {
  double sigma;       ///< σ > 0, the level the model was evaluated at.
  double sigma_next;  ///< σ_next ≥ 0, the level the step lands on (0: the data).
};

/// @brief One transition between two noise levels (α, σ) of the process the state lives in
/// (x = αx₀ + σε; process/parameterization.hpp): the general form of every deterministic solver
/// step, so that one step body serves the σ-space (α = 1), variance-preserving (DDPM-scale
/// state, as diffusers' DPMSolverMultistepScheduler keeps it) and rectified-flow (α = 1 − σ)
/// states alike. A @ref sigma_step is the level step between @ref noise_level::exploding levels.
struct level_step {
  noise_level from;  ///< The level the model was evaluated at (σ > 0).
  noise_level to;    ///< The level the step lands on (σ = 0: the data).
};

/// @brief The level step of a σ-space step (α = 1 at both ends).
inline level_step as_level_step(sigma_step s) noexcept {
  return {noise_level::exploding(s.sigma), noise_level::exploding(s.sigma_next)};
}

/// @brief How a second-order DPM-Solver++ step forms its correction from the history (diffusers' and
/// k-diffusion's `solver_type`). Both are second order; they differ at O(h³) per step.
enum class dpm_solver_type {
  /// \f$\hat D = D + \frac{1}{2r}(D - D_\text{prev})\f$ (Lu et al. 2022, Algorithm 2).
  midpoint,
  /// \f$\hat D = D + \frac1r\left(\frac1E - \frac1{h_\eta}\right)(D - D_\text{prev})\f$ with
  /// \f$h_\eta = (1 + \eta)h\f$, \f$E = 1 - e^{-h_\eta}\f$: the exact integral of D linear in λ
  /// (Lu et al. 2022, Eq. 9 with the first-order Taylor term; diffusers' `heun`).
  heun,
};

/// @brief Options of the Karras-family samplers (k-diffusion's names and defaults).
struct karras_options {
  /// Karras' S_churn ≥ 0: γ_i = min(S_churn/N, √2 − 1) inside [S_tmin, S_tmax] (Euler and Heun only).
  double s_churn = 0.0;
  double s_tmin = 0.0;                                        ///< Lower σ bound of the churn.
  double s_tmax = std::numeric_limits<double>::infinity();    ///< Upper σ bound of the churn.
  double s_noise = 1.0;                                       ///< Scale of the added noise (churn and ancestral).
  double eta = 1.0;                                           ///< Ancestral η ∈ [0, 1] (0 = plain Euler).
  /// The second-order correction of DPM-Solver++(2M) and 2M SDE (k-diffusion's default: midpoint).
  dpm_solver_type solver_type = dpm_solver_type::midpoint;
  std::uint64_t first_sample = 0;                             ///< Stream index of row 0.
  bool draw_initial_noise = true;                             ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;                                   ///< Scan every model output.
};

/// @brief The churn of Karras Algorithm 2, lines 4–6: \f$\gamma = \min(S_\text{churn}/N, \sqrt2 - 1)\f$ if
/// \f$S_\text{tmin} \le \sigma \le S_\text{tmax}\f$ else 0; \f$\hat\sigma = \sigma(1 + \gamma)\f$.
/// @param[in] opt options; @param[in] sigma σ_i; @param[in] steps N (the number of steps).
/// @return \f$\hat\sigma\f$ (σ itself when there is no churn).
inline double churned_sigma(const karras_options& opt, double sigma, std::size_t steps) {
  if (opt.s_churn <= 0.0 || sigma < opt.s_tmin || sigma > opt.s_tmax) return sigma;
  const double gamma = std::min(opt.s_churn / static_cast<double>(steps), std::numbers::sqrt2 - 1.0);
  return sigma * (1.0 + gamma);
}

namespace detail {

/// Requires a strictly decreasing list of finite levels, all > 0 but the last (which may be 0).
inline void check_sigma_list(std::string_view where, std::span<const double> sigmas) {
  if (sigmas.size() < 2) throw_invalid(where, "sigmas.size() = " + to_text(sigmas.size()) + " must be >= 2");
  for (std::size_t i = 0; i < sigmas.size(); ++i) {
    const bool last = i + 1 == sigmas.size();
    if (!(std::isfinite(sigmas[i]) && (sigmas[i] > 0.0 || (last && sigmas[i] == 0.0))))
      throw_invalid(where, "sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) +
                               " must be finite and > 0 (only the last may be 0)");
    if (i > 0 && !(sigmas[i] < sigmas[i - 1]))
      throw_invalid(where, "sigmas must be strictly decreasing: sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) +
                               " >= sigmas[" + to_text(i - 1) + "] = " + to_text(sigmas[i - 1]));
  }
}

/// Requires a non-empty, finite, strictly positive, strictly decreasing list of noise levels (the
/// Langevin samplers, which end at their last level rather than at the data).
inline void check_level_list(std::string_view where, std::span<const double> sigmas) {
  if (sigmas.empty()) throw_invalid(where, "sigmas is empty; at least one noise level is needed");
  for (std::size_t i = 0; i < sigmas.size(); ++i) {
    if (!(sigmas[i] > 0.0 && std::isfinite(sigmas[i])))
      throw_invalid(where, "sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) + " must be finite and > 0");
    if (i > 0 && !(sigmas[i] < sigmas[i - 1]))
      throw_invalid(where, "sigmas must be strictly decreasing: sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) +
                               " >= sigmas[" + to_text(i - 1) + "] = " + to_text(sigmas[i - 1]));
  }
}

/// What a sampler's σ list is: steps down to the data (≥ 2 entries, the last may be 0) or the
/// noise levels of a Langevin sampler (≥ 1 entry, all > 0).
enum class sigma_list_kind { to_data, levels };

/// Requires σ to lie in the model's σ range (@ref sigma_space_model::sigma_range), naming the
/// sampler, the step and the list entry, before anything runs.
template <class SigmaModel, class What>
void check_sigma_in_range(std::string_view where, const SigmaModel& D, double sigma, What&& what) {
  if constexpr (requires { D.sigma_range(); }) {
    const auto [lo, hi] = D.sigma_range();
    if (!(sigma >= lo && sigma <= hi))
      throw_out_of_range(where, std::string(what()) + " = " + to_text(sigma) + " is outside the range [" + to_text(lo) +
                                    ", " + to_text(hi) +
                                    "] the model can be called at (the sigma range of its training schedule: "
                                    "diffusion::sigma_range)");
  }
}

/// Requires the ancestral noise options every stochastic σ-step shares: η ∈ [0, 1], s_noise ∈ [0, ∞).
inline void check_eta_and_s_noise(std::string_view where, double eta, double s_noise) {
  if (!(eta >= 0.0 && eta <= 1.0))
    throw_invalid(where, "eta = " + to_text(eta) + " is outside the allowed range [0, 1]");
  if (!(s_noise >= 0.0 && std::isfinite(s_noise)))
    throw_invalid(where, "s_noise = " + to_text(s_noise) + " is outside the allowed range [0, inf)");
}

inline void check_karras_options(std::string_view where, const karras_options& o) {
  if (!(o.s_churn >= 0.0 && std::isfinite(o.s_churn)))
    throw_invalid(where, "s_churn = " + to_text(o.s_churn) + " is outside the allowed range [0, inf)");
  check_eta_and_s_noise(where, o.eta, o.s_noise);
  if (!(o.s_tmin <= o.s_tmax))
    throw_invalid(where, "s_tmin = " + to_text(o.s_tmin) + " must be <= s_tmax = " + to_text(o.s_tmax));
}

/// Requires a valid level step: the start noisy (σ > 0), both ends finite and non-negative.
inline void check_level_step(std::string_view where, const level_step& s) {
  if (!(s.from.sigma > 0.0 && std::isfinite(s.from.sigma) && s.from.alpha >= 0.0 && std::isfinite(s.from.alpha)))
    throw_invalid(where, "the step starts at alpha = " + to_text(s.from.alpha) + ", sigma = " + to_text(s.from.sigma) +
                             "; it must start at a finite level with sigma > 0");
  if (!(s.to.sigma >= 0.0 && std::isfinite(s.to.sigma) && s.to.alpha >= 0.0 && std::isfinite(s.to.alpha)))
    throw_invalid(where, "the step ends at alpha = " + to_text(s.to.alpha) + ", sigma = " + to_text(s.to.sigma) +
                             "; it must end at a finite level");
}

/// The log-SNR step h = λ' − λ of a level step (λ = log α − log σ, written so that α = 1 gives
/// log σ − log σ' exactly), for a step that does not land on the data (σ' > 0); +∞ from α = 0.
inline double lambda_difference(const level_step& s) noexcept {
  return (std::log(s.to.alpha) - std::log(s.to.sigma)) - (std::log(s.from.alpha) - std::log(s.from.sigma));
}

/// Requires a valid σ-space step: σ > 0 finite, σ_next ≥ 0 finite.
inline void check_sigma_step(std::string_view where, sigma_step s) {
  if (!(s.sigma > 0.0 && std::isfinite(s.sigma)))
    throw_invalid(where, "sigma = " + to_text(s.sigma) + " must be finite and > 0");
  if (!(s.sigma_next >= 0.0 && std::isfinite(s.sigma_next)))
    throw_invalid(where, "sigma_next = " + to_text(s.sigma_next) + " must be finite and >= 0");
}

/// Requires every σ > 0 of the list to lie in the Brownian tree's interval (the tree is read over
/// [σ_{i+1}, σ_i] and the stage levels between them), naming the sampler and the entry.
inline void check_tree_covers(std::string_view where, const brownian_tree& tree, std::span<const double> sigmas) {
  for (std::size_t i = 0; i < sigmas.size(); ++i)
    if (sigmas[i] > 0.0 && !tree.covers(sigmas[i], sigmas[i]))
      throw_invalid(where, "sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) +
                               " is outside the Brownian tree's interval [" + to_text(tree.t_min()) + ", " +
                               to_text(tree.t_max()) + "] (build the tree over [min sigma > 0, max sigma])");
}

/// The loop of every σ-space sampler on top of @ref sampler_loop: validates the σ list (and every
/// level the sampler will call the model at, against the model's range), draws the initial
/// x = σ_0 z, calls the model with the output check, and hands out the noise of each step.
template <class SigmaModel, real_scalar T, class Noise, class Context>
class sigma_sampler : public sampler_loop<T, Context> {
 public:
  using base = sampler_loop<T, Context>;
  /// @param[in] levels every σ the sampler will evaluate the model at, in order (the list itself,
  ///            or with churned values), checked against the model's range up front.
  sigma_sampler(std::string_view where, SigmaModel& D, std::span<T> x, std::size_t rows, Noise& noise,
                std::span<const double> sigmas, std::uint64_t first_sample, bool draw_initial, bool check_finite,
                const sampler_hooks<T, Context>& hooks, sigma_list_kind kind = sigma_list_kind::to_data)
      : base(where, x, rows, hooks, output_width_factor(D)), D_(D), noise_(noise), sigmas_(sigmas),
        first_sample_(first_sample), check_(check_finite) {
    if (kind == sigma_list_kind::to_data)
      check_sigma_list(where, sigmas);
    else
      check_level_list(where, sigmas);
    for (std::size_t i = 0; i < sigmas.size(); ++i)
      if (sigmas[i] > 0.0) check_sigma_in_range(where, D, sigmas[i], [i] { return "sigmas[" + to_text(i) + "]"; });
    if (draw_initial)
      fill_initial_sigma_noise(where, noise, first_sample, x, rows, this->row_size(), sigmas[0]);
  }

  /// Steps N = sigmas.size() − 1.
  [[nodiscard]] std::size_t steps() const noexcept { return sigmas_.size() - 1; }
  /// σ_i.
  [[nodiscard]] double sigma(std::size_t i) const noexcept { return sigmas_[i]; }
  /// The model's time at σ (what the callback reports).
  [[nodiscard]] double time(double sigma) const { return model_time(D_, sigma); }
  /// The process of the state (σ-space unless the denoiser says otherwise, e.g. a rectified-flow model).
  [[nodiscard]] state_process process() const noexcept {
    if constexpr (requires { D_.state_process(); })
      return D_.state_process();
    else
      return state_process::sigma_space;
  }
  /// The state's noise level at σ.
  [[nodiscard]] noise_level level(double sigma) const noexcept { return state_level(process(), sigma); }
  /// The level step of step i, σ_i → σ_{i+1} (or from a churned σ̂).
  [[nodiscard]] level_step step_levels(double from, std::size_t i) const noexcept {
    return {level(from), level(sigmas_[i + 1])};
  }

  /// Requires an extra level (a churned σ̂, a midpoint) to be in the model's range.
  void check_level(double sigma, std::size_t step, std::string_view what) const {
    check_sigma_in_range(this->where(), D_, sigma, [&] { return std::string(what) + " of step " + to_text(step); });
  }

  /// D(at; σ) for all rows into `into` (one model call, counted, output checked).
  std::span<const T> denoise(std::span<const T> at, double sigma, std::span<T> into, std::size_t step) {
    auto levels = std::span<double>(this->ws().levels).first(this->rows());
    std::fill(levels.begin(), levels.end(), sigma);
    D_(at, std::span<const double>(levels), into, this->context());
    ++this->result().model_calls;
    if (check_) check_model_output<T>(this->where(), std::span<const T>(into), this->row_size(), step, time(sigma));
    return into;
  }

  /// The noise operand of stream step k: in-kernel Philox, or buffer 1 filled from the source.
  auto noise(std::uint64_t k) {
    return step_noise(noise_, first_sample_, k, this->buffer(1), this->rows(), this->row_size());
  }

  /// The noise operand of the interval between σ and σ_next from a Brownian tree: buffer 1 filled
  /// with its standardized increments (@ref brownian_tree::fill; row b is sample first_sample + b).
  std::span<const T> noise(const brownian_tree& tree, double sigma, double sigma_next) {
    const std::span<T> z = this->buffer(1);
    tree.fill(z, this->rows(), sigma, sigma_next, first_sample_, this->policy());
    return z;
  }

 private:
  static std::size_t output_width_factor(const SigmaModel& D) {
    if constexpr (requires { D.output_width(std::size_t{1}); })
      return D.output_width(1);
    else
      return 1;
  }

  SigmaModel& D_;
  Noise& noise_;
  std::span<const double> sigmas_;
  std::uint64_t first_sample_;
  bool check_;
};

}  // namespace detail
}  // namespace diffusion

/// @}
