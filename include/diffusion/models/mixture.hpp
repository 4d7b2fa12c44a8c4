/// @file
/// @brief Exact denoisers of two richer data models: a diagonal Gaussian mixture and the
/// empirical distribution of a finite data set.
///
/// Both follow @ref diffusion::gaussian_data (analytic.hpp). The model is a value that knows its data distribution and,
/// as a @ref denoiser, returns the exact posterior expectation of the chosen kind (ε, x₀, v or
/// score) from each row's σ. With \f$c = \sqrt{\bar\alpha} = 1/\sqrt{1+\sigma^2}\f$ and
/// \f$d = \sqrt{1-\bar\alpha} = \sigma/\sqrt{1+\sigma^2}\f$ (formed from σ without cancellation, +∞
/// included), \f$x_t = c\,x_0 + d\,\varepsilon\f$ and every output is linear in the posterior:
/// \f[ E[\varepsilon \mid x_t] = \frac{x_t - c\,E[x_0 \mid x_t]}{d},\qquad
///     v = c\,E[\varepsilon \mid x_t] - d\,E[x_0 \mid x_t],\qquad
///     \nabla\log q_t(x_t) = -\frac{E[\varepsilon \mid x_t]}{d} \f]
/// (the last is Tweedie's formula). The models use σ only; the timesteps of the input are ignored.
///
/// Two noise levels are special. At σ = +∞ (zero terminal SNR: c = 0, d = 1) x_t is independent
/// of x₀, so \f$E[x_0|x_t] = E[x_0]\f$, \f$E[\varepsilon|x_t] = x_t\f$ and the score is \f$-x_t\f$. At σ = 0 (c = 1,
/// d = 0) x_t = x₀: the x₀ prediction is x_t itself, ε and v are 0 (\f$E[\varepsilon \mid x_0] = E[\varepsilon]\f$),
/// and the score is the data's own score, which raises `std::domain_error` when the data has no
/// density (a point mass, an empirical distribution).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <memory>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/linear.hpp"
#include "../kernels/reductions.hpp"
#include "../process/parameterization.hpp"
#include "denoiser.hpp"

/// @defgroup mixture Exact mixture and empirical denoisers
/// @brief Gaussian-mixture data and the empirical distribution of a data set: exact posteriors,
/// denoisers of every prediction kind, scores (Tweedie's formula) and noisy log-densities.
/// @{

namespace diffusion {

namespace detail::mixture_impl {

/// The shared noise level (denoiser.hpp).
using level = diffusion::noise_level;

/// σ ∈ [0, +∞]; NaN and negative values are refused.
inline void check_sigma(std::string_view where, double sigma) {
  if (!(sigma >= 0.0))
    throw_invalid(where, "sigma = " + to_text(sigma) + " is outside the allowed range [0, inf]");
}

/// In place: ℓ_j → exp(ℓ_j − max ℓ) / Σ_k exp(ℓ_k − max ℓ); returns log Σ_j exp(ℓ_j).
/// If no ℓ_j is finite (every term underflowed to −∞), or one is NaN, everything becomes NaN.
inline double softmax_in_place(std::span<double> l) {
  double m = -std::numeric_limits<double>::infinity();
  for (double v : l)
    if (!(v <= m)) m = v;  // a NaN propagates into m
  if (!std::isfinite(m)) {
    std::fill(l.begin(), l.end(), std::numeric_limits<double>::quiet_NaN());
    return std::numeric_limits<double>::quiet_NaN();
  }
  double sum = 0.0;
  for (double& v : l) sum += (v = std::exp(v - m));  // the largest term is exactly 1, so sum ∈ [1, l.size()]
  for (double& v : l) v /= sum;
  return m + std::log(sum);
}

/// The output of kind `what` from x_t and E[x₀|x_t] at a level with σ > 0: the conversion
/// x₀ → `what` of the one table (process/parameterization.hpp).
inline double from_x0(prediction what, const level& l, double xt, double x0) {
  const affine_coefficients k = conversion_coefficients(l, prediction::sample, what);
  return k.a * xt + k.b * x0;
}

}  // namespace detail::mixture_impl

/// @brief Data from a mixture of diagonal Gaussians,
/// \f$x_0 \sim \sum_j w_j\,\mathcal N(\mu_j, \operatorname{diag}(s_j^2))\f$ in dimension n, and its exact denoiser.
///
/// Given component j, \f$x_t \sim \mathcal N(c\mu_j, \operatorname{diag}(c^2 s_j^2 + d^2))\f$, so the noisy marginal
/// is again a mixture and the posterior is a mixture of the per-component Gaussian posteriors of
/// @ref gaussian_data, weighted by the responsibilities
/// \f[ r_j(x_t) = \frac{w_j \prod_k \mathcal N(x_{t,k};\, c\mu_{jk},\, c^2 s_{jk}^2 + d^2)}{\sum_i w_i \prod_k \mathcal N(x_{t,k};\, c\mu_{ik},\, c^2 s_{ik}^2 + d^2)}, \f]
/// \f[ E[x_0 \mid x_t] = \sum_j r_j \Big(\mu_j + \frac{c\,s_j^2}{c^2 s_j^2 + d^2}(x_t - c\mu_j)\Big),\qquad
///     E[\varepsilon \mid x_t] = \sum_j r_j\,\frac{d\,(x_t - c\mu_j)}{c^2 s_j^2 + d^2}, \f]
/// \f[ \nabla_{x_t}\log q_t(x_t) = -\frac{E[\varepsilon \mid x_t]}{d} = -\sum_j r_j\,\frac{x_t - c\mu_j}{c^2 s_j^2 + d^2}
///     \quad\text{(Tweedie's formula).} \f]
/// Each component term is evaluated in this per-component form, with \f$sd = \sqrt{c^2s^2 + d^2}\f$, the
/// standardized residual \f$z = (x_t - c\mu)/sd\f$, \f$E_j[\varepsilon] = (d/sd)\,z\f$,
/// \f$E_j[x_0] = \mu + (cs/sd)(s/sd)(x_t - c\mu)\f$ and score \f$-z/sd\f$, so that nothing divides by d (the
/// score is finite at σ = 0 for data with a density) and a point mass gives exactly μ. The
/// responsibilities are a log-sum-exp of \f$\ell_j = \log w_j - \sum_k \log sd_{jk} - \tfrac12\sum_k z_{jk}^2\f$,
/// stable however far x_t is from every component; when even \f$\sum_k z_{jk}^2\f$ overflows for every
/// component (x_t beyond ~1e154 standard deviations of all of them, as for point masses at
/// σ < 1e-154) the posterior is the component with the smallest \f$\sum_k z_{jk}^2\f$, compared through
/// its logarithm. sd is formed with `hypot` when σ < 2^-500 or s > 2^500, so a point mass stays
/// exact down to the smallest subnormal σ.
///
/// At σ = 0 (x_t = x₀): the x₀ prediction is x_t, ε and v are 0, and the score is the data
/// score \f$-\sum_j r_j (x - \mu_j)/s_j^2\f$, which raises `std::domain_error` if any \f$s_{jk} = 0\f$ (the data
/// then has no density), as do @ref responsibilities() and @ref log_density() there.
///
/// Accuracy (tested): with one component it agrees with @ref gaussian_data to 16u relative to
/// the size of the terms (observed ≤ 4.7u) for σ from 1e-3 to 1e3 and +∞; with two components
/// E[x₀|x_t], E[ε|x_t] and log q_t agree with a long-double quadrature in 1-D to
/// \f$32u(1 + \max_j|\ell_j|)\f$ times the size of the component terms (observed ≤ 7 % of that);
/// the score agrees with a central difference of log_density() to 1e-6 relative.
///
/// Cost per row: O(J·n) with J components (one `log` and one `sqrt` per component and
/// dimension); a call allocates J + n doubles of scratch. All members are const and keep no
/// state between calls, so concurrent calls are safe.
///
/// @code
/// const diffusion::gaussian_mixture_data data({0.3, 0.7}, {{-1.0}, {1.5}}, {{0.4}, {0.8}});
/// std::vector<double> x0(1);
/// data.posterior_mean_x0(0.5, std::vector<double>{0.2}, x0);  // E[x0 | x_t = 0.2] at σ = 0.5
/// @endcode
class gaussian_mixture_data {
 public:
  /// The model reads σ, not timesteps (@ref diffusion::sigma_conditioned "sigma_conditioned"): it needs no schedule in σ-space.
  static constexpr bool conditions_on_sigma = true;
  /// @param[in] weights \f$w_j > 0\f$, finite, one per component; normalized to sum 1 here.
  /// @param[in] means \f$\mu_j\f$: one vector per component, all of the same size n ≥ 1, finite.
  /// @param[in] stddevs \f$s_j \ge 0\f$: one vector per component, each of size n, finite (0: a point mass in that dimension).
  /// @param[in] kind what the denoiser outputs (ε by default).
  /// @throws std::invalid_argument for empty or mismatched vectors, or a bad value (naming it and its indices).
  gaussian_mixture_data(const std::vector<double>& weights, const std::vector<std::vector<double>>& means,
                        const std::vector<std::vector<double>>& stddevs, prediction kind = prediction::epsilon)
      : kind_(kind) {
    constexpr std::string_view where = "diffusion::gaussian_mixture_data";
    using detail::to_text;
    if (weights.empty()) detail::throw_invalid(where, "weights is empty");
    detail::check_same_size(where, "means", means.size(), "weights", weights.size());
    detail::check_same_size(where, "stddevs", stddevs.size(), "weights", weights.size());
    if (means[0].empty()) detail::throw_invalid(where, "means[0] is empty");
    dim_ = means[0].size();
    const std::size_t J = weights.size();
    double wmax = 0.0;
    for (std::size_t j = 0; j < J; ++j) {
      detail::check_positive(where, "weights[" + to_text(j) + "]", weights[j]);
      wmax = std::max(wmax, weights[j]);
    }
    // log(w_j / Σw) computed as log(w_j/wmax) − log(Σ w/wmax): no overflow for weights near 1e308.
    double scaled_sum = 0.0;
    for (double w : weights) scaled_sum += w / wmax;
    log_weight_.resize(J);
    for (std::size_t j = 0; j < J; ++j) log_weight_[j] = std::log(weights[j] / wmax) - std::log(scaled_sum);
    mean_.reserve(J * dim_);
    std_.reserve(J * dim_);
    for (std::size_t j = 0; j < J; ++j) {
      const std::string mj = "means[" + to_text(j) + "]", sj = "stddevs[" + to_text(j) + "]";
      detail::check_same_size(where, mj, means[j].size(), "means[0]", dim_);
      detail::check_same_size(where, sj, stddevs[j].size(), "means[0]", dim_);
      for (std::size_t k = 0; k < dim_; ++k) {
        const double m = means[j][k], s = stddevs[j][k];
        detail::check_finite(where, mj + "[" + to_text(k) + "]", m);
        if (!(s >= 0.0 && std::isfinite(s)))
          detail::throw_invalid(where, sj + "[" + to_text(k) + "] = " + to_text(s) + " is outside the allowed range [0, inf)");
        mean_.push_back(m);
        std_.push_back(s);
        max_std_ = std::max(max_std_, s);
        has_point_mass_ = has_point_mass_ || s == 0.0;
      }
    }
  }

  /// Number of dimensions n.
  [[nodiscard]] std::size_t dim() const noexcept { return dim_; }
  /// Number of components J.
  [[nodiscard]] std::size_t components() const noexcept { return log_weight_.size(); }
  /// What the denoiser outputs.
  [[nodiscard]] prediction predicts() const noexcept { return kind_; }
  /// The normalized weight \f$w_j\f$. @throws std::out_of_range if j ≥ components().
  [[nodiscard]] double weight(std::size_t j) const {
    detail::check_index("diffusion::gaussian_mixture_data::weight", "j", j, components());
    return std::exp(log_weight_[j]);
  }
  /// \f$\mu_j\f$ (n values). @throws std::out_of_range if j ≥ components().
  [[nodiscard]] std::span<const double> mean(std::size_t j) const {
    detail::check_index("diffusion::gaussian_mixture_data::mean", "j", j, components());
    return {mean_.data() + j * dim_, dim_};
  }
  /// \f$s_j\f$ (n values). @throws std::out_of_range if j ≥ components().
  [[nodiscard]] std::span<const double> stddev(std::size_t j) const {
    detail::check_index("diffusion::gaussian_mixture_data::stddev", "j", j, components());
    return {std_.data() + j * dim_, dim_};
  }
  /// True if some \f$s_{jk} = 0\f$: the data then has no density at σ = 0.
  [[nodiscard]] bool has_point_mass() const noexcept { return has_point_mass_; }

  /// @brief The responsibilities \f$r_j(x) = P(\text{component } j \mid x_t = x)\f$ at noise level σ.
  /// @param[in] sigma σ ∈ [0, +∞]. @param[in] x one row, dim() values. @param[out] out components() values, summing to 1.
  /// @throws std::invalid_argument for a bad σ or size; std::domain_error at σ = 0 with a point mass.
  void responsibilities(double sigma, std::span<const double> x, std::span<double> out) const {
    constexpr std::string_view where = "diffusion::gaussian_mixture_data::responsibilities";
    check_call(where, sigma, x.size());
    detail::check_same_size(where, "out", out.size(), "weights", components());
    if (sigma == 0.0 && has_point_mass_) throw_no_density(where);
    posterior(level::preserving(sigma), x.data(), out);
  }

  /// @brief \f$\log q_t(x)\f$, the log-density of the noisy marginal \f$\sum_j w_j\,\mathcal N(x;\, c\mu_j,\, c^2s_j^2 + d^2)\f$
  /// at noise level σ (at σ = 0 the data density, at σ = +∞ the standard normal), in nats.
  /// @throws std::invalid_argument for a bad σ or size; std::domain_error at σ = 0 with a point mass.
  [[nodiscard]] double log_density(double sigma, std::span<const double> x) const {
    constexpr std::string_view where = "diffusion::gaussian_mixture_data::log_density";
    check_call(where, sigma, x.size());
    if (sigma == 0.0 && has_point_mass_) throw_no_density(where);
    std::vector<double> rho(components());
    const double half_log_2pi = 0.5 * std::log(2.0 * std::numbers::pi);
    return posterior(level::preserving(sigma), x.data(), rho) - static_cast<double>(dim_) * half_log_2pi;
  }

  /// @brief \f$E[x_0 \mid x_t = x]\f$ at noise level σ (x itself at σ = 0).
  /// @param[in] sigma σ ∈ [0, +∞]. @param[in] x one row, dim() values. @param[out] out dim() values.
  /// @throws std::invalid_argument for a bad σ or size.
  void posterior_mean_x0(double sigma, std::span<const double> x, std::span<double> out) const {
    evaluate("diffusion::gaussian_mixture_data::posterior_mean_x0", prediction::sample, sigma, x, out);
  }
  /// @brief \f$E[\varepsilon \mid x_t = x]\f$ at noise level σ (0 at σ = 0).
  /// @throws std::invalid_argument for a bad σ or size.
  void posterior_mean_eps(double sigma, std::span<const double> x, std::span<double> out) const {
    evaluate("diffusion::gaussian_mixture_data::posterior_mean_eps", prediction::epsilon, sigma, x, out);
  }
  /// @brief The exact score \f$\nabla_x \log q_t(x) = -E[\varepsilon \mid x_t = x]/d\f$ (Tweedie's formula).
  /// @throws std::invalid_argument for a bad σ or size; std::domain_error at σ = 0 with a point mass.
  void score(double sigma, std::span<const double> x, std::span<double> out) const {
    evaluate("diffusion::gaussian_mixture_data::score", prediction::score, sigma, x, out);
  }

  /// @brief The exact prediction of the chosen kind for every row (one σ per row), computed in
  /// double and rounded once to T.
  /// @pre `in.row_size() == dim()`, `out.size() == in.x.size()`, every σ ∈ [0, +∞] (asserted).
  /// @throws std::domain_error for a score at σ = 0 when the data has a point mass (before writing anything).
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) const {
    const std::size_t n = in.row_size();
    DIFFUSION_ASSERT(n == dim() && out.size() == in.x.size() && in.sigma.size() == in.rows());
    if (kind_ == prediction::score && has_point_mass_)
      for (double s : in.sigma)
        if (s == 0.0) throw_no_density("diffusion::gaussian_mixture_data");
    std::vector<double> scratch(components() + n);
    for (std::size_t r = 0; r < in.rows(); ++r) {
      DIFFUSION_ASSERT(in.sigma[r] >= 0.0);
      predict_row(kind_, in.sigma[r], in.x.data() + r * n, out.data() + r * n, scratch);
    }
  }

 private:
  using level = detail::mixture_impl::level;

  void check_call(std::string_view where, double sigma, std::size_t xsize) const {
    detail::mixture_impl::check_sigma(where, sigma);
    detail::check_same_size(where, "x", xsize, "mean(0)", dim_);
  }
  [[noreturn]] static void throw_no_density(std::string_view where) {
    detail::throw_domain(where, "sigma = 0 and a standard deviation is 0: the data has no density");
  }
  void evaluate(std::string_view where, prediction what, double sigma, std::span<const double> x,
                std::span<double> out) const {
    check_call(where, sigma, x.size());
    detail::check_same_size(where, "out", out.size(), "x", x.size());
    if (what == prediction::score && sigma == 0.0 && has_point_mass_) throw_no_density(where);
    std::vector<double> scratch(components() + dim_);
    predict_row(what, sigma, x.data(), out.data(), scratch);
  }

  // True when sqrt(c² s² + d²) can be formed from squares without underflow or overflow.
  [[nodiscard]] bool plain(const level& l) const noexcept { return l.sigma >= 0x1p-500 && max_std_ <= 0x1p500; }
  // The standard deviation sqrt(c² s² + d²) of x_t given the component, in one dimension.
  static double marginal_sd(const level& l, double s, bool squares) {
    return squares ? std::sqrt(l.alpha_sq * (s * s) + l.sigma_sq) : std::hypot(l.alpha * s, l.sigma);
  }

  // ℓ_j = log w_j + Σ_k log N(x_k; c μ_jk, c² s_jk² + d²) + (n/2) log 2π, for every component.
  template <class T>
  void log_joint(const level& l, const T* x, double* out) const {
    const bool squares = plain(l);
    for (std::size_t j = 0; j < components(); ++j) {
      const double* mu = mean_.data() + j * dim_;
      const double* s = std_.data() + j * dim_;
      double log_sd = 0.0, z2 = 0.0;
      for (std::size_t k = 0; k < dim_; ++k) {
        const double sd = marginal_sd(l, s[k], squares);
        const double z = (static_cast<double>(x[k]) - l.alpha * mu[k]) / sd;
        log_sd += std::log(sd);
        z2 += z * z;
      }
      out[j] = log_weight_[j] - log_sd - 0.5 * z2;
    }
  }

  // The responsibilities into rho; returns log Σ_j exp(ℓ_j) (−∞ when every ℓ_j underflowed).
  template <class T>
  double posterior(const level& l, const T* x, std::span<double> rho) const {
    log_joint(l, x, rho.data());
    if (std::all_of(rho.begin(), rho.end(), [](double v) { return v == -std::numeric_limits<double>::infinity(); })) {
      nearest_components(l, x, rho);
      return -std::numeric_limits<double>::infinity();
    }
    return detail::mixture_impl::softmax_in_place(rho);
  }

  // When every Σ_k z_jk² overflows (x_t beyond ~1e154 standard deviations of every component,
  // e.g. point masses at σ < 1e-154), the responsibilities are 1 for the component(s) with the
  // smallest Σ_k z_jk², compared through its logarithm (finite however large z is), and 0 for
  // the others: their exact values are below e^-(1e308). Ties share by w_j / Π_k sd_jk.
  template <class T>
  void nearest_components(const level& l, const T* x, std::span<double> rho) const {
    constexpr double minus_inf = -std::numeric_limits<double>::infinity();
    const bool squares = plain(l);
    double best = std::numeric_limits<double>::infinity();
    std::vector<double> log_q(components());
    for (std::size_t j = 0; j < components(); ++j) {
      const double* mu = mean_.data() + j * dim_;
      const double* s = std_.data() + j * dim_;
      double m = minus_inf, sum = 0.0, log_sd = 0.0;  // log Σ_k exp(a_k) online, a_k = 2 log|z_jk|
      for (std::size_t k = 0; k < dim_; ++k) {
        const double sd = marginal_sd(l, s[k], squares);
        log_sd += std::log(sd);
        const double a = 2.0 * (std::log(std::abs(static_cast<double>(x[k]) - l.alpha * mu[k])) - std::log(sd));
        if (a == minus_inf) continue;
        if (a > m) {
          sum = sum * std::exp(m - a) + 1.0;
          m = a;
        } else {
          sum += std::exp(a - m);
        }
      }
      log_q[j] = m + std::log(sum);
      rho[j] = log_weight_[j] - log_sd;
      best = std::min(best, log_q[j]);
    }
    for (std::size_t j = 0; j < components(); ++j)
      if (log_q[j] != best) rho[j] = minus_inf;
    detail::mixture_impl::softmax_in_place(rho);
  }

  // One row of output of kind `what`; scratch holds J + n doubles.
  template <class T, class U>
  void predict_row(prediction what, double sigma, const T* x, U* out, std::span<double> scratch) const {
    const std::size_t J = components();
    if (sigma == 0.0 && what != prediction::score) {
      // x_t = x_0: the posterior of x_0 is the point mass at x_t, and E[ε | x_t] = E[ε] = 0.
      const double a = target_coefficients(level::preserving(0.0), what).a;  // the x₀ part of the kind
      for (std::size_t k = 0; k < dim_; ++k) out[k] = static_cast<U>(a * static_cast<double>(x[k]));
      return;
    }
    const level l = level::preserving(sigma);
    const std::span<double> rho = scratch.first(J);
    double* acc = scratch.data() + J;
    posterior(l, x, rho);
    std::fill(acc, acc + dim_, 0.0);
    const bool squares = plain(l);
    const affine_coefficients target =
        what == prediction::score ? affine_coefficients{0.0, 0.0} : target_coefficients(l, what);
    for (std::size_t j = 0; j < J; ++j) {
      if (rho[j] == 0.0) continue;  // an underflowed responsibility; a NaN one propagates
      const double* mu = mean_.data() + j * dim_;
      const double* s = std_.data() + j * dim_;
      for (std::size_t k = 0; k < dim_; ++k) {
        const double sd = marginal_sd(l, s[k], squares);
        const double z = (static_cast<double>(x[k]) - l.alpha * mu[k]) / sd;
        // Per component: E[ε] = (d/sd) z, E[x0] = μ + (c s/sd)(s/sd) r (finite, and μ for s = 0,
        // even where z overflows), score = −z/sd.
        const double x0 = mu[k] + (l.alpha * s[k] / sd) * (s[k] / sd) * (static_cast<double>(x[k]) - l.alpha * mu[k]);
        // The score per component (finite at σ = 0), the other kinds by their definitions
        // a·x₀ + b·ε (process/parameterization.hpp).
        // (A term with a zero coefficient is skipped: ε may overflow where only x₀ is asked for.)
        const double v = what == prediction::score ? -z / sd
                                                   : (target.a != 0.0 ? target.a * x0 : 0.0) +
                                                         (target.b != 0.0 ? target.b * ((l.sigma / sd) * z) : 0.0);
        acc[k] += rho[j] * v;
      }
    }
    for (std::size_t k = 0; k < dim_; ++k) out[k] = static_cast<U>(acc[k]);
  }

  std::size_t dim_ = 0;
  std::vector<double> log_weight_;  // log of the normalized weights, J
  std::vector<double> mean_, std_;  // J × n, row j = component j
  double max_std_ = 0.0;
  bool has_point_mass_ = false;
  prediction kind_;
};

/// @brief The empirical distribution of N stored examples, \f$x_0 \sim \frac1N\sum_i \delta_{x_i}\f$, and its
/// exact denoiser: the optimal denoiser of a finite training set (Karras et al. 2022), which a
/// network trained to convergence on that set would reproduce.
///
/// Given example i, \f$x_t \sim \mathcal N(c\,x_i, d^2 I)\f$, so
/// \f[ w_i(x_t) = \operatorname{softmax}_i\Big(-\frac{\lVert x_t - c\,x_i\rVert^2}{2d^2}\Big),\qquad
///     E[x_0 \mid x_t] = \sum_i w_i(x_t)\,x_i, \f]
/// and ε, v and the score follow from \f$E[x_0|x_t]\f$ by the formulas of the file comment. This is
/// @ref gaussian_mixture_data with equal weights and zero standard deviations, computed for large
/// N, n.
///
/// Algorithm, per block of up to 16 rows:
/// 1. the squared distances \f$D_i = \lVert x_t\rVert^2 - 2c\,x_i\cdot x_t + c^2\lVert x_i\rVert^2\f$ from the precomputed
///    \f$\lVert x_i\rVert^2\f$ (compensated, @ref diffusion::sum_of_squares "sum_of_squares") and the products
///    \f$x_i\cdot x_t\f$ of the block's rows with every stored example (kernels::row_dots: each example read once
///    per block, SIMD with several accumulators; any summation order has the standard error bound
///    \f$\gamma_n\lVert x_t\rVert\lVert x_i\rVert\f$, \f$\gamma_n = nu/(1-nu)\f$);
/// 2. the window and the cancellation repair: the expansion has an error of up to
///    \f$\gamma(\lVert x_t\rVert + c\lVert x_i\rVert)^2\f$, \f$\gamma = (n+8)u\f$, i.e. a relative error \f$\kappa_i\gamma\f$ with
///    \f$\kappa_i = (\lVert x_t\rVert + c\lVert x_i\rVert)^2/D_i\f$: large when x_t is close to \f$c\,x_i\f$ (σ → 0), where
///    \f$D_i/(2d^2)\f$ then multiplies it into the exponent. The window holds the examples whose weight
///    may exceed \f$e^{-(\log N + 40)}\f$ times the largest, judged with those error bounds; a window
///    member with \f$\kappa_i > 16\f$ has \f$D_i\f$ recomputed directly as \f$\sum_k (x_{t,k} - c\,x_{ik})^2\f$. On
///    image-like data that is a handful of near neighbours at small σ and nothing at larger σ; at
///    worst (data in a cluster tighter than its offset from the origin, small σ) one more pass over
///    the data per row;
/// 3. the weights \f$\exp(-(D_i - D_{\min})/(2d^2))\f$ over the window, 0 outside it, which moves the
///    result by less than \f$e^{-40} \approx 4\cdot10^{-18}\f$ relative;
/// 4. the weighted sum \f$\sum_i w_i x_i\f$ (kernels::add_weighted_rows, the examples added in increasing
///    order) over the window's rows when it holds at most N/8 examples, else for all such rows of
///    the block in one pass over the union of their windows, then the division by \f$\sum_i w_i\f$.
///
/// Accuracy: every exponent that matters is within \f$16(n+8)u\,D_i/(2d^2)\f$ of its exact value (when
/// recomputed, within the direct evaluation's \f$((n+2)u + 2u\sqrt{\kappa_i})\,D_i/(2d^2)\f$, the effect of
/// rounding x_t itself), so E[x₀|x_t] is within twice that times the weighted spread
/// \f$\sum_i w_i\lVert x_i - E[x_0|x_t]\rVert_\infty\f$, plus the rounding of step 4: at most
/// \f$(\gamma_{J+1} + u)\max|x|\f$ for a window of J examples, a few u in practice. The tests check
/// this budget, with 8u max|x| for step 4, against a long-double evaluation (observed ≤ 30 % of
/// it), including points offset by 1e4 with neighbours 1e-3 apart, where the expansion alone
/// errs by ~1 in the exponents. Near an example as σ → 0 (down to subnormal σ) the output is
/// that example exactly; at σ = +∞ the weights are uniform and the output is the precomputed
/// mean.
///
/// Storage is double (N·n·8 bytes, 376 MB for 60000 × 784). Float storage with the products
/// accumulated in float would have an exponent error of up to
/// \f$(n+8)2^{-24}(\lVert x_t\rVert + c\lVert x_i\rVert)^2/(2d^2)\f$, about 0.04/d² for 784 pixels in [−1, 1]: weights
/// wrong by percents at σ ≈ 1, and the repair would have to recompute almost every example.
/// Float input is copied exactly into double.
///
/// Cost per call: the products read the data once per block of 16 rows; the weighted sum reads
/// it again only for rows whose window exceeds N/8 (σ ≳ 1 on image-like data), once for all such
/// rows of a block. Each call allocates its scratch: 16·N doubles for the products, up to 16·N
/// more (and N indices) for the weighted sums of such rows, the windows (at most N indices and
/// weights per row), and 2·rows·n. All members are const and keep no state between calls, so
/// concurrent calls are safe.
///
/// @code
/// const diffusion::empirical_data train(images, 784);  // 60000 × 784 floats, copied into double
/// std::vector<double> x0(784);
/// train.posterior_mean_x0(0.1, noisy_image, x0);       // the training-set posterior mean at σ = 0.1
/// @endcode
class empirical_data {
 public:
  /// The model reads σ, not timesteps (@ref diffusion::sigma_conditioned "sigma_conditioned"): it needs no schedule in σ-space.
  static constexpr bool conditions_on_sigma = true;
  /// @param[in] data N·n finite values, example i in [i·n, (i+1)·n) (an rvalue is moved in, not copied).
  /// @param[in] dim n ≥ 1, the number of elements of one example.
  /// @param[in] kind what the denoiser outputs (ε by default).
  /// @throws std::invalid_argument for empty data, dim = 0, a size that is not a multiple of dim,
  /// a non-finite value (naming its example and element), or an example whose squared norm overflows.
  empirical_data(std::vector<double> data, std::size_t dim, prediction kind = prediction::epsilon)
      : data_(std::move(data)), dim_(dim), kind_(kind) {
    constexpr std::string_view where = "diffusion::empirical_data";
    using detail::to_text;
    if (data_.empty()) detail::throw_invalid(where, "data is empty");
    if (dim_ == 0) detail::throw_invalid(where, "dim = 0 is outside the allowed range [1, inf)");
    if (data_.size() % dim_ != 0)
      detail::throw_invalid(where, "data.size() = " + to_text(data_.size()) + " is not a multiple of dim = " + to_text(dim_));
    count_ = data_.size() / dim_;
    for (std::size_t e = 0; e < data_.size(); ++e)
      if (!std::isfinite(data_[e]))
        detail::throw_invalid(where, "data[" + to_text(e) + "] (example " + to_text(e / dim_) + ", element " +
                                         to_text(e % dim_) + ") = " + to_text(data_[e]) + " must be finite");
    norm2_.resize(count_);
    norm_.resize(count_);
    for (std::size_t i = 0; i < count_; ++i) {
      norm2_[i] = sum_of_squares(example_row(i));
      if (!std::isfinite(norm2_[i]))
        detail::throw_invalid(where, "example " + to_text(i) + " has a squared norm that overflows; scale the data");
      norm_[i] = std::sqrt(norm2_[i]);
    }
    mean_.assign(dim_, 0.0);
    kernels::add_weighted_rows<double>(std::vector<double>(count_, 1.0), data_, dim_, mean_);  // Σ x_i, in order
    for (double& v : mean_) v /= static_cast<double>(count_);
  }

  /// @brief Copies float or double data from any @ref tensor (vector, span, Eigen object…);
  /// see the constructor above.
  template <tensor D>
    requires(!std::same_as<std::remove_cvref_t<D>, std::vector<double>>)
  empirical_data(const D& data, std::size_t dim, prediction kind = prediction::epsilon)
      : empirical_data(widen(as_span(data)), dim, kind) {}

  /// Number of examples N.
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  /// Number of elements n of one example.
  [[nodiscard]] std::size_t dim() const noexcept { return dim_; }
  /// What the denoiser outputs.
  [[nodiscard]] prediction predicts() const noexcept { return kind_; }
  /// All N·n stored values, example after example.
  [[nodiscard]] std::span<const double> data() const noexcept { return data_; }
  /// Example i (n values). @throws std::out_of_range if i ≥ size().
  [[nodiscard]] std::span<const double> example(std::size_t i) const {
    detail::check_index("diffusion::empirical_data::example", "i", i, count_);
    return {data_.data() + i * dim_, dim_};
  }
  /// The mean of the examples, \f$E[x_0]\f$ (n values).
  [[nodiscard]] std::span<const double> mean() const noexcept { return mean_; }

  /// @brief The posterior weights \f$w_i(x) = P(x_0 = x_i \mid x_t = x)\f$ at noise level σ > 0 (0 beyond the window).
  /// @param[in] sigma σ ∈ (0, +∞]. @param[in] x one row, dim() values. @param[out] out size() values, summing to 1.
  /// @throws std::invalid_argument for a bad σ or size; std::domain_error at σ = 0 (the weights are undefined there).
  void posterior_weights(double sigma, std::span<const double> x, std::span<double> out) const {
    constexpr std::string_view where = "diffusion::empirical_data::posterior_weights";
    check_call(where, sigma, x.size());
    detail::check_same_size(where, "out", out.size(), "data rows", count_);
    if (sigma == 0.0) throw_no_density(where);
    std::fill(out.begin(), out.end(), 0.0);
    workspace ws(count_, 1, dim_);
    weigh_one(level::preserving(sigma), x.data(), ws);
    for (std::size_t m = 0; m < ws.window[0].size(); ++m) out[ws.window[0][m]] = ws.weight[0][m] / ws.sum[0];
  }

  /// @brief \f$\log q_t(x) = \log\frac1N\sum_i \mathcal N(x;\, c\,x_i,\, d^2 I)\f$ at noise level σ > 0 (at σ = +∞ the standard normal).
  /// @throws std::invalid_argument for a bad σ or size; std::domain_error at σ = 0 (no density).
  [[nodiscard]] double log_density(double sigma, std::span<const double> x) const {
    constexpr std::string_view where = "diffusion::empirical_data::log_density";
    check_call(where, sigma, x.size());
    if (sigma == 0.0) throw_no_density(where);
    const level l = level::preserving(sigma);
    workspace ws(count_, 1, dim_);
    weigh_one(l, x.data(), ws);
    const double n = static_cast<double>(dim_);
    // log N(x; c x_i, d²I) = −(n/2) log 2π − n log d − D_i/(2d²), summed relative to D_min.
    return std::log(ws.sum[0]) - std::log(static_cast<double>(count_)) - 0.5 * n * std::log(2.0 * std::numbers::pi) -
           n * std::log(l.sigma) - 0.5 * (ws.min_dist[0] / l.sigma) / l.sigma;
  }

  /// @brief \f$E[x_0 \mid x_t = x]\f$ at noise level σ (x itself at σ = 0, the data mean at σ = +∞).
  /// @throws std::invalid_argument for a bad σ or size.
  void posterior_mean_x0(double sigma, std::span<const double> x, std::span<double> out) const {
    evaluate("diffusion::empirical_data::posterior_mean_x0", prediction::sample, sigma, x, out);
  }
  /// @brief \f$E[\varepsilon \mid x_t = x] = (x - c\,E[x_0|x_t])/d\f$ at noise level σ (0 at σ = 0).
  /// @throws std::invalid_argument for a bad σ or size.
  void posterior_mean_eps(double sigma, std::span<const double> x, std::span<double> out) const {
    evaluate("diffusion::empirical_data::posterior_mean_eps", prediction::epsilon, sigma, x, out);
  }
  /// @brief The exact score \f$\nabla_x\log q_t(x) = -E[\varepsilon \mid x_t = x]/d = (c\,E[x_0|x_t] - x)/d^2\f$ (Tweedie's formula).
  /// @throws std::invalid_argument for a bad σ or size; std::domain_error at σ = 0 (no density).
  void score(double sigma, std::span<const double> x, std::span<double> out) const {
    evaluate("diffusion::empirical_data::score", prediction::score, sigma, x, out);
  }

  /// @brief The exact prediction of the chosen kind for every row (one σ per row), computed in
  /// double and rounded once to T. Rows are processed in blocks of 16, one pass over the data each.
  /// @pre `in.row_size() == dim()`, `out.size() == in.x.size()`, every σ ∈ [0, +∞] (asserted).
  /// @throws std::domain_error for a score at σ = 0 (before writing anything).
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) const {
    const std::size_t n = in.row_size(), rows = in.rows();
    DIFFUSION_ASSERT(n == dim() && out.size() == in.x.size() && in.sigma.size() == rows);
    if (kind_ == prediction::score)
      for (double s : in.sigma)
        if (s == 0.0) throw_no_density("diffusion::empirical_data");
    std::vector<double> xt(in.x.begin(), in.x.end()), x0(in.x.size());
    posterior_means(in.sigma, xt.data(), rows, x0.data());
    for (std::size_t r = 0; r < rows; ++r) {
      DIFFUSION_ASSERT(in.sigma[r] >= 0.0);
      convert_row(kind_, in.sigma[r], xt.data() + r * n, x0.data() + r * n, out.data() + r * n);
    }
  }

 private:
  using level = detail::mixture_impl::level;
  static constexpr std::size_t block_rows = 16;  // rows per pass over the data (scratch 16·N doubles)
  static constexpr double cancellation_limit = 16.0;  // κ above which D_i is recomputed

  // Example i (n values), unchecked.
  [[nodiscard]] std::span<const double> example_row(std::size_t i) const noexcept {
    return {data_.data() + i * dim_, dim_};
  }
  template <class T>
  static std::vector<double> widen(std::span<const T> s) {
    return std::vector<double>(s.begin(), s.end());
  }

  void check_call(std::string_view where, double sigma, std::size_t xsize) const {
    detail::mixture_impl::check_sigma(where, sigma);
    detail::check_same_size(where, "x", xsize, "example(0)", dim_);
  }
  [[noreturn]] static void throw_no_density(std::string_view where) {
    detail::throw_domain(where, "sigma = 0: an empirical distribution has no density");
  }

  // Scratch of one call, for blocks of up to `block` rows.
  struct workspace {
    // N × rows, not initialized: the products x_i·x_t (dist[i·rows + b]), then the squared
    // distances, then the weights of step 4's union of windows.
    std::unique_ptr<double[]> dist;
    std::vector<double> y;  // rows × n: the block's rows of x_t
    std::vector<std::vector<std::size_t>> window;  // per row: the examples that may carry weight (increasing)
    std::vector<std::vector<double>> weight;       // per row: their weights exp(−(D_i − D_min)/(2d²))
    std::vector<double> sum, min_dist;             // per row: Σ weight (≥ 1) and D_min
    workspace(std::size_t count, std::size_t block, std::size_t dim)
        : dist(std::make_unique_for_overwrite<double[]>(count * block)),
          y(block * dim),
          window(block),
          weight(block),
          sum(block),
          min_dist(block) {
      for (auto& w : window) w.reserve(count);  // address space only: pages are touched as windows grow
    }
  };

  // ‖y − c x‖² directly (the repair of step 2).
  [[nodiscard]] double direct_distance(const double* y, double c, const double* x) const noexcept {
    double s = 0.0;
    for (std::size_t k = 0; k < dim_; ++k) {
      const double d = y[k] - c * x[k];
      s += d * d;
    }
    return s;
  }

  // Steps 1–3 for the first `rows` rows of ws.y at levels l[b] (0 < σ < ∞): fills ws.window,
  // ws.weight, ws.sum and ws.min_dist of those rows.
  void weigh(const level* l, std::size_t rows, workspace& ws) const {
    constexpr double infinity = std::numeric_limits<double>::infinity();
    const std::size_t B = rows;  // the products of example i are dist[i·B, (i+1)·B)
    const double gamma = static_cast<double>(dim_ + 8) * 0x1p-53;
    const double cutoff = std::log(static_cast<double>(count_)) + 40.0;
    const std::span<const double> y(ws.y.data(), rows * dim_);
    std::vector<double> xt2(rows), xtn(rows), limit(rows, infinity);
    for (std::size_t b = 0; b < rows; ++b) {
      xt2[b] = sum_of_squares(y.subspan(b * dim_, dim_));
      xtn[b] = std::sqrt(xt2[b]);
    }
    // Step 1: the products (each example read once for the block), then in place the expanded
    // squared distances, example by example so that the block's products are read contiguously;
    // `limit` first collects the least upper bound of D_min that the error bounds
    // γ(‖x_t‖ + c‖x_i‖)² give.
    double* dist = ws.dist.get();
    kernels::row_dots<double>(y, data_, dim_, std::span<double>(dist, count_ * B));
    for (std::size_t i = 0; i < count_; ++i)
      for (std::size_t b = 0; b < rows; ++b) {
        double& di = dist[i * B + b];
        di = (xt2[b] + l[b].alpha_sq * norm2_[i]) - 2.0 * l[b].alpha * di;
        const double e = xtn[b] + l[b].alpha * norm_[i];
        limit[b] = std::min(limit[b], di + gamma * e * e);
      }
    // Step 2, the window: examples whose weight may exceed e^-cutoff of the largest.
    for (std::size_t b = 0; b < rows; ++b) {
      limit[b] += 2.0 * l[b].sigma_sq * cutoff;
      ws.window[b].clear();
    }
    for (std::size_t i = 0; i < count_; ++i)
      for (std::size_t b = 0; b < rows; ++b) {
        const double e = xtn[b] + l[b].alpha * norm_[i];
        if (dist[i * B + b] - gamma * e * e <= limit[b]) ws.window[b].push_back(i);
      }
    // Step 2, the repair: window members whose expansion cancelled (κ_i > 16) get their distance
    // recomputed directly. Step 3: the weights relative to the smallest distance.
    for (std::size_t b = 0; b < rows; ++b) {
      const double* yb = y.data() + b * dim_;
      double min_dist = infinity;
      for (std::size_t i : ws.window[b]) {
        double& di = dist[i * B + b];
        const double e = xtn[b] + l[b].alpha * norm_[i];
        if (e * e > cancellation_limit * di) di = direct_distance(yb, l[b].alpha, data_.data() + i * dim_);
        min_dist = std::min(min_dist, di);
      }
      ws.weight[b].resize(ws.window[b].size());
      double sum = ws.window[b].empty() ? std::numeric_limits<double>::quiet_NaN() : 0.0;  // a NaN input
      for (std::size_t m = 0; m < ws.window[b].size(); ++m) {
        // (D_i − D_min)/(2d²) as two divisions by d: no underflow of d² for tiny σ.
        const double w = std::exp(-0.5 * ((dist[ws.window[b][m] * B + b] - min_dist) / l[b].sigma) / l[b].sigma);
        ws.weight[b][m] = w;
        sum += w;
      }
      ws.sum[b] = sum;
      ws.min_dist[b] = min_dist;
    }
  }

  // weigh() for one row x (n doubles) at level l, including σ = +∞ (uniform weights).
  void weigh_one(const level& l, const double* xt, workspace& ws) const {
    std::copy(xt, xt + dim_, ws.y.begin());
    if (l.alpha != 0.0) return weigh(&l, 1, ws);
    ws.window[0].resize(count_);
    for (std::size_t i = 0; i < count_; ++i) ws.window[0][i] = i;
    ws.weight[0].assign(count_, 1.0);
    ws.sum[0] = static_cast<double>(count_);
    ws.min_dist[0] = sum_of_squares(std::span<const double>(xt, dim_));  // every D_i = ‖x_t‖²
  }

  // E[x0 | x_t] for `rows` rows of x_t (row-major doubles) with per-row σ, into x0.
  void posterior_means(std::span<const double> sigma, const double* xt, std::size_t rows, double* x0) const {
    std::vector<std::size_t> general;  // rows with 0 < σ < ∞
    for (std::size_t r = 0; r < rows; ++r) {
      if (sigma[r] == 0.0)
        std::copy(xt + r * dim_, xt + (r + 1) * dim_, x0 + r * dim_);
      else if (std::isinf(sigma[r]))
        std::copy(mean_.begin(), mean_.end(), x0 + r * dim_);
      else
        general.push_back(r);
    }
    if (general.empty()) return;
    const std::size_t block = std::min(block_rows, general.size());
    workspace ws(count_, block, dim_);
    std::vector<level> levels(block);
    std::vector<std::size_t> dense, visited, next;  // dense: block rows whose windows exceed N/8
    std::vector<double> sums;
    visited.reserve(count_);
    for (std::size_t start = 0; start < general.size(); start += block) {
      const std::size_t rows_here = std::min(block, general.size() - start);
      for (std::size_t b = 0; b < rows_here; ++b) {
        const std::size_t r = general[start + b];
        levels[b] = level::preserving(sigma[r]);
        std::copy(xt + r * dim_, xt + (r + 1) * dim_, ws.y.begin() + static_cast<std::ptrdiff_t>(b * dim_));
      }
      weigh(levels.data(), rows_here, ws);
      // Step 4: few weights: a sum over the window's rows; many: one pass over the union of the
      // windows for all such rows (weight 0 where a row's window lacks the example).
      dense.clear();
      for (std::size_t b = 0; b < rows_here; ++b) {
        if (ws.window[b].size() > count_ / 8) {
          dense.push_back(b);
          continue;
        }
        const std::span<double> out(x0 + general[start + b] * dim_, dim_);
        std::fill(out.begin(), out.end(), 0.0);
        kernels::add_weighted_rows<double>(ws.weight[b], ws.window[b], data_, dim_, out);
        for (double& v : out) v /= ws.sum[b];
      }
      if (dense.empty()) continue;
      const std::size_t md = dense.size();
      double* weights = ws.dist.get();  // the distances are spent: the weights of the union (≤ N × md)
      visited.clear();
      next.assign(md, 0);  // per dense row: its next window position
      for (std::size_t i = 0; i < count_; ++i) {
        bool any = false;
        for (std::size_t m = 0; m < md; ++m) {
          const auto& win = ws.window[dense[m]];
          any = any || (next[m] < win.size() && win[next[m]] == i);
        }
        if (!any) continue;
        double* w = weights + visited.size() * md;
        visited.push_back(i);
        for (std::size_t m = 0; m < md; ++m) {
          const auto& win = ws.window[dense[m]];
          const bool member = next[m] < win.size() && win[next[m]] == i;
          w[m] = member ? ws.weight[dense[m]][next[m]++] : 0.0;
        }
      }
      sums.assign(md * dim_, 0.0);
      kernels::add_weighted_rows<double>(std::span<const double>(weights, visited.size() * md), visited, data_, dim_, sums);
      for (std::size_t m = 0; m < md; ++m) {
        double* out = x0 + general[start + dense[m]] * dim_;
        for (std::size_t k = 0; k < dim_; ++k) out[k] = sums[m * dim_ + k] / ws.sum[dense[m]];
      }
    }
  }

  // One row of output of kind `what` from x_t and E[x0 | x_t].
  template <class U>
  void convert_row(prediction what, double sigma, const double* xt, const double* x0, U* out) const {
    if (sigma == 0.0) {  // x_t = x_0; E[ε | x_t] = E[ε] = 0 (the score was refused before)
      const double a = target_coefficients(level::preserving(0.0), what).a;  // the x₀ part of the kind
      for (std::size_t k = 0; k < dim_; ++k) out[k] = static_cast<U>(a * x0[k]);
      return;
    }
    const level l = level::preserving(sigma);
    for (std::size_t k = 0; k < dim_; ++k) out[k] = static_cast<U>(detail::mixture_impl::from_x0(what, l, xt[k], x0[k]));
  }

  void evaluate(std::string_view where, prediction what, double sigma, std::span<const double> x,
                std::span<double> out) const {
    check_call(where, sigma, x.size());
    detail::check_same_size(where, "out", out.size(), "x", x.size());
    if (what == prediction::score && sigma == 0.0) throw_no_density(where);
    std::vector<double> x0(dim_);
    posterior_means(std::span<const double>(&sigma, 1), x.data(), 1, x0.data());
    convert_row(what, sigma, x.data(), x0.data(), out.data());
  }

  std::vector<double> data_;          // N × n, row-major
  std::size_t dim_ = 0, count_ = 0;   // n, N
  std::vector<double> norm2_, norm_;  // ‖x_i‖², ‖x_i‖
  std::vector<double> mean_;          // (1/N) Σ x_i
  prediction kind_;
};

}  // namespace diffusion

/// @}
