/// @file
/// @brief Reading a diffusers `scheduler_config.json` into a @ref diffusion::scheduler_config (and a
/// @ref diffusion::scheduler). Opt-in: this header needs nlohmann-json (Debian `nlohmann-json3-dev`)
/// and is not part of `ddpm.hpp`.
///
/// Rules: an unknown `_class_name`, a key whose value the class does not support here (e.g.
/// `use_flow_sigmas: true`, `solver_p`), or a value of the wrong JSON type is an error naming the
/// key, the value and the supported values. Keys this library does not read are never dropped
/// silently: each is reported in `ignored_keys` with the reason (unknown, or known to have no
/// effect on this class's math, such as `skip_prk_steps` or `_diffusers_version`). The values that
/// diffusers' constructors themselves replace, so that a config moves between the multistep
/// classes (`from_config` of a UniPC or DEIS model's config), are replaced the same way and
/// reported there too: for the DPM-Solver classes `algorithm_type: "deis"` is read as
/// "dpmsolver++" and `solver_type` "logrho", "bh1", "bh2" as "midpoint"; for DEISMultistepScheduler
/// `algorithm_type` "dpmsolver", "dpmsolver++" as "deis" and `solver_type` "midpoint", "heun",
/// "bh1", "bh2" as "logrho"; for UniPCMultistepScheduler `solver_type` "midpoint", "heun", "logrho"
/// as "bh2".
#pragma once

#include <cmath>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/errors.hpp"
#include "scheduler.hpp"

/// @addtogroup scheduler
/// @{

namespace diffusion {

/// @brief A parsed `scheduler_config.json`: the configuration and the keys that were not used.
struct parsed_scheduler_config {
  scheduler_config config;                ///< The configuration (class defaults, then the file's keys).
  std::vector<std::string> ignored_keys;  ///< "key: reason" for every key not applied.
};

namespace detail {

[[noreturn]] inline void throw_config(std::string_view key, const std::string& what) {
  throw_invalid("diffusion::parse_scheduler_config", "key \"" + std::string(key) + "\": " + what);
}

inline std::string json_text(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

inline double config_number(std::string_view key, const nlohmann::json& v) {
  if (!v.is_number()) throw_config(key, "expected a number, got " + json_text(v));
  const double d = v.get<double>();
  if (!std::isfinite(d)) throw_config(key, "expected a finite number, got " + json_text(v));
  return d;
}
inline std::size_t config_count(std::string_view key, const nlohmann::json& v) {
  if (!v.is_number_integer() || v.get<long long>() < 0)
    throw_config(key, "expected a non-negative integer, got " + json_text(v));
  return static_cast<std::size_t>(v.get<unsigned long long>());
}
inline bool config_bool(std::string_view key, const nlohmann::json& v) {
  if (!v.is_boolean()) throw_config(key, "expected true or false, got " + json_text(v));
  return v.get<bool>();
}
inline std::string config_string(std::string_view key, const nlohmann::json& v) {
  if (!v.is_string()) throw_config(key, "expected a string, got " + json_text(v));
  return v.get<std::string>();
}
template <class E>
E config_choice(std::string_view key, const nlohmann::json& v, std::initializer_list<std::pair<std::string_view, E>> choices) {
  const std::string s = config_string(key, v);
  std::string allowed;
  for (const auto& [name, e] : choices) {
    if (s == name) return e;
    allowed += (allowed.empty() ? "" : ", ") + std::string(name);
  }
  throw_config(key, "\"" + (s.size() > 40 ? s.substr(0, 40) + "..." : s) + "\" is not supported (supported: " + allowed + ")");
}

}  // namespace detail

/// @brief Parses the text of a diffusers `scheduler_config.json`.
/// @param[in] json_text the file's contents.
/// @return the configuration and the keys not applied, with reasons.
/// @throws std::invalid_argument for malformed JSON, a missing or unsupported `_class_name`, a wrong
///         type, or a value not supported (naming the key and the supported values).
inline parsed_scheduler_config parse_scheduler_config(std::string_view json_text) {
  constexpr std::string_view where = "diffusion::parse_scheduler_config";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::parse_error& e) {
    detail::throw_invalid(where, std::string("the text is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) detail::throw_invalid(where, "the JSON text is not an object");
  if (!j.contains("_class_name")) detail::throw_invalid(where, "the key \"_class_name\" is missing");
  const scheduler_kind kind = detail::config_choice<scheduler_kind>(
      "_class_name", j["_class_name"],
      {{"DDPMScheduler", scheduler_kind::ddpm},
       {"DDIMScheduler", scheduler_kind::ddim},
       {"EulerDiscreteScheduler", scheduler_kind::euler},
       {"EulerAncestralDiscreteScheduler", scheduler_kind::euler_ancestral},
       {"HeunDiscreteScheduler", scheduler_kind::heun},
       {"DPMSolverMultistepScheduler", scheduler_kind::dpm_solver_multistep},
       {"FlowMatchEulerDiscreteScheduler", scheduler_kind::flow_match_euler},
       {"FlowMatchHeunDiscreteScheduler", scheduler_kind::flow_match_heun},
       {"LMSDiscreteScheduler", scheduler_kind::lms_discrete},
       {"EDMEulerScheduler", scheduler_kind::edm_euler},
       {"EDMDPMSolverMultistepScheduler", scheduler_kind::edm_dpm_solver_multistep},
       {"LCMScheduler", scheduler_kind::lcm},
       {"TCDScheduler", scheduler_kind::tcd},
       {"UniPCMultistepScheduler", scheduler_kind::unipc_multistep},
       {"KDPM2DiscreteScheduler", scheduler_kind::kdpm2},
       {"KDPM2AncestralDiscreteScheduler", scheduler_kind::kdpm2_ancestral},
       {"DEISMultistepScheduler", scheduler_kind::deis_multistep},
       {"PNDMScheduler", scheduler_kind::pndm},
       {"DPMSolverSinglestepScheduler", scheduler_kind::dpm_solver_singlestep},
       {"IPNDMScheduler", scheduler_kind::ipndm},
       {"DPMSolverSDEScheduler", scheduler_kind::dpm_solver_sde},
       {"SASolverScheduler", scheduler_kind::sa_solver}});
  parsed_scheduler_config out{scheduler_config::defaults_for(kind), {}};
  scheduler_config& c = out.config;
  const bool discrete = kind == scheduler_kind::ddpm || kind == scheduler_kind::ddim;
  const bool sigma_space = kind == scheduler_kind::euler || kind == scheduler_kind::euler_ancestral ||
                           kind == scheduler_kind::heun || kind == scheduler_kind::lms_discrete ||
                           kind == scheduler_kind::kdpm2 || kind == scheduler_kind::kdpm2_ancestral ||
                           kind == scheduler_kind::dpm_solver_sde;
  const bool unipc = kind == scheduler_kind::unipc_multistep;
  const bool deis = kind == scheduler_kind::deis_multistep;
  const bool sa = kind == scheduler_kind::sa_solver;
  const bool singlestep = kind == scheduler_kind::dpm_solver_singlestep;
  const bool dpm = kind == scheduler_kind::dpm_solver_multistep || kind == scheduler_kind::edm_dpm_solver_multistep || singlestep;
  const bool edm = kind == scheduler_kind::edm_euler || kind == scheduler_kind::edm_dpm_solver_multistep;
  const bool consistency = kind == scheduler_kind::lcm || kind == scheduler_kind::tcd;
  const bool flow = kind == scheduler_kind::flow_match_euler || kind == scheduler_kind::flow_match_heun;
  const bool ipndm = kind == scheduler_kind::ipndm;
  auto ignore = [&](const std::string& key, std::string_view why) { out.ignored_keys.push_back(key + ": " + std::string(why)); };
  // diffusers' constructor substitutions (register_to_config in the multistep classes): the value read as
  // `to` when it is one of `from`, reported in ignored_keys.
  auto substituted = [&](const std::string& key, const nlohmann::json& v, std::initializer_list<std::string_view> from,
                         std::string_view to) -> nlohmann::json {
    if (v.is_string())
      for (const std::string_view f : from)
        if (v.get<std::string>() == f) {
          ignore(key, "\"" + std::string(f) + "\" is read as \"" + std::string(to) + "\", as diffusers' " +
                          std::string(class_name(kind)) + " replaces it");
          return nlohmann::json(std::string(to));
        }
    return v;
  };
  auto require_value = [](std::string_view key, const nlohmann::json& v, auto expected, std::string_view what) {
    if (v.is_null()) return;
    using E = decltype(expected);
    bool ok = false;
    if constexpr (std::is_same_v<E, bool>) ok = v.is_boolean() && v.get<bool>() == expected;
    else if constexpr (std::is_same_v<E, double>) ok = v.is_number() && v.get<double>() == expected;
    else ok = v.is_string() && v.get<std::string>() == std::string(expected);
    if (!ok) detail::throw_config(key, detail::json_text(v) + " is not supported (supported: " + std::string(what) + ")");
  };
  for (const auto& [key, v] : j.items()) {
    if (key == "_class_name") continue;
    if (key == "_diffusers_version") {
      ignore(key, "the diffusers version that wrote the file");
    } else if (ipndm && key == "trained_betas") {
      // diffusers' IPNDMScheduler would replace its sin^2 levels by these (and take their count as N + 1).
      if (!v.is_null()) detail::throw_config(key, detail::json_text(v) + " is not supported by IPNDMScheduler (supported: null)");
    } else if (key == "noise_sampler_seed") {
      // DPMSolverSDEScheduler seeds torchsde's Brownian tree with it; here the noise comes through step's argument.
      ignore(key, kind == scheduler_kind::dpm_solver_sde
                      ? "the seed of diffusers' torchsde Brownian tree; pass the noise to step() (e.g. a Philox step_stream)"
                      : "not used by " + std::string(class_name(kind)));
    } else if (ipndm && key != "num_train_timesteps") {
      // IPNDMScheduler's keys are num_train_timesteps and trained_betas; diffusers drops any other (the model's
      // output is read as v whatever prediction_type says).
      ignore(key, "not a key of IPNDMScheduler (diffusers ignores it too)");
    } else if (key == "num_train_timesteps") {
      c.num_train_timesteps = detail::config_count(key, v);
    } else if (key == "beta_start") {
      c.beta_start = detail::config_number(key, v);
    } else if (key == "beta_end") {
      c.beta_end = detail::config_number(key, v);
    } else if (key == "beta_schedule") {
      c.beta_schedule = detail::config_choice<beta_family>(key, v,
                                                           {{"linear", beta_family::linear},
                                                            {"scaled_linear", beta_family::scaled_linear},
                                                            {"squaredcos_cap_v2", beta_family::squaredcos_cap_v2},
                                                            {"sigmoid", beta_family::sigmoid}});
    } else if (key == "trained_betas") {
      if (v.is_null()) continue;
      if (!v.is_array()) detail::throw_config(key, "expected null or an array of numbers, got " + detail::json_text(v));
      c.trained_betas.clear();
      for (const auto& e : v) c.trained_betas.push_back(detail::config_number(key, e));
    } else if (key == "prediction_type") {
      c.prediction_type = detail::config_choice<prediction>(
          key, v, {{"epsilon", prediction::epsilon}, {"sample", prediction::sample}, {"v_prediction", prediction::v}});
    } else if ((key == "timestep_spacing" || key == "steps_offset") && (edm || consistency || singlestep)) {
      ignore(key, consistency  ? "not used by " + std::string(class_name(kind)) + " (consistency_timesteps places the steps)"
                  : singlestep ? "not used by " + std::string(class_name(kind)) + " (its timesteps are always linspace)"
                               : "not used by " + std::string(class_name(kind)));
    } else if (key == "timestep_spacing") {
      c.spacing = detail::config_choice<timestep_spacing>(
          key, v,
          {{"linspace", timestep_spacing::linspace}, {"leading", timestep_spacing::leading}, {"trailing", timestep_spacing::trailing}});
    } else if (key == "steps_offset") {
      c.steps_offset = detail::config_count(key, v);
    } else if (key == "rescale_betas_zero_snr") {
      c.rescale_betas_zero_snr = detail::config_bool(key, v);
    } else if (key == "clip_sample" || key == "clip_sample_range" || key == "set_alpha_to_one" ||
               key == "thresholding" || key == "dynamic_thresholding_ratio" || key == "sample_max_value") {
      // TCDScheduler reads none of these (its step neither clips nor thresholds); LCMScheduler's
      // final_alpha_cumprod is never reached (its previous timestep is always >= 0).
      const bool lcm = kind == scheduler_kind::lcm;
      const bool used = key == "set_alpha_to_one" ? (kind == scheduler_kind::ddim || kind == scheduler_kind::pndm)
                        : (key == "clip_sample" || key == "clip_sample_range") ? (discrete || lcm)
                                                                               : (discrete || dpm || lcm || unipc || deis || sa);
      if (!used) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      if (key == "clip_sample") c.clip_sample = detail::config_bool(key, v);
      else if (key == "clip_sample_range") c.clip_sample_range = detail::config_number(key, v);
      else if (key == "set_alpha_to_one") c.set_alpha_to_one = detail::config_bool(key, v);
      else if (key == "thresholding") c.thresholding = detail::config_bool(key, v);
      else if (key == "dynamic_thresholding_ratio") c.dynamic_thresholding_ratio = detail::config_number(key, v);
      else c.sample_max_value = detail::config_number(key, v);
    } else if (sa && (key == "predictor_order" || key == "corrector_order" || key == "tau_func" || key == "algorithm_type" ||
                      key == "lower_order_final" || key == "lambda_min_clipped" || key == "variance_type")) {
      if (key == "predictor_order") c.predictor_order = detail::config_count(key, v);
      else if (key == "corrector_order") c.corrector_order = detail::config_count(key, v);
      else if (key == "lower_order_final") c.lower_order_final = detail::config_bool(key, v);
      else if (key == "algorithm_type")
        require_value(key, v, std::string_view("data_prediction"), "data_prediction");
      else if (key == "tau_func") {
        // A Python callable; a saved config holds null (diffusers' default, tau = 1 for timesteps 200 ... 800).
        if (!v.is_null())
          detail::throw_config(key, detail::json_text(v) + " is not supported (supported: null; set sa_tau and its "
                                    "timestep window in scheduler_config)");
      } else if (key == "lambda_min_clipped") {
        if (!v.is_null() && !(v.is_number() && std::isinf(v.get<double>()) && v.get<double>() < 0.0))
          detail::throw_config(key, detail::json_text(v) + " is not supported (supported: null, i.e. -inf)");
      } else if (!v.is_null()) {  // variance_type: diffusers would slice a learned variance off the output
        detail::throw_config(key, detail::json_text(v) + " is not supported by SASolverScheduler (supported: null)");
      }
    } else if (key == "variance_type") {
      if (v.is_null()) continue;
      if (kind != scheduler_kind::ddpm) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      c.variance = detail::config_choice<variance_type>(key, v,
                                                        {{"fixed_small", variance_type::fixed_small},
                                                         {"fixed_large", variance_type::fixed_large},
                                                         {"learned", variance_type::learned},
                                                         {"learned_range", variance_type::learned_range}});
    } else if (key == "use_karras_sigmas" || key == "use_exponential_sigmas" || key == "use_beta_sigmas") {
      if (discrete || edm || consistency) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      (key == "use_karras_sigmas"        ? c.use_karras_sigmas
       : key == "use_exponential_sigmas" ? c.use_exponential_sigmas
                                         : c.use_beta_sigmas) = detail::config_bool(key, v);
    } else if (key == "final_sigmas_type") {
      if (discrete || consistency) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      c.final_sigmas_type = detail::config_choice<final_sigma>(key, v, {{"zero", final_sigma::zero}, {"sigma_min", final_sigma::sigma_min}});
    } else if (deis && (key == "solver_order" || key == "lower_order_final" || key == "algorithm_type" || key == "solver_type")) {
      if (key == "solver_order") c.solver_order = detail::config_count(key, v);
      else if (key == "lower_order_final") c.lower_order_final = detail::config_bool(key, v);
      else if (key == "algorithm_type")
        require_value(key, substituted(key, v, {"dpmsolver", "dpmsolver++"}, "deis"), std::string_view("deis"), "deis");
      else
        require_value(key, substituted(key, v, {"midpoint", "heun", "bh1", "bh2"}, "logrho"), std::string_view("logrho"), "logrho");
    } else if (unipc && (key == "solver_order" || key == "lower_order_final" || key == "solver_type" ||
                         key == "predict_x0" || key == "disable_corrector" || key == "solver_p")) {
      if (key == "solver_order") c.solver_order = detail::config_count(key, v);
      else if (key == "lower_order_final") c.lower_order_final = detail::config_bool(key, v);
      else if (key == "solver_type")
        c.unipc_solver_type = detail::config_choice<unipc_variant>(key, substituted(key, v, {"midpoint", "heun", "logrho"}, "bh2"),
                                                                   {{"bh1", unipc_variant::bh1}, {"bh2", unipc_variant::bh2}});
      else if (key == "predict_x0") require_value(key, v, true, "true (the data-prediction form)");
      else if (key == "solver_p") {
        if (!v.is_null()) detail::throw_config(key, detail::json_text(v) + " is not supported (supported: null)");
      } else {
        if (!v.is_array()) detail::throw_config(key, "expected an array of step indices, got " + detail::json_text(v));
        c.disable_corrector.clear();
        for (const auto& e : v) c.disable_corrector.push_back(detail::config_count(key, e));
      }
    } else if (key == "solver_order" || key == "lower_order_final" || key == "euler_at_final" ||
               key == "algorithm_type" || key == "solver_type" || key == "lambda_min_clipped" ||
               key == "use_lu_lambdas") {
      if (!dpm) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      if (key == "solver_order") c.solver_order = detail::config_count(key, v);
      else if (key == "lower_order_final") c.lower_order_final = detail::config_bool(key, v);
      else if (key == "euler_at_final") c.euler_at_final = detail::config_bool(key, v);
      else if (key == "algorithm_type")
        c.algorithm_type = detail::config_choice<dpm_algorithm>(
            key, substituted(key, v, {"deis"}, "dpmsolver++"),
            {{"dpmsolver++", dpm_algorithm::dpmsolver_pp}, {"sde-dpmsolver++", dpm_algorithm::sde_dpmsolver_pp}, {"dpmsolver", dpm_algorithm::dpmsolver},
             {"sde-dpmsolver", dpm_algorithm::sde_dpmsolver}});
      else if (key == "solver_type")
        c.solver_type = detail::config_choice<dpm_solver_type>(key, substituted(key, v, {"logrho", "bh1", "bh2"}, "midpoint"),
                                                               {{"midpoint", dpm_solver_type::midpoint}, {"heun", dpm_solver_type::heun}});
      else if (key == "use_lu_lambdas") {
        // A key of DPMSolverMultistepScheduler only (diffusers' other DPM-Solver classes have none).
        if (kind == scheduler_kind::dpm_solver_multistep) c.use_lu_lambdas = detail::config_bool(key, v);
        else require_value(key, v, false, "false (use_lu_lambdas is DPMSolverMultistepScheduler's)");
      }
      else if (!v.is_null())  // lambda_min_clipped: diffusers' default -inf is written as null or left out
        detail::throw_config(key, detail::json_text(v) + " is not supported (supported: null, i.e. -inf)");
    } else if (key == "interpolation_type") {
      if (!sigma_space) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      require_value(key, v, std::string_view("linear"), "linear");
    } else if (key == "timestep_type") {
      if (!sigma_space) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      require_value(key, v, std::string_view("discrete"), "discrete");
    } else if (key == "use_flow_sigmas") {
      require_value(key, v, false, "false");
    } else if (key == "shift" || key == "use_dynamic_shifting" || key == "base_shift" || key == "max_shift" ||
               key == "base_image_seq_len" || key == "max_image_seq_len" || key == "time_shift_type" ||
               key == "shift_terminal" || key == "invert_sigmas" || key == "stochastic_sampling") {
      if (!flow) {
        // DPM-Solver and others carry use_dynamic_shifting / time_shift_type for their flow-sigma mode.
        if (key == "use_dynamic_shifting") require_value(key, v, false, "false");
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      if (key == "shift") c.shift = detail::config_number(key, v);
      else if (key == "use_dynamic_shifting") c.use_dynamic_shifting = detail::config_bool(key, v);
      else if (key == "base_shift") c.flux_shift.base_shift = detail::config_number(key, v);
      else if (key == "max_shift") c.flux_shift.max_shift = detail::config_number(key, v);
      else if (key == "base_image_seq_len") c.flux_shift.base_image_seq_len = static_cast<double>(detail::config_count(key, v));
      else if (key == "max_image_seq_len") c.flux_shift.max_image_seq_len = static_cast<double>(detail::config_count(key, v));
      else if (key == "time_shift_type")
        c.time_shift_type = detail::config_choice<time_shift_kind>(
            key, v, {{"exponential", time_shift_kind::exponential}, {"linear", time_shift_kind::linear}});
      else if (key == "shift_terminal") c.shift_terminal = v.is_null() ? 0.0 : detail::config_number(key, v);
      else if (key == "invert_sigmas") require_value(key, v, false, "false (use diffusion::flow_sigmas with invert)");
      else if (kind == scheduler_kind::flow_match_euler) c.stochastic_sampling = detail::config_bool(key, v);
      else require_value(key, v, false, "false");
    } else if (key == "flow_shift") {
      ignore(key, "only used with use_flow_sigmas, which is not supported");
    } else if (key == "skip_prk_steps") {
      if (kind == scheduler_kind::pndm) require_value(key, v, true, "true (the pseudo Runge-Kutta start is not offered)");
      else ignore(key, "PNDM's option; no effect on " + std::string(class_name(kind)));
    } else if (key == "sigma_min" || key == "sigma_max") {
      if (edm) (key == "sigma_min" ? c.sigma_min : c.sigma_max) = detail::config_number(key, v);
      else if (!v.is_null()) detail::throw_config(key, detail::json_text(v) + " is not supported (supported: null)");
    } else if (key == "sigma_data" || key == "sigma_schedule" || key == "rho") {
      if (!edm) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      if (key == "sigma_data") c.sigma_data = detail::config_number(key, v);
      else if (key == "rho") c.rho = detail::config_number(key, v);
      else
        c.sigma_schedule = detail::config_choice<edm_sigma_schedule>(
            key, v, {{"karras", edm_sigma_schedule::karras}, {"exponential", edm_sigma_schedule::exponential}});
    } else if (key == "original_inference_steps" || key == "timestep_scaling") {
      if (!consistency) {
        ignore(key, "not used by " + std::string(class_name(kind)));
        continue;
      }
      if (key == "original_inference_steps") c.original_inference_steps = detail::config_count(key, v);
      else if (kind == scheduler_kind::lcm) c.timestep_scaling = detail::config_number(key, v);
      else ignore(key, "not used by TCDScheduler");
    } else {
      ignore(key, "unknown to diffusion::scheduler (not applied)");
    }
  }
  return out;
}

/// @brief A @ref scheduler from the text of a diffusers `scheduler_config.json`.
/// @param[in] json_text the file's contents; @param[out] ignored_keys if not null, receives the keys
/// that were not applied (see @ref parse_scheduler_config).
/// @throws as @ref parse_scheduler_config and the scheduler's constructor.
inline scheduler scheduler_from_json(std::string_view json_text, std::vector<std::string>* ignored_keys = nullptr) {
  parsed_scheduler_config p = parse_scheduler_config(json_text);
  if (ignored_keys) *ignored_keys = std::move(p.ignored_keys);
  return scheduler(std::move(p.config));
}

}  // namespace diffusion

/// @}
