// libFuzzer target for the timestep selection functions of <diffusion/timesteps.hpp>:
//   - diffusion::space_timesteps(T, spec), the improved-DDPM spacing-string parser;
//   - diffusion::inference_timesteps(T, n, spacing, offset).
//
// Input layout: bytes 0-1 give T = 1 + (little-endian u16 % 5000), so T ∈ [1, 5000]; the
// rest is the spacing string, passed as is. The parameters of inference_timesteps are read
// from the last bytes of the same input (see fuzz_inference_timesteps).
//
// std::invalid_argument is the documented error. It is accepted only when an independent
// model of the documented rules says the input is invalid; a result is checked against
// the documented invariants and the model. A violated check prints what went wrong and
// calls __builtin_trap(); any other exception type escapes, so libFuzzer reports it.
//
// Build and run: scripts/fuzz.sh [seconds]
#include <diffusion/timesteps.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void fail(const char* function, std::size_t T, std::string_view arg, const std::string& what) {
  std::fprintf(stderr, "\nINVARIANT VIOLATED in %s(T = %zu, \"%.*s\"): %s\n", function, T,
               static_cast<int>(arg.size()), arg.data(), what.c_str());
  __builtin_trap();
}

// Strictly decreasing, non-empty, every value < T.
void check_sequence(const char* function, std::size_t T, std::string_view arg, const diffusion::timestep_sequence& seq) {
  if (seq.size() == 0) fail(function, T, arg, "empty result");
  if (seq.num_train_timesteps() != T) fail(function, T, arg, "num_train_timesteps() differs from T");
  const auto v = seq.values();
  for (std::size_t k = 0; k < v.size(); ++k) {
    if (v[k] >= T) fail(function, T, arg, "value " + std::to_string(v[k]) + " at position " + std::to_string(k) + " is >= T");
    if (k > 0 && v[k] >= v[k - 1])
      fail(function, T, arg, "not strictly decreasing at position " + std::to_string(k));
  }
}

// A count as the documented grammar reads it: a non-empty run of decimal digits, value >= 1.
// Values are saturated at `cap` (anything above T is impossible anyway).
std::optional<std::size_t> model_count(std::string_view token, std::size_t cap) {
  if (token.empty()) return std::nullopt;
  std::size_t v = 0;
  for (char c : token) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::size_t>(c - '0');
    if (v > cap) v = cap;
  }
  if (v == 0) return std::nullopt;
  return v;
}

// What space_timesteps must return, by the documented rules: the expected size and, for
// "ddimN", the stride; std::nullopt when it must throw std::invalid_argument.
struct space_model {
  std::size_t size = 0;
  std::size_t ddim_stride = 0;  // 0 for a comma list
};
std::optional<space_model> model_space(std::size_t T, std::string_view spec) {
  const std::size_t cap = T + 1;
  if (spec.starts_with("ddim")) {
    const auto n = model_count(spec.substr(4), cap);
    if (!n) return std::nullopt;
    for (std::size_t s = 1; s < T; ++s)  // smallest stride s with |range(0, T, s)| = n
      if ((T + s - 1) / s == *n) return space_model{*n, s};
    return std::nullopt;
  }
  std::vector<std::size_t> counts;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = spec.find(',', pos);
    const auto c = model_count(spec.substr(pos, comma == spec.npos ? spec.npos : comma - pos), cap);
    if (!c) return std::nullopt;
    counts.push_back(*c);
    if (counts.size() > T) return std::nullopt;
    if (comma == spec.npos) break;
    pos = comma + 1;
  }
  std::size_t total = 0;
  for (std::size_t k = 0; k < counts.size(); ++k) {
    const std::size_t section = T / counts.size() + (k < T % counts.size() ? 1 : 0);
    if (counts[k] > section) return std::nullopt;
    total += counts[k];
  }
  return space_model{total, 0};
}

void fuzz_space_timesteps(std::size_t T, std::string_view spec) {
  constexpr const char* fn = "space_timesteps";
  const std::optional<space_model> want = model_space(T, spec);
  std::optional<diffusion::timestep_sequence> got;
  try {
    got = diffusion::space_timesteps(T, spec);
  } catch (const std::invalid_argument& e) {
    if (want) fail(fn, T, spec, std::string("valid input rejected: ") + e.what());
    return;
  }
  if (!want) fail(fn, T, spec, "invalid input accepted");
  check_sequence(fn, T, spec, *got);
  const auto v = got->values();
  if (v.back() != 0) fail(fn, T, spec, "timestep 0 is not kept");
  if (v.size() != want->size)
    fail(fn, T, spec, "size " + std::to_string(v.size()) + ", expected " + std::to_string(want->size) +
                          (want->ddim_stride ? " (the N of ddimN)" : " (the sum of the counts)"));
  if (want->ddim_stride != 0) {
    for (std::size_t k = 0; k < v.size(); ++k)
      if (v[k] != (v.size() - 1 - k) * want->ddim_stride)
        fail(fn, T, spec, "ddim result is not range(0, T, " + std::to_string(want->ddim_stride) + ")");
  }
}

// inference_timesteps(T, n, spacing, offset), parameters from the last bytes of the input:
//   n       = little-endian u16 of the last two bytes, modulo T + 2 (so 0 and T + 1 occur);
//   spacing = third-last byte modulo 4 (3 is not a valid enumerator);
//   offset  = from the fourth-last byte: its low 2 bits choose small (< 256), near T,
//             near SIZE_MAX (overflow) or any 64-bit value; the magnitude comes from the
//             bytes before it.
void fuzz_inference_timesteps(std::size_t T, const std::uint8_t* data, std::size_t size) {
  constexpr const char* fn = "inference_timesteps";
  auto byte_from_end = [&](std::size_t i) -> std::uint8_t { return i < size ? data[size - 1 - i] : 0; };
  const std::size_t n = (static_cast<std::size_t>(byte_from_end(0)) | static_cast<std::size_t>(byte_from_end(1)) << 8) % (T + 2);
  const unsigned spacing_raw = byte_from_end(2) % 4u;
  const auto spacing = static_cast<diffusion::timestep_spacing>(spacing_raw);
  const unsigned mode = byte_from_end(3) & 3u;
  std::uint64_t raw = 0;
  for (std::size_t i = 4; i < 12; ++i) raw = raw << 8 | byte_from_end(i);
  std::size_t offset = 0;
  switch (mode) {
    case 0: offset = raw & 0xffu; break;
    case 1: offset = T - 1 - (raw % T) + (raw >> 63); break;  // T-1 - r, or T - r
    case 2: offset = std::numeric_limits<std::size_t>::max() - (raw & 0xffffu); break;
    default: offset = static_cast<std::size_t>(raw); break;
  }
  const std::string arg = "n = " + std::to_string(n) + ", spacing = " + std::to_string(spacing_raw) +
                          ", offset = " + std::to_string(offset);

  // The documented domain: 1 <= n <= T, a valid spacing, and for leading the largest
  // timestep (n - 1)·(T / n) + offset < T (computed without overflow).
  bool valid = n >= 1 && n <= T && spacing_raw < 3;
  if (valid && spacing == diffusion::timestep_spacing::leading) valid = offset < T - (n - 1) * (T / n);

  std::optional<diffusion::timestep_sequence> got;
  try {
    got = diffusion::inference_timesteps(T, n, spacing, offset);
  } catch (const std::invalid_argument& e) {
    if (valid) fail(fn, T, arg, std::string("valid input rejected: ") + e.what());
    return;
  }
  if (!valid) fail(fn, T, arg, "invalid input accepted");
  check_sequence(fn, T, arg, *got);
  const auto v = got->values();
  if (v.size() != n) fail(fn, T, arg, "size " + std::to_string(v.size()) + " differs from n");
  switch (spacing) {
    case diffusion::timestep_spacing::linspace:
      if (v.back() != 0 || (n > 1 && v.front() != T - 1)) fail(fn, T, arg, "linspace does not span [0, T-1]");
      break;
    case diffusion::timestep_spacing::leading:
      for (std::size_t k = 0; k < n; ++k)
        if (v[k] != (n - 1 - k) * (T / n) + offset) fail(fn, T, arg, "leading is not arange(n)*(T//n) + offset");
      break;
    case diffusion::timestep_spacing::trailing:
      if (v.front() != T - 1) fail(fn, T, arg, "trailing does not start at T-1");
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t T = 1 + (static_cast<std::size_t>(data[0]) | static_cast<std::size_t>(data[1]) << 8) % 5000;
  const std::string_view spec(reinterpret_cast<const char*>(data + 2), size - 2);
  fuzz_space_timesteps(T, spec);
  fuzz_inference_timesteps(T, data + 2, size - 2);
  return 0;
}
