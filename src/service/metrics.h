// What /metrics reports besides the queue's counts: step and job durations as Prometheus histograms, and images
// made. The worker observes; the HTTP front end renders.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace sdcpu::service {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size()) {}
  void observe(double value);
  // The Prometheus text lines of `name` (its _bucket, _sum and _count series).
  std::string render(const std::string& name, const std::string& help) const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct ServiceMetrics {
  Histogram step_seconds{{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  Histogram job_seconds{{0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600}};
  std::mutex mutex;
  uint64_t images_total = 0;
  void add_images(uint64_t n) {
    std::lock_guard<std::mutex> lock(mutex);
    images_total += n;
  }
  uint64_t images() {
    std::lock_guard<std::mutex> lock(mutex);
    return images_total;
  }
};

}  // namespace sdcpu::service
