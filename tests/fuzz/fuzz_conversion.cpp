// libFuzzer target: diffusion::conversion_coefficients (<diffusion/process/parameterization.hpp>)
// between every pair of prediction kinds (ε, x₀, v, score, flow velocity) at noise levels from
// noise_level::general(α, σ) with arbitrary doubles, ::preserving(ρ) with ρ ∈ [0, +∞],
// ::exploding(σ ≥ 0), ::flow(s ∈ [0, 1]) and ::from_step of a valid schedule's step (the
// factories' preconditions are respected; general must refuse what it documents refusing).
//
// Invariants: each conversion either throws a std::exception or returns finite coefficients;
// from == to is (0, 1); and on data — x = αx₀ + σε for (x₀, ε) ∈ {(1, 0), (0, 1), (1, 1), (1, −1)},
// in = the "from" prediction by target_coefficients — the converted prediction
// out = a₁x + b₁·in equals the "to" prediction, and the round trip back = a₂x + b₂·out (where
// to → from succeeds) equals in. Tolerance: 64u times the sum of the magnitudes of the terms
// formed (each coefficient is at most four correctly rounded operations on the level's entries,
// ≤ 8u relative; x and in add two roundings each; the products and sums one each; a factor 2
// spares), plus 64 times the smallest normal double times the magnitudes a coefficient or an
// input multiplies, for terms that underflow (their error is absolute). A coefficient that
// is only approximately the exact one (a square that underflowed to a subnormal, a product of
// α and r below the normal range) shows up here as a mismatch far beyond that bound.
// Build and run: scripts/fuzz.sh [seconds]
#include <diffusion/process/parameterization.hpp>
#include <diffusion/schedule.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

constexpr const char* target = "fuzz_conversion";
constexpr double u = 0x1p-53;
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr diffusion::prediction kinds[] = {diffusion::prediction::epsilon, diffusion::prediction::sample,
                                           diffusion::prediction::v, diffusion::prediction::score,
                                           diffusion::prediction::flow_velocity};

std::optional<diffusion::affine_coefficients> convert(const diffusion::noise_level& l, diffusion::prediction from,
                                                      diffusion::prediction to) {
  try {
    return diffusion::conversion_coefficients(l, from, to);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader r(data, size);
  std::optional<diffusion::noise_level> level;
  std::string input;
  switch (r.u8() % 5) {
    case 0: {
      const double a = r.real(), s = r.real();
      input = "general(" + fuzz::text(a) + ", " + fuzz::text(s) + ")";
      const bool ok = a >= 0.0 && s >= 0.0 && std::isfinite(a) && std::isfinite(s) && (a != 0.0 || s != 0.0);
      try {
        level = diffusion::noise_level::general(a, s);
      } catch (const std::invalid_argument&) {
        if (ok) fuzz::fail(target, input, "general() refused a valid level");
        return 0;
      }
      if (!ok) fuzz::fail(target, input, "general() accepted an invalid level");
      break;
    }
    case 1: {
      double rho = std::abs(r.real());
      if (std::isnan(rho)) rho = inf;
      input = "preserving(" + fuzz::text(rho) + ")";
      level = diffusion::noise_level::preserving(rho);
      break;
    }
    case 2: {
      double s = std::abs(r.real());
      if (!std::isfinite(s)) s = 1.0;
      input = "exploding(" + fuzz::text(s) + ")";
      level = diffusion::noise_level::exploding(s);
      break;
    }
    case 3: {
      const double s = (r.u8() & 1) ? (static_cast<double>(r.u64() >> 11)) * 0x1p-53 : static_cast<double>(r.u8() & 1);
      input = "flow(" + fuzz::text(s) + ")";
      level = diffusion::noise_level::flow(s);
      break;
    }
    default: {
      const std::vector<double> betas = fuzz::betas(r, true);
      const diffusion::noise_schedule sched{std::span<const double>(betas)};
      const std::size_t t = r.u16() % sched.size();
      input = "from_step(t = " + std::to_string(t) + " of " + std::to_string(sched.size()) + ", alpha_bar = " +
              fuzz::text(sched[t].alpha_bar) + ")";
      level = diffusion::noise_level::from_step(sched[t]);
      break;
    }
  }
  const diffusion::noise_level& l = *level;
  constexpr double tiny = 64 * std::numeric_limits<double>::min();
  const double samples[][2] = {{1.0, 0.0}, {0.0, 1.0}, {1.0, 1.0}, {1.0, -1.0}};
  for (const auto from : kinds) {
    for (const auto to : kinds) {
      const std::string pair = input + ", " + std::string(diffusion::to_string(from)) + " -> " + std::string(diffusion::to_string(to));
      const auto c1 = convert(l, from, to);
      if (!c1) continue;
      if (!std::isfinite(c1->a) || !std::isfinite(c1->b))
        fuzz::fail(target, pair, "coefficients (" + fuzz::text(c1->a) + ", " + fuzz::text(c1->b) + ") are not finite");
      if (from == to) {
        if (c1->a != 0.0 || c1->b != 1.0) fuzz::fail(target, pair, "identity conversion is not (0, 1)");
        continue;
      }
      const auto c2 = convert(l, to, from);
      const bool back_ok = c2 && std::isfinite(c2->a) && std::isfinite(c2->b);  // else reported on its own turn
      diffusion::affine_coefficients tf{}, tt{};
      try {
        tf = diffusion::target_coefficients(l, from);
        tt = diffusion::target_coefficients(l, to);
      } catch (const std::exception&) {
        continue;  // the score at sigma = 0: no target to compare with
      }
      for (const auto& sm : samples) {
        const double x0 = sm[0], eps = sm[1];
        const double x = l.alpha * x0 + l.sigma * eps, in = tf.a * x0 + tf.b * eps, want = tt.a * x0 + tt.b * eps;
        const double out = c1->a * x + c1->b * in;
        const double scale_x = std::abs(l.alpha * x0) + std::abs(l.sigma * eps);
        const double scale_in = std::abs(tf.a * x0) + std::abs(tf.b * eps);
        const double scale_out = std::abs(c1->a) * scale_x + std::abs(c1->b) * scale_in + std::abs(tt.a * x0) + std::abs(tt.b * eps);
        if (!std::isfinite(x) || !std::isfinite(in) || !std::isfinite(want) || !std::isfinite(scale_out)) continue;
        const std::string at = " at x0 = " + fuzz::text(x0) + ", eps = " + fuzz::text(eps);
        // A coefficient or a product that underflows is off by up to the smallest normal double
        // in absolute terms, times what it multiplies.
        const double floor_out = tiny * (1.0 + scale_x + scale_in) * (1.0 + std::abs(c1->a) + std::abs(c1->b));
        if (!(std::abs(out - want) <= 64 * u * scale_out + floor_out))
          fuzz::fail(target, pair, "converted prediction " + fuzz::text(out) + " differs from the target " + fuzz::text(want) +
                                       at + " (coefficients " + fuzz::text(c1->a) + ", " + fuzz::text(c1->b) + ")");
        if (!back_ok) continue;
        const double back = c2->a * x + c2->b * out;
        const double scale_back = std::abs(c2->a) * scale_x + std::abs(c2->b) * scale_out + scale_in;
        if (!std::isfinite(scale_back)) continue;
        const double floor_back = floor_out * (1.0 + std::abs(c2->b)) + tiny * (1.0 + scale_x) * (1.0 + std::abs(c2->a));
        if (!(std::abs(back - in) <= 64 * u * scale_back + floor_back))
          fuzz::fail(target, pair, "round trip gives " + fuzz::text(back) + " for " + fuzz::text(in) + at + " (a1 = " +
                                       fuzz::text(c1->a) + ", b1 = " + fuzz::text(c1->b) + ", a2 = " + fuzz::text(c2->a) +
                                       ", b2 = " + fuzz::text(c2->b) + ")");
      }
    }
  }
  return 0;
}
