// The size cap shared by the benchmarks: --max_elements=N on the command line, or the
// environment variable DIFFUSION_BENCH_MAX_ELEMENTS, drops the sizes above N (the ctest
// smoke runs use it so that no 64 M case runs in CI).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <string_view>

namespace bench {

/// Sets `cap` from DIFFUSION_BENCH_MAX_ELEMENTS, then from --max_elements=N (which wins),
/// and removes that flag from argv so that Google Benchmark does not see it. Leaves `cap`
/// as it is when neither is given.
inline void read_size_cap(int& argc, char** argv, std::size_t& cap) {
  if (const char* env = std::getenv("DIFFUSION_BENCH_MAX_ELEMENTS")) cap = std::strtoull(env, nullptr, 10);
  constexpr std::string_view flag = "--max_elements=";
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with(flag))
      cap = std::strtoull(argv[i] + flag.size(), nullptr, 10);
    else
      argv[kept++] = argv[i];
  }
  argc = kept;
}

}  // namespace bench
