// Must NOT compile: x0 is float, noise is double.
#include <diffusion/gaussian.hpp>
#include <vector>
int main() {
  const diffusion::noise_schedule s(diffusion::linear_betas(10, 0.1, 0.2));
  std::vector<float> x0(4), out(4);
  std::vector<double> noise(4);
  diffusion::q_sample(s, 0, x0, noise, out);
}
