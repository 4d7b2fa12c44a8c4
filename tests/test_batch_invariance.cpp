// Batch invariance (issue 12): every sampling loop that takes a noise source gives row b of a batch
// bit-identical to the same loop run on that row alone (batch 1, first_sample = b), and the same bits
// with 1 and 2 threads (sampler_hooks::execution). Rows are 41 elements long: not a multiple of any
// SIMD width, so both the bulk and the scalar tail of the fused kernels run, and with a small
// min_elements_per_thread the two threads split the batch inside a row. The stochastic step functions
// with in-kernel Philox noise (kernels::philox_stream) are checked the same way, row by row. A
// contiguous block of rows run as its own batch with first_sample = its first row (one process's
// shard in examples/sample_sharded.cpp) is checked against the same rows of the batch.
//
// The comparison is of bit patterns (std::bit_cast), so it needs no tolerance: the library documents
// that a row depends only on its own stream (first_sample + b) and that any thread count gives
// bit-identical results (samplers/common.hpp, sampler_hooks::execution).
#include <catch2/catch.hpp>

#include <diffusion/ddpm.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace {

constexpr std::size_t n_elems = 41;  // per row: 5·8 + 1, 10·4 + 1, 20·2 + 1
constexpr std::size_t batch = 7;

template <class T>
using uint_of = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

// Index of the first element whose bits differ, or a.size() when all agree (sizes must match).
template <class T>
std::size_t first_difference(std::span<const T> a, std::span<const T> b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<uint_of<T>>(a[i]) != std::bit_cast<uint_of<T>>(b[i])) return i;
  return a.size();
}

// Data N(μ_k, s_k²) in n_elems dimensions with μ, s varying along the row (so a wrong element offset
// shows up), as the exact denoiser.
diffusion::gaussian_data make_data(diffusion::prediction kind = diffusion::prediction::epsilon) {
  std::vector<double> mean(n_elems), sd(n_elems);
  for (std::size_t k = 0; k < n_elems; ++k) {
    mean[k] = 0.3 * std::sin(0.7 * static_cast<double>(k));
    sd[k] = 0.4 + 0.25 * std::cos(1.3 * static_cast<double>(k));
  }
  return diffusion::gaussian_data(mean, sd, kind);
}

// A rectified-flow model of the same data, as a flow velocity: per element x = (1 − σ)x₀ + σε with
// x₀ ~ N(μ, s²), u = ε − x₀, E[u | x] = −μ + (σ − (1 − σ)s²)/Var(x)·(x − (1 − σ)μ).
struct flow_velocity_data {
  static constexpr bool conditions_on_sigma = true;
  std::vector<double> mean, sd;
  [[nodiscard]] diffusion::prediction predicts() const noexcept { return diffusion::prediction::flow_velocity; }
  template <diffusion::real_scalar T, class Context>
  void operator()(const diffusion::denoiser_input<T, Context>& in, std::span<T> out) const {
    const std::size_t n = in.row_size();
    for (std::size_t r = 0; r < in.rows(); ++r) {
      const double rho = in.sigma[r];
      const double sig = std::isinf(rho) ? 1.0 : rho / (1.0 + rho);
      for (std::size_t k = 0; k < n; ++k) {
        const double s2 = sd[k] * sd[k], var = (1.0 - sig) * (1.0 - sig) * s2 + sig * sig;
        const double x = static_cast<double>(in.x[r * n + k]);
        out[r * n + k] = static_cast<T>(-mean[k] + (sig - (1.0 - sig) * s2) / var * (x - (1.0 - sig) * mean[k]));
      }
    }
  }
};

// A run of one loop: (x, rows, first_sample, hooks).
template <class T>
using loop_run = std::function<void(std::span<T>, std::size_t, std::uint64_t, const diffusion::sampler_hooks<T>&)>;

template <class T>
diffusion::sampler_hooks<T> threads_hooks(unsigned threads) {
  diffusion::sampler_hooks<T> h{};
  h.execution = diffusion::parallel_policy{threads, 16};  // 16 elements: the threads split rows
  return h;
}

// The batch of 7 (first_sample 0, one thread) against: rows 0, 3, 6 alone (first_sample = b), the
// contiguous block of rows 2 … 4 as a batch of 3 (first_sample = 2: one rank's shard of a data set,
// examples/sample_sharded.cpp), the batch with 2 threads, and a single row with 2 threads.
template <class T>
void check_loop(const std::string& name, const loop_run<T>& run) {
  INFO("sampler: " << name);
  std::vector<T> all(batch * n_elems);
  run(all, batch, 0, threads_hooks<T>(1));
  CHECK(std::all_of(all.begin(), all.end(), [](T v) { return std::isfinite(v); }));
  for (std::uint64_t b : {0u, 3u, 6u}) {
    std::vector<T> one(n_elems);
    run(one, 1, b, threads_hooks<T>(1));
    const auto row = std::span<const T>(all).subspan(b * n_elems, n_elems);
    const std::size_t k = first_difference<T>(one, row);
    INFO("row " << b << " alone vs in the batch: first difference at element " << k);
    CHECK(k == n_elems);
    std::vector<T> one2(n_elems);
    run(one2, 1, b, threads_hooks<T>(2));
    const std::size_t k2 = first_difference<T>(one2, one);
    INFO("row " << b << " alone, 2 threads vs 1: first difference at element " << k2);
    CHECK(k2 == n_elems);
  }
  constexpr std::size_t block_begin = 2, block_rows = 3;
  std::vector<T> block(block_rows * n_elems);
  run(block, block_rows, block_begin, threads_hooks<T>(1));
  const std::size_t kb =
      first_difference<T>(block, std::span<const T>(all).subspan(block_begin * n_elems, block_rows * n_elems));
  INFO("rows 2..4 as a batch of 3 (first_sample 2) vs in the batch: first difference at element " << kb);
  CHECK(kb == block_rows * n_elems);
  std::vector<T> all2(batch * n_elems);
  run(all2, batch, 0, threads_hooks<T>(2));
  const std::size_t k = first_difference<T>(all2, all);
  INFO("batch, 2 threads vs 1: first difference at element " << k);
  CHECK(k == batch * n_elems);
}

}  // namespace

TEMPLATE_TEST_CASE("Every sampling loop is batch-invariant and thread-count invariant, bit for bit",
                   "[batch_invariance][samplers]", float, double) {
  using T = TestType;
  using H = diffusion::sampler_hooks<T>;
  using diffusion::dpm_solver_type;
  const std::uint64_t seed = 20240512;
  INFO("philox seed " << seed);
  const diffusion::philox_normal noise(seed);
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const auto seq = diffusion::inference_timesteps(1000, 12, diffusion::timestep_spacing::trailing);
  auto g = make_data();
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const auto karras = diffusion::karras_sigmas(10, 0.03, 15.0);
  const auto geo = diffusion::geometric_sigmas(5, 0.03, 3.0);

  // Ancestral (DDPM / DDIM) on the discrete schedule, ε-prediction.
  check_loop<T>("ddpm", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::ddpm_sample(s, g, x, rows, noise, {.timesteps = seq, .first_sample = fs}, h);
  });
  check_loop<T>("ddpm (fixed_large, dynamic thresholding)", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::ddpm_sample(s, g, x, rows, noise,
                           {.variance = diffusion::variance_type::fixed_large,
                            .x0 = {.threshold = true},
                            .timesteps = seq,
                            .first_sample = fs},
                           h);
  });
  check_loop<T>("ddim eta = 0.6", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::ddim_sample(s, g, x, rows, noise, seq, {.eta = 0.6, .first_sample = fs}, h);
  });
  check_loop<T>("ddim eta = 0", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::ddim_sample(s, g, x, rows, noise, seq, {.eta = 0.0, .first_sample = fs}, h);
  });

  // σ-space stochastic loops.
  check_loop<T>("euler_ancestral", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::euler_ancestral_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("euler (s_churn = 2)", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::euler_sample(D, x, rows, noise, karras, {.s_churn = 2.0, .first_sample = fs}, h);
  });
  check_loop<T>("heun (s_churn = 2)", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::heun_sample(D, x, rows, noise, karras, {.s_churn = 2.0, .first_sample = fs}, h);
  });
  for (auto solver : {dpm_solver_type::midpoint, dpm_solver_type::heun}) {
    const std::string tag = solver == dpm_solver_type::midpoint ? "midpoint" : "heun";
    check_loop<T>("dpmpp_2m_sde " + tag, [&, solver](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
      diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, karras, {.eta = 0.8, .solver_type = solver, .first_sample = fs}, h);
    });
  }
  check_loop<T>("dpmpp_3m_sde", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  // The SDE loops with Brownian-tree noise (row b: tree sample first_sample + b).
  const diffusion::brownian_tree tree(seed, karras[karras.size() - 2], karras[0]);
  check_loop<T>("dpmpp_2m_sde, Brownian tree", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, tree, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("dpmpp_3m_sde, Brownian tree", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, tree, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("dpmpp_sde, Brownian tree", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_sde_sample(D, x, rows, noise, tree, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("dpm2_ancestral", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpm2_ancestral_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("dpmpp_2s_ancestral", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_2s_ancestral_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("dpmpp_sde", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_sde_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("annealed_langevin", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::annealed_langevin_sample(D, x, rows, noise, geo,
                                        {.epsilon = 1e-3, .n_steps_each = 3, .final_denoise = true, .first_sample = fs}, h);
  });
  check_loop<T>("predictor_corrector (reverse diffusion + Langevin, per-row norms)",
                [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
                  diffusion::predictor_corrector_sample(D, x, rows, noise, geo,
                                                        {.corrector_steps = 2, .final_denoise = true, .first_sample = fs}, h);
                });
  check_loop<T>("predictor_corrector (ancestral, no corrector)",
                [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
                  diffusion::predictor_corrector_sample(D, x, rows, noise, geo,
                                                        {.predictor = diffusion::pc_predictor::ancestral,
                                                         .corrector = diffusion::pc_corrector::none,
                                                         .first_sample = fs},
                                                        h);
                });

  // Rectified-flow ancestral: euler_ancestral_sample on a flow-time model takes rf_ancestral_step.
  flow_velocity_data fm{g.mean(), g.stddev()};
  diffusion::sigma_space_model Df(fm, diffusion::flow_time{1000});
  std::vector<double> flow_sigmas;
  for (std::size_t i = 0; i <= 10; ++i) flow_sigmas.push_back(0.98 * (1.0 - static_cast<double>(i) / 10.0));
  check_loop<T>("euler_ancestral on a flow (rf_ancestral_step)", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::euler_ancestral_sample(Df, x, rows, noise, flow_sigmas, {.first_sample = fs}, h);
  });

  // Deterministic loops (their only noise is the initial x = σ₀z of row first_sample + b).
  check_loop<T>("euler", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::euler_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  check_loop<T>("heun", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::heun_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  for (auto solver : {dpm_solver_type::midpoint, dpm_solver_type::heun}) {
    const std::string tag = solver == dpm_solver_type::midpoint ? "midpoint" : "heun";
    check_loop<T>("dpmpp_2m " + tag, [&, solver](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
      diffusion::dpmpp_2m_sample(D, x, rows, noise, karras, {.solver_type = solver, .first_sample = fs}, h);
    });
  }
  check_loop<T>("dpmpp_3m_sde eta = 0 (DPM-Solver++(3M))", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, karras, {.eta = 0.0, .first_sample = fs}, h);
  });
  check_loop<T>("lms", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::lms_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  for (auto variant : {diffusion::unipc_variant::bh1, diffusion::unipc_variant::bh2}) {
    const std::string tag = variant == diffusion::unipc_variant::bh1 ? "bh1" : "bh2";
    check_loop<T>("unipc order 3 " + tag, [&, variant](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
      diffusion::unipc_sample(D, x, rows, noise, karras, {.solver = {.order = 3, .variant = variant}, .first_sample = fs}, h);
    });
  }
  check_loop<T>("deis order 3", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::deis_sample(D, x, rows, noise, karras, {.order = 3, .first_sample = fs}, h);
  });
  check_loop<T>("plms", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::plms_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  for (bool variable : {false, true}) {
    check_loop<T>(variable ? "ipndm_v" : "ipndm", [&, variable](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
      diffusion::ipndm_sample(D, x, rows, noise, karras, {.solver = {.variable_step = variable}, .first_sample = fs}, h);
    });
  }
  check_loop<T>("dpm2", [&](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
    diffusion::dpm2_sample(D, x, rows, noise, karras, {.first_sample = fs}, h);
  });
  for (auto m : {diffusion::karras_method::euler, diffusion::karras_method::euler_ancestral, diffusion::karras_method::heun,
                 diffusion::karras_method::dpmpp_2m}) {
    check_loop<T>("karras_sample method " + std::to_string(static_cast<int>(m)),
                  [&, m](std::span<T> x, std::size_t rows, std::uint64_t fs, const H& h) {
                    diffusion::karras_sample(m, D, x, rows, noise, karras, {.s_churn = 1.0, .first_sample = fs}, h);
                  });
  }
}

namespace {

// A step function run on `rows` rows of x (in place) with the model output d, the Philox stream of
// row 0 = first_sample, and the policy.
template <class T>
using step_run = std::function<void(std::span<T> x, std::span<const T> d, std::size_t rows, std::uint64_t first_sample,
                                    const diffusion::parallel_policy& policy)>;

// Row b of the inputs depends on b only (so a row alone is the same row of the batch).
template <class T>
T input_value(std::size_t b, std::size_t k, double phase) {
  return static_cast<T>(0.8 * std::sin(0.37 * static_cast<double>(k) + 1.1 * static_cast<double>(b) + phase));
}

template <class T>
void check_step(const std::string& name, const step_run<T>& step) {
  INFO("step: " << name);
  auto inputs = [](std::size_t first_row, std::size_t rows) {
    std::pair<std::vector<T>, std::vector<T>> xd;
    for (std::size_t b = first_row; b < first_row + rows; ++b)
      for (std::size_t k = 0; k < n_elems; ++k) {
        xd.first.push_back(input_value<T>(b, k, 0.0));
        xd.second.push_back(input_value<T>(b, k, 0.5));
      }
    return xd;
  };
  auto [x_all, d_all] = inputs(0, batch);
  step(x_all, d_all, batch, 0, diffusion::parallel_policy{1, 16});
  for (std::size_t b : {0u, 3u, 6u}) {
    for (unsigned threads : {1u, 2u}) {
      auto [x, d] = inputs(b, 1);
      step(x, d, 1, b, diffusion::parallel_policy{threads, 16});
      const std::size_t k = first_difference<T>(x, std::span<const T>(x_all).subspan(b * n_elems, n_elems));
      INFO("row " << b << " alone with " << threads << " thread(s) vs in the batch: first difference at element " << k);
      CHECK(k == n_elems);
    }
  }
  auto [x2, d2] = inputs(0, batch);
  step(x2, d2, batch, 0, diffusion::parallel_policy{2, 16});
  const std::size_t k = first_difference<T>(x2, x_all);
  INFO("batch, 2 threads vs 1: first difference at element " << k);
  CHECK(k == batch * n_elems);
}

}  // namespace

TEMPLATE_TEST_CASE("Stochastic step functions with in-kernel Philox noise are batch- and thread-count invariant",
                   "[batch_invariance][steps]", float, double) {
  using T = TestType;
  using P = diffusion::parallel_policy;
  using diffusion::noise_level;
  using diffusion::sigma_step;
  const diffusion::philox_normal noise(77);
  const std::uint64_t k = 5;  // the stream step
  auto z = [&](std::uint64_t fs) { return diffusion::kernels::philox_stream{&noise, fs, k, 0, n_elems}; };
  using CX = std::span<const T>;

  check_step<T>("euler_ancestral_step", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::euler_ancestral_step<T>(sigma_step{2.0, 0.7}, d, x, z(fs), {}, p);
  });
  check_step<T>("rf_ancestral_step", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::rf_ancestral_step<T>(sigma_step{0.8, 0.5}, d, x, z(fs), {}, p);
  });
  check_step<T>("flow_stochastic_step", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::flow_stochastic_step<T>(sigma_step{0.8, 0.5}, d, x, z(fs), p);
  });
  check_step<T>("churn_step", [&](std::span<T> x, CX, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::churn_step<T>(1.0, 1.3, 1.0, x, z(fs), p);
  });
  check_step<T>("renoise_step", [&](std::span<T> x, CX, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::renoise_step<T>({noise_level::general(0.9, 0.3), noise_level::general(0.7, 0.6)}, 1.0, x, z(fs), p);
  });
  check_step<T>("lcm_step", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::lcm_step<T>(diffusion::lcm_boundary(499.0), noise_level::general(0.8, 0.6), d, x, z(fs), {}, p);
  });
  check_step<T>("tcd_step", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    diffusion::tcd_step<T>({noise_level::general(0.5, std::sqrt(0.75)), noise_level::general(0.8, 0.6)},
                           noise_level::general(0.95, std::sqrt(1.0 - 0.95 * 0.95)), d, x, z(fs), {}, p);
  });
  check_step<T>("cfgpp_euler_ancestral_step", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    std::vector<T> u(d.begin(), d.end());
    for (auto& v : u) v = static_cast<T>(0.9) * v;
    diffusion::cfgpp_euler_ancestral_step<T>(sigma_step{2.0, 0.7}, d, u, x, z(fs), {}, p);
  });
  check_step<T>("dpmpp_2m_sde_step (second order, heun)", [&](std::span<T> x, CX d, std::size_t, std::uint64_t fs, const P& p) {
    std::vector<T> prev(d.begin(), d.end());
    for (auto& v : prev) v = static_cast<T>(1.1) * v + static_cast<T>(0.05);
    diffusion::dpmpp_2m_state<T> st{prev, 0.4, true};
    diffusion::dpmpp_2m_sde_step<T>(sigma_step{2.0, 0.7}, d, x, st, z(fs),
                                    {.eta = 0.8, .solver_type = diffusion::dpm_solver_type::heun}, p);
  });
}

TEST_CASE("The comparison detects a row that depends on its batch (corrector_norms::batch_mean, documented so)",
          "[batch_invariance][samplers]") {
  // A control of the check above: score_sde's parity mode takes one corrector step size from the batch
  // means of the norms, so a row alone is not the row in a batch of 7 (langevin.hpp, corrector_norms).
  const diffusion::philox_normal noise(20240512);
  auto g = make_data();
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const auto geo = diffusion::geometric_sigmas(5, 0.03, 3.0);
  const diffusion::predictor_corrector_options opt{.norms = diffusion::corrector_norms::batch_mean};
  std::vector<double> all(batch * n_elems), one(n_elems);
  diffusion::predictor_corrector_sample(D, all, batch, noise, geo, opt);
  diffusion::predictor_corrector_sample(D, one, 1, noise, geo, opt);
  CHECK(first_difference<double>(one, std::span<const double>(all).first(n_elems)) < n_elems);
}
