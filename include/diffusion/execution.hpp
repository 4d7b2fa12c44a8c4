/// @file
/// @brief Execution policies: run an element-wise kernel or a reduction on one thread
/// (the default) or split across several, with results bit-identical to the single-threaded run.
///
/// Why the results do not depend on the thread count: every element-wise kernel computes
/// element k from the inputs at k (and, for noise, from the counter-based address of k)
/// only, so any split gives the same bits; every reduction sums fixed blocks of
/// `reduction_block` elements (reductions.hpp), whatever the split, and combines the block sums in
/// one fixed order on the calling thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

#include "config.hpp"

/// @defgroup execution Execution policies
/// @brief `seq` (the default) or `par`: thread parallelism that never changes a result.
/// @{

namespace diffusion {

/// @brief Run on the calling thread. The default of every function that takes a policy.
struct sequential_policy {};

/// @brief Split the work across up to `threads` threads (the calling one included).
///
/// Parallelism is opt-in: nothing in the library starts a thread unless given this
/// policy. Each call starts its threads and joins them before returning (no pool stays
/// behind); starting a thread costs a few microseconds, so a call uses
/// \f$\min(\text{threads}, \lceil n / \text{min\_elements\_per\_thread} \rceil)\f$ threads and runs
/// on the calling thread alone below `2 · min_elements_per_thread` elements.
struct parallel_policy {
  /// Upper bound on the threads used; 0 means `std::thread::hardware_concurrency()`.
  unsigned threads = 0;
  /// No thread gets fewer elements than this (a kernel costing ~1 ns per element makes
  /// 64 K elements about 64 µs, well above the start-up cost of a thread).
  std::size_t min_elements_per_thread = std::size_t{1} << 16;
};

/// @brief The sequential policy object.
inline constexpr sequential_policy seq{};
/// @brief A parallel policy using every hardware thread.
inline constexpr parallel_policy par{};

/// @brief A policy accepted by the library's kernels: @ref diffusion::sequential_policy or @ref diffusion::parallel_policy.
template <class P>
concept execution_policy =
    std::is_same_v<std::remove_cvref_t<P>, sequential_policy> || std::is_same_v<std::remove_cvref_t<P>, parallel_policy>;

namespace detail {

/// The number of threads `policy` uses for n elements.
inline std::size_t thread_count(const sequential_policy&, std::size_t) noexcept { return 1; }
inline std::size_t thread_count(const parallel_policy& p, std::size_t n) noexcept {
  std::size_t t = p.threads != 0 ? p.threads : std::max(1u, std::thread::hardware_concurrency());
  const std::size_t per = std::max<std::size_t>(p.min_elements_per_thread, 1);
  return std::max<std::size_t>(1, std::min(t, n / per));
}

/// Calls `f(begin, end)` on disjoint ranges that cover [0, n), every boundary except n a
/// multiple of `grain` (a SIMD width, a noise block, a reduction block), on up to
/// thread_count(policy, n) threads; the calling thread takes the first range. An exception
/// thrown by `f` is rethrown here (the first one, by range order) after all threads joined.
template <class F>
void for_each_range(const sequential_policy&, std::size_t n, std::size_t, F&& f) {
  if (n != 0) f(std::size_t{0}, n);
}

template <class F>
void for_each_range(const parallel_policy& p, std::size_t n, std::size_t grain, F&& f) {
  DIFFUSION_ASSERT(grain != 0);
  const std::size_t units = (n + grain - 1) / grain;
  const std::size_t t = std::min(thread_count(p, n), units);
  if (t <= 1) {
    if (n != 0) f(std::size_t{0}, n);
    return;
  }
  const auto bound = [&](std::size_t i) { return std::min(n, (units * i / t) * grain); };
  std::vector<std::exception_ptr> errors(t);
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  for (std::size_t i = 1; i < t; ++i)
    workers.emplace_back([&, i] {
      try {
        f(bound(i), bound(i + 1));
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  try {
    f(bound(0), bound(1));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace detail
}  // namespace diffusion

/// @}
