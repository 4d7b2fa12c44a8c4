/// @file
/// @brief The one shape of the process functions on tensors, out = a·in₁ + b·in₂ with (a, b) from
/// the level or the step (q_sample, velocity and prediction targets, conversions, posterior means):
/// operand checks, coefficients rounded to the element type once (refused where they overflow it)
/// and the one-flag finiteness check of the output, for one level or one timestep per row
/// (internal helpers in `detail`).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../schedule/noise_schedule.hpp"
#include "batch.hpp"
#include "parameterization.hpp"

namespace diffusion::detail {

/// The names of the two inputs and of the output, for messages.
struct combine_names {
  std::string_view in1, in2, out;
};

/// The operands of out = a·in₁ + b·in₂.
template <class T>
struct combine_operands {
  std::span<const T> in1, in2;
  std::span<T> out;
};

/// Checks the operands: equal sizes, no partial overlap of an input with the output (exact
/// aliasing is allowed), and, for a single level (`nonempty`), a non-empty first input; the
/// batched forms check the rows instead.
template <tensor A, tensor B, mutable_tensor Out>
combine_operands<tensor_value_t<A>> combine_check(std::string_view where, const combine_names& nm, const A& in1,
                                                  const B& in2, Out&& out, bool nonempty) {
  static_assert(same_value_v<A, B> && same_value_v<A, Out>, "the inputs and the output must have the same element type");
  auto a = as_span(in1);
  auto b = as_span(in2);
  auto o = as_mutable_span(out);
  check_same_size(where, nm.in1, a.size(), nm.in2, b.size());
  check_same_size(where, nm.in1, a.size(), nm.out, o.size());
  if (nonempty && a.empty()) throw_invalid(where, std::string(nm.in1) + " is empty");
  check_no_partial_overlap(where, nm.in1, a, nm.out, o);
  check_no_partial_overlap(where, nm.in2, b, nm.out, o);
  return {a, b, o};
}

/// The coefficient names, for messages.
struct coefficient_names {
  std::string_view a, b;
};

/// out = k.a·in₁ + k.b·in₂ with k rounded to T once (refused where it overflows T); a non-finite
/// output element raises std::domain_error naming the output.
template <class T>
void combine(std::string_view where, const combine_names& nm, const combine_operands<T>& p,
             const coefficient_names& cn, const affine_coefficients& k) {
  require_finite_output(
      where, kernels::affine2(coefficient<T>(where, cn.a, k.a), p.in1, coefficient<T>(where, cn.b, k.b), p.in2, p.out),
      nm.out);
}

/// The same per row: row r uses `coef(timesteps[r])`. Every row's coefficients are computed and
/// checked (representable in T) before anything is written.
template <class T, timestep_range R, class C>
void combine_rows(std::string_view where, const combine_names& nm, const noise_schedule& s, const R& timesteps,
                  const combine_operands<T>& p, const coefficient_names& cn, C coef) {
  for_each_row(where, s, timesteps, p.in1.size(), [&](std::size_t t, std::size_t, std::size_t) {
    const affine_coefficients k = coef(t);
    (void)coefficient<T>(where, cn.a, k.a);
    (void)coefficient<T>(where, cn.b, k.b);
  });
  bool finite = true;
  for_each_row(where, s, timesteps, p.in1.size(), [&](std::size_t t, std::size_t off, std::size_t len) {
    const affine_coefficients k = coef(t);
    finite = kernels::affine2(static_cast<T>(k.a), p.in1.subspan(off, len), static_cast<T>(k.b),
                              p.in2.subspan(off, len), p.out.subspan(off, len)) &&
             finite;
  });
  require_finite_output(where, finite, nm.out);
}

}  // namespace diffusion::detail
