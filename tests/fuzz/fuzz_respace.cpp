// libFuzzer target: timestep_sequence and respace (declared in <diffusion/schedule/timesteps.hpp>)
// on valid schedules of up to ~5000 steps (β down to 2^-1000, up to 1 − 2^-53, zero terminal
// SNR) and kept lists from user input, space_timesteps and inference_timesteps.
//
// Invariants: a user list is refused exactly when documented (std::invalid_argument for an
// empty or not strictly decreasing list, std::out_of_range for a value ≥ T); previous() and
// previous_of() read the list; respace throws std::invalid_argument only for a T mismatch or a
// respaced β' that rounds to 1 before the last kept step (documented), and otherwise returns a
// schedule whose ᾱ at each kept step equals the base's within 2 ulp (documented), whose
// timestep map is the kept list ascending, and which is zero-terminal only where the base's ᾱ
// at the last kept step is 0 or below 2^-53 of the one before.
// Build and run: scripts/fuzz.sh [seconds]
#include <diffusion/schedule.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

constexpr const char* target = "fuzz_respace";
constexpr double u = 0x1p-53;

void check_sequence(const std::string& input, const diffusion::timestep_sequence& seq, fuzz::reader& r) {
  const auto v = seq.values();
  for (std::size_t k = 0; k < v.size(); ++k) {
    const auto p = seq.previous(k);
    if (k + 1 == v.size() ? p.has_value() : (!p || *p != v[k + 1])) fuzz::fail(target, input, "previous() is wrong");
    const auto q = seq.previous_of(v[k]);
    if (q != p) fuzz::fail(target, input, "previous_of() differs from previous()");
  }
  try {
    (void)seq.previous(v.size() + r.u8());
    fuzz::fail(target, input, "previous() past the end did not throw");
  } catch (const std::out_of_range&) {
  }
  const std::size_t probe = r.u16();
  if (!std::binary_search(v.begin(), v.end(), probe, std::greater<>{})) {
    try {
      (void)seq.previous_of(probe);
      fuzz::fail(target, input, "previous_of() of a value not in the list did not throw");
    } catch (const std::invalid_argument&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::reader r(data, size);
  const std::vector<double> betas = fuzz::betas(r, true);
  const diffusion::noise_schedule base{std::span<const double>(betas)};
  const std::size_t T = base.size();
  std::string input = "T = " + std::to_string(T) + ", last beta " + fuzz::text(betas.back());

  // The kept list, and the T it claims to index.
  std::optional<diffusion::timestep_sequence> kept;
  const unsigned mode = r.u8() % 4;
  const std::size_t claimed_T = (r.u8() % 16 == 0) ? T + 1 : T;
  if (mode <= 1) {
    std::vector<std::size_t> list;
    const std::size_t k = r.u8() % 20;
    for (std::size_t j = 0; j < k; ++j) {
      const unsigned m = r.u8() % 4;
      list.push_back(m == 0 ? claimed_T - 1 - std::min<std::size_t>(claimed_T - 1, r.u8())
                     : m == 1 ? r.u8() % 4
                              : r.u16() % (claimed_T + 2));
    }
    if (mode == 1) {  // a valid list most of the time
      std::sort(list.begin(), list.end(), std::greater<>{});
      list.erase(std::unique(list.begin(), list.end()), list.end());
    }
    input += ", kept list of " + std::to_string(list.size());
    bool decreasing = !list.empty(), in_range = true;
    for (std::size_t j = 0; j < list.size(); ++j) {
      if (j > 0 && list[j] >= list[j - 1]) decreasing = false;
      if (list[j] >= claimed_T) in_range = false;
    }
    try {
      kept.emplace(list, claimed_T);
    } catch (const std::out_of_range&) {
      if (in_range) fuzz::fail(target, input, "std::out_of_range for an in-range list");
      return 0;
    } catch (const std::invalid_argument&) {
      if (decreasing) fuzz::fail(target, input, "std::invalid_argument for a strictly decreasing list");
      return 0;
    }
    // Both errors are possible for a list that is out of range and not decreasing: the first found.
    if (!decreasing || !in_range) fuzz::fail(target, input, "an invalid list was accepted");
  } else {
    try {
      if (mode == 2) {
        const std::string spec = (r.u8() & 1) ? "ddim" + std::to_string(1 + r.u16() % 600)
                                              : std::to_string(1 + r.u8() % 50) + "," + std::to_string(1 + r.u8() % 50);
        input += ", space_timesteps \"" + spec + "\"";
        kept.emplace(diffusion::space_timesteps(claimed_T, spec));
      } else {
        const std::size_t n = 1 + r.u16() % claimed_T;
        input += ", inference_timesteps N = " + std::to_string(n);
        kept.emplace(diffusion::inference_timesteps(claimed_T, n, static_cast<diffusion::timestep_spacing>(r.u8() % 3)));
      }
    } catch (const std::invalid_argument&) {
      return 0;  // an impossible spacing for this T; fuzz_space_timesteps checks those
    }
  }
  check_sequence(input, *kept, r);

  std::optional<diffusion::respaced_schedule> got;
  try {
    got.emplace(diffusion::respace(base, *kept));
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    if (claimed_T == T && what.find("rounds to 1") == std::string::npos)
      fuzz::fail(target, input, "respace refused a matching list: " + what);
    return 0;
  }
  if (claimed_T != T) fuzz::fail(target, input, "respace accepted a list for another T");
  const auto& map = got->timestep_map;
  const auto v = kept->values();
  if (map.size() != v.size() || got->schedule.size() != v.size() || !std::equal(map.begin(), map.end(), v.rbegin()))
    fuzz::fail(target, input, "timestep_map is not the kept list ascending");
  const std::size_t K = map.size();
  // Each β' is within 1 ulp (≤ 2u β') of its exact value, which moves 1 − β' by 2u β'/(1 − β')
  // relative; ᾱ' is the product of the 1 − β' (formed in double-double by noise_schedule), and
  // both ᾱ' and the base's ᾱ are rounded once more: tolerance Σ 2u β'/(1 − β') + 4u, doubled.
  double budget = 4 * u;
  for (std::size_t j = 0; j < K; ++j) {
    const double bj = got->schedule[j].beta;
    if (bj < 1.0) budget += 2 * u * bj / (1.0 - bj);
    const double want = base[map[j]].alpha_bar, have = got->schedule[j].alpha_bar;
    if (std::isnan(have)) fuzz::fail(target, input, "NaN alpha_bar");
    if (want >= 0x1p-1000 && have >= 0x1p-1000 && std::abs(have - want) > 2 * budget * want)
      fuzz::fail(target, input, "respaced alpha_bar at kept step " + std::to_string(map[j]) + " is " + fuzz::text(have) +
                                    ", the base's " + fuzz::text(want));
  }
  if (got->schedule.zero_terminal_snr() && got->schedule.betas().back() == 1.0) {
    const double last = base[map[K - 1]].alpha_bar, before = K > 1 ? base[map[K - 2]].alpha_bar : 1.0;
    if (!(last == 0.0 || last <= 0x1p-53 * before))
      fuzz::fail(target, input, "the respaced schedule ends at beta = 1 although alpha_bar does not vanish");
  }
  return 0;
}
