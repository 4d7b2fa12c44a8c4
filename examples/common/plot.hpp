// Plots through gnuplot: write the data (.dat) and a gnuplot script (.gp) next to the
// PNG, then run gnuplot on the script. The .dat and .gp files stay, so a figure can be
// restyled and redrawn by hand (`gnuplot figure.gp`).
//
//   ex::plot::figure f;
//   f.title = "Noise schedules";                 // optional, above all panels
//   f.columns = 3;                               // panels per row (multiplot layout)
//   f.width = 1200; f.height = 400;              // pixels
//   f.palette = true;                            // optional: libgd png, small files for scatter plots
//   ex::plot::panel& p = f.panels.emplace_back();
//   p.title = "alpha-bar"; p.xlabel = "t/T"; p.ylabel = "value";
//   p.logy = true;                               // log axes: logx, logy
//   p.curves.push_back({"linear", x, y});       // style defaults to "lines lw 2"
//   p.curves.push_back({"", xs, ys, "points pt 7 ps 0.3 lc rgb '#1f77b4'"});  // scatter, no key entry
//   p.commands = "set xrange [-3:3]";           // any extra gnuplot lines for this panel
//   ex::plot::save(f, "out/schedules.png");     // writes schedules.dat, schedules.gp, schedules.png
//
// save() returns true when the PNG was drawn. When gnuplot is not installed it prints
// that the Debian package gnuplot-nox draws the figure and the command to run later,
// and returns false; the examples still succeed (their numeric checks do not depend on
// the picture). The terminal is pngcairo when gnuplot has it (and palette is false), otherwise
// png.
//
// Values that are not finite (±inf, NaN) are written as blank points ("?" in the data
// file, which gnuplot skips), so log-SNR = −inf at a zero-terminal-SNR step just ends
// the curve. Text (titles, labels) goes into single-quoted gnuplot strings: avoid
// single quotes in it. gnuplot's enhanced text mode is off, so '_' and '^' print as is.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ex::plot {

/// One curve or point cloud: y against x (same length).
struct curve {
  std::string title;             ///< key entry; empty for none
  std::vector<double> x, y;      ///< the points
  std::string style = "lines lw 2";  ///< gnuplot "with" clause, e.g. "points pt 7 ps 0.3"
};

/// One set of axes.
struct panel {
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::string commands;  ///< extra gnuplot lines run before the plot command (ranges, key position, ...)
  std::vector<curve> curves;
};

/// A PNG of one or more panels laid out in rows of `columns`.
struct figure {
  std::string title;
  int width = 900, height = 600;  ///< pixels
  int columns = 1;
  int font_size = 10;
  /// Draw with gnuplot's libgd "png" terminal (256-colour palette, no anti-aliasing) instead
  /// of pngcairo: several times smaller files, good for dense scatter plots.
  bool palette = false;
  std::vector<panel> panels;
};

/// True when a `gnuplot` executable is on PATH.
inline bool have_gnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

namespace detail {
inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? '"' : c;
  return out + "'";
}
inline void number(std::FILE* f, double v) {
  if (std::isfinite(v))
    std::fprintf(f, "%.10g", v);
  else
    std::fputs("?", f);
}
}  // namespace detail

/// Writes `<png minus .png>.dat` and `.gp` and runs gnuplot to draw `png_path` (its
/// directory is created). Returns true when the PNG was drawn.
inline bool save(const figure& fig, const std::string& png_path) {
  namespace fs = std::filesystem;
  const fs::path png(png_path);
  if (png.has_parent_path()) fs::create_directories(png.parent_path());
  fs::path dat = png, gp = png;
  dat.replace_extension(".dat");
  gp.replace_extension(".gp");

  // Data: one gnuplot "index" block per series, blocks separated by two blank lines.
  std::FILE* d = std::fopen(dat.string().c_str(), "w");
  if (!d) {
    std::fprintf(stderr, "plot: cannot write %s\n", dat.string().c_str());
    return false;
  }
  std::size_t block = 0;
  for (const panel& p : fig.panels)
    for (const curve& s : p.curves) {
      std::fprintf(d, "# block %zu: %s\n", block++, s.title.c_str());
      for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        detail::number(d, s.x[i]);
        std::fputc(' ', d);
        detail::number(d, s.y[i]);
        std::fputc('\n', d);
      }
      std::fputs("\n\n", d);
    }
  std::fclose(d);

  // Script.
  std::ofstream g(gp);
  const int cols = fig.columns < 1 ? 1 : fig.columns;
  const int rows = static_cast<int>((fig.panels.size() + static_cast<std::size_t>(cols) - 1) / static_cast<std::size_t>(cols));
  g << "# Drawn by the diffusion examples (examples/common/plot.hpp); data in " << dat.filename().string() << "\n"
    << "if (" << (fig.palette ? "0 && " : "") << "strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    << "  set terminal pngcairo size " << fig.width << "," << fig.height << " font 'sans," << fig.font_size
    << "' noenhanced\n"
    << "} else {\n"
    << "  set terminal png size " << fig.width << "," << fig.height << " font 'sans," << fig.font_size
    << "' noenhanced\n"
    << "}\n"
    << "set output " << detail::quote(png.filename().string()) << "\n"
    << "set grid\nset key top right\n";
  g << "set multiplot layout " << (rows < 1 ? 1 : rows) << "," << cols;
  if (!fig.title.empty()) g << " title " << detail::quote(fig.title);
  g << "\n";
  block = 0;
  for (const panel& p : fig.panels) {
    g << "reset\nset grid\nset key top right\n";
    g << "set title " << detail::quote(p.title) << "\n";
    g << "set xlabel " << detail::quote(p.xlabel) << "\nset ylabel " << detail::quote(p.ylabel) << "\n";
    g << (p.logx ? "set logscale x\n" : "unset logscale x\n") << (p.logy ? "set logscale y\n" : "unset logscale y\n");
    if (!p.commands.empty()) g << p.commands << "\n";
    if (p.curves.empty()) {
      g << "plot NaN notitle\n";
      continue;
    }
    g << "plot ";
    for (std::size_t i = 0; i < p.curves.size(); ++i) {
      const curve& s = p.curves[i];
      if (i) g << ", \\\n     ";
      g << detail::quote(dat.filename().string()) << " index " << block++ << " using 1:2 with " << s.style
        << (s.title.empty() ? std::string(" notitle") : " title " + detail::quote(s.title));
    }
    g << "\n";
  }
  g << "unset multiplot\n";
  g.close();

  if (!have_gnuplot()) {
    std::printf("plot: gnuplot not found, %s not drawn. Install the Debian package gnuplot-nox\n"
                "      (apt-get install gnuplot-nox), then run: cd %s && gnuplot %s\n",
                png.filename().string().c_str(), fs::absolute(gp).parent_path().string().c_str(),
                gp.filename().string().c_str());
    return false;
  }
  // Run from the output directory so the script's relative file names resolve.
  const std::string cmd = "cd '" + fs::absolute(gp).parent_path().string() + "' && gnuplot '" + gp.filename().string() + "'";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "plot: gnuplot failed on %s\n", gp.string().c_str());
    return false;
  }
  std::printf("wrote %s (data %s, script %s)\n", png.string().c_str(), dat.filename().string().c_str(),
              gp.filename().string().c_str());
  return true;
}

}  // namespace ex::plot
