// The tensor concepts accept what tensor.hpp documents and reject the rest.
#include <diffusion/tensor.hpp>
#include <diffusion/gaussian.hpp>

#include <Eigen/Core>

#include <array>
#include <list>
#include <span>
#include <string>
#include <vector>

namespace user {
// A user type that opts in through tensor_traits.
struct image {
  std::vector<float> pixels;
};
}  // namespace user

template <>
struct diffusion::tensor_traits<user::image> {
  static float* data(user::image& im) { return im.pixels.data(); }
  static const float* data(const user::image& im) { return im.pixels.data(); }
  static std::size_t size(const user::image& im) { return im.pixels.size(); }
};

using diffusion::mutable_tensor;
using diffusion::tensor;
using diffusion::tensor_value_t;

static_assert(tensor<std::vector<float>>);
static_assert(tensor<std::vector<double>>);
static_assert(tensor<std::array<float, 4>>);
static_assert(tensor<std::span<const float>>);
static_assert(tensor<std::span<double>>);
static_assert(tensor<float[8]>);
static_assert(tensor<Eigen::VectorXf>);
static_assert(tensor<Eigen::ArrayXXd>);
static_assert(tensor<Eigen::Map<Eigen::VectorXf>>);
static_assert(tensor<Eigen::Ref<const Eigen::MatrixXd>>);
static_assert(tensor<user::image>);

static_assert(mutable_tensor<std::vector<float>&>);
static_assert(mutable_tensor<std::span<float>>);
static_assert(mutable_tensor<Eigen::MatrixXd&>);
static_assert(mutable_tensor<user::image&>);
static_assert(!mutable_tensor<const std::vector<float>&>);
static_assert(!mutable_tensor<std::span<const float>>);

static_assert(std::same_as<tensor_value_t<std::vector<float>>, float>);
static_assert(std::same_as<tensor_value_t<std::span<const double>>, double>);
static_assert(std::same_as<tensor_value_t<Eigen::ArrayXf>, float>);
static_assert(std::same_as<tensor_value_t<user::image>, float>);

static_assert(!tensor<std::vector<int>>);
static_assert(!tensor<std::vector<long double>>);
static_assert(!tensor<std::string>);
static_assert(!tensor<int>);
static_assert(!tensor<Eigen::VectorXi>);

static_assert(diffusion::timestep_range<std::vector<int>>);
static_assert(diffusion::timestep_range<std::vector<std::size_t>>);
static_assert(diffusion::timestep_range<std::span<const long>>);
static_assert(!diffusion::timestep_range<std::vector<double>>);
static_assert(diffusion::timestep_range<std::array<int, 3>>);
static_assert(diffusion::timestep_range<const unsigned[2]>);
static_assert(!diffusion::timestep_range<std::list<int>>);  // not contiguous
static_assert(!diffusion::timestep_range<int*>);            // no size

// Contiguous real ranges without <ranges>: C arrays and std::array count, lists, vector<bool>
// (no contiguous storage) and bare pointers do not.
static_assert(tensor<float[4]>);
static_assert(tensor<const std::array<double, 2>>);
static_assert(!tensor<std::list<float>>);
static_assert(!tensor<std::vector<bool>>);
static_assert(!tensor<float*>);
