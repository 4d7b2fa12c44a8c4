/// @file
/// @brief The two-stage ("single-step") σ-space samplers of k-diffusion: DPM2 (k-diffusion
/// `sample_dpm_2`, diffusers `KDPM2DiscreteScheduler`), DPM2-ancestral (`sample_dpm_2_ancestral`,
/// `KDPM2AncestralDiscreteScheduler`), DPM++ 2S-ancestral (`sample_dpmpp_2s_ancestral`, Lu et al.
/// 2022b Algorithm 1 with r = 1/2) and DPM++ SDE (`sample_dpmpp_sde`, r = 1/2), each as two stage
/// functions the caller calls the model between (as @ref diffusion::heun_predict "heun_predict" /
/// @ref diffusion::heun_correct "heun_correct") and as a loop over a σ list.
///
/// Every step runs between three levels of the state's process (x = αx₀ + σε): the start, the
/// stage level where the model is called next, and the target (@ref diffusion::two_stage_levels).
/// All four methods are written in the ratio ς = σ/α (Karras' σ of the state x/α; λ = −log ς is
/// the half log-SNR), so one body serves σ-space (α = 1), variance-preserving and rectified-flow
/// states. The start must have α > 0 (finite ς): a flow list cannot start at σ = 1.
/// @code
/// diffusion::two_stage_state<float> st{x_mid, first_denoised};   // caller-owned buffers
/// for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
///   const auto L = diffusion::midpoint_levels({sigmas[i], sigmas[i + 1]});
///   D(x, sigmas[i], denoised);                                    // your model call
///   if (diffusion::dpm2_predict<float>(L, denoised, x, st)) {
///     D(st.x_mid, L.mid.sigma, denoised);                         // at the stage level
///     diffusion::dpm2_correct<float>(L, denoised, x, st, x);
///   } else {
///     diffusion::euler_step<float>({sigmas[i], sigmas[i + 1]}, denoised, x);  // to σ = 0
///   }
/// }
/// @endcode
///
/// Noise: the ancestral methods draw one normal per element and step (stream step i of the loop,
/// as @ref diffusion::euler_ancestral_sample). DPM++ SDE draws two independent normals z₁, z₂ per
/// element and step (stream steps 2i and 2i + 1) where k-diffusion reads its Brownian tree twice, over
/// [σ_m, σ] and over [σ_next, σ]: the second stage adds \f$\rho z_1 + \sqrt{1-\rho^2}\,z_2\f$,
/// \f$\rho = \sqrt{(\sigma - \sigma_m)/(\sigma - \sigma_{next})}\f$ (ς in place of σ for other processes),
/// which is the exact joint law of the tree's two normalized increments; increments of different
/// steps are independent in the tree as here. Two uncorrelated draws instead would bias the
/// chain's variance by 1e-2 at 400 steps on Gaussian data (docs/conventions.md).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../process/parameterization.hpp"
#include "common.hpp"
#include "ode.hpp"
#include "sde.hpp"
#include "sigma_common.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

/// @brief The three levels of a two-stage step: the start, the stage level where the model is called
/// between the stages, and the target. Their ratios ς = σ/α must satisfy ς_from > ς_mid > ς_to ≥ 0.
/// The target of an ancestral step is its σ↓ level, \f$(\alpha_{to}, \alpha_{to}\varsigma_\downarrow)\f$,
/// which need not lie on the process's curve (only σ/α and α enter the formulas).
struct two_stage_levels {
  noise_level from;  ///< The level the model was evaluated at first (α > 0, σ > 0).
  noise_level mid;   ///< The stage level (on the process's curve: the model is called there).
  noise_level to;    ///< The level the step lands on (σ = 0: the data; the methods then take an Euler step).
};

/// @brief The midpoint in log σ: \f$\exp(\tfrac12(\log a + \log b)) = \sqrt{ab}\f$ (diffusers' KDPM2
/// `sigmas.log().lerp(sigmas_next.log(), 0.5).exp()`; k-diffusion's DPM2 midpoint), 0 when b = 0.
/// Evaluated as √a·√b, which neither overflows nor underflows for finite positive a, b.
/// @pre a > 0, b ≥ 0 (not checked: callers validate their steps).
inline double log_midpoint(double a, double b) noexcept { return b == 0.0 ? 0.0 : std::sqrt(a) * std::sqrt(b); }

/// @brief The σ-space levels of a step with its stage at the log-σ midpoint (α = 1 throughout):
/// {σ, √(σ σ_next), σ_next}, the λ midpoint r = 1/2 of Lu et al. 2022b Algorithm 1.
/// @param[in] s the step (σ > 0, σ_next ≥ 0; σ_next = 0 gives mid = 0: the step is then Euler).
inline two_stage_levels midpoint_levels(sigma_step s) noexcept {
  return {noise_level::exploding(s.sigma), noise_level::exploding(log_midpoint(s.sigma, s.sigma_next)),
          noise_level::exploding(s.sigma_next)};
}

/// @brief The σ-space levels of an ancestral two-stage step (k-diffusion `sample_dpm_2_ancestral`,
/// `sample_dpmpp_2s_ancestral`): the deterministic part goes from σ to σ↓ with its stage at
/// √(σ σ↓), then noise of σ↑ is added (@ref ancestral_step).
struct ancestral_two_stage {
  two_stage_levels levels;  ///< {σ, √(σ σ↓), σ↓}.
  double sigma_up;          ///< σ↑: the added noise is \f$S_\text{noise}\sigma_\uparrow z\f$.
};

/// @brief Computes @ref ancestral_two_stage for a σ-space step and η ∈ [0, 1].
/// @throws std::invalid_argument for a bad step or η outside [0, 1].
inline ancestral_two_stage ancestral_midpoint_levels(sigma_step s, double eta) {
  constexpr std::string_view where = "diffusion::ancestral_midpoint_levels";
  detail::check_sigma_step(where, s);
  if (!(s.sigma_next < s.sigma))
    detail::throw_invalid(where, "sigma_next = " + detail::to_text(s.sigma_next) + " must be < sigma = " + detail::to_text(s.sigma));
  detail::check_eta_and_s_noise(where, eta, 1.0);
  const ancestral_split a = ancestral_step(s.sigma, s.sigma_next, eta);
  return {midpoint_levels({s.sigma, a.sigma_down}), a.sigma_up};
}

/// @brief The buffers a two-stage step carries between its stages, caller-owned, of the state's size.
template <real_scalar T>
struct two_stage_state {
  std::span<T> x_mid;     ///< The stage point (written by the first stage): evaluate D there at the stage level.
  std::span<T> denoised;  ///< D at the start (written by the DPM++ first stages; unused by DPM2, may be empty there).
  /// The first stage's normals z₁ (written and read by DPM++ SDE where it adds noise, for the correlated
  /// second draw; unused otherwise, may be empty).
  std::span<T> noise{};
};

namespace detail {

/// ς = σ/α of a level with α > 0.
inline double level_ratio(const noise_level& l) noexcept { return l.sigma / l.alpha; }

/// Requires valid two-stage levels: start α > 0 and σ > 0 finite, target finite and ≥ 0, and,
/// unless the target is the data, a stage level strictly between in ς.
inline void check_two_stage(std::string_view where, const two_stage_levels& L) {
  check_level_step(where, {L.from, L.to});
  if (!(L.from.alpha > 0.0))
    throw_invalid(where, "the step starts at alpha = " + to_text(L.from.alpha) +
                             "; a two-stage step needs alpha > 0 (a finite log-SNR: a flow list cannot start at sigma = 1)");
  if (L.to.sigma == 0.0) return;
  if (!(L.to.alpha > 0.0))
    throw_invalid(where, "the step ends at alpha = " + to_text(L.to.alpha) + " with sigma > 0; alpha must be > 0");
  const double r = level_ratio(L.from), rt = level_ratio(L.to);
  if (!(L.mid.alpha > 0.0 && std::isfinite(L.mid.alpha) && std::isfinite(L.mid.sigma)))
    throw_invalid(where, "the stage level (alpha = " + to_text(L.mid.alpha) + ", sigma = " + to_text(L.mid.sigma) +
                             ") must be finite with alpha > 0");
  const double rm = level_ratio(L.mid);
  if (!(rt < rm && rm < r))
    throw_invalid(where, "the stage level's sigma/alpha = " + to_text(rm) + " must lie strictly between the target's " +
                             to_text(rt) + " and the start's " + to_text(r));
}

/// Requires a noise operand that fits where one is passed, and one where the stage adds noise.
template <real_scalar T, class Z>
void check_stage_noise(std::string_view where, const Z& z, std::size_t n, double scale, std::string_view stage) {
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (scale > 0.0)
      throw_invalid(where, std::string(stage) + " adds noise (scale " + to_text(scale) + " > 0) but no noise was passed");
  } else {
    check_noise_operand<T>(where, z, n);
  }
}

/// The first stage every method shares: from the start to the stage level, a DDIM (Euler in ς) step
/// to the σ↓ of the split ς → ς_mid (η = 0: the stage level itself), plus its σ↑ noise:
/// \f$x_m = \frac{\sigma_d}{\sigma}x + (\alpha_m - \alpha\frac{\sigma_d}{\sigma})D + \alpha_m\varsigma_\uparrow S_\text{noise} z\f$,
/// \f$\sigma_d = \alpha_m\varsigma_\downarrow\f$ (= σ_m at η = 0; @ref diffusion::euler_step "euler_step"'s coefficients then).
/// Writes x_mid, D into state.denoised when `keep_denoised`, and z into state.noise when the stage
/// draws noise and `keep_noise`. Returns false (nothing written) where the target is the data.
template <real_scalar T, class Z, execution_policy P>
bool first_stage(std::string_view where, const two_stage_levels& L, double eta, double s_noise,
                 std::span<const T> denoised, std::span<const T> x, const two_stage_state<T>& state, bool keep_denoised,
                 bool keep_noise, const Z& z, const P& policy) {
  check_two_stage(where, L);
  check_eta_and_s_noise(where, eta, s_noise);
  if (L.to.sigma == 0.0) return false;
  check_same_size(where, "denoised", denoised.size(), "x", x.size());
  check_same_size(where, "state.x_mid", state.x_mid.size(), "x", x.size());
  check_no_partial_overlap(where, "state.x_mid", std::span<const T>(state.x_mid), "x", x);
  check_no_partial_overlap(where, "state.x_mid", std::span<const T>(state.x_mid), "denoised", denoised);
  if (state.x_mid.data() == x.data())
    throw_invalid(where, "state.x_mid must not be x: the second stage reads the step's start again");
  if (keep_denoised) {
    if (state.denoised.data() == state.x_mid.data())
      throw_invalid(where, "state.denoised must not be state.x_mid");
    check_same_size(where, "state.denoised", state.denoised.size(), "x", x.size());
    check_no_partial_overlap(where, "state.denoised", std::span<const T>(state.denoised), "x", x);
  }
  const ancestral_split a = ancestral_step(level_ratio(L.from), level_ratio(L.mid), eta);
  const double sigma_d = eta == 0.0 ? L.mid.sigma : L.mid.alpha * a.sigma_down;
  const double cx_d = sigma_d / L.from.sigma;
  const double noise_scale = L.mid.alpha * a.sigma_up * s_noise;
  check_stage_noise<T>(where, z, x.size(), noise_scale, "the first stage");
  const T cx = static_cast<T>(cx_d), cd = static_cast<T>(L.mid.alpha - L.from.alpha * cx_d);
  const T cz = coefficient<T>(where, "the first stage's noise scale alpha_mid * sigma_up * s_noise", noise_scale);
  auto body = [cx, cd, cz](auto xv, auto dv, auto... zv) {
    using V = decltype(xv);
    const V det = kernels::madd(V(cx), xv, V(cd) * dv);
    if constexpr (sizeof...(zv) == 1)
      return kernels::madd(V(cz), zv..., det);
    else
      return det;
  };
  bool ok;
  if constexpr (!std::is_same_v<Z, kernels::no_noise>) {
    if (keep_noise && noise_scale > 0.0) {
      check_same_size(where, "state.noise", state.noise.size(), "x", x.size());
      check_no_partial_overlap(where, "state.noise", std::span<const T>(state.noise), "x", x);
      if (state.noise.data() == state.x_mid.data() || state.noise.data() == state.denoised.data())
        throw_invalid(where, "state.noise must be a buffer of its own");
      ok = kernels::map(policy, z, kernels::outputs(state.x_mid, state.denoised, state.noise),
                        kernels::inputs<T>(x, denoised), [body](auto xv, auto dv, auto zv) {
                          using V = decltype(xv);
                          return std::array<V, 3>{body(xv, dv, zv), dv, zv};
                        });
      require_finite_step(where, ok, "the first stage");
      return true;
    }
  }
  if (keep_denoised)
    ok = kernels::map(policy, z, kernels::outputs(state.x_mid, state.denoised), kernels::inputs<T>(x, denoised),
                      [body](auto xv, auto dv, auto... zv) {
                        using V = decltype(xv);
                        return std::array<V, 2>{body(xv, dv, zv...), dv};
                      });
  else
    ok = kernels::map(policy, z, kernels::outputs(state.x_mid), kernels::inputs<T>(x, denoised), body);
  require_finite_step(where, ok, "the first stage");
  return true;
}

/// The checks of a second stage's arrays.
template <real_scalar T>
void check_second_stage(std::string_view where, const two_stage_levels& L, std::span<const T> denoised,
                        std::span<const T> x, const two_stage_state<T>& state, std::span<T> out, bool reads_denoised) {
  check_two_stage(where, L);
  if (!(L.to.sigma > 0.0))
    throw_invalid(where, "the target has sigma = 0: the last step has no second stage (take euler_step)");
  check_same_size(where, "denoised", denoised.size(), "x", x.size());
  check_same_size(where, "out", out.size(), "x", x.size());
  check_same_size(where, "state.x_mid", state.x_mid.size(), "x", x.size());
  check_no_partial_overlap(where, "x", x, "out", std::span<const T>(out));
  check_no_partial_overlap(where, "state.x_mid", std::span<const T>(state.x_mid), "out", std::span<const T>(out));
  check_no_partial_overlap(where, "denoised", denoised, "out", std::span<const T>(out));
  if (reads_denoised) {
    check_same_size(where, "state.denoised", state.denoised.size(), "x", x.size());
    check_no_partial_overlap(where, "state.denoised", std::span<const T>(state.denoised), "out", std::span<const T>(out));
  }
}

/// DPM2's second stage: the slope at the stage point over the whole step in ς,
/// \f$x' = \alpha_{to}\left(\frac{x}{\alpha} + (\varsigma_{to} - \varsigma)\frac{x_m/\alpha_m - D_m}{\varsigma_m}\right) + c_z z\f$.
template <real_scalar T, class Z, execution_policy P>
void dpm2_second(std::string_view where, const two_stage_levels& L, std::span<const T> denoised,
                 std::span<const T> x, const two_stage_state<T>& state, std::span<T> out, const Z& z,
                 double noise_scale, const P& policy) {
  check_second_stage<T>(where, L, denoised, x, state, out, false);
  if (!(noise_scale >= 0.0 && std::isfinite(noise_scale)))
    throw_invalid(where, "noise_scale = " + to_text(noise_scale) + " is outside the allowed range [0, inf)");
  check_stage_noise<T>(where, z, x.size(), noise_scale, "the second stage");
  const double dr = level_ratio(L.to) - level_ratio(L.from), rm = level_ratio(L.mid);
  // x' = a x + b x_m + c D_m (+ cz z): a = α_to/α, b = α_to (ς_to − ς)/σ_m, c = −α_to (ς_to − ς)/ς_m.
  const T a = static_cast<T>(L.to.alpha / L.from.alpha);
  const T b = coefficient<T>(where, "the stage point's coefficient", L.to.alpha * dr / L.mid.sigma);
  const T c = coefficient<T>(where, "the stage slope's coefficient", -L.to.alpha * dr / rm);
  const T cz = coefficient<T>(where, "noise_scale", noise_scale);
  const bool ok = kernels::map(policy, z, kernels::outputs(out),
                               kernels::inputs<T>(x, std::span<const T>(state.x_mid), denoised),
                               [a, b, c, cz](auto xv, auto mv, auto dv, auto... zv) {
                                 using V = decltype(xv);
                                 const V det = kernels::madd(V(a), xv, kernels::madd(V(b), mv, V(c) * dv));
                                 if constexpr (sizeof...(zv) == 1)
                                   return kernels::madd(V(cz), zv..., det);
                                 else
                                   return det;
                               });
  require_finite_step(where, ok, "DPM2's second stage");
}

/// The DPM-Solver++ second stage (Lu et al. 2022b Algorithm 1, line 5 and its SDE form): with the split
/// ς → ς_to of η (η = 0: ς↓ = ς_to), \f$\sigma_d = \alpha_{to}\varsigma_\downarrow\f$,
/// \f$x' = \frac{\sigma_d}{\sigma}x + (\alpha_{to} - \alpha\frac{\sigma_d}{\sigma})\hat D + c_z z\f$,
/// \f$\hat D = (1 - \frac1{2r})D + \frac1{2r}D_m\f$, r = (λ_m − λ)/(λ_to − λ), and
/// \f$c_z = \alpha_{to}\varsigma_\uparrow S_\text{noise}\f$ + `extra_noise` (one of the two is 0). Where η
/// adds noise, z is the Brownian pair's second member: \f$\rho z_1 + \sqrt{1-\rho^2}\,z_2\f$ with the
/// first stage's z₁ (state.noise), \f$\rho = \sqrt{(\varsigma - \varsigma_m)/(\varsigma - \varsigma_{to})}\f$.
template <real_scalar T, class Z, execution_policy P>
void dpmpp_second(std::string_view where, const two_stage_levels& L, double eta, double s_noise, double extra_noise,
                  std::span<const T> denoised, std::span<const T> x, const two_stage_state<T>& state, std::span<T> out,
                  const Z& z, const P& policy) {
  check_second_stage<T>(where, L, denoised, x, state, out, true);
  check_eta_and_s_noise(where, eta, s_noise);
  if (!(extra_noise >= 0.0 && std::isfinite(extra_noise)))
    throw_invalid(where, "noise_scale = " + to_text(extra_noise) + " is outside the allowed range [0, inf)");
  const double lam = std::log(L.from.alpha) - std::log(L.from.sigma);
  const double h = (std::log(L.to.alpha) - std::log(L.to.sigma)) - lam;
  const double r = ((std::log(L.mid.alpha) - std::log(L.mid.sigma)) - lam) / h;
  const double fac = 1.0 / (2.0 * r);
  const ancestral_split sp = ancestral_step(level_ratio(L.from), level_ratio(L.to), eta);
  const double sigma_d = eta == 0.0 ? L.to.sigma : L.to.alpha * sp.sigma_down;
  const double cx_d = sigma_d / L.from.sigma;
  const double noise_scale = L.to.alpha * sp.sigma_up * s_noise + extra_noise;
  check_stage_noise<T>(where, z, x.size(), noise_scale, "the second stage");
  const double cdh = L.to.alpha - L.from.alpha * cx_d;
  const T cx = static_cast<T>(cx_d), c0 = static_cast<T>(cdh * (1.0 - fac)), c1 = static_cast<T>(cdh * fac);
  const T cz = coefficient<T>(where, "the second stage's noise scale", noise_scale);
  if constexpr (!std::is_same_v<Z, kernels::no_noise>) {
    if (eta > 0.0 && noise_scale > 0.0) {
      // The tree's two increments over [σ_m, σ] ⊂ [σ_to, σ] (in ς): correlation ρ, from z₁ and a fresh z₂.
      check_same_size(where, "state.noise", state.noise.size(), "x", x.size());
      check_no_partial_overlap(where, "state.noise", std::span<const T>(state.noise), "out", std::span<const T>(out));
      const double rf = level_ratio(L.from), rho = std::sqrt((rf - level_ratio(L.mid)) / (rf - level_ratio(L.to)));
      const T c1z = static_cast<T>(noise_scale * rho), c2z = static_cast<T>(noise_scale * std::sqrt((1.0 - rho) * (1.0 + rho)));
      const bool ok = kernels::map(
          policy, z, kernels::outputs(out),
          kernels::inputs<T>(x, std::span<const T>(state.denoised), denoised, std::span<const T>(state.noise)),
          [cx, c0, c1, c1z, c2z](auto xv, auto d0, auto dm, auto z1, auto z2) {
            using V = decltype(xv);
            const V det = kernels::madd(V(cx), xv, kernels::madd(V(c0), d0, V(c1) * dm));
            return kernels::madd(V(c2z), z2, kernels::madd(V(c1z), z1, det));
          });
      require_finite_step(where, ok, "the DPM-Solver++ SDE second stage");
      return;
    }
  }
  const bool ok = kernels::map(policy, z, kernels::outputs(out),
                               kernels::inputs<T>(x, std::span<const T>(state.denoised), denoised),
                               [cx, c0, c1, cz](auto xv, auto d0, auto dm, auto... zv) {
                                 using V = decltype(xv);
                                 const V det = kernels::madd(V(cx), xv, kernels::madd(V(c0), d0, V(c1) * dm));
                                 if constexpr (sizeof...(zv) == 1)
                                   return kernels::madd(V(cz), zv..., det);
                                 else
                                   return det;
                               });
  require_finite_step(where, ok, "the DPM-Solver++ second stage");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// DPM2 (and its ancestral form)
// ---------------------------------------------------------------------------------------

/// @brief DPM2's first stage (k-diffusion `sample_dpm_2`; Karras et al. 2022, Algorithm 2 with the
/// midpoint rule in place of Heun's, inspired by DPM-Solver-2, Lu et al. 2022a Algorithm 4): from
/// D(x; σ), the Euler point at the stage level,
/// \f$x_m = \frac{\sigma_m}{\sigma}x + (\alpha_m - \alpha\frac{\sigma_m}{\sigma})D\f$ (σ-space:
/// \f$x + (\sigma_m - \sigma)\,d\f$, d = (x − D)/σ); x is not changed.
/// @param[in] L the levels (@ref diffusion::midpoint_levels "midpoint_levels": σ_m = √(σσ_next)); @param[in] denoised D(x; σ);
/// @param[in] x the state at L.from; @param[out] state state.x_mid (state.denoised is not used);
/// @param[in] policy threads (bit-identical for any count).
/// @return true when @ref diffusion::dpm2_correct "dpm2_correct" must follow; false where L.to.sigma = 0, where nothing is written
///         and the step is @ref diffusion::euler_step "euler_step" (k-diffusion's last step).
/// @throws std::invalid_argument for bad levels (start α = 0, stage level not strictly between) or sizes,
///         or overlapping arrays; std::domain_error on overflow.
template <real_scalar T, execution_policy P = sequential_policy>
bool dpm2_predict(const two_stage_levels& L, std::span<const T> denoised, std::span<const T> x,
                  const two_stage_state<T>& state, const P& policy = P{}) {
  return detail::first_stage<T>("diffusion::dpm2_predict", L, 0.0, 1.0, denoised, x, state, false, false,
                                kernels::no_noise{}, policy);
}

/// @brief @ref diffusion::dpm2_predict "dpm2_predict" on a σ-space step, its stage at √(σ σ_next) (@ref midpoint_levels).
/// @param[in] s the step; @param[in] denoised D(x; σ); @param[in] x the state; @param[out] state the stage point;
/// @param[in] policy threads.
/// @return as the level form. @throws as the level form.
template <real_scalar T, execution_policy P = sequential_policy>
bool dpm2_predict(sigma_step s, std::span<const T> denoised, std::span<const T> x, const two_stage_state<T>& state,
                  const P& policy = P{}) {
  detail::check_sigma_step("diffusion::dpm2_predict", s);
  return dpm2_predict<T>(midpoint_levels(s), denoised, x, state, policy);
}

/// @brief DPM2's second stage (k-diffusion `sample_dpm_2`): the slope at the stage point taken over the
/// whole step (the midpoint rule in ς = σ/α, second order),
/// \f$x' = \alpha_{to}\left(\frac{x}{\alpha} + (\varsigma_{to} - \varsigma)\,d_m\right) + c_z z\f$,
/// \f$d_m = (x_m/\alpha_m - D_m)/\varsigma_m\f$ (σ-space: \f$x + (\sigma_{next} - \sigma)(x_m - D_m)/\sigma_m\f$).
/// With `noise_scale` = S_noise σ↑ (times α_to) and L from @ref ancestral_midpoint_levels it is the
/// ancestral step (k-diffusion `sample_dpm_2_ancestral`).
/// @param[in] L the levels of @ref diffusion::dpm2_predict "dpm2_predict"; @param[in] denoised D(x_m) at L.mid; @param[in] x the step's
/// start; @param[in] state from @ref diffusion::dpm2_predict "dpm2_predict"; @param[out] out the result (may alias x);
/// @param[in] z the noise (kernels::no_noise where noise_scale = 0); @param[in] noise_scale c_z ≥ 0;
/// @param[in] policy threads.
/// @throws std::invalid_argument for bad levels (target σ = 0), sizes, overlap, a negative or
///         non-finite noise_scale, or missing noise; std::domain_error on overflow.
template <real_scalar T, class Z = kernels::no_noise, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpm2_correct(const two_stage_levels& L, std::span<const T> denoised, std::span<const T> x,
                  const two_stage_state<T>& state, std::span<T> out, const Z& z = {}, double noise_scale = 0.0,
                  const P& policy = P{}) {
  detail::dpm2_second<T>("diffusion::dpm2_correct", L, denoised, x, state, out, z, noise_scale, policy);
}

/// @brief @ref diffusion::dpm2_correct "dpm2_correct" on a σ-space step (deterministic), its stage at √(σ σ_next).
/// @param[in] s the step (σ_next > 0); @param[in] denoised D(x_m; σ_m); @param[in] x the step's start;
/// @param[in] state from @ref diffusion::dpm2_predict "dpm2_predict"; @param[out] out may alias x; @param[in] policy threads.
/// @throws as the level form.
template <real_scalar T, execution_policy P = sequential_policy>
void dpm2_correct(sigma_step s, std::span<const T> denoised, std::span<const T> x, const two_stage_state<T>& state,
                  std::span<T> out, const P& policy = P{}) {
  detail::check_sigma_step("diffusion::dpm2_correct", s);
  detail::dpm2_second<T>("diffusion::dpm2_correct", midpoint_levels(s), denoised, x, state, out, kernels::no_noise{},
                         0.0, policy);
}

// ---------------------------------------------------------------------------------------
// DPM-Solver++(2S) and DPM++ SDE
// ---------------------------------------------------------------------------------------

/// @brief The first stage of DPM-Solver++(2S) (Lu et al. 2022b, arXiv 2211.01095, Algorithm 1, line 3;
/// k-diffusion `sample_dpmpp_2s_ancestral` with t = −log σ): with λ = log(α/σ),
/// \f$u = \frac{\sigma_m}{\sigma}x - \alpha_m\left(e^{-(\lambda_m - \lambda)} - 1\right)D\f$ at the stage level
/// (r = 1/2 for @ref midpoint_levels); the first-order DPM-Solver++ step, which is the Euler/DDIM step
/// of @ref diffusion::dpm2_predict "dpm2_predict". Also stores D for the second stage.
/// @param[in] L the levels; @param[in] denoised D(x) at L.from; @param[in] x the state;
/// @param[out] state state.x_mid = u and state.denoised = D; @param[in] policy threads.
/// @return true when @ref dpmpp_2s_correct must follow; false (nothing written) where L.to.sigma = 0: the
///         step is then @ref diffusion::euler_step "euler_step", as k-diffusion takes it.
/// @throws as @ref diffusion::dpm2_predict "dpm2_predict", and for a state.denoised of the wrong size.
template <real_scalar T, execution_policy P = sequential_policy>
bool dpmpp_2s_predict(const two_stage_levels& L, std::span<const T> denoised, std::span<const T> x,
                      const two_stage_state<T>& state, const P& policy = P{}) {
  return detail::first_stage<T>("diffusion::dpmpp_2s_predict", L, 0.0, 1.0, denoised, x, state, true,
                                false, kernels::no_noise{}, policy);
}

/// @brief The second stage of DPM-Solver++(2S) (Lu et al. 2022b Algorithm 1, lines 4–5): with
/// h = λ_to − λ, r = (λ_m − λ)/h, \f$\hat D = (1 - \frac1{2r})D + \frac1{2r}D_m\f$,
/// \f$x' = \frac{\sigma_{to}}{\sigma}x - \alpha_{to}\left(e^{-h} - 1\right)\hat D + c_z z\f$ (second order;
/// r = 1/2 gives \f$\hat D = D_m\f$). With L from @ref ancestral_midpoint_levels and `noise_scale` =
/// S_noise σ↑ (times α_to) it is k-diffusion's `sample_dpmpp_2s_ancestral` step.
/// @param[in] L the levels of @ref dpmpp_2s_predict; @param[in] denoised D(u) at L.mid; @param[in] x the step's
/// start; @param[in] state from @ref dpmpp_2s_predict; @param[out] out the result (may alias x);
/// @param[in] z the noise (kernels::no_noise where noise_scale = 0); @param[in] noise_scale c_z ≥ 0;
/// @param[in] policy threads.
/// @throws as @ref diffusion::dpm2_correct "dpm2_correct".
template <real_scalar T, class Z = kernels::no_noise, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpmpp_2s_correct(const two_stage_levels& L, std::span<const T> denoised, std::span<const T> x,
                      const two_stage_state<T>& state, std::span<T> out, const Z& z = {}, double noise_scale = 0.0,
                      const P& policy = P{}) {
  detail::dpmpp_second<T>("diffusion::dpmpp_2s_correct", L, 0.0, 1.0, noise_scale, denoised, x, state, out, z, policy);
}

/// @brief The first stage of DPM++ SDE (k-diffusion `sample_dpmpp_sde`, r = 1/2; the stochastic
/// DPM-Solver++(2S) of Lu et al. 2022b, §5 and Algorithm 1): the ancestral split of ς → ς_m with η
/// (@ref ancestral_step in ς = σ/α), the first-order DPM-Solver++ (DDIM) step to ς↓ and the noise of ς↑:
/// \f$u = \frac{\alpha_m\varsigma_\downarrow}{\sigma}x + \alpha_m\left(1 - \frac{\varsigma_\downarrow}{\varsigma}\right)D
///       + \alpha_m\varsigma_\uparrow S_\text{noise} z_1\f$. η = 0 is @ref dpmpp_2s_predict.
/// @param[in] L the levels (@ref midpoint_levels); @param[in] denoised D(x) at L.from; @param[in] x the state;
/// @param[out] state u, D, and z₁ into state.noise where the stage adds noise (the second stage reads it);
/// @param[in] z1 the stage's noise (kernels::no_noise where it adds none);
/// @param[in] opt η ∈ [0, 1], S_noise ≥ 0; @param[in] policy threads.
/// @return as @ref dpmpp_2s_predict (false: take euler_step to the data, no noise).
/// @throws as @ref dpmpp_2s_predict, and for η or S_noise out of range or missing noise.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
bool dpmpp_sde_predict(const two_stage_levels& L, std::span<const T> denoised, std::span<const T> x,
                       const two_stage_state<T>& state, const Z& z1, const ancestral_options& opt = {},
                       const P& policy = P{}) {
  return detail::first_stage<T>("diffusion::dpmpp_sde_predict", L, opt.eta, opt.s_noise, denoised, x, state, true,
                                true, z1, policy);
}

/// @brief The second stage of DPM++ SDE (k-diffusion `sample_dpmpp_sde`, r = 1/2): the split of ς → ς_to
/// with η, then \f$x' = \frac{\alpha_{to}\varsigma_\downarrow}{\sigma}x + \alpha_{to}\left(1 - \frac{\varsigma_\downarrow}{\varsigma}\right)\hat D
/// + \alpha_{to}\varsigma_\uparrow S_\text{noise}\left(\rho z_1 + \sqrt{1-\rho^2}\,z_2\right)\f$,
/// \f$\rho = \sqrt{(\varsigma - \varsigma_m)/(\varsigma - \varsigma_{to})}\f$ with the first stage's z₁ (state.noise):
/// the joint law of k-diffusion's two Brownian-tree increments (σ-space). D̂ as @ref dpmpp_2s_correct
/// (r from the nominal levels, as k-diffusion's `fac`). η = 0 is @ref dpmpp_2s_correct.
/// @param[in] L the levels of the first stage; @param[in] denoised D(u) at L.mid; @param[in] x the step's start;
/// @param[in] state from @ref dpmpp_sde_predict (with z₁); @param[in] z2 fresh normals, independent of z₁;
/// @param[in] opt η, S_noise (as in the first stage); @param[out] out the result (may alias x);
/// @param[in] policy threads.
/// @throws as @ref dpmpp_2s_correct, and for η or S_noise out of range.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpmpp_sde_correct(const two_stage_levels& L, std::span<const T> denoised, std::span<const T> x,
                       const two_stage_state<T>& state, const Z& z2, const ancestral_options& opt, std::span<T> out,
                       const P& policy = P{}) {
  detail::dpmpp_second<T>("diffusion::dpmpp_sde_correct", L, opt.eta, opt.s_noise, 0.0, denoised, x, state, out, z2,
                          policy);
}

// ---------------------------------------------------------------------------------------
// The loops
// ---------------------------------------------------------------------------------------

namespace detail {

/// The four two-stage methods of the loop.
enum class two_stage_method { dpm2, dpm2_ancestral, dpmpp_2s_ancestral, dpmpp_sde };

/// The level on the process's curve with ratio σ/α = ς (σ-space: σ = ς; rectified flow: σ = ς/(1 + ς)).
inline noise_level level_at_ratio(state_process p, double ratio) noexcept {
  return p == state_process::rectified_flow ? noise_level::flow(ratio / (1.0 + ratio)) : noise_level::exploding(ratio);
}

/// What step i of a two-stage loop does: its levels (target σ = 0: an Euler step) and the noise
/// added after the second stage (ancestral methods), in the state's units.
struct two_stage_plan {
  two_stage_levels levels;   ///< {from, stage level, target (σ↓ level for the ancestral methods)}.
  double noise_scale = 0.0;  ///< α_to σ↑ S_noise after the second stage (ancestral methods), else 0.
};

/// The plan of the step from level `from` to level `to` (on the process p's curve).
inline two_stage_plan plan_two_stage(two_stage_method m, state_process p, const noise_level& from, const noise_level& to,
                                     const karras_options& opt) {
  const double r = from.sigma / from.alpha;
  if (to.sigma == 0.0) return {{from, to, to}, 0.0};
  const double rt = to.sigma / to.alpha;
  if (m == two_stage_method::dpm2 || m == two_stage_method::dpmpp_sde)
    return {{from, level_at_ratio(p, log_midpoint(r, rt)), to}, 0.0};
  // Ancestral: the deterministic part goes to (α_to, α_to ς↓), its stage at √(ς ς↓); then α_to ς↑ S_noise z.
  // σ↓ > 0 here: σ↑ < ς_to for η ≤ 1 and ς_to < ς.
  const ancestral_split a = ancestral_step(r, rt, opt.eta);
  return {{from, level_at_ratio(p, log_midpoint(r, a.sigma_down)), noise_level::general(to.alpha, to.alpha * a.sigma_down)},
          to.alpha * a.sigma_up * opt.s_noise};
}

/// The loop of the four two-stage samplers over a σ list (σ-space or rectified-flow states). With a
/// Brownian tree (DPM++ SDE only), the two stages read the tree over [σ_m, σ] and [σ_next, σ_m].
template <two_stage_method M, class SigmaModel, real_scalar T, class Noise, class Context>
sample_result two_stage_loop(std::string_view where, SigmaModel& D, std::span<T> x, std::size_t rows, Noise& noise,
                             std::span<const double> sigmas, const karras_options& opt,
                             const sampler_hooks<T, Context>& hooks, const brownian_tree* tree = nullptr) {
  check_karras_options(where, opt);
  if (tree != nullptr) check_tree_covers(where, *tree, sigmas);
  sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, x, rows, noise, sigmas, opt.first_sample,
                                                    opt.draw_initial_noise, opt.check_finite, hooks);
  if (loop.level(sigmas[0]).alpha == 0.0)
    throw_invalid(where, "sigmas[0] = " + to_text(sigmas[0]) +
                             " is a level with alpha = 0 (pure noise); the two-stage samplers need a finite log-SNR "
                             "at the start (begin the flow list below 1)");
  constexpr bool churns = M == two_stage_method::dpm2;
  if constexpr (churns) check_churned_levels(loop, opt);
  const auto plan_of = [&](double from, std::size_t i) {
    return plan_two_stage(M, loop.process(), loop.level(from), loop.level(loop.sigma(i + 1)), opt);
  };
  // Every stage level lies in the model's range before the first model call.
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    const double from = churns ? churned_sigma(opt, loop.sigma(i), loop.steps()) : loop.sigma(i);
    const two_stage_plan pl = plan_of(from, i);
    if (pl.levels.to.sigma > 0.0) loop.check_level(pl.levels.mid.sigma, i, "the stage sigma");
  }
  const auto xs = loop.x();
  const auto den = loop.buffer(0), den2 = loop.buffer(2), churned = loop.buffer(3);
  const two_stage_state<T> state{loop.buffer(4), loop.buffer(5), loop.buffer(6)};
  const ancestral_options sde{opt.eta, opt.s_noise};
  const bool noisy = opt.eta > 0.0 && opt.s_noise > 0.0;
  for (std::size_t i = 0; i < loop.steps(); ++i) {
    double from = loop.sigma(i);
    std::span<const T> at = xs;
    if constexpr (churns) std::tie(from, at) = apply_churn(loop, opt, i, std::span<const T>(xs), churned);
    const two_stage_plan pl = plan_of(from, i);
    const two_stage_levels& L = pl.levels;
    loop.denoise(at, from, den, i);
    if (L.to.sigma == 0.0) {
      if (at.data() != xs.data()) std::copy(at.begin(), at.end(), xs.begin());
      euler_step<T>(level_step{L.from, L.to}, den, xs, loop.policy());  // no noise: σ↑ = 0 at σ_next = 0
    } else if constexpr (M == two_stage_method::dpm2 || M == two_stage_method::dpm2_ancestral) {
      dpm2_predict<T>(L, den, at, state, loop.policy());
      loop.denoise(std::span<const T>(state.x_mid), L.mid.sigma, den2, i);
      if (pl.noise_scale > 0.0)
        dpm2_correct<T>(L, den2, at, state, xs, loop.noise(i), pl.noise_scale, loop.policy());
      else
        dpm2_correct<T>(L, den2, at, state, xs, kernels::no_noise{}, 0.0, loop.policy());
    } else if constexpr (M == two_stage_method::dpmpp_2s_ancestral) {
      dpmpp_2s_predict<T>(L, den, at, state, loop.policy());
      loop.denoise(std::span<const T>(state.x_mid), L.mid.sigma, den2, i);
      if (pl.noise_scale > 0.0)
        dpmpp_2s_correct<T>(L, den2, at, state, xs, loop.noise(i), pl.noise_scale, loop.policy());
      else
        dpmpp_2s_correct<T>(L, den2, at, state, xs, kernels::no_noise{}, 0.0, loop.policy());
    } else {
      // With a tree: z₁ over [σ_m, σ] and z₂ over [σ_next, σ_m], so that the second stage's
      // ρz₁ + √(1 − ρ²)z₂ is the tree's increment over [σ_next, σ] (σ-space: ς = σ).
      if (noisy && tree != nullptr)
        dpmpp_sde_predict<T>(L, den, at, state, loop.noise(*tree, from, L.mid.sigma), sde, loop.policy());
      else if (noisy)
        dpmpp_sde_predict<T>(L, den, at, state, loop.noise(2 * i), sde, loop.policy());
      else
        dpmpp_sde_predict<T>(L, den, at, state, kernels::no_noise{}, sde, loop.policy());
      loop.denoise(std::span<const T>(state.x_mid), L.mid.sigma, den2, i);
      if (noisy && tree != nullptr)
        dpmpp_sde_correct<T>(L, den2, at, state, loop.noise(*tree, L.mid.sigma, loop.sigma(i + 1)), sde, xs,
                             loop.policy());
      else if (noisy)
        dpmpp_sde_correct<T>(L, den2, at, state, loop.noise(2 * i + 1), sde, xs, loop.policy());
      else
        dpmpp_sde_correct<T>(L, den2, at, state, kernels::no_noise{}, sde, xs, loop.policy());
    }
    if (!loop.report(loop.steps(), loop.time(from), loop.sigma(i), loop.sigma(i + 1), den)) break;
  }
  return loop.result();
}

}  // namespace detail

/// @brief DPM2 sampling (k-diffusion `sample_dpm_2`; diffusers `KDPM2DiscreteScheduler`): per step the
/// churn (Karras Algorithm 2, as @ref heun_sample), D at σ̂, @ref diffusion::dpm2_predict "dpm2_predict" to the stage level at the
/// log-σ midpoint √(σ̂ σ_next), D there, @ref diffusion::dpm2_correct "dpm2_correct"; the last step to σ = 0 is Euler. Second order,
/// two model calls per step (one on the last). x changes only in each step's last pass.
/// @param[in] D the σ-space denoiser (σ-space or rectified-flow state); @param[in,out] x rows × n;
/// @param[in] rows batch size; @param[in] noise the noise source (initial draw and churn);
/// @param[in] sigmas the σ list (a flow list must start below 1); @param[in] opt options (churn;
/// η is not used); @param[in] hooks hooks.
/// @throws as @ref euler_sample; std::out_of_range also for a stage level outside the model's range.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpm2_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                          const karras_options& opt = {}, const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::two_stage_loop<detail::two_stage_method::dpm2>("diffusion::dpm2_sample", D, as_mutable_span(x), rows,
                                                                noise, sigmas, opt, hooks);
}

/// @brief DPM2-ancestral sampling (k-diffusion `sample_dpm_2_ancestral`; diffusers
/// `KDPM2AncestralDiscreteScheduler` at η = 1): per step the split σ → σ_next into σ↓, σ↑ with η
/// (@ref ancestral_step, in ς = σ/α for a flow state), DPM2 from σ to σ↓ with its stage at √(σ σ↓), then
/// S_noise σ↑ z (stream step i); Euler where σ↓ = 0. The churn is not used.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise);
/// @param[in] hooks hooks.
/// @throws as @ref dpm2_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpm2_ancestral_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                                    std::span<const double> sigmas, const karras_options& opt = {},
                                    const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::two_stage_loop<detail::two_stage_method::dpm2_ancestral>("diffusion::dpm2_ancestral_sample", D,
                                                                          as_mutable_span(x), rows, noise, sigmas, opt,
                                                                          hooks);
}

/// @brief DPM++ 2S-ancestral sampling (k-diffusion `sample_dpmpp_2s_ancestral`; Lu et al. 2022b
/// Algorithm 1 with r = 1/2 over σ → σ↓, then S_noise σ↑ z of stream step i): η = 0 is the deterministic
/// DPM-Solver++(2S), second order; Euler where σ↓ = 0. The churn is not used.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise);
/// @param[in] hooks hooks.
/// @throws as @ref dpm2_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_2s_ancestral_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                                        std::span<const double> sigmas, const karras_options& opt = {},
                                        const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::two_stage_loop<detail::two_stage_method::dpmpp_2s_ancestral>(
      "diffusion::dpmpp_2s_ancestral_sample", D, as_mutable_span(x), rows, noise, sigmas, opt, hooks);
}

/// @brief DPM++ SDE sampling (k-diffusion `sample_dpmpp_sde`, r = 1/2): per step @ref dpmpp_sde_predict to
/// the stage level √(σ σ_next) with the noise of stream step 2i, D there, @ref dpmpp_sde_correct with the
/// noise of stream step 2i + 1, correlated with the first as k-diffusion's Brownian-tree increments are
/// (@ref dpmpp_sde_correct); Euler to σ = 0. η = 0 is DPM-Solver++(2S). The churn is not used.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the noise source; @param[in] sigmas the σ list; @param[in] opt options (η, S_noise);
/// @param[in] hooks hooks.
/// @throws as @ref dpm2_sample.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                               const karras_options& opt = {},
                               const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::two_stage_loop<detail::two_stage_method::dpmpp_sde>("diffusion::dpmpp_sde_sample", D,
                                                                     as_mutable_span(x), rows, noise, sigmas, opt, hooks);
}

/// @brief DPM++ SDE sampling with Brownian-tree noise (k-diffusion `sample_dpmpp_sde` with its default
/// `BrownianTreeNoiseSampler`): as the overload above, but the first stage's noise is the tree's
/// standardized increment over [σ_m, σ] and the second stage's z₂ the one over [σ_next, σ_m], so that
/// \f$\rho z_1 + \sqrt{1-\rho^2}\,z_2 = (W(\sigma_\text{next}) - W(\sigma))/\sqrt{\sigma - \sigma_\text{next}}\f$
/// (to rounding; σ-space): k-diffusion's two tree reads, and one Brownian path for every step count.
/// For a rectified-flow state the tree runs in the list's σ while ρ is formed in ς = σ/α: the law of
/// each step is exact, the path consistency across step counts approximate. `noise` draws only the
/// initial x = σ₀z.
/// @param[in] D the σ-space denoiser; @param[in,out] x rows × n; @param[in] rows batch size;
/// @param[in] noise the initial noise; @param[in] tree the Brownian tree covering every σ > 0 of the list;
/// @param[in] sigmas the σ list; @param[in] opt options (η, S_noise); @param[in] hooks hooks.
/// @throws as the overload above; std::invalid_argument for a σ outside the tree's interval (before any
/// model call) or a stage interval narrower than the tree's leaf width.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_sde_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, const brownian_tree& tree,
                               std::span<const double> sigmas, const karras_options& opt = {},
                               const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  return detail::two_stage_loop<detail::two_stage_method::dpmpp_sde>("diffusion::dpmpp_sde_sample", D,
                                                                     as_mutable_span(x), rows, noise, sigmas, opt, hooks,
                                                                     &tree);
}

}  // namespace diffusion

/// @}
