// Timestep selection against numpy (diffusers' conventions) and iDDPM's space_timesteps,
// respacing against the 50-digit reference, and the spacing-string parser's errors.
#include <catch2/catch.hpp>

#include <diffusion/timesteps.hpp>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

namespace {

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoul(item));
  return out;
}

struct timestep_line {
  std::vector<std::string> fields;
};

std::vector<timestep_line> timestep_reference() {
  std::ifstream in(std::string(DIFFUSION_TEST_DATA_DIR) + "/timesteps.ref");
  REQUIRE(in);
  std::vector<timestep_line> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    timestep_line l;
    std::string f;
    while (ls >> f) l.fields.push_back(f);
    out.push_back(l);
  }
  return out;
}

diffusion::timestep_spacing spacing_of(const std::string& s) {
  if (s == "linspace") return diffusion::timestep_spacing::linspace;
  if (s == "leading") return diffusion::timestep_spacing::leading;
  return diffusion::timestep_spacing::trailing;
}

}  // namespace

TEST_CASE("inference_timesteps reproduces diffusers' spacings exactly (numpy reference)", "[timesteps][reference]") {
  std::size_t checked = 0;
  for (const auto& l : timestep_reference()) {
    if (l.fields[0] != "diffusers") continue;
    const std::size_t T = std::stoul(l.fields[1]), N = std::stoul(l.fields[2]);
    const std::size_t offset = std::stoul(l.fields[4]);
    const auto want = parse_list(l.fields[5]);
    INFO("T = " << T << ", N = " << N << ", " << l.fields[3] << ", steps_offset = " << offset);
    if (want.back() >= T || want.front() >= T) {
      // leading with steps_offset reaching T: diffusers indexes out of range; we raise.
      CHECK_THROWS_AS(diffusion::inference_timesteps(T, N, spacing_of(l.fields[3]), offset), std::invalid_argument);
      continue;
    }
    const auto got = diffusion::inference_timesteps(T, N, spacing_of(l.fields[3]), offset);
    CHECK(std::vector<std::size_t>(got.begin(), got.end()) == want);
    ++checked;
  }
  CHECK(checked > 100);
}

TEST_CASE("trailing spacing is round-half-to-even: T = 1000, N = 16 contains 811", "[timesteps]") {
  const auto t = diffusion::inference_timesteps(1000, 16, diffusion::timestep_spacing::trailing);
  CHECK(std::find(t.begin(), t.end(), 811) != t.end());
  CHECK(std::find(t.begin(), t.end(), 812) == t.end());
  // Where numpy's arange(T, 0, -T/N) yields N + 1 elements (for example N = 61), diffusers
  // ends on timestep -1; we return exactly N timesteps ending at T/N - 1 rounded.
  const auto t61 = diffusion::inference_timesteps(1000, 61, diffusion::timestep_spacing::trailing);
  CHECK(t61.size() == 61);
  CHECK(t61[0] == 999);
}

TEST_CASE("space_timesteps reproduces improved DDPM (reference reimplementation)", "[timesteps][reference]") {
  std::size_t checked = 0;
  for (const auto& l : timestep_reference()) {
    if (l.fields[0] != "iddpm") continue;
    const std::size_t T = std::stoul(l.fields[1]);
    const std::string spec = l.fields[2];
    INFO("T = " << T << ", spec = \"" << spec << "\"");
    if (l.fields[3] == "error") {
      CHECK_THROWS_AS(diffusion::space_timesteps(T, spec), std::invalid_argument);
    } else {
      auto want = parse_list(l.fields[3]);
      std::reverse(want.begin(), want.end());
      const auto got = diffusion::space_timesteps(T, spec);
      CHECK(std::vector<std::size_t>(got.begin(), got.end()) == want);
    }
    ++checked;
  }
  CHECK(checked >= 20);
}

TEST_CASE("malformed or impossible spacing strings raise clear errors", "[timesteps][errors]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::space_timesteps(10, "ddim7"), Contains("cannot take exactly 7 of 10"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "abc"), Contains("\"abc\"") && Contains("not a positive integer"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "0"), Contains("count of 0"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "ddim0"), Contains("count of 0"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(10, "11"), Contains("fewer than the 11 asked for"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, ""), Contains("empty count"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "10,,20"), Contains("empty count"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "10,"), Contains("empty count"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, " 10"), Contains("not a positive integer"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "+10"), Contains("not a positive integer"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "ddim"), Contains("empty count"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "ddim-5"), Contains("not a positive integer"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "99999999999999999999999"), Contains("too large"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(2, "1,1,1"), Contains("more sections than"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(0, "ddim5"), Contains("num_train_timesteps = 0"));
  CHECK_THROWS_WITH(diffusion::inference_timesteps(10, 11, diffusion::timestep_spacing::linspace),
                    Contains("num_steps = 11") && Contains("[1, 10]"));
  CHECK_THROWS_WITH(diffusion::inference_timesteps(10, 0, diffusion::timestep_spacing::trailing), Contains("num_steps = 0"));
  CHECK_THROWS_WITH(diffusion::inference_timesteps(1000, 1000, diffusion::timestep_spacing::leading, 1),
                    Contains("gives timestep 999 + 1"));
  CHECK_THROWS_AS(diffusion::inference_timesteps(1000, 2, diffusion::timestep_spacing::leading, SIZE_MAX),
                  std::invalid_argument);
}

TEST_CASE("timestep_sequence validates user lists and reads the previous step from the list", "[timesteps]") {
  using Catch::Matchers::Contains;
  using V = std::vector<std::size_t>;
  CHECK_THROWS_WITH(diffusion::timestep_sequence(V{}, 10), Contains("empty"));
  CHECK_THROWS_WITH(diffusion::timestep_sequence(V{5, 5}, 10), Contains("strictly decreasing"));
  CHECK_THROWS_WITH(diffusion::timestep_sequence(V{3, 7}, 10), Contains("timesteps[1] = 7 >= timesteps[0] = 3"));
  CHECK_THROWS_AS(diffusion::timestep_sequence(V{10, 3}, 10), std::out_of_range);
  CHECK_THROWS_WITH(diffusion::timestep_sequence(V{10, 3}, 10), Contains("timesteps[0] = 10") && Contains("[0, 10)"));

  // linspace T = 1000, N = 3 is 999, 500, 0: t - T/N would give 666 and 167, not 500 and 0.
  const auto seq = diffusion::inference_timesteps(1000, 3, diffusion::timestep_spacing::linspace);
  REQUIRE(std::vector<std::size_t>(seq.begin(), seq.end()) == V{999, 500, 0});
  CHECK(seq.previous(0) == 500u);
  CHECK(seq.previous(1) == 0u);
  CHECK_FALSE(seq.previous(2).has_value());
  CHECK(seq.previous_of(999) == 500u);
  CHECK_FALSE(seq.previous_of(0).has_value());
  CHECK_THROWS_WITH(seq.previous_of(700), Contains("t = 700 is not one of"));
  CHECK_THROWS_AS(seq.previous(3), std::out_of_range);
}

TEST_CASE("respacing recomputes betas within 1 ulp of the reference and keeps the marginals", "[timesteps][reference]") {
  const auto& ref = test::reference::schedules();
  const diffusion::noise_schedule base(ref.betas("linear_1000"));
  const auto r = diffusion::respace(base, diffusion::space_timesteps(1000, "ddim50"));
  REQUIRE(r.schedule.size() == 50);
  REQUIRE(r.timestep_map.size() == 50);
  double worst = 0;
  for (std::size_t j = 0; j < 50; ++j) {
    CHECK(r.timestep_map[j] == 20 * j);
    const double err = test::ulps(r.schedule[j].beta, ref.get("linear_1000", "respaced_beta", j));
    worst = std::max(worst, err);
    CHECK(err <= 1);
    // Same marginal at the kept step: alpha_bar' = alpha_bar(tau_j) to 2 ulp (two roundings).
    CHECK(test::ulps(r.schedule[j].alpha_bar, base[r.timestep_map[j]].alpha_bar) <= 2);
  }
  WARN("respaced betas (ddim50): max error " << worst << " ulp");

  const auto custom = diffusion::respace(base, diffusion::timestep_sequence({999, 500, 2, 1, 0}, 1000));
  for (std::size_t j = 0; j < 5; ++j) CHECK(test::ulps(custom.schedule[j].beta, ref.get("linear_1000_custom", "respaced_beta", j)) <= 1);

  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(diffusion::respace(base, diffusion::space_timesteps(100, "ddim10")), Contains("differs from the schedule's size 1000"));

  // Respacing a zero-terminal-SNR schedule keeps the final beta at exactly 1.
  const diffusion::noise_schedule z(diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(1000)));
  const auto rz = diffusion::respace(z, diffusion::inference_timesteps(1000, 10, diffusion::timestep_spacing::trailing));
  CHECK(rz.schedule.zero_terminal_snr());
}
