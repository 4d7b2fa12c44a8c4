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
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "gaussian.hpp"
#include "tensor.hpp"

/// @defgroup denoiser Denoiser interface
/// @brief The `denoiser` concept, its input, the reverse-variance choices, and lambda adapters.
/// @{

namespace diffusion {

/// @brief The conditioning type of an unconditional model.
struct no_context {};

/// @brief What a denoiser is called with: a batch of rows of x_t and, per row, the
/// timestep and its noise level σ. The library never looks inside the context.
template <real_scalar T, class Context = no_context>
struct denoiser_input {
  /// x_t in the variance-preserving scale \f$x_t = \sqrt{\bar\alpha}\,x_0 + \sqrt{1-\bar\alpha}\,\varepsilon\f$:
  /// `rows()` rows of equal length, contiguous, owned by the caller.
  std::span<const T> x;
  /// Per row: the 0-based training timestep (fractional when a σ-sampler interpolates).
  std::span<const double> timesteps;
  /// Per row: the noise level \f$\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}\f$ at that timestep (+∞ at zero
  /// terminal SNR). Analytic models use it, neural ones the timestep; σ rather than ᾱ because
  /// both \f$\bar\alpha = 1/(1+\sigma^2)\f$ and \f$1-\bar\alpha = \sigma^2/(1+\sigma^2)\f$ follow from it without cancellation.
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

/// @brief The reverse-process variance \f$\Sigma_\theta(x_t, t) = \sigma_t^2 I\f$ (DDPM §3.2; improved DDPM §3.1).
enum class variance_type {
  /// \f$\sigma_t^2 = \tilde\beta_t\f$, log-variance clipped at the first step (improved DDPM): optimal for a point-mass x₀.
  fixed_small,
  /// \f$\sigma_t^2 = \beta_t\f$, with \f$\tilde\beta_2\f$ at the first step (improved DDPM): optimal for x₀ ~ N(0, I).
  fixed_large,
  /// The model outputs \f$\log\sigma_t^2\f$ per element.
  learned,
  /// The model outputs v ∈ [−1, 1] per element and
  /// \f$\log\sigma_t^2 = \tfrac{v+1}{2}\log\beta_t + \tfrac{1-v}{2}\log\tilde\beta_t\f$ (improved DDPM Eq. 15, clipped log β̃).
  learned_range,
};

/// @brief True when the model writes a variance block per row.
constexpr bool learns_variance(variance_type v) noexcept {
  return v == variance_type::learned || v == variance_type::learned_range;
}

/// @brief The fixed reverse log-variance at 0-based step t, as improved DDPM's `p_mean_variance`:
/// `fixed_small` → clipped \f$\log\tilde\beta_t\f$; `fixed_large` → \f$\log\beta_t\f$, except
/// \f$\log\tilde\beta_2\f$ at the first step (with T = 1, \f$\log\beta_1\f$).
/// @throws std::invalid_argument for a learned type (it has no fixed value); std::out_of_range if t ≥ T.
inline double fixed_log_variance(const noise_schedule& s, std::size_t t, variance_type v) {
  const schedule_step& st = s.at(t);
  if (v == variance_type::fixed_small) return st.posterior_log_variance_clipped;
  if (v == variance_type::fixed_large) {
    if (t == 0) return s.size() > 1 ? s[1].posterior_log_variance_clipped : std::log(st.beta);
    return std::log(st.beta);
  }
  detail::throw_invalid("diffusion::fixed_log_variance", "variance type is learned; the model provides it");
}

namespace detail {

/// A noise level σ as c = 1/√(1+σ²) = √ᾱ, d = σ/√(1+σ²) = √(1−ᾱ) and their squares, each without
/// cancellation and, unlike a plain 1 + σ², without overflow for σ > 2^500; +∞ is zero terminal SNR.
/// Shared by the analytic models so that they evaluate a level identically.
struct noise_level {
  double sigma, c, d, c2, d2;
  static noise_level from_sigma(double sigma) {
    if (std::isinf(sigma)) return {sigma, 0.0, 1.0, 0.0, 1.0};
    if (sigma > 0x1p500) {  // 1 + σ² rounds to σ²: c = 1/σ and d = 1 are exact to 2^-1000
      const double c = 1.0 / sigma;
      return {sigma, c, 1.0, c * c, 1.0};
    }
    const double q = 1.0 + sigma * sigma, r = std::sqrt(q);
    return {sigma, 1.0 / r, sigma / r, 1.0 / q, sigma * sigma / q};
  }
};

/// Throws std::invalid_argument at the first learned_range output outside [−1, 1].
template <class T>
void check_learned_range(std::string_view where, variance_type v, std::span<const T> var_out) {
  if (v != variance_type::learned_range) return;
  for (std::size_t k = 0; k < var_out.size(); ++k) {
    const double x = static_cast<double>(var_out[k]);
    if (!(x >= -1.0 && x <= 1.0))
      throw_invalid(where, "variance output[" + to_text(k) + "] = " + to_text(x) +
                               " is outside the allowed range [-1, 1] of learned_range");
  }
}

}  // namespace detail

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
