/// @file
/// @brief Batches of rows with one timestep each: the @ref diffusion::timestep_range concept and
/// the row loop shared by the forward process, the posterior and the conversions (internal helpers
/// in `detail`).
#pragma once

#include <concepts>
#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../schedule/noise_schedule.hpp"

namespace diffusion {

/// @brief A contiguous range of integer timesteps, one per batch row.
template <class R>
concept timestep_range = detail::contiguous_sized_range<R> && std::integral<detail::contiguous_element_t<R>>;

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
}  // namespace diffusion
