/// @file
/// @brief Training and evaluation losses of DDPM §3: the terms of the variational bound
/// (Eq. 5), L_simple (Eq. 14), its weights (Eq. 12, min-SNR-γ), improved DDPM's hybrid loss,
/// and the gradient of each with respect to the model output.
///
/// Every function reads the caller's tensors once, computes per element in double, and
/// reduces with the compensated, SIMD reductions of reductions.hpp: the sum of the computed
/// terms has error ≤ u|s| + 2·10⁵u²Σ|t_k| (u = 2⁻⁵³; the terms of every loss here are ≥ 0, so
/// ≤ 1.0001u·s: one rounding, whatever n). Values are means over the elements of a row ("per
/// dimension"), in nats; divide by ln 2 for bits (to_bits()).
///
/// Non-finite input policy: a loss whose value is not finite raises `std::domain_error`
/// naming the first non-finite input element (or, if all inputs are finite, the overflow).
/// NaN is never returned silently.
#pragma once

#include <cmath>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/reductions.hpp"
#include "../process/batch.hpp"
#include "../process/forward.hpp"
#include "../process/parameterization.hpp"
#include "../process/posterior.hpp"
#include "../schedule/noise_schedule.hpp"
#include "distributions.hpp"

/// @defgroup losses Losses and likelihood
/// @brief VLB terms L_T, L_{t−1}, L_0 (DDPM Eq. 5, 13), L_simple (Eq. 14), weights (Eq. 12), hybrid loss, gradients.
/// @{

namespace diffusion {

/// @brief Nats to bits: \f$x/\ln 2\f$.
constexpr double to_bits(double nats) noexcept { return nats / std::numbers::ln2; }

namespace detail {

/// Throws std::domain_error naming the first non-finite element among the named inputs.
template <class... Named>
[[noreturn]] void throw_non_finite(std::string_view where, double value, const Named&... named) {
  std::string culprit;
  auto scan = [&](const auto& pair) {
    if (!culprit.empty()) return;
    const auto& [name, span] = pair;
    for (std::size_t k = 0; k < span.size(); ++k)
      if (!std::isfinite(static_cast<double>(span[k]))) {
        culprit = std::string(name) + "[" + to_text(k) + "] = " + to_text(static_cast<double>(span[k]));
        return;
      }
  };
  (scan(named), ...);
  throw_domain(where, "the loss is " + to_text(value) + " because " +
                          (culprit.empty() ? std::string("of overflow with finite inputs (a log-variance too small?)")
                                           : culprit + " is not finite"));
}

}  // namespace detail

/// @brief How a model's output is turned into \f$p_\theta(x_{t-1} \mid x_t)\f$ and how L_0 is scored.
struct vlb_options {
  /// The reverse variance; learned types read a second block of the model output per row.
  variance_type variance = variance_type::fixed_small;
  /// Clamp \f$\hat x_0\f$ to [−1, 1] before forming the mean (improved DDPM's `clip_denoised`;
  /// not in DDPM's Algorithm 2). Gradients are zero where the clamp is active.
  bool clip_denoised = false;
  /// The L_0 decoders.
  enum class decoder_kind {
    discretized,  ///< the discretized Gaussian of Eq. 13, for data on a grid in [−1, 1].
    continuous,   ///< the Gaussian density, for continuous data.
  };
  /// L_0 decoder.
  decoder_kind decoder = decoder_kind::discretized;
  /// Grid and CDF of the discretized decoder.
  discretized_decoder discretized{};
};

/// @brief The prior term \f$L_T = \mathrm{KL}(q(x_T|x_0)\,\|\,\mathcal N(0, I))\f$ of DDPM Eq. 5,
/// mean over the elements of x₀, in nats (improved DDPM `_prior_bpd`, which reports bits).
/// About 1e-5 bits/dim for the linear schedule on data in [−1, 1] (DDPM §4).
/// @throws std::invalid_argument for an empty x₀; std::domain_error for non-finite x₀.
template <tensor X0>
double prior_term(const noise_schedule& s, const X0& x0) {
  constexpr std::string_view where = "diffusion::prior_term";
  const auto x = as_span(x0);
  if (x.empty()) detail::throw_invalid(where, "x0 is empty");
  const schedule_step& st = s[s.size() - 1];
  const double lv = std::log1p(-st.alpha_bar);
  double kl = 0.0;
  try {
    kl = transform_sum(x, [&st, lv](double v) { return standard_normal_kl(st.sqrt_alpha_bar * v, lv); });
  } catch (const std::domain_error&) {
    // A non-finite x0 makes a term non-finite; name the element rather than the reduction.
    detail::throw_non_finite(where, std::numeric_limits<double>::quiet_NaN(), std::pair{"x0", x});
  }
  const double r = kl / static_cast<double>(x.size());
  if (!std::isfinite(r)) detail::throw_non_finite(where, r, std::pair{"x0", x});
  return r;
}

namespace detail {

/// Per-element model quantities at step t: x̂₀ coefficients, posterior coefficients, log-variance.
struct reverse_step_coefficients {
  affine_coefficients to_x0;  // x̂₀ = a x_t + b out
  double c0, ct;              // posterior mean coefficients of x̂₀ and x_t
  reverse_log_variance log_var;  // ℓ(o): the reverse log-variance (process/posterior.hpp)
  double fixed_log_var;       // when the variance is fixed
  double true_log_var;        // log β̃ (−∞ at t = 0) for the KL
  double fixed_w;             // e^{−ℓ} for a fixed variance
  double fixed_kl_const;      // expm1(d) − d, d = log β̃ − ℓ, for a fixed variance at t ≥ 1
};

inline reverse_step_coefficients reverse_coefficients(const noise_schedule& s, std::size_t t, prediction kind,
                                                      const vlb_options& opt) {
  const schedule_step& st = s.at(t);
  reverse_step_coefficients r{};
  r.to_x0 = conversion_coefficients(s, t, kind, prediction::sample);
  r.c0 = st.posterior_mean_coef_x0;
  r.ct = st.posterior_mean_coef_xt;
  r.log_var = reverse_log_variance::at(s, t, opt.variance);
  r.fixed_log_var = r.log_var.fixed;
  r.true_log_var = t == 0 ? -std::numeric_limits<double>::infinity() : std::log(st.posterior_variance);
  r.fixed_w = std::exp(-r.fixed_log_var);
  r.fixed_kl_const = t == 0 ? 0.0 : detail::expm1_minus_x(r.true_log_var - r.fixed_log_var);
  return r;
}

/// One element of L_{t−1} or L_0 and its derivatives with respect to the model's mean
/// output (dm) and variance output (dv); all per element (not yet divided by n).
template <class T>
double vlb_element(const reverse_step_coefficients& r, std::size_t t, const vlb_options& opt, double x0, double xt,
                   double out, double var_out, double* dm, double* dv) {
  double x0_hat = r.to_x0.a * xt + r.to_x0.b * out;
  double dx0_dout = r.to_x0.b;
  if (opt.clip_denoised && (x0_hat < -1.0 || x0_hat > 1.0)) {
    x0_hat = x0_hat < -1.0 ? -1.0 : 1.0;
    dx0_dout = 0.0;
  }
  const double mean = r.c0 * x0_hat + r.ct * xt;
  const double dmean_dout = r.c0 * dx0_dout;
  const double dlog_dv = r.log_var.derivative();
  const double lv = r.log_var(var_out);
  if (t > 0) {
    // KL(q(x_{t-1}|x_t,x0) || N(mean, e^lv)) = 0.5 (expm1(d) - d + (mu~ - mean)^2 e^{-lv}), d = log b~ - lv.
    const double mu = r.c0 * x0 + r.ct * xt;
    const double diff = mu - mean;
    if (!learns_variance(opt.variance)) {  // the variance part is a per-row constant
      if (dm) *dm = -diff * r.fixed_w * dmean_dout;
      return 0.5 * (r.fixed_kl_const + diff * diff * r.fixed_w);
    }
    const double w = std::exp(-lv);
    const double d = r.true_log_var - lv;
    if (dm) *dm = -diff * w * dmean_dout;
    if (dv) *dv = 0.5 * (-std::expm1(d) - diff * diff * w) * dlog_dv;
    return 0.5 * (detail::expm1_minus_x(d) + diff * diff * w);
  }
  // L_0 = -log p(x0 | x1).
  if (opt.decoder == vlb_options::decoder_kind::continuous) {
    const double z = x0 - mean, w = std::exp(-lv);
    if (dm) *dm = -z * w * dmean_dout;
    if (dv) *dv = 0.5 * (1.0 - z * z * w) * dlog_dv;
    return -gaussian_log_likelihood(x0, mean, lv);
  }
  const double nll = -discretized_gaussian_log_likelihood(x0, mean, lv, opt.discretized);
  if (dm || dv) {
    // d/dmean and d/dlv of -log(Phi(zb) - Phi(za)), z = (edge - mean) e^{-lv/2}:
    // dz/dmean = -e^{-lv/2}, dz/dlv = -z/2; phi(z)/P evaluated as exp(log phi - log P).
    const double h = 1.0 / static_cast<double>(opt.discretized.bins - 1), inv_std = std::exp(-0.5 * lv);
    const bool lowest = x0 <= -1.0 + 0.5 * h, highest = x0 >= 1.0 - 0.5 * h;
    const double logp = -nll;
    auto dens = [&](double z) { return std::exp(-0.5 * z * z - log_sqrt_2pi - logp); };  // phi(z)/P
    const double zb = highest ? 0.0 : (x0 + h - mean) * inv_std, za = lowest ? 0.0 : (x0 - h - mean) * inv_std;
    const double pb = highest ? 0.0 : dens(zb), pa = lowest ? 0.0 : dens(za);
    // d log P / d mean = (pb - pa)(-inv_std);  d log P / d lv = (pb zb - pa za)(-1/2)
    if (dm) *dm = (pb - pa) * inv_std * dmean_dout;
    if (dv) *dv = 0.5 * (pb * zb - pa * za) * dlog_dv;
  }
  return nll;
}

/// Σ_k of the elements of L_{t−1} (or L_0) over one row: `out` holds the row's prediction (n) and,
/// for a learned variance, its variance block (n more); `grad` (empty to skip) the same layout,
/// written as ∂/∂out scaled by `mean_scale` (prediction block) and `var_scale` (variance block).
/// Unchecked: the callers validate sizes, variance outputs and the decoder's input range.
template <class T>
double vlb_sum(const reverse_step_coefficients& r, std::size_t t, const vlb_options& opt, std::span<const T> x0,
               std::span<const T> xt, std::span<const T> out, std::span<T> grad, double mean_scale, double var_scale) {
  const std::size_t n = x0.size();
  const auto var_out = out.size() == n ? std::span<const T>{} : out.subspan(n, n);
  return indexed_sum(n, [&](std::size_t k) {
    double dm = 0.0, dv = 0.0;
    const double vo = var_out.empty() ? 0.0 : static_cast<double>(var_out[k]);
    const double term = vlb_element<T>(r, t, opt, static_cast<double>(x0[k]), static_cast<double>(xt[k]),
                                       static_cast<double>(out[k]), vo, grad.empty() ? nullptr : &dm,
                                       grad.empty() || var_out.empty() ? nullptr : &dv);
    if (!grad.empty()) {
      grad[k] = static_cast<T>(dm * mean_scale);
      if (!var_out.empty()) grad[n + k] = static_cast<T>(dv * var_scale);
    }
    return term;
  });
}

/// Requires x₀ in [−1, 1] for the discretized decoder (L_0); `first` is the index of x0[0] in the
/// caller's array, for the message.
template <class T>
void check_decoder_input(std::string_view where, const vlb_options& opt, std::span<const T> x0, std::size_t first) {
  if (opt.decoder != vlb_options::decoder_kind::discretized) return;
  for (std::size_t k = 0; k < x0.size(); ++k)
    if (!(static_cast<double>(x0[k]) >= -1.0 && static_cast<double>(x0[k]) <= 1.0))
      throw_invalid(where, "x0[" + to_text(first + k) + "] = " + to_text(static_cast<double>(x0[k])) +
                               " is outside the allowed range [-1, 1] of the discretized decoder");
}

}  // namespace detail

/// @brief One term of the variational bound for one sample at 0-based step t (DDPM Eq. 5;
/// improved DDPM `_vb_terms_bpd`): \f$L_{t-1} = \mathrm{KL}(q(x_{t-1}|x_t,x_0)\,\|\,p_\theta(x_{t-1}|x_t))\f$
/// for t ≥ 1 and \f$L_0 = -\log p_\theta(x_0|x_1)\f$ for t = 0, mean over elements, in nats.
///
/// \f$p_\theta(x_{t-1}|x_t) = \mathcal N(\tilde\mu_t(x_t, \hat x_0), \sigma_t^2)\f$ with \f$\hat x_0\f$ from the
/// model output (DDPM Eq. 11 for ε) and σ² from `opt.variance`.
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] x0 the data sample (n elements).
/// @param[in] xt the noisy sample at t (n).
/// @param[in] model_output n elements of the model's prediction of kind `kind`, followed by n
///            variance outputs when `opt.variance` is learned (2n in all).
/// @param[in] kind what the model predicts.
/// @param[in] opt variance, clipping and decoder.
/// @param[out] grad optional (empty to skip): the gradient of the returned value with respect
///             to `model_output`, same size as it.
/// @throws std::invalid_argument for mismatched sizes, x₀ outside [−1, 1] with the discretized
///         decoder at t = 0; std::domain_error for non-finite inputs (a learned_range output outside
///         [−1, 1] is extrapolated, as improved DDPM does: process/posterior.hpp).
template <real_scalar T>
double vlb_term(const noise_schedule& s, std::size_t t, std::span<const T> x0, std::span<const T> xt,
                std::span<const T> model_output, prediction kind, const vlb_options& opt = {}, std::span<T> grad = {}) {
  constexpr std::string_view where = "diffusion::vlb_term";
  const std::size_t n = x0.size();
  if (n == 0) detail::throw_invalid(where, "x0 is empty");
  detail::check_same_size(where, "x0", n, "xt", xt.size());
  const std::size_t width = learns_variance(opt.variance) ? 2 * n : n;
  if (model_output.size() != width)
    detail::throw_invalid(where, "model_output.size() = " + detail::to_text(model_output.size()) + " must be " +
                                     detail::to_text(width) + (width == n ? " (x0.size())" : " (2 x0.size(): prediction and variance blocks)"));
  if (!grad.empty()) detail::check_same_size(where, "grad", grad.size(), "model_output", model_output.size());
  detail::check_no_partial_overlap(where, "grad", grad, "model_output", model_output);
  detail::check_no_partial_overlap(where, "grad", grad, "x0", x0);
  detail::check_no_partial_overlap(where, "grad", grad, "xt", xt);
  detail::check_variance_output(where, opt.variance, width == n ? std::span<const T>{} : model_output.subspan(n, n));
  if (t == 0) detail::check_decoder_input(where, opt, x0, 0);
  const double inv_n = 1.0 / static_cast<double>(n);
  const double value =
      detail::vlb_sum(detail::reverse_coefficients(s, t, kind, opt), t, opt, x0, xt, model_output, grad, inv_n, inv_n) * inv_n;
  if (!std::isfinite(value))
    detail::throw_non_finite(where, value, std::pair{"x0", x0}, std::pair{"xt", xt}, std::pair{"model_output", model_output});
  return value;
}

/// @brief @ref vlb_term for any tensors (std::vector, Eigen, …), without the gradient.
template <tensor X0, tensor XT, tensor M>
double vlb_term(const noise_schedule& s, std::size_t t, const X0& x0, const XT& xt, const M& model_output,
                prediction kind, const vlb_options& opt = {}) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, M>,
                "vlb_term: x0, xt and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  return vlb_term<T>(s, t, as_span(x0), as_span(xt), as_span(model_output), kind, opt, std::span<T>{});
}

/// @brief @ref vlb_term for any tensors, with the gradient written to `grad`.
template <tensor X0, tensor XT, tensor M, mutable_tensor G>
double vlb_term(const noise_schedule& s, std::size_t t, const X0& x0, const XT& xt, const M& model_output,
                prediction kind, const vlb_options& opt, G&& grad) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, M> && detail::same_value_v<X0, G>,
                "vlb_term: x0, xt, model_output and grad must have the same element type");
  using T = tensor_value_t<X0>;
  return vlb_term<T>(s, t, as_span(x0), as_span(xt), as_span(model_output), kind, opt, as_mutable_span(grad));
}

namespace detail {

/// Σ_k (ŷ_k − y_k)² over one row, the target y = a·x₀ + b·ε of @ref target_coefficients at the row's
/// level (ε and x₀ read directly), writing grad[k] = 2·scale·(ŷ_k − y_k) unless grad is empty.
/// Unchecked: the callers validate sizes and the kind.
template <class T>
double simple_sum(const schedule_step& st, prediction kind, std::span<const T> x0, std::span<const T> noise,
                  std::span<const T> out, std::span<T> grad, double scale) {
  const std::size_t n = x0.size();
  if (kind == prediction::epsilon || kind == prediction::sample) {
    // The target is an input: squared_distance's SIMD kernel, or the same terms (same bits) with the gradient.
    const auto y = kind == prediction::epsilon ? noise : x0;
    if (grad.empty()) return squared_distance(out, y);
    return indexed_sum(n, [&](std::size_t k) {
      const double e = static_cast<double>(out[k]) - static_cast<double>(y[k]);
      grad[k] = static_cast<T>(2.0 * scale * e);
      return e * e;
    });
  }
  // The target's definition a x0 + b eps (v: (−√(1−ᾱ), √ᾱ); flow velocity: (−1, 1)).
  const affine_coefficients target = target_coefficients(noise_level::from_step(st), kind);
  return indexed_sum(n, [&](std::size_t k) {
    const double y = target.a * static_cast<double>(x0[k]) + target.b * static_cast<double>(noise[k]);
    const double e = static_cast<double>(out[k]) - y;
    if (!grad.empty()) grad[k] = static_cast<T>(2.0 * scale * e);
    return e * e;
  });
}

inline void check_simple_kind(std::string_view where, prediction kind) {
  if (kind == prediction::score) throw_invalid(where, "kind = score is not a supported target; use epsilon");
}

}  // namespace detail

/// @brief L_simple of DDPM Eq. 14 for one sample (Algorithm 1, line 5):
/// \f$L = \frac1n\|y - \hat y\|^2\f$ where the target y is ε, x₀ or \f$v = \sqrt{\bar\alpha_t}\varepsilon - \sqrt{1-\bar\alpha_t}x_0\f$
/// as `kind` says (DDPM uses ε; improved DDPM's `mean_flat((target - model_output)**2)`).
///
/// All n elements are at the one step t. For a batch whose rows have their own timesteps (training),
/// use the per-row overload that takes a range of timesteps: this form cannot tell rows apart, and
/// for the v target one t for rows drawn at different t is the wrong target.
/// @param[in] s schedule (for the v target).
/// @param[in] t 0-based step.
/// @param[in] x0 data (n; read for the x₀ and v targets only).
/// @param[in] noise ε (n; read for the ε and v targets only).
/// @param[in] model_output the prediction: n elements, or 2n (a variance block after them, not read).
/// @param[in] kind the target (ε, x₀, v, or the flow velocity u = ε − x₀); `prediction::score` is refused
///            (its scale diverges as t → 0: use ε).
/// @param[out] grad optional: \f$\partial L/\partial\hat y = 2(\hat y - y)/n\f$, size n.
/// @throws std::invalid_argument for sizes (model_output neither n nor 2n) or a score target;
///         std::domain_error for non-finite inputs.
template <real_scalar T>
double simple_loss(const noise_schedule& s, std::size_t t, std::span<const T> x0, std::span<const T> noise,
                   std::span<const T> model_output, prediction kind, std::span<T> grad = {}) {
  constexpr std::string_view where = "diffusion::simple_loss";
  const std::size_t n = x0.size();
  if (n == 0) detail::throw_invalid(where, "x0 is empty");
  detail::check_same_size(where, "x0", n, "noise", noise.size());
  if (model_output.size() != n && model_output.size() != 2 * n)
    detail::throw_invalid(where, "model_output.size() = " + detail::to_text(model_output.size()) + " must be x0.size() = " +
                                     detail::to_text(n) + " or twice it (a variance block after the prediction)");
  if (!grad.empty()) detail::check_same_size(where, "grad", grad.size(), "x0", n);
  detail::check_no_partial_overlap(where, "grad", grad, "model_output", model_output);
  detail::check_no_partial_overlap(where, "grad", grad, "x0", x0);
  detail::check_no_partial_overlap(where, "grad", grad, "noise", noise);
  detail::check_simple_kind(where, kind);
  const auto out = model_output.first(n);
  const double inv_n = 1.0 / static_cast<double>(n);
  const double value = detail::simple_sum(s.at(t), kind, x0, noise, out, grad, inv_n) * inv_n;
  if (!std::isfinite(value)) {
    if (kind == prediction::epsilon) detail::throw_non_finite(where, value, std::pair{"noise", noise}, std::pair{"model_output", out});
    if (kind == prediction::sample) detail::throw_non_finite(where, value, std::pair{"x0", x0}, std::pair{"model_output", out});
    detail::throw_non_finite(where, value, std::pair{"x0", x0}, std::pair{"noise", noise}, std::pair{"model_output", out});
  }
  return value;
}

/// @brief @ref simple_loss for any tensors, without the gradient.
template <tensor X0, tensor E, tensor M>
double simple_loss(const noise_schedule& s, std::size_t t, const X0& x0, const E& noise, const M& model_output,
                   prediction kind) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, M>,
                "simple_loss: x0, noise and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  return simple_loss<T>(s, t, as_span(x0), as_span(noise), as_span(model_output), kind, std::span<T>{});
}

/// @brief @ref simple_loss for any tensors, with the gradient written to `grad` (n elements).
template <tensor X0, tensor E, tensor M, mutable_tensor G>
double simple_loss(const noise_schedule& s, std::size_t t, const X0& x0, const E& noise, const M& model_output,
                   prediction kind, G&& grad) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, M> && detail::same_value_v<X0, G>,
                "simple_loss: x0, noise, model_output and grad must have the same element type");
  using T = tensor_value_t<X0>;
  return simple_loss<T>(s, t, as_span(x0), as_span(noise), as_span(model_output), kind, as_mutable_span(grad));
}

/// @brief The weight that turns L_simple's ε-MSE into the bound (DDPM Eq. 12):
/// \f$L_{t-1} = \lambda_t\,\|\varepsilon - \hat\varepsilon\|^2 + C\f$ with
/// \f$\lambda_t = \frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\f$ per element, σ_t² the fixed reverse variance.
/// L_simple sets λ_t = 1: it down-weights small t relative to the bound (DDPM §3.4).
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] v `fixed_small` or `fixed_large`.
inline double vlb_weight(const noise_schedule& s, std::size_t t, variance_type v) {
  const schedule_step& st = s.at(t);
  const double sigma2 = std::exp(fixed_log_variance(s, t, v));
  return st.beta * st.beta / (2.0 * sigma2 * st.alpha * st.one_minus_alpha_bar);
}

/// @brief The min-SNR-γ loss weight (Hang et al. 2023, Eq. 11) for a model trained with the
/// L_simple target `kind`: \f$\min(\mathrm{SNR},\gamma)/\mathrm{SNR}\f$ for ε, \f$\min(\mathrm{SNR},\gamma)\f$ for x₀,
/// \f$\min(\mathrm{SNR},\gamma)/(\mathrm{SNR}+1)\f$ for v.
///
/// Written as \f$\min(1, \gamma/\mathrm{SNR})\f$ for ε, it is well defined at both ends: 1 at SNR = 0
/// (zero terminal SNR, where the quotient form is 0/0 — Min-SNR-Diffusion-Training #2) and 0 at
/// SNR = ∞.
/// @param[in] s schedule.
/// @param[in] t 0-based step.
/// @param[in] gamma γ > 0 (the paper uses 5).
/// @param[in] kind ε, x₀ or v.
/// @throws std::invalid_argument for γ ≤ 0 or NaN, or a score target.
inline double min_snr_weight(const noise_schedule& s, std::size_t t, double gamma, prediction kind) {
  constexpr std::string_view where = "diffusion::min_snr_weight";
  detail::check_positive(where, "gamma", gamma);
  const double snr = s.at(t).snr;
  switch (kind) {
    case prediction::epsilon: return snr <= gamma ? 1.0 : gamma / snr;
    case prediction::sample: return std::min(snr, gamma);
    case prediction::v: return std::min(snr, gamma) / (snr + 1.0);
    default: detail::throw_invalid(where, "kind = score has no min-SNR weight");
  }
}

/// @brief The parts of improved DDPM's hybrid loss for one sample.
struct hybrid_loss_value {
  double simple;  ///< L_simple (ε-MSE per element).
  double vlb;     ///< L_{t−1} (or L_0 at t = 0) in nats per element, with the mean's gradient stopped.
  double total;   ///< simple + λ·T·vlb/ln 2 (see @ref hybrid_loss).
};

namespace detail {
/// The factor of the VLB term in the hybrid loss, λ·T/ln 2 (improved DDPM's RESCALED_MSE).
inline double hybrid_vlb_scale(const noise_schedule& s, double lambda) noexcept {
  return lambda * static_cast<double>(s.size()) / std::numbers::ln2;
}
inline void check_hybrid(std::string_view where, variance_type variance, double lambda) {
  if (!learns_variance(variance)) throw_invalid(where, "variance must be learned or learned_range");
  if (!(lambda >= 0.0 && std::isfinite(lambda)))
    throw_invalid(where, "lambda = " + to_text(lambda) + " is outside the allowed range [0, inf)");
}
}  // namespace detail

/// @brief improved DDPM's hybrid objective (Nichol & Dhariwal 2021, §3.1, Eq. 16):
/// \f$L_\text{hybrid} = L_\text{simple} + \lambda L_\text{vlb}\f$, λ = 0.001.
///
/// With t sampled uniformly, the one-sample estimate of \f$L_\text{vlb} = \sum_t L_t\f$ is \f$T\,L_t\f$ in
/// bits per element, so total = simple + λ·T·to_bits(vlb): with λ = 0.001 this is exactly
/// improved DDPM's `RESCALED_MSE` loss (`vb *= num_timesteps / 1000`). The VLB part sees the
/// model's mean with its gradient stopped (`frozen_out`): it trains only the variance.
/// @param[in] s, t, x0, xt, noise as for @ref vlb_term and @ref simple_loss.
/// @param[in] model_output 2n: the ε prediction then the variance output.
/// @param[in] variance `learned` or `learned_range`.
/// @param[in] lambda λ ≥ 0.
/// @param[out] grad optional, 2n: ∂total/∂model_output (the first n from L_simple only).
template <real_scalar T>
hybrid_loss_value hybrid_loss(const noise_schedule& s, std::size_t t, std::span<const T> x0, std::span<const T> xt,
                              std::span<const T> noise, std::span<const T> model_output, variance_type variance,
                              double lambda = 0.001, std::span<T> grad = {}) {
  constexpr std::string_view where = "diffusion::hybrid_loss";
  detail::check_hybrid(where, variance, lambda);
  const std::size_t n = x0.size();
  if (!grad.empty()) detail::check_same_size(where, "grad", grad.size(), "model_output", model_output.size());
  // The VLB gradient goes into grad first; its mean block is then overwritten by L_simple's
  // (the stop-gradient), and its variance block scaled. No allocation.
  const double vlb = vlb_term(s, t, x0, xt, model_output, prediction::epsilon, vlb_options{.variance = variance}, grad);
  const double simple = simple_loss(s, t, x0, noise, model_output, prediction::epsilon,
                                    grad.empty() ? std::span<T>{} : grad.first(n));
  const double scale = detail::hybrid_vlb_scale(s, lambda);
  if (!grad.empty())
    for (std::size_t k = 0; k < n; ++k) grad[n + k] = static_cast<T>(scale * static_cast<double>(grad[n + k]));
  return {simple, vlb, simple + scale * vlb};
}

// ---------------------------------------------------------------------------------------
// Batches: one timestep per row (training, DDPM Algorithm 1 over a minibatch)
// ---------------------------------------------------------------------------------------

/// @brief The per-row weights and the optional outputs of a batched loss.
///
/// A batched loss returns the weighted mean over the B rows, \f$\frac1B\sum_b w_b L_b\f$, with \f$L_b\f$ the
/// row's per-element loss (the single-sample function's value at the row's timestep): with the
/// importance weights of a timestep sampler this is improved DDPM's `(losses * weights).mean()`.
/// @tparam T the element type of the model output.
template <real_scalar T>
struct batch_loss_io {
  /// w_b, one per row, finite and ≥ 0 (importance weights, min-SNR-γ, …); empty: every w_b = 1.
  std::span<const double> weights = {};
  /// Out, optional (empty to skip): \f$L_b\f$ per row, unweighted (what
  /// @ref loss_second_moment_sampler::update records).
  std::span<double> row_losses = {};
  /// Out, optional (empty to skip): the gradient of the returned mean with respect to the model
  /// output, in the model output's layout (rows × its row width); the block a loss does not read
  /// (L_simple's variance block) is set to 0.
  std::span<T> grad = {};
};

namespace detail {

/// The rows of a batched loss: validates the timesteps, the split of x0 into rows, the weights and
/// the output sizes; returns n, the elements per row.
template <class T, timestep_range R>
std::size_t check_loss_batch(std::string_view where, const noise_schedule& s, const R& timesteps, std::size_t x0_size,
                             std::span<const T> model_output, const batch_loss_io<T>& io) {
  const std::size_t rows = std::ranges::size(timesteps);
  const std::size_t n = row_length(where, x0_size, rows);
  const auto* ts = std::ranges::data(timesteps);
  for (std::size_t b = 0; b < rows; ++b) checked_timestep(where, "timesteps[" + to_text(b) + "]", ts[b], s.size());
  if (!io.weights.empty()) {
    check_same_size(where, "weights", io.weights.size(), "timesteps", rows);
    for (std::size_t b = 0; b < rows; ++b)
      if (!(io.weights[b] >= 0.0 && std::isfinite(io.weights[b])))
        throw_invalid(where, "weights[" + to_text(b) + "] = " + to_text(io.weights[b]) +
                                 " is outside the allowed range [0, inf)");
  }
  if (!io.row_losses.empty()) check_same_size(where, "row_losses", io.row_losses.size(), "timesteps", rows);
  if (!io.grad.empty()) check_same_size(where, "grad", io.grad.size(), "model_output", model_output.size());
  check_no_partial_overlap(where, "grad", io.grad, "model_output", model_output);
  return n;
}

/// w_b (1 when no weights are given).
template <class T>
double row_weight(const batch_loss_io<T>& io, std::size_t b) noexcept {
  return io.weights.empty() ? 1.0 : io.weights[b];
}

}  // namespace detail

/// @brief L_simple (DDPM Eq. 14, Algorithm 1 line 5) of a batch with one timestep per row:
/// returns \f$\frac1B\sum_b w_b L_b\f$ with \f$L_b = \frac1n\|y_b - \hat y_b\|^2\f$ and the target \f$y_b\f$ of
/// `kind` at the row's step \f$t_b\f$ (for v, \f$\sqrt{\bar\alpha_{t_b}}\varepsilon - \sqrt{1-\bar\alpha_{t_b}}x_0\f$ per row).
///
/// Row b is elements [b·n, (b + 1)·n) of x0 and noise and [b·m, (b + 1)·m) of model_output, where m = n
/// or 2n (a variance block after each row's prediction, not read). Each \f$L_b\f$ is, bit for bit, the
/// single-sample @ref simple_loss at \f$t_b\f$; the gradient is \f$\partial/\partial\hat y_b = 2w_b(\hat y_b - y_b)/(Bn)\f$.
/// @param[in] s schedule.
/// @param[in] timesteps one 0-based step per row (B = its size).
/// @param[in] x0 data, B × n. @param[in] noise ε, B × n. @param[in] model_output B × n or B × 2n.
/// @param[in] kind the target (as @ref simple_loss; score refused).
/// @param[in,out] io weights, per-row losses, gradient (@ref batch_loss_io).
/// @throws std::out_of_range naming the first bad timestep; std::invalid_argument for sizes, B not
///         dividing x0.size(), a bad weight, overlapping arrays or a score target; std::domain_error for
///         non-finite inputs (naming the element of the whole batch).
template <timestep_range R, tensor X0, tensor E, tensor M>
double simple_loss(const noise_schedule& s, const R& timesteps, const X0& x0, const E& noise, const M& model_output,
                   prediction kind, const batch_loss_io<tensor_value_t<X0>>& io = {}) {
  static_assert(detail::same_value_v<X0, E> && detail::same_value_v<X0, M>,
                "simple_loss: x0, noise and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  constexpr std::string_view where = "diffusion::simple_loss";
  const auto a = as_span(x0);
  const auto e = as_span(noise);
  const auto o = as_span(model_output);
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  const std::size_t n = detail::check_loss_batch(where, s, timesteps, a.size(), o, io);
  const std::size_t rows = a.size() / n;
  if (o.size() != rows * n && o.size() != 2 * rows * n)
    detail::throw_invalid(where, "model_output.size() = " + detail::to_text(o.size()) + " must be x0.size() = " +
                                     detail::to_text(a.size()) + " or twice it (a variance block after each row)");
  detail::check_no_partial_overlap(where, "grad", io.grad, "x0", a);
  detail::check_no_partial_overlap(where, "grad", io.grad, "noise", e);
  detail::check_simple_kind(where, kind);
  const std::size_t m = o.size() / rows;
  const auto* ts = std::ranges::data(timesteps);
  const double inv_n = 1.0 / static_cast<double>(n), inv_b = 1.0 / static_cast<double>(rows);
  const double value = indexed_sum(rows, [&](std::size_t b) {
    const double w = detail::row_weight(io, b);
    const auto g = io.grad.empty() ? std::span<T>{} : io.grad.subspan(b * m, m);
    if (m == 2 * n && !g.empty())
      for (T& v : g.subspan(n)) v = T(0);
    const double l = detail::simple_sum(s[static_cast<std::size_t>(ts[b])], kind, a.subspan(b * n, n), e.subspan(b * n, n),
                                        o.subspan(b * m, n), g.empty() ? g : g.first(n), w * inv_n * inv_b) *
                     inv_n;
    if (!io.row_losses.empty()) io.row_losses[b] = l;
    return w * l;
  }) * inv_b;
  if (!std::isfinite(value)) {
    if (kind == prediction::epsilon) detail::throw_non_finite(where, value, std::pair{"noise", e}, std::pair{"model_output", o});
    if (kind == prediction::sample) detail::throw_non_finite(where, value, std::pair{"x0", a}, std::pair{"model_output", o});
    detail::throw_non_finite(where, value, std::pair{"x0", a}, std::pair{"noise", e}, std::pair{"model_output", o});
  }
  return value;
}

/// @brief One VLB term per row (DDPM Eq. 5; improved DDPM `_vb_terms_bpd` on a batch): returns
/// \f$\frac1B\sum_b w_b L_b\f$ with \f$L_b\f$ the @ref vlb_term of row b at its step \f$t_b\f$ (L_0 where \f$t_b = 0\f$).
///
/// model_output is B rows of m = n (fixed variance) or 2n (the prediction, then the variance
/// output) elements; the gradient has that layout, \f$w_b/B\f$ times the single-row gradient.
/// @param[in] s schedule; @param[in] timesteps one 0-based step per row; @param[in] x0 B × n;
/// @param[in] xt B × n; @param[in] model_output B × m; @param[in] kind what the model predicts;
/// @param[in] opt variance, clipping and decoder; @param[in,out] io weights, per-row losses, gradient.
/// @throws as @ref vlb_term, and std::out_of_range for a bad timestep, std::invalid_argument for B not
///         dividing x0.size() or a bad weight.
template <timestep_range R, tensor X0, tensor XT, tensor M>
double vlb_term(const noise_schedule& s, const R& timesteps, const X0& x0, const XT& xt, const M& model_output,
                prediction kind, const vlb_options& opt, const batch_loss_io<tensor_value_t<X0>>& io = {}) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, M>,
                "vlb_term: x0, xt and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  constexpr std::string_view where = "diffusion::vlb_term";
  const auto a = as_span(x0);
  const auto xs = as_span(xt);
  const auto o = as_span(model_output);
  detail::check_same_size(where, "x0", a.size(), "xt", xs.size());
  const std::size_t n = detail::check_loss_batch(where, s, timesteps, a.size(), o, io);
  const std::size_t rows = a.size() / n, m = learns_variance(opt.variance) ? 2 * n : n;
  if (o.size() != rows * m)
    detail::throw_invalid(where, "model_output.size() = " + detail::to_text(o.size()) + " must be " + detail::to_text(rows * m) +
                                     (m == n ? " (x0.size())" : " (2 x0.size(): prediction and variance blocks per row)"));
  detail::check_no_partial_overlap(where, "grad", io.grad, "x0", a);
  detail::check_no_partial_overlap(where, "grad", io.grad, "xt", xs);
  const auto* ts = std::ranges::data(timesteps);
  for (std::size_t b = 0; b < rows; ++b) {
    if (m == 2 * n) detail::check_variance_output(where, opt.variance, o.subspan(b * m + n, n));
    if (ts[b] == 0) detail::check_decoder_input(where, opt, a.subspan(b * n, n), b * n);
  }
  const double inv_n = 1.0 / static_cast<double>(n), inv_b = 1.0 / static_cast<double>(rows);
  const double value = indexed_sum(rows, [&](std::size_t b) {
    const auto t = static_cast<std::size_t>(ts[b]);
    const double scale = detail::row_weight(io, b) * inv_n * inv_b;
    const double l = detail::vlb_sum(detail::reverse_coefficients(s, t, kind, opt), t, opt, a.subspan(b * n, n),
                                     xs.subspan(b * n, n), o.subspan(b * m, m),
                                     io.grad.empty() ? std::span<T>{} : io.grad.subspan(b * m, m), scale, scale) *
                     inv_n;
    if (!io.row_losses.empty()) io.row_losses[b] = l;
    return detail::row_weight(io, b) * l;
  }) * inv_b;
  if (!std::isfinite(value))
    detail::throw_non_finite(where, value, std::pair{"x0", a}, std::pair{"xt", xs}, std::pair{"model_output", o});
  return value;
}

/// @brief Options of the batched @ref hybrid_loss.
struct hybrid_options {
  variance_type variance = variance_type::learned_range;  ///< `learned` or `learned_range`.
  double lambda = 0.001;                                  ///< λ ≥ 0 (improved DDPM: 0.001).
};

/// @brief improved DDPM's hybrid loss (Nichol & Dhariwal 2021, Eq. 16) of a batch with one timestep per
/// row: each part is \f$\frac1B\sum_b w_b(\cdot)_b\f$ of the single-sample @ref hybrid_loss parts at \f$t_b\f$, so
/// total = simple + λ·T·to_bits(vlb) as there; `io.row_losses` receives each row's total (improved
/// DDPM updates its `LossSecondMomentResampler` with it).
///
/// model_output is B rows of 2n (the ε prediction, then the variance output); the gradient has that
/// layout: \f$w_b/B\f$ times the row's, L_simple's on the prediction block (the VLB sees a frozen mean) and
/// λT/ln 2 times the VLB's on the variance block.
/// @param[in] s schedule; @param[in] timesteps one 0-based step per row; @param[in] x0, xt, noise B × n;
/// @param[in] model_output B × 2n; @param[in] opt variance type and λ; @param[in,out] io weights, per-row
/// totals, gradient.
/// @throws as @ref vlb_term and @ref simple_loss on a batch; std::invalid_argument for a fixed variance
///         or λ outside [0, ∞).
template <timestep_range R, tensor X0, tensor XT, tensor E, tensor M>
hybrid_loss_value hybrid_loss(const noise_schedule& s, const R& timesteps, const X0& x0, const XT& xt, const E& noise,
                              const M& model_output, const hybrid_options& opt = {},
                              const batch_loss_io<tensor_value_t<X0>>& io = {}) {
  static_assert(detail::same_value_v<X0, XT> && detail::same_value_v<X0, E> && detail::same_value_v<X0, M>,
                "hybrid_loss: x0, xt, noise and model_output must have the same element type");
  using T = tensor_value_t<X0>;
  constexpr std::string_view where = "diffusion::hybrid_loss";
  detail::check_hybrid(where, opt.variance, opt.lambda);
  const auto a = as_span(x0);
  const auto xs = as_span(xt);
  const auto e = as_span(noise);
  const auto o = as_span(model_output);
  detail::check_same_size(where, "x0", a.size(), "xt", xs.size());
  detail::check_same_size(where, "x0", a.size(), "noise", e.size());
  const std::size_t n = detail::check_loss_batch(where, s, timesteps, a.size(), o, io);
  const std::size_t rows = a.size() / n;
  if (o.size() != 2 * a.size())
    detail::throw_invalid(where, "model_output.size() = " + detail::to_text(o.size()) + " must be " +
                                     detail::to_text(2 * a.size()) + " (2 x0.size(): prediction and variance blocks per row)");
  detail::check_no_partial_overlap(where, "grad", io.grad, "x0", a);
  detail::check_no_partial_overlap(where, "grad", io.grad, "xt", xs);
  detail::check_no_partial_overlap(where, "grad", io.grad, "noise", e);
  const auto* ts = std::ranges::data(timesteps);
  const vlb_options vo{.variance = opt.variance};
  for (std::size_t b = 0; b < rows; ++b) {
    detail::check_variance_output(where, opt.variance, o.subspan(b * 2 * n + n, n));
    if (ts[b] == 0) detail::check_decoder_input(where, vo, a.subspan(b * n, n), b * n);
  }
  const double k = detail::hybrid_vlb_scale(s, opt.lambda);
  const double inv_n = 1.0 / static_cast<double>(n), inv_b = 1.0 / static_cast<double>(rows);
  // Two compensated sums over the rows, in row order (indexed_sum calls the term function once per
  // row, in order): the simple parts through it, the VLB parts through TwoSum beside it.
  detail::partial_sum vlb_acc;
  const double simple = indexed_sum(rows, [&](std::size_t b) {
    const auto t = static_cast<std::size_t>(ts[b]);
    const double w = detail::row_weight(io, b), scale = w * inv_n * inv_b;
    const auto g = io.grad.empty() ? std::span<T>{} : io.grad.subspan(b * 2 * n, 2 * n);
    // The VLB's gradient first (its prediction block is then overwritten by L_simple's: the stop-gradient).
    const double v = detail::vlb_sum(detail::reverse_coefficients(s, t, prediction::epsilon, vo), t, vo,
                                     a.subspan(b * n, n), xs.subspan(b * n, n), o.subspan(b * 2 * n, 2 * n), g, scale,
                                     k * scale) * inv_n;
    const double l = detail::simple_sum(s[t], prediction::epsilon, a.subspan(b * n, n), e.subspan(b * n, n),
                                        o.subspan(b * 2 * n, n), g.empty() ? g : g.first(n), scale) * inv_n;
    if (!io.row_losses.empty()) io.row_losses[b] = l + k * v;
    vlb_acc = detail::combine(vlb_acc, detail::partial_sum{w * v, 0.0});
    return w * l;
  }) * inv_b;
  const double vlb = detail::value_of(vlb_acc) * inv_b;
  const hybrid_loss_value r{simple, vlb, simple + k * vlb};
  if (!std::isfinite(r.total))
    detail::throw_non_finite(where, r.total, std::pair{"x0", a}, std::pair{"xt", xs}, std::pair{"noise", e},
                             std::pair{"model_output", o});
  return r;
}

}  // namespace diffusion

/// @}
