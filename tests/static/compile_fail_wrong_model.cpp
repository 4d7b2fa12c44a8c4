// Must not compile: a plain denoiser (the VP network) passed where a sigma-space denoiser is
// expected. The test checks that the error is the short static_assert telling the user to wrap
// the model, not a page of template instantiations.
#include <diffusion/ddpm.hpp>

#include <vector>

int main() {
  auto model = diffusion::make_denoiser(diffusion::prediction::epsilon,
                                        [](const diffusion::denoiser_input<float>&, std::span<float> out) {
                                          for (auto& o : out) o = 0.0f;
                                        });
  std::vector<float> x(16);
  const diffusion::philox_normal noise(1);
  const auto sigmas = diffusion::karras_sigmas(10, 0.03, 14.6);
  diffusion::karras_sample(diffusion::karras_method::euler, model, x, 1, noise, sigmas);
}
