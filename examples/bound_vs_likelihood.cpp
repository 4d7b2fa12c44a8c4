// The variational bound against the exact likelihood, on Gaussian data where both have closed
// forms: x₀ ~ N(μ, diag(s²)) in two dimensions, the optimal reverse mean E[x_{t−1} | x_t], and
// four reverse variances: the true one Var[x_{t−1} | x_t] (DDPM §3.2); σ_t² = β̃_t and σ_t² = β_t
// as the library's fixed_small / fixed_large (DDPM's and improved DDPM's convention: the decoder
// uses β̃₂ in both); and σ_t² = β_t at every step including the decoder (σ₁² = β₁).
//
// For each T the schedule is the same continuous-time process (the VP SDE's linear β(τ) of Song
// et al. 2021, ᾱ(τ) = exp(−β_min τ − (β_max − β_min) τ²/2)) cut into T steps, so ᾱ_T does not
// change with T and only the discretization does. Printed per T, in nats summed over dimensions:
//   L_T, Σ L_{t−1}, L_0 and their sum, the bound (DDPM Eq. 5), from diffusion::gaussian_data;
//   the exact NLL E_q[−log p_θ(x₀)] of the same model (its reverse chain is linear-Gaussian, so
//   p_θ(x₀) is a Gaussian whose mean and variance this program propagates step by step);
//   the data entropy H = E_q[−log q(x₀)], the least NLL of any model.
// The decoder L_0 is the continuous Gaussian N(x₀; E[x₀|x₁], σ₁²) (analytic.hpp has the
// continuous one only), so every number is a differential entropy or cross entropy, not bits
// of 8-bit data.
//
// Checks (exit status 1 on failure): VLB ≥ NLL ≥ H for every T and variance; with the true
// variance the bound is H + KL(q(x_T) ‖ N(0, I)) (gaussian_data::prior_mismatch) for every T;
// with σ_t² = β_t (decoder β₁) the gap VLB − NLL decreases strictly from T = 20 on
// (--monotone-from) and its log-log slope between the last two T (≥ 500) is −1 ± 0.25. The
// gaps of fixed_small and fixed_large level off instead; they are printed, not checked.
//
//   bound_vs_likelihood [--steps 10,20,...] [--beta-min B] [--beta-max B] [--out-dir DIR] [--help]
#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/plot.hpp"

namespace {

using namespace diffusion;

// β_i = 1 − ᾱ(τ_{i+1})/ᾱ(τ_i) = −expm1(−ΔF) with F(τ) = β_min τ + (β_max − β_min) τ²/2 and
// ΔF = Δτ (β_min + (β_max − β_min)(τ_i + τ_{i+1})/2): exact, no cancellation.
std::vector<double> vp_betas(std::size_t T, double beta_min, double beta_max) {
  std::vector<double> b(T);
  const double dt = 1.0 / static_cast<double>(T);
  for (std::size_t i = 0; i < T; ++i) {
    const double t0 = static_cast<double>(i) * dt, t1 = static_cast<double>(i + 1) * dt;
    const double dF = dt * (beta_min + (beta_max - beta_min) * 0.5 * (t0 + t1));
    b[i] = -std::expm1(-dF);
  }
  return b;
}

enum class reverse_variance { exact, beta_tilde, beta, beta_all };
const char* label(reverse_variance v) {
  switch (v) {
    case reverse_variance::exact: return "true Var[x_{t-1}|x_t]";
    case reverse_variance::beta_tilde: return "sigma^2 = beta-tilde";
    case reverse_variance::beta: return "sigma^2 = beta";
    case reverse_variance::beta_all: return "sigma^2 = beta, decoder beta_1";
  }
  return "";
}

// log σ² of the reverse step at 0-based t (t = 0: the decoder) in dimension k.
double log_variance(const gaussian_data& data, const noise_schedule& s, std::size_t t, std::size_t k,
                    reverse_variance v) {
  switch (v) {
    case reverse_variance::exact: return std::log(data.true_reverse_variance(s, t, k));
    case reverse_variance::beta_tilde: return fixed_log_variance(s, t, variance_type::fixed_small);
    case reverse_variance::beta: return fixed_log_variance(s, t, variance_type::fixed_large);
    case reverse_variance::beta_all: return std::log(s[t].beta);
  }
  return 0.0;
}

struct result {
  double prior = 0, kl_sum = 0, decoder = 0, vlb = 0, nll = 0, entropy = 0, prior_mismatch = 0;
  double abs_sum = 0;  // Σ |terms|, for the rounding-error bound
};

result evaluate(const gaussian_data& data, const noise_schedule& s, reverse_variance v) {
  result r;
  const std::size_t T = s.size();
  for (std::size_t k = 0; k < data.dim(); ++k) {
    // The bound, term by term (DDPM Eq. 5), from the library's closed forms.
    const double lt = data.expected_prior_term(s, k);
    double kl = 0.0;
    for (std::size_t t = 1; t < T; ++t) {
      const double term = data.expected_kl_term(s, t, k, log_variance(data, s, t, k, v));
      kl += term;
      r.abs_sum += std::abs(term);
    }
    const double l0 = data.expected_decoder_nll(s, k, log_variance(data, s, 0, k, v));
    r.prior += lt;
    r.kl_sum += kl;
    r.decoder += l0;
    r.abs_sum += std::abs(lt) + std::abs(l0);

    // The model's marginal p_θ(x₀) = N(m, var), propagated from x_T ~ N(0, 1). Each reverse step
    // is x_{t−1} = c0 x̂₀(x_t) + ct x_t + σ z with x̂₀ = μ + g (x_t − c μ), g = c s²/(c² s² + 1 − ᾱ),
    // i.e. x_{t−1} = A x_t + B + σ z; the decoder is x₀ = x̂₀(x₁) + σ₁ z.
    const double mu = data.mean()[k], sd = data.stddev()[k], s2 = sd * sd;
    double m = 0.0, var = 1.0;
    for (std::size_t j = T; j-- > 0;) {
      const schedule_step& st = s[j];
      const double c = st.sqrt_alpha_bar;
      const double g = c * s2 / (st.alpha_bar * s2 + st.one_minus_alpha_bar);
      const double c0 = j == 0 ? 1.0 : st.posterior_mean_coef_x0, ct = j == 0 ? 0.0 : st.posterior_mean_coef_xt;
      const double A = c0 * g + ct, B = c0 * mu * (1.0 - g * c);
      m = A * m + B;
      var = A * A * var + std::exp(log_variance(data, s, j, k, v));
    }
    // Cross entropy E_{x₀~N(μ,s²)}[−log N(x₀; m, var)].
    r.nll += 0.5 * (std::log(2.0 * std::numbers::pi * var) + (s2 + (mu - m) * (mu - m)) / var);
    r.entropy += data.nll(k);
    r.prior_mismatch += data.prior_mismatch(s, k);
  }
  r.vlb = r.prior + r.kl_sum + r.decoder;
  return r;
}

std::vector<std::size_t> parse_list(const std::string& text) {
  std::vector<std::size_t> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 2) {
      std::fprintf(stderr, "bound_vs_likelihood: --steps wants a comma-separated list of integers >= 2, got '%s'\n",
                   text.c_str());
      std::exit(2);
    }
    out.push_back(static_cast<std::size_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  for (std::size_t i = 1; i < out.size(); ++i)
    if (out[i] <= out[i - 1]) {
      std::fprintf(stderr, "bound_vs_likelihood: --steps must be increasing\n");
      std::exit(2);
    }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "bound_vs_likelihood",
               "Exact NLL next to the variational bound (DDPM Eq. 5) on Gaussian data for several T, with the true "
               "reverse variance, beta-tilde and beta; checks VLB >= NLL and that the gap shrinks with T.");
  const std::string steps_text =
      args.text("--steps", "10,20,50,100,200,500,1000,2000,4000", "numbers of steps T, increasing, comma-separated");
  const double beta_min = args.real("--beta-min", 0.1, "beta_min of the VP SDE's linear beta(tau) (Song et al. 2021)");
  const double beta_max = args.real("--beta-max", 20.0, "beta_max of the VP SDE's linear beta(tau)");
  const long monotone_from = args.integer(
      "--monotone-from", 20, "check that the gap of sigma^2 = beta (decoder beta_1) decreases for T >= this");
  const std::string out_dir = args.text("--out-dir", ".", "directory for the PNG, .dat and .gp files");
  args.finish();
  const std::vector<std::size_t> Ts = parse_list(steps_text);
  if (!(beta_min > 0.0 && beta_max >= beta_min)) {
    std::fprintf(stderr, "bound_vs_likelihood: need 0 < --beta-min <= --beta-max\n");
    return 2;
  }

  // Two dimensions: a broad one and a narrow one (the narrow one is where fixed variances are
  // furthest from the true reverse variance).
  const gaussian_data data({0.3, -0.5}, {0.5, 0.05});
  std::printf("Data: x0 ~ N(mu, diag(s^2)), mu = (0.3, -0.5), s = (0.5, 0.05); numbers are nats summed over the 2 "
              "dimensions.\n");
  std::printf("Schedule: VP SDE linear beta(tau), beta_min = %g, beta_max = %g, cut into T steps (alpha-bar_T = %.4g "
              "for every T).\n",
              beta_min, beta_max, std::exp(-0.5 * (beta_min + beta_max)));
  std::printf("Reverse mean: the optimal E[x_{t-1}|x_t]. Decoder L_0: continuous Gaussian N(x0; E[x0|x1], sigma_1^2).\n");
  std::printf("NLL: exact E_q[-log p(x0)] of the model (linear-Gaussian chain). H: data entropy %.9f.\n",
              evaluate(data, noise_schedule(vp_betas(2, beta_min, beta_max)), reverse_variance::exact).entropy);

  constexpr double u = std::numeric_limits<double>::epsilon() / 2;
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) {
      ++failures;
      std::printf("  FAIL: %s\n", what.c_str());
    }
  };

  ex::plot::figure fig;
  fig.columns = 2;
  fig.width = 1100;
  fig.height = 420;
  fig.panels.resize(2);
  ex::plot::panel& pg = fig.panels[0];
  pg.title = "Gap VLB - NLL (nats)";
  pg.xlabel = "T";
  pg.logx = pg.logy = true;
  pg.commands = "set key right center\nset format y '%.0e'";
  ex::plot::panel& pe = fig.panels[1];
  pe.title = "Excess over the data entropy H (nats)";
  pe.xlabel = "T";
  pe.logx = pe.logy = true;
  pe.commands = "set key at graph 0.98, graph 0.44 right top\nset yrange [1e-11:10]\nset format y '%.0e'";

  for (reverse_variance v : {reverse_variance::exact, reverse_variance::beta_tilde, reverse_variance::beta,
                             reverse_variance::beta_all}) {
    std::printf("\nReverse variance: %s\n", label(v));
    std::printf("%6s %12s %12s %12s %12s %12s %12s %12s\n", "T", "L_T", "sum L_{t-1}", "L_0", "VLB", "NLL",
                "VLB - NLL", "NLL - H");
    std::vector<double> xs, gaps, vlb_excess, nll_excess;
    for (std::size_t T : Ts) {
      const noise_schedule s(vp_betas(T, beta_min, beta_max));
      const result r = evaluate(data, s, v);
      const double gap = r.vlb - r.nll;
      std::printf("%6zu %12.6g %12.6g %12.6g %12.8f %12.8f %12.4e %12.4e\n", T, r.prior, r.kl_sum, r.decoder, r.vlb,
                  r.nll, gap, r.nll - r.entropy);
      // Rounding bound of the sums: each term has a relative error of a few u, and summing
      // T + 1 of them adds (T + 1) u Σ|terms|; 16 covers the constants generously.
      const double tol = 16.0 * u * static_cast<double>(T + 8) * (r.abs_sum + std::abs(r.entropy) + 1.0);
      check(r.vlb >= r.nll - tol, "VLB >= NLL at T = " + std::to_string(T));
      check(r.nll >= r.entropy - tol, "NLL >= H at T = " + std::to_string(T));
      if (v == reverse_variance::exact)
        check(std::abs(r.vlb - (r.entropy + r.prior_mismatch)) <= tol,
              "VLB = H + KL(q(x_T) || N(0, I)) at T = " + std::to_string(T));
      if (v == reverse_variance::beta_all && !gaps.empty() && xs.back() >= static_cast<double>(monotone_from))
        check(gap < gaps.back(), "gap decreases from T = " + std::to_string(static_cast<std::size_t>(xs.back())) +
                                     " to T = " + std::to_string(T));
      xs.push_back(static_cast<double>(T));
      gaps.push_back(gap);
      vlb_excess.push_back(r.vlb - r.entropy);
      nll_excess.push_back(r.nll - r.entropy);
      if (v == reverse_variance::exact && T == Ts.back())
        std::printf("  KL(q(x_T) || N(0, I)) = %.6e (gaussian_data::prior_mismatch); VLB - H - that = %.3e\n",
                    r.prior_mismatch, r.vlb - r.entropy - r.prior_mismatch);
    }
    if (xs.size() >= 2) {
      // The measured trend: the log-log slope between the last two T, and over the whole range.
      const std::size_t n = xs.size();
      const double last = std::log(gaps[n - 1] / gaps[n - 2]) / std::log(xs[n - 1] / xs[n - 2]);
      const double whole = std::log(gaps[n - 1] / gaps[0]) / std::log(xs[n - 1] / xs[0]);
      std::printf("  trend: gap ~ T^%.3f between T = %.0f and %.0f (T^%.3f over T = %.0f..%.0f)\n", last, xs[n - 2],
                  xs[n - 1], whole, xs[0], xs[n - 1]);
      // σ_t² = β_t differs from the true reverse variance by O(β_t²), so each KL term is O(β_t²) =
      // O(1/T²) and their sum O(1/T): the slope should approach −1 (±0.25 leaves room for the
      // O(1/T²) next order at T ≥ 500).
      if (v == reverse_variance::beta_all && xs[n - 2] >= 500.0)
        check(last > -1.25 && last < -0.75, "gap ~ T^-1 asymptotically (measured slope " + std::to_string(last) + ")");
    }
    const std::string name = label(v);
    const char* colors[] = {"#6a3d9a", "#1f78b4", "#33a02c", "#e31a1c"};
    const std::string color = std::string(" lc rgb '") + colors[static_cast<int>(v)] + "'";
    pg.curves.push_back({name, xs, gaps, "linespoints lw 2 pt 7" + color});
    pe.curves.push_back({"VLB - H, " + name, xs, vlb_excess, "linespoints lw 2 pt 7" + color});
    pe.curves.push_back({"NLL - H, " + name, xs, nll_excess, "linespoints lw 2 dt 2 pt 6" + color});
  }
  ex::plot::save(fig, out_dir + "/bound_vs_likelihood.png");

  std::printf("\n%s\n", failures == 0 ? "All checks passed." : "Some checks FAILED.");
  return failures == 0 ? 0 : 1;
}
