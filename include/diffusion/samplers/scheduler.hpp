/// @file
/// @brief A scheduler object for runtimes that own the sampling loop: the interface of diffusers'
/// `SchedulerMixin` (`set_timesteps`, `timesteps`, `init_noise_sigma`, `scale_model_input`,
/// `step`, `add_noise`) built on the library's step functions, configured from the keys of a
/// diffusers `scheduler_config.json` (parse one with samplers/scheduler_json.hpp).
///
/// @code
/// diffusion::scheduler sched(config);            // or diffusion::scheduler_from_json(text)
/// sched.set_timesteps(30);
/// fill_normal(x); scale(x, sched.init_noise_sigma());
/// for (std::size_t i = 0; i < sched.timesteps().size(); ++i) {
///   sched.scale_model_input<float>(x, i, model_in);
///   model(model_in, sched.timesteps()[i], out);   // your network
///   sched.step<float>(i, out, x, diffusion::step_stream(noise, i));
/// }
/// @endcode
///
/// Classes (diffusers' `_class_name`) and what the state x is:
/// | class | step functions | x |
/// |---|---|---|
/// | DDPMScheduler | @ref diffusion::ddpm_step "ddpm_step" on the respaced schedule | variance preserving |
/// | DDIMScheduler | @ref diffusion::ddim_step "ddim_step" (η from the config's `eta`) | variance preserving |
/// | EulerDiscreteScheduler | @ref diffusion::euler_step "euler_step" | σ-space (x₀ + σε) |
/// | EulerAncestralDiscreteScheduler | @ref diffusion::euler_ancestral_step "euler_ancestral_step" | σ-space |
/// | LMSDiscreteScheduler | @ref diffusion::lms_step "lms_step" (order `lms_order`, default 4) | σ-space (x₀ + σε) |
/// | HeunDiscreteScheduler | @ref diffusion::heun_predict "heun_predict" / @ref diffusion::heun_correct "heun_correct" (two calls per step) | σ-space |
/// | DPMSolverMultistepScheduler (dpmsolver++ or sde-dpmsolver++, orders 1–3, midpoint or heun; order 3: @ref diffusion::dpmpp_3m_sde_step "dpmpp_3m_sde_step", η = 0 or 1) | @ref diffusion::dpmpp_2m_step "dpmpp_2m_step" over VP levels; heun or sde-dpmsolver++: @ref diffusion::dpmpp_2m_sde_step "dpmpp_2m_sde_step" (η = 0 or 1) | variance preserving |
/// | FlowMatchEulerDiscreteScheduler | @ref diffusion::flow_euler_step "flow_euler_step" (x + (σ' − σ)u, one pass) for a velocity model, @ref diffusion::euler_step "euler_step" on flow levels for another prediction type; `stochastic_sampling`: @ref diffusion::flow_stochastic_step "flow_stochastic_step" (x̂₀ renoised to σ') | rectified flow ((1 − σ)x₀ + σε) |
/// | FlowMatchHeunDiscreteScheduler | @ref diffusion::heun_predict "heun_predict" / @ref diffusion::heun_correct "heun_correct" on flow levels | rectified flow |
/// | EDMEulerScheduler | @ref diffusion::euler_step "euler_step"; the model's output is EDM's F (@ref diffusion::edm_preconditioning "edm_preconditioning") | σ-space |
/// | EDMDPMSolverMultistepScheduler | as DPMSolverMultistepScheduler (dpmsolver++ / sde-dpmsolver++, orders 1–3) over σ-space levels, on EDM's F | σ-space |
/// | LCMScheduler | @ref diffusion::lcm_step "lcm_step" on @ref diffusion::consistency_timesteps "consistency_timesteps" | variance preserving |
/// | TCDScheduler | @ref diffusion::tcd_step "tcd_step" (γ is the config's `eta`, default 0.3) | variance preserving |
/// | UniPCMultistepScheduler (`predict_x0`, bh1/bh2, orders 1–3, `disable_corrector`) | @ref diffusion::unipc_step "unipc_step" over VP levels | variance preserving |
/// | SASolverScheduler (`data_prediction`, predictor and corrector orders 1–4, τ = `sa_tau` on a timestep window: diffusers' default `tau_func`; `step` needs noise where τ > 0) | @ref diffusion::sa_solver_step "sa_solver_step" over VP levels | variance preserving |
/// | KDPM2DiscreteScheduler | @ref diffusion::dpm2_predict "dpm2_predict" / @ref diffusion::dpm2_correct "dpm2_correct" (two calls per step, the second at √(σσ')) | σ-space |
/// | DEISMultistepScheduler (`deis`, `logrho`, orders 1–3) | @ref diffusion::deis_step "deis_step" over VP levels | variance preserving |
/// | DPMSolverMultistepScheduler, `algorithm_type="dpmsolver"` or `"sde-dpmsolver"` (orders 1–3, midpoint or heun) | @ref diffusion::dpm_solver_step "dpm_solver_step" (the noise-prediction form; `sde` for sde-dpmsolver) over VP levels | variance preserving |
/// | DPMSolverSinglestepScheduler (dpmsolver++, orders 1–3, midpoint or heun, diffusers' blocks of @ref diffusion::singlestep_orders "singlestep_orders") | @ref diffusion::dpmpp_singlestep_update "dpmpp_singlestep_update" from the block's start over VP levels | variance preserving |
/// | PNDMScheduler (`skip_prk_steps`) | @ref diffusion::plms_step "plms_step" over the training levels (diffusers' list with its repeated second timestep) | variance preserving |
/// | KDPM2AncestralDiscreteScheduler | the same between σ and σ↓ with σ↑ noise at the second call (@ref diffusion::ancestral_midpoint_levels "ancestral_midpoint_levels") | σ-space |
/// | DPMSolverSDEScheduler (k-diffusion's DPM++ SDE, r = 1/2, η = 1; `s_noise`) | @ref diffusion::dpmpp_sde_predict "dpmpp_sde_predict" / @ref diffusion::dpmpp_sde_correct "dpmpp_sde_correct" (two calls per step, the second at √(σσ'); each call takes fresh normals, the second stage's noise is ρz₁ + √(1 − ρ²)z₂, the Brownian-tree law) | σ-space |
/// | IPNDMScheduler (a v-prediction model; its own list σ = sin²(πs/2), s = 1 − k/N, the model's timestep the angle atan2(σ, α)·2/π) | @ref diffusion::plms_step "plms_step" without the improved-Euler start (Adams–Bashforth on ε, order rising to 4), the first call from pure noise (α = 0) | variance preserving |
///
/// The EDM classes take Karras' (or the exponential) σ list between `sigma_min` and `sigma_max`, the
/// model's timestep \f$c_\text{noise} = \tfrac14\ln\sigma\f$, its input \f$c_\text{in}x\f$, and D = c_skip x + c_out F.
/// The consistency classes (LCM, TCD) call the model at training timesteps and write to `x0`
/// LCM's consistency output f (diffusers' `denoised`) and TCD's x̂₀.
///
/// The flow classes take the σ list of @ref diffusion::flow_sigmas "flow_sigmas" (SD3's `shift`, or
/// Flux's dynamic shift with μ: call `set_timesteps(n, mu)` or `set_timesteps(sigmas, mu)`), the
/// model's timestep t = σ·N, its input the state itself, and its output the flow velocity
/// u = ε − x₀. They shift once (`scheduler_config::diffusers_double_shift` reproduces diffusers'
/// second shift of the end points, docs/conventions.md).
///
/// Where this object departs from diffusers (docs/conventions.md): the tables are double (diffusers
/// float32); DDIM's previous timestep is read from the list (diffusers computes t − T/N, wrong for
/// linspace/trailing spacing with T/N not an integer); `step` takes the step index rather than
/// the timestep value, and steps must be taken in order.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../process/combine.hpp"
#include "../process/edm.hpp"
#include "../process/forward.hpp"
#include "../process/parameterization.hpp"
#include "../process/posterior.hpp"
#include "../schedule/betas.hpp"
#include "../schedule/flow.hpp"
#include "../schedule/noise_schedule.hpp"
#include "../schedule/sigmas.hpp"
#include "../schedule/timesteps.hpp"
#include "ancestral.hpp"
#include "common.hpp"
#include "consistency.hpp"
#include "dpm_solver.hpp"
#include "ode.hpp"
#include "sde.hpp"
#include "multistep.hpp"
#include "sigma_common.hpp"
#include "singlestep.hpp"
#include "unipc.hpp"
#include "sa_solver.hpp"

/// @defgroup scheduler The scheduler object
/// @brief diffusers' scheduler interface over the library's step functions, from a scheduler_config.json.
/// @{

namespace diffusion {

/// @brief The diffusers scheduler classes the scheduler object reproduces.
enum class scheduler_kind {
  ddpm,                  ///< DDPMScheduler.
  ddim,                  ///< DDIMScheduler.
  euler,                 ///< EulerDiscreteScheduler.
  euler_ancestral,       ///< EulerAncestralDiscreteScheduler.
  heun,                  ///< HeunDiscreteScheduler.
  dpm_solver_multistep,  ///< DPMSolverMultistepScheduler (algorithm_type dpmsolver++, sde-dpmsolver++, dpmsolver or sde-dpmsolver, solver_order 1 … 3, solver_type midpoint or heun).
  flow_match_euler,      ///< FlowMatchEulerDiscreteScheduler (rectified flow; SD3, Flux).
  flow_match_heun,       ///< FlowMatchHeunDiscreteScheduler (rectified flow).
  lms_discrete,          ///< LMSDiscreteScheduler (the linear multistep method, order `lms_order`).
  edm_euler,             ///< EDMEulerScheduler (EDM's σ list and preconditioning, Euler).
  edm_dpm_solver_multistep,  ///< EDMDPMSolverMultistepScheduler (EDM's σ list and preconditioning, DPM-Solver++).
  lcm,                   ///< LCMScheduler (multistep consistency sampling, Luo et al. 2023).
  tcd,                   ///< TCDScheduler (strategic stochastic sampling, Zheng et al. 2024).
  unipc_multistep,       ///< UniPCMultistepScheduler (UniPC, Zhao et al. 2023; bh1/bh2, orders 1–3).
  kdpm2,                 ///< KDPM2DiscreteScheduler (DPM2, two calls per step).
  kdpm2_ancestral,       ///< KDPM2AncestralDiscreteScheduler (DPM2-ancestral, η = 1).
  deis_multistep,        ///< DEISMultistepScheduler (DEIS, log-ρ, orders 1–3).
  pndm,                  ///< PNDMScheduler with `skip_prk_steps` (PLMS, Liu et al. 2022).
  dpm_solver_singlestep,  ///< DPMSolverSinglestepScheduler (DPM-Solver++ singlestep, orders 1–3, midpoint or heun).
  ipndm,                 ///< IPNDMScheduler (iPNDM, Zhang & Chen 2023: fourth-order Adams–Bashforth on ε, a v-prediction model).
  dpm_solver_sde,        ///< DPMSolverSDEScheduler (DPM++ SDE, two calls per step, noise at both).
  sa_solver,             ///< SASolverScheduler (SA-Solver, Xue et al. 2023; data prediction, predictor and corrector orders 1–4).
};

/// @brief The diffusers `_class_name` of a kind ("DDIMScheduler", …).
inline std::string_view class_name(scheduler_kind k) noexcept {
  switch (k) {
    case scheduler_kind::ddpm: return "DDPMScheduler";
    case scheduler_kind::ddim: return "DDIMScheduler";
    case scheduler_kind::euler: return "EulerDiscreteScheduler";
    case scheduler_kind::euler_ancestral: return "EulerAncestralDiscreteScheduler";
    case scheduler_kind::heun: return "HeunDiscreteScheduler";
    case scheduler_kind::dpm_solver_multistep: return "DPMSolverMultistepScheduler";
    case scheduler_kind::flow_match_euler: return "FlowMatchEulerDiscreteScheduler";
    case scheduler_kind::flow_match_heun: return "FlowMatchHeunDiscreteScheduler";
    case scheduler_kind::lms_discrete: return "LMSDiscreteScheduler";
    case scheduler_kind::edm_euler: return "EDMEulerScheduler";
    case scheduler_kind::edm_dpm_solver_multistep: return "EDMDPMSolverMultistepScheduler";
    case scheduler_kind::lcm: return "LCMScheduler";
    case scheduler_kind::tcd: return "TCDScheduler";
    case scheduler_kind::unipc_multistep: return "UniPCMultistepScheduler";
    case scheduler_kind::kdpm2: return "KDPM2DiscreteScheduler";
    case scheduler_kind::kdpm2_ancestral: return "KDPM2AncestralDiscreteScheduler";
    case scheduler_kind::deis_multistep: return "DEISMultistepScheduler";
    case scheduler_kind::pndm: return "PNDMScheduler";
    case scheduler_kind::dpm_solver_singlestep: return "DPMSolverSinglestepScheduler";
    case scheduler_kind::ipndm: return "IPNDMScheduler";
    case scheduler_kind::dpm_solver_sde: return "DPMSolverSDEScheduler";
    case scheduler_kind::sa_solver: return "SASolverScheduler";
  }
  return "?";
}

/// @brief The β families of diffusers' `beta_schedule` key.
enum class beta_family {
  linear,             ///< "linear": @ref linear_betas.
  scaled_linear,      ///< "scaled_linear": @ref scaled_linear_betas.
  squaredcos_cap_v2,  ///< "squaredcos_cap_v2": @ref cosine_betas (s = 0.008, β_max = 0.999).
  sigmoid,            ///< "sigmoid": @ref sigmoid_betas.
};

/// @brief DPMSolverMultistepScheduler's `algorithm_type` (the values supported here).
enum class dpm_algorithm {
  dpmsolver_pp,      ///< "dpmsolver++": the ODE solver (@ref diffusion::dpmpp_2m_step "dpmpp_2m_step").
  sde_dpmsolver_pp,  ///< "sde-dpmsolver++": the SDE solver, η = 1 (@ref diffusion::dpmpp_2m_sde_step "dpmpp_2m_sde_step"); `step` needs noise.
  dpmsolver,         ///< "dpmsolver": the noise-prediction form (@ref diffusion::dpm_solver_step "dpm_solver_step"; DPMSolverMultistepScheduler only).
  sde_dpmsolver,     ///< "sde-dpmsolver": the SDE solver in noise-prediction form (@ref diffusion::dpm_solver_step "dpm_solver_step" with `sde`; DPMSolverMultistepScheduler only); `step` needs noise.
};

/// @brief The EDM classes' `sigma_schedule`: how N levels are placed between σ_max and σ_min.
enum class edm_sigma_schedule {
  karras,       ///< "karras": @ref karras_sigmas with ρ.
  exponential,  ///< "exponential": @ref exponential_sigmas (uniform in log σ).
};

/// @brief diffusers' `final_sigmas_type`: the σ after the last step.
enum class final_sigma {
  zero,       ///< "zero": the last step lands on the data.
  sigma_min,  ///< "sigma_min": on σ of the training schedule's first step.
};

/// @brief The configuration of a @ref diffusion::scheduler "scheduler": the keys of a diffusers `scheduler_config.json`
/// that change the math, with diffusers' names. Start from @ref defaults_for a class (diffusers'
/// defaults differ per class), then set what the model's config sets.
struct scheduler_config {
  scheduler_kind kind = scheduler_kind::ddim;                 ///< `_class_name`.
  std::size_t num_train_timesteps = 1000;                     ///< `num_train_timesteps`.
  double beta_start = 0.0001;                                 ///< `beta_start`.
  double beta_end = 0.02;                                     ///< `beta_end`.
  beta_family beta_schedule = beta_family::linear;            ///< `beta_schedule`.
  std::vector<double> trained_betas{};                        ///< `trained_betas` (non-empty: used instead).
  prediction prediction_type = prediction::epsilon;           ///< `prediction_type` (epsilon, sample, v_prediction).
  timestep_spacing spacing = timestep_spacing::leading;       ///< `timestep_spacing`.
  std::size_t steps_offset = 0;                               ///< `steps_offset` (leading spacing only).
  bool clip_sample = true;                                    ///< `clip_sample` (DDPM, DDIM).
  double clip_sample_range = 1.0;                             ///< `clip_sample_range`.
  bool thresholding = false;                                  ///< `thresholding` (DDPM, DDIM, DPM-Solver).
  double dynamic_thresholding_ratio = 0.995;                  ///< `dynamic_thresholding_ratio`.
  double sample_max_value = 1.0;                              ///< `sample_max_value`.
  bool set_alpha_to_one = true;                               ///< `set_alpha_to_one` (DDIM; PNDM, whose default is false).
  bool rescale_betas_zero_snr = false;                        ///< `rescale_betas_zero_snr`.
  bool use_karras_sigmas = false;                             ///< `use_karras_sigmas` (σ-space classes, DPM-Solver).
  bool use_exponential_sigmas = false;  ///< `use_exponential_sigmas` (σ-space classes, DPM-Solver): @ref exponential_sigmas between the same ends as Karras'.
  /// `use_lu_lambdas` (DPMSolverMultistepScheduler): @ref diffusion::logsnr_uniform_sigmas "logsnr_uniform_sigmas",
  /// steps uniform in λ = log(α/σ) between the training table's ends.
  bool use_lu_lambdas = false;
  bool use_beta_sigmas = false;  ///< `use_beta_sigmas` (σ-space classes, DPM-Solver): @ref beta_sigmas with α = β = 0.6 (diffusers' `_convert_to_beta` defaults) between the same ends as Karras'.
  final_sigma final_sigmas_type = final_sigma::zero;          ///< `final_sigmas_type`.
  variance_type variance = variance_type::fixed_small;        ///< `variance_type` (DDPM).
  double eta = 0.0;                                           ///< DDIM's η, TCD's γ ∈ [0, 1] (a `step()` argument in diffusers; TCD's default 0.3).
  double s_noise = 1.0;  ///< DPMSolverSDEScheduler's noise scale S_noise ≥ 0 (diffusers' `step(…, s_noise=1.0)` argument, not a config key).
  std::size_t solver_order = 2;                               ///< `solver_order` (DPM-Solver; 1, 2, or 3 with dpmsolver++).
  dpm_algorithm algorithm_type = dpm_algorithm::dpmsolver_pp;  ///< `algorithm_type` (DPM-Solver).
  dpm_solver_type solver_type = dpm_solver_type::midpoint;    ///< `solver_type` (DPM-Solver, order 2).
  bool lower_order_final = true;                              ///< `lower_order_final` (DPM-Solver, < 15 steps).
  bool euler_at_final = false;                                ///< `euler_at_final` (DPM-Solver).
  double shift = 1.0;                                         ///< `shift` (flow classes; SD3: 3.0).
  bool use_dynamic_shifting = false;                          ///< `use_dynamic_shifting` (flow: Flux's μ shift).
  flux_shift_parameters flux_shift{};                         ///< `base_image_seq_len`, `max_image_seq_len`, `base_shift`, `max_shift`.
  time_shift_kind time_shift_type = time_shift_kind::exponential;  ///< `time_shift_type` (flow).
  double shift_terminal = 0.0;                                ///< `shift_terminal` (flow; 0 or null: off).
  bool stochastic_sampling = false;                           ///< `stochastic_sampling` (FlowMatchEuler).
  double sigma_min = 0.002;                                   ///< `sigma_min` (EDM classes).
  double sigma_max = 80.0;                                    ///< `sigma_max` (EDM classes).
  double sigma_data = 0.5;                                    ///< `sigma_data` (EDM classes: σ_d of the preconditioning).
  edm_sigma_schedule sigma_schedule = edm_sigma_schedule::karras;  ///< `sigma_schedule` (EDM classes).
  double rho = 7.0;                                           ///< `rho` (EDM classes, Karras' ρ).
  std::size_t original_inference_steps = 50;                  ///< `original_inference_steps` (LCM, TCD: the distillation schedule).
  double timestep_scaling = 10.0;                             ///< `timestep_scaling` (LCM's boundary condition).
  unipc_variant unipc_solver_type = unipc_variant::bh2;       ///< `solver_type` of UniPCMultistepScheduler ("bh1", "bh2").
  std::vector<std::size_t> disable_corrector{};               ///< `disable_corrector` (UniPC: no UniC at call i + 1 for each i listed).
  std::size_t predictor_order = 2;                            ///< `predictor_order` (SASolverScheduler, 1 … 4).
  std::size_t corrector_order = 2;                            ///< `corrector_order` (SASolverScheduler, 1 … 4).
  /// SASolverScheduler's τ (diffusers' `tau_func`, here a window): τ = `sa_tau` at calls whose timestep t lies in
  /// [`sa_tau_t_min`, `sa_tau_t_max`], else 0. The defaults are diffusers' default `tau_func` (1 for 200 ≤ t ≤ 800).
  double sa_tau = 1.0;
  double sa_tau_t_min = 200.0;  ///< Lower end of the τ window (timesteps).
  double sa_tau_t_max = 800.0;  ///< Upper end of the τ window (timesteps).
  /// The order of LMSDiscreteScheduler, 1 … 4: diffusers' `step(…, order=4)` argument, not a config key.
  std::size_t lms_order = 4;
  /// Not a diffusers key: reproduce diffusers' second shift of the flow σ list's end points
  /// (diffusers #13243; @ref flow_schedule_options::diffusers_double_shift). Off: shifted once.
  bool diffusers_double_shift = false;
  /// Not a diffusers key: DPMSolverMultistepScheduler with solver_order 3 uses diffusers' own
  /// third-order term, which is half the Taylor term (second order; @ref dpmpp_sde_options::reference_3m),
  /// and with sde-dpmsolver++ diffusers' D₂ weight with its sign error (@ref dpmpp_sde_options::diffusers_sde_3m).
  /// Off: the third-order form.
  bool diffusers_dpm_3m = false;
  /// Not a diffusers key: IPNDMScheduler's first call, from pure noise (α = 0), takes x̂₀ = 0 as diffusers does
  /// (its x̂₀ = (x − σε)/max(α, 1e-8) has a numerator of exactly 0 there) instead of the model's x̂₀ = −v.
  /// Off: the model's (docs/conventions.md).
  bool diffusers_ipndm_start = false;

  /// @brief diffusers' defaults for a class: DDPM/DDIM leading spacing with `clip_sample` on;
  /// the σ-space classes and DPM-Solver linspace spacing with `clip_sample` off; the flow classes
  /// a flow-velocity model and no shift (`shift` 1.0, diffusers' default); TCD γ = 0.3.
  static scheduler_config defaults_for(scheduler_kind k) {
    scheduler_config c;
    c.kind = k;
    const bool discrete = k == scheduler_kind::ddpm || k == scheduler_kind::ddim;
    c.spacing = discrete || k == scheduler_kind::pndm ? timestep_spacing::leading : timestep_spacing::linspace;
    if (k == scheduler_kind::pndm) c.set_alpha_to_one = false;  // PNDMScheduler's default
    // DEISMultistepScheduler ends on timestep 0's level (it has no final_sigmas_type key).
    if (k == scheduler_kind::deis_multistep) c.final_sigmas_type = final_sigma::sigma_min;
    // SASolverScheduler ends on timestep 0's level too (it has no final_sigmas_type key).
    if (k == scheduler_kind::sa_solver) c.final_sigmas_type = final_sigma::sigma_min;
    c.clip_sample = discrete;
    if (k == scheduler_kind::flow_match_euler || k == scheduler_kind::flow_match_heun)
      c.prediction_type = prediction::flow_velocity;
    if (k == scheduler_kind::tcd) c.eta = 0.3;
    if (k == scheduler_kind::dpm_solver_singlestep) c.lower_order_final = false;  // DPMSolverSinglestepScheduler's default
    if (k == scheduler_kind::ipndm) c.prediction_type = prediction::v;  // IPNDMScheduler reads its model's output as v
    if (k == scheduler_kind::dpm_solver_sde) {  // DPMSolverSDEScheduler's own defaults (linear betas from 0.00085 to 0.012)
      c.beta_start = 0.00085;
      c.beta_end = 0.012;
    }
    return c;
  }
};

/// @brief The betas a @ref scheduler_config describes (the family, or `trained_betas`; rescaled to
/// zero terminal SNR when `rescale_betas_zero_snr`).
/// @throws std::invalid_argument as the family functions.
inline std::vector<double> config_betas(const scheduler_config& c) {
  std::vector<double> b;
  if (!c.trained_betas.empty()) {
    b = c.trained_betas;
    if (b.size() != c.num_train_timesteps)
      detail::throw_invalid("diffusion::scheduler", "trained_betas has " + detail::to_text(b.size()) +
                                                        " values but num_train_timesteps = " +
                                                        detail::to_text(c.num_train_timesteps));
  } else {
    switch (c.beta_schedule) {
      case beta_family::linear: b = linear_betas(c.num_train_timesteps, c.beta_start, c.beta_end); break;
      case beta_family::scaled_linear: b = scaled_linear_betas(c.num_train_timesteps, c.beta_start, c.beta_end); break;
      case beta_family::squaredcos_cap_v2: b = cosine_betas(c.num_train_timesteps); break;
      case beta_family::sigmoid: b = sigmoid_betas(c.num_train_timesteps, c.beta_start, c.beta_end); break;
    }
  }
  if (c.rescale_betas_zero_snr) b = rescale_zero_terminal_snr(b);
  return b;
}

/// @brief diffusers' scheduler interface (see the file comment) over the library's step functions.
///
/// A value: copy it to run two loops. The multistep and Heun state lives inside, sized on the first
/// step (no allocation per step after that); `set_timesteps` resets it.
class scheduler {
 public:
  /// @brief Builds the training schedule of the configuration.
  /// @throws std::invalid_argument for a value the class does not support (naming the key and
  ///         the supported values) or invalid betas.
  explicit scheduler(scheduler_config config)
      // The flow and EDM classes have no β table: a one-step placeholder, never read.
      : cfg_(std::move(config)),
        train_(own_list(cfg_.kind) ? noise_schedule(std::vector<double>{0.5}) : noise_schedule(config_betas(cfg_))) {
    validate();
  }

  /// The configuration.
  [[nodiscard]] const scheduler_config& config() const noexcept { return cfg_; }
  /// @brief The training schedule (double tables).
  /// @throws std::logic_error for the flow, EDM and IPNDM classes, which have no β schedule.
  [[nodiscard]] const noise_schedule& training_schedule() const {
    if (own_list(cfg_.kind))
      throw std::logic_error("diffusion::scheduler::training_schedule: " + std::string(class_name(cfg_.kind)) +
                             (is_flow()                 ? " has no beta schedule (a rectified-flow model)"
                              : cfg_.kind == scheduler_kind::ipndm ? " has no beta schedule (its levels are sin^2 of a uniform grid)"
                                                         : " has no beta schedule (an EDM sigma-space model)"));
    return train_;
  }
  /// Whether the class is a rectified-flow one (FlowMatchEuler, FlowMatchHeun).
  [[nodiscard]] bool is_flow() const noexcept { return flow(cfg_.kind); }

  /// @brief Chooses N inference steps (diffusers' `set_timesteps(N)`), resets the step state.
  /// @throws std::invalid_argument for N = 0 or too large for the spacing.
  /// For a flow class with `use_dynamic_shifting`, μ is needed: use the overload that takes it.
  void set_timesteps(std::size_t num_inference_steps) { set_timesteps_impl(num_inference_steps, {}, {}); }

  /// @brief Flow classes with `use_dynamic_shifting` (Flux): N steps shifted with μ (diffusers'
  /// `set_timesteps(N, mu=mu)`); see @ref mu_for.
  /// @throws std::invalid_argument for another class, a non-finite μ (or μ ≤ 0 with the linear time
  ///         shift), or as set_timesteps(N).
  void set_timesteps(std::size_t num_inference_steps, double mu) { set_timesteps_impl(num_inference_steps, {}, mu); }

  /// @brief Flow classes: a custom list of unshifted σ, descending in (0, 1] (diffusers'
  /// `set_timesteps(sigmas=…, mu=…)`; the Flux pipeline passes linspace(1, 1/N, N)), through the
  /// configured shift (@ref diffusion::flow_sigmas "flow_sigmas"); μ is needed with `use_dynamic_shifting`.
  /// @throws std::invalid_argument for another class or a bad list.
  void set_timesteps(std::span<const double> sigmas, std::optional<double> mu = std::nullopt) {
    if (!is_flow())
      detail::throw_invalid("diffusion::scheduler::set_timesteps", "a sigma list is only taken by the flow classes, not by " +
                                                                        std::string(class_name(cfg_.kind)));
    set_timesteps_impl(sigmas.size(), sigmas, mu);
  }

  /// @brief Flux's μ for an image of `image_seq_len` latent tokens, from the configuration's
  /// base/max sequence lengths and shifts (@ref diffusion::flux_mu "flux_mu").
  [[nodiscard]] double mu_for(double image_seq_len) const { return flux_mu(image_seq_len, cfg_.flux_shift); }

 private:
  void set_timesteps_impl(std::size_t num_inference_steps, std::span<const double> custom, std::optional<double> mu) {
    constexpr std::string_view where = "diffusion::scheduler::set_timesteps";
    if (num_inference_steps == 0) detail::throw_invalid(where, "num_inference_steps = 0 must be >= 1");
    if (mu && !(is_flow() && cfg_.use_dynamic_shifting))
      detail::throw_invalid(where, "mu is only used by a flow class with use_dynamic_shifting (" +
                                       std::string(class_name(cfg_.kind)) + (is_flow() ? " has it off)" : ")"));
    if (!mu && is_flow() && cfg_.use_dynamic_shifting)
      detail::throw_invalid(where, "use_dynamic_shifting needs mu: call set_timesteps(n, mu) with mu = mu_for(image_seq_len)");
    const std::size_t T = cfg_.num_train_timesteps, N = num_inference_steps;
    timesteps_.clear();
    sigmas_.clear();
    if (own_list(cfg_.kind)) {
      // These lists are not bounded by T: N calls and a final level that cannot be allocated are refused
      // here, as an argument, before the list is built (the other classes' list functions check N ≤ T).
      const std::string asked = "num_inference_steps = " + detail::to_text(N);
      detail::reserve_table(where, asked, timesteps_, N, "timesteps");
      detail::reserve_table(where, asked, sigmas_, N, "levels", 1);
    }
    n_steps_ = N;
    resp_.reset();
    seq_.reset();
    switch (cfg_.kind) {
      case scheduler_kind::ddpm: {
        seq_ = inference_timesteps(T, N, cfg_.spacing, cfg_.steps_offset);
        resp_ = respace(train_, *seq_);
        for (std::size_t t : *seq_) {
          timesteps_.push_back(static_cast<double>(t));
          sigmas_.push_back(train_[t].sigma);
        }
        sigmas_.push_back(0.0);
        break;
      }
      case scheduler_kind::ddim: {
        seq_ = inference_timesteps(T, N, cfg_.spacing, cfg_.steps_offset);
        for (std::size_t t : *seq_) {
          timesteps_.push_back(static_cast<double>(t));
          sigmas_.push_back(train_[t].sigma);
        }
        sigmas_.push_back(cfg_.set_alpha_to_one ? 0.0 : train_[0].sigma);
        break;
      }
      case scheduler_kind::euler:
      case scheduler_kind::euler_ancestral:
      case scheduler_kind::heun:
      case scheduler_kind::lms_discrete: set_sigma_space_timesteps(N); break;
      case scheduler_kind::kdpm2:
      case scheduler_kind::kdpm2_ancestral:
      case scheduler_kind::dpm_solver_sde:
        set_sigma_space_timesteps(N);
        expand_for_kdpm2();
        break;
      case scheduler_kind::unipc_multistep:
      case scheduler_kind::deis_multistep:
      case scheduler_kind::sa_solver:
      case scheduler_kind::dpm_solver_multistep: set_dpm_timesteps(N); break;
      case scheduler_kind::dpm_solver_singlestep:
        set_dpm_timesteps(N);
        // diffusers switches lower_order_final on (with a warning) for N not a multiple of the order or a
        // final σ of 0; the order list follows the switched value.
        singlestep_orders_ = singlestep_orders(N, cfg_.solver_order,
                                               cfg_.lower_order_final || N % cfg_.solver_order != 0 ||
                                                   cfg_.final_sigmas_type == final_sigma::zero,
                                               cfg_.final_sigmas_type == final_sigma::zero);
        break;
      case scheduler_kind::pndm: {
        // diffusers' PNDMScheduler with skip_prk_steps: the inference timesteps with the second one
        // repeated (the second call is the correction of the improved-Euler start).
        seq_ = inference_timesteps(T, N, cfg_.spacing, cfg_.steps_offset);
        for (std::size_t k = 0; k < N; ++k) {
          const auto t = (*seq_)[k];
          const std::size_t copies = k == 1 ? 2 : 1;
          for (std::size_t c = 0; c < copies; ++c) {
            timesteps_.push_back(static_cast<double>(t));
            sigmas_.push_back(train_[t].sigma);
          }
        }
        sigmas_.push_back(cfg_.set_alpha_to_one ? 0.0 : train_[0].sigma);
        break;
      }
      case scheduler_kind::edm_euler:
      case scheduler_kind::edm_dpm_solver_multistep: set_edm_timesteps(N); break;
      case scheduler_kind::ipndm: set_ipndm_timesteps(N); break;
      case scheduler_kind::lcm:
      case scheduler_kind::tcd: {
        seq_ = consistency_timesteps(T, N, cfg_.original_inference_steps);
        for (std::size_t t : *seq_) {
          timesteps_.push_back(static_cast<double>(t));
          sigmas_.push_back(train_[t].sigma);
        }
        // LCM's last step lands on the data; TCD's on timestep 0 (diffusers' prev_timestep = 0).
        sigmas_.push_back(cfg_.kind == scheduler_kind::lcm ? 0.0 : train_[0].sigma);
        break;
      }
      case scheduler_kind::flow_match_euler:
      case scheduler_kind::flow_match_heun: {
        const flow_schedule_options o{T,
                                      cfg_.shift,
                                      cfg_.use_dynamic_shifting,
                                      mu.value_or(0.0),
                                      cfg_.time_shift_type,
                                      cfg_.shift_terminal,
                                      false,
                                      cfg_.diffusers_double_shift};
        flow_timesteps f = custom.empty() ? flow_sigmas(N, o) : flow_sigmas(custom, o);
        timesteps_ = std::move(f.timesteps);
        sigmas_ = std::move(f.sigmas);
        break;
      }
    }
    if (cfg_.kind == scheduler_kind::heun || cfg_.kind == scheduler_kind::flow_match_heun) duplicate_for_heun();
    next_ = 0;
    heun_second_ = false;
    dpm_state_has_previous_ = false;
    dpm_previous_h_ = 0.0;
    lms_count_ = 0;
    dpm3_count_ = 0;
    dpm_eps_ = {};
    unipc_ = {};
    sa_ = {};
    deis_ = {};
    plms_ = {};
  }

 public:
  /// Steps chosen by set_timesteps (model calls: 2N − 1 for Heun).
  [[nodiscard]] std::size_t num_inference_steps() const noexcept { return n_steps_; }
  /// @brief The model's timestep at each call of `step` (diffusers' `timesteps`; fractional for the
  /// σ-space classes, whose σ list is interpolated).
  [[nodiscard]] std::span<const double> timesteps() const noexcept { return timesteps_; }
  /// @brief The σ-space noise ratio σ/α at each call of `step`, followed by the final one
  /// (diffusers' `sigmas` for the σ-space classes and DPM-Solver; √((1−ᾱ)/ᾱ) of the timesteps for
  /// DDPM/DDIM); the flow σ ∈ [0, 1] for the flow classes.
  [[nodiscard]] std::span<const double> sigmas() const noexcept { return sigmas_; }

  /// @brief The standard deviation of the initial noise (diffusers' `init_noise_sigma`): 1 for the
  /// variance-preserving and flow classes; σ_max for the σ-space classes with linspace/trailing spacing and
  /// \f$\sqrt{\sigma_{\max}^2 + 1}\f$ with leading spacing (as diffusers); the first σ of the list for the
  /// EDM classes (EDM's Algorithm 1; diffusers' \f$\sqrt{\sigma_{\max}^2 + 1}\f$ there is a departure,
  /// docs/conventions.md).
  /// @throws std::logic_error before set_timesteps.
  [[nodiscard]] double init_noise_sigma() const {
    require_timesteps("init_noise_sigma");
    if (edm(cfg_.kind)) return sigmas_.front();
    if (!sigma_space()) return 1.0;
    const double m = *std::max_element(sigmas_.begin(), sigmas_.end());
    return cfg_.spacing == timestep_spacing::leading ? std::sqrt(m * m + 1.0) : m;
  }

  /// @brief The model's input at call i (diffusers' `scale_model_input`): \f$x/\sqrt{\sigma_i^2 + 1}\f$ for the
  /// σ-space classes, \f$c_\text{in}x = x/\sqrt{\sigma_i^2 + \sigma_d^2}\f$ for the EDM classes, x itself otherwise
  /// (flow and consistency classes included).
  /// @param[in] x the state; @param[in] i the call index; @param[out] out the model's input (may alias x).
  /// @throws std::out_of_range for i outside the timesteps; std::invalid_argument for sizes.
  template <real_scalar T>
  void scale_model_input(std::span<const T> x, std::size_t i, std::span<T> out) const {
    constexpr std::string_view where = "diffusion::scheduler::scale_model_input";
    require_timesteps("scale_model_input");
    detail::check_index(where, "i", i, timesteps_.size());
    detail::check_same_size(where, "x", x.size(), "out", out.size());
    detail::check_no_partial_overlap(where, "x", x, "out", out);
    const double c = edm(cfg_.kind)   ? edm_coefficients_at(sigmas_[i]).c_in
                     : sigma_space() ? noise_level::preserving(sigmas_[i]).alpha
                                     : 1.0;
    detail::require_finite_step(where, kernels::scale(static_cast<T>(c), x, out), "the scaling");
  }

  /// @brief One call of the sampling loop (diffusers' `step`): from the model's output at call i,
  /// updates x in place (its `prev_sample`) and writes x̂₀ (its `pred_original_sample`) to `x0`
  /// when given. Calls must come in order, i = 0, 1, …
  /// @param[in] i the call index; @param[in] model_output rows × n (2n for a learned DDPM variance);
  /// @param[in,out] x rows × n; @param[in] noise kernels::no_noise for deterministic classes, else a
  /// buffer of rows × n normals or a Philox stream (@ref step_stream);
  /// @param[in] rows rows of x; @param[out] x0 optional x̂₀, rows × n.
  /// @throws std::logic_error out of order or before set_timesteps; std::invalid_argument for sizes or
  ///         missing noise; std::domain_error for non-finite model output or an overflowing step.
  template <real_scalar T, class Z = kernels::no_noise>
    requires kernels::noise_operand<Z, T>
  void step(std::size_t i, std::span<const T> model_output, std::span<T> x, const Z& noise = {}, std::size_t rows = 1,
            std::span<T> x0 = {}) {
    constexpr std::string_view where = "diffusion::scheduler::step";
    require_timesteps("step");
    if (i != next_)
      throw std::logic_error(std::string(where) + ": i = " + detail::to_text(i) + ", but the next call is " +
                             detail::to_text(next_) + " (steps run in order; set_timesteps restarts)");
    detail::check_index(where, "i", i, timesteps_.size());
    const std::size_t n = detail::sampler_rows(where, x.size(), rows);
    detail::check_model_output<T>(where, model_output, model_output.size() / rows, i, timesteps_[i]);
    auto& b = buffers<T>();
    switch (cfg_.kind) {
      case scheduler_kind::ddpm: {
        const std::size_t K = resp_->schedule.size(), j = K - 1 - i;
        b.scratch.resize(n);
        const ddpm_step_options opt{cfg_.prediction_type, cfg_.variance, processing(), rows, parallel_policy{1}};
        if (j == 0)
          ddpm_step<T>(resp_->schedule, j, model_output, x, kernels::no_noise{}, opt, step_buffers<T>{x0, b.scratch});
        else
          ddpm_step<T>(resp_->schedule, j, model_output, x, noise, opt, step_buffers<T>{x0, b.scratch});
        break;
      }
      case scheduler_kind::ddim: {
        const auto p = seq_->previous(i);
        const timestep_transition tr{(*seq_)[i], p ? *p : (cfg_.set_alpha_to_one ? to_data : std::size_t{0})};
        b.scratch.resize(n);
        const ddim_step_options opt{cfg_.prediction_type, cfg_.eta, processing(), false, rows, parallel_policy{1}};
        if (ddim_coefficients_at(train_, tr, cfg_.eta).sigma > 0.0)
          ddim_step<T>(train_, tr, model_output, x, noise, opt, step_buffers<T>{x0, b.scratch});
        else
          ddim_step<T>(train_, tr, model_output, x, kernels::no_noise{}, opt, step_buffers<T>{x0, b.scratch});
        break;
      }
      case scheduler_kind::lcm:
      case scheduler_kind::tcd: consistency_step<T>(i, model_output, x, detail::rows_of(noise, n), rows, x0); break;
      default: sigma_space_step<T>(i, model_output, x, detail::rows_of(noise, n), rows, x0); break;
    }
    ++next_;
  }

  /// @brief Noises data to the level of call i (diffusers' `add_noise`, by call index):
  /// \f$x_0 + \sigma_i\varepsilon\f$ for the σ-space classes (EDM included), \f$(1-\sigma_i)x_0 + \sigma_i\varepsilon\f$ for the flow classes
  /// (diffusers' `scale_noise`), \f$\sqrt{\bar\alpha}x_0 + \sqrt{1-\bar\alpha}\,\varepsilon\f$ at timestep i's level otherwise.
  /// @param[in] x0 data; @param[in] noise ε, same size; @param[in] i the call index; @param[out] out may alias
  /// either exactly (a partial overlap is refused).
  /// @throws std::logic_error before set_timesteps; std::out_of_range for i; std::invalid_argument for sizes or a
  /// partial overlap; std::domain_error for a non-finite result.
  template <real_scalar T>
  void add_noise(std::span<const T> x0, std::span<const T> noise, std::size_t i, std::span<T> out) const {
    constexpr std::string_view where = "diffusion::scheduler::add_noise";
    require_timesteps("add_noise");
    detail::check_index(where, "i", i, timesteps_.size());
    const detail::combine_names nm{"x0", "noise", "out"};
    const auto p = detail::combine_check(where, nm, x0, noise, out, false);
    const noise_level l = is_flow()        ? noise_level::flow(sigmas_[i])
                          : sigma_space() || edm(cfg_.kind) ? noise_level::exploding(sigmas_[i])
                                          : noise_level::preserving(sigmas_[i]);
    detail::combine(where, nm, p, {"alpha", "sigma"}, affine_coefficients{l.alpha, l.sigma});
  }

 private:
  template <class T>
  struct state_buffers {
    std::vector<T> denoised, aux, aux2, scratch;
    std::array<std::vector<T>, 4> lms;  // LMS slopes, newest first
    std::array<std::vector<T>, 3> unipc;  // UniPC outputs, newest first
    std::array<std::vector<T>, 4> hist;   // DEIS / PLMS ε history, SA-Solver x̂₀ history, newest first
    std::vector<T> sa_noise, sa_last_noise;  // SA-Solver: this call's normals, the last prediction's
  };
  template <class T>
  state_buffers<T>& buffers() noexcept {
    return buffers_.template get<T>();
  }

  [[nodiscard]] bool sigma_space() const noexcept {
    return cfg_.kind == scheduler_kind::euler || cfg_.kind == scheduler_kind::euler_ancestral ||
           cfg_.kind == scheduler_kind::heun || cfg_.kind == scheduler_kind::lms_discrete || kdpm2();
  }
  // The two-calls-per-step σ-space classes (KDPM2, its ancestral form, DPM++ SDE): one per-call list.
  [[nodiscard]] bool kdpm2() const noexcept {
    return cfg_.kind == scheduler_kind::kdpm2 || cfg_.kind == scheduler_kind::kdpm2_ancestral ||
           cfg_.kind == scheduler_kind::dpm_solver_sde;
  }
  static bool flow(scheduler_kind k) noexcept {
    return k == scheduler_kind::flow_match_euler || k == scheduler_kind::flow_match_heun;
  }
  static bool edm(scheduler_kind k) noexcept {
    return k == scheduler_kind::edm_euler || k == scheduler_kind::edm_dpm_solver_multistep;
  }
  // The classes whose levels do not come from a β table.
  static bool own_list(scheduler_kind k) noexcept { return flow(k) || edm(k) || k == scheduler_kind::ipndm; }
  [[nodiscard]] bool dpm() const noexcept {
    return cfg_.kind == scheduler_kind::dpm_solver_multistep || cfg_.kind == scheduler_kind::edm_dpm_solver_multistep ||
           cfg_.kind == scheduler_kind::dpm_solver_singlestep;
  }
  // EDM's preconditioning at σ with the configured σ_d and F's convention (v_prediction: the v variant).
  [[nodiscard]] edm_coefficients edm_coefficients_at(double sigma) const {
    return edm_preconditioning(sigma, cfg_.sigma_data, cfg_.prediction_type == prediction::v ? edm_variant::v : edm_variant::standard);
  }
  [[nodiscard]] x0_processing processing() const {
    return {cfg_.clip_sample, cfg_.clip_sample_range, cfg_.thresholding,
            dynamic_threshold{cfg_.dynamic_thresholding_ratio, cfg_.sample_max_value}};
  }
  void require_timesteps(std::string_view what) const {
    if (timesteps_.empty())
      throw std::logic_error("diffusion::scheduler::" + std::string(what) + ": call set_timesteps first");
  }

  void validate() const {
    constexpr std::string_view where = "diffusion::scheduler";
    detail::check_enum(where, "algorithm_type", cfg_.algorithm_type, 4, "dpmsolver++, sde-dpmsolver++, dpmsolver, sde-dpmsolver");
    detail::check_enum(where, "final_sigmas_type", cfg_.final_sigmas_type, 2, "zero, sigma_min");
    detail::check_enum(where, "time_shift_type", cfg_.time_shift_type, 2, "exponential, linear");
    detail::check_enum(where, "sigma_schedule", cfg_.sigma_schedule, 2, "karras, exponential");
    const prediction p = cfg_.prediction_type;
    if (edm(cfg_.kind)) {
      if (p != prediction::epsilon && p != prediction::v)
        detail::throw_invalid(where, "prediction_type = " + std::string(to_string(p)) + " is not supported by " +
                                         std::string(class_name(cfg_.kind)) + " (supported: epsilon, v_prediction: EDM's F and its v variant)");
      detail::check_positive(where, "sigma_min", cfg_.sigma_min);
      detail::check_positive(where, "sigma_data", cfg_.sigma_data);
      detail::check_positive(where, "rho", cfg_.rho);
      if (!(cfg_.sigma_max > cfg_.sigma_min && std::isfinite(cfg_.sigma_max)))
        detail::throw_invalid(where, "sigma_max = " + detail::to_text(cfg_.sigma_max) + " is outside the allowed range (sigma_min = " +
                                         detail::to_text(cfg_.sigma_min) + ", inf)");
    } else if (!is_flow() && p != prediction::epsilon && p != prediction::sample && p != prediction::v) {
      detail::throw_invalid(where, "prediction_type = " + std::string(to_string(p)) + " is not supported by " +
                                       std::string(class_name(cfg_.kind)) + " (supported: epsilon, sample, v_prediction)");
    }
    if (cfg_.kind == scheduler_kind::ipndm) {
      if (p != prediction::v)
        detail::throw_invalid(where, "prediction_type = " + std::string(to_string(p)) +
                                         " is not supported by IPNDMScheduler (supported: v_prediction; diffusers reads its model's output as v)");
      if (!cfg_.trained_betas.empty())
        detail::throw_invalid(where, "trained_betas is not supported by IPNDMScheduler (supported: empty; its levels are sin^2 of a uniform grid)");
    }
    if (cfg_.kind == scheduler_kind::lcm || cfg_.kind == scheduler_kind::tcd) {
      if (cfg_.original_inference_steps == 0 || cfg_.original_inference_steps > cfg_.num_train_timesteps)
        detail::throw_invalid(where, "original_inference_steps = " + detail::to_text(cfg_.original_inference_steps) +
                                         " is outside the allowed range [1, " + detail::to_text(cfg_.num_train_timesteps) +
                                         "] (num_train_timesteps)");
      detail::check_positive(where, "timestep_scaling", cfg_.timestep_scaling);
    }
    if (cfg_.kind == scheduler_kind::tcd && !(cfg_.eta >= 0.0 && cfg_.eta <= 1.0))
      detail::throw_invalid(where, "eta (TCD's gamma) = " + detail::to_text(cfg_.eta) + " is outside the allowed range [0, 1]");
    if (cfg_.kind == scheduler_kind::lms_discrete && !(cfg_.lms_order >= 1 && cfg_.lms_order <= 4))
      detail::throw_invalid(where, "lms_order = " + detail::to_text(cfg_.lms_order) + " is outside the allowed range [1, 4]");
    if ((dpm() || cfg_.kind == scheduler_kind::unipc_multistep || cfg_.kind == scheduler_kind::deis_multistep) &&
        !(cfg_.solver_order >= 1 && cfg_.solver_order <= 3))
      detail::throw_invalid(where, "solver_order = " + detail::to_text(cfg_.solver_order) + " is not supported by " +
                                       std::string(class_name(cfg_.kind)) + " here (supported: 1, 2, 3)");
    const bool eps_form = cfg_.algorithm_type == dpm_algorithm::dpmsolver || cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver;
    if (dpm() && eps_form && cfg_.kind != scheduler_kind::dpm_solver_multistep)
      detail::throw_invalid(where, "algorithm_type = " +
                                       std::string(cfg_.algorithm_type == dpm_algorithm::dpmsolver ? "dpmsolver" : "sde-dpmsolver") +
                                       " is supported by DPMSolverMultistepScheduler only here, not by " +
                                       std::string(class_name(cfg_.kind)) + " (supported: dpmsolver++" +
                                       (cfg_.kind == scheduler_kind::dpm_solver_singlestep ? ")" : ", sde-dpmsolver++)"));
    // diffusers' EDM class has no third-order sde-dpmsolver++ update (its step fails there), so there is
    // nothing of diffusers' to reproduce; the default (exact) third order is available.
    if (cfg_.kind == scheduler_kind::edm_dpm_solver_multistep && cfg_.solver_order == 3 && cfg_.diffusers_dpm_3m &&
        cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver_pp)
      detail::throw_invalid(where, "diffusers_dpm_3m with solver_order = 3 and algorithm_type = sde-dpmsolver++ is not "
                                   "supported by EDMDPMSolverMultistepScheduler (diffusers' class has no such update; "
                                   "supported: diffusers_dpm_3m = false)");
    if (cfg_.kind == scheduler_kind::dpm_solver_singlestep && cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver_pp)
      detail::throw_invalid(where, "algorithm_type = sde-dpmsolver++ is not supported by DPMSolverSinglestepScheduler here "
                                   "(supported: dpmsolver++)");
    if (!(cfg_.eta >= 0.0 && std::isfinite(cfg_.eta)))
      detail::throw_invalid(where, "eta = " + detail::to_text(cfg_.eta) + " is outside the allowed range [0, inf)");
    if (cfg_.thresholding && (sigma_space() || is_flow() || edm(cfg_.kind) || cfg_.kind == scheduler_kind::tcd ||
                              cfg_.kind == scheduler_kind::pndm || cfg_.kind == scheduler_kind::ipndm))
      detail::throw_invalid(where, "thresholding is not supported by " + std::string(class_name(cfg_.kind)));
    // Clipping x̂₀ is DDPM's, DDIM's and LCM's option; no other class would apply it.
    if (cfg_.clip_sample && !(cfg_.kind == scheduler_kind::ddpm || cfg_.kind == scheduler_kind::ddim || cfg_.kind == scheduler_kind::lcm))
      detail::throw_invalid(where, "clip_sample = true is not supported by " + std::string(class_name(cfg_.kind)) +
                                       " (supported by DDPMScheduler, DDIMScheduler, LCMScheduler)");
    if (cfg_.kind == scheduler_kind::dpm_solver_sde) {
      if (p == prediction::sample)
        detail::throw_invalid(where, "prediction_type = sample is not supported by DPMSolverSDEScheduler (supported: epsilon, v_prediction; "
                                     "diffusers raises NotImplementedError)");
      if (!(cfg_.s_noise >= 0.0 && std::isfinite(cfg_.s_noise)))
        detail::throw_invalid(where, "s_noise = " + detail::to_text(cfg_.s_noise) + " is outside the allowed range [0, inf)");
    }
    if (kdpm2() && cfg_.final_sigmas_type != final_sigma::zero)
      detail::throw_invalid(where, "final_sigmas_type = sigma_min is not supported by " + std::string(class_name(cfg_.kind)) +
                                       " (its last step lands on 0)");
    if (cfg_.kind == scheduler_kind::sa_solver) {
      detail::check_sa_solver_options(where, {cfg_.predictor_order, cfg_.corrector_order, true});
      if (!(std::isfinite(cfg_.sa_tau) && cfg_.sa_tau >= 0.0))
        detail::throw_invalid(where, "sa_tau = " + detail::to_text(cfg_.sa_tau) + " is outside the allowed range [0, inf)");
      if (!(cfg_.sa_tau_t_min <= cfg_.sa_tau_t_max))
        detail::throw_invalid(where, "the tau window [" + detail::to_text(cfg_.sa_tau_t_min) + ", " +
                                         detail::to_text(cfg_.sa_tau_t_max) + "] is empty or not a number");
      // diffusers' converted lists repeat their last sigma (a final step of length 0, which sa_solver_step refuses).
      if (converted_sigmas_on())
        detail::throw_invalid(where, std::string(converted_sigmas_key()) + " = true is not supported by SASolverScheduler here "
                                     "(diffusers repeats the list's last sigma, a step of length 0)");
    }
    if (cfg_.kind == scheduler_kind::unipc_multistep && cfg_.unipc_solver_type != unipc_variant::bh1 &&
        cfg_.unipc_solver_type != unipc_variant::bh2)
      detail::throw_invalid(where, "solver_type = " + detail::to_text(static_cast<int>(cfg_.unipc_solver_type)) + " is not bh1 or bh2");
    if ((edm(cfg_.kind) || cfg_.kind == scheduler_kind::lcm || cfg_.kind == scheduler_kind::tcd ||
         cfg_.kind == scheduler_kind::ipndm) && converted_sigmas_on())
      detail::throw_invalid(where, std::string(converted_sigmas_key()) + " = true is not supported by " +
                                       std::string(class_name(cfg_.kind)) + (edm(cfg_.kind) ? " (it takes sigma_schedule)" : ""));
    {
      std::string on;
      int count = 0;
      for (const auto& [key, flag] : converted_sigma_flags())
        if (flag) on += (count++ == 0 ? "" : " and ") + std::string(key);
      // diffusers refuses two of karras/exponential/beta, and lets use_karras_sigmas win over use_lu_lambdas and
      // use_lu_lambdas over the other two silently; here any two are refused (docs/conventions.md).
      if (count > 1)
        detail::throw_invalid(where, on + (count == 2 ? " are both true" : " are all true") + "; set at most one");
    }
    if (cfg_.use_lu_lambdas && cfg_.kind != scheduler_kind::dpm_solver_multistep)
      detail::throw_invalid(where, "use_lu_lambdas = true is not supported by " + std::string(class_name(cfg_.kind)) +
                                       " (supported by DPMSolverMultistepScheduler, as in diffusers)");
    if (is_flow()) {
      if (p != prediction::flow_velocity)
        detail::throw_invalid(where, "prediction_type = " + std::string(to_string(p)) + " is not supported by " +
                                         std::string(class_name(cfg_.kind)) + " (supported: flow_velocity)");
      for (const auto& [key, on] : converted_sigma_flags())
        if (on)
          detail::throw_invalid(where, std::string(key) + " = true is not supported by " + std::string(class_name(cfg_.kind)) +
                                           " here (supported: false)");
      if (cfg_.stochastic_sampling && cfg_.kind != scheduler_kind::flow_match_euler)
        detail::throw_invalid(where, "stochastic_sampling is only supported by FlowMatchEulerDiscreteScheduler");
      if (cfg_.num_train_timesteps == 0) detail::throw_invalid(where, "num_train_timesteps = 0 must be >= 1");
      // The shift options are checked by flow_sigmas (naming the key) at set_timesteps; check them now.
      detail::check_flow_options(where, flow_schedule_options{cfg_.num_train_timesteps, cfg_.shift, false, 0.0,
                                                              cfg_.time_shift_type, cfg_.shift_terminal, false, false});
      detail::check_flux_shift(where, cfg_.flux_shift);
    } else if (cfg_.stochastic_sampling) {
      detail::throw_invalid(where, "stochastic_sampling is only supported by FlowMatchEulerDiscreteScheduler");
    }
    detail::check_x0_processing(where, processing());
  }

  // The σ table of the training schedule as diffusers' σ-space classes see it: zero terminal SNR
  // replaced by ᾱ = 2^-24 (diffusers' EulerDiscreteScheduler), so that σ_max is finite.
  [[nodiscard]] std::vector<double> train_sigmas() const {
    std::vector<double> s = train_.column(&schedule_step::sigma);
    if (train_.zero_terminal_snr()) s.back() = std::sqrt((1.0 - 0x1p-24) / 0x1p-24);
    return s;
  }
  // diffusers' np.interp(t, arange(T), sigmas): linear in σ between neighbouring steps.
  static double interp(const std::vector<double>& s, double t) {
    const double last = static_cast<double>(s.size() - 1);
    if (t <= 0.0) return s.front();
    if (t >= last) return s.back();
    const auto i = static_cast<std::size_t>(std::floor(t));
    const double w = t - static_cast<double>(i);
    return w == 0.0 ? s[i] : s[i] + w * (s[i + 1] - s[i]);
  }
  // The inverse map of a σ list value to a timestep, log-σ interpolation (diffusers' _sigma_to_t).
  [[nodiscard]] double timestep_of(double sigma) const {
    const auto s = train_sigmas();
    if (sigma <= s.front()) return 0.0;
    if (sigma >= s.back()) return static_cast<double>(s.size() - 1);
    const auto it = std::upper_bound(s.begin(), s.end(), sigma);
    const auto i = static_cast<std::size_t>(it - s.begin()) - 1;
    const double a = std::log(s[i]), b = std::log(s[i + 1]);
    return b > a ? static_cast<double>(i) + (std::log(sigma) - a) / (b - a) : static_cast<double>(i);
  }

  void set_sigma_space_timesteps(std::size_t N) {
    const std::size_t T = cfg_.num_train_timesteps;
    if (N > T)
      detail::throw_invalid("diffusion::scheduler::set_timesteps", "num_inference_steps = " + detail::to_text(N) +
                                                                       " is outside the allowed range [1, " +
                                                                       detail::to_text(T) + "]");
    // diffusers' EulerDiscreteScheduler timesteps: linspace unrounded, leading/trailing as integers.
    std::vector<double> t(N);
    if (cfg_.spacing == timestep_spacing::linspace) {
      const double step = N > 1 ? static_cast<double>(T - 1) / static_cast<double>(N - 1) : 0.0;
      for (std::size_t k = 0; k < N; ++k)
        t[N - 1 - k] = k + 1 == N && N > 1 ? static_cast<double>(T - 1) : static_cast<double>(k) * step;
    } else {
      const timestep_sequence chosen = inference_timesteps(T, N, cfg_.spacing, cfg_.steps_offset);
      for (std::size_t k = 0; k < N; ++k) t[k] = static_cast<double>(chosen[k]);
    }
    const auto table = train_sigmas();
    std::vector<double> s(N);
    for (std::size_t k = 0; k < N; ++k) s[k] = interp(table, t[k]);
    if (converted_sigmas_on()) {
      if (N < 2)
        detail::throw_invalid("diffusion::scheduler::set_timesteps", std::string(converted_sigmas_key()) +
                                                                         " needs num_inference_steps >= 2");
      s = converted_sigmas(N, s.back(), s.front());
      for (std::size_t k = 0; k < N; ++k) t[k] = timestep_of(s[k]);
    }
    timesteps_ = t;
    sigmas_ = s;
    sigmas_.push_back(cfg_.final_sigmas_type == final_sigma::zero ? 0.0 : table.front());
  }

  // diffusers' `_convert_to_karras` / `_convert_to_exponential` / `_convert_to_beta`: N levels from σ_max
  // to σ_min (no final 0).
  // (`use_lu_lambdas`: DPM-Solver's uniform λ, @ref logsnr_uniform_sigmas, λ = −log σ of the ends.)
  [[nodiscard]] std::array<std::pair<const char*, bool>, 4> converted_sigma_flags() const {
    return {std::pair{"use_karras_sigmas", cfg_.use_karras_sigmas}, std::pair{"use_lu_lambdas", cfg_.use_lu_lambdas},
            std::pair{"use_exponential_sigmas", cfg_.use_exponential_sigmas},
            std::pair{"use_beta_sigmas", cfg_.use_beta_sigmas}};
  }
  [[nodiscard]] bool converted_sigmas_on() const {
    return cfg_.use_karras_sigmas || cfg_.use_lu_lambdas || cfg_.use_exponential_sigmas || cfg_.use_beta_sigmas;
  }
  [[nodiscard]] const char* converted_sigmas_key() const {
    return cfg_.use_karras_sigmas ? "use_karras_sigmas"
           : cfg_.use_lu_lambdas ? "use_lu_lambdas"
           : cfg_.use_exponential_sigmas ? "use_exponential_sigmas"
                                         : "use_beta_sigmas";
  }
  [[nodiscard]] std::vector<double> converted_sigmas(std::size_t N, double sigma_min, double sigma_max) const {
    std::vector<double> s = cfg_.use_karras_sigmas        ? karras_sigmas(N, sigma_min, sigma_max)
                            : cfg_.use_lu_lambdas         ? logsnr_uniform_sigmas(N, -std::log(sigma_max), -std::log(sigma_min))
                            : cfg_.use_exponential_sigmas ? exponential_sigmas(N, sigma_min, sigma_max)
                                                          : beta_sigmas(N, sigma_min, sigma_max);
    s.pop_back();
    return s;
  }

  // diffusers' DPMSolverMultistepScheduler order cap of call i for solver_order k: 1 at the last call with
  // euler_at_final, or with lower_order_final in a run of fewer than 15 steps, where the second to last call
  // takes at most 2; else k (the history caps it further at the start).
  [[nodiscard]] std::size_t dpm_order_cap(std::size_t i, std::size_t k) const {
    const std::size_t N = timesteps_.size();
    const bool short_run = cfg_.lower_order_final && N < 15;
    if (i + 1 == N && (cfg_.euler_at_final || short_run)) return 1;
    if (i + 2 == N && short_run) return std::min<std::size_t>(k, 2);
    return k;
  }

  // Calls step(noise) when the step adds noise (an error naming `what` when the caller passed none), else
  // step(kernels::no_noise{}).
  template <class Z, class F>
  static void with_noise_if(bool adds_noise, const Z& noise, std::string_view what, F&& step) {
    if (!adds_noise) {
      step(kernels::no_noise{});
    } else if constexpr (std::is_same_v<Z, kernels::no_noise>) {
      detail::throw_invalid("diffusion::scheduler::step", std::string(what) + " adds noise at every step but no noise was passed");
    } else {
      step(noise);
    }
  }

  // The model's timestep of a converted σ in the VP multistep classes, as diffusers stores it (an int64
  // tensor): rounded half to even (np.round) for Karras σ and use_lu_lambdas, except where
  // DPMSolverMultistepScheduler skips the rounding for squaredcos_cap_v2; otherwise (exponential and beta σ,
  // and that exception) truncated by the int64 conversion (docs/conventions.md).
  [[nodiscard]] double converted_timestep(double t) const {
    const bool rounded = (cfg_.use_karras_sigmas || cfg_.use_lu_lambdas) &&
                         !(cfg_.kind == scheduler_kind::dpm_solver_multistep && cfg_.beta_schedule == beta_family::squaredcos_cap_v2);
    return rounded ? std::nearbyint(t) : std::trunc(t);
  }

  void set_dpm_timesteps(std::size_t N) {
    const std::size_t T = cfg_.num_train_timesteps;
    constexpr std::string_view where = "diffusion::scheduler::set_timesteps";
    if (N > T) detail::throw_invalid(where, "num_inference_steps = " + detail::to_text(N) + " is outside the allowed range [1, " + detail::to_text(T) + "]");
    // diffusers' DPMSolverMultistepScheduler: linspace and leading place N + 1 points and drop the
    // last (timestep 0); trailing places N.
    std::vector<std::size_t> ts;
    if (cfg_.spacing == timestep_spacing::trailing) {
      const timestep_sequence chosen = inference_timesteps(T, N, cfg_.spacing, cfg_.steps_offset);
      ts.assign(chosen.begin(), chosen.end());
    } else {
      if (N + 1 > T) detail::throw_invalid(where, "num_inference_steps = " + detail::to_text(N) + " needs N + 1 <= num_train_timesteps with this spacing");
      const timestep_sequence chosen = inference_timesteps(T, N + 1, cfg_.spacing, cfg_.steps_offset);
      ts.assign(chosen.begin(), chosen.end() - 1);
    }
    std::vector<double> s(N);
    for (std::size_t k = 0; k < N; ++k) s[k] = train_[ts[k]].sigma;
    std::vector<double> t(ts.begin(), ts.end());
    if (converted_sigmas_on()) {
      if (N < 2) detail::throw_invalid(where, std::string(converted_sigmas_key()) + " needs num_inference_steps >= 2");
      const auto table = train_sigmas();
      s = converted_sigmas(N, table.front(), table.back());
      for (std::size_t k = 0; k < N; ++k) t[k] = converted_timestep(timestep_of(s[k]));
    }
    timesteps_ = t;
    sigmas_ = s;
    sigmas_.push_back(cfg_.final_sigmas_type == final_sigma::zero ? 0.0 : train_[0].sigma);
  }

  // The EDM classes: N levels from σ_max to σ_min (Karras' ρ or uniform in log σ), the model's
  // timestep c_noise = ln(σ)/4, then 0 or σ_min. diffusers rounds the list to float32; not here.
  void set_edm_timesteps(std::size_t N) {
    if (N < 2)
      detail::throw_invalid("diffusion::scheduler::set_timesteps", "num_inference_steps = " + detail::to_text(N) + " is outside the allowed range [2, inf) for " +
                                                                       std::string(class_name(cfg_.kind)));
    std::vector<double> s = cfg_.sigma_schedule == edm_sigma_schedule::karras ? karras_sigmas(N, cfg_.sigma_min, cfg_.sigma_max, cfg_.rho)
                                                                              : exponential_sigmas(N, cfg_.sigma_min, cfg_.sigma_max);
    s.pop_back();  // the lists end in 0
    for (double v : s) timesteps_.push_back(edm_coefficients_at(v).c_noise);
    sigmas_ = s;
    sigmas_.push_back(cfg_.final_sigmas_type == final_sigma::zero ? 0.0 : s.back());
  }

  // IPNDMScheduler's list: s_k = 1 − k/N, σ_k = sin²(πs_k/2), α_k = √(1 − σ_k²) (a VP process), the model's
  // timestep the angle atan2(σ_k, α_k)·2/π, and a final level σ = 0. With θ = πs/2, cos θ = sin(πk/(2N)) and
  // α = cos θ·√(1 + sin²θ) (1 − sin⁴θ factored), so that α_0 = 0 exactly (the first call is from pure noise).
  void set_ipndm_timesteps(std::size_t N) {
    constexpr double half_pi = 1.5707963267948966;
    for (std::size_t k = 0; k < N; ++k) {
      const double u = half_pi * static_cast<double>(k) / static_cast<double>(N);
      const double c = std::cos(u), sg = c * c, al = std::sin(u) * std::sqrt(1.0 + sg);
      timesteps_.push_back(std::atan2(sg, al) / half_pi);
      sigmas_.push_back(al > 0.0 ? sg / al : std::numeric_limits<double>::infinity());
    }
    sigmas_.push_back(0.0);
  }

  // KDPM2: per call [σ0, m0, σ1, m1, …, σ_{N−1}] then the final 0, with m_j = √(σ_j σ_{j+1}) (the
  // ancestral class: √(σ_j σ↓_j), which is σ_{j+1} at η = 1) and the model's timestep at m_j by the
  // log-σ map, as diffusers. The main list is kept in kdpm2_sigmas_.
  void expand_for_kdpm2() {
    kdpm2_sigmas_ = sigmas_;
    kdpm2_sigmas_.back() = 0.0;  // KDPM2 always ends at 0 (validated: no final_sigmas_type sigma_min)
    const std::size_t N = timesteps_.size();
    std::vector<double> t{timesteps_.front()}, s{kdpm2_sigmas_.front()};
    for (std::size_t j = 0; j + 1 < N; ++j) {
      const sigma_step st{kdpm2_sigmas_[j], kdpm2_sigmas_[j + 1]};
      const double m = cfg_.kind == scheduler_kind::kdpm2_ancestral ? ancestral_midpoint_levels(st, 1.0).levels.mid.sigma
                                                                     : midpoint_levels(st).mid.sigma;
      t.insert(t.end(), {timestep_of(m), timesteps_[j + 1]});
      s.insert(s.end(), {m, kdpm2_sigmas_[j + 1]});
    }
    s.push_back(0.0);
    timesteps_ = t;
    sigmas_ = s;
  }

  // Heun: [t0, t1, t1, t2, t2, …] and σ [s0, s1, s1, …, s_{N−1}, s_{N−1}, final] (diffusers' HeunDiscreteScheduler).
  void duplicate_for_heun() {
    std::vector<double> t{timesteps_.front()}, s{sigmas_.front()};
    for (std::size_t k = 1; k < timesteps_.size(); ++k) {
      t.insert(t.end(), 2, timesteps_[k]);
      s.insert(s.end(), 2, sigmas_[k]);
    }
    s.push_back(sigmas_.back());
    timesteps_ = t;
    sigmas_ = s;
  }

  // x̂₀ from the model output at call i: the model saw x_m = α_m x at the VP level of σ_i (σ-space
  // classes) or x itself (DPM-Solver, whose x is VP): the one conversion table.
  // The EDM classes: D = c_skip x + c_out F (EDM's preconditioning, Karras et al. 2022 Table 1).
  template <class T>
  void denoise(std::size_t i, std::span<const T> model_output, std::span<const T> x, std::span<T> d) const {
    affine_coefficients k{};
    if (edm(cfg_.kind)) {
      const edm_coefficients e = edm_coefficients_at(sigmas_[i]);
      k = {e.c_skip, e.c_out};
    } else {
      const noise_level l = is_flow() ? noise_level::flow(sigmas_[i]) : noise_level::preserving(sigmas_[i]);
      k = conversion_coefficients(l, cfg_.prediction_type, prediction::sample);
      if (sigma_space()) k.a *= l.alpha;
    }
    constexpr std::string_view where = "diffusion::scheduler::step";
    detail::require_finite_step(where,
                                kernels::affine2(detail::coefficient<T>(where, "the x0 coefficient of x", k.a), x,
                                                 detail::coefficient<T>(where, "the x0 coefficient of the model output", k.b),
                                                 model_output, d),
                                "x0 from the model output");
  }

  // A multistep step rotates the views of its history; reorder the buffers the same way so that
  // buffer q is the view in slot q again (vector swaps keep every buffer's storage).
  template <class T, std::size_t K>
  static void follow_rotation(std::array<std::vector<T>, K>& bufs, const std::array<std::span<T>, K>& views, std::size_t k) {
    for (std::size_t q = 0; q < k; ++q)
      for (std::size_t r = q; r < k; ++r)
        if (bufs[r].data() == views[q].data()) {
          std::swap(bufs[q], bufs[r]);
          break;
        }
  }

  // The configured clipping / dynamic thresholding of x̂₀, row by row (LCM, DPM-Solver, UniPC, DEIS).
  template <class T>
  void process_x0(std::span<T> d, std::size_t rows) {
    const x0_processing proc = processing();
    if (!(proc.clip || proc.threshold)) return;
    const std::size_t n = d.size() / rows;
    auto& b = buffers<T>();
    b.scratch.resize(n);
    for (std::size_t r = 0; r < rows; ++r) detail::process_x0_row(proc, d.subspan(r * n, n), std::span<T>(b.scratch));
  }

  // LCM and TCD: x̂₀ from the model output at the VP level of timestep i (then LCM's clipping or
  // thresholding, row by row), and the step to the next level.
  template <class T, class Z>
  void consistency_step(std::size_t i, std::span<const T> model_output, std::span<T> x, const Z& noise, std::size_t rows,
                        std::span<T> x0) {
    constexpr std::string_view where = "diffusion::scheduler::step";
    auto& b = buffers<T>();
    b.denoised.resize(x.size());
    if (!x0.empty()) detail::check_same_size(where, "x0", x0.size(), "x", x.size());
    // TCD reports x̂₀ itself: write it straight into x0 when asked (LCM reports f, written by its step).
    const std::span<T> d = cfg_.kind == scheduler_kind::tcd && !x0.empty() ? x0 : std::span<T>(b.denoised);
    denoise<T>(i, model_output, std::span<const T>(x), d);
    const noise_level from = noise_level::preserving(sigmas_[i]), to = noise_level::preserving(sigmas_[i + 1]);
    const bool last = i + 1 == timesteps_.size();
    if (cfg_.kind == scheduler_kind::lcm) {
      process_x0(d, rows);
      const consistency_boundary c = lcm_boundary(timesteps_[i], 0.5, cfg_.timestep_scaling);
      if (to.sigma > 0.0) {
        if constexpr (std::is_same_v<Z, kernels::no_noise>)
          detail::throw_invalid(where, "LCMScheduler adds noise at every step but the last, and no noise was passed");
        else
          lcm_step<T>(c, to, std::span<const T>(d), x, noise, x0);
      } else {
        lcm_step<T>(c, to, std::span<const T>(d), x, kernels::no_noise{}, x0);
      }
      return;
    }
    // TCD: the intermediate timestep s = ⌊(1 − γ) t'⌋ with t' the next timestep (0 after the last);
    // at the last step diffusers takes x_s at s = 0 without renoising: `to` is that level.
    const std::size_t next_t = last ? 0 : (*seq_)[i + 1];
    const std::size_t st = tcd_intermediate_timestep(next_t, cfg_.eta);
    const noise_level mid = noise_level::preserving(train_[st].sigma);
    const level_step ls{from, last ? mid : to};
    if (!last && st != next_t) {
      if constexpr (std::is_same_v<Z, kernels::no_noise>)
        detail::throw_invalid(where, "TCDScheduler with eta (gamma) = " + detail::to_text(cfg_.eta) +
                                         " adds noise at every step but the last, and no noise was passed");
      else
        tcd_step<T>(ls, mid, std::span<const T>(d), x, noise);
    } else {
      tcd_step<T>(ls, mid, std::span<const T>(d), x, kernels::no_noise{});
    }
  }

  template <class T, class Z>
  void sigma_space_step(std::size_t i, std::span<const T> model_output, std::span<T> x, const Z& noise, std::size_t rows,
                        std::span<T> x0) {
    if (cfg_.kind == scheduler_kind::flow_match_euler && cfg_.prediction_type == prediction::flow_velocity) {
      // diffusers' own form, x + (σ' − σ)u (or the renoised x − σu), in one pass from the velocity;
      // x̂₀, when asked for, in a pass of its own (the step does not depend on it).
      constexpr std::string_view where = "diffusion::scheduler::step";
      if (!x0.empty()) {
        detail::check_same_size(where, "x0", x0.size(), "x", x.size());
        denoise<T>(i, model_output, std::span<const T>(x), x0);
      }
      const sigma_step s{sigmas_[i], sigmas_[i + 1]};
      if (cfg_.stochastic_sampling && s.sigma_next > 0.0) {
        if constexpr (std::is_same_v<Z, kernels::no_noise>)
          detail::throw_invalid(where, "stochastic_sampling adds noise at every step but no noise was passed");
        else
          flow_stochastic_step<T>(s, model_output, x, noise);
      } else {
        flow_euler_step<T>(s, model_output, x);
      }
      return;
    }
    auto& b = buffers<T>();
    b.denoised.resize(x.size());
    const std::span<T> d = x0.empty() ? std::span<T>(b.denoised) : x0;
    if (!x0.empty()) detail::check_same_size("diffusion::scheduler::step", "x0", x0.size(), "x", x.size());
    denoise<T>(i, model_output, std::span<const T>(x), d);
    if (dpm() || cfg_.kind == scheduler_kind::unipc_multistep || cfg_.kind == scheduler_kind::deis_multistep ||
        cfg_.kind == scheduler_kind::sa_solver)
      process_x0(d, rows);
    const sigma_step s{sigmas_[i], sigmas_[i + 1]};
    switch (cfg_.kind) {
      case scheduler_kind::euler: euler_step<T>(s, d, x); break;
      case scheduler_kind::flow_match_euler:
        if (cfg_.stochastic_sampling && s.sigma_next > 0.0) {
          // diffusers' stochastic_sampling: x̂₀ noised afresh to σ' (the forward process at σ').
          constexpr std::string_view where = "diffusion::scheduler::step";
          if constexpr (std::is_same_v<Z, kernels::no_noise>)
            detail::throw_invalid(where, "stochastic_sampling adds noise at every step but no noise was passed");
          else
            detail::check_noise_operand<T>(where, noise, x.size());
          const noise_level to = noise_level::flow(s.sigma_next);
          detail::require_finite_step(where,
                                      kernels::affine_noise(static_cast<T>(to.alpha), std::span<const T>(d),
                                                            static_cast<T>(to.sigma), noise, x),
                                      "the renoised state");
        } else {
          euler_step<T>(level_step{noise_level::flow(s.sigma), noise_level::flow(s.sigma_next)}, d, x);
        }
        break;
      case scheduler_kind::euler_ancestral:
        if (ancestral_step(s.sigma, s.sigma_next, 1.0).sigma_up > 0.0)
          euler_ancestral_step<T>(s, d, x, noise);
        else
          euler_ancestral_step<T>(s, d, x, kernels::no_noise{});
        break;
      case scheduler_kind::heun:
      case scheduler_kind::flow_match_heun: {
        // A first stage leaves x at the Euler point (the model is called there next, at σ_{i+1});
        // the second stage corrects from the step's start, kept in aux (diffusers' HeunDiscreteScheduler).
        b.aux.resize(x.size());
        b.aux2.resize(x.size());
        const heun_state<T> st{std::span<T>(b.aux2), x};  // the derivative, and the Euler point written into x
        if (!heun_second_) {
          std::copy(x.begin(), x.end(), b.aux.begin());  // the step's start
          heun_second_ = heun_predict<T>(s, d, std::span<const T>(b.aux), st);
          if (!heun_second_) euler_step<T>(s, d, x);
        } else {
          heun_correct<T>({sigmas_[i - 1], sigmas_[i]}, d, std::span<const T>(b.aux), st, x);
          heun_second_ = false;
        }
        break;
      }
      case scheduler_kind::lms_discrete: {
        // The history lives in b.lms (newest first) and lms_sigmas_/lms_count_; the step rotates the
        // slots it uses, and the vectors are rotated the same way so that slot 0 stays the newest.
        const std::size_t k = cfg_.lms_order;
        lms_state<T> st;
        for (std::size_t j = 0; j < k; ++j) {
          b.lms[j].resize(x.size());
          st.slopes[j] = b.lms[j];
        }
        st.sigmas = lms_sigmas_;
        st.count = lms_count_;
        lms_step<T>(s, d, x, st, k);
        std::rotate(b.lms.begin(), b.lms.begin() + static_cast<std::ptrdiff_t>(k - 1), b.lms.begin() + static_cast<std::ptrdiff_t>(k));
        lms_sigmas_ = st.sigmas;
        lms_count_ = st.count;
        break;
      }
      case scheduler_kind::edm_euler: euler_step<T>(s, d, x); break;
      case scheduler_kind::kdpm2:
      case scheduler_kind::kdpm2_ancestral: {
        // Call 2j is step j's first stage (x moves to the stage point, where the model is called
        // next), call 2j + 1 its second (from the step's start, kept in aux); the last step is Euler.
        b.aux.resize(x.size());
        const std::size_t j = i / 2;
        const sigma_step ms{kdpm2_sigmas_[j], kdpm2_sigmas_[j + 1]};
        const ancestral_two_stage a = cfg_.kind == scheduler_kind::kdpm2_ancestral ? ancestral_midpoint_levels(ms, 1.0)
                                                                                    : ancestral_two_stage{midpoint_levels(ms), 0.0};
        const two_stage_state<T> st{x, {}};  // the stage point is the state between the two calls
        if (i % 2 == 0) {
          std::copy(x.begin(), x.end(), b.aux.begin());
          if (!dpm2_predict<T>(a.levels, d, std::span<const T>(b.aux), st)) euler_step<T>(ms, d, x);
        } else if (a.sigma_up > 0.0) {
          if constexpr (std::is_same_v<Z, kernels::no_noise>)
            detail::throw_invalid("diffusion::scheduler::step",
                                  "KDPM2AncestralDiscreteScheduler adds noise at the second call of every step but the last, and no noise was passed");
          else
            dpm2_correct<T>(a.levels, d, std::span<const T>(b.aux), st, x, noise, a.sigma_up);
        } else {
          dpm2_correct<T>(a.levels, d, std::span<const T>(b.aux), st, x);
        }
        break;
      }
      case scheduler_kind::dpm_solver_sde: {
        // Call 2j: the first stage from the step's start (kept in aux) to the stage point, written into x, with
        // normals z₁ (kept in scratch, D in aux2); call 2j + 1: the second stage from the start with fresh
        // normals z₂ (the stage's noise ρz₁ + √(1 − ρ²)z₂, the law of the Brownian tree's increments); the
        // last step is Euler to σ = 0. k-diffusion's sample_dpmpp_sde with r = 1/2 and η = 1, as diffusers.
        constexpr std::string_view where = "diffusion::scheduler::step";
        b.aux.resize(x.size());
        b.aux2.resize(x.size());
        b.scratch.resize(x.size());
        const std::size_t j = i / 2;
        const sigma_step ms{kdpm2_sigmas_[j], kdpm2_sigmas_[j + 1]};
        const two_stage_levels L = midpoint_levels(ms);
        const two_stage_state<T> st{x, std::span<T>(b.aux2), std::span<T>(b.scratch)};
        const ancestral_options o{1.0, cfg_.s_noise};
        const bool noisy = cfg_.s_noise > 0.0 && ms.sigma_next > 0.0;
        const auto call = [&](const auto& z) {
          if (i % 2 == 1) {
            dpmpp_sde_correct<T>(L, d, std::span<const T>(b.aux), st, z, o, x);
            return;
          }
          std::copy(x.begin(), x.end(), b.aux.begin());
          if (!dpmpp_sde_predict<T>(L, d, std::span<const T>(b.aux), st, z, o)) euler_step<T>(ms, d, x);
        };
        if constexpr (std::is_same_v<Z, kernels::no_noise>) {
          if (noisy)
            detail::throw_invalid(where, "DPMSolverSDEScheduler adds noise at both calls of every step but the last, and no noise was passed");
          call(kernels::no_noise{});
        } else if (noisy) {
          call(noise);
        } else {
          call(kernels::no_noise{});
        }
        break;
      }
      case scheduler_kind::deis_multistep: {
        const std::size_t k = cfg_.solver_order, N = timesteps_.size();
        deis_state<T> st;
        for (std::size_t q = 0; q < k; ++q) {
          b.hist[q].resize(x.size());
          st.eps[q] = b.hist[q];
        }
        st.lambda = deis_.lambda;
        st.count = deis_.count;
        // diffusers: order 1 at the last step and at most 2 at the one before, below 15 steps.
        const bool short_run = cfg_.lower_order_final && N < 15;
        const std::size_t max_order = short_run && i + 1 == N ? 1 : (short_run && i + 2 == N ? std::min<std::size_t>(k, 2) : k);
        deis_step<T>(level_step{noise_level::preserving(s.sigma), noise_level::preserving(s.sigma_next)}, d, x, st, k, max_order);
        follow_rotation(b.hist, st.eps, k);
        deis_ = {st.lambda, st.count};
        break;
      }
      case scheduler_kind::ipndm: {
        // diffusers' IPNDMScheduler: PLMS without the improved-Euler start (order rising from 1 to 4), the first
        // call from α = 0 (ρ = ∞), the last landing on σ = 0 by the same transfer.
        plms_state<T> st;
        for (std::size_t q = 0; q < 4; ++q) {
          b.hist[q].resize(x.size());
          st.eps[q] = b.hist[q];
        }
        st.count = plms_.count;
        st.last_lambda = plms_.last_lambda;
        if (i == 0 && cfg_.diffusers_ipndm_start && std::isinf(s.sigma)) std::fill(d.begin(), d.end(), T(0));
        plms_step<T>(level_step{noise_level::preserving(s.sigma), noise_level::preserving(s.sigma_next)}, d, x, st, 4);
        follow_rotation(b.hist, st.eps, 4);
        plms_ = {st.count, {}, {}, false, st.last_lambda};
        break;
      }
      case scheduler_kind::pndm: {
        // Leading spacing without steps_offset ends at timestep 0, and with set_alpha_to_one false the
        // final level is that of timestep 0 too: diffusers then steps from alpha_bar_0 to alpha_bar_0,
        // whose PLMS coefficients give x' = x exactly. The same here (plms_step itself refuses a
        // step to its own level outside the start's correction call).
        if (i + 1 == timesteps_.size() && sigmas_[i + 1] == sigmas_[i]) break;
        plms_state<T> st;
        for (std::size_t q = 0; q < 4; ++q) {
          b.hist[q].resize(x.size());
          st.eps[q] = b.hist[q];
        }
        b.aux.resize(x.size());
        st.start = b.aux;
        st.count = plms_.count;
        st.start_level = plms_.start_level;
        st.landed = plms_.landed;
        st.correction_pending = plms_.correction_pending;
        st.last_lambda = plms_.last_lambda;
        plms_step<T>(level_step{noise_level::preserving(s.sigma), noise_level::preserving(s.sigma_next)}, d, x, st, 4);
        follow_rotation(b.hist, st.eps, 4);
        plms_ = {st.count, st.start_level, st.landed, st.correction_pending, st.last_lambda};
        break;
      }
      case scheduler_kind::unipc_multistep: {
        // The history lives in b.unipc (newest first) and unipc_; the step rotates the views of its
        // first `order` slots, and the vectors are rotated the same way.
        const std::size_t k = cfg_.solver_order, N = timesteps_.size();
        unipc_state<T> st;
        for (std::size_t q = 0; q < k; ++q) {
          b.unipc[q].resize(x.size());
          st.denoised[q] = b.unipc[q];
        }
        b.aux.resize(x.size());
        st.last_sample = b.aux;
        st.lambda = unipc_.lambda;
        st.count = unipc_.count;
        st.last_sigma = unipc_.last_sigma;
        st.last_to = unipc_.last_to;
        st.last_order = unipc_.last_order;
        const bool disabled = i > 0 && std::find(cfg_.disable_corrector.begin(), cfg_.disable_corrector.end(), i - 1) !=
                                           cfg_.disable_corrector.end();
        const unipc_options o{k, cfg_.unipc_solver_type, !disabled};
        const std::size_t max_order = cfg_.lower_order_final ? std::min(k, N - i) : k;
        unipc_step<T>(level_step{noise_level::preserving(s.sigma), noise_level::preserving(s.sigma_next)}, d, x, st, o, max_order);
        follow_rotation(b.unipc, st.denoised, k);
        unipc_ = {st.lambda, st.count, st.last_sigma, st.last_to, st.last_order};
        break;
      }
      case scheduler_kind::sa_solver: {
        // diffusers' SASolverScheduler.step: the corrector (the last prediction's tau and normals), then the
        // predictor with tau = tau_func(timestep) and this call's normals; the x̂₀ history in b.hist (rotated as
        // the step rotates its views), the last prediction's start in aux, its normals in sa_last_noise.
        constexpr std::string_view where = "diffusion::scheduler::step";
        const sa_solver_options o{cfg_.predictor_order, cfg_.corrector_order, true};
        const std::size_t H = sa_solver_history(o), N = timesteps_.size();
        sa_solver_state<T> st;
        for (std::size_t q = 0; q < H; ++q) {
          b.hist[q].resize(x.size());
          st.denoised[q] = b.hist[q];
        }
        b.aux.resize(x.size());
        b.sa_last_noise.resize(x.size());
        b.sa_noise.resize(x.size());  // sized at the first call, whatever its tau (no allocation later)
        st.last_sample = b.aux;
        st.last_noise = b.sa_last_noise;
        st.lambda = sa_.lambda;
        st.count = sa_.count;
        st.last_from = sa_.last_from;
        st.last_to = sa_.last_to;
        st.last_tau = sa_.last_tau;
        st.last_order = sa_.last_order;
        const double t = timesteps_[i];
        const double tau = t >= cfg_.sa_tau_t_min && t <= cfg_.sa_tau_t_max ? cfg_.sa_tau : 0.0;
        const level_step l{noise_level::preserving(s.sigma), noise_level::preserving(s.sigma_next)};
        const std::size_t max_order = cfg_.lower_order_final ? N - i : 4;
        std::span<const T> z{};
        if (tau > 0.0 && s.sigma_next > 0.0) {
          if constexpr (std::is_same_v<Z, kernels::no_noise>) {
            detail::throw_invalid(where, "SASolverScheduler adds noise where tau > 0 (timestep " + detail::to_text(t) +
                                             ", tau = " + detail::to_text(tau) + ") and no noise was passed");
          } else {
            const std::span<T> zb(b.sa_noise);
            // The normals as an array (the corrector of the next call reuses them): zb = 0·zb + 1·z.
            std::fill(zb.begin(), zb.end(), T(0));
            detail::require_finite_step(where, kernels::affine_noise(T(0), std::span<const T>(zb), T(1), noise, zb),
                                        "drawing the normals");
            z = zb;
          }
        }
        sa_solver_step<T>(l, d, x, z, st, tau, o, max_order);
        follow_rotation(b.hist, st.denoised, H);
        sa_ = {st.lambda, st.count, st.last_from, st.last_to, st.last_tau, st.last_order};
        break;
      }
      case scheduler_kind::dpm_solver_singlestep: {
        // Call i of order o lands on level i + 1 from the state at level i − o + 1 (the block's start, kept in
        // aux), with the outputs of calls i − o + 1 … i (hist[0 … o − 1]: a block's j-th call writes slot j).
        const std::size_t o = singlestep_orders_[i];
        b.aux.resize(x.size());
        for (std::size_t q = 0; q < 3; ++q) b.hist[q].resize(x.size());
        if (o == 1) std::copy(x.begin(), x.end(), b.aux.begin());
        std::copy(d.begin(), d.end(), b.hist[o - 1].begin());
        singlestep_levels L{noise_level::preserving(sigmas_[i + 1 - o]), {}, noise_level::preserving(s.sigma_next), o};
        for (std::size_t q = 1; q < o; ++q) L.stages[q - 1] = noise_level::preserving(sigmas_[i + 1 - o + q]);
        dpmpp_singlestep_update<T>(L, {std::span<const T>(b.hist[0]), std::span<const T>(b.hist[1]), std::span<const T>(b.hist[2])},
                                   std::span<const T>(b.aux), x, cfg_.solver_type);
        break;
      }
      case scheduler_kind::dpm_solver_multistep:
      case scheduler_kind::edm_dpm_solver_multistep: {
        if (cfg_.algorithm_type == dpm_algorithm::dpmsolver || cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver) {
          // The noise-prediction form (validated: DPMSolverMultistepScheduler only, a VP state); diffusers'
          // order schedule: 1 at the first call and (lower_order_final, euler_at_final) at the last, at most 2
          // at the second to last of a short run. sde-dpmsolver adds noise wherever σ' > 0.
          const std::size_t k = cfg_.solver_order, max_order = dpm_order_cap(i, k);
          dpm_solver_state<T> st;
          for (std::size_t q = 0; q < k; ++q) {
            b.hist[q].resize(x.size());
            st.eps[q] = b.hist[q];
          }
          st.lambda = dpm_eps_.lambda;
          st.count = dpm_eps_.count;
          const bool sde = cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver;
          const level_step l{noise_level::preserving(s.sigma), noise_level::preserving(s.sigma_next)};
          const dpm_solver_options o{k, cfg_.solver_type, cfg_.diffusers_dpm_3m, sde};
          with_noise_if(sde && s.sigma_next > 0.0, noise, "algorithm_type sde-dpmsolver",
                        [&](const auto& z) { dpm_solver_step<T>(l, d, x, st, z, o, max_order); });
          follow_rotation(b.hist, st.eps, k);
          dpm_eps_ = {st.lambda, st.count};
          break;
        }
        // DPMSolverMultistepScheduler keeps a VP state; the EDM class a σ-space one.
        const auto level = [this](double sg) {
          return cfg_.kind == scheduler_kind::edm_dpm_solver_multistep ? noise_level::exploding(sg) : noise_level::preserving(sg);
        };
        if (cfg_.solver_order == 3) {
          // diffusers: order 1 at the first step (the history) and dpm_order_cap's at the last two.
          const std::size_t max_order = dpm_order_cap(i, 3);
          b.aux.resize(x.size());
          b.aux2.resize(x.size());
          dpmpp_3m_state<T> st;
          st.previous_denoised = {std::span<T>(b.aux), std::span<T>(b.aux2)};
          st.previous_h = dpm3_previous_h_;
          st.count = dpm3_count_;
          const bool sde = cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver_pp;
          const level_step l{level(s.sigma), level(s.sigma_next)};
          // diffusers' SDE third-order term (diffusers_dpm_3m) replaces the reference one.
          const dpmpp_sde_options o{sde ? 1.0 : 0.0, 1.0, cfg_.solver_type, cfg_.diffusers_dpm_3m && !sde,
                                    cfg_.diffusers_dpm_3m && sde};
          with_noise_if(sde && s.sigma_next > 0.0, noise, "algorithm_type sde-dpmsolver++",
                        [&](const auto& z) { dpmpp_3m_sde_step<T>(l, d, x, st, z, o, max_order); });
          std::swap(b.aux, b.aux2);  // the step swapped its two history views
          dpm3_previous_h_ = st.previous_h;
          dpm3_count_ = st.count;
          break;
        }
        b.aux.resize(x.size());
        dpmpp_2m_state<T> st{std::span<T>(b.aux), dpm_previous_h_, dpm_state_has_previous_};
        const bool first_order = dpm_order_cap(i, cfg_.solver_order) == 1;
        const level_step l{level(s.sigma), level(s.sigma_next)};
        const bool sde = cfg_.algorithm_type == dpm_algorithm::sde_dpmsolver_pp;
        const dpmpp_sde_options o{sde ? 1.0 : 0.0, 1.0, cfg_.solver_type};
        if (sde || cfg_.solver_type != dpm_solver_type::midpoint) {
          with_noise_if(sde && s.sigma_next > 0.0, noise, "algorithm_type sde-dpmsolver++",
                        [&](const auto& z) { dpmpp_2m_sde_step<T>(l, d, x, st, z, o, first_order); });
        } else {
          dpmpp_2m_step<T>(l, d, x, st, first_order);
        }
        dpm_previous_h_ = st.previous_h;
        dpm_state_has_previous_ = st.has_previous;
        break;
      }
      default: break;
    }
  }

  scheduler_config cfg_;
  noise_schedule train_;
  std::size_t n_steps_ = 0, next_ = 0;
  std::vector<double> timesteps_, sigmas_;
  std::optional<timestep_sequence> seq_;
  std::optional<respaced_schedule> resp_;
  double dpm_previous_h_ = 0.0;
  std::array<double, 2> dpm3_previous_h_{};
  std::size_t dpm3_count_ = 0;
  // UniPC's history apart from its buffers (unipc_state without the views).
  struct unipc_history {
    std::array<double, 3> lambda{};
    std::size_t count = 0;
    double last_sigma = 0.0;
    noise_level last_to{};
    std::size_t last_order = 0;
  } unipc_;
  // SA-Solver's history apart from its buffers (sa_solver_state without the views).
  struct sa_history {
    std::array<double, 4> lambda{};
    std::size_t count = 0;
    noise_level last_from{}, last_to{};
    double last_tau = 0.0;
    std::size_t last_order = 0;
  } sa_;
  struct deis_history {
    std::array<double, 4> lambda{};
    std::size_t count = 0;
  } deis_, dpm_eps_;  // dpm_eps_: the ε history of algorithm_type dpmsolver and sde-dpmsolver
  std::vector<std::size_t> singlestep_orders_;  // DPMSolverSinglestepScheduler's order of each call
  struct plms_history {
    std::size_t count = 0;
    noise_level start_level{}, landed{};
    bool correction_pending = false;
    double last_lambda = 0.0;
  } plms_;
  std::vector<double> kdpm2_sigmas_;  // KDPM2's N + 1 step levels (the per-call list is sigmas_)
  std::array<double, 4> lms_sigmas_{};
  std::size_t lms_count_ = 0;
  bool dpm_state_has_previous_ = false;
  bool heun_second_ = false;
  detail::per_element_type<state_buffers> buffers_;
};

}  // namespace diffusion

/// @}
