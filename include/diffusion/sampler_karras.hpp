/// @file
/// @brief The Karras et al. 2022 σ-space samplers of k-diffusion: Euler (Algorithm 2 with its
/// "churn"), Euler ancestral, Heun (Algorithm 2), and DPM-Solver++(2M) (Lu et al. 2022).
///
/// All integrate the probability-flow ODE \f$dx/d\sigma = (x - D(x;\sigma))/\sigma\f$ (Karras Eq. 4 with
/// σ(t) = t) on a descending σ list whose last entry may be 0 (karras_sigmas()), with a
/// denoiser D in σ-space (`sigma_space_model`). The churn prologue and the ancestral split
/// are written once, here, and shared. Noise: step i of row b uses stream (first_sample + b, i);
/// the initial \f$x = \sigma_0 z\f$ uses stream step `initial_noise_step`.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "execution.hpp"
#include "kernels.hpp"
#include "sampling.hpp"
#include "tensor.hpp"

/// @defgroup sampler_karras Karras-family samplers
/// @brief Euler, Euler ancestral, Heun (Karras et al. 2022, Algorithm 2), DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2).
/// @{

namespace diffusion {

/// @brief The four σ-space methods.
enum class karras_method {
  euler,            ///< First order: \f$x \leftarrow x + (\sigma_{i+1} - \hat\sigma)\,d\f$, \f$d = (x - D)/\hat\sigma\f$.
  euler_ancestral,  ///< Euler to σ_down, then noise of σ_up (k-diffusion `sample_euler_ancestral`).
  heun,             ///< Second order, two model calls per step, Euler on the last step to σ = 0 (Karras Algorithm 2).
  dpmpp_2m,         ///< DPM-Solver++(2M): second-order multistep in log σ, one call per step.
};

/// @brief Options of @ref karras_sample (k-diffusion's names and defaults).
struct karras_options {
  /// Karras' S_churn ≥ 0: γ_i = min(S_churn/N, √2 − 1) inside [S_tmin, S_tmax] (Euler and Heun only).
  double s_churn = 0.0;
  double s_tmin = 0.0;                                        ///< Lower σ bound of the churn.
  double s_tmax = std::numeric_limits<double>::infinity();    ///< Upper σ bound of the churn.
  double s_noise = 1.0;                                       ///< Scale of the added noise (churn and ancestral).
  double eta = 1.0;                                           ///< Ancestral η ∈ [0, 1] (0 = plain Euler).
  std::uint64_t first_sample = 0;                             ///< Stream index of row 0.
  bool draw_initial_noise = true;                             ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;                                   ///< Scan every model output.
};

/// @brief The ancestral split of a step from σ_from to σ_to (k-diffusion `get_ancestral_step`):
/// \f$\sigma_\uparrow = \min\!\left(\sigma_{to},\ \eta\sqrt{\sigma_{to}^2(\sigma_{from}^2 - \sigma_{to}^2)/\sigma_{from}^2}\right)\f$,
/// \f$\sigma_\downarrow = \sqrt{\sigma_{to}^2 - \sigma_\uparrow^2}\f$, so that a deterministic move to σ_down
/// plus noise of σ_up lands at σ_to in distribution.
struct ancestral_split {
  double sigma_down;  ///< σ↓.
  double sigma_up;    ///< σ↑.
};

/// @brief Computes @ref ancestral_split for 0 ≤ σ_to < σ_from and η ≥ 0.
inline ancestral_split ancestral_step(double sigma_from, double sigma_to, double eta) {
  if (eta == 0.0 || sigma_to == 0.0) return {sigma_to, 0.0};
  const double up = std::min(sigma_to, eta * sigma_to * std::sqrt(1.0 - (sigma_to / sigma_from) * (sigma_to / sigma_from)));
  return {std::sqrt((sigma_to - up) * (sigma_to + up)), up};
}

/// @brief The churn of Karras Algorithm 2, lines 4–6: \f$\gamma = \min(S_\text{churn}/N, \sqrt2 - 1)\f$ if
/// \f$S_\text{tmin} \le \sigma \le S_\text{tmax}\f$ else 0; \f$\hat\sigma = \sigma(1 + \gamma)\f$.
/// @param[in] opt options; @param[in] sigma σ_i; @param[in] steps N (the number of steps).
/// @return \f$\hat\sigma\f$ (σ itself when there is no churn).
inline double churned_sigma(const karras_options& opt, double sigma, std::size_t steps) {
  if (opt.s_churn <= 0.0 || sigma < opt.s_tmin || sigma > opt.s_tmax) return sigma;
  const double gamma = std::min(opt.s_churn / static_cast<double>(steps), std::numbers::sqrt2 - 1.0);
  return sigma * (1.0 + gamma);
}

/// @brief One Euler step of the probability-flow ODE: \f$x' = x + (\sigma_{to} - \sigma)\frac{x - D}{\sigma}
/// = \frac{\sigma_{to}}{\sigma}x + \left(1 - \frac{\sigma_{to}}{\sigma}\right)D\f$ (Karras Algorithm 2, line 8; DDIM in σ-space).
/// @param[in] x state at σ; @param[in] denoised D(x; σ); @param[in] sigma σ > 0; @param[in] sigma_to target σ ≥ 0;
/// @param[out] out may alias x or denoised; @param[in] policy threads (bit-identical for any count).
///
/// Evaluated as kernels::affine2 with coefficients r = σ_to/σ and 1 − r rounded to T: error
/// \f$\le 2u(|r x| + |(1-r)D|)\f$ beyond the rounding of the coefficients.
template <real_scalar T, execution_policy P = sequential_policy>
void euler_step(std::span<const T> x, std::span<const T> denoised, double sigma, double sigma_to, std::span<T> out,
                const P& policy = P{}) {
  const double r = sigma_to / sigma;
  kernels::affine2(static_cast<T>(r), x, static_cast<T>(1.0 - r), denoised, out, policy);
}

namespace detail {

inline void check_sigma_list(std::string_view where, std::span<const double> sigmas) {
  if (sigmas.size() < 2) throw_invalid(where, "sigmas.size() = " + to_text(sigmas.size()) + " must be >= 2");
  for (std::size_t i = 0; i < sigmas.size(); ++i) {
    const bool last = i + 1 == sigmas.size();
    if (!(std::isfinite(sigmas[i]) && (sigmas[i] > 0.0 || (last && sigmas[i] == 0.0))))
      throw_invalid(where, "sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) +
                               " must be finite and > 0 (only the last may be 0)");
    if (i > 0 && !(sigmas[i] < sigmas[i - 1]))
      throw_invalid(where, "sigmas must be strictly decreasing: sigmas[" + to_text(i) + "] = " + to_text(sigmas[i]) +
                               " >= sigmas[" + to_text(i - 1) + "] = " + to_text(sigmas[i - 1]));
  }
}

inline void check_karras_options(std::string_view where, const karras_options& o) {
  if (!(o.s_churn >= 0.0 && std::isfinite(o.s_churn)))
    throw_invalid(where, "s_churn = " + to_text(o.s_churn) + " is outside the allowed range [0, inf)");
  if (!(o.s_noise >= 0.0 && std::isfinite(o.s_noise)))
    throw_invalid(where, "s_noise = " + to_text(o.s_noise) + " is outside the allowed range [0, inf)");
  if (!(o.eta >= 0.0 && o.eta <= 1.0))
    throw_invalid(where, "eta = " + to_text(o.eta) + " is outside the allowed range [0, 1]");
  if (!(o.s_tmin <= o.s_tmax))
    throw_invalid(where, "s_tmin = " + to_text(o.s_tmin) + " must be <= s_tmax = " + to_text(o.s_tmax));
}

}  // namespace detail

/// @brief Samples with one of the Karras-family methods over a descending σ list.
///
/// Each step i, from σ_i to σ_{i+1}:
/// - churn (Euler, Heun): \f$\hat\sigma\f$ = @ref churned_sigma, \f$x \leftarrow x + \sqrt{\hat\sigma^2 - \sigma_i^2}\,S_\text{noise}\,z\f$;
/// - Euler: @ref euler_step from \f$\hat\sigma\f$ to σ_{i+1};
/// - Euler ancestral: Euler to σ_down, then \f$x \leftarrow x + S_\text{noise}\sigma_\uparrow z\f$ (@ref ancestral_step);
/// - Heun: Euler to \f$x_2\f$, then \f$x \leftarrow x + (\sigma_{i+1} - \hat\sigma)(d + d_2)/2\f$ with \f$d_2\f$ at \f$(x_2, \sigma_{i+1})\f$;
///   plain Euler when σ_{i+1} = 0;
/// - DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, with λ = −log σ, h = λ_{i+1} − λ_i):
///   \f$x \leftarrow \frac{\sigma_{i+1}}{\sigma_i}x - \operatorname{expm1}(-h)\,\hat D\f$, \f$\hat D = (1 + \frac1{2r})D_i - \frac1{2r}D_{i-1}\f$,
///   \f$r = h_{i-1}/h\f$, first order at the first step and when σ_{i+1} = 0.
///
/// Orders of convergence (measured in tests/test_sampler_karras.cpp on Gaussian data): Euler 1,
/// Heun 2, DPM-Solver++(2M) 2.
/// @param[in] method which sampler.
/// @param[in] D the σ-space denoiser (@ref sigma_space_model, or any callable of its shape).
/// @param[in,out] x rows × n: the state at σ_0 in (or drawn), the sample out.
/// @param[in] rows batch size.
/// @param[in] noise the noise source.
/// @param[in] sigmas strictly decreasing, positive, the last may be 0.
/// @param[in] opt options.
/// @param[in] hooks callback, workspace, context.
/// @throws std::invalid_argument for a bad σ list, options or sizes; std::domain_error for non-finite model output.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
sample_result karras_sample(karras_method method, SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                            std::span<const double> sigmas, const karras_options& opt = {},
                            const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::karras_sample";
  detail::check_sigma_list(where, sigmas);
  detail::check_karras_options(where, opt);
  auto xs = as_mutable_span(x);
  const std::size_t n = detail::sampler_rows(where, xs.size(), rows);
  sampler_workspace<T> local;
  sampler_workspace<T>& ws = hooks.workspace ? *hooks.workspace : local;
  if constexpr (requires { D.output_width(n); }) ws.reserve(rows, n, D.output_width(n));
  else ws.reserve(rows, n, n);
  const std::size_t m = rows * n, N = sigmas.size() - 1;
  auto den = std::span<T>(ws.x0).first(m);      // D(x; sigma)
  auto z = std::span<T>(ws.aux).first(m);       // noise
  auto x2 = std::span<T>(ws.aux2).first(m);     // Heun's second point
  auto hist = std::span<T>(ws.aux3).first(m);   // Heun's d_2 / DPM-Solver++'s previous D
  if (opt.draw_initial_noise) detail::fill_initial_sigma_noise(noise, opt.first_sample, xs, rows, n, sigmas[0]);
  auto denoise = [&](std::span<const T> at, double sigma, std::size_t step) {
    detail::denoise_at(where, D, at, sigma, den, ws, hooks.context, opt.check_finite, step);
  };
  sample_result result{};
  double h_last = 0.0;
  const parallel_policy& pol = hooks.execution;
  using kernels::detail::load;
  for (std::size_t i = 0; i < N; ++i) {
    const double s_i = sigmas[i], s_next = sigmas[i + 1];
    double s_hat = s_i;
    if (method == karras_method::euler || method == karras_method::heun) {
      s_hat = churned_sigma(opt, s_i, N);
      if (s_hat > s_i) {  // x += sqrt(s_hat^2 - s_i^2) s_noise z, the noise generated in the kernel for Philox
        const T c = static_cast<T>(std::sqrt((s_hat - s_i) * (s_hat + s_i)) * opt.s_noise);
        kernels::add_noise(c, std::span<const T>(xs), detail::step_noise(noise, opt.first_sample, i, z, rows, n), xs, pol);
      }
    }
    denoise(xs, s_hat, i);
    ++result.model_calls;
    switch (method) {
      case karras_method::euler:
        euler_step<T>(xs, den, s_hat, s_next, xs, pol);
        break;
      case karras_method::euler_ancestral: {
        const ancestral_split a = ancestral_step(s_i, s_next, opt.eta);
        if (a.sigma_up > 0.0) {  // Euler to sigma_down and + sigma_up s_noise z in one pass
          const double r = a.sigma_down / s_i;
          kernels::affine2_noise(static_cast<T>(r), std::span<const T>(xs), static_cast<T>(1.0 - r),
                                 std::span<const T>(den), static_cast<T>(a.sigma_up * opt.s_noise),
                                 detail::step_noise(noise, opt.first_sample, i, z, rows, n), xs, pol);
        } else {
          euler_step<T>(xs, den, s_i, a.sigma_down, xs, pol);
        }
        break;
      }
      case karras_method::heun: {
        if (s_next == 0.0) {
          euler_step<T>(xs, den, s_hat, s_next, xs, pol);
          break;
        }
        // d = (x - D)/s_hat kept in z; x2 = x + (s_next - s_hat) d.
        const T inv = static_cast<T>(1.0 / s_hat), dt = static_cast<T>(s_next - s_hat);
        kernels::detail::for_each_lane<T>(pol, m, [&](auto lane, std::size_t k) {
          using V = typename decltype(lane)::type;
          const V xv = load<V>(xs.data() + k), d = (xv - load<V>(den.data() + k)) * V(inv);
          kernels::detail::store(z.data() + k, d);
          kernels::detail::store(x2.data() + k, kernels::madd(V(dt), d, xv));
        });
        denoise(x2, s_next, i);
        ++result.model_calls;
        // x += (s_next - s_hat)(d + d2)/2, d2 = (x2 - D2)/s_next; d + d2 is a multiply-add.
        const T inv2 = static_cast<T>(1.0 / s_next), half_dt = static_cast<T>(0.5 * (s_next - s_hat));
        kernels::detail::for_each_lane<T>(pol, m, [&](auto lane, std::size_t k) {
          using V = typename decltype(lane)::type;
          const V sum = kernels::madd(load<V>(x2.data() + k) - load<V>(den.data() + k), V(inv2), load<V>(z.data() + k));
          kernels::detail::store(xs.data() + k, kernels::madd(V(half_dt), sum, load<V>(xs.data() + k)));
        });
        break;
      }
      case karras_method::dpmpp_2m: {
        // x <- (s_next/s_i) x - expm1(-h) D_hat; sigma_fn(t_next)/sigma_fn(t) = s_next/s_i.
        const double ratio = s_next / s_i;
        const double em = s_next == 0.0 ? -1.0 : std::expm1(-(std::log(s_i) - std::log(s_next)));  // expm1(-h)
        if (i == 0 || s_next == 0.0) {
          kernels::affine2(static_cast<T>(ratio), std::span<const T>(xs), static_cast<T>(-em), std::span<const T>(den), xs);
        } else {
          const double h = std::log(s_i) - std::log(s_next), r = h_last / h;
          const T a = static_cast<T>(1.0 + 1.0 / (2.0 * r)), b = static_cast<T>(-1.0 / (2.0 * r));
          const T cx = static_cast<T>(ratio), cd = static_cast<T>(-em);
          // x <- cx x + cd (a D + b D_prev), and D_prev <- D, in one pass.
          kernels::detail::for_each_lane<T>(pol, m, [&](auto lane, std::size_t k) {
            using V = typename decltype(lane)::type;
            const V dv = load<V>(den.data() + k);
            const V dh = kernels::madd(V(a), dv, V(b) * load<V>(hist.data() + k));
            kernels::detail::store(xs.data() + k, kernels::madd(V(cx), load<V>(xs.data() + k), V(cd) * dh));
            kernels::detail::store(hist.data() + k, dv);
          });
        }
        if (s_next > 0.0) h_last = std::log(s_i) - std::log(s_next);
        if (i == 0 || s_next == 0.0) std::copy(den.begin(), den.end(), hist.begin());
        break;
      }
    }
    ++result.steps;
    if (hooks.on_step && !hooks.on_step(step_info<T>{i + 1, N, ws.timesteps[0], s_i, xs, den})) {
      result.completed = false;
      break;
    }
  }
  return result;
}

}  // namespace diffusion

/// @}
