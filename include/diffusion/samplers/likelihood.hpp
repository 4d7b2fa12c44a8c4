/// @file
/// @brief The whole variational bound of a model on data (DDPM Eq. 5; improved DDPM's
/// `calc_bpd_loop`): a loop over every timestep that calls the model, so it lives with the
/// samplers (the losses layer does not know the model concept).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/reductions.hpp"
#include "../losses/losses.hpp"
#include "../models/denoiser.hpp"
#include "../process/forward.hpp"
#include "../process/parameterization.hpp"
#include "../schedule/noise_schedule.hpp"

/// @addtogroup losses
/// @{

namespace diffusion {

/// @brief Every term of the variational bound for a batch of samples (see @ref variational_bound).
/// Per-step arrays are indexed `[row * T + t]` with 0-based t; all values in nats per element.
struct bound_terms {
  std::size_t rows = 0;        ///< Number of samples.
  std::size_t steps = 0;       ///< T.
  std::vector<double> terms;   ///< L_{t−1} for t ≥ 1 and L_0 at t = 0 (DDPM Eq. 5).
  std::vector<double> prior;   ///< L_T per row.
  std::vector<double> total;   ///< Per row: L_T + Σ_t terms: the negative ELBO, an upper bound on −log p(x₀).
  std::vector<double> x0_mse;  ///< mean (x̂₀ − x₀)² per row and step.
  std::vector<double> eps_mse; ///< mean (ε̂ − ε)² per row and step.
};

/// @brief The whole variational bound of DDPM Eq. 5 for each row of x₀, evaluated as improved
/// DDPM's `calc_bpd_loop`: for every step t = T−1 … 0, draw ε, form x_t = q_sample(x₀, t, ε),
/// call the model once for all rows, and score its output with @ref vlb_term; add @ref prior_term.
///
/// The noise of row r at step t is normal numbers 0 … n−1 of stream (sample = first_sample + r,
/// step = t) of `noise`, so results are reproducible and independent of the batch split.
/// @param[in] s schedule.
/// @param[in] model a @ref denoiser over T; its output kind is `model.predicts()`; when
///            `opt.variance` is learned it must write 2n per row.
/// @param[in] x0 data, `rows` rows of n elements.
/// @param[in] rows number of samples (divides x0's size).
/// @param[in] opt variance, clipping, decoder.
/// @param[in] noise a source with `fill(sample, step, offset, std::span<T>)`.
/// @param[in] first_sample the stream index of row 0.
/// @return all terms; the buffers are allocated once per call, not per step.
/// @throws as @ref vlb_term, and std::invalid_argument if rows does not divide the size.
template <class Model, tensor X0, class Noise>
bound_terms variational_bound(const noise_schedule& s, Model& model, const X0& x0, std::size_t rows,
                              const vlb_options& opt, Noise& noise, std::uint64_t first_sample = 0) {
  using T = tensor_value_t<X0>;
  static_assert(denoiser<Model, T>, "variational_bound: Model must satisfy diffusion::denoiser for this element type");
  constexpr std::string_view where = "diffusion::variational_bound";
  const auto x = as_span(x0);
  const std::size_t n = detail::rows_split(where, x.size(), rows, "x0");
  const std::size_t T_steps = s.size();
  const std::size_t width = learns_variance(opt.variance) ? 2 * n : n;
  bound_terms r{rows, T_steps, std::vector<double>(rows * T_steps), std::vector<double>(rows),
                std::vector<double>(rows), std::vector<double>(rows * T_steps), std::vector<double>(rows * T_steps)};
  std::vector<T> eps(rows * n), xt(rows * n), out(rows * width);
  std::vector<double> ts(rows), sig(rows);
  for (std::size_t t = T_steps; t-- > 0;) {
    for (std::size_t b = 0; b < rows; ++b)
      noise.fill(first_sample + b, t, 0, std::span<T>(eps).subspan(b * n, n));
    q_sample(s, t, x, eps, xt);
    std::fill(ts.begin(), ts.end(), static_cast<double>(t));
    std::fill(sig.begin(), sig.end(), s[t].sigma);
    const denoiser_input<T> in{xt, ts, sig};
    model(in, std::span<T>(out));
    const auto to_x0 = conversion_coefficients(s, t, model.predicts(), prediction::sample);
    const auto to_eps = conversion_coefficients(s, t, model.predicts(), prediction::epsilon);
    for (std::size_t b = 0; b < rows; ++b) {
      const auto xb = x.subspan(b * n, n);
      const auto tb = std::span<const T>(xt).subspan(b * n, n);
      const auto ob = std::span<const T>(out).subspan(b * width, width);
      r.terms[b * T_steps + t] = vlb_term<T>(s, t, xb, tb, ob, model.predicts(), opt);
      const auto pred = ob.first(n);
      const auto eb = std::span<const T>(eps).subspan(b * n, n);
      const double ex = transform_sum(tb, pred, xb, [&to_x0](double xtk, double ok, double x0k) {
        const double d = (to_x0.a * xtk + to_x0.b * ok) - x0k;
        return d * d;
      });
      const double ee = transform_sum(tb, pred, eb, [&to_eps](double xtk, double ok, double ek) {
        const double d = (to_eps.a * xtk + to_eps.b * ok) - ek;
        return d * d;
      });
      r.x0_mse[b * T_steps + t] = ex / static_cast<double>(n);
      r.eps_mse[b * T_steps + t] = ee / static_cast<double>(n);
    }
  }
  for (std::size_t b = 0; b < rows; ++b) {
    r.prior[b] = prior_term(s, x.subspan(b * n, n));
    r.total[b] = indexed_sum(T_steps + 1, [&](std::size_t t) { return t < T_steps ? r.terms[b * T_steps + t] : r.prior[b]; });
  }
  return r;
}

}  // namespace diffusion

/// @}
