/// @file
/// @brief Exact models of the data for which every diffusion quantity has a closed form:
/// Gaussian data \f$x_0 \sim \mathcal N(\mu, \operatorname{diag}(s^2))\f$.
///
/// For such data \f$x_t \mid \alpha\text{-bar} \sim \mathcal N(c\mu, c^2s^2 + d^2)\f$ per dimension
/// (\f$c = \sqrt{\bar\alpha}\f$, \f$d = \sqrt{1-\bar\alpha}\f$), and \f$(x_0, x_t)\f$ are jointly Gaussian, so
/// \f$E[x_0|x_t] = \mu + \frac{cs^2}{c^2s^2+d^2}(x_t - c\mu)\f$, \f$\operatorname{Var}[x_0|x_t] = \frac{s^2d^2}{c^2s^2+d^2}\f$
/// and \f$E[\varepsilon|x_t] = \frac{d}{c^2s^2+d^2}(x_t - c\mu)\f$: the optimal denoiser of every
/// parameterization is known, as are the true reverse variance, each term of the variational
/// bound (DDPM Eq. 5) and the exact negative log-likelihood. The tests of the losses and of
/// the samplers measure the library against these.
#pragma once

#include <cmath>
#include <cstddef>
#include <numbers>
#include <span>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../losses/distributions.hpp"
#include "../process/parameterization.hpp"
#include "../schedule/noise_schedule.hpp"
#include "denoiser.hpp"

/// @defgroup analytic Analytic data models
/// @brief Gaussian data: its optimal denoiser and the closed forms of the bound (DDPM §3.2, Eq. 5).
/// @{

namespace diffusion {

/// @brief Diagonal Gaussian data \f$x_0 \sim \mathcal N(\mu, \operatorname{diag}(s^2))\f$ and its exact denoiser.
///
/// As a @ref denoiser it predicts the chosen kind exactly, from each row's σ. A standard
/// deviation of 0 is a point mass (DDPM §3.2's other extreme).
class gaussian_data {
 public:
  /// The model reads σ, not timesteps (@ref diffusion::sigma_conditioned "sigma_conditioned"): it needs no schedule in σ-space.
  static constexpr bool conditions_on_sigma = true;
  /// @param[in] mean μ, one per dimension, finite.
  /// @param[in] stddev s ≥ 0, same size, finite.
  /// @param[in] kind what the denoiser outputs (ε by default).
  /// @throws std::invalid_argument for empty or mismatched vectors, or a bad value (naming its index).
  gaussian_data(std::vector<double> mean, std::vector<double> stddev, prediction kind = prediction::epsilon)
      : mean_(std::move(mean)), std_(std::move(stddev)), kind_(kind) {
    constexpr std::string_view where = "diffusion::gaussian_data";
    if (mean_.empty()) detail::throw_invalid(where, "mean is empty");
    detail::check_same_size(where, "mean", mean_.size(), "stddev", std_.size());
    for (std::size_t k = 0; k < mean_.size(); ++k) {
      detail::check_finite(where, "mean[" + detail::to_text(k) + "]", mean_[k]);
      if (!(std_[k] >= 0.0 && std::isfinite(std_[k])))
        detail::throw_invalid(where, "stddev[" + detail::to_text(k) + "] = " + detail::to_text(std_[k]) +
                                         " is outside the allowed range [0, inf)");
    }
  }

  /// Number of dimensions.
  [[nodiscard]] std::size_t dim() const noexcept { return mean_.size(); }
  /// μ.
  [[nodiscard]] const std::vector<double>& mean() const noexcept { return mean_; }
  /// s.
  [[nodiscard]] const std::vector<double>& stddev() const noexcept { return std_; }
  /// What the denoiser outputs.
  [[nodiscard]] prediction predicts() const noexcept { return kind_; }

  /// @brief \f$E[x_0 \mid x_t]\f$ in dimension k at noise level σ (Tweedie's formula for Gaussian data).
  [[nodiscard]] double posterior_mean_x0(std::size_t k, double sigma, double xt) const {
    return mean_x0(k, level::preserving(sigma), xt);
  }
  /// @brief \f$\operatorname{Var}[x_0 \mid x_t] = s^2(1-\bar\alpha)/(\bar\alpha s^2 + 1 - \bar\alpha)\f$ in dimension k at noise level σ.
  [[nodiscard]] double posterior_variance_x0(std::size_t k, double sigma) const {
    return variance_x0(k, level::preserving(sigma));
  }
  /// @brief \f$E[\varepsilon \mid x_t] = \sqrt{1-\bar\alpha}\,(x_t - \sqrt{\bar\alpha}\mu)/(\bar\alpha s^2 + 1 - \bar\alpha)\f$ in dimension k at noise level σ.
  [[nodiscard]] double posterior_mean_eps(std::size_t k, double sigma, double xt) const {
    return mean_eps(k, level::preserving(sigma), xt);
  }

  /// @brief The exact prediction of the chosen kind for every row (one σ per row).
  /// @pre `in.row_size() == dim()` and `out.size() == in.x.size()` (asserted).
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) const {
    const std::size_t n = in.row_size();
    DIFFUSION_ASSERT(n == dim() && out.size() == in.x.size());
    for (std::size_t r = 0; r < in.rows(); ++r) {
      const level l = level::preserving(in.sigma[r]);
      const affine_coefficients target =
          kind_ == prediction::score ? affine_coefficients{0.0, 0.0} : target_coefficients(l, kind_);
      for (std::size_t k = 0; k < n; ++k) {
        const double x = static_cast<double>(in.x[r * n + k]);
        // The score by Tweedie's formula in its Gaussian form (finite at σ = 0), the other kinds
        // from E[x₀|x_t] and E[ε|x_t] by their definitions (process/parameterization.hpp).
        // (A term with a zero coefficient is skipped: E[ε|x_t] may overflow where only x₀ is asked for.)
        const double v = kind_ == prediction::score ? score(k, l, x)
                                                    : (target.a != 0.0 ? target.a * mean_x0(k, l, x) : 0.0) +
                                                          (target.b != 0.0 ? target.b * mean_eps(k, l, x) : 0.0);
        out[r * n + k] = static_cast<T>(v);
      }
    }
  }

  // ---- Closed forms of the bound, per dimension k, in nats ----

  /// @brief The true reverse variance \f$\operatorname{Var}[x_{t-1} \mid x_t] = \tilde\beta_t + c_0^2\operatorname{Var}[x_0|x_t]\f$
  /// at 0-based step t ≥ 1 (\f$c_0\f$ the x₀ coefficient of Eq. 7), and \f$\operatorname{Var}[x_0|x_1]\f$ at t = 0.
  /// For s = 1, μ = 0 it equals β_t; for s = 0 it equals β̃_t (DDPM §3.2).
  [[nodiscard]] double true_reverse_variance(const noise_schedule& s, std::size_t t, std::size_t k) const {
    const schedule_step& st = s.at(t);
    const double v0 = variance_x0(k, from_step(st));
    if (t == 0) return v0;
    return st.posterior_variance + st.posterior_mean_coef_x0 * st.posterior_mean_coef_x0 * v0;
  }

  /// @brief \f$E_{x_0, x_t}[L_{t-1}]\f$ of DDPM Eq. 5 at 0-based step t ≥ 1 with the optimal mean and
  /// reverse log-variance ℓ: \f$\tfrac12\left(\ell - \log\tilde\beta_t - 1 + (\tilde\beta_t + c_0^2\operatorname{Var}[x_0|x_t])e^{-\ell}\right)\f$.
  [[nodiscard]] double expected_kl_term(const noise_schedule& s, std::size_t t, std::size_t k, double log_var) const {
    if (t == 0) detail::throw_invalid("diffusion::gaussian_data::expected_kl_term", "t = 0 is the decoder term");
    const schedule_step& st = s.at(t);
    const double bt = st.posterior_variance;
    const double lb = std::log(bt);
    const double excess = st.posterior_mean_coef_x0 * st.posterior_mean_coef_x0 * variance_x0(k, from_step(st));
    // KL(N(m, bt) || N(m', e^l)) averaged: 0.5 (expm1(lb - l) - (lb - l) + excess e^{-l}).
    return 0.5 * (detail::expm1_minus_x(lb - log_var) + excess * std::exp(-log_var));
  }

  /// @brief \f$E[L_0] = E[-\log\mathcal N(x_0; E[x_0|x_1], e^\ell)] = \tfrac12(\log 2\pi + \ell + \operatorname{Var}[x_0|x_1]e^{-\ell})\f$,
  /// the continuous Gaussian decoder term with the optimal mean.
  [[nodiscard]] double expected_decoder_nll(const noise_schedule& s, std::size_t k, double log_var) const {
    const double v0 = variance_x0(k, from_step(s.at(0)));
    return 0.5 * (std::log(2.0 * std::numbers::pi) + log_var + v0 * std::exp(-log_var));
  }

  /// @brief \f$E[L_T] = E_{x_0}[\mathrm{KL}(q(x_T|x_0)\,\|\,\mathcal N(0,1))] = \tfrac12(\bar\alpha_T(\mu^2+s^2) + (1-\bar\alpha_T) - 1 - \log(1-\bar\alpha_T))\f$.
  [[nodiscard]] double expected_prior_term(const noise_schedule& s, std::size_t k) const {
    const schedule_step& st = s[s.size() - 1];
    const double m2 = mean_[k] * mean_[k] + std_[k] * std_[k];
    // 0.5 (ab m2 - ab - log(1 - ab)) = 0.5 (ab (m2 - 1) - log1p(-ab))
    return 0.5 * (st.alpha_bar * (m2 - 1.0) - std::log1p(-st.alpha_bar));
  }

  /// @brief The exact expected negative log-likelihood (differential entropy) \f$\tfrac12\log(2\pi e s^2)\f$ in dimension k.
  /// @throws std::domain_error for s = 0 (a point mass has no density).
  [[nodiscard]] double nll(std::size_t k) const {
    if (std_[k] == 0.0)
      detail::throw_domain("diffusion::gaussian_data::nll", "stddev[" + detail::to_text(k) + "] = 0: no density");
    return 0.5 * (std::log(2.0 * std::numbers::pi * std_[k] * std_[k]) + 1.0);
  }

  /// @brief The prior mismatch \f$\mathrm{KL}(q(x_T)\,\|\,\mathcal N(0,1))\f$ with \f$q(x_T) = \mathcal N(\sqrt{\bar\alpha_T}\mu, \bar\alpha_T s^2 + 1 - \bar\alpha_T)\f$:
  /// with the true reverse process the bound exceeds the NLL by exactly this.
  [[nodiscard]] double prior_mismatch(const noise_schedule& s, std::size_t k) const {
    const schedule_step& st = s[s.size() - 1];
    const double ab = st.alpha_bar;
    const double var = ab * std_[k] * std_[k] + st.one_minus_alpha_bar;
    return standard_normal_kl(std::sqrt(ab) * mean_[k], std::log(var));
  }

 private:
  // A noise level (c = sqrt(ab), d = sqrt(1 - ab) and squares): from sigma as every analytic
  // model computes it, or exactly from the schedule's tables.
  using level = noise_level;
  static level from_step(const schedule_step& st) { return noise_level::from_step(st); }
  [[nodiscard]] double mean_x0(std::size_t k, const level& l, double xt) const {
    const double s2 = std_[k] * std_[k];
    return mean_[k] + l.alpha * s2 * (xt - l.alpha * mean_[k]) / (l.alpha_sq * s2 + l.sigma_sq);
  }
  [[nodiscard]] double variance_x0(std::size_t k, const level& l) const {
    const double s2 = std_[k] * std_[k];
    return s2 * l.sigma_sq / (l.alpha_sq * s2 + l.sigma_sq);
  }
  [[nodiscard]] double mean_eps(std::size_t k, const level& l, double xt) const {
    const double s2 = std_[k] * std_[k];
    return l.sigma * (xt - l.alpha * mean_[k]) / (l.alpha_sq * s2 + l.sigma_sq);
  }
  // ∇ log q_t(x_t) = −(x_t − αμ)/(α²s² + σ²): finite at σ = 0 when s > 0.
  [[nodiscard]] double score(std::size_t k, const level& l, double xt) const {
    const double s2 = std_[k] * std_[k];
    return -(xt - l.alpha * mean_[k]) / (l.alpha_sq * s2 + l.sigma_sq);
  }

  std::vector<double> mean_, std_;
  prediction kind_;
};

}  // namespace diffusion

/// @}
