// What the schedule layer costs: building a schedule (double-double tables) beside a naive
// float32 running product (what diffusers does with torch.cumprod), a step lookup, and
// q_sample beside a plain loop and an Eigen expression on the same data.
//
// Report ratios from one run, for example:
//   bench_schedule --benchmark_filter='build' --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <diffusion/ddpm.hpp>

#include <Eigen/Core>

#include <cmath>
#include <vector>

namespace {

void BM_build_linear(benchmark::State& state) {
  const auto T = static_cast<std::size_t>(state.range(0));
  const auto betas = diffusion::linear_betas(T, 1e-4, 0.02);
  for (auto _ : state) {
    diffusion::noise_schedule s(betas);
    benchmark::DoNotOptimize(s.steps().data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_build_linear)->Arg(1000)->Arg(4000);

void BM_build_cosine_with_betas(benchmark::State& state) {
  const auto T = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    diffusion::noise_schedule s(diffusion::cosine_betas(T));
    benchmark::DoNotOptimize(s.steps().data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_build_cosine_with_betas)->Arg(1000)->Arg(4000);

// Baseline: float32 cumulative product and the handful of derived arrays diffusers keeps.
void BM_build_naive_float32(benchmark::State& state) {
  const auto T = static_cast<std::size_t>(state.range(0));
  const auto betas64 = diffusion::linear_betas(T, 1e-4, 0.02);
  std::vector<float> betas(betas64.begin(), betas64.end()), ab(T), s1(T), s2(T);
  for (auto _ : state) {
    float acc = 1.0f;
    for (std::size_t i = 0; i < T; ++i) {
      acc *= 1.0f - betas[i];
      ab[i] = acc;
      s1[i] = std::sqrt(acc);
      s2[i] = std::sqrt(1.0f - acc);
    }
    benchmark::DoNotOptimize(ab.data());
    benchmark::DoNotOptimize(s2.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_build_naive_float32)->Arg(1000)->Arg(4000);

void BM_lookup_step(benchmark::State& state) {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  std::size_t t = 0;
  for (auto _ : state) {
    const auto& st = s[t];
    benchmark::DoNotOptimize(st.sqrt_alpha_bar + st.posterior_mean_coef_x0);
    t = (t + 7) % 1000;
  }
}
BENCHMARK(BM_lookup_step);

template <class F>
void run_elementwise(benchmark::State& state, F&& f) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> x0(n, 0.5f), eps(n, -0.25f), xt(n);
  for (auto _ : state) {
    f(x0, eps, xt);
    benchmark::DoNotOptimize(xt.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(3 * sizeof(float)));
}

const diffusion::noise_schedule& sched() {
  static const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  return s;
}

void BM_q_sample(benchmark::State& state) {
  run_elementwise(state, [](auto& x0, auto& eps, auto& xt) { diffusion::q_sample(sched(), 500, x0, eps, xt); });
}
void BM_q_sample_scalar_loop(benchmark::State& state) {
  run_elementwise(state, [](auto& x0, auto& eps, auto& xt) {
    const auto a = static_cast<float>(sched()[500].sqrt_alpha_bar), b = static_cast<float>(sched()[500].sqrt_one_minus_alpha_bar);
    for (std::size_t k = 0; k < xt.size(); ++k) xt[k] = a * x0[k] + b * eps[k];
  });
}
void BM_q_sample_eigen(benchmark::State& state) {
  run_elementwise(state, [](auto& x0, auto& eps, auto& xt) {
    const auto a = static_cast<float>(sched()[500].sqrt_alpha_bar), b = static_cast<float>(sched()[500].sqrt_one_minus_alpha_bar);
    const auto n = static_cast<Eigen::Index>(xt.size());
    Eigen::Map<Eigen::ArrayXf>(xt.data(), n) =
        a * Eigen::Map<const Eigen::ArrayXf>(x0.data(), n) + b * Eigen::Map<const Eigen::ArrayXf>(eps.data(), n);
  });
}
BENCHMARK(BM_q_sample)->Arg(1000)->Arg(16384)->Arg(262144);
BENCHMARK(BM_q_sample_scalar_loop)->Arg(1000)->Arg(16384)->Arg(262144);
BENCHMARK(BM_q_sample_eigen)->Arg(1000)->Arg(16384)->Arg(262144);

}  // namespace

BENCHMARK_MAIN();
