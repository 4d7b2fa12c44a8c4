#!/usr/bin/env bash
# Builds and runs the libFuzzer targets in tests/fuzz/ with AddressSanitizer and
# UndefinedBehaviorSanitizer, each for an equal share of the given seconds:
#   fuzz_space_timesteps  the space_timesteps spacing-string parser and inference_timesteps, T ≤ 5000
#   fuzz_huge_timesteps   the same over the whole size_t range of T (exact 128-bit model)
#   fuzz_schedule         user beta lists → noise_schedule and rescale_zero_terminal_snr
#   fuzz_respace          timestep_sequence and respace
#   fuzz_sigmas           t_to_sigma, sigma_to_t and sigma_range on arbitrary schedules and doubles
#   fuzz_conversion       conversion_coefficients between every pair of prediction kinds
#
# Usage: scripts/fuzz.sh [seconds] [target ...]   (default 60 s in all; all targets; from any directory)
# Environment: CLANGXX (default clang++), FUZZ_JOBS (parallel fuzzing processes per target,
# default 1), FUZZ_CXXFLAGS (extra compiler flags, e.g. -mfma), FUZZ_SEED (libFuzzer's -seed:
# a fixed seed makes a bounded run reproducible, as CI uses it).
#
# Works in a temporary directory on copies of tests/fuzz/corpus/<target>/: nothing is written
# into the repository. If a fuzzer finds a crash, the reproducer and the fuzzer binary are
# copied to a new directory under ${TMPDIR:-/tmp} (its path is printed); replay with
#   <binary> <reproducer>
# Prints one line per target and a final "fuzz: <n> passed, <m> failed" (targets); exits 1 on a
# crash, a sanitizer report, an invariant violation or a build failure.
set -euo pipefail

all_targets=(fuzz_space_timesteps fuzz_huge_timesteps fuzz_schedule fuzz_respace fuzz_sigmas fuzz_conversion)
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "usage: $0 [seconds] [target ...]   (seconds: a positive integer, default 60; targets: ${all_targets[*]})" >&2
  exit 2
fi
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  if [[ " ${all_targets[*]} " != *" $t "* ]]; then
    echo "$0: unknown target '$t' (known: ${all_targets[*]})" >&2
    exit 2
  fi
done
share=$((seconds / ${#targets[@]}))
[[ "$share" -ge 1 ]] || share=1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
clangxx="${CLANGXX:-clang++}"
work="$(mktemp -d "${TMPDIR:-/tmp}/diffusion-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Wall-clock milliseconds, and the time since a start value as "12.3s".
now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }

echo "fuzz: ${#targets[@]} target(s), ${share}s each, with $("$clangxx" --version | head -n 1)"
passed=0
failed=0
for t in "${targets[@]}"; do
  dir="$work/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  start=$(now_ms)
  # shellcheck disable=SC2086  # FUZZ_CXXFLAGS is a list of flags
  if ! "$clangxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
       -fno-omit-frame-pointer ${FUZZ_CXXFLAGS:-} -I"$repo/include" "$repo/tests/fuzz/$t.cpp" \
       -o "$dir/$t" >"$dir/build.log" 2>&1; then
    cat "$dir/build.log" >&2
    echo "fuzz: $t: the build FAILED" >&2
    failed=$((failed + 1))
    continue
  fi
  built="$(since "$start")"
  if compgen -G "$repo/tests/fuzz/corpus/$t/*" >/dev/null; then cp "$repo/tests/fuzz/corpus/$t"/* "$dir/corpus/"; fi
  seeds="$(find "$dir/corpus" -type f | wc -l)"

  args=(-max_total_time="$share" -max_len=256 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$dir/artifacts/")
  if [[ "${FUZZ_JOBS:-1}" -gt 1 ]]; then args+=(-fork="$FUZZ_JOBS"); fi
  if [[ -n "${FUZZ_SEED:-}" ]]; then args+=(-seed="$FUZZ_SEED"); fi
  start=$(now_ms)
  status=0
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$dir/$t" "${args[@]}" "$dir/corpus" >"$dir/fuzz.log" 2>&1 || status=$?
  took="$(since "$start")"

  # libFuzzer's own summary: "Done <runs> runs in <s> second(s)", or stat::number_of_executed_units.
  runs="$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$dir/fuzz.log" | tail -n 1)"
  [[ -n "$runs" ]] || runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$dir/fuzz.log" | tail -n 1)"
  cov="$(grep -ao 'cov: [0-9]*' "$dir/fuzz.log" | tail -n 1 || true)"
  corpus_size="$(find "$dir/corpus" -type f | wc -l)"
  line="fuzz: $t: built in $built; ${runs:-?} runs in $took (${cov:-cov: ?}, $seeds seeds, corpus grew to $corpus_size)"

  if [[ "$status" -ne 0 ]] || grep -aqE '^SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer|runtime error:|INVARIANT VIOLATED|deadly signal' "$dir/fuzz.log"; then
    echo "$line: FAILED (fuzzer exit status $status)"
    echo "---- $t: fuzzer output (last 40 lines) ----" >&2
    tail -n 40 "$dir/fuzz.log" >&2
    echo "----" >&2
    if compgen -G "$dir/artifacts/*" >/dev/null; then
      keep="$(mktemp -d "${TMPDIR:-/tmp}/diffusion-fuzz-crash.XXXXXX")"
      cp "$dir"/artifacts/* "$dir/$t" "$keep/"
      echo "fuzz: $t: reproducer(s) and the fuzzer binary kept in $keep (replay: $keep/$t $keep/<file>)" >&2
    fi
    failed=$((failed + 1))
  else
    echo "$line: passed"
    passed=$((passed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
