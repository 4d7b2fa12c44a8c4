// Test support: the high-precision reference data, ulp distances, and a seeded normal
// generator for Monte Carlo checks (SplitMix64 + Box–Muller written here, so the tests
// share no code with the library and do not depend on std::normal_distribution, whose
// output differs between standard libraries).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <numbers>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef DIFFUSION_TEST_DATA_DIR
#error "DIFFUSION_TEST_DATA_DIR must name tests/data"
#endif

namespace test {

/// Divisor of the Monte Carlo sample counts: 1 in normal builds, 10 under AddressSanitizer, whose run
/// checks memory behaviour (and is ~20× slower). The bounds are in standard errors of the count used,
/// so the false-failure probability is unchanged; the statistical power is the normal build's.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr std::size_t montecarlo_divisor = 10;
#else
inline constexpr std::size_t montecarlo_divisor = 1;
#endif

/// Distance in units in the last place between two doubles (0 if equal, incl. equal infinities).
inline double ulps(double a, double b) {
  if (a == b) return 0.0;
  if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) return std::numeric_limits<double>::infinity();
  auto ordered = [](double x) {
    auto i = std::bit_cast<std::int64_t>(x);
    return i < 0 ? std::numeric_limits<std::int64_t>::min() - i : i;
  };
  const auto d = static_cast<long double>(ordered(a)) - static_cast<long double>(ordered(b));
  return static_cast<double>(d < 0 ? -d : d);
}

/// One line of tests/data/schedules.ref: dataset, quantity, index and value.
struct reference {
  std::map<std::string, double> values;  // key "dataset quantity index"

  static const reference& schedules() {
    static const reference r = load(std::string(DIFFUSION_TEST_DATA_DIR) + "/schedules.ref");
    return r;
  }
  static reference load(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open reference file " + path);
    reference r;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ls(line);
      std::string ds, q, idx, val;
      ls >> ds >> q >> idx >> val;
      r.values[ds + " " + q + " " + idx] = std::strtod(val.c_str(), nullptr);  // glibc strtod rounds correctly
    }
    return r;
  }
  [[nodiscard]] bool has(const std::string& ds, const std::string& q, const std::string& idx) const {
    return values.count(ds + " " + q + " " + idx) != 0;
  }
  [[nodiscard]] double get(const std::string& ds, const std::string& q, const std::string& idx) const {
    auto it = values.find(ds + " " + q + " " + idx);
    if (it == values.end()) throw std::runtime_error("no reference value for " + ds + " " + q + " " + idx);
    return it->second;
  }
  [[nodiscard]] double get(const std::string& ds, const std::string& q, std::size_t i) const {
    return get(ds, q, std::to_string(i));
  }
  /// All indices (as integers) present for a dataset and quantity, ascending.
  [[nodiscard]] std::vector<std::size_t> indices(const std::string& ds, const std::string& q) const {
    std::vector<std::size_t> out;
    const std::string prefix = ds + " " + q + " ";
    for (auto it = values.lower_bound(prefix); it != values.end() && it->first.rfind(prefix, 0) == 0; ++it) {
      const std::string idx = it->first.substr(prefix.size());
      if (idx.find_first_not_of("0123456789") == std::string::npos) out.push_back(std::stoul(idx));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  /// The full beta_in list of a discrete dataset.
  [[nodiscard]] std::vector<double> betas(const std::string& ds) const {
    std::vector<double> b;
    for (std::size_t i = 0; has(ds, "beta_in", std::to_string(i)); ++i) b.push_back(get(ds, "beta_in", i));
    return b;
  }
};

/// SplitMix64 (Steele, Lea, Flood 2014) and the polar-free Box–Muller transform in double.
class normal_source {
 public:
  explicit normal_source(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next_u64() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform on (0, 1).
  double uniform() { return (static_cast<double>(next_u64() >> 11) + 0.5) * 0x1.0p-53; }
  double normal() {
    if (have_) {
      have_ = false;
      return cached_;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform())), th = 2.0 * std::numbers::pi * uniform();
    cached_ = r * std::sin(th);
    have_ = true;
    return r * std::cos(th);
  }

 private:
  std::uint64_t s_;
  double cached_ = 0.0;
  bool have_ = false;
};

/// A seeded noise source with the library's fill(sample, step, offset, span) shape, built on
/// normal_source, so tests share no generator code with the library.
struct test_noise {
  std::uint64_t seed;
  template <class T>
  void fill(std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out) const {
    normal_source g(seed ^ (sample * 0x9E3779B97F4A7C15ull) ^ (step * 0xD1B54A32D192ED03ull));
    for (std::uint64_t k = 0; k < offset; ++k) (void)g.normal();
    for (auto& v : out) v = static_cast<T>(g.normal());
  }
};

}  // namespace test
