// Command-line options and progress reporting shared by the examples.
//
//   ex::cli args(argc, argv, "schedules", "Plots alpha-bar, log-SNR and beta of four schedules.");
//   const long T = args.integer("--steps", 1000, "number of diffusion steps T");
//   const std::string out = args.text("--out", "schedules.png", "where the PNG goes");
//   args.finish();  // --help prints every option declared above and exits 0;
//                   // an unknown option or a malformed value exits 2 with a message.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace ex {

class cli {
 public:
  cli(int argc, char** argv, std::string program, std::string summary)
      : args_(argv + 1, argv + argc), program_(std::move(program)), summary_(std::move(summary)),
        used_(args_.size(), false) {}

  /// A real-valued option `name value`.
  double real(std::string_view name, double def, std::string_view help) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", def);
    declare(name, buf, help);
    if (const std::string* v = value(name)) {
      char* end = nullptr;
      const double x = std::strtod(v->c_str(), &end);
      if (end == v->c_str() || *end != '\0') fail(name, *v, "a number");
      return x;
    }
    return def;
  }

  /// An integer option `name value`.
  long integer(std::string_view name, long def, std::string_view help) {
    declare(name, std::to_string(def), help);
    if (const std::string* v = value(name)) {
      char* end = nullptr;
      const long x = std::strtol(v->c_str(), &end, 10);
      if (end == v->c_str() || *end != '\0') fail(name, *v, "an integer");
      return x;
    }
    return def;
  }

  /// A text option `name value`.
  std::string text(std::string_view name, std::string def, std::string_view help) {
    declare(name, def.empty() ? "\"\"" : def, help);
    if (const std::string* v = value(name)) return *v;
    return def;
  }

  /// A flag `name` (no value).
  bool flag(std::string_view name, std::string_view help) {
    declare(name, "", help);
    for (std::size_t i = 0; i < args_.size(); ++i)
      if (args_[i] == name) {
        used_[i] = true;
        return true;
      }
    return false;
  }

  /// Call after every option is declared: handles --help / -h, rejects unknown arguments.
  void finish() {
    for (std::size_t i = 0; i < args_.size(); ++i)
      if (args_[i] == "--help" || args_[i] == "-h") {
        std::printf("%s: %s\n\nOptions:\n", program_.c_str(), summary_.c_str());
        for (const auto& o : options_)
          std::printf("  %-24s %s%s%s\n", o.name.c_str(), o.help.c_str(), o.def.empty() ? "" : " (default ",
                      o.def.empty() ? "" : (o.def + ")").c_str());
        std::printf("  %-24s %s\n", "--help", "print this help and exit");
        std::exit(0);
      }
    for (std::size_t i = 0; i < args_.size(); ++i)
      if (!used_[i]) {
        std::fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", program_.c_str(), args_[i].c_str());
        std::exit(2);
      }
  }

 private:
  struct option {
    std::string name, def, help;
  };
  std::vector<std::string> args_;
  std::string program_, summary_;
  std::vector<bool> used_;
  std::vector<option> options_;

  void declare(std::string_view name, std::string def, std::string_view help) {
    options_.push_back({std::string(name), std::move(def), std::string(help)});
  }
  const std::string* value(std::string_view name) {
    for (std::size_t i = 0; i < args_.size(); ++i)
      if (args_[i] == name) {
        if (i + 1 >= args_.size()) {
          std::fprintf(stderr, "%s: option '%s' needs a value (try --help)\n", program_.c_str(), args_[i].c_str());
          std::exit(2);
        }
        used_[i] = used_[i + 1] = true;
        return &args_[i + 1];
      }
    return nullptr;
  }
  [[noreturn]] void fail(std::string_view name, const std::string& v, const char* what) {
    std::fprintf(stderr, "%s: option '%.*s' wants %s, got '%s'\n", program_.c_str(), static_cast<int>(name.size()),
                 name.data(), what, v.c_str());
    std::exit(2);
  }
};

/// Progress of a long loop on stderr: "label: done/total (pct), elapsed, ~left", at most
/// a few times a second, and a final line at the end.
class progress {
 public:
  progress(std::string label, std::size_t total)
      : label_(std::move(label)), total_(total), start_(clock::now()), last_(start_) {}

  /// Reports that `done` of `total` units are finished.
  void update(std::size_t done) {
    const auto now = clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(500)) return;
    last_ = now;
    const double el = std::chrono::duration<double>(now - start_).count();
    const double left = done == 0 ? 0.0 : el * static_cast<double>(total_ - done) / static_cast<double>(done);
    std::fprintf(stderr, "\r%s: %zu/%zu (%3.0f%%), %.1f s elapsed, ~%.1f s left   ", label_.c_str(), done, total_,
                 total_ == 0 ? 100.0 : 100.0 * static_cast<double>(done) / static_cast<double>(total_), el, left);
    if (done >= total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  std::size_t total_;
  clock::time_point start_, last_;
};

}  // namespace ex
