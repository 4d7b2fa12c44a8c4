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
#include <benchmark/benchmark.h>

#include "size_cap.hpp"

#include <torch/torch.h>

#include <diffusion/betas.hpp>
#include <diffusion/sampler_karras.hpp>

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
  torch::Tensor x, e;
  explicit tensors(std::int64_t n) {
    torch::manual_seed(1);
    x = torch::randn({n});
    e = torch::randn({n});
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

void add(const std::string& step, std::size_t bytes, bool noisy, step_fn f) {
  for (const int threads : {1, 2}) {
    const std::string name = step + (threads == 1 ? "/torch" : "/torch_2t");
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [threads, bytes, noisy, f](benchmark::State& s) {
      run(s, threads, bytes, noisy, f);
    });
    b->UseRealTime();
    for (std::size_t n = std::size_t{1} << 14; n <= (std::size_t{1} << 26) && n <= max_elements; n <<= 4)
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
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
