// The shared job queue for many machines: jobs on a Redis Stream with one consumer group, so that any number of
// workers (`sdcpu worker --queue redis://...`) and API nodes (`sdcpu serve --no-worker`) share one queue. Job
// records and result images live in Redis too, and expire --keep-results after they finish.
//
// How a job is never lost: submit() stores the job's record and appends its id to the stream in one Lua script (atomic
// with the idempotency check). A worker reads it with XREADGROUP, which leaves the entry pending for that worker; it
// acknowledges (XACK) only after the images are stored and the job is marked succeeded (or failed, or cancelled). While
// it runs, a heartbeat thread re-claims the worker's own pending entries (XCLAIM to itself) so they never look idle. A
// worker that dies stops heartbeating; once its entry has been idle longer than the visibility timeout, another
// worker's claim() takes it over (XAUTOCLAIM) and runs the job again with its stored seed. Marking a job finished
// checks that this worker still holds it, so a job that succeeded once is never run to success twice.
//
// Losing Redis: calls throw IoError (the HTTP front end answers 503), the connection is re-established on the
// next call, and nothing Redis kept is lost (run Redis with appendonly yes and appendfsync always for the
// promise to hold across a Redis crash).
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "service/job_queue.h"

namespace sdcpu::service {

class RedisJobQueue final : public JobQueue {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 6379;
    int db = 0;
    std::string password;  // AUTH when not empty
    std::string consumer;  // this process's name in the consumer group; "" = hostname-pid
    std::chrono::milliseconds visibility_timeout{60000};  // pending this long without a heartbeat: claimable
    std::chrono::milliseconds heartbeat{5000};
    std::chrono::milliseconds keep_results{24 * 3600 * 1000};  // finished jobs and images expire after this
    std::string prefix = "sdcpu:";                             // every key starts with it
  };

  // redis://[:PASSWORD@]HOST[:PORT][/DB] -> Options (the rest default). Throws InvalidArgument for another form.
  static Options parse_url(const std::string& url);

  // Connects (IoError when Redis cannot be reached) and creates the stream's consumer group if missing.
  explicit RedisJobQueue(Options options);
  ~RedisJobQueue() override;

  Submitted submit(const JobRequest& request, const std::string& owner, const std::string& idempotency_key) override;
  std::optional<Job> get(const std::string& id) override;
  std::vector<Job> list(std::optional<JobStatus> status, int limit, const std::string& after_id) override;
  int64_t queue_position(const std::string& id) override;
  std::optional<Job> cancel(const std::string& id) override;
  std::map<JobStatus, int64_t> counts() override;
  int64_t queued_count(const std::string& owner) override;
  bool healthy() override;

  std::optional<Job> claim(std::chrono::milliseconds wait) override;
  std::vector<Job> claim_batch_mates(const Job& first, int max_images) override;
  void set_progress(const std::string& id, const JobProgress& progress) override;
  bool cancel_requested(const std::string& id) override;
  void store_image(const std::string& id, int k, const std::vector<uint8_t>& png) override;
  void succeed(const std::string& id, const std::vector<uint64_t>& seeds) override;
  void fail(const std::string& id, const std::string& error) override;
  void mark_cancelled(const std::string& id) override;

  std::optional<std::vector<uint8_t>> load_image(const std::string& id, int k) override;
  int64_t expire(std::chrono::system_clock::time_point cutoff) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sdcpu::service
