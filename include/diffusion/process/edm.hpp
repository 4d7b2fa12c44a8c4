/// @file
/// @brief EDM preconditioning (Karras et al. 2022, §5 and Table 1): the coefficients that turn a raw
/// network F into the denoiser \f$D(x;\sigma) = c_\text{skip}(\sigma)\,x + c_\text{out}(\sigma)\,F(c_\text{in}(\sigma)\,x;\ c_\text{noise}(\sigma))\f$, and
/// EDM's training loss weight.
#pragma once

#include <cmath>
#include <limits>
#include <string_view>

#include "../core/config.hpp"
#include "../core/errors.hpp"

namespace diffusion {

/// @ingroup parameterization
/// @brief What EDM's F predicts: the original "F-prediction" (c_out > 0), or diffusers'
/// v-variant (`prediction_type = "v_prediction"` of EDMEulerScheduler: c_out negated).
enum class edm_variant {
  standard,  ///< Karras et al. 2022, Table 1.
  v,         ///< c_out = −σσ_d/√(σ² + σ_d²) (diffusers EDMEulerScheduler / EDMDPMSolverMultistepScheduler).
};

/// @ingroup parameterization
/// @brief The four preconditioning coefficients at one σ.
struct edm_coefficients {
  double c_skip;   ///< \f$\sigma_d^2/(\sigma^2 + \sigma_d^2)\f$.
  double c_out;    ///< \f$\pm\sigma\sigma_d/\sqrt{\sigma^2 + \sigma_d^2}\f$.
  double c_in;     ///< \f$1/\sqrt{\sigma^2 + \sigma_d^2}\f$.
  double c_noise;  ///< \f$\tfrac14\ln\sigma\f$.
};

/// @ingroup parameterization
/// @brief EDM's preconditioning at σ (Karras et al. 2022, Table 1, "ours"), with σ_d the data's
/// standard deviation (0.5 for images in [−1, 1]):
/// \f$c_\text{skip} = \frac{\sigma_d^2}{\sigma^2+\sigma_d^2}\f$, \f$c_\text{out} = \frac{\sigma\sigma_d}{\sqrt{\sigma^2+\sigma_d^2}}\f$,
/// \f$c_\text{in} = \frac{1}{\sqrt{\sigma^2+\sigma_d^2}}\f$, \f$c_\text{noise} = \tfrac14\ln\sigma\f$. The square root uses
/// `hypot`, so no σ overflows.
/// @param[in] sigma σ > 0 (finite); @param[in] sigma_data σ_d > 0; @param[in] variant F's convention.
/// @throws std::invalid_argument for σ or σ_d not finite and > 0, or a variant that is not an enumerator.
inline edm_coefficients edm_preconditioning(double sigma, double sigma_data = 0.5, edm_variant variant = edm_variant::standard) {
  constexpr std::string_view where = "diffusion::edm_preconditioning";
  detail::check_enum(where, "variant", variant, 2, "standard, v");
  detail::check_positive(where, "sigma", sigma);
  detail::check_positive(where, "sigma_data", sigma_data);
  const double r = std::hypot(sigma, sigma_data);  // √(σ² + σ_d²)
  const double q = sigma_data / r;
  const double c_out = sigma * q;
  return {q * q, variant == edm_variant::v ? -c_out : c_out, 1.0 / r, 0.25 * std::log(sigma)};
}

/// @ingroup parameterization
/// @brief EDM's loss weight (Karras et al. 2022, Eq. 8 and Table 1):
/// \f$\lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\sigma_d)^2} = 1/c_\text{out}^2\f$, which makes the effective training
/// target of F unit-variance at every σ.
/// @throws std::invalid_argument for σ or σ_d not finite and > 0; std::domain_error where λ exceeds the
///         double range (σ or σ_d below about 1e-154).
inline double edm_loss_weight(double sigma, double sigma_data = 0.5) {
  constexpr std::string_view where = "diffusion::edm_loss_weight";
  detail::check_positive(where, "sigma", sigma);
  detail::check_positive(where, "sigma_data", sigma_data);
  const double p = sigma * sigma_data;
  // The product underflows to 0 (or a subnormal) before the weight itself overflows: divide in two steps there.
  const double r = p >= std::numeric_limits<double>::min() ? std::hypot(sigma, sigma_data) / p
                                                           : std::hypot(sigma, sigma_data) / sigma / sigma_data;
  const double w = r * r;
  if (!std::isfinite(w))
    detail::throw_domain(where, "the weight (sigma^2 + sigma_data^2)/(sigma sigma_data)^2 at sigma = " + detail::to_text(sigma) +
                                    ", sigma_data = " + detail::to_text(sigma_data) + " exceeds the double range");
  return w;
}

}  // namespace diffusion
