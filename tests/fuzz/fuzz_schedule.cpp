// libFuzzer target: user beta lists → diffusion::noise_schedule and
// diffusion::rescale_zero_terminal_snr. Betas come from fuzz::betas (2^-1000 and just below it,
// 1 − 2^-53, 1, 0, negatives, subnormals, NaN, ±∞, log-uniform values, runs of up to ~5000 steps).
//
// Invariants: noise_schedule throws std::invalid_argument exactly when the documented rule
// rejects the list (every β finite in [2^-1000, 1), the last may be 1); otherwise no field of
// any step is NaN, every field lies in its range, the tables are monotone where the math says
// so, and the documented ±∞ appear only where documented (σ, 1/√ᾱ, 1/√α, log-SNR at zero
// terminal SNR; σ and 1/√ᾱ also where ᾱ has underflowed past 2^-2048). rescale_zero_terminal_snr
// either throws std::invalid_argument or returns betas that noise_schedule accepts, ending at 1.
// Build and run: scripts/fuzz.sh [seconds]
#include <diffusion/schedule.hpp>

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

constexpr const char* target = "fuzz_schedule";
constexpr double u = 0x1p-53;
constexpr double inf = std::numeric_limits<double>::infinity();

std::string describe(const std::vector<double>& b) {
  std::string s = "T = " + std::to_string(b.size()) + ", betas =";
  for (std::size_t i = 0; i < b.size() && i < 12; ++i) s += " " + fuzz::text(b[i]);
  if (b.size() > 12) s += " ... " + fuzz::text(b.back());
  return s;
}

bool accepted(const std::vector<double>& b) {
  if (b.empty()) return false;
  for (std::size_t i = 0; i < b.size(); ++i)
    if (!(b[i] >= 0x1p-1000 && (b[i] < 1.0 || (i + 1 == b.size() && b[i] == 1.0)))) return false;
  return true;
}

// |x − y| ≤ k u |y| for normal y; true where y is not a normal double.
bool close(double x, double y, double k) {
  if (!(std::abs(y) >= std::numeric_limits<double>::min() && std::abs(y) <= std::numeric_limits<double>::max()))
    return true;
  return std::abs(x - y) <= k * u * std::abs(y);
}

void check_schedule(const std::string& input, const std::vector<double>& betas, const diffusion::noise_schedule& s) {
  const std::size_t T = betas.size();
  if (s.size() != T) fuzz::fail(target, input, "size differs from the number of betas");
  auto bad = [&](std::size_t i, const std::string& what) { fuzz::fail(target, input, "step " + std::to_string(i) + ": " + what); };
  const bool zt = betas.back() == 1.0;
  if (s.zero_terminal_snr() != zt) fuzz::fail(target, input, "zero_terminal_snr() disagrees with the last beta");
  for (std::size_t i = 0; i < T; ++i) {
    const diffusion::schedule_step& st = s[i];
    const bool zero_step = zt && i + 1 == T;
    const double fields[] = {st.beta, st.alpha, st.alpha_bar, st.alpha_bar_prev, st.alpha_bar_next, st.one_minus_alpha_bar,
                             st.sqrt_alpha, st.sqrt_alpha_bar, st.sqrt_alpha_bar_prev, st.sqrt_one_minus_alpha_bar,
                             st.rsqrt_alpha, st.rsqrt_alpha_bar, st.sigma, st.snr, st.log_snr, st.posterior_variance,
                             st.posterior_log_variance_clipped, st.posterior_mean_coef_x0, st.posterior_mean_coef_xt};
    for (std::size_t f = 0; f < sizeof fields / sizeof fields[0]; ++f)
      if (std::isnan(fields[f])) bad(i, "field #" + std::to_string(f) + " of schedule_step is NaN");
    if (st.beta != betas[i]) bad(i, "beta differs from the input");
    if (st.alpha != 1.0 - st.beta) bad(i, "alpha != 1 - beta (both are correctly rounded)");
    if (!(st.alpha_bar >= 0.0 && st.alpha_bar <= 1.0)) bad(i, "alpha_bar outside [0, 1]: " + fuzz::text(st.alpha_bar));
    if (zero_step != (st.log_snr == -inf)) bad(i, "log_snr = -inf exactly at the zero-terminal step only");
    if (!zero_step && !std::isfinite(st.log_snr)) bad(i, "log_snr not finite");
    if (zero_step && !(st.alpha_bar == 0.0 && st.sigma == inf && st.snr == 0.0 && st.rsqrt_alpha == inf))
      bad(i, "the zero-terminal step is not alpha_bar = 0, sigma = inf, snr = 0, 1/sqrt(alpha) = inf");
    if (!zero_step && st.rsqrt_alpha == inf) bad(i, "1/sqrt(alpha) = inf with beta < 1");
    if (st.alpha_bar > 0.0 && !std::isfinite(st.sigma)) bad(i, "sigma not finite although alpha_bar > 0");
    if (st.alpha_bar > 0.0 && !std::isfinite(st.rsqrt_alpha_bar)) bad(i, "1/sqrt(alpha_bar) not finite although alpha_bar > 0");
    if (!(st.sigma > 0.0)) bad(i, "sigma <= 0");
    if (!(st.snr >= 0.0 && std::isfinite(st.snr))) bad(i, "snr not finite and >= 0");
    if (!(st.one_minus_alpha_bar > 0.0 && st.one_minus_alpha_bar <= 1.0)) bad(i, "1 - alpha_bar outside (0, 1]");
    if (std::abs(st.alpha_bar + st.one_minus_alpha_bar - 1.0) > 2 * u) bad(i, "alpha_bar + (1 - alpha_bar) != 1");
    if (!(st.sqrt_alpha > 0.0 && st.sqrt_alpha <= 1.0) && !zero_step) bad(i, "sqrt(alpha) outside (0, 1]");
    if (!(st.sqrt_alpha_bar >= 0.0 && st.sqrt_alpha_bar <= 1.0)) bad(i, "sqrt(alpha_bar) outside [0, 1]");
    if (!(st.sqrt_one_minus_alpha_bar > 0.0 && st.sqrt_one_minus_alpha_bar <= 1.0)) bad(i, "sqrt(1 - alpha_bar) outside (0, 1]");
    if (!(st.rsqrt_alpha >= 1.0 && st.rsqrt_alpha_bar >= 1.0)) bad(i, "1/sqrt(alpha) or 1/sqrt(alpha_bar) below 1");
    // β̃ = β(1 − ᾱ_{t−1})/(1 − ᾱ_t) ∈ [0, β]; the mean coefficients are in [0, 1].
    if (!(st.posterior_variance >= 0.0 && st.posterior_variance <= st.beta * (1 + 4 * u))) bad(i, "posterior variance outside [0, beta]");
    if ((i == 0) != (st.posterior_variance == 0.0)) bad(i, "posterior variance is 0 exactly at the first step only");
    if (!std::isfinite(st.posterior_log_variance_clipped)) bad(i, "posterior_log_variance_clipped not finite");
    if (!(st.posterior_mean_coef_x0 >= 0.0 && st.posterior_mean_coef_x0 <= 1.0 + 4 * u))
      bad(i, "posterior_mean_coef_x0 outside [0, 1]: " + fuzz::text(st.posterior_mean_coef_x0));
    if (!(st.posterior_mean_coef_xt >= 0.0 && st.posterior_mean_coef_xt <= 1.0 + 4 * u))
      bad(i, "posterior_mean_coef_xt outside [0, 1]: " + fuzz::text(st.posterior_mean_coef_xt));
    // Neighbours and monotonicity.
    if (st.alpha_bar_prev != (i == 0 ? 1.0 : s[i - 1].alpha_bar)) bad(i, "alpha_bar_prev is not the previous alpha_bar");
    if (st.alpha_bar_next != (i + 1 == T ? 0.0 : s[i + 1].alpha_bar)) bad(i, "alpha_bar_next is not the next alpha_bar");
    if (i > 0) {
      if (st.alpha_bar > s[i - 1].alpha_bar) bad(i, "alpha_bar increases");
      if (st.one_minus_alpha_bar < s[i - 1].one_minus_alpha_bar) bad(i, "1 - alpha_bar decreases");
      if (st.sigma < s[i - 1].sigma) bad(i, "sigma decreases");
      if (st.log_snr > s[i - 1].log_snr) bad(i, "log_snr increases");
    }
    // Consistency where the values are normal doubles (each correctly rounded: a few ulp).
    if (st.alpha_bar >= 0x1p-1000) {
      if (!close(st.sqrt_alpha_bar * st.sqrt_alpha_bar, st.alpha_bar, 4)) bad(i, "sqrt(alpha_bar)^2 != alpha_bar");
      if (!close(st.sigma * st.sigma * st.alpha_bar, st.one_minus_alpha_bar, 8)) bad(i, "sigma^2 alpha_bar != 1 - alpha_bar");
      if (!close(st.snr * st.one_minus_alpha_bar, st.alpha_bar, 6)) bad(i, "snr (1 - alpha_bar) != alpha_bar");
      if (!close(st.rsqrt_alpha_bar * st.sqrt_alpha_bar, 1.0, 4)) bad(i, "1/sqrt(alpha_bar) * sqrt(alpha_bar) != 1");
      if (st.snr >= 0x1p-1000 && std::abs(st.log_snr - std::log(st.snr)) > 4 * u * std::max(1.0, std::abs(st.log_snr)))
        bad(i, "log_snr != log(snr)");
    }
    if (!close(st.sqrt_one_minus_alpha_bar * st.sqrt_one_minus_alpha_bar, st.one_minus_alpha_bar, 4))
      bad(i, "sqrt(1 - alpha_bar)^2 != 1 - alpha_bar");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader r(data, size);
  const bool valid_only = (r.u8() & 3) != 0;
  const std::vector<double> betas = fuzz::betas(r, valid_only);
  const std::string input = describe(betas);
  const bool ok = accepted(betas);
  std::optional<diffusion::noise_schedule> s;
  try {
    s.emplace(std::span<const double>(betas));
  } catch (const std::invalid_argument& e) {
    if (ok) fuzz::fail(target, input, std::string("valid betas rejected: ") + e.what());
  }
  if (s) {
    if (!ok) fuzz::fail(target, input, "invalid betas accepted");
    check_schedule(input, betas, *s);
  }

  // rescale_zero_terminal_snr: documented refusals, else a valid zero-terminal schedule.
  std::vector<double> out;
  try {
    out = diffusion::rescale_zero_terminal_snr(betas);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    const bool documented = !ok || betas.size() < 2 || betas.back() == 1.0 || what.find("rounds to 1") != std::string::npos;
    if (!documented) fuzz::fail(target, input, "rescale_zero_terminal_snr refused valid betas: " + what);
    return 0;
  }
  if (!ok || betas.size() < 2 || betas.back() == 1.0) fuzz::fail(target, input, "rescale accepted what it documents refusing");
  if (out.size() != betas.size() || out.front() != betas.front() || out.back() != 1.0)
    fuzz::fail(target, input, "rescaled betas: wrong size, first beta changed, or last != 1");
  try {
    const diffusion::noise_schedule z{std::span<const double>(out)};
    check_schedule(input + " (rescaled)", out, z);
  } catch (const std::invalid_argument& e) {
    fuzz::fail(target, input, std::string("noise_schedule rejects the rescaled betas: ") + e.what());
  }
  return 0;
}
