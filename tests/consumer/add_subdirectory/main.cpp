// Consumer smoke test: a program outside the project that uses the installed (or
// add_subdirectory'd, or plain -I) library through its public umbrella header.
// Exit status 0 when every check passes; 1 otherwise (one line per failure on stderr).
#include <diffusion/ddpm.hpp>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <vector>

#ifndef DIFFUSION_CONSUMER_NAME
#define DIFFUSION_CONSUMER_NAME "consumer"
#endif

namespace {
int failures = 0;

void check_close(const char* what, double got, double want, double tol) {
  if (!(std::fabs(got - want) <= tol)) {
    std::fprintf(stderr, "%s: %s = %.17g, expected %.17g (tol %g)\n", DIFFUSION_CONSUMER_NAME, what, got, want, tol);
    ++failures;
  }
}
}  // namespace

int main() {
  const diffusion::noise_schedule s(diffusion::linear_betas(1000));  // DDPM §4: beta from 1e-4 to 0.02
  if (s.size() != 1000) {
    std::fprintf(stderr, "%s: schedule size %zu, expected 1000\n", DIFFUSION_CONSUMER_NAME, s.size());
    return 1;
  }

  // Independent reference: alpha_bar_t = prod_{i<=t} (1 - beta_i), beta_i = 1e-4 + i (0.02 - 1e-4) / 999.
  long double alpha_bar_last = 1.0L;
  for (int i = 0; i < 1000; ++i) alpha_bar_last *= 1.0L - (1e-4L + static_cast<long double>(i) * (0.02L - 1e-4L) / 999.0L);

  std::vector<float> x0(16, 0.5f), eps(16, 1.0f), xt(16, 0.0f);

  // t = 0 (paper's t = 1): x_1 = sqrt(1 - 1e-4) * 0.5 + sqrt(1e-4) * 1 = 0.509975...
  diffusion::q_sample(s, 0, x0, eps, xt);
  const double want0 = std::sqrt(1.0 - 1e-4) * 0.5 + 0.01;
  check_close("q_sample(t=0)[0]", static_cast<double>(xt[0]), want0, 1e-6);
  check_close("q_sample(t=0)[15]", static_cast<double>(xt[15]), want0, 1e-6);

  // t = 999 (paper's t = T): mostly noise.
  diffusion::q_sample(s, 999, x0, eps, xt);
  const double ab = static_cast<double>(alpha_bar_last);
  const double want999 = std::sqrt(ab) * 0.5 + std::sqrt(1.0 - ab);
  check_close("alpha_bar(t=999)", s[999].alpha_bar, ab, 1e-12);
  check_close("q_sample(t=999)[0]", static_cast<double>(xt[0]), want999, 1e-6);

  // A bad argument throws the documented exception type.
  bool threw = false;
  try {
    diffusion::q_sample(s, 1000, x0, eps, xt);
  } catch (const std::out_of_range&) {
    threw = true;
  }
  if (!threw) {
    std::fprintf(stderr, "%s: q_sample(t=1000) did not throw std::out_of_range\n", DIFFUSION_CONSUMER_NAME);
    ++failures;
  }

#ifdef DIFFUSION_EXPECTED_VERSION
  // The version found by CMake (diffusionConfigVersion.cmake) is the headers' version.
  if (diffusion::version != std::string_view(DIFFUSION_EXPECTED_VERSION)) {
    std::fprintf(stderr, "%s: diffusion::version = %.*s, but CMake found %s\n", DIFFUSION_CONSUMER_NAME,
                 static_cast<int>(diffusion::version.size()), diffusion::version.data(), DIFFUSION_EXPECTED_VERSION);
    ++failures;
  }
#endif

  if (failures != 0) return 1;
  std::printf("%s: ok (diffusion %.*s, x_T[0] = %.6f)\n", DIFFUSION_CONSUMER_NAME,
              static_cast<int>(diffusion::version.size()), diffusion::version.data(), static_cast<double>(xt[0]));
  return 0;
}
