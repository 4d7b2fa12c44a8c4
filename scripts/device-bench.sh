#!/usr/bin/env bash
# Measures the normal generator's AVX2 + FMA and AVX-512 paths and the worker pool's CPU
# affinity policy on this machine, and checks that both builds give the recorded bits.
#
#   bash scripts/device-bench.sh            # from the repository root (or anywhere: it finds it)
#   JOBS=16 KEEP=1 bash scripts/device-bench.sh
#
# Needs what the project's tests and benchmarks need (CMake ≥ 3.20, GCC or Clang with C++20,
# xsimd 8, Catch2 2, Google Benchmark, Eigen 3.4). Builds two trees under build/device-bench
# (removed at the end unless KEEP=1):
#   avx2    -march=x86-64-v3   AVX2 + FMA (the kernels' and, without AVX-512, the generator's path)
#   avx512  -march=native      when the CPU has AVX-512F (the generator's AVX-512 path)
# then prints, in this order:
#   1. the machine, the compiler;
#   2. tests: test_noise (incl. the recorded reference checksums of both FMA families and the
#      SIMD-vs-scalar bit identity), test_kernels, test_fused, test_execution (incl. the
#      pinned-caller affinity checks, run in fresh processes) — in both builds;
#   3. normals per second per core: philox_normal::fill and the kernels' chunk path, float and
#      double, 16 K and 4 M normals, both builds alternated 3 times (3 repetitions each), CPU
#      time, median and best, and the ratio AVX-512 / AVX2;
#   4. the worker pool: the fused DDPM step and the normals at 4 M and 64 M elements on 1
#      thread, 2 threads and every hardware thread (ours_par), with the main thread free and
#      pinned to one CPU (--pin_caller, as OMP_PROC_BIND=close pins an OpenMP program's
#      initial thread), real time; the pool's workers and CPUs as it reports them.
# Takes about 5–10 minutes on 16 cores (most of it building). Exit status: 0 when every test
# passed.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
jobs=${JOBS:-$(nproc)}
out=$root/build/device-bench
mkdir -p "$out"
status=0

echo "== machine"
grep -m1 'model name' /proc/cpuinfo || true
echo "cpus: $(nproc) online to this process, $(getconf _NPROCESSORS_ONLN) online"
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
for f in avx2 fma avx512f avx512bw avx512dq avx512vl; do
  if grep -qw "$f" <<<"$flags"; then printf '%s ' "$f"; fi
done
echo
"${CXX:-c++}" --version | head -1
uptime

has_avx512=0
grep -qw avx512f <<<"$flags" && has_avx512=1

builds=(avx2)
declare -A march=([avx2]="-march=x86-64-v3" [avx512]="-march=native")
if [[ $has_avx512 == 1 ]]; then
  builds+=(avx512)
else
  echo "NOTE: this CPU has no AVX-512F: only the AVX2 + FMA build is measured."
fi

targets=(test_noise test_kernels test_fused test_execution bench_noise bench_kernels)
for b in "${builds[@]}"; do
  echo "== build $b (${march[$b]})"
  cmake -S "$root" -B "$out/$b" -DCMAKE_BUILD_TYPE=Release -DDIFFUSION_BUILD_EXAMPLES=OFF \
    -DDIFFUSION_BUILD_DOCS=OFF -DCMAKE_CXX_FLAGS="${march[$b]}" >"$out/$b.configure.log" 2>&1 ||
    { echo "configure failed: see $out/$b.configure.log"; exit 2; }
  cmake --build "$out/$b" -j "$jobs" --target "${targets[@]}" >"$out/$b.build.log" 2>&1 ||
    { echo "build failed: see $out/$b.build.log"; tail -30 "$out/$b.build.log"; exit 2; }
done

echo "== tests"
for b in "${builds[@]}"; do
  for t in test_noise test_kernels test_fused test_execution; do
    log=$out/$b.$t.log
    if "$out/$b/tests/$t" >"$log" 2>&1; then r=passed; else r=FAILED; status=1; fi
    printf '%-7s %-15s %-7s %s\n' "$b" "$t" "$r" "$(tail -2 "$log" | tr -s '\n' ' ')"
    # What the noise test and the affinity test report (SIMD path, pool widening).
    awk '/noise SIMD path|ranges ran on workers|not checked/ {
           line = $0; if ((getline next_line) > 0) line = line " " next_line
           gsub(/  +/, " ", line); print "          " line }' "$log" | sort -u
  done
done

# CSV rows of Google Benchmark: name,iterations,real_time,cpu_time,time_unit,...
run_csv() { "$@" --benchmark_format=csv 2>/dev/null | grep '^"' | grep -v -E '_(mean|median|stddev|cv)"'; }

echo "== normals per second per core (CPU time per normal; median (best) of 9)"
noise_filter='^BM_philox_(normal_fill|row_chunks)<(float|double)>/(16384|4194304)$'
: >"$out/noise.csv"
for round in 1 2 3; do
  for b in "${builds[@]}"; do
    run_csv "$out/$b/benchmarks/bench_noise" --benchmark_filter="$noise_filter" \
      --benchmark_repetitions=3 --benchmark_min_time=0.3 | sed "s/^/$b,/" >>"$out/noise.csv"
  done
done
printf "%-40s %26s %26s %9s\n" "benchmark" "avx2" "avx512" "512/avx2"
awk -F, '
  { gsub(/"/, "", $2); n = $2; sub(/.*\//, "", n); v[$1 "," $2] = v[$1 "," $2] " " $5 / n; names[$2] = 1; bs[$1] = 1 }
  function stats(s,   a, k, i, j, t) {
    k = split(s, a, " ");
    for (i = 1; i <= k; ++i) for (j = i + 1; j <= k; ++j) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    best = a[1]; med = (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    for (name in names) {
      line = sprintf("%-40s", name); m2 = 0; m5 = 0;
      if (("avx2," name) in v) { stats(v["avx2," name]); m2 = med; line = line sprintf(" %6.3f (%5.3f) ns %5.0f M/s", med, best, 1e3 / med) }
      else line = line sprintf(" %26s", "-");
      if (("avx512," name) in v) { stats(v["avx512," name]); m5 = med; line = line sprintf(" %6.3f (%5.3f) ns %5.0f M/s", med, best, 1e3 / med) }
      else line = line sprintf(" %26s", "-");
      if (m2 > 0 && m5 > 0) line = line sprintf(" %8.2fx", m2 / m5);
      print line
    }
  }' "$out/noise.csv" | sort

echo "== worker pool: DDPM step and normals, 1 thread / 2 threads / every thread (real time per element, median of 3)"
for b in "${builds[@]}"; do
  for pin in "" "--pin_caller"; do
    # Two runs: Google Benchmark's CSV wants the same counters in every row of one run.
    for impl in 'ours' 'ours_(2t|par)'; do
      "$out/$b/benchmarks/bench_kernels" $pin --max_elements=67108864 \
        --benchmark_filter="^(ddpm|normals)/$impl/(4194304|67108864)/" \
        --benchmark_repetitions=3 --benchmark_min_time=0.5 --benchmark_format=csv 2>/dev/null |
        grep -E '^(name,|")' | grep -v -E '_(mean|median|stddev|cv)"'
    done >"$out/pool.csv"
    if [[ -n $pin ]]; then echo "-- $b, main thread pinned to one CPU (--pin_caller)"; else echo "-- $b, main thread free"; fi
    awk -F, '
      /^name,/ { delete col; for (i = 1; i <= NF; ++i) { h = $i; gsub(/"/, "", h); col[h] = i }; next }
      { gsub(/"/, "", $1); split($1, p, "/"); key = p[1] "/" p[2] "/" p[3]; t[key] = t[key] " " $3 / p[3]
        if (p[2] == "ours_par" && ("pool_workers" in col))
          pool = sprintf("pool: %d workers on %d CPUs, widened %d", $col["pool_workers"], $col["pool_cpus"], $col["pool_widened"]) }
      function median(s,   a, k, i, j, x) {
        k = split(s, a, " ");
        for (i = 1; i <= k; ++i) for (j = i + 1; j <= k; ++j) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
        return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
      }
      END {
        print "   " pool
        for (key in t) m[key] = median(t[key])
        for (key in m) {
          split(key, p, "/");
          if (p[2] != "ours") continue;
          one = m[key]; two = m[p[1] "/ours_2t/" p[3]]; all = m[p[1] "/ours_par/" p[3]];
          printf "   %-8s %9s elements: 1 thread %.3f ns, 2 threads %.3f ns (%.2fx), all %.3f ns (%.2fx)\n",
                 p[1], p[3], one, two, one / two, all, one / all
        }
      }' "$out/pool.csv" | sort -r
  done
done

if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$out"; else echo "builds and logs kept in $out"; fi
exit $status
