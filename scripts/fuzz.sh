#!/usr/bin/env bash
# Builds and runs the libFuzzer target tests/fuzz/fuzz_space_timesteps.cpp (the
# space_timesteps spacing-string parser and inference_timesteps) with AddressSanitizer
# and UndefinedBehaviorSanitizer.
#
# Usage: scripts/fuzz.sh [seconds]        (default 60; from any directory)
# Environment: CLANGXX (default clang++), FUZZ_JOBS (parallel fuzzing processes, default 1).
#
# Works in a temporary directory on a copy of tests/fuzz/corpus: nothing is written into
# the repository. If the fuzzer finds a crash, the reproducer is copied to a new directory
# under ${TMPDIR:-/tmp} (its path is printed); replay it with
#   <binary> <reproducer>   after building as below.
# Prints the run count reached and a final "fuzz: <n> passed, <m> failed"; exits 1 on a
# crash, a sanitizer report, an invariant violation or a build failure.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "usage: $0 [seconds]   (a positive integer, default 60)" >&2
  exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
clangxx="${CLANGXX:-clang++}"
work="$(mktemp -d "${TMPDIR:-/tmp}/diffusion-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Wall-clock milliseconds, and the time since a start value as "12.3s".
now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }

finish() {  # finish <passed> <failed>
  echo "fuzz: $1 passed, $2 failed"
  if [[ "$2" -eq 0 ]]; then exit 0; else exit 1; fi
}

echo "fuzz: building fuzz_space_timesteps with $("$clangxx" --version | head -n 1)"
start=$(now_ms)
if ! "$clangxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
     -fno-omit-frame-pointer -I"$repo/include" "$repo/tests/fuzz/fuzz_space_timesteps.cpp" \
     -o "$work/fuzz_space_timesteps" >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  echo "fuzz: the build failed" >&2
  finish 0 1
fi
echo "fuzz: built in $(since "$start")"

mkdir "$work/corpus" "$work/artifacts"
cp "$repo"/tests/fuzz/corpus/* "$work/corpus/"
echo "fuzz: running for ${seconds}s on a copy of $(find "$work/corpus" -type f | wc -l) seed inputs"

args=(-max_total_time="$seconds" -max_len=256 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$work/artifacts/")
if [[ "${FUZZ_JOBS:-1}" -gt 1 ]]; then
  args+=(-fork="$FUZZ_JOBS")
fi
start=$(now_ms)
status=0
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  "$work/fuzz_space_timesteps" "${args[@]}" "$work/corpus" >"$work/fuzz.log" 2>&1 || status=$?
took="$(since "$start")"

# libFuzzer's own summary: "Done <runs> runs in <s> second(s)", or stat::number_of_executed_units.
runs="$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$work/fuzz.log" | tail -n 1)"
[[ -n "$runs" ]] || runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$work/fuzz.log" | tail -n 1)"
cov="$(grep -o 'cov: [0-9]*' "$work/fuzz.log" | tail -n 1 || true)"
corpus_size="$(find "$work/corpus" -type f | wc -l)"
echo "fuzz: ${runs:-?} runs in ${took} (${cov:-cov: ?}, corpus grew to ${corpus_size} inputs in the temporary copy)"

if [[ "$status" -ne 0 ]] || grep -qE '^SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer|runtime error:|INVARIANT VIOLATED|deadly signal' "$work/fuzz.log"; then
  echo "---- fuzzer output (last 60 lines) ----" >&2
  tail -n 60 "$work/fuzz.log" >&2
  echo "----" >&2
  if compgen -G "$work/artifacts/*" >/dev/null; then
    keep="$(mktemp -d "${TMPDIR:-/tmp}/diffusion-fuzz-crash.XXXXXX")"
    cp "$work"/artifacts/* "$keep/"
    cp "$work/fuzz_space_timesteps" "$keep/"
    echo "fuzz: reproducer(s) and the fuzzer binary kept in $keep (replay: $keep/fuzz_space_timesteps $keep/<file>)" >&2
  fi
  echo "fuzz: FAILED (fuzzer exit status $status)" >&2
  finish 0 1
fi
finish 1 0
