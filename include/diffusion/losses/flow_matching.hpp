/// @file
/// @brief Training math of rectified-flow / flow-matching models (Lipman et al. 2023; Liu et al.
/// 2022; Esser et al. 2024, "SD3" §3 and §5.1) and of EDM (Karras et al. 2022, §5): the conditional
/// flow-matching loss with its gradient, the training-time densities of σ (uniform, logit-normal,
/// SD3's mode density, cosmap; EDM's log-normal) with their loss weights, every draw addressable by
/// (seed, step, i) like the DDPM timestep samplers.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <string_view>
#include <utility>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/reductions.hpp"
#include "../noise/philox.hpp"
#include "../process/edm.hpp"
#include "losses.hpp"

/// @addtogroup losses
/// @{

namespace diffusion {

namespace detail {
/// \f$\sum_k (\hat u_k - (\varepsilon_k - x_{0,k}))^2\f$ over one row, writing grad[k] = 2·scale·(û_k − u_k) unless grad is
/// empty. Unchecked: the callers validate the sizes.
template <class T>
double flow_matching_sum(std::span<const T> x0, std::span<const T> noise, std::span<const T> out, std::span<T> grad,
                         double scale) {
  return indexed_sum(x0.size(), [&](std::size_t k) {
    const double e = static_cast<double>(out[k]) - (static_cast<double>(noise[k]) - static_cast<double>(x0[k]));
    if (!grad.empty()) grad[k] = static_cast<T>(2.0 * scale * e);
    return e * e;
  });
}
}  // namespace detail

/// @brief The conditional flow-matching loss of one sample (Lipman et al. 2023, Eq. 23; SD3 Eq. 12
/// with the rectified-flow path): \f$L = \frac{w}{n}\lVert\hat u - (\varepsilon - x_0)\rVert^2\f$, the model's
/// velocity against the path's \f$u = \varepsilon - x_0\f$ (which does not depend on σ).
///
/// The sum is the compensated reduction of reductions.hpp; the gradient \f$\partial L/\partial\hat u = 2w(\hat u - u)/n\f$.
/// @param[in] x0 data (n); @param[in] noise ε (n); @param[in] model_output \f$\hat u\f$ (n);
/// @param[in] weight w ≥ 0 (@ref flow_loss_weight); @param[out] grad optional, n.
/// @throws std::invalid_argument for sizes, a bad weight or overlapping arrays; std::domain_error for
///         non-finite inputs.
template <real_scalar T>
double flow_matching_loss(std::span<const T> x0, std::span<const T> noise, std::span<const T> model_output,
                          double weight = 1.0, std::span<T> grad = {}) {
  constexpr std::string_view where = "diffusion::flow_matching_loss";
  const std::size_t n = x0.size();
  if (n == 0) detail::throw_invalid(where, "x0 is empty");
  detail::check_same_size(where, "x0", n, "noise", noise.size());
  detail::check_same_size(where, "x0", n, "model_output", model_output.size());
  if (!(weight >= 0.0 && std::isfinite(weight)))
    detail::throw_invalid(where, "weight = " + detail::to_text(weight) + " is outside the allowed range [0, inf)");
  if (!grad.empty()) detail::check_same_size(where, "grad", grad.size(), "x0", n);
  detail::check_no_partial_overlap(where, "grad", grad, "model_output", model_output);
  detail::check_no_partial_overlap(where, "grad", grad, "x0", x0);
  detail::check_no_partial_overlap(where, "grad", grad, "noise", noise);
  const double scale = weight / static_cast<double>(n);
  const double value = detail::flow_matching_sum(x0, noise, model_output, grad, scale) * scale;
  if (!std::isfinite(value))
    detail::throw_non_finite(where, value, std::pair{"x0", x0}, std::pair{"noise", noise},
                             std::pair{"model_output", model_output});
  return value;
}

/// @brief @ref flow_matching_loss for any tensors (std::vector, Eigen, …), without the gradient.
template <tensor X0, tensor E, tensor M>
double flow_matching_loss(const X0& x0, const E& noise, const M& model_output, double weight = 1.0) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, M>,
                "flow_matching_loss: x0, noise and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  return flow_matching_loss<T>(as_span(x0), as_span(noise), as_span(model_output), weight, std::span<T>{});
}

/// @brief @ref flow_matching_loss for any tensors, with the gradient written to `grad` (n elements).
template <tensor X0, tensor E, tensor M, mutable_tensor G>
double flow_matching_loss(const X0& x0, const E& noise, const M& model_output, double weight, G&& grad) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, M> && detail::same_value_v<X0, G>,
                "flow_matching_loss: x0, noise, model_output and grad must have the same element type");
  using T = tensor_value_t<X0>;
  return flow_matching_loss<T>(as_span(x0), as_span(noise), as_span(model_output), weight, as_mutable_span(grad));
}

/// @brief How the training σ of a flow-matching model is drawn (diffusers
/// `compute_density_for_timestep_sampling`; SD3 §3.1): u is the unshifted σ ∈ (0, 1).
enum class flow_density {
  uniform,       ///< u ~ U(0, 1).
  logit_normal,  ///< u = sigmoid(m + s·z), z ~ N(0, 1) (SD3 Eq. 19; its default m = 0, s = 1).
  mode,          ///< u = 1 − v − c(cos²(πv/2) − 1 + v), v ~ U(0, 1) (SD3 Eq. 20, "mode" with scale c).
  cosmap,        ///< u = 1 − 1/(tan(πv/2) + 1), v ~ U(0, 1) (SD3 Eq. 21).
};

/// @brief Loss weights of flow-matching training (diffusers `compute_loss_weighting_for_sd3`).
enum class flow_weighting {
  none,        ///< 1.
  sigma_sqrt,  ///< σ^−2.
  cosmap,      ///< 2/(π(1 − 2σ + 2σ²)).
};

/// @brief The loss weight of a training σ ∈ (0, 1] (@ref flow_weighting).
/// @throws std::invalid_argument for σ outside (0, 1] or a weighting that is not an enumerator.
inline double flow_loss_weight(flow_weighting w, double sigma) {
  detail::check_enum("diffusion::flow_loss_weight", "weighting", w, 3, "none, sigma_sqrt, cosmap");
  if (!(sigma > 0.0 && sigma <= 1.0))
    detail::throw_invalid("diffusion::flow_loss_weight",
                          "sigma = " + detail::to_text(sigma) + " is outside the allowed range (0, 1]");
  switch (w) {
    case flow_weighting::none: return 1.0;
    case flow_weighting::sigma_sqrt: return 1.0 / (sigma * sigma);
    case flow_weighting::cosmap: return 2.0 / (std::numbers::pi * (1.0 - 2.0 * sigma + 2.0 * sigma * sigma));
  }
  return 1.0;
}

/// @brief The conditional flow-matching loss of a batch with one σ per row (SD3 §3, Eq. 12; diffusers'
/// `train_dreambooth_lora_sd3`: `(weighting * (model_pred - target)**2).mean()` per row, then over the batch):
/// returns \f$\frac1B\sum_b w_b\,\lambda(\sigma_b)\,L_b\f$ with \f$L_b = \frac1n\lVert\hat u_b - (\varepsilon_b - x_{0,b})\rVert^2\f$,
/// λ = @ref flow_loss_weight(weighting, σ_b) and \f$w_b\f$ the caller's weights (`io.weights`, 1 when empty).
///
/// The target u = ε − x₀ does not depend on σ; σ enters only through the weight. Row b is elements
/// [b·n, (b + 1)·n) of every array; `io.row_losses` receives the unweighted \f$L_b\f$, `io.grad`
/// \f$2w_b\lambda(\sigma_b)(\hat u_b - u_b)/(Bn)\f$. Each \f$L_b\f$ is, bit for bit, @ref flow_matching_loss of the row with weight 1.
/// @param[in] sigmas one σ ∈ (0, 1] per row (B = its size); @param[in] weighting the loss weight of σ;
/// @param[in] x0 B × n; @param[in] noise B × n; @param[in] model_output û, B × n;
/// @param[in,out] io weights, per-row losses, gradient (@ref batch_loss_io).
/// @throws std::invalid_argument for sizes, B not dividing x0.size(), σ outside (0, 1], a bad weight or
///         overlapping arrays; std::domain_error for non-finite inputs.
template <tensor X0, tensor E, tensor M>
double flow_matching_loss(std::span<const double> sigmas, flow_weighting weighting, const X0& x0, const E& noise,
                          const M& model_output, const batch_loss_io<tensor_value_t<X0>>& io = {}) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, M>,
                "flow_matching_loss: x0, noise and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  constexpr std::string_view where = "diffusion::flow_matching_loss";
  const auto a = as_span(x0);
  const auto e = as_span(noise);
  const auto o = as_span(model_output);
  const std::size_t rows = sigmas.size();
  if (rows == 0) detail::throw_invalid(where, "sigmas is empty; a batch needs one sigma per row");
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  detail::check_same_size(where, "x0", a.size(), "model_output", o.size());
  if (a.empty()) detail::throw_invalid(where, "x0 is empty");
  if (a.size() % rows != 0)
    detail::throw_invalid(where, "the batch size " + detail::to_text(rows) + " (sigmas.size()) does not divide x0.size() = " +
                                     detail::to_text(a.size()));
  const std::size_t n = a.size() / rows;
  for (std::size_t b = 0; b < rows; ++b)
    if (!(sigmas[b] > 0.0 && sigmas[b] <= 1.0))
      detail::throw_invalid(where, "sigmas[" + detail::to_text(b) + "] = " + detail::to_text(sigmas[b]) +
                                       " is outside the allowed range (0, 1]");
  if (!io.weights.empty()) {
    detail::check_same_size(where, "weights", io.weights.size(), "sigmas", rows);
    for (std::size_t b = 0; b < rows; ++b)
      if (!(io.weights[b] >= 0.0 && std::isfinite(io.weights[b])))
        detail::throw_invalid(where, "weights[" + detail::to_text(b) + "] = " + detail::to_text(io.weights[b]) +
                                         " is outside the allowed range [0, inf)");
  }
  if (!io.row_losses.empty()) detail::check_same_size(where, "row_losses", io.row_losses.size(), "sigmas", rows);
  if (!io.grad.empty()) detail::check_same_size(where, "grad", io.grad.size(), "model_output", o.size());
  detail::check_no_partial_overlap(where, "grad", io.grad, "model_output", o);
  detail::check_no_partial_overlap(where, "grad", io.grad, "x0", a);
  detail::check_no_partial_overlap(where, "grad", io.grad, "noise", e);
  const double inv_n = 1.0 / static_cast<double>(n), inv_b = 1.0 / static_cast<double>(rows);
  const double value = indexed_sum(rows, [&](std::size_t b) {
    const double w = detail::row_weight(io, b) * flow_loss_weight(weighting, sigmas[b]);
    const double l = detail::flow_matching_sum(a.subspan(b * n, n), e.subspan(b * n, n), o.subspan(b * n, n),
                                               io.grad.empty() ? std::span<T>{} : io.grad.subspan(b * n, n),
                                               w * inv_n * inv_b) * inv_n;
    if (!io.row_losses.empty()) io.row_losses[b] = l;
    return w * l;
  }) * inv_b;
  if (!std::isfinite(value))
    detail::throw_non_finite(where, value, std::pair{"x0", a}, std::pair{"noise", e}, std::pair{"model_output", o});
  return value;
}

namespace detail {
/// Two uniforms in (0, 1) (53 bits each, never 0 or 1) from one Philox block addressed by
/// (seed, step, i): the same (seed, step, i) always gives the same pair, whatever the batching.
inline std::pair<double, double> addressed_uniforms(std::uint64_t seed, std::uint64_t step, std::uint64_t i) noexcept {
  const auto r = philox4x32_10({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32),
                                static_cast<std::uint32_t>(step), static_cast<std::uint32_t>(step >> 32)},
                               {static_cast<std::uint32_t>(seed ^ 0x5EED5EEDu), static_cast<std::uint32_t>(seed >> 32)});
  const auto u = [](std::uint32_t hi, std::uint32_t lo) {
    const std::uint64_t b = ((std::uint64_t{hi} << 32) | lo) >> 11;  // 53 bits
    return (static_cast<double>(b) + 0.5) * 0x1p-53;                 // (0, 1)
  };
  return {u(r[0], r[1]), u(r[2], r[3])};
}
/// A standard normal from the pair (Box–Muller, the cosine branch).
inline double addressed_normal(std::uint64_t seed, std::uint64_t step, std::uint64_t i) noexcept {
  const auto [a, b] = addressed_uniforms(seed, step, i);
  return std::sqrt(-2.0 * std::log(a)) * std::cos(2.0 * std::numbers::pi * b);
}
}  // namespace detail

/// @brief Draws training σ of a flow-matching model, draw i of training step k a pure function of
/// (seed, k, i) through Philox4x32-10 (a resumed or sharded run draws the same σ).
struct flow_sigma_sampler {
  flow_density density = flow_density::logit_normal;  ///< The density of u.
  double logit_mean = 0.0;                            ///< m of the logit-normal.
  double logit_std = 1.0;                             ///< s > 0 of the logit-normal.
  double mode_scale = 1.29;                           ///< c of the mode density (SD3 uses 1.29), in [−1, 2/(π−2)].
  std::uint64_t seed = 0;                             ///< The stream's seed.

  /// @brief Draw i of step k: u ∈ (0, 1) of the density (the unshifted σ; shift it with
  /// @ref sd3_shift for a shifted model, as diffusers' training scripts index the shifted table).
  /// @throws std::invalid_argument for bad parameters.
  [[nodiscard]] double operator()(std::uint64_t step, std::uint64_t i) const {
    constexpr std::string_view where = "diffusion::flow_sigma_sampler";
    detail::check_enum(where, "density", density, 4, "uniform, logit_normal, mode, cosmap");
    const auto [v, w] = detail::addressed_uniforms(seed, step, i);
    switch (density) {
      case flow_density::uniform: return v;
      case flow_density::logit_normal: {
        detail::check_finite(where, "logit_mean", logit_mean);
        detail::check_positive(where, "logit_std", logit_std);
        const double z = std::sqrt(-2.0 * std::log(v)) * std::cos(2.0 * std::numbers::pi * w);
        const double u = 1.0 / (1.0 + std::exp(-(logit_mean + logit_std * z)));
        return std::min(std::max(u, 0x1p-53), 1.0 - 0x1p-53);  // keep it inside (0, 1) where the sigmoid rounds
      }
      case flow_density::mode: {
        if (!(mode_scale >= -1.0 && mode_scale <= 2.0 / (std::numbers::pi - 2.0)))
          detail::throw_invalid(where, "mode_scale = " + detail::to_text(mode_scale) +
                                           " is outside the allowed range [-1, 2/(pi - 2)] (the map must stay monotone)");
        const double c = std::cos(std::numbers::pi * v / 2.0);
        return 1.0 - v - mode_scale * (c * c - 1.0 + v);
      }
      case flow_density::cosmap: return 1.0 - 1.0 / (std::tan(std::numbers::pi * v / 2.0) + 1.0);
    }
    return v;
  }
  /// @brief Fills a batch of step k (draws i = 0 … size − 1).
  void sample(std::uint64_t step, std::span<double> sigmas) const {
    for (std::size_t i = 0; i < sigmas.size(); ++i) sigmas[i] = (*this)(step, i);
  }
};

/// @brief EDM's training σ: \f$\ln\sigma \sim \mathcal N(P_\text{mean}, P_\text{std}^2)\f$ (Karras et al. 2022, §5, Table 1:
/// P_mean = −1.2, P_std = 1.2), draw i of step k a pure function of (seed, k, i).
struct edm_sigma_sampler {
  double p_mean = -1.2;    ///< P_mean.
  double p_std = 1.2;      ///< P_std > 0.
  std::uint64_t seed = 0;  ///< The stream's seed.

  /// @brief Draw i of step k. @throws std::invalid_argument for bad parameters.
  [[nodiscard]] double operator()(std::uint64_t step, std::uint64_t i) const {
    detail::check_finite("diffusion::edm_sigma_sampler", "p_mean", p_mean);
    detail::check_positive("diffusion::edm_sigma_sampler", "p_std", p_std);
    return std::exp(p_mean + p_std * detail::addressed_normal(seed, step, i));
  }
  /// @brief Fills a batch of step k.
  void sample(std::uint64_t step, std::span<double> sigmas) const {
    for (std::size_t i = 0; i < sigmas.size(); ++i) sigmas[i] = (*this)(step, i);
  }
};

}  // namespace diffusion

/// @}
