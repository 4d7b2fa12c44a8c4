// Autoregressive decoding as a diffusion (Ho et al. 2020, DDPM §4.3).
//
// Take a diffusion whose forward process masks one coordinate per step, T = D steps:
// q(x_t | x_0) is x_0 with its last t coordinates replaced by a blank. Its true reverse
// step is q(x_{t-1} | x_t) = p(x_k | x_1 .. x_{k-1}) with k = D - t + 1, so ancestral
// sampling of this diffusion is autoregressive sampling, and its variational bound is the
// autoregressive negative log-likelihood (the bound is tight). DDPM §4.3 masks the first t
// coordinates instead, which is the same model with the coordinates in reverse order.
//
// The data are D correlated Gaussian coordinates (a smooth squared-exponential signal plus
// white noise) with a known joint, so every quantity has a closed form. The program
//   1. derives the reverse conditionals (Schur complements) and checks them against the
//      Cholesky factor of the covariance;
//   2. samples the masking diffusion and tests the samples' mean, covariance and
//      Mahalanobis norm against the data (5 standard errors);
//   3. evaluates the variational bound of the masking diffusion, sample by sample, and
//      checks that it equals the exact NLL (and that a model ignoring the correlations pays
//      exactly KL(data || model) more);
//   4. contrasts the rate-distortion curves of the masking process ("coordinates not yet
//      sent") and of the Gaussian DDPM process on the same data (coarse to fine), both from
//      closed forms (diffusion::gaussian_data on the eigen-coordinates of the covariance).
// Exits 1 if a check fails.
#include <diffusion/ddpm.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/plot.hpp"

namespace {

using Eigen::Index;
using Eigen::MatrixXd;
using Eigen::VectorXd;

int failures = 0;

void row(const std::string& what, double value, double check, double tol, const char* how) {
  const double diff = std::abs(value - check);
  const bool ok = diff <= tol;
  if (!ok) ++failures;
  std::printf("  %-52s %14.8g %14.8g %9.2e %9.2e  %-4s %s\n", what.c_str(), value, check, diff, tol, ok ? "pass" : "FAIL",
              how);
}

void row_header() {
  std::printf("  %-52s %14s %14s %9s %9s  %-4s %s\n", "quantity", "value", "check", "|diff|", "tol", "", "check is");
}

// The autoregressive conditional of coordinate k (0-based) given coordinates 0..k-1:
// x_k | x_<k ~ N(mu_k + w . (x_<k - mu_<k), v).
struct conditional {
  VectorXd w;  // regression weights on the revealed coordinates
  double v;    // conditional variance (Schur complement)
};

double log_normal_density(double x, double m, double v) {
  return -0.5 * (std::log(2.0 * std::numbers::pi * v) + (x - m) * (x - m) / v);
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "autoregressive_as_diffusion",
               "DDPM §4.3: a masking diffusion with T = D steps is an autoregressive model; its bound is the exact "
               "NLL. Contrasts its rate-distortion with the Gaussian diffusion's on the same correlated Gaussian data.");
  const long dim_arg = args.integer("--dim", 8, "data dimension D = number of diffusion steps T of the masking process");
  const long n_arg = args.integer("--samples", 200000, "Monte Carlo samples (data and reverse-process samples)");
  const long seed_arg = args.integer("--seed", 43, "seed of the Philox noise");
  const double stddev = args.real("--stddev", 0.5, "marginal standard deviation of the signal part");
  const double length = args.real("--length", 2.0, "correlation length (in coordinates) of the squared-exponential signal");
  const double nugget = args.real("--nugget", 0.05, "white-noise variance as a fraction of the signal variance");
  const long bits = args.integer("--bits", 8, "quantization of the data for the rates: bin width 2/(2^bits - 1), as 8-bit data on [-1, 1]");
  const std::string plot_path = args.text("--plot", "", "write the rate-distortion figure to this PNG (needs gnuplot)");
  args.finish();
  if (dim_arg < 2 || dim_arg > 64 || n_arg < 1000 || seed_arg < 0 || !(stddev > 0) || !(length > 0) || !(nugget > 0) ||
      bits < 1 || bits > 16) {
    std::fprintf(stderr,
                 "autoregressive_as_diffusion: need 2 <= --dim <= 64, --samples >= 1000, --seed >= 0, positive "
                 "--stddev, --length, --nugget and 1 <= --bits <= 16\n");
    return 2;
  }
  const Index D = dim_arg;
  const auto Du = static_cast<std::size_t>(dim_arg);
  const auto N = static_cast<std::size_t>(n_arg);
  const double n = static_cast<double>(N);
  const diffusion::philox_normal noise(static_cast<std::uint64_t>(seed_arg));

  // ---- The data: x ~ N(mu, Sigma), Sigma_ij = s^2 (exp(-(i-j)^2 / (2 l^2)) + nugget [i = j]).
  VectorXd mu(D);
  MatrixXd Sigma(D, D);
  for (Index i = 0; i < D; ++i) {
    mu(i) = 0.2 * std::cos(std::numbers::pi * static_cast<double>(i) / static_cast<double>(D));
    for (Index j = 0; j < D; ++j) {
      const double d = static_cast<double>(i - j);
      Sigma(i, j) = stddev * stddev * (std::exp(-d * d / (2.0 * length * length)) + (i == j ? nugget : 0.0));
    }
  }
  const Eigen::LLT<MatrixXd> llt(Sigma);
  const MatrixXd L = llt.matrixL();
  const double logdet = 2.0 * L.diagonal().array().log().sum();
  const double entropy = 0.5 * (static_cast<double>(D) * std::log(2.0 * std::numbers::pi * std::numbers::e) + logdet);

  std::printf("Data: D = %ld correlated Gaussian coordinates, mean 0.2 cos(pi k/D), covariance\n", dim_arg);
  std::printf("s^2 (exp(-(i-j)^2/(2 l^2)) + %.3g [i=j]), s = %.3g, l = %.3g. Exact NLL h(x) = %.6f nats.\n", nugget, stddev,
              length, entropy);
  std::printf("Masking diffusion: T = D; q(x_t|x_0) blanks the last t coordinates; p(x_T) = the blank vector.\n");
  std::printf("Monte Carlo: %zu samples, Philox seed %ld, tolerance 5 standard errors.\n", N, seed_arg);

  // ---- 1. The reverse step. q(x_{t-1} | x_t) = q(x_{t-1}) / q(x_t) on the x_{t-1} that agree with x_t,
  // i.e. p(x_k | x_<k), k = D - t (0-based): a Gaussian conditional, by the Schur complement.
  std::vector<conditional> cond(Du);
  for (Index k = 0; k < D; ++k) {
    conditional& c = cond[static_cast<std::size_t>(k)];
    if (k == 0) {
      c.w = VectorXd(0);
      c.v = Sigma(0, 0);
      continue;
    }
    const Eigen::LDLT<MatrixXd> lead(Sigma.topLeftCorner(k, k));
    const VectorXd cross = Sigma.block(0, k, k, 1);
    c.w = lead.solve(cross);
    c.v = Sigma(k, k) - cross.dot(c.w);
  }
  std::printf("\n1. Reverse step p(x_{t-1} | x_t) = p(x_k | x_1..x_{k-1}), k = D - t + 1 (Schur complement)\n");
  row_header();
  {
    // Cholesky: x = mu + L z, so x_k | x_<k has variance L_kk^2 and weights L_{k,<k} L_{<k,<k}^{-1}.
    double dv = 0.0, dw = 0.0;
    for (Index k = 0; k < D; ++k) {
      const conditional& c = cond[static_cast<std::size_t>(k)];
      dv = std::max(dv, std::abs(c.v - L(k, k) * L(k, k)) / c.v);
      if (k > 0) {
        const VectorXd wc = L.topLeftCorner(k, k).transpose().triangularView<Eigen::Upper>().solve(
            VectorXd(L.block(k, 0, 1, k).transpose()));
        dw = std::max(dw, (wc - c.w).cwiseAbs().maxCoeff());
      }
    }
    row("max rel. |v_k - L_kk^2| (conditional variances)", dv, 0.0, 1e-12, "Cholesky factor");
    row("max |w_k - L_{k,<k} L_{<k}^-1| (regression weights)", dw, 0.0, 1e-12, "Cholesky factor");
    double sum_h = 0.0;
    for (const conditional& c : cond) sum_h += 0.5 * std::log(2.0 * std::numbers::pi * std::numbers::e * c.v);
    row("sum_k h(x_k | x_<k) = h(x) (chain rule)", sum_h, entropy, 1e-12 * std::abs(entropy) + 1e-12, "log det Sigma");
  }

  // ---- 2. Sample the masking diffusion from the blank x_T: step t reveals coordinate D - t + 1.
  std::vector<double> xs(N * Du);  // row-major samples
  {
    ex::progress prog("reverse process", Du);
    std::vector<double> z(N);
    for (Index t = D; t >= 1; --t) {
      const Index k = D - t;  // 0-based coordinate revealed by p(x_{t-1} | x_t)
      const conditional& c = cond[static_cast<std::size_t>(k)];
      noise.fill(0, static_cast<std::uint64_t>(D - t), 0, std::span<double>(z));
      const double sd = std::sqrt(c.v);
      for (std::size_t r = 0; r < N; ++r) {
        double* x = &xs[r * Du];
        double m = mu(k);
        for (Index j = 0; j < k; ++j) m += c.w(j) * (x[j] - mu(j));
        x[k] = m + sd * z[r];
      }
      prog.update(static_cast<std::size_t>(D - t + 1));
    }
  }
  std::printf("\n2. Samples of the masking diffusion against the data distribution\n");
  row_header();
  {
    VectorXd mean = VectorXd::Zero(D);
    MatrixXd cov = MatrixXd::Zero(D, D);
    for (std::size_t r = 0; r < N; ++r)
      for (Index i = 0; i < D; ++i) mean(i) += xs[r * Du + static_cast<std::size_t>(i)];
    mean /= n;
    double maha = 0.0;
    const MatrixXd Linv = L.triangularView<Eigen::Lower>().solve(MatrixXd::Identity(D, D));
    VectorXd e(D);
    for (std::size_t r = 0; r < N; ++r) {
      for (Index i = 0; i < D; ++i) e(i) = xs[r * Du + static_cast<std::size_t>(i)] - mu(i);
      maha += (Linv * e).squaredNorm();
      for (Index i = 0; i < D; ++i)
        for (Index j = 0; j <= i; ++j) cov(i, j) += (e(i) - (mean(i) - mu(i))) * (e(j) - (mean(j) - mu(j)));
    }
    cov /= n - 1.0;
    maha /= n;
    // Largest |z-score| over the D means and D(D+1)/2 covariance entries: SE(mean_i) = sqrt(S_ii/n),
    // SE(cov_ij) = sqrt((S_ii S_jj + S_ij^2)/n) for Gaussian data.
    double zmax = 0.0;
    for (Index i = 0; i < D; ++i) {
      zmax = std::max(zmax, std::abs(mean(i) - mu(i)) / std::sqrt(Sigma(i, i) / n));
      for (Index j = 0; j <= i; ++j)
        zmax = std::max(zmax, std::abs(cov(i, j) - Sigma(i, j)) /
                                  std::sqrt((Sigma(i, i) * Sigma(j, j) + Sigma(i, j) * Sigma(i, j)) / n));
    }
    const Index last = D - 1;
    row("mean of x_1", mean(0), mu(0), 5 * std::sqrt(Sigma(0, 0) / n), "data mean");
    row("mean of x_D", mean(last), mu(last), 5 * std::sqrt(Sigma(last, last) / n), "data mean");
    auto cov_row = [&](Index i, Index j) {
      const std::string what = "cov(x_" + std::to_string(i + 1) + ", x_" + std::to_string(j + 1) + ")";
      row(what, cov(std::max(i, j), std::min(i, j)), Sigma(i, j),
          5 * std::sqrt((Sigma(i, i) * Sigma(j, j) + Sigma(i, j) * Sigma(i, j)) / n), "data covariance");
    };
    cov_row(0, 0);
    cov_row(0, 1);
    cov_row(last - 1, last);
    cov_row(0, last);
    row("E (x-mu)^T Sigma^-1 (x-mu)  (chi-square, D dof)", maha, static_cast<double>(D),
        5 * std::sqrt(2.0 * static_cast<double>(D) / n), "D");
    row("max |z| over all " + std::to_string(D + D * (D + 1) / 2) + " means and covariances", zmax, 0.0, 5.0,
        "5 standard errors");
  }

  // ---- 3. The variational bound of the masking diffusion on fresh data x_0 = mu + L z.
  // L_T = KL(q(x_T|x_0) || p(x_T)) = 0 (both are the blank vector), q(x_{t-1}|x_t,x_0) is the point
  // mass on x_0's coordinate k, so L_{t-1} = -log p(x_{0,k} | x_{0,<k}) (a cross-entropy), and the
  // bound sum_t L_{t-1} = -log p(x_0) by the chain rule: no gap.
  std::printf("\n3. Variational bound of the masking diffusion (nats), data x_0 drawn independently\n");
  row_header();
  std::vector<double> step_mean(Du, 0.0);
  {
    std::vector<double> zd(N * Du);
    noise.fill(1, 0, 0, std::span<double>(zd));
    const Eigen::LDLT<MatrixXd> ldlt(Sigma);
    double bound_sum = 0.0, bound_sq = 0.0, max_gap = 0.0, indep_sum = 0.0, indep_sq = 0.0;
    VectorXd x(D), zr(D);
    for (std::size_t r = 0; r < N; ++r) {
      for (Index i = 0; i < D; ++i) zr(i) = zd[r * Du + static_cast<std::size_t>(i)];
      x = mu + L * zr;
      double bound = 0.0, indep = 0.0;  // L_T = 0
      for (Index k = 0; k < D; ++k) {
        const conditional& c = cond[static_cast<std::size_t>(k)];
        double m = mu(k);
        for (Index j = 0; j < k; ++j) m += c.w(j) * (x(j) - mu(j));
        const double term = -log_normal_density(x(k), m, c.v);  // L_{t-1}, t = D - k
        bound += term;
        step_mean[static_cast<std::size_t>(k)] += term;
        indep -= log_normal_density(x(k), mu(k), Sigma(k, k));  // a model that ignores the correlations
      }
      // -log N(x; mu, Sigma) directly: 0.5 (D log 2 pi + log det Sigma + (x-mu)^T Sigma^-1 (x-mu)).
      const VectorXd e = x - mu;
      const double nll = 0.5 * (static_cast<double>(D) * std::log(2.0 * std::numbers::pi) + logdet + e.dot(ldlt.solve(e)));
      max_gap = std::max(max_gap, std::abs(bound - nll) / std::max(1.0, std::abs(nll)));
      bound_sum += bound;
      bound_sq += bound * bound;
      indep_sum += indep - bound;
      indep_sq += (indep - bound) * (indep - bound);
    }
    for (double& v : step_mean) v /= n;
    const double mb = bound_sum / n, sb = std::sqrt((bound_sq / n - mb * mb) / (n - 1));
    const double mi = indep_sum / n, si = std::sqrt((indep_sq / n - mi * mi) / (n - 1));
    row("max_x |bound(x) - (-log N(x; mu, Sigma))| / max(1,|.|)", max_gap, 0.0, 1e-12, "per sample, full density");
    row("E bound = E sum_t L_{t-1}", mb, entropy, 5 * sb, "exact NLL h(x)");
    double kl_indep = 0.0;
    for (Index k = 0; k < D; ++k) kl_indep += 0.5 * std::log(Sigma(k, k));
    kl_indep -= 0.5 * logdet;
    row("E bound(independent model) - E bound(exact)", mi, kl_indep, 5 * si, "KL(data || prod of marginals)");
    std::printf("\n  %-4s %-10s %16s %16s %16s\n", "t", "reveals", "E L_{t-1} (MC)", "h(x_k | x_<k)", "independent");
    for (Index t = D; t >= 1; --t) {
      const auto k = static_cast<std::size_t>(D - t);
      std::printf("  %-4ld x_%-8zu %16.6f %16.6f %16.6f\n", static_cast<long>(t), k + 1, step_mean[k],
                  0.5 * std::log(2.0 * std::numbers::pi * std::numbers::e * cond[k].v),
                  0.5 * std::log(2.0 * std::numbers::pi * std::numbers::e * Sigma(static_cast<Index>(k), static_cast<Index>(k))));
    }
  }

  // ---- 4. Rate-distortion: masking process versus the Gaussian diffusion (linear betas, T = 1000).
  // Gaussian diffusion is isotropic, so in the eigenbasis Sigma = V diag(lambda) V^T the data are
  // independent N(V^T mu, lambda) and gaussian_data gives every term in closed form; the squared
  // error is rotation invariant. Rates are for data quantized to bins of width delta (high-resolution:
  // coding x_k costs h(x_k | ...) - log delta nats), distortions are mean squared errors per coordinate
  // of the best reconstruction E[x_0 | what was received].
  const double delta = 2.0 / (std::ldexp(1.0, static_cast<int>(bits)) - 1.0);
  const double log_delta = std::log(delta);
  const Eigen::SelfAdjointEigenSolver<MatrixXd> eig(Sigma);
  const VectorXd lambda = eig.eigenvalues();
  const MatrixXd V = eig.eigenvectors();
  std::vector<double> emean(Du), estd(Du);
  {
    const VectorXd m = V.transpose() * mu;
    for (std::size_t k = 0; k < Du; ++k) {
      emean[k] = m(static_cast<Index>(k));
      estd[k] = std::sqrt(lambda(static_cast<Index>(k)));
    }
  }
  const diffusion::gaussian_data g(emean, estd);
  const diffusion::noise_schedule s(diffusion::linear_betas(1000, 1e-4, 0.02));
  const std::size_t T = s.size();
  const double dd = static_cast<double>(D);
  // Gaussian: after receiving x_T, ..., x_t (paper t = 1..T) with the true reverse process
  // (Gaussian data: the exact reverse steps are Gaussian with the true variance), the expected
  // cumulative rate is R(t) = E L_T + sum_{s>t} E L_{s-1} = I(x_0; x_t) + KL(q(x_T) || N(0, I)).
  std::vector<double> g_rate(T + 1), g_mse(T + 1);  // index = paper t
  {
    double acc = 0.0;
    for (std::size_t k = 0; k < Du; ++k) acc += g.expected_prior_term(s, k);
    for (std::size_t t = T; t >= 1; --t) {
      if (t < T)  // L_t (code step t) takes the receiver from paper x_{t+1} to x_t
        for (std::size_t k = 0; k < Du; ++k) acc += g.expected_kl_term(s, t, k, std::log(g.true_reverse_variance(s, t, k)));
      g_rate[t] = acc;
      double mse = 0.0;
      for (std::size_t k = 0; k < Du; ++k) mse += g.posterior_variance_x0(k, s[t - 1].sigma);
      g_mse[t] = mse / dd;
    }
  }
  double mismatch = 0.0;
  for (std::size_t k = 0; k < Du; ++k) mismatch += g.prior_mismatch(s, k);
  // The last step x_1 -> x_0 codes the quantized x_0 given x_1: sum_k (h(x_0,k | x_1) - log delta).
  double last_step = 0.0;
  for (std::size_t k = 0; k < Du; ++k)
    last_step += 0.5 * std::log(2.0 * std::numbers::pi * std::numbers::e * g.posterior_variance_x0(k, s[0].sigma)) - log_delta;
  const double g_total = g_rate[1] + last_step;
  // Masking: after revealing k coordinates, rate sum_{j<k} (h(x_j | x_<j) - log delta), distortion the
  // conditional variance of the coordinates not yet sent, tr Cov(x_>=k | x_<k) / D.
  std::vector<double> m_rate(Du + 1, 0.0), m_mse(Du + 1, 0.0);
  std::vector<VectorXd> m_coord(Du + 1);
  for (Index k = 0; k <= D; ++k) {
    const auto ku = static_cast<std::size_t>(k);
    if (k > 0) m_rate[ku] = m_rate[ku - 1] + 0.5 * std::log(2.0 * std::numbers::pi * std::numbers::e * cond[ku - 1].v) - log_delta;
    VectorXd per = VectorXd::Zero(D);
    if (k < D) {
      MatrixXd rest = Sigma.bottomRightCorner(D - k, D - k);
      if (k > 0) {
        const Eigen::LDLT<MatrixXd> lead(Sigma.topLeftCorner(k, k));
        const MatrixXd cross = Sigma.topRightCorner(k, D - k);
        rest -= cross.transpose() * lead.solve(cross);
      }
      per.tail(D - k) = rest.diagonal();
    }
    m_coord[ku] = per;
    m_mse[ku] = per.sum() / dd;
  }
  // Gaussian per-coordinate error at paper t: diag(V diag(Var[x_0|x_t] in the eigenbasis) V^T).
  auto g_coord = [&](std::size_t t) {
    VectorXd pv(D);
    for (std::size_t k = 0; k < Du; ++k) pv(static_cast<Index>(k)) = g.posterior_variance_x0(k, s[t - 1].sigma);
    return VectorXd((V * pv.asDiagonal() * V.transpose()).diagonal());
  };
  // The Gaussian curve at a given rate: the step t whose cumulative rate is nearest below or at r.
  auto g_at_rate = [&](double r) {
    std::size_t t = T;
    while (t > 1 && g_rate[t - 1] <= r) --t;
    return t;
  };

  std::printf("\n4. Rate-distortion on the same data: masking diffusion vs Gaussian diffusion (linear betas, T = %zu)\n", T);
  row_header();
  {
    for (std::size_t t : {std::size_t{1}, std::size_t{100}, std::size_t{500}}) {
      double info = 0.0;
      for (std::size_t k = 0; k < Du; ++k) info += 0.5 * std::log1p(s[t - 1].snr * lambda(static_cast<Index>(k)));
      row("Gaussian R(t) = E L_T + sum_{s>t} E L_{s-1}, t = " + std::to_string(t), g_rate[t], info + mismatch,
          1e-9 * (info + mismatch), "I(x_0;x_t) + KL(q(x_T)||p(x_T))");
    }
    row("Gaussian total rate - masking total rate (nats)", g_total - m_rate[Du], mismatch, 1e-9 * m_rate[Du],
        "prior mismatch (masking: 0)");
    row("masking distortion at rate 0 = Gaussian's at t = T", m_mse[0], g_mse[T], 1e-3 * m_mse[0], "tr Sigma / D");
  }
  const double ln2 = std::numbers::ln2;
  std::printf("\n  Quantization: bins of width %.6g (%ld-bit data on [-1, 1]); rate in bits per vector, distortion\n",
              delta, bits);
  std::printf("  = MSE per coordinate of E[x_0 | received]. Total rate: masking %.3f bits, Gaussian %.3f bits;\n",
              m_rate[Du] / ln2, g_total / ln2);
  std::printf("  the Gaussian process reaches x_1 after %.3f bits and sends the rest (%.3f bits) in its last step.\n",
              g_rate[1] / ln2, last_step / ln2);
  std::printf("\n  %-22s %12s %14s %14s %10s\n", "masking: after", "rate (bits)", "MSE masking", "MSE Gaussian",
              "Gaussian t");
  for (std::size_t k = 0; k < Du; ++k) {
    const std::size_t t = g_at_rate(m_rate[k]);
    std::printf("  %-22s %12.3f %14.6g %14.6g %10zu\n",
                (std::to_string(k) + " coordinate" + (k == 1 ? "" : "s") + " sent").c_str(), m_rate[k] / ln2, m_mse[k],
                g_mse[t], t);
  }
  std::printf("  %-22s %12.3f %14.6g %14s %10s\n", "all sent (lossless)", m_rate[Du] / ln2, 0.0, "0 at its total", "0");
  // Per-coordinate error at the rate of half the coordinates.
  {
    const std::size_t half = Du / 2, t = g_at_rate(m_rate[half]);
    const VectorXd gc = g_coord(t);
    std::printf("\n  Per-coordinate MSE at the rate of %zu coordinates (%.3f bits): masking sends coordinates one by\n",
                half, m_rate[half] / ln2);
    std::printf("  one (error 0 or the conditional variance), the Gaussian process refines all at once (t = %zu):\n", t);
    std::printf("  %-10s", "coordinate");
    for (std::size_t k = 0; k < Du; ++k) std::printf(" %8zu", k + 1);
    std::printf("\n  %-10s", "masking");
    for (std::size_t k = 0; k < Du; ++k) std::printf(" %8.5f", m_coord[half](static_cast<Index>(k)));
    std::printf("\n  %-10s", "Gaussian");
    for (std::size_t k = 0; k < Du; ++k) std::printf(" %8.5f", gc(static_cast<Index>(k)));
    std::printf("\n  %-10s", "prior");
    for (std::size_t k = 0; k < Du; ++k) std::printf(" %8.5f", Sigma(static_cast<Index>(k), static_cast<Index>(k)));
    std::printf("\n");
  }
  std::printf("\n  The Gaussian curve at some steps:\n  %-8s %12s %14s\n", "t", "rate (bits)", "MSE");
  for (std::size_t t : {T, std::size_t{800}, std::size_t{600}, std::size_t{400}, std::size_t{300}, std::size_t{200},
                        std::size_t{100}, std::size_t{50}, std::size_t{20}, std::size_t{5}, std::size_t{1}})
    if (t <= T) std::printf("  %-8zu %12.3f %14.6g\n", t, g_rate[t] / ln2, g_mse[t]);

  if (!plot_path.empty()) {
    ex::plot::figure f;
    f.title = "Rate-distortion on correlated Gaussian data (D = " + std::to_string(D) + ")";
    f.width = 800;
    f.height = 520;
    ex::plot::panel& p = f.panels.emplace_back();
    p.xlabel = "rate (bits per vector)";
    p.ylabel = "MSE per coordinate";
    p.logy = true;
    ex::plot::curve gc{"Gaussian diffusion (x_T ... x_1)", {}, {}};
    for (std::size_t t = T; t >= 1; --t) {
      gc.x.push_back(g_rate[t] / ln2);
      gc.y.push_back(g_mse[t]);
    }
    ex::plot::curve mc{"masking diffusion = autoregressive", {}, {}, "linespoints lw 2 pt 7"};
    for (std::size_t k = 0; k < Du; ++k) {
      mc.x.push_back(m_rate[k] / ln2);
      mc.y.push_back(m_mse[k]);
    }
    p.curves.push_back(gc);
    p.curves.push_back(mc);
    p.commands = "set key top right";
    ex::plot::save(f, plot_path);
  }

  std::printf("\n%s: %d check(s) failed\n", failures ? "FAILED" : "all checks passed", failures);
  return failures ? 1 : 0;
}
