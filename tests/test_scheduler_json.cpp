// Reading diffusers scheduler_config.json files of real models (the texts below are those files'
// keys and values as published on the Hugging Face hub) into the scheduler object.
#include <catch2/catch.hpp>

#include <diffusion/ddpm.hpp>
#include <diffusion/samplers/scheduler_json.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using diffusion::prediction;
using diffusion::scheduler_kind;

// runwayml/stable-diffusion-v1-5 ships a PNDMScheduler config; users swap in DDIM with the same keys.
constexpr const char* sd15_ddim = R"({
  "_class_name": "DDIMScheduler", "_diffusers_version": "0.6.0",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
  "steps_offset": 1, "trained_betas": null, "clip_sample": false })";

// stabilityai/stable-diffusion-2-1 (768 px, v-prediction).
constexpr const char* sd21 = R"({
  "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
  "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null })";

// stabilityai/stable-diffusion-xl-base-1.0.
constexpr const char* sdxl = R"({
  "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
  "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": false,
  "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "leading",
  "trained_betas": null, "use_karras_sigmas": false })";

// A zero-terminal-SNR v-prediction model (Lin et al. 2023 recommendations: rescaled betas,
// trailing spacing), e.g. the configs of models fine-tuned that way.
constexpr const char* zero_snr = R"({
  "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
  "prediction_type": "v_prediction", "rescale_betas_zero_snr": true, "set_alpha_to_one": false,
  "steps_offset": 1, "timestep_spacing": "trailing" })";

bool has_key(const std::vector<std::string>& ignored, const std::string& key) {
  return std::any_of(ignored.begin(), ignored.end(), [&](const std::string& s) { return s.rfind(key + ":", 0) == 0; });
}

}  // namespace

TEST_CASE("real models' scheduler_config.json files configure the scheduler", "[scheduler][json]") {
  SECTION("SD 1.5 with DDIM") {
    const auto p = diffusion::parse_scheduler_config(sd15_ddim);
    CHECK(p.config.kind == scheduler_kind::ddim);
    CHECK(p.config.beta_schedule == diffusion::beta_family::scaled_linear);
    CHECK(p.config.beta_start == 0.00085);
    CHECK(p.config.steps_offset == 1);
    CHECK_FALSE(p.config.set_alpha_to_one);
    CHECK_FALSE(p.config.clip_sample);
    CHECK(p.config.spacing == diffusion::timestep_spacing::leading);  // DDIM's default
    CHECK(has_key(p.ignored_keys, "_diffusers_version"));
    CHECK(has_key(p.ignored_keys, "skip_prk_steps"));
    CHECK(p.ignored_keys.size() == 2);
    auto s = diffusion::scheduler(p.config);
    s.set_timesteps(50);
    CHECK(s.timesteps()[0] == 981.0);
    CHECK(s.timesteps()[49] == 1.0);
  }
  SECTION("SD 2.1: v-prediction") {
    const auto p = diffusion::parse_scheduler_config(sd21);
    CHECK(p.config.prediction_type == prediction::v);
  }
  SECTION("SDXL: Euler, leading spacing, the DDIM-only keys reported as unused") {
    std::vector<std::string> ignored;
    auto s = diffusion::scheduler_from_json(sdxl, &ignored);
    CHECK(s.config().kind == scheduler_kind::euler);
    for (const char* k : {"clip_sample", "sample_max_value", "set_alpha_to_one", "skip_prk_steps", "_diffusers_version"})
      CHECK(has_key(ignored, k));
    CHECK(ignored.size() == 5);
    s.set_timesteps(30);
    CHECK(s.timesteps()[0] == 958.0);
  }
  SECTION("a zero-terminal-SNR model: rescaled betas, trailing spacing") {
    const auto p = diffusion::parse_scheduler_config(zero_snr);
    CHECK(p.config.rescale_betas_zero_snr);
    auto s = diffusion::scheduler(p.config);
    CHECK(s.training_schedule().zero_terminal_snr());
    s.set_timesteps(25);
    CHECK(s.timesteps()[0] == 999.0);
    // v-prediction at zero SNR: x0 = -v there, defined; the first step runs.
    std::vector<double> x(4, 0.5), v(4, 0.1);
    s.step<double>(0, v, x);
    for (double e : x) CHECK(std::isfinite(e));
  }
}

TEST_CASE("scheduler_config.json errors name the key and the supported values", "[scheduler][json][errors]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "CMStochasticIterativeScheduler"})"),
                    Contains("\"_class_name\"") && Contains("CMStochasticIterativeScheduler") && Contains("DDIMScheduler"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"beta_start": 0.1})"), Contains("_class_name\" is missing"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config("{\"_class_name\": "), Contains("not valid JSON"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "DDIMScheduler", "beta_schedule": "exp"})"),
                    Contains("\"beta_schedule\"") && Contains("\"exp\" is not supported") && Contains("squaredcos_cap_v2"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "DDIMScheduler", "steps_offset": "1"})"),
                    Contains("\"steps_offset\"") && Contains("non-negative integer"));
  CHECK_THROWS_WITH(
      diffusion::parse_scheduler_config(R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpm-solver"})"),
      Contains("\"algorithm_type\"") && Contains("\"dpm-solver\" is not supported") && Contains("dpmsolver++") &&
          Contains("sde-dpmsolver++") && Contains("sde-dpmsolver") && Contains("dpmsolver"));
  CHECK_THROWS_WITH(
      diffusion::parse_scheduler_config(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_type": "rk4"})"),
      Contains("\"solver_type\"") && Contains("midpoint") && Contains("heun"));
  CHECK(diffusion::parse_scheduler_config(R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver",
                                              "final_sigmas_type": "sigma_min"})")
            .config.algorithm_type == diffusion::dpm_algorithm::sde_dpmsolver);
  {
    const auto ns = diffusion::parse_scheduler_config(
        R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"})");
    CHECK(ns.config.algorithm_type == diffusion::dpm_algorithm::dpmsolver);
    const auto ss = diffusion::parse_scheduler_config(
        R"({"_class_name": "DPMSolverSinglestepScheduler", "solver_order": 3, "solver_type": "heun", "timestep_spacing": "leading"})");
    CHECK(ss.config.kind == diffusion::scheduler_kind::dpm_solver_singlestep);
    CHECK(ss.config.solver_order == 3);
    CHECK_FALSE(ss.config.lower_order_final);  // the singlestep class's default
    CHECK(ss.config.spacing == diffusion::timestep_spacing::linspace);
    REQUIRE(ss.ignored_keys.size() == 1);
    CHECK_THAT(ss.ignored_keys[0], Contains("timestep_spacing") && Contains("always linspace"));
    CHECK_THROWS_WITH(diffusion::scheduler(diffusion::parse_scheduler_config(
                          R"({"_class_name": "DPMSolverSinglestepScheduler", "algorithm_type": "dpmsolver"})")
                                               .config),
                      Contains("algorithm_type = dpmsolver"));
  }
  {
    const auto sde = diffusion::parse_scheduler_config(
        R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"})");
    CHECK(sde.config.algorithm_type == diffusion::dpm_algorithm::sde_dpmsolver_pp);
    CHECK(sde.config.solver_type == diffusion::dpm_solver_type::heun);
    CHECK(sde.ignored_keys.empty());
  }
  CHECK(diffusion::parse_scheduler_config(R"({"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": true})")
            .config.use_beta_sigmas);
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_beta_sigmas": true})"),
                    Contains("use_beta_sigmas") && Contains("supported: false"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "EulerDiscreteScheduler", "use_flow_sigmas": true})"),
                    Contains("use_flow_sigmas") && Contains("supported: false"));
  CHECK(diffusion::parse_scheduler_config(R"({"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true})")
            .config.use_exponential_sigmas);
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(
                        R"({"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true, "use_karras_sigmas": true})"),
                    Contains("use_karras_sigmas and use_exponential_sigmas"));
  CHECK(diffusion::parse_scheduler_config(R"({"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": true})")
            .config.use_lu_lambdas);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "DPMSolverSinglestepScheduler", "use_lu_lambdas": true})"),
                    Contains("\"use_lu_lambdas\"") && Contains("supported: false"));
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(
                        R"({"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": true, "use_exponential_sigmas": true})"),
                    Contains("use_lu_lambdas and use_exponential_sigmas are both true"));
  const auto p = diffusion::parse_scheduler_config(R"({"_class_name": "DDIMScheduler", "my_custom_key": 3})");
  REQUIRE(p.ignored_keys.size() == 1);
  CHECK_THAT(p.ignored_keys[0], Contains("my_custom_key") && Contains("unknown"));
}

TEST_CASE("scheduler_config.json of IPNDMScheduler", "[scheduler][json][ipndm]") {
  using Catch::Matchers::Contains;
  // Its keys are num_train_timesteps and trained_betas; diffusers drops the others (the output is read as v).
  const auto p = diffusion::parse_scheduler_config(
      R"({"_class_name": "IPNDMScheduler", "num_train_timesteps": 1000, "trained_betas": null, "prediction_type": "epsilon", "beta_schedule": "linear"})");
  CHECK(p.config.kind == scheduler_kind::ipndm);
  CHECK(p.config.prediction_type == prediction::v);
  REQUIRE(p.ignored_keys.size() == 2);
  CHECK(has_key(p.ignored_keys, "prediction_type"));
  CHECK(has_key(p.ignored_keys, "beta_schedule"));
  for (const auto& k : p.ignored_keys) CHECK_THAT(k, Contains("not a key of IPNDMScheduler"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "IPNDMScheduler", "trained_betas": [0.1, 0.2]})"),
                    Contains("\"trained_betas\"") && Contains("supported: null"));
  auto s = diffusion::scheduler(p.config);
  s.set_timesteps(10);
  CHECK(s.timesteps()[0] == 1.0);
}

TEST_CASE("scheduler_config.json of DPMSolverSDEScheduler", "[scheduler][json][sde]") {
  using Catch::Matchers::Contains;
  std::vector<std::string> ignored;
  auto s = diffusion::scheduler_from_json(
      R"({"_class_name": "DPMSolverSDEScheduler", "_diffusers_version": "0.21.0", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000, "noise_sampler_seed": 7, "prediction_type": "v_prediction", "use_karras_sigmas": true, "timestep_spacing": "leading", "steps_offset": 1})",
      &ignored);
  CHECK(s.config().kind == scheduler_kind::dpm_solver_sde);
  CHECK(s.config().prediction_type == prediction::v);
  CHECK(s.config().use_karras_sigmas);
  REQUIRE(ignored.size() == 2);
  CHECK(has_key(ignored, "_diffusers_version"));
  CHECK(has_key(ignored, "noise_sampler_seed"));
  for (const auto& k : ignored)
    if (k.rfind("noise_sampler_seed", 0) == 0) CHECK_THAT(k, Contains("Brownian tree") && Contains("step()"));
  s.set_timesteps(4);
  CHECK(s.timesteps().size() == 7);  // two calls per step, one on the last
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name": "DPMSolverSDEScheduler", "prediction_type": "sample"})"),
                    Contains("prediction_type = sample") && Contains("DPMSolverSDEScheduler"));
}

TEST_CASE("scheduler_config.json of the EDM, LCM and TCD classes", "[consistency][scheduler][json]") {
  using Catch::Matchers::Contains;
  const auto edm = diffusion::parse_scheduler_config(
      R"({"_class_name":"EDMDPMSolverMultistepScheduler","sigma_min":0.002,"sigma_max":120.0,"sigma_data":1.0,"sigma_schedule":"exponential","rho":5.0,"solver_order":3,"thresholding":false})");
  CHECK(edm.config.kind == diffusion::scheduler_kind::edm_dpm_solver_multistep);
  CHECK(edm.config.sigma_max == 120.0);
  CHECK(edm.config.sigma_data == 1.0);
  CHECK(edm.config.rho == 5.0);
  CHECK(edm.config.solver_order == 3);
  CHECK(edm.config.sigma_schedule == diffusion::edm_sigma_schedule::exponential);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"EDMEulerScheduler","sigma_schedule":"linear"})"),
                    Contains("sigma_schedule") && Contains("karras, exponential"));
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name":"EDMDPMSolverMultistepScheduler","thresholding":true})"),
                    Contains("thresholding is not supported"));
  const auto lcm = diffusion::parse_scheduler_config(
      R"({"_class_name":"LCMScheduler","original_inference_steps":100,"timestep_scaling":5.0,"timestep_spacing":"leading","steps_offset":1})");
  CHECK(lcm.config.kind == diffusion::scheduler_kind::lcm);
  CHECK(lcm.config.original_inference_steps == 100);
  CHECK(lcm.config.timestep_scaling == 5.0);
  bool spacing_reported = false;
  for (const auto& k : lcm.ignored_keys) spacing_reported |= k.rfind("timestep_spacing:", 0) == 0;
  CHECK(spacing_reported);
  const auto tcd = diffusion::parse_scheduler_config(R"({"_class_name":"TCDScheduler","clip_sample":true,"sigma_data":0.5})");
  CHECK(tcd.config.kind == diffusion::scheduler_kind::tcd);
  CHECK_FALSE(tcd.config.clip_sample);  // TCDScheduler never clips: reported, not applied
  CHECK(tcd.ignored_keys.size() == 2);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"EulerDiscreteScheduler","sigma_max":80.0})"),
                    Contains("sigma_max"));
  const auto uni = diffusion::parse_scheduler_config(
      R"({"_class_name":"UniPCMultistepScheduler","solver_order":3,"solver_type":"bh1","predict_x0":true,"disable_corrector":[0, 4],"solver_p":null,"lower_order_final":false,"thresholding":true})");
  CHECK(uni.config.kind == diffusion::scheduler_kind::unipc_multistep);
  CHECK(uni.config.solver_order == 3);
  CHECK(uni.config.unipc_solver_type == diffusion::unipc_variant::bh1);
  CHECK(uni.config.disable_corrector == std::vector<std::size_t>{0, 4});
  CHECK_FALSE(uni.config.lower_order_final);
  CHECK(uni.config.thresholding);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"UniPCMultistepScheduler","predict_x0":false})"),
                    Contains("predict_x0") && Contains("true"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"UniPCMultistepScheduler","solver_type":"rk2"})"),
                    Contains("bh1, bh2"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"UniPCMultistepScheduler","disable_corrector":[-1]})"),
                    Contains("disable_corrector"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"UniPCMultistepScheduler","solver_p":{}})"),
                    Contains("solver_p"));
  const auto k2 = diffusion::parse_scheduler_config(R"({"_class_name":"KDPM2AncestralDiscreteScheduler","use_karras_sigmas":true})");
  CHECK(k2.config.kind == diffusion::scheduler_kind::kdpm2_ancestral);
  CHECK(k2.config.use_karras_sigmas);
  CHECK(diffusion::parse_scheduler_config(R"({"_class_name":"KDPM2DiscreteScheduler"})").config.kind == diffusion::scheduler_kind::kdpm2);
  const auto deis = diffusion::parse_scheduler_config(
      R"({"_class_name":"DEISMultistepScheduler","algorithm_type":"deis","solver_type":"logrho","solver_order":3})");
  CHECK(deis.config.kind == diffusion::scheduler_kind::deis_multistep);
  CHECK(deis.config.solver_order == 3);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"DEISMultistepScheduler","solver_type":"rk2"})"),
                    Contains("solver_type") && Contains("logrho"));
  const auto pndm = diffusion::parse_scheduler_config(R"({"_class_name":"PNDMScheduler","skip_prk_steps":true,"set_alpha_to_one":true})");
  CHECK(pndm.config.kind == diffusion::scheduler_kind::pndm);
  CHECK(pndm.config.set_alpha_to_one);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"PNDMScheduler","skip_prk_steps":false})"),
                    Contains("skip_prk_steps") && Contains("Runge-Kutta"));
}

TEST_CASE("scheduler_config.json: the values diffusers' multistep classes replace are replaced the same way, and reported",
          "[scheduler][json]") {
  using Catch::Matchers::Contains;
  const auto has = [](const std::vector<std::string>& notes, const std::string& key, const std::string& from, const std::string& to) {
    for (const auto& n : notes)
      if (n.rfind(key + ":", 0) == 0 && n.find("\"" + from + "\" is read as \"" + to + "\"") != std::string::npos) return true;
    return false;
  };
  // A UniPC or DEIS model's config given to the DPM-Solver classes (diffusers' from_config between classes).
  for (const char* cls : {"DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EDMDPMSolverMultistepScheduler"}) {
    INFO(cls);
    for (const char* st : {"logrho", "bh1", "bh2"}) {
      const auto p = diffusion::parse_scheduler_config(std::string(R"({"_class_name": ")") + cls + R"(", "solver_type": ")" + st +
                                                       R"(", "algorithm_type": "deis"})");
      CHECK(p.config.solver_type == diffusion::dpm_solver_type::midpoint);
      CHECK(p.config.algorithm_type == diffusion::dpm_algorithm::dpmsolver_pp);
      CHECK(has(p.ignored_keys, "solver_type", st, "midpoint"));
      CHECK(has(p.ignored_keys, "algorithm_type", "deis", "dpmsolver++"));
    }
  }
  for (const char* st : {"midpoint", "heun", "bh1", "bh2"}) {
    const auto p = diffusion::parse_scheduler_config(std::string(R"({"_class_name": "DEISMultistepScheduler", "solver_type": ")") + st +
                                                     R"(", "algorithm_type": "dpmsolver++"})");
    CHECK(has(p.ignored_keys, "solver_type", st, "logrho"));
    CHECK(has(p.ignored_keys, "algorithm_type", "dpmsolver++", "deis"));
  }
  for (const char* st : {"midpoint", "heun", "logrho"}) {
    const auto p = diffusion::parse_scheduler_config(std::string(R"({"_class_name": "UniPCMultistepScheduler", "solver_type": ")") + st + "\"}");
    CHECK(p.config.unipc_solver_type == diffusion::unipc_variant::bh2);
    CHECK(has(p.ignored_keys, "solver_type", st, "bh2"));
  }
  // Values diffusers refuses stay refused; the supported ones are not reported.
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "UniPCMultistepScheduler", "solver_type": "rk4"})"),
                    Contains("\"solver_type\"") && Contains("bh1") && Contains("bh2"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name": "DEISMultistepScheduler", "algorithm_type": "unipc"})"),
                    Contains("\"algorithm_type\"") && Contains("deis"));
  CHECK(diffusion::parse_scheduler_config(R"({"_class_name": "UniPCMultistepScheduler", "solver_type": "bh1"})").ignored_keys.empty());
}

TEST_CASE("scheduler_config.json of SASolverScheduler", "[scheduler][json][sa_solver]") {
  using Catch::Matchers::Contains;
  // diffusers' resolved config of SASolverScheduler (tests/data/diffusers_schedulers.ref, case sasolver_p3c4_20).
  std::vector<std::string> ignored;
  auto s = diffusion::scheduler_from_json(
      R"({"_class_name":"SASolverScheduler","num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","trained_betas":null,"predictor_order":3,"corrector_order":4,"prediction_type":"epsilon","tau_func":null,"thresholding":false,"dynamic_thresholding_ratio":0.995,"sample_max_value":1.0,"algorithm_type":"data_prediction","lower_order_final":true,"use_karras_sigmas":false,"use_exponential_sigmas":false,"use_beta_sigmas":false,"use_flow_sigmas":false,"flow_shift":1.0,"lambda_min_clipped":null,"variance_type":null,"timestep_spacing":"linspace","steps_offset":1})",
      &ignored);
  CHECK(s.config().kind == scheduler_kind::sa_solver);
  CHECK(s.config().predictor_order == 3);
  CHECK(s.config().corrector_order == 4);
  CHECK(s.config().lower_order_final);
  CHECK(s.config().final_sigmas_type == diffusion::final_sigma::sigma_min);
  CHECK(s.config().sa_tau == 1.0);
  CHECK(s.config().sa_tau_t_min == 200.0);
  CHECK(s.config().sa_tau_t_max == 800.0);
  REQUIRE(ignored.size() == 1);
  CHECK(has_key(ignored, "flow_shift"));
  s.set_timesteps(20);
  CHECK(s.timesteps().size() == 20);
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"SASolverScheduler","algorithm_type":"noise_prediction"})"),
                    Contains("algorithm_type") && Contains("data_prediction"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"SASolverScheduler","tau_func":"lambda t: 0"})"),
                    Contains("tau_func") && Contains("null"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"SASolverScheduler","variance_type":"learned_range"})"),
                    Contains("variance_type") && Contains("SASolverScheduler"));
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name":"SASolverScheduler","predictor_order":5})"),
                    Contains("predictor_order = 5 is outside the allowed range [1, 4]"));
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name":"SASolverScheduler","corrector_order":0})"),
                    Contains("corrector_order = 0 is outside the allowed range [1, 4]"));
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name":"SASolverScheduler","use_karras_sigmas":true})"),
                    Contains("use_karras_sigmas") && Contains("SASolverScheduler"));
  CHECK_THROWS_WITH(diffusion::scheduler_from_json(R"({"_class_name":"SASolverScheduler","use_flow_sigmas":true})"),
                    Contains("use_flow_sigmas"));
}
