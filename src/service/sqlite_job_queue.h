// The embedded job queue: jobs in one SQLite file (WAL, synchronous=FULL: every state change is on disk before
// the call returns), result images as files beside it (written to a temporary file, fsynced, renamed, the folder
// fsynced), for one machine. Opening the queue puts every job that was running back in the queue: its process
// died (kill -9, power loss) before it finished, and it runs again with the same seed.
#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "service/job_queue.h"

struct sqlite3;

namespace sdcpu::service {

class SqliteJobQueue final : public JobQueue {
 public:
  // Opens (creating when missing) DIR/jobs.sqlite3 and DIR/results/. Throws IoError when DIR cannot be used.
  explicit SqliteJobQueue(const std::string& dir);
  ~SqliteJobQueue() override;

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
