#include "service/job_queue.h"

#include <algorithm>

#include "core/error.h"
#include "service/redis_job_queue.h"
#include "service/sqlite_job_queue.h"

namespace sdcpu::service {

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::unique_ptr<JobQueue> open_job_queue(const std::string& spec, const QueueOptions& options) {
  if (spec == "sqlite") return std::make_unique<SqliteJobQueue>(options.data_dir);
  if (spec.rfind("redis://", 0) == 0) {
    RedisJobQueue::Options redis = RedisJobQueue::parse_url(spec);
    redis.keep_results = options.keep_results;
    redis.consumer = options.consumer;
    // A heartbeat a twelfth of the timeout: a worker must miss many in a row before its job is taken over.
    redis.visibility_timeout = options.visibility_timeout;
    redis.heartbeat = std::max(std::chrono::milliseconds(50), options.visibility_timeout / 12);
    return std::make_unique<RedisJobQueue>(redis);
  }
  throw InvalidArgument("--queue must be sqlite or redis://HOST:PORT/DB, got \"" + spec + "\"");
}

}  // namespace sdcpu::service
