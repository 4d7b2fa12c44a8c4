#!/usr/bin/env bash
# Installs, on Debian 12, whatever the project needs that is missing: the compiler and
# CMake, the fixed dependencies (xsimd 8.1 with xtl for the library; Eigen 3.4 for the tests,
# examples and benchmarks that use Eigen objects; Catch2 2.13, Google Benchmark 1.7), what
# the examples use (zlib, stb_image_write, gnuplot, the Fashion-MNIST dataset; Open MPI for the
# optional sharded-sampling example, whose test runs mpirun), LibTorch (libtorch-dev: the optional
# LibTorch adapter's test, tests/test_torch.cpp, and bench_torch), Doxygen with a local MathJax, Chromium (headless, for
# scripts/check-docs-math.sh, which renders the docs' formulas), and clang with libFuzzer for
# the fuzz target. Installs nothing that is already there; runs apt-get update only when needed.
# Run as root (or with sudo available).
set -euo pipefail

packages=(
  g++ make cmake
  libeigen3-dev libxsimd-dev xtl-dev
  zlib1g-dev libstb-dev gnuplot-nox dataset-fashion-mnist libopenmpi-dev openmpi-bin
  catch2 libbenchmark-dev nlohmann-json3-dev
  libtorch-dev
  doxygen libjs-mathjax chromium
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root (missing: ${missing[*]})" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
