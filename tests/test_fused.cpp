// The fused sampler steps: with diffusion::philox_normal the noise is generated inside the
// kernels; these tests show that this gives the same bits as the buffer path (a generic
// noise_source filling a buffer with philox_normal::fill at the same addresses), as a plain
// scalar reference of the unfused step written here, and for 1, 2, 3 and 7 threads.
#include <catch2/catch.hpp>

#include <diffusion/analytic.hpp>
#include <diffusion/sampler_ddpm.hpp>
#include <diffusion/sampler_karras.hpp>
#include <diffusion/sampler_langevin.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace {

using diffusion::prediction;
using diffusion::variance_type;

// A generic noise source (not philox_normal) with philox_normal's values: the samplers take
// their buffer path with it.
struct philox_via_buffer {
  diffusion::philox_normal source;
  template <class T>
  void fill(std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out) const {
    source.fill(sample, step, offset, out);
  }
};
static_assert(diffusion::noise_source<philox_via_buffer>);

// A model predicting eps = 0.3 sin(x) + 0.1 t/T, and for a learned variance v = tanh(x) in [-1, 1].
struct toy_model {
  bool learned = false;
  [[nodiscard]] prediction predicts() const { return prediction::epsilon; }
  template <class T, class C>
  void operator()(const diffusion::denoiser_input<T, C>& in, std::span<T> out) const {
    const std::size_t rows = in.rows(), n = in.row_size(), w = learned ? 2 * n : n;
    for (std::size_t b = 0; b < rows; ++b)
      for (std::size_t k = 0; k < n; ++k) {
        const double x = static_cast<double>(in.x[b * n + k]);
        out[b * w + k] = static_cast<T>(0.3 * std::sin(x) + 0.1 * in.timesteps[b] / 1000.0);
        if (learned) out[b * w + n + k] = static_cast<T>(std::tanh(x));
      }
  }
};

template <class T>
std::vector<T> initial(std::size_t m) {
  std::vector<T> x(m);
  for (std::size_t i = 0; i < m; ++i) x[i] = static_cast<T>(1.3 * std::cos(0.7 * static_cast<double>(i)));
  return x;
}

template <class T>
T ref_madd(T a, T x, T c) {
  if constexpr (diffusion::kernels::fused_madd)
    return std::fma(a, x, c);
  else
    return a * x + c;
}

}  // namespace

TEMPLATE_TEST_CASE("Fused DDPM step equals the buffer step and a scalar reference bit for bit", "[fused][ddpm]", float,
                   double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const diffusion::philox_normal noise(2024);
  const std::size_t rows = 3, n = 301;  // rows cross noise chunks and end off the SIMD width
  const std::uint64_t first = 5, step = 17;
  const auto x = initial<T>(rows * n);
  for (variance_type v : {variance_type::fixed_small, variance_type::fixed_large, variance_type::learned_range}) {
    for (int mode = 0; mode < 3; ++mode) {  // none, clip, threshold
      for (std::size_t j : {std::size_t{0}, std::size_t{1}, std::size_t{640}}) {
        INFO("variance " << static_cast<int>(v) << " mode " << mode << " j " << j);
        const bool learned = diffusion::learns_variance(v);
        const std::size_t width = learned ? 2 * n : n;
        std::vector<T> out(rows * width);
        toy_model model{learned};
        std::vector<double> ts(rows, static_cast<double>(j)), sg(rows, s[j].sigma);
        model(diffusion::denoiser_input<T, diffusion::no_context>{x, ts, sg, nullptr}, std::span<T>(out));
        diffusion::x0_processing proc{};
        proc.clip = mode == 1;
        proc.clip_value = 0.8;
        proc.threshold = mode == 2;
        proc.threshold_options.percentile = 0.9;
        proc.threshold_options.max_value = 1.5;
        std::vector<T> z(rows * n), scratch(n), x0a(rows * n), x0b(rows * n), xa(rows * n), xb = x;
        for (std::size_t b = 0; b < rows; ++b) noise.fill(first + b, step, 0, std::span<T>(z).subspan(b * n, n));
        diffusion::ddpm_step<T>(s, j, prediction::epsilon, v, proc, x, out, z, x0a, xa, scratch);
        // Fused, in place (x_next = x).
        diffusion::ddpm_step<T>(s, j, prediction::epsilon, v, proc, xb, out, noise, first, step, x0b, xb, scratch);
        CHECK(x0a == x0b);
        CHECK(xa == xb);
        if (!learned && mode != 2) {  // the unfused scalar sequence: x0, clip, mean, + sd z
          const auto k = diffusion::conversion_coefficients(s, j, prediction::epsilon, prediction::sample);
          const T c0 = static_cast<T>(s[j].posterior_mean_coef_x0), ct = static_cast<T>(s[j].posterior_mean_coef_xt);
          const T sd = j == 0 ? T(0) : static_cast<T>(std::exp(0.5 * diffusion::fixed_log_variance(s, j, v)));
          std::size_t mismatches = 0;
          for (std::size_t i = 0; i < rows * n; ++i) {
            T h = ref_madd(static_cast<T>(k.a), x[i], static_cast<T>(k.b) * out[i]);
            if (proc.clip) h = std::clamp(h, static_cast<T>(-0.8), static_cast<T>(0.8));
            const T mean = ref_madd(c0, h, ct * x[i]);
            const T r = j == 0 ? mean : ref_madd(sd, z[i], mean);
            if (h != x0b[i] || r != xb[i]) ++mismatches;
          }
          CHECK(mismatches == 0);
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("Fused DDIM step equals the buffer step bit for bit", "[fused][ddim]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const diffusion::philox_normal noise(77);
  const std::size_t rows = 2, n = 515, t = 700, p = 650;
  const auto x = initial<T>(rows * n);
  std::vector<T> out(rows * n);
  std::vector<double> ts(rows, double(t)), sg(rows, s[t].sigma);
  toy_model{}(diffusion::denoiser_input<T, diffusion::no_context>{x, ts, sg, nullptr}, std::span<T>(out));
  for (int mode = 0; mode < 3; ++mode) {
    for (bool use_clipped : {false, true}) {
      INFO("mode " << mode << " use_clipped " << use_clipped);
      diffusion::x0_processing proc{};
      proc.clip = mode == 1;
      proc.threshold = mode == 2;
      std::vector<T> z(rows * n), scratch(n), x0a(rows * n), x0b(rows * n), xa(rows * n), xb = x;
      for (std::size_t b = 0; b < rows; ++b) noise.fill(b, 3, 0, std::span<T>(z).subspan(b * n, n));
      diffusion::ddim_step<T>(s, t, p, 0.7, prediction::epsilon, proc, use_clipped, x, out, z, x0a, xa, scratch);
      diffusion::ddim_step<T>(s, t, p, 0.7, prediction::epsilon, proc, use_clipped, xb, out, noise, 0, 3, x0b, xb,
                              scratch);
      CHECK(x0a == x0b);
      CHECK(xa == xb);
    }
  }
}

TEMPLATE_TEST_CASE("Samplers with philox_normal (fused noise) equal the buffer path and any thread count", "[fused][samplers]",
                   float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));
  const std::size_t rows = 3, n = 300;
  std::vector<double> mean(n), sd(n);
  for (std::size_t k = 0; k < n; ++k) {
    mean[k] = 0.2 * std::sin(static_cast<double>(k));
    sd[k] = 0.3 + 0.2 * std::cos(static_cast<double>(k));
  }
  diffusion::gaussian_data g(mean, sd);
  diffusion::sigma_space_model<diffusion::gaussian_data> D(g);
  const diffusion::philox_normal fused(31);
  const philox_via_buffer buffered{diffusion::philox_normal(31)};
  const auto seq = diffusion::inference_timesteps(1000, 20, diffusion::timestep_spacing::trailing);
  const auto karras = diffusion::karras_sigmas(12, 0.02, 20.0);
  const auto geo = diffusion::geometric_sigmas(6, 0.02, 2.0);
  // Runs every sampler with the given noise and threads; returns all final states concatenated.
  auto run_all = [&](const auto& noise, unsigned threads) {
    std::vector<T> all;
    diffusion::sampler_hooks<T> hooks{};
    hooks.execution = diffusion::parallel_policy{threads, 64};
    auto keep = [&](const std::vector<T>& x) { all.insert(all.end(), x.begin(), x.end()); };
    std::vector<T> x(rows * n);
    diffusion::ddpm_sample(s, g, x, rows, noise, {.x0 = {.clip = true}, .timesteps = seq}, hooks);
    keep(x);
    diffusion::ddim_sample(s, g, x, rows, noise, seq, {.eta = 0.6}, hooks);
    keep(x);
    for (auto m : {diffusion::karras_method::euler, diffusion::karras_method::euler_ancestral,
                   diffusion::karras_method::heun, diffusion::karras_method::dpmpp_2m}) {
      diffusion::karras_sample(m, D, x, rows, noise, karras, {.s_churn = 2.0}, hooks);
      keep(x);
    }
    for (auto solver : {diffusion::dpm_solver_type::midpoint, diffusion::dpm_solver_type::heun}) {
      diffusion::dpmpp_2m_sde_sample(D, x, rows, noise, karras, {.eta = 0.8, .solver_type = solver}, hooks);
      keep(x);
    }
    diffusion::dpmpp_3m_sde_sample(D, x, rows, noise, karras, {.eta = 0.7}, hooks);
    keep(x);
    diffusion::annealed_langevin_sample(D, x, rows, noise, geo, {.epsilon = 1e-3, .n_steps_each = 3}, hooks);
    keep(x);
    diffusion::predictor_corrector_sample(D, x, rows, noise, geo, {}, hooks);
    keep(x);
    diffusion::predictor_corrector_sample(D, x, rows, noise, geo,
                                          {.predictor = diffusion::pc_predictor::ancestral,
                                           .corrector = diffusion::pc_corrector::none},
                                          hooks);
    keep(x);
    return all;
  };
  const auto ref = run_all(buffered, 1);
  REQUIRE(ref.size() == 12 * rows * n);
  CHECK(std::all_of(ref.begin(), ref.end(), [](T v) { return std::isfinite(v); }));
  CHECK(run_all(fused, 1) == ref);
  for (unsigned threads : {2u, 3u, 7u}) {
    INFO("threads = " << threads);
    CHECK(run_all(fused, threads) == ref);
    CHECK(run_all(buffered, threads) == ref);
  }
}

TEMPLATE_TEST_CASE("q_sample with in-kernel noise equals q_sample with a philox buffer", "[fused][gaussian]", float, double) {
  using T = TestType;
  const diffusion::noise_schedule s(diffusion::cosine_betas(1000));
  const diffusion::philox_normal noise(8);
  const std::size_t rows = 4, n = 333;
  const auto x0 = initial<T>(rows * n);
  const std::vector<int> ts = {0, 17, 500, 999};
  std::vector<T> z(rows * n), a(rows * n), b(rows * n);
  for (std::size_t r = 0; r < rows; ++r) noise.fill(10 + r, 4, 0, std::span<T>(z).subspan(r * n, n));
  diffusion::q_sample(s, ts, x0, z, a);
  diffusion::q_sample(s, ts, x0, noise, 10, 4, b);
  CHECK(a == b);
  noise.fill(3, 9, 0, std::span<T>(z));
  diffusion::q_sample(s, 250, x0, z, a);
  b = x0;  // in place
  diffusion::q_sample(s, 250, b, noise, 3, 9, b);
  CHECK(a == b);
}
