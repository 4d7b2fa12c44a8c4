/// @file
/// @brief The model concept: what the library calls, with what, and what it expects back.
///
/// Customization points: a denoiser is any type `M` with
/// - `prediction predicts() const`: what its output means (ε, x₀, v or score);
/// - `void operator()(const denoiser_input<T, Context>& in, std::span<T> out)`: fills `out`.
///
/// `out` holds one row per input row. A model that learns its variance
/// (`variance_type::learned` or `variance_type::learned_range`) writes two blocks per
/// row, `[prediction (n) | variance output (n)]`, exactly the layout of a contiguous NCHW
/// tensor with 2C channels split along C as improved DDPM does; other models write n per row.
/// Wrap a lambda with make_denoiser().
///
/// This header is deliberately light (the standard library's `<span>` and `<concepts>`, no
/// xsimd, no Eigen): a model's translation unit can see the concept without the kernels.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

#include "../core/config.hpp"
#include "../process/prediction.hpp"

/// @defgroup denoiser Denoiser interface
/// @brief The `denoiser` concept, its input, and lambda adapters.
/// @{

namespace diffusion {

/// @brief The conditioning type of an unconditional model.
struct no_context {};

/// @brief What a denoiser is called with: a batch of rows of x_t and, per row, the
/// timestep and its noise level σ. The library never looks inside the context.
template <real_scalar T, class Context = no_context>
struct denoiser_input {
  /// x_t in the model's own scale, \f$x_t = \alpha\,x_0 + \sigma\,\varepsilon\f$ (variance preserving for DDPM-family
  /// models, \f$(1-\sigma)x_0 + \sigma\varepsilon\f$ for rectified flow): `rows()` rows of equal length,
  /// contiguous, owned by the caller.
  std::span<const T> x;
  /// Per row: the model's time input — the 0-based training timestep of a DDPM-family model
  /// (fractional when a σ-sampler interpolates), σ·N for a rectified-flow model, c_noise for EDM.
  std::span<const double> timesteps;
  /// Per row: the noise ratio σ/α of the model's process at that time — for a DDPM table
  /// \f$\sqrt{(1-\bar\alpha)/\bar\alpha}\f$, for rectified flow σ/(1 − σ) — +∞ at zero SNR (pure noise). Analytic
  /// models use it (@ref noise_level::preserving, or σ = ratio/(1 + ratio) for a flow), neural ones the
  /// timestep; the ratio rather than ᾱ because α and σ of any process follow from it without cancellation.
  std::span<const double> sigma;
  /// Conditioning passed through untouched (null for @ref no_context).
  const Context* context = nullptr;

  /// Number of rows.
  [[nodiscard]] std::size_t rows() const noexcept { return timesteps.size(); }
  /// Elements per row.
  [[nodiscard]] std::size_t row_size() const noexcept { return rows() ? x.size() / rows() : 0; }
};

/// @brief A model the library can call on tensors of T with conditioning `Context`.
template <class M, class T, class Context = no_context>
concept denoiser = real_scalar<T> && requires(M& m, const M& cm, const denoiser_input<T, Context>& in, std::span<T> out) {
  { cm.predicts() } -> std::convertible_to<prediction>;
  m(in, out);
};

/// @brief A model that reads the noise ratio σ (the `sigma` of @ref diffusion::denoiser_input "denoiser_input") rather than a
/// training timestep: it declares `static constexpr bool conditions_on_sigma = true;` (the analytic
/// models do). Such a model may be wrapped by @ref diffusion::sigma_space_model "sigma_space_model" without a schedule.
template <class M>
concept sigma_conditioned = requires { requires std::remove_cvref_t<M>::conditions_on_sigma; };

/// @brief A model made of a prediction kind and a callable
/// `f(const denoiser_input<T, Context>&, std::span<T> out)`.
template <class F>
class function_denoiser {
 public:
  /// @param[in] kind what `f` predicts.
  /// @param[in] f the callable, stored by value.
  function_denoiser(prediction kind, F f) : kind_(kind), f_(std::move(f)) {}
  /// What the callable predicts.
  [[nodiscard]] prediction predicts() const noexcept { return kind_; }
  /// Forwards to the callable.
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) {
    f_(in, out);
  }

 private:
  prediction kind_;
  F f_;
};

/// @brief Wraps a callable as a denoiser: `make_denoiser(prediction::epsilon, [](auto& in, auto out) {…})`.
template <class F>
function_denoiser<std::decay_t<F>> make_denoiser(prediction kind, F&& f) {
  return function_denoiser<std::decay_t<F>>(kind, std::forward<F>(f));
}

}  // namespace diffusion

/// @}
