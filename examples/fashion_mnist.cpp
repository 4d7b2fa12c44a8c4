// DDPM (Ho et al. 2020) Figures 5, 6 and 8 on Fashion-MNIST, with exact denoisers instead of
// a trained network:
//
//  (a) progressive generation (Fig. 6): ancestral sampling (Algorithm 2) with the exact
//      denoiser of the empirical distribution of a set of training images, and the
//      prediction x̂₀ = E[x₀|x_t] along the way;
//  (b) progressive lossy compression (§4.3, Fig. 5): the rate Σ L_t (bits/dim) sent from T down
//      to t against the distortion RMSE(x̂₀(x_t), x₀) on test images, for a Gaussian model of the
//      training set (PCA: top-k directions and an isotropic residual), where both are closed forms;
//  (c) interpolation (§4.3, Fig. 8): two test images encoded by q(x_t|x₀) with shared noise,
//      mixed linearly in x_t, decoded by the reverse process of either model.
//
// Checks print pass/FAIL; the exit status is 1 if any fails, 2 for bad options or missing data.
//
//   fashion_mnist [--data-dir DIR] [--out-dir DIR] [--train N] [--empirical N] [--test N] ...  (--help)
#include <diffusion/ddpm.hpp>
#include <diffusion/mixture.hpp>
#include <diffusion/noise.hpp>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/idx.hpp"
#include "common/image.hpp"
#include "common/plot.hpp"

namespace {

using Eigen::Index;
using row_matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using diffusion::prediction;

Index idx(std::size_t i) { return static_cast<Index>(i); }

int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) ++failures;
  std::printf("  [%s] %s\n", ok ? "pass" : "FAIL", what.c_str());
}

// The first `count` images of a split as an N × D double matrix in [−1, 1].
row_matrix as_matrix(const ex::idx::labeled_images& d, std::size_t count) {
  count = std::min(count, d.count);
  row_matrix m(idx(count), idx(d.dim()));
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t k = 0; k < d.dim(); ++k) m(idx(i), idx(k)) = static_cast<double>(d.pixels[i * d.dim() + k]);
  return m;
}

// ---------------------------------------------------------------------------------------------
// A Gaussian model of the data, x₀ ~ N(μ, U diag(λ) Uᵀ): the principal directions U of the
// training covariance, its top-k eigenvalues, and the mean of the others for the remaining
// directions (probabilistic PCA, Tipping & Bishop 1999). In the rotated, centred coordinates
// y = Uᵀ(x − c μ) the forward process stays x_t = c x₀ + d ε with ε ~ N(0, I), so the model is the
// library's diagonal gaussian_data there, with mean 0 and standard deviations √λ.
struct pca_gaussian {
  Eigen::VectorXd mean;   // μ (D)
  Eigen::MatrixXd basis;  // U (D × D), columns by decreasing variance
  Eigen::VectorXd var;    // λ (D): k fitted eigenvalues, then the residual mean
  Eigen::VectorXd eigenvalues;  // all D eigenvalues of the training covariance, decreasing
  std::size_t k = 0;

  static pca_gaussian fit(const row_matrix& x, std::size_t k) {
    pca_gaussian g;
    const auto D = static_cast<std::size_t>(x.cols());
    g.k = std::min(k, D);
    g.mean = x.colwise().mean().transpose();
    const Eigen::MatrixXd centred = x.rowwise() - g.mean.transpose();
    const Eigen::MatrixXd cov = (centred.transpose() * centred) / static_cast<double>(x.rows());
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(cov);
    g.basis = es.eigenvectors().rowwise().reverse();
    g.eigenvalues = es.eigenvalues().reverse().cwiseMax(0.0);
    g.var = g.eigenvalues;
    if (g.k < D) {
      const double residual = g.eigenvalues.tail(idx(D - g.k)).mean();
      g.var.tail(idx(D - g.k)).setConstant(residual);
    }
    // A floor of the variance of one gray level's uniform quantization noise, (2/255)²/12, so
    // that no direction is a point mass (the data are quantized, their covariance may be singular).
    g.var = g.var.cwiseMax(std::pow(2.0 / 255.0, 2) / 12.0);
    return g;
  }
  [[nodiscard]] std::size_t dim() const { return static_cast<std::size_t>(mean.size()); }
  // The library's exact denoiser in the rotated coordinates.
  [[nodiscard]] diffusion::gaussian_data rotated(prediction kind) const {
    std::vector<double> sd(dim());
    for (std::size_t i = 0; i < dim(); ++i) sd[i] = std::sqrt(var(idx(i)));
    return diffusion::gaussian_data(std::vector<double>(dim(), 0.0), sd, kind);
  }
};

// The exact denoiser of the Gaussian model in pixel space: rotate, denoise, rotate back.
class pca_denoiser {
 public:
  explicit pca_denoiser(const pca_gaussian& g) : g_(&g), rotated_(g.rotated(prediction::sample)) {}
  [[nodiscard]] prediction predicts() const { return prediction::sample; }
  template <class T, class Context>
  void operator()(const diffusion::denoiser_input<T, Context>& in, std::span<T> out) const {
    const std::size_t rows = in.rows(), D = g_->dim();
    row_matrix y(idx(rows), idx(D));
    for (std::size_t r = 0; r < rows; ++r) {
      const double c = std::isinf(in.sigma[r]) ? 0.0 : 1.0 / std::sqrt(1.0 + in.sigma[r] * in.sigma[r]);
      Eigen::VectorXd x(idx(D));
      for (std::size_t k = 0; k < D; ++k) x(idx(k)) = static_cast<double>(in.x[r * D + k]);
      y.row(idx(r)) = (g_->basis.transpose() * (x - c * g_->mean)).transpose();
    }
    std::vector<double> y0(rows * D);
    const std::vector<double> yv(y.data(), y.data() + rows * D);
    rotated_(diffusion::denoiser_input<double>{yv, in.timesteps, in.sigma}, std::span<double>(y0));
    const Eigen::Map<const row_matrix> Y0(y0.data(), idx(rows), idx(D));
    const row_matrix x0 = (Y0 * g_->basis.transpose()).rowwise() + g_->mean.transpose();
    for (std::size_t i = 0; i < rows * D; ++i) out[i] = static_cast<T>(x0.data()[i]);
  }

 private:
  const pca_gaussian* g_;
  diffusion::gaussian_data rotated_;
};

// Every row draws the noise of stream 0: the columns of an interpolation share their noise.
struct shared_noise {
  diffusion::philox_normal source;
  template <class T>
  void fill(std::uint64_t, std::uint64_t step, std::uint64_t offset, std::span<T> out) const {
    source.fill(0, step, offset, out);
  }
};

// Root mean square over all elements, times `scale`.
double rms(const Eigen::Ref<const row_matrix>& a, double scale = 1.0) {
  return scale * std::sqrt(a.squaredNorm() / static_cast<double>(a.size()));
}

// For each row of q: the index of the nearest row of data and its RMSE.
void nearest_rows(const row_matrix& q, const row_matrix& data, std::vector<std::size_t>& which, std::vector<double>& err) {
  const Eigen::VectorXd n2 = data.rowwise().squaredNorm();
  const row_matrix dots = q * data.transpose();
  which.assign(static_cast<std::size_t>(q.rows()), 0);
  err.assign(static_cast<std::size_t>(q.rows()), 0.0);
  for (Index r = 0; r < q.rows(); ++r) {
    Index best = 0;
    (n2.transpose() - 2.0 * dots.row(r)).minCoeff(&best);
    which[static_cast<std::size_t>(r)] = static_cast<std::size_t>(best);
    err[static_cast<std::size_t>(r)] = rms(q.row(r) - data.row(best));
  }
}

// The 0-based timesteps that DDPM ancestral sampling visits from paper time t down to 1:
// `steps` of them, evenly spaced, the first t − 1 and the last 0.
diffusion::timestep_sequence steps_from(std::size_t t, std::size_t steps, std::size_t T) {
  steps = std::clamp<std::size_t>(steps, 1, t);
  std::vector<std::size_t> v;
  for (std::size_t i = 0; i < steps; ++i) {
    const double y = steps == 1 ? 0.0 : static_cast<double>(t - 1) * (1.0 - static_cast<double>(i) / static_cast<double>(steps - 1));
    const auto s = static_cast<std::size_t>(std::lround(y));
    if (v.empty() || s < v.back()) v.push_back(s);
  }
  if (v.back() != 0) v.push_back(0);
  return diffusion::timestep_sequence(std::move(v), T);
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "fashion_mnist",
               "DDPM Fig. 5, 6, 8 on Fashion-MNIST with exact denoisers: progressive generation, rate-distortion, "
               "interpolation.");
  const std::string data_dir = args.text("--data-dir", "/usr/share/datasets/fashion-mnist",
                                         "directory of the Fashion-MNIST .gz files (Debian: dataset-fashion-mnist)");
  const std::string out_dir = args.text("--out-dir", "fashion_mnist_out", "where the PNGs and plot data go");
  const long train_n = args.integer("--train", 10000, "training images for the Gaussian (PCA) model (paper scale: 60000)");
  const long emp_n = args.integer("--empirical", 2000, "training images of the empirical distribution (60000: all)");
  const long test_n = args.integer("--test", 1000, "test images for the rate-distortion table (10000: all)");
  const long pca_k = args.integer("--pca-dims", 256, "principal directions of the Gaussian model (the rest isotropic)");
  const long samples = args.integer("--samples", 8, "samples of the progressive-generation figure");
  const long steps = args.integer("--steps", 1000, "ancestral sampling steps (1000: the paper's full chain)");
  const long interp_steps = args.integer("--interp-steps", 50, "reverse steps of each interpolation decode");
  const long mc = args.integer("--mc", 200, "test images of the Monte Carlo checks of the closed forms");
  const long seed = args.integer("--seed", 2020, "noise seed");
  args.finish();
  if (train_n < 100 || emp_n < 2 || test_n < 10 || pca_k < 1 || samples < 1 || steps < 1 || steps > 1000 ||
      interp_steps < 1 || mc < 10 || seed < 0) {
    std::fprintf(stderr, "fashion_mnist: an option is out of range (try --help)\n");
    return 2;
  }
  const auto N_train = static_cast<std::size_t>(std::max(train_n, emp_n));
  const ex::idx::labeled_images train = ex::idx::load_fashion_mnist_or_exit(data_dir, "train", N_train, "fashion_mnist");
  const ex::idx::labeled_images test = ex::idx::load_fashion_mnist_or_exit(data_dir, "t10k", static_cast<std::size_t>(test_n), "fashion_mnist");
  const std::size_t D = train.dim(), H = train.rows, W = train.cols;
  const std::size_t T = 1000;
  const diffusion::noise_schedule sched(diffusion::linear_betas(T, 1e-4, 0.02));  // DDPM §4
  std::printf("Fashion-MNIST from %s: %zu training, %zu test images of %zu x %zu, scaled to [-1, 1].\n", data_dir.c_str(),
              train.count, test.count, H, W);
  std::printf("Schedule: DDPM linear betas 1e-4 .. 0.02, T = %zu. Paper time t = 0-based step + 1.\n", T);

  // ---------------------------------------------------------------------------------------
  // (a) Progressive generation with the empirical-data denoiser (DDPM Fig. 6).
  const row_matrix emp_x = as_matrix(train, static_cast<std::size_t>(emp_n));
  const auto rows = static_cast<std::size_t>(samples);
  std::printf("\n(a) Progressive generation (DDPM Fig. 6, Algorithm 2, sigma_t^2 = beta-tilde): %zu samples, %ld steps,\n"
              "    exact denoiser E[x0|x_t] of the empirical distribution of %zu training images.\n",
              rows, steps, static_cast<std::size_t>(emp_x.rows()));
  {
    const diffusion::empirical_data emp(std::vector<double>(emp_x.data(), emp_x.data() + emp_x.size()), D,
                                        prediction::sample);
    const std::vector<std::size_t> shown = {1000, 900, 800, 700, 600, 500, 400, 300, 200, 100};
    const std::size_t cols = shown.size() + 2;  // x̂₀ at each shown t, the sample, its nearest training image
    std::vector<double> grid(rows * cols * D, 0.0);
    std::vector<bool> taken(shown.size(), false);
    std::vector<double> x(rows * D);
    diffusion::philox_normal noise(static_cast<std::uint64_t>(seed));
    diffusion::ddpm_options opt;
    opt.variance = diffusion::variance_type::fixed_small;
    if (steps < 1000)
      opt.timesteps = diffusion::inference_timesteps(T, static_cast<std::size_t>(steps), diffusion::timestep_spacing::linspace);
    ex::progress prog("sampling", static_cast<std::size_t>(steps));
    diffusion::sampler_hooks<double> hooks;
    double x0_at_T_rms = -1.0;
    hooks.on_step = [&](const diffusion::step_info<double>& s) {
      const auto t = static_cast<std::size_t>(s.timestep) + 1;
      for (std::size_t c = 0; c < shown.size(); ++c)
        if (!taken[c] && t <= shown[c]) {
          taken[c] = true;
          for (std::size_t r = 0; r < rows; ++r)
            std::copy_n(s.x0_pred.begin() + static_cast<std::ptrdiff_t>(r * D), D, grid.begin() + static_cast<std::ptrdiff_t>((r * cols + c) * D));
        }
      if (s.index == 1) {  // x̂₀ at t = T: nearly the data mean (c = sqrt(alpha-bar_T) = 0.0064)
        const Eigen::Map<const row_matrix> p(s.x0_pred.data(), idx(rows), idx(D));
        x0_at_T_rms = rms(p.rowwise() - emp_x.colwise().mean(), 127.5);
      }
      prog.update(s.index);
      return true;
    };
    diffusion::ddpm_sample(sched, emp, x, rows, noise, opt, hooks);
    const Eigen::Map<const row_matrix> final_x(x.data(), idx(rows), idx(D));
    std::vector<std::size_t> nn;
    std::vector<double> nn_err;
    nearest_rows(final_x, emp_x, nn, nn_err);
    double worst = 0.0;
    std::printf("    sample  nearest training image  its class     RMSE to it [0,255]\n");
    for (std::size_t r = 0; r < rows; ++r) {
      std::copy_n(x.begin() + static_cast<std::ptrdiff_t>(r * D), D, grid.begin() + static_cast<std::ptrdiff_t>((r * cols + shown.size()) * D));
      for (std::size_t k = 0; k < D; ++k) grid[(r * cols + shown.size() + 1) * D + k] = emp_x(idx(nn[r]), idx(k));
      std::printf("    %6zu  %22zu  %-12s  %.3f\n", r, nn[r], ex::idx::fashion_mnist_classes[static_cast<std::size_t>(train.labels[nn[r]])],
                  127.5 * nn_err[r]);
      worst = std::max(worst, 127.5 * nn_err[r]);
    }
    const std::string png = out_dir + "/fashion_mnist_progressive.png";
    ex::write_grid_png(png, grid, rows, cols, H, W, {.scale = 2});
    std::printf("    wrote %s: rows = samples; columns = x0-hat at t = 1000, 900, ..., 100, the sample, its nearest\n"
                "    training image.\n", png.c_str());
    check(x0_at_T_rms < 10.0, "x0-hat at t = T is the data mean to within " + std::to_string(x0_at_T_rms) +
                                  " gray levels RMS (< 10)");
    check(worst < 2.0, "every sample is a training image (memorization of the exact empirical denoiser): "
                       "worst RMSE to the nearest one " + std::to_string(worst) + " gray levels (< 2)");
  }

  // ---------------------------------------------------------------------------------------
  // (b) Rate-distortion of progressive lossy compression under the Gaussian model (DDPM §4.3, Fig. 5).
  const row_matrix train_x = as_matrix(train, static_cast<std::size_t>(train_n));
  const row_matrix test_x = as_matrix(test, test.count);
  const pca_gaussian g = pca_gaussian::fit(train_x, static_cast<std::size_t>(pca_k));
  {
    const double top = g.eigenvalues.head(idx(g.k)).sum(), all = g.eigenvalues.sum();
    std::printf("\n(b) Gaussian model of %zu training images: top %zu principal directions hold %.2f %% of the variance,\n"
                "    residual variance per direction %.3g (on [-1, 1]).\n",
                static_cast<std::size_t>(train_x.rows()), g.k, 100.0 * top / all, g.var(idx(D - 1)));
  }
  // Test-set second moments in the rotated coordinates: m2_i = mean over test images of (Uᵀ(x₀ − μ))_i².
  const row_matrix test_y = (test_x.rowwise() - g.mean.transpose()) * g.basis;
  const Eigen::VectorXd m2 = test_y.colwise().squaredNorm().transpose() / static_cast<double>(test_y.rows());
  const diffusion::gaussian_data rotated = g.rotated(prediction::sample);
  // Closed forms per 0-based step j (paper t = j + 1), summed over the D directions:
  //   x̂₀ = a ⊙ y_t with a_i = c λ_i/(c² λ_i + d²), so Δ = y₀ − x̂₀ = (1 − c a) y₀ − d a ε and
  //   E Δ_i² = (1 − c a_i)² m2_i + d² a_i²;
  //   L_{j} = Σ_i KL(N(c0 y₀ + ct y_t, β̃) ‖ N(c0 x̂₀ + ct y_t, v_i)), v_i the model's true reverse
  //   variance β̃ + c0² Var[x₀|x_t]: the KL is quadratic in the mean difference c0 Δ_i, so its
  //   expectation is gaussian_kl with the root-mean-square difference.
  std::vector<double> sq_err(T), kl(T, 0.0);
  for (std::size_t j = 0; j < T; ++j) {
    const diffusion::schedule_step& st = sched[j];
    double e = 0.0, k = 0.0;
    for (std::size_t i = 0; i < D; ++i) {
      const double lam = g.var(idx(i));
      const double c = st.sqrt_alpha_bar, d2 = st.one_minus_alpha_bar;
      const double a = c * lam / (st.alpha_bar * lam + d2);
      const double ed2 = (1.0 - c * a) * (1.0 - c * a) * m2(idx(i)) + d2 * a * a;
      e += ed2;
      if (j >= 1) {
        const double v = rotated.true_reverse_variance(sched, j, i);
        k += diffusion::gaussian_kl(0.0, std::log(st.posterior_variance), st.posterior_mean_coef_x0 * std::sqrt(ed2), std::log(v));
      }
    }
    sq_err[j] = e;
    kl[j] = k;
  }
  // L_T, mean over test images (library prior_term: nats per dimension).
  double prior = 0.0;
  for (Index r = 0; r < test_x.rows(); ++r) {
    const Eigen::RowVectorXd row = test_x.row(r);
    prior += diffusion::prior_term(sched, row);
  }
  prior /= static_cast<double>(test_x.rows());
  const double to_bits = 1.0 / (static_cast<double>(D) * std::numbers::ln2);  // nats (sum over D) → bits/dim
  // rate(t) = L_T + Σ_{j ≥ t} L_j (the KL terms of the steps from T down to t), distortion(t) = RMSE of x̂₀(x_t).
  std::vector<double> rate(T + 1), dist(T + 1);
  double acc = prior * static_cast<double>(D);
  rate[T] = acc * to_bits;
  for (std::size_t t = T - 1; t >= 1; --t) {
    acc += kl[t];
    rate[t] = acc * to_bits;
  }
  rate[0] = rate[1];
  for (std::size_t t = 1; t <= T; ++t) dist[t] = 127.5 * std::sqrt(sq_err[t - 1] / static_cast<double>(D));
  dist[0] = 0.0;
  // L_0 with DDPM's discretized decoder (Eq. 13), by Monte Carlo over test images (library vlb_term).
  const auto M = std::min<std::size_t>(static_cast<std::size_t>(mc), test.count);
  const pca_denoiser pd(g);
  double l0 = 0.0;
  {
    diffusion::philox_normal noise(static_cast<std::uint64_t>(seed) + 1);
    std::vector<double> x0(D), eps(D), xt(D), x0hat(D);
    const double sig[1] = {sched[0].sigma}, ts[1] = {0.0};
    for (std::size_t m = 0; m < M; ++m) {
      for (std::size_t k = 0; k < D; ++k) x0[k] = test_x(idx(m), idx(k));
      noise.fill(m, 0, 0, std::span<double>(eps));
      diffusion::q_sample(sched, 0, x0, eps, xt);
      pd(diffusion::denoiser_input<double>{xt, ts, sig}, std::span<double>(x0hat));
      l0 += diffusion::vlb_term(sched, 0, x0, xt, x0hat, prediction::sample);
    }
    l0 /= static_cast<double>(M);
  }
  const double l0_bits = l0 / std::numbers::ln2;
  std::printf("\n    Rate and distortion on %zu test images (closed forms; DDPM Fig. 5):\n", static_cast<std::size_t>(test_x.rows()));
  std::printf("    %6s  %16s  %18s\n", "t", "rate [bits/dim]", "RMSE [0,255]");
  const std::vector<std::size_t> table_t = {1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 50, 20, 10, 5, 1, 0};
  for (std::size_t t : table_t) std::printf("    %6zu  %16.5f  %18.4f\n", t, rate[t], dist[t]);
  std::printf("    L_T = %.3g bits/dim; rate at t = 1 (L_1 + ... + L_T) %.4f bits/dim; L_0 (discretized decoder, Monte Carlo\n"
              "    over %zu images) %.4f bits/dim; total bound %.4f bits/dim.\n"
              "    DDPM §4.3 on CIFAR-10 (trained network): rate 1.78, distortion 1.97 bits/dim, total 3.75 bits/dim.\n",
              rate[T], rate[1], M, l0_bits, rate[1] + l0_bits);
  {
    ex::plot::figure f;
    f.title = "Fashion-MNIST test set, Gaussian (PCA) model: rate-distortion vs time (cf. DDPM Fig. 5)";
    f.columns = 3;
    f.width = 1350;
    f.height = 400;
    std::vector<double> tt, rr, dd;
    for (std::size_t t = 0; t <= T; ++t) {
      tt.push_back(static_cast<double>(t));
      rr.push_back(rate[t]);
      dd.push_back(dist[t]);
    }
    auto& p1 = f.panels.emplace_back();
    p1.title = "Distortion";
    p1.xlabel = "reverse process steps (T - t)";
    p1.ylabel = "RMSE [0,255]";
    std::vector<double> steps_done;
    for (double t : tt) steps_done.push_back(static_cast<double>(T) - t);
    p1.curves.push_back({"", steps_done, dd});
    auto& p2 = f.panels.emplace_back();
    p2.title = "Rate";
    p2.xlabel = "reverse process steps (T - t)";
    p2.ylabel = "rate (bits/dim)";
    p2.curves.push_back({"", steps_done, rr});
    auto& p3 = f.panels.emplace_back();
    p3.title = "Rate-distortion";
    p3.xlabel = "rate (bits/dim)";
    p3.ylabel = "RMSE [0,255]";
    p3.curves.push_back({"", rr, dd});
    ex::plot::save(f, out_dir + "/fashion_mnist_rate_distortion.png");
  }
  {
    bool rate_monotone = true, dist_monotone = true;
    for (std::size_t t = 1; t < T; ++t) {
      rate_monotone = rate_monotone && rate[t] >= rate[t + 1];
      dist_monotone = dist_monotone && dist[t] <= dist[t + 1];
    }
    check(rate_monotone, "rate grows as the receiver goes from t = T to t = 1");
    check(std::abs(rate[T] - 1.0e-5) < 1.0e-5, "rate at t = T is L_T = " + std::to_string(rate[T]) +
                                                     " bits/dim, about 1e-5 as DDPM §4 states for the linear schedule");
    check(dist_monotone, "distortion grows with t");
    const double noise_1 = 127.5 * sched[0].sqrt_one_minus_alpha_bar;
    check(dist[1] <= noise_1, "RMSE at t = 1 is " + std::to_string(dist[1]) + " gray levels, below the noise of x_1 (" +
                                  std::to_string(noise_1) + "); at t = 0 it is 0");
  }
  // Monte Carlo checks of the closed forms with the library: the KL terms via vlb_term in the rotated
  // coordinates (a learned per-direction log-variance carries v_i), the distortion via the denoiser.
  {
    diffusion::philox_normal noise(static_cast<std::uint64_t>(seed) + 2);
    diffusion::vlb_options vopt;
    vopt.variance = diffusion::variance_type::learned;
    for (std::size_t j : {9ul, 99ul, 499ul}) {
      std::vector<double> y0(D), eps(D), yt(D), out(2 * D);
      double s1 = 0.0, s2 = 0.0, e1 = 0.0;
      const double sig[1] = {sched[j].sigma}, ts[1] = {static_cast<double>(j)};
      for (std::size_t m = 0; m < M; ++m) {
        for (std::size_t k = 0; k < D; ++k) y0[k] = test_y(idx(m), idx(k));
        noise.fill(m, j, 0, std::span<double>(eps));
        diffusion::q_sample(sched, j, y0, eps, yt);
        rotated(diffusion::denoiser_input<double>{yt, ts, sig}, std::span<double>(out).first(D));
        double e = 0.0;
        for (std::size_t k = 0; k < D; ++k) {
          out[D + k] = std::log(rotated.true_reverse_variance(sched, j, k));
          e += (out[k] - y0[k]) * (out[k] - y0[k]);
        }
        const double v = diffusion::vlb_term(sched, j, y0, yt, out, prediction::sample, vopt) * static_cast<double>(D);
        s1 += v;
        s2 += v * v;
        e1 += e;
      }
      const double mean = s1 / static_cast<double>(M);
      const double se = std::sqrt(std::max(s2 / static_cast<double>(M) - mean * mean, 0.0) / static_cast<double>(M - 1));
      // The Monte Carlo uses the first M test images, the closed form all of them: compare with
      // the closed form over the same M images (m2 of those rows).
      const Eigen::VectorXd m2m = test_y.topRows(idx(M)).colwise().squaredNorm().transpose() / static_cast<double>(M);
      double kl_m = 0.0, e_m = 0.0;
      const diffusion::schedule_step& st = sched[j];
      for (std::size_t i = 0; i < D; ++i) {
        const double lam = g.var(idx(i)), c = st.sqrt_alpha_bar, d2 = st.one_minus_alpha_bar;
        const double a = c * lam / (st.alpha_bar * lam + d2);
        const double ed2 = (1.0 - c * a) * (1.0 - c * a) * m2m(idx(i)) + d2 * a * a;
        e_m += ed2;
        kl_m += diffusion::gaussian_kl(0.0, std::log(st.posterior_variance), st.posterior_mean_coef_x0 * std::sqrt(ed2),
                                       std::log(rotated.true_reverse_variance(sched, j, i)));
      }
      const double rmse_mc = 127.5 * std::sqrt(e1 / static_cast<double>(M * D)), rmse_cf = 127.5 * std::sqrt(e_m / static_cast<double>(D));
      char buf[300];
      std::snprintf(buf, sizeof buf, "t = %zu: KL term, Monte Carlo (vlb_term) %.5g +- %.2g nats vs closed form %.5g", j + 1,
                    mean, se, kl_m);
      check(std::abs(mean - kl_m) <= 5.0 * se + 1e-9 * kl_m, buf);
      std::snprintf(buf, sizeof buf, "t = %zu: RMSE, Monte Carlo %.4f vs closed form %.4f gray levels", j + 1, rmse_mc, rmse_cf);
      check(std::abs(rmse_mc - rmse_cf) <= 0.05 * rmse_cf, buf);
    }
  }

  // ---------------------------------------------------------------------------------------
  // (c) Interpolation (DDPM §4.3, Fig. 8): x̄_t = (1 − λ) x_t + λ x'_t with shared noise, decoded.
  {
    const std::vector<std::size_t> ts = {100, 250, 500, 750, 1000};
    const std::size_t lam_n = 11, cols = lam_n + 2;
    const std::size_t ia = 0, ib = 1;  // two test images
    std::printf("\n(c) Interpolation of test images %zu (%s) and %zu (%s), lambda = 0, 0.1, ..., 1; decoded with %ld\n"
                "    reverse steps by the Gaussian model (upper block) and the empirical denoiser (lower block).\n",
                ia, ex::idx::fashion_mnist_classes[static_cast<std::size_t>(test.labels[ia])], ib,
                ex::idx::fashion_mnist_classes[static_cast<std::size_t>(test.labels[ib])], interp_steps);
    const diffusion::empirical_data emp(std::vector<double>(emp_x.data(), emp_x.data() + emp_x.size()), D,
                                        prediction::sample);
    std::vector<double> grid(2 * ts.size() * cols * D, 0.0);
    std::vector<double> xa(D), xb(D), eps(D), xta(D), xtb(D);
    for (std::size_t k = 0; k < D; ++k) {
      xa[k] = test_x(idx(ia), idx(k));
      xb[k] = test_x(idx(ib), idx(k));
    }
    diffusion::philox_normal enc(static_cast<std::uint64_t>(seed) + 3);
    enc.fill(0, 0, 0, std::span<double>(eps));
    double endpoint_emp_nn = 0.0;
    bool endpoints_nearer = true;
    ex::progress prog("interpolating", 2 * ts.size());
    for (std::size_t block = 0; block < 2; ++block)
      for (std::size_t ri = 0; ri < ts.size(); ++ri) {
        const std::size_t t = ts[ri];
        diffusion::q_sample(sched, t - 1, xa, eps, xta);
        diffusion::q_sample(sched, t - 1, xb, eps, xtb);
        std::vector<double> x(lam_n * D);
        for (std::size_t l = 0; l < lam_n; ++l) {
          const double lam = static_cast<double>(l) / static_cast<double>(lam_n - 1);
          for (std::size_t k = 0; k < D; ++k) x[l * D + k] = (1.0 - lam) * xta[k] + lam * xtb[k];
        }
        shared_noise noise{diffusion::philox_normal(static_cast<std::uint64_t>(seed) + 4)};
        diffusion::ddpm_options opt;
        opt.draw_initial_noise = false;
        opt.timesteps = steps_from(t, static_cast<std::size_t>(interp_steps), T);
        if (block == 0) {
          pca_denoiser model(g);
          diffusion::ddpm_sample(sched, model, x, lam_n, noise, opt);
        } else {
          diffusion::ddpm_sample(sched, emp, x, lam_n, noise, opt);
        }
        const std::size_t row = block * ts.size() + ri;
        std::copy(xa.begin(), xa.end(), grid.begin() + static_cast<std::ptrdiff_t>((row * cols) * D));
        std::copy(x.begin(), x.end(), grid.begin() + static_cast<std::ptrdiff_t>((row * cols + 1) * D));
        std::copy(xb.begin(), xb.end(), grid.begin() + static_cast<std::ptrdiff_t>((row * cols + cols - 1) * D));
        const Eigen::Map<const row_matrix> dec(x.data(), idx(lam_n), idx(D));
        const Eigen::Map<const Eigen::RowVectorXd> A(xa.data(), idx(D)), B(xb.data(), idx(D));
        const double ea = rms(dec.row(0) - A, 127.5), eb = rms(dec.row(idx(lam_n - 1)) - B, 127.5);
        std::vector<std::size_t> nn;
        std::vector<double> nn_err;
        nearest_rows(dec, emp_x, nn, nn_err);
        double worst_nn = 0.0;
        for (double v : nn_err) worst_nn = std::max(worst_nn, 127.5 * v);
        std::printf("    %-9s t = %4zu: endpoint RMSE to the originals %6.2f, %6.2f; decoded images' worst RMSE to a\n"
                    "                       training image %6.2f gray levels\n",
                    block == 0 ? "Gaussian" : "empirical", t, ea, eb, worst_nn);
        if (t <= 250) {
          const double ea_b = rms(dec.row(0) - B, 127.5), eb_a = rms(dec.row(idx(lam_n - 1)) - A, 127.5);
          endpoints_nearer = endpoints_nearer && ea < ea_b && eb < eb_a;
        }
        if (t == ts.front() && block == 1) endpoint_emp_nn = worst_nn;
        prog.update(row + 1);
      }
    const std::string png = out_dir + "/fashion_mnist_interpolation.png";
    ex::write_grid_png(png, grid, 2 * ts.size(), cols, H, W, {.scale = 2});
    std::printf("    wrote %s: rows t = 100, 250, 500, 750, 1000 (Gaussian), then the same (empirical);\n"
                "    columns: source, lambda = 0 ... 1, source.\n", png.c_str());
    check(endpoints_nearer, "t = 100 and 250, both models: the decoded lambda = 0 is nearer image A than image B, "
                            "and lambda = 1 nearer B than A");
    check(endpoint_emp_nn < 2.0, "empirical denoiser, t = 100: every decoded image is a training image (worst RMSE " +
                                     std::to_string(endpoint_emp_nn) + " gray levels < 2)");
  }

  std::printf("\n%s: %d check(s) failed\n", failures ? "FAIL" : "OK", failures);
  return failures ? 1 : 0;
}
