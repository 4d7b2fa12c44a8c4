/// @file
/// @brief The discrete noise schedule: a value holding every per-step quantity in double.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "betas.hpp"
#include "config.hpp"
#include "detail/double_double.hpp"

/// @defgroup schedule Noise schedule
/// @brief @ref diffusion::noise_schedule and its per-step quantities (DDPM Eq. 4, 6–7).
/// @{

namespace diffusion {

/// @brief Every quantity of one step of a discrete schedule, all in double.
///
/// Indexing is 0-based: the step with code index i is the paper's t = i + 1, so
/// "prev" (i − 1) is the paper's t − 1. Before the first step ᾱ_prev = 1 and after
/// the last ᾱ_next = 0 (the convention of improved DDPM and DDPM-TF). Each value is
/// computed in double-double from the betas and rounded once: measured within 1 ulp
/// of a 50-digit reference except where noted (tests/test_schedule.cpp).
///
/// Zero terminal SNR (β = 1 at the last step): there ᾱ = α = 0, so σ, 1/√ᾱ and 1/√α
/// are +∞, SNR = 0 and log-SNR = −∞, exactly as the limits say.
struct schedule_step {
  double beta;                      ///< \f$\beta_t\f$ (the input).
  double alpha;                     ///< \f$\alpha_t = 1 - \beta_t\f$.
  double alpha_bar;                 ///< \f$\bar\alpha_t = \prod_{s\le t}\alpha_s\f$ (DDPM Eq. 4).
  double alpha_bar_prev;            ///< \f$\bar\alpha_{t-1}\f$, 1 at the first step.
  double alpha_bar_next;            ///< \f$\bar\alpha_{t+1}\f$, 0 at the last step.
  double one_minus_alpha_bar;       ///< \f$1 - \bar\alpha_t\f$, without cancellation.
  double sqrt_alpha;                ///< \f$\sqrt{\alpha_t}\f$.
  double sqrt_alpha_bar;            ///< \f$\sqrt{\bar\alpha_t}\f$, the mean coefficient of \f$q(x_t|x_0)\f$.
  double sqrt_alpha_bar_prev;       ///< \f$\sqrt{\bar\alpha_{t-1}}\f$.
  double sqrt_one_minus_alpha_bar;  ///< \f$\sqrt{1-\bar\alpha_t}\f$, the standard deviation of \f$q(x_t|x_0)\f$.
  double rsqrt_alpha;               ///< \f$1/\sqrt{\alpha_t}\f$.
  double rsqrt_alpha_bar;           ///< \f$1/\sqrt{\bar\alpha_t}\f$.
  double sigma;                     ///< \f$\sigma_t = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}\f$ (the VE / k-diffusion noise level).
  double snr;                       ///< \f$\mathrm{SNR}_t = \bar\alpha_t/(1-\bar\alpha_t)\f$ (Kingma et al. 2021).
  double log_snr;                   ///< \f$\lambda_t = \log\mathrm{SNR}_t\f$ (absolute error ≤ 2 ulp of 1 near 0).
  /// \f$\tilde\beta_t = \beta_t\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\f$ (DDPM Eq. 7); 0 at the first step.
  double posterior_variance;
  /// \f$\log\tilde\beta_t\f$, with the first step's −∞ replaced by the second step's value
  /// (improved DDPM's `posterior_log_variance_clipped`). With T = 1 there is no second
  /// step and the value is \f$\log\beta_1\f$.
  double posterior_log_variance_clipped;
  /// \f$\frac{\beta_t\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_t}\f$, the x₀ coefficient of \f$\tilde\mu_t\f$ (DDPM Eq. 7).
  double posterior_mean_coef_x0;
  /// \f$\frac{(1-\bar\alpha_{t-1})\sqrt{\alpha_t}}{1-\bar\alpha_t}\f$, the x_t coefficient of \f$\tilde\mu_t\f$ (DDPM Eq. 7).
  double posterior_mean_coef_xt;
};

/// @brief A discrete noise schedule: T steps of @ref schedule_step built from betas.
///
/// A value type: copy it, store it, share it across threads (it is immutable). Build
/// one from any beta family (@ref linear_betas, @ref cosine_betas, …) or from your own
/// betas. Respacing for fewer inference steps returns a new schedule
/// (@ref diffusion::respace).
///
/// Validation: the betas must be finite and in (0, 1); the last one may be exactly 1,
/// which gives a zero terminal SNR schedule (Lin et al. 2023; DDPM-TF's "jsd").
///
/// Example: `examples/ddpm_equations.cpp`.
class noise_schedule {
 public:
  /// @brief Builds the tables from betas (copied).
  /// @param[in] betas β_0 … β_{T−1}, T ≥ 1, each in (0, 1); the last may be 1.
  /// @throws std::invalid_argument naming the first offending index and value.
  explicit noise_schedule(std::span<const double> betas) : betas_(betas.begin(), betas.end()) {
    detail::check_betas("diffusion::noise_schedule", betas);
    build();
  }
  /// @brief Builds the tables from betas (moved).
  explicit noise_schedule(std::vector<double>&& betas) : betas_(std::move(betas)) {
    detail::check_betas("diffusion::noise_schedule", betas_);
    build();
  }

  /// Number of steps T.
  [[nodiscard]] std::size_t size() const noexcept { return steps_.size(); }
  /// @brief Step i, unchecked (asserts `i < size()`).
  [[nodiscard]] const schedule_step& operator[](std::size_t i) const noexcept {
    DIFFUSION_ASSERT(i < steps_.size());
    return steps_[i];
  }
  /// @brief Step i, 0-based (the paper's t = i + 1).
  /// @throws std::out_of_range if i ≥ T.
  [[nodiscard]] const schedule_step& at(std::size_t i) const {
    detail::check_index("diffusion::noise_schedule::at", "timestep", i, steps_.size());
    return steps_[i];
  }
  /// All steps, 0-based.
  [[nodiscard]] std::span<const schedule_step> steps() const noexcept { return steps_; }
  /// The betas the schedule was built from.
  [[nodiscard]] std::span<const double> betas() const noexcept { return betas_; }
  /// True when ᾱ at the last step is 0 (β_{T−1} = 1).
  [[nodiscard]] bool zero_terminal_snr() const noexcept { return steps_.back().alpha_bar == 0.0; }

  /// @brief One column of the table, e.g. `s.column(&schedule_step::log_snr)`, for plots.
  [[nodiscard]] std::vector<double> column(double schedule_step::*member) const {
    std::vector<double> out(steps_.size());
    for (std::size_t i = 0; i < steps_.size(); ++i) out[i] = steps_[i].*member;
    return out;
  }

  /// @brief \f$\bar\alpha_t\f$ as a double-double (hi, lo) pair, for quantities that would
  /// otherwise cancel (ratios of nearby ᾱ in @ref diffusion::skip_posterior and respacing).
  [[nodiscard]] detail::dd alpha_bar_dd(std::size_t i) const noexcept {
    DIFFUSION_ASSERT(i < steps_.size());
    return {steps_[i].alpha_bar, alpha_bar_lo_[i]};
  }

  /// Two schedules are equal when they were built from the same betas.
  friend bool operator==(const noise_schedule& a, const noise_schedule& b) { return a.betas_ == b.betas_; }

 private:
  void build() {
    using namespace detail;
    const std::size_t n = betas_.size();
    steps_.resize(n);
    alpha_bar_lo_.resize(n);
    constexpr double inf = std::numeric_limits<double>::infinity();
    const dd one{1.0, 0.0};
    std::vector<dd> ab(n), omab(n);
    dd acc = one;
    for (std::size_t i = 0; i < n; ++i) {
      acc = mul(acc, one_minus(betas_[i]));
      if (i + 1 == n && betas_[i] == 1.0) acc = {0.0, 0.0};
      ab[i] = acc;
      omab[i] = sub(one, acc);
    }
    auto rd = [](dd x) { return to_double(x); };
    // 1/sqrt(x) and sqrt(a/b) in double-double, +inf where the argument is 0.
    auto rsqrt = [&](dd x) { return x.hi == 0.0 ? inf : rd(div(one, detail::sqrt(x))); };
    auto logd = [](dd x) { return std::log(x.hi) + x.lo / x.hi; };
    for (std::size_t i = 0; i < n; ++i) {
      schedule_step& s = steps_[i];
      const dd a = one_minus(betas_[i]);
      const dd abp = i == 0 ? one : ab[i - 1];
      const dd omabp = i == 0 ? dd{0.0, 0.0} : omab[i - 1];
      const dd beta{betas_[i], 0.0};
      s.beta = betas_[i];
      s.alpha = rd(a);
      s.alpha_bar = ab[i].hi;
      alpha_bar_lo_[i] = ab[i].lo;
      s.alpha_bar_prev = rd(abp);
      s.alpha_bar_next = i + 1 < n ? rd(ab[i + 1]) : 0.0;
      s.one_minus_alpha_bar = rd(omab[i]);
      s.sqrt_alpha = rd(detail::sqrt(a));
      s.sqrt_alpha_bar = rd(detail::sqrt(ab[i]));
      s.sqrt_alpha_bar_prev = rd(detail::sqrt(abp));
      s.sqrt_one_minus_alpha_bar = rd(detail::sqrt(omab[i]));
      s.rsqrt_alpha = rsqrt(a);
      s.rsqrt_alpha_bar = rsqrt(ab[i]);
      if (ab[i].hi == 0.0) {
        s.sigma = inf;
        s.snr = 0.0;
        s.log_snr = -inf;
      } else {
        const dd snr = div(ab[i], omab[i]);
        s.sigma = rd(div(one, detail::sqrt(snr)));
        s.snr = rd(snr);
        s.log_snr = logd(snr);
      }
      const dd pv = div(mul(beta, omabp), omab[i]);
      s.posterior_variance = rd(pv);
      s.posterior_mean_coef_x0 = rd(div(mul(beta, detail::sqrt(abp)), omab[i]));
      s.posterior_mean_coef_xt = rd(div(mul(omabp, detail::sqrt(a)), omab[i]));
      if (i > 0) s.posterior_log_variance_clipped = logd(pv);
    }
    if (n == 1) {
      steps_[0].posterior_log_variance_clipped = std::log(betas_[0]);
    } else {
      steps_[0].posterior_log_variance_clipped = steps_[1].posterior_log_variance_clipped;
    }
  }

  std::vector<double> betas_;
  std::vector<schedule_step> steps_;
  std::vector<double> alpha_bar_lo_;
};

}  // namespace diffusion

/// @}
