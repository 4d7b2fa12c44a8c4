// Rectified flow (Liu et al. 2022; Esser et al. 2024, "SD3") on the two 2-D mixtures of samplers_2d, with
// the exact velocity of the mixture, every flow sampler of the library checked against the known density,
// and a picture of rectified-flow paths beside VP probability-flow paths from the same noise.
//
// Data: samplers_2d's "8 Gaussians" (8 equal components on the unit circle, sd 0.05) and "ring" (64
// components, sd 0.035), as diffusion::gaussian_mixture_data (its exact posterior mean E[x0 | x_t]).
//
// The exact velocity. The flow state at level σ ∈ [0, 1] is x = (1 − σ) x0 + σ ε; its noise ratio is
// ρ = σ/(1 − σ) (what denoiser_input::sigma holds for a flow model), and x / sqrt((1 − σ)² + σ²) is the
// variance-preserving state of the same ratio, which the mixture's exact denoiser reads. So
// D(x) = E[x0 | x] is the mixture's posterior mean at ρ on that rescaled state, and the velocity
// E[ε − x0 | x] = (x − D)/σ (conversion_coefficients(noise_level::flow(σ), sample, flow_velocity)).
// `mixture_velocity` below is that flow_velocity model; diffusion::sigma_space_model with
// diffusion::flow_time turns it into the flow-state denoiser the σ-space samplers run on.
//
// Samplers (all on the flow state, initial x = z at σ = 1, row b drawing noise stream b):
//   Euler, Heun (Karras et al. 2022, Algorithm 2), DPM-Solver++(2M) (Lu et al. 2022) and RF Euler-ancestral
//   η = 1 (ComfyUI's sample_euler_ancestral_RF, diffusion::rf_ancestral_step), the library's σ-space loops,
//   on Karras' ρ = 7 spacing of the flow's own σ from 1 to 0.001, then 0 (karras_sigmas(N, 0.001, 1): the
//   "karras" scheduler of a flow model in ComfyUI); and the diffusers-shaped scheduler object's
//   FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler loops (diffusion::scheduler: the
//   loop a runtime owns, scale_model_input, the model, step) configured with SD3's shift 3 and given the
//   same unshifted list (set_timesteps(sigmas), which the shift then moves towards σ = 1, as diffusers'
//   set_timesteps(sigmas=…) does).
// Contrast rows, reported and not checked (samplers_2d's term; "expected bias" when a check fails): Euler
//   on flow_sigmas' uniform σ, and the FlowMatchEuler/Heun loops on SD3's own list, set_timesteps(28):
//   28 σ uniform from 1 to 1/1000, shifted by 3. Those lists spend their steps near σ = 1, where a
//   1024² image needs them (SD3 §5.3.2); the structure of this data (standard deviations 0.035–0.05)
//   is resolved near σ ≈ 0.05, where Karras' spacing puts them.
// Checks (samplers_2d's, each with false-failure probability α = --alpha for an exact sampler):
//  * z, the mean log-density: m = (1/N) Σ log p(x_i) against E[log p(X)] = −H(p) and sd(log p(X)) by
//    quadrature; z = (m + H)/(sd/√N) ~ N(0, 1); pass |z| ≤ Φ⁻¹(1 − α/2). It sees blur and squeeze
//    within components and mass off the components.
//  * χ², the mass balance: Pearson χ² of the counts by most likely component against N/J (multinomial
//    by symmetry), J − 1 degrees of freedom; pass below the 1 − α quantile.
// Bonferroni over every check of the run. The null laws are checked on the run's own exact samples.
// Reported, not checked: the sliced W2 distance to an exact sample with its floor, and the spread (RMS
// distance to the nearest component mean). Each checked sampler runs at a default step count where more
// steps move z by about 1 or less (samplers_2d's rule); --sweep 1 adds other step counts (reported, not
// checked) and the |z|-against-calls figure.
//
// Straight against curved: a few trajectories from the same initial noise z, under rectified flow (Heun on
// the flow state, σ 1 → 0 evenly) and under the VP probability flow (Heun on sigma_space_model of the same
// mixture, Karras σ 80 → 0.002 → 0, drawn in the VP scale x/√(1 + σ²) = α x0 + σ_VP ε, α² + σ_VP² = 1).
// Both are the one deterministic map z → x0 of the data (the same ODE under a change of scale and time),
// so their end points agree; only the paths differ. Top row: the probability-flow paths. Bottom row: the
// interpolation paths of the pair (z, x0) each process is built on, (1 − σ) x0 + σ z (a straight line)
// and α x0 + σ_VP z (an arc). Printed: each path's length over its chord (1 = straight) and the distance
// between the two end points. With the exact (marginal) velocity the rectified-flow paths are not
// straight: their tangent points at the current posterior mean E[x0 | x] (x − σu = D), which is the centre
// of the data until the mixture component is decided, so they first head inwards and then turn. Straight
// paths are a property of the per-pair interpolation, and of a flow after reflow (Liu et al. 2022, §2.3).
//
// Output: flow_matching_<data>.png (scatter plots at the default steps with a few trajectories),
// flow_matching_paths.png (straight against curved), flow_matching_distance.png (|z| against model calls,
// with --sweep 1), the tables. Exit status 1 when a check fails.
//
//   flow_matching [--samples N] [--floor-reps R] [--alpha A] [--sweep 0|1] [--paths K] [--threads T] [--out-dir DIR] [--help]
#include <diffusion/ddpm.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numbers>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "common/cli.hpp"
#include "common/plot.hpp"

namespace {

using namespace diffusion;

// ---- Data, exact samples, distances (as in samplers_2d) ---------------------------------------

struct dataset {
  std::string name, file;
  std::vector<std::vector<double>> means;
  double radius, stddev;
  gaussian_mixture_data model;  // predicts x0: the exact posterior mean
};

dataset circle_mixture(std::string name, std::string file, std::size_t J, double radius, double stddev) {
  std::vector<double> w(J, 1.0);
  std::vector<std::vector<double>> means(J), sds(J, std::vector<double>{stddev, stddev});
  for (std::size_t j = 0; j < J; ++j) {
    const double a = 2.0 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(J);
    means[j] = {radius * std::cos(a), radius * std::sin(a)};
  }
  gaussian_mixture_data model(w, means, sds, prediction::sample);
  return {std::move(name), std::move(file), means, radius, stddev, std::move(model)};
}

// n exact draws (row-major, 2 per row): a uniform component, then its Gaussian.
std::vector<double> exact_sample(const dataset& d, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> pick(0, d.means.size() - 1);
  std::normal_distribution<double> z(0.0, 1.0);
  std::vector<double> x(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& m = d.means[pick(rng)];
    x[2 * i] = m[0] + d.stddev * z(rng);
    x[2 * i + 1] = m[1] + d.stddev * z(rng);
  }
  return x;
}

// Sliced W2 between equal-size samples a and b over the given projection angles.
double sliced_w2(const std::vector<double>& a, const std::vector<double>& b, const std::vector<double>& angles) {
  const std::size_t n = a.size() / 2;
  std::vector<double> pa(n), pb(n);
  double sum = 0.0;
  for (double th : angles) {
    const double c = std::cos(th), s = std::sin(th);
    for (std::size_t i = 0; i < n; ++i) {
      pa[i] = c * a[2 * i] + s * a[2 * i + 1];
      pb[i] = c * b[2 * i] + s * b[2 * i + 1];
    }
    std::sort(pa.begin(), pa.end());
    std::sort(pb.begin(), pb.end());
    double w = 0.0;
    for (std::size_t i = 0; i < n; ++i) w += (pa[i] - pb[i]) * (pa[i] - pb[i]);
    sum += w / static_cast<double>(n);
  }
  return std::sqrt(sum / static_cast<double>(angles.size()));
}

// RMS distance from each point to the nearest component mean (about s·√2 for the data).
double nearest_mean_rms(const dataset& d, const std::vector<double>& x) {
  const std::size_t n = x.size() / 2;
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    double best = 1e300;
    for (const auto& m : d.means) {
      const double dx = x[2 * i] - m[0], dy = x[2 * i + 1] - m[1];
      best = std::min(best, dx * dx + dy * dy);
    }
    sum += best;
  }
  return std::sqrt(sum / static_cast<double>(n));
}

// ---- Statistics with a known null law (samplers_2d's; see its comments) ----------------------

double gamma_prefactor(double a, double x) { return std::exp(-x + a * std::log(x) - std::lgamma(a)); }
double gamma_series(double a, double x) {  // P(a, x), for x < a + 1
  double ap = a, term = 1.0 / a, sum = term;
  for (int k = 0; k < 100000 && std::fabs(term) > 1e-17 * std::fabs(sum); ++k) {
    ap += 1.0;
    term *= x / ap;
    sum += term;
  }
  return sum * gamma_prefactor(a, x);
}
double gamma_fraction(double a, double x) {  // Q(a, x), for x ≥ a + 1 (modified Lentz)
  constexpr double tiny = 1e-300;
  double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
  for (int i = 1; i < 100000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < 1e-16) break;
  }
  return gamma_prefactor(a, x) * h;
}
double gamma_p(double a, double x) { return x <= 0.0 ? 0.0 : x < a + 1.0 ? gamma_series(a, x) : 1.0 - gamma_fraction(a, x); }
double gamma_q(double a, double x) { return x <= 0.0 ? 1.0 : x < a + 1.0 ? 1.0 - gamma_series(a, x) : gamma_fraction(a, x); }

template <class F>
double solve_decreasing(F f, double target, double lo, double hi) {
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (f(mid) > target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}
double normal_critical(double alpha) {  // P(|Z| > z) = alpha
  return solve_decreasing([](double z) { return std::erfc(z / std::numbers::sqrt2); }, alpha, 0.0, 40.0);
}
double chi_square_critical(double k, double alpha) {  // P(χ²_k > c) = alpha
  return solve_decreasing([k](double c) { return gamma_q(0.5 * k, 0.5 * c); }, alpha, 0.0, k + 100.0 * std::sqrt(k) + 1000.0);
}

// E[log p(X)] = −H(p) and sd(log p(X)) by quadrature over one period of the J-fold symmetric density
// in polar coordinates (trapezoid, step s/8, radius R ± 12 s); `mass` = ∫ p, a check.
struct log_density_law {
  double mean, sd, mass;
};
log_density_law log_density_quadrature(const dataset& d) {
  const double s = d.stddev, h = s / 8.0, J = static_cast<double>(d.means.size());
  const double r_lo = std::max(0.0, d.radius - 12.0 * s), r_hi = d.radius + 12.0 * s;
  const auto nr = static_cast<std::size_t>(std::ceil((r_hi - r_lo) / h));
  const auto nt = static_cast<std::size_t>(std::ceil(2.0 * std::numbers::pi / J * r_hi / h));
  const double dr = (r_hi - r_lo) / static_cast<double>(nr), dt = 2.0 * std::numbers::pi / J / static_cast<double>(nt);
  double m0 = 0.0, m1 = 0.0, m2 = 0.0;
  for (std::size_t i = 0; i <= nr; ++i) {
    const double r = r_lo + dr * static_cast<double>(i), wr = (i == 0 || i == nr) ? 0.5 : 1.0;
    for (std::size_t k = 0; k < nt; ++k) {
      const double th = dt * static_cast<double>(k);
      const double xy[2] = {r * std::cos(th), r * std::sin(th)};
      const double lp = d.model.log_density(0.0, xy), w = wr * r * std::exp(lp);
      m0 += w;
      m1 += w * lp;
      m2 += w * lp * lp;
    }
  }
  const double scale = J * dr * dt, mean = m1 / m0;
  return {mean, std::sqrt(m2 / m0 - mean * mean), m0 * scale};
}

struct sample_stats {
  double mean_log_p = 0.0;
  std::vector<std::size_t> counts;  // points by most likely component
};
sample_stats stats_of(const dataset& d, const std::vector<double>& x) {
  const std::size_t n = x.size() / 2, J = d.means.size();
  sample_stats st;
  st.counts.assign(J, 0);
  std::vector<double> rho(J);
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::span<const double> row(x.data() + 2 * i, 2);
    sum += d.model.log_density(0.0, row);
    d.model.responsibilities(0.0, row, rho);
    ++st.counts[static_cast<std::size_t>(std::max_element(rho.begin(), rho.end()) - rho.begin())];
  }
  st.mean_log_p = sum / static_cast<double>(n);
  return st;
}
double z_of(const sample_stats& st, const log_density_law& law, std::size_t n) {
  return (st.mean_log_p - law.mean) / (law.sd / std::sqrt(static_cast<double>(n)));
}
double chi_square_of(const sample_stats& st) {
  double n = 0.0;
  for (std::size_t c : st.counts) n += static_cast<double>(c);
  const double e = n / static_cast<double>(st.counts.size());
  double chi = 0.0;
  for (std::size_t c : st.counts) chi += (static_cast<double>(c) - e) * (static_cast<double>(c) - e) / e;
  return chi;
}

// ---- The exact velocity ------------------------------------------------------------------------

/// The exact flow velocity E[ε − x0 | x] of Gaussian-mixture data at flow level σ, as a
/// diffusion::denoiser predicting prediction::flow_velocity (see the file comment). It reads the flow
/// state x and the noise ratio ρ = σ/(1 − σ) (+∞ at σ = 1) that sigma_space_model(…, flow_time) and the
/// flow scheduler classes' loops pass; the timesteps are not used.
class mixture_velocity {
 public:
  explicit mixture_velocity(const gaussian_mixture_data& data) : data_(&data) {
    if (data.predicts() != prediction::sample) throw std::invalid_argument("mixture_velocity: the data must predict x0");
  }
  [[nodiscard]] prediction predicts() const noexcept { return prediction::flow_velocity; }

  template <class Context>
  void operator()(const denoiser_input<double, Context>& in, std::span<double> out) {
    const std::size_t rows = in.rows(), n = in.row_size();
    vp_.resize(in.x.size());
    x0_.resize(in.x.size());
    for (std::size_t r = 0; r < rows; ++r) {
      const noise_level l = level_of(in.sigma[r]);
      const double to_vp = 1.0 / std::sqrt(l.norm_sq);  // (1 − σ, σ) / sqrt((1 − σ)² + σ²) is variance preserving
      for (std::size_t k = 0; k < n; ++k) vp_[r * n + k] = to_vp * in.x[r * n + k];
    }
    // E[x0 | x] from the mixture's exact denoiser at the same ratios.
    (*data_)(denoiser_input<double>{vp_, in.timesteps, in.sigma}, std::span<double>(x0_));
    for (std::size_t r = 0; r < rows; ++r) {
      const affine_coefficients k = conversion_coefficients(level_of(in.sigma[r]), prediction::sample, prediction::flow_velocity);
      for (std::size_t e = r * n; e < (r + 1) * n; ++e) out[e] = k.a * in.x[e] + k.b * x0_[e];  // (x − D)/σ
    }
  }

 private:
  static noise_level level_of(double ratio) { return noise_level::flow(std::isinf(ratio) ? 1.0 : ratio / (1.0 + ratio)); }
  const gaussian_mixture_data* data_;
  std::vector<double> vp_, x0_;
};

// ---- Samplers --------------------------------------------------------------------------------

// Trajectories: the state of a few rows after each kept step (the flow state needs no rescale).
struct recorder {
  std::size_t rows = 0, every = 1, calls = 0;
  std::vector<std::vector<double>> xs, ys;
  void record(std::span<const double> x) {
    if (calls++ % every != 0) return;
    for (std::size_t r = 0; r < rows; ++r) {
      xs[r].push_back(x[2 * r]);
      ys[r].push_back(x[2 * r + 1]);
    }
  }
};

// Runs `steps` steps on `rows` rows of x (drawing the initial noise x = z of streams first … first + rows − 1)
// and returns the number of model calls; records trajectories when rec is given.
using run_fn = std::function<std::size_t(const gaussian_mixture_data&, std::span<double>, std::size_t rows,
                                         std::size_t steps, std::uint64_t first, recorder*)>;

struct sampler {
  std::string name, label;         // label: the panel title
  bool checked;                    // false: a contrast row (reported, not checked)
  std::size_t default_steps;
  std::vector<std::size_t> sweep;  // further step counts (--sweep 1), reported
  bool heun;                       // two model calls per step but the last
  run_fn run;
  [[nodiscard]] std::size_t calls(std::size_t steps) const { return heun ? 2 * steps - 1 : steps; }
};

// N flow σ from 1 to 0.001 with Karras' ρ = 7 spacing, then 0.
std::vector<double> karras_flow_sigmas(std::size_t steps) { return karras_sigmas(steps, 0.001, 1.0); }
// flow_sigmas without a shift: N σ evenly from 1 to 1/1000, then 0.
std::vector<double> uniform_flow_sigmas(std::size_t steps) { return flow_sigmas(steps).sigmas; }

// One of the library's σ-space loops (euler_sample, …) on the flow-state denoiser, over a σ list.
template <class Method>
run_fn flow_loop(const philox_normal& noise, std::vector<double> (*list)(std::size_t), Method method) {
  return [noise, list, method](const gaussian_mixture_data& m, std::span<double> x, std::size_t rows, std::size_t steps,
                               std::uint64_t first, recorder* rec) {
    philox_normal nz = noise;
    mixture_velocity v(m);
    sigma_space_model D(v, flow_time{1000});  // the model sees the flow state and t = 1000 σ
    const std::vector<double> sig = list(steps);
    sampler_hooks<double> h;
    if (rec) h.on_step = [rec](const step_info<double>& info) {
      rec->record(info.x);
      return true;
    };
    karras_options o;
    o.first_sample = first;  // row b: noise stream first + b
    o.eta = 1.0;             // Euler-ancestral (the others ignore it)
    return method(D, x, rows, nz, std::span<const double>(sig), o, h).model_calls;
  };
}

// The scheduler object's loop, as a runtime that owns the loop writes it (README, "Your own loop"):
// FlowMatchEuler/Heun with `shift`, on the Karras list through set_timesteps(sigmas) (shifted there), or
// on the class's own list, set_timesteps(N).
run_fn scheduler_loop(const philox_normal& noise, scheduler_kind kind, double shift, bool karras_list) {
  return [noise, kind, shift, karras_list](const gaussian_mixture_data& m, std::span<double> x, std::size_t rows,
                                           std::size_t steps, std::uint64_t first, recorder* rec) {
    auto config = scheduler_config::defaults_for(kind);  // prediction_type flow_velocity
    config.shift = shift;                                 // SD3's scheduler_config.json: "shift": 3.0
    scheduler sched(config);
    if (karras_list) {
      std::vector<double> unshifted = karras_flow_sigmas(steps);
      unshifted.pop_back();  // the scheduler appends the final 0
      sched.set_timesteps(std::span<const double>(unshifted));
    } else {
      sched.set_timesteps(steps);
    }
    for (std::size_t b = 0; b < rows; ++b)  // x = z (init_noise_sigma = 1); row b is stream first + b
      noise.fill(first + b, initial_noise_step, 0, x.subspan(2 * b, 2));
    mixture_velocity model(m);
    std::vector<double> input(x.size()), u(x.size()), t(rows), ratio(rows);
    for (std::size_t i = 0; i < sched.timesteps().size(); ++i) {
      sched.scale_model_input<double>(x, i, input);  // the state itself for the flow classes
      std::fill(t.begin(), t.end(), sched.timesteps()[i]);
      // sigmas() are flow σ here; a model's denoiser_input::sigma is the ratio σ/(1 − σ).
      std::fill(ratio.begin(), ratio.end(), noise_level::flow(sched.sigmas()[i]).ratio());
      model(denoiser_input<double>{input, t, ratio}, std::span<double>(u));
      sched.step<double>(i, u, x, kernels::no_noise{}, rows);
      // FlowMatchHeun's even calls but the last are first stages, which leave x at the Euler point
      // (diffusers' state_in_first_order); record whole steps only.
      const bool whole = kind != scheduler_kind::flow_match_heun || i % 2 == 1 || i + 1 == sched.timesteps().size();
      if (rec && whole) rec->record(x);
    }
    return sched.timesteps().size();
  };
}

std::vector<sampler> make_samplers(std::uint64_t seed, double sd3) {
  const philox_normal noise(seed);
  const auto euler = [](auto&&... a) { return euler_sample(std::forward<decltype(a)>(a)...); };
  const auto heun = [](auto&&... a) { return heun_sample(std::forward<decltype(a)>(a)...); };
  const auto dpm = [](auto&&... a) { return dpmpp_2m_sample(std::forward<decltype(a)>(a)...); };
  const auto ancestral = [](auto&&... a) { return euler_ancestral_sample(std::forward<decltype(a)>(a)...); };
  std::vector<sampler> out;
  out.push_back({"Euler", "Euler", true, 100, {25, 50, 200}, false, flow_loop(noise, karras_flow_sigmas, euler)});
  out.push_back({"Heun", "Heun", true, 20, {10, 40}, true, flow_loop(noise, karras_flow_sigmas, heun)});
  out.push_back({"DPM-Solver++(2M)", "DPM++(2M)", true, 40, {10, 20, 80}, false, flow_loop(noise, karras_flow_sigmas, dpm)});
  out.push_back({"RF Euler-a", "RF Euler-a", true, 400, {50, 100, 200}, false, flow_loop(noise, karras_flow_sigmas, ancestral)});
  out.push_back({"FlowMatchEuler", "FM Euler", true, 100, {28, 50, 200}, false,
                 scheduler_loop(noise, scheduler_kind::flow_match_euler, sd3, true)});
  out.push_back({"FlowMatchHeun", "FM Heun", true, 28, {10, 56}, true, scheduler_loop(noise, scheduler_kind::flow_match_heun, sd3, true)});
  out.push_back({"Euler, uniform", "Euler uniform", false, 100, {400}, false, flow_loop(noise, uniform_flow_sigmas, euler)});
  out.push_back({"FlowMatchEuler, SD3", "FM Euler SD3", false, 28, {100, 400}, false,
                 scheduler_loop(noise, scheduler_kind::flow_match_euler, sd3, false)});
  out.push_back({"FlowMatchHeun, SD3", "FM Heun SD3", false, 28, {56, 112}, true,
                 scheduler_loop(noise, scheduler_kind::flow_match_heun, sd3, false)});
  return out;
}

// The scheduler object's loops against the library's loops on the same unshifted σ list (shift 1),
// same rows, same noise: the largest difference of the samples (0 when they take the same steps).
std::pair<double, double> scheduler_against_sampler(const dataset& d, std::uint64_t seed) {
  const philox_normal noise(seed);
  const std::size_t rows = 64, steps = 20;
  auto diff = [&](const run_fn& a, const run_fn& b) {
    std::vector<double> x(2 * rows), y(2 * rows);
    a(d.model, x, rows, steps, 0, nullptr);
    b(d.model, y, rows, steps, 0, nullptr);
    double worst = 0.0;
    for (std::size_t k = 0; k < x.size(); ++k) worst = std::max(worst, std::fabs(x[k] - y[k]));
    return worst;
  };
  const auto euler = [](auto&&... a) { return euler_sample(std::forward<decltype(a)>(a)...); };
  const auto heun = [](auto&&... a) { return heun_sample(std::forward<decltype(a)>(a)...); };
  return {diff(flow_loop(noise, karras_flow_sigmas, euler), scheduler_loop(noise, scheduler_kind::flow_match_euler, 1.0, true)),
          diff(flow_loop(noise, karras_flow_sigmas, heun), scheduler_loop(noise, scheduler_kind::flow_match_heun, 1.0, true))};
}

// ---- Straight against curved ---------------------------------------------------------------------

struct path_set {
  std::vector<std::vector<double>> xs, ys;  // per row, start included
};

// Heun with many steps from the same z (rows × 2): under rectified flow (σ 1 → 0 evenly) and under the
// VP probability flow (σ-space, Karras σ 80 → 0.002 → 0, recorded in the VP scale x/sqrt(1 + σ²)).
std::pair<path_set, path_set> probability_flow_paths(const dataset& d, const std::vector<double>& z, std::size_t steps) {
  const std::size_t rows = z.size() / 2;
  auto start = [&](path_set& p, double scale) {
    p.xs.resize(rows);
    p.ys.resize(rows);
    for (std::size_t r = 0; r < rows; ++r) {
      p.xs[r].push_back(scale * z[2 * r]);
      p.ys[r].push_back(scale * z[2 * r + 1]);
    }
  };
  auto hook = [rows](path_set& p, bool vp) {
    sampler_hooks<double> h;
    h.on_step = [&p, rows, vp](const step_info<double>& info) {
      const double s = vp ? 1.0 / std::sqrt(1.0 + info.sigma_next * info.sigma_next) : 1.0;
      for (std::size_t r = 0; r < rows; ++r) {
        p.xs[r].push_back(s * info.x[2 * r]);
        p.ys[r].push_back(s * info.x[2 * r + 1]);
      }
      return true;
    };
    return h;
  };
  const philox_normal unused(0);  // no noise is drawn: x holds the start
  karras_options o;
  o.draw_initial_noise = false;
  path_set rf, vp;
  {
    mixture_velocity v(d.model);
    sigma_space_model D(v, flow_time{1000});
    std::vector<double> sig(steps + 1);
    for (std::size_t i = 0; i <= steps; ++i) sig[i] = 1.0 - static_cast<double>(i) / static_cast<double>(steps);
    std::vector<double> x = z;  // x = z at σ = 1
    start(rf, 1.0);
    heun_sample(D, x, rows, unused, sig, o, hook(rf, false));
  }
  {
    gaussian_mixture_data m = d.model;
    sigma_space_model S(m);  // the mixture reads σ: the σ-space state x0 + σ ε
    const std::vector<double> sig = karras_sigmas(steps, 0.002, 80.0);
    std::vector<double> x(z.size());
    for (std::size_t k = 0; k < z.size(); ++k) x[k] = sig[0] * z[k];
    start(vp, sig[0] / std::sqrt(1.0 + sig[0] * sig[0]));
    heun_sample(S, x, rows, unused, sig, o, hook(vp, true));
  }
  return {rf, vp};
}

// The interpolation paths of the pairs (z, x0): (1 − σ) x0 + σ z and cos(θ) x0 + sin(θ) z (VP: α² + σ² = 1).
std::pair<path_set, path_set> interpolation_paths(const std::vector<double>& z, const path_set& ends, std::size_t points) {
  path_set rf, vp;
  const std::size_t rows = z.size() / 2;
  rf.xs.resize(rows), rf.ys.resize(rows), vp.xs.resize(rows), vp.ys.resize(rows);
  for (std::size_t r = 0; r < rows; ++r) {
    const double x0[2] = {ends.xs[r].back(), ends.ys[r].back()}, zz[2] = {z[2 * r], z[2 * r + 1]};
    for (std::size_t i = 0; i <= points; ++i) {
      const double f = 1.0 - static_cast<double>(i) / static_cast<double>(points);  // 1 → 0
      const double th = f * std::numbers::pi / 2.0;
      rf.xs[r].push_back((1.0 - f) * x0[0] + f * zz[0]);
      rf.ys[r].push_back((1.0 - f) * x0[1] + f * zz[1]);
      vp.xs[r].push_back(std::cos(th) * x0[0] + std::sin(th) * zz[0]);
      vp.ys[r].push_back(std::cos(th) * x0[1] + std::sin(th) * zz[1]);
    }
  }
  return {rf, vp};
}

double path_length(const std::vector<double>& xs, const std::vector<double>& ys) {
  double len = 0.0;
  for (std::size_t i = 1; i < xs.size(); ++i) len += std::hypot(xs[i] - xs[i - 1], ys[i] - ys[i - 1]);
  return len;
}
double chord_length(const std::vector<double>& xs, const std::vector<double>& ys) {
  return std::hypot(xs.back() - xs.front(), ys.back() - ys.front());
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "flow_matching",
               "Rectified flow with the exact velocity of two 2-D Gaussian mixtures: the flow Euler, Heun, "
               "DPM-Solver++(2M), RF Euler-ancestral samplers and the FlowMatchEuler/Heun scheduler loops (SD3 shift), "
               "checked by the mean log-density (z) and the component counts (chi-square); rectified-flow paths "
               "against VP probability-flow paths from the same noise.");
  const long samples = args.integer("--samples", 2000, "samples per run (and size of the exact reference sample)");
  const long directions = args.integer("--directions", 128, "random projections of the sliced W2");
  const long reps = args.integer("--floor-reps", 16, "exact-vs-exact replicates: the sliced-W2 floor and the null z, chi-square");
  const double alpha = args.real("--alpha", 1e-5, "false-failure probability of each check (z two-sided; chi-square)");
  const long sweep = args.integer("--sweep", 0, "1: also run every sampler at the step counts of the table; 0: defaults only");
  const long trajectories = args.integer("--trajectories", 4, "trajectories drawn on each scatter plot");
  const long paths = args.integer("--paths", 8, "trajectories of the straight-against-curved figure, per data set");
  const long path_steps = args.integer("--path-steps", 400, "Heun steps of those trajectories");
  const double sd3 = args.real("--shift", 3.0, "shift of the FlowMatchEuler/Heun scheduler loops (SD3: 3)");
  const long seed = args.integer("--seed", 2020, "seed of the sampler noise, the exact samples and the directions");
  const long threads_l = args.integer("--threads", 2, "threads (rows are split; results do not depend on it)");
  const std::string out_dir = args.text("--out-dir", ".", "directory for the PNG, .dat and .gp files");
  args.finish();
  if (samples < 10 || directions < 1 || reps < 2 || trajectories < 0 || trajectories > samples || paths < 1 ||
      path_steps < 2 || !(sd3 > 0.0) || threads_l < 1 || !(alpha > 0.0 && alpha < 1.0)) {
    std::fprintf(stderr,
                 "flow_matching: need --samples >= 10, --directions >= 1, --floor-reps >= 2, 0 <= --trajectories <= "
                 "--samples, --paths >= 1, --path-steps >= 2, --shift > 0, --threads >= 1, 0 < --alpha < 1\n");
    return 2;
  }
  const auto n = static_cast<std::size_t>(samples);
  const auto threads = static_cast<std::size_t>(threads_l);
  const double sqrt_n = std::sqrt(static_cast<double>(n));
  const auto useed = static_cast<std::uint64_t>(seed);
  const std::vector<sampler> samplers = make_samplers(useed, sd3);

  std::vector<double> angles(static_cast<std::size_t>(directions));
  {
    std::mt19937_64 rng(useed ^ 0xA5A5A5A5u);
    std::uniform_real_distribution<double> u(0.0, std::numbers::pi);
    for (double& a : angles) a = u(rng);
  }
  std::vector<dataset> data;
  data.push_back(circle_mixture("8 Gaussians", "gaussians", 8, 1.0, 0.05));
  data.push_back(circle_mixture("ring", "ring", 64, 1.0, 0.035));

  std::size_t checked_rows = 0;
  for (const sampler& s : samplers) checked_rows += s.checked ? 1 : 0;
  const std::size_t checks = 2 * checked_rows * data.size();
  const double z_crit = normal_critical(alpha);
  // For separated 2-D components N·(mean log p) is cN − Gamma(N, 1) exactly (samplers_2d):
  const double exact_fail = gamma_q(static_cast<double>(n), static_cast<double>(n) + z_crit * sqrt_n) +
                            gamma_p(static_cast<double>(n), static_cast<double>(n) - z_crit * sqrt_n);
  std::printf("Rectified flow x = (1 - sigma) x0 + sigma eps with the exact velocity u(x) = (x - E[x0 | x])/sigma of the\n"
              "mixture (its exact denoiser at the ratio sigma/(1 - sigma), on x/sqrt((1 - sigma)^2 + sigma^2)).\n");
  std::printf("Samplers: Euler, Heun, DPM-Solver++(2M), RF Euler-ancestral (eta 1) on Karras' rho = 7 spacing of the flow\n"
              "  sigma from 1 to 0.001, then 0; the scheduler object's FlowMatchEuler and FlowMatchHeun loops with shift %g\n"
              "  on the same list (set_timesteps(sigmas), shifted there). Contrast rows (reported, not checked): Euler on\n"
              "  flow_sigmas' uniform sigma; FlowMatchEuler/Heun on their own list set_timesteps(N) with shift %g (SD3: 28 steps).\n",
              sd3, sd3);
  std::printf("Checks (each at false-failure probability alpha = %g for an exact sampler):\n", alpha);
  std::printf("  z: mean log-density of the sample under the data against E[log p(X)] = -H(p) (quadrature);\n"
              "     z = (m + H)/(sd(log p(X))/sqrt(N)) ~ N(0,1); pass |z| <= %.3f (exact false-failure probability\n"
              "     %.3g at N = %zu for separated components).\n",
              z_crit, exact_fail, n);
  std::printf("  chi2: Pearson chi-square of the counts by most likely component against N/J, J - 1 degrees of\n"
              "     freedom; pass below the chi-square quantile 1 - alpha.\n");
  std::printf("  %zu checks (%zu checked samplers x 2 statistics x %zu data sets): a false failure of the run has\n"
              "  probability <= %.2g (Bonferroni). Contrast rows and other step counts (--sweep 1) are not checked.\n",
              checks, checked_rows, data.size(), static_cast<double>(checks) * alpha);
  std::printf("Reported, not checked: sliced W2 (%ld directions) to an exact sample of %zu points with its floor (%ld\n"
              "  exact-vs-exact replicates), and the spread (RMS distance to the nearest component mean).\n",
              directions, n, reps);

  int failures = 0;
  ex::plot::figure dist_fig;
  dist_fig.columns = static_cast<int>(data.size());
  dist_fig.width = 1300;
  dist_fig.height = 480;
  dist_fig.panels.resize(data.size());  // |z| against calls per data set
  ex::plot::figure path_fig;
  path_fig.columns = static_cast<int>(data.size());
  path_fig.width = 1000;
  path_fig.height = 1000;
  path_fig.title = "Same noise z (black), same data: rectified flow (blue) and VP (red, in the VP scale)";
  path_fig.panels.resize(2 * data.size());  // row 1: probability-flow paths; row 2: interpolation paths
  for (std::size_t di = 0; di < data.size(); ++di) {
    const dataset& d = data[di];
    const std::size_t J = d.means.size();
    const log_density_law law = log_density_quadrature(d);
    const double chi_crit = chi_square_critical(static_cast<double>(J - 1), alpha);
    const std::vector<double> ref = exact_sample(d, n, useed + 1000 * di + 1);
    // Floor: R pairs of fresh exact samples (their sliced W2; z and chi-square of each: the null laws).
    std::vector<double> floor(static_cast<std::size_t>(reps)), null_z, null_chi;
    for (std::size_t r = 0; r < floor.size(); ++r) {
      const std::vector<double> a = exact_sample(d, n, useed + 1000 * di + 2 + 2 * r);
      const std::vector<double> b = exact_sample(d, n, useed + 1000 * di + 3 + 2 * r);
      floor[r] = sliced_w2(a, b, angles);
      for (const auto* e : {&a, &b}) {
        const sample_stats st = stats_of(d, *e);
        null_z.push_back(z_of(st, law, n));
        null_chi.push_back(chi_square_of(st));
      }
    }
    auto mean_sd = [](const std::vector<double>& v) {
      double m = 0, s = 0;
      for (double x : v) m += x;
      m /= static_cast<double>(v.size());
      for (double x : v) s += (x - m) * (x - m);
      return std::pair{m, std::sqrt(s / static_cast<double>(v.size() - 1))};
    };
    const auto [m0, s0] = mean_sd(floor);
    const auto [zm, zs] = mean_sd(null_z);
    const auto [cm, cs] = mean_sd(null_chi);
    const std::vector<double> fresh = exact_sample(d, n, useed + 1000 * di + 999);
    const double fresh_d = sliced_w2(fresh, ref, angles);
    const sample_stats fresh_st = stats_of(d, fresh);
    std::printf("\n%s (%zu components, std %g on the unit circle), %zu samples\n", d.name.c_str(), J, d.stddev, n);
    std::printf("log-density: E[log p(X)] = -H = %.6f nats, sd(log p(X)) = %.6f (quadrature, mass %.12f)\n", law.mean,
                law.sd, law.mass);
    const double d50 = z_crit * law.sd / sqrt_n;
    std::printf("  z detects a shift of the mean log-density of %.3f nats (50%% power): a spread scaled by l outside\n"
                "  [%.3f, %.3f]; null check, %zu exact samples: z mean %+.3f, sd %.3f (N(0,1): 0, 1)\n",
                d50, std::sqrt(1.0 - d50), std::sqrt(1.0 + d50), null_z.size(), zm, zs);
    std::printf("chi-square: %zu dof, critical %.2f; null check: mean %.2f, sd %.2f (chi2_%zu: %zu, %.2f)\n", J - 1,
                chi_crit, cm, cs, J - 1, J - 1, std::sqrt(2.0 * static_cast<double>(J - 1)));
    std::printf("sliced W2 floor: fresh exact sample %.5f; over %ld replicates mean %.5f, sd %.5f\n", fresh_d, reps, m0, s0);
    const auto [e_diff, h_diff] = scheduler_against_sampler(d, useed);
    std::printf("scheduler loop against the library's loop (64 rows, 20 steps, the same list, shift 1): largest difference\n"
                "  FlowMatchEuler - euler_sample %.3g, FlowMatchHeun - heun_sample %.3g\n",
                e_diff, h_diff);
    std::printf("%-20s %5s %6s %18s %7s %8s %7s  %s\n", "sampler", "steps", "calls", "SW2 (sd from floor)", "spread", "z",
                "chi2", "check (default steps)");
    std::printf("%-20s %5s %6s %9.5f (%+5.1f) %7.4f %+8.2f %7.1f\n", "exact sample", "-", "-", fresh_d, (fresh_d - m0) / s0,
                nearest_mean_rms(d, fresh), z_of(fresh_st, law, n), chi_square_of(fresh_st));

    ex::plot::figure grid;
    grid.columns = 5;
    grid.width = 1150;
    grid.height = 540;
    grid.font_size = 9;
    grid.palette = true;  // dense scatter plots: the palette PNG is several times smaller
    grid.title = d.name + ": rectified flow, " + std::to_string(n) + " samples per panel, exact velocity";
    const std::string range = "set size ratio -1\nset xrange [-1.6:1.6]\nset yrange [-1.6:1.6]\nset key off";
    auto scatter = [&](const std::vector<double>& x, const std::string& title) -> ex::plot::panel& {
      ex::plot::panel& p = grid.panels.emplace_back();
      p.title = title;
      p.commands = range;
      std::vector<double> xs(n), ys(n);
      for (std::size_t i = 0; i < n; ++i) xs[i] = x[2 * i], ys[i] = x[2 * i + 1];
      p.curves.push_back({"", xs, ys, "points pt 7 ps 0.25 lc rgb '#1f77b4'"});
      return p;
    };
    {
      char title[64];
      std::snprintf(title, sizeof title, "exact sample, z %+.1f", z_of(fresh_st, law, n));
      scatter(fresh, title);
    }
    ex::plot::panel& zp = dist_fig.panels[di];
    zp.title = d.name + ": |z| of the mean log-density";
    zp.xlabel = "model calls";
    zp.logx = zp.logy = true;
    zp.commands = "set key outside right top font ',8'\nset yrange [0.01:*]";

    std::size_t total_calls = 0, done_calls = 0;
    auto steps_of = [&](const sampler& s) {
      std::vector<std::size_t> l = sweep ? s.sweep : std::vector<std::size_t>{};
      l.push_back(s.default_steps);
      std::sort(l.begin(), l.end());
      l.erase(std::unique(l.begin(), l.end()), l.end());
      return l;
    };
    for (const sampler& s : samplers)
      for (std::size_t st : steps_of(s)) total_calls += s.calls(st);
    ex::progress prog(d.name, total_calls);
    for (const sampler& s : samplers) {
      std::vector<double> calls_v, z_v;
      for (std::size_t steps : steps_of(s)) {
        const bool is_default = steps == s.default_steps;
        std::vector<double> x(2 * n);
        recorder rec;
        rec.rows = is_default ? static_cast<std::size_t>(trajectories) : 0;
        rec.xs.resize(rec.rows);
        rec.ys.resize(rec.rows);
        rec.every = std::max<std::size_t>(1, steps / 30);
        // Rows split over threads (row b is noise stream b whatever the split); trajectories from chunk 0.
        const std::size_t chunks = std::min(threads, n);
        std::vector<std::size_t> calls_of(chunks);
        std::vector<std::thread> pool;
        for (std::size_t c = 0; c < chunks; ++c) {
          const std::size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
          pool.emplace_back([&, c, lo, hi] {
            calls_of[c] = s.run(d.model, std::span<double>(x).subspan(2 * lo, 2 * (hi - lo)), hi - lo, steps, lo,
                                c == 0 && is_default ? &rec : nullptr);
          });
        }
        for (auto& t : pool) t.join();
        const std::size_t calls = calls_of[0];
        done_calls += calls;
        prog.update(std::min(done_calls, total_calls));
        const double dist = sliced_w2(x, ref, angles);
        const sample_stats st = stats_of(d, x);
        const double z = z_of(st, law, n), chi = chi_square_of(st);
        calls_v.push_back(static_cast<double>(calls));
        z_v.push_back(std::max(std::fabs(z), 0.01));
        std::string verdict;
        if (is_default) {
          const bool z_ok = std::fabs(z) <= z_crit, chi_ok = chi <= chi_crit;
          const std::string which = !z_ok && !chi_ok ? "z, chi2" : !z_ok ? "z" : "chi2";
          if (s.checked) {
            verdict = z_ok && chi_ok ? "pass" : "FAIL (" + which + ")";
            if (!(z_ok && chi_ok)) ++failures;
          } else {
            verdict = z_ok && chi_ok ? "contrast: no bias detected" : "expected bias (" + which + ")";
          }
          char title[96];
          std::snprintf(title, sizeof title, "%s, %zu calls, z %+.1f", s.label.c_str(), calls, z);
          ex::plot::panel& p = scatter(x, title);
          for (std::size_t r = 0; r < rec.rows; ++r) p.curves.push_back({"", rec.xs[r], rec.ys[r], "lines lw 1 lc rgb '#d62728'"});
        }
        std::printf("%-20s %5zu %6zu %9.5f (%+5.1f) %7.4f %+8.2f %7.1f  %s\n", s.name.c_str(), steps, calls, dist,
                    (dist - m0) / s0, nearest_mean_rms(d, x), z, chi, verdict.c_str());
      }
      zp.curves.push_back({s.name, calls_v, z_v, s.checked ? "linespoints lw 2 pt 7" : "linespoints lw 1 dt 2 pt 6"});
    }
    zp.curves.push_back({"|z| limit", {5.0, 1000.0}, {z_crit, z_crit}, "lines lw 2 dt 2 lc rgb 'black'"});
    ex::plot::save(grid, out_dir + "/flow_matching_" + d.file + ".png");

    // ---- Straight against curved: the same noise z, the same data ----
    std::vector<double> z0(2 * static_cast<std::size_t>(paths));
    {
      const philox_normal start_noise(useed + 7);
      for (std::size_t r = 0; r < static_cast<std::size_t>(paths); ++r)
        start_noise.fill(r, initial_noise_step, 0, std::span<double>(z0).subspan(2 * r, 2));
    }
    const auto [rf, vp] = probability_flow_paths(d, z0, static_cast<std::size_t>(path_steps));
    const auto [rf_pair, vp_pair] = interpolation_paths(z0, rf, 200);
    std::printf("Paths from the same z: length / chord (1 = straight) of the probability-flow paths (Heun, %ld steps)\n"
                "and of the interpolation of the pair (z, x0) each process is built on; distance between the two flows'\n"
                "end points (one map z -> x0):\n",
                path_steps);
    std::printf("  %4s %10s %10s %12s %10s %14s\n", "path", "flow: RF", "flow: VP", "pair: RF", "pair: VP", "|end RF - VP|");
    double end_max = 0.0, sum_len[4] = {}, sum_chord[4] = {};
    const path_set* sets[4] = {&rf, &vp, &rf_pair, &vp_pair};
    ex::plot::panel& top = path_fig.panels[di];
    ex::plot::panel& bottom = path_fig.panels[data.size() + di];
    top.title = d.name + ": probability-flow paths (exact velocity)";
    bottom.title = d.name + ": interpolation paths of the same pairs (z, x0)";
    for (ex::plot::panel* p : {&top, &bottom}) {
      p->commands = "set size ratio -1\nset xrange [-2.6:2.6]\nset yrange [-2.6:2.6]\nset key off";
      std::vector<double> xs(n), ys(n);
      for (std::size_t i = 0; i < n; ++i) xs[i] = fresh[2 * i], ys[i] = fresh[2 * i + 1];
      p->curves.push_back({"", xs, ys, "points pt 7 ps 0.2 lc rgb '#bbbbbb'"});
    }
    for (std::size_t r = 0; r < rf.xs.size(); ++r) {
      double ratio[4];
      for (std::size_t k = 0; k < 4; ++k) {
        const double len = path_length(sets[k]->xs[r], sets[k]->ys[r]), chord = chord_length(sets[k]->xs[r], sets[k]->ys[r]);
        ratio[k] = len / chord;
        sum_len[k] += len;
        sum_chord[k] += chord;
      }
      const double end = std::hypot(rf.xs[r].back() - vp.xs[r].back(), rf.ys[r].back() - vp.ys[r].back());
      end_max = std::max(end_max, end);
      std::printf("  %4zu %10.4f %10.4f %12.4f %10.4f %14.2e\n", r, ratio[0], ratio[1], ratio[2], ratio[3], end);
    }
    // VP first, so that the rectified-flow paths stay visible where the two coincide.
    for (auto [p, a, b] : {std::tuple{&top, &rf, &vp}, std::tuple{&bottom, &rf_pair, &vp_pair}}) {
      for (std::size_t r = 0; r < rf.xs.size(); ++r) p->curves.push_back({"", b->xs[r], b->ys[r], "lines lw 3 lc rgb '#d62728'"});
      for (std::size_t r = 0; r < rf.xs.size(); ++r) p->curves.push_back({"", a->xs[r], a->ys[r], "lines lw 1.5 lc rgb '#1f77b4'"});
      p->curves.push_back({"", std::vector<double>(), std::vector<double>(), "points pt 7 ps 1 lc rgb 'black'"});
      for (std::size_t r = 0; r < rf.xs.size(); ++r) {
        p->curves.back().x.push_back(z0[2 * r]);
        p->curves.back().y.push_back(z0[2 * r + 1]);
      }
    }
    std::printf("  %4s %10.4f %10.4f %12.4f %10.4f %14.2e  (sum of lengths / sum of chords; largest distance)\n", "all",
                sum_len[0] / sum_chord[0], sum_len[1] / sum_chord[1], sum_len[2] / sum_chord[2], sum_len[3] / sum_chord[3],
                end_max);
  }
  if (sweep) ex::plot::save(dist_fig, out_dir + "/flow_matching_distance.png");
  ex::plot::save(path_fig, out_dir + "/flow_matching_paths.png");
  std::printf("\n%s\n", failures == 0 ? "All checks passed." : "Some checks FAILED.");
  return failures == 0 ? 0 : 1;
}
