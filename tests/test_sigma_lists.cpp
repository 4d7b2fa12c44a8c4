// The sigma lists of schedule/sigmas.hpp (karras, exponential, polyexponential, KL-optimal, VP)
// against the 50-digit reference of tools/gen_sigma_lists.py (tests/data/sigma_lists.ref), their
// structure (exact end points, final 0, strictly decreasing) and their errors.
#include <catch2/catch.hpp>

#include <diffusion/sigmas.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;

namespace {

struct ref_line {
  std::string list;
  std::map<std::string, std::string> arg;
  long double exact = 0;
  [[nodiscard]] double number(const std::string& k) const { return std::strtod(arg.at(k).c_str(), nullptr); }
  [[nodiscard]] std::size_t count(const std::string& k) const { return std::stoul(arg.at(k)); }
};

std::vector<ref_line> load() {
  const std::string path = std::string(DIFFUSION_TEST_DATA_DIR) + "/sigma_lists.ref";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open reference file " + path);
  std::vector<ref_line> out;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty() || text[0] == '#') continue;
    std::istringstream fields(text);
    ref_line l;
    std::string args, value, extra;
    if (!(fields >> l.list >> args >> value) || (fields >> extra)) throw std::runtime_error("sigma_lists.ref: not 3 fields: " + text);
    std::istringstream pairs(args);
    std::string kv;
    while (std::getline(pairs, kv, ',')) {
      const auto eq = kv.find('=');
      l.arg[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    l.exact = std::strtold(value.c_str(), nullptr);
    out.push_back(l);
  }
  return out;
}

// |x − exact| in units of the double ulp at exact.
double ulp_error(double x, long double exact) {
  int e = 0;
  (void)std::frexp(static_cast<double>(exact), &e);
  return static_cast<double>(std::fabs(static_cast<long double>(x) - exact) / std::ldexp(1.0L, e - 53));
}

std::vector<double> compute(const ref_line& l) {
  const std::size_t n = l.count("n");
  if (l.list == "karras") return diffusion::karras_sigmas(n, l.number("sigma_min"), l.number("sigma_max"), l.number("rho"));
  if (l.list == "exponential") return diffusion::exponential_sigmas(n, l.number("sigma_min"), l.number("sigma_max"));
  if (l.list == "kl_optimal") return diffusion::kl_optimal_sigmas(n, l.number("sigma_min"), l.number("sigma_max"));
  if (l.list == "polyexponential")
    return diffusion::polyexponential_sigmas(n, l.number("sigma_min"), l.number("sigma_max"), l.number("rho"));
  if (l.list == "ays") {
    const std::map<std::string, diffusion::ays_model> models = {{"sd15", diffusion::ays_model::sd15},
                                                                 {"sdxl", diffusion::ays_model::sdxl},
                                                                 {"deepfloyd_if", diffusion::ays_model::deepfloyd_if},
                                                                 {"svd", diffusion::ays_model::svd}};
    return diffusion::ays_sigmas(models.at(l.arg.at("model")), n);
  }
  if (l.list == "vp")
    return diffusion::vp_sigmas(n, diffusion::vp_sde{l.number("beta_min"), l.number("beta_max")}, l.number("eps_s"));
  throw std::runtime_error("unknown list " + l.list);
}

}  // namespace

TEST_CASE("sigma lists agree with the 50-digit reference", "[sigmas][reference]") {
  const auto lines = load();
  REQUIRE(lines.size() > 1000);
  // Budget in ulp: the list is f(a + r_i (b − a)) with a, b = log σ (or σ^(1/ρ), atan σ, t) rounded
  // and the ramp rounded (≤ 1.5 ulp): an absolute error of a few u·max(|a|, |b|) in the argument,
  // which the last function turns into a relative error of that times its log-derivative. For the
  // exponential forms that is ≈ 2u(1 + L), L = max(|log σ_min|, |log σ_max|); Karras' power ρ and
  // tan near π/2 (σ_max = 1e5) are bounded by the same form with the constant below.
  const std::map<std::string, double> per_log = {
      {"karras", 2.0}, {"exponential", 2.0}, {"polyexponential", 2.0}, {"kl_optimal", 4.0}, {"vp", 2.0}, {"ays", 2.0}};
  std::map<std::string, double> worst;
  for (const auto& l : lines) {
    const auto s = compute(l);
    const std::size_t n = l.count("n"), i = l.count("i");
    REQUIRE(s.size() == n + 1);
    CHECK(s[n] == 0.0);
    const double err = ulp_error(s[i], l.exact);
    // For VP the argument is g = β_d t²/2 + β_min t ≤ L = g(1), and σ = √expm1(g) has log-derivative ≤ g/2 + 1.
    // For AYS, L = 7 bounds |log tau| over the published tables (700 … 0.002); the reference uses the
    // tables' exact decimal values, the library the nearest doubles (≤ 0.5 ulp more).
    const double L = l.list == "vp"    ? 0.5 * (l.number("beta_max") - l.number("beta_min")) + l.number("beta_min")
                     : l.list == "ays" ? 7.0
                                       : std::max(std::abs(std::log(l.number("sigma_min"))), std::abs(std::log(l.number("sigma_max"))));
    const double budget = per_log.at(l.list) * (1.0 + L);
    worst[l.list] = std::max(worst[l.list], err / (1.0 + L));
    INFO(l.list << " n = " << n << ", i = " << i << ": " << s[i] << " vs " << static_cast<double>(l.exact) << " (" << err
                << " ulp, budget " << budget << ")");
    CHECK(err <= budget);
  }
  for (const auto& [list, w] : worst) WARN(list << ": worst " << w << " ulp per (1 + L)");
}

TEST_CASE("sigma lists: exact end points, strictly decreasing, and the relations between them", "[sigmas]") {
  for (const std::size_t n : {std::size_t{2}, std::size_t{7}, std::size_t{100}}) {
    for (const auto& s : {diffusion::exponential_sigmas(n, 0.03, 14.6), diffusion::kl_optimal_sigmas(n, 0.03, 14.6),
                          diffusion::polyexponential_sigmas(n, 0.03, 14.6, 2.5), diffusion::karras_sigmas(n, 0.03, 14.6)}) {
      REQUIRE(s.size() == n + 1);
      CHECK(s.front() == 14.6);
      CHECK(s[n - 1] == 0.03);
      CHECK(s.back() == 0.0);
      for (std::size_t i = 1; i <= n; ++i) CHECK(s[i] < s[i - 1]);
    }
    // exponential = geometric + 0; polyexponential at rho = 1 is exponential to rounding.
    const auto e = diffusion::exponential_sigmas(n, 0.03, 14.6);
    const auto g = diffusion::geometric_sigmas(n, 0.03, 14.6);
    CHECK(std::vector<double>(e.begin(), e.end() - 1) == g);
    const auto p = diffusion::polyexponential_sigmas(n, 0.03, 14.6, 1.0);
    for (std::size_t i = 0; i < n; ++i) CHECK(test::ulps(p[i], e[i]) <= 4.0 * (1.0 + std::log(14.6 / 0.03)));
    // VP: the ends are the SDE's sigma at t = 1 and t = eps_s.
    const diffusion::vp_sde sde{};
    const auto v = diffusion::vp_sigmas(n, sde, 1e-3);
    CHECK(v.front() == sde.sigma(1.0));
    CHECK(v[n - 1] == sde.sigma(1e-3));
    CHECK(v.back() == 0.0);
    for (std::size_t i = 1; i <= n; ++i) CHECK(v[i] < v[i - 1]);
  }
  // KL-optimal is uniform in atan(sigma): the midpoint of a 3-level list.
  const auto k = diffusion::kl_optimal_sigmas(3, 0.5, 2.0);
  CHECK(k[1] == Approx(std::tan(0.5 * (std::atan(0.5) + std::atan(2.0)))).epsilon(1e-15));
  CHECK(k[1] == Approx(std::tan(std::atan(1.0) + 0.5 * (std::atan(0.5) + std::atan(2.0) - 2 * std::atan(1.0)))).epsilon(1e-15));
}

TEST_CASE("sigma lists refuse bad arguments, naming the function and the argument", "[sigmas][errors]") {
  CHECK_THROWS_WITH(diffusion::exponential_sigmas(1, 0.1, 1.0), Contains("exponential_sigmas") && Contains("n = 1 must be >= 2"));
  CHECK_THROWS_WITH(diffusion::kl_optimal_sigmas(5, 1.0, 0.5), Contains("kl_optimal_sigmas") && Contains("sigma_min = 1"));
  CHECK_THROWS_WITH(diffusion::polyexponential_sigmas(5, 0.1, 1.0, 0.0), Contains("polyexponential_sigmas") && Contains("rho"));
  CHECK_THROWS_WITH(diffusion::geometric_sigmas(5, -0.1, 1.0), Contains("geometric_sigmas") && Contains("sigma_min"));
  CHECK_THROWS_WITH(diffusion::vp_sigmas(5, {}, 0.0), Contains("vp_sigmas") && Contains("eps_s = 0"));
  CHECK_THROWS_WITH(diffusion::vp_sigmas(5, {}, 1.0), Contains("eps_s = 1"));
  CHECK_THROWS_WITH(diffusion::vp_sigmas(5, diffusion::vp_sde{0.1, 1e6}), Contains("vp_sigmas") && Contains("not a positive finite"));
  CHECK_THROWS_WITH(diffusion::vp_sigmas(5, diffusion::vp_sde{2.0, 1.0}), Contains("beta_min"));
  CHECK_THROWS_WITH(diffusion::vp_sigmas(1), Contains("n = 1"));
  CHECK_THROWS_WITH(diffusion::exponential_sigmas(3, 0.1, std::numeric_limits<double>::infinity()), Contains("sigma_max"));
}

TEST_CASE("Align Your Steps: the published tables at n = 11, exact table entries where positions coincide", "[sigmas]") {
  const std::vector<double> sd15 = {14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029, 0.0};
  CHECK(diffusion::ays_sigmas(diffusion::ays_model::sd15, 11) == sd15);
  const auto svd = diffusion::ays_sigmas(diffusion::ays_model::svd, 21);
  REQUIRE(svd.size() == 22);
  CHECK(svd[0] == 700.0);
  CHECK(svd[2] == 54.5);  // position 1 of the table
  CHECK(svd[20] == 0.002);
  CHECK(svd[21] == 0.0);
  CHECK(svd[1] == Approx(std::sqrt(700.0 * 54.5)).epsilon(1e-15));  // halfway in log sigma
  for (std::size_t i = 1; i < 21; ++i) CHECK(svd[i] < svd[i - 1]);
  CHECK_THROWS_WITH(diffusion::ays_sigmas(diffusion::ays_model::sdxl, 1), Contains("ays_sigmas") && Contains("n = 1"));
  CHECK_THROWS_WITH(diffusion::ays_sigmas(static_cast<diffusion::ays_model>(9), 5), Contains("published"));
}

TEST_CASE("ComfyUI's table schedulers: simple, ddim_uniform, normal and sgm_uniform", "[sigmas]") {
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000, 0.00085, 0.012));
  SECTION("simple: sigma at T - 1 - floor(k T / n), exactly") {
    for (const std::size_t n : {std::size_t{1}, std::size_t{10}, std::size_t{38}, std::size_t{1000}}) {
      const auto l = diffusion::simple_sigmas(s, n);
      REQUIRE(l.size() == n + 1);
      CHECK(l.back() == 0.0);
      for (std::size_t k = 0; k < n; ++k) CHECK(l[k] == s[999 - k * 1000 / n].sigma);
    }
    CHECK(diffusion::simple_sigmas(s, 38)[19] == s[499].sigma);  // 19 * 1000 / 38 = 500 exactly
    CHECK_THROWS_WITH(diffusion::simple_sigmas(s, 1001), Contains("n = 1001"));
  }
  SECTION("ddim_uniform: stride floor(T / n) from t = 1, reversed, one level more when the stride leaves room") {
    const auto ten = diffusion::ddim_uniform_sigmas(s, 10);
    REQUIRE(ten.size() == 11);
    for (std::size_t k = 0; k < 10; ++k) CHECK(ten[k] == s[901 - 100 * k].sigma);
    CHECK(ten.back() == 0.0);
    const auto seven = diffusion::ddim_uniform_sigmas(s, 7);  // stride 142: t = 1, 143, …, 995
    REQUIRE(seven.size() == 9);
    CHECK(seven[0] == s[995].sigma);
    CHECK(seven[7] == s[1].sigma);
  }
  SECTION("normal and sgm_uniform: timesteps uniform from T - 1 to 0, sigma by log interpolation") {
    const auto normal = diffusion::normal_sigmas(s, 10);
    const auto sgm = diffusion::normal_sigmas(s, 10, true);
    REQUIRE(normal.size() == 11);
    REQUIRE(sgm.size() == 11);
    CHECK(normal[0] == s[999].sigma);
    CHECK(normal[9] == s[0].sigma);
    CHECK(normal[3] == s[666].sigma);  // t = 999 * 6/9 = 666
    CHECK(sgm[0] == s[999].sigma);
    CHECK(sgm[9] == diffusion::t_to_sigma(s, 99.9));
    CHECK(sgm[1] == diffusion::t_to_sigma(s, 899.1));
    CHECK(normal.back() == 0.0);
    CHECK(sgm.back() == 0.0);
    CHECK_THROWS_WITH(diffusion::normal_sigmas(s, 1), Contains("n = 1 must be >= 2"));
    CHECK(diffusion::normal_sigmas(s, 1, true).size() == 2);
  }
  SECTION("a zero-terminal-SNR table is refused with the reason") {
    const diffusion::noise_schedule z(diffusion::rescale_zero_terminal_snr(diffusion::scaled_linear_betas(1000, 0.00085, 0.012)));
    CHECK_THROWS_WITH(diffusion::simple_sigmas(z, 10), Contains("simple_sigmas") && Contains("sigma is infinite at t = 999"));
    CHECK_THROWS_WITH(diffusion::normal_sigmas(z, 10), Contains("normal_sigmas"));
    CHECK_THROWS_WITH(diffusion::ddim_uniform_sigmas(z, 10), Contains("ddim_uniform_sigmas"));
  }
}
