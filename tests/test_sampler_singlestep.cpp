// The two-stage samplers of samplers/singlestep.hpp (DPM2, DPM2-ancestral, DPM++ 2S-ancestral,
// DPM++ SDE) against exact targets on Gaussian data: convergence order 2 of the deterministic ones
// to the exact flow map, the exact law of each stochastic chain (Monte Carlo) and its convergence to
// the data law, the level form against the σ-space form, diffusers' KDPM2 / KDPM2-ancestral
// schedulers replayed step by step, and errors.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_karras.hpp>
#include <diffusion/samplers/singlestep.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

using Catch::Matchers::Contains;

namespace {

using gauss_model = diffusion::sigma_space_model<diffusion::gaussian_data>;

// The exact flow map of data N(mu, sd^2) per dimension: x(sigma) - mu = (x0 - mu) sqrt(sd^2 + sigma^2)/sqrt(sd^2 + sigma0^2).
template <class Run>
std::vector<double> flow_map_errors(Run run, const std::vector<std::size_t>& Ns) {
  const std::vector<double> mu = {0.2, -0.5, 1.0}, sd = {0.5, 0.1, 1.5};
  diffusion::gaussian_data g(mu, sd);
  gauss_model D(g);
  const double smin = 0.02, smax = 80.0;
  std::vector<double> errors;
  for (std::size_t N : Ns) {
    auto sig = diffusion::karras_sigmas(N, smin, smax);
    sig.pop_back();  // end at smin: every step is two-stage
    std::vector<double> x = {60.0, -40.0, 90.0};
    const std::vector<double> x0 = x;
    run(D, x, sig);
    double err = 0;
    for (std::size_t k = 0; k < 3; ++k)
      err = std::max(err, std::abs(x[k] - (mu[k] + (x0[k] - mu[k]) * std::sqrt(sd[k] * sd[k] + smin * smin) /
                                                        std::sqrt(sd[k] * sd[k] + smax * smax))));
    errors.push_back(err);
  }
  return errors;
}

// k-diffusion's get_ancestral_step with eta, written here independently of the library.
std::pair<double, double> split(double from, double to, double eta) {
  const double up = std::min(to, eta * std::sqrt(to * to * (from * from - to * to) / (from * from)));
  return {std::sqrt(to * to - up * up), up};
}

enum class method { dpm2_a, dpmpp_2s_a, dpmpp_sde };

// The law of y = x - mu after the sampler on 1-D data N(mu, sd^2) in sigma-space, where
// D(x; s) - mu = k(s) y, k = sd^2/(sd^2 + s^2): each step is y' = P y + (independent normals), so the
// mean and variance follow exactly. Written from k-diffusion's sample_dpm_2_ancestral,
// sample_dpmpp_2s_ancestral and sample_dpmpp_sde (r = 1/2, its Brownian-tree noise: the two draws of
// a step are normalized increments of one Brownian motion in sigma), not from the library.
struct chain_law {
  double mean, var;
};
chain_law exact_chain(method m, const std::vector<double>& sig, double mu, double sd, double eta) {
  auto k = [sd](double s) { return sd * sd / (sd * sd + s * s); };
  double mean = -mu, var = sig[0] * sig[0];
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const double s = sig[i], sn = sig[i + 1];
    double P = 0.0, nv = 0.0;  // y' = P y + noise of variance nv
    if (m == method::dpmpp_sde) {
      if (sn == 0.0) {
        P = k(s);
      } else {
        const double sm = std::sqrt(s * sn);
        const auto [d1, u1] = split(s, sm, eta);
        const double pm = d1 / s + (1.0 - d1 / s) * k(s);  // y_m = pm y + u1 z1
        const auto [d2, u2] = split(s, sn, eta);
        const double q = (1.0 - d2 / s) * k(sm);           // y' = (d2/s) y + q y_m + u2 w2
        // w1, w2: the tree's normalized increments over [sm, s] and [sn, s]: correlation rho.
        const double rho = std::sqrt((s - sm) / (s - sn));
        P = d2 / s + q * pm;
        nv = q * q * u1 * u1 + u2 * u2 + 2.0 * q * u1 * u2 * rho;
      }
    } else {
      const auto [down, up] = split(s, sn, eta);
      if (down == 0.0) {
        P = k(s);
      } else if (m == method::dpm2_a) {
        const double sm = std::exp(0.5 * (std::log(s) + std::log(down)));
        const double pm = 1.0 + (sm - s) * (1.0 - k(s)) / s;           // y_m = pm y
        P = 1.0 + (down - s) * (1.0 - k(sm)) * pm / sm;               // y' = y + (down - s)(y_m - k_m y_m)/s_m
        nv = up * up;
      } else {
        const double h = std::log(s / down), sm = s * std::exp(-0.5 * h);
        const double pm = sm / s - std::expm1(-0.5 * h) * k(s);        // y_m
        P = down / s - std::expm1(-h) * k(sm) * pm;
        nv = up * up;
      }
    }
    mean *= P;
    var = P * P * var + nv;
  }
  return {mu + mean, var};
}

const char* name_of(method m) {
  return m == method::dpm2_a ? "DPM2-ancestral" : m == method::dpmpp_2s_a ? "DPM++ 2S-ancestral" : "DPM++ SDE";
}

template <class Noise>
void run_method(method m, gauss_model& D, std::vector<double>& x, std::size_t rows, Noise& noise,
                const std::vector<double>& sig, const diffusion::karras_options& opt) {
  if (m == method::dpm2_a)
    diffusion::dpm2_ancestral_sample(D, x, rows, noise, sig, opt);
  else if (m == method::dpmpp_2s_a)
    diffusion::dpmpp_2s_ancestral_sample(D, x, rows, noise, sig, opt);
  else
    diffusion::dpmpp_sde_sample(D, x, rows, noise, sig, opt);
}

}  // namespace

TEST_CASE("DPM2 and DPM-Solver++(2S) converge at order 2 to the exact flow map", "[samplers][singlestep]") {
  test::test_noise noise{0};
  const std::vector<std::size_t> Ns = {16, 32, 64, 128, 256};
  const auto dpm2 = flow_map_errors(
      [&](gauss_model& D, std::vector<double>& x, const std::vector<double>& sig) {
        diffusion::dpm2_sample(D, x, 1, noise, sig, {.draw_initial_noise = false});
      },
      Ns);
  const auto dpmpp = flow_map_errors(
      [&](gauss_model& D, std::vector<double>& x, const std::vector<double>& sig) {
        std::vector<double> y = x;
        diffusion::dpmpp_2s_ancestral_sample(D, x, 1, noise, sig, {.eta = 0.0, .draw_initial_noise = false});
        diffusion::dpmpp_sde_sample(D, y, 1, noise, sig, {.eta = 0.0, .draw_initial_noise = false});
        CHECK(x == y);  // both are DPM-Solver++(2S) at eta = 0
      },
      Ns);
  for (std::size_t i = 2; i < Ns.size(); ++i) {
    const double o1 = std::log2(dpm2[i - 1] / dpm2[i]), o2 = std::log2(dpmpp[i - 1] / dpmpp[i]);
    INFO("N = " << Ns[i] << ": DPM2 error " << dpm2[i] << " (order " << o1 << "), DPM++(2S) error " << dpmpp[i]
                << " (order " << o2 << ")");
    CHECK(o1 > 1.8);
    CHECK(o1 < 2.3);
    CHECK(o2 > 1.8);
    CHECK(o2 < 2.3);
    WARN("N = " << Ns[i] << ": DPM2 max error " << dpm2[i] << ", order " << o1 << "; DPM-Solver++(2S) max error "
                << dpmpp[i] << ", order " << o2);
  }
}

TEMPLATE_TEST_CASE("the stage functions in your own loop are the sample loops bit for bit", "[samplers][singlestep]",
                   float, double) {
  using T = TestType;
  diffusion::gaussian_data g({0.3, -0.2, 0.6}, {0.5, 1.1, 0.2});
  gauss_model D(g);
  const diffusion::philox_normal noise(11);
  const auto sig = diffusion::karras_sigmas(12, 0.03, 20.0);
  const std::size_t n = 3;
  std::vector<T> start(n);
  test::normal_source src(4);
  for (auto& v : start) v = static_cast<T>(20.0 * src.normal());
  std::vector<T> den(n), den2(n), xm(n), d0(n), z1(n);
  const diffusion::two_stage_state<T> st{xm, d0, z1};
  auto model = [&](std::span<const T> at, double s, std::vector<T>& out) {
    const std::vector<double> ss{s};
    D(at, std::span<const double>(ss), std::span<T>(out), static_cast<const diffusion::no_context*>(nullptr));
  };
  // DPM2 through the sigma_step forms.
  std::vector<T> a = start, b = start;
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const diffusion::sigma_step s{sig[i], sig[i + 1]};
    model(a, s.sigma, den);
    if (diffusion::dpm2_predict<T>(s, den, a, st)) {
      model(xm, diffusion::log_midpoint(s.sigma, s.sigma_next), den2);
      diffusion::dpm2_correct<T>(s, den2, a, st, a);
    } else {
      diffusion::euler_step<T>(s, den, a);
    }
  }
  diffusion::dpm2_sample(D, b, 1, noise, sig, {.draw_initial_noise = false});
  CHECK(a == b);
  // DPM2-ancestral and DPM++ 2S-ancestral through ancestral_midpoint_levels (noise of stream step i).
  for (const bool dpmpp : {false, true}) {
    a = start;
    b = start;
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
      const auto al = diffusion::ancestral_midpoint_levels({sig[i], sig[i + 1]}, 0.7);
      model(a, sig[i], den);
      const bool two = dpmpp ? diffusion::dpmpp_2s_predict<T>(al.levels, den, a, st) : diffusion::dpm2_predict<T>(al.levels, den, a, st);
      if (!two) {
        diffusion::euler_step<T>(diffusion::sigma_step{sig[i], sig[i + 1]}, den, a);
        continue;
      }
      model(xm, al.levels.mid.sigma, den2);
      const auto z = diffusion::step_stream(noise, i);
      if (dpmpp)
        diffusion::dpmpp_2s_correct<T>(al.levels, den2, a, st, a, z, 1.3 * al.sigma_up);
      else
        diffusion::dpm2_correct<T>(al.levels, den2, a, st, a, z, 1.3 * al.sigma_up);
    }
    if (dpmpp)
      diffusion::dpmpp_2s_ancestral_sample(D, b, 1, noise, sig, {.s_noise = 1.3, .eta = 0.7, .draw_initial_noise = false});
    else
      diffusion::dpm2_ancestral_sample(D, b, 1, noise, sig, {.s_noise = 1.3, .eta = 0.7, .draw_initial_noise = false});
    INFO(dpmpp);
    CHECK(a == b);
  }
  // DPM++ SDE: stream steps 2i and 2i + 1.
  a = start;
  b = start;
  const diffusion::ancestral_options o{0.8, 0.9};
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const auto L = diffusion::midpoint_levels({sig[i], sig[i + 1]});
    model(a, sig[i], den);
    if (!diffusion::dpmpp_sde_predict<T>(L, den, a, st, diffusion::step_stream(noise, 2 * i), o)) {
      diffusion::euler_step<T>(diffusion::sigma_step{sig[i], sig[i + 1]}, den, a);
      continue;
    }
    model(xm, L.mid.sigma, den2);
    diffusion::dpmpp_sde_correct<T>(L, den2, a, st, diffusion::step_stream(noise, 2 * i + 1), o, a);
  }
  diffusion::dpmpp_sde_sample(D, b, 1, noise, sig, {.s_noise = 0.9, .eta = 0.8, .draw_initial_noise = false});
  CHECK(a == b);
  // DPM++ SDE with a Brownian tree: z1 over [sigma_m, sigma], z2 over [sigma_next, sigma_m].
  const diffusion::brownian_tree tree(12, 0.03, 20.0);
  std::vector<T> tz(n);
  a = start;
  b = start;
  for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
    const auto L = diffusion::midpoint_levels({sig[i], sig[i + 1]});
    model(a, sig[i], den);
    if (sig[i + 1] == 0.0) {
      diffusion::euler_step<T>(diffusion::sigma_step{sig[i], sig[i + 1]}, den, a);
      continue;
    }
    tree.fill(std::span<T>(tz), 1, sig[i], L.mid.sigma, 0);
    REQUIRE(diffusion::dpmpp_sde_predict<T>(L, den, a, st, std::span<const T>(tz), o));
    model(xm, L.mid.sigma, den2);
    tree.fill(std::span<T>(tz), 1, L.mid.sigma, sig[i + 1], 0);
    diffusion::dpmpp_sde_correct<T>(L, den2, a, st, std::span<const T>(tz), o, a);
  }
  diffusion::dpmpp_sde_sample(D, b, 1, noise, tree, sig, {.s_noise = 0.9, .eta = 0.8, .draw_initial_noise = false});
  CHECK(a == b);
}

TEST_CASE("the level form on variance-preserving levels is the sigma-space form on x/alpha", "[samplers][singlestep]") {
  // x_vp = alpha x_ve at every level: a VP state stepped between VP levels must stay alpha times the
  // sigma-space state stepped between the matching sigma = sigma/alpha levels (noise scaled by alpha).
  const std::size_t n = 5;
  test::normal_source src(21);
  std::vector<double> x(n), d(n), d2(n), z1(n), z2(n);
  for (auto& v : x) v = 3.0 * src.normal();
  for (auto& v : d) v = src.normal();
  for (auto& v : d2) v = src.normal();
  for (auto& v : z1) v = src.normal();
  for (auto& v : z2) v = src.normal();
  const double s = 4.0, sn = 1.5, sm = std::sqrt(s * sn);
  using diffusion::noise_level;
  const diffusion::two_stage_levels ve{noise_level::exploding(s), noise_level::exploding(sm), noise_level::exploding(sn)};
  const diffusion::two_stage_levels vp{noise_level::preserving(s), noise_level::preserving(sm), noise_level::preserving(sn)};
  const double a0 = vp.from.alpha, am = vp.mid.alpha, a1 = vp.to.alpha;
  std::vector<double> xv(n), xm_e(n), xm_v(n), d0e(n), d0v(n), out_e(n), out_v(n), z1v(n), z2v(n), ke(n), kv(n);
  for (std::size_t e = 0; e < n; ++e) xv[e] = a0 * x[e];
  const diffusion::two_stage_state<double> se{xm_e, d0e, ke}, sv{xm_v, d0v, kv};
  const diffusion::ancestral_options o{0.6, 1.0};
  for (std::size_t e = 0; e < n; ++e) {
    z1v[e] = z1[e];
    z2v[e] = z2[e];
  }
  const std::span<const double> z1s(z1), z2s(z2), z1vs(z1v), z2vs(z2v);
  // DPM2.
  REQUIRE(diffusion::dpm2_predict<double>(ve, d, x, se));
  REQUIRE(diffusion::dpm2_predict<double>(vp, d, xv, sv));
  for (std::size_t e = 0; e < n; ++e) CHECK(xm_v[e] == Approx(am * xm_e[e]).epsilon(1e-14).margin(1e-14));
  diffusion::dpm2_correct<double>(ve, d2, x, se, out_e);
  diffusion::dpm2_correct<double>(vp, d2, xv, sv, out_v);
  for (std::size_t e = 0; e < n; ++e) CHECK(out_v[e] == Approx(a1 * out_e[e]).epsilon(1e-13).margin(1e-13));
  // DPM++ SDE (and so 2S at eta = 0): the split is in sigma/alpha, the noise scaled by alpha.
  REQUIRE(diffusion::dpmpp_sde_predict<double>(ve, d, x, se, z1s, o));
  REQUIRE(diffusion::dpmpp_sde_predict<double>(vp, d, xv, sv, z1vs, o));
  for (std::size_t e = 0; e < n; ++e) CHECK(xm_v[e] == Approx(am * xm_e[e]).epsilon(1e-14).margin(1e-14));
  diffusion::dpmpp_sde_correct<double>(ve, d2, x, se, z2s, o, out_e);
  diffusion::dpmpp_sde_correct<double>(vp, d2, xv, sv, z2vs, o, out_v);
  for (std::size_t e = 0; e < n; ++e) CHECK(out_v[e] == Approx(a1 * out_e[e]).epsilon(1e-13).margin(1e-13));
}

TEST_CASE("the stochastic two-stage samplers draw the exact law of their Gaussian chain, which tends to the data law",
          "[samplers][singlestep][montecarlo]") {
  const double mu = 0.25, sd = 0.6;
  diffusion::gaussian_data g({mu}, {sd});
  gauss_model D(g);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  constexpr std::size_t N = 100000 / test::montecarlo_divisor;
  // 100000 rows (a tenth under ASan), 5 standard errors: false-failure probability < 6e-7 per check (12 checks: < 1e-5).
  std::uint64_t seed = 3030;
  for (const method m : {method::dpm2_a, method::dpmpp_2s_a, method::dpmpp_sde})
    for (const double eta : {1.0, 0.5}) {
      const diffusion::philox_normal noise(++seed);
      std::vector<double> x(N);
      run_method(m, D, x, N, noise, sig, {.eta = eta});
      const chain_law law = exact_chain(m, sig, mu, sd, eta);
      double em = 0, ev = 0;
      for (double xi : x) em += xi;
      em /= N;
      for (double xi : x) ev += (xi - em) * (xi - em);
      ev /= N - 1;
      INFO(name_of(m) << " eta " << eta << " (philox seed " << seed << "): mean " << em << " vs " << law.mean
                      << ", variance " << ev << " vs " << law.var);
      CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
      CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
      WARN(name_of(m) << " eta " << eta << " (30 steps): law N(" << law.mean << ", " << law.var << "), sampled N(" << em
                      << ", " << ev << "), data N(" << mu << ", " << sd * sd << ")");
    }
  // Each chain is a consistent discretization of the reverse SDE: its exact law tends to the data's as
  // the steps refine.
  for (const method m : {method::dpm2_a, method::dpmpp_2s_a, method::dpmpp_sde}) {
    double last_err = std::numeric_limits<double>::infinity();
    for (const std::size_t steps : {std::size_t{25}, std::size_t{50}, std::size_t{100}, std::size_t{200}, std::size_t{400}}) {
      const chain_law law = exact_chain(m, diffusion::karras_sigmas(steps, 0.002, 80.0), mu, sd, 1.0);
      const double err = std::abs(law.var - sd * sd) + std::abs(law.mean - mu);
      INFO(name_of(m) << ", " << steps << " steps: law N(" << law.mean << ", " << law.var << ")");
      CHECK(err < last_err);
      if (steps == 400) {
        CHECK(err < 2e-3);
        WARN(name_of(m) << " eta 1, 400 steps: |var - sd^2| + |mean - mu| = " << err);
      }
      last_err = err;
    }
  }
}

// ---------------------------------------------------------------------------------------
// diffusers' KDPM2DiscreteScheduler and KDPM2AncestralDiscreteScheduler, replayed
// ---------------------------------------------------------------------------------------

namespace {

using ref_values = std::map<std::string, std::map<std::size_t, double>>;  // quantity -> index -> value

ref_values load_case(const std::string& name) {
  std::ifstream in(std::string(DIFFUSION_TEST_DATA_DIR) + "/diffusers_schedulers.ref");
  REQUIRE(in.good());
  ref_values out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string c, quantity, value;
    std::size_t index = 0;
    s >> c >> quantity >> index >> value;
    if (c == name) out[quantity][index] = std::stod(value);
  }
  return out;
}

// The file's toy model: eps = 0.3 sin(x_in) + 0.05 cos(0.01 t) x_in, x_in = x/sqrt(sigma^2 + 1)
// (scale_model_input), as a sigma-space denoiser D = x - sigma eps (epsilon prediction).
void ref_denoise(const std::vector<double>& x, double sigma, double t, std::vector<double>& in, std::vector<double>& d) {
  for (std::size_t e = 0; e < x.size(); ++e) {
    in[e] = x[e] / std::sqrt(sigma * sigma + 1.0);
    d[e] = x[e] - sigma * (0.3 * std::sin(in[e]) + 0.05 * std::cos(0.01 * t) * in[e]);
  }
}

struct worst_relative {
  double tol, worst = 0.0;
  bool check(double mine, double ref) {
    const double r = std::abs(mine - ref) / std::max(1.0, std::abs(ref));
    worst = std::max(worst, r);
    return r <= tol;
  }
};

// Replays a KDPM2 case: 19 scheduler steps = a first and a second stage for each of the 9 steps
// to sigma > 0, and one Euler step to 0. The stage timesteps are diffusers' (interpolated in its
// float32 log-sigma table), read from the file; the stage sigma is this library's log midpoint in
// double. diffusers keeps sigma in float32 (relative error 6e-8 per value, up to about 1e-6 after
// its float32 log/lerp/exp of the midpoint and down/up splits), so the tolerance is the replay tests'
// 1e-5 relative to max(1, |value|); a wrong stage level or coefficient moves a state by 1e-3 or more.
void replay_kdpm2(const std::string& name, bool ancestral) {
  const ref_values v = load_case(name);
  std::vector<double> sig;
  for (const auto& [i, s] : v.at("sigmas"))
    if (sig.empty() || s != sig.back()) sig.push_back(s);
  REQUIRE(sig.size() == 11);  // sigma_0 ... sigma_9, 0
  const auto& ts = v.at("timesteps");
  REQUIRE(ts.size() == 19);
  std::vector<double> x(4), in(4), d(4), d2(4), xm(4), d0(4), z(4);
  for (std::size_t e = 0; e < 4; ++e) x[e] = v.at("x_T").at(e);
  const diffusion::two_stage_state<double> st{xm, d0};
  worst_relative cmp{1e-5}, inputs{1e-5};
  std::size_t compared = 0;
  for (std::size_t j = 0; j + 1 < sig.size(); ++j) {
    const std::size_t k = 2 * j;  // the scheduler step of the first stage
    INFO(name << ", step " << j << " (scheduler steps " << k << ", " << k + 1 << ")");
    ref_denoise(x, sig[j], ts.at(k), in, d);
    for (std::size_t e = 0; e < 4; ++e) CHECK(inputs.check(in[e], v.at("model_input_" + std::to_string(k)).at(e)));
    diffusion::ancestral_two_stage a{diffusion::midpoint_levels({sig[j], sig[j + 1]}), 0.0};
    if (ancestral) a = diffusion::ancestral_midpoint_levels({sig[j], sig[j + 1]}, 1.0);
    if (!diffusion::dpm2_predict<double>(a.levels, d, x, st)) {
      diffusion::euler_step<double>(diffusion::sigma_step{sig[j], sig[j + 1]}, d, x);
      for (std::size_t e = 0; e < 4; ++e) CHECK(cmp.check(x[e], v.at("prev_sample_" + std::to_string(k)).at(e)));
      compared += 4;
      CHECK(k == 18);
      continue;
    }
    for (std::size_t e = 0; e < 4; ++e) CHECK(cmp.check(xm[e], v.at("prev_sample_" + std::to_string(k)).at(e)));
    ref_denoise(xm, a.levels.mid.sigma, ts.at(k + 1), in, d2);
    for (std::size_t e = 0; e < 4; ++e) CHECK(inputs.check(in[e], v.at("model_input_" + std::to_string(k + 1)).at(e)));
    if (ancestral) {
      for (std::size_t e = 0; e < 4; ++e) z[e] = v.at("noise_" + std::to_string(k + 1)).at(e);
      diffusion::dpm2_correct<double>(a.levels, d2, x, st, x, std::span<const double>(z), a.sigma_up);
    } else {
      diffusion::dpm2_correct<double>(a.levels, d2, x, st, x);
    }
    for (std::size_t e = 0; e < 4; ++e) CHECK(cmp.check(x[e], v.at("prev_sample_" + std::to_string(k + 1)).at(e)));
    compared += 8;
  }
  CHECK(compared == 19 * 4);
  WARN(name << ": largest relative difference to diffusers, states " << cmp.worst << ", model inputs " << inputs.worst);
}

}  // namespace

TEST_CASE("DPM2 reproduces diffusers' KDPM2DiscreteScheduler step by step", "[samplers][singlestep][diffusers]") {
  replay_kdpm2("kdpm2_10", false);
}

TEST_CASE("DPM2-ancestral reproduces diffusers' KDPM2AncestralDiscreteScheduler step by step",
          "[samplers][singlestep][diffusers]") {
  replay_kdpm2("kdpm2_a_10", true);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

namespace {
// A denoiser that writes `bad` at row 0, element 1 when called at sigma below `below`.
struct faulty_model {
  double bad, below;
  void operator()(std::span<const double> x, std::span<const double> s, std::span<double> out,
                  const diffusion::no_context*) const {
    for (std::size_t e = 0; e < x.size(); ++e) out[e] = 0.5 * x[e];
    if (s[0] < below) out[1] = bad;
  }
};
}  // namespace

TEST_CASE("the two-stage steps and loops validate their arguments", "[samplers][singlestep][errors]") {
  std::vector<double> x(4, 1.0), d(4, 0.5), xm(4), d0(4), short_buf(3), out(4);
  const diffusion::two_stage_state<double> st{xm, d0};
  const diffusion::philox_normal noise(1);
  const auto z = diffusion::step_stream(noise, 0);
  const auto L = diffusion::midpoint_levels({2.0, 0.5});
  using diffusion::sigma_step;
  // Sizes.
  CHECK_THROWS_WITH(diffusion::dpm2_predict<double>(L, d, x, diffusion::two_stage_state<double>{short_buf, d0}),
                    Contains("diffusion::dpm2_predict") && Contains("state.x_mid.size() = 3"));
  CHECK_THROWS_WITH(diffusion::dpmpp_2s_predict<double>(L, d, x, diffusion::two_stage_state<double>{xm, short_buf}),
                    Contains("diffusion::dpmpp_2s_predict") && Contains("state.denoised.size() = 3"));
  CHECK_THROWS_WITH(diffusion::dpm2_correct<double>(L, std::span<const double>(short_buf), x, st, out),
                    Contains("diffusion::dpm2_correct") && Contains("denoised.size() = 3"));
  CHECK_THROWS_WITH(diffusion::dpm2_predict<double>(L, d, x, diffusion::two_stage_state<double>{x, d0}),
                    Contains("state.x_mid must not be x"));
  // eta and s_noise.
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_predict<double>(L, d, x, st, z, {.eta = -0.5}),
                    Contains("diffusion::dpmpp_sde_predict") && Contains("eta = -0.5 is outside the allowed range [0, 1]"));
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_correct<double>(L, d, x, st, z, {.eta = 1.0, .s_noise = -2.0}, out),
                    Contains("diffusion::dpmpp_sde_correct") && Contains("s_noise = -2 is outside the allowed range [0, inf)"));
  CHECK_THROWS_WITH(diffusion::ancestral_midpoint_levels({2.0, 0.5}, 1.5), Contains("eta = 1.5"));
  CHECK_THROWS_WITH(diffusion::dpm2_correct<double>(L, d, x, st, out, z, -1.0), Contains("noise_scale = -1"));
  // Missing noise where a stage adds some.
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_predict<double>(L, d, x, st, diffusion::kernels::no_noise{}),
                    Contains("the first stage adds noise") && Contains("no noise was passed"));
  CHECK_THROWS_WITH(diffusion::dpm2_correct<double>(L, d, x, st, out, diffusion::kernels::no_noise{}, 0.3),
                    Contains("the second stage adds noise") && Contains("no noise was passed"));
  // A noise buffer of the wrong size.
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_predict<double>(L, d, x, st, std::span<const double>(short_buf)),
                    Contains("noise.size() = 3"));
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_predict<double>(L, d, x, st, z), Contains("state.noise.size() = 0"));
  // Levels: the data as target has no second stage; a stage level outside (to, from); alpha = 0.
  CHECK_THROWS_WITH(diffusion::dpm2_correct<double>(sigma_step{2.0, 0.0}, d, x, st, out), Contains("no second stage"));
  const diffusion::two_stage_levels outside{L.from, diffusion::noise_level::exploding(3.0), L.to};
  CHECK_THROWS_WITH(diffusion::dpm2_predict<double>(outside, d, x, st), Contains("must lie strictly between"));
  const diffusion::two_stage_levels pure{diffusion::noise_level::flow(1.0), diffusion::noise_level::flow(0.7),
                                         diffusion::noise_level::flow(0.5)};
  CHECK_THROWS_WITH(diffusion::dpmpp_2s_predict<double>(pure, d, x, st), Contains("alpha > 0"));
  CHECK_THROWS_WITH(diffusion::dpm2_predict<double>(sigma_step{-1.0, 0.5}, d, x, st), Contains("sigma = -1"));
  CHECK(x == std::vector<double>(4, 1.0));  // nothing written by a refused step
  // The last step needs no noise and writes nothing: false.
  CHECK_FALSE(diffusion::dpmpp_sde_predict<double>(diffusion::midpoint_levels({0.5, 0.0}), d, x, st,
                                                   diffusion::kernels::no_noise{}));
  // Overflow of the step's own arithmetic (float): a domain error naming the stage.
  // x' = x + (0.5 - 2)(x_m - D_m)/1 = 3e38 - 1.5 (6e38) overflows float.
  std::vector<float> xf(4, 3e38f), df(4, -3e38f), mf(4, 3e38f), pf(4), of(4);
  CHECK_THROWS_WITH(diffusion::dpm2_correct<float>(diffusion::midpoint_levels({2.0, 0.5}), df, xf,
                                                   diffusion::two_stage_state<float>{mf, pf}, of),
                    Contains("diffusion::dpm2_correct") && Contains("DPM2's second stage produced a non-finite value"));
  // The loops: options, a non-finite model output at the stage call, a flow list from sigma = 1.
  diffusion::gaussian_data g({0.0}, {1.0});
  gauss_model D(g);
  std::vector<double> xs(2);
  const auto ks = diffusion::karras_sigmas(4, 0.1, 10.0);
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_sample(D, xs, 2, noise, ks, {.eta = -0.1}),
                    Contains("diffusion::dpmpp_sde_sample") && Contains("eta = -0.1"));
  CHECK_THROWS_WITH(diffusion::dpm2_ancestral_sample(D, xs, 2, noise, ks, {.s_noise = std::nan("")}),
                    Contains("diffusion::dpm2_ancestral_sample") && Contains("s_noise = nan"));
  faulty_model bad{std::numeric_limits<double>::quiet_NaN(), 9.0};  // only stage calls (sigma_mid < 9) see it
  std::vector<double> xb(2, 1.0);
  CHECK_THROWS_WITH(diffusion::dpm2_sample(bad, xb, 1, noise, std::vector<double>{10.0, 5.0, 0.0},
                                           {.draw_initial_noise = false}),
                    Contains("diffusion::dpm2_sample") && Contains("the denoiser wrote nan"));
  CHECK(xb == std::vector<double>(2, 1.0));  // x changes only in a step's last pass
}

// ---------------------------------------------------------------------------------------
// Rectified-flow states: the same stage functions over flow levels
// ---------------------------------------------------------------------------------------

namespace {
// 1-D data N(mu, s^2) under x = (1 - sig) x0 + sig eps: the exact velocity E[eps - x0 | x] and the
// exact flow map between two levels (x - m) sd'/sd + m'.
struct flow_gauss {
  double mu, s;
  [[nodiscard]] double mean(double sig) const { return (1.0 - sig) * mu; }
  [[nodiscard]] double var(double sig) const { return (1.0 - sig) * (1.0 - sig) * s * s + sig * sig; }
  [[nodiscard]] double velocity(double sig, double x) const {
    return -mu + (sig - (1.0 - sig) * s * s) / var(sig) * (x - mean(sig));
  }
};
}  // namespace

TEST_CASE("DPM2 and DPM-Solver++(2S) on rectified-flow states converge at order 2", "[samplers][singlestep][flow]") {
  const flow_gauss g{0.4, 0.6};
  auto model = diffusion::make_denoiser(diffusion::prediction::flow_velocity,
                                        [g](const diffusion::denoiser_input<double>& in, std::span<double> out) {
                                          const std::size_t n = in.row_size();
                                          for (std::size_t r = 0; r < in.rows(); ++r) {
                                            const double sig = in.sigma[r] / (1.0 + in.sigma[r]);  // sigma: the ratio
                                            for (std::size_t k = 0; k < n; ++k) out[r * n + k] = g.velocity(sig, in.x[r * n + k]);
                                          }
                                        });
  diffusion::sigma_space_model D(model, diffusion::flow_time{1000});
  const std::vector<double> x_start = {-1.2, 0.3, 0.9, 2.1};
  // A grid uniform in lambda = log((1 - sig)/sig) from 0.999 to 0.001 (the list must start below 1).
  const double a = 0.999, b = 0.001, la = std::log((1 - a) / a), lb = std::log((1 - b) / b);
  auto error = [&](std::size_t n, bool dpm2) {
    std::vector<double> sg(n + 1);
    for (std::size_t i = 0; i <= n; ++i)
      sg[i] = 1.0 / (1.0 + std::exp(la + (lb - la) * static_cast<double>(i) / static_cast<double>(n)));
    std::vector<double> x = x_start;
    test::test_noise noise{1};
    if (dpm2)
      diffusion::dpm2_sample(D, x, 4, noise, sg, {.draw_initial_noise = false});
    else
      diffusion::dpmpp_sde_sample(D, x, 4, noise, sg, {.eta = 0.0, .draw_initial_noise = false});
    double worst = 0;
    for (std::size_t k = 0; k < x.size(); ++k)
      worst = std::max(worst, std::abs(x[k] - (g.mean(b) + std::sqrt(g.var(b) / g.var(a)) * (x_start[k] - g.mean(a)))));
    return worst;
  };
  for (const bool dpm2 : {true, false})
    for (std::size_t n : {32u, 64u, 128u}) {
      const double e1 = error(n, dpm2), e2 = error(2 * n, dpm2), order = std::log2(e1 / e2);
      INFO((dpm2 ? "DPM2" : "DPM-Solver++(2S)") << ", N = " << 2 * n << ": error " << e2 << ", order " << order);
      CHECK(order > 1.8);
      CHECK(order < 2.3);
      WARN((dpm2 ? "DPM2" : "DPM-Solver++(2S)") << " on a flow state, N = " << 2 * n << ": max error " << e2
                                                 << ", order " << order);
    }
  // A flow list from sigma = 1 (alpha = 0) is refused by name.
  std::vector<double> x = x_start;
  test::test_noise noise{1};
  CHECK_THROWS_WITH(diffusion::dpm2_sample(D, x, 4, noise, std::vector<double>{1.0, 0.5, 0.0}, {.draw_initial_noise = false}),
                    Contains("diffusion::dpm2_sample") && Contains("sigmas[0] = 1") && Contains("alpha = 0"));
}

TEST_CASE("DPM++ SDE driven by a Brownian tree draws the exact law of its chain and follows one path",
          "[mc-law][samplers][singlestep][brownian][montecarlo]") {
  // The two reads of a step (over [sigma_m, sigma] and [sigma_next, sigma_m]) are independent
  // standardized increments, so the stages' noise has the joint law exact_chain assumes.
  const double mu = 0.25, sd = 0.6;
  constexpr std::size_t dims = 20, rows = 5000 / test::montecarlo_divisor, N = dims * rows;  // every (row, dimension) independent
  diffusion::gaussian_data g(std::vector<double>(dims, mu), std::vector<double>(dims, sd));
  gauss_model D(g);
  const diffusion::philox_normal noise(4040);
  const auto sig = diffusion::karras_sigmas(30, 0.01, 20.0);
  const diffusion::brownian_tree tree(4041, 0.01, 20.0);
  // 5 standard errors: false-failure probability < 6e-7 per check (4 checks).
  for (const double eta : {1.0, 0.5}) {
    std::vector<double> x(N);
    diffusion::dpmpp_sde_sample(D, x, rows, noise, tree, sig, {.eta = eta});
    const chain_law law = exact_chain(method::dpmpp_sde, sig, mu, sd, eta);
    double em = 0, ev = 0;
    for (double xi : x) em += xi;
    em /= N;
    for (double xi : x) ev += (xi - em) * (xi - em);
    ev /= N - 1;
    INFO("DPM++ SDE with the tree, eta " << eta << ": mean " << em << " vs " << law.mean << ", variance " << ev
                                         << " vs " << law.var);
    CHECK(std::abs(em - law.mean) <= 5 * std::sqrt(law.var / N));
    CHECK(std::abs(ev - law.var) <= 5 * law.var * std::sqrt(2.0 / (N - 1)));
    WARN("DPM++ SDE eta " << eta << " with a Brownian tree (30 steps): law N(" << law.mean << ", " << law.var
                          << "), sampled N(" << em << ", " << ev << ")");
  }
  // Pathwise (strong) convergence along one Brownian path: d_N = RMS(x_N - x_2N) must fall by a factor
  // <= 0.7 (strong order >= 0.5) as N doubles, N = 50 and 100 (additive noise on Gaussian data: order 1
  // expected, Kloeden & Platen 1992 Thm. 10.2.2; measured in docs/accuracy.md). With independent Philox
  // streams per step the 50- and 100-step samples are two nearly independent draws (~ sqrt(2) sd = 0.85).
  constexpr std::size_t small_rows = 500 / test::montecarlo_divisor, small_n = 8 * small_rows;
  diffusion::gaussian_data g8(std::vector<double>(8, mu), std::vector<double>(8, sd));
  gauss_model D8(g8);
  const diffusion::brownian_tree wide(4042, 0.002, 80.0);
  const auto run = [&](std::size_t steps, bool with_tree) {
    std::vector<double> x(small_n);
    const auto s = diffusion::karras_sigmas(steps, 0.002, 80.0);
    if (with_tree)
      diffusion::dpmpp_sde_sample(D8, x, small_rows, noise, wide, s);
    else
      diffusion::dpmpp_sde_sample(D8, x, small_rows, noise, s);
    return x;
  };
  const auto rms = [](const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (std::size_t k = 0; k < a.size(); ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
    return std::sqrt(s / static_cast<double>(a.size()));
  };
  const auto x50 = run(50, true), x100 = run(100, true), x200 = run(200, true), x400 = run(400, true);
  const double d50 = rms(x50, x100), d100 = rms(x100, x200), d200 = rms(x200, x400);
  const double independent = rms(run(50, false), run(100, false));
  INFO("DPM++ SDE with the tree: d50 " << d50 << ", d100 " << d100 << ", d200 " << d200 << "; independent " << independent);
  CHECK(independent > 0.5);
  CHECK(d50 < 0.2 * independent);
  CHECK(d100 <= 0.7 * d50);
  CHECK(d200 <= 0.7 * d100);
  WARN("DPM++ SDE, Karras sigma 0.002 to 80, data N(0.25, 0.36): d_N = RMS(x_N - x_2N) = " << d50 << ", " << d100 << ", "
                                                                                            << d200 << " at N = 50, 100, 200; independent noise at N = 50: "
                                                                                            << independent);
  // A list reaching outside the tree is refused before any model call.
  std::vector<double> x(2 * dims, 3.0);
  const diffusion::brownian_tree narrow(1, 0.02, 20.0);
  CHECK_THROWS_WITH(diffusion::dpmpp_sde_sample(D, x, 2, noise, narrow, sig),
                    Contains("diffusion::dpmpp_sde_sample") && Contains("sigmas[28] = 0.0158") &&
                        Contains("outside the Brownian tree's interval"));
  CHECK(x == std::vector<double>(2 * dims, 3.0));
}
