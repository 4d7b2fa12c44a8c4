/// @file
/// @brief What a model predicts: the @ref diffusion::prediction kinds (diffusers'
/// `prediction_type`). A leaf header (only `<string_view>`), so that the model concept can
/// name the kinds without the conversion table.
#pragma once

#include <string_view>

namespace diffusion {

/// @ingroup parameterization
/// @brief What a denoiser predicts, for a noisy sample \f$x = \alpha\,x_0 + \sigma\,\varepsilon\f$ (diffusers'
/// `prediction_type`; the conversions between them are @ref diffusion::conversion_coefficients "conversion_coefficients").
enum class prediction {
  epsilon,  ///< the noise ε (DDPM Eq. 11).
  sample,   ///< the data x₀.
  /// the velocity \f$v = (\alpha\,\varepsilon - \sigma\,x_0)/\sqrt{\alpha^2 + \sigma^2}\f$ (Salimans & Ho 2022 §4; for
  /// a variance-preserving process, α² + σ² = 1, the usual \f$\sqrt{\bar\alpha}\,\varepsilon - \sqrt{1-\bar\alpha}\,x_0\f$).
  v,
  score,    ///< \f$\nabla_x\log q(x) \approx -\varepsilon/\sigma\f$ (Song et al. 2021; Tweedie's formula).
  /// the rectified-flow velocity \f$u = \varepsilon - x_0\f$ (Liu et al. 2022; Lipman et al. 2023; SD3 and
  /// Flux's `flow_prediction`): \f$dx/d\sigma\f$ along \f$x = (1-\sigma)x_0 + \sigma\varepsilon\f$.
  flow_velocity,
};

/// @ingroup parameterization
/// @brief Name of a prediction kind, for messages and configs: "epsilon", "sample", "v",
/// "score", "flow".
inline std::string_view to_string(prediction p) noexcept {
  switch (p) {
    case prediction::epsilon: return "epsilon";
    case prediction::sample: return "sample";
    case prediction::v: return "v";
    case prediction::score: return "score";
    case prediction::flow_velocity: return "flow";
  }
  return "?";
}

}  // namespace diffusion
