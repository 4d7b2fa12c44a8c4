// PNG image grids for the examples, written with stb_image_write (Debian libstb-dev: the
// header <stb_image_write.h>, the implementation in libstb.so, linked by the CMake target
// diffusion_examples_common).
//
//   // 2 rows × 3 columns of 28×28 grayscale images, row-major, each image row-major,
//   // values in [-1, 1]; every pixel drawn as a 2×2 block, 2-pixel white gaps:
//   ex::write_grid_png("out/grid.png", images, 2, 3, 28, 28, {.range = ex::pixel_range::minus_one_one, .scale = 2});
//
// Values outside the range are clamped; NaN draws as black. The directory of the path is
// created. Returns false (after a message on stderr) if the file cannot be written.
#pragma once

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace ex {

/// How a pixel value maps to gray levels 0 … 255.
enum class pixel_range {
  minus_one_one,  ///< −1 → 0 (black), 1 → 255 (white): the diffusion models' scale
  zero_one,       ///< 0 → 0, 1 → 255
};

/// Layout options of write_grid_png.
struct grid_options {
  pixel_range range = pixel_range::minus_one_one;
  int scale = 1;                ///< each pixel becomes a scale × scale block
  int gap = 2;                  ///< pixels between images (in output pixels)
  std::uint8_t gap_gray = 255;  ///< gray level of the gaps and borders
};

/// One value to a gray level.
inline std::uint8_t to_gray(double v, pixel_range r) {
  if (std::isnan(v)) return 0;
  const double u = r == pixel_range::minus_one_one ? 0.5 * (v + 1.0) : v;
  return static_cast<std::uint8_t>(std::lround(255.0 * std::clamp(u, 0.0, 1.0)));
}

/// Writes a rows × cols grid of H × W grayscale images as one PNG. `images` holds
/// rows·cols·H·W values: image (r, c) starts at ((r·cols + c)·H·W). T is float or double.
template <class T>
bool write_grid_png(const std::string& path, std::span<const T> images, std::size_t rows, std::size_t cols, std::size_t H,
                    std::size_t W, const grid_options& opt = {}) {
  if (images.size() != rows * cols * H * W || rows == 0 || cols == 0 || H == 0 || W == 0 || opt.scale < 1 || opt.gap < 0) {
    std::fprintf(stderr, "write_grid_png: %zu values do not make %zu x %zu images of %zu x %zu (scale %d, gap %d)\n",
                 images.size(), rows, cols, H, W, opt.scale, opt.gap);
    return false;
  }
  const auto s = static_cast<std::size_t>(opt.scale), g = static_cast<std::size_t>(opt.gap);
  const std::size_t width = cols * W * s + (cols + 1) * g, height = rows * H * s + (rows + 1) * g;
  std::vector<std::uint8_t> pix(width * height, opt.gap_gray);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const T* img = images.data() + (r * cols + c) * H * W;
      const std::size_t y0 = g + r * (H * s + g), x0 = g + c * (W * s + g);
      for (std::size_t y = 0; y < H * s; ++y)
        for (std::size_t x = 0; x < W * s; ++x)
          pix[(y0 + y) * width + x0 + x] = to_gray(static_cast<double>(img[(y / s) * W + x / s]), opt.range);
    }
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  if (stbi_write_png(path.c_str(), static_cast<int>(width), static_cast<int>(height), 1, pix.data(),
                     static_cast<int>(width)) == 0) {
    std::fprintf(stderr, "write_grid_png: cannot write %s\n", path.c_str());
    return false;
  }
  return true;
}

/// The same for a std::vector.
template <class T>
bool write_grid_png(const std::string& path, const std::vector<T>& images, std::size_t rows, std::size_t cols, std::size_t H,
                    std::size_t W, const grid_options& opt = {}) {
  return write_grid_png(path, std::span<const T>(images), rows, cols, H, W, opt);
}

}  // namespace ex
