// The element-wise kernels: affine2 against a long double reference (its error bound), every
// kernel against a scalar reference bit for bit (lengths, offsets, aliasing), in-kernel
// Philox noise against philox_normal::fill, and thread counts against the sequential run.
#include <catch2/catch.hpp>

#include <diffusion/execution.hpp>
#include <diffusion/kernels.hpp>
#include <diffusion/noise.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <vector>

TEMPLATE_TEST_CASE("affine2 is within its stated rounding bound of the exact value", "[kernels]", float, double) {
  using T = TestType;
  const double u = static_cast<double>(std::numeric_limits<T>::epsilon()) / 2;
  const T a = static_cast<T>(0.7310585786300049), b = static_cast<T>(-1.3862943611198906);
  for (std::size_t offset : {0u, 1u, 3u}) {
    for (std::size_t n = 0; n <= 40; ++n) {
      std::vector<T> x(n + offset), y(n + offset), out(n + offset);
      for (std::size_t k = 0; k < n + offset; ++k) {
        x[k] = static_cast<T>(std::sin(1.0 + static_cast<double>(k)));
        y[k] = static_cast<T>(std::cos(2.0 * static_cast<double>(k)));
      }
      std::span<const T> xs(x.data() + offset, n), ys(y.data() + offset, n);
      diffusion::kernels::affine2(a, xs, b, ys, std::span<T>(out.data() + offset, n));
      for (std::size_t k = 0; k < n; ++k) {
        const long double exact = static_cast<long double>(a) * xs[k] + static_cast<long double>(b) * ys[k];
        const double ax = std::abs(static_cast<double>(a) * static_cast<double>(xs[k]));
        const double by = std::abs(static_cast<double>(b) * static_cast<double>(ys[k]));
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
        const double bound = u * (by + std::abs(static_cast<double>(exact)));  // fma(a, x, fl(b y))
        (void)ax;
#else
        const double bound = u * (ax + 2 * by);  // fl(fl(a x) + fl(b y))
#endif
        INFO("n = " << n << " offset = " << offset << " k = " << k);
        CHECK(std::abs(static_cast<double>(static_cast<long double>(out[offset + k]) - exact)) <= bound * 1.0000001);
      }
      // In place over x gives the same bits.
      std::vector<T> x2 = x;
      diffusion::kernels::affine2(a, std::span<const T>(x2.data() + offset, n), b, ys, std::span<T>(x2.data() + offset, n));
      for (std::size_t k = 0; k < n; ++k) CHECK(x2[offset + k] == out[offset + k]);
    }
  }
  std::vector<T> x = {T(1), T(2)}, out(2);
  diffusion::kernels::scale(T(3), std::span<const T>(x), std::span<T>(out));
  CHECK(out == std::vector<T>{T(3), T(6)});
}

// ---------------------------------------------------------------------------------------
// SIMD kernels against plain scalar references written here, bit for bit: every length
// 0 … 3·width + 1, subspans starting at 1 … width − 1, in place, thread counts 1, 2, 3, 7.

namespace {

namespace k = diffusion::kernels;

template <class T>
constexpr std::size_t simd_width() {
  if constexpr (diffusion::simd::has_batch<T>)
    return xsimd::batch<T, diffusion::simd::arch>::size;
  else
    return 1;
}

// The reference multiply-add: fused exactly when the library's is (the build's SIMD target has FMA).
template <class T>
T ref_madd(T a, T x, T c) {
  if constexpr (k::fused_madd)
    return std::fma(a, x, c);
  else
    return a * x + c;
}

template <class T>
std::vector<T> data(std::size_t n, double phase) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<T>(1.7 * std::sin(phase + 0.37 * static_cast<double>(i)));
  return v;
}

// Checks out == ref bit for bit (NaN-free data).
template <class T>
void require_same(const std::vector<T>& got, const std::vector<T>& ref, std::size_t n, std::size_t off) {
  for (std::size_t i = 0; i < n; ++i) {
    INFO("n = " << n << " offset = " << off << " i = " << i);
    REQUIRE(got[off + i] == ref[off + i]);
  }
}

// A binary kernel f(x, y, out) against the elementwise reference g(x_i, y_i): every length,
// offset, both aliasings.
template <class T>
void check_binary(const std::function<void(std::span<const T>, std::span<const T>, std::span<T>)>& f,
                  const std::function<T(T, T)>& g) {
  constexpr std::size_t w = simd_width<T>();
  for (std::size_t off = 0; off < std::max<std::size_t>(w, 2); ++off) {
    for (std::size_t n = 0; n <= 3 * w + 1; ++n) {
      const auto x = data<T>(n + off, 0.3), y = data<T>(n + off, 1.9);
      std::vector<T> ref(n + off), out(n + off);
      for (std::size_t i = 0; i < n; ++i) ref[off + i] = g(x[off + i], y[off + i]);
      const std::span<const T> xs(x.data() + off, n), ys(y.data() + off, n);
      f(xs, ys, std::span<T>(out.data() + off, n));
      require_same(out, ref, n, off);
      auto xa = x;  // out == x
      f(std::span<const T>(xa.data() + off, n), ys, std::span<T>(xa.data() + off, n));
      require_same(xa, ref, n, off);
      auto ya = y;  // out == y
      f(xs, std::span<const T>(ya.data() + off, n), std::span<T>(ya.data() + off, n));
      require_same(ya, ref, n, off);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("SIMD kernels equal a scalar reference bit for bit at every length, offset and aliasing",
                   "[kernels][simd]", float, double) {
  using T = TestType;
  const T a = static_cast<T>(0.7310585786300049), b = static_cast<T>(-1.3862943611198906);
  check_binary<T>([&](auto x, auto y, auto o) { k::affine2(a, x, b, y, o); },
                  [&](T x, T y) { return ref_madd(a, x, b * y); });
  check_binary<T>([&](auto x, auto, auto o) { k::scale(a, x, o); }, [&](T x, T) { return a * x; });
  check_binary<T>([&](auto c, auto u, auto o) { k::guidance_combine(b, c, u, o); },
                  [&](T c, T u) { return ref_madd(b, c - u, u); });
  // The buffer forms of the noise kernels, with y as the noise.
  const T c = static_cast<T>(0.3);
  check_binary<T>([&](auto x, auto z, auto o) { k::affine_noise(a, x, b, z, o); },
                  [&](T x, T z) { return ref_madd(a, x, b * z); });
  check_binary<T>([&](auto x, auto z, auto o) { k::add_noise(c, x, z, o); }, [&](T x, T z) { return ref_madd(c, z, x); });
  check_binary<T>([&](auto x, auto z, auto o) { k::affine2_noise(a, x, b, x, c, z, o); },
                  [&](T x, T z) { return ref_madd(c, z, ref_madd(a, x, b * x)); });
  check_binary<T>([&](auto x, auto d, auto o) { k::langevin(a, c, x, d, k::no_noise{}, o); },
                  [&](T x, T d) { return ref_madd(a, d - x, x); });
  check_binary<T>([&](auto x, auto d, auto o) { k::langevin(a, c, x, d, std::span<const T>(d), o); },
                  [&](T x, T d) { return ref_madd(c, d, ref_madd(a, d - x, x)); });
}

TEMPLATE_TEST_CASE("Clipping in the fused DDPM kernel is std::clamp, NaN and signed zeros included", "[kernels][simd]",
                   float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> x = {T(2), T(-2), T(0.5), -T(0), T(0), inf, -inf, nan, T(1), T(-1), T(1.5), T(-0.25), T(3), T(-7), T(0.9), T(-0.9), T(2)};
  const std::size_t n = x.size();
  std::vector<T> zero(n, T(0)), x0(n), xn(n);
  const k::ddpm_coefficients<T> c{.x0_from_x = T(1), .x0_from_out = T(0), .clip = true, .clip_value = T(1),
                                   .mean_x0 = T(1), .mean_xt = T(0), .sigma = T(0)};
  k::ddpm_ancestral(c, std::span<const T>(x), std::span<const T>(zero), k::no_noise{}, std::span<T>(x0), std::span<T>(xn));
  for (std::size_t i = 0; i < n; ++i) {
    INFO("i = " << i << " x = " << x[i]);
    const T ref = std::clamp(ref_madd(T(1), x[i], T(0) * T(0)), T(-1), T(1));
    if (std::isnan(ref)) {
      CHECK(std::isnan(x0[i]));
    } else {
      CHECK(x0[i] == ref);
      CHECK(std::signbit(x0[i]) == std::signbit(ref));
    }
  }
}

TEMPLATE_TEST_CASE("In-kernel Philox noise equals a buffer filled by philox_normal::fill at the same addresses",
                   "[kernels][noise]", float, double) {
  using T = TestType;
  const diffusion::philox_normal noise(0x5eed);
  const T a = static_cast<T>(0.9), b = static_cast<T>(-0.4), c = static_cast<T>(0.25);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{255}, std::size_t{256},
                        std::size_t{257}, std::size_t{1000}}) {
    for (std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{3}, std::uint64_t{513}}) {
      const auto x = data<T>(n, 0.1), y = data<T>(n, 2.2);
      std::vector<T> z(n), ref(n), out(n);
      noise.fill(7, 11, offset, std::span<T>(z));
      const std::span<const T> xs(x), ys(y), zs(z);
      k::affine2_noise(a, xs, b, ys, c, zs, std::span<T>(ref));
      k::affine2_noise(a, xs, b, ys, c, noise, 7, 11, offset, std::span<T>(out));
      require_same(out, ref, n, 0);
      const k::philox_stream st{&noise, 7, 11, offset};
      k::affine_noise(a, xs, b, zs, std::span<T>(ref));
      k::affine_noise(a, xs, b, st, std::span<T>(out));
      require_same(out, ref, n, 0);
      k::add_noise(c, xs, zs, std::span<T>(ref));
      k::add_noise(c, xs, st, std::span<T>(out));
      require_same(out, ref, n, 0);
      k::langevin(a, c, xs, ys, zs, std::span<T>(ref));
      auto xa = x;  // in place
      k::langevin(a, c, std::span<const T>(xa), ys, st, std::span<T>(xa));
      require_same(xa, ref, n, 0);
    }
  }
  // Rows: row r of length L is stream (first_sample + r, step) from offset 0.
  const std::size_t rows = 5, L = 300;
  const auto x = data<T>(rows * L, 0.7);
  std::vector<T> z(rows * L), ref(rows * L), out(rows * L);
  for (std::size_t r = 0; r < rows; ++r) noise.fill(40 + r, 2, 0, std::span<T>(z).subspan(r * L, L));
  k::add_noise(c, std::span<const T>(x), std::span<const T>(z), std::span<T>(ref));
  k::add_noise(c, std::span<const T>(x), k::philox_stream{&noise, 40, 2, 0, L}, std::span<T>(out));
  require_same(out, ref, rows * L, 0);

  // The kernels generate SIMD chunks of normals one at a time where the addresses allow it and
  // fall back to fill elsewhere: offsets off a block start, rows shorter than a chunk, rows that
  // cross a multiple of 2^32 blocks, and lengths that end mid-chunk all give fill's bits.
  using u64 = std::uint64_t;
  const u64 near = (std::is_same_v<T, float> ? 4 : 2) * ((u64{1} << 32) - 40);  // 40 blocks before 2^32 blocks
  for (u64 offset : {u64{0}, u64{1}, u64{2}, u64{4}, u64{96}, near, near + 1, ~u64{0} - 700}) {
    for (std::size_t len : {std::size_t{5}, std::size_t{31}, std::size_t{32}, std::size_t{100}, std::size_t{512},
                            std::size_t{777}, std::size_t{1500}}) {
      const std::size_t m = 3 * len;
      const auto xr = data<T>(m, 0.3), yr = data<T>(m, 1.9);
      std::vector<T> zr(m), want(m), got(m), x0_want(m), x0_got(m);
      for (std::size_t r = 0; r < 3; ++r) noise.fill(70 + r, 5, offset, std::span<T>(zr).subspan(r * len, len));
      const k::ddpm_coefficients<T> dc{a, b, false, T(1), static_cast<T>(0.6), static_cast<T>(0.4), c};
      const std::span<const T> xs(xr), ys(yr);
      k::ddpm_ancestral(dc, xs, ys, std::span<const T>(zr), std::span<T>(x0_want), std::span<T>(want));
      k::ddpm_ancestral(dc, xs, ys, k::philox_stream{&noise, 70, 5, offset, len}, std::span<T>(x0_got),
                        std::span<T>(got));
      INFO("offset = " << offset << " len = " << len);
      require_same(got, want, m, 0);
      require_same(x0_got, x0_want, m, 0);
    }
  }
}

TEMPLATE_TEST_CASE("Kernels give the same bits for 1, 2, 3 and 7 threads as sequentially", "[kernels][threads]", float,
                   double) {
  using T = TestType;
  const diffusion::philox_normal noise(99);
  const std::size_t rows = 3, L = 1237, n = rows * L;
  const auto x = data<T>(n, 0.5), y = data<T>(n, 1.5);
  const T a = static_cast<T>(1.1), b = static_cast<T>(-0.3), c = static_cast<T>(0.05);
  const k::philox_stream st{&noise, 0, 9, 0, L};
  std::vector<T> ref(n), ref2(n), ref3(n);
  k::affine2(a, std::span<const T>(x), b, std::span<const T>(y), std::span<T>(ref));
  k::affine2_noise(a, std::span<const T>(x), b, std::span<const T>(y), c, st, std::span<T>(ref2));
  const k::ddpm_coefficients<T> dc{a, b, true, T(1), static_cast<T>(0.6), static_cast<T>(0.4), c};
  std::vector<T> x0_ref(n);
  k::ddpm_ancestral(dc, std::span<const T>(x), std::span<const T>(y), st, std::span<T>(x0_ref), std::span<T>(ref3));
  for (unsigned threads : {1u, 2u, 3u, 7u}) {
    INFO("threads = " << threads);
    const diffusion::parallel_policy par{threads, 100};
    std::vector<T> out(n), out2(n), out3(n), x0(n);
    k::affine2(a, std::span<const T>(x), b, std::span<const T>(y), std::span<T>(out), par);
    k::affine2_noise(a, std::span<const T>(x), b, std::span<const T>(y), c, st, std::span<T>(out2), par);
    k::ddpm_ancestral(dc, std::span<const T>(x), std::span<const T>(y), st, std::span<T>(x0), std::span<T>(out3), par);
    CHECK(out == ref);
    CHECK(out2 == ref2);
    CHECK(out3 == ref3);
    CHECK(x0 == x0_ref);
  }
}
