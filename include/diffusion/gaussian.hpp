/// @file
/// @brief The Gaussian formulas of DDPM: the forward process q(x_t|x₀) (Eq. 4), the
/// posterior q(x_{t−1}|x_t, x₀) (Eq. 6–7) and its general skip q(x_s|x_t, x₀), and the
/// conversions between ε, x₀, v and score predictions.
///
/// Every function computes its coefficients in double from the schedule, then applies
/// them element-wise in the tensor's own type (float or double) through @ref kernels.
/// Timesteps are 0-based code indices (the paper's t = index + 1). Each tensor function
/// comes in two forms: one timestep for the whole tensor, or a batch with one timestep
/// per row (any contiguous range of integers; the tensor splits evenly into that many
/// rows). Output buffers are caller-provided and may alias an input exactly (in place).
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <ranges>
#include <span>
#include <string_view>
#include <type_traits>

#include "config.hpp"
#include "detail/double_double.hpp"
#include "kernels.hpp"
#include "noise.hpp"
#include "schedule.hpp"
#include "tensor.hpp"

/// @defgroup gaussian Forward process, posterior and parameterizations
/// @brief q(x_t|x₀) (DDPM Eq. 4), q(x_{t−1}|x_t,x₀) (Eq. 6–7), skips, ε/x₀/v/score conversions.
/// @{

namespace diffusion {

/// @brief A contiguous range of integer timesteps, one per batch row.
template <class R>
concept timestep_range = std::ranges::contiguous_range<R> && std::ranges::sized_range<R> &&
                         std::integral<std::remove_cv_t<std::ranges::range_value_t<R>>>;

namespace detail {

/// Validates one timestep (signed or unsigned) against T, naming it.
template <std::integral I>
std::size_t checked_timestep(std::string_view where, std::string_view name, I t, std::size_t T) {
  if constexpr (std::is_signed_v<I>) {
    if (t < 0)
      throw_out_of_range(where, std::string(name) + " = " + to_text(t) + " is outside the allowed range [0, " +
                                    to_text(T) + ")");
  }
  const auto u = static_cast<std::size_t>(t);
  check_index(where, name, u, T);
  return u;
}

/// Calls f(t, offset, length) for each row of a batch after validating all rows.
template <timestep_range R, class F>
void for_each_row(std::string_view where, const noise_schedule& s, const R& timesteps, std::size_t total, F&& f) {
  const std::size_t rows = std::ranges::size(timesteps);
  const std::size_t len = row_length(where, total, rows);
  const auto* ts = std::ranges::data(timesteps);
  for (std::size_t b = 0; b < rows; ++b) checked_timestep(where, "timesteps[" + to_text(b) + "]", ts[b], s.size());
  for (std::size_t b = 0; b < rows; ++b) f(static_cast<std::size_t>(ts[b]), b * len, len);
}

template <class A, class B>
inline constexpr bool same_value_v = std::same_as<tensor_value_t<A>, tensor_value_t<B>>;

}  // namespace detail

/// @brief Coefficients of an affine map \f$out = a\,x_t + b\,in\f$ (or \f$a\,x_0 + b\,\varepsilon\f$).
struct affine_coefficients {
  double a;  ///< Coefficient of the first input.
  double b;  ///< Coefficient of the second input.
};

// ---------------------------------------------------------------------------------------
// Forward process
// ---------------------------------------------------------------------------------------

/// @brief The forward marginal \f$q(x_t|x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I)\f$ (DDPM Eq. 4).
struct forward_marginal {
  double mean_coef;     ///< \f$\sqrt{\bar\alpha_t}\f$.
  double std;           ///< \f$\sqrt{1-\bar\alpha_t}\f$.
  double variance;      ///< \f$1-\bar\alpha_t\f$.
  double log_variance;  ///< \f$\log(1-\bar\alpha_t)\f$.
};

/// @brief \f$q(x_t|x_0)\f$ at 0-based step t (DDPM Eq. 4; iDDPM `q_mean_variance`).
/// @throws std::out_of_range if t ≥ T.
inline forward_marginal q_marginal(const noise_schedule& s, std::size_t t) {
  const schedule_step& st = s.at(t);
  return {st.sqrt_alpha_bar, st.sqrt_one_minus_alpha_bar, st.one_minus_alpha_bar,
          std::log1p(-st.alpha_bar)};
}

/// @brief Samples \f$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon\f$ given the noise ε
/// (DDPM Eq. 4 reparameterized, Algorithm 1 line 5; iDDPM `q_sample`).
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] x0 data.
/// @param[in] noise ε ~ N(0, I), same size.
/// @param[out] xt result, same size; may alias x0 or noise.
/// @throws std::out_of_range if t ≥ T; std::invalid_argument if sizes differ or are 0.
template <tensor X0, tensor E, mutable_tensor Out>
void q_sample(const noise_schedule& s, std::size_t t, const X0& x0, const E& noise, Out&& xt) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "q_sample: x0, noise and xt must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto e = as_span(noise);
  auto o = as_mutable_span(xt);
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  detail::check_same_size(where, "x0", a.size(), "xt", o.size());
  if (a.empty()) detail::throw_invalid(where, "x0 is empty");
  const schedule_step& st = s.at(t);
  kernels::affine2(static_cast<T>(st.sqrt_alpha_bar), a, static_cast<T>(st.sqrt_one_minus_alpha_bar), e, o);
}

/// @brief Batched q_sample(): row b of the tensors uses timestep `timesteps[b]` (training, Algorithm 1).
/// @throws std::out_of_range naming the first bad timestep; std::invalid_argument if the batch
///         size does not divide the tensor size or sizes differ.
template <timestep_range R, tensor X0, tensor E, mutable_tensor Out>
void q_sample(const noise_schedule& s, const R& timesteps, const X0& x0, const E& noise, Out&& xt) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "q_sample: x0, noise and xt must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto e = as_span(noise);
  auto o = as_mutable_span(xt);
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  detail::check_same_size(where, "x0", a.size(), "xt", o.size());
  detail::for_each_row(where, s, timesteps, a.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const schedule_step& st = s[t];
    kernels::affine2(static_cast<T>(st.sqrt_alpha_bar), a.subspan(off, len),
                     static_cast<T>(st.sqrt_one_minus_alpha_bar), e.subspan(off, len), o.subspan(off, len));
  });
}

/// @brief q_sample() with the noise generated inside the kernel (kernels::affine_noise, one pass,
/// no noise buffer): ε_k is normal k of stream (sample, step) of `noise`, bit-identical to
/// q_sample() with a buffer filled by `noise.fill(sample, step, 0, ...)`.
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] x0 data.
/// @param[in] noise the generator.
/// @param[in] sample stream coordinate (e.g. the example's index in the data set).
/// @param[in] step stream coordinate (e.g. the training iteration).
/// @param[out] xt result, same size; may alias x0.
/// @throws std::out_of_range if t ≥ T; std::invalid_argument if sizes differ or are 0.
template <tensor X0, mutable_tensor Out>
void q_sample(const noise_schedule& s, std::size_t t, const X0& x0, const philox_normal& noise, std::uint64_t sample,
              std::uint64_t step, Out&& xt) {
  static_assert(detail::same_value_v<X0, Out>, "q_sample: x0 and xt must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto o = as_mutable_span(xt);
  detail::check_same_size(where, "x0", a.size(), "xt", o.size());
  if (a.empty()) detail::throw_invalid(where, "x0 is empty");
  const schedule_step& st = s.at(t);
  kernels::affine_noise(static_cast<T>(st.sqrt_alpha_bar), a, static_cast<T>(st.sqrt_one_minus_alpha_bar),
                        kernels::philox_stream{&noise, sample, step}, o);
}

/// @brief Batched q_sample() with in-kernel noise: row b uses timestep `timesteps[b]` and the
/// normals 0 … n−1 of stream (first_sample + b, step) of `noise` (training, Algorithm 1).
/// @param[in] s schedule.
/// @param[in] timesteps one 0-based step per row.
/// @param[in] x0 data, rows × n.
/// @param[in] noise the generator.
/// @param[in] first_sample stream sample of row 0.
/// @param[in] step stream step (e.g. the training iteration).
/// @param[out] xt result; may alias x0.
/// @throws std::out_of_range naming the first bad timestep; std::invalid_argument if the batch
///         size does not divide the tensor size or sizes differ.
template <timestep_range R, tensor X0, mutable_tensor Out>
void q_sample(const noise_schedule& s, const R& timesteps, const X0& x0, const philox_normal& noise,
              std::uint64_t first_sample, std::uint64_t step, Out&& xt) {
  static_assert(detail::same_value_v<X0, Out>, "q_sample: x0 and xt must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto o = as_mutable_span(xt);
  detail::check_same_size(where, "x0", a.size(), "xt", o.size());
  detail::for_each_row(where, s, timesteps, a.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const schedule_step& st = s[t];
    kernels::affine_noise(static_cast<T>(st.sqrt_alpha_bar), a.subspan(off, len),
                          static_cast<T>(st.sqrt_one_minus_alpha_bar),
                          kernels::philox_stream{&noise, first_sample + off / len, step}, o.subspan(off, len));
  });
}

/// @brief The velocity target \f$v = \sqrt{\bar\alpha_t}\,\varepsilon - \sqrt{1-\bar\alpha_t}\,x_0\f$
/// (Salimans & Ho 2022, §4; diffusers `get_velocity`).
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] x0 data.
/// @param[in] noise ε, same size.
/// @param[out] v result; may alias x0 or noise.
/// @throws std::out_of_range if t ≥ T; std::invalid_argument if sizes differ or are 0.
template <tensor X0, tensor E, mutable_tensor Out>
void velocity_target(const noise_schedule& s, std::size_t t, const X0& x0, const E& noise, Out&& v) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "velocity_target: x0, noise and v must have the same element type");
  constexpr std::string_view where = "diffusion::velocity_target";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto e = as_span(noise);
  auto o = as_mutable_span(v);
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  detail::check_same_size(where, "x0", a.size(), "v", o.size());
  if (a.empty()) detail::throw_invalid(where, "x0 is empty");
  const schedule_step& st = s.at(t);
  kernels::affine2(static_cast<T>(-st.sqrt_one_minus_alpha_bar), a, static_cast<T>(st.sqrt_alpha_bar), e, o);
}

/// @brief Batched @ref velocity_target, one timestep per row.
template <timestep_range R, tensor X0, tensor E, mutable_tensor Out>
void velocity_target(const noise_schedule& s, const R& timesteps, const X0& x0, const E& noise, Out&& v) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "velocity_target: x0, noise and v must have the same element type");
  constexpr std::string_view where = "diffusion::velocity_target";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto e = as_span(noise);
  auto o = as_mutable_span(v);
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  detail::check_same_size(where, "x0", a.size(), "v", o.size());
  detail::for_each_row(where, s, timesteps, a.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const schedule_step& st = s[t];
    kernels::affine2(static_cast<T>(-st.sqrt_one_minus_alpha_bar), a.subspan(off, len),
                     static_cast<T>(st.sqrt_alpha_bar), e.subspan(off, len), o.subspan(off, len));
  });
}

// ---------------------------------------------------------------------------------------
// Posterior
// ---------------------------------------------------------------------------------------

/// @brief A Gaussian posterior \f$q(x_s|x_t,x_0) = \mathcal N(c_0\,x_0 + c_t\,x_t,\ \tilde\sigma^2 I)\f$.
struct gaussian_posterior {
  double coef_x0;       ///< \f$c_0\f$, the x₀ coefficient of the mean.
  double coef_xt;       ///< \f$c_t\f$, the x_t coefficient of the mean.
  double variance;      ///< \f$\tilde\sigma^2\f$.
  double log_variance;  ///< \f$\log\tilde\sigma^2\f$ (−∞ where the variance is 0).
  /// \f$\log\tilde\sigma^2\f$ with improved DDPM's clip: at the first step the second step's value.
  double log_variance_clipped;
};

/// @brief \f$q(x_{t-1}|x_t,x_0)\f$ (DDPM Eq. 6–7):
/// \f$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t\f$,
/// \f$\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t\f$.
///
/// At 0-based step 0 the target is the data: ᾱ_prev = 1, so \f$c_0 = 1\f$, \f$c_t = 0\f$, \f$\tilde\beta = 0\f$.
/// @throws std::out_of_range if t ≥ T.
inline gaussian_posterior posterior(const noise_schedule& s, std::size_t t) {
  const schedule_step& st = s.at(t);
  return {st.posterior_mean_coef_x0, st.posterior_mean_coef_xt, st.posterior_variance,
          t == 0 ? -std::numeric_limits<double>::infinity() : std::log(st.posterior_variance),
          st.posterior_log_variance_clipped};
}

/// @brief The skip posterior \f$q(x_s|x_t,x_0)\f$ for 0-based steps s < t (the DDIM/respacing
/// generalisation of DDPM Eq. 7; Kingma et al. 2021 Eq. 26–28). With \f$\alpha_{t|s} = \bar\alpha_t/\bar\alpha_s\f$:
/// \f$c_0 = \frac{\sqrt{\bar\alpha_s}(1-\alpha_{t|s})}{1-\bar\alpha_t}\f$,
/// \f$c_t = \frac{\sqrt{\alpha_{t|s}}(1-\bar\alpha_s)}{1-\bar\alpha_t}\f$,
/// \f$\tilde\sigma^2 = \frac{(1-\bar\alpha_s)(1-\alpha_{t|s})}{1-\bar\alpha_t}\f$.
///
/// Evaluated in double-double from the schedule's ᾱ, so \f$1-\alpha_{t|s}\f$ does not cancel
/// for nearby steps; with s = t − 1 it equals @ref posterior. Defined also when ᾱ_t = 0.
/// @throws std::out_of_range if t ≥ T; std::invalid_argument unless s < t.
inline gaussian_posterior skip_posterior(const noise_schedule& sched, std::size_t t, std::size_t s) {
  constexpr std::string_view where = "diffusion::skip_posterior";
  detail::check_index(where, "t", t, sched.size());
  if (!(s < t))
    detail::throw_invalid(where, "s = " + detail::to_text(s) + " must be < t = " + detail::to_text(t));
  using namespace detail;
  const dd one{1.0, 0.0};
  const dd ab_t = sched.alpha_bar_dd(t), ab_s = sched.alpha_bar_dd(s);
  const dd om_t = sub(one, ab_t), om_s = sub(one, ab_s);
  const dd one_minus_ratio = div(sub(ab_s, ab_t), ab_s);  // 1 - alpha_{t|s}
  const dd ratio = div(ab_t, ab_s);
  const dd var = div(mul(om_s, one_minus_ratio), om_t);
  const double lv = std::log(var.hi) + var.lo / var.hi;
  return {to_double(div(mul(detail::sqrt(ab_s), one_minus_ratio), om_t)),
          to_double(div(mul(detail::sqrt(ratio), om_s), om_t)), to_double(var), lv, lv};
}

/// @brief The posterior mean \f$\tilde\mu = c_0\,x_0 + c_t\,x_t\f$ of a @ref gaussian_posterior, element-wise.
/// @param[in] p the posterior (from posterior() or skip_posterior()).
/// @param[in] x0 data (or a prediction of it).
/// @param[in] xt the noisy sample, same size.
/// @param[out] mean may alias x0 or xt.
/// @throws std::invalid_argument if sizes differ or are 0.
template <tensor X0, tensor XT, mutable_tensor Out>
void posterior_mean(const gaussian_posterior& p, const X0& x0, const XT& xt, Out&& mean) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, Out>,
                "posterior_mean: x0, xt and mean must have the same element type");
  constexpr std::string_view where = "diffusion::posterior_mean";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto b = as_span(xt);
  auto o = as_mutable_span(mean);
  detail::check_same_size(where, "x0", a.size(), "xt", b.size());
  detail::check_same_size(where, "x0", a.size(), "mean", o.size());
  if (a.empty()) detail::throw_invalid(where, "x0 is empty");
  kernels::affine2(static_cast<T>(p.coef_x0), a, static_cast<T>(p.coef_xt), b, o);
}

/// @brief \f$\tilde\mu_t(x_t, x_0)\f$ of DDPM Eq. 7 at 0-based step t.
template <tensor X0, tensor XT, mutable_tensor Out>
void posterior_mean(const noise_schedule& s, std::size_t t, const X0& x0, const XT& xt, Out&& mean) {
  posterior_mean(posterior(s, t), x0, xt, std::forward<Out>(mean));
}

/// @brief Batched \f$\tilde\mu_t\f$ of DDPM Eq. 7, one timestep per row.
template <timestep_range R, tensor X0, tensor XT, mutable_tensor Out>
void posterior_mean(const noise_schedule& s, const R& timesteps, const X0& x0, const XT& xt, Out&& mean) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, Out>,
                "posterior_mean: x0, xt and mean must have the same element type");
  constexpr std::string_view where = "diffusion::posterior_mean";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto b = as_span(xt);
  auto o = as_mutable_span(mean);
  detail::check_same_size(where, "x0", a.size(), "xt", b.size());
  detail::check_same_size(where, "x0", a.size(), "mean", o.size());
  detail::for_each_row(where, s, timesteps, a.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const schedule_step& st = s[t];
    kernels::affine2(static_cast<T>(st.posterior_mean_coef_x0), a.subspan(off, len),
                     static_cast<T>(st.posterior_mean_coef_xt), b.subspan(off, len), o.subspan(off, len));
  });
}

// ---------------------------------------------------------------------------------------
// Parameterizations
// ---------------------------------------------------------------------------------------

/// @brief What a denoiser predicts (diffusers' `prediction_type`).
enum class prediction {
  epsilon,  ///< the noise ε (DDPM Eq. 11).
  sample,   ///< the data x₀.
  v,        ///< the velocity \f$v = \sqrt{\bar\alpha}\,\varepsilon - \sqrt{1-\bar\alpha}\,x_0\f$ (Salimans & Ho 2022).
  score,    ///< \f$\nabla_{x_t}\log q(x_t) \approx -\varepsilon/\sqrt{1-\bar\alpha_t}\f$ (Song et al. 2021).
};

/// @brief Name of a prediction kind, for messages: "epsilon", "sample", "v", "score".
inline std::string_view to_string(prediction p) {
  switch (p) {
    case prediction::epsilon: return "epsilon";
    case prediction::sample: return "sample";
    case prediction::v: return "v";
    case prediction::score: return "score";
  }
  return "?";
}

/// @brief Coefficients of the conversion between two prediction kinds at one step:
/// \f$out = a\,x_t + b\,in\f$.
///
/// With \f$c = \sqrt{\bar\alpha_t}\f$, \f$d = \sqrt{1-\bar\alpha_t}\f$ and \f$x_t = c\,x_0 + d\,\varepsilon\f$:
/// | from \ to | ε | x₀ | v | score |
/// |---|---|---|---|---|
/// | ε | (0, 1) | (1/c, −d/c) | (−d/c, 1/c) | (0, −1/d) |
/// | x₀ | (1/d, −c/d) | (0, 1) | (c/d, −1/d) | (−1/d², c/d²) |
/// | v | (d, c) | (c, −d) | (0, 1) | (−1, −c/d) |
/// | score | (0, −d) | (1/c, d²/c) | (−d/c, −d/c) | (0, 1) |
///
/// (x₀ from ε is DDPM Eq. 15 / iDDPM `_predict_xstart_from_eps`; the score row is Tweedie's
/// formula, \f$\nabla\log q(x_t) = -\varepsilon/d\f$.) Each coefficient is a product of at most
/// two table entries: ≤ 2 ulp.
/// @throws std::out_of_range if t ≥ T; std::domain_error where the conversion divides by
///         c = 0 (zero terminal SNR, last step: x₀ and v cannot be recovered from ε or score there).
inline affine_coefficients conversion_coefficients(const noise_schedule& s, std::size_t t, prediction from,
                                                   prediction to) {
  constexpr std::string_view where = "diffusion::conversion_coefficients";
  const schedule_step& st = s.at(t);
  const double c = st.sqrt_alpha_bar, d = st.sqrt_one_minus_alpha_bar, d2 = st.one_minus_alpha_bar;
  const double rc = st.rsqrt_alpha_bar;         // 1/c
  const double rd = 1.0 / d;                    // 1/d
  const double d_over_c = st.sigma;             // d/c
  const double c_over_d = c * rd;               // c/d
  if (from == to) return {0.0, 1.0};
  const bool needs_c = (from == prediction::epsilon || from == prediction::score) &&
                       (to == prediction::sample || to == prediction::v);
  if (needs_c && c == 0.0)
    detail::throw_domain(where, "converting " + std::string(to_string(from)) + " to " + std::string(to_string(to)) +
                                    " divides by sqrt(alpha_bar) = 0 at t = " + detail::to_text(t) +
                                    " (zero terminal SNR); use v or sample prediction at that step");
  using P = prediction;
  switch (from) {
    case P::epsilon:
      if (to == P::sample) return {rc, -d_over_c};
      if (to == P::v) return {-d_over_c, rc};
      return {0.0, -rd};  // score
    case P::sample:
      if (to == P::epsilon) return {rd, -c_over_d};
      if (to == P::v) return {c_over_d, -rd};
      return {-1.0 / d2, c / d2};  // score
    case P::v:
      if (to == P::epsilon) return {d, c};
      if (to == P::sample) return {c, -d};
      return {-1.0, -c_over_d};  // score
    case P::score:
      if (to == P::epsilon) return {0.0, -d};
      if (to == P::sample) return {rc, d2 * rc};
      return {-d_over_c, -d_over_c};  // v
  }
  detail::throw_invalid(where, "unknown prediction kind");
}

/// @brief Converts a prediction of one kind to another at step t: \f$out = a\,x_t + b\,in\f$
/// with @ref conversion_coefficients.
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] from the kind of `in`.
/// @param[in] to the kind of `out`.
/// @param[in] xt the noisy input x_t the prediction was made from.
/// @param[in] in the prediction, kind `from`.
/// @param[out] out the prediction, kind `to`; may alias xt or in.
template <tensor XT, tensor In, mutable_tensor Out>
void convert_prediction(const noise_schedule& s, std::size_t t, prediction from, prediction to, const XT& xt,
                        const In& in, Out&& out) {
  static_assert(detail::same_value_v<XT, In> && detail::same_value_v<XT, Out>,
                "convert_prediction: xt, in and out must have the same element type");
  constexpr std::string_view where = "diffusion::convert_prediction";
  using T = tensor_value_t<XT>;
  auto x = as_span(xt);
  auto p = as_span(in);
  auto o = as_mutable_span(out);
  detail::check_same_size(where, "xt", x.size(), "in", p.size());
  detail::check_same_size(where, "xt", x.size(), "out", o.size());
  if (x.empty()) detail::throw_invalid(where, "xt is empty");
  const affine_coefficients k = conversion_coefficients(s, t, from, to);
  kernels::affine2(static_cast<T>(k.a), x, static_cast<T>(k.b), p, o);
}

/// @brief Batched @ref convert_prediction, one timestep per row.
template <timestep_range R, tensor XT, tensor In, mutable_tensor Out>
void convert_prediction(const noise_schedule& s, const R& timesteps, prediction from, prediction to, const XT& xt,
                        const In& in, Out&& out) {
  static_assert(detail::same_value_v<XT, In> && detail::same_value_v<XT, Out>,
                "convert_prediction: xt, in and out must have the same element type");
  constexpr std::string_view where = "diffusion::convert_prediction";
  using T = tensor_value_t<XT>;
  auto x = as_span(xt);
  auto p = as_span(in);
  auto o = as_mutable_span(out);
  detail::check_same_size(where, "xt", x.size(), "in", p.size());
  detail::check_same_size(where, "xt", x.size(), "out", o.size());
  // Validate every row (including the zero-SNR domain check) before writing anything.
  detail::for_each_row(where, s, timesteps, x.size(),
                       [&](std::size_t t, std::size_t, std::size_t) { (void)conversion_coefficients(s, t, from, to); });
  detail::for_each_row(where, s, timesteps, x.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const affine_coefficients k = conversion_coefficients(s, t, from, to);
    kernels::affine2(static_cast<T>(k.a), x.subspan(off, len), static_cast<T>(k.b), p.subspan(off, len),
                     o.subspan(off, len));
  });
}

}  // namespace diffusion

/// @}
