/// @file
/// @brief Noise streams compatible with PyTorch pipelines: the CPU stream of
/// `torch.manual_seed(s); torch.randn(n)` (@ref diffusion::torch_cpu_generator) and the
/// Philox "GPU" stream that AUTOMATIC1111's webui and stable-diffusion.cpp use to imitate
/// `torch.randn(..., device='cuda')` (@ref diffusion::philox_gpu_generator).
///
/// These exist so that a ported pipeline can start from the same latent noise as the
/// Python original. They are not the library's own noise: @ref diffusion::philox_normal
/// is counter-addressed, vectorized and identical on every platform; these follow someone
/// else's layout, operation by operation, including its roundings.
///
/// Exactness. Both references call the C library's `log`, `sin`, `cos`: the values below are
/// bit-identical to the reference when this code links the same libm (verified against
/// Debian 12's glibc with tests/test_torch_compat.cpp), and within the libm's error otherwise.
/// The exception is PyTorch's float32 AVX2 kernel, which has its own polynomial float
/// `log`/`sincos` (measured difference in @ref diffusion::torch_cpu_generator).
///
/// Dependencies: config.hpp and noise.hpp (for @ref diffusion::philox4x32_10).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "philox.hpp"

/// @defgroup torch_compat PyTorch-compatible noise
/// @brief Reproductions of `torch.randn` on the CPU (MT19937) and of the Philox "GPU" stream
/// of AUTOMATIC1111 / stable-diffusion.cpp, for porting pipelines.
/// @{

namespace diffusion {

namespace detail {
/// MT19937 (Matsumoto & Nishimura 1998, ACM TOMACS 8(1), the 32-bit Mersenne Twister with the
/// parameters C++ [rand.predef] fixes for `std::mt19937`: n = 624, m = 397, a = 0x9908b0df,
/// tempering (11, 7, 0x9d2c5680, 15, 0xefc60000, 18), `init_genrand` seeding with
/// f = 1812433253). Written here so that the noise layer does not pull in `<random>`; its
/// outputs equal `std::mt19937`'s word for word (tests/test_torch_compat.cpp).
class mt19937 {
 public:
  void seed(std::uint32_t s) noexcept {
    state_[0] = s;
    for (std::uint32_t i = 1; i < n; ++i) state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + i;
    next_ = n;
  }
  std::uint32_t operator()() noexcept {
    if (next_ == n) twist();
    std::uint32_t y = state_[next_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
  }

 private:
  static constexpr std::uint32_t n = 624, m = 397;
  void twist() noexcept {
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::uint32_t y = (state_[i] & 0x80000000u) | (state_[(i + 1) % n] & 0x7fffffffu);
      state_[i] = state_[(i + m) % n] ^ (y >> 1) ^ ((y & 1u) != 0 ? 0x9908b0dfu : 0u);
    }
    next_ = 0;
  }
  std::uint32_t state_[n] = {};
  std::uint32_t next_ = n;
};
}  // namespace detail

/// @brief `torch.manual_seed(seed)` followed by `torch.randn(...)` on the CPU, as PyTorch 1.13
/// computes it (`CPUGeneratorImpl` + `normal_kernel` in
/// aten/src/ATen/native/cpu/DistributionTemplates.h; verified against Debian's python3-torch
/// 1.13.1).
///
/// **State.** An MT19937 engine (Matsumoto & Nishimura 1998) seeded with the low 32 bits of
/// the seed — PyTorch's `at::mt19937` uses the same `init_genrand` initialization and tempering
/// as `std::mt19937`, so the 32-bit outputs \f$w_0, w_1, \dots\f$ are those of
/// `std::mt19937(seed mod 2^32)` — plus one cached double normal (the second Box–Muller
/// output of the small-tensor path). Seeding clears the cache. Every `randn` call advances the
/// state exactly as the matching `torch.randn` call does, so a sequence of calls after one
/// seeding reproduces the same sequence of torch calls (float and double calls may be mixed:
/// they share the engine and the cache, as in torch).
///
/// **Uniforms.** float: \f$u = (w \bmod 2^{24})\,2^{-24}\f$ from one word. double:
/// \f$u = (W \bmod 2^{53})\,2^{-53}\f$ with \f$W = 2^{32} w_a + w_b\f$ from two consecutive
/// words (first word high). Both are exact, in \f$[0, 1)\f$.
///
/// **Layout for n ≥ 16** (`normal_fill`): draw n uniforms \f$x_0..x_{n-1}\f$; transform
/// each block of 16, \f$[16b, 16b+16)\f$, \f$b < \lfloor n/16 \rfloor\f$, as 8 pairs
/// \f$(x_{j}, x_{j+8})\f$, \f$j < 8\f$:
/// \f[ r = \sqrt{-2\ln(1 - x_j)},\quad \theta = 2\pi x_{j+8},\quad
///     z_j = r\cos\theta,\quad z_{j+8} = r\sin\theta. \f]
/// If 16 ∤ n, draw 16 more uniforms into positions \f$[n-16, n)\f$ (overwriting the ragged
/// tail and part of the last full block) and transform that block again. So n ≥ 16 consumes
/// \f$n + 16\,[16 \nmid n]\f$ uniforms and never touches the cache.
/// Float operations (PyTorch's scalar `normal_fill_16<float>`): \f$1 - x\f$ (exact), `logf`,
/// `sqrtf`, \f$\theta\f$ = float(double(2π)·x) (double product rounded to float), `cosf`/`sinf`,
/// float products. Double: every operation in double.
///
/// **Layout for n < 16** (`normal_distribution<double>`, element by element, also for float
/// tensors): if a cached normal exists, output it and clear the cache; else draw two double
/// uniforms \f$u_1, u_2\f$ and compute, in double,
/// \f[ r = \sqrt{-2\ln(1 - u_2)},\quad \theta = 2\pi u_1,\quad z = r\cos\theta,\quad
///     \text{cache} = r\sin\theta, \f]
/// output z (rounded to float for a float tensor; the cache stays double).
/// Note that here \f$u_1\f$ sets the angle and \f$u_2\f$ the radius, the reverse of the
/// block layout.
///
/// **Agreement with Debian's torch 1.13.1** (tests/data/torch_randn.ref):
/// - double, every n, and float with n < 16: bit-identical (all in double; same glibc).
/// - float, n ≥ 16, PyTorch's scalar kernel (`ATEN_CPU_CAPABILITY=default`; 1.13 also uses it
///   on AVX-512 machines and on non-x86): bit-identical (same glibc `logf`/`cosf`/`sinf`).
/// - float, n ≥ 16, PyTorch's AVX2 kernel (what 1.13 runs on an AVX2 machine without
///   AVX-512): that kernel computes \f$\theta\f$ = float(2π)·x in float and uses its own
///   polynomial `log256_ps`/`sincos256_ps` (avx_mathfun.h), which this class does not
///   reproduce. Measured on the 1261 reference values of that kernel: 59 % bit-identical, the
///   others differ by at most 1.49e-6 absolute (25·2⁻²⁴), which is 12.5 ulp of float at the
///   unit scale max(|z|, 1), and by at most 532 ulp of the value itself (at |z| = 0.0016,
///   where θ is near a zero of cos θ or sin θ). Most of it is θ: a one-ulp change of θ ≈ 6
///   moves z by up to r·4.8e-7.
///
/// Not a @ref diffusion::noise_source, because the stream is sequential (each value depends on how
/// many words every earlier call consumed and on the n < 16 / n ≥ 16 layout of each call), so
/// a value cannot be addressed by (sample, step, index) without replaying the stream.
class torch_cpu_generator {
 public:
  /// `torch.manual_seed(seed)` on a new generator. PyTorch accepts seeds in
  /// \f$[-2^{63}, 2^{64})\f$ and reinterprets a negative one as its two's complement: pass
  /// `static_cast<std::uint64_t>(s)` for those. Only the low 32 bits reach the engine.
  explicit torch_cpu_generator(std::uint64_t seed) { manual_seed(seed); }

  /// Reseeds as `torch.manual_seed(seed)`: new MT19937 state, cached normal cleared.
  void manual_seed(std::uint64_t seed) {
    seed_ = seed;
    engine_.seed(static_cast<std::uint32_t>(seed & 0xFFFFFFFFu));
    cached_.reset();
  }

  /// The seed last given (all 64 bits, as `torch.initial_seed()`).
  [[nodiscard]] std::uint64_t initial_seed() const noexcept { return seed_; }

  /// The next 32-bit engine output (PyTorch's `CPUGeneratorImpl::random()`).
  std::uint32_t random() { return engine_(); }

  /// Two engine outputs, the first in the high half (PyTorch's `random64()`).
  std::uint64_t random64() {
    const std::uint64_t hi = random();
    return (hi << 32) | random();
  }

  /// Fills `out` as `torch.randn(out.size(), dtype=torch.float32)` (layouts in the class
  /// comment). An empty span consumes nothing.
  void randn(std::span<float> out) { fill(out); }

  /// Fills `out` as `torch.randn(out.size(), dtype=torch.float64)`.
  void randn(std::span<double> out) { fill(out); }

 private:
  template <class T>
  T uniform() {
    if constexpr (std::is_same_v<T, float>)
      return static_cast<float>(random() & 0xFFFFFFu) * 0x1p-24f;  // 24-bit integer: exact
    else
      return static_cast<double>(random64() & 0x1FFFFFFFFFFFFFull) * 0x1p-53;  // 53-bit: exact
  }

  // PyTorch's normal_fill_16: 8 pairs (x[j], x[j+8]) in place. `+ T(0)` is PyTorch's
  // `* std + mean` with std = 1, mean = 0 (it turns a −0 into +0; a fused multiply–add of it
  // gives the same value, so contraction cannot change the result).
  template <class T>
  static void transform16(T* x) {
    for (std::size_t j = 0; j < 8; ++j) {
      const T radius = std::sqrt(T(-2) * std::log(T(1) - x[j]));
      const T theta = static_cast<T>(two_pi * static_cast<double>(x[j + 8]));
      x[j] = radius * std::cos(theta) + T(0);
      x[j + 8] = radius * std::sin(theta) + T(0);
    }
  }

  // PyTorch's normal_distribution<double>: one normal, using and refilling the cache.
  double scalar_normal() {
    if (cached_) {
      const double z = *cached_;
      cached_.reset();
      return z + 0.0;
    }
    const double u1 = uniform<double>(), u2 = uniform<double>();
    const double r = std::sqrt(-2.0 * std::log(1.0 - u2));
    const double theta = two_pi * u1;
    cached_ = r * std::sin(theta);
    return r * std::cos(theta) + 0.0;
  }

  template <class T>
  void fill(std::span<T> out) {
    const std::size_t n = out.size();
    if (n < 16) {
      for (auto& v : out) v = static_cast<T>(scalar_normal());
      return;
    }
    T* x = out.data();
    for (std::size_t i = 0; i < n; ++i) x[i] = uniform<T>();
    for (std::size_t i = 0; i + 16 <= n; i += 16) transform16(x + i);
    if (n % 16 != 0) {
      T* tail = x + (n - 16);
      for (std::size_t i = 0; i < 16; ++i) tail[i] = uniform<T>();
      transform16(tail);
    }
  }

  static constexpr double two_pi = 2.0 * std::numbers::pi;  // c10::pi<double> doubled: exact

  detail::mt19937 engine_;
  std::optional<double> cached_;
  std::uint64_t seed_ = 0;
};

/// @brief The Philox "GPU" stream of AUTOMATIC1111's stable-diffusion-webui
/// (`modules/rng_philox.py`, `Generator(seed).randn(shape)`), which imitates
/// `torch.randn(..., device='cuda')` on the CPU; stable-diffusion.cpp implements the same
/// stream. Verified against the numpy reference (tests/data/philox_gpu.ref).
///
/// **Addressing.** Call k (k = 0, 1, ... counts the `randn` calls on one generator) fills
/// element i (i < 2³²) from one Philox4x32-10 block (@ref diffusion::philox4x32_10) with
/// counter \f$(k, 0, i, 0)\f$ and key \f$(s \bmod 2^{32}, \lfloor s / 2^{32} \rfloor)\f$
/// for the 64-bit seed s. Output words \f$x = c_0\f$ and \f$y = c_1\f$ are used; \f$c_2, c_3\f$
/// are discarded (one normal per block, the sine branch only).
///
/// **Transform** (the reference's numpy dtypes: uint32 × float32 constant promotes to
/// float64, so everything is double; only the constants are float32 and only the result is
/// rounded to float):
/// \f[ u = x\,2^{-32} + 2^{-33},\quad v = \mathrm{fl}\bigl(\mathrm{fl}(y\,c) + c/2\bigr),\quad
///     c = \mathrm{float}(2\pi)\,2^{-32} = \mathtt{0x1.921fb6p{-}30},\quad
///     z = \sqrt{-2\ln u}\,\sin v, \f]
/// with \f$u\f$ exact, fl the double roundings of the reference (computed here so that no
/// compiler contraction can merge them), and `float(z)` the float output. The double
/// overload returns z before that last rounding.
///
/// **Agreement.** float output: bit-identical to rng_philox.py under numpy 1.24 on x86-64
/// without AVX-512 (numpy calls glibc's double `log`/`sin` there): all 1150 reference values,
/// 5 seeds × 5 successive calls. Real CUDA computes in float with its own `logf`/`sinf`, so
/// A1111's emulation, and this class, differ from it in the last bits: the webui's docstring
/// shows CUDA values for seed 0, printed to 8 decimals, that differ from the emulation by up
/// to 6 ulp of float (2.6e-7). Not measured here (no GPU).
///
/// Also a @ref diffusion::noise_source (see fill()).
class philox_gpu_generator {
 public:
  /// `Generator(seed)`: call counter 0.
  explicit philox_gpu_generator(std::uint64_t seed) noexcept : seed_(seed) {}

  /// The seed (the Philox key).
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }
  /// The index k of the next `randn` call (the reference's `offset`).
  [[nodiscard]] std::uint64_t calls() const noexcept { return calls_; }
  /// Sets the index of the next `randn` call, e.g. to resume a stream.
  void set_calls(std::uint64_t k) noexcept { calls_ = k; }

  /// Fills `out` as `Generator.randn(shape)` with `out.size()` = prod(shape), then advances
  /// the call counter. @throws std::out_of_range if the call index is ≥ 2³² or `out.size()`
  /// > 2³² (the reference's uint32 counters); nothing is advanced then.
  void randn(std::span<float> out) { randn_impl(out); }
  /// As the float overload, with the double value before the final rounding to float.
  void randn(std::span<double> out) { randn_impl(out); }

  /// Element `index` of call `call` of the stream with seed `seed`, before the rounding to
  /// float (a pure function: the stream is counter-addressed).
  [[nodiscard]] static double normal(std::uint64_t seed, std::uint32_t call, std::uint32_t index) noexcept {
    const auto c = philox4x32_10({call, 0u, index, 0u},
                                 {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
    // u = (2x + 1)·2^-33: the 33-bit integer and the power-of-two scaling are exact.
    const double u = static_cast<double>(2 * std::uint64_t{c[0]} + 1) * 0x1p-33;
    // fl(y·c) with c = 0xC90FDB·2^-53: the integer product (< 2^56) is exact and its
    // conversion is the one rounding of the reference's double product; the scaling is exact,
    // so a fused multiply-add of it with c/2 rounds exactly like the reference's sum.
    const double yc = static_cast<double>(std::uint64_t{c[1]} * angle_mantissa) * 0x1p-53;
    const double v = yc + angle_half_step;
    return std::sqrt(-2.0 * std::log(u)) * std::sin(v);
  }

  /// @ref diffusion::noise_source interface, with the webui's batch convention: sample b of
  /// a batch uses seed `seed() + b` (A1111's default seeds s, s+1, ...), `step` is the call
  /// index (0 = the initial latent, k = the k-th later call, e.g. an ancestral step) and
  /// element `offset + j` goes to `out[j]`. The call counter is not used or changed.
  /// @throws std::out_of_range if `step` ≥ 2³² or `offset + out.size()` > 2³².
  template <class T>
    requires real_scalar<T>
  void fill(std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out) const {
    constexpr const char* where = "diffusion::philox_gpu_generator::fill";
    check_counters(where, "step", step, offset, out.size());
    write(seed_ + sample, static_cast<std::uint32_t>(step), static_cast<std::uint32_t>(offset), out);
  }

 private:
  static constexpr std::uint64_t angle_mantissa = 0xC90FDBu;  // float(2π) = 0xC90FDB·2^-21
  static constexpr double angle_half_step = 0x1.921fb6p-31;    // c/2

  static void check_counters(const char* where, const char* call_name, std::uint64_t call, std::uint64_t offset,
                             std::size_t n) {
    constexpr std::uint64_t limit = std::uint64_t{1} << 32;
    if (call >= limit)
      detail::throw_out_of_range(where, std::string(call_name) + " = " + detail::to_text(call) +
                                            " is outside the allowed range [0, 2^32)");
    if (offset > limit || n > limit - offset)
      detail::throw_out_of_range(where, "offset + out.size() = " + detail::to_text(offset) + " + " +
                                            detail::to_text(n) + " is outside the allowed range [0, 2^32]");
  }

  template <class T>
  static void write(std::uint64_t seed, std::uint32_t call, std::uint32_t offset, std::span<T> out) {
    for (std::size_t j = 0; j < out.size(); ++j)
      out[j] = static_cast<T>(normal(seed, call, static_cast<std::uint32_t>(offset + j)));
  }

  template <class T>
  void randn_impl(std::span<T> out) {
    check_counters("diffusion::philox_gpu_generator::randn", "calls()", calls_, 0, out.size());
    write(seed_, static_cast<std::uint32_t>(calls_), 0u, out);
    ++calls_;
  }

  std::uint64_t seed_;
  std::uint64_t calls_ = 0;
};

static_assert(noise_source<philox_gpu_generator>);

}  // namespace diffusion

/// @}
