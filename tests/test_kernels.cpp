// The element-wise kernel against a long double reference on every length 0..40, at
// misaligned offsets, and in place.
#include <catch2/catch.hpp>

#include <diffusion/kernels.hpp>

#include <cmath>
#include <limits>
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
