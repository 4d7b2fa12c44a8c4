// Reductions over 16 K, 256 K and 4 M floats: the library's compensated SIMD sum and
// squared_distance (accumulated in double, bound u|s| + 2e5 u² Σ|x|) beside a plain float
// loop, a std::accumulate / std::inner_product in double, and Eigen expressions, same data.
//   bench_reductions --benchmark_counters_tabular=true [--max_elements=N]
// bytes_per_second counts the input bytes read (4 per float and input).
#include <benchmark/benchmark.h>

#include "size_cap.hpp"

#include <diffusion/reductions.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::size_t max_elements = std::size_t{1} << 22;

struct data {
  std::vector<float> a, b;
  explicit data(std::size_t n) : a(n), b(n) {
    for (std::size_t k = 0; k < n; ++k) {
      a[k] = std::sin(0.001f * static_cast<float>(k));
      b[k] = a[k] + 0.01f * std::cos(0.37f * static_cast<float>(k));
    }
  }
};

using kernel = std::function<double(const data&)>;

void run(benchmark::State& state, const kernel& f, std::size_t inputs) {
  const data d(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(f(d));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * state.range(0) * static_cast<std::int64_t>(inputs * sizeof(float)));
}

Eigen::Map<const Eigen::VectorXf> map(const std::vector<float>& v) {
  return {v.data(), static_cast<Eigen::Index>(v.size())};
}

const diffusion::parallel_policy two_threads{2, std::size_t{1} << 16};

void add(const std::string& name, std::size_t inputs, kernel f) {
  auto* b = benchmark::RegisterBenchmark(name.c_str(), [f, inputs](benchmark::State& s) { run(s, f, inputs); });
  for (const std::size_t n : {std::size_t{1} << 14, std::size_t{1} << 18, std::size_t{1} << 22})
    if (n <= max_elements) b->Arg(static_cast<std::int64_t>(n));
}

void register_all() {
  add("sum/ours", 1, [](const data& d) { return diffusion::sum(d.a); });
  add("sum/ours_2t", 1, [](const data& d) { return diffusion::sum(d.a, two_threads); });
  add("sum/plain_float_loop", 1, [](const data& d) {
    float s = 0.0f;
    for (const float v : d.a) s += v;
    return static_cast<double>(s);
  });
  add("sum/accumulate_double", 1, [](const data& d) { return std::accumulate(d.a.begin(), d.a.end(), 0.0); });
  add("sum/eigen", 1, [](const data& d) { return static_cast<double>(map(d.a).sum()); });

  add("squared_distance/ours", 2, [](const data& d) { return diffusion::squared_distance(d.a, d.b); });
  add("squared_distance/ours_2t", 2, [](const data& d) { return diffusion::squared_distance(d.a, d.b, two_threads); });
  add("squared_distance/plain_float_loop", 2, [](const data& d) {
    float s = 0.0f;
    for (std::size_t k = 0; k < d.a.size(); ++k) {
      const float e = d.a[k] - d.b[k];
      s += e * e;
    }
    return static_cast<double>(s);
  });
  add("squared_distance/inner_product_double", 2, [](const data& d) {
    return std::inner_product(d.a.begin(), d.a.end(), d.b.begin(), 0.0, std::plus<>{}, [](float x, float y) {
      const double e = static_cast<double>(x) - static_cast<double>(y);
      return e * e;
    });
  });
  add("squared_distance/eigen", 2, [](const data& d) { return static_cast<double>((map(d.a) - map(d.b)).squaredNorm()); });
}

}  // namespace

int main(int argc, char** argv) {
  bench::read_size_cap(argc, argv, max_elements);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
