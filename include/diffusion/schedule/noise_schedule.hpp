/// @file
/// @brief The discrete noise schedule: a value holding every per-step quantity in double.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "betas.hpp"
#include "../core/config.hpp"
#include "../core/double_double.hpp"
#include "../core/errors.hpp"

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
  /// @throws std::invalid_argument naming the first offending index and value, or when the tables of T
  ///         steps cannot be allocated.
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
  /// True when the last β is 1 (ᾱ_{T−1} = 0 exactly). A schedule whose ᾱ underflows to 0 with
  /// every β < 1 is not zero-terminal-SNR; its σ is +∞ from the step where ᾱ underflowed.
  [[nodiscard]] bool zero_terminal_snr() const noexcept { return betas_.back() == 1.0; }

  /// @brief One column of the table, e.g. `s.column(&schedule_step::log_snr)`, for plots.
  [[nodiscard]] std::vector<double> column(double schedule_step::*member) const {
    std::vector<double> out(steps_.size());
    for (std::size_t i = 0; i < steps_.size(); ++i) out[i] = steps_[i].*member;
    return out;
  }

  /// @brief \f$\bar\alpha_t\f$ as a double-double (hi, lo) pair, for quantities that would
  /// otherwise cancel (ratios of nearby ᾱ). Exact scaling of the internal (mantissa,
  /// exponent) form; 0 when ᾱ_t < 2^-960 (use @ref one_minus_alpha_bar_ratio_dd there).
  [[nodiscard]] detail::dd alpha_bar_dd(std::size_t i) const noexcept {
    DIFFUSION_ASSERT(i < steps_.size());
    return ab_[i].exponent > -960 ? detail::dd{std::ldexp(ab_[i].mantissa.hi, ab_[i].exponent),
                                               std::ldexp(ab_[i].mantissa.lo, ab_[i].exponent)}
                                  : detail::dd{0.0, 0.0};
  }
  /// @brief \f$1 - \bar\alpha_t\f$ as a double-double, accumulated without cancellation
  /// (\f$1-\bar\alpha_t = (1-\bar\alpha_{t-1}) + \beta_t\bar\alpha_{t-1}\f$, a sum of positive terms).
  [[nodiscard]] detail::dd one_minus_alpha_bar_dd(std::size_t i) const noexcept {
    DIFFUSION_ASSERT(i < steps_.size());
    return omab_[i];
  }
  /// @brief \f$1 - \bar\alpha_t/\bar\alpha_s = 1 - \prod_{s<i\le t}(1-\beta_i)\f$ for 0-based s < t (s = −1,
  /// written `npos`, for ᾱ_s = 1), as a double-double without cancellation: the recurrence
  /// \f$q \leftarrow q + \beta_i(1 - q)\f$ adds positive terms only. O(t − s).
  [[nodiscard]] detail::dd one_minus_alpha_bar_ratio_dd(std::size_t t, std::size_t s) const noexcept {
    DIFFUSION_ASSERT(t < steps_.size() && (s == npos || s < t));
    if (s == npos) return omab_[t];
    detail::dd q{0.0, 0.0};
    for (std::size_t i = s + 1; i <= t; ++i) {
      const double b = betas_[i];
      q = b == 1.0 ? detail::dd{1.0, 0.0} : q + detail::dd{b, 0.0} * (detail::dd{1.0, 0.0} - q);
    }
    return q;
  }
  /// "No step": the s of @ref one_minus_alpha_bar_ratio_dd for ᾱ_s = 1 (before the first step).
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  /// Two schedules are equal when they were built from the same betas.
  friend bool operator==(const noise_schedule& a, const noise_schedule& b) { return a.betas_ == b.betas_; }

 private:
  // ᾱ = mantissa · 2^exponent with mantissa.hi in [0.5, 1) (or 0): a running product of
  // thousands of factors (1 − β) never underflows in this form.
  struct scaled_dd {
    detail::dd mantissa;
    int exponent = 0;
  };
  static scaled_dd normalize(detail::dd m, int e) noexcept {
    if (m.hi == 0.0) return {{0.0, 0.0}, 0};
    int k = 0;
    (void)std::frexp(m.hi, &k);
    return {{std::ldexp(m.hi, -k), std::ldexp(m.lo, -k)}, e + k};
  }
  // The double nearest m·2^e (ldexp of the rounded mantissa: within 1 ulp also where it is subnormal).
  static double to_double_scaled(const scaled_dd& a) noexcept {
    return std::ldexp(detail::to_double(a.mantissa), a.exponent);
  }
  // √(m·2^e) = √m' · 2^(e'/2) with e' even, still scaled.
  static scaled_dd sqrt_scaled_dd(const scaled_dd& a) noexcept {
    if (a.mantissa.hi == 0.0) return a;
    detail::dd m = a.mantissa;
    int e = a.exponent;
    if (e % 2 != 0) {
      m = {m.hi * 2.0, m.lo * 2.0};
      --e;
    }
    return {detail::dd_sqrt(m), e / 2};
  }
  static double sqrt_scaled(const scaled_dd& a) noexcept { return to_double_scaled(sqrt_scaled_dd(a)); }

  void build() {
    using detail::dd;
    const std::size_t n = betas_.size();
    // The tables are about 20 doubles per step: a T that the caller's betas fit in may still not fit here.
    constexpr std::string_view where = "diffusion::noise_schedule";
    const std::string what = "T = " + detail::to_text(n);
    steps_ = detail::allocate_table<schedule_step>(where, what, n, "schedule steps");
    ab_ = detail::allocate_table<scaled_dd>(where, what, n, "schedule steps");
    omab_ = detail::allocate_table<detail::dd>(where, what, n, "schedule steps");
    constexpr double inf = std::numeric_limits<double>::infinity();
    const dd one{1.0, 0.0}, zero{0.0, 0.0};
    // ᾱ_t = ᾱ_{t−1}(1 − β_t) in scaled form; 1 − ᾱ_t = (1 − ᾱ_{t−1}) + β_t ᾱ_{t−1} (positive terms).
    scaled_dd acc{one, 0};
    dd om = zero;
    for (std::size_t i = 0; i < n; ++i) {
      const double b = betas_[i];
      const dd prev_ab = acc.exponent > -1060 ? dd{std::ldexp(acc.mantissa.hi, acc.exponent),
                                                    std::ldexp(acc.mantissa.lo, acc.exponent)}
                                              : zero;
      if (b == 1.0) {  // the zero-terminal-SNR last step: ᾱ = 0, 1 − ᾱ = 1 exactly
        acc = {zero, 0};
        om = one;
      } else {
        acc = normalize(acc.mantissa * detail::one_minus(b), acc.exponent);
        om = om + dd{b, 0.0} * prev_ab;
      }
      ab_[i] = acc;
      omab_[i] = om;
    }
    const auto rd = [](dd x) { return detail::to_double(x); };
    const dd dd_zero = zero;
    for (std::size_t i = 0; i < n; ++i) {
      schedule_step& s = steps_[i];
      const double b = betas_[i];
      const dd a = detail::one_minus(b);
      const scaled_dd& abs = ab_[i];
      const scaled_dd abp = i == 0 ? scaled_dd{one, 0} : ab_[i - 1];
      const dd om_t = omab_[i];
      const dd om_p = i == 0 ? dd_zero : omab_[i - 1];
      s.beta = b;
      s.alpha = rd(a);
      s.alpha_bar = to_double_scaled(abs);
      s.alpha_bar_prev = to_double_scaled(abp);
      s.alpha_bar_next = i + 1 < n ? to_double_scaled(ab_[i + 1]) : 0.0;
      s.one_minus_alpha_bar = rd(om_t);
      s.sqrt_alpha = rd(detail::dd_sqrt(a));
      s.sqrt_alpha_bar = sqrt_scaled(abs);
      s.sqrt_alpha_bar_prev = sqrt_scaled(abp);
      s.sqrt_one_minus_alpha_bar = rd(detail::dd_sqrt(om_t));
      s.rsqrt_alpha = b == 1.0 ? inf : rd(one / detail::dd_sqrt(a));
      if (abs.mantissa.hi == 0.0) {
        s.rsqrt_alpha_bar = inf;
        s.sigma = inf;
        s.snr = 0.0;
        s.log_snr = -inf;
      } else {
        // 1/√ᾱ, SNR = ᾱ/(1−ᾱ) and σ = √((1−ᾱ)/ᾱ) from the scaled mantissa: exact powers of two
        // carry the exponent, so a vanishing ᾱ gives correctly rounded huge (or infinite) σ.
        const dd snr_m = abs.mantissa / om_t;  // SNR = snr_m · 2^e
        const scaled_dd snr = normalize(snr_m, abs.exponent);
        const scaled_dd inv_snr = normalize(one / snr.mantissa, -snr.exponent);
        const scaled_dd inv_ab = normalize(one / abs.mantissa, -abs.exponent);
        s.rsqrt_alpha_bar = sqrt_scaled(inv_ab);
        s.sigma = sqrt_scaled(inv_snr);
        s.snr = to_double_scaled(snr);
        s.log_snr = snr.exponent > -960 && snr.exponent < 960
                        ? detail::dd_log({std::ldexp(snr.mantissa.hi, snr.exponent), std::ldexp(snr.mantissa.lo, snr.exponent)})
                        : detail::dd_log_scaled(snr.mantissa, snr.exponent);
      }
      // Ratios first (each ≤ 1), then the products: no product of two tiny factors underflows.
      const dd ratio = i == 0 ? dd_zero : om_p / om_t;  // (1 − ᾱ_{t−1})/(1 − ᾱ_t)
      const dd pv = dd{b, 0.0} * ratio;
      s.posterior_variance = rd(pv);
      const scaled_dd sqrt_abp = sqrt_scaled_dd(abp);
      s.posterior_mean_coef_x0 = to_double_scaled(normalize((dd{b, 0.0} / om_t) * sqrt_abp.mantissa, sqrt_abp.exponent));
      s.posterior_mean_coef_xt = rd(ratio * detail::dd_sqrt(a));
      if (i > 0) s.posterior_log_variance_clipped = detail::dd_log(pv);
    }
    if (n == 1) {
      steps_[0].posterior_log_variance_clipped = std::log(betas_[0]);
    } else {
      steps_[0].posterior_log_variance_clipped = steps_[1].posterior_log_variance_clipped;
    }
  }

  std::vector<double> betas_;
  std::vector<schedule_step> steps_;
  std::vector<scaled_dd> ab_;     // ᾱ_t, scaled
  std::vector<detail::dd> omab_;  // 1 − ᾱ_t
};

}  // namespace diffusion

/// @}
