/// @file
/// @brief The forward process of DDPM: the marginal q(x_t|x₀) (Eq. 4), sampling from it
/// (Algorithm 1, line 5) and the velocity target of Salimans & Ho 2022.
///
/// Every function computes its coefficients in double from the schedule, then applies
/// them element-wise in the tensor's own type (float or double) through @ref kernels. Outputs
/// may be the same array as an input (in place) but must not overlap one partially
/// (std::invalid_argument); a non-finite output element (from a non-finite input, or an overflow
/// of the element type) raises std::domain_error: no NaN or ±∞ is returned silently.
/// Timesteps are 0-based code indices (the paper's t = index + 1). Each tensor function
/// comes in two forms: one timestep for the whole tensor, or a batch with one timestep
/// per row (any contiguous range of integers; the tensor splits evenly into that many
/// rows). Output buffers are caller-provided and may alias an input exactly (in place).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../noise/philox.hpp"
#include "../schedule/noise_schedule.hpp"
#include "batch.hpp"
#include "combine.hpp"
#include "parameterization.hpp"

/// @defgroup gaussian Forward process and posterior
/// @brief q(x_t|x₀) (DDPM Eq. 4), q(x_{t−1}|x_t,x₀) (Eq. 6–7) and its skips.
/// @{

namespace diffusion {

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

namespace detail {
/// (√ᾱ_t, √(1 − ᾱ_t)): x_t of DDPM Eq. 4.
inline affine_coefficients marginal_coefficients(const schedule_step& st) noexcept {
  return {st.sqrt_alpha_bar, st.sqrt_one_minus_alpha_bar};
}
/// (−√(1 − ᾱ_t), √ᾱ_t): the velocity of Salimans & Ho 2022 §4.
inline affine_coefficients velocity_coefficients(const schedule_step& st) noexcept {
  return {-st.sqrt_one_minus_alpha_bar, st.sqrt_alpha_bar};
}
}  // namespace detail

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
  const detail::combine_names nm{"x0", "noise", "xt"};
  const auto p = detail::combine_check(where, nm, x0, noise, xt, true);
  detail::combine(where, nm, p, {"sqrt(alpha_bar)", "sqrt(1 - alpha_bar)"}, detail::marginal_coefficients(s.at(t)));
}

/// @brief Batched q_sample(): row b of the tensors uses timestep `timesteps[b]` (training, Algorithm 1).
/// @throws std::out_of_range naming the first bad timestep; std::invalid_argument if the batch
///         size does not divide the tensor size or sizes differ.
template <timestep_range R, tensor X0, tensor E, mutable_tensor Out>
void q_sample(const noise_schedule& s, const R& timesteps, const X0& x0, const E& noise, Out&& xt) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "q_sample: x0, noise and xt must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  const detail::combine_names nm{"x0", "noise", "xt"};
  const auto p = detail::combine_check(where, nm, x0, noise, xt, false);
  detail::combine_rows(where, nm, s, timesteps, p, {"sqrt(alpha_bar)", "sqrt(1 - alpha_bar)"},
                       [&s](std::size_t t) { return detail::marginal_coefficients(s[t]); });
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
  detail::check_no_partial_overlap(where, "x0", a, "xt", o);
  const schedule_step& st = s.at(t);
  detail::require_finite_output(where,
                                kernels::affine_noise(static_cast<T>(st.sqrt_alpha_bar), a,
                                                      static_cast<T>(st.sqrt_one_minus_alpha_bar),
                                                      kernels::philox_stream{&noise, sample, step}, o),
                                "xt");
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
  detail::check_no_partial_overlap(where, "x0", a, "xt", o);
  bool finite = true;
  detail::for_each_row(where, s, timesteps, a.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const schedule_step& st = s[t];
    finite = kernels::affine_noise(static_cast<T>(st.sqrt_alpha_bar), a.subspan(off, len),
                                   static_cast<T>(st.sqrt_one_minus_alpha_bar),
                                   kernels::philox_stream{&noise, first_sample + off / len, step}, o.subspan(off, len)) &&
             finite;
  });
  detail::require_finite_output(where, finite, "xt");
}

namespace detail {
/// Checks the ε output of the q_sample overloads that hand the drawn noise back: its size, no
/// partial overlap with x0, and no memory shared with xt (two outputs of one pass).
template <class T>
void check_noise_output(std::string_view where, std::span<const T> x0, std::span<T> xt, std::span<T> eps) {
  check_same_size(where, "x0", x0.size(), "noise_out", eps.size());
  check_no_partial_overlap(where, "x0", x0, "noise_out", eps);
  check_no_partial_overlap(where, "xt", xt, "noise_out", eps);
  if (!eps.empty() && eps.data() == xt.data())
    throw_invalid(where, "xt and noise_out are the same array; they are two outputs of one pass and must not share memory");
}
/// x_t = a·x₀ + b·ε and ε itself from one pass of kernels::map (the same operations, hence the same
/// bits, as kernels::affine_noise); true when both outputs are finite.
template <class T>
bool affine_noise_kept(T a, std::span<const T> x0, T b, const kernels::philox_stream& z, std::span<T> xt,
                       std::span<T> eps) noexcept {
  return kernels::map(sequential_policy{}, z, kernels::outputs(xt, eps), kernels::inputs<T>(x0), [a, b](auto xv, auto zv) {
    using V = decltype(xv);
    return std::array<V, 2>{kernels::madd(V(a), xv, V(b) * zv), zv};
  });
}
}  // namespace detail

/// @brief q_sample() with in-kernel noise that also hands back the ε it drew (the L_simple target,
/// DDPM Algorithm 1 lines 4–5): one pass writes \f$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon\f$ and ε.
/// Both are bit-identical to the in-kernel q_sample() and to `noise.fill(sample, step, 0, ...)`.
/// @param[in] s schedule; @param[in] t 0-based step; @param[in] x0 data; @param[in] noise the generator;
/// @param[in] sample, step stream coordinates; @param[out] xt result (may alias x0);
/// @param[out] noise_out ε, same size (may alias x0, must not share memory with xt).
/// @throws std::out_of_range if t ≥ T; std::invalid_argument if sizes differ or are 0 or arrays overlap;
///         std::domain_error for a non-finite x_t.
template <tensor X0, mutable_tensor Out, mutable_tensor Eps>
void q_sample(const noise_schedule& s, std::size_t t, const X0& x0, const philox_normal& noise, std::uint64_t sample,
              std::uint64_t step, Out&& xt, Eps&& noise_out) {
  static_assert(detail::same_value_v<X0, Out> && detail::same_value_v<X0, Eps>,
                "q_sample: x0, xt and noise_out must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto o = as_mutable_span(xt);
  auto e = as_mutable_span(noise_out);
  detail::check_same_size(where, "x0", a.size(), "xt", o.size());
  if (a.empty()) detail::throw_invalid(where, "x0 is empty");
  detail::check_no_partial_overlap(where, "x0", a, "xt", o);
  detail::check_noise_output(where, a, o, e);
  const schedule_step& st = s.at(t);
  detail::require_finite_output(
      where,
      detail::affine_noise_kept(detail::coefficient<T>(where, "sqrt(alpha_bar)", st.sqrt_alpha_bar), a,
                                detail::coefficient<T>(where, "sqrt(1 - alpha_bar)", st.sqrt_one_minus_alpha_bar),
                                kernels::philox_stream{&noise, sample, step}, o, e),
      "xt");
}

/// @brief Batched q_sample() with in-kernel noise that also writes the ε it drew: row b uses timestep
/// `timesteps[b]` and the normals 0 … n−1 of stream (first_sample + b, step), bit-identical to the
/// batched in-kernel q_sample(); `noise_out` receives them (the training target, Algorithm 1).
/// @param[in] s schedule; @param[in] timesteps one 0-based step per row; @param[in] x0 data, rows × n;
/// @param[in] noise the generator; @param[in] first_sample stream sample of row 0; @param[in] step
/// stream step; @param[out] xt result (may alias x0); @param[out] noise_out ε (may alias x0, not xt).
/// @throws as the batched in-kernel q_sample(), and std::invalid_argument for a bad noise_out.
template <timestep_range R, tensor X0, mutable_tensor Out, mutable_tensor Eps>
void q_sample(const noise_schedule& s, const R& timesteps, const X0& x0, const philox_normal& noise,
              std::uint64_t first_sample, std::uint64_t step, Out&& xt, Eps&& noise_out) {
  static_assert(detail::same_value_v<X0, Out> && detail::same_value_v<X0, Eps>,
                "q_sample: x0, xt and noise_out must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  using T = tensor_value_t<X0>;
  auto a = as_span(x0);
  auto o = as_mutable_span(xt);
  auto e = as_mutable_span(noise_out);
  detail::check_same_size(where, "x0", a.size(), "xt", o.size());
  detail::check_no_partial_overlap(where, "x0", a, "xt", o);
  detail::check_noise_output(where, a, o, e);
  bool finite = true;
  detail::for_each_row(where, s, timesteps, a.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const schedule_step& st = s[t];
    finite = detail::affine_noise_kept(static_cast<T>(st.sqrt_alpha_bar), a.subspan(off, len),
                                       static_cast<T>(st.sqrt_one_minus_alpha_bar),
                                       kernels::philox_stream{&noise, first_sample + off / len, step},
                                       o.subspan(off, len), e.subspan(off, len)) &&
             finite;
  });
  detail::require_finite_output(where, finite, "xt");
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
  const detail::combine_names nm{"x0", "noise", "v"};
  const auto p = detail::combine_check(where, nm, x0, noise, v, true);
  detail::combine(where, nm, p, {"-sqrt(1 - alpha_bar)", "sqrt(alpha_bar)"}, detail::velocity_coefficients(s.at(t)));
}

/// @brief Batched @ref velocity_target, one timestep per row.
template <timestep_range R, tensor X0, tensor E, mutable_tensor Out>
void velocity_target(const noise_schedule& s, const R& timesteps, const X0& x0, const E& noise, Out&& v) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "velocity_target: x0, noise and v must have the same element type");
  constexpr std::string_view where = "diffusion::velocity_target";
  const detail::combine_names nm{"x0", "noise", "v"};
  const auto p = detail::combine_check(where, nm, x0, noise, v, false);
  detail::combine_rows(where, nm, s, timesteps, p, {"-sqrt(1 - alpha_bar)", "sqrt(alpha_bar)"},
                       [&s](std::size_t t) { return detail::velocity_coefficients(s[t]); });
}

// ---------------------------------------------------------------------------------------
// Any noise level (rectified flow, EDM, VP)
// ---------------------------------------------------------------------------------------

/// @brief Samples \f$x = \alpha\,x_0 + \sigma\,\varepsilon\f$ at any noise level (process/parameterization.hpp): the
/// forward process of rectified flow (\f$(1-\sigma)x_0 + \sigma\varepsilon\f$, @ref noise_level::flow), of EDM / VE
/// (\f$x_0 + \sigma\varepsilon\f$) or of a VP level.
/// @param[in] l the level; @param[in] x0 data; @param[in] noise ε, same size; @param[out] xt result (may alias x0 or noise).
/// @throws std::invalid_argument if sizes differ or are 0, or arrays overlap partially; std::domain_error for a
///         non-finite output.
template <tensor X0, tensor E, mutable_tensor Out>
void q_sample(const noise_level& l, const X0& x0, const E& noise, Out&& xt) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "q_sample: x0, noise and xt must have the same element type");
  constexpr std::string_view where = "diffusion::q_sample";
  const detail::combine_names nm{"x0", "noise", "xt"};
  const auto p = detail::combine_check(where, nm, x0, noise, xt, true);
  detail::combine(where, nm, p, {"alpha", "sigma"}, affine_coefficients{l.alpha, l.sigma});
}

/// @brief The training target of a model of kind `kind` at a level: \f$a\,x_0 + b\,\varepsilon\f$ with
/// (a, b) = @ref target_coefficients (ε; x₀; v = (αε − σx₀)/r; the flow-matching target u = ε − x₀).
/// @param[in] l the level; @param[in] kind the target; @param[in] x0 data; @param[in] noise ε;
/// @param[out] target result (may alias x0 or noise).
/// @throws as @ref q_sample, and std::domain_error for the score at σ = 0.
template <tensor X0, tensor E, mutable_tensor Out>
void prediction_target(const noise_level& l, prediction kind, const X0& x0, const E& noise, Out&& target) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, Out>,
                "prediction_target: x0, noise and target must have the same element type");
  constexpr std::string_view where = "diffusion::prediction_target";
  const detail::combine_names nm{"x0", "noise", "target"};
  const auto p = detail::combine_check(where, nm, x0, noise, target, true);
  detail::combine(where, nm, p, {"the x0 coefficient", "the noise coefficient"}, target_coefficients(l, kind));
}

}  // namespace diffusion

/// @}
