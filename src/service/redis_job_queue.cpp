// The shared job queue on Redis (hiredis, synchronous API). See redis_job_queue.h for how a job is never lost.
//
// Keys, all under Options::prefix (P):
//   P job:<id>               HASH   the job: request (job_request_to_json), owner, status, seq, created_ms,
//                                   started_ms, finished_ms, attempts, cancel_requested (0/1), seeds (JSON array),
//                                   error, progress (JSON, while running), holder (the consumer running it), entry
//                                   (its stream entry id), idem (its idempotency key's name, or "")
//   P images:<id>            HASH   image k (a PNG) of the job under field "k": one key to expire or delete
//   P seq                    STRING submission counter: a job's seq orders every index below
//   P jobs                   ZSET   every job id by seq (list)
//   P status:<status>        ZSET   the ids of one status by seq (counts, list by status; queue_position is the
//                                   ZRANK in status:queued)
//   P owner-queued:<owner>   ZSET   the queued ids of one owner (queued_count)
//   P idem:<n>:<owner>:<key> STRING the id submitted with that idempotency key (n = the owner's length, so that
//                                   no two (owner, key) pairs share a name)
//   P stream                 STREAM one entry {id: <job id>} per queued job, read by the consumer group "workers"
// A finished job's hash, images and idempotency key expire keep_results after it finished (PEXPIRE); expire()
// takes the ids whose hash is gone out of the indexes. A finished job's stream entry is acknowledged and deleted,
// so the stream holds only unfinished jobs.
//
// Every state change is one Lua script (EVALSHA, EVAL again after a NOSCRIPT), so it is atomic and conditional:
// a worker finishes a running job only while the hash names it the holder, so a worker whose job was taken over
// (its entry sat idle past the visibility timeout) changes nothing, and a job succeeds at most once. The scripts
// build their key names from the prefix (ARGV[1]): this layout is for one Redis server, not Redis Cluster.
//
// Connections: the object is shared by the HTTP threads and a worker, so it keeps three, each with its own mutex:
// one for every ordinary call, one for claim()'s blocking XREADGROUP (so that the HTTP calls never wait behind it),
// and one for the heartbeat thread. A connection that fails is dropped and made again at its next use.
#include "service/redis_job_queue.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>

#include "core/error.h"

namespace sdcpu::service {
namespace {

using std::chrono::milliseconds;
using Args = std::vector<std::string_view>;  // one command's arguments; views of strings the caller keeps alive

constexpr const char* kGroup = "workers";
constexpr milliseconds kConnectTimeout{2000};
constexpr milliseconds kCommandTimeout{10000};  // a Redis that answers nothing for this long is lost
constexpr int kExpireBatch = 1000;              // ids expire() looks at per finished status and call

struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;

std::string text(const redisReply* r) {
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return "";
}

bool is_error(const Reply& r, std::string_view code = "") {
  return r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).substr(0, code.size()) == code;
}

timeval to_timeval(milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>(ms.count() % 1000 * 1000)};
}

// One connection to Redis, guarded by its own mutex. Connects at its first use and again after a failure.
class Connection {
 public:
  explicit Connection(const RedisJobQueue::Options& options) : options_(options) {
    name_ = "redis at " + (options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host) +
            ":" + std::to_string(options.port);
  }
  ~Connection() { drop(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& name() const { return name_; }

  // How long one command may take (longer than a blocking read's BLOCK). Kept across reconnections.
  void set_timeout(milliseconds timeout) {
    std::lock_guard lock(mutex_);
    if (timeout == timeout_) return;
    timeout_ = timeout;
    if (context_) redisSetTimeout(context_, to_timeval(timeout_));
  }

  // Runs one command; its reply may be an error reply. Throws IoError when Redis cannot be reached.
  Reply run(const Args& args) {
    std::lock_guard lock(mutex_);
    return run_locked(args);
  }

  // Sends the commands in one round trip and returns their replies, in order.
  std::vector<Reply> pipeline(const std::vector<Args>& commands) {
    std::lock_guard lock(mutex_);
    connect();
    for (const Args& args : commands) {
      auto [argv, lengths] = split(args);
      if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK)
        fail();
    }
    std::vector<Reply> replies;
    for (size_t i = 0; i < commands.size(); ++i) {
      void* reply = nullptr;
      if (redisGetReply(context_, &reply) != REDIS_OK || !reply) fail();
      replies.emplace_back(static_cast<redisReply*>(reply));
    }
    return replies;
  }

  [[noreturn]] void error(const std::string& what) const { throw IoError(name_ + ": " + what); }

 private:
  static std::pair<std::vector<const char*>, std::vector<size_t>> split(const Args& args) {
    std::pair<std::vector<const char*>, std::vector<size_t>> out;
    for (std::string_view a : args) {
      out.first.push_back(a.data());
      out.second.push_back(a.size());
    }
    return out;
  }

  Reply run_locked(const Args& args) {
    connect();
    auto [argv, lengths] = split(args);
    void* reply = redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data());
    if (!reply) fail();
    return Reply(static_cast<redisReply*>(reply));
  }

  void connect() {
    if (context_) {
      // An idle connection has nothing to read. One that has (end of file: Redis restarted, or closed it as idle)
      // is made again before the command is sent, rather than failing the command.
      pollfd p{context_->fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&p, 1, 0) == 0) return;
      drop();
    }
    context_ = redisConnectWithTimeout(options_.host.c_str(), options_.port, to_timeval(kConnectTimeout));
    if (!context_) error("cannot allocate a connection");
    if (context_->err) fail();
    redisSetTimeout(context_, to_timeval(timeout_));
    redisEnableKeepAlive(context_);
    if (!options_.password.empty()) handshake({"AUTH", options_.password}, "AUTH");
    if (options_.db != 0) handshake({"SELECT", std::to_string(options_.db)}, "SELECT");
  }

  void handshake(const std::vector<std::string>& command, const char* what) {
    const Reply reply = run_locked(Args(command.begin(), command.end()));
    if (is_error(reply)) {
      drop();
      error(std::string(what) + ": " + text(reply.get()));
    }
  }

  // The connection failed: drops it (the next call connects again) and throws.
  [[noreturn]] void fail() {
    std::string why = context_ ? context_->errstr : "no connection";
    if (context_ && context_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
      why = "no answer within " + std::to_string(timeout_.count()) + " ms";
    drop();
    error(why);
  }

  void drop() {
    if (context_) redisFree(context_);
    context_ = nullptr;
  }

  const RedisJobQueue::Options& options_;
  std::string name_;
  std::mutex mutex_;
  redisContext* context_ = nullptr;
  milliseconds timeout_ = kCommandTimeout;
};

// ---- the scripts ----
// ARGV[1] is always the prefix. The prelude is prepended to each script.

constexpr const char* kPrelude = R"(
local p = ARGV[1]
local stream = p .. 'stream'
local function job_key(id) return p .. 'job:' .. id end
-- A stream entry that is done with: out of the pending list, out of the stream.
local function drop(entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, 'workers', entry)
    redis.call('XDEL', stream, entry)
  end
end
-- Moves a job between the status indexes.
local function move(id, seq, owner, from, to)
  redis.call('ZREM', p .. 'status:' .. from, id)
  redis.call('ZADD', p .. 'status:' .. to, seq, id)
  if from == 'queued' then redis.call('ZREM', p .. 'owner-queued:' .. owner, id) end
end
-- Finishes a queued or running job as `to` at `now` with `field` = `value`; it expires `keep` ms later.
local function finish(id, to, now, keep, field, value)
  local key = job_key(id)
  local j = redis.call('HMGET', key, 'status', 'seq', 'owner', 'entry', 'idem')
  move(id, j[2], j[3], j[1], to)
  redis.call('HSET', key, 'status', to, 'finished_ms', now, field, value)
  redis.call('HDEL', key, 'progress')
  drop(j[4])
  redis.call('PEXPIRE', key, keep)
  redis.call('PEXPIRE', p .. 'images:' .. id, keep)
  if j[5] and j[5] ~= '' then redis.call('PEXPIRE', j[5], keep) end
end
)";

// ARGV: prefix, new id, request, owner, idempotency key name ("" = none), now, batch key, images.
// Returns {created (0/1), the job's id (the earlier one's when not created), its HGETALL, its queue position}.
constexpr const char* kSubmit = R"(
local id, owner, idem = ARGV[2], ARGV[4], ARGV[5]
local created = 0
local earlier = idem ~= '' and redis.call('GET', idem)
if earlier and redis.call('EXISTS', job_key(earlier)) == 1 then
  id = earlier
else
  created = 1
  local seq = redis.call('INCR', p .. 'seq')
  local entry = redis.call('XADD', stream, '*', 'id', id)
  redis.call('HSET', job_key(id), 'request', ARGV[3], 'owner', owner, 'status', 'queued', 'seq', seq,
             'created_ms', ARGV[6], 'started_ms', 0, 'finished_ms', 0, 'attempts', 0, 'cancel_requested', 0,
             'seeds', '[]', 'error', '', 'holder', '', 'entry', entry, 'idem', idem, 'batch', ARGV[7],
             'images', ARGV[8])
  redis.call('ZADD', p .. 'jobs', seq, id)
  redis.call('ZADD', p .. 'status:queued', seq, id)
  redis.call('ZADD', p .. 'owner-queued:' .. owner, seq, id)
  if idem ~= '' then redis.call('SET', idem, id) end
end
return {created, id, redis.call('HGETALL', job_key(id)), redis.call('ZRANK', p .. 'status:queued', id) or -1}
)";

// A stream entry this consumer now has (read new, or taken over from a consumer that stopped heartbeating):
// starts its job, or drops the entry when there is nothing to run. ARGV: prefix, id, entry, consumer, now, keep,
// 'new' or 'idle'. Returns the job's HGETALL once it runs here, or 0.
constexpr const char* kStart = R"(
local id, entry = ARGV[2], ARGV[3]
local key = job_key(id)
local j = redis.call('HMGET', key, 'status', 'seq', 'owner', 'cancel_requested')
if j[1] == 'running' and ARGV[7] == 'new' then
  -- Delivered again by a consumer group made anew (the old one was lost): its worker may well be alive, and its
  -- heartbeat claims the entry back. The entry stays pending here: it is taken over only once it is idle.
  return 0
end
if j[1] == 'running' and j[4] == '1' then
  -- Its worker died after its cancellation was asked for: cancelled, not run again.
  finish(id, 'cancelled', ARGV[5], ARGV[6], 'error', '')
  drop(entry)
  return 0
end
if j[1] == 'queued' then
  move(id, j[2], j[3], 'queued', 'running')
elseif j[1] ~= 'running' then
  drop(entry)  -- finished (cancelled while queued, ...) or expired
  return 0
end
redis.call('HSET', key, 'status', 'running', 'holder', ARGV[4], 'started_ms', ARGV[5], 'entry', entry)
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HDEL', key, 'progress')
return redis.call('HGETALL', key)
)";

// The stream's next undelivered entry, read into this consumer's pending list when its job is queued, has the
// batch key ARGV[3] and at most ARGV[4] images; a worker then starts it with kStart. Atomic, so the entry read
// is the one looked at. ARGV: prefix, consumer, batch key, images left. Returns {job id, entry id}, or 0.
constexpr const char* kNextBatchMate = R"(
local last
for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, delivered
  for k = 1, #group, 2 do
    if group[k] == 'name' then name = group[k + 1] elseif group[k] == 'last-delivered-id' then delivered = group[k + 1] end
  end
  if name == 'workers' then last = delivered end
end
if not last then return 0 end
local next = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)[1]
if not next then return 0 end
local id
for k = 1, #next[2], 2 do if next[2][k] == 'id' then id = next[2][k + 1] end end
if not id then return 0 end
local j = redis.call('HMGET', job_key(id), 'status', 'batch', 'images')
if j[1] ~= 'queued' or j[2] ~= ARGV[3] or (tonumber(j[3]) or 1e9) > tonumber(ARGV[4]) then return 0 end
redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', 1, 'STREAMS', stream, '>')
return {id, next[1]}
)";

// succeed, fail, mark_cancelled. ARGV: prefix, id, consumer, now, keep, new status, field, value.
// A running job only by its holder; a queued one may fail or be cancelled. Returns 1 when the job changed.
constexpr const char* kFinish = R"(
local id, to = ARGV[2], ARGV[6]
local j = redis.call('HMGET', job_key(id), 'status', 'holder')
if (j[1] == 'running' and j[2] == ARGV[3]) or (j[1] == 'queued' and to ~= 'succeeded') then
  finish(id, to, ARGV[4], ARGV[5], ARGV[7], ARGV[8])
  return 1
end
return 0
)";

// ARGV: prefix, id, now, keep. Returns the job's HGETALL (empty when there is no such job).
constexpr const char* kCancel = R"(
local key = job_key(ARGV[2])
local status = redis.call('HGET', key, 'status')
if status == 'queued' then
  finish(ARGV[2], 'cancelled', ARGV[3], ARGV[4], 'error', '')
elseif status == 'running' then
  redis.call('HSET', key, 'cancel_requested', 1)
end
return redis.call('HGETALL', key)
)";

// Sets a field of a running job's hash (progress), or of its images hash (an image), while `consumer` holds it.
// ARGV: prefix, id, consumer, "job" or "images", field, value. Returns 1 when stored.
constexpr const char* kStore = R"(
local key = job_key(ARGV[2])
local j = redis.call('HMGET', key, 'status', 'holder')
if j[1] ~= 'running' or j[2] ~= ARGV[3] then return 0 end
if ARGV[4] == 'images' then key = p .. 'images:' .. ARGV[2] end
redis.call('HSET', key, ARGV[5], ARGV[6])
return 1
)";

// ARGV: prefix, consumer, then (id, entry) pairs: the jobs this process runs. Resets the idle time of the entries
// of those it still holds (XCLAIM to itself), never taking back one another worker took over.
constexpr const char* kHeartbeat = R"(
for i = 3, #ARGV, 2 do
  local j = redis.call('HMGET', job_key(ARGV[i]), 'status', 'holder')
  if j[1] == 'running' and j[2] == ARGV[2] then
    redis.call('XCLAIM', stream, 'workers', ARGV[2], 0, ARGV[i + 1], 'JUSTID')
  end
end
return 0
)";

// ARGV: prefix, cutoff (Unix ms), batch. Looks at the oldest `batch` ids of each finished status: takes the ids
// whose hash expired out of the indexes, and deletes the jobs that finished before the cutoff. Returns how many.
constexpr const char* kExpire = R"(
local cutoff, removed = tonumber(ARGV[2]), 0
for _, status in ipairs({'succeeded', 'failed', 'cancelled'}) do
  local index = p .. 'status:' .. status
  for _, id in ipairs(redis.call('ZRANGE', index, 0, tonumber(ARGV[3]) - 1)) do
    local key = job_key(id)
    local j = redis.call('HMGET', key, 'status', 'finished_ms', 'idem')
    local gone = not j[1]
    if j[1] == status and (tonumber(j[2]) or 0) < cutoff then
      redis.call('DEL', key, p .. 'images:' .. id)
      if j[3] and j[3] ~= '' and redis.call('GET', j[3]) == id then redis.call('DEL', j[3]) end
      gone = true
    end
    if gone then
      redis.call('ZREM', index, id)
      redis.call('ZREM', p .. 'jobs', id)
      removed = removed + 1
    end
  end
end
return removed
)";

struct Script {
  std::string body;
  std::string sha;  // from SCRIPT LOAD
};

// ---- reading replies ----

int64_t to_int(std::string_view s, const std::string& what) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) throw IoError("redis job queue: " + what + " is not a number");
  return value;
}

// A HGETALL reply of a job's hash -> the Job, or nullopt when the hash does not exist.
std::optional<Job> parse_job(const std::string& id, const redisReply* hash) {
  if (hash->type != REDIS_REPLY_ARRAY || hash->elements == 0) return std::nullopt;
  std::map<std::string, std::string, std::less<>> f;
  for (size_t i = 0; i + 1 < hash->elements; i += 2) f[text(hash->element[i])] = text(hash->element[i + 1]);
  const std::string what = "job " + id;
  Job job;
  job.id = id;
  if (auto s = parse_job_status(f["status"]))
    job.status = *s;
  else
    throw IoError("redis job queue: " + what + " has an unknown status '" + f["status"] + "'");
  try {
    job.request = parse_job_request(f["request"]);
    job.seeds = nlohmann::json::parse(f["seeds"]).get<std::vector<uint64_t>>();
    if (job.status == JobStatus::running && !f["progress"].empty()) {
      const auto p = nlohmann::json::parse(f["progress"]);
      job.progress = {p.at("image").get<int>(), p.at("images").get<int>(), p.at("step").get<int>(),
                      p.at("steps").get<int>()};
    }
  } catch (const std::exception& e) {
    throw IoError("redis job queue: " + what + " is unreadable: " + e.what());
  }
  job.owner = f["owner"];
  job.created_ms = to_int(f["created_ms"], what + "'s created_ms");
  job.started_ms = to_int(f["started_ms"], what + "'s started_ms");
  job.finished_ms = to_int(f["finished_ms"], what + "'s finished_ms");
  job.attempts = static_cast<int>(to_int(f["attempts"], what + "'s attempts"));
  job.cancel_requested = f["cancel_requested"] == "1";
  job.error = f["error"];
  return job;
}

// The value of `field` in an XREADGROUP / XAUTOCLAIM entry ([entry id, [field, value, ...]]), or "".
std::string entry_field(const redisReply* entry, std::string_view field) {
  if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 || entry->element[1]->type != REDIS_REPLY_ARRAY)
    return "";
  const redisReply* fields = entry->element[1];
  for (size_t i = 0; i + 1 < fields->elements; i += 2)
    if (text(fields->element[i]) == field) return text(fields->element[i + 1]);
  return "";
}

void check_image_key(const std::string& id, int k) {
  if (!is_valid_job_id(id)) throw InvalidArgument("invalid job id");
  if (k < 0) throw InvalidArgument("invalid image index " + std::to_string(k));
}

std::string default_consumer() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof host, "%s", "host");
  return std::string(host) + "-" + std::to_string(::getpid());
}

}  // namespace

struct RedisJobQueue::Impl {
  explicit Impl(Options o) : options(std::move(o)), main(options), blocking(options), beat(options) {}

  Options options;
  std::string consumer;
  Connection main;      // every call but the two below
  Connection blocking;  // claim()'s XREADGROUP ... BLOCK
  Connection beat;      // the heartbeat thread
  Script submit, start, next_batch_mate, finish, cancel, store, heartbeat, expire;

  std::mutex held_mutex;
  std::map<std::string, std::string> held;  // job id -> stream entry id: the jobs this object's worker runs

  std::mutex stop_mutex;
  std::condition_variable stop_signal;
  bool stopping = false;
  std::thread heartbeat_thread;

  std::string key(std::string_view name) const { return options.prefix + std::string(name); }
  std::string job_key(const std::string& id) const { return key("job:") + id; }
  std::string status_key(JobStatus s) const { return key("status:") + job_status_name(s); }

  // Replies with an error are thrown as IoError (after one retry with EVAL when the script cache was emptied).
  Reply eval(Connection& c, const Script& script, const Args& args) {
    Args command{"EVALSHA", script.sha, "0", options.prefix};
    command.insert(command.end(), args.begin(), args.end());
    Reply reply = c.run(command);
    if (is_error(reply, "NOSCRIPT")) {
      command[0] = "EVAL";
      command[1] = script.body;
      reply = c.run(command);
    }
    if (is_error(reply)) c.error(text(reply.get()));
    return reply;
  }

  Script load(const char* body) {
    Script s{std::string(kPrelude) + body, ""};
    const Reply reply = main.run({"SCRIPT", "LOAD", s.body});
    if (reply->type != REDIS_REPLY_STRING) main.error("SCRIPT LOAD: " + text(reply.get()));
    s.sha = text(reply.get());
    return s;
  }

  // The stream and its consumer group, from the stream's first entry (so that a group made again after it was
  // lost still delivers every unfinished job; finished jobs' entries are deleted).
  void ensure_group() {
    const Reply reply = main.run({"XGROUP", "CREATE", key("stream"), kGroup, "0", "MKSTREAM"});
    if (is_error(reply) && !is_error(reply, "BUSYGROUP")) main.error("XGROUP CREATE: " + text(reply.get()));
  }

  Reply checked(Connection& c, const Args& args) {
    Reply reply = c.run(args);
    if (is_error(reply)) c.error(std::string(args[0]) + ": " + text(reply.get()));
    return reply;
  }

  // Runs the start script for an entry this consumer has. The job when it is now this worker's to run.
  std::optional<Job> start_entry(const std::string& id, const std::string& entry, bool idle) {
    if (!is_valid_job_id(id)) {  // not an entry of ours: acknowledge it so that it stops coming back
      checked(main, {"XACK", key("stream"), kGroup, entry});
      return std::nullopt;
    }
    const std::string now = std::to_string(now_ms()), keep = std::to_string(options.keep_results.count());
    const Reply reply = eval(main, start, {id, entry, consumer, now, keep, idle ? "idle" : "new"});
    auto job = parse_job(id, reply.get());
    if (job) {
      std::lock_guard lock(held_mutex);
      held[id] = entry;
    }
    return job;
  }

  // Takes over the oldest entry that sat idle past the visibility timeout: its worker stopped heartbeating.
  std::optional<Job> reclaim() {
    const std::string stream = key("stream"), min_idle = std::to_string(options.visibility_timeout.count());
    std::string cursor = "0-0";
    // COUNT 1: one entry at a time, since every entry claimed is this worker's to run or drop. Each call scans
    // at most 10 pending entries; the pending list is about as long as the number of running jobs.
    for (int i = 0; i < 100; ++i) {
      const Reply reply = main.run({"XAUTOCLAIM", stream, kGroup, consumer, min_idle, cursor, "COUNT", "1"});
      if (is_error(reply, "NOGROUP")) {
        ensure_group();
        return std::nullopt;
      }
      if (is_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2)
        main.error("XAUTOCLAIM: " + text(reply.get()));
      cursor = text(reply->element[0]);
      const redisReply* entries = reply->element[1];
      for (size_t e = 0; e < entries->elements; ++e) {
        const redisReply* entry = entries->element[e];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 1) continue;
        const std::string entry_id = text(entry->element[0]), id = entry_field(entry, "id");
        {
          std::lock_guard lock(held_mutex);
          if (held.count(id)) continue;  // running here already; the heartbeat keeps it
        }
        if (auto job = start_entry(id, entry_id, true)) return job;
      }
      if (cursor == "0-0") break;
    }
    return std::nullopt;
  }

  // The next new entry, waiting up to `block` (0: not at all): {job id, entry id}.
  std::optional<std::pair<std::string, std::string>> read_new(milliseconds block) {
    const std::string block_ms = std::to_string(block.count()), stream = key("stream");
    Args args{"XREADGROUP", "GROUP", kGroup, consumer, "COUNT", "1"};
    if (block.count() > 0) args.insert(args.end(), {"BLOCK", block_ms});
    args.insert(args.end(), {"STREAMS", stream, ">"});
    blocking.set_timeout(block + kCommandTimeout);
    const Reply reply = blocking.run(args);
    if (is_error(reply, "NOGROUP")) {
      ensure_group();
      return std::nullopt;
    }
    if (is_error(reply)) blocking.error("XREADGROUP: " + text(reply.get()));
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) return std::nullopt;  // nothing new in time
    const redisReply* s = reply->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements < 2 || s->element[1]->elements == 0) return std::nullopt;
    const redisReply* entry = s->element[1]->element[0];
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 1) return std::nullopt;
    return std::pair{entry_field(entry, "id"), text(entry->element[0])};
  }

  // Runs the finish script for succeed / fail / mark_cancelled. The job is no longer this worker's either way:
  // when the script cannot run (Redis lost), its entry goes idle and another worker runs the job again.
  void finish_job(const std::string& id, JobStatus to, const char* field, const std::string& value) {
    {
      std::lock_guard lock(held_mutex);
      held.erase(id);
    }
    if (!is_valid_job_id(id)) return;
    const std::string now = std::to_string(now_ms()), keep = std::to_string(options.keep_results.count());
    eval(main, finish, {id, consumer, now, keep, job_status_name(to), field, value});
  }

  void heartbeat_loop() {
    std::unique_lock lock(stop_mutex);
    while (!stop_signal.wait_for(lock, options.heartbeat, [&] { return stopping; })) {
      lock.unlock();
      std::vector<std::string> jobs;
      {
        std::lock_guard held_lock(held_mutex);
        for (const auto& [id, entry] : held) jobs.insert(jobs.end(), {id, entry});
      }
      if (!jobs.empty()) {
        Args args{consumer};
        args.insert(args.end(), jobs.begin(), jobs.end());
        try {
          eval(beat, heartbeat, args);
        } catch (const std::exception&) {
          // Redis is unreachable: tried again at the next beat.
        }
      }
      lock.lock();
    }
  }
};

RedisJobQueue::Options RedisJobQueue::parse_url(const std::string& url) {
  const std::string form = "a Redis URL must read redis://[:PASSWORD@]HOST[:PORT][/DB]";
  constexpr std::string_view scheme = "redis://";
  if (url.compare(0, scheme.size(), scheme) != 0) throw InvalidArgument(form);
  std::string rest = url.substr(scheme.size());
  Options o;
  if (const size_t at = rest.rfind('@'); at != std::string::npos) {
    if (at == 0 || rest[0] != ':') throw InvalidArgument(form + " (the password follows a ':')");
    o.password = rest.substr(1, at - 1);
    rest = rest.substr(at + 1);
  }
  std::string db;
  if (const size_t slash = rest.find('/'); slash != std::string::npos) {
    db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  std::string port;
  if (!rest.empty() && rest[0] == '[') {  // [IPv6]
    const size_t close = rest.find(']');
    if (close == std::string::npos) throw InvalidArgument(form + " (an unclosed '[' in the host)");
    o.host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') throw InvalidArgument(form + " (text after the host)");
    if (!rest.empty()) port = rest.substr(1);
    if (rest == ":") port = "-";
  } else if (const size_t colon = rest.find(':'); colon != std::string::npos) {
    o.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (port.empty()) port = "-";
  } else {
    o.host = rest;
  }
  if (o.host.empty() || o.host.find_first_of(" \t\r\n/?#@") != std::string::npos)
    throw InvalidArgument(form + " (no valid host)");
  auto number = [&](const std::string& s, int64_t max, const char* what) {
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0 || v > max)
      throw InvalidArgument(form + " (" + what + " must be a number up to " + std::to_string(max) + ")");
    return static_cast<int>(v);
  };
  if (!port.empty()) o.port = number(port, 65535, "the port");
  if (o.port == 0) throw InvalidArgument(form + " (the port must not be 0)");
  if (!db.empty()) o.db = number(db, 1 << 30, "the database");
  return o;
}

RedisJobQueue::RedisJobQueue(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& m = *impl_;
  if (m.options.prefix.empty()) throw InvalidArgument("the Redis key prefix must not be empty");
  if (m.options.visibility_timeout.count() <= 0 || m.options.heartbeat.count() <= 0 ||
      m.options.heartbeat >= m.options.visibility_timeout || m.options.keep_results.count() <= 0)
    throw InvalidArgument("the Redis queue needs 0 < heartbeat < visibility timeout and keep_results > 0");
  m.consumer = m.options.consumer.empty() ? default_consumer() : m.options.consumer;
  // A write to a connection Redis closed raises SIGPIPE, which would end the process: a server ignores it and
  // sees the error instead. (Only when nobody installed a handler of their own.)
  struct sigaction current = {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) std::signal(SIGPIPE, SIG_IGN);

  m.ensure_group();  // connects: IoError when Redis cannot be reached
  m.submit = m.load(kSubmit);
  m.next_batch_mate = m.load(kNextBatchMate);
  m.start = m.load(kStart);
  m.finish = m.load(kFinish);
  m.cancel = m.load(kCancel);
  m.store = m.load(kStore);
  m.heartbeat = m.load(kHeartbeat);
  m.expire = m.load(kExpire);
  m.heartbeat_thread = std::thread([&m] { m.heartbeat_loop(); });
}

RedisJobQueue::~RedisJobQueue() {
  {
    std::lock_guard lock(impl_->stop_mutex);
    impl_->stopping = true;
  }
  impl_->stop_signal.notify_all();
  impl_->heartbeat_thread.join();
}

JobQueue::Submitted RedisJobQueue::submit(const JobRequest& request, const std::string& owner,
                                          const std::string& idempotency_key) {
  if (request.options.seed == kRandomSeed) throw InvalidArgument("submit: the request's seed must be resolved");
  Impl& m = *impl_;
  const std::string id = new_job_id(), body = job_request_to_json(request), now = std::to_string(now_ms());
  const std::string idem = idempotency_key.empty()
                               ? std::string()
                               : m.key("idem:") + std::to_string(owner.size()) + ":" + owner + ":" + idempotency_key;
  const Reply reply = m.eval(
      m.main, m.submit, {id, body, owner, idem, now, batch_key(request), std::to_string(request.options.batch_count)});
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) m.main.error("submit: an unexpected reply");
  Submitted result;
  result.created = reply->element[0]->integer == 1;
  auto job = parse_job(text(reply->element[1]), reply->element[2]);
  if (!job) m.main.error("submit: the job vanished");
  result.job = std::move(*job);
  result.queue_position = reply->element[3]->integer;
  return result;
}

std::optional<Job> RedisJobQueue::get(const std::string& id) {
  if (!is_valid_job_id(id)) return std::nullopt;
  const Reply reply = impl_->checked(impl_->main, {"HGETALL", impl_->job_key(id)});
  return parse_job(id, reply.get());
}

std::vector<Job> RedisJobQueue::list(std::optional<JobStatus> status, int limit, const std::string& after_id) {
  Impl& m = *impl_;
  limit = std::clamp(limit, 1, 1000);
  std::string after = "-inf";
  if (!after_id.empty()) {
    if (!is_valid_job_id(after_id)) return {};
    const Reply seq = m.checked(m.main, {"ZSCORE", m.key("jobs"), after_id});
    if (seq->type != REDIS_REPLY_STRING) return {};
    after = "(" + text(seq.get());
  }
  const std::string index = status ? m.status_key(*status) : m.key("jobs"), count = std::to_string(limit);
  std::vector<Job> jobs;
  // Ids whose hash expired stay in the indexes until expire(): skipped (a few more rounds at most).
  for (int round = 0; round < 10 && static_cast<int>(jobs.size()) < limit; ++round) {
    const Reply page = m.checked(m.main, {"ZRANGEBYSCORE", index, after, "+inf", "WITHSCORES", "LIMIT", "0", count});
    if (page->type != REDIS_REPLY_ARRAY || page->elements == 0) break;
    std::vector<std::string> ids, keys;
    for (size_t i = 0; i + 1 < page->elements; i += 2) {
      ids.push_back(text(page->element[i]));
      keys.push_back(m.job_key(ids.back()));
    }
    after = "(" + text(page->element[page->elements - 1]);
    std::vector<Args> commands;
    for (const std::string& k : keys) commands.push_back({"HGETALL", k});
    const auto hashes = m.main.pipeline(commands);
    for (size_t i = 0; i < ids.size() && static_cast<int>(jobs.size()) < limit; ++i) {
      if (is_error(hashes[i])) m.main.error("HGETALL: " + text(hashes[i].get()));
      auto job = parse_job(ids[i], hashes[i].get());
      if (job && (!status || job->status == *status)) jobs.push_back(std::move(*job));
    }
    if (static_cast<int>(ids.size()) < limit) break;  // the index has no more
  }
  return jobs;
}

int64_t RedisJobQueue::queue_position(const std::string& id) {
  if (!is_valid_job_id(id)) return -1;
  const Reply rank = impl_->checked(impl_->main, {"ZRANK", impl_->status_key(JobStatus::queued), id});
  return rank->type == REDIS_REPLY_INTEGER ? rank->integer : -1;
}

std::optional<Job> RedisJobQueue::cancel(const std::string& id) {
  if (!is_valid_job_id(id)) return std::nullopt;
  Impl& m = *impl_;
  const std::string now = std::to_string(now_ms()), keep = std::to_string(m.options.keep_results.count());
  const Reply reply = m.eval(m.main, m.cancel, {id, now, keep});
  return parse_job(id, reply.get());
}

std::map<JobStatus, int64_t> RedisJobQueue::counts() {
  constexpr JobStatus kAll[] = {JobStatus::queued, JobStatus::running, JobStatus::succeeded, JobStatus::failed,
                                JobStatus::cancelled};
  std::vector<std::string> keys;
  for (JobStatus s : kAll) keys.push_back(impl_->status_key(s));
  std::vector<Args> commands;
  for (const std::string& k : keys) commands.push_back({"ZCARD", k});
  const auto replies = impl_->main.pipeline(commands);
  std::map<JobStatus, int64_t> counts;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (is_error(replies[i])) impl_->main.error("ZCARD: " + text(replies[i].get()));
    counts[kAll[i]] = replies[i]->integer;
  }
  return counts;
}

int64_t RedisJobQueue::queued_count(const std::string& owner) {
  return impl_->checked(impl_->main, {"ZCARD", impl_->key("owner-queued:") + owner})->integer;
}

bool RedisJobQueue::healthy() {
  try {
    const Reply reply = impl_->main.run({"PING"});
    return reply->type == REDIS_REPLY_STATUS && text(reply.get()) == "PONG";
  } catch (...) {  // never throws: false is the answer
    return false;
  }
}

std::optional<Job> RedisJobQueue::claim(milliseconds wait) {
  Impl& m = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + std::max(wait, milliseconds(0));
  // A long wait blocks in slices, looking for abandoned entries between them: an entry going idle wakes no one.
  const milliseconds slice = std::clamp(m.options.visibility_timeout / 4, milliseconds(10), milliseconds(1000));
  for (;;) {
    if (auto job = m.reclaim()) return job;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (const auto entry = m.read_new(std::clamp(left, milliseconds(0), slice))) {
      if (auto job = m.start_entry(entry->first, entry->second, false)) return job;
      continue;  // a job cancelled while queued (its entry is dropped): read on
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

std::vector<Job> RedisJobQueue::claim_batch_mates(const Job& first, int max_images) {
  Impl& m = *impl_;
  const std::string key = batch_key(first.request);
  int left = max_images - first.request.options.batch_count;
  std::vector<Job> mates;
  try {
    while (left > 0) {
      const Reply reply = m.eval(m.main, m.next_batch_mate, {m.consumer, key, std::to_string(left)});
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) break;  // the next job does not fit
      auto job = m.start_entry(text(reply->element[0]), text(reply->element[1]), false);
      if (!job) continue;  // cancelled meanwhile: its entry is dropped
      left -= job->request.options.batch_count;
      mates.push_back(std::move(*job));
    }
  } catch (const IoError&) {
    // Redis is lost: the jobs started so far run; an entry read but not started goes idle and is taken over.
  }
  return mates;
}

void RedisJobQueue::set_progress(const std::string& id, const JobProgress& progress) {
  if (!is_valid_job_id(id)) return;
  const std::string json = nlohmann::json{
      {"image", progress.image},
      {"images", progress.images},
      {"step", progress.step},
      {"steps",
       progress.steps}}.dump();
  impl_->eval(impl_->main, impl_->store, {id, impl_->consumer, "job", "progress", json});
}

bool RedisJobQueue::cancel_requested(const std::string& id) {
  if (!is_valid_job_id(id)) return false;
  Impl& m = *impl_;
  const Reply r = m.checked(m.main, {"HMGET", m.job_key(id), "cancel_requested", "status", "holder"});
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) return false;
  if (text(r->element[0]) == "1") return true;
  // A job this worker runs that is no longer its own (another worker took it over, or it finished without it):
  // stopping is all there is left to do.
  std::lock_guard lock(m.held_mutex);
  return m.held.count(id) && (text(r->element[1]) != "running" || text(r->element[2]) != m.consumer);
}

void RedisJobQueue::store_image(const std::string& id, int k, const std::vector<uint8_t>& png) {
  check_image_key(id, k);
  const std::string field = std::to_string(k);
  const std::string_view bytes(reinterpret_cast<const char*>(png.data()), png.size());
  // Stored only while this worker holds the job: a worker whose job was taken over writes nothing.
  impl_->eval(impl_->main, impl_->store, {id, impl_->consumer, "images", field, bytes});
}

void RedisJobQueue::succeed(const std::string& id, const std::vector<uint64_t>& seeds) {
  impl_->finish_job(id, JobStatus::succeeded, "seeds", nlohmann::json(seeds).dump());
}

void RedisJobQueue::fail(const std::string& id, const std::string& error) {
  impl_->finish_job(id, JobStatus::failed, "error", error);
}

void RedisJobQueue::mark_cancelled(const std::string& id) { impl_->finish_job(id, JobStatus::cancelled, "error", ""); }

std::optional<std::vector<uint8_t>> RedisJobQueue::load_image(const std::string& id, int k) {
  check_image_key(id, k);
  Impl& m = *impl_;
  const std::string images = m.key("images:") + id, field = std::to_string(k);
  const auto replies = m.main.pipeline({{"HGET", m.job_key(id), "status"}, {"HGET", images, field}});
  for (const Reply& r : replies)
    if (is_error(r)) m.main.error("HGET: " + text(r.get()));
  if (text(replies[0].get()) != "succeeded" || replies[1]->type != REDIS_REPLY_STRING) return std::nullopt;
  const auto* p = reinterpret_cast<const uint8_t*>(replies[1]->str);
  return std::vector<uint8_t>(p, p + replies[1]->len);
}

int64_t RedisJobQueue::expire(std::chrono::system_clock::time_point cutoff) {
  const int64_t cutoff_ms = std::chrono::duration_cast<milliseconds>(cutoff.time_since_epoch()).count();
  const std::string c = std::to_string(cutoff_ms), batch = std::to_string(kExpireBatch);
  return impl_->eval(impl_->main, impl_->expire, {c, batch})->integer;
}

}  // namespace sdcpu::service
