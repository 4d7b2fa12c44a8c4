/// @file
/// @brief The LibTorch adapter: zero-copy views of CPU `torch::Tensor`s as the library's spans, a
/// @ref diffusion::denoiser "denoiser" from a LibTorch network (a callable or a TorchScript module), and the
/// hand-over of the library's loss gradients to autograd. Opt-in: this header needs LibTorch (Debian
/// `libtorch-dev`) and is not part of `ddpm.hpp`; the library itself never requires it.
///
/// Where copies happen (and where they do not):
/// - @ref diffusion::torch_view "torch_view" and @ref diffusion::torch_from_span "torch_from_span" copy
///   nothing: a span over the tensor's storage, a tensor over the span's memory (`torch::from_blob`).
/// - @ref diffusion::torch_denoiser "torch_denoiser" hands the network x as a tensor over the sampler's own
///   buffer (no copy on the input side: `x.data_ptr()` is the sampler's x), and the per-row time as a
///   tensor over the sampler's double array when `time_dtype` is float64 (else B values are converted). The
///   network returns a fresh tensor: its elements are copied once into the sampler's output span (the one
///   unavoidable copy; none when the network returns a tensor over that span).
/// - @ref diffusion::torch_backward "torch_backward" copies the gradient once (B × n values) so that autograd
///   never keeps a tensor over the caller's memory after the call.
///
/// Devices: the library's math runs on host memory. A tensor on any device but the CPU (CUDA, MPS,
/// meta) is refused with an error saying so; the adapter never copies device ↔ host behind the caller's
/// back. A GPU network can still be used: the caller's callable moves x to the device and the result
/// back (one copy each way per model call — the caller's choice, visible in the caller's code).
///
/// dtypes: float32 ↔ `float`, float64 ↔ `double`, float16 ↔ @ref diffusion::float16 "float16" and
/// bfloat16 ↔ @ref diffusion::bfloat16 "bfloat16" (the library's 16-bit storage types: the same IEEE
/// binary16 and bfloat16 bit patterns as `at::Half` and `at::BFloat16`, so a view reinterprets no value),
/// checked at run time (the error names the expected and the actual dtype); the mapping lives in one
/// place, `detail::torch_dtype_of`. The views and @ref diffusion::torch_from_span "torch_from_span" take all
/// four; the denoiser adapter and the gradient helper compute in float or double.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "core/config.hpp"
#include "core/errors.hpp"
#include "core/half.hpp"
#include "models/denoiser.hpp"
#include "process/prediction.hpp"

/// @defgroup torch LibTorch adapter
/// @brief Zero-copy views of CPU tensors, a denoiser from a LibTorch network, gradients to autograd.
/// @{

namespace diffusion {

namespace detail {

/// THE mapping from the library's element types to LibTorch dtypes.
template <class T>
constexpr c10::ScalarType torch_dtype_of() {
  using U = std::remove_const_t<T>;
  static_assert(storage_scalar<U>, "torch_dtype_of: float, double, float16 or bfloat16");
  if constexpr (std::is_same_v<U, float>)
    return c10::ScalarType::Float;
  else if constexpr (std::is_same_v<U, double>)
    return c10::ScalarType::Double;
  else if constexpr (std::is_same_v<U, float16>)
    return c10::ScalarType::Half;
  else
    return c10::ScalarType::BFloat16;
}

// The 16-bit storage types are the tensors' elements bit for bit.
static_assert(sizeof(float16) == sizeof(c10::Half) && alignof(float16) <= alignof(c10::Half));
static_assert(sizeof(bfloat16) == sizeof(c10::BFloat16) && alignof(bfloat16) <= alignof(c10::BFloat16));

/// The name LibTorch prints for a dtype ("Float", "Double", "Half", …).
inline std::string torch_dtype_name(c10::ScalarType d) { return std::string(c10::toString(d)); }

/// Refuses a tensor that is not in host memory (the check behind every view; tested with a meta tensor
/// and, through this function, with a CUDA device, which a CPU-only LibTorch cannot allocate on).
inline void check_torch_device(std::string_view where, std::string_view name, const c10::Device& device) {
  if (!device.is_cpu())
    throw_invalid(where, std::string(name) + " is on device " + device.str() +
                             ": the library's math runs on host (CPU) memory; move it with .cpu() (one device-to-host "
                             "copy per step is the caller's choice, never made silently here)");
}

/// Refuses a dtype other than `expected`.
inline void check_torch_dtype(std::string_view where, std::string_view name, c10::ScalarType got,
                              c10::ScalarType expected) {
  if (got == expected) return;
  throw_invalid(where, std::string(name) + " has dtype " + torch_dtype_name(got) + "; expected " + torch_dtype_name(expected) +
                           " (convert with .to(), or view the tensor with the matching element type: float, double, "
                           "float16 or bfloat16)");
}

/// The checks of a tensor the library reads or writes as a span of T.
template <class T>
void check_torch_tensor(std::string_view where, std::string_view name, const torch::Tensor& t) {
  if (!t.defined()) throw_invalid(where, std::string(name) + " is an undefined tensor");
  check_torch_device(where, name, t.device());
  check_torch_dtype(where, name, t.scalar_type(), torch_dtype_of<T>());
  if (!t.is_contiguous())
    throw_invalid(where, std::string(name) + " is not contiguous (strides " + c10::str(t.strides()) +
                             " for sizes " + c10::str(t.sizes()) + "); call .contiguous() first (a copy)");
}

}  // namespace detail

/// @brief A span over the elements of a CPU tensor, without a copy: `data() == t.data_ptr()`.
///
/// `T` is `float`, `double`, @ref diffusion::float16 "float16" or @ref diffusion::bfloat16 "bfloat16" for a
/// writable view, the same type const for a read-only one.
/// A tensor that requires grad is refused for writing (writes through the span would bypass autograd):
/// view it as const, or `.detach()` it first (the detached tensor shares the storage).
/// @tparam T the element type, optionally const.
/// @param[in] t a defined, contiguous CPU tensor of dtype float32 (T = float), float64 (T = double), float16
///            (T = float16) or bfloat16 (T = bfloat16).
/// @param[in] name what to call the tensor in error messages.
/// @return the span over its `numel()` elements in row-major order.
/// @throws std::invalid_argument for an undefined tensor, a tensor not on the CPU (the message says that the
///         math runs on host memory and that a copy per step is the caller's choice), a dtype other than T's
///         (naming both), a non-contiguous tensor, or a writable view of a tensor that requires grad.
template <class T>
  requires storage_scalar<std::remove_const_t<T>>
[[nodiscard]] std::span<T> torch_view(const torch::Tensor& t, std::string_view name = "tensor") {
  constexpr std::string_view where = "diffusion::torch_view";
  detail::check_torch_tensor<T>(where, name, t);
  if constexpr (!std::is_const_v<T>)
    if (t.requires_grad())
      detail::throw_invalid(where, std::string(name) +
                                       " requires grad: a writable view would bypass autograd; view it as const "
                                       "(torch_view<const T>) or .detach() it");
  using U = std::remove_const_t<T>;
  // float16/bfloat16: the tensor's at::Half/at::BFloat16 elements are these 16-bit patterns (static_asserts above).
  return {static_cast<U*>(const_cast<void*>(t.data_ptr())), static_cast<std::size_t>(t.numel())};
}

/// @brief A CPU tensor over a span's memory, without a copy (`torch::from_blob`): the caller keeps the
/// memory alive while the tensor is used. A read-only span gives a tensor that must not be written.
/// @param[in] s the elements; @param[in] sizes the shape (its product must be `s.size()`).
/// @return a tensor of dtype float32, float64, float16 or bfloat16 (T's) with `data_ptr() == s.data()`.
/// @throws std::invalid_argument when a size is negative or the shape does not hold `s.size()` elements.
template <class T>
  requires storage_scalar<std::remove_const_t<T>>
[[nodiscard]] torch::Tensor torch_from_span(std::span<T> s, c10::IntArrayRef sizes) {
  constexpr std::string_view where = "diffusion::torch_from_span";
  std::int64_t count = 1;
  for (const std::int64_t d : sizes) {
    if (d < 0) detail::throw_invalid(where, "sizes = " + c10::str(sizes) + " has a negative size");
    count *= d;
  }
  if (count != static_cast<std::int64_t>(s.size()))
    detail::throw_invalid(where, "sizes = " + c10::str(sizes) + " hold " + detail::to_text(count) +
                                     " elements; the span has " + detail::to_text(s.size()));
  using U = std::remove_const_t<T>;
  return torch::from_blob(const_cast<U*>(s.data()), sizes,
                          torch::TensorOptions().dtype(detail::torch_dtype_of<U>()).device(torch::kCPU));
}

/// @brief Which per-row time a @ref diffusion::torch_denoiser "torch_denoiser" hands its network.
enum class torch_time {
  timestep,  ///< the model's time input (`denoiser_input::timesteps`: the 0-based training step of a DDPM model, σ·N for a flow model, c_noise for EDM)
  sigma,     ///< the noise ratio σ/α (`denoiser_input::sigma`; +∞ at zero SNR)
};

/// @brief Options of @ref diffusion::torch_denoiser "torch_denoiser".
struct torch_denoiser_options {
  /// What the network predicts.
  prediction kind = prediction::epsilon;
  /// Which per-row time the network is given.
  torch_time time = torch_time::timestep;
  /// The dtype of the time tensor (shape {B}); unset: x's dtype. Float64 is a view of the sampler's array (no copy);
  /// an integer dtype (e.g. torch::kLong for an embedding table) is refused for a fractional time.
  std::optional<c10::ScalarType> time_dtype = std::nullopt;
  /// The shape of one row as the network expects it (e.g. {C, H, W}); x is passed as {B, row_shape…}.
  /// Empty: {B, n}.
  std::vector<std::int64_t> row_shape = {};
  /// Run the network under `c10::InferenceMode` (no autograd graph; sampling). Set false to let a
  /// callable record gradients (e.g. guidance by a classifier's gradient inside the callable).
  bool inference_mode = true;
};

/// @brief The forward of a TorchScript module (`torch::jit::load`, or `Module::define`) as a callable
/// `(x, t[, cond]) -> torch::Tensor` for @ref diffusion::torch_denoiser "torch_denoiser".
struct torch_script_forward {
  torch::jit::script::Module module;  ///< The module (a shared handle: copies share the parameters).
  /// `module.forward({x, t})`.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& t) { return module.forward({x, t}).toTensor(); }
  /// `module.forward({x, t, cond})`.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& cond) {
    return module.forward({x, t, cond}).toTensor();
  }
};

/// @brief A @ref diffusion::denoiser "denoiser" from a LibTorch network: a callable
/// `f(torch::Tensor x, torch::Tensor t) -> torch::Tensor` (unconditional) or
/// `f(torch::Tensor x, torch::Tensor t, const Context& cond) -> torch::Tensor` (conditional; the context of the
/// @ref diffusion::denoiser_input "denoiser_input", typically a `torch::Tensor` of per-row conditioning), e.g. a lambda
/// over a `torch::nn::Module`, or @ref diffusion::torch_script_forward "torch_script_forward" for TorchScript.
///
/// Per call on B rows of n elements: x is the tensor {B, row_shape…} (or {B, n}) over the sampler's buffer
/// (`torch::from_blob`, no copy; the network must not write to it), t the tensor {B} of the chosen per-row
/// time, and the network's result — a CPU tensor of x's dtype with B × n elements (B × 2n for a model that
/// learns its variance, laid out `[prediction | variance]` per row) in any shape — is copied into the
/// sampler's output span (row-major; a non-contiguous result is made contiguous first). Runs under
/// `c10::InferenceMode` unless the options say otherwise. For classifier-free guidance with one network
/// call on 2B rows, wrap it in @ref diffusion::batched_classifier_free_guidance "batched_classifier_free_guidance"
/// with a context of 2B rows.
/// @tparam F the callable type (stored by value).
template <class F>
class torch_denoiser {
 public:
  /// @param[in] f the network callable; @param[in] opt prediction kind, time input, time dtype, row shape.
  /// @throws std::invalid_argument for a negative or zero entry of `row_shape`, or an unsupported time dtype.
  explicit torch_denoiser(F f, torch_denoiser_options opt = {}) : f_(std::move(f)), opt_(std::move(opt)) {
    constexpr std::string_view where = "diffusion::torch_denoiser";
    for (const std::int64_t d : opt_.row_shape)
      if (d <= 0) detail::throw_invalid(where, "row_shape = " + c10::str(c10::IntArrayRef(opt_.row_shape)) + " must have positive sizes");
    if (opt_.time_dtype && !(c10::isFloatingType(*opt_.time_dtype) || c10::isIntegralType(*opt_.time_dtype, false)))
      detail::throw_invalid(where, "time_dtype = " + detail::torch_dtype_name(*opt_.time_dtype) +
                                       " must be a floating or integer dtype");
  }

  /// What the network predicts.
  [[nodiscard]] prediction predicts() const noexcept { return opt_.kind; }
  /// The options.
  [[nodiscard]] const torch_denoiser_options& options() const noexcept { return opt_; }
  /// The wrapped callable.
  [[nodiscard]] F& network() noexcept { return f_; }

  /// @brief Calls the network on the batch and writes its output into `out`.
  /// @param[in] in the batch (x, per-row time, conditioning); @param[out] out B × width, width n or 2n.
  /// @throws std::invalid_argument when `row_shape` does not hold n elements, a context is required but null, a
  ///         fractional time meets an integer time dtype, or the network's result is undefined, not on the CPU,
  ///         of another dtype, or of another number of elements than `out`.
  template <real_scalar T, class Context>
  void operator()(const denoiser_input<T, Context>& in, std::span<T> out) {
    constexpr std::string_view where = "diffusion::torch_denoiser";
    const std::size_t rows = in.rows(), n = in.row_size();
    if (rows == 0 || in.x.size() != rows * n)
      detail::throw_invalid(where, "x has " + detail::to_text(in.x.size()) + " elements for " + detail::to_text(rows) +
                                       " rows; expected a positive whole number per row");
    std::vector<std::int64_t> shape{static_cast<std::int64_t>(rows)};
    if (opt_.row_shape.empty())
      shape.push_back(static_cast<std::int64_t>(n));
    else
      shape.insert(shape.end(), opt_.row_shape.begin(), opt_.row_shape.end());
    std::int64_t per_row = 1;
    for (std::size_t k = 1; k < shape.size(); ++k) per_row *= shape[k];
    if (per_row != static_cast<std::int64_t>(n))
      detail::throw_invalid(where, "row_shape = " + c10::str(c10::IntArrayRef(opt_.row_shape)) + " holds " + detail::to_text(per_row) +
                                       " elements; the rows have " + detail::to_text(n));
    std::optional<c10::InferenceMode> guard;
    if (opt_.inference_mode) guard.emplace();
    const torch::Tensor x = torch_from_span(in.x, shape);  // no copy: the sampler's own x
    const torch::Tensor t = time_tensor(where, in, detail::torch_dtype_of<T>());
    torch::Tensor result;
    if constexpr (std::is_same_v<Context, no_context>) {
      static_assert(std::is_invocable_r_v<torch::Tensor, F&, const torch::Tensor&, const torch::Tensor&>,
                    "torch_denoiser: an unconditional call needs f(x, t) -> torch::Tensor");
      result = f_(x, t);
    } else {
      static_assert(std::is_invocable_r_v<torch::Tensor, F&, const torch::Tensor&, const torch::Tensor&, const Context&>,
                    "torch_denoiser: a conditional call needs f(x, t, const Context&) -> torch::Tensor");
      if (in.context == nullptr)
        detail::throw_invalid(where, "the denoiser_input has no context; the network takes one (pass it to the sampler)");
      result = f_(x, t, *in.context);
    }
    copy_result<T>(where, result, out);
  }

 private:
  template <real_scalar T, class Context>
  torch::Tensor time_tensor(std::string_view where, const denoiser_input<T, Context>& in, c10::ScalarType x_dtype) const {
    const std::span<const double> src = opt_.time == torch_time::timestep ? in.timesteps : in.sigma;
    const c10::ScalarType dtype = opt_.time_dtype.value_or(x_dtype);
    const torch::Tensor t64 = torch_from_span(src, {static_cast<std::int64_t>(src.size())});  // no copy
    if (dtype == c10::ScalarType::Double) return t64;
    if (c10::isIntegralType(dtype, false))
      for (std::size_t b = 0; b < src.size(); ++b)
        if (!(std::isfinite(src[b]) && std::trunc(src[b]) == src[b]))
          detail::throw_invalid(where, "time of row " + detail::to_text(b) + " = " + detail::to_text(src[b]) +
                                           " is not a whole number; time_dtype = " + detail::torch_dtype_name(dtype) +
                                           " would truncate it (use a floating dtype)");
    return t64.to(dtype);  // B values converted (the one place a dtype other than float64 costs a copy)
  }

  template <real_scalar T>
  static void copy_result(std::string_view where, const torch::Tensor& result, std::span<T> out) {
    if (!result.defined()) detail::throw_invalid(where, "the network returned an undefined tensor");
    detail::check_torch_device(where, "the network's result", result.device());
    detail::check_torch_dtype(where, "the network's result", result.scalar_type(), detail::torch_dtype_of<T>());
    if (result.numel() != static_cast<std::int64_t>(out.size()))
      detail::throw_invalid(where, "the network's result has " + detail::to_text(result.numel()) + " elements (sizes " +
                                       c10::str(result.sizes()) + "); the sampler expects " + detail::to_text(out.size()) +
                                       " (rows × n, or rows × 2n with a learned variance)");
    const torch::Tensor c = result.contiguous();  // the same tensor when already contiguous
    const T* p = c.data_ptr<T>();
    if (p != out.data()) std::copy(p, p + out.size(), out.data());  // the one copy: the network's fresh tensor
  }

  F f_;
  torch_denoiser_options opt_;
};

/// @brief A @ref diffusion::torch_denoiser "torch_denoiser" from a callable: `make_torch_denoiser([&](auto x, auto t) { return net(x, t); })`.
/// @param[in] f the network callable; @param[in] opt options.
template <class F>
[[nodiscard]] torch_denoiser<std::decay_t<F>> make_torch_denoiser(F&& f, torch_denoiser_options opt = {}) {
  return torch_denoiser<std::decay_t<F>>(std::forward<F>(f), std::move(opt));
}

/// @brief A @ref diffusion::torch_denoiser "torch_denoiser" from a TorchScript module (`torch::jit::load(path)`),
/// whose `forward` takes (x, t) or (x, t, cond).
/// @param[in] module the module (a shared handle); @param[in] opt options.
[[nodiscard]] inline torch_denoiser<torch_script_forward> make_torch_denoiser(torch::jit::script::Module module,
                                                                              torch_denoiser_options opt = {}) {
  return torch_denoiser<torch_script_forward>(torch_script_forward{std::move(module)}, std::move(opt));
}

/// @brief Hands a loss gradient computed by the library to autograd: `output.backward(grad)`, with `grad`
/// the gradient of the loss with respect to the network's output (e.g. the `grad` of
/// @ref diffusion::batch_loss_io "batch_loss_io" filled by the batched @ref diffusion::simple_loss "simple_loss", in the
/// output's row-major layout, read through `torch_view<const T>(output)`).
///
/// The parameters' `.grad` then accumulate \f$\partial L/\partial\theta = (\partial\hat y/\partial\theta)^\top g\f$, as if the
/// loss had been computed in LibTorch. The gradient is copied once into a tensor LibTorch owns: autograd may
/// adopt an incoming gradient as a leaf's `.grad`, which must not point at the caller's memory.
/// @param[in] output the network's output (requires grad; CPU; float32 for T = float, float64 for double).
/// @param[in] grad \f$\partial L/\partial\hat y\f$, `output.numel()` elements in row-major order.
/// @throws std::invalid_argument for an output that does not require grad, is not on the CPU, has another
///         dtype, or another number of elements than `grad`.
template <class T>
  requires real_scalar<std::remove_const_t<T>>
void torch_backward(const torch::Tensor& output, std::span<T> grad) {
  constexpr std::string_view where = "diffusion::torch_backward";
  using U = std::remove_const_t<T>;
  if (!output.defined()) detail::throw_invalid(where, "output is an undefined tensor");
  detail::check_torch_device(where, "output", output.device());
  detail::check_torch_dtype(where, "output", output.scalar_type(), detail::torch_dtype_of<U>());
  if (!output.requires_grad())
    detail::throw_invalid(where, "output does not require grad (computed under no_grad or InferenceMode, or detached): "
                                 "there is no graph to propagate the gradient through");
  if (output.numel() != static_cast<std::int64_t>(grad.size()))
    detail::throw_invalid(where, "grad.size() = " + detail::to_text(grad.size()) + " differs from output.numel() = " +
                                     detail::to_text(output.numel()));
  const torch::Tensor g = torch_from_span(std::span<const U>(grad), output.sizes()).clone();
  output.backward(g);
}

}  // namespace diffusion

/// @}
