#!/usr/bin/env bash
# Compile times of the library's headers (issue 10's targets), as docs/performance.md reports them:
# `g++ -std=c++20 -fsyntax-only` of a file that includes one header, the fastest of R interleaved runs,
# beside a baseline measured in the same loop (every standard header the library includes, plus
# <xsimd/xsimd.hpp>, with none of the library's code). Then, with --all, one pass over every header
# (slowest first).
#
#   bash scripts/compile-times.sh [--runs R] [--all]
#
# Timings on a loaded machine are noise: check `uptime` first.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=7
all=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift ;;
    --all) all=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "compile-times.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cxx=${CXX:-g++}
flags=(-std=c++20 -fsyntax-only -Iinclude -isystem /usr/include/eigen3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The baseline: the standard headers the library's headers include, and xsimd.
grep -rhoE '^#include <[a-z_]+>' include/diffusion | sort -u >"$tmp/baseline.cpp"
echo '#include <xsimd/xsimd.hpp>' >>"$tmp/baseline.cpp"

headers=(diffusion/ddpm.hpp diffusion/models/denoiser.hpp diffusion/kernels.hpp diffusion/schedule.hpp
         diffusion/core/tensor.hpp)
if [[ -f /usr/include/nlohmann/json.hpp ]]; then headers+=(diffusion/samplers/scheduler_json.hpp); fi
names=(baseline "${headers[@]}")
for h in "${headers[@]}"; do echo "#include <$h>" >"$tmp/$(echo "$h" | tr '/.' '__').cpp"; done
file_of() { if [[ $1 == baseline ]]; then echo "$tmp/baseline.cpp"; else echo "$tmp/$(echo "$1" | tr '/.' '__').cpp"; fi; }

declare -A best
for ((r = 0; r < runs; ++r)); do
  for n in "${names[@]}"; do
    f=$(file_of "$n")
    s=$(date +%s.%N)
    "$cxx" "${flags[@]}" "$f"
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [[ -z ${best[$n]:-} ]] || (( $(echo "$t < ${best[$n]}" | bc -l) )); then best[$n]=$t; fi
  done
done
echo "| header | seconds (fastest of $runs) |"
echo "|---|---:|"
for n in "${names[@]}"; do printf '| %s | %.2f |\n' "$n" "${best[$n]}"; done

if [[ $all == 1 ]]; then
  echo
  echo "| header (one pass each, slowest first) | seconds |"
  echo "|---|---:|"
  while read -r h; do
    case "$h" in diffusion/torch.hpp) continue ;; esac  # needs LibTorch's include paths
    if [[ $h == diffusion/samplers/scheduler_json.hpp && ! -f /usr/include/nlohmann/json.hpp ]]; then continue; fi
    echo "#include <$h>" >"$tmp/one.cpp"
    s=$(date +%s.%N)
    "$cxx" "${flags[@]}" "$tmp/one.cpp"
    e=$(date +%s.%N)
    printf '%s %.2f\n' "$h" "$(echo "$e - $s" | bc -l)"
  done < <(cd include && find diffusion -name '*.hpp' | sort) | sort -k2 -rn | awk '{printf "| %s | %s |\n", $1, $2}'
fi
