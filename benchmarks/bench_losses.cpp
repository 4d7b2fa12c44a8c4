// Loss reductions over 1M floats: the library's compensated, per-element-in-double losses
// beside a plain float loop (the naive baseline) and an Eigen expression, same data, same run.
//   bench_losses --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <diffusion/losses.hpp>

#include <Eigen/Core>

#include <cmath>
#include <vector>

namespace {

struct data {
  std::vector<float> x0, eps, xt, out;
  explicit data(std::size_t n) : x0(n), eps(n), xt(n), out(n) {
    for (std::size_t k = 0; k < n; ++k) {
      x0[k] = std::sin(0.001f * static_cast<float>(k));
      eps[k] = std::cos(0.0007f * static_cast<float>(k));
      xt[k] = 0.5f * x0[k] + 0.8f * eps[k];
      out[k] = eps[k] + 0.01f * std::sin(static_cast<float>(k));
    }
  }
};

const diffusion::noise_schedule& sched() {
  static const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  return s;
}

void counters(benchmark::State& state, std::size_t inputs) {
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(inputs * sizeof(float)));
}

void BM_simple_loss(benchmark::State& state) {
  data d(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(diffusion::simple_loss(sched(), 500, d.x0, d.eps, d.out, diffusion::prediction::epsilon));
  counters(state, 2);
}
void BM_simple_loss_scalar_float(benchmark::State& state) {
  data d(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    float acc = 0.0f;
    for (std::size_t k = 0; k < d.eps.size(); ++k) {
      const float e = d.out[k] - d.eps[k];
      acc += e * e;
    }
    benchmark::DoNotOptimize(acc / static_cast<float>(d.eps.size()));
  }
  counters(state, 2);
}
void BM_simple_loss_eigen(benchmark::State& state) {
  data d(static_cast<std::size_t>(state.range(0)));
  const auto n = static_cast<Eigen::Index>(d.eps.size());
  for (auto _ : state) {
    const float v = (Eigen::Map<const Eigen::ArrayXf>(d.out.data(), n) - Eigen::Map<const Eigen::ArrayXf>(d.eps.data(), n)).square().mean();
    benchmark::DoNotOptimize(v);
  }
  counters(state, 2);
}
void BM_vlb_term_fixed_small(benchmark::State& state) {
  data d(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(diffusion::vlb_term(sched(), 500, d.x0, d.xt, d.out, diffusion::prediction::epsilon));
  counters(state, 3);
}
// The same KL written as a plain float loop (iDDPM's normal_kl per element, float accumulation).
void BM_vlb_term_scalar_float(benchmark::State& state) {
  data d(static_cast<std::size_t>(state.range(0)));
  const auto& st = sched()[500];
  const auto k = diffusion::conversion_coefficients(sched(), 500, diffusion::prediction::epsilon, diffusion::prediction::sample);
  const float a = static_cast<float>(k.a), b = static_cast<float>(k.b), c0 = static_cast<float>(st.posterior_mean_coef_x0),
              ct = static_cast<float>(st.posterior_mean_coef_xt), lv = static_cast<float>(st.posterior_log_variance_clipped);
  for (auto _ : state) {
    float acc = 0.0f;
    for (std::size_t i = 0; i < d.x0.size(); ++i) {
      const float x0h = a * d.xt[i] + b * d.out[i];
      const float dm = (c0 * d.x0[i] + ct * d.xt[i]) - (c0 * x0h + ct * d.xt[i]);  // mu~ - mu_theta
      acc += 0.5f * (-1.0f + lv - lv + std::exp(lv - lv) + dm * dm * std::exp(-lv));  // normal_kl, as iDDPM writes it
    }
    benchmark::DoNotOptimize(acc / static_cast<float>(d.x0.size()));
  }
  counters(state, 3);
}
void BM_vlb_term_decoder(benchmark::State& state) {
  data d(static_cast<std::size_t>(state.range(0)));
  for (auto& v : d.x0) v = -1.0f + std::round((v + 1.0f) * 127.5f) / 127.5f;  // the 8-bit grid on [-1, 1]
  for (auto _ : state) benchmark::DoNotOptimize(diffusion::vlb_term(sched(), 0, d.x0, d.xt, d.out, diffusion::prediction::epsilon));
  counters(state, 3);
}

BENCHMARK(BM_simple_loss)->Arg(1000)->Arg(1 << 20);
BENCHMARK(BM_simple_loss_scalar_float)->Arg(1000)->Arg(1 << 20);
BENCHMARK(BM_simple_loss_eigen)->Arg(1000)->Arg(1 << 20);
BENCHMARK(BM_vlb_term_fixed_small)->Arg(1000)->Arg(1 << 20);
BENCHMARK(BM_vlb_term_scalar_float)->Arg(1000)->Arg(1 << 20);
BENCHMARK(BM_vlb_term_decoder)->Arg(1000)->Arg(1 << 20);

}  // namespace

BENCHMARK_MAIN();
