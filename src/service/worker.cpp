#include "service/worker.h"

#include <cstdio>
#include <exception>
#include <thread>

namespace sdcpu::service {
namespace {

// Thrown from the progress callback to stop a generation whose job was cancelled; it unwinds out of
// Pipeline::generate between two denoising steps.
struct JobCancelled {};

}  // namespace

Worker::Worker(JobQueue& queue, std::vector<ServedModel>& models, ServiceMetrics& metrics)
    : queue_(queue), models_(models), metrics_(metrics) {}

bool Worker::run_one(std::chrono::milliseconds wait) {
  const std::optional<Job> claimed = queue_.claim(wait);
  if (!claimed) return false;
  const Job& job = *claimed;
  try {
    Pipeline* pipeline = nullptr;
    for (ServedModel& m : models_)
      if (m.name == job.request.model || (job.request.model.empty() && &m == &models_.front()))
        pipeline = m.pipeline.get();
    if (!pipeline) throw InvalidArgument("this worker does not serve model \"" + job.request.model + "\"");
    const GenerateOptions& options = job.request.options;
    const auto job_start = std::chrono::steady_clock::now();
    auto step_start = job_start;
    std::vector<Image> images = pipeline->generate(options, [&](int image, int step, int steps) {
      const auto now = std::chrono::steady_clock::now();
      metrics_.step_seconds.observe(std::chrono::duration<double>(now - step_start).count());
      step_start = now;
      queue_.set_progress(job.id, JobProgress{image, options.batch_count, step, steps});
      if (queue_.cancel_requested(job.id)) throw JobCancelled{};
    });
    std::vector<uint64_t> seeds;
    for (size_t k = 0; k < images.size(); ++k) {
      queue_.store_image(job.id, static_cast<int>(k), images[k].encode_png());
      seeds.push_back(images[k].seed);
    }
    queue_.succeed(job.id, seeds);
    metrics_.job_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - job_start).count());
    metrics_.add_images(images.size());
  } catch (const JobCancelled&) {
    queue_.mark_cancelled(job.id);
  } catch (const std::exception& e) {
    queue_.fail(job.id, e.what());
  }
  return true;
}

void Worker::run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    try {
      run_one(std::chrono::milliseconds(200));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sdcpu worker: %s; retrying in 1 s\n", e.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
}

}  // namespace sdcpu::service
