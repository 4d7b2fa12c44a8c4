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
/// worker threads plus the calling thread: one worker fewer than the CPUs the workers may run
/// on (below), at most `std::thread::hardware_concurrency() − 1`, none on one CPU. The pool is
/// created by the first call that actually splits its work (nothing starts a thread before,
/// and a program that never does never has one) and is stopped and joined when the program
/// exits, by the destructor of a function-local static. Parallel calls from destructors of
/// other static objects, or after `main` returned while the pool may already be gone, are not
/// supported.
///
/// **CPU affinity** (Linux; elsewhere the workers are plain threads and nothing below
/// applies). A new thread inherits the affinity mask of the thread that creates it, so the
/// workers would run wherever the thread that happened to start the pool was allowed to.
/// The policy, applied once when the pool starts:
/// - If that thread may run on several cores, the workers keep its mask, and the pool has
///   one worker fewer than the CPUs in it: a process or thread restricted on purpose (taskset,
///   numactl, a cgroup cpuset, a job scheduler) keeps the pool inside its CPUs, without more
///   threads than CPUs.
/// - If it is bound to a single core (one CPU, or the hardware threads of one core) while
///   the process may use more CPUs, the binding is taken for what it usually is: an OpenMP
///   runtime pinning its initial thread (`OMP_PROC_BIND`, `OMP_PLACES`, `GOMP_CPU_AFFINITY`,
///   `KMP_AFFINITY`, common in PyTorch and oneDNN deployments) or a framework pinning its
///   own thread, not a limit for helper threads. Left alone, every worker would share that one
///   core and a parallel call would take as long as a sequential one. The workers are given
///   instead every CPU the kernel lets the process use (all online CPUs within its cgroup
///   cpuset, found by a short-lived probe thread that asks for all of them), and the pool has
///   one worker fewer than those. The calling thread's own mask is never changed.
/// - Linux keeps no record of the mask a process started with, so a whole process confined to
///   one core with `taskset -c 3` looks the same as a pinned thread and its workers are spread
///   too. To keep such a process on its core, give it `parallel_policy{.threads = 1}` (or
///   sequential_policy), or confine it with a cpuset, which the kernel enforces.
///
/// What the pool found is reported by @ref diffusion::worker_pool_status (no message is
/// printed): its size, the CPUs of the starting thread and of the workers, and whether that
/// thread was pinned and the workers widened.
///
/// **Out of memory.** If the pool cannot be created (its storage or CPU masks fail to allocate),
/// a parallel call runs its ranges on the calling thread, in order, and a later call tries to
/// start the pool again; a thread that cannot be started leaves the pool with those that were.
/// A parallel call never terminates the program for want of memory.
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

#if defined(__linux__)
#include <sched.h>  // sched_getaffinity, sched_setaffinity, CPU_ALLOC (glibc, musl: _GNU_SOURCE)

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#endif

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
/// allocation) and the calling thread, which takes the first range. The pool has one worker
/// fewer than the CPUs it may use, at most `hardware_concurrency() − 1` (see execution.hpp,
/// "CPU affinity"), so at most that many threads plus one run a call: with a larger `threads`
/// the t ranges are the same (so are the results) but each thread runs several consecutive
/// ones. A call that finds the pool busy with another
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

/// @brief What the worker pool of @ref diffusion::parallel_policy found about the CPUs when it
/// started (see execution.hpp, "CPU affinity"). Returned by @ref diffusion::worker_pool_status.
struct worker_pool_info {
  /// Whether the pool exists (a parallel call has split its work); everything below is 0 or
  /// false until then.
  bool started = false;
  /// Its worker threads (the thread making a call runs a share too and is not counted).
  std::size_t workers = 0;
  /// CPUs in the affinity mask of the thread that started the pool (0: unknown, not Linux).
  std::size_t caller_cpus = 0;
  /// CPUs the workers may run on (0: unknown, not Linux).
  std::size_t worker_cpus = 0;
  /// The starting thread was bound to a single core while the process may use more CPUs
  /// (typically an OpenMP runtime's binding of its initial thread).
  bool caller_pinned = false;
  /// The workers were given the process's CPUs instead of that thread's mask (caller_pinned,
  /// and the probe of the process's CPUs succeeded).
  bool widened = false;
};

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

#if defined(__linux__)
/// A Linux CPU mask of any size (glibc's CPU_ALLOC sets), for affinity masks larger than
/// the 1024 CPUs of a plain cpu_set_t.
class cpu_mask {
 public:
  cpu_mask() = default;

  /// The affinity mask of the calling thread; empty (cpus() == 0) if it cannot be read.
  static cpu_mask of_this_thread() {
    for (std::size_t n = 1024; n <= (std::size_t{1} << 20); n *= 2) {
      cpu_mask m(n);
      if (!m.set_) return {};
      if (::sched_getaffinity(0, m.bytes(), m.set_.get()) == 0) return m;
      if (errno != EINVAL) return {};  // EINVAL: the kernel's mask is larger than n CPUs
    }
    return {};
  }

  /// A mask of the same size as `like` with every CPU in it.
  static cpu_mask all_like(const cpu_mask& like) {
    cpu_mask m(like.size_);
    if (m.set_)
      for (std::size_t c = 0; c < m.size_; ++c) CPU_SET_S(c, m.bytes(), m.set_.get());
    return m;
  }

  /// The hardware threads of the core of CPU `cpu` (its SMT siblings, itself included), read
  /// from sysfs; empty if they cannot be read.
  static cpu_mask core_of(std::size_t cpu, std::size_t size) {
    char path[96];
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%zu/topology/thread_siblings_list", cpu);
    std::FILE* f = std::fopen(path, "r");
    if (!f) return {};
    char list[512] = {};
    const bool read = std::fgets(list, sizeof list, f) != nullptr;
    std::fclose(f);
    cpu_mask m(size);
    if (!read || !m.set_) return {};
    // A cpulist: "3", "0-1", "0,64", "0-1,64-65".
    for (char* p = list; *p != '\0' && *p != '\n';) {
      char* end = nullptr;
      const unsigned long first = std::strtoul(p, &end, 10);
      if (end == p) return {};
      unsigned long last = first;
      p = end;
      if (*p == '-') {
        last = std::strtoul(p + 1, &end, 10);
        if (end == p + 1) return {};
        p = end;
      }
      for (unsigned long c = first; c <= last && c < size; ++c) CPU_SET_S(c, m.bytes(), m.set_.get());
      if (*p == ',') ++p;
    }
    return m;
  }

  /// Makes this the calling thread's affinity mask (the kernel keeps only the CPUs the
  /// process's cpuset allows); false if it refused.
  bool apply_to_this_thread() const noexcept {
    return set_ && ::sched_setaffinity(0, bytes(), set_.get()) == 0;
  }

  /// The number of CPUs in the mask.
  [[nodiscard]] std::size_t cpus() const noexcept {
    return set_ ? static_cast<std::size_t>(CPU_COUNT_S(bytes(), set_.get())) : 0;
  }
  /// The lowest CPU in the mask (size() if none).
  [[nodiscard]] std::size_t first() const noexcept {
    for (std::size_t c = 0; set_ && c < size_; ++c)
      if (CPU_ISSET_S(c, bytes(), set_.get())) return c;
    return size_;
  }
  /// Whether CPU `cpu` is in the mask.
  [[nodiscard]] bool contains(std::size_t cpu) const noexcept {
    return set_ && cpu < size_ && CPU_ISSET_S(cpu, bytes(), set_.get());
  }
  /// Whether every CPU of this mask is in `other`.
  [[nodiscard]] bool within(const cpu_mask& other) const noexcept {
    for (std::size_t c = 0; c < size_; ++c)
      if (contains(c) && !other.contains(c)) return false;
    return true;
  }
  /// The mask's capacity in CPUs.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct free_set {
    void operator()(cpu_set_t* p) const noexcept { CPU_FREE(p); }
  };
  explicit cpu_mask(std::size_t n) : set_(CPU_ALLOC(n)), size_(set_ ? n : 0) {
    if (set_) CPU_ZERO_S(bytes(), set_.get());
  }
  [[nodiscard]] std::size_t bytes() const noexcept { return CPU_ALLOC_SIZE(size_); }

  std::unique_ptr<cpu_set_t, free_set> set_;
  std::size_t size_ = 0;
};

/// The CPUs the kernel lets this process run on (all online CPUs within its cgroup cpuset),
/// whatever the calling thread's mask: a short-lived thread asks for every CPU and reads
/// what it got. Empty if that fails.
inline cpu_mask process_cpus(const cpu_mask& like) {
  cpu_mask result;
  try {
    std::thread([&result, &like] {
      if (cpu_mask::all_like(like).apply_to_this_thread()) result = cpu_mask::of_this_thread();
    }).join();
  } catch (...) {  // no thread to be had: no probe
  }
  return result;
}
#endif

/// The affinity plan of the pool (see the file's documentation): how many workers, on which
/// CPUs, and what to report.
struct pool_cpu_plan {
  std::size_t workers = 0;
  worker_pool_info info;
#if defined(__linux__)
  cpu_mask widened_mask;  // the workers' mask when info.widened
#endif

  static pool_cpu_plan make() {
    pool_cpu_plan plan;
    const std::size_t hardware = std::max(std::thread::hardware_concurrency(), 1u);
    std::size_t cpus = hardware;
#if defined(__linux__)
    const cpu_mask caller = cpu_mask::of_this_thread();
    plan.info.caller_cpus = caller.cpus();
    plan.info.worker_cpus = caller.cpus();
    if (caller.cpus() != 0) {
      const std::size_t first = caller.first();
      const cpu_mask core = caller.cpus() == 1 ? cpu_mask{} : cpu_mask::core_of(first, caller.size());
      const bool one_core = caller.cpus() == 1 || (core.cpus() != 0 && caller.within(core));
      if (one_core) {
        cpu_mask process = process_cpus(caller);
        if (process.cpus() > caller.cpus()) {
          plan.info.caller_pinned = plan.info.widened = true;
          plan.info.worker_cpus = process.cpus();
          plan.widened_mask = std::move(process);
        }
      }
      cpus = std::min(hardware, plan.info.worker_cpus);
    }
#endif
    plan.workers = cpus - 1;
    return plan;
  }
};

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

class thread_pool;

/// The pool once it has started (worker_pool_status reads it without starting it); null
/// again once it is destroyed.
inline std::atomic<const thread_pool*>& started_pool() noexcept {
  static std::atomic<const thread_pool*> pool{nullptr};
  return pool;
}

/// The process-wide worker pool behind parallel_policy (see the file's documentation).
class thread_pool {
 public:
  /// How long a worker polls for the next call before it sleeps, and how long a caller polls
  /// for its workers to finish before it sleeps.
  static constexpr std::chrono::microseconds worker_spin{100}, caller_spin{200};

  /// A pool planned by pool_cpu_plan::make() (see the file's documentation).
  thread_pool() : thread_pool(pool_cpu_plan::make()) {}

  explicit thread_pool(pool_cpu_plan plan)
      : plan_(std::move(plan)),
        slots_(std::make_unique<slot[]>(plan_.workers)),
        threads_(std::make_unique<std::thread[]>(plan_.workers)) {
    const std::size_t workers = plan_.workers;
    for (std::size_t w = 0; w < workers; ++w) {
      try {
        threads_[w] = std::thread([this, w] { work(w); });
      } catch (...) {  // no more threads to be had: run with those started
        break;
      }
      workers_ = w + 1;
    }
    plan_.info.started = true;
    plan_.info.workers = workers_;
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  ~thread_pool() {
    const thread_pool* self = this;
    started_pool().compare_exchange_strong(self, nullptr, std::memory_order_acq_rel);
    stop_.store(true, std::memory_order_release);
    for (std::size_t w = 0; w < workers_; ++w) wake(w);
    for (std::size_t w = 0; w < workers_; ++w) threads_[w].join();
  }

  /// The number of worker threads (the caller not included).
  std::size_t size() const noexcept { return workers_; }

  /// What the pool found when it started (see worker_pool_status).
  const worker_pool_info& info() const noexcept { return plan_.info; }

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
#if defined(__linux__)
    if (plan_.info.widened) plan_.widened_mask.apply_to_this_thread();  // out of the caller's core
#endif
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

  pool_cpu_plan plan_;
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
  static thread_pool pool;
  static const bool published = (started_pool().store(&pool, std::memory_order_release), true);
  (void)published;
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
  if (!inside_parallel_call()) {
    thread_pool* pool = nullptr;
    try {
      pool = &worker_pool();
    } catch (...) {  // the pool could not be created (bad_alloc, no thread): run here, sequentially
      pool = nullptr;
    }
    if (pool != nullptr && pool->try_run(job)) return;
  }
  // Nested in a range, the pool busy with another thread's call, or no pool: the same ranges, here.
  job.executors = 1;
  std::exception_ptr error;
  job.run(0, error);
  if (error) std::rethrow_exception(error);
}

}  // namespace detail

/// @brief What the worker pool found about the CPUs when it started (its size, the CPUs of
/// the thread that started it and of the workers, whether that thread was pinned to one core
/// and the workers widened; see execution.hpp, "CPU affinity"). Does not start the pool: before
/// the first parallel call that splits its work, `started` is false and the rest 0.
inline worker_pool_info worker_pool_status() noexcept {
  const detail::thread_pool* pool = detail::started_pool().load(std::memory_order_acquire);
  return pool ? pool->info() : worker_pool_info{};
}

}  // namespace diffusion

/// @}
