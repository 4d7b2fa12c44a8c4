// The structure of Latent Diffusion (Rombach et al. 2022) in miniature, on Fashion-MNIST:
//
//   1. an autoencoder (here PCA, fitted with Eigen) maps 28×28 images to a small latent z;
//   2. latents are scaled by 1/std so they have unit variance, as Stable Diffusion's 0.18215;
//   3. diffusion runs in latent space with the scaled_linear schedule (β from 0.00085 to 0.012);
//   4. class-conditional sampling with classifier-free guidance (Ho & Salimans 2022): the
//      conditional denoiser reads the class from denoiser_input::context; here both denoisers are
//      exact ones of Gaussian mixtures fitted in latent space (k-means components per class, and
//      the mixture of all of them for the unconditional one);
//   5. samples are decoded back to images.
//
// The check: a nearest-class-mean classifier in latent space agrees with the requested class more
// often as the guidance scale w grows. Exit status 1 if it does not, 2 for bad options or missing data.
//
//   latent_diffusion [--data-dir DIR] [--out-dir DIR] [--train N] [--latent K] ...  (--help)
#include <diffusion/betas.hpp>
#include <diffusion/guidance.hpp>
#include <diffusion/mixture.hpp>
#include <diffusion/noise.hpp>
#include <diffusion/sampler_ddpm.hpp>
#include <diffusion/schedule.hpp>
#include <diffusion/timesteps.hpp>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/idx.hpp"
#include "common/image.hpp"

namespace {

using Eigen::Index;
using row_matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using diffusion::prediction;

Index idx(std::size_t i) { return static_cast<Index>(i); }

// ---------------------------------------------------------------------------------------------
// The pluggable first stage: anything that encodes rows of images to rows of latents and back.
// A VAE or VQ-GAN (the LDM paper's first stages) would satisfy the same concept.
template <class A>
concept autoencoder = requires(const A& a, const row_matrix& x) {
  { a.data_dim() } -> std::convertible_to<std::size_t>;
  { a.latent_dim() } -> std::convertible_to<std::size_t>;
  { a.encode(x) } -> std::convertible_to<row_matrix>;  // rows × data_dim → rows × latent_dim
  { a.decode(x) } -> std::convertible_to<row_matrix>;  // rows × latent_dim → rows × data_dim
};

// PCA as an autoencoder: z = U_kᵀ(x − μ), x̂ = μ + U_k z, with U_k the top-k principal directions
// of the training images (the best linear autoencoder in squared error).
class pca_autoencoder {
 public:
  pca_autoencoder(const row_matrix& x, std::size_t k) {
    mean_ = x.colwise().mean();
    const Eigen::MatrixXd centred = x.rowwise() - mean_;
    const Eigen::MatrixXd cov = centred.transpose() * centred / static_cast<double>(x.rows());
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(cov);
    const Index D = x.cols();
    basis_ = es.eigenvectors().rightCols(idx(k)).rowwise().reverse();
    explained_ = es.eigenvalues().tail(idx(k)).sum() / es.eigenvalues().sum();
    (void)D;
  }
  [[nodiscard]] std::size_t data_dim() const { return static_cast<std::size_t>(basis_.rows()); }
  [[nodiscard]] std::size_t latent_dim() const { return static_cast<std::size_t>(basis_.cols()); }
  [[nodiscard]] row_matrix encode(const row_matrix& x) const { return (x.rowwise() - mean_) * basis_; }
  [[nodiscard]] row_matrix decode(const row_matrix& z) const {
    return (z * basis_.transpose()).rowwise() + mean_;
  }
  [[nodiscard]] double explained_variance() const { return explained_; }

 private:
  Eigen::RowVectorXd mean_;
  Eigen::MatrixXd basis_;
  double explained_ = 0.0;
};
static_assert(autoencoder<pca_autoencoder>);

// ---------------------------------------------------------------------------------------------
// Diagonal Gaussian mixture fitted by k-means (Lloyd's algorithm, deterministic start at evenly
// spaced rows): weights, means and per-dimension standard deviations of the clusters.
struct mixture_fit {
  std::vector<double> weights;
  std::vector<std::vector<double>> means, stddevs;
};

mixture_fit kmeans(const row_matrix& z, std::size_t J, int iterations = 25) {
  const auto n = static_cast<std::size_t>(z.rows()), d = static_cast<std::size_t>(z.cols());
  J = std::min(J, n);
  row_matrix c(idx(J), idx(d));
  for (std::size_t j = 0; j < J; ++j) c.row(idx(j)) = z.row(idx(j * n / J));
  std::vector<std::size_t> label(n, 0);
  for (int it = 0; it < iterations; ++it) {
    for (std::size_t i = 0; i < n; ++i) {
      Index best = 0;
      (c.rowwise() - z.row(idx(i))).rowwise().squaredNorm().minCoeff(&best);
      label[i] = static_cast<std::size_t>(best);
    }
    row_matrix sum = row_matrix::Zero(idx(J), idx(d));
    std::vector<double> count(J, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      sum.row(idx(label[i])) += z.row(idx(i));
      count[label[i]] += 1.0;
    }
    for (std::size_t j = 0; j < J; ++j)
      if (count[j] > 0.0) c.row(idx(j)) = sum.row(idx(j)) / count[j];
  }
  mixture_fit f;
  for (std::size_t j = 0; j < J; ++j) {
    std::vector<double> m(d), s2(d, 0.0);
    double cnt = 0.0;
    for (std::size_t k = 0; k < d; ++k) m[k] = c(idx(j), idx(k));
    for (std::size_t i = 0; i < n; ++i)
      if (label[i] == j) {
        cnt += 1.0;
        for (std::size_t k = 0; k < d; ++k) s2[k] += (z(idx(i), idx(k)) - m[k]) * (z(idx(i), idx(k)) - m[k]);
      }
    if (cnt < 2.0) continue;  // an empty or single-point cluster carries no variance estimate
    std::vector<double> s(d);
    for (std::size_t k = 0; k < d; ++k) s[k] = std::sqrt(std::max(s2[k] / cnt, 1e-4));
    f.weights.push_back(cnt);
    f.means.push_back(std::move(m));
    f.stddevs.push_back(std::move(s));
  }
  return f;
}

// The conditioning: one class label per row of the batch.
struct class_labels {
  std::vector<int> label;
};

// The conditional denoiser: the exact denoiser of the mixture of the class that the context names.
class class_conditional {
 public:
  explicit class_conditional(std::vector<diffusion::gaussian_mixture_data> per_class) : per_class_(std::move(per_class)) {}
  [[nodiscard]] prediction predicts() const { return prediction::epsilon; }
  template <class T>
  void operator()(const diffusion::denoiser_input<T, class_labels>& in, std::span<T> out) const {
    const std::size_t n = in.row_size();
    for (std::size_t r = 0; r < in.rows(); ++r) {
      const auto c = static_cast<std::size_t>(in.context->label[r]);
      const diffusion::denoiser_input<T> row{in.x.subspan(r * n, n), in.timesteps.subspan(r, 1), in.sigma.subspan(r, 1)};
      per_class_[c](row, out.subspan(r * n, n));
    }
  }

 private:
  std::vector<diffusion::gaussian_mixture_data> per_class_;
};

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "latent_diffusion",
               "Latent diffusion in miniature: PCA autoencoder, scaled latents, class-conditional sampling with "
               "classifier-free guidance.");
  const std::string data_dir = args.text("--data-dir", "/usr/share/datasets/fashion-mnist",
                                         "directory of the Fashion-MNIST .gz files (Debian: dataset-fashion-mnist)");
  const std::string out_dir = args.text("--out-dir", "latent_diffusion_out", "where the PNGs go");
  const long train_n = args.integer("--train", 20000, "training images (60000: all)");
  const long latent = args.integer("--latent", 24, "latent dimensions of the PCA autoencoder");
  const long comps = args.integer("--components", 4, "k-means components per class");
  const long shown = args.integer("--show", 8, "samples per class in each PNG");
  const long eval = args.integer("--eval", 100, "samples per class for the accuracy table");
  const long steps = args.integer("--steps", 50, "DDIM steps (eta = 0)");
  const long seed = args.integer("--seed", 2022, "noise seed");
  args.finish();
  if (train_n < 500 || latent < 2 || latent > 784 || comps < 1 || shown < 1 || eval < 10 || steps < 1 || steps > 1000 || seed < 0) {
    std::fprintf(stderr, "latent_diffusion: an option is out of range (try --help)\n");
    return 2;
  }
  const ex::idx::labeled_images train =
      ex::idx::load_fashion_mnist_or_exit(data_dir, "train", static_cast<std::size_t>(train_n), "latent_diffusion");
  const ex::idx::labeled_images test = ex::idx::load_fashion_mnist_or_exit(data_dir, "t10k", 2000, "latent_diffusion");
  const std::size_t D = train.dim(), K = static_cast<std::size_t>(latent), C = 10;
  auto to_matrix = [&](const ex::idx::labeled_images& d) {
    row_matrix m(idx(d.count), idx(D));
    for (std::size_t i = 0; i < d.count * D; ++i) m.data()[i] = static_cast<double>(d.pixels[i]);
    return m;
  };
  const row_matrix x = to_matrix(train), xt = to_matrix(test);

  // 1. First stage.
  const pca_autoencoder ae(x, K);
  const row_matrix z = ae.encode(x);
  const double recon = std::sqrt((ae.decode(z) - x).squaredNorm() / static_cast<double>(x.size())) * 127.5;
  std::printf("First stage: PCA autoencoder %zu -> %zu dims fitted on %zu training images: %.1f %% of the variance,\n"
              "reconstruction RMSE %.2f gray levels (of 255).\n",
              D, K, train.count, 100.0 * ae.explained_variance(), recon);
  // 2. Scale factor: 1/std of all latent entries (Stable Diffusion: 0.18215 for its VAE).
  const double mean_all = z.mean();
  const double std_all = std::sqrt((z.array() - mean_all).square().sum() / static_cast<double>(z.size() - 1));
  const double scale = 1.0 / std_all;
  const row_matrix zs = z * scale;
  std::printf("Latent scale factor 1/std = %.5f (latent std %.4f; Stable Diffusion's VAE uses 0.18215).\n", scale, std_all);

  // 3.-4. Mixtures in the scaled latent space: per class, and all classes together.
  std::vector<diffusion::gaussian_mixture_data> per_class;
  std::vector<double> all_w;
  std::vector<std::vector<double>> all_m, all_s;
  row_matrix class_mean = row_matrix::Zero(idx(C), idx(K));
  for (std::size_t c = 0; c < C; ++c) {
    std::vector<Index> rows;
    for (std::size_t i = 0; i < train.count; ++i)
      if (static_cast<std::size_t>(train.labels[i]) == c) rows.push_back(idx(i));
    row_matrix zc(idx(rows.size()), idx(K));
    for (std::size_t i = 0; i < rows.size(); ++i) zc.row(idx(i)) = zs.row(rows[i]);
    class_mean.row(idx(c)) = zc.colwise().mean();
    mixture_fit f = kmeans(zc, static_cast<std::size_t>(comps));
    per_class.emplace_back(f.weights, f.means, f.stddevs, prediction::epsilon);
    for (std::size_t j = 0; j < f.weights.size(); ++j) {
      all_w.push_back(f.weights[j]);  // cluster sizes: the class prior times the in-class weight
      all_m.push_back(f.means[j]);
      all_s.push_back(f.stddevs[j]);
    }
  }
  diffusion::gaussian_mixture_data unconditional(all_w, all_m, all_s, prediction::epsilon);
  class_conditional conditional(std::move(per_class));
  std::printf("Denoisers: exact ones of diagonal Gaussian mixtures in latent space, %ld k-means components per class\n"
              "(conditional, class from denoiser_input::context) and their union of %zu components (unconditional).\n",
              comps, all_w.size());

  // The classifier of the check: nearest class mean in scaled latent space; its accuracy on real test images.
  auto classify = [&](const row_matrix& latents) {
    std::vector<int> out(static_cast<std::size_t>(latents.rows()));
    for (Index r = 0; r < latents.rows(); ++r) {
      Index best = 0;
      (class_mean.rowwise() - latents.row(r)).rowwise().squaredNorm().minCoeff(&best);
      out[static_cast<std::size_t>(r)] = static_cast<int>(best);
    }
    return out;
  };
  {
    const std::vector<int> pred = classify(ae.encode(xt) * scale);
    std::size_t ok = 0;
    for (std::size_t i = 0; i < test.count; ++i) ok += pred[i] == test.labels[i];
    std::printf("Nearest-class-mean classifier in latent space: %.1f %% correct on %zu real test images.\n",
                100.0 * static_cast<double>(ok) / static_cast<double>(test.count), test.count);
  }

  const diffusion::noise_schedule sched(diffusion::scaled_linear_betas(1000));  // LDM / Stable Diffusion
  const diffusion::timestep_sequence ts =
      diffusion::inference_timesteps(1000, static_cast<std::size_t>(steps), diffusion::timestep_spacing::leading, 1);
  std::printf("Schedule: scaled_linear betas 0.00085 .. 0.012, T = 1000; DDIM (eta = 0), %ld steps, leading spacing, offset 1.\n\n",
              steps);

  const std::vector<double> scales = {0.0, 1.0, 3.0, 7.0};
  const auto per_class_n = static_cast<std::size_t>(std::max(eval, shown));
  const std::size_t rows = C * per_class_n;
  class_labels labels;
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t i = 0; i < per_class_n; ++i) labels.label.push_back(static_cast<int>(c));
  std::printf("%6s  %28s  %24s\n", "w", "agreement with the class", "latent norm (mean)");
  std::vector<double> acc;
  ex::progress prog("sampling", scales.size());
  for (std::size_t wi = 0; wi < scales.size(); ++wi) {
    const double w = scales[wi];
    diffusion::classifier_free_guidance<class_conditional, diffusion::gaussian_mixture_data, class_labels, diffusion::no_context>
        cfg(conditional, unconditional, {w, 0.0}, &labels, nullptr);
    std::vector<double> lat(rows * K);
    const diffusion::philox_normal noise(static_cast<std::uint64_t>(seed));  // the same x_T for every w
    diffusion::ddim_options opt;
    diffusion::ddim_sample(sched, cfg, lat, rows, noise, ts, opt);
    const Eigen::Map<const row_matrix> L(lat.data(), idx(rows), idx(K));
    const std::vector<int> pred = classify(L);
    std::size_t ok = 0;
    for (std::size_t r = 0; r < rows; ++r) ok += pred[r] == labels.label[r];
    acc.push_back(static_cast<double>(ok) / static_cast<double>(rows));
    const double norm = L.rowwise().norm().mean();
    // Decode the first `shown` samples of each class: rows = classes, columns = samples.
    row_matrix show(idx(C * static_cast<std::size_t>(shown)), idx(K));
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t i = 0; i < static_cast<std::size_t>(shown); ++i)
        show.row(idx(c * static_cast<std::size_t>(shown) + i)) = L.row(idx(c * per_class_n + i)) / scale;
    const row_matrix img = ae.decode(show);
    char name[64];
    std::snprintf(name, sizeof name, "/latent_diffusion_w%g.png", w);
    ex::write_grid_png(out_dir + name, std::span<const double>(img.data(), static_cast<std::size_t>(img.size())), C,
                       static_cast<std::size_t>(shown), train.rows, train.cols, {.scale = 2});
    prog.update(wi + 1);
    std::printf("%6g  %27.1f%%  %24.3f   (wrote %s%s)\n", w, 100.0 * acc.back(), norm, out_dir.c_str(), name);
  }
  std::printf("Rows of each PNG: the classes %s, %s, ..., %s; w = 0 is the unconditional model.\n",
              ex::idx::fashion_mnist_classes[0], ex::idx::fashion_mnist_classes[1], ex::idx::fashion_mnist_classes[9]);

  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) ++failures;
    std::printf("  [%s] %s\n", ok ? "pass" : "FAIL", what.c_str());
  };
  bool increasing = true;
  for (std::size_t i = 1; i < acc.size(); ++i) increasing = increasing && acc[i] >= acc[i - 1];
  check(increasing, "agreement with the requested class does not decrease as w grows (0, 1, 3, 7)");
  check(acc.front() < 0.2, "w = 0 (unconditional) agrees about as often as chance (10 %): " + std::to_string(100.0 * acc.front()) + " %");
  check(acc.back() > acc.front() + 0.5, "guidance helps: w = 7 agrees at least 50 points more often than w = 0");
  std::printf("\n%s: %d check(s) failed\n", failures ? "FAIL" : "OK", failures);
  return failures ? 1 : 0;
}
