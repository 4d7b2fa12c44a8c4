// What the schedule layer costs: building a schedule (double-double tables) for each β
// family at T = 1000 and 4000, beside a naive float32 running product (what diffusers does
// with torch.cumprod, plus the derived arrays DDPM's diffusion_utils keeps); looking up a
// step's coefficients, beside reading them from those float arrays; and q_sample beside a
// plain loop and an Eigen expression on the same data.
//
// Report ratios from one run, for example:
//   bench_schedule --benchmark_filter='build|naive' --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <diffusion/ddpm.hpp>

#include <Eigen/Core>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------
// Building: betas of a family, then the tables (what a user pays once per schedule).

struct family {
  const char* name;
  std::function<std::vector<double>(std::size_t)> betas;
};

const std::vector<family>& families() {
  static const std::vector<family> all{
      {"linear", [](std::size_t T) { return diffusion::linear_betas(T); }},
      {"iddpm_linear", [](std::size_t T) { return diffusion::iddpm_linear_betas(T); }},
      {"scaled_linear", [](std::size_t T) { return diffusion::scaled_linear_betas(T); }},
      {"cosine", [](std::size_t T) { return diffusion::cosine_betas(T); }},
      {"sigmoid", [](std::size_t T) { return diffusion::sigmoid_betas(T); }},
      {"warmup10", [](std::size_t T) { return diffusion::warmup_betas(T, 1e-4, 0.02, 0.1); }},
      {"constant", [](std::size_t T) { return diffusion::constant_betas(T, 0.01); }},
      {"jsd", [](std::size_t T) { return diffusion::jsd_betas(T); }},
      {"scaled_linear_zero_snr",
       [](std::size_t T) { return diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(T)); }},
  };
  return all;
}

// build/<family>/T: betas + noise_schedule, the whole cost.
void build_family(benchmark::State& state, const family& f) {
  const auto T = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    diffusion::noise_schedule s(f.betas(T));
    benchmark::DoNotOptimize(s.steps().data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// from_betas/<family>/T: the tables alone, betas given (compare with naive_float32).
void build_from_betas(benchmark::State& state, const family& f) {
  const auto T = static_cast<std::size_t>(state.range(0));
  const auto betas = f.betas(T);
  for (auto _ : state) {
    diffusion::noise_schedule s(betas);
    benchmark::DoNotOptimize(s.steps().data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// Baseline: float32 betas, running product ᾱ and the arrays DDPM's diffusion_utils keeps
// (√ᾱ, √(1−ᾱ), 1/√ᾱ, √(1/ᾱ − 1), β̃, log β̃ clipped, the two posterior mean coefficients).
struct naive_tables {
  std::vector<float> betas, ab, ab_prev, s1, s2, rs, rsm1, var, logvar, c1, c2;
  explicit naive_tables(const std::vector<double>& b)
      : betas(b.begin(), b.end()), ab(b.size()), ab_prev(b.size()), s1(b.size()), s2(b.size()), rs(b.size()),
        rsm1(b.size()), var(b.size()), logvar(b.size()), c1(b.size()), c2(b.size()) {}
  void build() {
    const std::size_t T = betas.size();
    float acc = 1.0f;
    for (std::size_t i = 0; i < T; ++i) {
      ab_prev[i] = acc;
      acc *= 1.0f - betas[i];
      ab[i] = acc;
    }
    for (std::size_t i = 0; i < T; ++i) {
      s1[i] = std::sqrt(ab[i]);
      s2[i] = std::sqrt(1.0f - ab[i]);
      rs[i] = std::sqrt(1.0f / ab[i]);
      rsm1[i] = std::sqrt(1.0f / ab[i] - 1.0f);
      var[i] = betas[i] * (1.0f - ab_prev[i]) / (1.0f - ab[i]);
      logvar[i] = std::log(std::max(i == 0 ? var[1 < T ? 1 : 0] : var[i], 1e-20f));
      c1[i] = betas[i] * std::sqrt(ab_prev[i]) / (1.0f - ab[i]);
      c2[i] = (1.0f - ab_prev[i]) * std::sqrt(1.0f - betas[i]) / (1.0f - ab[i]);
    }
  }
};

void build_naive_float32(benchmark::State& state, const family& f) {
  const auto T = static_cast<std::size_t>(state.range(0));
  naive_tables t(f.betas(T));
  for (auto _ : state) {
    t.build();
    benchmark::DoNotOptimize(t.ab.data());
    benchmark::DoNotOptimize(t.c2.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// ---------------------------------------------------------------------------------------
// Lookup: what a sampler reads per step. Items are lookups.

const diffusion::noise_schedule& sched() {
  static const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  return s;
}

// lookup/step: the precomputed row of step t.
void BM_lookup_step(benchmark::State& state) {
  const auto& s = sched();
  std::size_t t = 0;
  for (auto _ : state) {
    const auto& st = s[t];
    benchmark::DoNotOptimize(st.sqrt_alpha_bar + st.posterior_mean_coef_x0);
    t = (t + 7) % 1000;
  }
  state.SetItemsProcessed(state.iterations());
}

// lookup/ddpm_coefficients: everything ddpm_step derives per call (x̂₀ conversion, posterior
// mean coefficients, the standard deviation).
void BM_lookup_ddpm_coefficients(benchmark::State& state) {
  const auto& s = sched();
  std::size_t t = 1;
  for (auto _ : state) {
    const auto k = diffusion::conversion_coefficients(s, t, diffusion::prediction::epsilon, diffusion::prediction::sample);
    const auto& st = s[t];
    const double sd = std::exp(0.5 * st.posterior_log_variance_clipped);
    benchmark::DoNotOptimize(k.a + k.b + st.posterior_mean_coef_x0 + st.posterior_mean_coef_xt + sd);
    t = 1 + (t + 7) % 999;
  }
  state.SetItemsProcessed(state.iterations());
}

// lookup/ddim_skip_posterior: DDIM's σ for a jump t → t − 20 (double-double ratio of ᾱ).
void BM_lookup_ddim_skip_posterior(benchmark::State& state) {
  const auto& s = sched();
  std::size_t t = 20;
  for (auto _ : state) {
    const auto p = diffusion::skip_posterior(s, t, t - 20);
    benchmark::DoNotOptimize(p.variance + p.coef_x0);
    t = 20 + (t + 7) % 980;
  }
  state.SetItemsProcessed(state.iterations());
}

// lookup/naive_float32: the same DDPM coefficients read from float arrays as diffusers does.
void BM_lookup_naive_float32(benchmark::State& state) {
  naive_tables n(diffusion::linear_betas(1000));
  n.build();
  std::size_t t = 1;
  for (auto _ : state) {
    const float sd = std::exp(0.5f * n.logvar[t]);
    benchmark::DoNotOptimize(n.rs[t] + n.rsm1[t] + n.c1[t] + n.c2[t] + sd);
    t = 1 + (t + 7) % 999;
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_lookup_step)->Name("lookup/step");
BENCHMARK(BM_lookup_ddpm_coefficients)->Name("lookup/ddpm_coefficients");
BENCHMARK(BM_lookup_ddim_skip_posterior)->Name("lookup/ddim_skip_posterior");
BENCHMARK(BM_lookup_naive_float32)->Name("lookup/naive_float32");

// ---------------------------------------------------------------------------------------
// q_sample on small buffers (bench_kernels has the sizes up to 64 M and the thread policy).

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

void register_families() {
  for (const family& f : families()) {
    const std::string name = f.name;
    benchmark::RegisterBenchmark(("build/" + name).c_str(), build_family, f)->Arg(1000)->Arg(4000);
    benchmark::RegisterBenchmark(("from_betas/" + name).c_str(), build_from_betas, f)->Arg(1000)->Arg(4000);
    benchmark::RegisterBenchmark(("naive_float32/" + name).c_str(), build_naive_float32, f)->Arg(1000)->Arg(4000);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_families();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
