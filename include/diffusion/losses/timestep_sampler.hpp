/// @file
/// @brief Training-time timestep samplers: uniform (DDPM Algorithm 1, line 3) and improved
/// DDPM's importance sampler on the loss's second moment (Nichol & Dhariwal 2021, §3.3, Eq. 18).
///
/// Draws are reproducible from a seed and addressable: draw i of training step k is a pure
/// function of (seed, k, i) through Philox4x32-10 (philox4x32_10()), so a resumed or
/// sharded training run draws the same timesteps.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../noise/philox.hpp"

/// @defgroup timestep_sampler Training timestep samplers
/// @brief Uniform and loss-second-moment importance sampling of t, with importance weights.
/// @{

namespace diffusion {

namespace detail {

/// The 64 random bits of draw i at training step k under `seed` (one Philox block per draw).
inline std::uint64_t draw_bits(std::uint64_t seed, std::uint64_t step, std::uint64_t i) {
  const auto r = philox4x32_10({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32),
                                static_cast<std::uint32_t>(step), static_cast<std::uint32_t>(step >> 32)},
                               {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  return (std::uint64_t{r[0]} << 32) | r[1];
}

/// A uniform integer in [0, n) from 64 random bits by Lemire's multiply-shift (bias < n/2^64).
inline std::size_t bounded(std::uint64_t bits, std::size_t n) {
  // The high 64 bits of the 128-bit product bits * n, from 32-bit halves (portable C++).
  const std::uint64_t m = n, a_lo = bits & 0xFFFFFFFFu, a_hi = bits >> 32, b_lo = m & 0xFFFFFFFFu, b_hi = m >> 32;
  const std::uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
  const std::uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + (lo_hi & 0xFFFFFFFFu);  // < 3 * 2^32
  return static_cast<std::size_t>(hi_hi + (hi_lo >> 32) + (lo_hi >> 32) + (cross >> 32));
}

inline void check_draw_buffers(std::string_view where, std::span<std::size_t> t, std::span<double> w) {
  check_same_size(where, "timesteps", t.size(), "weights", w.size());
}

}  // namespace detail

/// @brief Uniform timesteps, \f$t \sim \mathcal U\{0, \dots, T-1\}\f$, each with importance weight 1.
///
/// Every weight is 1, so the batch can be drawn without a weights buffer:
/// `s.sample(step, timesteps)`; the three-argument form fills the weights too, for code written
/// against any sampler (@ref loss_second_moment_sampler has only that form).
class uniform_timestep_sampler {
 public:
  /// @param[in] num_timesteps T ≥ 1.
  /// @param[in] seed the stream's seed.
  uniform_timestep_sampler(std::size_t num_timesteps, std::uint64_t seed) : T_(num_timesteps), seed_(seed) {
    if (T_ == 0) detail::throw_invalid("diffusion::uniform_timestep_sampler", "num_timesteps = 0 must be >= 1");
  }
  /// @brief Fills a batch of timesteps for training step `step` (draw i is a function of
  /// (seed, step, i) only, so it does not depend on the batch size); no weights are needed,
  /// since every weight is 1.
  void sample(std::uint64_t step, std::span<std::size_t> timesteps) const noexcept {
    for (std::size_t i = 0; i < timesteps.size(); ++i) timesteps[i] = detail::bounded(detail::draw_bits(seed_, step, i), T_);
  }
  /// @brief Fills a batch of timesteps for training step `step`, and their weights (all 1): the
  /// same timesteps as the two-argument form.
  /// @throws std::invalid_argument if the two spans differ in size.
  void sample(std::uint64_t step, std::span<std::size_t> timesteps, std::span<double> weights) const {
    detail::check_draw_buffers("diffusion::uniform_timestep_sampler::sample", timesteps, weights);
    sample(step, timesteps);
    for (double& w : weights) w = 1.0;
  }

 private:
  std::size_t T_;
  std::uint64_t seed_;
};

/// @brief improved DDPM's `LossSecondMomentResampler` (§3.3): keep the last `history` losses
/// of every t; until every t has that many, sample uniformly; then
/// \f$p_t \propto \sqrt{E[L_t^2]}\f$ over the history, mixed with `uniform_prob` of the uniform
/// distribution, and weight each draw by \f$1/(T p_t)\f$ so that \f$E[w\,L_t] = \frac1T\sum_t L_t\f$ (unbiased).
///
/// Any finite losses ≥ 0 are accepted, up to the largest double: the root mean square is taken
/// on losses scaled by their maximum and p on root mean squares scaled by theirs, so nothing
/// overflows (squares of 1e200 did, and gave NaN weights). A drawn timestep has p ≥ 2^-107,
/// so every weight is finite (see @ref sample).
class loss_second_moment_sampler {
 public:
  /// @param[in] num_timesteps T ≥ 1.
  /// @param[in] seed the stream's seed.
  /// @param[in] history losses kept per t, ≥ 1 (improved DDPM: 10).
  /// @param[in] uniform_prob the uniform mixing weight in [0, 1] (improved DDPM: 0.001).
  /// @throws std::invalid_argument for T = 0, history = 0, uniform_prob outside [0, 1], or
  ///         when the T·history table of losses overflows size_t or cannot be allocated.
  loss_second_moment_sampler(std::size_t num_timesteps, std::uint64_t seed, std::size_t history = 10,
                             double uniform_prob = 0.001)
      : T_(num_timesteps), seed_(seed), history_(history), uniform_prob_(uniform_prob) {
    constexpr std::string_view where = "diffusion::loss_second_moment_sampler";
    if (T_ == 0) detail::throw_invalid(where, "num_timesteps = 0 must be >= 1");
    if (history_ == 0) detail::throw_invalid(where, "history = 0 must be >= 1");
    if (!(uniform_prob_ >= 0.0 && uniform_prob_ <= 1.0))
      detail::throw_invalid(where, "uniform_prob = " + detail::to_text(uniform_prob_) + " is outside the allowed range [0, 1]");
    const std::string sizes = "num_timesteps = " + detail::to_text(T_) + " and history = " + detail::to_text(history_);
    if (history_ > losses_.max_size() / T_)
      detail::throw_invalid(where, sizes + " ask for a table of num_timesteps * history losses, more than a vector "
                                           "holds (" + detail::to_text(losses_.max_size()) + " at most)" +
                                       (history_ > std::numeric_limits<std::size_t>::max() / T_
                                            ? std::string(": the product overflows size_t")
                                            : std::string()));
    try {
      losses_.assign(T_ * history_, 0.0);
      counts_.assign(T_, 0);
      next_.assign(T_, 0);
      cdf_.assign(T_, 0.0);
    } catch (const std::bad_alloc&) {
      detail::throw_invalid(where, sizes + " ask for " + detail::to_text(T_ * history_) +
                                       " stored losses, which cannot be allocated");
    }
    refresh();
  }

  /// True once every timestep has `history` losses (before that, sampling is uniform).
  [[nodiscard]] bool warmed_up() const noexcept { return warm_ == T_; }

  /// @brief The current probabilities \f$p_t\f$ (uniform before warm-up).
  [[nodiscard]] std::vector<double> probabilities() const {
    std::vector<double> p(T_);
    double prev = 0.0;
    for (std::size_t t = 0; t < T_; ++t) {
      p[t] = cdf_[t] - prev;
      prev = cdf_[t];
    }
    return p;
  }

  /// @brief Records the losses of a batch (improved DDPM `update_with_all_losses`): the oldest
  /// loss of a full history is replaced.
  /// @throws std::invalid_argument for mismatched sizes or a negative/non-finite loss;
  ///         std::out_of_range for t ≥ T.
  void update(std::span<const std::size_t> timesteps, std::span<const double> losses) {
    constexpr std::string_view where = "diffusion::loss_second_moment_sampler::update";
    detail::check_same_size(where, "timesteps", timesteps.size(), "losses", losses.size());
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      detail::check_index(where, "timesteps[" + detail::to_text(i) + "]", timesteps[i], T_);
      if (!(losses[i] >= 0.0 && std::isfinite(losses[i])))
        detail::throw_invalid(where, "losses[" + detail::to_text(i) + "] = " + detail::to_text(losses[i]) +
                                         " must be finite and >= 0");
    }
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      const std::size_t t = timesteps[i];
      losses_[t * history_ + next_[t]] = losses[i];
      next_[t] = (next_[t] + 1) % history_;
      if (counts_[t] < history_ && ++counts_[t] == history_) ++warm_;
    }
    refresh();
  }

  /// @brief Draws a batch for training step `step`: \f$t_i \sim p\f$, weights \f$1/(T p_{t_i})\f$.
  ///
  /// p is the width of t's interval of the stored CDF, so the weights are exactly unbiased for
  /// the distribution drawn from. The uniform variate is an odd multiple of 2^-53 in (0, 1): a
  /// drawn interval reaches above 2^-53 of the total, so its width is ≥ 2^-107 and the weight
  /// is finite even where p_t is tiny (uniform_prob = 0 and losses spanning 300 decades).
  /// @throws std::invalid_argument if the two spans differ in size.
  void sample(std::uint64_t step, std::span<std::size_t> timesteps, std::span<double> weights) const {
    detail::check_draw_buffers("diffusion::loss_second_moment_sampler::sample", timesteps, weights);
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      // (2k + 1)·2^-53 for the top 52 bits k: in [2^-53, 1 − 2^-53], never 0.
      const double u = static_cast<double>((detail::draw_bits(seed_, step, i) >> 12) * 2 + 1) * 0x1p-53;
      const auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u * cdf_.back());
      const std::size_t t = std::min(static_cast<std::size_t>(it - cdf_.begin()), T_ - 1);
      timesteps[i] = t;
      const double p = cdf_[t] - (t ? cdf_[t - 1] : 0.0);
      weights[i] = 1.0 / (static_cast<double>(T_) * p);
    }
  }

 private:
  void refresh() {
    // p_t = (1 - u) sqrt(mean L^2)/sum + u/T after warm-up, 1/T before; stored as a CDF.
    // Both the root mean square and the sum are formed on scaled values (by the largest loss of
    // the history, then by the largest root mean square): no square or sum overflows.
    std::vector<double>& c = cdf_;
    double total = 0.0;
    if (warmed_up()) {
      double largest = 0.0;
      for (std::size_t t = 0; t < T_; ++t) {
        const double* l = losses_.data() + t * history_;
        const double m = *std::max_element(l, l + history_);
        double m2 = 0.0;
        if (m > 0.0)
          for (std::size_t h = 0; h < history_; ++h) m2 += (l[h] / m) * (l[h] / m);  // ≤ history
        c[t] = m * std::sqrt(m2 / static_cast<double>(history_));                     // ≤ m: finite
        largest = std::max(largest, c[t]);
      }
      if (largest > 0.0)
        for (std::size_t t = 0; t < T_; ++t) {
          c[t] /= largest;  // ≤ 1
          total += c[t];    // in [1, T]
        }
    }
    double acc = 0.0;
    for (std::size_t t = 0; t < T_; ++t) {
      const double p = warmed_up() && total > 0.0
                           ? (1.0 - uniform_prob_) * c[t] / total + uniform_prob_ / static_cast<double>(T_)
                           : 1.0 / static_cast<double>(T_);
      acc += p;
      c[t] = acc;
    }
  }

  std::size_t T_;
  std::uint64_t seed_;
  std::size_t history_;
  double uniform_prob_;
  std::vector<double> losses_;       // T × history ring buffers
  std::vector<std::size_t> counts_;  // losses recorded per t, up to history
  std::vector<std::size_t> next_;    // ring position per t
  std::vector<double> cdf_;          // cumulative p
  std::size_t warm_ = 0;             // number of t with a full history
};

}  // namespace diffusion

/// @}
