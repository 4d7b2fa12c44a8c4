// Noise schedules side by side: ᾱ_t, log-SNR and β_t of the linear (DDPM §4), scaled-linear
// (Rombach et al. 2022), cosine (Nichol & Dhariwal 2021, Eq. 17) schedules and the zero-terminal-
// SNR rescale (Lin et al. 2023, Algorithm 1) of the first two, against t/T: the shape of
// improved DDPM's Fig. 5. A second figure shows how much L_simple reweights the true bound:
// the Eq. 12 weight of DDPM, β_t² / (2σ_t² α_t (1 − ᾱ_t)), relative to L_simple's weight 1, with
// σ_t² = β_t and σ_t² = β̃_t, for the linear and cosine schedules. A third figure draws the
// rectified-flow σ lists of SD3 (shift 3, Esser et al. 2024 Eq. 23) and Flux (time shift with
// μ = flux_mu(4096) = 1.15, a 1024² image), 28 steps each, beside the VP schedules on one axis, the
// log-SNR: log(α²/σ²) = 2 log((1 − σ)/σ) for a flow level x = (1 − σ) x0 + σ ε, log(ᾱ/(1 − ᾱ)) for VP.
//
// Prints sample rows and the terminal √ᾱ_T and SNR_T of each schedule, and checks them
// against Lin et al. 2023, Table 1 (T = 1000); prints the flow σ lists and checks that both
// shifts are a constant offset of the log-SNR: −2 log s for SD3's shift s, −2μ for Flux's.
// Exit status 1 when a check fails.
//
//   schedules [--steps T] [--out-dir DIR] [--width PX] [--help]
#include <diffusion/ddpm.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
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
               "(improved DDPM Fig. 5), the L_simple / Eq. 12 weight ratio, and the SD3 and Flux flow sigma lists "
               "beside the VP schedules in log-SNR; checks Lin et al. 2023 Table 1 and the flow shifts' log-SNR offsets.");
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

  // ---- Figure 3: rectified-flow σ lists (SD3, Flux) beside the VP schedules, in log-SNR ----
  // A flow level x = (1 − σ) x0 + σ ε has log-SNR 2 log((1 − σ)/σ) (noise_level::flow(σ).log_snr()); a VP
  // step log(ᾱ/(1 − ᾱ)). SD3 and Flux train with t = 1000 σ, so their t/T is σ itself.
  const std::size_t flow_steps = 28;
  const double flux_mu_1024 = flux_mu(4096.0);  // a 1024² image: 64² latent patches, μ = 1.15
  struct flow_list {
    std::string name;
    std::vector<double> sigmas;  // 28 σ then the final 0
    std::string colour, marker;  // gnuplot: line colour; point type and size
  };
  const std::vector<flow_list> flows = {
      {"flow, no shift", flow_sigmas(flow_steps).sigmas, "black", "pt 6 ps 0.7"},
      {"SD3, shift 3", flow_sigmas(flow_steps, {.shift = 3.0}).sigmas, "#e6550d", "pt 4 ps 1.1"},
      {"Flux, mu = 1.15", flow_sigmas(flow_steps, {.dynamic = true, .mu = flux_mu_1024}).sigmas, "#3182bd", "pt 7 ps 0.5"},
  };
  auto flow_log_snr = [](double sigma) { return noise_level::flow(sigma).log_snr(); };
  ex::plot::figure fl;
  fl.columns = 2;
  fl.width = f.width;
  fl.height = f.width * 2 / 5;
  fl.title = "Rectified flow (SD3, Flux; 28 steps) beside VP schedules: log-SNR = 2 log((1 - sigma)/sigma) for flow, "
             "log(alpha-bar/(1 - alpha-bar)) for VP";
  fl.panels.resize(2);
  ex::plot::panel& ft = fl.panels[0];
  ft.title = "log-SNR against t/T (flow: t/T = sigma); points: the 28 sampling sigmas";
  ft.xlabel = "t/T";
  ft.ylabel = "log-SNR";
  ft.commands = "set key bottom left\nset yrange [-16:16]";
  for (std::size_t k : {std::size_t{0}, std::size_t{1}, std::size_t{2}})
    ft.curves.push_back({all[k].name + " (VP)", x, all[k].s.column(&schedule_step::log_snr)});
  {
    std::vector<double> ls(T);
    for (std::size_t i = 0; i < T; ++i) ls[i] = flow_log_snr(x[i]);
    ft.curves.push_back({"rectified flow, sigma = t/T", x, ls, "lines lw 2 dt 2 lc rgb 'black'"});
  }
  ex::plot::panel& fs = fl.panels[1];
  fs.title = "log-SNR at each of 28 sampling steps (VP: trailing timesteps)";
  fs.xlabel = "step i / 28 (0: the first, noisiest step)";
  fs.ylabel = "log-SNR";
  fs.commands = "set key top left\nset yrange [-16:16]";
  const std::size_t vp_steps = std::min(flow_steps, T);
  std::vector<double> step_x(flow_steps);
  for (std::size_t i = 0; i < flow_steps; ++i) step_x[i] = static_cast<double>(i) / static_cast<double>(flow_steps);
  const timestep_sequence vp_ts = inference_timesteps(T, vp_steps, timestep_spacing::trailing);
  for (std::size_t k : {std::size_t{0}, std::size_t{1}, std::size_t{2}}) {
    std::vector<double> ys(vp_steps);
    for (std::size_t i = 0; i < vp_steps; ++i) ys[i] = all[k].s[vp_ts[i]].log_snr;
    fs.curves.push_back({all[k].name + " (VP)", std::vector<double>(step_x.begin(), step_x.begin() + static_cast<std::ptrdiff_t>(vp_steps)),
                         ys, "linespoints lw 1 pt 7 ps 0.5"});
  }
  for (const flow_list& fw : flows) {
    std::vector<double> sx, ys;
    for (std::size_t i = 0; i < flow_steps; ++i) {  // σ_0 = 1 has log-SNR −∞: not drawn
      ys.push_back(flow_log_snr(fw.sigmas[i]));
      sx.push_back(fw.sigmas[i]);
    }
    fs.curves.push_back({fw.name + " (flow)", step_x, ys, "linespoints lw 1.5 dt 2 " + fw.marker + " lc rgb '" + fw.colour + "'"});
    if (fw.name != flows[0].name) ft.curves.push_back({fw.name + " (flow)", sx, ys, "points " + fw.marker + " lc rgb '" + fw.colour + "'"});
  }
  ex::plot::save(fl, out_dir + "/flow_schedules.png");

  // ---- Table of sample rows ----
  std::printf("\nSample rows (t is the paper's 1-based step; weights are the Eq. 12 weight relative to L_simple's 1)\n");
  std::printf("%-24s %5s %12s %12s %10s %12s %12s\n", "schedule", "t", "beta_t", "alpha-bar_t", "log-SNR", "w(beta)",
              "w(beta~)");
  std::vector<std::size_t> rows;
  for (double f01 : {0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0}) {
    // 1-based t ≥ 1 (at T < 10 the 10 % row would round to t = 0).
    const auto t = f01 == 0.0 ? std::size_t{2}
                              : std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(f01 * static_cast<double>(T))));
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

  // ---- Rectified-flow σ lists, and the log-SNR offsets of the shifts ----
  // sd3_shift: (1 − σ')/σ' = (1 − σ)/(s σ), so log-SNR' = log-SNR − 2 log s at every σ ∈ (0, 1);
  // the exponential time shift: (1 − σ')/σ' = e^−μ (1 − σ)/σ, log-SNR' = log-SNR − 2μ. Checked on the
  // 27 steps strictly inside (0, 1) to 1e-12 (the rounding of σ' and of 1 − σ' near σ' = 1: < 1e-13).
  std::printf("\nRectified-flow sigma lists, %zu steps (flow_sigmas; Flux mu = flux_mu(4096) = %.4f); log-SNR = 2 log((1 - sigma)/sigma)\n",
              flow_steps, flux_mu_1024);
  std::printf("%5s %12s %10s %12s %10s %12s %10s %16s\n", "step", "sigma", "log-SNR", "SD3 sigma", "log-SNR", "Flux sigma",
              "log-SNR", "scaled_linear VP");
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{14}, std::size_t{21}, std::size_t{26},
                        std::size_t{27}}) {
    const double vp = i < vp_steps ? all[1].s[vp_ts[i]].log_snr : std::numeric_limits<double>::quiet_NaN();
    std::printf("%5zu %12.6g %10.4f %12.6g %10.4f %12.6g %10.4f %16.4f\n", i, flows[0].sigmas[i], flow_log_snr(flows[0].sigmas[i]),
                flows[1].sigmas[i], flow_log_snr(flows[1].sigmas[i]), flows[2].sigmas[i], flow_log_snr(flows[2].sigmas[i]), vp);
  }
  for (std::size_t k : {std::size_t{1}, std::size_t{2}}) {
    const double offset = k == 1 ? -2.0 * std::log(3.0) : -2.0 * flux_mu_1024;
    double worst = 0.0;
    for (std::size_t i = 1; i < flow_steps; ++i)
      worst = std::max(worst, std::abs(flow_log_snr(flows[k].sigmas[i]) - flow_log_snr(flows[0].sigmas[i]) - offset));
    const bool ok = worst <= 1e-12;
    if (!ok) ++failures;
    std::printf("%-16s log-SNR - unshifted log-SNR = %+.6f (%s) at every step; largest deviation %.2g: %s\n",
                flows[k].name.c_str(), offset, k == 1 ? "-2 log 3" : "-2 mu", worst, ok ? "pass" : "FAIL");
  }
  std::printf("\n%s\n", failures == 0 ? "All checks passed." : "Some checks FAILED.");
  return failures == 0 ? 0 : 1;
}
