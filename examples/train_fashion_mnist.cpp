// A small class-conditional U-Net trained on Fashion-MNIST in C++ with LibTorch, where every piece of
// diffusion mathematics goes through the library (issue 13, item 5; this is its first slice):
//
//  - training (DDPM Algorithm 1, objective (a) of the issue: L_simple with ε-prediction, DDPM Eq. 14):
//    t ~ U{0..T-1} and ε from diffusion::draw_training_batch (with q_sample inside), the loss value and
//    its gradient dL/dε̂ from the batched diffusion::simple_loss, handed to autograd with
//    diffusion::torch_backward; the optimizer is torch's Adam. Labels are replaced by the 11th "null"
//    label with probability --p-uncond so that one network serves classifier-free guidance;
//  - sampling: DDIM (Song et al. 2021) through diffusion::ddim_sample with a torch_denoiser wrapped in
//    diffusion::batched_classifier_free_guidance (Ho & Salimans 2022), one PNG row per class.
//
// Not yet here (see docs/examples/train_fashion_mnist.md): objective (b) (hybrid loss, learned-range
// variances, importance-sampled t), bits/dim with variational_bound, the Fréchet-distance table.
//
// Checks print pass/FAIL; exit 1 if the loss did not fall (mean of the last 20% of iterations
// >= 0.8 x the first 20%) or anything non-finite appears, 2 for bad options or missing data.
//
//   train_fashion_mnist [--smoke] [--iters N] [--batch B] [--threads K] [--out-dir DIR] ...  (--help)
#include <diffusion/ddpm.hpp>
#include <diffusion/noise.hpp>
#include <diffusion/torch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/idx.hpp"
#include "common/image.hpp"

namespace {

namespace nn = torch::nn;
constexpr std::int64_t null_label = 10;  // the 11th label: "no class" (classifier-free guidance)

// A residual block: GroupNorm, SiLU, 3x3 conv, plus the (time + class) embedding, twice.
struct ResBlockImpl : nn::Module {
  ResBlockImpl(std::int64_t cin, std::int64_t cout, std::int64_t emb)
      : n1(register_module("n1", nn::GroupNorm(8, cin))),
        c1(register_module("c1", nn::Conv2d(nn::Conv2dOptions(cin, cout, 3).padding(1)))),
        e(register_module("e", nn::Linear(emb, cout))),
        n2(register_module("n2", nn::GroupNorm(8, cout))),
        c2(register_module("c2", nn::Conv2d(nn::Conv2dOptions(cout, cout, 3).padding(1)))) {
    if (cin != cout) skip = register_module("skip", nn::Conv2d(nn::Conv2dOptions(cin, cout, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb) {
    torch::Tensor h = c1(torch::silu(n1(x)));
    h = h + e(torch::silu(emb)).unsqueeze(-1).unsqueeze(-1);
    h = c2(torch::silu(n2(h)));
    return h + (skip ? skip(x) : x);
  }
  nn::GroupNorm n1;
  nn::Conv2d c1;
  nn::Linear e;
  nn::GroupNorm n2;
  nn::Conv2d c2;
  nn::Conv2d skip{nullptr};
};
TORCH_MODULE(ResBlock);

// The U-Net: 28x28 (c channels) -> 14x14 (2c) -> 7x7 (2c) and back, with skip connections.
struct UNetImpl : nn::Module {
  UNetImpl(std::int64_t c, std::int64_t out_channels)
      : emb_dim(4 * c),
        t1(register_module("t1", nn::Linear(c, 4 * c))),
        t2(register_module("t2", nn::Linear(4 * c, 4 * c))),
        label(register_module("label", nn::Embedding(null_label + 1, 4 * c))),
        in(register_module("in", nn::Conv2d(nn::Conv2dOptions(1, c, 3).padding(1)))),
        b28(register_module("b28", ResBlock(c, c, 4 * c))),
        down14(register_module("down14", nn::Conv2d(nn::Conv2dOptions(c, 2 * c, 3).stride(2).padding(1)))),
        b14(register_module("b14", ResBlock(2 * c, 2 * c, 4 * c))),
        down7(register_module("down7", nn::Conv2d(nn::Conv2dOptions(2 * c, 2 * c, 3).stride(2).padding(1)))),
        mid(register_module("mid", ResBlock(2 * c, 2 * c, 4 * c))),
        u14(register_module("u14", ResBlock(4 * c, 2 * c, 4 * c))),
        u28(register_module("u28", ResBlock(3 * c, c, 4 * c))),
        out_norm(register_module("out_norm", nn::GroupNorm(8, c))),
        out(register_module("out", nn::Conv2d(nn::Conv2dOptions(c, out_channels, 3).padding(1)))),
        time_dim(c) {}

  // Sinusoidal embedding of the timestep (Vaswani et al. 2017, as in DDPM's U-Net), then an MLP.
  torch::Tensor embed(const torch::Tensor& t, const torch::Tensor& labels) {
    const std::int64_t half = time_dim / 2;
    const torch::Tensor freqs =
        torch::exp(-std::log(10000.0) * torch::arange(half, torch::kFloat) / static_cast<double>(half));
    const torch::Tensor a = t.to(torch::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
    const torch::Tensor s = torch::cat({torch::sin(a), torch::cos(a)}, 1);
    return t2(torch::silu(t1(s))) + label(labels);
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& labels) {
    const torch::Tensor emb = embed(t, labels);
    const torch::Tensor h28 = b28(in(x), emb);
    const torch::Tensor h14 = b14(down14(h28), emb);
    torch::Tensor h = mid(down7(h14), emb);
    h = torch::upsample_nearest2d(h, {14, 14});
    h = u14(torch::cat({h, h14}, 1), emb);
    h = torch::upsample_nearest2d(h, {28, 28});
    h = u28(torch::cat({h, h28}, 1), emb);
    return out(torch::silu(out_norm(h)));
  }

  std::int64_t emb_dim;
  nn::Linear t1, t2;
  nn::Embedding label;
  nn::Conv2d in;
  ResBlock b28;
  nn::Conv2d down14;
  ResBlock b14;
  nn::Conv2d down7;
  ResBlock mid, u14, u28;
  nn::GroupNorm out_norm;
  nn::Conv2d out;
  std::int64_t time_dim;
};
TORCH_MODULE(UNet);

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool all_finite(std::span<const float> v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

}  // namespace

int main(int argc, char** argv) {
  ex::cli args(argc, argv, "train_fashion_mnist",
               "A small class-conditional U-Net trained on Fashion-MNIST with LibTorch and the library's L_simple "
               "(gradient handed to autograd), sampled with DDIM and classifier-free guidance.");
  const std::string data_dir = args.text("--data-dir", "/usr/share/datasets/fashion-mnist",
                                         "directory of the Fashion-MNIST .gz files (Debian: dataset-fashion-mnist)");
  const std::string out_dir = args.text("--out-dir", "train_fashion_mnist_out", "where the PNG grid goes");
  const bool smoke = args.flag("--smoke", "tiny sizes for CI (< 2 min on 2 cores): 2000 images, 150 iterations, c = 16");
  const long train_n = args.integer("--train", smoke ? 2000 : 60000, "training images");
  const long iters = args.integer("--iters", smoke ? 150 : 3000, "training iterations (minibatches; 3000 x 64: about 30-40 min on 2 shared cores)");
  const long batch = args.integer("--batch", smoke ? 32 : 64, "minibatch size");
  const long channels = args.integer("--channels", smoke ? 16 : 32, "U-Net base channels c (28x28: c, 14x14 and 7x7: 2c)");
  const double lr = args.real("--lr", 2e-4 * (smoke ? 5.0 : 1.0), "Adam learning rate");
  const double p_uncond = args.real("--p-uncond", 0.1, "probability of the null label in training (CFG)");
  const long sample_cols = args.integer("--samples-per-class", smoke ? 2 : 8, "samples per class in the PNG grid");
  const long sample_steps = args.integer("--sample-steps", smoke ? 10 : 50, "DDIM steps of the PNG grid");
  const double cfg_scale = args.real("--cfg", 3.0, "classifier-free guidance scale w (1: conditional model alone)");
  const long threads = args.integer("--threads", 2, "torch::set_num_threads (the machine's cores are shared)");
  const long seed = args.integer("--seed", 2020, "seed of the data order, t, epsilon, labels dropped, initial weights");
  args.finish();
  if (train_n < 100 || iters < 10 || batch < 2 || channels < 8 || channels % 8 != 0 || !(lr > 0.0) ||
      !(p_uncond >= 0.0 && p_uncond < 1.0) || sample_cols < 1 || sample_steps < 1 || sample_steps > 1000 ||
      !std::isfinite(cfg_scale) || threads < 1 || seed < 0) {
    std::fprintf(stderr, "train_fashion_mnist: an option is out of range (try --help)\n");
    return 2;
  }
  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(static_cast<std::uint64_t>(seed));
  const ex::idx::labeled_images train =
      ex::idx::load_fashion_mnist_or_exit(data_dir, "train", static_cast<std::size_t>(train_n), "train_fashion_mnist");
  const std::size_t D = train.dim(), H = train.rows, W = train.cols;
  const std::size_t T = 1000;
  const diffusion::noise_schedule sched(diffusion::linear_betas(T, 1e-4, 0.02));  // DDPM §4
  std::printf("Fashion-MNIST from %s: %zu training images of %zu x %zu, in [-1, 1].\n", data_dir.c_str(), train.count, H, W);
  std::printf("Schedule: DDPM linear betas 1e-4 .. 0.02, T = %zu. Threads: %ld.\n", T, threads);

  UNet net(channels, 1);
  std::int64_t params = 0;
  for (const auto& p : net->parameters()) params += p.numel();
  std::printf("U-Net: c = %ld (28x28: %ld, 14x14 and 7x7: %ld channels), %lld parameters.\n", channels, channels,
              2 * channels, static_cast<long long>(params));

  // ---------------------------------------------------------------------------------------
  // (a) L_simple with ε-prediction (DDPM Eq. 14, Algorithm 1), uniform t.
  const auto B = static_cast<std::size_t>(batch);
  const diffusion::uniform_timestep_sampler t_sampler(T, static_cast<std::uint64_t>(seed));
  const diffusion::philox_normal eps_source(static_cast<std::uint64_t>(seed) + 1);
  std::vector<float> x0(B * D), eps(B * D), xt(B * D), grad(B * D);
  std::vector<std::size_t> t(B);
  std::vector<std::int64_t> labels(B);
  std::vector<double> losses;
  std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
  std::uniform_int_distribution<std::size_t> pick(0, train.count - 1);
  std::bernoulli_distribution drop(p_uncond);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(lr));
  std::printf("\n(a) Training, L_simple (eps-prediction), uniform t: %ld iterations of %zu images, Adam lr %g, "
              "null label with p = %g.\n", iters, B, lr, p_uncond);
  const auto t_train = std::chrono::steady_clock::now();
  bool finite = true;
  for (long it = 0; it < iters; ++it) {
    for (std::size_t b = 0; b < B; ++b) {
      const std::size_t i = pick(rng);
      std::copy_n(train.pixels.begin() + static_cast<std::ptrdiff_t>(i * D), D, x0.begin() + static_cast<std::ptrdiff_t>(b * D));
      labels[b] = drop(rng) ? null_label : train.labels[i];
    }
    diffusion::training_batch<float> tb{.timesteps = t, .weights = {}, .noise = eps, .xt = xt};
    diffusion::draw_training_batch(sched, t_sampler, eps_source, x0, tb, {.step = static_cast<std::uint64_t>(it)});
    const auto Bi = static_cast<std::int64_t>(B);
    const torch::Tensor xt_t = diffusion::torch_from_span(std::span<float>(xt), {Bi, 1, 28, 28});
    std::vector<float> tf(t.begin(), t.end());
    const torch::Tensor t_t = torch::from_blob(tf.data(), {Bi}, torch::kFloat);
    const torch::Tensor lab_t = torch::from_blob(labels.data(), {Bi}, torch::kLong);
    const torch::Tensor out = net->forward(xt_t, t_t, lab_t);
    const double loss = diffusion::simple_loss(sched, t, x0, eps, diffusion::torch_view<const float>(out, "output"),
                                               diffusion::prediction::epsilon, {.grad = grad});
    opt.zero_grad();
    diffusion::torch_backward(out, std::span<const float>(grad));
    opt.step();
    if (!std::isfinite(loss)) finite = false;
    losses.push_back(loss);
    if ((it + 1) % std::max(1L, iters / 10) == 0)
      std::printf("  iteration %6ld  loss %.4f  (%.1f s)\n", it + 1, loss, seconds_since(t_train));
  }
  const double train_s = seconds_since(t_train);
  const std::size_t fifth = std::max<std::size_t>(1, losses.size() / 5);
  double first = 0.0, last = 0.0;
  for (std::size_t k = 0; k < fifth; ++k) {
    first += losses[k] / static_cast<double>(fifth);
    last += losses[losses.size() - 1 - k] / static_cast<double>(fifth);
  }
  std::printf("  %.1f s (%.3f s per iteration of %zu images). Mean loss, first 20%%: %.4f, last 20%%: %.4f.\n", train_s,
              train_s / static_cast<double>(iters), B, first, last);
  const bool loss_fell = finite && last < 0.8 * first;
  std::printf("  check: loss finite and fell (last 20%% < 0.8 x first 20%%): %s\n", loss_fell ? "pass" : "FAIL");

  // ---------------------------------------------------------------------------------------
  // PNG grid: one row per class, DDIM (eta = 0) with classifier-free guidance, one network call on 2B rows.
  const std::size_t cols = static_cast<std::size_t>(sample_cols), rows = 10 * cols;
  std::vector<std::int64_t> lab2(2 * rows);
  for (std::size_t r = 0; r < rows; ++r) {
    lab2[r] = null_label;                             // the unconditional half first
    lab2[rows + r] = static_cast<std::int64_t>(r / cols);  // then the class of row r / cols
  }
  const torch::Tensor ctx = torch::from_blob(lab2.data(), {static_cast<std::int64_t>(2 * rows)}, torch::kLong);
  auto den = diffusion::make_torch_denoiser(
      [&net](const torch::Tensor& x, const torch::Tensor& tt, const torch::Tensor& lab) { return net->forward(x, tt, lab); },
      {.kind = diffusion::prediction::epsilon, .row_shape = {1, 28, 28}});
  diffusion::batched_classifier_free_guidance<decltype(den), torch::Tensor> guided(den, {.guidance_scale = cfg_scale}, &ctx);
  std::vector<float> x(rows * D);
  diffusion::philox_normal sample_noise(static_cast<std::uint64_t>(seed) + 2);
  const auto t_sample = std::chrono::steady_clock::now();
  const diffusion::timestep_sequence steps =
      diffusion::inference_timesteps(T, static_cast<std::size_t>(sample_steps), diffusion::timestep_spacing::linspace);
  diffusion::ddim_sample(sched, guided, x, rows, sample_noise, steps);
  const double sample_s = seconds_since(t_sample);
  const bool samples_finite = all_finite(x);
  std::printf("\nSamples: DDIM (eta = 0), %ld steps, CFG w = %g, %zu per class: %.1f s (%.3f s per model call on %zu rows).\n",
              sample_steps, cfg_scale, cols, sample_s, sample_s / static_cast<double>(sample_steps), 2 * rows);
  std::printf("  check: samples finite: %s\n", samples_finite ? "pass" : "FAIL");
  std::filesystem::create_directories(out_dir);
  const std::string png = out_dir + "/train_fashion_mnist_cfg.png";
  if (ex::write_grid_png(png, std::span<const float>(x), 10, cols, H, W, {.scale = 2}))
    std::printf("  wrote %s (rows: %s, ..., %s)\n", png.c_str(), ex::idx::fashion_mnist_classes[0],
                ex::idx::fashion_mnist_classes[9]);
  return loss_fell && samples_finite ? 0 : 1;
}
