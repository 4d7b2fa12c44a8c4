// The rectified-flow schedules (schedule/flow.hpp) and the prediction conversions at flow levels
// (process/parameterization.hpp) against the 50-digit reference of tools/gen_flow_reference.py,
// tests/data/flow.ref. Each value is compared with the exact one (its 25 digits read as long double)
// and its error measured in ulps of the exact value, as a fraction; the budget of each function
// follows from a rounding analysis written next to it. Notation: u = 2^-53, the unit roundoff; a
// relative error e·u is less than e ulps (the ulp of x is at least u|x|); libm's exp and pow are
// taken to be within 1 ulp (a relative 2u).
#include <catch2/catch.hpp>

#include <diffusion/process/parameterization.hpp>
#include <diffusion/schedule/flow.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef DIFFUSION_TEST_DATA_DIR
#error "DIFFUSION_TEST_DATA_DIR must name tests/data"
#endif

namespace {

std::string text(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}

// One data line of flow.ref: `function quantity key=value,... value` (the header of the file).
struct ref_line {
  std::string function, quantity, args, value;
  std::map<std::string, std::string> arg;

  [[nodiscard]] const std::string& get(const std::string& key) const {
    const auto it = arg.find(key);
    if (it == arg.end()) throw std::runtime_error("flow.ref: no " + key + " in " + describe());
    return it->second;
  }
  [[nodiscard]] double number(const std::string& key) const { return std::strtod(get(key).c_str(), nullptr); }
  [[nodiscard]] std::size_t count(const std::string& key) const { return std::stoul(get(key)); }
  [[nodiscard]] bool flag(const std::string& key) const { return get(key) == "1"; }
  [[nodiscard]] long double exact() const { return std::strtold(value.c_str(), nullptr); }
  [[nodiscard]] std::string describe() const { return function + " " + quantity + " " + args + " = " + value; }
};

const std::vector<ref_line>& flow_ref() {
  static const std::vector<ref_line> lines = [] {
    const std::string path = std::string(DIFFUSION_TEST_DATA_DIR) + "/flow.ref";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open reference file " + path);
    std::vector<ref_line> out;
    std::string text_line;
    while (std::getline(in, text_line)) {
      if (text_line.empty() || text_line[0] == '#') continue;
      std::istringstream fields(text_line);
      ref_line l;
      std::string extra;
      if (!(fields >> l.function >> l.quantity >> l.args >> l.value) || (fields >> extra))
        throw std::runtime_error("flow.ref: not 4 fields: " + text_line);
      std::istringstream pairs(l.args);
      std::string kv;
      while (std::getline(pairs, kv, ',')) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos) throw std::runtime_error("flow.ref: bad argument " + kv);
        l.arg[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      out.push_back(std::move(l));
    }
    return out;
  }();
  return lines;
}

std::vector<const ref_line*> lines_of(const std::string& function) {
  std::vector<const ref_line*> out;
  for (const ref_line& l : flow_ref())
    if (l.function == function) out.push_back(&l);
  return out;
}

// The spacing of doubles at the exact value x: 2^(e-52) for |x| in [2^e, 2^(e+1)), 2^-1074 below the
// normal range (and at 0).
long double ulp_of(long double x) {
  if (x == 0.0L) return std::ldexp(1.0L, -1074);
  int e = 0;
  (void)std::frexp(std::fabs(x), &e);  // |x| = f 2^e, f in [1/2, 1)
  return std::ldexp(1.0L, std::max(e - 53, -1074));
}

// |got - exact| in ulps of the exact value.
double ulp_error(double got, long double exact) {
  if (static_cast<long double>(got) == exact) return 0.0;
  if (!std::isfinite(got)) return std::numeric_limits<double>::infinity();
  return static_cast<double>(std::fabs(static_cast<long double>(got) - exact) / ulp_of(exact));
}

// How exactly the reference is read: strtold keeps LDBL_MANT_DIG bits of the 25 digits, so a measured
// error is off by at most 2^(53 - LDBL_MANT_DIG) ulp (1/2048 with x87's 64 bits; 1 where long double is
// double). Every budget below gets this added.
const double read_error = std::ldexp(1.0, 53 - LDBL_MANT_DIG);

struct worst_error {
  double ulps = 0.0;
  std::string where;
  void add(double err, const std::string& at) {
    if (err > ulps) ulps = err, where = at;
  }
};

diffusion::time_shift_kind shift_kind(const std::string& name) {
  if (name == "exponential") return diffusion::time_shift_kind::exponential;
  if (name == "linear") return diffusion::time_shift_kind::linear;
  throw std::runtime_error("flow.ref: unknown time shift kind " + name);
}

diffusion::prediction prediction_kind(const std::string& name) {
  using P = diffusion::prediction;
  for (P p : {P::epsilon, P::sample, P::v, P::score, P::flow_velocity})
    if (diffusion::to_string(p) == name) return p;
  throw std::runtime_error("flow.ref: unknown prediction kind " + name);
}

}  // namespace

TEST_CASE("sd3_shift is within (2 + 2(1 - s')) ulp of the 50-digit reference", "[flow][reference]") {
  // b = s*sigma (u) and 1 - sigma (u; exact for sigma >= 1/2) enter s' = b/((1 - sigma) + b) with weights
  // of size 1 - s'; the sum and the quotient add u each: relative error <= (2 + 2(1 - s'))u. Below the
  // normal range b's rounding is absolute, at most 1/2 ulp of the result, inside the same budget.
  const auto lines = lines_of("sd3_shift");
  REQUIRE(lines.size() >= 500);
  worst_error worst;
  for (const ref_line* l : lines) {
    const long double want = l->exact();
    const double got = diffusion::sd3_shift(l->number("sigma"), l->number("shift"));
    const double err = ulp_error(got, want), budget = 2.0 + 2.0 * (1.0 - static_cast<double>(want));
    worst.add(err, l->describe());
    INFO(l->describe() << ": got " << text(got) << ", " << err << " ulp, budget " << budget);
    CHECK(err <= budget + read_error);
  }
  WARN("sd3_shift: max " << worst.ulps << " ulp at " << worst.where);
}

TEST_CASE("time_shift is within (2 + K(1 - s')) ulp of the 50-digit reference", "[flow][reference]") {
  // 1/(1 + S), S = r^p e^-mu (or r^p/mu), r = (1 - sigma)/sigma: r carries <= 2u (1 - sigma, then the
  // division), r^p p times that plus pow's 2u when p != 1, e^-mu 2u and the product u (the division by mu:
  // u). S's error enters 1/(1 + S) with weight S/(1 + S) = 1 - s', the sum and the division add u each:
  // relative error <= (2 + K(1 - s'))u, K = 5 (exponential, p = 1), 2p + 5 (p != 1), 3 (linear, p = 1),
  // 2p + 3 (linear, p != 1). (The reference has no sigma whose S overflows: see flow.hpp.)
  const auto lines = lines_of("time_shift");
  REQUIRE(lines.size() >= 1000);
  std::map<std::string, worst_error> worst;
  for (const ref_line* l : lines) {
    const auto kind = shift_kind(l->quantity);
    const double p = l->number("power");
    const long double want = l->exact();
    const double got = diffusion::time_shift(kind, l->number("mu"), l->number("sigma"), p);
    const double k = (kind == diffusion::time_shift_kind::exponential ? 5.0 : 3.0) + (p == 1.0 ? 0.0 : 2.0 * p);
    const double err = ulp_error(got, want), budget = 2.0 + k * (1.0 - static_cast<double>(want));
    worst[l->quantity + " p=" + l->get("power")].add(err, l->describe());
    INFO(l->describe() << ": got " << text(got) << ", " << err << " ulp, budget " << budget);
    CHECK(err <= budget + read_error);
  }
  for (const auto& [what, w] : worst) WARN("time_shift " << what << ": max " << w.ulps << " ulp at " << w.where);
}

TEST_CASE("flux_mu is within u(|mu| + 5|mu - mu0|) of the 50-digit reference", "[flow][reference]") {
  // mu0 + m (L - L0), m = (mu1 - mu0)/(L1 - L0): five roundings (two differences, the quotient, L - L0,
  // the product) in the term P = mu - mu0 and one in the sum: |error| <= 5u|mu - mu0| + u|mu|. Where
  // |mu - mu0| > |mu| (mu near 0, parameters of opposite sign) that is cancellation inherent in the
  // interpolation, so the budget is absolute, not a fixed number of ulps.
  const auto lines = lines_of("flux_mu");
  REQUIRE(lines.size() >= 30);
  std::map<std::string, worst_error> worst;
  for (const ref_line* l : lines) {
    const diffusion::flux_shift_parameters params{l->number("base_seq_len"), l->number("max_seq_len"),
                                                  l->number("base_shift"), l->number("max_shift")};
    const long double want = l->exact();
    const double got = diffusion::flux_mu(l->number("seq_len"), params);
    const long double u = std::ldexp(1.0L, -53);
    const long double bound = u * (std::fabs(want) + 5.0L * std::fabs(want - static_cast<long double>(params.base_shift))) +
                              static_cast<long double>(read_error) * ulp_of(want);
    worst["mu0=" + l->get("base_shift")].add(ulp_error(got, want), l->describe());
    INFO(l->describe() << ": got " << text(got) << ", " << ulp_error(got, want) << " ulp");
    CHECK(std::fabs(static_cast<long double>(got) - want) <= bound);
  }
  for (const auto& [what, w] : worst) WARN("flux_mu " << what << ": max " << w.ulps << " ulp at " << w.where);
}

TEST_CASE("flow_timestep is the correctly rounded sigma N", "[flow][reference]") {
  // One multiplication of exact inputs: correctly rounded, <= 1/2 ulp.
  const auto lines = lines_of("flow_timestep");
  REQUIRE(lines.size() >= 100);
  worst_error worst;
  for (const ref_line* l : lines) {
    const long double want = l->exact();
    const double got = diffusion::flow_timestep(l->number("sigma"), l->count("N"));
    const double err = ulp_error(got, want);
    worst.add(err, l->describe());
    INFO(l->describe() << ": got " << text(got) << ", " << err << " ulp");
    CHECK(err <= 0.5 + read_error);
  }
  WARN("flow_timestep: max " << worst.ulps << " ulp at " << worst.where);
}

TEST_CASE("flow_sigmas lists are within their derived ulp budgets of the 50-digit reference", "[flow][reference]") {
  // Budgets, stage by stage (e(x): a bound of x's relative error, in u):
  // * the unshifted pair (sigma, 1 - sigma): the ends 1/N and (N - 1)/N are rounded once; sigma_i =
  //   fma(i, lo, n - 1 - i)/(n - 1) and 1 - sigma_i = i (1 - lo)/(n - 1) add 2u to lo's error, so
  //   e(sigma) + e(1 - sigma) <= E = 6 (14 when diffusers' double shift first shifts lo, 5u each); a custom
  //   list: sigma exact, 1 - sigma rounded once, E = 1.
  // * the shift: s' = b/((1 - sigma) + b), b = s sigma (k = 1 more rounding), or 1/(1 + S), S =
  //   (1 - sigma)/sigma e^-mu (k = 4: quotient, exp, product) or /mu (k = 2). The input errors enter with
  //   weight 1 - s', the sum and the quotient add 2: e(s') <= (1 - s')(E + k) + 2, and symmetrically
  //   e(1 - s') <= s'(E + k) + 2. An inverted list prints 1 - s', so for both the printed value x has
  //   e(x) <= (1 - x)(E + k) + 2.
  // * the stretch to the terminal T: with e1 = E + k + 2 bounding every shifted s' and 1 - s',
  //   1 - s'' = (1 - s')/scale, scale = (1 - s_L)/(1 - T), has e <= 2 e1 + 3; s'' is 1 minus that where
  //   that is <= 1/2 (+1), else ((s' - s_L) + T(1 - s'))/(1 - s_L), whose numerator is >= T(1 - s_L), so
  //   the errors of s' and s_L weigh at most 1 + 2 s_L/(T(1 - s_L)): e <= e1 (3 + 2 s_L/(T(1 - s_L))) + 4.
  // * the timestep sigma N: one more rounding, +1.
  std::map<std::string, diffusion::flow_schedule_options> options;
  std::map<std::string, std::size_t> steps;
  std::map<std::string, bool> custom;
  std::map<std::string, std::vector<double>> inputs;
  for (const ref_line* l : lines_of("flow_case")) {
    const std::string name = l->get("name");
    diffusion::flow_schedule_options o;
    o.num_train_timesteps = l->count("N");
    o.shift = l->number("shift");
    o.dynamic = l->flag("dynamic");
    o.mu = l->number("mu");
    o.kind = shift_kind(l->get("kind"));
    o.shift_terminal = l->number("terminal");
    o.invert = l->flag("invert");
    o.diffusers_double_shift = l->flag("double_shift");
    options[name] = o;
    steps[name] = l->count("n");
    custom[name] = l->flag("custom");
  }
  for (const ref_line* l : lines_of("flow_input")) {
    auto& list = inputs[l->get("case")];
    REQUIRE(l->count("i") == list.size());
    list.push_back(std::strtod(l->value.c_str(), nullptr));
  }
  REQUIRE(options.size() >= 15);

  std::map<std::string, std::vector<const ref_line*>> sigma_lines, timestep_lines;
  for (const ref_line* l : lines_of("flow_sigmas")) {
    auto& into = l->quantity == "sigma" ? sigma_lines : timestep_lines;
    into[l->get("case")].push_back(l);
  }
  worst_error worst_sigma, worst_timestep;
  for (const auto& entry : options) {
    const std::string& name = entry.first;
    const diffusion::flow_schedule_options& o = entry.second;  // (not a structured binding: captured below)
    INFO("case " << name);
    const std::size_t n = steps.at(name);
    diffusion::flow_timesteps got;
    if (custom.at(name)) {
      REQUIRE(inputs[name].size() == n);
      got = diffusion::flow_sigmas(std::span<const double>(inputs[name]), o);
    } else {
      got = diffusion::flow_sigmas(n, o);
    }
    REQUIRE(got.sigmas.size() == n + 1);
    REQUIRE(got.timesteps.size() == n);
    REQUIRE(sigma_lines[name].size() == n + 1);
    REQUIRE(timestep_lines[name].size() == n);

    const double E = custom.at(name) ? 1.0 : (o.diffusers_double_shift && !o.dynamic ? 14.0 : 6.0);
    const double k = !o.dynamic ? 1.0 : (o.kind == diffusion::time_shift_kind::exponential ? 4.0 : 2.0);
    double stretch_budget = 0.0;
    if (o.shift_terminal > 0.0) {
      // s_L, the last shifted sigma before the stretch, only weighs the budget: plain double formulas.
      const double N = static_cast<double>(o.num_train_timesteps);
      double x = custom.at(name) ? inputs[name].back() : 1.0 / N;
      if (!custom.at(name) && o.diffusers_double_shift && !o.dynamic) x = o.shift * x / (1.0 + (o.shift - 1.0) * x);
      const double m = o.kind == diffusion::time_shift_kind::exponential ? std::exp(o.mu) : o.mu;
      const double s_last = o.dynamic ? m / (m + (1.0 / x - 1.0)) : o.shift * x / (1.0 + (o.shift - 1.0) * x);
      const double e1 = E + k + 2.0;
      stretch_budget = e1 * (3.0 + 2.0 * s_last / (o.shift_terminal * (1.0 - s_last))) + 4.0;
    }
    const auto budget = [&](long double want) {
      return o.shift_terminal > 0.0 ? stretch_budget : (1.0 - static_cast<double>(want)) * (E + k) + 2.0;
    };
    for (const ref_line* l : sigma_lines[name]) {
      const std::size_t i = l->count("i");
      REQUIRE(i <= n);
      const long double want = l->exact();
      const double err = ulp_error(got.sigmas[i], want);
      worst_sigma.add(err, l->describe());
      INFO(l->describe() << ": got " << text(got.sigmas[i]) << ", " << err << " ulp, budget " << budget(want));
      CHECK(err <= budget(want) + read_error);
    }
    for (const ref_line* l : timestep_lines[name]) {
      const std::size_t i = l->count("i");
      REQUIRE(i < n);
      const long double want = l->exact();
      const long double sigma = want / static_cast<long double>(o.num_train_timesteps);
      const double err = ulp_error(got.timesteps[i], want);
      worst_timestep.add(err, l->describe());
      INFO(l->describe() << ": got " << text(got.timesteps[i]) << ", " << err << " ulp, budget " << budget(sigma) + 1.0);
      CHECK(err <= budget(sigma) + 1.0 + read_error);
    }
  }
  WARN("flow_sigmas sigma: max " << worst_sigma.ulps << " ulp at " << worst_sigma.where);
  WARN("flow_sigmas timestep: max " << worst_timestep.ulps << " ulp at " << worst_timestep.where);
}

TEST_CASE("conversion coefficients at flow levels are within 3 ulp of the 50-digit reference", "[flow][reference]") {
  // parameterization.hpp documents <= 3 ulp for every coefficient (at most two operations on the level's
  // entries, each correctly rounded for a DDPM table). At a flow level alpha = 1 - s is rounded once more
  // for s < 1/2, and alpha^2 + sigma^2 and its root are not exact, so a first-order worst case for the
  // longest chain, -(sigma r)/alpha, is 6u: the 3 ulp checked here is the documented figure, verified at
  // these levels, not a proven bound.
  const auto lines = lines_of("conversion");
  REQUIRE(lines.size() == 5 * 25 * 2);
  std::map<std::string, worst_error> worst;
  for (const ref_line* l : lines) {
    const auto level = diffusion::noise_level::flow(l->number("s"));
    const auto c =
        diffusion::conversion_coefficients(level, prediction_kind(l->get("from")), prediction_kind(l->get("to")));
    const double got = l->quantity == "a" ? c.a : c.b;
    const double err = ulp_error(got, l->exact());
    worst["s=" + l->get("s")].add(err, l->describe());
    INFO(l->describe() << ": got " << text(got) << ", " << err << " ulp");
    CHECK(err <= 3.0 + read_error);
  }
  for (const auto& [what, w] : worst) WARN("conversion " << what << ": max " << w.ulps << " ulp at " << w.where);
}

TEST_CASE("the shifts keep 1 at 1 and never leave [0, 1]", "[flow][reference]") {
  // Found with the reference: 1 + (s - 1) sigma rounds for s < 1/2, which put sd3_shift(1, 0.1) at
  // 1 + 2^-52 and made the double-shifted list throw; and 0 * e^-mu was NaN at sigma = 1 for mu < -709.78.
  for (double s : {1e-3, 0.1, 0.3, 0.7, 3.0, 1e300}) {
    INFO("shift " << s);
    CHECK(diffusion::sd3_shift(1.0, s) == 1.0);
    for (double sigma : {0.5, 0.9, 1.0 - 0x1p-53}) CHECK(diffusion::sd3_shift(sigma, s) <= 1.0);
    CHECK_NOTHROW(diffusion::flow_sigmas(20, {.shift = s, .diffusers_double_shift = true}));
  }
  CHECK(diffusion::time_shift(diffusion::time_shift_kind::exponential, -800.0, 1.0) == 1.0);
  CHECK(diffusion::time_shift(diffusion::time_shift_kind::exponential, 800.0, 0.5) == 1.0);
  CHECK(diffusion::time_shift(diffusion::time_shift_kind::exponential, -800.0, 0.5) == 0.0);
  // The stretched list ends on the terminal and inverted lists start at 0 exactly.
  const auto stretched = diffusion::flow_sigmas(28, {.shift = 3.0, .shift_terminal = 0.02});
  CHECK(ulp_error(stretched.sigmas[27], static_cast<long double>(0.02)) <= 1.0);  // T (1 - s_L)/(1 - s_L)
  CHECK(stretched.sigmas[0] == 1.0);
  const auto inverted = diffusion::flow_sigmas(28, {.shift = 3.0, .shift_terminal = 0.02, .invert = true});
  CHECK(inverted.sigmas[0] == 0.0);
  CHECK(inverted.sigmas[28] == 1.0);
}
