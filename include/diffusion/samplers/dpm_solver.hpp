/// @file
/// @brief DPM-Solver beyond the 2M/3M data-prediction steps of ode.hpp and sde.hpp: the singlestep
/// DPM-Solver++ of orders 1–3 (Lu et al. 2022b, arXiv 2211.01095, Algorithm 1 "DPM-Solver++(2S)"; the
/// third-order singlestep DPM-Solver-3 of Lu et al. 2022a, arXiv 2206.00927, Algorithm 2, in data-prediction
/// form) as diffusers' DPMSolverSinglestepScheduler computes it, and the multistep DPM-Solver in its
/// noise-prediction form (Lu et al. 2022a, §3.3 and Appendix B, "DPM-Solver-2M/3M"; diffusers'
/// DPMSolverMultistepScheduler with `algorithm_type="dpmsolver"`).
///
/// **Both forms are exponential integrators of the probability-flow ODE in λ = log(α/σ)** over a step
/// from level s to level t, h = λ_t − λ_s > 0 (Lu et al. 2022a Eq. 3.4; 2022b Eq. 8):
/// \f[ x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t\int_0^h e^{-(h-u)}\,\hat D(\lambda_s + u)\,du
///     \quad\text{(data form, DPM-Solver++)},\qquad
///     x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t\int_0^h e^{h-u}\,\hat\varepsilon(\lambda_s + u)\,du
///     \quad\text{(noise form, DPM-Solver)}, \f]
/// with \f$\hat D\f$, \f$\hat\varepsilon\f$ a polynomial in λ through model outputs at nodes
/// \f$r_j = (\lambda_j - \lambda_s)/h\f$. The integral of \f$e^{\mp h(1-\theta)}\theta^m\f$ over θ ∈ [0, 1] is
/// \f$m!\,\varphi_{m+1}(\mp h)\f$ (\f$\varphi_1(z) = (e^z - 1)/z\f$, \f$\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z\f$), so
/// the Lagrange interpolant's weights follow in closed form from the shared φ functions
/// (`detail::phi_functions`, `detail::unipc_weights`: the same formula as DEIS and UniPC). The
/// diffusers/paper `heun` forms are these interpolants (linear through two outputs, quadratic through
/// three); the `midpoint` forms replace the linear term's weight \f$h\varphi_2\f$ by \f$\tfrac12 h\varphi_1\f$
/// (Lu et al. 2022b Algorithm 1's \f$\hat D = (1 - \frac1{2r})D_s + \frac1{2r}D_{s_1}\f$), equal as h → 0.
///
/// **Singlestep blocks (diffusers' schedule).** DPMSolverSinglestepScheduler groups its N timesteps into
/// blocks of orders `get_order_list` (1, 2, 3, 1, 2, 3, … for order 3): inside a block every call starts
/// from the block's first state x_s, and a call of order k lands on the next list level using the outputs
/// at the block's first k levels (@ref diffusion::singlestep_levels "singlestep_levels"). So the intermediate
/// stages of DPM-Solver-2/3 are the list's own levels, one model call per list entry; the stage
/// "intermediate" points are also the scheduler's returned samples.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/execution.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "common.hpp"
#include "multistep.hpp"
#include "sigma_common.hpp"
#include "unipc.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

namespace detail {

/// The weights of the exponential integrator of the Lagrange interpolant on nodes r (θ units, at most 3):
/// \f$g_j = \int_0^1 e^{z(1-\theta)}\ell_j(\theta)\,d\theta = \sum_m c_m\,m!\,\varphi_{m+1}(z)\,[\theta^m]\ell_j\f$
/// with z = −h (data form) or +h (noise form), c₀ = c₁ = 1 and c₂ = `third`: 1 is the integral, ½ reproduces
/// diffusers' multistep third-order term (half the θ² moment 2φ₃).
inline std::array<double, 3> exp_integrator_weights(std::span<const double> nodes, double z, double third = 1.0) {
  const auto phi = phi_functions(z);
  return unipc_weights(nodes, {phi[0], phi[1], third * 2.0 * phi[2]});
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Singlestep DPM-Solver++ (data prediction), orders 1–3
// ---------------------------------------------------------------------------------------

/// @brief The levels of one singlestep DPM-Solver++ update of order k: the block's start s (where the
/// state x_s lives and the first output D₀ was taken), the k − 1 intermediate levels s₁, s₂ where the
/// later outputs were taken, and the target t. λ = log(α/σ) must increase strictly along s, s₁, s₂, t.
struct singlestep_levels {
  noise_level from;                     ///< s: the block's start (σ > 0; α > 0 for k ≥ 2).
  std::array<noise_level, 2> stages{};  ///< s₁, s₂ (the first k − 1 are read).
  noise_level to;                       ///< t (σ = 0: the data; the update is then first order).
  std::size_t order = 1;                ///< k = 1 … 3.
};

namespace detail {

/// x' = cx·x + Σ_j w_j D_j of a singlestep update (k = the order actually taken).
struct singlestep_coefficients {
  double cx = 0.0;
  std::array<double, 3> w{};
  std::size_t k = 1;
};

/// Validates the levels and computes the coefficients (formulas of @ref diffusion::dpmpp_singlestep_update).
inline singlestep_coefficients dpmpp_singlestep_coefficients(std::string_view where, const singlestep_levels& L,
                                                             dpm_solver_type solver) {
  check_level_step(where, {L.from, L.to});
  if (L.order < 1 || L.order > 3)
    throw_invalid(where, "order = " + to_text(L.order) + " is outside the allowed range [1, 3]");
  if (!(solver == dpm_solver_type::midpoint || solver == dpm_solver_type::heun))
    throw_invalid(where, "solver_type = " + to_text(static_cast<int>(solver)) + " is not midpoint or heun");
  singlestep_coefficients c;
  const double ratio = L.to.sigma / L.from.sigma;
  if (L.to.sigma == 0.0) {  // x' = α_t D₀: the data level, where no polynomial in λ is integrable (h = ∞)
    c.w[0] = L.to.alpha;
    return c;
  }
  const double lam_s = log_snr_half(L.from), lam_t = log_snr_half(L.to);
  if (!(lam_t > lam_s))
    throw_invalid(where, "the update must go to a less noisy level: log(alpha/sigma) goes from " + to_text(lam_s) +
                             " to " + to_text(lam_t));
  const double h = lam_t - lam_s;
  c.cx = ratio;
  c.k = L.order;
  const double E = L.to.alpha * -std::expm1(-h);  // α_t h φ₁(−h)
  if (c.k == 1) {
    c.w[0] = E;
    return c;
  }
  if (!(L.from.alpha > 0.0))
    throw_invalid(where, "order " + to_text(L.order) + " needs a start with alpha > 0 (a finite log-SNR), got alpha = " +
                             to_text(L.from.alpha));
  std::array<double, 3> r{0.0, 0.0, 0.0};
  double prev = lam_s;
  for (std::size_t j = 1; j < c.k; ++j) {
    const noise_level& l = L.stages[j - 1];
    if (!(l.alpha > 0.0 && l.sigma > 0.0 && std::isfinite(l.alpha) && std::isfinite(l.sigma)))
      throw_invalid(where, "stages[" + to_text(j - 1) + "] (alpha = " + to_text(l.alpha) + ", sigma = " + to_text(l.sigma) +
                               ") must be finite with alpha > 0 and sigma > 0");
    const double lam = log_snr_half(l);
    if (!(lam > prev && lam < lam_t))
      throw_invalid(where, "stages[" + to_text(j - 1) + "] has log(alpha/sigma) = " + to_text(lam) +
                               "; the stages must lie strictly between the start's " + to_text(lam_s) +
                               " and the target's " + to_text(lam_t) + ", in increasing order");
    prev = lam;
    r[j] = (lam - lam_s) / h;
  }
  if (solver == dpm_solver_type::midpoint && c.k == 2) {
    // Lu et al. 2022b Algorithm 1: D̂ = (1 − 1/(2r))D₀ + (1/(2r))D₁.
    c.w[0] = E * (1.0 - 0.5 / r[1]);
    c.w[1] = E * (0.5 / r[1]);
    return c;
  }
  if (solver == dpm_solver_type::midpoint) {
    // DPM-Solver-3's last stage (Lu et al. 2022a Algorithm 2): the linear interpolant through D₀ and D₂ only.
    const std::array<double, 2> nodes{0.0, r[2]};
    const auto g = exp_integrator_weights(nodes, -h);
    c.w[0] = L.to.alpha * h * g[0];
    c.w[2] = L.to.alpha * h * g[1];
    return c;
  }
  const auto g = exp_integrator_weights(std::span<const double>(r.data(), c.k), -h);
  for (std::size_t j = 0; j < c.k; ++j) c.w[j] = L.to.alpha * h * g[j];
  return c;
}

/// One fused pass out = cx·x + Σ_{j<K} w_j D_j.
template <std::size_t K, real_scalar T, execution_policy P>
bool singlestep_pass(const P& policy, std::span<const T> x, const std::array<std::span<const T>, 3>& d, std::span<T> out,
                     T cx, const std::array<T, 3>& w) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return kernels::map(policy, kernels::no_noise{}, kernels::outputs(out), kernels::inputs<T>(x, d[I]...),
                        [=](auto xv, auto... dv) {
                          using V = decltype(xv);
                          V acc = V(cx) * xv;
                          ((acc = kernels::madd(V(w[I]), dv, acc)), ...);
                          return acc;
                        });
  }(std::make_index_sequence<K>{});
}

}  // namespace detail

/// @brief One singlestep DPM-Solver++ update of order k = `L.order` (diffusers'
/// `singlestep_dpm_solver_update`, `algorithm_type="dpmsolver++"`): from the block's start x at L.from and
/// the outputs D₀, D₁, D₂ taken at L.from, L.stages[0], L.stages[1], the state at L.to. With
/// h = λ_t − λ_s, \f$r_j = (\lambda_{s_j} - \lambda_s)/h\f$, \f$E = -\alpha_t\operatorname{expm1}(-h)\f$:
/// - k = 1 (DDIM; Lu et al. 2022b Eq. 9 with D constant): \f$x_t = \frac{\sigma_t}{\sigma_s}x + E\,D_0\f$.
/// - k = 2 `midpoint` (Lu et al. 2022b Algorithm 1, DPM-Solver++(2S)):
///   \f$x_t = \frac{\sigma_t}{\sigma_s}x + E\left((1 - \tfrac1{2r_1})D_0 + \tfrac1{2r_1}D_1\right)\f$.
/// - k = 2 `heun`: D linear in λ through (0, D₀), (r₁, D₁), integrated exactly:
///   \f$x_t = \frac{\sigma_t}{\sigma_s}x + E\,D_0 + \alpha_t h\varphi_2(-h)\frac{D_1 - D_0}{r_1}\f$.
/// - k = 3 `midpoint` (Lu et al. 2022a Algorithm 2's last stage, DPM-Solver-3 in data form):
///   \f$x_t = \frac{\sigma_t}{\sigma_s}x + E\,D_0 + \alpha_t h\varphi_2(-h)\frac{D_2 - D_0}{r_2}\f$
///   (third order when r₂ → 2/3, as on diffusers' lists of smooth λ; D₁ enters through the state it produced).
/// - k = 3 `heun`: D quadratic in λ through the three outputs, integrated exactly
///   (\f$\alpha_t h\sum_m m!\varphi_{m+1}(-h)[\theta^m]\ell_j\f$; diffusers' D1/D2 form, which is this).
///
/// A target with σ = 0 gives \f$x_t = \alpha_t D_0\f$ whatever k (h = ∞: the polynomial terms are undefined);
/// diffusers' lists end with an order-1 entry there. One fused pass reads x and the k outputs.
/// @param[in] L the levels and the order; @param[in] denoised D at L.from, L.stages[0], L.stages[1] (the first k
/// are read, each of x's size); @param[in] x the block's start state; @param[out] out the result (may alias x or
/// an output exactly); @param[in] solver midpoint or heun; @param[in] policy threads (bit-identical for any count).
/// @throws std::invalid_argument for bad levels (λ not strictly increasing through the stages, α = 0 at the
///         start with k ≥ 2), order outside [1, 3], sizes or partial overlaps; std::domain_error for a coefficient
///         or result that is not finite in T.
template <real_scalar T, execution_policy P = sequential_policy>
void dpmpp_singlestep_update(const singlestep_levels& L, const std::array<std::span<const T>, 3>& denoised,
                             std::span<const T> x, std::span<T> out,
                             dpm_solver_type solver = dpm_solver_type::midpoint, const P& policy = P{}) {
  constexpr std::string_view where = "diffusion::dpmpp_singlestep_update";
  const detail::singlestep_coefficients c = detail::dpmpp_singlestep_coefficients(where, L, solver);
  detail::check_same_size(where, "out", out.size(), "x", x.size());
  detail::check_no_partial_overlap(where, "x", x, "out", std::span<const T>(out));
  for (std::size_t j = 0; j < L.order; ++j) {
    const detail::indexed_name nj("denoised[", j, "]");
    detail::check_same_size(where, nj, denoised[j].size(), "x", x.size());
    detail::check_no_partial_overlap(where, nj, denoised[j], "out", std::span<const T>(out));
  }
  const T cx = detail::coefficient<T>(where, "sigma_t / sigma_s", c.cx);
  std::array<T, 3> w{};
  for (std::size_t j = 0; j < c.k; ++j)
    w[j] = detail::coefficient<T>(where, detail::indexed_name("the weight of denoised[", j, "]"), c.w[j]);
  bool ok = false;
  switch (c.k) {
    case 1: ok = detail::singlestep_pass<1, T>(policy, x, denoised, out, cx, w); break;
    case 2: ok = detail::singlestep_pass<2, T>(policy, x, denoised, out, cx, w); break;
    default: ok = detail::singlestep_pass<3, T>(policy, x, denoised, out, cx, w); break;
  }
  detail::require_finite_step(where, ok, "the singlestep DPM-Solver++ update");
}

/// @brief The orders of diffusers' DPMSolverSinglestepScheduler (`get_order_list`) for N steps of
/// `solver_order` k: blocks 1, 2, …, k repeated; with `lower_order_final`, the remainder as a shorter
/// block, and for N divisible by 3 at k = 3 the last block split into 1, 2 and 1; at k = 2 and even N the
/// last block 1, 1. Without it N must be divisible by k. With `final_to_data` (the list ends at σ = 0) the
/// last entry is 1. Each block starts with a 1: call i of order o uses the outputs of calls i − o + 1 … i.
/// @throws std::invalid_argument for k outside [1, 3], N = 0, or N not divisible by k without `lower_order_final`
///         (diffusers switches `lower_order_final` on with a warning there; the scheduler object does the same).
inline std::vector<std::size_t> singlestep_orders(std::size_t N, std::size_t k, bool lower_order_final, bool final_to_data) {
  constexpr std::string_view where = "diffusion::singlestep_orders";
  if (k < 1 || k > 3) detail::throw_invalid(where, "solver_order = " + detail::to_text(k) + " is outside the allowed range [1, 3]");
  if (N == 0) detail::throw_invalid(where, "num_inference_steps = 0 must be >= 1");
  if (!lower_order_final && N % k != 0)
    detail::throw_invalid(where, "num_inference_steps = " + detail::to_text(N) + " is not a multiple of solver_order = " +
                                     detail::to_text(k) + " (set lower_order_final)");
  std::vector<std::size_t> o;
  auto block = [&o](std::size_t len) {
    for (std::size_t j = 1; j <= len; ++j) o.push_back(j);
  };
  const std::size_t full = N / k, rem = N % k;
  if (!lower_order_final || k == 1) {
    for (std::size_t b = 0; b < full; ++b) block(k);
  } else if (rem == 0) {
    for (std::size_t b = 0; b + 1 < full; ++b) block(k);
    block(k - 1);
    block(1);
  } else {
    for (std::size_t b = 0; b < full; ++b) block(k);
    block(rem);
  }
  if (final_to_data) o.back() = 1;
  return o;
}

/// @brief Options of @ref dpmpp_singlestep_sample.
struct dpmpp_singlestep_sample_options {
  std::size_t order = 2;  ///< 1 … 3 (diffusers' `solver_order`, default 2).
  dpm_solver_type solver_type = dpm_solver_type::midpoint;  ///< The order-2 and order-3 forms (`solver_type`).
  /// diffusers' `lower_order_final` (default false in DPMSolverSinglestepScheduler): the last block shortened
  /// as @ref diffusion::singlestep_orders "singlestep_orders" does. Where N is not a multiple of the order it is
  /// switched on, as diffusers' `set_timesteps` does (with a warning there).
  bool lower_order_final = false;
  std::uint64_t first_sample = 0;  ///< Stream index of row 0.
  bool draw_initial_noise = true;  ///< Set x = σ_0 z first; false: x holds it.
  bool check_finite = true;        ///< Scan every model output.
};

/// @brief Singlestep DPM-Solver++ sampling over a σ list (Lu et al. 2022b, DPM-Solver++(2S) and its orders 1
/// and 3; diffusers' DPMSolverSinglestepScheduler over the state's process: σ-space, or the model's
/// rectified-flow levels): the N steps split into blocks of orders 1, 2, …, k
/// (@ref diffusion::singlestep_orders "singlestep_orders"); call i of order o evaluates the model at σ_i and
/// lands on σ_{i+1} with @ref diffusion::dpmpp_singlestep_update "dpmpp_singlestep_update" from the block's
/// start σ_{i−o+1}, whose state it keeps. One model call per step; the callback reports every step (x̂₀ of its
/// call). A list ending at σ = 0 ends with an order-1 call (x = α D there).
/// @param[in] D the σ-space denoiser (@ref sigma_space_model); @param[in,out] x rows × n: the state at σ_0 in
/// (or drawn), the sample out; @param[in] rows batch size; @param[in] noise the noise source (initial draw
/// only); @param[in] sigmas strictly decreasing, positive, the last may be 0; @param[in] opt options;
/// @param[in] hooks callback, workspace, context, threads.
/// @throws as @ref euler_sample; std::invalid_argument for an order outside [1, 3], a solver type that is not
/// midpoint or heun, or a flow list from σ = 1 with order ≥ 2 (α = 0: no finite log-SNR).
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
  requires sigma_denoiser<SigmaModel, tensor_value_t<X>, Context> && noise_source_for<Noise, tensor_value_t<X>>
sample_result dpmpp_singlestep_sample(SigmaModel& D, X&& x, std::size_t rows, Noise& noise, std::span<const double> sigmas,
                                      const dpmpp_singlestep_sample_options& opt = {},
                                      const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  constexpr std::string_view where = "diffusion::dpmpp_singlestep_sample";
  if (opt.order < 1 || opt.order > 3)
    detail::throw_invalid(where, "order = " + detail::to_text(opt.order) + " is outside the allowed range [1, 3]");
  if (!(opt.solver_type == dpm_solver_type::midpoint || opt.solver_type == dpm_solver_type::heun))
    detail::throw_invalid(where, "solver_type = " + detail::to_text(static_cast<int>(opt.solver_type)) + " is not midpoint or heun");
  detail::sigma_sampler<SigmaModel, T, Noise, Context> loop(where, D, as_mutable_span(x), rows, noise, sigmas,
                                                            opt.first_sample, opt.draw_initial_noise, opt.check_finite,
                                                            hooks);
  const std::size_t N = loop.steps();
  const std::vector<std::size_t> orders =
      singlestep_orders(N, opt.order, opt.lower_order_final || N % opt.order != 0, sigmas[N] == 0.0);
  const auto xs = loop.x();
  const std::array<std::span<T>, 3> out{loop.buffer(0), loop.buffer(2), loop.buffer(3)};  // the block's outputs
  const std::span<T> start = loop.buffer(4);                                               // the block's start state
  for (std::size_t i = 0; i < N; ++i) {
    const std::size_t o = orders[i];
    loop.denoise(xs, loop.sigma(i), out[o - 1], i);
    if (o == 1) std::copy(xs.begin(), xs.end(), start.begin());
    singlestep_levels L{loop.level(loop.sigma(i + 1 - o)), {}, loop.level(loop.sigma(i + 1)), o};
    for (std::size_t q = 1; q < o; ++q) L.stages[q - 1] = loop.level(loop.sigma(i + 1 - o + q));
    dpmpp_singlestep_update<T>(L, {std::span<const T>(out[0]), std::span<const T>(out[1]), std::span<const T>(out[2])},
                               std::span<const T>(start), xs, opt.solver_type, loop.policy());
    if (!loop.report(N, loop.time(loop.sigma(i)), loop.sigma(i), loop.sigma(i + 1), out[o - 1])) break;
  }
  return loop.result();
}

// ---------------------------------------------------------------------------------------
// DPM-Solver (noise prediction), multistep orders 1–3
// ---------------------------------------------------------------------------------------

/// @brief Options of @ref dpm_solver_step.
struct dpm_solver_options {
  std::size_t order = 2;  ///< 1 … 3, the history length (diffusers' `solver_order`; keep it fixed over a run).
  dpm_solver_type solver_type = dpm_solver_type::midpoint;  ///< The order-2 form (order 3 has one form).
  /// Order 3 with diffusers' (and Lu et al.'s `dpm_solver_pytorch`) third-order term, half the Taylor
  /// term (the method is then second order; docs/conventions.md). Off: the exact quadratic interpolant.
  bool reference_3m = false;
  /// The SDE solver in noise-prediction form (diffusers' `algorithm_type="sde-dpmsolver"`; Lu et al. 2022b,
  /// arXiv 2211.01095, §4 and Appendix): every ε weight doubled and fresh noise
  /// \f$\sigma_t\sqrt{\operatorname{expm1}(2h)}\,z\f$ added (the step then needs a noise operand).
  bool sde = false;
};

/// @brief The history of @ref diffusion::dpm_solver_step "dpm_solver_step": the ε of the latest calls, newest first, with their λ, in
/// caller-owned buffers (the same record as DEIS's; value-initialize it at the start of a run).
template <real_scalar T>
using dpm_solver_state = deis_state<T>;

namespace detail {
/// The body of both @ref diffusion::dpm_solver_step "dpm_solver_step" overloads.
template <real_scalar T, class Z, execution_policy P>
void dpm_solver_update(const level_step& s, std::span<const T> denoised, std::span<T> x, dpm_solver_state<T>& st, const Z& z,
                       const dpm_solver_options& opt, std::size_t max_order, const P& policy) {
  constexpr std::string_view where = "diffusion::dpm_solver_step";
  if (!(opt.solver_type == dpm_solver_type::midpoint || opt.solver_type == dpm_solver_type::heun))
    throw_invalid(where, "solver_type = " + to_text(static_cast<int>(opt.solver_type)) + " is not midpoint or heun");
  const eps_step_plan plan = eps_step_prologue<T>(where, s, denoised, x, st, opt.order, max_order);
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    if (opt.sde && !plan.lands_on_data)
      throw_invalid(where, "opt.sde adds noise (sigma_next = " + to_text(s.to.sigma) +
                               " > 0) but no noise was passed (use the overload taking a noise operand)");
  } else {
    check_noise_operand<T>(where, z, x.size());
  }
  std::array<double, 4> w{};  // weights of ε_0 … ε_{k−1}, −σ_t folded in
  double noise_scale = 0.0;
  if (plan.lands_on_data) {
    w[0] = -s.to.alpha * (s.from.sigma / s.from.alpha);
  } else {
    const double h = plan.lambda_t - plan.lambda_s, f = opt.sde ? 2.0 : 1.0;
    if (plan.k == 1) {
      w[0] = -f * s.to.sigma * std::expm1(h);
    } else if (plan.k == 2 && opt.solver_type == dpm_solver_type::midpoint) {
      const double c = -f * s.to.sigma * std::expm1(h), half_over_r = 0.5 / -plan.nodes[1];
      w[0] = c * (1.0 + half_over_r);
      w[1] = -c * half_over_r;
    } else {
      const auto g = exp_integrator_weights(std::span<const double>(plan.nodes.data(), plan.k), h, opt.reference_3m ? 0.5 : 1.0);
      for (std::size_t j = 0; j < plan.k; ++j) w[j] = -f * s.to.sigma * h * g[j];
    }
    if (opt.sde) noise_scale = s.to.sigma * std::sqrt(std::expm1(2.0 * h));
  }
  if constexpr (std::is_same_v<Z, kernels::no_noise>) {
    eps_step_commit<T>(where, s, plan, w, denoised, x, st, opt.order, policy, "the DPM-Solver step");
  } else {
    if (noise_scale > 0.0)
      eps_step_commit<T>(where, s, plan, w, denoised, x, st, opt.order, policy, "the DPM-Solver step", z, noise_scale);
    else
      eps_step_commit<T>(where, s, plan, w, denoised, x, st, opt.order, policy, "the DPM-Solver step");
  }
}
}  // namespace detail

/// @brief One multistep DPM-Solver step in noise-prediction form between two levels of the state's process
/// (Lu et al. 2022a, arXiv 2206.00927, Eq. 3.4 with the multistep "DPM-Solver-2M/3M" of Appendix B;
/// diffusers' DPMSolverMultistepScheduler `algorithm_type="dpmsolver"`). With λ = log(α/σ), h = λ_t − λ_s,
/// ε_j the newest outputs (ε₀ at s) at nodes \f$r_j = (\lambda_j - \lambda_s)/h \le 0\f$, \f$r = -r_1\f$:
/// - order 1 (DDIM, DPM-Solver-1): \f$x_t = \frac{\alpha_t}{\alpha_s}x - \sigma_t\operatorname{expm1}(h)\,\varepsilon_0\f$;
/// - order 2 `midpoint`: \f$x_t = \frac{\alpha_t}{\alpha_s}x - \sigma_t\operatorname{expm1}(h)\left(\varepsilon_0 + \frac1{2r}(\varepsilon_0 - \varepsilon_1)\right)\f$;
/// - order 2 `heun` and order 3: ε linear (quadratic) in λ through the 2 (3) newest outputs, integrated
///   exactly: \f$x_t = \frac{\alpha_t}{\alpha_s}x - \sigma_t h\sum_j g_j\varepsilon_j\f$,
///   \f$g_j = \sum_m m!\,\varphi_{m+1}(h)[\theta^m]\ell_j\f$ (the same weights as DEIS's: Lu's D₁, D₂ terms
///   are this interpolant's derivatives; with `reference_3m` the θ² moment is halved, as diffusers).
///
/// With `opt.sde` it is the SDE solver of the same form (diffusers' `algorithm_type="sde-dpmsolver"`): the
/// exact solution of the reverse SDE \f$x_t = \frac{\alpha_t}{\alpha_s}x_s - 2\alpha_t\int_{\lambda_s}^{\lambda_t}
/// e^{-\lambda}\hat\varepsilon\,d\lambda + \sigma_t\sqrt{e^{2h} - 1}\,z\f$ has twice the ODE's ε integral, so every
/// weight above is doubled (order 1: \f$-2\sigma_t\operatorname{expm1}(h)\varepsilon_0\f$; order 2 midpoint and heun
/// are diffusers' second-order `sde-dpmsolver` updates), and \f$\sigma_t\sqrt{\operatorname{expm1}(2h)}\,z\f$ is added.
///
/// The order is k = min(stored + 1, opt.order, max_order), and 1 at σ_t = 0, where the step is x_t = α_t D
/// (no noise, with or without `sde`: the limit of the data-prediction forms; the ε form's weight is σ_t·∞
/// there, which diffusers evaluates to NaN). The step takes x̂₀ as every other step does and forms
/// ε = (x − α_s D)/σ_s inside the pass (stored in the history); for an ε-predicting model pass
/// x̂₀ = (x − σ_s ε)/α_s, which the pass inverts up to rounding.
/// @param[in] s the level step (α > 0 at the start; λ increasing, above the last stored output's);
/// @param[in] denoised x̂₀ = D(x) at s.from; @param[in,out] x the state; @param[in,out] st the history (the
/// first opt.order slots of x's size); @param[in] opt order, solver_type, reference_3m, sde;
/// @param[in] max_order 1 … 3, this call's cap (`lower_order_final`); @param[in] policy threads (bit-identical
/// for any count).
/// @throws std::invalid_argument for a bad step (α = 0 at the start, λ not increasing), order, max_order,
///         solver_type, sizes, aliasing or history, or `opt.sde` without a noise operand (use the overload
///         taking one); std::domain_error for a coefficient or result not finite in T.
template <real_scalar T, execution_policy P = sequential_policy>
void dpm_solver_step(const level_step& s, std::span<const T> denoised, std::span<T> x, dpm_solver_state<T>& st,
                     const dpm_solver_options& opt = {}, std::size_t max_order = 3, const P& policy = P{}) {
  detail::dpm_solver_update<T>(s, denoised, x, st, kernels::no_noise{}, opt, max_order, policy);
}

/// @brief @ref diffusion::dpm_solver_step "dpm_solver_step" with a noise operand, for `opt.sde` (diffusers'
/// `sde-dpmsolver`): z holds x.size() standard normals (a buffer, or a kernels::philox_stream; checked even
/// where the step adds none: without `sde`, or landing on σ_t = 0).
/// @param[in] s the level step; @param[in] denoised x̂₀ at s.from; @param[in,out] x the state;
/// @param[in,out] st the history; @param[in] z the normals; @param[in] opt the options (set `sde`);
/// @param[in] max_order this call's cap; @param[in] policy threads (bit-identical for any count).
/// @throws as the overload without noise, and std::invalid_argument for a noise operand of the wrong size.
template <real_scalar T, class Z, execution_policy P = sequential_policy>
  requires kernels::noise_operand<Z, T>
void dpm_solver_step(const level_step& s, std::span<const T> denoised, std::span<T> x, dpm_solver_state<T>& st,
                     const Z& z, const dpm_solver_options& opt, std::size_t max_order = 3, const P& policy = P{}) {
  detail::dpm_solver_update<T>(s, denoised, x, st, z, opt, max_order, policy);
}

}  // namespace diffusion

/// @}
