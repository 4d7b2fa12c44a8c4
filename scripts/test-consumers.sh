#!/usr/bin/env bash
# Checks that diffusion::diffusion is usable from outside the project, three ways:
#   find_package      install the repo into a temporary prefix, then build
#                     tests/consumer/find_package against it (CMAKE_PREFIX_PATH); also
#                     checks the installed tree and that find_package(diffusion 99.0) fails
#   add_subdirectory  build tests/consumer/add_subdirectory, which vendors the repo and
#                     checks that none of the project's own targets are created
#   plain             ${CXX:-g++} -std=c++20 -I<repo>/include main.cpp
# Each program is run; it exits non-zero if a value is wrong. None of them may need Eigen: the
# CMake consumers are configured with find_package(Eigen3) disabled, and the plain one gets no
# Eigen include path.
#
# Usage: scripts/test-consumers.sh          (from any directory)
# Environment: CXX (compiler, default g++ for the plain build and CMake's choice otherwise),
#              DIFFUSION_KEEP_TMP=1 keeps the temporary directory for inspection.
# Prints one line per consumer and a final "<n> passed, <m> failed"; exits 1 on any failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/diffusion-consumers.XXXXXX")"
cleanup() {
  if [[ "${DIFFUSION_KEEP_TMP:-0}" == 1 ]]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# Wall-clock milliseconds, and the time since a start value as "12.3s".
now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }

jobs="$(nproc 2>/dev/null || echo 2)"
cxx="${CXX:-g++}"
prefix="$work/prefix"
passed=0
failed=0

# log <name>: the log file of a step.
log() { echo "$work/$1.log"; }

# step <name> <command...>: runs the command with its output in the step's log.
step() {
  local name="$1"
  shift
  echo "+ $*" >>"$(log "$name")"
  "$@" >>"$(log "$name")" 2>&1
}

# report <consumer> <start seconds> <error or empty>
report() {
  local name="$1" start="$2" error="$3"
  local took
  took="$(since "$start")"
  if [[ -z "$error" ]]; then
    passed=$((passed + 1))
    echo "PASS $name (${took}): $(tail -n 1 "$(log "$name")")"
  else
    failed=$((failed + 1))
    echo "FAIL $name (${took}): $error"
    echo "---- last lines of the $name log ----" >&2
    tail -n 30 "$(log "$name")" >&2 || true
    echo "----" >&2
  fi
}

# --- find_package: install, check the installed tree, build against it --------------
consumer_find_package() {
  local b="$work/find_package"
  step find_package cmake -S "$repo" -B "$work/lib-build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DDIFFUSION_BUILD_TESTS=OFF -DDIFFUSION_BUILD_EXAMPLES=OFF \
    -DDIFFUSION_BUILD_BENCHMARKS=OFF -DDIFFUSION_BUILD_DOCS=OFF -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON ||
    { echo "configuring the library failed (without Eigen)"; return; }
  step find_package cmake --build "$work/lib-build" -j "$jobs" || { echo "building the library failed"; return; }
  step find_package cmake --install "$work/lib-build" || { echo "cmake --install failed"; return; }

  local f
  for f in include/diffusion/ddpm.hpp include/diffusion/core/double_double.hpp \
           share/cmake/diffusion/diffusionConfig.cmake share/cmake/diffusion/diffusionConfigVersion.cmake \
           share/cmake/diffusion/diffusionTargets.cmake; do
    [[ -f "$prefix/$f" ]] || { echo "the installed tree lacks $f"; return; }
  done
  # Relocatable: the package files must not name the source tree or the install prefix.
  if grep -rlF -e "$repo" -e "$prefix" "$prefix/share/cmake/diffusion" >>"$(log find_package)"; then
    echo "installed CMake files contain an absolute path (see above)"
    return
  fi

  if step find_package cmake -S "$repo/tests/consumer/find_package" -B "$work/find_package-99" \
       -DCMAKE_PREFIX_PATH="$prefix" -DDIFFUSION_REQUIRED_VERSION=99.0; then
    echo "find_package(diffusion 99.0) succeeded; the version check does not work"
    return
  fi
  grep -q 'compatible with requested version "99.0"' "$(log find_package)" ||
    { echo "find_package(diffusion 99.0) failed, but not because of the version"; return; }

  step find_package cmake -S "$repo/tests/consumer/find_package" -B "$b" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON || {
    if grep -q "has no INTERFACE_INCLUDE_DIRECTORIES" "$(log find_package)"; then
      echo "the installed diffusion::diffusion has no include directory (INSTALL_INTERFACE path is empty)"
    elif grep -qE "dependency Eigen3|Eigen3::Eigen|links Eigen" "$(log find_package)"; then
      echo "the installed package still needs Eigen (find_dependency(Eigen3) or an Eigen3::Eigen link)"
    else
      echo "configuring the consumer failed"
    fi
    return
  }
  if ! step find_package cmake --build "$b" -j "$jobs"; then
    if grep -q -- "-lxtl" "$(log find_package)"; then
      echo "the consumer does not link: cannot find -lxtl (find xtl before xsimd in diffusionConfig.cmake)"
    else
      echo "building the consumer failed"
    fi
    return
  fi
  step find_package "$b/consumer" || { echo "the consumer program failed"; return; }
}

# --- add_subdirectory ------------------------------------------------------------------
consumer_add_subdirectory() {
  local b="$work/add_subdirectory"
  step add_subdirectory cmake -S "$repo/tests/consumer/add_subdirectory" -B "$b" -DCMAKE_BUILD_TYPE=Release \
    -DDIFFUSION_SOURCE_DIR="$repo" -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON ||
    { echo "configuring the consumer failed (without Eigen)"; return; }
  step add_subdirectory cmake --build "$b" -j "$jobs" || { echo "building the consumer failed"; return; }
  step add_subdirectory "$b/consumer" || { echo "the consumer program failed"; return; }
}

# --- plain -I ----------------------------------------------------------------------------
consumer_plain() {
  step plain "$cxx" -std=c++20 -O2 -Wall -Wextra -Wpedantic -Werror -DDIFFUSION_CONSUMER_NAME='"plain"' \
    -I"$repo/include" "$repo/tests/consumer/find_package/main.cpp" -o "$work/plain-consumer" ||
    { echo "compiling failed (without an Eigen include path)"; return; }
  step plain "$work/plain-consumer" || { echo "the consumer program failed"; return; }
}

echo "diffusion consumer tests: repo $repo, temporary directory $work"
for name in find_package add_subdirectory plain; do
  start=$(now_ms)
  : >"$(log "$name")"
  if ! error="$("consumer_$name")"; then error="${error:-unexpected failure}"; fi
  report "$name" "$start" "$error"
done

echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
