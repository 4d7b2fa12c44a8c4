// The IDX reader of the examples (examples/common/idx.hpp): files written here with zlib in a
// temporary directory, read back; malformed files raise ex::idx::error naming the problem.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/idx.hpp"

namespace {

namespace fs = std::filesystem;

// A temporary directory removed at the end of the test.
struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("diffusion_test_idx_" + std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  [[nodiscard]] std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

void put_u32(std::vector<std::uint8_t>& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

// An IDX byte stream: the magic for `ndim` unsigned-byte dimensions, the dims, then `data`.
std::vector<std::uint8_t> idx_bytes(std::uint32_t magic, const std::vector<std::uint32_t>& dims,
                                    const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> b;
  put_u32(b, magic);
  for (auto d : dims) put_u32(b, d);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<std::uint8_t> ramp(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>((i * 37) % 256);
  return v;
}

}  // namespace

TEST_CASE("idx: images and labels round-trip through gzip", "[idx]") {
  temp_dir dir;
  const auto pixels = ramp(3 * 2 * 4);
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_bytes(0x00000803u, {3, 2, 4}, pixels));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_bytes(0x00000801u, {3}, {7, 0, 9}));

  const ex::idx::array a = ex::idx::read(dir.file("train-images-idx3-ubyte.gz"), 3);
  CHECK(a.dims == std::vector<std::size_t>{3, 2, 4});
  CHECK(a.data == pixels);

  const ex::idx::labeled_images d = ex::idx::load_fashion_mnist(dir.path.string(), "train");
  CHECK(d.count == 3);
  CHECK(d.rows == 2);
  CHECK(d.cols == 4);
  CHECK(d.labels == std::vector<int>{7, 0, 9});
  REQUIRE(d.pixels.size() == pixels.size());
  for (std::size_t i = 0; i < pixels.size(); ++i) CHECK(d.pixels[i] == static_cast<float>(pixels[i]) / 127.5f - 1.0f);
  CHECK(d.pixels[0] == -1.0f);  // byte 0 → −1

  SECTION("the first items only") {
    const ex::idx::labeled_images p = ex::idx::load_fashion_mnist(dir.path.string(), "train", 2);
    CHECK(p.count == 2);
    CHECK(p.labels == std::vector<int>{7, 0});
    CHECK(p.pixels.size() == 2 * 2 * 4);
  }
}

TEST_CASE("idx: malformed files raise errors that say what is wrong", "[idx]") {
  temp_dir dir;
  const std::string f = dir.file("x.gz");
  auto fails_with = [&](const std::vector<std::uint8_t>& bytes, std::size_t ndim, const std::string& what) {
    write_gz(f, bytes);
    CHECK_THROWS_WITH(ex::idx::read(f, ndim), Catch::Matchers::Contains(what));
  };
  SECTION("bad magic") {
    fails_with(idx_bytes(0x00000903u, {1, 2, 2}, ramp(4)), 3, "magic number 0x00000903, expected 0x00000803");
    fails_with(idx_bytes(0x00000803u, {1, 2, 2}, ramp(4)), 1, "expected 0x00000801");  // images read as labels
  }
  SECTION("truncated") {
    fails_with(idx_bytes(0x00000803u, {2, 2, 2}, ramp(7)), 3, "truncated: 7 data bytes, the dimensions say 8");
    fails_with({0x00, 0x00, 0x08, 0x03, 0x00, 0x00}, 3, "truncated in the dimensions");
    fails_with({0x00, 0x00}, 3, "shorter than the 4-byte IDX magic");
  }
  SECTION("wrong dimensions") {
    fails_with(idx_bytes(0x00000803u, {2, 0, 2}, {}), 3, "dimension 1 is 0");
    fails_with(idx_bytes(0x00000803u, {1, 2, 2}, ramp(5)), 3, "more data than the dimensions say");
    fails_with(idx_bytes(0x00000803u, {0xFFFFFFFFu, 0xFFFFFFFFu, 2}, {}), 3, "more than 2^40 bytes");
  }
  SECTION("images and labels disagree") {
    write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_bytes(0x00000803u, {2, 1, 1}, {1, 2}));
    write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes(0x00000801u, {3}, {1, 2, 3}));
    CHECK_THROWS_WITH(ex::idx::load_fashion_mnist(dir.path.string(), "t10k"), Catch::Matchers::Contains("but"));
  }
  SECTION("a label outside 0..9") {
    write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_bytes(0x00000803u, {1, 1, 1}, {1}));
    write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes(0x00000801u, {1}, {10}));
    CHECK_THROWS_WITH(ex::idx::load_fashion_mnist(dir.path.string(), "t10k"), Catch::Matchers::Contains("not in 0..9"));
  }
  SECTION("a corrupt gzip stream") {
    std::vector<std::uint8_t> gz;
    {
      write_gz(f, idx_bytes(0x00000803u, {4, 8, 8}, ramp(256)));
      std::FILE* in = std::fopen(f.c_str(), "rb");
      REQUIRE(in != nullptr);
      int c;
      while ((c = std::fgetc(in)) != EOF) gz.push_back(static_cast<std::uint8_t>(c));
      std::fclose(in);
    }
    for (std::size_t i = 12; i < gz.size() - 8; ++i) gz[i] = static_cast<std::uint8_t>(gz[i] ^ 0x5A);
    std::FILE* out = std::fopen(f.c_str(), "wb");
    REQUIRE(out != nullptr);
    std::fwrite(gz.data(), 1, gz.size(), out);
    std::fclose(out);
    CHECK_THROWS_AS(ex::idx::read(f, 3), ex::idx::error);
  }
}

TEST_CASE("idx: a missing file is a missing_file error", "[idx]") {
  temp_dir dir;
  CHECK_THROWS_AS(ex::idx::read(dir.file("nothing.gz"), 3), ex::idx::missing_file);
  CHECK_THROWS_AS(ex::idx::load_fashion_mnist(dir.file("no-such-dir"), "train"), ex::idx::missing_file);
}
