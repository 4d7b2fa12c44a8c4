// Tensor views: spans of the accepted types, and the user opt-in through tensor_traits.
#include <catch2/catch.hpp>

#include <diffusion/gaussian.hpp>
#include <diffusion/tensor.hpp>

#include <Eigen/Core>

#include <array>
#include <vector>

namespace user {
struct volume {
  std::vector<double> voxels;
};
}  // namespace user

template <>
struct diffusion::tensor_traits<user::volume> {
  static double* data(user::volume& v) { return v.voxels.data(); }
  static const double* data(const user::volume& v) { return v.voxels.data(); }
  static std::size_t size(const user::volume& v) { return v.voxels.size(); }
};

TEST_CASE("as_span views the caller's storage without copying", "[tensor]") {
  std::vector<float> v(5);
  CHECK(diffusion::as_span(v).data() == v.data());
  CHECK(diffusion::as_mutable_span(v).size() == 5);
  std::array<double, 3> a{};
  CHECK(diffusion::as_span(a).data() == a.data());
  float raw[4] = {};
  CHECK(diffusion::as_span(std::span<float>(raw, 4)).data() == raw);
  Eigen::MatrixXf m(2, 3);
  CHECK(diffusion::as_span(m).data() == m.data());
  CHECK(diffusion::as_span(m).size() == 6);
  user::volume vol{std::vector<double>(8, 0.0)};
  CHECK(diffusion::as_mutable_span(vol).data() == vol.voxels.data());
}

TEST_CASE("a user tensor type works with every tensor function", "[tensor]") {
  const diffusion::noise_schedule s(diffusion::linear_betas(10, 0.1, 0.2));
  user::volume x0{std::vector<double>(8, 2.0)}, eps{std::vector<double>(8, 0.0)}, xt{std::vector<double>(8)};
  diffusion::q_sample(s, 3, x0, eps, xt);
  for (double x : xt.voxels) CHECK(x == Approx(2.0 * s[3].sqrt_alpha_bar).epsilon(1e-15));
}

TEST_CASE("non-contiguous Eigen views are refused with the strides", "[tensor][errors]") {
  Eigen::MatrixXf m(4, 4);
  auto row = m.row(1);  // inner stride 4 in column-major storage
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH((void)diffusion::as_span(row), Contains("not contiguous") && Contains("inner stride 4"));
}
