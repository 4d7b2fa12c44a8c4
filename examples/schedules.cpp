// Noise schedules side by side: ᾱ_t, log-SNR and β_t of the linear (DDPM §4), scaled-linear
// (Rombach et al. 2022), cosine (Nichol & Dhariwal 2021, Eq. 17) schedules and the zero-terminal-
// SNR rescale (Lin et al. 2023, Algorithm 1) of the first two, against t/T: the shape of
// improved DDPM's Fig. 5. A second figure shows how much L_simple reweights the true bound:
// the Eq. 12 weight of DDPM, β_t² / (2σ_t² α_t (1 − ᾱ_t)), relative to L_simple's weight 1, with
// σ_t² = β_t and σ_t² = β̃_t, for the linear and cosine schedules.
//
// Prints sample rows and the terminal √ᾱ_T and SNR_T of each schedule, and checks them
// against Lin et al. 2023, Table 1 (T = 1000). Exit status 1 when a check fails.
//
//   schedules [--steps T] [--out-dir DIR] [--width PX] [--help]
#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/plot.hpp"

namespace {

struct named_schedule {
  std::string name;
  diffusion::noise_schedule s;
};

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "schedules",
               "Plots alpha-bar, log-SNR and beta of linear, scaled_linear, cosine and zero-terminal-SNR schedules "
               "(improved DDPM Fig. 5) and the L_simple / Eq. 12 weight ratio; checks Lin et al. 2023 Table 1.");
  const long steps = args.integer("--steps", 1000, "number of diffusion steps T (Table 1 is checked at T = 1000)");
  const std::string out_dir = args.text("--out-dir", ".", "directory for the PNG, .dat and .gp files");
  const long width = args.integer("--width", 1200, "width of the schedule figure in pixels");
  args.finish();
  if (steps < 2) {
    std::fprintf(stderr, "schedules: --steps %ld must be >= 2\n", steps);
    return 2;
  }
  using namespace diffusion;
  const auto T = static_cast<std::size_t>(steps);

  const std::vector<double> lin = linear_betas(T, 1e-4, 0.02);           // DDPM §4
  const std::vector<double> sl = scaled_linear_betas(T, 0.00085, 0.012);  // Stable Diffusion
  std::vector<named_schedule> all;
  all.push_back({"linear", noise_schedule(lin)});
  all.push_back({"scaled_linear", noise_schedule(sl)});
  all.push_back({"cosine", noise_schedule(cosine_betas(T))});  // s = 0.008, max_beta = 0.999
  all.push_back({"linear, zero SNR", noise_schedule(rescale_zero_terminal_snr(lin))});
  all.push_back({"scaled_linear, zero SNR", noise_schedule(rescale_zero_terminal_snr(sl))});

  std::vector<double> x(T);
  for (std::size_t i = 0; i < T; ++i) x[i] = static_cast<double>(i + 1) / static_cast<double>(T);

  // ---- Figure 1: alpha-bar, log-SNR, beta against t/T ----
  ex::plot::figure f;
  f.columns = 3;
  f.width = static_cast<int>(width);
  f.height = f.width * 3 / 10;
  f.title = "Noise schedules, T = " + std::to_string(T);
  f.panels.resize(3);  // take references only after the vector stops growing
  ex::plot::panel& pa = f.panels[0];
  pa.title = "alpha-bar_t (improved DDPM Fig. 5)";
  pa.xlabel = "t/T";
  pa.commands = "set key top right";
  ex::plot::panel& pl = f.panels[1];
  pl.title = "log-SNR_t = log(alpha-bar/(1 - alpha-bar))";
  pl.xlabel = "t/T";
  pl.commands = "set key bottom left";
  ex::plot::panel& pb = f.panels[2];
  pb.title = "beta_t";
  pb.xlabel = "t/T";
  pb.logy = true;
  pb.commands = "set key top left\nset format y '%.0e'";
  for (const auto& [name, s] : all) {
    pa.curves.push_back({name, x, s.column(&schedule_step::alpha_bar)});
    pl.curves.push_back({name, x, s.column(&schedule_step::log_snr)});
    pb.curves.push_back({name, x, s.column(&schedule_step::beta)});
  }
  ex::plot::save(f, out_dir + "/schedules.png");

  // ---- Figure 2: the Eq. 12 weight relative to L_simple's 1 ----
  // vlb_weight uses the sampler's log-variances: fixed_large is log β_t, fixed_small the
  // clipped log β̃_t (β̃_1 = 0 is replaced by β̃_2; t = 1 is the decoder term L_0 anyway, so
  // the curves start at t = 2).
  ex::plot::figure w;
  w.width = f.width * 2 / 3;
  w.height = f.width * 2 / 5;
  ex::plot::panel& pw = w.panels.emplace_back();
  pw.title = "Weight of the true bound relative to L_simple: beta^2 / (2 sigma^2 alpha (1 - alpha-bar)), T = " +
             std::to_string(T);
  pw.xlabel = "t/T (log scale)";
  pw.ylabel = "Eq. 12 weight / L_simple weight";
  pw.logx = true;
  pw.logy = true;
  pw.commands = "set key top center\nset format y '%.0e'\nset format x '%g'";
  for (std::size_t which : {std::size_t{0}, std::size_t{2}}) {
    const noise_schedule& s = all[which].s;
    for (variance_type v : {variance_type::fixed_large, variance_type::fixed_small}) {
      std::vector<double> xs, ys;
      for (std::size_t i = 1; i < T; ++i) {
        xs.push_back(x[i]);
        ys.push_back(vlb_weight(s, i, v));
      }
      const bool large = v == variance_type::fixed_large;
      pw.curves.push_back({all[which].name + (large ? ", sigma^2 = beta" : ", sigma^2 = beta-tilde"), xs, ys,
                           large ? "lines lw 2" : "lines lw 2 dt 2"});
    }
  }
  ex::plot::save(w, out_dir + "/vlb_weights.png");

  // ---- Table of sample rows ----
  std::printf("\nSample rows (t is the paper's 1-based step; weights are the Eq. 12 weight relative to L_simple's 1)\n");
  std::printf("%-24s %5s %12s %12s %10s %12s %12s\n", "schedule", "t", "beta_t", "alpha-bar_t", "log-SNR", "w(beta)",
              "w(beta~)");
  std::vector<std::size_t> rows;
  for (double f01 : {0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0}) {
    const auto t = f01 == 0.0 ? std::size_t{2} : static_cast<std::size_t>(std::lround(f01 * static_cast<double>(T)));
    if (rows.empty() || rows.back() != t) rows.push_back(t);
  }
  for (const auto& [name, s] : all) {
    for (std::size_t t : rows) {
      const schedule_step& st = s[t - 1];
      std::printf("%-24s %5zu %12.6g %12.6g %10.4f %12.4g %12.4g\n", name.c_str(), t, st.beta, st.alpha_bar,
                  st.log_snr, vlb_weight(s, t - 1, variance_type::fixed_large),
                  vlb_weight(s, t - 1, variance_type::fixed_small));
    }
  }

  // ---- Terminal SNR, checked against Lin et al. 2023 Table 1 ----
  // The paper prints √ᾱ_T and SNR_T rounded to the digits below; a value passes when it
  // rounds to the printed one (|ours − paper| ≤ half a unit of the last printed digit).
  struct reference {
    const char* name;
    double sqrt_ab, sqrt_ab_half_unit, snr, snr_half_unit;
  };
  const reference lin_ref{"linear", 0.0064, 0.00005, 4.04e-5, 0.005e-5};
  const reference sl_ref{"scaled_linear", 0.068265, 0.0000005, 0.004682, 0.0000005};
  int failures = 0;
  std::printf("\nTerminal signal (t = T = %zu)\n", T);
  std::printf("%-24s %14s %14s   %s\n", "schedule", "sqrt(ab_T)", "SNR_T", "Lin et al. 2023, Table 1");
  for (std::size_t k = 0; k < all.size(); ++k) {
    const schedule_step& st = all[k].s[T - 1];
    std::printf("%-24s %14.6g %14.6g   ", all[k].name.c_str(), st.sqrt_alpha_bar, st.snr);
    const reference* ref = k == 0 ? &lin_ref : k == 1 ? &sl_ref : nullptr;
    if (k >= 3) {
      const bool ok = st.alpha_bar == 0.0 && st.snr == 0.0;
      if (!ok) ++failures;
      std::printf("0 and 0 (zero terminal SNR by construction): %s\n", ok ? "pass" : "FAIL");
    } else if (ref && T == 1000) {
      const bool ok = std::abs(st.sqrt_alpha_bar - ref->sqrt_ab) <= ref->sqrt_ab_half_unit &&
                      std::abs(st.snr - ref->snr) <= ref->snr_half_unit;
      if (!ok) ++failures;
      std::printf("%g and %g: %s\n", ref->sqrt_ab, ref->snr, ok ? "pass" : "FAIL");
    } else if (ref) {
      std::printf("(Table 1 is for T = 1000; not checked)\n");
    } else {
      std::printf("(not in Table 1)\n");
    }
  }
  std::printf("\n%s\n", failures == 0 ? "All checks passed." : "Some checks FAILED.");
  return failures == 0 ? 0 : 1;
}
