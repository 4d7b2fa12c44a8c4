// The sigma lists of schedule/sigmas.hpp (karras, exponential, polyexponential, KL-optimal, VP, AYS,
// beta, linear-quadratic) and the Beta quantile behind the beta lists against the 50-digit reference
// of tools/gen_sigma_lists.py (tests/data/sigma_lists.ref), their structure (exact end points, final 0,
// strictly decreasing), the de-duplication of rounded timesteps, and their errors.
#include <catch2/catch.hpp>

#include <diffusion/sigmas.hpp>

#include <cmath>
#include <limits>
#include <fstream>
#include <map>
#include <optional>
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
  if (l.list == "beta")
    return diffusion::beta_sigmas(n, l.number("sigma_min"), l.number("sigma_max"), l.number("alpha"), l.number("beta"));
  if (l.list == "linear_quadratic")
    return diffusion::linear_quadratic_sigmas(n, l.number("threshold_noise"),
                                              n == 1 ? std::nullopt : std::optional<std::size_t>(l.count("linear_steps")));
  throw std::runtime_error("unknown list " + l.list);
}

// The error budget (ulp of x) of the Beta(a, b) quantile x at p (complement q), from the reference x.
// The tail that the continued fraction evaluates directly, T_c, has relative error <= 8u (1/B(a, b) from three
// tgamma calls with the rounding of a + b corrected: 3u; two pow calls: 2u; three products: 1.5u; the Lentz
// product: 1.5u). The root is found for the smaller v = min(x, 1 - x) (relative error of v then bounds that of x),
// and an error e·T_c in the tail moves v by e·T_c/pdf(v): a relative error of 8u·kappa, kappa = T_c/(v pdf(v)).
// kappa -> 1/a for x -> 0 (the quantile's own condition number), so the budget is 1 + 8 kappa ulp.
double quantile_budget(double a, double b, long double p, long double q, long double x) {
  const bool lower_half = x <= 0.5L;
  const long double v = lower_half ? x : 1 - x, a2 = lower_half ? a : b, b2 = lower_half ? b : a;
  if (!(v > 0)) return 1.0;  // 1 - x below the reference's 25 digits: the answer is the double 1.0
  const long double tv = lower_half ? p : q;  // I_v(a2, b2)
  const long double tc = v * (a2 + b2 + 2) < a2 + 1 ? tv : 1 - tv;
  const long double log_pdf = (a2 - 1) * std::log(v) + (b2 - 1) * std::log1p(-v) -
                              (std::lgamma(static_cast<long double>(a)) + std::lgamma(static_cast<long double>(b)) -
                               std::lgamma(static_cast<long double>(a) + b));
  return 1.0 + 8.0 * static_cast<double>(tc / (v * std::exp(log_pdf)));
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
    if (l.list == "beta_quantile" || l.list == "beta_timestep") continue;  // their own test cases below
    const auto s = compute(l);
    const std::size_t n = l.count("n"), i = l.count("i");
    REQUIRE(s.size() == n + 1);
    CHECK(s[n] == 0.0);
    const double err = ulp_error(s[i], l.exact);
    if (l.list == "linear_quadratic" || l.list == "beta") {
      // linear_quadratic: the double nearest a double-double evaluation (relative error ~1e-31) of the
      // formula, so <= 1 ulp. beta: sigma_min + x (sigma_max - sigma_min) rounds three times, each by at most u·sigma
      // (x·span <= sigma): <= 1.5 ulp of sigma, budget 2; and the quantile's error moves it by
      // (its budget in ulp of x)·x·span/sigma ulp of sigma.
      double budget = 1.0;
      if (l.list == "beta") {
        const double smin = l.number("sigma_min"), smax = l.number("sigma_max");
        const long double p = static_cast<long double>(n - 1 - i) / static_cast<long double>(n - 1), q = 1 - p;
        const long double x = (l.exact - smin) / (static_cast<long double>(smax) - smin);
        const double qb = i == 0 || i + 1 == n ? 0.0 : quantile_budget(l.number("alpha"), l.number("beta"), p, q, x);
        budget = 2.0 + qb * static_cast<double>(x * (static_cast<long double>(smax) - smin) / l.exact);
      }
      worst[l.list] = std::max(worst[l.list], err / budget);
      INFO(l.list << " n = " << n << ", i = " << i << ": " << s[i] << " vs " << static_cast<double>(l.exact) << " ("
                  << err << " ulp, budget " << budget << ")");
      CHECK(err <= budget);
      continue;
    }
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
  for (const auto& [list, w] : worst)
    WARN(list << ": worst " << w << (list == "beta" || list == "linear_quadratic" ? " of the budget" : " ulp per (1 + L)"));
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

TEST_CASE("logsnr_uniform_sigmas: steps uniform in lambda = log(alpha/sigma) = -log sigma", "[sigmas]") {
  // lambda from -3 log 2 to log 2 in 4 equal steps of log 2: sigma = 8, 4, 2, 1, 1/2, then 0. Each level is
  // exp of a ramp value that is exact to a few ulps of log 8: 4 ulps of the level (1 + L, L = log 16).
  const double l2 = std::log(2.0);
  const auto s = diffusion::logsnr_uniform_sigmas(5, -3.0 * l2, l2);
  const std::vector<double> want{8.0, 4.0, 2.0, 1.0, 0.5, 0.0};
  REQUIRE(s.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(test::ulps(s[i], want[i]) <= 4.0 * (1.0 + std::log(16.0)));
  // The half log-SNR of the levels, -log sigma, is equally spaced (DPM-Solver's h constant), for any ends.
  const double lmin = -2.68, lmax = 3.53;
  const auto u = diffusion::logsnr_uniform_sigmas(20, lmin, lmax);
  const double h = (lmax - lmin) / 19.0;
  for (std::size_t i = 0; i < 20; ++i) CHECK(-std::log(u[i]) == Approx(lmin + static_cast<double>(i) * h).margin(1e-14));
  CHECK(u.back() == 0.0);
  CHECK_THROWS_WITH(diffusion::logsnr_uniform_sigmas(1, 0.0, 1.0), Contains("logsnr_uniform_sigmas") && Contains("n = 1 must be >= 2"));
  CHECK_THROWS_WITH(diffusion::logsnr_uniform_sigmas(5, 1.0, 1.0), Contains("logsnr_uniform_sigmas") && Contains("lambda_min = 1 must be < lambda_max = 1"));
  CHECK_THROWS_WITH(diffusion::logsnr_uniform_sigmas(5, -std::numeric_limits<double>::infinity(), 1.0), Contains("lambda_min"));
  CHECK_THROWS_WITH(diffusion::logsnr_uniform_sigmas(5, -800.0, 1.0), Contains("outside (0, inf)"));
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

TEST_CASE("Beta quantile: 50-digit reference within 1 + 8 kappa ulp, and the exact identities", "[sigmas][beta]") {
  using diffusion::detail::beta_quantile;
  std::size_t count = 0;
  double worst = 0.0;
  for (const auto& l : load()) {
    if (l.list != "beta_quantile") continue;
    ++count;
    const std::size_t m = l.count("n"), k = l.count("i");
    const double a = l.number("alpha"), b = l.number("beta");
    // p = k/m and q = (m - k)/m, each the double nearest its rational (as beta_sigmas forms them).
    const double p = static_cast<double>(k) / static_cast<double>(m), q = static_cast<double>(m - k) / static_cast<double>(m);
    const double x = beta_quantile(a, b, p, q);
    const long double pl = static_cast<long double>(k) / static_cast<long double>(m);
    const double budget = quantile_budget(a, b, pl, 1 - pl, l.exact);
    const double err = ulp_error(x, l.exact);
    worst = std::max(worst, err / budget);
    INFO("a = " << a << ", b = " << b << ", p = " << k << "/" << m << ": " << x << " vs " << static_cast<double>(l.exact)
                << " (" << err << " ulp, budget " << budget << ")");
    CHECK(err <= budget);
  }
  REQUIRE(count >= 250);
  WARN("Beta quantile: worst " << worst << " of the budget 1 + 8 kappa");

  // Exact cases: the ends; a = b: the median is 1/2 and the quantile of q is 1 - the quantile of p, bit for bit
  // (p dyadic, so 1 - p is exact and the single-argument form sees the same pair).
  CHECK(beta_quantile(0.6, 0.6, 0.0, 1.0) == 0.0);
  CHECK(beta_quantile(0.6, 0.6, 1.0, 0.0) == 1.0);
  for (const double a : {0.1, 0.6, 1.0, 2.5, 10.0}) {
    CHECK(beta_quantile(a, a, 0.5) == 0.5);
    for (const double p : {0x1p-40, 0x1p-10, 0.125, 0.3125, 0.4375, 0.5 - 0x1p-30}) {
      const double lo = beta_quantile(a, a, p), hi = beta_quantile(a, a, 1.0 - p);
      INFO("a = b = " << a << ", p = " << p);
      CHECK(hi == 1.0 - lo);
      CHECK(lo < 0.5);
    }
  }
  // a = b = 1 is the uniform distribution: the quantile is p (to the budget 1 + 8 kappa, kappa = 1 for
  // p <= mean 1/2: T_c = p, v pdf = p; for p > 1/2 the complement is solved and rounded once more).
  for (const double p : {1e-9, 0.001, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.999}) {
    INFO("p = " << p);
    CHECK(test::ulps(beta_quantile(1.0, 1.0, p), p) <= 9.0);
  }
}

TEST_CASE("beta_sigmas: exact ends, strictly decreasing, linear at alpha = beta = 1, refusals", "[sigmas][beta]") {
  for (const std::size_t n : {std::size_t{2}, std::size_t{3}, std::size_t{10}, std::size_t{200}}) {
    const auto s = diffusion::beta_sigmas(n, 0.03, 14.6);
    REQUIRE(s.size() == n + 1);
    CHECK(s[0] == 14.6);
    CHECK(s[n - 1] == 0.03);
    CHECK(s[n] == 0.0);
    for (std::size_t i = 1; i <= n; ++i) CHECK(s[i] < s[i - 1]);
    // alpha = beta = 1: sigma_min + (1 - i/(n-1)) (sigma_max - sigma_min), the quantile within 9 ulp of p (above),
    // sigma's own rounding 1.5 ulp.
    const auto lin = diffusion::beta_sigmas(n, 0.03, 14.6, 1.0, 1.0);
    for (std::size_t i = 0; i < n; ++i) {
      const double p = static_cast<double>(n - 1 - i) / static_cast<double>(n - 1);
      INFO("n = " << n << ", i = " << i);
      CHECK(test::ulps(lin[i], 0.03 + p * (14.6 - 0.03)) <= 2.0 + 9.0 * p * (14.6 - 0.03) / lin[i]);
    }
  }
  // alpha = beta: symmetric about the middle of [sigma_min, sigma_max]. With p = k/8 (dyadic) the quantiles
  // are complements bit for bit, so sigma_i = fl(1 + 2x) and sigma_{8-i} = fl(3 - 2x): each sum rounds by at
  // most ulp(3)/2 = 2^-52 and the differences with 2 are exact (Sterbenz), hence the margin 2^-51.
  const auto sym = diffusion::beta_sigmas(9, 1.0, 3.0, 0.6, 0.6);
  for (std::size_t i = 0; i < 9; ++i) CHECK(sym[i] - 2.0 == Approx(2.0 - sym[8 - i]).margin(0x1p-51));
  CHECK(sym[4] == 2.0);
  CHECK_THROWS_WITH(diffusion::beta_sigmas(1, 0.1, 1.0), Contains("beta_sigmas") && Contains("n = 1 must be >= 2"));
  CHECK_THROWS_WITH(diffusion::beta_sigmas(5, 0.1, 1.0, 0.05), Contains("beta_sigmas") && Contains("alpha = 0.05") &&
                                                                    Contains("[0.1, 10]"));
  CHECK_THROWS_WITH(diffusion::beta_sigmas(5, 0.1, 1.0, 0.6, 11.0), Contains("beta = 11"));
  CHECK_THROWS_WITH(diffusion::beta_sigmas(5, 1.0, 0.1), Contains("sigma_min = 1"));
}

TEST_CASE("ComfyUI's beta scheduler: rounded quantile timesteps against the reference, first of each run kept",
          "[sigmas][beta]") {
  // Group the reference lines by (n, T, alpha, beta); each holds round-half-even(x_k (T - 1)) before de-duplication.
  std::map<std::tuple<std::size_t, std::size_t, double, double>, std::vector<std::size_t>> expected;
  for (const auto& l : load()) {
    if (l.list != "beta_timestep") continue;
    const std::size_t n = l.count("n"), k = l.count("i"), T = l.count("T");
    const double a = l.number("alpha"), b = l.number("beta"), gap = l.number("gap");
    // The computed quantile must round as the exact one: its error (<= 1 + 8 kappa ulp; far below 1e-9·(T - 1)
    // for these shapes, kappa <= 1e3) must not reach the distance to the rounding boundary; an exact tie only
    // where the quantile is exactly 1/2 (a = b, k = n/2), which the library returns exactly.
    if (gap == 0.0) CHECK((a == b && 2 * k == n));
    else CHECK(gap > 1e-9);
    auto& t = expected[{n, T, a, b}];
    const auto tk = static_cast<std::size_t>(l.exact);
    if (t.empty() || t.back() != tk) t.push_back(tk);
  }
  REQUIRE(expected.size() >= 30);
  std::size_t shorter = 0;
  for (const auto& [key, t] : expected) {
    const auto [n, T, a, b] = key;
    INFO("n = " << n << ", T = " << T << ", alpha = " << a << ", beta = " << b);
    const auto got = diffusion::beta_timesteps(T, n, a, b);
    CHECK(got == t);
    CHECK(got.front() == T - 1);
    for (std::size_t k = 1; k < got.size(); ++k) CHECK(got[k] < got[k - 1]);
    if (got.size() < n) ++shorter;
  }
  CHECK(shorter > 0);  // some lists lost collisions (T = 100, n = 80)
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(1000, 0.00085, 0.012));
  const auto t = diffusion::beta_timesteps(1000, 20);
  const auto sig = diffusion::beta_table_sigmas(s, 20);
  REQUIRE(sig.size() == t.size() + 1);
  for (std::size_t k = 0; k < t.size(); ++k) CHECK(sig[k] == s[t[k]].sigma);
  CHECK(sig.back() == 0.0);
  CHECK(sig.front() == s[999].sigma);
  CHECK_THROWS_WITH(diffusion::beta_timesteps(1, 5), Contains("beta_timesteps") && Contains("T = 1"));
  CHECK_THROWS_WITH(diffusion::beta_timesteps(1000, 0), Contains("n = 0"));
  CHECK_THROWS_WITH(diffusion::beta_table_sigmas(s, 5, 20.0), Contains("alpha = 20"));
}

TEST_CASE("linear_quadratic_sigmas: structure, the threshold level, and refusals", "[sigmas]") {
  for (const std::size_t n : {std::size_t{2}, std::size_t{3}, std::size_t{10}, std::size_t{50}, std::size_t{1001}}) {
    const auto s = diffusion::linear_quadratic_sigmas(n);
    const std::size_t L = n / 2;
    REQUIRE(s.size() == n + 1);
    CHECK(s[0] == 1.0);
    CHECK(s[n] == 0.0);
    CHECK(s[L] == 1.0 - 0.025);  // the end of the linear part: exactly 1 - tau, correctly rounded
    for (std::size_t i = 1; i <= n; ++i) CHECK(s[i] < s[i - 1]);
    for (std::size_t i = 1; i < L; ++i) CHECK(s[i] == Approx(1.0 - 0.025 * static_cast<double>(i) / static_cast<double>(L)).epsilon(1e-15));
  }
  CHECK(diffusion::linear_quadratic_sigmas(1) == std::vector<double>{1.0, 0.0});
  CHECK(diffusion::linear_quadratic_sigmas(10, 0.1, 3)[3] == 1.0 - 0.1);
  CHECK_THROWS_WITH(diffusion::linear_quadratic_sigmas(0), Contains("linear_quadratic_sigmas") && Contains("n = 0"));
  CHECK_THROWS_WITH(diffusion::linear_quadratic_sigmas(10, 0.0), Contains("threshold_noise = 0"));
  CHECK_THROWS_WITH(diffusion::linear_quadratic_sigmas(10, 1.0), Contains("threshold_noise = 1"));
  CHECK_THROWS_WITH(diffusion::linear_quadratic_sigmas(10, 0.025, 0), Contains("linear_steps = 0") && Contains("[1, 9]"));
  CHECK_THROWS_WITH(diffusion::linear_quadratic_sigmas(10, 0.025, 10), Contains("linear_steps = 10"));
  // tau = 0.5 with L = 1 of n = 1000: the quadratic turns back before the end.
  CHECK_THROWS_WITH(diffusion::linear_quadratic_sigmas(1000, 0.5, 1), Contains("turn back"));
}

TEST_CASE("deduplicate_timesteps: Karras sigmas on a 100-step schedule collide at 80 steps", "[sigmas][timesteps]") {
  const diffusion::noise_schedule s(diffusion::scaled_linear_betas(100, 0.00085, 0.012));
  const auto [smin, smax] = diffusion::sigma_range(s);
  auto sigmas = diffusion::karras_sigmas(80, smin, smax);  // 81 values, the last 0
  std::vector<double> t(80);
  for (std::size_t i = 0; i < 80; ++i) t[i] = std::round(diffusion::sigma_to_t(s, sigmas[i]));
  const auto original_t = t;
  const auto original_sigmas = sigmas;
  std::size_t distinct = 1;
  for (std::size_t i = 1; i < 80; ++i) if (t[i] != t[i - 1]) ++distinct;
  REQUIRE(distinct < 80);  // the collisions of diffusers #5687
  const std::size_t dropped = diffusion::deduplicate_timesteps(t, sigmas);
  CHECK(dropped == 80 - distinct);
  REQUIRE(t.size() == distinct);
  REQUIRE(sigmas.size() == distinct + 1);
  CHECK(sigmas.back() == 0.0);
  for (std::size_t k = 1; k < t.size(); ++k) CHECK(t[k] < t[k - 1]);
  for (std::size_t k = 1; k < sigmas.size(); ++k) CHECK(sigmas[k] < sigmas[k - 1]);
  // Each kept step is the first of its run in the original list, with its sigma.
  std::size_t j = 0;
  for (std::size_t k = 0; k < t.size(); ++k) {
    while (original_t[j] != t[k]) ++j;
    CHECK(sigmas[k] == original_sigmas[j]);
    CHECK((j == 0 || original_t[j - 1] != t[k]));
  }
  // Integer timesteps, no terminal level; nothing to drop; refusals.
  std::vector<long> it = {9, 9, 7, 5, 5, 5, 1};
  std::vector<double> is = {9.0, 8.5, 7.0, 5.0, 4.9, 4.8, 1.0};
  CHECK(diffusion::deduplicate_timesteps(it, is) == 3);
  CHECK(it == std::vector<long>{9, 7, 5, 1});
  CHECK(is == std::vector<double>{9.0, 7.0, 5.0, 1.0});
  CHECK(diffusion::deduplicate_timesteps(it, is) == 0);
  std::vector<long> up = {3, 4};
  std::vector<double> up_s = {1.0, 2.0};
  CHECK_THROWS_WITH(diffusion::deduplicate_timesteps(up, up_s),
                    Contains("deduplicate_timesteps") && Contains("timesteps[1] = 4 must be <= timesteps[0] = 3"));
  std::vector<double> bad = {1.0};
  CHECK_THROWS_WITH(diffusion::deduplicate_timesteps(up, bad), Contains("sigmas has 1 entries"));
  std::vector<double> nan_t = {std::nan(""), 1.0};
  std::vector<double> nan_s = {1.0, 0.5};
  CHECK_THROWS_WITH(diffusion::deduplicate_timesteps(nan_t, nan_s), Contains("deduplicate_timesteps"));
}
