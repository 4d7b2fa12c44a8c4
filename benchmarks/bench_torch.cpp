// The steps of bench_kernels written with LibTorch tensor ops, as a diffusers user runs them
// (eager ops, one temporary tensor per operation, coefficients as 0-dim tensors indexed from
// alphas_cumprod like the schedulers do), so that bench-table.sh can put "ours vs LibTorch"
// beside the other baselines. Optional target: built only when find_package(Torch) succeeds.
//
// Names follow bench_kernels: <step>/torch/<elements> (torch::set_num_threads(1)) and
// <step>/torch_2t/<elements> (2 intra-op threads). Counters: bytes_per_second with the same
// minimum traffic as bench_kernels (12 B per element for two-input steps, 4 B for normals),
// normals_per_second. LibTorch allocates through its own CPU allocator, so no allocation count.
//
// The formulas (diffusers 0.2x, k-diffusion, score_sde), all float32:
//   ddpm      DDPMScheduler.step, epsilon, fixed_small, clip_sample=False (Stable Diffusion)
//   ddim      DDIMScheduler.step, eta = 0, epsilon
//   q_sample  DDPMScheduler.add_noise
//   q_sample_rng  randn_like, then add_noise (a training step's noising)
//   cfg       uncond + w·(cond − uncond)
//   euler     k-diffusion sample_euler:  d = (x − D)/σ;  x + d·(σ' − σ)
//   euler_a   sample_euler_ancestral: the same to σ_down, then + randn_like(x)·σ_up
//   langevin  score_sde LangevinCorrector: x + α·(D − x)/σ² + √(2α)·randn_like(x)
//   flow_euler  FlowMatchEulerDiscreteScheduler.step: sample + (σ' − σ)·model_output
//   flow_sde    the same with stochastic_sampling: x0 = sample − σ·model_output;
//               (1 − σ')·x0 + σ'·randn_like(sample)
// and the sampler steps of issue 12 (16 K … 4 M; see the block above their functions for what
// each row leaves out, always in LibTorch's favour):
//   dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde, lms (order 4), dpm2 (both stages), dpmpp_2s_ancestral,
//               dpmpp_sde   k-diffusion sample_* of the same names (η = 1 where there is one)
//   unipc       diffusers UniPCMultistepScheduler.step: UniC-2 then UniP-2, bh2 (linalg.solve, einsum)
//   deis        DEISMultistepScheduler.multistep_deis_third_order_update (log ρ)
//   plms        PNDMScheduler.step_plms, four stored ε
//   lcm, tcd    LCMScheduler.step, TCDScheduler.step (γ = 0.3)
//   cfgpp_euler ComfyUI sample_euler_cfg_pp
//   res_multistep, er_sde, ipndm  ComfyUI sample_res_multistep (η = 0), sample_er_sde (stage 3), sample_ipndm
//   sa_solver   SASolverScheduler.step: stochastic_adams_moulton_update then stochastic_adams_bashforth_update
//               (τ = 1, orders 3 and 3; coefficients from the library's formula, as doubles)
//   sde_dpmsolver  DPMSolverMultistepScheduler, sde-dpmsolver, second order (midpoint)
//   dpmpp_3s    DPMSolverSinglestepScheduler.singlestep_dpm_solver_third_order_update (dpmsolver++, midpoint)
// Their deterministic rows agree with the library's step to float rounding on the same inputs, and
// the noisy ones in their noise-free part (checked once by hand when they were written).
#include <benchmark/benchmark.h>

#include "size_cap.hpp"

#include <torch/torch.h>

#include <diffusion/betas.hpp>
#include <diffusion/sampler_karras.hpp>
#include <diffusion/samplers/consistency.hpp>
#include <diffusion/samplers/sa_solver.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::int64_t t_step = 500, p_step = 480;
constexpr double cfg_scale = 7.5, euler_sigma = 2.0, euler_sigma_to = 1.6;
constexpr double langevin_alpha = 1e-3, langevin_sigma = 0.5;
constexpr double flow_sigma = 0.8, flow_sigma_to = 0.75;

/// alphas_cumprod of Stable Diffusion's schedule, built as diffusers builds it (float32 cumprod).
const torch::Tensor& alphas_cumprod() {
  static const torch::Tensor ac = [] {
    const auto b = torch::linspace(std::sqrt(0.00085), std::sqrt(0.012), 1000, torch::kFloat32).pow(2);
    return torch::cumprod(1.0 - b, 0);
  }();
  return ac;
}

struct tensors {
  torch::Tensor x, e, d2, h0, h1, h2, h3;  // d2, h0 … h3: the sampler steps' second output and history
  explicit tensors(std::int64_t n) {
    torch::manual_seed(1);
    x = torch::randn({n});
    e = torch::randn({n});
    d2 = torch::randn({n});
    h0 = torch::randn({n});
    h1 = torch::randn({n});
    h2 = torch::randn({n});
    h3 = torch::randn({n});
  }
};

tensors& pool(std::int64_t n) {
  static std::map<std::int64_t, tensors> all;
  auto it = all.find(n);
  if (it == all.end()) it = all.emplace(n, tensors(n)).first;
  return it->second;
}

using step_fn = std::function<torch::Tensor(const tensors&)>;

torch::Tensor ddpm(const tensors& in) {
  const auto& ac = alphas_cumprod();
  const auto alpha_prod_t = ac[t_step];
  const auto alpha_prod_t_prev = ac[t_step - 1];
  const auto beta_prod_t = 1 - alpha_prod_t;
  const auto beta_prod_t_prev = 1 - alpha_prod_t_prev;
  const auto current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
  const auto current_beta_t = 1 - current_alpha_t;
  const auto pred_original_sample = (in.x - beta_prod_t.pow(0.5) * in.e) / alpha_prod_t.pow(0.5);
  const auto pred_original_sample_coeff = (alpha_prod_t_prev.pow(0.5) * current_beta_t) / beta_prod_t;
  const auto current_sample_coeff = current_alpha_t.pow(0.5) * beta_prod_t_prev / beta_prod_t;
  auto pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * in.x;
  const auto variance = torch::clamp((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, 1e-20);
  const auto variance_noise = torch::randn(in.x.sizes());
  return pred_prev_sample + variance.pow(0.5) * variance_noise;
}

torch::Tensor ddim(const tensors& in) {
  const auto& ac = alphas_cumprod();
  const auto alpha_prod_t = ac[t_step];
  const auto alpha_prod_t_prev = ac[p_step];
  const auto beta_prod_t = 1 - alpha_prod_t;
  const auto pred_original_sample = (in.x - beta_prod_t.pow(0.5) * in.e) / alpha_prod_t.pow(0.5);
  const auto pred_sample_direction = (1 - alpha_prod_t_prev).pow(0.5) * in.e;  // std_dev_t = 0
  return alpha_prod_t_prev.pow(0.5) * pred_original_sample + pred_sample_direction;
}

torch::Tensor q_sample(const tensors& in) {
  const auto& ac = alphas_cumprod();
  const auto sqrt_alpha_prod = ac[t_step].pow(0.5).flatten();
  const auto sqrt_one_minus_alpha_prod = (1 - ac[t_step]).pow(0.5).flatten();
  return sqrt_alpha_prod * in.x + sqrt_one_minus_alpha_prod * in.e;
}

torch::Tensor q_sample_rng(const tensors& in) {  // a diffusers training step: randn_like, then add_noise
  const auto noise = torch::randn_like(in.x);
  const auto& ac = alphas_cumprod();
  const auto sqrt_alpha_prod = ac[t_step].pow(0.5).flatten();
  const auto sqrt_one_minus_alpha_prod = (1 - ac[t_step]).pow(0.5).flatten();
  return sqrt_alpha_prod * in.x + sqrt_one_minus_alpha_prod * noise;
}

torch::Tensor cfg(const tensors& in) { return in.e + cfg_scale * (in.x - in.e); }

torch::Tensor euler(const tensors& in) {
  const auto d = (in.x - in.e) / euler_sigma;
  return in.x + d * (euler_sigma_to - euler_sigma);
}

torch::Tensor euler_a(const tensors& in) {
  const auto split = diffusion::ancestral_step(euler_sigma, euler_sigma_to, 1.0);
  const auto d = (in.x - in.e) / euler_sigma;
  const auto x = in.x + d * (split.sigma_down - euler_sigma);
  return x + torch::randn_like(x) * split.sigma_up;
}

torch::Tensor langevin(const tensors& in) {
  const auto grad = (in.e - in.x) / (langevin_sigma * langevin_sigma);
  const auto noise = torch::randn_like(in.x);
  const auto x_mean = in.x + langevin_alpha * grad;
  return x_mean + std::sqrt(2.0 * langevin_alpha) * noise;
}

torch::Tensor flow_euler(const tensors& in) { return in.x + (flow_sigma_to - flow_sigma) * in.e; }

torch::Tensor flow_sde(const tensors& in) {
  const auto x0 = in.x - flow_sigma * in.e;
  const auto noise = torch::randn_like(in.x);
  return (1.0 - flow_sigma_to) * x0 + flow_sigma_to * noise;
}

// ---------------------------------------------------------------------------------------
// The sampler steps of issue 12, each one call of the reference's step in its steady state
// (history full; the history is a list of tensors there, so keeping it costs nothing). x = the
// state, e = D (x̂₀) at the step's start, d2 = the second model output (stage two; CFG++'s
// unconditional D), h0 … h3 = the history, newest first. σ-space steps go from σ = 2 to 1.6 with
// earlier levels 2.5, 3.2, 3.9, 4.7; the diffusers (variance-preserving) ones from timestep 500 to
// 480 with earlier timesteps 520, 540, 560, as bench_kernels. Every row starts from D/x̂₀, as the
// library's step does: diffusers' convert_model_output (ε → x̂₀) is left out of the rows where the
// library's step takes x̂₀ (unipc, lcm, tcd), and kept where the library forms ε itself (deis, plms:
// ε = (x − α D)/σ, the second half of convert_model_output). Scalars that k-diffusion forms as
// 0-dim tensors (t_fn, sigma_fn, h, r) are doubles here, and the noise is randn_like where
// k-diffusion's SDE samplers default to a BrownianTreeNoiseSampler (torchsde, far slower), and
// LMS's coefficients come from diffusion::lms_coefficients where k-diffusion integrates with
// scipy.integrate.quad: each choice makes the LibTorch row cheaper than the reference, so the
// "vs LibTorch" ratios are lower bounds.

constexpr double hist_sigmas[] = {2.5, 3.2, 3.9, 4.7};

double ac_d(std::int64_t t) { return alphas_cumprod()[t].item<double>(); }
double lam_vp(std::int64_t t) { return 0.5 * (std::log(ac_d(t)) - std::log1p(-ac_d(t))); }  // log(α/σ)

torch::Tensor dpmpp_2m(const tensors& in) {  // k-diffusion sample_dpmpp_2m
  const double t = -std::log(euler_sigma), t_next = -std::log(euler_sigma_to), h = t_next - t;
  const double h_last = t - (-std::log(hist_sigmas[0])), r = h_last / h;
  const auto denoised_d = (1 + 1 / (2 * r)) * in.e - (1 / (2 * r)) * in.h0;
  return (euler_sigma_to / euler_sigma) * in.x - std::expm1(-h) * denoised_d;
}

torch::Tensor dpmpp_2m_sde(const tensors& in) {  // k-diffusion sample_dpmpp_2m_sde, eta = 1, midpoint
  const double eta = 1.0, s_noise = 1.0;
  const double t = -std::log(euler_sigma), s = -std::log(euler_sigma_to), h = s - t, eta_h = eta * h;
  const double h_last = t - (-std::log(hist_sigmas[0])), r = h_last / h;
  auto x = euler_sigma_to / euler_sigma * std::exp(-eta_h) * in.x + (-std::expm1(-h - eta_h)) * in.e;
  x = x + 0.5 * (-std::expm1(-h - eta_h)) * (1 / r) * (in.e - in.h0);
  return x + torch::randn_like(x) * euler_sigma_to * std::sqrt(-std::expm1(-2 * eta_h)) * s_noise;
}

torch::Tensor dpmpp_3m_sde(const tensors& in) {  // k-diffusion sample_dpmpp_3m_sde, eta = 1
  const double eta = 1.0, s_noise = 1.0;
  const double h = std::log(euler_sigma / euler_sigma_to), h_eta = h * (eta + 1);
  const double h_1 = std::log(hist_sigmas[0] / euler_sigma), h_2 = std::log(hist_sigmas[1] / hist_sigmas[0]);
  auto x = std::exp(-h_eta) * in.x + (-std::expm1(-h_eta)) * in.e;
  const double r0 = h_1 / h, r1 = h_2 / h;
  const auto d1_0 = (in.e - in.h0) / r0;
  const auto d1_1 = (in.h0 - in.h1) / r1;
  const auto d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1);
  const auto d2 = (d1_0 - d1_1) / (r0 + r1);
  const double phi_2 = std::expm1(-h_eta) / h_eta + 1, phi_3 = phi_2 / h_eta - 0.5;
  x = x + phi_2 * d1 - phi_3 * d2;
  return x + torch::randn_like(x) * euler_sigma_to * std::sqrt(-std::expm1(-2 * h * eta)) * s_noise;
}

torch::Tensor lms(const tensors& in) {  // k-diffusion sample_lms, order 4
  const auto d = (in.x - in.e) / euler_sigma;  // to_d
  const double nodes[] = {euler_sigma, hist_sigmas[0], hist_sigmas[1], hist_sigmas[2]};
  const auto c = diffusion::lms_coefficients(nodes, euler_sigma_to);
  // x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds))): Python's sum starts from 0.
  torch::Tensor acc = 0 + c[0] * d;
  acc = acc + c[1] * in.h0;
  acc = acc + c[2] * in.h1;
  acc = acc + c[3] * in.h2;
  return in.x + acc;
}

torch::Tensor unipc(const tensors& in) {  // diffusers UniPCMultistepScheduler.step: bh2, order 2, corrector
  // Shaped (batch, channels, ...) as diffusers' einsum over the stacked differences expects.
  const auto v = [](const torch::Tensor& t) { return t.view({1, 4, -1}); };
  const auto model_t = v(in.e), last_sample = v(in.h2), m0 = v(in.h0), m1 = v(in.h1);
  const auto alpha = [](std::int64_t t) { return std::sqrt(ac_d(t)); };
  const auto sigma = [](std::int64_t t) { return std::sqrt(1 - ac_d(t)); };
  // multistep_uni_c_bh_update(this_model_output = D, last_sample, order = 2): s0 = 520, t = 500.
  torch::Tensor x_c;
  {
    const double h = lam_vp(500) - lam_vp(520), rk = (lam_vp(540) - lam_vp(520)) / h;
    const auto rks = torch::tensor({rk, 1.0}, torch::kFloat32);
    const double hh = -h, h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);
    double h_phi_k = h_phi_1 / hh - 1, factorial_i = 1;
    std::vector<torch::Tensor> R;
    std::vector<double> b;
    for (int i = 1; i <= 2; ++i) {
      R.push_back(torch::pow(rks, i - 1));
      b.push_back(h_phi_k * factorial_i / B_h);
      factorial_i *= i + 1;
      h_phi_k = h_phi_k / hh - 1 / factorial_i;
    }
    const auto Rm = torch::stack(R);
    const auto bt = torch::tensor(b, torch::kFloat32);
    const auto D1s = torch::stack({(m1 - m0) / rk}, 1);
    const auto rhos_c = torch::linalg::solve(Rm, bt, /*left=*/true);
    const auto x_t_ = sigma(500) / sigma(520) * last_sample - alpha(500) * h_phi_1 * m0;
    const auto corr_res = torch::einsum("k,bkc...->bc...", {rhos_c.slice(0, 0, 1), D1s});
    const auto D1_t = model_t - m0;
    x_c = x_t_ - alpha(500) * B_h * (corr_res + rhos_c[-1] * D1_t);
  }
  // multistep_uni_p_bh_update(sample = x_c, order = 2): s0 = 500, t = 480; ρ_p = 0.5.
  const double h = lam_vp(480) - lam_vp(500), rk = (lam_vp(520) - lam_vp(500)) / h;
  const double hh = -h, h_phi_1 = std::expm1(hh), B_h = std::expm1(hh);
  const auto D1s = torch::stack({(m0 - model_t) / rk}, 1);
  const auto rhos_p = torch::tensor({0.5f});
  const auto x_t_ = sigma(480) / sigma(500) * x_c - alpha(480) * h_phi_1 * model_t;
  const auto pred_res = torch::einsum("k,bkc...->bc...", {rhos_p, D1s});
  return (x_t_ - alpha(480) * B_h * pred_res).view({-1});
}

torch::Tensor deis(const tensors& in) {  // diffusers DEISMultistepScheduler, multistep_deis_third_order_update
  const auto alpha = [](std::int64_t t) { return std::sqrt(ac_d(t)); };
  const auto sigma = [](std::int64_t t) { return std::sqrt(1 - ac_d(t)); };
  const auto m0 = (in.x - alpha(500) * in.e) / sigma(500);  // convert_model_output, algorithm_type "deis"
  const double rho_t = sigma(480) / alpha(480), rho_s0 = sigma(500) / alpha(500), rho_s1 = sigma(520) / alpha(520),
               rho_s2 = sigma(540) / alpha(540);
  const auto ind_fn = [](double t, double b, double c, double d) {
    const double numerator = t * (std::log(c) * (std::log(d) - std::log(t) + 1) - std::log(d) * std::log(t) + std::log(d) +
                                  std::log(t) * std::log(t) - 2 * std::log(t) + 2);
    return numerator / ((std::log(b) - std::log(c)) * (std::log(b) - std::log(d)));
  };
  const double coef1 = ind_fn(rho_t, rho_s0, rho_s1, rho_s2) - ind_fn(rho_s0, rho_s0, rho_s1, rho_s2);
  const double coef2 = ind_fn(rho_t, rho_s1, rho_s2, rho_s0) - ind_fn(rho_s0, rho_s1, rho_s2, rho_s0);
  const double coef3 = ind_fn(rho_t, rho_s2, rho_s0, rho_s1) - ind_fn(rho_s0, rho_s2, rho_s0, rho_s1);
  return alpha(480) * (in.x / alpha(500) + coef1 * m0 + coef2 * in.h0 + coef3 * in.h1);
}

torch::Tensor plms(const tensors& in) {  // diffusers PNDMScheduler.step_plms (skip_prk_steps), 4 stored ε
  const auto& ac = alphas_cumprod();
  const auto alpha_prod_t = ac[500];
  const auto alpha_prod_t_prev = ac[480];
  const auto eps = (in.x - alpha_prod_t.pow(0.5) * in.e) / (1 - alpha_prod_t).pow(0.5);  // ε from D
  const auto model_output = (1.0 / 24) * (55 * eps - 59 * in.h0 + 37 * in.h1 - 9 * in.h2);
  // _get_prev_sample
  const auto beta_prod_t = 1 - alpha_prod_t;
  const auto beta_prod_t_prev = 1 - alpha_prod_t_prev;
  const auto sample_coeff = (alpha_prod_t_prev / alpha_prod_t).pow(0.5);
  const auto model_output_denom_coeff =
      alpha_prod_t * beta_prod_t_prev.pow(0.5) + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).pow(0.5);
  return sample_coeff * in.x - (alpha_prod_t_prev - alpha_prod_t) * model_output / model_output_denom_coeff;
}

torch::Tensor dpm2(const tensors& in) {  // k-diffusion sample_dpm_2, both stages (D₂ = d2 stands for the model call)
  const auto d = (in.x - in.e) / euler_sigma;
  const double sigma_mid = std::exp(std::lerp(std::log(euler_sigma), std::log(euler_sigma_to), 0.5));
  const double dt_1 = sigma_mid - euler_sigma, dt_2 = euler_sigma_to - euler_sigma;
  const auto x_2 = in.x + d * dt_1;
  const auto d_2 = (x_2 - in.d2) / sigma_mid;
  return in.x + d_2 * dt_2;
}

torch::Tensor dpmpp_2s_ancestral(const tensors& in) {  // k-diffusion sample_dpmpp_2s_ancestral, eta = 1
  const auto a = diffusion::ancestral_step(euler_sigma, euler_sigma_to, 1.0);
  const double t = -std::log(euler_sigma), t_next = -std::log(a.sigma_down), r = 0.5, h = t_next - t, s = t + r * h;
  const auto x_2 = (std::exp(-s) / std::exp(-t)) * in.x - std::expm1(-h * r) * in.e;
  (void)x_2;  // the model is evaluated at x_2: denoised_2 = d2
  auto x = (std::exp(-t_next) / std::exp(-t)) * in.x - std::expm1(-h) * in.d2;
  return x + torch::randn_like(x) * a.sigma_up;
}

torch::Tensor dpmpp_sde(const tensors& in) {  // k-diffusion sample_dpmpp_sde, eta = 1, r = 1/2
  const double t = -std::log(euler_sigma), t_next = -std::log(euler_sigma_to), h = t_next - t, r = 0.5;
  const double s = t + h * r, fac = 1 / (2 * r);
  const auto a1 = diffusion::ancestral_step(std::exp(-t), std::exp(-s), 1.0);
  const double s_ = -std::log(a1.sigma_down);
  const auto z1 = torch::randn_like(in.x);  // the tree's increment over [σ_m, σ]
  auto x_2 = (std::exp(-s_) / std::exp(-t)) * in.x - std::expm1(t - s_) * in.e;
  x_2 = x_2 + z1 * a1.sigma_up;
  benchmark::DoNotOptimize(x_2.data_ptr());  // the model is evaluated at x_2: denoised_2 = d2
  const auto a2 = diffusion::ancestral_step(std::exp(-t), std::exp(-t_next), 1.0);
  const double t_next_ = -std::log(a2.sigma_down);
  const auto denoised_d = (1 - fac) * in.e + fac * in.d2;
  auto x = (std::exp(-t_next_) / std::exp(-t)) * in.x - std::expm1(t - t_next_) * denoised_d;
  // The tree's increment over [σ_next, σ], correlated with z1 as the tree's (ρ² = (σ − σ_m)/(σ − σ_next)).
  const double rho = std::sqrt((std::exp(-t) - std::exp(-s)) / (std::exp(-t) - std::exp(-t_next)));
  const auto z2 = rho * z1 + std::sqrt(1 - rho * rho) * torch::randn_like(in.x);
  return x + z2 * a2.sigma_up;
}

torch::Tensor lcm(const tensors& in) {  // diffusers LCMScheduler.step from pred_original_sample = e
  const auto c = diffusion::lcm_boundary(500.0);
  const auto alpha_prod_t_prev = alphas_cumprod()[480];
  const auto beta_prod_t_prev = 1 - alpha_prod_t_prev;
  const auto denoised = c.c_out * in.e + c.c_skip * in.x;
  const auto noise = torch::randn(in.x.sizes());  // randn_tensor
  return alpha_prod_t_prev.sqrt() * denoised + beta_prod_t_prev.sqrt() * noise;
}

torch::Tensor tcd(const tensors& in) {  // diffusers TCDScheduler.step, eta (γ) = 0.3, from x̂₀ = e
  const auto& ac = alphas_cumprod();
  const auto alpha_prod_t = ac[500];
  const auto alpha_prod_t_prev = ac[480];
  const auto alpha_prod_s = ac[336];  // floor((1 − 0.3)·480)
  const auto beta_prod_s = 1 - alpha_prod_s;
  const auto pred_original_sample = in.e;
  const auto pred_epsilon = (in.x - alpha_prod_t.sqrt() * pred_original_sample) / (1 - alpha_prod_t).sqrt();
  const auto pred_noised_sample = alpha_prod_s.sqrt() * pred_original_sample + beta_prod_s.sqrt() * pred_epsilon;
  const auto noise = torch::randn(in.x.sizes());
  return (alpha_prod_t_prev / alpha_prod_s).sqrt() * pred_noised_sample + (1 - alpha_prod_t_prev / alpha_prod_s).sqrt() * noise;
}

torch::Tensor cfgpp_euler(const tensors& in) {  // ComfyUI sample_euler_cfg_pp: e = D_λ, d2 = D_u
  const auto d = (in.x - in.d2) / euler_sigma;  // to_d(x, sigma, uncond_denoised)
  return in.e + d * euler_sigma_to;
}

torch::Tensor res_multistep(const tensors& in) {  // ComfyUI sample_res_multistep, eta = 0, second-order branch
  const double t = -std::log(euler_sigma), t_next = -std::log(euler_sigma_to), t_prev = -std::log(hist_sigmas[0]);
  const double h = t_next - t, c2 = (t_prev - t) / h;
  const double phi1 = std::expm1(-h) / -h, phi2 = (phi1 - 1.0) / -h;
  const double b1 = phi1 - phi2 / c2, b2 = phi2 / c2;
  return (std::exp(-t_next) / std::exp(-t)) * in.x + h * (b1 * in.e + b2 * in.h0);
}

torch::Tensor er_sde(const tensors& in) {  // ComfyUI sample_er_sde, stage 3, default noise scaler (h1 = old_denoised_d)
  const auto scaler = [](double v) { return v * (std::exp(std::pow(v, 0.3)) + 10.0); };
  const double ls = euler_sigma, lt = euler_sigma_to, l1 = hist_sigmas[0], l2 = hist_sigmas[1];  // ς = σ (α = 1)
  const double r = scaler(lt) / scaler(ls);
  auto x = r * in.x + (1 - r) * in.e;
  const double dt = lt - ls, step = -dt / 200.0;
  double s = 0.0, s_u = 0.0;  // ComfyUI's 200-point sums (tensors there)
  for (int k = 0; k < 200; ++k) {
    const double pos = lt + k * step, sc = scaler(pos);
    s += step / sc;
    s_u += (pos - ls) / sc * step;
  }
  const auto denoised_d = (in.e - in.h0) / (ls - l1);
  x = x + (dt + s * scaler(lt)) * denoised_d;
  const auto denoised_u = (denoised_d - in.h1) / ((ls - l2) / 2);
  x = x + ((dt * dt) / 2 + s_u * scaler(lt)) * denoised_u;
  return x + torch::randn_like(x) * std::sqrt(lt * lt - ls * ls * r * r);
}

torch::Tensor sa_solver(const tensors& in) {  // diffusers SASolverScheduler.step: corrector then predictor, tau = 1, orders 3
  // x = this_sample (unused by the update: the corrector starts from last_sample = h2), e = x̂₀,
  // h0, h1 = the earlier outputs, h3 = last_noise. The coefficients (0-dim tensors there) as doubles.
  const double lam_new = -std::log(euler_sigma), lam0 = -std::log(hist_sigmas[0]), lam1 = -std::log(hist_sigmas[1]);
  const double hc = lam_new - lam0, rc[] = {1.0, 0.0, (lam1 - lam0) / hc};
  const auto cc = diffusion::detail::sa_solver_update_coefficients(euler_sigma / hist_sigmas[0], euler_sigma, 1.0, hc, 1.0, rc);
  auto corr = torch::zeros_like(in.x);  // stochastic_adams_moulton_update's gradient_part
  corr += cc.w[2] * in.h1;
  corr += cc.w[1] * in.h0;
  corr += cc.w[0] * in.e;
  const auto x_c = cc.ratio * in.h2 + corr + cc.noise * in.h3;
  const double hp = -std::log(euler_sigma_to) - lam_new;
  const double rp[] = {0.0, (lam0 - lam_new) / hp, (lam1 - lam_new) / hp};
  const auto pc = diffusion::detail::sa_solver_update_coefficients(euler_sigma_to / euler_sigma, euler_sigma_to, 1.0, hp, 1.0, rp);
  const auto noise = torch::randn(in.x.sizes());  // randn_tensor
  auto pred = torch::zeros_like(x_c);  // stochastic_adams_bashforth_update's gradient_part
  pred += pc.w[0] * in.e;
  pred += pc.w[1] * in.h0;
  pred += pc.w[2] * in.h1;
  return pc.ratio * x_c + pred + pc.noise * noise;
}

torch::Tensor sde_dpmsolver(const tensors& in) {  // diffusers multistep_dpm_solver_second_order_update, sde-dpmsolver, midpoint
  const auto alpha = [](std::int64_t t) { return std::sqrt(ac_d(t)); };
  const auto sigma = [](std::int64_t t) { return std::sqrt(1 - ac_d(t)); };
  const auto m0 = (in.x - alpha(500) * in.e) / sigma(500);  // ε from D
  const double h = lam_vp(480) - lam_vp(500), r0 = (lam_vp(500) - lam_vp(520)) / h;
  const auto D1 = (1.0 / r0) * (m0 - in.h0);
  const auto noise = torch::randn(in.x.sizes());
  return (alpha(480) / alpha(500)) * in.x - 2.0 * (sigma(480) * std::expm1(h)) * m0 - (sigma(480) * std::expm1(h)) * D1 +
         sigma(480) * std::sqrt(std::expm1(2 * h)) * noise;
}

torch::Tensor ipndm(const tensors& in) {  // ComfyUI sample_ipndm, order 4
  const auto d_cur = (in.x - in.e) / euler_sigma;
  return in.x + (euler_sigma_to - euler_sigma) * (55 * d_cur - 59 * in.h0 + 37 * in.h1 - 9 * in.h2) / 24;
}

torch::Tensor dpmpp_3s(const tensors& in) {  // diffusers singlestep_dpm_solver_third_order_update, dpmsolver++, midpoint
  // The block starts at 540 (x, m2 = e), its later outputs at 520 (m1 = d2) and 500 (m0 = h0); target 480.
  const auto alpha = [](std::int64_t t) { return std::sqrt(ac_d(t)); };
  const auto sigma = [](std::int64_t t) { return std::sqrt(1 - ac_d(t)); };
  const auto &m0 = in.h0, &m1 = in.d2, &m2 = in.e;
  const double h = lam_vp(480) - lam_vp(540), h_0 = lam_vp(500) - lam_vp(540), h_1 = lam_vp(520) - lam_vp(540);
  const double r0 = h_0 / h, r1 = h_1 / h;
  const auto& D0 = m2;
  const auto D1_0 = (1.0 / r1) * (m1 - m2), D1_1 = (1.0 / r0) * (m0 - m2);
  const auto D1 = (r0 * D1_0 - r1 * D1_1) / (r0 - r1);  // computed by diffusers before it picks the form
  const auto D2 = 2.0 * (D1_1 - D1_0) / (r0 - r1);
  benchmark::DoNotOptimize(D1.data_ptr());
  benchmark::DoNotOptimize(D2.data_ptr());
  return (sigma(480) / sigma(540)) * in.x - (alpha(480) * std::expm1(-h)) * D0 +
         (alpha(480) * (std::expm1(-h) / h + 1.0)) * D1_1;
}

torch::Tensor normals(const tensors& in) { return torch::randn(in.x.sizes()); }

void run(benchmark::State& state, int threads, std::size_t bytes_per_element, bool noisy, const step_fn& f) {
  const std::int64_t n = state.range(0);
  torch::set_num_threads(threads);
  const tensors& in = pool(n);
  if (n <= (std::int64_t{1} << 22)) benchmark::DoNotOptimize(f(in).data_ptr());  // warm-up (not at 64 M: 0.3 s+)
  for (auto _ : state) {
    auto out = f(in);
    benchmark::DoNotOptimize(out.data_ptr());
    benchmark::ClobberMemory();
  }
  torch::set_num_threads(1);
  const double elements = static_cast<double>(state.iterations()) * static_cast<double>(n);
  state.counters["bytes_per_second"] = benchmark::Counter(elements * static_cast<double>(bytes_per_element),
                                                          benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  if (noisy) state.counters["normals_per_second"] = benchmark::Counter(elements, benchmark::Counter::kIsRate);
  state.SetItemsProcessed(state.iterations() * n);
}

std::size_t max_elements = std::size_t{1} << 26;

void add(const std::string& step, std::size_t bytes, bool noisy, step_fn f,
         std::size_t cap = std::size_t{1} << 26) {
  for (const int threads : {1, 2}) {
    const std::string name = step + (threads == 1 ? "/torch" : "/torch_2t");
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [threads, bytes, noisy, f](benchmark::State& s) {
      run(s, threads, bytes, noisy, f);
    });
    b->UseRealTime();
    for (std::size_t n = std::size_t{1} << 14; n <= cap && n <= max_elements; n <<= 4)
      b->Arg(static_cast<std::int64_t>(n));
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::read_size_cap(argc, argv, max_elements);
  torch::set_num_threads(1);
  torch::manual_seed(0);
  add("normals", 4, true, normals);
  add("ddpm", 12, true, ddpm);
  add("ddim", 12, false, ddim);
  add("q_sample", 12, false, q_sample);
  add("q_sample_rng", 8, true, q_sample_rng);
  add("cfg", 12, false, cfg);
  add("euler", 12, false, euler);
  add("euler_a", 12, true, euler_a);
  add("langevin", 12, true, langevin);
  add("flow_euler", 12, false, flow_euler);
  add("flow_sde", 12, true, flow_sde);
  // The sampler steps of issue 12, up to 4 M as in bench_kernels; bytes as bench_kernels counts them.
  constexpr std::size_t four_m = std::size_t{1} << 22;
  add("dpmpp_2m", 20, false, dpmpp_2m, four_m);
  add("dpmpp_2m_sde", 20, true, dpmpp_2m_sde, four_m);
  add("dpmpp_3m_sde", 24, true, dpmpp_3m_sde, four_m);
  add("lms", 28, false, lms, four_m);
  add("unipc", 28, false, unipc, four_m);
  add("deis", 24, false, deis, four_m);
  add("plms", 28, false, plms, four_m);
  add("dpm2", 28, false, dpm2, four_m);
  add("dpmpp_2s_ancestral", 32, true, dpmpp_2s_ancestral, four_m);
  add("dpmpp_sde", 40, true, dpmpp_sde, four_m);
  add("lcm", 12, true, lcm, four_m);
  add("tcd", 12, true, tcd, four_m);
  add("cfgpp_euler", 16, false, cfgpp_euler, four_m);
  add("res_multistep", 20, false, res_multistep, four_m);
  add("er_sde", 24, true, er_sde, four_m);
  add("sa_solver", 40, true, sa_solver, four_m);
  add("sde_dpmsolver", 20, true, sde_dpmsolver, four_m);
  add("ipndm", 28, false, ipndm, four_m);
  add("dpmpp_3s", 20, false, dpmpp_3s, four_m);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
