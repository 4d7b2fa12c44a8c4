// Reproduces the equations of Ho et al. 2020 (DDPM) that the library implements, each
// beside an independent check (a closed form computed another way, or Monte Carlo with its
// standard error), and the published schedule numbers. Exits non-zero if any check fails.
//
//   ddpm_equations [--samples N] [--seed S] [--help]
#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numbers>
#include <span>
#include <string>
#include <vector>

namespace {

// SplitMix64 + Box–Muller: a small seeded normal source for the Monte Carlo checks.
class normal_source {
 public:
  explicit normal_source(std::uint64_t seed) : s_(seed) {}
  double normal() {
    if (have_) {
      have_ = false;
      return cached_;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform())), th = 2.0 * std::numbers::pi * uniform();
    cached_ = r * std::sin(th);
    have_ = true;
    return r * std::cos(th);
  }

 private:
  double uniform() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (static_cast<double>(z >> 11) + 0.5) * 0x1.0p-53;
  }
  std::uint64_t s_;
  double cached_ = 0.0;
  bool have_ = false;
};

int failures = 0;

// One row of the table: what is checked, the library's value, the independent value,
// and the allowed difference (with where it comes from).
void row(const char* eq, const std::string& what, double lib, double check, double tol, const char* how) {
  const double diff = std::abs(lib - check);
  const bool ok = diff <= tol;
  if (!ok) ++failures;
  std::printf("%-9s %-44s %15.9g %15.9g %9.2e %9.2e  %-4s %s\n", eq, what.c_str(), lib, check, diff, tol,
              ok ? "pass" : "FAIL", how);
}

void header(const char* title) { std::printf("\n%s\n", title); }

struct moments {
  double mean;
  double var;
};
moments sample_moments(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m += v;
  m /= static_cast<double>(x.size());
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return {m, s / static_cast<double>(x.size() - 1)};
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t samples = 200000;
  std::uint64_t seed = 20200619;  // DDPM's arXiv date
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf(
          "usage: ddpm_equations [--samples N] [--seed S]\n"
          "Checks DDPM (Ho et al. 2020) Eq. 2, 4, 5, 6-7, 8, 11, 12, 13, 14, Algorithms 1-2, the\n"
          "eps/x0/v/score relations, the Eq. 12 weights, Algorithm 2 as a score step beside\n"
          "Langevin dynamics (with a table against NCSN's step sizes) and the\n"
          "published schedule numbers against independent computations. Monte Carlo checks use\n"
          "N samples (default 200000) and a 5-standard-error tolerance. Exit status 1 on failure.\n");
      return 0;
    }
    if (!std::strcmp(argv[i], "--samples") && i + 1 < argc) {
      samples = std::strtoull(argv[++i], nullptr, 10);
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "ddpm_equations: unknown argument '%s' (try --help)\n", argv[i]);
      return 2;
    }
  }
  if (samples < 100) {
    std::fprintf(stderr, "ddpm_equations: --samples %zu must be >= 100\n", samples);
    return 2;
  }

  using namespace diffusion;
  const std::vector<double> betas = linear_betas(1000, 1e-4, 0.02);  // DDPM §4
  const noise_schedule s(betas);
  normal_source rng(seed);
  const double n = static_cast<double>(samples);
  std::printf("DDPM (Ho et al. 2020), linear schedule 1e-4..0.02, T = 1000; code index i = paper t - 1.\n");
  std::printf("Monte Carlo: %zu samples, seed %llu, tolerance 5 standard errors.\n", samples,
              static_cast<unsigned long long>(seed));
  std::printf("\n%-9s %-44s %15s %15s %9s %9s  %-4s %s\n", "equation", "quantity", "library", "check", "|diff|", "tol",
              "", "check is");

  header("Forward process");
  {
    // Eq. 4 closes Eq. 2: alpha_bar_t = prod (1 - beta_s), here as a long double running product.
    long double prod = 1.0L;
    for (std::size_t i = 0; i < 500; ++i) prod *= 1.0L - static_cast<long double>(betas[i]);
    row("Eq. 4", "alpha_bar at t = 500", s[499].alpha_bar, static_cast<double>(prod), 1e-15,
        "long double product");
    // Eq. 2 iterated by Monte Carlo: x_t = sqrt(1 - beta) x_{t-1} + sqrt(beta) z from x_0 = 0.5.
    const double x0 = 0.5;
    std::vector<double> x(samples, x0);
    for (std::size_t i = 0; i < 250; ++i) {
      const double a = std::sqrt(1.0 - betas[i]), b = std::sqrt(betas[i]);
      for (double& xi : x) xi = a * xi + b * rng.normal();
    }
    const auto m = sample_moments(x);
    const auto q = q_marginal(s, 249);
    row("Eq. 2->4", "mean of x_250 after 250 steps of Eq. 2", q.mean_coef * x0, m.mean, 5 * std::sqrt(q.variance / n),
        "Monte Carlo");
    row("Eq. 2->4", "variance of x_250", q.variance, m.var, 5 * q.variance * std::sqrt(2 / (n - 1)), "Monte Carlo");
    // Eq. 4 sampled with q_sample matches its own moments.
    std::vector<double> x0s(samples, x0), eps(samples), xt(samples);
    for (double& e : eps) e = rng.normal();
    q_sample(s, 749, x0s, eps, xt);
    const auto m2 = sample_moments(xt);
    const auto q2 = q_marginal(s, 749);
    row("Eq. 4", "mean of q_sample at t = 750", q2.mean_coef * x0, m2.mean, 5 * std::sqrt(q2.variance / n),
        "Monte Carlo");
  }

  header("Posterior q(x_{t-1} | x_t, x_0)");
  {
    // Eq. 6-7 against Bayes' rule in precision form, long double, from the raw betas:
    // 1/var = alpha_t/beta_t + 1/(1 - ab_{t-1}), mean = var (sqrt(alpha_t) x_t / beta_t + sqrt(ab_{t-1}) x_0 / (1 - ab_{t-1})).
    for (std::size_t i : {1u, 10u, 500u, 999u}) {
      long double ab_prev = 1.0L;
      for (std::size_t k = 0; k < i; ++k) ab_prev *= 1.0L - static_cast<long double>(betas[k]);
      const long double beta = betas[i], alpha = 1.0L - beta;
      const long double var = 1.0L / (alpha / beta + 1.0L / (1.0L - ab_prev));
      const long double c0 = var * std::sqrt(ab_prev) / (1.0L - ab_prev), ct = var * std::sqrt(alpha) / beta;
      const auto p = posterior(s, i);
      const std::string t = " at t = " + std::to_string(i + 1);
      row("Eq. 7", "beta_tilde" + t, p.variance, static_cast<double>(var), 1e-14 * p.variance, "Bayes, precision form");
      row("Eq. 7", "mu_tilde coefficient of x_0" + t, p.coef_x0, static_cast<double>(c0), 1e-14 * p.coef_x0,
          "Bayes, precision form");
      row("Eq. 7", "mu_tilde coefficient of x_t" + t, p.coef_xt, static_cast<double>(ct), 1e-14 * p.coef_xt,
          "Bayes, precision form");
    }
    // Monte Carlo: draw x_{t-1} ~ q(.|x_0) and x_t ~ q(x_t|x_{t-1}); the residual of x_{t-1}
    // against mu_tilde(x_t, x_0) must have mean 0 and variance beta_tilde.
    const std::size_t i = 99;
    const double x0 = -0.3;
    const auto q_prev = q_marginal(s, i - 1);
    const auto p = posterior(s, i);
    std::vector<double> resid(samples);
    for (double& r : resid) {
      const double xp = q_prev.mean_coef * x0 + q_prev.std * rng.normal();
      const double xt = std::sqrt(1.0 - betas[i]) * xp + std::sqrt(betas[i]) * rng.normal();
      r = xp - (p.coef_x0 * x0 + p.coef_xt * xt);
    }
    const auto m = sample_moments(resid);
    row("Eq. 6", "mean of x_99 - mu_tilde(x_100, x_0)", 0.0, m.mean, 5 * std::sqrt(p.variance / n), "Monte Carlo");
    row("Eq. 6", "variance of x_99 - mu_tilde = beta_tilde_100", p.variance, m.var,
        5 * p.variance * std::sqrt(2 / (n - 1)), "Monte Carlo");
  }

  header("Parameterizations at t = 500 (x_t = sqrt(ab) x_0 + sqrt(1-ab) eps)");
  {
    const std::size_t t = 499;
    const double x0v = 0.7, epsv = -1.2;
    std::vector<double> x0{x0v}, eps{epsv}, xt(1), out(1), v(1);
    q_sample(s, t, x0, eps, xt);
    // A conversion out = a x_t + b in is exact to u(|a x_t| + |b in|) per rounding; x_t itself
    // carries one more. Tolerance: 4 such roundings (u = 2^-53).
    auto tol = [&](prediction from, prediction to, double in) {
      const auto k = conversion_coefficients(s, t, from, to);
      return 4 * 0x1p-53 * (std::abs(k.a * xt[0]) + std::abs(k.b * in));
    };
    convert_prediction(s, t, prediction::epsilon, prediction::sample, xt, eps, out);
    row("Eq. 15", "x_0 recovered from eps", out[0], x0v, tol(prediction::epsilon, prediction::sample, epsv),
        "the x_0 that made x_t");
    convert_prediction(s, t, prediction::sample, prediction::epsilon, xt, x0, out);
    row("", "eps recovered from x_0", out[0], epsv, tol(prediction::sample, prediction::epsilon, x0v),
        "the eps that made x_t");
    velocity_target(s, t, x0, eps, v);
    const double c = std::sqrt(static_cast<double>(s[t].alpha_bar)), d = std::sqrt(1.0 - s[t].alpha_bar);
    row("v", "v = sqrt(ab) eps - sqrt(1-ab) x_0", v[0], c * epsv - d * x0v, 4 * 0x1p-53 * (c * 1.2 + d * 0.7),
        "formula with libm sqrt");
    convert_prediction(s, t, prediction::v, prediction::sample, xt, v, out);
    row("v", "x_0 recovered from v", out[0], x0v, tol(prediction::v, prediction::sample, v[0]),
        "the x_0 that made x_t");
    // score = -eps / sqrt(1 - ab) is the gradient of log q(x_t | x_0) (Eq. 4 density): central difference.
    convert_prediction(s, t, prediction::epsilon, prediction::score, xt, eps, out);
    auto logq = [&](double x) { return -(x - c * x0v) * (x - c * x0v) / (2 * (1 - s[t].alpha_bar)); };
    const double h = 1e-4;
    row("score", "score = -eps/sqrt(1-ab) = d/dx log q(x_t|x_0)", out[0], (logq(xt[0] + h) - logq(xt[0] - h)) / (2 * h),
        1e-9, "central difference");
  }

  header("Variational bound and losses on Gaussian data x0 ~ N(0.3, 0.4^2) (exact denoiser)");
  {
    const gaussian_data g({0.3}, {0.4});
    // Eq. 8: with a fixed variance, L_{t-1} = E[|mu~ - mu_theta|^2 / (2 sigma^2)] + C; here for one
    // draw, C = 0.5 (expm1(d) - d), d = log beta~ - log sigma^2 (fixed_large).
    const std::size_t t = 300;
    const double x0v = 0.1, epsv = 0.8;
    std::vector<double> x0{x0v}, eps{epsv}, xt(1), out(1);
    q_sample(s, t, x0, eps, xt);
    out[0] = 0.9 * epsv;  // some imperfect model
    const double lv = fixed_log_variance(s, t, variance_type::fixed_large);
    const double kl = vlb_term(s, t, x0, xt, out, prediction::epsilon, {.variance = variance_type::fixed_large});
    // Eq. 11: mu_theta = (x_t - beta_t / sqrt(1 - ab_t) eps_theta) / sqrt(alpha_t), written out here.
    const auto& st = s[t];
    const double mu_theta = (xt[0] - st.beta / st.sqrt_one_minus_alpha_bar * out[0]) / st.sqrt_alpha;
    const double mu_tilde = st.posterior_mean_coef_x0 * x0v + st.posterior_mean_coef_xt * xt[0];
    const double dvar = std::log(st.posterior_variance) - lv;
    const double eq8 = (mu_tilde - mu_theta) * (mu_tilde - mu_theta) / (2 * std::exp(lv)) + 0.5 * (std::expm1(dvar) - dvar);
    row("Eq. 8, 11", "L_{t-1} at t = 301, fixed_large", kl, eq8, 1e-12 * eq8, "Eq. 8 with Eq. 11's mean");
    // Eq. 12: the same KL is lambda_t |eps - eps_theta|^2 + C.
    const double lam = vlb_weight(s, t, variance_type::fixed_large);
    row("Eq. 12", "L_{t-1} = lambda_t |eps - eps_theta|^2 + C", kl,
        lam * (epsv - out[0]) * (epsv - out[0]) + 0.5 * (std::expm1(dvar) - dvar), 1e-9 * kl, "Eq. 12 weight");
    // Eq. 13: the discretized decoder is a probability distribution on the 256-level grid.
    double total = 0;
    for (int k = 0; k < 256; ++k)
      total += std::exp(discretized_gaussian_log_likelihood(-1.0 + 2.0 * k / 255.0, 0.123, std::log(0.01)));
    row("Eq. 13", "sum of p(x0|x1) over the 8-bit grid", total, 1.0, 1e-12, "normalization");
    // Eq. 14 and Algorithm 1: E over (x0, eps) of |eps - eps_theta(x_t, t)|^2 for the exact
    // eps_theta is Var[eps | x_t] = ab s^2 / (ab s^2 + 1 - ab).
    const std::size_t t14 = 499;
    const auto& s14 = s[t14];
    double m = 0, m2 = 0;
    std::vector<double> a(1), e(1), x(1), pred(1);
    const double tsv = static_cast<double>(t14), sg = s14.sigma;
    for (std::size_t i = 0; i < samples; ++i) {
      a[0] = 0.3 + 0.4 * rng.normal();
      e[0] = rng.normal();
      q_sample(s, t14, a, e, x);
      g(denoiser_input<double>{x, std::span<const double>(&tsv, 1), std::span<const double>(&sg, 1)}, std::span<double>(pred));
      const double l = simple_loss(s, t14, a, e, pred, prediction::epsilon);
      m += l;
      m2 += l * l;
    }
    m /= n;
    const double sd14 = std::sqrt((m2 / n - m * m) / (n - 1));
    const double var_eps = s14.alpha_bar * 0.16 / (s14.alpha_bar * 0.16 + s14.one_minus_alpha_bar);
    row("Eq. 14", "E L_simple at t = 500, optimal eps_theta", var_eps, m, 5 * sd14, "Monte Carlo");
    // Eq. 5: the whole bound with the true reverse variances telescopes to NLL + prior mismatch.
    double bound = g.expected_prior_term(s, 0) + g.expected_decoder_nll(s, 0, std::log(g.true_reverse_variance(s, 0, 0)));
    for (std::size_t k = 1; k < 1000; ++k) bound += g.expected_kl_term(s, k, 0, std::log(g.true_reverse_variance(s, k, 0)));
    row("Eq. 5", "L_T + sum L_{t-1} + L_0 (true variance), nats", bound, g.nll(0) + g.prior_mismatch(s, 0), 1e-9,
        "NLL + KL(q(x_T)||p(x_T))");
    // Score matching: the exact eps_theta of Gaussian data, through -eps/sqrt(1-ab), is the score
    // of the noisy marginal N(sqrt(ab) mu, ab s^2 + 1 - ab).
    const double xq = 0.45;
    g(denoiser_input<double>{std::span<const double>(&xq, 1), std::span<const double>(&tsv, 1), std::span<const double>(&sg, 1)},
      std::span<double>(pred));
    const double marginal_var = s14.alpha_bar * 0.16 + s14.one_minus_alpha_bar;
    row("Eq. 12", "score -eps_theta/sqrt(1-ab) = grad log q_t(x_t)", -pred[0] / s14.sqrt_one_minus_alpha_bar,
        -(xq - s14.sqrt_alpha_bar * 0.3) / marginal_var, 1e-14, "Gaussian marginal");
  }

  header("Algorithm 2 on Gaussian data (50 respaced steps, fixed_large)");
  {
    const double mu = 0.3, sd = 0.4;
    gaussian_data g({mu}, {sd});
    const auto seq = inference_timesteps(1000, 50, timestep_spacing::trailing);
    std::vector<double> x(samples);
    struct mc_noise {  // the example's own seeded source, in the library's noise-source shape
      std::uint64_t seed;
      void fill(std::uint64_t sample, std::uint64_t step, std::uint64_t, std::span<double> out) const {
        normal_source r(seed ^ (sample * 0x9E3779B97F4A7C15ull) ^ (step * 0xD1B54A32D192ED03ull));
        for (auto& v : out) v = r.normal();
      }
    } noise{seed};
    ddpm_sample(s, g, x, samples, noise, {.variance = variance_type::fixed_large, .timesteps = seq});
    // The chain is linear-Gaussian here: its exact output law by recursion.
    const noise_schedule ss = respace(s, seq).schedule;
    double m = 0.0, v = 1.0;
    for (std::size_t j = ss.size(); j-- > 0;) {
      const auto& st = ss[j];
      const double c = st.sqrt_alpha_bar, k = c * sd * sd / (st.alpha_bar * sd * sd + st.one_minus_alpha_bar);
      const double A = st.posterior_mean_coef_x0 * k + st.posterior_mean_coef_xt, B = st.posterior_mean_coef_x0 * (mu - k * c * mu);
      m = A * m + B;
      v = A * A * v + (j > 0 ? std::exp(fixed_log_variance(ss, j, variance_type::fixed_large)) : 0.0);
    }
    const auto mm = sample_moments(x);
    row("Alg. 2", "mean of the samples", m, mm.mean, 5 * std::sqrt(v / n), "exact law of the chain");
    row("Alg. 2", "variance of the samples", v, mm.var, 5 * v * std::sqrt(2 / (n - 1)), "exact law of the chain");
  }

  header("Eq. 12 weight that L_simple drops: lambda_t = beta^2 / (2 sigma^2 alpha (1 - ab))");
  {
    // Eq. 8 with Eq. 10-11: mu~ - mu_theta = beta_t / (sqrt(alpha_t) sqrt(1 - ab_t)) (eps_theta - eps), so
    // L_{t-1} - C = lambda_t |eps - eps_theta|^2. Independent values: long double from the raw betas;
    // for sigma^2 = beta~ also the SNR form lambda_t = (SNR_{t-1} - SNR_t) / (2 SNR_t).
    const noise_schedule cs(cosine_betas(1000));
    struct named {
      const char* name;
      const noise_schedule* sched;
    };
    for (const named sc : {named{"linear", &s}, named{"cosine", &cs}}) {
      const auto b = sc.sched->betas();
      for (std::size_t i : {1u, 9u, 99u, 499u, 999u}) {
        long double ab = 1.0L, ab_prev = 1.0L;
        for (std::size_t k = 0; k <= i; ++k) {
          ab_prev = ab;
          ab *= 1.0L - static_cast<long double>(b[k]);
        }
        const long double beta = b[i], alpha = 1.0L - beta;
        const long double large = beta / (2.0L * alpha * (1.0L - ab));
        const long double snr = ab / (1.0L - ab), snr_prev = ab_prev / (1.0L - ab_prev);
        const long double small = (snr_prev - snr) / (2.0L * snr);
        const std::string t = std::string(sc.name) + ", t = " + std::to_string(i + 1);
        const double wl = vlb_weight(*sc.sched, i, variance_type::fixed_large);
        const double ws = vlb_weight(*sc.sched, i, variance_type::fixed_small);
        row("Eq. 12", "lambda_t, sigma^2 = beta, " + t, wl, static_cast<double>(large), 1e-13 * wl,
            "beta/(2 alpha (1-ab)), long double");
        row("Eq. 12", "lambda_t, sigma^2 = beta~, " + t, ws, static_cast<double>(small), 1e-12 * ws,
            "(SNR_{t-1}-SNR_t)/(2 SNR_t)");
      }
    }
    std::printf("\n  lambda_t at more t (t = 1 is L_0, the decoder: lambda_1 uses the clipped variance beta~_2);\n"
                "  L_simple weights every t by 1, i.e. by 1/lambda_t relative to the bound.\n");
    std::printf("  %-6s %13s %13s %13s %13s\n", "t", "linear beta", "linear beta~", "cosine beta", "cosine beta~");
    for (std::size_t i : {0u, 1u, 4u, 9u, 49u, 99u, 249u, 499u, 749u, 899u, 999u})
      std::printf("  %-6zu %13.6g %13.6g %13.6g %13.6g\n", i + 1, vlb_weight(s, i, variance_type::fixed_large),
                  vlb_weight(s, i, variance_type::fixed_small), vlb_weight(cs, i, variance_type::fixed_large),
                  vlb_weight(cs, i, variance_type::fixed_small));
  }

  header("Algorithm 2 as a score-based step: Gaussian data N(0.3, 0.4^2), exact score");
  {
    const double mu = 0.3, sd = 0.4;
    const gaussian_data g({mu}, {sd});
    const std::size_t t = 499;  // paper t = 500
    const auto& st = s[t];
    const auto& sp = s[t - 1];
    const double tv = static_cast<double>(t), sg = st.sigma;
    // The exact model output eps_theta(x_t) and x0_hat at one point.
    const double xv = 0.37;
    std::vector<double> x{xv}, eps(1), x0(1), xn(1), zero{0.0}, scratch(1);
    g(denoiser_input<double>{std::span<const double>(x), std::span<const double>(&tv, 1), std::span<const double>(&sg, 1)},
      std::span<double>(eps));
    // (a) Alg. 2's mean (1/sqrt(alpha))(x_t - beta/sqrt(1-ab) eps) is (x_t + beta_t s)/sqrt(alpha_t), s = -eps/sqrt(1-ab).
    ddpm_step<double>(s, t, prediction::epsilon, variance_type::fixed_large, {}, x, eps, zero, x0, xn, scratch);
    std::vector<double> score(1);
    convert_prediction(s, t, prediction::epsilon, prediction::score, x, eps, score);
    long double ab = 1.0L;
    for (std::size_t k = 0; k <= t; ++k) ab *= 1.0L - static_cast<long double>(betas[k]);
    const long double bl = betas[t];
    const long double mean_ld = (xv + bl * static_cast<long double>(score[0])) / std::sqrt(1.0L - bl);
    row("Alg. 2", "mean = (x_t + beta_t s(x_t)) / sqrt(alpha_t), t = 500", xn[0], static_cast<double>(mean_ld),
        1e-15, "score form, long double");
    // (b) In x/sqrt(ab) (variance-exploding) coordinates the step's drift on the score is
    // beta_t/ab_t = sigma_t^2 - sigma_{t-1}^2 (sigma^2 = (1-ab)/ab).
    for (std::size_t i : {1u, 499u, 999u}) {
      long double a = 1.0L, ap = 1.0L;
      for (std::size_t k = 0; k <= i; ++k) {
        ap = a;
        a *= 1.0L - static_cast<long double>(betas[k]);
      }
      const long double dsig = (1.0L - a) / a - (1.0L - ap) / ap;
      row("Alg. 2", "VE drift beta_t/ab_t = sigma_t^2 - sigma_{t-1}^2, t = " + std::to_string(i + 1),
          s[i].beta / s[i].alpha_bar, static_cast<double>(dsig), 1e-13 * static_cast<double>(dsig), "long double");
    }
    // (c) The reverse-diffusion predictor of the VE SDE, x + Delta s + sqrt(Delta) z (Delta = sigma_t^2 - sigma_{t-1}^2),
    // is one probability-flow Euler step (x + Delta/2 s) plus one Langevin step of size delta = Delta/2
    // (x + delta s + sqrt(2 delta) z): the library's predictor against its Langevin step plus the drift.
    const double c = st.sqrt_alpha_bar, y = xv / c;  // the same point in VE coordinates
    const double delta_ve = st.sigma * st.sigma - sp.sigma * sp.sigma;
    std::vector<double> yv{y}, den{g.posterior_mean_x0(0, st.sigma, xv)}, zv{0.8}, pred(1), lang(1);
    reverse_diffusion_predictor_step<double>(st.sigma, sp.sigma, yv, den, zv, pred);
    langevin_step<double>(0.5 * delta_ve, st.sigma, yv, den, zv, lang);
    const double pf_drift = 0.5 * delta_ve * (den[0] - y) / (st.sigma * st.sigma);
    row("SDE", "reverse-diffusion predictor = PF Euler + Langevin(Delta/2)", pred[0], lang[0] + pf_drift, 1e-13,
        "library langevin_step");
    // (d) DDPM with sigma^2 = beta~ is exactly the VE ancestral predictor in x/sqrt(ab) coordinates.
    std::vector<double> anc(1);
    ddpm_step<double>(s, t, prediction::epsilon, variance_type::fixed_small, {}, x, eps, zv, x0, xn, scratch);
    ve_ancestral_predictor_step<double>(st.sigma, sp.sigma, yv, den, zv, anc);
    row("Alg. 2", "fixed_small step / sqrt(ab_{t-1}) = VE ancestral step", xn[0] / sp.sqrt_alpha_bar, anc[0], 1e-13,
        "ve_ancestral_predictor_step");
    // (e) noise^2 / drift on the score, both in VE coordinates: DDPM fixed_large alpha_t, fixed_small
    // sigma_{t-1}^2/sigma_t^2; a Langevin step 2.
    const double noise2_large = std::exp(fixed_log_variance(s, t, variance_type::fixed_large)) / sp.alpha_bar;
    const double noise2_small = std::exp(fixed_log_variance(s, t, variance_type::fixed_small)) / sp.alpha_bar;
    row("Alg. 2", "noise^2/drift, sigma^2 = beta (Langevin: 2)", noise2_large / delta_ve, st.alpha, 1e-13,
        "alpha_t");
    row("Alg. 2", "noise^2/drift, sigma^2 = beta~ (Langevin: 2)", noise2_small / delta_ve,
        (sp.sigma * sp.sigma) / (st.sigma * st.sigma), 1e-13, "sigma_{t-1}^2/sigma_t^2");
    // (f) Where each step takes p_t = N(c mu, v_t): both steps are affine in (x, z), x' = A x + B + C z; read
    // A, B, C off the library's steps and propagate the Gaussian exactly. DDPM (sigma^2 = beta) lands on
    // p_{t-1} up to (beta^2/alpha)(1/v_t - 1); a Langevin step with delta = beta/2 (the same noise) stays
    // on p_t up to delta^2/v_t. A, B, C are read by differences, so each variance carries a few
    // roundings of v_t: tolerance 16 u v_t.
    const double vt = st.alpha_bar * sd * sd + st.one_minus_alpha_bar, vp = sp.alpha_bar * sd * sd + sp.one_minus_alpha_bar;
    auto ddpm_affine = [&](double xin, double zin) {
      std::vector<double> xi{xin}, e(1), zi{zin}, o0(1), o(1), scr(1);
      g(denoiser_input<double>{std::span<const double>(xi), std::span<const double>(&tv, 1), std::span<const double>(&sg, 1)},
        std::span<double>(e));
      ddpm_step<double>(s, t, prediction::epsilon, variance_type::fixed_large, {}, xi, e, zi, o0, o, scr);
      return o[0];
    };
    const double B = ddpm_affine(0, 0), A = ddpm_affine(1, 0) - B, C = ddpm_affine(0, 1) - B;
    const double m_after = A * c * mu + B, v_after = A * A * vt + C * C;
    row("Alg. 2", "one step from p_500: mean - mean of p_499", m_after - sp.sqrt_alpha_bar * mu, 0.0, 1e-15,
        "exact (sqrt(ab_{t-1}) mu)");
    row("Alg. 2", "one step from p_500: var - var of p_499", v_after - vp,
        st.beta * st.beta / st.alpha * (1.0 / vt - 1.0), 16 * 0x1p-53 * vt, "(beta^2/alpha)(1/v_t - 1)");
    // Langevin in VP coordinates at level t: x' = x + delta s_t(x) + sqrt(2 delta) z, written through the
    // library's sigma-space step on y = x/c: y' = y + (delta/c^2) s_VE(y) + sqrt(2 delta/c^2) z.
    const double delta = 0.5 * st.beta;
    auto lang_affine = [&](double xin, double zin) {
      std::vector<double> yi{xin / c}, d{g.posterior_mean_x0(0, st.sigma, xin)}, zi{zin}, o(1);
      langevin_step<double>(delta / st.alpha_bar, st.sigma, yi, d, zi, o);
      return c * o[0];
    };
    const double LB = lang_affine(0, 0), LA = lang_affine(1, 0) - LB, LC = lang_affine(0, 1) - LB;
    row("Langevin", "one step (delta = beta/2) from p_500: var - v_500", LA * LA * vt + LC * LC - vt,
        delta * delta / vt, 16 * 0x1p-53 * vt, "delta^2 / v_t");
    row("Langevin", "its noise^2 / drift on the score", LC * LC / delta, 2.0, 1e-12, "2");
  }

  header("DDPM (linear, T = 1000) beside NCSN annealed Langevin (Song & Ermon 2019 §4.3: sigma 1..0.01, L = 10)");
  {
    // NCSN: alpha_i = eps sigma_i^2 / sigma_L^2, eps = 2e-5, T = 100 steps per level, update
    // x + alpha_i s + sqrt(2 alpha_i) z (the official code and the library; the paper's Algorithm 1
    // writes (alpha_i/2) s + sqrt(alpha_i) z). DDPM in VE coordinates x/sqrt(ab): drift Delta_t =
    // sigma_t^2 - sigma_{t-1}^2 on the score, noise^2 alpha_t Delta_t; its Langevin part has delta = Delta_t/2.
    // "Langevin time" = sum of delta / sigma^2 (relaxation times of N(x_0, sigma^2)).
    const std::vector<double> sig = geometric_sigmas(10, 0.01, 1.0);
    const double eps_ncsn = 2e-5, sL = sig.back();
    const std::size_t steps_each = 100;
    std::printf("  %-3s %9s | %11s %11s %9s %8s | %5s %11s %11s %8s %6s %9s\n", "i", "sigma_i", "NCSN alpha", "noise",
                "noise^2/", "time per", "DDPM", "drift", "noise", "noise^2/", "steps", "Langevin");
    std::printf("  %-3s %9s | %11s %11s %9s %8s | %5s %11s %11s %8s %6s %9s\n", "", "", "", "sqrt(2a)", "drift",
                "level", "t", "Delta_t", "sqrt(a D)", "drift", "in band", "time");
    double total_ncsn = 0.0, total_ddpm = 0.0;
    for (std::size_t i = 0; i < sig.size(); ++i) {
      const double a = eps_ncsn * sig[i] * sig[i] / (sL * sL);
      const double time_ncsn = static_cast<double>(steps_each) * a / (sig[i] * sig[i]);
      total_ncsn += time_ncsn;
      // DDPM step whose sigma is nearest to sigma_i (in log), and the steps in the band (sigma_{i+1}, sigma_i].
      std::size_t best = 0;
      for (std::size_t k = 1; k < s.size(); ++k)
        if (std::abs(std::log(s[k].sigma / sig[i])) < std::abs(std::log(s[best].sigma / sig[i]))) best = k;
      const double lo = i + 1 < sig.size() ? sig[i + 1] : 0.0;
      std::size_t in_band = 0;
      double time_ddpm = 0.0;
      for (std::size_t k = 1; k < s.size(); ++k)
        if (s[k].sigma <= sig[i] && s[k].sigma > lo) {
          ++in_band;
          time_ddpm += 0.5 * (s[k].beta / s[k].alpha_bar) / (s[k].sigma * s[k].sigma);
        }
      total_ddpm += time_ddpm;
      const double dlt = s[best].beta / s[best].alpha_bar;
      std::printf("  %-3zu %9.5f | %11.5g %11.5g %9.3g %8.3g | %5zu %11.5g %11.5g %8.5f %6zu %9.4f\n", i + 1, sig[i], a,
                  std::sqrt(2 * a), 2.0, time_ncsn, best + 1, dlt, std::sqrt(s[best].alpha * dlt), s[best].alpha, in_band,
                  time_ddpm);
    }
    double all = 0.0;
    for (std::size_t k = 1; k < s.size(); ++k) all += 0.5 * (s[k].beta / s[k].alpha_bar) / (s[k].sigma * s[k].sigma);
    std::printf("  Langevin time: NCSN %.1f over its 10 levels; DDPM %.4f over those bands, %.3f over all 1000 steps\n",
                total_ncsn, total_ddpm, all);
    std::printf("  (= ln(sigma_T/sigma_1) = %.3f to first order: the DDPM step is mostly transport, not equilibration).\n",
                std::log(s[999].sigma / s[0].sigma));
  }

  header("Published numbers (float64; SPEC.md, Lin et al. 2023 Table 1)");
  {
    row("DDPM", "linear: alpha_bar_T", s[999].alpha_bar, 4.03583e-5, 0.5e-10, "published, 6 digits");
    row("DDPM", "linear: sqrt(alpha_bar_T)", s[999].sqrt_alpha_bar, 0.006353, 0.5e-6, "Lin et al. Table 1");
    row("iDDPM", "linear: beta_tilde at t = 2", s[1].posterior_variance, 5.4531877e-5, 0.5e-12, "published");
    row("iDDPM", "linear: clipped log beta_tilde at t = 1", s[0].posterior_log_variance_clipped, -9.8167251, 0.5e-7,
        "published");
    const noise_schedule sd(scaled_linear_betas(1000, 0.00085, 0.012));
    row("LDM", "scaled_linear: sqrt(alpha_bar_T)", sd[999].sqrt_alpha_bar, 0.068265, 0.5e-6, "Lin et al. Table 1");
    row("LDM", "scaled_linear: SNR_T", sd[999].snr, 0.0046819, 0.5e-7, "Lin et al. Table 1");
    row("LDM", "scaled_linear: sigma_max", sd[999].sigma, 14.614641, 0.5e-6, "k-diffusion / diffusers");
    row("LDM", "scaled_linear: sigma_min", sd[0].sigma, 0.0291672, 0.5e-7, "k-diffusion / diffusers");
    const noise_schedule cs(cosine_betas(1000));
    row("iDDPM", "cosine: beta at t = 1", cs[0].beta, 4.12842e-5, 0.5e-10, "published");
    row("iDDPM", "cosine: alpha_bar_T", cs[999].alpha_bar, 2.428767e-9, 0.5e-15, "published");
    std::vector<double> grid(256);
    for (std::size_t k = 0; k < 256; ++k) grid[k] = -1.0 + 2.0 * static_cast<double>(k) / 255.0;
    row("DDPM §4", "L_T, linear, uniform 8-bit data (bits/dim)", to_bits(prior_term(s, grid)), 1e-5, 0.3e-5,
        "published: ~1e-5");
    row("Lin+23", "cosine: sqrt(alpha_bar_T)", cs[999].sqrt_alpha_bar, std::sqrt(2.428767e-9), 0.5e-9, "from SPEC ab_T");
    const noise_schedule z(rescale_zero_terminal_snr(scaled_linear_betas(1000)));
    row("Lin+23", "zero-SNR scaled_linear: SNR_T", z[999].snr, 0.0, 0.0, "exactly 0 by construction");
  }

  std::printf("\n%s: %d check(s) failed\n", failures ? "FAILED" : "all checks passed", failures);
  return failures ? 1 : 0;
}
