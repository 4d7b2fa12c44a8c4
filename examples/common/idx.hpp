// A reader of gzip-compressed IDX files, the format of MNIST and Fashion-MNIST, with zlib.
//
// IDX: a 4-byte magic (two zero bytes, a type byte, 0x08 = unsigned byte, and the number
// of dimensions), the dimensions as big-endian 32-bit integers, then the data, the last
// index fastest. Images are 0x00000803 (count × rows × cols), labels 0x00000801 (count).
//
//   const ex::idx::array a = ex::idx::read("t10k-images-idx3-ubyte.gz", 3);   // throws ex::idx::error
//   const ex::idx::labeled_images d = ex::idx::load_fashion_mnist_or_exit(dir, "t10k", 1000, "prog");
//
// Every malformed file (wrong magic, a dimension of 0, a size that overflows, data shorter or
// longer than the dimensions say, a corrupt gzip stream) raises ex::idx::error naming the
// file and what is wrong; a missing file raises ex::idx::missing_file. The *_or_exit helper
// turns a missing data set into a message naming the Debian package dataset-fashion-mnist
// and the --data-dir option, and exit status 2.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace ex::idx {

/// A malformed or unreadable IDX file.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// The file does not exist.
struct missing_file : error {
  using error::error;
};

/// An unsigned-byte IDX array: its dimensions and its values, last index fastest.
struct array {
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> data;
};

namespace detail {

class gz_file {
 public:
  explicit gz_file(const std::string& path) : path_(path) {
    if (!std::filesystem::exists(path)) throw missing_file(path + ": no such file");
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) throw error(path + ": cannot open");
  }
  gz_file(const gz_file&) = delete;
  gz_file& operator=(const gz_file&) = delete;
  ~gz_file() { gzclose(f_); }

  /// Reads up to n bytes; returns how many were read (fewer at the end of the data).
  std::size_t read(void* dst, std::size_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    std::size_t done = 0;
    while (done < n) {
      const std::size_t chunk = std::min<std::size_t>(n - done, 1u << 30);
      const int got = gzread(f_, p + done, static_cast<unsigned>(chunk));
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(f_, &code);
        throw error(path_ + ": corrupt gzip data (" + std::string(msg ? msg : "zlib error") + ")");
      }
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

inline std::uint32_t big_endian(const unsigned char* b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
}

}  // namespace detail

/// Reads an unsigned-byte IDX file (gzip-compressed or not) that must have `ndim`
/// dimensions. With `max_items` > 0 only the first max_items entries of the first dimension
/// are read (dims[0] then says how many); otherwise the whole file, and trailing bytes are an error.
/// @throws missing_file if the file does not exist; error if it is malformed.
inline array read(const std::string& path, std::size_t ndim, std::size_t max_items = 0) {
  detail::gz_file f(path);
  unsigned char magic[4];
  if (f.read(magic, 4) != 4) throw error(path + ": shorter than the 4-byte IDX magic number");
  const std::uint32_t m = detail::big_endian(magic);
  const std::uint32_t want = 0x00000800u | static_cast<std::uint32_t>(ndim);
  if (m != want) {
    char buf[160];
    std::snprintf(buf, sizeof buf, ": magic number 0x%08X, expected 0x%08X (unsigned bytes, %zu dimension%s)",
                  static_cast<unsigned>(m), static_cast<unsigned>(want), ndim, ndim == 1 ? "" : "s");
    throw error(path + buf);
  }
  array a;
  a.dims.resize(ndim);
  std::size_t total = 1;
  for (std::size_t i = 0; i < ndim; ++i) {
    unsigned char b[4];
    if (f.read(b, 4) != 4) throw error(path + ": truncated in the dimensions");
    a.dims[i] = detail::big_endian(b);
    if (a.dims[i] == 0) throw error(path + ": dimension " + std::to_string(i) + " is 0");
    if (total > (std::size_t{1} << 40) / a.dims[i])
      throw error(path + ": the dimensions describe more than 2^40 bytes");
    total *= a.dims[i];
  }
  const std::size_t item = total / a.dims[0];
  const bool partial = max_items > 0 && max_items < a.dims[0];
  if (partial) a.dims[0] = max_items;
  const std::size_t want_bytes = a.dims[0] * item;
  a.data.resize(want_bytes);
  const std::size_t got = f.read(a.data.data(), want_bytes);
  if (got != want_bytes)
    throw error(path + ": truncated: " + std::to_string(got) + " data bytes, the dimensions say " +
                std::to_string(want_bytes));
  if (!partial) {
    unsigned char extra;
    if (f.read(&extra, 1) != 0) throw error(path + ": more data than the dimensions say");
  }
  return a;
}

/// Images with their labels, pixels as float in [−1, 1] (0 → −1, 255 → 1), image i at
/// [i·rows·cols, (i+1)·rows·cols).
struct labeled_images {
  std::size_t count = 0, rows = 0, cols = 0;
  std::vector<float> pixels;
  std::vector<int> labels;
  [[nodiscard]] std::size_t dim() const { return rows * cols; }
};

/// The class names of Fashion-MNIST, by label.
inline constexpr std::array<const char*, 10> fashion_mnist_classes = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// Loads `<dir>/<split>-images-idx3-ubyte.gz` and `<dir>/<split>-labels-idx1-ubyte.gz`
/// (split "train" or "t10k"), the first `max_items` (0: all), and checks that they agree.
/// @throws missing_file, error.
inline labeled_images load_fashion_mnist(const std::string& dir, const std::string& split, std::size_t max_items = 0) {
  const std::string ipath = dir + "/" + split + "-images-idx3-ubyte.gz";
  const std::string lpath = dir + "/" + split + "-labels-idx1-ubyte.gz";
  const array im = read(ipath, 3, max_items);
  const array lb = read(lpath, 1, max_items);
  if (im.dims[0] != lb.dims[0])
    throw error(ipath + " has " + std::to_string(im.dims[0]) + " images but " + lpath + " has " +
                std::to_string(lb.dims[0]) + " labels");
  labeled_images d;
  d.count = im.dims[0];
  d.rows = im.dims[1];
  d.cols = im.dims[2];
  d.pixels.resize(im.data.size());
  for (std::size_t i = 0; i < im.data.size(); ++i) d.pixels[i] = static_cast<float>(im.data[i]) / 127.5f - 1.0f;
  d.labels.resize(d.count);
  for (std::size_t i = 0; i < d.count; ++i) {
    if (lb.data[i] > 9) throw error(lpath + ": label " + std::to_string(lb.data[i]) + " at " + std::to_string(i) + " is not in 0..9");
    d.labels[i] = lb.data[i];
  }
  return d;
}

/// load_fashion_mnist, or a message and exit status 2: for a missing file, naming the Debian
/// package dataset-fashion-mnist and the --data-dir option; for a malformed one, what is wrong.
inline labeled_images load_fashion_mnist_or_exit(const std::string& dir, const std::string& split, std::size_t max_items,
                                                 const char* program) {
  try {
    return load_fashion_mnist(dir, split, max_items);
  } catch (const missing_file& e) {
    std::fprintf(stderr,
                 "%s: Fashion-MNIST not found (%s).\n"
                 "  Install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist),\n"
                 "  which puts the files under /usr/share/datasets/fashion-mnist, or point --data-dir at a\n"
                 "  directory holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
                 "  t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.\n",
                 program, e.what());
  } catch (const error& e) {
    std::fprintf(stderr, "%s: cannot read Fashion-MNIST: %s\n", program, e.what());
  }
  std::exit(2);
}

}  // namespace ex::idx
