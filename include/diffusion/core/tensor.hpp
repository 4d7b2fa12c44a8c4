/// @file
/// @brief Tensor views: what the library accepts as an array of float or double.
///
/// Customization point (specialize for your own type):
/// @code
/// template <> struct diffusion::tensor_traits<my_tensor> {
///   static float* data(my_tensor& t);              // contiguous storage
///   static const float* data(const my_tensor& t);
///   static std::size_t size(const my_tensor& t);   // number of elements
/// };
/// @endcode
/// Accepted without a specialization:
/// - contiguous sized ranges of float/double: `std::vector`, `std::array`, `std::span`
///   (so a raw pointer and size as `std::span<float>(p, n)`), C arrays;
/// - dense Eigen objects (Matrix, Array, Map, Ref) whose storage is contiguous
///   (inner stride 1 and outer stride equal to the inner size), checked at run time
///   without this header including Eigen.
///
/// A batch is a tensor whose elements split evenly into rows: with B timesteps, row b
/// is elements [b·n, (b+1)·n) where n = size/B.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstddef>
#include <iterator>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "errors.hpp"

/// @defgroup tensor Tensors
/// @brief Views of caller-owned float/double storage and the opt-in traits for user types.
/// @{

namespace diffusion {

/// @brief Customization point: specialize for a user tensor type (see the file comment).
/// The primary template is empty (a type is not a tensor unless specialized or matched below).
template <class Tensor>
struct tensor_traits {};

namespace detail {
/// One B<float> and one B<double>, chosen by the element type of a call: the work buffers of the
/// models and schedulers that serve both element types.
template <template <class> class B>
struct per_element_type {
  B<float> for_float;
  B<double> for_double;
  template <class T>
  B<T>& get() noexcept {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "float or double");
    if constexpr (std::is_same_v<T, float>)
      return for_float;
    else
      return for_double;
  }
};
/// The model input and output buffers of an adapter that rescales or preconditions a model.
template <class T>
struct io_buffers {
  std::vector<T> input, output;
};
}  // namespace detail

namespace detail {

template <class T>
concept eigen_dense_like = requires(const T& t) {
  typename T::Scalar;
  { t.data() };
  { t.size() } -> std::convertible_to<std::ptrdiff_t>;
  { t.innerStride() } -> std::convertible_to<std::ptrdiff_t>;
  { t.outerStride() } -> std::convertible_to<std::ptrdiff_t>;
  { t.innerSize() } -> std::convertible_to<std::ptrdiff_t>;
  { t.outerSize() } -> std::convertible_to<std::ptrdiff_t>;
} && real_scalar<std::remove_const_t<typename T::Scalar>>;

/// A contiguous sized range: `std::ranges::data` (a member `data()` or a contiguous iterator)
/// and `std::ranges::size` apply. Those customization points come with `<iterator>`
/// ([range.access.general]), so the whole of `<ranges>` (views, adaptors) is not parsed.
template <class R>
concept contiguous_sized_range = requires(R& r) {
  { std::ranges::data(r) } -> std::same_as<std::add_pointer_t<std::remove_reference_t<decltype(*std::ranges::data(r))>>>;
  std::ranges::size(r);
};

/// The element type of a @ref contiguous_sized_range, cv removed.
template <contiguous_sized_range R>
using contiguous_element_t = std::remove_cv_t<std::remove_reference_t<decltype(*std::ranges::data(std::declval<R&>()))>>;

template <class T>
concept contiguous_real_range = contiguous_sized_range<T> && real_scalar<contiguous_element_t<T>>;

}  // namespace detail

/// Contiguous ranges of float/double (vector, array, span, C array).
template <class R>
  requires detail::contiguous_real_range<R> && (!detail::eigen_dense_like<R>)
struct tensor_traits<R> {
  /// Pointer to the first element.
  static auto data(R& r) { return std::ranges::data(r); }
  /// Pointer to the first element (read-only).
  static auto data(const R& r) { return std::ranges::data(r); }
  /// Number of elements.
  static std::size_t size(const R& r) { return static_cast<std::size_t>(std::ranges::size(r)); }
};

/// Dense Eigen objects with contiguous storage (checked at run time by as_span()).
template <class E>
  requires detail::eigen_dense_like<E>
struct tensor_traits<E> {
  /// Throws std::invalid_argument unless the storage is contiguous.
  static void check(const E& e) {
    const bool contiguous = e.size() == 0 || (e.innerStride() == 1 && (e.outerSize() <= 1 || e.outerStride() == e.innerSize()));
    if (!contiguous)
      detail::throw_invalid("diffusion::as_span", "the Eigen object is not contiguous (inner stride " +
                                                      detail::to_text(static_cast<long long>(e.innerStride())) +
                                                      ", outer stride " +
                                                      detail::to_text(static_cast<long long>(e.outerStride())) +
                                                      "); evaluate it into a Matrix or Array first");
  }
  /// Pointer to the first element, after the contiguity check.
  static auto data(E& e) { return (check(e), e.data()); }
  /// Pointer to the first element (read-only), after the contiguity check.
  static auto data(const E& e) { return (check(e), e.data()); }
  /// Number of elements.
  static std::size_t size(const E& e) { return static_cast<std::size_t>(e.size()); }
};

/// @brief A type usable as a read-only tensor: `tensor_traits` gives a pointer to
/// contiguous float or double and a size.
template <class T>
concept tensor = requires(const std::remove_cvref_t<T>& t) {
  { tensor_traits<std::remove_cvref_t<T>>::data(t) };
  { tensor_traits<std::remove_cvref_t<T>>::size(t) } -> std::convertible_to<std::size_t>;
} && std::is_pointer_v<decltype(tensor_traits<std::remove_cvref_t<T>>::data(std::declval<const std::remove_cvref_t<T>&>()))> &&
    real_scalar<std::remove_cv_t<std::remove_pointer_t<
        decltype(tensor_traits<std::remove_cvref_t<T>>::data(std::declval<const std::remove_cvref_t<T>&>()))>>>;

/// @brief The element type (float or double) of a tensor.
template <tensor T>
using tensor_value_t = std::remove_cv_t<std::remove_pointer_t<decltype(tensor_traits<std::remove_cvref_t<T>>::data(
    std::declval<const std::remove_cvref_t<T>&>()))>>;

/// @brief A tensor the library can write to: `data()` on it yields a non-const pointer.
template <class T>
concept mutable_tensor = tensor<T> && requires(std::remove_reference_t<T>& t) {
  { tensor_traits<std::remove_cvref_t<T>>::data(t) } -> std::same_as<tensor_value_t<T>*>;
};

/// @brief A read-only span over a tensor's elements.
template <tensor T>
[[nodiscard]] std::span<const tensor_value_t<T>> as_span(const T& t) {
  using tr = tensor_traits<std::remove_cvref_t<T>>;
  return {tr::data(t), tr::size(t)};
}

/// @brief A writable span over a tensor's elements.
template <mutable_tensor T>
[[nodiscard]] std::span<tensor_value_t<T>> as_mutable_span(T& t) {
  using tr = tensor_traits<std::remove_cvref_t<T>>;
  return {tr::data(t), tr::size(t)};
}

namespace detail {

/// Checks that two sizes agree, naming both arguments.
inline void check_same_size(std::string_view where, std::string_view a, std::size_t na, std::string_view b,
                            std::size_t nb) {
  if (na != nb)
    throw_invalid(where, std::string(a) + ".size() = " + to_text(na) + " differs from " + std::string(b) +
                             ".size() = " + to_text(nb));
}

/// Throws std::invalid_argument when two arrays overlap partially: an output may be exactly an
/// input (in place) or disjoint from it, never shifted against it (the kernels read each element
/// before writing it, which holds only for the same element). Addresses are compared as integers.
template <class A, class B>
void check_no_partial_overlap(std::string_view where, std::string_view a_name, std::span<A> a, std::string_view b_name,
                              std::span<B> b) {
  if (a.empty() || b.empty()) return;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data()), b0 = reinterpret_cast<std::uintptr_t>(b.data());
  if (a0 == b0 && a.size_bytes() == b.size_bytes()) return;
  const std::uintptr_t a1 = a0 + a.size_bytes(), b1 = b0 + b.size_bytes();
  if (a0 < b1 && b0 < a1)
    throw_invalid(where, std::string(a_name) + " and " + std::string(b_name) +
                             " overlap partially (their memory ranges intersect without being the same "
                             "array): pass the same array for in-place use, or disjoint arrays");
}

/// Elements per row when an argument `rows` splits `name` (of `total` elements) into equal rows.
inline std::size_t rows_split(std::string_view where, std::size_t total, std::size_t rows, std::string_view name) {
  if (rows == 0) throw_invalid(where, "rows = 0 must be >= 1");
  if (total == 0) throw_invalid(where, std::string(name) + " is empty");
  if (total % rows != 0)
    throw_invalid(where, "rows = " + to_text(rows) + " does not divide " + std::string(name) + ".size() = " +
                             to_text(total) + " (" + std::string(name) + " holds rows of equal length)");
  return total / rows;
}

/// Elements per row of a batch with one timestep per row (`rows` timesteps) in `total` elements.
inline std::size_t row_length(std::string_view where, std::size_t total, std::size_t rows) {
  if (rows == 0) throw_invalid(where, "timesteps is empty; a batch needs one timestep per row");
  if (total == 0) throw_invalid(where, "the tensor is empty");
  if (total % rows != 0)
    throw_invalid(where, "the batch size " + to_text(rows) + " (timesteps.size()) does not divide the tensor size " +
                             to_text(total));
  return total / rows;
}

}  // namespace detail
}  // namespace diffusion

/// @}
