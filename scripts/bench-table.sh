#!/usr/bin/env bash
# Builds the release benchmarks (portable and -march=native), runs bench_kernels in both and
# bench_torch when LibTorch is installed, and bench_schedule, and prints markdown tables of ratios (ours vs a plain
# loop, Eigen, the unfused passes, LibTorch; fraction of the measured 2-read-1-write bandwidth;
# normals/s vs std::normal_distribution and torch::randn; 2-thread speedup) and the targets.
#
#   bash scripts/bench-table.sh [--portable-only] [--max-elements N] [--torch-max-elements N]
#                               [--repetitions N] [--min-time S] [--out FILE]
#
# LibTorch stops at 4 M elements by default: one eager step on 64 M floats takes 1–8 s there
# (a fresh 256 MB tensor per operation), which alone would take longer than the rest.
# Every ratio comes from medians of this one invocation (--benchmark_repetitions, real time).
# Build dirs: build/bench-table and build/bench-table-native; JSON results are left there.
# The runs took about 4 minutes on 2 cores once built before the sampler-step rows of issue 12
# (dpmpp_2m … cfgpp_euler, up to 4 M elements, in both binaries) were added; they lengthen it.
# Timings on a loaded machine are noise, so check `uptime` first.
set -euo pipefail
cd "$(dirname "$0")/.."

native=1
max_elements=67108864
torch_max_elements=4194304
repetitions=3
min_time=0.05
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --portable-only) native=0 ;;
    --max-elements) max_elements="$2"; shift ;;
    --torch-max-elements) torch_max_elements="$2"; shift ;;
    --repetitions) repetitions="$2"; shift ;;
    --min-time) min_time="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench-table.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

jobs=${JOBS:-2}
common=(-DCMAKE_BUILD_TYPE=Release -DDIFFUSION_BUILD_TESTS=OFF -DDIFFUSION_BUILD_EXAMPLES=OFF
        -DDIFFUSION_BUILD_DOCS=OFF -DDIFFUSION_INSTALL=OFF)
run_args=(--benchmark_format=json --benchmark_repetitions="$repetitions"
          --benchmark_report_aggregates_only=true --benchmark_min_time="$min_time"
          --benchmark_enable_random_interleaving=true)
# Random interleaving runs the repetitions of all benchmarks in a shuffled order, so a burst
# of load from elsewhere spreads over every benchmark instead of hitting one; medians then
# compare like with like.

build() {  # build <dir> <cxx flags> <targets...>
  local dir=$1 flags=$2
  shift 2
  cmake -S . -B "$dir" "${common[@]}" -DCMAKE_CXX_FLAGS="$flags" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log" >&2; exit 1; }
  for t in "$@"; do
    cmake --build "$dir" -j"$jobs" --target "$t" >"$dir.build.log" 2>&1 || { cat "$dir.build.log" >&2; exit 1; }
  done
}

mkdir -p build
portable=build/bench-table
echo "== building $portable (portable)" >&2
build "$portable" "" bench_kernels bench_schedule
has_torch=0
if cmake --build "$portable" --target help 2>/dev/null | grep -q bench_torch; then
  echo "== building bench_torch (LibTorch found)" >&2
  build "$portable" "" bench_torch
  has_torch=1
fi
if [[ $native == 1 ]]; then
  nat=build/bench-table-native
  echo "== building $nat (-march=native)" >&2
  build "$nat" "-march=native" bench_kernels
fi

echo "== load before the runs: $(uptime)" >&2
echo "== running bench_kernels (portable)" >&2
"$portable/benchmarks/bench_kernels" "${run_args[@]}" --max_elements="$max_elements" >"$portable/kernels.json"
torch_json=()
if [[ $has_torch == 1 ]]; then
  echo "== running bench_torch" >&2
  "$portable/benchmarks/bench_torch" "${run_args[@]}" --max_elements="$torch_max_elements" >"$portable/torch.json"
  torch_json=(--torch "$portable/torch.json")
fi
echo "== running bench_schedule (portable)" >&2
"$portable/benchmarks/bench_schedule" --benchmark_filter='build|naive|from_betas|lookup' "${run_args[@]}" \
  >"$portable/schedule.json"
if [[ $native == 1 ]]; then
  echo "== running bench_kernels (-march=native)" >&2
  "$nat/benchmarks/bench_kernels" "${run_args[@]}" --max_elements="$max_elements" >"$nat/kernels.json"
fi
echo "== load after the runs: $(uptime)" >&2

{
  python3 tools/bench_table.py --kernels "$portable/kernels.json" "${torch_json[@]}" --build-dir "$portable" \
    --title "Portable build (-O3, x86-64 baseline: SSE2, no FMA)"
  if [[ $native == 1 ]]; then
    echo
    python3 tools/bench_table.py --kernels "$nat/kernels.json" "${torch_json[@]}" --build-dir "$nat" \
      --title "Native build (-O3 -march=native)"
  fi
  echo
  echo "### Schedules (portable build)"
  echo
  python3 tools/bench_table.py --kernels "$portable/kernels.json" --schedule "$portable/schedule.json"
} | if [[ -n $out ]]; then tee "$out"; else cat; fi
