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

// Issue 14: every T a size_t holds, in integer arithmetic that cannot overflow (the expected
// values are exact rationals rounded half to even, from Python's fractions.Fraction).
TEST_CASE("space_timesteps serves every T a size_t holds, exactly and in O(N)", "[timesteps][overflow]") {
  using V = std::vector<std::size_t>;
  using Catch::Matchers::Contains;
  constexpr std::size_t M = SIZE_MAX;  // 18446744073709551615
  auto values = [](const diffusion::timestep_sequence& s) { return V(s.begin(), s.end()); };

  // "ddimN": (T + s − 1)/s wrapped and the stride search was O(T): it never ended.
  CHECK(values(diffusion::space_timesteps(M, "ddim2")) == V{9223372036854775808u, 0});
  CHECK(values(diffusion::space_timesteps(M, "ddim3")) == V{12297829382473034410u, 6148914691236517205u, 0});
  const auto d7 = diffusion::space_timesteps(M, "ddim7");
  REQUIRE(d7.size() == 7);
  CHECK(d7[0] == 15811494920322472818u);  // 6 · 2635249153387078803
  CHECK(values(diffusion::space_timesteps(M - 1, "ddim2")) == V{9223372036854775807u, 0});
  CHECK_THROWS_WITH(diffusion::space_timesteps(M, "ddim1"), Contains("cannot take exactly 1 of"));
  CHECK_THROWS_WITH(diffusion::space_timesteps(1, "ddim1"), Contains("cannot take exactly 1 of 1"));
  // No stride gives 7 of 10 (strides 1 and 2 give 10 and 5): found by arithmetic, as before.
  CHECK_THROWS_WITH(diffusion::space_timesteps(10, "ddim7"), Contains("cannot take exactly 7 of 10"));
  // Stride 1 keeps all 2^64 − 1: valid, but not allocatable; said so, not std::length_error.
  CHECK_THROWS_WITH(diffusion::space_timesteps(M, "ddim18446744073709551615"),
                    Contains("asks for 18446744073709551615 timesteps, more than can be allocated"));
  // A count may be anything a size_t holds; one more is "too large", not wrapped.
  CHECK_THROWS_WITH(diffusion::space_timesteps(M, "ddim18446744073709551616"),
                    Contains("too large") && Contains("18446744073709551615"));
  // Sections of 2^64 − 1 and 2^63 timesteps: the float64 stride rounded to 2^64 (UB on conversion).
  CHECK(values(diffusion::space_timesteps(M, "3")) == V{18446744073709551614u, 9223372036854775807u, 0});
  CHECK(values(diffusion::space_timesteps(M, "2,3")) ==
        V{18446744073709551614u, 13835058055282163711u, 9223372036854775808u, 9223372036854775807u, 0});
  CHECK(values(diffusion::space_timesteps(M, "4")) ==
        V{18446744073709551614u, 12297829382473034409u, 6148914691236517205u, 0});
}

TEST_CASE("inference_timesteps serves every T a size_t holds and stays bit-identical to numpy below 2^51",
          "[timesteps][overflow]") {
  using V = std::vector<std::size_t>;
  using diffusion::timestep_spacing;
  constexpr std::size_t M = SIZE_MAX;
  auto values = [](const diffusion::timestep_sequence& s) { return V(s.begin(), s.end()); };
  // T = 2^64 − 1: float64 rounds T − 1 to 2^64 (its conversion to size_t was UB).
  CHECK(values(diffusion::inference_timesteps(M, 2, timestep_spacing::linspace)) == V{18446744073709551614u, 0});
  CHECK(values(diffusion::inference_timesteps(M, 2, timestep_spacing::trailing)) ==
        V{18446744073709551614u, 9223372036854775807u});
  CHECK(values(diffusion::inference_timesteps(M, 5, timestep_spacing::linspace)) ==
        V{18446744073709551614u, 13835058055282163710u, 9223372036854775807u, 4611686018427387904u, 0});
  CHECK(values(diffusion::inference_timesteps(M, 5, timestep_spacing::trailing)) ==
        V{18446744073709551614u, 14757395258967641291u, 11068046444225730968u, 7378697629483820645u,
          3689348814741910322u});
  CHECK(values(diffusion::inference_timesteps(M, 1, timestep_spacing::linspace)) == V{0});
  CHECK(values(diffusion::inference_timesteps(M, 1, timestep_spacing::trailing)) == V{18446744073709551614u});
  CHECK(values(diffusion::inference_timesteps(M, 3, timestep_spacing::leading, 5)) ==
        V{12297829382473034410u + 5, 6148914691236517205u + 5, 5});
  // T = 2^63: T − 1 rounded up to T in float64 and a valid request was refused.
  CHECK(values(diffusion::inference_timesteps(std::size_t{1} << 63, 2, timestep_spacing::linspace)) ==
        V{9223372036854775807u, 0});
  CHECK(values(diffusion::inference_timesteps(std::size_t{1} << 63, 3, timestep_spacing::trailing)) ==
        V{9223372036854775807u, 6148914691236517204u, 3074457345618258602u});
  // Just above the bound N·T < 2^51: exact (2^52 + 3, N = 5).
  CHECK(values(diffusion::inference_timesteps((std::size_t{1} << 52) + 3, 5, timestep_spacing::linspace)) ==
        V{4503599627370498u, 3377699720527874u, 2251799813685249u, 1125899906842624u, 0});
  CHECK(values(diffusion::inference_timesteps((std::size_t{1} << 52) + 3, 5, timestep_spacing::trailing)) ==
        V{4503599627370498u, 3602879701896398u, 2702159776422298u, 1801439850948199u, 900719925474099u});
  // Just below it numpy's float64 arange still decides: T = 2^40 + 12345, N = 1000 (numpy 1.24,
  // np.round(np.arange(T, 0, -T/N)) - 1), where the exact rounding would differ by one at these positions.
  const auto tr = diffusion::inference_timesteps((std::size_t{1} << 40) + 12345, 1000, timestep_spacing::trailing);
  REQUIRE(tr.size() == 1000);
  CHECK(tr[343] == 722379147559u);  // exact: ...558
  CHECK(tr[467] == 586039704184u);  // exact: ...183
  CHECK(tr[500] == 549755820060u);  // exact: ...059
  // N timesteps that cannot be allocated: a clear error, not std::length_error from a vector.
  CHECK_THROWS_WITH(diffusion::inference_timesteps(M, M, timestep_spacing::leading),
                    Catch::Matchers::Contains("num_steps = 18446744073709551615") &&
                        Catch::Matchers::Contains("more than can be allocated"));
  CHECK_THROWS_WITH(diffusion::inference_timesteps(10, 2, static_cast<timestep_spacing>(7)),
                    Catch::Matchers::Contains("spacing = 7"));
}

TEST_CASE("space_timesteps quotes at most 60 characters of the spec, escaped", "[timesteps][errors]") {
  // A NUL used to cut what() short, and a 1 MiB spec made a 2 MiB message.
  const std::string with_nul("ddim5\0x\x7f\"\\", 10);
  try {
    (void)diffusion::space_timesteps(1000, with_nul);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find('\0') == std::string::npos);
    CHECK(what.find(R"(spacing "ddim5\x00x\x7f\"\\")") != std::string::npos);
    CHECK(what.find(R"(the count "5\x00x\x7f\"\\")") != std::string::npos);
    CHECK(what.starts_with("diffusion::space_timesteps: "));
  }
  const std::string huge(std::size_t{1} << 20, 'a');
  try {
    (void)diffusion::space_timesteps(1000, huge);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.size() < 400);
    CHECK(what.find("\"" + std::string(60, 'a') + "\" (the first 60 of 1048576 characters)") != std::string::npos);
  }
  // Exactly 60 characters are shown whole, without the note.
  const std::string sixty(60, 'b');
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, sixty),
                    Catch::Matchers::Contains("\"" + sixty + "\"") && !Catch::Matchers::Contains("the first"));
  // Bytes above 0x7f are escaped as well.
  CHECK_THROWS_WITH(diffusion::space_timesteps(1000, "ddim\xc3\xa9"), Catch::Matchers::Contains(R"("\xc3\xa9")"));
}
