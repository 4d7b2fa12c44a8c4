// Every sampler of the library on two 2-D data sets with the exact denoiser, checked against the known density.
//
// Data (diffusion::gaussian_mixture_data, which is the exact denoiser E[ε | x_t] the samplers call):
//   "8 Gaussians": 8 equal components on the unit circle, standard deviation 0.05;
//   "ring": 64 equal components on the unit circle, standard deviation 0.035 (a thin ring: the
//   components are 2.8 standard deviations apart).
// Samplers: DDPM ancestral (Ho et al. 2020, Algorithm 2; linear β, T = 1000, σ_t² = β_t and β̃_t),
// DDIM η = 0 (Song et al. 2021) with 10 and 50 steps, annealed Langevin (Song & Ermon 2019,
// Algorithm 1), VE predictor–corrector (Song et al. 2021, Algorithms 2 and 4), and on the Karras
// et al. 2022 σ list: Euler, Heun (Algorithm 2), DPM-Solver++(2M) and (3M) (Lu et al. 2022; 3M is
// dpmpp_3m_sde_sample with η = 0), LMS, UniPC (bh2, order 3), DEIS (order 3), iPNDM, DPM2, PLMS,
// RES multistep, singlestep DPM-Solver++ (order 3), SA-Solver at τ = 0, and the stochastic Euler
// ancestral, DPM++ 2M SDE, DPM++ 3M SDE, DPM2 ancestral, DPM++ 2S ancestral, DPM++ SDE (η = 1),
// RES multistep ancestral, ER-SDE and SA-Solver (τ = 1), each through its own *_sample loop.
//
// Checks, each with false-failure probability α (--alpha, 1e-5) for a sampler that draws exactly
// from the data:
//  * z, the mean log-density: m = (1/N) Σ log p(x_i) under the true mixture, against its exact
//    expectation E[log p(X)] = −H(p) and sd(log p(X)), both by quadrature (log_density_quadrature);
//    z = (m + H)/(sd/√N) is N(0, 1) for an exact sampler by the central limit theorem (for
//    separated components it is exactly (N − Gamma(N, 1))/√N, whose two-sided tail the program
//    prints). Pass |z| ≤ Φ⁻¹(1 − α/2) = 4.417. It sees blur and squeeze within components
//    (a spread scaled by λ moves m by about 1 − λ²) and mass off the components.
//  * χ², the mass balance: Pearson χ² of the counts of points by most likely component against
//    N/J (by symmetry P(argmax = j) = 1/J exactly), J − 1 degrees of freedom; pass below the
//    1 − α quantile.
// With 25 checked samplers × 2 statistics × 2 data sets, a false failure of the run has
// probability ≤ 100 α = 1e-3 (Bonferroni). The null laws are checked on the run's own exact
// samples (2R of them: mean and sd of z, mean of χ²). Exit status 1 when a check fails.
//
// What is checked is a sampler at default steps where it is accurate at this resolution: the
// stochastic samplers where the exact variance recurrence on one Gaussian component predicts a
// spread within ~1 % (DDPM with σ² = β_t, annealed Langevin with 50 steps per level), the
// ODE solvers at step counts where more steps move z by about 1 or less (Euler 200, Heun and
// DPM2 35 = 69 calls, the multistep solvers 50), and the σ-space SDE solvers where the bias left
// in z is within about 2 (Euler ancestral 400, the others 100 steps). Contrast rows are reported, not checked: DDPM with σ² = β̃ (the
// lower end of the reverse variance: under-dispersed by a predicted λ = 0.93 / 0.89 at T = 1000)
// and DDIM with 10 and 50 of the paper's uniform steps (first order, and its last step to ᾱ = 1
// denoises from σ ≈ 0.01, which shrinks the spread by s²/(s² + 0.01²) in variance at any step
// count); a contrast row that fails prints "expected bias".
//
// Reported, not checked: the sliced Wasserstein-2 distance to an exact sample of the same size
// (P random directions θ, fixed seed; the 1-D W2² of the projected sorted samples averaged over
// directions, square root), with its floor (the same between two fresh exact samples, R
// replicates, mean m₀ and sd s₀); it is the distance-vs-calls column, but at 2000 samples it only
// resolves errors above ≈ 0.1 and its tail at α = 1e-5 cannot be calibrated from R replicates.
// And the spread: the RMS distance to the nearest component mean.
//
// Rows are split over --threads threads; each row's noise is the stream of its row index, so the
// split does not change the samples (except the predictor–corrector's batch-mean step size).
//
// Output: samplers_2d_<data>.png (a grid of scatter plots, 5 per row, at the default steps with a few
// trajectories), samplers_2d_distance.png (sliced W2 and |z| against denoiser calls), the tables.
//
//   samplers_2d [--samples N] [--directions P] [--floor-reps R] [--alpha A] [--sweep 0|1] [--out-dir DIR] [--help]
#include <diffusion/ddpm.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numbers>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/cli.hpp"
#include "common/plot.hpp"

namespace {

using namespace diffusion;

struct dataset {
  std::string name, file;
  std::vector<std::vector<double>> means;
  double radius, stddev;
  gaussian_mixture_data model;
};

dataset circle_mixture(std::string name, std::string file, std::size_t J, double radius, double stddev) {
  std::vector<double> w(J, 1.0);
  std::vector<std::vector<double>> means(J), sds(J, std::vector<double>{stddev, stddev});
  for (std::size_t j = 0; j < J; ++j) {
    const double a = 2.0 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(J);
    means[j] = {radius * std::cos(a), radius * std::sin(a)};
  }
  gaussian_mixture_data model(w, means, sds);
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

// RMS distance from each point to the nearest component mean: a diagnostic of the spread within
// components (about s·√2 for a sample of the data when components barely overlap), which the
// sliced W2 at these sample sizes barely sees.
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

// ---- Statistics with a known null law -------------------------------------------------------
//
// Regularized incomplete gamma functions P(a, x) and Q(a, x) = 1 − P(a, x) (Numerical Recipes
// §6.2): the series below x = a + 1, the continued fraction (modified Lentz) above; each tail is
// computed directly, so small tail probabilities keep their relative accuracy.
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
double gamma_fraction(double a, double x) {  // Q(a, x), for x ≥ a + 1
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

// The x with f(x) = target for a decreasing f on [lo, hi] (bisection to double precision).
template <class F>
double solve_decreasing(F f, double target, double lo, double hi) {
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (f(mid) > target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}
// Two-sided normal critical value: P(|Z| > z) = alpha.
double normal_critical(double alpha) {
  return solve_decreasing([](double z) { return std::erfc(z / std::numbers::sqrt2); }, alpha, 0.0, 40.0);
}
// Chi-square critical value with k degrees of freedom: P(χ²_k > c) = alpha.
double chi_square_critical(double k, double alpha) {
  return solve_decreasing([k](double c) { return gamma_q(0.5 * k, 0.5 * c); }, alpha, 0.0, k + 100.0 * std::sqrt(k) + 1000.0);
}

// E[log p(X)] = −H(p) and sd(log p(X)) for X ~ p, the data density, by quadrature: the mixtures
// here have J equal components equally spaced on a circle, so p has J-fold rotational symmetry and
// the integrals are J times those over one period of the angle, in polar coordinates. The
// trapezoid rule is spectrally accurate for the periodic angle, and for the radius over
// [R − 12 s, R + 12 s] (the integrand is Gaussian-like and negligible at the ends); the grid step
// is s/8 in both (in arc length at the outer radius). `mass` is ∫ p, a check (1 to ~1e-15).
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

// The two statistics of one sample x (rows of 2): the mean log-density under the data, and the
// counts of points by most likely component (argmax of the responsibilities at σ = 0).
struct sample_stats {
  double mean_log_p = 0.0;
  std::vector<std::size_t> counts;
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
// z = (mean log p − E[log p]) / (sd(log p)/√N): N(0, 1) for an exact sample (central limit
// theorem). Positive: the sample sits where p is higher than it should (too concentrated).
double z_of(const sample_stats& st, const log_density_law& law, std::size_t n) {
  return (st.mean_log_p - law.mean) / (law.sd / std::sqrt(static_cast<double>(n)));
}
// Pearson χ² of the component counts against N w_j: with equal weights, equal isotropic
// components and equal spacing on the circle, P(argmax = j) = 1/J by symmetry, so the counts of an
// exact sample are multinomial(N, 1/J) and χ² is asymptotically χ²_{J−1}.
double chi_square_of(const sample_stats& st) {
  double n = 0.0;
  for (std::size_t c : st.counts) n += static_cast<double>(c);
  const double e = n / static_cast<double>(st.counts.size());
  double chi = 0.0;
  for (std::size_t c : st.counts) chi += (static_cast<double>(c) - e) * (static_cast<double>(c) - e) / e;
  return chi;
}

// A trajectory: the state of a few rows after each step, in the VP scale x / sqrt(1 + σ²).
struct recorder {
  std::size_t rows = 0, every = 1, calls = 0;  // keep every `every`-th step
  std::vector<std::vector<double>> xs, ys;     // per row
  void record(std::span<const double> x, double scale) {
    if (calls++ % every != 0) return;
    for (std::size_t r = 0; r < rows; ++r) {
      xs[r].push_back(x[2 * r] * scale);
      ys[r].push_back(x[2 * r + 1] * scale);
    }
  }
};

// One sampler: runs `steps` steps on `rows` rows of x (drawing its own initial noise) and
// returns the number of denoiser calls; records trajectories when rec is given.
// Row b of x is noise stream first + b, so a run split over threads by rows gives the same
// result as one call (except the predictor-corrector's batch-mean step size, which couples rows).
using run_fn = std::function<std::size_t(gaussian_mixture_data&, std::span<double>, std::size_t, std::size_t,
                                         std::uint64_t first, recorder*)>;

struct sampler {
  std::string name, family;  // family: one curve of the distance plot
  bool checked;              // false: a contrast row (expected biased): reported, not checked
  std::size_t default_steps;
  std::vector<std::size_t> sweep;  // step counts for the distance-vs-calls table
  run_fn run;
  // Denoiser calls of a run of `steps` steps, calls_per_step · steps + call_offset (for the progress
  // estimate; the tables print the count the loop returns): 2, −1 for the two-stage methods (Heun,
  // DPM2, …, whose last step to σ = 0 is one Euler call).
  std::size_t calls_per_step = 1;
  int call_offset = 0;
};

struct settings {
  std::uint64_t seed;
  double langevin_eps, langevin_sigma_max, langevin_sigma_min, pc_snr;
  std::size_t langevin_levels;
};

std::vector<sampler> make_samplers(const settings& cfg, const noise_schedule& train) {
  std::vector<sampler> out;
  const philox_normal noise(cfg.seed);
  const std::size_t T = train.size();
  // DDPM / DDIM: VP states, no rescaling for trajectories.
  auto vp_hooks = [](recorder* rec) {
    sampler_hooks<double> h;
    if (rec) h.on_step = [rec](const step_info<double>& info) {
      rec->record(info.x, 1.0);
      return true;
    };
    return h;
  };
  auto ddpm = [=, &train](variance_type v) {
    return [=, &train](auto& m, auto x, std::size_t rows, std::size_t steps, std::uint64_t first, recorder* rec) {
      philox_normal nz = noise;
      ddpm_options o;
      o.variance = v;
      o.first_sample = first;
      if (steps != T) o.timesteps = inference_timesteps(T, steps, timestep_spacing::linspace);
      return ddpm_sample(train, m, x, rows, nz, o, vp_hooks(rec)).model_calls;
    };
  };
  // σ² = β̃ (Algorithm 2's usual choice) is the lower end of the reverse variance: a contrast row
  // (expected under-dispersed, see the file comment); σ² = β_t, the upper end, is the checked DDPM.
  out.push_back({"DDPM beta~", "DDPM, sigma^2 = beta~", false, 1000, {}, ddpm(variance_type::fixed_small)});
  out.push_back({"DDPM beta", "DDPM, sigma^2 = beta", true, 1000, {}, ddpm(variance_type::fixed_large)});
  auto ddim = [=, &train](auto& m, auto x, std::size_t rows, std::size_t steps, std::uint64_t first, recorder* rec) {
    philox_normal nz = noise;
    ddim_options o;
    o.first_sample = first;
    return ddim_sample(train, m, x, rows, nz, inference_timesteps(T, steps, timestep_spacing::leading), o, vp_hooks(rec))
        .model_calls;
  };
  out.push_back({"DDIM 10", "DDIM", false, 10, {20}, ddim});
  out.push_back({"DDIM 50", "DDIM", false, 50, {100}, ddim});
  // σ-space samplers: states x = x0 + σ ε; trajectories rescaled by 1/sqrt(1 + σ²).
  out.push_back({"annealed Langevin", "annealed Langevin", true, 50, {20},
                 [=](auto& m, auto x, std::size_t rows, std::size_t steps_each, std::uint64_t first, recorder* rec) {
                   philox_normal nz = noise;
                   sigma_space_model<gaussian_mixture_data> D(m);
                   const std::vector<double> sig =
                       geometric_sigmas(cfg.langevin_levels, cfg.langevin_sigma_min, cfg.langevin_sigma_max);
                   annealed_langevin_options o;
                   o.epsilon = cfg.langevin_eps;
                   o.n_steps_each = steps_each;
                   o.final_denoise = true;
                   o.first_sample = first;
                   sampler_hooks<double> h;
                   if (rec) h.on_step = [rec](const step_info<double>& info) {
                     rec->record(info.x, 1.0 / std::sqrt(1.0 + info.sigma * info.sigma));
                     return true;
                   };
                   return annealed_langevin_sample(D, x, rows, nz, sig, o, h).model_calls;
                 },
                 cfg.langevin_levels, 1});
  out.push_back({"predictor-corrector", "predictor-corrector", true, 250, {100},
                 [=](auto& m, auto x, std::size_t rows, std::size_t levels, std::uint64_t first, recorder* rec) {
                   philox_normal nz = noise;
                   sigma_space_model<gaussian_mixture_data> D(m);
                   const std::vector<double> sig = geometric_sigmas(levels, cfg.langevin_sigma_min, cfg.langevin_sigma_max);
                   predictor_corrector_options o;
                   o.snr = cfg.pc_snr;
                   o.first_sample = first;
                   o.norms = corrector_norms::batch_mean;  // per-row norms of 2 elements inflate the noise (n+2)/(n-2)
                   sampler_hooks<double> h;
                   if (rec) h.on_step = [rec](const step_info<double>& info) {
                     rec->record(info.x, 1.0 / std::sqrt(1.0 + info.sigma * info.sigma));
                     return true;
                   };
                   return predictor_corrector_sample(D, x, rows, nz, sig, o, h).model_calls;
                 },
                 2, 0});
  // σ-space samplers on Karras et al. 2022's σ list (Table 1: σ 80 … 0.002, ρ = 7), each through its
  // own loop; `call` runs the loop on (D, x, rows, noise, σ list, first row's stream, hooks).
  auto sigma_row = [=](auto call) {
    return [=](auto& m, auto x, std::size_t rows, std::size_t steps, std::uint64_t first, recorder* rec) {
      philox_normal nz = noise;
      sigma_space_model<gaussian_mixture_data> D(m);
      const std::vector<double> sig = karras_sigmas(steps, 0.002, 80.0);
      sampler_hooks<double> h;
      if (rec) h.on_step = [rec](const step_info<double>& info) {
        rec->record(info.x, 1.0 / std::sqrt(1.0 + info.sigma_next * info.sigma_next));
        return true;
      };
      return call(D, x, rows, nz, std::span<const double>(sig), first, h).model_calls;
    };
  };
  auto karras = [=](karras_method method) {
    return sigma_row([method](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
      karras_options o;
      o.first_sample = first;
      return karras_sample(method, D, x, rows, nz, sig, o, h);
    });
  };
  // The loops with karras_options (karras_sample's enum holds only its four methods, karras.hpp).
  auto with_karras_options = [=](auto loop, double eta = 1.0) {
    return sigma_row([loop, eta](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
      karras_options o;
      o.eta = eta;
      o.first_sample = first;
      return loop(D, x, rows, nz, sig, o, h);
    });
  };
  out.push_back({"Euler", "Euler", true, 200, {10, 25, 50, 100}, karras(karras_method::euler)});
  out.push_back({"Heun", "Heun", true, 35, {5, 10, 18, 50}, karras(karras_method::heun), 2, -1});
  out.push_back({"DPM-Solver++(2M)", "DPM-Solver++(2M)", true, 50, {5, 10, 20, 100}, karras(karras_method::dpmpp_2m)});
  out.push_back({"DPM-Solver++(3M)", "DPM-Solver++(3M)", true, 50, {5, 10, 20, 100},
                 with_karras_options([](auto&&... a) { return dpmpp_3m_sde_sample(a...); }, 0.0)});
  out.push_back({"LMS", "LMS", true, 50, {5, 10, 20, 100},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   lms_options o;
                   o.first_sample = first;
                   return lms_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"UniPC bh2 3", "UniPC (bh2, order 3)", true, 50, {5, 10, 20, 100},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   unipc_sample_options o;
                   o.solver.order = 3;
                   o.solver.variant = unipc_variant::bh2;
                   o.first_sample = first;
                   return unipc_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"DEIS 3", "DEIS (order 3)", true, 50, {5, 10, 20, 100},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   deis_sample_options o;
                   o.order = 3;
                   o.first_sample = first;
                   return deis_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"iPNDM", "iPNDM", true, 50, {5, 10, 20, 100},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   ipndm_sample_options o;
                   o.first_sample = first;
                   return ipndm_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"DPM2", "DPM2", true, 35, {5, 10, 18, 50}, with_karras_options([](auto&&... a) { return dpm2_sample(a...); }), 2, -1});
  out.push_back({"PLMS", "PLMS (PNDM, order 4)", true, 50, {5, 10, 20, 100},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   plms_sample_options o;
                   o.first_sample = first;
                   return plms_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"RES multistep", "RES multistep", true, 50, {5, 10, 20, 100},
                 with_karras_options([](auto&&... a) { return res_multistep_sample(a...); })});
  out.push_back({"DPM-Solver++ 3S", "DPM-Solver++ singlestep (order 3, heun)", true, 51, {6, 12, 21, 99},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   dpmpp_singlestep_sample_options o;
                   o.order = 3;
                   o.solver_type = dpm_solver_type::heun;
                   o.first_sample = first;
                   return dpmpp_singlestep_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"SA-Solver 0", "SA-Solver (tau = 0, 2/2)", true, 50, {5, 10, 20, 100},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   sa_solver_sample_options o;
                   o.tau = 0.0;
                   o.first_sample = first;
                   return sa_solver_sample(D, x, rows, nz, sig, o, h);
                 })});
  // Stochastic σ-space samplers (η = 1).
  out.push_back({"Euler ancestral", "Euler ancestral", true, 400, {25, 50, 100, 200},
                 with_karras_options([](auto&&... a) { return euler_ancestral_sample(a...); })});
  out.push_back({"DPM++ 2M SDE", "DPM++ 2M SDE", true, 100, {10, 25, 50},
                 with_karras_options([](auto&&... a) { return dpmpp_2m_sde_sample(a...); })});
  out.push_back({"DPM++ 3M SDE", "DPM++ 3M SDE", true, 100, {10, 25, 50},
                 with_karras_options([](auto&&... a) { return dpmpp_3m_sde_sample(a...); })});
  out.push_back({"DPM2 ancestral", "DPM2 ancestral", true, 100, {10, 25, 50},
                 with_karras_options([](auto&&... a) { return dpm2_ancestral_sample(a...); }), 2, -1});
  out.push_back({"DPM++ 2S ancestral", "DPM++ 2S ancestral", true, 100, {10, 25, 50},
                 with_karras_options([](auto&&... a) { return dpmpp_2s_ancestral_sample(a...); }), 2, -1});
  out.push_back({"DPM++ SDE", "DPM++ SDE", true, 100, {10, 25, 50},
                 with_karras_options([](auto&&... a) { return dpmpp_sde_sample(a...); }), 2, -1});
  out.push_back({"RES ancestral", "RES multistep ancestral", true, 100, {10, 25, 50},
                 with_karras_options([](auto&&... a) { return res_multistep_ancestral_sample(a...); })});
  out.push_back({"ER-SDE", "ER-SDE (stage 3)", true, 100, {10, 25, 50},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   er_sde_options<> o;
                   o.first_sample = first;
                   return er_sde_sample(D, x, rows, nz, sig, o, h);
                 })});
  out.push_back({"SA-Solver", "SA-Solver (tau = 1, 2/2)", true, 100, {10, 25, 50},
                 sigma_row([](auto& D, auto x, std::size_t rows, auto& nz, auto sig, std::uint64_t first, const auto& h) {
                   sa_solver_sample_options o;
                   o.first_sample = first;
                   return sa_solver_sample(D, x, rows, nz, sig, o, h);
                 })});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "samplers_2d",
               "DDPM, DDIM, annealed Langevin, predictor-corrector and the sigma-space ODE and SDE samplers (Euler, Heun, "
               "DPM-Solver++(2M)/(3M), LMS, UniPC, DEIS, iPNDM, DPM2, Euler ancestral, DPM++ 2M/3M SDE, DPM2 ancestral, "
               "DPM++ 2S ancestral, DPM++ SDE) with the exact denoiser of two 2-D Gaussian mixtures; checked by the mean log-density (z) and the component counts "
               "(chi-square) of each sample, with sliced W2 to an exact sample reported.");
  const long samples = args.integer("--samples", 2000, "samples per run (and size of the exact reference sample)");
  const long directions = args.integer("--directions", 128, "random projections of the sliced W2");
  const long reps = args.integer("--floor-reps", 32, "exact-vs-exact replicates: the sliced-W2 floor and the null z, chi-square");
  const double alpha = args.real("--alpha", 1e-5, "false-failure probability of each check (z two-sided; chi-square)");
  const long sweep = args.integer("--sweep", 1, "1: also run every sampler at the step counts of the table; 0: defaults only");
  const long trajectories = args.integer("--trajectories", 4, "trajectories drawn on each scatter plot");
  const long seed = args.integer("--seed", 2020, "seed of the sampler noise, the exact samples and the directions");
  const double eps = args.real("--langevin-eps", 2e-5, "annealed Langevin step size epsilon (alpha_i = eps sigma_i^2/sigma_L^2)");
  const long levels = args.integer("--langevin-levels", 10, "annealed Langevin: number of geometric noise levels");
  const double snr = args.real("--pc-snr", 0.16, "predictor-corrector: corrector signal-to-noise ratio r");
  const long threads_l = args.integer("--threads", 2, "threads (rows are split; results do not depend on it except PC)");
  const std::string out_dir = args.text("--out-dir", ".", "directory for the PNG, .dat and .gp files");
  args.finish();
  if (threads_l < 1) {
    std::fprintf(stderr, "samplers_2d: --threads must be >= 1\n");
    return 2;
  }
  const auto threads = static_cast<std::size_t>(threads_l);
  const auto levels_u = static_cast<std::size_t>(levels);
  if (samples < 10 || directions < 1 || reps < 2 || levels < 2 || trajectories < 0 || trajectories > samples ||
      !(alpha > 0.0 && alpha < 1.0)) {
    std::fprintf(stderr,
                 "samplers_2d: need --samples >= 10, --directions >= 1, --floor-reps >= 2, --langevin-levels >= 2, "
                 "0 < --alpha < 1\n");
    return 2;
  }
  const auto n = static_cast<std::size_t>(samples);
  const double sqrt_n = std::sqrt(static_cast<double>(n));
  const auto useed = static_cast<std::uint64_t>(seed);
  const settings cfg{useed, eps, 3.0, 0.01, snr, static_cast<std::size_t>(levels)};
  const noise_schedule train(linear_betas(1000, 1e-4, 0.02));  // DDPM §4
  std::vector<sampler> samplers = make_samplers(cfg, train);

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
  // For separated 2-D components, log p(X) = c − E with E ~ Exp(1) (|X − μ|²/(2s²)), so N·(mean
  // log p) is c·N − Gamma(N, 1) exactly and the z check's false-failure probability is exact:
  const double exact_fail = gamma_q(static_cast<double>(n), static_cast<double>(n) + z_crit * sqrt_n) +
                            gamma_p(static_cast<double>(n), static_cast<double>(n) - z_crit * sqrt_n);
  std::printf("Checks (each at false-failure probability alpha = %g for an exact sampler):\n", alpha);
  std::printf("  z: mean log-density of the sample under the data, m = (1/N) sum log p(x_i), against E[log p(X)] = -H(p)\n"
              "     (quadrature); z = (m + H)/(sd(log p(X))/sqrt(N)) ~ N(0,1) for an exact sampler; pass |z| <= %.3f.\n"
              "     Exact for separated components (N m = cN - Gamma(N,1)): false-failure probability %.3g at N = %zu.\n",
              z_crit, exact_fail, n);
  std::printf("  chi2: Pearson chi-square of the counts of points by most likely component against N/J (multinomial\n"
              "     by symmetry), J - 1 degrees of freedom; pass below the chi-square quantile 1 - alpha.\n");
  std::printf("  %zu checks (%zu checked samplers x 2 statistics x %zu data sets): a false failure of the run has\n"
              "  probability <= %.2g (Bonferroni). Contrast rows (expected to be biased) are reported, not checked.\n",
              checks, checked_rows, data.size(), static_cast<double>(checks) * alpha);
  std::printf("Reported, not checked: sliced W2 (%ld random directions, sorted-sample 1-D W2) to an exact sample of %zu\n"
              "  points, with its floor (the same between two fresh exact samples, %ld replicates), and the spread (RMS\n"
              "  distance to the nearest component mean).\n",
              directions, n, reps);
  std::printf("Langevin/PC levels: geometric sigma 3 ... 0.01 (Langevin: %ld levels, eps %g, final denoise; PC: snr %g, "
              "1 corrector step, batch-mean norms). Karras: sigma 80 ... 0.002, rho 7.\n",
              levels, eps, snr);

  int failures = 0;
  ex::plot::figure dist_fig;
  dist_fig.columns = 2;
  dist_fig.width = 1100;
  dist_fig.height = 800;
  dist_fig.panels.resize(2 * data.size());  // row 1: sliced W2 per data set; row 2: |z|
  for (std::size_t di = 0; di < data.size(); ++di) {
    dataset& d = data[di];
    const std::size_t J = d.means.size();
    const log_density_law law = log_density_quadrature(d);
    const double chi_crit = chi_square_critical(static_cast<double>(J - 1), alpha);
    const std::vector<double> ref = exact_sample(d, n, useed + 1000 * di + 1);
    // Floor: R pairs of fresh exact samples: their sliced W2, and the z and chi-square of each
    // sample (2R draws of the statistics' null laws, a check of their calibration).
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
    double zmax = 0.0, cmax = 0.0;
    for (double z : null_z) zmax = std::max(zmax, std::fabs(z));
    for (double c : null_chi) cmax = std::max(cmax, c);
    const std::vector<double> fresh = exact_sample(d, n, useed + 1000 * di + 999);
    const double fresh_d = sliced_w2(fresh, ref, angles);
    const sample_stats fresh_st = stats_of(d, fresh);
    std::printf("\n%s (%zu components, std %g on the unit circle), %zu samples\n", d.name.c_str(), J, d.stddev, n);
    std::printf("log-density: E[log p(X)] = -H = %.6f nats, sd(log p(X)) = %.6f (quadrature, mass %.12f)\n", law.mean,
                law.sd, law.mass);
    const double d50 = z_crit * law.sd / sqrt_n, d90 = (z_crit + 1.2815516) * law.sd / sqrt_n;
    std::printf("  z detects a shift of the mean log-density of %.3f nats (50%% power) / %.3f (90%%): for separated\n"
                "  components a spread scaled by l shifts it by about 1 - l^2, so l outside [%.3f, %.3f] / [%.3f, %.3f]\n",
                d50, d90, std::sqrt(1.0 + d50), std::sqrt(1.0 - d50), std::sqrt(1.0 + d90), std::sqrt(1.0 - d90));
    std::printf("  null check, %zu exact samples: z mean %+.3f, sd %.3f, max |z| %.2f (N(0,1): 0, 1)\n", null_z.size(), zm,
                zs, zmax);
    const double f50 = std::sqrt(static_cast<double>(J - 1) * (chi_crit - static_cast<double>(J - 1)) / static_cast<double>(n));
    std::printf("chi-square: %zu dof, critical %.2f; null check: mean %.2f, sd %.2f, max %.1f (chi2_%zu: %zu, %.2f);\n"
                "  detects (50%% power) one component's mass off by a factor 1 +- %.2f\n",
                J - 1, chi_crit, cm, cs, cmax, J - 1, J - 1, std::sqrt(2.0 * static_cast<double>(J - 1)), f50);
    std::printf("sliced W2 floor: fresh exact sample %.5f; over %ld replicates mean %.5f, sd %.5f\n", fresh_d, reps, m0, s0);
    std::printf("spread: RMS distance to the nearest component mean, exact sample %.4f (s sqrt(2) = %.4f)\n",
                nearest_mean_rms(d, fresh), d.stddev * std::numbers::sqrt2);
    std::printf("%-20s %5s %6s %18s %7s %8s %7s  %s\n", "sampler", "steps", "calls", "SW2 (sd from floor)", "spread", "z",
                "chi2", "check (default steps)");
    std::printf("%-20s %5s %6s %9.5f (%+5.1f) %7.4f %+8.2f %7.1f  %s\n", "exact sample", "-", "-", fresh_d, (fresh_d - m0) / s0,
                nearest_mean_rms(d, fresh), z_of(fresh_st, law, n), chi_square_of(fresh_st), "");

    ex::plot::figure grid;
    grid.columns = 5;
    grid.width = 1150;
    grid.height = 270 * static_cast<int>((samplers.size() + 1 + 4) / 5);  // the exact sample and one panel per sampler
    grid.font_size = 9;
    grid.palette = true;  // 2 × 10 × 2000 points: the palette PNG is ~6 times smaller
    grid.title = d.name + ": " + std::to_string(n) + " samples per panel, exact denoiser";
    const std::string range = "set size ratio -1\nset xrange [-1.6:1.6]\nset yrange [-1.6:1.6]\nset key off";
    {
      ex::plot::panel& p = grid.panels.emplace_back();
      char title[64];
      std::snprintf(title, sizeof title, "exact sample, z %+.1f", z_of(fresh_st, law, n));
      p.title = title;
      p.commands = range;
      std::vector<double> xs(n), ys(n);
      for (std::size_t i = 0; i < n; ++i) xs[i] = fresh[2 * i], ys[i] = fresh[2 * i + 1];
      p.curves.push_back({"", xs, ys, "points pt 7 ps 0.25 lc rgb '#1f77b4'"});
    }
    ex::plot::panel& dp = dist_fig.panels[di];
    dp.title = d.name + ": sliced W2 to an exact sample";
    dp.xlabel = "denoiser calls";
    dp.logx = dp.logy = true;
    dp.commands = "set key top right";
    ex::plot::panel& zp = dist_fig.panels[data.size() + di];
    zp.title = d.name + ": |z| of the mean log-density";
    zp.xlabel = "denoiser calls";
    zp.logx = zp.logy = true;
    zp.commands = "set key top right\nset yrange [0.01:*]";

    // Progress in denoiser calls over all runs of this data set.
    std::size_t total_calls = 0, done_calls = 0;
    auto steps_of = [&](const sampler& s) {
      std::vector<std::size_t> l = sweep ? s.sweep : std::vector<std::size_t>{};
      l.push_back(s.default_steps);
      std::sort(l.begin(), l.end());
      l.erase(std::unique(l.begin(), l.end()), l.end());
      return l;
    };
    for (const sampler& s : samplers)
      for (std::size_t st : steps_of(s))
        total_calls += static_cast<std::size_t>(static_cast<long>(s.calls_per_step * st) + s.call_offset);
    ex::progress prog(d.name, total_calls);
    for (sampler& s : samplers) {
      const std::vector<std::size_t> steps_list = steps_of(s);
      std::vector<double> calls_v, dist_v, z_v;
      for (std::size_t steps : steps_list) {
        const bool is_default = steps == s.default_steps;
        std::vector<double> x(2 * n);
        recorder rec;
        rec.rows = is_default ? static_cast<std::size_t>(trajectories) : 0;
        rec.xs.resize(rec.rows);
        rec.ys.resize(rec.rows);
        rec.every = std::max<std::size_t>(1, steps * (s.name == "annealed Langevin" ? levels_u : 1) / 30);
        // Rows split over threads; trajectories come from the first chunk's first rows.
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
        dist_v.push_back(dist);
        z_v.push_back(std::fabs(z));
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
          ex::plot::panel& p = grid.panels.emplace_back();
          char title[96];
          std::snprintf(title, sizeof title, "%s, %zu calls, z %+.1f", s.family == "predictor-corrector" ? "PC"
                                                                    : s.family == "DPM-Solver++(2M)" ? "DPM++(2M)" : s.name.c_str(),
                        calls, z);
          p.title = title;
          p.commands = range;
          std::vector<double> xs(n), ys(n);
          for (std::size_t i = 0; i < n; ++i) xs[i] = x[2 * i], ys[i] = x[2 * i + 1];
          p.curves.push_back({"", xs, ys, "points pt 7 ps 0.25 lc rgb '#1f77b4'"});
          for (std::size_t r = 0; r < rec.rows; ++r)
            p.curves.push_back({"", rec.xs[r], rec.ys[r], "lines lw 1 lc rgb '#d62728'"});
        }
        std::printf("%-20s %5zu %6zu %9.5f (%+5.1f) %7.4f %+8.2f %7.1f  %s\n", s.family == "DDIM" ? "DDIM" : s.name.c_str(), steps, calls, dist,
                    (dist - m0) / s0, nearest_mean_rms(d, x), z, chi, verdict.c_str());
      }
      // One curve per family (DDIM 10 and DDIM 50 share one), points in order of calls.
      for (auto [pp, yv] : {std::pair{&dp, &dist_v}, std::pair{&zp, &z_v}}) {
        auto it = std::find_if(pp->curves.begin(), pp->curves.end(), [&](const auto& c) { return c.title == s.family; });
        if (it == pp->curves.end()) it = pp->curves.insert(pp->curves.end(), {s.family, {}, {}, "linespoints lw 2 pt 7"});
        for (std::size_t i = 0; i < calls_v.size(); ++i) {
          const auto at = std::upper_bound(it->x.begin(), it->x.end(), calls_v[i]) - it->x.begin();
          it->x.insert(it->x.begin() + at, calls_v[i]);
          it->y.insert(it->y.begin() + at, std::max((*yv)[i], 0.01));
        }
      }
    }
    dp.curves.push_back({"floor mean", {1.0, 4000.0}, {m0, m0}, "lines lw 2 dt 2 lc rgb 'black'"});
    zp.curves.push_back({"|z| limit", {1.0, 4000.0}, {z_crit, z_crit}, "lines lw 2 dt 2 lc rgb 'black'"});
    ex::plot::save(grid, out_dir + "/samplers_2d_" + d.file + ".png");
  }
  ex::plot::save(dist_fig, out_dir + "/samplers_2d_distance.png");
  std::printf("\n%s\n", failures == 0 ? "All checks passed." : "Some checks FAILED.");
  return failures == 0 ? 0 : 1;
}
