/// @file
/// @brief One training step's inputs for a batch, without the network (DDPM Algorithm 1 lines 2–5 on
/// a minibatch; improved DDPM `TrainLoop.forward_backward` up to the model call): draw t per row from
/// a timestep sampler with its importance weight, draw ε, form \f$x_t = \sqrt{\bar\alpha_t}\,x_0 +
/// \sqrt{1-\bar\alpha_t}\,\varepsilon\f$ and the target of the model's kind.
///
/// The caller then runs its network on (x_t, t), and scores it with the batched losses
/// (@ref diffusion::simple_loss "simple_loss", @ref diffusion::vlb_term "vlb_term", @ref diffusion::hybrid_loss "hybrid_loss" with a range of timesteps) passing the weights in
/// @ref diffusion::batch_loss_io "batch_loss_io". Every draw is addressed by (seed, training step, row), so a resumed or sharded
/// run draws the same batch. Rows are contiguous: row b is elements [b·n, (b + 1)·n).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../noise/philox.hpp"
#include "../process/combine.hpp"
#include "../process/forward.hpp"
#include "../process/parameterization.hpp"
#include "../schedule/noise_schedule.hpp"
#include "losses.hpp"
#include "timestep_sampler.hpp"

/// @addtogroup losses
/// @{

namespace diffusion {

/// @brief A training timestep sampler: `sample(step, timesteps, weights)` fills t and its importance
/// weight (@ref diffusion::uniform_timestep_sampler "uniform_timestep_sampler", @ref diffusion::loss_second_moment_sampler "loss_second_moment_sampler").
template <class S>
concept timestep_sampler = requires(const S& s, std::uint64_t step, std::span<std::size_t> t, std::span<double> w) {
  s.sample(step, t, w);
};

/// @brief The buffers of one training batch of B rows of n elements, written by @ref draw_training_batch.
/// @tparam T the element type of the data.
template <real_scalar T>
struct training_batch {
  std::span<std::size_t> timesteps;  ///< Out: \f$t_b\f$ (0-based), B entries; B is its size.
  /// Out: the importance weight of \f$t_b\f$ (1 for the uniform sampler), B entries; may be empty for a
  /// sampler that draws without weights (@ref diffusion::uniform_timestep_sampler "uniform_timestep_sampler", every weight being 1).
  std::span<double> weights;
  std::span<T> noise;        ///< Out: ε, B × n.
  std::span<T> xt;           ///< Out: \f$x_t\f$, B × n.
  std::span<T> target = {};  ///< Out, optional (empty to skip): the target of `kind` at \f$t_b\f$, B × n.
};

/// @brief What @ref draw_training_batch draws.
struct training_draw {
  std::uint64_t step = 0;                 ///< The training iteration (the stream step of t and ε).
  std::uint64_t first_sample = 0;         ///< The noise stream of row 0 (row b uses first_sample + b).
  prediction kind = prediction::epsilon;  ///< The target written to `target` (ε, x₀, v or the flow velocity).
};

/// @brief Draws one training batch (DDPM Algorithm 1 lines 3–5, batched): \f$t_b\f$ and its weight from
/// `sampler` at `opt.step`, \f$\varepsilon_b\f$ = normals 0 … n−1 of stream (first_sample + b, step) of `noise`,
/// \f$x_{t,b} = \sqrt{\bar\alpha_{t_b}}\,x_{0,b} + \sqrt{1-\bar\alpha_{t_b}}\,\varepsilon_b\f$ (@ref q_sample, one pass writing
/// x_t and ε), and, if asked, the target \f$a\,x_0 + b\,\varepsilon\f$ with (a, b) = @ref target_coefficients at
/// the row's level (ε; x₀; \f$v = \sqrt{\bar\alpha}\varepsilon - \sqrt{1-\bar\alpha}x_0\f$; u = ε − x₀).
///
/// The network is the caller's: run it on (xt, timesteps), then e.g.
/// `simple_loss(s, batch.timesteps, x0, batch.noise, model_output, kind, {.weights = batch.weights, .grad = grad})`.
/// @param[in] s the training schedule (T = s.size(); the sampler must draw from [0, T)).
/// @param[in] sampler a @ref timestep_sampler.
/// @param[in] noise the generator of ε.
/// @param[in] x0 the data, B × n.
/// @param[out] out the batch's buffers.
/// @param[in] opt training step, first noise stream, target kind.
/// @throws std::invalid_argument for sizes (B = 0, B not dividing x0.size(), a buffer of the wrong size),
///         overlapping outputs, a score target, or empty weights with a sampler that gives importance
///         weights; std::out_of_range for a drawn t ≥ T (a sampler built for another T);
///         std::domain_error for a non-finite x_t or target.
template <timestep_sampler Sampler, tensor X0>
void draw_training_batch(const noise_schedule& s, const Sampler& sampler, const philox_normal& noise, const X0& x0,
                         const training_batch<tensor_value_t<X0>>& out, const training_draw& opt = {}) {
  using T = tensor_value_t<X0>;
  constexpr std::string_view where = "diffusion::draw_training_batch";
  const auto a = as_span(x0);
  const std::size_t rows = out.timesteps.size();
  (void)detail::row_length(where, a.size(), rows);
  detail::check_same_size(where, "x0", a.size(), "noise", out.noise.size());
  detail::check_same_size(where, "x0", a.size(), "xt", out.xt.size());
  if (!out.target.empty()) detail::check_same_size(where, "x0", a.size(), "target", out.target.size());
  if (opt.kind == prediction::score)
    detail::throw_invalid(where, "kind = score is not a supported training target; use epsilon");
  detail::check_no_partial_overlap(where, "noise", out.noise, "target", out.target);
  detail::check_no_partial_overlap(where, "xt", out.xt, "target", out.target);
  if (!out.target.empty() && (out.target.data() == out.noise.data() || out.target.data() == out.xt.data()))
    detail::throw_invalid(where, "target shares memory with noise or xt; each output needs its own array");
  if (out.weights.empty()) {
    if constexpr (requires { sampler.sample(opt.step, out.timesteps); })
      sampler.sample(opt.step, out.timesteps);
    else
      detail::throw_invalid(where, "weights is empty, but this sampler gives importance weights (1/(T p_t)): pass a "
                                   "buffer of timesteps.size() weights");
  } else {
    sampler.sample(opt.step, out.timesteps, out.weights);
  }
  q_sample(s, out.timesteps, a, noise, opt.first_sample, opt.step, out.xt, out.noise);
  if (out.target.empty()) return;
  const detail::combine_names nm{"x0", "noise", "target"};
  const detail::combine_operands<T> p{a, std::span<const T>(out.noise), out.target};
  detail::combine_rows(where, nm, s, out.timesteps, p, {"the x0 coefficient", "the noise coefficient"},
                       [&s, kind = opt.kind](std::size_t t) {
                         return target_coefficients(noise_level::from_step(s[t]), kind);
                       });
}

}  // namespace diffusion

/// @}
