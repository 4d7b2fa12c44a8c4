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
#include "combine.hpp"
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
  const detail::combine_names nm{"xt", "in", "out"};
  const auto p = detail::combine_check(where, nm, xt, in, out, true);
  detail::combine(where, nm, p, {"the coefficient of xt", "the coefficient of in"}, conversion_coefficients(s, t, from, to));
}

/// @brief Batched @ref convert_prediction, one timestep per row.
template <timestep_range R, tensor XT, tensor In, mutable_tensor Out>
void convert_prediction(const noise_schedule& s, const R& timesteps, prediction from, prediction to, const XT& xt,
                        const In& in, Out&& out) {
  static_assert(detail::same_value_v<XT, In> && detail::same_value_v<XT, Out>,
                "convert_prediction: xt, in and out must have the same element type");
  constexpr std::string_view where = "diffusion::convert_prediction";
  const detail::combine_names nm{"xt", "in", "out"};
  const auto p = detail::combine_check(where, nm, xt, in, out, false);
  detail::combine_rows(where, nm, s, timesteps, p, {"the coefficient of xt", "the coefficient of in"},
                       [&](std::size_t t) { return conversion_coefficients(s, t, from, to); });
}

}  // namespace diffusion

/// @}
