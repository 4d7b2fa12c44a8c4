/// @file
/// @brief A raw EDM network F made a σ-space denoiser by Karras et al.'s preconditioning:
/// \f$D(x;\sigma) = c_\text{skip}\,x + c_\text{out}\,F(c_\text{in}\,x;\ c_\text{noise})\f$ (Karras et al. 2022, Eq. 7, Table 1).
#pragma once

#include <cstddef>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/errors.hpp"
#include "../core/tensor.hpp"
#include "../kernels/elementwise.hpp"
#include "../process/edm.hpp"
#include "denoiser.hpp"
#include "sigma_space.hpp"

/// @addtogroup sigma_space
/// @{

namespace diffusion {

/// @brief An EDM-preconditioned network as a σ-space denoiser (usable by every σ-space sampler).
///
/// The network is called like any @ref diffusion::denoiser "denoiser": `F(denoiser_input{c_in·x, timesteps, sigma}, out)`,
/// with `timesteps` holding \f$c_\text{noise} = \tfrac14\ln\sigma\f$ per row (EDM's noise conditioning) and `sigma`
/// holding σ; its `predicts()` is not used (F's output is neither ε nor x₀: D is formed by the
/// preconditioning). Buffers are held per element type and grow on the first call.
/// @tparam Network a callable `void(const denoiser_input<T>&, std::span<T>)` (e.g. @ref make_denoiser).
template <class Network>
class edm_denoiser {
 public:
  /// @param[in] network F (referenced, not copied); @param[in] sigma_data σ_d > 0 (0.5 for images in
  /// [−1, 1]); @param[in] variant F's convention (@ref edm_variant).
  /// @throws std::invalid_argument for σ_d not finite and > 0.
  explicit edm_denoiser(Network& network, double sigma_data = 0.5, edm_variant variant = edm_variant::standard)
      : net_(&network), sigma_data_(sigma_data), variant_(variant) {
    detail::check_positive("diffusion::edm_denoiser", "sigma_data", sigma_data);
  }

  /// σ_d.
  [[nodiscard]] double sigma_data() const noexcept { return sigma_data_; }
  /// The model's time at σ: c_noise.
  [[nodiscard]] double time(double sigma) const { return edm_preconditioning(sigma, sigma_data_, variant_).c_noise; }
  /// Any σ > 0.
  [[nodiscard]] std::pair<double, double> sigma_range() const noexcept {
    return {std::numeric_limits<double>::min(), std::numeric_limits<double>::max()};
  }

  /// @brief \f$D(x_b;\sigma_b)\f$ for each row b into `denoised`.
  /// @param[in] x rows of the σ-space state; @param[in] sigmas one σ > 0 per row;
  /// @param[out] denoised rows of x̂₀ (may not alias x); @param[in] context conditioning passed to F.
  template <real_scalar T, class Context = no_context>
  void operator()(std::span<const T> x, std::span<const double> sigmas, std::span<T> denoised,
                  const Context* context = nullptr) {
    constexpr std::string_view where = "diffusion::edm_denoiser";
    const std::size_t rows = sigmas.size(), n = x.size() / rows;
    DIFFUSION_ASSERT(rows > 0 && x.size() == rows * n && denoised.size() == x.size());
    auto& b = buffers_.template get<T>();
    if (b.input.size() < x.size()) b.input.resize(x.size());
    if (b.output.size() < x.size()) b.output.resize(x.size());
    if (noise_.size() < rows) noise_.resize(rows);
    auto in = std::span<T>(b.input).first(x.size());
    for (std::size_t r = 0; r < rows; ++r) {
      const edm_coefficients c = edm_preconditioning(sigmas[r], sigma_data_, variant_);
      noise_[r] = c.c_noise;
      kernels::scale(static_cast<T>(c.c_in), x.subspan(r * n, n), in.subspan(r * n, n));
    }
    auto out = std::span<T>(b.output).first(x.size());
    (*net_)(denoiser_input<T, Context>{in, std::span<const double>(noise_).first(rows), sigmas, context}, out);
    for (std::size_t r = 0; r < rows; ++r) {
      const edm_coefficients c = edm_preconditioning(sigmas[r], sigma_data_, variant_);
      detail::require_finite_output(where,
                                    kernels::affine2(static_cast<T>(c.c_skip), x.subspan(r * n, n),
                                                     detail::coefficient<T>(where, "c_out", c.c_out),
                                                     std::span<const T>(out).subspan(r * n, n), denoised.subspan(r * n, n)),
                                    "D(x; sigma)");
    }
  }

 private:
  Network* net_;
  double sigma_data_;
  edm_variant variant_;
  detail::per_element_type<detail::io_buffers> buffers_;
  std::vector<double> noise_;
};

}  // namespace diffusion

/// @}
