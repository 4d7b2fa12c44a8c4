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
#include <span>
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
class uniform_timestep_sampler {
 public:
  /// @param[in] num_timesteps T ≥ 1.
  /// @param[in] seed the stream's seed.
  uniform_timestep_sampler(std::size_t num_timesteps, std::uint64_t seed) : T_(num_timesteps), seed_(seed) {
    if (T_ == 0) detail::throw_invalid("diffusion::uniform_timestep_sampler", "num_timesteps = 0 must be >= 1");
  }
  /// @brief Fills a batch of timesteps for training step `step`, and their weights (all 1).
  /// @throws std::invalid_argument if the two spans differ in size.
  void sample(std::uint64_t step, std::span<std::size_t> timesteps, std::span<double> weights) const {
    detail::check_draw_buffers("diffusion::uniform_timestep_sampler::sample", timesteps, weights);
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      timesteps[i] = detail::bounded(detail::draw_bits(seed_, step, i), T_);
      weights[i] = 1.0;
    }
  }

 private:
  std::size_t T_;
  std::uint64_t seed_;
};

/// @brief improved DDPM's `LossSecondMomentResampler` (§3.3): keep the last `history` losses
/// of every t; until every t has that many, sample uniformly; then
/// \f$p_t \propto \sqrt{E[L_t^2]}\f$ over the history, mixed with `uniform_prob` of the uniform
/// distribution, and weight each draw by \f$1/(T p_t)\f$ so that \f$E[w\,L_t] = \frac1T\sum_t L_t\f$ (unbiased).
class loss_second_moment_sampler {
 public:
  /// @param[in] num_timesteps T ≥ 1.
  /// @param[in] seed the stream's seed.
  /// @param[in] history losses kept per t, ≥ 1 (improved DDPM: 10).
  /// @param[in] uniform_prob the uniform mixing weight in [0, 1] (improved DDPM: 0.001).
  loss_second_moment_sampler(std::size_t num_timesteps, std::uint64_t seed, std::size_t history = 10,
                             double uniform_prob = 0.001)
      : T_(num_timesteps), seed_(seed), history_(history), uniform_prob_(uniform_prob) {
    constexpr std::string_view where = "diffusion::loss_second_moment_sampler";
    if (T_ == 0) detail::throw_invalid(where, "num_timesteps = 0 must be >= 1");
    if (history_ == 0) detail::throw_invalid(where, "history = 0 must be >= 1");
    if (!(uniform_prob_ >= 0.0 && uniform_prob_ <= 1.0))
      detail::throw_invalid(where, "uniform_prob = " + detail::to_text(uniform_prob_) + " is outside the allowed range [0, 1]");
    losses_.assign(T_ * history_, 0.0);
    counts_.assign(T_, 0);
    next_.assign(T_, 0);
    cdf_.assign(T_, 0.0);
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
  void sample(std::uint64_t step, std::span<std::size_t> timesteps, std::span<double> weights) const {
    detail::check_draw_buffers("diffusion::loss_second_moment_sampler::sample", timesteps, weights);
    for (std::size_t i = 0; i < timesteps.size(); ++i) {
      const double u = static_cast<double>(detail::draw_bits(seed_, step, i) >> 11) * 0x1p-53;  // [0, 1)
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
    std::vector<double>& c = cdf_;
    double total = 0.0;
    if (warmed_up()) {
      for (std::size_t t = 0; t < T_; ++t) {
        double m2 = 0.0;
        for (std::size_t h = 0; h < history_; ++h) m2 += losses_[t * history_ + h] * losses_[t * history_ + h];
        c[t] = std::sqrt(m2 / static_cast<double>(history_));
        total += c[t];
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
