/// @file
/// @brief Execution policies: run an element-wise kernel or a reduction on one thread
/// (the default) or split across several, with results bit-identical to the single-threaded run.
///
/// Why the results do not depend on the thread count: every element-wise kernel computes
/// element k from the inputs at k (and, for noise, from the counter-based address of k)
/// only, so any split gives the same bits; every reduction sums fixed blocks of
/// `reduction_block` elements (reductions.hpp), whatever the split, and combines the block sums in
/// one fixed order on the calling thread.
///
/// **The worker pool.** A @ref diffusion::parallel_policy call runs on one process-wide pool of
/// `std::thread::hardware_concurrency() − 1` worker threads (none on a one-core machine) plus
/// the calling thread. The pool is created by the first call that actually splits its work
/// (nothing starts a thread before, and a program that never does never has one) and is
/// stopped and joined when the program exits, by the destructor of a function-local static.
/// Parallel calls from destructors of other static objects, or after `main` returned while
/// the pool may already be gone, are not supported.
///
/// **Cost per call.** Dispatching a call allocates nothing (the pool's storage is allocated
/// once, when it starts; only an exception thrown by a range allocates, as `std::current_exception`
/// may). A worker that finished a call keeps polling for the next one for about 100 µs before
/// it sleeps on a condition variable, so calls in quick succession are picked up without a
/// system call. Measured on the shared 2-vCPU KVM machine this was written on (2 threads,
/// empty body): about 0.5 µs per call back to back (benchmark overhead/spawn_join_2t; 1.5 µs
/// median timed call by call), 20–30 µs when the worker had gone to sleep, against 37–42 µs
/// (up to 135 µs) and 3 allocations for the thread started and joined per call before. When
/// other processes keep both cores busy, a call waits for the scheduler to run the worker
/// (about 110 µs median there, under a load average of 4). The price of the polling is that
/// each worker keeps its core busy for up to 100 µs after each call.
///
/// **Concurrency.** Parallel calls may be made from any number of threads at once. The pool
/// serves one call at a time: a call that finds it busy (another thread's call is running
/// on it) does not wait, it runs all its ranges on its own thread, one after the other; a
/// parallel call made from inside a range (a nested call) runs inline the same way. Neither
/// changes a result, since the results do not depend on the split.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "config.hpp"

/// @defgroup execution Execution policies
/// @brief `seq` (the default) or `par`: thread parallelism that never changes a result.
/// @{

namespace diffusion {

/// @brief Run on the calling thread. The default of every function that takes a policy.
struct sequential_policy {};

/// @brief Split the work across up to `threads` threads (the calling one included).
///
/// Parallelism is opt-in: nothing in the library starts a thread unless given this policy.
/// A call over n elements is split into
/// \f$t = \min(\text{threads}, \lfloor n / \text{min\_elements\_per\_thread} \rfloor)\f$ ranges
/// (at most one per block of the kernel; every boundary but n a multiple of the block) and
/// runs on the calling thread alone when \f$t \le 1\f$, that is below
/// `2 · min_elements_per_thread` elements or with `threads = 1`; such a call does not start
/// the pool. Otherwise the ranges run on the process-wide worker pool (see execution.hpp:
/// created on first use, joined at exit, about 0.5–1.5 µs of dispatch per call, no
/// allocation) and the calling thread, which takes the first range. The pool has
/// `hardware_concurrency() − 1` workers, so at most `hardware_concurrency()` threads run a
/// call: with a larger `threads` the t ranges are the same (so are the results) but each
/// thread runs several consecutive ones. A call that finds the pool busy with another
/// thread's call, or that is made from inside a range, runs its ranges on the calling thread.
struct parallel_policy {
  /// Upper bound on the threads used; 0 means `std::thread::hardware_concurrency()`.
  unsigned threads = 0;
  /// No thread gets fewer elements than this (a kernel costing ~1 ns per element makes
  /// 64 K elements about 64 µs, far above the ~1 µs a call costs to dispatch to the pool, and
  /// above the 20–30 µs of waking a worker that went to sleep).
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

/// True on the pool's workers, and on a calling thread while it runs its share of a call:
/// a parallel call made there runs inline instead of waiting for the pool it is part of.
inline bool& inside_parallel_call() noexcept {
  static thread_local bool inside = false;
  return inside;
}

/// A hint to the core that this is a spin-wait loop.
inline void cpu_relax() noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_ia32_pause();
#elif defined(__GNUC__) && (defined(__aarch64__) || defined(__arm__))
  __asm__ __volatile__("yield");
#endif
}

/// Polls `done()` for up to `budget`; returns its last value.
template <class Pred>
bool spin_until(Pred done, std::chrono::nanoseconds budget) noexcept {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() - start > budget) return done();
  }
}

/// One split call: `ranges` ranges [bound(i), bound(i + 1)) over [0, n), every boundary but n
/// a multiple of `grain`, run by `executors` threads, thread j taking the consecutive ranges
/// [first(j), first(j + 1)) (thread 0, the caller, starts with range 0).
struct range_job {
  void (*call)(void*, std::size_t, std::size_t);
  void* f;
  std::size_t n, grain, units, ranges, executors;

  std::size_t bound(std::size_t i) const noexcept { return std::min(n, (units * i / ranges) * grain); }
  std::size_t first(std::size_t j) const noexcept { return ranges * j / executors; }

  /// Runs thread j's ranges, all of them even if one throws; returns the index of the first
  /// that threw (`ranges` if none) and stores its exception in `error`.
  std::size_t run(std::size_t j, std::exception_ptr& error) const noexcept {
    std::size_t failed = ranges;
    for (std::size_t i = first(j), end = first(j + 1); i < end; ++i) {
      try {
        call(f, bound(i), bound(i + 1));
      } catch (...) {
        if (failed == ranges) {
          failed = i;
          error = std::current_exception();
        }
      }
    }
    return failed;
  }
};

template <class F>
void call_range(void* f, std::size_t begin, std::size_t end) {
  (*static_cast<F*>(f))(begin, end);
}

/// The process-wide worker pool behind parallel_policy (see the file's documentation).
class thread_pool {
 public:
  /// How long a worker polls for the next call before it sleeps, and how long a caller polls
  /// for its workers to finish before it sleeps.
  static constexpr std::chrono::microseconds worker_spin{100}, caller_spin{200};

  explicit thread_pool(std::size_t workers)
      : slots_(std::make_unique<slot[]>(workers)), threads_(std::make_unique<std::thread[]>(workers)) {
    for (std::size_t w = 0; w < workers; ++w) {
      try {
        threads_[w] = std::thread([this, w] { work(w); });
      } catch (...) {  // no more threads to be had: run with those started
        break;
      }
      workers_ = w + 1;
    }
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  ~thread_pool() {
    stop_.store(true, std::memory_order_release);
    for (std::size_t w = 0; w < workers_; ++w) wake(w);
    for (std::size_t w = 0; w < workers_; ++w) threads_[w].join();
  }

  /// The number of worker threads (the caller not included).
  std::size_t size() const noexcept { return workers_; }

  /// Runs `job` on the caller and min(job.ranges, size() + 1) − 1 workers and rethrows the
  /// first exception by range order; returns false at once, having run nothing, if another
  /// thread's call holds the pool.
  bool try_run(range_job& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    job.executors = std::min(job.ranges, workers_ + 1);
    const std::size_t helpers = job.executors - 1;
    job_ = &job;
    pending_.store(helpers, std::memory_order_relaxed);  // published by wake()'s release
    for (std::size_t w = 0; w < helpers; ++w) wake(w);

    std::exception_ptr error;
    inside_parallel_call() = true;
    std::size_t failed = job.run(0, error);
    inside_parallel_call() = false;

    const auto finished = [this] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(finished, caller_spin)) {
      std::unique_lock<std::mutex> lock(sleep_);
      done_.wait(lock, finished);
    }
    for (std::size_t w = 0; w < helpers; ++w) {
      slot& s = slots_[w];
      if (s.failed < failed) {
        failed = s.failed;
        error = std::move(s.error);
      }
      s.error = nullptr;
    }
    job_ = nullptr;
    busy.unlock();
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  struct alignas(64) slot {
    std::atomic<std::uint32_t> calls{0};  // bumped for each call this worker takes part in
    std::condition_variable wakeup;
    std::size_t failed = 0;  // the worker's result for the current call
    std::exception_ptr error;
  };

  void wake(std::size_t w) {
    slots_[w].calls.fetch_add(1, std::memory_order_release);
    { std::lock_guard<std::mutex> lock(sleep_); }  // a worker between its check and its wait holds sleep_
    slots_[w].wakeup.notify_one();
  }

  void work(std::size_t w) {
    inside_parallel_call() = true;
    slot& s = slots_[w];
    std::uint32_t seen = 0;
    for (;;) {
      const auto called = [&] { return s.calls.load(std::memory_order_acquire) != seen; };
      if (!spin_until(called, worker_spin)) {
        std::unique_lock<std::mutex> lock(sleep_);
        s.wakeup.wait(lock, called);
      }
      seen = s.calls.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_acquire)) return;
      s.failed = job_->run(w + 1, s.error);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        { std::lock_guard<std::mutex> lock(sleep_); }  // as in wake()
        done_.notify_one();
      }
    }
  }

  std::unique_ptr<slot[]> slots_;
  std::unique_ptr<std::thread[]> threads_;
  std::size_t workers_ = 0;
  const range_job* job_ = nullptr;
  alignas(64) std::atomic<std::size_t> pending_{0};  // workers still running the current call
  std::atomic<bool> stop_{false};
  std::mutex busy_;   // held by the thread whose call runs on the pool
  std::mutex sleep_;  // guards the sleeping side of wakeup and done_
  std::condition_variable done_;
};

/// The pool, started on first use (thread-safe static initialization), joined at exit.
inline thread_pool& worker_pool() {
  static thread_pool pool(std::max(std::thread::hardware_concurrency(), 1u) - 1u);
  return pool;
}

/// Calls `f(begin, end)` on disjoint ranges that cover [0, n), every boundary except n a
/// multiple of `grain` (a SIMD width, a noise block, a reduction block), on up to
/// thread_count(policy, n) threads; the calling thread takes the first range. An exception
/// thrown by `f` is rethrown here (the first one, by range order) after all ranges ran.
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
  using G = std::remove_reference_t<F>;
  range_job job{&call_range<G>, const_cast<void*>(static_cast<const void*>(std::addressof(f))), n, grain, units, t, 1};
  if (!inside_parallel_call() && worker_pool().try_run(job)) return;
  // Nested in a range, or the pool is busy with another thread's call: the same ranges, here.
  job.executors = 1;
  std::exception_ptr error;
  job.run(0, error);
  if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace diffusion

/// @}
