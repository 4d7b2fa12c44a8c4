// The library's overhead per sampling step: one DDPM/DDIM step and a full 50-step loop on a
// Stable Diffusion latent (4x64x64 = 16384 floats) with a trivial denoiser (it writes a
// constant), beside the same step written as a plain loop. The noise source of the *_hash
// benchmarks is a cheap counter hash so that the figures measure the sampler, not the generator
// (bench_noise and bench_kernels do that); the *_philox ones use philox_normal, the noise
// generated inside the fused step (no buffer), as a real run does.
//   bench_samplers --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr std::size_t latent = 4 * 64 * 64;

struct hash_noise {  // not Gaussian: a stand-in with the noise-source shape, for overhead only
  template <class T>
  void fill(std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out) const {
    std::uint64_t h = sample * 0x9E3779B97F4A7C15ull ^ step * 0xD1B54A32D192ED03ull ^ offset;
    for (auto& v : out) {
      h = h * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<T>(static_cast<std::int32_t>(h >> 32)) * static_cast<T>(0x1p-31);
    }
  }
};

auto trivial_model() {
  return diffusion::make_denoiser(diffusion::prediction::epsilon, [](const diffusion::denoiser_input<float>&, std::span<float> out) {
    for (auto& o : out) o = 0.1f;
  });
}

const diffusion::noise_schedule& sched() {
  static const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000));
  return s;
}

void BM_ddpm_step(benchmark::State& state) {
  std::vector<float> x(latent, 0.5f), out(latent, 0.1f), z(latent, 0.3f), x0(latent), scratch(latent);
  for (auto _ : state) {
    diffusion::ddpm_step<float>(sched(), 500, diffusion::prediction::epsilon, diffusion::variance_type::fixed_small, {},
                                x, out, z, x0, x, scratch);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(latent));
}
void BM_ddpm_step_philox(benchmark::State& state) {  // the sampler API with in-kernel noise
  std::vector<float> x(latent, 0.5f), out(latent, 0.1f), x0(latent), scratch(latent);
  const diffusion::philox_normal noise(7);
  std::uint64_t step = 0;
  for (auto _ : state) {
    diffusion::ddpm_step<float>(sched(), 500, diffusion::prediction::epsilon, diffusion::variance_type::fixed_small, {},
                                x, out, noise, 0, step++, x0, x, scratch);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(latent));
}
void BM_ddpm_step_plain_loop(benchmark::State& state) {
  std::vector<float> x(latent, 0.5f), out(latent, 0.1f), z(latent, 0.3f);
  const auto& st = sched()[500];
  const auto k = diffusion::conversion_coefficients(sched(), 500, diffusion::prediction::epsilon, diffusion::prediction::sample);
  const float a = static_cast<float>(k.a), b = static_cast<float>(k.b), c0 = static_cast<float>(st.posterior_mean_coef_x0),
              ct = static_cast<float>(st.posterior_mean_coef_xt), sd = static_cast<float>(std::exp(0.5 * st.posterior_log_variance_clipped));
  for (auto _ : state) {
    for (std::size_t i = 0; i < latent; ++i) x[i] = c0 * (a * x[i] + b * out[i]) + ct * x[i] + sd * z[i];
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(latent));
}
void BM_ddim_step(benchmark::State& state) {
  std::vector<float> x(latent, 0.5f), out(latent, 0.1f), z(latent, 0.3f), x0(latent), scratch(latent);
  for (auto _ : state) {
    diffusion::ddim_step<float>(sched(), 500, 480, 0.0, diffusion::prediction::epsilon, {}, false, x, out, z, x0, x, scratch);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(latent));
}
void BM_ddim_loop_50(benchmark::State& state) {
  auto model = trivial_model();
  hash_noise noise;
  const auto seq = diffusion::inference_timesteps(1000, 50, diffusion::timestep_spacing::leading, 1);
  std::vector<float> x(latent);
  diffusion::sampler_workspace<float> ws;
  for (auto _ : state) {
    diffusion::ddim_sample(sched(), model, x, 1, noise, seq, {}, diffusion::sampler_hooks<float>{.workspace = &ws});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * 50 * static_cast<std::int64_t>(latent));
}
void BM_ddpm_loop_50(benchmark::State& state) {
  auto model = trivial_model();
  hash_noise noise;
  const diffusion::ddpm_options opt{.timesteps = diffusion::inference_timesteps(1000, 50, diffusion::timestep_spacing::leading, 1)};
  std::vector<float> x(latent);
  diffusion::sampler_workspace<float> ws;
  for (auto _ : state) {
    diffusion::ddpm_sample(sched(), model, x, 1, noise, opt, diffusion::sampler_hooks<float>{.workspace = &ws});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * 50 * static_cast<std::int64_t>(latent));
}
void BM_ddpm_loop_50_philox(benchmark::State& state) {
  auto model = trivial_model();
  diffusion::philox_normal noise(11);
  const diffusion::ddpm_options opt{.timesteps = diffusion::inference_timesteps(1000, 50, diffusion::timestep_spacing::leading, 1)};
  std::vector<float> x(latent);
  diffusion::sampler_workspace<float> ws;
  for (auto _ : state) {
    diffusion::ddpm_sample(sched(), model, x, 1, noise, opt, diffusion::sampler_hooks<float>{.workspace = &ws});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * 50 * static_cast<std::int64_t>(latent));
}
void BM_euler_loop_50(benchmark::State& state) {
  auto model = trivial_model();
  hash_noise noise;
  diffusion::sigma_space_model D(model, &sched());
  const auto sig = diffusion::karras_sigmas(50, sched()[0].sigma, sched()[999].sigma);
  std::vector<float> x(latent);
  diffusion::sampler_workspace<float> ws;
  for (auto _ : state) {
    diffusion::karras_sample(diffusion::karras_method::euler, D, x, 1, noise, sig, {}, diffusion::sampler_hooks<float>{.workspace = &ws});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * 50 * static_cast<std::int64_t>(latent));
}

BENCHMARK(BM_ddpm_step);
BENCHMARK(BM_ddpm_step_philox);
BENCHMARK(BM_ddpm_step_plain_loop);
BENCHMARK(BM_ddim_step);
BENCHMARK(BM_ddim_loop_50)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ddpm_loop_50)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ddpm_loop_50_philox)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_euler_loop_50)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
