// The service's durable job queue: one interface, two backends. SqliteJobQueue (sqlite_job_queue.h) keeps jobs in
// a SQLite file and result images as files beside it, for one machine; RedisJobQueue (redis_job_queue.h) for many. The
// HTTP front end and the worker loop use only this interface.
//
// The promise every backend keeps: a job that submit() returned is stored durably, so it is never lost; a job
// that was running when its worker died runs again (same seed, same image); a job is marked succeeded only
// after its images are stored.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "service/job.h"

namespace sdcpu::service {

class JobQueue {
 public:
  virtual ~JobQueue() = default;

  // ---- the front end ----

  struct Submitted {
    Job job;
    bool created = true;         // false: an earlier job with the same idempotency key was returned
    int64_t queue_position = 0;  // jobs ahead of it (0: next); -1 once it is no longer queued
  };
  // Stores a new queued job durably (the request's seed must already be resolved). With an idempotency key, a
  // job the same owner submitted with the same key is returned instead of a new one.
  virtual Submitted submit(const JobRequest& request, const std::string& owner, const std::string& idempotency_key) = 0;

  virtual std::optional<Job> get(const std::string& id) = 0;

  // Jobs in submission order, optionally of one status, starting after the job `after_id` ("" = from the
  // first), at most `limit`.
  virtual std::vector<Job> list(std::optional<JobStatus> status, int limit, const std::string& after_id) = 0;

  // Jobs ahead of `id` in the queue (0: next), or -1 when it is not queued.
  virtual int64_t queue_position(const std::string& id) = 0;

  // A queued job is cancelled at once; a running one is asked to stop (its worker sees cancel_requested() at the
  // next denoising step). Returns the job as it is now, or nullopt when there is no such job.
  virtual std::optional<Job> cancel(const std::string& id) = 0;

  // Jobs by status, for /metrics and the queue limit.
  virtual std::map<JobStatus, int64_t> counts() = 0;
  // Queued jobs of one owner (the per-key cap).
  virtual int64_t queued_count(const std::string& owner) = 0;

  // Whether the backend is reachable (for /readyz).
  virtual bool healthy() = 0;

  // ---- the worker ----

  // The oldest queued job, now marked running (attempts + 1), or nullopt when none arrived within `wait`.
  virtual std::optional<Job> claim(std::chrono::milliseconds wait) = 0;
  // After claim() gave `first`: queued jobs that can share its UNet batches (equal batch_key()), now marked running,
  // with at most `max_images` images in all, first's included. The SQLite queue looks among the next 32 queued
  // jobs in order (a matching job may so start before an earlier one that does not match); Redis takes only the
  // jobs right behind in its stream. Empty when none fits.
  virtual std::vector<Job> claim_batch_mates(const Job& first, int max_images) = 0;
  // Progress of a running job (kept for readers; it need not survive a crash).
  virtual void set_progress(const std::string& id, const JobProgress& progress) = 0;
  virtual bool cancel_requested(const std::string& id) = 0;
  // Stores image k of a job (a PNG) durably before returning.
  virtual void store_image(const std::string& id, int k, const std::vector<uint8_t>& png) = 0;
  // Marks a running job succeeded with the seed of each of its images (already stored).
  virtual void succeed(const std::string& id, const std::vector<uint64_t>& seeds) = 0;
  virtual void fail(const std::string& id, const std::string& error) = 0;
  virtual void mark_cancelled(const std::string& id) = 0;

  // ---- results ----

  // Image k of a succeeded job, or nullopt. Throws InvalidArgument for an invalid id or k < 0, before any I/O.
  virtual std::optional<std::vector<uint8_t>> load_image(const std::string& id, int k) = 0;

  // Deletes finished jobs that finished before `cutoff`, with their images. Returns how many.
  virtual int64_t expire(std::chrono::system_clock::time_point cutoff) = 0;
};

int64_t now_ms();  // Unix time in milliseconds

// How open_job_queue() opens a queue.
struct QueueOptions {
  std::string data_dir = "sdcpu-data";                  // sqlite: where the file and the images are
  std::chrono::milliseconds keep_results{86400000};     // redis: finished jobs and images expire after this
  std::string consumer;                                 // redis: this process's name among the workers ("" = host-pid)
  std::chrono::milliseconds visibility_timeout{60000};  // redis: a job whose worker is silent this long is taken over
};

// The queue a --queue option names: "sqlite" (the embedded queue) or "redis://[:PASSWORD@]HOST:PORT/DB" (shared).
// Throws InvalidArgument for another form, IoError when it cannot be opened.
std::unique_ptr<JobQueue> open_job_queue(const std::string& spec, const QueueOptions& options);

}  // namespace sdcpu::service
