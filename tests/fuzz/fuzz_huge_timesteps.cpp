// libFuzzer target: inference_timesteps and space_timesteps over the whole size_t range of T
// (near SIZE_MAX, near powers of two, the float64 bound N·T = 2^51, any 64-bit value).
//
// The expected values come from an independent model in 128-bit integer arithmetic: the exact
// rationals i(T−1)/(N−1) and T(N−i)/N rounded half to even, numpy's float64 operations where
// N·T < 2^51 (and those must then lie within 1 of the exact values), the smallest ddim stride by
// binary search, iDDPM's sections by float64 accumulation where count·size < 2^50. Requests that
// would allocate more than 2^16 timesteps are made only where they must be refused (N > T, or
// N beyond vector::max_size), so the target stays within libFuzzer's memory limit. Error
// messages must be short, printable ASCII (the spec is quoted escaped and truncated).
// Build and run: scripts/fuzz.sh [seconds]
#include <diffusion/timesteps.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

using u128 = unsigned __int128;
constexpr const char* target = "fuzz_huge_timesteps";
constexpr std::size_t max_alloc = std::size_t{1} << 16;

// round_half_even(num / den), num < 2^128, den ≥ 1.
std::size_t round_half_even(u128 num, u128 den) {
  u128 q = num / den, r = num % den;
  if (2 * r > den || (2 * r == den && (q & 1))) ++q;
  return static_cast<std::size_t>(q);
}

bool below_2_pow(std::size_t a, std::size_t b, int bits) { return static_cast<u128>(a) * b < (u128{1} << bits); }

void check_message(const std::string& input, const std::exception& e) {
  const std::string what = e.what();
  // At most two quotes of 60 characters, each escaped to at most 4 bytes, and fixed text.
  if (what.size() > 1000) fuzz::fail(target, input, "error message of " + std::to_string(what.size()) + " characters");
  for (char c : what)
    if (c < 0x20 || c > 0x7e) fuzz::fail(target, input, "non-printable byte in the error message: " + what);
}

void check_strictly_decreasing(const std::string& input, const diffusion::timestep_sequence& seq, std::size_t T) {
  const auto v = seq.values();
  if (v.empty() || seq.num_train_timesteps() != T) fuzz::fail(target, input, "empty result or wrong T");
  for (std::size_t k = 0; k < v.size(); ++k) {
    if (v[k] >= T) fuzz::fail(target, input, "value " + std::to_string(v[k]) + " >= T");
    if (k > 0 && v[k] >= v[k - 1]) fuzz::fail(target, input, "not strictly decreasing at " + std::to_string(k));
  }
}

void fuzz_inference(fuzz::reader& r, std::size_t T) {
  // N: small, around the float64 bound 2^51 / T, near T, beyond max_size, or 0.
  std::size_t N = 0;
  const unsigned mode = r.u8() % 6;
  const auto delta = static_cast<std::int64_t>(static_cast<std::int8_t>(r.u8()));
  switch (mode) {
    case 0: N = 1 + r.u16() % 4096; break;
    case 1: N = T == 0 ? 1 : static_cast<std::size_t>(static_cast<std::int64_t>(((std::size_t{1} << 51) - 1) / T) + delta); break;
    case 2: N = T - static_cast<std::size_t>(delta < 0 ? -delta : delta); break;
    case 3: N = std::numeric_limits<std::size_t>::max() - r.u16(); break;
    case 4: N = 0; break;
    default: N = r.size_any(); break;
  }
  const unsigned spacing_raw = r.u8() % 4;
  const auto spacing = static_cast<diffusion::timestep_spacing>(spacing_raw);
  std::size_t offset = 0;
  switch (r.u8() % 4) {
    case 0: offset = r.u8(); break;
    case 1: offset = T - std::min<std::size_t>(T, r.u16()); break;
    case 2: offset = std::numeric_limits<std::size_t>::max() - r.u16(); break;
    default: offset = r.u64(); break;
  }
  const std::string input = "inference_timesteps(T = " + std::to_string(T) + ", N = " + std::to_string(N) +
                            ", spacing = " + std::to_string(spacing_raw) + ", offset = " + std::to_string(offset) + ")";
  bool valid = T >= 1 && N >= 1 && N <= T && spacing_raw < 3;
  if (valid && spacing == diffusion::timestep_spacing::leading)
    valid = static_cast<u128>(N - 1) * (T / N) + offset < T;
  const bool too_many = N > std::vector<std::size_t>().max_size();
  if (N <= T && N > max_alloc && !too_many) return;  // might allocate for real: not here
  std::optional<diffusion::timestep_sequence> got;
  try {
    got = diffusion::inference_timesteps(T, N, spacing, offset);
  } catch (const std::invalid_argument& e) {
    check_message(input, e);
    if (valid && !too_many) fuzz::fail(target, input, std::string("valid input rejected: ") + e.what());
    return;
  }
  if (!valid || too_many) fuzz::fail(target, input, "invalid input accepted");
  check_strictly_decreasing(input, *got, T);
  if (got->size() != N) fuzz::fail(target, input, "size differs from N");
  const auto v = got->values();
  const bool as_numpy = below_2_pow(N, T, 51);
  for (std::size_t k = 0; k < N; ++k) {
    std::size_t exact = 0, numpy = 0;
    switch (spacing) {
      case diffusion::timestep_spacing::linspace: {
        const std::size_t i = N - 1 - k;  // v[k] is the i-th linspace value
        exact = N == 1 ? 0 : i == N - 1 ? T - 1 : round_half_even(static_cast<u128>(i) * (T - 1), N - 1);
        if (as_numpy) {
          const double step = N > 1 ? static_cast<double>(T - 1) / static_cast<double>(N - 1) : 0.0;
          const double y = N > 1 && i == N - 1 ? static_cast<double>(T - 1) : static_cast<double>(i) * step;
          numpy = static_cast<std::size_t>(std::nearbyint(y));
        }
        break;
      }
      case diffusion::timestep_spacing::trailing: {
        exact = round_half_even(static_cast<u128>(T) * (N - k), N) - 1;
        if (as_numpy) {
          const double start = static_cast<double>(T), delta_d = (start + -start / static_cast<double>(N)) - start;
          numpy = static_cast<std::size_t>(std::nearbyint(k == 0 ? start : start + static_cast<double>(k) * delta_d)) - 1;
        }
        break;
      }
      default:
        exact = numpy = (N - 1 - k) * (T / N) + offset;
        break;
    }
    const std::size_t want = as_numpy ? numpy : exact;
    if (v[k] != want)
      fuzz::fail(target, input, "position " + std::to_string(k) + ": " + std::to_string(v[k]) + ", expected " +
                                    std::to_string(want) + (as_numpy ? " (numpy's float64)" : " (exact)"));
    if (as_numpy && (exact > numpy ? exact - numpy : numpy - exact) > 1)
      fuzz::fail(target, input, "numpy's float64 value " + std::to_string(numpy) + " is more than 1 from the exact " +
                                    std::to_string(exact) + " at position " + std::to_string(k));
  }
}

// The smallest s in [1, T) with ceil(T/s) = n, by binary search (ceil(T/s) falls as s grows).
std::optional<std::size_t> ddim_stride(std::size_t T, std::size_t n) {
  if (T < 2 || n == 0) return std::nullopt;
  auto ceil_div = [](std::size_t a, std::size_t b) { return static_cast<std::size_t>((static_cast<u128>(a) + b - 1) / b); };
  std::size_t lo = 1, hi = T - 1;  // find the smallest s with ceil(T/s) <= n
  if (ceil_div(T, hi) > n) return std::nullopt;
  while (lo < hi) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (ceil_div(T, mid) <= n) hi = mid;
    else lo = mid + 1;
  }
  if (ceil_div(T, lo) != n) return std::nullopt;
  return lo;
}

void fuzz_space(fuzz::reader& r, std::size_t T) {
  std::string spec;
  std::optional<std::vector<std::size_t>> want;  // ascending; nullopt: must throw
  bool skip = false;
  const unsigned mode = r.u8() % 4;
  if (mode == 0) {
    const std::size_t n = (r.u8() & 1) ? 1 + r.u16() % 300 : r.size_any();
    spec = "ddim" + std::to_string(n);
    if (const auto s = ddim_stride(T, n)) {
      if (n > max_alloc) skip = true;
      else {
        want.emplace();
        for (std::size_t k = 0; k < n; ++k) want->push_back(k * *s);
      }
    }
  } else if (mode <= 2) {
    const std::size_t k = 1 + r.u8() % 6;
    std::vector<std::size_t> counts;
    for (std::size_t j = 0; j < k; ++j) {
      const std::size_t section = T == 0 ? 0 : T / k + (j < T % k ? 1 : 0);
      switch (r.u8() % 4) {
        case 0: counts.push_back(1 + r.u8() % 64); break;
        case 1: counts.push_back(section - std::min<std::size_t>(section, r.u8() % 3)); break;
        case 2: counts.push_back(r.size_any()); break;
        default: counts.push_back(2 + r.u8() % 8); break;
      }
      spec += (j ? "," : "") + std::to_string(counts.back());
    }
    bool ok = T >= 1 && k <= T;
    std::size_t total = 0;
    for (std::size_t j = 0; ok && j < k; ++j) {
      const std::size_t section = T / k + (j < T % k ? 1 : 0);
      ok = counts[j] >= 1 && counts[j] <= section;
      total += ok ? counts[j] : 0;
    }
    if (ok && total > max_alloc) skip = true;
    else if (ok) {
      want.emplace();
      std::size_t start = 0;
      for (std::size_t j = 0; j < k; ++j) {
        const std::size_t size = T / k + (j < T % k ? 1 : 0), count = counts[j];
        if (count == 1) {
          want->push_back(start);
        } else if (below_2_pow(count, size, 50)) {
          const double stride = static_cast<double>(size - 1) / static_cast<double>(count - 1);
          double cur = 0.0;
          for (std::size_t i = 0; i < count; ++i, cur += stride) {
            const std::size_t exact = round_half_even(static_cast<u128>(i) * (size - 1), count - 1);
            const auto py = static_cast<std::size_t>(std::nearbyint(cur));
            if ((exact > py ? exact - py : py - exact) > 1)
              fuzz::fail(target, "space_timesteps(" + std::to_string(T) + ", " + spec + ")",
                         "the model's float64 accumulation drifted by more than 1");
            want->push_back(start + py);
          }
        } else {
          for (std::size_t i = 0; i < count; ++i)
            want->push_back(start + round_half_even(static_cast<u128>(i) * (size - 1), count - 1));
        }
        start += size;
      }
    }
  } else {
    // Any bytes: the parser must refuse or accept cleanly, and say so in a short printable message.
    const std::size_t len = r.left() < 200 ? r.left() : 200;
    spec.assign(reinterpret_cast<const char*>(r.rest()), len);
    for (std::size_t i = 0; i < len; ++i) (void)r.u8();
    // No model: a result is still checked for the sequence invariants. Counts of 5 digits or
    // more could ask for more than 2^16 timesteps of a huge T: those are left to the modes above.
    std::size_t run = 0, longest = 0;
    for (char c : spec) longest = std::max(longest, run = (c >= '0' && c <= '9') ? run + 1 : 0);
    if (longest > 4 && T > max_alloc) return;
  }
  const std::string input = "space_timesteps(T = " + std::to_string(T) + ", \"" + spec.substr(0, 80) + "\")";
  if (skip && mode != 3) return;
  std::optional<diffusion::timestep_sequence> got;
  try {
    got = diffusion::space_timesteps(T, spec);
  } catch (const std::invalid_argument& e) {
    check_message(input, e);
    if (want) fuzz::fail(target, input, std::string("valid input rejected: ") + e.what());
    return;
  }
  check_strictly_decreasing(input, *got, T);
  if (mode == 3) return;
  if (!want) fuzz::fail(target, input, "invalid input accepted");
  std::vector<std::size_t> w = *want;
  std::sort(w.begin(), w.end(), std::greater<>{});
  w.erase(std::unique(w.begin(), w.end()), w.end());
  if (w.size() != want->size()) fuzz::fail(target, input, "the model itself has duplicates");
  const auto v = got->values();
  if (!std::equal(v.begin(), v.end(), w.begin(), w.end()))
    fuzz::fail(target, input, "result differs from the model (size " + std::to_string(v.size()) + " vs " +
                                  std::to_string(w.size()) + ")");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader r(data, size);
  const std::size_t T = r.size_any();
  if (r.u8() & 1) fuzz_inference(r, T);
  else fuzz_space(r, T);
  return 0;
}
