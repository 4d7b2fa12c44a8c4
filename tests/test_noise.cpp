// The noise layer: Philox4x32-10 against the published Random123 known answers;
// philox_normal's documented layout, bit-identity across offsets, chunkings and the
// scalar/SIMD paths; distinct streams; statistical quality with fixed seeds; and the
// accuracy of the library's own ln, sin and cos against long double references.
//
// Every statistical check states its false-failure probability for a random seed; the
// seeds are fixed (and printed), so a given build either always passes or always fails.
#include <catch2/catch.hpp>

#include <diffusion/noise.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <vector>

namespace {

using diffusion::philox_normal;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

template <class T>
using bits_t = std::conditional_t<std::is_same_v<T, float>, u32, u64>;

template <class T>
bool same_bits(T a, T b) {
  return std::bit_cast<bits_t<T>>(a) == std::bit_cast<bits_t<T>>(b);
}

/// |got − ref| in units of the last place of T at ref (fractional; ≤ 0.5 means correctly rounded).
template <class T>
double ulp_error(T got, long double ref) {
  const long double mag = std::fabs(ref);
  if (mag == 0) return got == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  const int e = std::ilogb(mag);  // 2^e ≤ |ref| < 2^(e+1)
  const long double ulp = std::ldexp(1.0L, e - (std::numeric_limits<T>::digits - 1));
  return static_cast<double>(std::fabs(static_cast<long double>(got) - ref) / ulp);
}

constexpr std::size_t per_block(bool is_float) { return is_float ? 4 : 2; }

/// The documented uniform of a word: (2m + 1)·2^-(p+1), m the word's top p bits (exact).
long double documented_uniform_float(u32 w) { return std::ldexp(2.0L * static_cast<long double>(w >> 9) + 1, -24); }
long double documented_uniform_double(u64 w) { return std::ldexp(2.0L * static_cast<long double>(w >> 12) + 1, -53); }

/// Reference sin 2πu, cos 2πu in long double with an exact reduction (u − q/4 is exact),
/// so the reference keeps its relative accuracy near the zeros of sin and cos.
void reference_sincos_2pi(long double u, long double& s, long double& c) {
  const long double q = std::nearbyint(4 * u);
  const long double f = u - q / 4;  // exact
  const long double a = 2 * std::numbers::pi_v<long double> * f;
  const long double sf = std::sin(a), cf = std::cos(a);
  switch (static_cast<int>(q) & 3) {
    case 0:
      s = sf, c = cf;
      break;
    case 1:
      s = cf, c = -sf;
      break;
    case 2:
      s = -sf, c = -cf;
      break;
    default:
      s = -cf, c = sf;
      break;
  }
}

}  // namespace

// --------------------------------------------------------------------------------------
// Philox4x32-10

TEST_CASE("philox4x32_10 reproduces the Random123 known-answer vectors", "[noise][philox]") {
  // Published vectors: Random123 (D. E. Shaw Research), tests/kat_vectors, the three
  // lines "philox4x32 10 <ctr: 4 words> <key: 2 words> <expected: 4 words>":
  //   philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d bc57ac4c 9b00dbd8
  //   philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d 41c83b0e a20bc7c6 6d5451fd
  //   philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   d16cfe09 94fdcceb 5001e420 24126ea1
  struct kat {
    std::array<u32, 4> ctr;
    std::array<u32, 2> key;
    std::array<u32, 4> expected;
  };
  const std::array<kat, 3> vectors{{
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  }};
  for (const auto& v : vectors) CHECK(diffusion::philox4x32_10(v.ctr, v.key) == v.expected);

  // It is usable in constant expressions.
  static_assert(diffusion::philox4x32_10({0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5u);
}

// --------------------------------------------------------------------------------------
// The documented layout of philox_normal

TEST_CASE("philox_normal: the key is the seed's two 32-bit halves", "[noise]") {
  constexpr philox_normal noise(0x0123456789ABCDEFull);
  STATIC_REQUIRE(noise.seed() == 0x0123456789ABCDEFull);
  STATIC_REQUIRE(noise.key() == std::array<u32, 2>{0x89ABCDEFu, 0x01234567u});
}

TEMPLATE_TEST_CASE("philox_normal: normal k is the documented function of (seed, sample, step, k)", "[noise]", float,
                   double) {
  using T = TestType;
  constexpr bool is_float = std::is_same_v<T, float>;
  const u64 seed = 0xC0FFEE1234567ull;
  INFO("seed = " << seed);
  const philox_normal noise(seed);
  const std::array<u64, 6> samples{0, 1, 7, 0xFFFFFFFFull, 0x100000003ull, ~u64{0}};
  const std::array<u64, 4> steps{0, 999, 0x1FFFFFFFFull, 0x8000000000000005ull};
  const std::array<u64, 7> ks{0, 1, 2, 3, 4097, 0x123456789ABull, ~u64{0}};
  for (u64 sample : samples)
    for (u64 step : steps)
      for (u64 k : ks) {
        // Counter (lo32(b), hi32(b), lo32(sample), lo32(step)) with b = ⌊k / normals per block⌋.
        const u64 b = k / per_block(is_float);
        const auto x = diffusion::philox4x32_10(
            {static_cast<u32>(b), static_cast<u32>(b >> 32), static_cast<u32>(sample), static_cast<u32>(step)},
            {static_cast<u32>(seed), static_cast<u32>(seed >> 32)});
        long double u0, u1;
        if constexpr (is_float) {
          const std::size_t pair = static_cast<std::size_t>(k % 4) / 2;  // (x0, x1) or (x2, x3)
          u0 = documented_uniform_float(x[2 * pair]);
          u1 = documented_uniform_float(x[2 * pair + 1]);
        } else {
          u0 = documented_uniform_double((u64{x[0]} << 32) | x[1]);
          u1 = documented_uniform_double((u64{x[2]} << 32) | x[3]);
        }
        const long double r = std::sqrt(-2 * std::log(u0));
        long double s, c;
        reference_sincos_2pi(u1, s, c);
        const long double expected = (k % 2 == 0) ? r * c : r * s;
        const T got = noise.at<T>(sample, step, k);
        // Error budget (u the unit roundoff): r has relative error ≤ 3u (ln ≤ 1.35 ulp, then
        // √), cos/sin ≤ 1.75 ulp ≈ 3.5u relative, the product u: |err| ≤ 7.5u|z| ≤ 4u(r + |z|)
        // as |z| ≤ r.
        const long double u = std::numeric_limits<T>::epsilon() / 2;
        INFO("sample = " << sample << " step = " << step << " k = " << k);
        CHECK(std::fabs(got - expected) <= 4 * u * (r + std::fabs(expected)));
        // sample and step are taken mod 2^32.
        CHECK(same_bits(got, noise.at<T>(sample + (u64{1} << 32), step - (u64{7} << 32), k)));
      }
}

// --------------------------------------------------------------------------------------
// Bit-identity: offsets, chunkings, scalar (at) and SIMD (fill) paths

TEMPLATE_TEST_CASE("philox_normal::fill equals at() bit for bit for every offset, length and alignment", "[noise]",
                   float, double) {
  using T = TestType;
  const philox_normal noise(20240611);
  // The SIMD path works on chunks of 32 normals (SSE2 and AVX2; 128 would cover 512-bit
  // batches); lengths up to 3·128 + 1 cover partial chunks at both ends and several whole ones.
  constexpr std::size_t width = 128;
  std::vector<T> buffer(3 * width + 1 + 8), expected(3 * width + 1);
  for (u64 offset : {u64{0}, u64{1}, u64{2}, u64{3}, u64{5}, u64{127}, u64{1000003}, (u64{1} << 40) + 1}) {
    for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = noise.at<T>(4, 11, offset + i);
    for (std::size_t misalign : {std::size_t{0}, std::size_t{3}}) {
      for (std::size_t n = 0; n <= 3 * width + 1; ++n) {
        std::fill(buffer.begin(), buffer.end(), T(-99));
        const std::span<T> out(buffer.data() + misalign, n);
        noise.fill(4, 11, offset, out);
        bool all = true;
        for (std::size_t i = 0; i < n; ++i) all = all && same_bits(out[i], expected[i]);
        // Nothing outside the span is written.
        bool untouched = true;
        for (std::size_t i = 0; i < misalign; ++i) untouched = untouched && buffer[i] == T(-99);
        for (std::size_t i = misalign + n; i < buffer.size(); ++i) untouched = untouched && buffer[i] == T(-99);
        INFO("offset = " << offset << " misalign = " << misalign << " n = " << n);
        REQUIRE(all);
        REQUIRE(untouched);
      }
    }
  }
}

TEMPLATE_TEST_CASE("philox_normal::fill does not depend on the chunking", "[noise]", float, double) {
  using T = TestType;
  const philox_normal noise(7);
  std::vector<T> whole(100), parts(100);
  noise.fill(0, 3, 0, std::span<T>(whole));
  noise.fill(0, 3, 0, std::span<T>(parts).first(37));
  noise.fill(0, 3, 37, std::span<T>(parts).subspan(37));
  CHECK(std::equal(whole.begin(), whole.end(), parts.begin(), [](T a, T b) { return same_bits(a, b); }));

  // A long stream cut at pseudo-random places (a fixed LCG), against one fill.
  const std::size_t n = 20000;
  std::vector<T> one(n), cut(n);
  noise.fill(2, 5, 999, std::span<T>(one));
  u64 lcg = 12345;
  for (std::size_t done = 0; done < n;) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    const std::size_t len = std::min<std::size_t>(n - done, (lcg >> 33) % 300);
    noise.fill(2, 5, 999 + done, std::span<T>(cut).subspan(done, len));
    done += len;
  }
  CHECK(std::equal(one.begin(), one.end(), cut.begin(), [](T a, T b) { return same_bits(a, b); }));
}

TEMPLATE_TEST_CASE("philox_normal: the stream index wraps mod 2^64 and blocks cross 2^32 boundaries", "[noise]", float,
                   double) {
  using T = TestType;
  constexpr u64 nb = per_block(std::is_same_v<T, float>);
  const philox_normal noise(31337);
  for (u64 start : {~u64{0} - 150,                       // wraps to index 0
                    nb * ((u64{1} << 32) - 7) - 3,       // the block index crosses 2^32
                    nb * ((u64{5} << 32) - 100) + 1}) {  // and again, several chunks before it
    std::vector<T> out(300);
    noise.fill(9, 9, start, std::span<T>(out));
    bool all = true;
    for (std::size_t i = 0; i < out.size(); ++i) all = all && same_bits(out[i], noise.at<T>(9, 9, start + i));
    INFO("start = " << start);
    CHECK(all);
  }
}

TEMPLATE_TEST_CASE("detail::philox_row (a stream with its plan built once) equals philox_normal::fill", "[noise]",
                   float, double) {
  using T = TestType;
  using row_t = diffusion::detail::philox_row<T>;
  constexpr u64 nb = per_block(std::is_same_v<T, float>);
  const philox_normal noise(0xC0FFEEull);
  const u64 sample = 3, step = 8;
  const row_t row(noise.key(), sample, step);
  // fill(offset, out) for many offsets and lengths, from one row object.
  for (u64 base : {u64{0}, u64{1000}, nb * ((u64{1} << 32) - 5), ~u64{0} - 200}) {
    for (u64 d = 0; d < 9; ++d) {
      for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{31}, std::size_t{32},
                            std::size_t{33}, std::size_t{64}, std::size_t{100}, std::size_t{257}}) {
        std::vector<T> got(n + 1, T(-99)), want(n);
        row.fill(base + d, std::span<T>(got).first(n));
        noise.fill(sample, step, base + d, std::span<T>(want));
        bool all = got[n] == T(-99);
        for (std::size_t i = 0; i < n; ++i) all = all && same_bits(got[i], want[i]);
        INFO("base = " << base << " d = " << d << " n = " << n);
        REQUIRE(all);
      }
    }
  }
  // simd_chunk: the chunks simd_chunks_at allows, one at a time, equal fill; none is
  // allowed off a block start, nor across a multiple of 2^32 blocks.
  if constexpr (row_t::chunk != 0) {
    constexpr std::size_t C = row_t::chunk;
    CHECK(row.simd_chunks_at(1, 10 * C) == 0);
    CHECK(row.simd_chunks_at(0, C - 1) == 0);
    CHECK(row.simd_chunks_at(0, 10 * C + 1) == 10);
    CHECK(row.simd_chunks_at(nb * ((u64{1} << 32) - 2 * C / nb), 10 * C) == 2);  // stops at 2^32 blocks
    for (u64 k : {u64{0}, u64{nb * 7}, u64{nb * 1001}, nb * ((u64{1} << 32) - 3 * C / nb), nb * (u64{9} << 32),
                  nb * ((u64{1} << 40) + 5)}) {
      const std::size_t chunks = row.simd_chunks_at(k, 3 * C);
      CHECK(chunks == 3);
      const auto run = row.simd_run(k);
      std::vector<T> got(3 * C + 1, T(-99)), want(3 * C);
      for (std::size_t c = 0; c < chunks; ++c) row.simd_chunk(run, k + c * C, got.data() + c * C);
      noise.fill(sample, step, k, std::span<T>(want));
      bool all = got[3 * C] == T(-99);
      for (std::size_t i = 0; i < 3 * C; ++i) all = all && same_bits(got[i], want[i]);
      INFO("k = " << k);
      CHECK(all);
    }
  }
}

// --------------------------------------------------------------------------------------
// Reference streams: checksums of fill (the SIMD path wherever a whole chunk fits) and of
// at() (the scalar path), recorded from the implementation before the AVX-512 path and the
// fused last round existed (commit 7dcdeec, GCC 12, x86-64): with -march=x86-64 and
// x86-64-v2 (no fused multiply–add) and with -march=x86-64-v3 and native AVX-512 (fused),
// each family giving one set of values whatever the SIMD width. Any change to the bits a
// build produces, in the integer part or in the rounding of the transform, shows here.

namespace {

/// The xsimd architecture of the generator's SIMD path ("none" without one).
const char* noise_arch_name() {
  using A = diffusion::detail::noise_arch;
  if constexpr (std::is_void_v<A>)
    return "none";
  else
    return A::name();
}

/// FNV-1a (64-bit) over the little-endian bytes of the values.
template <class T>
u64 fnv1a(std::span<const T> values) {
  u64 h = 0xcbf29ce484222325ull;
  for (const T x : values) {
    const auto b = std::bit_cast<bits_t<T>>(x);
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      h ^= (b >> (8 * i)) & 0xFF;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

struct reference_stream {
  u64 seed, sample, step, offset;
  std::size_t n;
  u64 float_hash, double_hash;
};

// {seed, sample, step, offset, n, FNV-1a of the float normals, of the double normals}
constexpr reference_stream reference_fused[] = {
    {0x5eed5eedull, 0, 0, 0, 65536, 0x4b3b56a0086a1837ull, 0x3a858cbac4e80a35ull},
    {20240611, 4, 11, 3, 10007, 0xb72d148826f1e42aull, 0x4971aeae7b567f5aull},
    {0xc0ffeeull, 0xffffffffull, 999, (u64{1} << 34) - 777, 5000, 0xd80ecef29a627adbull, 0x1986b157775b0b45ull},
    {1, 2, 3, ~u64{0} - 300, 1000, 0x176fece12abfd864ull, 0xe3b1eb914931c1ebull},
};
constexpr reference_stream reference_unfused[] = {
    {0x5eed5eedull, 0, 0, 0, 65536, 0x541a03e7ccf8f2ceull, 0x47ce60163b2c6597ull},
    {20240611, 4, 11, 3, 10007, 0x4377ccd9ab78a737ull, 0xfbf16ee592c3ecd9ull},
    {0xc0ffeeull, 0xffffffffull, 999, (u64{1} << 34) - 777, 5000, 0xd61d63e45c441e11ull, 0x1ddebc01a107f93dull},
    {1, 2, 3, ~u64{0} - 300, 1000, 0x4038fcf8b6f227a4ull, 0x933f527277f10d82ull},
};

}  // namespace

TEMPLATE_TEST_CASE("philox_normal: fill and at() reproduce the recorded reference streams bit for bit", "[noise]",
                   float, double) {
  using T = TestType;
  using row_t = diffusion::detail::philox_row<T>;
  WARN("noise SIMD path: " << noise_arch_name() << ", " << row_t::chunk
                           << " normals per kernel chunk; fused multiply-add: " << diffusion::simd::fused_madd);
  const auto& table = diffusion::simd::fused_madd ? reference_fused : reference_unfused;
  for (const reference_stream& r : table) {
    INFO("seed = " << r.seed << " sample = " << r.sample << " step = " << r.step << " offset = " << r.offset
                   << " n = " << r.n);
    const u64 expected = std::is_same_v<T, float> ? r.float_hash : r.double_hash;
    const philox_normal noise(r.seed);
    std::vector<T> v(r.n);
    noise.fill(r.sample, r.step, r.offset, std::span<T>(v));
    CHECK(fnv1a<T>(v) == expected);
    for (std::size_t i = 0; i < r.n; ++i) v[i] = noise.at<T>(r.sample, r.step, r.offset + i);
    CHECK(fnv1a<T>(v) == expected);
    // And through the fused kernels' interface: whole SIMD chunks where simd_chunks_at allows.
    const row_t row(noise.key(), r.sample, r.step);
    std::fill(v.begin(), v.end(), T(0));
    std::size_t done = 0;
    if constexpr (row_t::chunk != 0) {
      const std::size_t head = static_cast<std::size_t>((row_t::chunk - r.offset % row_t::chunk) % row_t::chunk);
      row.fill(r.offset, std::span<T>(v).first(std::min(head, r.n)));
      done = std::min(head, r.n);
      const std::size_t chunks = row.simd_chunks_at(r.offset + done, r.n - done);
      if (chunks != 0) {
        const auto run = row.simd_run(r.offset + done);
        for (std::size_t c = 0; c < chunks; ++c, done += row_t::chunk)
          row.simd_chunk(run, r.offset + done, v.data() + done);
      }
    }
    row.fill(r.offset + done, std::span<T>(v).subspan(done));
    CHECK(fnv1a<T>(v) == expected);
  }
}

TEMPLATE_TEST_CASE("philox_normal: different seeds, samples and steps give different streams", "[noise]", float,
                   double) {
  using T = TestType;
  const std::size_t n = 1000;
  const auto stream = [n](u64 seed, u64 sample, u64 step) {
    std::vector<T> v(n);
    philox_normal(seed).fill(sample, step, 0, std::span<T>(v));
    return v;
  };
  // Two independent continuous draws coincide with probability ~2^-p per position: any
  // coincidence in 1000 positions would be a layout bug (false alarm < 1e-3 even for float).
  const auto count_equal = [n](const std::vector<T>& a, const std::vector<T>& b) {
    std::size_t same = 0;
    for (std::size_t i = 0; i < n; ++i) same += a[i] == b[i];
    return same;
  };
  const auto base = stream(1, 0, 0);
  CHECK(count_equal(base, stream(2, 0, 0)) == 0);
  CHECK(count_equal(base, stream(u64{1} | (u64{1} << 32), 0, 0)) == 0);  // high half of the seed matters
  CHECK(count_equal(base, stream(1, 1, 0)) == 0);
  CHECK(count_equal(base, stream(1, 0, 1)) == 0);
  CHECK(count_equal(stream(1, 1, 0), stream(1, 0, 1)) == 0);  // sample and step are not interchangeable
  CHECK(count_equal(base, stream(1, u64{1} << 32, 0)) == n);  // documented: sample is taken mod 2^32
}

// --------------------------------------------------------------------------------------
// Statistical quality (fixed seeds; each bound's false-failure probability is stated)

namespace {

/// Standard normal CDF.
double phi(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }

/// Smallest c with P(N > c) ≤ p and largest c with P(N < c) ≤ p for N ~ Poisson(λ).
std::pair<long, long> poisson_bounds(double lambda, double p) {
  long double pmf = std::exp(-static_cast<long double>(lambda)), cdf = pmf;
  long lo = -1;  // P(N ≤ lo) ≤ p: counts ≤ lo are rejected
  long k = 0;
  if (cdf <= p) lo = 0;
  while (1 - cdf > p) {
    ++k;
    pmf *= lambda / static_cast<long double>(k);
    cdf += pmf;
    if (cdf <= p) lo = k;
  }
  return {lo + 1, k};  // accept lo + 1 ≤ count ≤ k
}

}  // namespace

TEMPLATE_TEST_CASE("philox_normal: mean, variance, Kolmogorov–Smirnov and cross-stream correlation on 1e7 draws "
                   "(1e6 unoptimized)",
                   "[noise][statistics]", float, double) {
  using T = TestType;
  const u64 seed = 0x5EED0001;
  INFO("seed = " << seed << ", stream (sample 0, step 0)");
#if defined(__OPTIMIZE__) || !defined(__GNUC__)
  const std::size_t n = 10000000;
#else
  const std::size_t n = 1000000;  // unoptimized (Debug, sanitizer) builds: same false-alarm rates
#endif
  const philox_normal noise(seed);
  std::vector<T> x(n), y(n);
  noise.fill(0, 0, 0, std::span<T>(x));
  noise.fill(1, 0, 0, std::span<T>(y));  // another stream, for the correlation

  double sum = 0, sum2 = 0, sum_xy = 0, sum_y = 0, sum_y2 = 0, lag1 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double a = static_cast<double>(x[i]), b = static_cast<double>(y[i]);
    sum += a;
    sum2 += a * a;
    sum_y += b;
    sum_y2 += b * b;
    sum_xy += a * b;
    if (i + 1 < n) lag1 += a * static_cast<double>(x[i + 1]);
  }
  const double dn = static_cast<double>(n);
  const double mean = sum / dn, var = (sum2 - dn * mean * mean) / (dn - 1);
  // Mean: standard error 1/√n; |z| > 5 has probability 5.7e-7.
  CHECK(std::fabs(mean) <= 5 / std::sqrt(dn));
  // Variance: for normal data Var(s²) = 2/(n − 1); 5 standard errors.
  CHECK(std::fabs(var - 1) <= 5 * std::sqrt(2 / (dn - 1)));
  // Correlation of two streams, and of neighbours within a stream (normals 2j and 2j + 1
  // share r but r cos θ and r sin θ are uncorrelated): standard error 1/√n, 5 of them.
  const double mean_y = sum_y / dn;
  const double corr =
      (sum_xy / dn - mean * mean_y) / std::sqrt((sum2 / dn - mean * mean) * (sum_y2 / dn - mean_y * mean_y));
  CHECK(std::fabs(corr) <= 5 / std::sqrt(dn));
  CHECK(std::fabs(lag1 / (dn - 1)) <= 5 / std::sqrt(dn));

  // Kolmogorov–Smirnov against Φ: P(√n D > λ) ≈ 2 exp(−2λ²) for large λ, so α = 1e-6 gives
  // λ = √(ln(2/α)/2) = 2.6932. (The grids of u, 2^-24 in float, move the CDF by < 1e-6, i.e.
  // √n D by < 0.004 at n = 1e7.)
  std::sort(x.begin(), x.end());
  double d = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double f = phi(static_cast<double>(x[i]));
    d = std::max({d, static_cast<double>(i + 1) / dn - f, f - static_cast<double>(i) / dn});
  }
  const double critical = std::sqrt(std::log(2 / 1e-6) / 2);
  INFO("sqrt(n) D = " << std::sqrt(dn) * d << " (critical " << critical << ")");
  CHECK(std::sqrt(dn) * d <= critical);
  WARN("philox_normal<" << (std::is_same_v<T, float> ? "float" : "double") << ">, n = " << n << ": mean = " << mean
                        << ", variance = " << var << ", corr = " << corr << ", sqrt(n) D = " << std::sqrt(dn) * d);
}

TEMPLATE_TEST_CASE("philox_normal: tail frequencies beyond 4σ and 5σ (1e7 draws, 1e6 unoptimized)",
                   "[noise][statistics]", float, double) {
  using T = TestType;
  const u64 seed = 0x5EED0002;
  INFO("seed = " << seed);
  const philox_normal noise(seed);
#if defined(__OPTIMIZE__) || !defined(__GNUC__)
  const std::size_t n = 10000000;
#else
  const std::size_t n = 1000000;  // unoptimized (Debug, sanitizer) builds: 1e6 draws, same false-alarm rate
#endif
  const std::size_t piece = 1000000;
  std::vector<T> x(piece);
  long beyond4 = 0, beyond5 = 0;
  for (std::size_t done = 0; done < n; done += piece) {
    noise.fill(3, 1, done, std::span<T>(x));
    for (T v : x) {
      beyond4 += std::fabs(v) > T(4);
      beyond5 += std::fabs(v) > T(5);
    }
  }
  // Counts are Poisson(n·2Φ(−t)); accept the central range whose two tails each have
  // probability ≤ 2.9e-7 (that of a one-sided 5σ normal deviation).
  const double lambda4 = static_cast<double>(n) * 2 * phi(-4), lambda5 = static_cast<double>(n) * 2 * phi(-5);
  const auto [lo4, hi4] = poisson_bounds(lambda4, 2.9e-7);
  const auto [lo5, hi5] = poisson_bounds(lambda5, 2.9e-7);
  INFO("beyond 4σ: " << beyond4 << " (expected " << lambda4 << ", accepted [" << lo4 << ", " << hi4 << "])");
  INFO("beyond 5σ: " << beyond5 << " (expected " << lambda5 << ", accepted [" << lo5 << ", " << hi5 << "])");
  CHECK(beyond4 >= lo4);
  CHECK(beyond4 <= hi4);
  CHECK(beyond5 >= lo5);
  CHECK(beyond5 <= hi5);
}

// --------------------------------------------------------------------------------------
// Accuracy of the library's own ln, sin 2πu and cos 2πu against long double references

namespace {

/// Error budgets in ulps (the largest errors measured, rounded up; the float ones were
/// measured exhaustively over all 2^23 float uniforms, the double ones on 4e6). With a
/// fused multiply–add (FMA3, AVX-512, AArch64) and without (plain x86-64, SSE2–SSE4.2, AVX):
struct budget {
  double ln, sincos, ln_vs_std;
};
template <class T>
constexpr budget accuracy_budget() {
  if constexpr (std::is_same_v<T, float>)
    return diffusion::simd::fused_madd ? budget{1.0, 1.0, 1.5} : budget{1.0, 1.75, 1.5};
  else
    return diffusion::simd::fused_madd ? budget{1.2, 1.1, 1.5} : budget{1.35, 1.6, 1.5};
}

/// Largest errors over the given words; the reference for sin/cos reduces exactly.
template <class T>
void check_transform_accuracy(const std::vector<bits_t<T>>& words) {
  double worst_log = 0, worst_log_std = 0, worst_sin = 0, worst_cos = 0;
  bool documented = true;
  for (const bits_t<T> w : words) {
    const T u = diffusion::detail::uniform_from_word<T>(w);
    if constexpr (std::is_same_v<T, float>)
      documented = documented && static_cast<long double>(u) == documented_uniform_float(w);
    else
      documented = documented && static_cast<long double>(u) == documented_uniform_double(w);
    const T l = diffusion::detail::log_positive(u);
    worst_log = std::max(worst_log, ulp_error(l, std::log(static_cast<long double>(u))));
    worst_log_std = std::max(worst_log_std, ulp_error(l, static_cast<long double>(std::log(u))));
    T s, c;
    diffusion::detail::sincos_2pi_word<T>(w, s, c);
    long double rs, rc;
    reference_sincos_2pi(static_cast<long double>(u), rs, rc);
    worst_sin = std::max(worst_sin, ulp_error(s, rs));
    worst_cos = std::max(worst_cos, ulp_error(c, rc));
  }
  CHECK(documented);  // u = (2m + 1)·2^-(p+1) exactly, in (0, 1)
  constexpr budget b = accuracy_budget<T>();
  WARN((std::is_same_v<T, float> ? "float" : "double")
       << " (fused multiply-add: " << diffusion::simd::fused_madd << ", " << words.size()
       << " inputs): max error ln u = " << worst_log << " ulp (against std::log: " << worst_log_std
       << " ulp), sin 2πu = " << worst_sin << " ulp, cos 2πu = " << worst_cos << " ulp");
  CHECK(worst_log <= b.ln);
  CHECK(worst_log_std <= b.ln_vs_std);
  CHECK(worst_sin <= b.sincos);
  CHECK(worst_cos <= b.sincos);
}

}  // namespace

TEST_CASE("noise transform (float): ln u and sin/cos 2πu against long double", "[noise][accuracy]") {
  // Float uniforms are (2m + 1)·2^-24, m < 2^23, from the words m·2^9. Checked: every 61st
  // m, all m within 4096 of both ends, and within 1024 of each quadrant boundary and each
  // zero of sin and cos (u = j/8). (The exhaustive sweep takes ~9 s; its maxima are the
  // budgets above.)
  std::vector<u32> words;
  const auto add = [&words](long long m) {
    if (m >= 0 && m < (1ll << 23)) words.push_back(static_cast<u32>(m) << 9);
  };
  for (long long m = 0; m < (1ll << 23); m += 61) add(m);
  for (long long m = 0; m < 4096; ++m) add(m), add((1ll << 23) - 1 - m);
  for (long long j = 1; j < 8; ++j)
    for (long long d = -1024; d <= 1024; ++d) add(j * (1ll << 20) + d);
  check_transform_accuracy<float>(words);
}

TEST_CASE("noise transform (double): ln u and sin/cos 2πu against long double", "[noise][accuracy]") {
  // Double uniforms are (2m + 1)·2^-53, m < 2^52, from 64-bit words. Checked: 3e5
  // pseudo-random words (SplitMix64, seed 42), the extreme words, u near powers of two
  // and near the quadrant boundaries and zeros (u = j/8).
  std::vector<u64> words{0, 1, ~u64{0}, 0xFFFFFFFFFFFFF000ull};
  for (int e = 12; e < 64; ++e) words.push_back(u64{1} << e), words.push_back((u64{1} << e) - 1);
  for (u64 j = 1; j < 8; ++j)
    for (u64 d = 0; d < 256; ++d) words.push_back((j << 61) + (d << 12)), words.push_back((j << 61) - (d << 12) - 1);
  u64 state = 42;
  for (int i = 0; i < 300000; ++i) {
    u64 z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    words.push_back(z ^ (z >> 31));
  }
  check_transform_accuracy<double>(words);
}

// --------------------------------------------------------------------------------------
// The concept. (There are no argument errors to test: every seed, sample, step, offset
// and span, empty included, is valid, and indices wrap as documented.)

namespace {
struct float_only_source {
  void fill(u64, u64, u64, std::span<float>) const {}
};
struct both_source {
  void fill(u64, u64, u64, std::span<float>) {}
  void fill(u64, u64, u64, std::span<double>) {}
};
}  // namespace

TEST_CASE("noise_source: philox_normal models it, a float-only type does not", "[noise]") {
  STATIC_REQUIRE(diffusion::noise_source<philox_normal>);
  STATIC_REQUIRE(diffusion::noise_source<const philox_normal>);
  STATIC_REQUIRE(diffusion::noise_source<both_source>);
  STATIC_REQUIRE_FALSE(diffusion::noise_source<const both_source>);  // its fill is not const
  STATIC_REQUIRE_FALSE(diffusion::noise_source<float_only_source>);
  STATIC_REQUIRE_FALSE(diffusion::noise_source<int>);
}
