#include "service/worker.h"

#include <cstdio>
#include <exception>
#include <thread>

namespace sdcpu::service {
Worker::Worker(JobQueue& queue, std::vector<ServedModel>& models, ServiceMetrics& metrics, int max_batch)
    : queue_(queue), models_(models), metrics_(metrics), max_batch_(max_batch) {
  if (max_batch < 1 || max_batch > 64) throw InvalidArgument("max batch must be between 1 and 64");
}

bool Worker::run_one(std::chrono::milliseconds wait) {
  std::optional<Job> first = queue_.claim(wait);
  if (!first) return false;
  std::vector<Job> jobs{std::move(*first)};
  Pipeline* pipeline = nullptr;
  try {
    pipeline = pipeline_for(jobs.front().request);
    if (!pipeline) throw InvalidArgument("this worker does not serve model \"" + jobs.front().request.model + "\"");
  } catch (const std::exception& e) {
    queue_.fail(jobs.front().id, e.what());
    return true;
  }
  // Jobs queued behind it that share its model and settings join its UNet batches (batch_key()). Should the queue
  // fail here, the first job runs alone.
  if (max_batch_ > 1) {
    try {
      for (Job& mate : queue_.claim_batch_mates(jobs.front(), max_batch_)) jobs.push_back(std::move(mate));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sdcpu worker: no batch for job %s: %s\n", jobs.front().id.c_str(), e.what());
    }
  }
  run_batch(*pipeline, jobs);
  return true;
}

Pipeline* Worker::pipeline_for(const JobRequest& request) {
  for (ServedModel& m : models_)
    if (m.name == request.model || (request.model.empty() && &m == &models_.front())) return m.pipeline.get();
  return nullptr;
}

void Worker::run_batch(Pipeline& pipeline, const std::vector<Job>& jobs) {
  std::vector<GenerateOptions> options;
  for (const Job& job : jobs) options.push_back(job.request.options);
  std::vector<bool> cancelled(jobs.size(), false);
  try {
    const auto start = std::chrono::steady_clock::now();
    auto step_start = start;
    int last_step = 0;
    const std::vector<std::vector<Image>> images =
        pipeline.generate_batch(options, max_batch_, [&](int j, int image, int step, int steps) {
          if (step != last_step) {  // the first member to report a step: one UNet call for all of them
            const auto now = std::chrono::steady_clock::now();
            metrics_.step_seconds.observe(std::chrono::duration<double>(now - step_start).count());
            step_start = now;
            last_step = step;
          }
          queue_.set_progress(jobs[j].id, JobProgress{image, options[j].batch_count, step, steps});
          if (queue_.cancel_requested(jobs[j].id)) cancelled[j] = true;
          return !cancelled[j];
        });
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (cancelled[j]) {
        queue_.mark_cancelled(jobs[j].id);
        continue;
      }
      std::vector<uint64_t> seeds;
      for (size_t k = 0; k < images[j].size(); ++k) {
        queue_.store_image(jobs[j].id, static_cast<int>(k), images[j][k].encode_png());
        seeds.push_back(images[j][k].seed);
      }
      queue_.succeed(jobs[j].id, seeds);
      metrics_.add_images(images[j].size());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (size_t j = 0; j < jobs.size(); ++j)
      if (!cancelled[j]) metrics_.job_seconds.observe(seconds);
  } catch (const std::exception& e) {
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (cancelled[j]) {
        queue_.mark_cancelled(jobs[j].id);
      } else {
        queue_.fail(jobs[j].id, e.what());
      }
    }
  }
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
