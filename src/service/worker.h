// The compute worker: takes jobs from the queue one at a time (or, with --max-batch, a job and the queued jobs that
// can share its UNet batches) and runs them with all cores on a model that was loaded once and stays warm. HTTP
// threads never compute.
#pragma once
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "sdcpu/sdcpu.h"
#include "service/job_queue.h"
#include "service/metrics.h"

namespace sdcpu::service {

// A model the service was started with (--model NAME=PATH).
struct ServedModel {
  std::string name;
  std::string path;
  std::unique_ptr<Pipeline> pipeline;  // null on a front end without a worker
};

class Worker {
 public:
  // `models` (the first is the default) and `metrics` must outlive the worker. Up to `max_batch` images (1..64)
  // share one UNet call: a job's own images, and those of queued jobs that can share its batches.
  Worker(JobQueue& queue, std::vector<ServedModel>& models, ServiceMetrics& metrics, int max_batch = 1);

  // Claims one job (waiting up to `wait` for one), with max_batch > 1 also the queued jobs that can join its
  // batches, and runs them to their end: each job's images stored, then succeeded; or failed with the error; or
  // cancelled when asked at a denoising step (the others of its batch go on). Returns false when no job came.
  bool run_one(std::chrono::milliseconds wait);

  // run_one() until `stop` is set (checked at least every 200 ms while idle). A queue that fails (its backend
  // unreachable) is retried after a second; the job it held stays with the queue, which gives it out again.
  void run(const std::atomic<bool>& stop);

 private:
  // The served model a request names (null when this worker does not serve it).
  Pipeline* pipeline_for(const JobRequest& request);
  void run_batch(Pipeline& pipeline, const std::vector<Job>& jobs);

  JobQueue& queue_;
  std::vector<ServedModel>& models_;
  ServiceMetrics& metrics_;
  int max_batch_;
};

}  // namespace sdcpu::service
