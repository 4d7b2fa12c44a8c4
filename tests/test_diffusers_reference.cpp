// The scheduler object against diffusers itself: tests/data/diffusers_schedulers.ref holds the
// timesteps, σ lists and every step's model input, previous sample and x̂₀ of diffusers'
// scheduler classes (run by tools/gen_diffusers_reference.py on a fixed toy model and fixed
// noise). Each case the scheduler object supports is replayed here from the same
// scheduler_config.json text.
//
// Tolerances: diffusers keeps ᾱ and σ in float32 (relative error up to 6e-8 in each value) and
// computes its Karras σ list from float32 ends; this library computes in double. Measured, the
// largest relative difference (to max(1, |value|)) is 5.5e-6 in a list (the uniform-λ σ of
// dpmpp2m_lu_20: diffusers' σ_min = √((1 − ᾱ₀)/ᾱ₀) from a float32 ᾱ₀ = 0.99915 is 1.3e-5 off, and
// a list uniform in log σ carries the fraction i/(n − 1) of that to level i; the Karras σ of
// euler_sdxl_karras_30: 4.8e-6), 3.8e-6 in a state (dpmpp2m_lu_20) and ≤ 1.5e-6 elsewhere (≤ 2e-7
// for the flow classes). The tolerance, 1e-5, is 1.8 times the largest; a wrong coefficient, an
// off-by-one step or a wrong σ moves a state by 1e-3 or more.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <diffusion/samplers/scheduler_json.hpp>

namespace {

struct reference_case {
  std::string config, run;
  std::map<std::string, std::map<std::size_t, double>> values;  // quantity -> index -> value
};

std::map<std::string, reference_case> load_reference() {
  std::ifstream in(std::string(DIFFUSION_TEST_DATA_DIR) + "/diffusers_schedulers.ref");
  REQUIRE(in.good());
  std::map<std::string, reference_case> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("#config ", 0) == 0 || line.rfind("#run ", 0) == 0) {
      const bool config = line[1] == 'c';
      const std::size_t a = line.find(' '), b = line.find(' ', a + 1);
      (config ? out[line.substr(a + 1, b - a - 1)].config : out[line.substr(a + 1, b - a - 1)].run) = line.substr(b + 1);
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string name, quantity;
    std::size_t index = 0;
    std::string value;
    s >> name >> quantity >> index >> value;
    out[name].values[quantity][index] = std::stod(value);
  }
  return out;
}

double model(double x_in, double t) { return 0.3 * std::sin(x_in) + 0.05 * std::cos(0.01 * t) * x_in; }

// |a − b| ≤ tol·max(1, |b|), with the largest relative difference recorded.
struct comparison {
  double tol, worst = 0.0;
  bool check(double mine, double ref) {
    const double d = std::abs(mine - ref) / std::max(1.0, std::abs(ref));
    worst = std::max(worst, d);
    return d <= tol;
  }
};

bool supported(const std::string& config) {
  const auto j = nlohmann::json::parse(config);
  const std::string cls = j["_class_name"];
  if (cls == "DPMSolverSinglestepScheduler")
    return j.value("algorithm_type", std::string("dpmsolver++")) == "dpmsolver++" && j.value("solver_order", 2) <= 3;
  if (cls == "DPMSolverMultistepScheduler")
    return j.value("solver_order", 2) <= 3;  // every algorithm_type
  for (const char* c : {"DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                        "HeunDiscreteScheduler", "FlowMatchEulerDiscreteScheduler", "LMSDiscreteScheduler",
                        "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler", "LCMScheduler", "TCDScheduler",
                        "UniPCMultistepScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                        "DEISMultistepScheduler", "PNDMScheduler", "IPNDMScheduler", "DPMSolverSDEScheduler",
                        "SASolverScheduler"})
    if (cls == c) return true;
  return false;
}

}  // namespace

TEST_CASE("the scheduler object reproduces diffusers' scheduler classes step by step", "[scheduler][diffusers]") {
  const auto cases = load_reference();
  std::size_t replayed = 0;
  for (const auto& [name, rc] : cases) {
    if (rc.config.empty() || !supported(rc.config)) continue;
    ++replayed;
    INFO("case " << name);
    auto parsed = diffusion::parse_scheduler_config(rc.config);
    const auto run = nlohmann::json::parse(rc.run);
    parsed.config.eta = run["step_kwargs"].value("eta", 0.0);
    parsed.config.diffusers_double_shift = true;  // diffusers' numbers (docs/conventions.md)
    parsed.config.diffusers_dpm_3m = true;        // diffusers' third-order term (docs/conventions.md)
    parsed.config.diffusers_ipndm_start = true;   // diffusers' x0 = 0 at IPNDM's first call (docs/conventions.md)
    diffusion::scheduler sched(parsed.config);
    const std::size_t N = run["num_inference_steps"];
    const auto& kw = run["set_timesteps_kwargs"];
    if (kw.contains("sigmas")) {
      const std::vector<double> custom = kw["sigmas"].get<std::vector<double>>();
      sched.set_timesteps(custom, kw["mu"].get<double>());
    } else if (kw.contains("mu")) {
      sched.set_timesteps(N, kw["mu"].get<double>());
    } else {
      sched.set_timesteps(N);
    }
    const auto& v = rc.values;
    // Budget: 1e-5 relative (diffusers' float32 tables). The cosine table is the exception: diffusers' float32
    // 1 - alpha_bar_0 (alpha_bar_0 = 0.99996) puts its sigma_min 2.6e-4 above the exact 0.0064254, and every
    // Karras sigma between sigma_min and sigma_max moves by at most that relative amount, so does the state.
    const bool cosine = parsed.config.beta_schedule == diffusion::beta_family::squaredcos_cap_v2 &&
                        (parsed.config.use_karras_sigmas || parsed.config.use_exponential_sigmas ||
                         parsed.config.use_beta_sigmas || parsed.config.use_lu_lambdas);
    // SA-Solver of orders 3 and 4: diffusers evaluates its closed-form integrals over absolute lambda in float32
    // (terms that cancel); the same diffusers run with float64 sigmas differs from it by 2.53e-5 and from
    // sa_solver_step by 7.9e-14 (tests/test_sampler_sa_solver.cpp, docs/accuracy.md): a state budget of 4e-5.
    const bool sa_high_order = parsed.config.kind == diffusion::scheduler_kind::sa_solver &&
                               (parsed.config.predictor_order > 2 || parsed.config.corrector_order > 2);
    comparison table{cosine ? 3e-4 : 1e-5}, state{cosine ? 3e-4 : (sa_high_order ? 4e-5 : 1e-5)};
    // The lists (KDPM2's stage calls take the log-sigma map of the stage sigma, as diffusers; for the
    // ancestral class at eta = 1 the stage sigma sqrt(sigma sigma_down) is sigma_next itself).
    const bool sde = parsed.config.kind == diffusion::scheduler_kind::dpm_solver_sde;
    const bool kdpm2 = parsed.config.kind == diffusion::scheduler_kind::kdpm2 ||
                       parsed.config.kind == diffusion::scheduler_kind::kdpm2_ancestral || sde;
    const auto& ts = v.at("timesteps");
    REQUIRE(sched.timesteps().size() == ts.size());
    for (const auto& [i, t] : ts) {
      INFO("timesteps[" << i << "]");
      if (kdpm2 && i % 2 == 1) {
        // A stage timestep is the log-sigma map of a sigma between table entries; near t = 10 diffusers'
        // float32 alpha_bar (relative error of sigma up to u32 / (2 (1 - alpha_bar)) = 3e-6 there) moves
        // it by up to ~1e-4 (d log sigma / dt = 0.045): an absolute budget of 2e-4.
        CHECK(std::abs(sched.timesteps()[i] - t) <= 2e-4);
      } else {
        CHECK(table.check(sched.timesteps()[i], t));
      }
    }
    if (v.count("sigmas") && !kdpm2) {  // diffusers lays out KDPM2's sigmas per step, this object per call
      const auto& sg = v.at("sigmas");
      REQUIRE(sched.sigmas().size() == sg.size());
      for (const auto& [i, s] : sg) {
        INFO("sigmas[" << i << "]");
        CHECK(table.check(sched.sigmas()[i], s));
      }
    }
    const bool edm = parsed.config.kind == diffusion::scheduler_kind::edm_euler ||
                     parsed.config.kind == diffusion::scheduler_kind::edm_dpm_solver_multistep;
    if (edm) {
      // EDM's x_T ~ N(0, sigma_max^2) (Algorithm 1); diffusers uses sqrt(sigma_max^2 + 1) (docs/conventions.md).
      const double sm = parsed.config.sigma_max;
      CHECK(sched.init_noise_sigma() == sm);
      CHECK(v.at("init_noise_sigma").at(0) == Approx(std::sqrt(sm * sm + 1.0)).epsilon(1e-12));
    } else {
      CHECK(table.check(sched.init_noise_sigma(), v.at("init_noise_sigma").at(0)));
    }
    // The loop.
    std::vector<double> x(4), in(4), out(4), x0(4), z(4);
    for (std::size_t e = 0; e < 4; ++e) x[e] = v.at("x_T").at(e);
    const std::size_t steps = run["steps"];
    REQUIRE(steps == sched.timesteps().size());
    for (std::size_t k = 0; k < steps; ++k) {
      INFO("step " << k);
      const std::string ks = std::to_string(k);
      sched.scale_model_input<double>(x, k, in);
      for (std::size_t e = 0; e < 4; ++e) CHECK(state.check(in[e], v.at("model_input_" + ks).at(e)));
      for (std::size_t e = 0; e < 4; ++e) out[e] = model(in[e], sched.timesteps()[k]);
      const bool noisy = v.count("noise_" + ks) > 0;
      if (noisy && sde && k % 2 == 1) {
        // DPMSolverSDEScheduler's second call: diffusers' noise n (its Brownian tree's normalized increment over
        // [sigma', sigma], recorded) is rho z1 + sqrt(1 - rho^2) z2 here, with z1 the first call's normals and
        // rho^2 = (sigma - sigma_m)/(sigma - sigma') (the covariance of the two increments); feed z2 so that the
        // combination is n, and compare the deterministic arithmetic.
        const double sg = sched.sigmas()[k - 1], sm = sched.sigmas()[k], sn = sched.sigmas()[k + 1];
        const double rho = std::sqrt((sg - sm) / (sg - sn));
        for (std::size_t e = 0; e < 4; ++e)
          z[e] = (v.at("noise_" + ks).at(e) - rho * v.at("noise_" + std::to_string(k - 1)).at(e)) / std::sqrt(1.0 - rho * rho);
        sched.step<double>(k, out, x, std::span<const double>(z), 1, x0);
      } else if (noisy) {
        for (std::size_t e = 0; e < 4; ++e) z[e] = v.at("noise_" + ks).at(e);
        sched.step<double>(k, out, x, std::span<const double>(z), 1, x0);
      } else {
        sched.step<double>(k, out, x, diffusion::kernels::no_noise{}, 1, x0);
      }
      for (std::size_t e = 0; e < 4; ++e) CHECK(state.check(x[e], v.at("prev_sample_" + ks).at(e)));
      if (v.count("pred_original_sample_" + ks))
        for (std::size_t e = 0; e < 4; ++e) CHECK(state.check(x0[e], v.at("pred_original_sample_" + ks).at(e)));
      if (parsed.config.kind == diffusion::scheduler_kind::lcm)  // LCM writes its consistency output f (diffusers' denoised)
        for (std::size_t e = 0; e < 4; ++e) CHECK(state.check(x0[e], v.at("denoised_" + ks).at(e)));
    }
    WARN(name << ": largest relative difference, lists " << table.worst << ", states " << state.worst);
  }
  // DDPM ×2, DDIM ×5, Euler ×4, Euler-a, Heun, DPM-Solver++(2M) ×5 (one with use_lu_lambdas), its SDE form, (3M), the
  // 3M SDE, the noise-form SDE (sde-dpmsolver, midpoint and heun), exponential and cosine-Karras lists (the
  // model's timesteps truncated or rounded as diffusers stores them), FlowMatchEuler ×4, LMS,
  // EDM Euler, EDM DPM-Solver++(2M), LCM, TCD, UniPC, KDPM2, KDPM2-ancestral, DEIS, PNDM, DPM-Solver++(2S) singlestep
  // (and with beta sigmas), IPNDM, DPM++ SDE (Karras), SA-Solver (2/2 and 3/4).
  CHECK(replayed == 45);
}

TEST_CASE("flow classes: mu, custom sigmas and the parity switch", "[scheduler][flow]") {
  auto c = diffusion::scheduler_config::defaults_for(diffusion::scheduler_kind::flow_match_euler);
  c.shift = 3.0;
  diffusion::scheduler single(c);
  c.diffusers_double_shift = true;
  diffusion::scheduler twice(c);
  single.set_timesteps(28);
  twice.set_timesteps(28);
  // Shifted once, the last σ is shift(1/N) = 3·0.001/(1 + 2·0.001); diffusers shifts it twice.
  CHECK(single.sigmas()[27] == Approx(0.003 / 1.002).epsilon(1e-15));
  const double once = 0.003 / 1.002;
  CHECK(twice.sigmas()[27] == Approx(3.0 * once / (1.0 + 2.0 * once)).epsilon(1e-15));
  CHECK(single.sigmas()[0] == 1.0);
  CHECK(single.sigmas()[28] == 0.0);
  CHECK(single.timesteps()[5] == Approx(single.sigmas()[5] * 1000.0).epsilon(1e-15));
  CHECK(single.init_noise_sigma() == 1.0);
  CHECK_THROWS_AS(single.training_schedule(), std::logic_error);
  // Dynamic shifting needs μ, and only then.
  CHECK_THROWS_WITH(single.set_timesteps(28, 1.15), Catch::Contains("use_dynamic_shifting"));
  c.use_dynamic_shifting = true;
  diffusion::scheduler flux(c);
  CHECK_THROWS_WITH(flux.set_timesteps(28), Catch::Contains("needs mu"));
  CHECK(flux.mu_for(4096) == Approx(1.15).epsilon(1e-15));
  CHECK(flux.mu_for(256) == Approx(0.5).epsilon(1e-15));
  flux.set_timesteps(4, flux.mu_for(4096));
  // σ' = e^μ/(e^μ + 1/σ − 1) at the second unshifted σ, 1 − (1 − 1/1000)/3.
  const double u = 1.0 - 0.999 / 3.0, e = std::exp(1.15);
  CHECK(flux.sigmas()[1] == Approx(e / (e + 1.0 / u - 1.0)).epsilon(1e-14));
  // Not flow classes: no μ, no σ list.
  diffusion::scheduler ddim(diffusion::scheduler_config::defaults_for(diffusion::scheduler_kind::ddim));
  CHECK_THROWS_WITH(ddim.set_timesteps(10, 1.0), Catch::Contains("mu is only used"));
  const std::vector<double> custom{1.0, 0.5};
  CHECK_THROWS_WITH(ddim.set_timesteps(custom), Catch::Contains("only taken by the flow classes"));
  // The flow step: x + (σ' − σ)u, and the last step lands on x̂₀ = x − σu.
  single.set_timesteps(2);
  std::vector<double> x{0.5, -1.0}, uo{0.2, 0.4}, x0(2);
  const double s0 = single.sigmas()[0], s1 = single.sigmas()[1];
  single.step<double>(0, uo, x, diffusion::kernels::no_noise{}, 1, x0);
  CHECK(x[0] == Approx(0.5 + (s1 - s0) * 0.2).epsilon(1e-15));
  CHECK(x0[1] == Approx(-1.0 - s0 * 0.4).epsilon(1e-15));
  const std::vector<double> x1 = x;
  single.step<double>(1, uo, x);
  CHECK(x[0] == Approx(x1[0] - s1 * 0.2).epsilon(1e-15));
  // Stochastic sampling: x̂₀ renoised to σ'; without noise it refuses.
  c.use_dynamic_shifting = false;
  c.stochastic_sampling = true;
  diffusion::scheduler sto(c);
  sto.set_timesteps(3);
  std::vector<double> y{0.5, -1.0};
  CHECK_THROWS_WITH(sto.step<double>(0, uo, y), Catch::Contains("no noise was passed"));
  const std::vector<double> zz{1.5, -0.25};
  const double t0 = sto.sigmas()[0], t1 = sto.sigmas()[1];
  sto.step<double>(0, uo, y, std::span<const double>(zz));
  CHECK(y[0] == Approx((1.0 - t1) * (0.5 - t0 * 0.2) + t1 * 1.5).epsilon(1e-14));
  // Configuration errors name the key.
  auto bad = diffusion::scheduler_config::defaults_for(diffusion::scheduler_kind::flow_match_euler);
  bad.prediction_type = diffusion::prediction::epsilon;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Catch::Contains("prediction_type = epsilon") && Catch::Contains("flow_velocity"));
  bad = diffusion::scheduler_config::defaults_for(diffusion::scheduler_kind::flow_match_heun);
  bad.stochastic_sampling = true;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Catch::Contains("stochastic_sampling"));
  bad.stochastic_sampling = false;
  bad.shift = 0.0;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Catch::Contains("shift"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"FlowMatchEulerDiscreteScheduler","invert_sigmas":true})"),
                    Catch::Contains("invert_sigmas"));
  CHECK_THROWS_WITH(diffusion::parse_scheduler_config(R"({"_class_name":"FlowMatchEulerDiscreteScheduler","time_shift_type":"cubic"})"),
                    Catch::Contains("supported: exponential, linear"));
  // A real config: SD3 medium's scheduler_config.json.
  const auto sd3 = diffusion::parse_scheduler_config(
      R"({"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0", "num_train_timesteps": 1000, "shift": 3.0})");
  CHECK(sd3.config.shift == 3.0);
  CHECK(sd3.ignored_keys.size() == 1);
  // Flux.1-dev's.
  const auto fl = diffusion::parse_scheduler_config(
      R"({"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0", "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": true})");
  CHECK(fl.config.use_dynamic_shifting);
  CHECK(fl.config.flux_shift.max_shift == 1.15);
}
