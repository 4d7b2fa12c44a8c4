// The scheduler object: set_timesteps as diffusers' classes choose timesteps and sigmas, and a
// hand-written loop over scheduler.step that reproduces the library's own samplers bit for bit.
#include <catch2/catch.hpp>

#include <diffusion/ddpm.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <vector>

namespace {

using diffusion::prediction;
using diffusion::scheduler_kind;

// A smooth eps-model of the VP input and timestep (what a network is to the scheduler).
struct toy_model {
  prediction kind = prediction::epsilon;
  [[nodiscard]] prediction predicts() const noexcept { return kind; }
  template <class T, class C>
  void operator()(const diffusion::denoiser_input<T, C>& in, std::span<T> out) const {
    const std::size_t n = in.row_size();
    for (std::size_t r = 0; r < in.rows(); ++r)
      for (std::size_t k = 0; k < n; ++k) {
        const double x = static_cast<double>(in.x[r * n + k]);
        out[r * n + k] = static_cast<T>(0.3 * std::sin(x) + 0.05 * std::cos(0.01 * in.timesteps[r]) * x);
      }
  }
};

template <class T>
std::vector<T> start(std::size_t n) {
  std::vector<T> x(n);
  for (std::size_t k = 0; k < n; ++k) x[k] = static_cast<T>(std::sin(1.3 * static_cast<double>(k) + 0.2) * 1.1);
  return x;
}

// Runs the scheduler loop as a runtime would: scale, call the model at the listed timestep, step.
template <class T, class Model, class Noise>
std::vector<T> run_scheduler(diffusion::scheduler& s, Model& model, std::vector<T> x, std::size_t rows, Noise&& noise) {
  const std::size_t n = x.size() / rows;
  std::vector<T> in(x.size()), out(x.size());
  std::vector<double> ts(rows), sg(rows);
  for (std::size_t i = 0; i < s.timesteps().size(); ++i) {
    s.scale_model_input<T>(x, i, in);
    std::fill(ts.begin(), ts.end(), s.timesteps()[i]);
    std::fill(sg.begin(), sg.end(), s.sigmas()[i]);
    model(diffusion::denoiser_input<T>{in, ts, sg}, std::span<T>(out));
    noise(s, i, std::span<const T>(out), std::span<T>(x), rows);
  }
  (void)n;
  return x;
}

// diffusers' defaults for a class with Stable Diffusion's scaled-linear table (0.00085 ... 0.012).
diffusion::scheduler_config sd_config(diffusion::scheduler_kind kind) {
  auto cfg = diffusion::scheduler_config::defaults_for(kind);
  cfg.beta_schedule = diffusion::beta_family::scaled_linear;
  cfg.beta_start = 0.00085;
  cfg.beta_end = 0.012;
  return cfg;
}

}  // namespace

TEST_CASE("scheduler timesteps and sigmas follow diffusers' classes", "[scheduler]") {
  auto cfg = sd_config(scheduler_kind::euler);
  SECTION("Euler, SDXL: leading spacing with steps_offset 1") {
    cfg.spacing = diffusion::timestep_spacing::leading;
    cfg.steps_offset = 1;
    diffusion::scheduler s(cfg);
    s.set_timesteps(30);
    REQUIRE(s.timesteps().size() == 30);
    CHECK(s.timesteps()[0] == 958.0);  // 29 * (1000 // 30) + 1
    CHECK(s.timesteps()[29] == 1.0);
    REQUIRE(s.sigmas().size() == 31);
    CHECK(s.sigmas()[30] == 0.0);
    CHECK(s.sigmas()[0] == s.training_schedule()[958].sigma);
    const double m = s.sigmas()[0];
    CHECK(s.init_noise_sigma() == std::sqrt(m * m + 1.0));  // leading: sqrt(sigma_max^2 + 1)
  }
  SECTION("Euler, linspace: unrounded timesteps, sigma interpolated linearly in sigma") {
    diffusion::scheduler s(cfg);
    s.set_timesteps(7);
    CHECK(s.timesteps()[0] == 999.0);
    CHECK(s.timesteps()[6] == 0.0);
    const double t1 = s.timesteps()[1];
    CHECK(t1 == Approx(999.0 * 5.0 / 6.0).epsilon(1e-15));
    const auto& tr = s.training_schedule();
    const auto i = static_cast<std::size_t>(std::floor(t1));
    const double w = t1 - static_cast<double>(i);
    CHECK(s.sigmas()[1] == Approx(tr[i].sigma + w * (tr[i + 1].sigma - tr[i].sigma)).epsilon(1e-15));
    CHECK(s.init_noise_sigma() == s.sigmas()[0]);  // linspace: sigma_max
  }
  SECTION("Euler with Karras sigmas: rho = 7 between the interpolated ends, timesteps by log-sigma interpolation") {
    cfg.use_karras_sigmas = true;
    diffusion::scheduler s(cfg);
    s.set_timesteps(10);
    const auto& tr = s.training_schedule();
    const auto k = diffusion::karras_sigmas(10, tr[0].sigma, tr[999].sigma);
    for (std::size_t i = 0; i < 10; ++i) CHECK(s.sigmas()[i] == k[i]);
    CHECK(s.timesteps()[0] == Approx(999.0));
    CHECK(s.timesteps()[9] == Approx(0.0).margin(1e-9));
    CHECK(s.timesteps()[4] == Approx(diffusion::sigma_to_t(tr, k[4])).epsilon(1e-12));
  }
  SECTION("Euler and DPM-Solver with exponential sigmas: uniform in log sigma between the same ends as Karras'") {
    cfg.use_exponential_sigmas = true;
    diffusion::scheduler s(cfg);
    s.set_timesteps(10);
    const auto& tr = s.training_schedule();
    const auto e = diffusion::exponential_sigmas(10, tr[0].sigma, tr[999].sigma);
    REQUIRE(s.sigmas().size() == 11);
    for (std::size_t i = 0; i < 10; ++i) CHECK(s.sigmas()[i] == e[i]);
    CHECK(s.sigmas()[10] == 0.0);
    CHECK(s.timesteps()[3] == Approx(diffusion::sigma_to_t(tr, e[3])).epsilon(1e-12));
    cfg.kind = scheduler_kind::dpm_solver_multistep;
    diffusion::scheduler d(cfg);
    d.set_timesteps(8);
    const auto ed = diffusion::exponential_sigmas(8, tr[0].sigma, tr[999].sigma);
    for (std::size_t i = 0; i < 8; ++i) {
      CHECK(d.sigmas()[i] == ed[i]);
      // diffusers stores them in an int64 tensor without rounding: truncated (docs/conventions.md).
      CHECK(d.timesteps()[i] == std::trunc(diffusion::sigma_to_t(tr, ed[i])));
    }
    cfg.use_karras_sigmas = true;  // both: refused, as diffusers does
    CHECK_THROWS_WITH(diffusion::scheduler(cfg), Catch::Matchers::Contains("use_karras_sigmas and use_exponential_sigmas"));
    cfg.use_karras_sigmas = false;
    diffusion::scheduler one(cfg);
    CHECK_THROWS_WITH(one.set_timesteps(1), Catch::Matchers::Contains("use_exponential_sigmas needs num_inference_steps >= 2"));
  }
  SECTION("Euler and DPM-Solver with beta sigmas: Beta(0.6, 0.6) quantiles between the same ends as Karras'") {
    cfg.use_beta_sigmas = true;
    diffusion::scheduler s(cfg);
    s.set_timesteps(10);
    const auto& tr = s.training_schedule();
    const auto b = diffusion::beta_sigmas(10, tr[0].sigma, tr[999].sigma, 0.6, 0.6);
    REQUIRE(s.sigmas().size() == 11);
    for (std::size_t i = 0; i < 10; ++i) CHECK(s.sigmas()[i] == b[i]);
    CHECK(s.sigmas()[10] == 0.0);
    CHECK(s.timesteps()[3] == Approx(diffusion::sigma_to_t(tr, b[3])).epsilon(1e-12));
    cfg.kind = scheduler_kind::dpm_solver_multistep;
    diffusion::scheduler d(cfg);
    d.set_timesteps(8);
    const auto bd = diffusion::beta_sigmas(8, tr[0].sigma, tr[999].sigma);
    for (std::size_t i = 0; i < 8; ++i) {
      CHECK(d.sigmas()[i] == bd[i]);
      // diffusers stores them in an int64 tensor without rounding: truncated (docs/conventions.md).
      CHECK(d.timesteps()[i] == std::trunc(diffusion::sigma_to_t(tr, bd[i])));
    }
    cfg.use_exponential_sigmas = true;  // two of the three: refused, as diffusers does
    CHECK_THROWS_WITH(diffusion::scheduler(cfg), Catch::Matchers::Contains("use_exponential_sigmas and use_beta_sigmas are both true"));
    cfg.use_karras_sigmas = true;
    CHECK_THROWS_WITH(diffusion::scheduler(cfg), Catch::Matchers::Contains("are all true"));
    cfg.use_karras_sigmas = cfg.use_exponential_sigmas = false;
    diffusion::scheduler one(cfg);
    CHECK_THROWS_WITH(one.set_timesteps(1), Catch::Matchers::Contains("use_beta_sigmas needs num_inference_steps >= 2"));
  }
  SECTION("Heun duplicates the interior timesteps: 2N - 1 model calls") {
    cfg.kind = scheduler_kind::heun;
    diffusion::scheduler s(cfg);
    s.set_timesteps(5);
    REQUIRE(s.timesteps().size() == 9);
    CHECK(s.timesteps()[1] == s.timesteps()[2]);
    CHECK(s.sigmas().size() == 10);
  }
  SECTION("DPM-Solver: linspace places N + 1 points and drops timestep 0") {
    cfg.kind = scheduler_kind::dpm_solver_multistep;
    diffusion::scheduler s(cfg);
    s.set_timesteps(10);
    // round(linspace(0, 999, 11))[::-1][:-1]
    const std::vector<double> want{999, 899, 799, 699, 599, 500, 400, 300, 200, 100};
    REQUIRE(s.timesteps().size() == 10);
    for (std::size_t i = 0; i < 10; ++i) CHECK(s.timesteps()[i] == want[i]);
    CHECK(s.init_noise_sigma() == 1.0);
  }
}

TEST_CASE("the scheduler loop reproduces the library's samplers bit for bit", "[scheduler]") {
  using T = double;
  const std::size_t rows = 2, n = 3;
  diffusion::gaussian_data g({0.2, -0.1, 0.4}, {0.7, 1.1, 0.3});
  const diffusion::philox_normal noise(41);
  auto philox_step = [&](diffusion::scheduler& s, std::size_t i, std::span<const T> out, std::span<T> x, std::size_t r) {
    s.step<T>(i, out, x, diffusion::step_stream(noise, i), r);
  };
  SECTION("DDIM as Stable Diffusion 1.5 uses it, and with eta = 1") {
    for (double eta : {0.0, 1.0}) {
      auto cfg = sd_config(scheduler_kind::ddim);
      cfg.set_alpha_to_one = false;
      cfg.steps_offset = 1;
      cfg.clip_sample = false;
      cfg.eta = eta;
      diffusion::scheduler s(cfg);
      s.set_timesteps(20);
      const auto x0 = start<T>(rows * n);
      const auto a = run_scheduler<T>(s, g, x0, rows, philox_step);
      auto b = x0;
      diffusion::ddim_sample(s.training_schedule(), g, b, rows, noise,
                             diffusion::inference_timesteps(1000, 20, diffusion::timestep_spacing::leading, 1),
                             {.eta = eta, .final = diffusion::ddim_options::final_alpha::first_step, .draw_initial_noise = false});
      CHECK(a == b);
    }
  }
  SECTION("DDPM on respaced timesteps") {
    auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::ddpm);
    diffusion::scheduler s(cfg);
    s.set_timesteps(25);
    const auto x0 = start<T>(rows * n);
    const auto a = run_scheduler<T>(s, g, x0, rows, philox_step);
    auto b = x0;
    diffusion::ddpm_sample(s.training_schedule(), g, b, rows, noise,
                           {.x0 = {.clip = true},
                            .timesteps = diffusion::inference_timesteps(1000, 25, diffusion::timestep_spacing::leading),
                            .draw_initial_noise = false});
    CHECK(a == b);
  }
  SECTION("Euler, Euler ancestral, Heun and LMS against euler_sample, euler_ancestral_sample, heun_sample and lms_sample") {
    diffusion::sigma_space_model D(g);
    for (auto kind : {scheduler_kind::euler, scheduler_kind::euler_ancestral, scheduler_kind::heun, scheduler_kind::lms_discrete}) {
      auto cfg = sd_config(kind);
      diffusion::scheduler s(cfg);
      s.set_timesteps(12);
      auto x0 = start<T>(rows * n);
      for (auto& v : x0) v *= s.init_noise_sigma();
      const auto a = run_scheduler<T>(s, g, x0, rows, philox_step);
      // The samplers' sigma list: the scheduler's, without Heun's duplicates.
      std::vector<double> sig;
      for (std::size_t i = 0; i < s.sigmas().size(); ++i)
        if (i == 0 || s.sigmas()[i] != s.sigmas()[i - 1]) sig.push_back(s.sigmas()[i]);
      auto b = x0;
      const diffusion::karras_options opt{.draw_initial_noise = false};
      if (kind == scheduler_kind::euler) diffusion::euler_sample(D, b, rows, noise, sig, opt);
      if (kind == scheduler_kind::euler_ancestral) diffusion::euler_ancestral_sample(D, b, rows, noise, sig, opt);
      if (kind == scheduler_kind::heun) diffusion::heun_sample(D, b, rows, noise, sig, opt);
      if (kind == scheduler_kind::lms_discrete) diffusion::lms_sample(D, b, rows, noise, sig, {.draw_initial_noise = false});
      INFO(diffusion::class_name(kind));
      CHECK(a == b);
    }
  }
  // The class in VP scale and a σ-space loop `run(D, x, sigmas)` from the same start (x_T / α_T): the same math
  // in two scales, the difference the rounding of the per-step rescaling. Returns the class's final state.
  const auto agree = [&](const diffusion::scheduler_config& cfg, std::size_t N, auto&& run) {
    diffusion::scheduler s(cfg);
    s.set_timesteps(N);
    const auto x0 = start<T>(rows * n);
    const auto a = run_scheduler<T>(s, g, x0, rows, philox_step);
    diffusion::sigma_space_model D(g);
    auto b = x0;
    const double alpha0 = diffusion::noise_level::preserving(s.sigmas()[0]).alpha;
    for (auto& v : b) v /= alpha0;
    run(D, b, s.sigmas());
    for (std::size_t k = 0; k < a.size(); ++k) CHECK(a[k] == Approx(b[k]).epsilon(1e-12).margin(1e-14));
    return a;
  };
  SECTION("DPM-Solver++(2M) in VP scale agrees with dpmpp_2m_sample in sigma-space") {
    auto cfg = sd_config(scheduler_kind::dpm_solver_multistep);
    cfg.lower_order_final = false;
    agree(cfg, 20, [&](auto& D, auto& b, auto sigmas) {
      diffusion::dpmpp_2m_sample(D, b, rows, noise, sigmas, {.draw_initial_noise = false});
    });
  }
  SECTION("sde-dpmsolver++ and the heun correction agree with dpmpp_2m_sde_sample in sigma-space") {
    for (const auto algorithm : {diffusion::dpm_algorithm::dpmsolver_pp, diffusion::dpm_algorithm::sde_dpmsolver_pp})
      for (const auto solver : {diffusion::dpm_solver_type::midpoint, diffusion::dpm_solver_type::heun}) {
        auto cfg = sd_config(scheduler_kind::dpm_solver_multistep);
        cfg.lower_order_final = false;
        cfg.algorithm_type = algorithm;
        cfg.solver_type = solver;
        const double eta = algorithm == diffusion::dpm_algorithm::sde_dpmsolver_pp ? 1.0 : 0.0;
        INFO("sde " << (eta == 1.0) << ", heun " << (solver == diffusion::dpm_solver_type::heun));
        agree(cfg, 20, [&](auto& D, auto& b, auto sigmas) {
          diffusion::dpmpp_2m_sde_sample(D, b, rows, noise, sigmas, {.eta = eta, .solver_type = solver, .draw_initial_noise = false});
        });
      }
    // solver_order 3: the 3M step (the third-order term by default), ODE and SDE.
    for (const auto algorithm : {diffusion::dpm_algorithm::dpmsolver_pp, diffusion::dpm_algorithm::sde_dpmsolver_pp}) {
      auto cfg = sd_config(scheduler_kind::dpm_solver_multistep);
      cfg.lower_order_final = false;
      cfg.algorithm_type = algorithm;
      cfg.solver_order = 3;
      const double eta = algorithm == diffusion::dpm_algorithm::sde_dpmsolver_pp ? 1.0 : 0.0;
      INFO("3M, sde " << (eta == 1.0));
      const auto a = agree(cfg, 20, [&](auto& D, auto& b, auto sigmas) {
        diffusion::dpmpp_3m_sde_sample(D, b, rows, noise, sigmas,
                                       {.eta = eta, .solver_type = diffusion::dpm_solver_type::midpoint, .draw_initial_noise = false});
      });
      // diffusers' own third-order term differs (docs/conventions.md).
      cfg.diffusers_dpm_3m = true;
      diffusion::scheduler r(cfg);
      r.set_timesteps(20);
      const auto c = run_scheduler<T>(r, g, start<T>(rows * n), rows, philox_step);
      double most = 0.0;
      for (std::size_t k = 0; k < a.size(); ++k) most = std::max(most, std::abs(a[k] - c[k]));
      CHECK(most > 1e-6);
    }
    // DPMSolverSinglestepScheduler and the singlestep loop (σ-space) take the same steps.
    for (const std::size_t order : {1u, 2u, 3u})
      for (const auto solver : {diffusion::dpm_solver_type::midpoint, diffusion::dpm_solver_type::heun}) {
        auto cfg = sd_config(scheduler_kind::dpm_solver_singlestep);
        cfg.solver_order = order;
        cfg.solver_type = solver;
        INFO("singlestep order " << order << ", heun " << (solver == diffusion::dpm_solver_type::heun));
        agree(cfg, 12, [&](auto& D, auto& b, auto sigmas) {
          diffusion::dpmpp_singlestep_sample(D, b, rows, noise, sigmas,
                                             {.order = order, .solver_type = solver, .draw_initial_noise = false});
        });
      }
    {
      auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::edm_dpm_solver_multistep);
      cfg.algorithm_type = diffusion::dpm_algorithm::sde_dpmsolver_pp;
      cfg.solver_order = 3;
      CHECK_NOTHROW(diffusion::scheduler(cfg));
      cfg.diffusers_dpm_3m = true;
      CHECK_THROWS_WITH(diffusion::scheduler(cfg), Catch::Matchers::Contains("diffusers_dpm_3m") &&
                                                       Catch::Matchers::Contains("EDMDPMSolverMultistepScheduler"));
    }
    // Without noise the SDE form refuses, naming the option.
    auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::dpm_solver_multistep);
    cfg.algorithm_type = diffusion::dpm_algorithm::sde_dpmsolver_pp;
    diffusion::scheduler s(cfg);
    s.set_timesteps(5);
    std::vector<T> x(3, 0.5), out(3, 0.1);
    CHECK_THROWS_WITH(s.step<T>(0, out, x), Catch::Matchers::Contains("sde-dpmsolver++ adds noise"));
  }
}

TEST_CASE("UniPC, KDPM2 and KDPM2-ancestral classes run the library's steps", "[scheduler]") {
  using T = double;
  const std::size_t rows = 2, n = 3;
  diffusion::gaussian_data g({0.2, -0.1, 0.4}, {0.7, 1.1, 0.3});
  diffusion::sigma_space_model D(g);
  const diffusion::philox_normal noise(43);
  auto sd = [](scheduler_kind k) {
    auto c = diffusion::scheduler_config::defaults_for(k);
    c.beta_schedule = diffusion::beta_family::scaled_linear;
    c.beta_start = 0.00085;
    c.beta_end = 0.012;
    return c;
  };
  SECTION("UniPCMultistepScheduler in VP scale agrees with unipc_sample in sigma-space") {
    for (const auto variant : {diffusion::unipc_variant::bh1, diffusion::unipc_variant::bh2})
      for (const std::size_t order : {std::size_t{1}, std::size_t{2}, std::size_t{3}}) {
        auto cfg = sd(scheduler_kind::unipc_multistep);
        cfg.solver_order = order;
        cfg.unipc_solver_type = variant;
        diffusion::scheduler s(cfg);
        s.set_timesteps(15);
        const auto x0 = start<T>(rows * n);
        const auto a = run_scheduler<T>(s, g, x0, rows, [](diffusion::scheduler& sc, std::size_t i, std::span<const T> out, std::span<T> x,
                                                          std::size_t r) { sc.step<T>(i, out, x, diffusion::kernels::no_noise{}, r); });
        auto b = x0;
        const double alpha0 = diffusion::noise_level::preserving(s.sigmas()[0]).alpha;
        for (auto& v : b) v /= alpha0;
        diffusion::unipc_sample(D, b, rows, noise, s.sigmas(),
                                {.solver = {.order = order, .variant = variant}, .draw_initial_noise = false});
        INFO("order " << order << ", bh" << (variant == diffusion::unipc_variant::bh1 ? 1 : 2));
        for (std::size_t k = 0; k < a.size(); ++k) CHECK(a[k] == Approx(b[k]).epsilon(1e-12).margin(1e-14));
      }
    // disable_corrector = {0}: no correction at call 1; the run differs from the corrected one, and
    // equals a hand loop of unipc_step with use_corrector off at that call.
    auto cfg = sd(scheduler_kind::unipc_multistep);
    cfg.disable_corrector = {0};
    diffusion::scheduler s(cfg), full(sd(scheduler_kind::unipc_multistep));
    s.set_timesteps(6);
    full.set_timesteps(6);
    auto step = [](diffusion::scheduler& sc, std::size_t i, std::span<const T> out, std::span<T> x, std::size_t r) {
      sc.step<T>(i, out, x, diffusion::kernels::no_noise{}, r);
    };
    const auto x0 = start<T>(rows * n);
    const auto a = run_scheduler<T>(s, g, x0, rows, step), c = run_scheduler<T>(full, g, x0, rows, step);
    CHECK(a != c);
    auto bad = sd(scheduler_kind::unipc_multistep);
    bad.solver_order = 4;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Catch::Matchers::Contains("solver_order = 4") &&
                                                     Catch::Matchers::Contains("UniPCMultistepScheduler"));
  }
  SECTION("DEISMultistepScheduler in VP scale agrees with deis_sample in sigma-space; PNDM's defaults and list") {
    for (const std::size_t order : {std::size_t{1}, std::size_t{2}, std::size_t{3}}) {
      auto cfg = sd(scheduler_kind::deis_multistep);
      cfg.solver_order = order;
      cfg.final_sigmas_type = diffusion::final_sigma::zero;  // deis_sample's list ends at 0
      diffusion::scheduler s(cfg);
      s.set_timesteps(20);
      const auto x0 = start<T>(rows * n);
      const auto a = run_scheduler<T>(s, g, x0, rows, [](diffusion::scheduler& sc, std::size_t i, std::span<const T> out, std::span<T> x,
                                                        std::size_t r) { sc.step<T>(i, out, x, diffusion::kernels::no_noise{}, r); });
      auto b = x0;
      const double alpha0 = diffusion::noise_level::preserving(s.sigmas()[0]).alpha;
      for (auto& v : b) v /= alpha0;
      diffusion::deis_sample(D, b, rows, noise, s.sigmas(), {.order = order, .lower_order_final = false, .draw_initial_noise = false});
      INFO("order " << order);
      for (std::size_t k = 0; k < a.size(); ++k) CHECK(a[k] == Approx(b[k]).epsilon(1e-12).margin(1e-14));
    }
    CHECK(diffusion::scheduler_config::defaults_for(scheduler_kind::deis_multistep).final_sigmas_type == diffusion::final_sigma::sigma_min);
    const auto p = diffusion::scheduler_config::defaults_for(scheduler_kind::pndm);
    CHECK_FALSE(p.set_alpha_to_one);
    CHECK(p.spacing == diffusion::timestep_spacing::leading);
    auto pc = sd(scheduler_kind::pndm);
    pc.steps_offset = 1;
    diffusion::scheduler s(pc);
    s.set_timesteps(4);  // leading, offset 1: 751, 501, 501, 251, 1
    REQUIRE(s.timesteps().size() == 5);
    CHECK(s.timesteps()[1] == 501.0);
    CHECK(s.timesteps()[2] == 501.0);
    CHECK(s.sigmas().back() == s.training_schedule()[0].sigma);
    // PNDMScheduler's own defaults (steps_offset 0): the list ends at timestep 0 and the final level is
    // timestep 0's, so the last call is diffusers' identity step (x' = x), not an error.
    {
      diffusion::scheduler s0(sd(scheduler_kind::pndm));
      s0.set_timesteps(4);  // leading, offset 0: 750, 500, 500, 250, 0
      REQUIRE(s0.timesteps().size() == 5);
      REQUIRE(s0.timesteps().back() == 0.0);
      REQUIRE(s0.sigmas().back() == s0.sigmas()[4]);
      std::vector<T> x(rows * n), out(rows * n);
      for (std::size_t k = 0; k < x.size(); ++k) {
        x[k] = static_cast<T>(std::sin(0.3 * static_cast<double>(k)));
        out[k] = static_cast<T>(std::cos(0.7 * static_cast<double>(k)));
      }
      for (std::size_t i = 0; i < 4; ++i) s0.step<T>(i, out, x, diffusion::kernels::no_noise{}, rows);
      const auto before = x;
      s0.step<T>(4, out, x, diffusion::kernels::no_noise{}, rows);
      CHECK(x == before);
    }
    pc.thresholding = true;
    CHECK_THROWS_WITH(diffusion::scheduler(pc), Catch::Matchers::Contains("thresholding is not supported by PNDMScheduler"));
  }
  SECTION("KDPM2 equals dpm2_sample, KDPM2-ancestral dpm2_ancestral_sample, bit for bit") {
    for (const auto kind : {scheduler_kind::kdpm2, scheduler_kind::kdpm2_ancestral}) {
      diffusion::scheduler s(sd(kind));
      s.set_timesteps(8);
      REQUIRE(s.timesteps().size() == 15);
      auto x0 = start<T>(rows * n);
      for (auto& v : x0) v *= s.init_noise_sigma();
      // Call 2j + 1 consumes step j's noise (dpm2_ancestral_sample's stream step j).
      const auto a = run_scheduler<T>(s, g, x0, rows, [&](diffusion::scheduler& sc, std::size_t i, std::span<const T> out, std::span<T> x,
                                                         std::size_t r) { sc.step<T>(i, out, x, diffusion::step_stream(noise, i / 2), r); });
      std::vector<double> sig;  // the step levels: every other entry, then 0
      for (std::size_t i = 0; i < s.timesteps().size(); i += 2) sig.push_back(s.sigmas()[i]);
      sig.push_back(0.0);
      auto b = x0;
      const diffusion::karras_options opt{.draw_initial_noise = false};
      if (kind == scheduler_kind::kdpm2) diffusion::dpm2_sample(D, b, rows, noise, sig, opt);
      else diffusion::dpm2_ancestral_sample(D, b, rows, noise, sig, opt);
      INFO(diffusion::class_name(kind));
      CHECK(a == b);
    }
    diffusion::scheduler s(sd(scheduler_kind::kdpm2_ancestral));
    s.set_timesteps(4);
    std::vector<T> x(3, 0.5), out(3, 0.1);
    s.step<T>(0, out, x);  // the first stage adds no noise
    CHECK_THROWS_WITH(s.step<T>(1, out, x), Catch::Matchers::Contains("KDPM2AncestralDiscreteScheduler") &&
                                                Catch::Matchers::Contains("no noise was passed"));
    auto bad = sd(scheduler_kind::kdpm2);
    bad.final_sigmas_type = diffusion::final_sigma::sigma_min;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Catch::Matchers::Contains("final_sigmas_type"));
  }
  SECTION("DPM-Solver's dynamic thresholding is applied to x0, and clipping is refused where no class applies it") {
    auto cfg = sd(scheduler_kind::dpm_solver_multistep);
    cfg.thresholding = true;
    cfg.sample_max_value = 1.5;
    cfg.prediction_type = prediction::sample;
    diffusion::scheduler s(cfg);
    s.set_timesteps(4);
    std::vector<T> x{0.5, -1.2, 0.3, 2.0}, out{4.0, -3.0, 0.2, 0.1}, x0(4);
    s.step<T>(0, out, x, diffusion::kernels::no_noise{}, 1, x0);
    // torch.quantile(|x0|, 0.995) over 4 values: between the two largest, 3 + 0.985 (4 - 3) = 3.985,
    // clamped to [1, 1.5] = 1.5: x0 = clamp(x0, -1.5, 1.5) / 1.5.
    CHECK(x0[0] == Approx(1.0));
    CHECK(x0[1] == Approx(-1.0));
    CHECK(x0[2] == Approx(0.2 / 1.5));
    auto clip = sd(scheduler_kind::euler);
    clip.clip_sample = true;
    CHECK_THROWS_WITH(diffusion::scheduler(clip), Catch::Matchers::Contains("clip_sample = true is not supported by EulerDiscreteScheduler"));
  }
}

TEST_CASE("IPNDMScheduler: its sin^2 levels, the first call from pure noise, its keys", "[scheduler][ipndm]") {
  using Catch::Matchers::Contains;
  auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::ipndm);
  CHECK(cfg.prediction_type == prediction::v);
  diffusion::scheduler s(cfg);
  s.set_timesteps(4);
  // s_k = 1 - k/4, sigma_k = sin^2(pi s_k / 2), alpha_k = sqrt(1 - sigma_k^2). At k = 2: sigma = 1/2,
  // alpha = sqrt(3)/2, so the angle timestep atan2(sigma, alpha)·2/pi is exactly 1/3 and rho = 1/sqrt(3).
  REQUIRE(s.timesteps().size() == 4);
  REQUIRE(s.sigmas().size() == 5);
  CHECK(s.timesteps()[0] == 1.0);
  CHECK(std::isinf(s.sigmas()[0]));
  CHECK(s.timesteps()[2] == Approx(1.0 / 3.0).epsilon(1e-15));
  CHECK(s.sigmas()[2] == Approx(1.0 / std::sqrt(3.0)).epsilon(1e-15));
  CHECK(s.sigmas()[4] == 0.0);
  CHECK(s.init_noise_sigma() == 1.0);
  CHECK_THROWS_AS(s.training_schedule(), std::logic_error);
  // The first call, from alpha = 0: x' = alpha_1 x0 + sigma_1 x with x0 = -v (the model's), or 0 (diffusers').
  const double sg1 = std::pow(std::sin(0.375 * std::numbers::pi), 2.0), al1 = std::sqrt(1.0 - sg1 * sg1);
  const std::vector<double> x_T{0.5, -1.2}, v{0.3, 0.1};
  std::vector<double> x = x_T, x0(2);
  s.step<double>(0, v, x, diffusion::kernels::no_noise{}, 1, x0);
  for (std::size_t k = 0; k < 2; ++k) {
    CHECK(x0[k] == -v[k]);
    CHECK(x[k] == Approx(-al1 * v[k] + sg1 * x_T[k]).epsilon(1e-14));
  }
  cfg.diffusers_ipndm_start = true;
  diffusion::scheduler d(cfg);
  d.set_timesteps(4);
  x = x_T;
  d.step<double>(0, v, x);
  for (std::size_t k = 0; k < 2; ++k) CHECK(x[k] == Approx(sg1 * x_T[k]).epsilon(1e-14));
  // The run lands on sigma = 0 with finite values.
  for (std::size_t i = 1; i < 4; ++i) d.step<double>(i, v, x);
  for (double e : x) CHECK(std::isfinite(e));
  // Keys it does not support.
  auto bad = diffusion::scheduler_config::defaults_for(scheduler_kind::ipndm);
  bad.prediction_type = prediction::epsilon;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("prediction_type = epsilon") && Contains("IPNDMScheduler") &&
                                                   Contains("supported: v_prediction"));
  bad = diffusion::scheduler_config::defaults_for(scheduler_kind::ipndm);
  bad.trained_betas.assign(1000, 0.01);
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("trained_betas") && Contains("supported: empty"));
  bad = diffusion::scheduler_config::defaults_for(scheduler_kind::ipndm);
  bad.use_karras_sigmas = true;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("use_karras_sigmas = true is not supported by IPNDMScheduler"));
}

TEST_CASE("DPMSolverMultistepScheduler with use_lu_lambdas: steps uniform in lambda", "[scheduler][sigmas]") {
  using Catch::Matchers::Contains;
  auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::dpm_solver_multistep);
  cfg.use_lu_lambdas = true;
  diffusion::scheduler s(cfg);
  s.set_timesteps(10);
  const auto& train = s.training_schedule();
  // The ends are the table's: sigma of timestep T - 1 and of timestep 0, so their timesteps are 999 and 0.
  CHECK(s.sigmas()[0] == Approx(train[999].sigma).epsilon(1e-14));
  CHECK(s.sigmas()[9] == Approx(train[0].sigma).epsilon(1e-14));
  CHECK(s.timesteps()[0] == 999.0);
  CHECK(s.timesteps()[9] == 0.0);
  CHECK(s.sigmas()[10] == 0.0);
  // lambda = -log sigma equally spaced in between (the sigmas are not rounded to the timesteps).
  const double h = std::log(s.sigmas()[0] / s.sigmas()[9]) / 9.0;
  for (std::size_t i = 1; i < 10; ++i) CHECK(std::log(s.sigmas()[i - 1] / s.sigmas()[i]) == Approx(h).epsilon(1e-12));
  // Other classes, and two list options at once, are refused.
  cfg.use_karras_sigmas = true;
  CHECK_THROWS_WITH(diffusion::scheduler(cfg), Contains("use_karras_sigmas and use_lu_lambdas are both true"));
  auto euler = diffusion::scheduler_config::defaults_for(scheduler_kind::euler);
  euler.use_lu_lambdas = true;
  CHECK_THROWS_WITH(diffusion::scheduler(euler), Contains("use_lu_lambdas = true is not supported by EulerDiscreteScheduler") &&
                                                     Contains("DPMSolverMultistepScheduler"));
}

TEST_CASE("DPMSolverSDEScheduler: one step's law on Gaussian data, the deterministic part, its keys", "[scheduler][sde]") {
  using Catch::Matchers::Contains;
  // One-dimensional Gaussian data N(mu, s^2): the sigma-space denoiser is D(x; sigma) = mu + g (x - mu) with
  // g = s^2/(s^2 + sigma^2), so the model's eps = (x - D)/sigma. One step (calls 0 and 1) from a fixed x is then
  // affine in the two calls' normals, x' = A + B z1 + C z2, with (k-diffusion's sample_dpmpp_sde, r = 1/2,
  // eta = 1, written out here) sigma_up = min(to, sqrt(to^2 (from^2 - to^2) / from^2)), sigma_down =
  // sqrt(to^2 - sigma_up^2) for each stage, u = (d1/sigma) x + (1 - d1/sigma) D(x; sigma) + u1 z1 and
  // x' = (d2/sigma) x + (1 - d2/sigma) D(u; sigma_m) + u2 (rho z1 + sqrt(1 - rho^2) z2), where the second
  // stage's noise is the Brownian tree's increment over [sigma', sigma], correlated with the first's over
  // [sigma_m, sigma] by rho = sqrt((sigma - sigma_m)/(sigma - sigma')).
  const double mu = 0.3, sd = 2.0, x_start = 1.7;
  auto eps = [&](double x, double sg) { return (x - (mu + sd * sd / (sd * sd + sg * sg) * (x - mu))) / sg; };
  auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::dpm_solver_sde);
  CHECK(cfg.beta_start == 0.00085);  // DPMSolverSDEScheduler's defaults
  CHECK(cfg.beta_end == 0.012);
  diffusion::scheduler s(cfg);
  s.set_timesteps(5);
  REQUIRE(s.timesteps().size() == 9);
  const double sg = s.sigmas()[0], sm = s.sigmas()[1], sn = s.sigmas()[2];
  CHECK(sm == Approx(std::sqrt(sg * sn)).epsilon(1e-15));
  const auto split = [](double from, double to) {
    const double up = std::min(to, std::sqrt(to * to * (from * from - to * to) / (from * from)));
    return std::pair{up, std::sqrt(to * to - up * up)};
  };
  const auto [u1, d1] = split(sg, sm);
  const auto [u2, d2] = split(sg, sn);
  const double gm = sd * sd / (sd * sd + sm * sm), D0 = mu + sd * sd / (sd * sd + sg * sg) * (x_start - mu);
  const double u0 = d1 / sg * x_start + (1.0 - d1 / sg) * D0;
  const double rho = std::sqrt((sg - sm) / (sg - sn));
  const double A = d2 / sg * x_start + (1.0 - d2 / sg) * (mu + gm * (u0 - mu));
  const double B = (1.0 - d2 / sg) * gm * u1 + u2 * rho, C = u2 * std::sqrt(1.0 - rho * rho);
  const double var = B * B + C * C;
  // The step a runtime takes: scale, model (eps of the unscaled state at the call's sigma), step.
  const auto run_step = [&](diffusion::scheduler& sc, std::vector<double>& x, std::size_t rows, const auto& noise_of) {
    std::vector<double> in(x.size()), out(x.size());
    for (std::size_t i = 0; i < 2; ++i) {
      sc.scale_model_input<double>(x, i, in);
      for (std::size_t r = 0; r < rows; ++r) out[r] = eps(x[r], sc.sigmas()[i]);
      noise_of(sc, i, out, x, rows);
    }
  };
  SECTION("s_noise = 0: the deterministic part A, without noise") {
    auto c0 = cfg;
    c0.s_noise = 0.0;
    diffusion::scheduler d(c0);
    d.set_timesteps(5);
    std::vector<double> x{x_start};
    run_step(d, x, 1, [](diffusion::scheduler& sc, std::size_t i, std::span<const double> out, std::span<double> xs, std::size_t) {
      sc.step<double>(i, out, xs);
    });
    // A few roundings of O(1) values.
    CHECK(x[0] == Approx(A).epsilon(1e-13));
  }
  SECTION("mean and variance of x' over 200000 rows within 5 standard errors") {
    // Seed 2024 (fixed). The sample mean's standard error is sqrt(var / R), the sample variance's
    // var sqrt(2 / (R - 1)) (Gaussian). Each two-sided 5-SE check fails by chance with probability 5.7e-7:
    // 1.2e-6 for the two.
    const std::size_t R = 200000;
    const diffusion::philox_normal noise(2024);
    std::vector<double> x(R, x_start);
    run_step(s, x, R, [&](diffusion::scheduler& sc, std::size_t i, std::span<const double> out, std::span<double> xs, std::size_t rows) {
      sc.step<double>(i, out, xs, diffusion::step_stream(noise, i), rows);
    });
    double m = 0.0;
    for (double v : x) m += v;
    m /= static_cast<double>(R);
    double q = 0.0;
    for (double v : x) q += (v - m) * (v - m);
    q /= static_cast<double>(R - 1);
    const double se_mean = std::sqrt(var / static_cast<double>(R)), se_var = var * std::sqrt(2.0 / static_cast<double>(R - 1));
    INFO("mean " << m << " vs " << A << ", variance " << q << " vs " << var);
    CHECK(std::abs(m - A) <= 5.0 * se_mean);
    CHECK(std::abs(q - var) <= 5.0 * se_var);
    // Power: with independent stage noises (rho = 0) the variance would be 18.6 standard errors away.
    const double var_independent = std::pow((1.0 - d2 / sg) * gm * u1, 2.0) + u2 * u2;
    CHECK(std::abs(var_independent - var) > 10.0 * se_var);
  }
  SECTION("errors") {
    std::vector<double> x{x_start}, out{0.1};
    CHECK_THROWS_WITH(s.step<double>(0, out, x), Contains("DPMSolverSDEScheduler adds noise") && Contains("no noise was passed"));
    auto bad = cfg;
    bad.prediction_type = prediction::sample;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("prediction_type = sample") && Contains("supported: epsilon, v_prediction"));
    bad = cfg;
    bad.s_noise = -1.0;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("s_noise = -1") && Contains("[0, inf)"));
    bad = cfg;
    bad.final_sigmas_type = diffusion::final_sigma::sigma_min;
    CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("final_sigmas_type = sigma_min is not supported by DPMSolverSDEScheduler"));
  }
}

TEST_CASE("scheduler misuse gets clear errors", "[scheduler][errors]") {
  using Catch::Matchers::Contains;
  auto cfg = diffusion::scheduler_config::defaults_for(scheduler_kind::euler_ancestral);
  diffusion::scheduler s(cfg);
  std::vector<float> x(4), out(4);
  CHECK_THROWS_WITH(s.init_noise_sigma(), Contains("call set_timesteps first"));
  CHECK_THROWS_WITH(s.set_timesteps(0), Contains("num_inference_steps = 0"));
  CHECK_THROWS_WITH(s.set_timesteps(1001), Contains("num_inference_steps = 1001"));
  s.set_timesteps(10);
  CHECK_THROWS_WITH(s.step<float>(1, out, x), Contains("i = 1, but the next call is 0"));
  CHECK_THROWS_WITH(s.step<float>(0, out, x), Contains("no noise was passed"));
  out[2] = std::numeric_limits<float>::quiet_NaN();
  const diffusion::philox_normal noise(1);
  CHECK_THROWS_WITH(s.step<float>(0, out, x, diffusion::step_stream(noise, 0)), Contains("wrote nan"));
  auto bad = diffusion::scheduler_config::defaults_for(scheduler_kind::dpm_solver_multistep);
  bad.solver_order = 4;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("solver_order = 4") && Contains("supported: 1, 2, 3"));
  bad.solver_order = 3;
  bad.algorithm_type = diffusion::dpm_algorithm::sde_dpmsolver_pp;
  CHECK_NOTHROW(diffusion::scheduler(bad));  // the 3M SDE (solver_order 3 with sde-dpmsolver++) is supported
  bad.algorithm_type = diffusion::dpm_algorithm::dpmsolver_pp;
  bad = diffusion::scheduler_config::defaults_for(scheduler_kind::ddim);
  bad.prediction_type = prediction::score;
  CHECK_THROWS_WITH(diffusion::scheduler(bad), Contains("prediction_type = score"));
}
