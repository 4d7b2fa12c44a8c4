/// @file
/// @brief karras_sample: the four Karras-family σ-space methods behind one enum (the pre-0.2
/// entry point). Each method is its own sampler (ode.hpp, sde.hpp); new methods are added as
/// their own functions, never to this switch.
#pragma once

#include <cstddef>
#include <span>

#include "../core/config.hpp"
#include "../core/tensor.hpp"
#include "common.hpp"
#include "ode.hpp"
#include "sde.hpp"
#include "sigma_common.hpp"

/// @addtogroup sigma_samplers
/// @{

namespace diffusion {

/// @brief The four σ-space methods of @ref diffusion::karras_sample "karras_sample".
enum class karras_method {
  euler,            ///< @ref euler_sample.
  euler_ancestral,  ///< @ref euler_ancestral_sample.
  heun,             ///< @ref heun_sample.
  dpmpp_2m,         ///< @ref dpmpp_2m_sample.
};

/// @brief Samples with one of the Karras-family methods over a descending σ list: forwards to
/// @ref euler_sample, @ref euler_ancestral_sample, @ref heun_sample or @ref dpmpp_2m_sample.
/// @param[in] method which sampler; @param[in] D the σ-space denoiser (@ref sigma_space_model);
/// @param[in,out] x rows × n; @param[in] rows batch size; @param[in] noise the noise source;
/// @param[in] sigmas strictly decreasing, positive, the last may be 0; @param[in] opt options;
/// @param[in] hooks callback, workspace, context.
/// @throws as the method's sampler.
template <class SigmaModel, mutable_tensor X, class Noise, class Context = no_context>
sample_result karras_sample(karras_method method, SigmaModel& D, X&& x, std::size_t rows, Noise& noise,
                            std::span<const double> sigmas, const karras_options& opt = {},
                            const sampler_hooks<tensor_value_t<X>, Context>& hooks = {}) {
  using T = tensor_value_t<X>;
  static_assert(sigma_denoiser<SigmaModel, T, Context>,
                "karras_sample: D must be a sigma-space denoiser, D(x, sigmas, denoised, context): wrap your model "
                "with diffusion::sigma_space_model(model, schedule)");
  static_assert(noise_source_for<Noise, T>, "karras_sample: Noise must be a diffusion::noise_source for this element type (e.g. philox_normal)");
  if constexpr (sigma_denoiser<SigmaModel, T, Context> && noise_source_for<Noise, T>) {  // else: only the asserts
    switch (method) {
      case karras_method::euler: return euler_sample(D, x, rows, noise, sigmas, opt, hooks);
      case karras_method::euler_ancestral: return euler_ancestral_sample(D, x, rows, noise, sigmas, opt, hooks);
      case karras_method::heun: return heun_sample(D, x, rows, noise, sigmas, opt, hooks);
      case karras_method::dpmpp_2m: return dpmpp_2m_sample(D, x, rows, noise, sigmas, opt, hooks);
    }
  }
  detail::throw_invalid("diffusion::karras_sample", "unknown method");
}

}  // namespace diffusion

/// @}
