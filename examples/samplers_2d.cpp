// Eight samplers on two 2-D data sets with the exact denoiser, against an exact sample.
//
// Data (diffusion::gaussian_mixture_data, which is the exact denoiser E[ε | x_t] the samplers call):
//   "8 Gaussians": 8 equal components on the unit circle, standard deviation 0.05;
//   "ring": 64 equal components on the unit circle, standard deviation 0.035 (a thin ring: the
//   components are 2.8 standard deviations apart).
// Samplers: DDPM ancestral (Ho et al. 2020, Algorithm 2; linear β, T = 1000, σ_t² = β̃_t), DDIM
// η = 0 (Song et al. 2021) with 10 and 50 steps, annealed Langevin (Song & Ermon 2019,
// Algorithm 1), VE predictor–corrector (Song et al. 2021, Algorithms 2 and 4), and the Karras
// et al. 2022 σ-space Euler, Heun (Algorithm 2) and DPM-Solver++(2M) (Lu et al. 2022).
//
// Distance: sliced Wasserstein-2 against an exact sample of the same size drawn from the
// mixture: P random directions θ (uniform angles, fixed seed), the 1-D W2² of the projected,
// sorted samples (mean squared difference of order statistics), averaged over directions, and
// the square root. The noise floor is the same statistic between two independent exact samples,
// repeated R times (mean m₀, standard deviation s₀). If a sampler drew exactly from the mixture,
// its distance would have the floor's distribution; it passes when the distance is ≤ m₀ + 4 s₀
// (one-sided, 4 standard deviations of the null distribution). Exit status 1 on failure. The
// check applies at each sampler's default steps; DDIM with 10 steps is a contrast row below
// DDIM's default 50 and is reported, not checked. What the check can see shrinks with the sample
// size: the program prints the smallest sliced-W2 error it detects, about sqrt(tol² − m₀²).
//
// Rows are split over --threads threads; each row's noise is the stream of its row index, so the
// split does not change the samples (except the predictor–corrector's batch-mean step size).
//
// A second column, not checked, is the RMS distance to the nearest component mean: it shows the
// spread inside components, which the sliced W2 at these sizes barely sees (DDIM with 50 uniform
// steps visibly contracts the components; its SW2 stays within the floor's spread).
//
// Output: samplers_2d_<data>.png (a 3×3 grid of scatter plots at the default steps with a few
// trajectories), samplers_2d_distance.png (distance against denoiser calls), and the tables.
//
//   samplers_2d [--samples N] [--directions P] [--floor-reps R] [--sweep 0|1] [--out-dir DIR] [--help]
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
  double stddev;
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
  return {std::move(name), std::move(file), means, stddev, std::move(model)};
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
  bool checked;              // DDIM 10 is a contrast row below DDIM's default 50 steps: shown, not checked
  std::size_t default_steps;
  std::vector<std::size_t> sweep;  // step counts for the distance-vs-calls table
  run_fn run;
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
  out.push_back({"DDPM", "DDPM", true, 1000, {100, 250}, [=, &train](auto& m, auto x, std::size_t rows, std::size_t steps, std::uint64_t first, recorder* rec) {
                   philox_normal nz = noise;
                   ddpm_options o;
                   o.first_sample = first;
                   if (steps != T) o.timesteps = inference_timesteps(T, steps, timestep_spacing::linspace);
                   return ddpm_sample(train, m, x, rows, nz, o, vp_hooks(rec)).model_calls;
                 }});
  auto ddim = [=, &train](auto& m, auto x, std::size_t rows, std::size_t steps, std::uint64_t first, recorder* rec) {
    philox_normal nz = noise;
    ddim_options o;
    o.first_sample = first;
    return ddim_sample(train, m, x, rows, nz, inference_timesteps(T, steps, timestep_spacing::leading), o, vp_hooks(rec))
        .model_calls;
  };
  out.push_back({"DDIM 10", "DDIM", false, 10, {10, 20}, ddim});
  out.push_back({"DDIM 50", "DDIM", true, 50, {100}, ddim});
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
                 }});
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
                 }});
  auto karras = [=](karras_method method) {
    return [=](auto& m, auto x, std::size_t rows, std::size_t steps, std::uint64_t first, recorder* rec) {
      philox_normal nz = noise;
      sigma_space_model<gaussian_mixture_data> D(m);
      const std::vector<double> sig = karras_sigmas(steps, 0.002, 80.0);  // Karras et al. 2022, Table 1
      sampler_hooks<double> h;
      std::size_t k = 0;
      if (rec) {
        h.on_step = [rec, &sig, &k](const step_info<double>& info) {
          const double s = sig[++k];
          rec->record(info.x, 1.0 / std::sqrt(1.0 + s * s));
          return true;
        };
      }
      karras_options o;
      o.first_sample = first;
      return karras_sample(method, D, x, rows, nz, sig, o, h).model_calls;
    };
  };
  out.push_back({"Euler", "Euler", true, 50, {10, 25, 100}, karras(karras_method::euler)});
  out.push_back({"Heun", "Heun", true, 18, {5, 10}, karras(karras_method::heun)});
  out.push_back({"DPM-Solver++(2M)", "DPM-Solver++(2M)", true, 20, {5, 10, 50}, karras(karras_method::dpmpp_2m)});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "samplers_2d",
               "DDPM, DDIM, annealed Langevin, predictor-corrector, Euler, Heun and DPM-Solver++(2M) with the exact "
               "denoiser of two 2-D Gaussian mixtures; sliced W2 to an exact sample, checked against the noise floor.");
  const long samples = args.integer("--samples", 2000, "samples per run (and size of the exact reference sample)");
  const long directions = args.integer("--directions", 128, "random projections of the sliced W2");
  const long reps = args.integer("--floor-reps", 32, "exact-vs-exact replicates that estimate the noise floor");
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
  if (samples < 10 || directions < 1 || reps < 2 || levels < 2 || trajectories < 0 || trajectories > samples) {
    std::fprintf(stderr, "samplers_2d: need --samples >= 10, --directions >= 1, --floor-reps >= 2, --langevin-levels >= 2\n");
    return 2;
  }
  const auto n = static_cast<std::size_t>(samples);
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
  std::printf("Sliced W2: %ld random directions (uniform angles), sorted-sample 1-D W2, against an exact sample of %zu "
              "points.\nFloor: the same statistic between two fresh exact samples, %ld replicates; pass: distance <= "
              "floor mean + 4 sd.\n",
              directions, n, reps);
  std::printf("Langevin/PC levels: geometric sigma 3 ... 0.01 (Langevin: %ld levels, eps %g, final denoise; PC: snr %g, "
              "1 corrector step, batch-mean norms). Karras: sigma 80 ... 0.002, rho 7.\n",
              levels, eps, snr);

  std::vector<dataset> data;
  data.push_back(circle_mixture("8 Gaussians", "gaussians", 8, 1.0, 0.05));
  data.push_back(circle_mixture("ring", "ring", 64, 1.0, 0.035));

  int failures = 0;
  ex::plot::figure dist_fig;
  dist_fig.columns = 2;
  dist_fig.width = 1100;
  dist_fig.height = 420;
  for (std::size_t di = 0; di < data.size(); ++di) {
    dataset& d = data[di];
    const std::vector<double> ref = exact_sample(d, n, useed + 1000 * di + 1);
    std::vector<double> floor(static_cast<std::size_t>(reps));
    for (std::size_t r = 0; r < floor.size(); ++r)
      floor[r] = sliced_w2(exact_sample(d, n, useed + 1000 * di + 2 + 2 * r), exact_sample(d, n, useed + 1000 * di + 3 + 2 * r),
                           angles);
    double m0 = 0, s0 = 0;
    for (double v : floor) m0 += v;
    m0 /= static_cast<double>(floor.size());
    for (double v : floor) s0 += (v - m0) * (v - m0);
    s0 = std::sqrt(s0 / static_cast<double>(floor.size() - 1));
    const double tol = m0 + 4.0 * s0;
    const std::vector<double> fresh = exact_sample(d, n, useed + 1000 * di + 999);
    const double fresh_d = sliced_w2(fresh, ref, angles);
    std::printf("\n%s (%zu components, std %g on the unit circle), %zu samples\n", d.name.c_str(), d.means.size(),
                d.stddev, n);
    std::printf("noise floor: fresh exact sample %.5f; over %ld replicates mean %.5f, sd %.5f; tolerance %.5f\n", fresh_d,
                reps, m0, s0, tol);
    // A sampler whose law is at sliced W2 b from the data scores about sqrt(b² + m₀²): the check
    // sees errors above sqrt(tol² − m₀²) (both shrink as 1/sqrt(samples)).
    std::printf("the check detects a sliced-W2 error above about sqrt(tol^2 - mean^2) = %.4f at this sample size\n",
                std::sqrt(tol * tol - m0 * m0));
    std::printf("spread diagnostic (not checked): RMS distance to the nearest component mean, exact sample %.4f\n",
                nearest_mean_rms(d, fresh));
    std::printf("%-22s %7s %12s %10s %9s  %s\n", "sampler", "steps", "model calls", "SW2", "spread", "check (default steps)");

    ex::plot::figure grid;
    grid.columns = 3;
    grid.width = 780;
    grid.height = 800;
    grid.font_size = 9;
    grid.palette = true;  // 2 × 9 × 2000 points: the palette PNG is ~6 times smaller
    grid.title = d.name + ": " + std::to_string(n) + " samples per panel, exact denoiser";
    const std::string range = "set size ratio -1\nset xrange [-1.6:1.6]\nset yrange [-1.6:1.6]\nset key off";
    {
      ex::plot::panel& p = grid.panels.emplace_back();
      char title[64];
      std::snprintf(title, sizeof title, "exact sample, SW2 %.3f", fresh_d);
      p.title = title;
      p.commands = range;
      std::vector<double> xs(n), ys(n);
      for (std::size_t i = 0; i < n; ++i) xs[i] = fresh[2 * i], ys[i] = fresh[2 * i + 1];
      p.curves.push_back({"", xs, ys, "points pt 7 ps 0.25 lc rgb '#1f77b4'"});
    }
    ex::plot::panel& dp = dist_fig.panels.emplace_back();
    dp.title = d.name + ": sliced W2 to an exact sample";
    dp.xlabel = "denoiser calls";
    dp.logx = dp.logy = true;
    dp.commands = "set key top right";

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
        total_calls += s.name == "annealed Langevin" ? st * levels_u + 1 : s.name == "predictor-corrector" ? 2 * st
                       : s.name == "Heun" ? 2 * st - 1 : st;
    ex::progress prog(d.name, total_calls);
    for (sampler& s : samplers) {
      const std::vector<std::size_t> steps_list = steps_of(s);
      std::vector<double> calls_v, dist_v;
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
        calls_v.push_back(static_cast<double>(calls));
        dist_v.push_back(dist);
        std::string verdict;
        if (is_default) {
          const bool ok = dist <= tol;
          if (!ok && s.checked) ++failures;
          verdict = !s.checked ? "not checked" : ok ? "pass" : "FAIL";
          char buf[64];
          std::snprintf(buf, sizeof buf, " (%+.1f sd from the floor mean)", (dist - m0) / s0);
          verdict += buf;
          ex::plot::panel& p = grid.panels.emplace_back();
          char title[96];
          std::snprintf(title, sizeof title, "%s, %zu calls, SW2 %.3f", s.family == "predictor-corrector" ? "PC" : s.name.c_str(), calls, dist);
          p.title = title;
          p.commands = range;
          std::vector<double> xs(n), ys(n);
          for (std::size_t i = 0; i < n; ++i) xs[i] = x[2 * i], ys[i] = x[2 * i + 1];
          p.curves.push_back({"", xs, ys, "points pt 7 ps 0.25 lc rgb '#1f77b4'"});
          for (std::size_t r = 0; r < rec.rows; ++r)
            p.curves.push_back({"", rec.xs[r], rec.ys[r], "lines lw 1 lc rgb '#d62728'"});
        }
        std::printf("%-22s %7zu %12zu %10.5f %9.4f  %s\n", s.family.c_str(), steps, calls, dist, nearest_mean_rms(d, x),
                    verdict.c_str());
      }
      // One curve per family (DDIM 10 and DDIM 50 share one), points in order of calls.
      auto it = std::find_if(dp.curves.begin(), dp.curves.end(), [&](const auto& c) { return c.title == s.family; });
      if (it == dp.curves.end()) it = dp.curves.insert(dp.curves.end(), {s.family, {}, {}, "linespoints lw 2 pt 7"});
      for (std::size_t i = 0; i < calls_v.size(); ++i) {
        const auto at = std::upper_bound(it->x.begin(), it->x.end(), calls_v[i]) - it->x.begin();
        it->x.insert(it->x.begin() + at, calls_v[i]);
        it->y.insert(it->y.begin() + at, dist_v[i]);
      }
    }
    dp.curves.push_back({"floor mean", {1.0, 4000.0}, {m0, m0}, "lines lw 2 dt 2 lc rgb 'black'"});
    dp.curves.push_back({"tolerance", {1.0, 4000.0}, {tol, tol}, "lines lw 1 dt 3 lc rgb 'black'"});
    ex::plot::save(grid, out_dir + "/samplers_2d_" + d.file + ".png");
  }
  ex::plot::save(dist_fig, out_dir + "/samplers_2d_distance.png");
  std::printf("\n%s\n", failures == 0 ? "All checks passed." : "Some checks FAILED.");
  return failures == 0 ? 0 : 1;
}
