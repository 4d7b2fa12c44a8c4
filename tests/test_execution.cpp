// detail::for_each_range under parallel_policy, run on the persistent worker pool: the ranges
// are exactly the split ⌊units·i/t⌋·grain for t = min(threads, n / min_elements_per_thread,
// units), each run once, the first on the calling thread; the first exception by range order
// comes back after every range ran; calls from several threads at once and calls nested in a
// range neither deadlock nor change the ranges; the pool's threads persist across calls; on
// Linux, a pool started from a thread pinned to one CPU runs its workers on the process's
// CPUs (checked in a fresh process, since the pool is a process-wide static).
#include <catch2/catch.hpp>

#include <diffusion/execution.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace {

using diffusion::parallel_policy;
using diffusion::detail::for_each_range;
using range = std::pair<std::size_t, std::size_t>;

unsigned hardware_threads() { return std::max(std::thread::hardware_concurrency(), 1u); }

/// The threads a call can use: the pool's workers and the caller (starts the pool).
std::size_t pool_threads() {
  for_each_range(parallel_policy{2, 1}, 2, 1, [](std::size_t, std::size_t) {});
  const diffusion::worker_pool_info info = diffusion::worker_pool_status();
  REQUIRE(info.started);
  return info.workers + 1;
}

/// The split the policy must produce (the formula of the thread-per-call implementation).
std::vector<range> expected_ranges(const parallel_policy& p, std::size_t n, std::size_t grain) {
  if (n == 0) return {};
  const std::size_t units = (n + grain - 1) / grain;
  const std::size_t t = std::min(diffusion::detail::thread_count(p, n), units);
  if (t <= 1) return {{0, n}};
  std::vector<range> r;
  for (std::size_t i = 0; i < t; ++i)
    r.emplace_back(std::min(n, units * i / t * grain), std::min(n, units * (i + 1) / t * grain));
  return r;
}

/// What one call did: its ranges (sorted), the thread of each, and how often each index ran.
struct record {
  std::mutex m;
  std::vector<range> ranges;
  std::vector<std::thread::id> threads;
  std::vector<std::atomic<int>> hits;
  explicit record(std::size_t n) : hits(n) {}
  void add(std::size_t b, std::size_t e) {
    for (std::size_t k = b; k < e; ++k) hits[k].fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard<std::mutex> lock(m);
    ranges.emplace_back(b, e);
    threads.push_back(std::this_thread::get_id());
  }
};

/// Runs one call and checks its ranges, their coverage and who ran the first; returns the
/// number of distinct threads that ran it.
std::size_t check_call(const parallel_policy& p, std::size_t n, std::size_t grain) {
  record rec(n);
  for_each_range(p, n, grain, [&](std::size_t b, std::size_t e) { rec.add(b, e); });
  for (std::size_t k = 0; k < n; ++k) REQUIRE(rec.hits[k].load() == 1);
  std::vector<std::size_t> order(rec.ranges.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rec.ranges[a] < rec.ranges[b]; });
  std::vector<range> sorted;
  for (const std::size_t i : order) sorted.push_back(rec.ranges[i]);
  REQUIRE(sorted == expected_ranges(p, n, grain));
  if (!order.empty()) CHECK(rec.threads[order.front()] == std::this_thread::get_id());
  return std::set<std::thread::id>(rec.threads.begin(), rec.threads.end()).size();
}

}  // namespace

TEST_CASE("for_each_range runs the split of the thread-per-call version, every index once", "[execution]") {
  const std::size_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 100, 257, 1000, 4096, 4099};
  const std::size_t grains[] = {1, 3, 8, 64};
  const unsigned thread_counts[] = {0, 1, 2, 3, 4, 7, 16};
  const std::size_t minimums[] = {0, 1, 2, 5, 100};
  for (const std::size_t n : sizes)
    for (const std::size_t grain : grains)
      for (const unsigned threads : thread_counts)
        for (const std::size_t per : minimums) {
          INFO("n = " << n << ", grain = " << grain << ", threads = " << threads << ", min per thread = " << per);
          const parallel_policy p{threads, per};
          const std::size_t distinct = check_call(p, n, grain);
          // At most one thread per range, and never more than the hardware has.
          CHECK(distinct <= std::max<std::size_t>(expected_ranges(p, n, grain).size(), 1));
          CHECK(distinct <= hardware_threads());
          // A split call really uses the pool when there is one (nothing else holds it here).
          if (expected_ranges(p, n, grain).size() >= 2 && pool_threads() >= 2) CHECK(distinct >= 2);
        }
}

TEST_CASE("an unsplit call runs once on the calling thread", "[execution]") {
  for (const parallel_policy p : {parallel_policy{1, 1}, parallel_policy{4, 1000}, parallel_policy{0, 1u << 20}}) {
    std::vector<range> calls;
    std::vector<std::thread::id> ids;
    for_each_range(p, 1000, 8, [&](std::size_t b, std::size_t e) {
      calls.emplace_back(b, e);
      ids.push_back(std::this_thread::get_id());
    });
    REQUIRE(calls.size() == 1);
    CHECK(calls[0] == range{0, 1000});
    CHECK(ids[0] == std::this_thread::get_id());
  }
  int runs = 0;
  for_each_range(parallel_policy{4, 1}, 0, 8, [&](std::size_t, std::size_t) { ++runs; });
  CHECK(runs == 0);
}

TEST_CASE("the pool's threads persist across calls and are capped at hardware_concurrency", "[execution]") {
  std::mutex m;
  std::set<std::thread::id> ids;
  for (int call = 0; call < 50; ++call)
    for_each_range(parallel_policy{64, 1}, 1 << 12, 1, [&](std::size_t, std::size_t) {
      const std::lock_guard<std::mutex> lock(m);
      ids.insert(std::this_thread::get_id());
    });
  // The caller plus the same workers every time, at most hardware_concurrency() − 1 of them.
  const diffusion::worker_pool_info info = diffusion::worker_pool_status();
  REQUIRE(info.started);
  CHECK(info.workers + 1 <= hardware_threads());
  CHECK(ids.size() <= info.workers + 1);
  CHECK(ids.count(std::this_thread::get_id()) == 1);
  if (info.workers >= 1) CHECK(ids.size() >= 2);
#if defined(__linux__)
  // No more workers than the CPUs they may use, less the caller's share.
  CHECK(info.caller_cpus >= 1);
  CHECK(info.worker_cpus >= info.caller_cpus);
  CHECK(info.workers + 1 <= info.worker_cpus);
  CHECK(info.widened == info.caller_pinned);
#endif
}

TEST_CASE("calls after the workers fell asleep, and a caller that sleeps while waiting", "[execution]") {
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // past the workers' polling
    check_call(parallel_policy{2, 1}, 1000, 4);
  }
  // The worker's range outlasts the caller's polling: the caller waits on the condition variable.
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> ranges{0};
  for_each_range(parallel_policy{2, 1}, 2, 1, [&](std::size_t, std::size_t) {
    if (std::this_thread::get_id() != caller) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ranges.fetch_add(1);
  });
  CHECK(ranges.load() == 2);
}

TEST_CASE("the first exception by range order is rethrown after every range ran", "[execution][errors]") {
  for (const unsigned threads : {2u, 3u, 7u, 16u}) {
    const parallel_policy p{threads, 1};
    const std::size_t n = 1000, grain = 10;
    const auto ranges = expected_ranges(p, n, grain);
    REQUIRE(ranges.size() == std::min<std::size_t>(threads, 100));
    // Throw from a set of ranges (given by index); the lowest index must come back.
    const std::vector<std::vector<std::size_t>> failing = {{0}, {1}, {ranges.size() - 1}, {1, ranges.size() - 1}, {0, 1}};
    for (const auto& bad : failing) {
      INFO("threads = " << threads << ", first failing range = " << bad.front());
      std::vector<std::atomic<int>> hits(n);
      const auto f = [&](std::size_t b, std::size_t e) {
        for (std::size_t k = b; k < e; ++k) hits[k].fetch_add(1);
        const auto i = static_cast<std::size_t>(std::find(ranges.begin(), ranges.end(), range{b, e}) - ranges.begin());
        if (std::find(bad.begin(), bad.end(), i) != bad.end()) throw std::runtime_error("range " + std::to_string(i));
      };
      CHECK_THROWS_WITH(for_each_range(p, n, grain, f), "range " + std::to_string(bad.front()));
      for (std::size_t k = 0; k < n; ++k) REQUIRE(hits[k].load() == 1);
    }
    // The pool is still usable afterwards.
    check_call(p, n, grain);
  }
}

TEST_CASE("parallel calls from 4 threads at once", "[execution][concurrency]") {
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (unsigned c = 0; c < 4; ++c)
    callers.emplace_back([&, c] {
      for (std::size_t call = 0; call < 300; ++call) {
        const std::size_t n = 100 + 37 * ((call + c) % 50), grain = 1 + (call % 5);
        const parallel_policy p{1 + static_cast<unsigned>((call + c) % 4), 1};
        std::vector<std::atomic<int>> hits(n);
        std::mutex m;
        std::vector<range> ranges;
        for_each_range(p, n, grain, [&](std::size_t b, std::size_t e) {
          for (std::size_t k = b; k < e; ++k) hits[k].fetch_add(1);
          const std::lock_guard<std::mutex> lock(m);
          ranges.emplace_back(b, e);
        });
        std::sort(ranges.begin(), ranges.end());
        bool ok = ranges == expected_ranges(p, n, grain);
        for (std::size_t k = 0; k < n; ++k) ok = ok && hits[k].load() == 1;
        if (!ok) failures.fetch_add(1);
      }
    });
  for (auto& t : callers) t.join();
  CHECK(failures.load() == 0);
}

TEST_CASE("a parallel call nested in a range runs inline, with the same split", "[execution][nested]") {
  const parallel_policy p{4, 1};
  const std::size_t outer = 64, inner = 500, grain = 7;
  std::vector<std::atomic<int>> hits(outer * inner);
  std::atomic<int> wrong_split{0}, left_thread{0};
  for_each_range(p, outer, 1, [&](std::size_t ob, std::size_t oe) {
    for (std::size_t o = ob; o < oe; ++o) {
      const std::thread::id here = std::this_thread::get_id();
      std::vector<range> ranges;  // inline: only this thread touches it
      for_each_range(p, inner, grain, [&](std::size_t b, std::size_t e) {
        if (std::this_thread::get_id() != here) left_thread.fetch_add(1);
        for (std::size_t k = b; k < e; ++k) hits[o * inner + k].fetch_add(1);
        ranges.emplace_back(b, e);
      });
      if (ranges != expected_ranges(p, inner, grain)) wrong_split.fetch_add(1);
    }
  });
  for (std::size_t k = 0; k < outer * inner; ++k) REQUIRE(hits[k].load() == 1);
  CHECK(wrong_split.load() == 0);
  CHECK(left_thread.load() == 0);
  // An exception from a nested call reaches the outer caller.
  CHECK_THROWS_WITH(for_each_range(p, outer, 1,
                                   [&](std::size_t ob, std::size_t) {
                                     for_each_range(p, inner, grain, [&](std::size_t b, std::size_t) {
                                       if (ob == 0 && b != 0) throw std::runtime_error("nested");
                                     });
                                   }),
                    "nested");
}

// --------------------------------------------------------------------------------------
// CPU affinity (Linux). The pool is a process-wide static started once, so each scenario
// runs in a fresh process: the visible test starts this test program again (/proc/self/exe)
// with the name of a hidden test ("[.]"), which sets the starting thread's affinity, starts
// the pool and checks where its workers may run.

#if defined(__linux__)
namespace {

/// The calling thread's affinity mask (at most CPU_SETSIZE CPUs: enough for the tests).
cpu_set_t this_thread_mask() {
  cpu_set_t m;
  CPU_ZERO(&m);
  REQUIRE(sched_getaffinity(0, sizeof m, &m) == 0);
  return m;
}

std::vector<std::size_t> cpus_of(const cpu_set_t& m) {
  std::vector<std::size_t> cpus;
  for (std::size_t c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &m)) cpus.push_back(c);
  return cpus;
}

/// Where each range of one parallel call ran: whether on the caller, and the mask of its thread.
struct range_site {
  bool caller;
  cpu_set_t mask;
  int cpu;
};

std::vector<range_site> run_and_record_sites() {
  const std::thread::id caller = std::this_thread::get_id();
  std::mutex m;
  std::vector<range_site> sites;
  // Many small ranges, each long enough (≈ 1 ms) that every worker takes part.
  for_each_range(parallel_policy{64, 1}, 64, 1, [&](std::size_t, std::size_t) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    while (std::chrono::steady_clock::now() < until) {
    }
    range_site s{std::this_thread::get_id() == caller, {}, sched_getcpu()};
    CPU_ZERO(&s.mask);
    sched_getaffinity(0, sizeof s.mask, &s.mask);
    const std::lock_guard<std::mutex> lock(m);
    sites.push_back(s);
  });
  return sites;
}

/// Runs the hidden test `name` in a new process of this program; its exit status.
int run_in_fresh_process(const std::string& name) {
  std::vector<char> self(4096, '\0');
  const ssize_t len = readlink("/proc/self/exe", self.data(), self.size() - 1);
  REQUIRE(len > 0);
  std::string test = name;
  char* argv[] = {self.data(), test.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, self.data(), nullptr, nullptr, argv, environ) == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

TEST_CASE("affinity child: pool started from a thread pinned to one CPU", "[.][affinity_child]") {
  REQUIRE_FALSE(diffusion::worker_pool_status().started);  // a fresh process
  const std::vector<std::size_t> allowed = cpus_of(this_thread_mask());
  REQUIRE(allowed.size() >= 2);
  // Pin this thread to one CPU, as OMP_PROC_BIND=close pins an OpenMP program's initial thread.
  const std::size_t pinned = allowed.front();
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(pinned, &one);
  REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);

  const std::vector<range_site> sites = run_and_record_sites();
  const diffusion::worker_pool_info info = diffusion::worker_pool_status();
  INFO("pinned to CPU " << pinned << "; pool: " << info.workers << " workers on " << info.worker_cpus
                        << " CPUs, caller " << info.caller_cpus << " CPUs");
  REQUIRE(info.started);
  CHECK(info.caller_cpus == 1);
  CHECK(info.caller_pinned);
  CHECK(info.widened);
  CHECK(info.worker_cpus >= allowed.size());  // at least the CPUs this process had before pinning
  CHECK(info.workers >= 1);
  std::size_t worker_ranges = 0, off_pinned_cpu = 0;
  for (const range_site& s : sites) {
    if (s.caller) {
      CHECK(CPU_EQUAL(&s.mask, &one));  // the caller's own mask is not touched
      continue;
    }
    ++worker_ranges;
    // Not confined to the pinned CPU: every CPU this process may use before pinning is allowed.
    CHECK(CPU_COUNT(&s.mask) >= 2);
    for (const std::size_t c : allowed) CHECK(CPU_ISSET(c, &s.mask));
    off_pinned_cpu += static_cast<std::size_t>(s.cpu) != pinned;
  }
  CHECK(worker_ranges >= 1);
  // Where the scheduler put them is not checked (a loaded machine may keep them waiting);
  // reported for the record.
  WARN(worker_ranges << " of " << sites.size() << " ranges ran on workers, " << off_pinned_cpu
                     << " of those on a CPU other than the pinned one");
  const cpu_set_t after = this_thread_mask();
  CHECK(CPU_EQUAL(&after, &one));
}

TEST_CASE("affinity child: pool started from a thread restricted to several cores", "[.][affinity_child]") {
  REQUIRE_FALSE(diffusion::worker_pool_status().started);
  const std::vector<std::size_t> allowed = cpus_of(this_thread_mask());
  REQUIRE(allowed.size() >= 3);
  // All but the last CPU: a deliberate restriction (taskset -c, numactl), kept by the pool.
  cpu_set_t some;
  CPU_ZERO(&some);
  for (std::size_t i = 0; i + 1 < allowed.size(); ++i) CPU_SET(allowed[i], &some);
  REQUIRE(sched_setaffinity(0, sizeof some, &some) == 0);

  const std::vector<range_site> sites = run_and_record_sites();
  const diffusion::worker_pool_info info = diffusion::worker_pool_status();
  REQUIRE(info.started);
  CHECK(info.caller_cpus == allowed.size() - 1);
  CHECK_FALSE(info.widened);
  CHECK(info.worker_cpus == allowed.size() - 1);
  CHECK(info.workers + 1 <= allowed.size() - 1);  // no more threads than its CPUs
  for (const range_site& s : sites) CHECK(CPU_EQUAL(&s.mask, &some));
}

TEST_CASE("the worker pool does not inherit a caller's binding to one CPU (fresh processes)", "[execution][affinity]") {
  const std::vector<std::size_t> allowed = cpus_of(this_thread_mask());
  if (allowed.size() < 2) {
    WARN("skipped: this process may use " << allowed.size() << " CPU");
    return;
  }
  CHECK(run_in_fresh_process("affinity child: pool started from a thread pinned to one CPU") == 0);
  // A restriction to several CPUs is kept: needs 3 or more CPUs, of which all but the last
  // are not the hardware threads of one core (the child would see a pinned caller).
  const diffusion::detail::cpu_mask core =
      diffusion::detail::cpu_mask::core_of(allowed.front(), CPU_SETSIZE);
  bool one_core = core.cpus() != 0;
  for (std::size_t i = 0; i + 1 < allowed.size(); ++i)
    one_core = one_core && core.contains(allowed[i]);
  if (allowed.size() >= 3 && !one_core)
    CHECK(run_in_fresh_process("affinity child: pool started from a thread restricted to several cores") == 0);
  else
    WARN("restriction to several cores not checked: this process may use " << allowed.size() << " CPUs");
}
#endif
