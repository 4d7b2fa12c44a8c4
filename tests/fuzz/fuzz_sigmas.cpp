// libFuzzer target: t_to_sigma, sigma_to_t and sigma_range (<diffusion/schedule/sigmas.hpp>) on
// valid schedules of up to ~5000 steps (β down to 2^-1000, up to 1 − 2^-53, zero terminal SNR)
// and arbitrary doubles (NaN, ±∞, ±0, subnormals, the table's own σ and their neighbours).
//
// Invariants: std::out_of_range exactly outside the documented domains (t ∈ [0, T−1]; σ in
// [σ_0, σ_max], σ_max the largest finite σ); results never NaN; t_to_sigma lies between the
// neighbouring table values, within 4u(|log σ_i| + |log σ_{i+1}| + 2) relative (exp of a
// log-domain value whose rounding is absolute), and is +∞ only where the upper neighbour is;
// sigma_to_t lies in [0, n−1] between the right steps; t_to_sigma(sigma_to_t(σ)) = σ within
// 16u(|log σ| + |log σ_i| + |log σ_{i+1}| + (i + 2)|log σ_{i+1} − log σ_i| + 1) relative: the
// rounding of log σ, of the interpolation weight (an absolute ulp of t ≤ (i + 1)u) amplified by
// the log spacing, of a + w(b − a) and of exp, with a factor 2 to spare.
// Build and run: scripts/fuzz.sh [seconds]
#include <diffusion/schedule.hpp>

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

constexpr const char* target = "fuzz_sigmas";
constexpr double u = 0x1p-53;
constexpr double inf = std::numeric_limits<double>::infinity();

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader r(data, size);
  const std::vector<double> betas = fuzz::betas(r, true);
  const diffusion::noise_schedule s{std::span<const double>(betas)};
  const std::size_t T = s.size();
  const std::string sched = "T = " + std::to_string(T) + ", first beta " + fuzz::text(betas.front()) + ", last beta " +
                            fuzz::text(betas.back());
  std::size_t n = 0;  // the steps with a finite sigma: σ_max = σ_{n−1}, the largest finite one
  while (n < T && std::isfinite(s[n].sigma)) ++n;

  // sigma_range.
  try {
    const auto [lo, hi] = diffusion::sigma_range(s);
    if (n == 0) fuzz::fail(target, sched, "sigma_range of a schedule without a finite sigma did not throw");
    if (lo != s[0].sigma || hi != s[n - 1].sigma)
      fuzz::fail(target, sched, "sigma_range is [" + fuzz::text(lo) + ", " + fuzz::text(hi) + "], not [sigma_0, the largest finite sigma " +
                                    fuzz::text(s[n - 1].sigma) + "]");
  } catch (const std::invalid_argument&) {
    if (n != 0) fuzz::fail(target, sched, "sigma_range threw for a schedule with finite sigmas");
  }

  for (int probe = 0; probe < 8 && !r.empty(); ++probe) {
    // A t: the table's integers and their neighbours, fractions, or any double.
    double t = 0.0;
    switch (r.u8() % 5) {
      case 0: t = static_cast<double>(r.u16() % T); break;
      case 1: t = std::nextafter(static_cast<double>(r.u16() % T), (r.u8() & 1) ? inf : -inf); break;
      case 2: t = static_cast<double>(T - 1) * ((static_cast<double>(r.u64() >> 11) + 0.5) * 0x1p-53); break;
      default: t = r.real(); break;
    }
    const std::string in_t = sched + ", t = " + fuzz::text(t);
    const bool t_ok = t >= 0.0 && t <= static_cast<double>(T - 1);
    double sig = 0.0;
    try {
      sig = diffusion::t_to_sigma(s, t);
      if (!t_ok) fuzz::fail(target, in_t, "t_to_sigma accepted t outside [0, T-1]");
      if (std::isnan(sig)) fuzz::fail(target, in_t, "t_to_sigma returned NaN");
      const auto i = static_cast<std::size_t>(std::floor(t));
      const double lo = s[i].sigma, hi = i + 1 < T ? s[i + 1].sigma : lo;
      if (t == std::floor(t) && sig != lo) fuzz::fail(target, in_t, "t_to_sigma at an integer t is not the table's sigma");
      const double slack = 4 * u * (std::abs(std::log(lo)) + (std::isfinite(hi) ? std::abs(std::log(hi)) : 0.0) + 2);
      if (!(sig >= lo * (1 - slack) && sig <= hi * (1 + slack)))
        fuzz::fail(target, in_t, "t_to_sigma = " + fuzz::text(sig) + " is outside [" + fuzz::text(lo) + ", " + fuzz::text(hi) + "]");
      if (sig == inf && hi != inf) fuzz::fail(target, in_t, "t_to_sigma = inf between finite sigmas");
    } catch (const std::out_of_range&) {
      if (t_ok) fuzz::fail(target, in_t, "t_to_sigma refused t in [0, T-1]");
    }

    // A sigma: the table's own, between neighbours, around the ends, or any double.
    double sigma = 0.0;
    const std::size_t i0 = r.u16() % T;
    switch (r.u8() % 6) {
      case 0: sigma = s[i0].sigma; break;
      case 1: sigma = std::nextafter(s[i0].sigma, (r.u8() & 1) ? inf : 0.0); break;
      case 2: {
        const double a = s[i0].sigma, b = i0 + 1 < T ? s[i0 + 1].sigma : a;
        const double w = (static_cast<double>(r.u64() >> 11) + 0.5) * 0x1p-53;
        sigma = std::isfinite(b) ? a + w * (b - a) : a * (1 + w);
        break;
      }
      case 3: sigma = sig; break;
      default: sigma = r.real(); break;
    }
    const std::string in_s = sched + ", sigma = " + fuzz::text(sigma);
    const bool s_ok = n >= 1 && sigma >= s[0].sigma && sigma <= s[n - 1].sigma;
    double tt = 0.0;
    try {
      tt = diffusion::sigma_to_t(s, sigma);
    } catch (const std::out_of_range&) {
      if (s_ok) fuzz::fail(target, in_s, "sigma_to_t refused sigma in [sigma_0, sigma_max]");
      continue;
    }
    if (!s_ok) fuzz::fail(target, in_s, "sigma_to_t accepted sigma outside [sigma_0, sigma_max]");
    if (!(tt >= 0.0 && tt <= static_cast<double>(n - 1))) fuzz::fail(target, in_s, "sigma_to_t = " + fuzz::text(tt) + " outside [0, n-1]");
    const auto i = static_cast<std::size_t>(std::floor(tt));
    const double a = std::log(s[i].sigma), b = i + 1 < n ? std::log(s[i + 1].sigma) : a;
    const double back = diffusion::t_to_sigma(s, tt);
    const double tol = 16 * u *
                       (std::abs(std::log(sigma)) + std::abs(a) + std::abs(b) + static_cast<double>(i + 2) * std::abs(b - a) + 1);
    if (!(std::abs(std::log(back) - std::log(sigma)) <= tol))
      fuzz::fail(target, in_s, "t_to_sigma(sigma_to_t(sigma)) = " + fuzz::text(back) + " (t = " + fuzz::text(tt) +
                                   "), relative error " + fuzz::text(std::abs(std::log(back) - std::log(sigma))) +
                                   " > " + fuzz::text(tol));
  }
  return 0;
}
