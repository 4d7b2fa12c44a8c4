// What normal noise costs: philox_normal::fill (counter-based, SIMD) beside two
// sequential baselines on the same buffer: std::mt19937 with a plain scalar Box–Muller
// written here, and std::mt19937 with std::normal_distribution (a comparison only; the
// library never uses it, its output differs between standard libraries). Also the
// Philox4x32-10 block function alone (scalar), to show what the SIMD path saves; and the
// fused kernels' path (detail::philox_row::simd_chunk, one chunk at a time into a buffer).
// The context line noise_simd_path names the generator's SIMD architecture (AVX-512 where the
// build has it, else the kernels' simd::arch; see noise/philox.hpp).
//
// items/s is normals per second; ns per normal = 1e9 / (items/s). Report both builds:
//   cmake -DCMAKE_BUILD_TYPE=Release ...                           (portable -O2/-O3)
//   cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-march=native ...
//   bench_noise --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <diffusion/noise.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace {

template <class T>
void BM_philox_normal_fill(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<T> out(n);
  const diffusion::philox_normal noise(0x5EED5EED5EEDull);
  std::uint64_t step = 0;
  for (auto _ : state) {
    noise.fill(/*sample=*/3, step++, /*offset=*/0, std::span<T>(out));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(sizeof(T)));
}
BENCHMARK_TEMPLATE(BM_philox_normal_fill, float)->Arg(1000)->Arg(16384)->Arg(262144)->Arg(4194304);
BENCHMARK_TEMPLATE(BM_philox_normal_fill, double)->Arg(1000)->Arg(16384)->Arg(262144)->Arg(4194304);

// The fused kernels' access: a stream's plan built once (detail::philox_row), then whole SIMD
// chunks (philox_row::chunk normals each, fewer batches per chunk than fill's steps on
// AVX-512) written one at a time, as kernels::ddpm_ancestral and the others consume them.
template <class T>
void BM_philox_row_chunks(benchmark::State& state) {
  using row_t = diffusion::detail::philox_row<T>;
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<T> out(n);
  const diffusion::philox_normal noise(0x5EED5EED5EEDull);
  std::uint64_t step = 0;
  for (auto _ : state) {
    const row_t row(noise.key(), /*sample=*/3, step++);
    std::size_t done = 0;
    if constexpr (row_t::chunk != 0) {
      const std::size_t chunks = row.simd_chunks_at(0, n);
      const auto run = row.simd_run(0);
      for (std::size_t c = 0; c < chunks; ++c, done += row_t::chunk) row.simd_chunk(run, done, out.data() + done);
    }
    row.fill(done, std::span<T>(out).subspan(done));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(sizeof(T)));
}
BENCHMARK_TEMPLATE(BM_philox_row_chunks, float)->Arg(16384)->Arg(4194304);
BENCHMARK_TEMPLATE(BM_philox_row_chunks, double)->Arg(16384)->Arg(4194304);

// Baseline: a sequential engine and the textbook Box–Muller pair, in the output type.
template <class T>
void BM_mt19937_box_muller(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<T> out(n);
  std::mt19937 engine(12345);
  const auto uniform = [&engine] {  // (0, 1): 24 (float) or 53 (double) bits, never 0
    if constexpr (std::is_same_v<T, float>)
      return (static_cast<float>(engine() >> 8) + 0.5f) * 0x1p-24f;
    else
      return (static_cast<double>((std::uint64_t{engine()} << 21) ^ (engine() >> 11)) + 0.5) * 0x1p-53;
  };
  for (auto _ : state) {
    for (std::size_t i = 0; i + 1 < n; i += 2) {
      const T r = std::sqrt(T(-2) * std::log(uniform()));
      const T theta = T(2) * std::numbers::pi_v<T> * uniform();
      out[i] = r * std::cos(theta);
      out[i + 1] = r * std::sin(theta);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(sizeof(T)));
}
BENCHMARK_TEMPLATE(BM_mt19937_box_muller, float)->Arg(1000)->Arg(16384)->Arg(262144)->Arg(4194304);
BENCHMARK_TEMPLATE(BM_mt19937_box_muller, double)->Arg(1000)->Arg(16384)->Arg(262144);

// Comparison only (not used by the library): libstdc++'s normal_distribution (polar method).
template <class T>
void BM_mt19937_normal_distribution(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<T> out(n);
  std::mt19937 engine(12345);
  std::normal_distribution<T> normal;
  for (auto _ : state) {
    for (auto& x : out) x = normal(engine);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(sizeof(T)));
}
BENCHMARK_TEMPLATE(BM_mt19937_normal_distribution, float)->Arg(1000)->Arg(16384)->Arg(262144)->Arg(4194304);
BENCHMARK_TEMPLATE(BM_mt19937_normal_distribution, double)->Arg(1000)->Arg(16384)->Arg(262144);

// The scalar block function alone: items are 32-bit words (4 per block).
void BM_philox4x32_10_scalar(benchmark::State& state) {
  const auto blocks = static_cast<std::uint32_t>(state.range(0));
  std::vector<std::uint32_t> out(4 * static_cast<std::size_t>(blocks));
  std::uint32_t key0 = 1;
  for (auto _ : state) {
    for (std::uint32_t b = 0; b < blocks; ++b) {
      const auto x = diffusion::philox4x32_10({b, 0, 7, 9}, {key0, 2});
      for (std::size_t j = 0; j < 4; ++j) out[4 * b + j] = x[j];
    }
    ++key0;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0) * 4);
}
BENCHMARK(BM_philox4x32_10_scalar)->Arg(1000)->Arg(4096);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  using arch = diffusion::detail::noise_arch;
  if constexpr (!std::is_void_v<arch>) benchmark::AddCustomContext("noise_simd_path", arch::name());
  benchmark::AddCustomContext("noise_kernel_chunk_floats", std::to_string(diffusion::detail::philox_row<float>::chunk));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
