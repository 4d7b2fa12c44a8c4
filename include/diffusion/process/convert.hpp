/// @file
/// @brief Converting a tensor of predictions of one kind to another (ε, x₀, v, score, flow
/// velocity) with the coefficients of the one table, @ref diffusion::conversion_coefficients.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../schedule/noise_schedule.hpp"
#include "batch.hpp"
#include "parameterization.hpp"

/// @addtogroup parameterization
/// @{

namespace diffusion {

/// @brief Converts a prediction of one kind to another at step t: \f$out = a\,x_t + b\,in\f$
/// with @ref conversion_coefficients.
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] from the kind of `in`.
/// @param[in] to the kind of `out`.
/// @param[in] xt the noisy input x_t the prediction was made from.
/// @param[in] in the prediction, kind `from`.
/// @param[out] out the prediction, kind `to`; may alias xt or in (exactly; a partial overlap is refused).
/// @throws std::out_of_range if t ≥ T; std::domain_error where the conversion is undefined (zero
///         terminal SNR), a coefficient is beyond the element type's range, or the result is not finite.
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
  detail::check_no_partial_overlap(where, "xt", x, "out", o);
  detail::check_no_partial_overlap(where, "in", p, "out", o);
  const affine_coefficients k = conversion_coefficients(s, t, from, to);
  detail::require_finite_output(where,
                                kernels::affine2(detail::coefficient<T>(where, "the coefficient of xt", k.a), x,
                                                 detail::coefficient<T>(where, "the coefficient of in", k.b), p, o),
                                "out");
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
  detail::check_no_partial_overlap(where, "xt", x, "out", o);
  detail::check_no_partial_overlap(where, "in", p, "out", o);
  // Validate every row (the zero-SNR domain check, coefficients representable in T) before writing anything.
  detail::for_each_row(where, s, timesteps, x.size(), [&](std::size_t t, std::size_t, std::size_t) {
    const affine_coefficients k = conversion_coefficients(s, t, from, to);
    (void)detail::coefficient<T>(where, "the coefficient of xt", k.a);
    (void)detail::coefficient<T>(where, "the coefficient of in", k.b);
  });
  bool finite = true;
  detail::for_each_row(where, s, timesteps, x.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const affine_coefficients k = conversion_coefficients(s, t, from, to);
    finite = kernels::affine2(static_cast<T>(k.a), x.subspan(off, len), static_cast<T>(k.b), p.subspan(off, len),
                              o.subspan(off, len)) &&
             finite;
  });
  detail::require_finite_output(where, finite, "out");
}

}  // namespace diffusion

/// @}
