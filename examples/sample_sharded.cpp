// Sharded sampling across processes with MPI: N samples split over the ranks, gathered on rank 0,
// bit-identical to the same N samples drawn by one process.
//
// Why it works: the library's noise is keyed by (seed, sample, step). Row b of a sampler call uses
// Philox stream (first_sample + b, step) — for the initial x = σ₀z, for every ancestral step, and
// for the Brownian tree's increments (sample first_sample + b) — and every loop is batch-invariant
// (tests/test_batch_invariance.cpp). So a rank that samples rows [begin, end) of the data set with
// `.first_sample = begin` computes exactly the bits those rows have in one big batch, and the
// distribution layer is nothing more than a contiguous block split and one MPI_Gatherv.
//
// Data: "8 Gaussians" in 2-D (8 equal components on the unit circle, standard deviation 0.05),
// whose exact denoiser is diffusion::gaussian_mixture_data. Samplers, each on Karras et al. 2022's
// σ list (σ 80 … 0.002, ρ = 7), float32:
//   dpmpp_2m_sde_tree  DPM++ 2M SDE (η = 1, midpoint) with Brownian-tree noise (k-diffusion's default),
//   euler_ancestral    Euler ancestral (η = 1), Philox noise per (sample, step),
//   dpmpp_2m           DPM-Solver++(2M), deterministic (its only noise is the initial x).
//
// Rows are split in contiguous blocks: rank r of P gets ⌊N/P⌋ rows, plus one for r < N mod P. Within
// a rank, --chunk K samples the block in sub-batches of at most K rows (as a run bounded by
// accelerator memory would); 0 samples the block in one call.
//
// Output (rank 0): --out FILE holds float32 values in the machine's byte order, the samplers in the
// order above, each N rows × 2 (x, y) in sample order; the program prints a 64-bit FNV-1a checksum of
// each sampler's bytes and of the whole file, and the sampling time of every rank.
//
// Checks (rank 0), exit status 1 if one fails:
//  * every value finite, and the N rows of each sampler pairwise distinct (a rank that used the
//    wrong first_sample would repeat another rank's rows: the deterministic sampler maps equal
//    initial noise to equal samples);
//  * mass balance: Pearson χ² of the counts by most likely component against N/8, 7 degrees of
//    freedom. The data and every sampler here are invariant under the rotation by 45° (the
//    denoiser is equivariant and the noise isotropic), so each component's probability is exactly
//    1/8 at any step count; pass below 35.2585, the χ²₇ quantile at 1 − 1e-5 (mpmath: findroot of
//    gammainc(3.5, c/2, inf, regularized=True) = 1e-5), false-failure probability 1e-5 per sampler;
//  * --verify: rank 0 samples all N rows again in one batch (no split) and compares the bits.
// Reported, not checked: the RMS distance to the nearest component mean (exact data: s√2 = 0.0707).
//
//   mpirun -np 2 sample_sharded [--samples N] [--chunk K] [--seed S] [--out FILE] [--verify] [--help]
#include <mpi.h>

#include <diffusion/ddpm.hpp>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <initializer_list>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cli.hpp"

namespace {

using namespace diffusion;

constexpr std::size_t dim = 2;           // elements per row
constexpr std::size_t components = 8;    // of the mixture
constexpr double component_sd = 0.05;    // of each component
constexpr double chi_square_crit = 35.2585364214808738;  // χ²₇ quantile at 1 − 1e-5 (file comment)

std::vector<std::vector<double>> component_means() {
  std::vector<std::vector<double>> means(components);
  for (std::size_t j = 0; j < components; ++j) {
    const double a = 2.0 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(components);
    means[j] = {std::cos(a), std::sin(a)};
  }
  return means;
}

gaussian_mixture_data make_model() {
  return gaussian_mixture_data(std::vector<double>(components, 1.0), component_means(),
                               std::vector<std::vector<double>>(components, std::vector<double>(dim, component_sd)));
}

// One sampler: runs `rows` rows into x (rows × dim), row 0 being sample `first` of the data set.
struct sampler {
  const char* name;
  std::function<void(std::span<float> x, std::size_t rows, std::uint64_t first)> run;
};

std::vector<sampler> make_samplers(std::uint64_t seed, std::size_t steps_sde, std::size_t steps_ancestral,
                                   std::size_t steps_ode) {
  auto sig = [](std::size_t steps) { return karras_sigmas(steps, 0.002, 80.0); };
  std::vector<sampler> out;
  out.push_back({"dpmpp_2m_sde_tree", [seed, s = sig(steps_sde)](std::span<float> x, std::size_t rows, std::uint64_t first) {
                   gaussian_mixture_data m = make_model();
                   sigma_space_model<gaussian_mixture_data> D(m);
                   const philox_normal noise(seed);
                   const brownian_tree tree(seed, s[s.size() - 2], s[0]);  // [σ_min, σ_max] over σ > 0
                   dpmpp_2m_sde_sample(D, x, rows, noise, tree, s, {.first_sample = first});
                 }});
  out.push_back({"euler_ancestral", [seed, s = sig(steps_ancestral)](std::span<float> x, std::size_t rows, std::uint64_t first) {
                   gaussian_mixture_data m = make_model();
                   sigma_space_model<gaussian_mixture_data> D(m);
                   const philox_normal noise(seed);
                   euler_ancestral_sample(D, x, rows, noise, s, {.first_sample = first});
                 }});
  out.push_back({"dpmpp_2m", [seed, s = sig(steps_ode)](std::span<float> x, std::size_t rows, std::uint64_t first) {
                   gaussian_mixture_data m = make_model();
                   sigma_space_model<gaussian_mixture_data> D(m);
                   const philox_normal noise(seed);
                   dpmpp_2m_sample(D, x, rows, noise, s, {.first_sample = first});
                 }});
  return out;
}

// The contiguous block of rank r of p over n rows: [begin, begin + count).
struct block {
  std::size_t begin, count;
};
block block_of(std::size_t n, std::size_t p, std::size_t r) {
  const std::size_t base = n / p, extra = n % p;
  return {r * base + std::min(r, extra), base + (r < extra ? 1u : 0u)};
}

// Samples rows [b.begin, b.begin + b.count) into x (b.count × dim) in calls of at most `chunk` rows
// (0: one call).
void sample_block(const sampler& s, block b, std::size_t chunk, std::span<float> x) {
  const std::size_t step = chunk == 0 ? b.count : chunk;
  for (std::size_t done = 0; done < b.count; done += step) {
    const std::size_t rows = std::min(step, b.count - done);
    s.run(x.subspan(done * dim, rows * dim), rows, b.begin + done);
  }
}

// 64-bit FNV-1a of the bytes of v.
std::uint64_t fnv1a(std::span<const float> v) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const float f : v) {
    const auto bits = std::bit_cast<std::uint32_t>(f);
    for (int k = 0; k < 4; ++k) {
      h ^= (bits >> (8 * k)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

struct stats {
  bool finite = true;
  std::size_t duplicates = 0;
  double chi_square = 0.0, rms_nearest = 0.0;
};

stats check_sample(std::span<const float> x, std::size_t n) {
  stats st;
  st.finite = std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); });
  // Pairwise distinct rows: sort the rows' bit patterns, count equal neighbours.
  std::vector<std::uint64_t> keys(n);
  for (std::size_t i = 0; i < n; ++i)
    keys[i] = (std::uint64_t{std::bit_cast<std::uint32_t>(x[dim * i])} << 32) | std::bit_cast<std::uint32_t>(x[dim * i + 1]);
  std::sort(keys.begin(), keys.end());
  for (std::size_t i = 1; i < n; ++i) st.duplicates += keys[i] == keys[i - 1] ? 1u : 0u;
  // Most likely component = nearest mean (equal weights and spreads).
  const auto means = component_means();
  std::vector<std::size_t> counts(components, 0);
  double sq = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    double best = std::numeric_limits<double>::infinity();
    std::size_t arg = 0;
    for (std::size_t j = 0; j < components; ++j) {
      const double dx = static_cast<double>(x[dim * i]) - means[j][0], dy = static_cast<double>(x[dim * i + 1]) - means[j][1];
      if (dx * dx + dy * dy < best) best = dx * dx + dy * dy, arg = j;
    }
    ++counts[arg];
    sq += best;
  }
  const double e = static_cast<double>(n) / static_cast<double>(components);
  for (const std::size_t c : counts) st.chi_square += (static_cast<double>(c) - e) * (static_cast<double>(c) - e) / e;
  st.rms_nearest = std::sqrt(sq / static_cast<double>(n));
  return st;
}

// The options' ranges; the empty string when they are valid.
std::string check_options(long samples, long chunk, long seed, std::initializer_list<long> steps) {
  if (samples < 1 || static_cast<unsigned long>(samples) > static_cast<unsigned long>(INT_MAX) / dim)
    return "--samples = " + std::to_string(samples) + " is outside [1, " + std::to_string(INT_MAX / static_cast<int>(dim)) +
           "] (MPI_Gatherv counts are int)";
  if (chunk < 0) return "--chunk = " + std::to_string(chunk) + " must be >= 0";
  if (seed < 0) return "--seed = " + std::to_string(seed) + " must be >= 0";
  for (const long s : steps)
    if (s < 2) return "every --steps-* must be >= 2 (got " + std::to_string(s) + ")";
  return "";
}

int run(int rank, int size, long samples, long chunk, long seed, long steps_sde, long steps_ancestral, long steps_ode,
        const std::string& out_path, bool verify) {
  const auto n = static_cast<std::size_t>(samples), p = static_cast<std::size_t>(size);
  const auto r = static_cast<std::size_t>(rank);
  const auto samplers = make_samplers(static_cast<std::uint64_t>(seed), static_cast<std::size_t>(steps_sde),
                                      static_cast<std::size_t>(steps_ancestral), static_cast<std::size_t>(steps_ode));
  const block mine = block_of(n, p, r);
  std::vector<int> counts(p), displs(p);
  for (std::size_t q = 0; q < p; ++q) {
    const block b = block_of(n, p, q);
    counts[q] = static_cast<int>(b.count * dim);
    displs[q] = static_cast<int>(b.begin * dim);
  }
  if (rank == 0) {
    std::printf("sample_sharded: %zu samples of 8 Gaussians (2-D), %d rank(s), blocks of %zu..%zu rows, chunk %ld, seed %ld\n",
                n, size, block_of(n, p, p - 1).count, block_of(n, p, 0).count, chunk, seed);
    std::printf("  steps: dpmpp_2m_sde_tree %ld, euler_ancestral %ld, dpmpp_2m %ld (Karras sigmas 80 ... 0.002)\n\n",
                steps_sde, steps_ancestral, steps_ode);
  }

  std::vector<float> all(rank == 0 ? samplers.size() * n * dim : 0);
  std::vector<float> local(mine.count * dim);
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  double sampling = 0.0;
  for (std::size_t k = 0; k < samplers.size(); ++k) {
    const double s0 = MPI_Wtime();
    if (mine.count > 0) sample_block(samplers[k], mine, static_cast<std::size_t>(chunk), local);
    sampling += MPI_Wtime() - s0;
    MPI_Gatherv(local.data(), static_cast<int>(local.size()), MPI_FLOAT, rank == 0 ? all.data() + k * n * dim : nullptr,
                counts.data(), displs.data(), MPI_FLOAT, 0, MPI_COMM_WORLD);
  }
  const double total = MPI_Wtime() - t0;
  std::vector<double> times(p);
  MPI_Gather(&sampling, 1, MPI_DOUBLE, times.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);

  int failures = 0;
  if (rank == 0) {
    std::printf("%-18s %18s %9s %10s %12s %s\n", "sampler", "FNV-1a 64", "chi2_7", "distinct", "rms nearest", "check");
    for (std::size_t k = 0; k < samplers.size(); ++k) {
      const std::span<const float> xk(all.data() + k * n * dim, n * dim);
      const stats st = check_sample(xk, n);
      const bool ok = st.finite && st.duplicates == 0 && st.chi_square <= chi_square_crit;
      failures += ok ? 0 : 1;
      std::printf("%-18s  %016llx %9.2f %10s %12.4f %s\n", samplers[k].name, static_cast<unsigned long long>(fnv1a(xk)),
                  st.chi_square, st.duplicates == 0 ? "yes" : std::to_string(n - st.duplicates).c_str(), st.rms_nearest,
                  ok ? "pass" : (st.finite ? "FAIL" : "FAIL (not finite)"));
    }
    std::printf("%-18s  %016llx   (pass: chi2 <= %.2f, false-failure probability 1e-5 each; exact data: rms %.4f)\n",
                "whole file", static_cast<unsigned long long>(fnv1a(all)), chi_square_crit, component_sd * std::numbers::sqrt2);
    std::printf("\nsampling time per rank (s):");
    for (const double t : times) std::printf(" %.3f", t);
    std::printf("; wall time with the gathers: %.3f s\n", total);

    if (verify) {
      bool same = true;
      for (std::size_t k = 0; k < samplers.size(); ++k) {
        std::vector<float> whole(n * dim);
        sample_block(samplers[k], {0, n}, 0, whole);
        const bool eq = std::equal(whole.begin(), whole.end(), all.begin() + static_cast<std::ptrdiff_t>(k * n * dim),
                                   [](float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); });
        std::printf("verify %-18s gathered rows vs one unsplit batch on rank 0: %s\n", samplers[k].name,
                    eq ? "bit-identical" : "DIFFERENT");
        same = same && eq;
      }
      failures += same ? 0 : 1;
    }
    if (!out_path.empty()) {
      std::FILE* f = std::fopen(out_path.c_str(), "wb");
      if (f == nullptr || std::fwrite(all.data(), sizeof(float), all.size(), f) != all.size() || std::fclose(f) != 0)
        throw std::runtime_error("cannot write --out " + out_path);
      std::printf("wrote %s (%zu float32 values: %zu samplers x %zu rows x 2)\n", out_path.c_str(), all.size(),
                  samplers.size(), n);
    }
    std::printf("%s\n", failures == 0 ? "all checks pass" : "SOME CHECKS FAILED");
  }
  MPI_Bcast(&failures, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Options first: --help and a bad option exit before MPI starts.
  ex::cli args(argc, argv, "sample_sharded",
               "N samples split across MPI ranks in contiguous blocks (first_sample = the block's first row), gathered "
               "on rank 0 with MPI_Gatherv: bit-identical to one process. Run with mpirun -np P.");
  const long samples = args.integer("--samples", 20000, "samples N (rows of 2 values) per sampler");
  const long chunk = args.integer("--chunk", 0, "rows per sampler call within a rank (0: the whole block in one call)");
  const long seed = args.integer("--seed", 2024, "seed of the Philox noise and the Brownian tree");
  const long steps_sde = args.integer("--steps-sde", 50, "steps of DPM++ 2M SDE (Brownian tree)");
  const long steps_anc = args.integer("--steps-ancestral", 100, "steps of Euler ancestral");
  const long steps_ode = args.integer("--steps-ode", 30, "steps of DPM-Solver++(2M)");
  const std::string out = args.text("--out", "", "binary file for the gathered samples (float32; empty: none)");
  const bool verify = args.flag("--verify", "rank 0 also samples all N in one batch and compares the bits");
  args.finish();
  if (const std::string bad = check_options(samples, chunk, seed, {steps_sde, steps_anc, steps_ode}); !bad.empty()) {
    std::fprintf(stderr, "sample_sharded: %s\n", bad.c_str());
    return 2;
  }

  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int status = 0;
  try {
    status = run(rank, size, samples, chunk, seed, steps_sde, steps_anc, steps_ode, out, verify);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sample_sharded (rank %d): %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  MPI_Finalize();
  return status;
}
