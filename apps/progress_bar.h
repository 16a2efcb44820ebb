// A one-line progress bar on stderr, redrawn in place when stderr is a terminal; one line per step
// otherwise (logs).
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace sdcpu::app {

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO)) {}

  void update(const std::string& label, int done, int total) {
    if (!enabled_ || total <= 0) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    constexpr int kWidth = 30;
    const int filled = done * kWidth / total;
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    if (tty_) {
      std::fprintf(stderr, "\r%s [%s] %d/%d  %.1fs", label.c_str(), bar.c_str(), done, total, elapsed);
      if (done == total) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "%s step %d/%d, %.1fs\n", label.c_str(), done, total, elapsed);
    }
    std::fflush(stderr);
  }

  void restart() { start_ = std::chrono::steady_clock::now(); }

 private:
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace sdcpu::app
