// RedisJobQueue against a real redis-server that the tests start themselves (Debian's /usr/bin/redis-server, on a
// free loopback port, its files in a temporary folder): the job lifecycle as SqliteJobQueue's tests check it, and
// what only a shared queue has: workers that die and whose jobs others take over, stale workers that cannot
// finish a job, exactly-once success under churn, and losing Redis.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "core/error.h"
#include "service/redis_job_queue.h"
#include "test_support.h"

namespace sdcpu::service {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kRedisServer = "/usr/bin/redis-server";

// A port nothing listens on now: the kernel's pick for a socket bound to port 0, closed again.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;

// One command on a fresh connection, for the tests' own look at Redis; nullptr when Redis does not answer.
Reply redis_command(int port, const std::vector<std::string>& args) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, timeval{1, 0});
  if (!c) return nullptr;
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  void* reply = c->err ? nullptr : redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lengths.data());
  redisFree(c);
  return Reply(static_cast<redisReply*>(reply));
}

std::string reply_text(const Reply& r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

// A redis-server process of the test's own.
class RedisServer {
 public:
  ~RedisServer() { kill(); }

  // Starts it on `port` with its files in `dir` (appendonly with an fsync at every write when asked, for a test
  // that kills it); true once it answers PING (within 10 s).
  bool start(int port, const std::string& dir, bool appendonly) {
    kill();
    port_ = port;
    std::vector<std::string> args = {kRedisServer,
                                     "--port",
                                     std::to_string(port),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--dir",
                                     dir,
                                     "--logfile",
                                     dir + "/redis.log",
                                     "--appendonly",
                                     appendonly ? "yes" : "no",
                                     "--appendfsync",
                                     "always"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The server dies with this test process, however it ends (a crash, ctest's timeout), and holds none of its
    // output pipes, so that nothing it leaves can keep ctest waiting. Only async-signal-safe calls after fork().
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) {
      pid_ = -1;
      return false;
    }
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
      const int null = ::open("/dev/null", O_RDWR);
      if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(null, 2);
      }
      ::execv(kRedisServer, argv.data());
      ::_exit(127);
    }
    for (const auto give_up = Clock::now() + 10s; Clock::now() < give_up;) {
      if (reply_text(redis_command(port, {"PING"})) == "PONG") return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // it exited: the port was taken, or a bad option
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(20ms);
    }
    kill();
    return false;
  }

  // As a crash would: SIGKILL, nothing flushed beyond what appendfsync already wrote.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

bool have_redis_server() { return ::access(kRedisServer, X_OK) == 0; }

// A request that passes parse_job_request's checks, with a seed above INT64_MAX to check it survives storage.
JobRequest request(const std::string& prompt = "a red fox", uint64_t seed = 0xFFFFFFFFFFFFFF00ull) {
  JobRequest r;
  r.model = "sd15";
  r.options.prompt = prompt;
  r.options.negative_prompt = "blurry";
  r.options.width = 256;
  r.options.height = 384;
  r.options.steps = 7;
  r.options.cfg_scale = 5.5f;
  r.options.sampler = "euler";
  r.options.timestep_spacing = "trailing";
  r.options.batch_count = 2;
  r.options.clip_skip = 1;
  r.options.seed = seed;
  return r;
}

std::string submit(JobQueue& q, const std::string& prompt = "a red fox") {
  return q.submit(request(prompt), "", "").job.id;
}

// "p3" (not "p" + std::to_string(3), which GCC 12 at -O3 warns about falsely: -Wrestrict, its bug 105329).
std::string numbered(std::string prefix, int i) { return prefix += std::to_string(i); }

std::vector<uint8_t> png_bytes(int n, int salt = 0) {
  std::vector<uint8_t> bytes(n);
  for (int i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3 + salt);
  return bytes;
}

const std::string kNoSuchJob = "0123456789abcdef0123456789abcdef";

// One redis-server for the suite, emptied before each test.
class RedisJobQueueTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_redis_server()) return;
    char pattern[] = "/tmp/sdcpu-redis-XXXXXX";
    if (!::mkdtemp(pattern)) return;
    dir_ = new std::string(pattern);
    server_ = new RedisServer;
    for (int tries = 0; tries < 3 && !started_; ++tries) started_ = server_->start(free_port(), *dir_, false);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    if (dir_) fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    if (!have_redis_server()) GTEST_SKIP() << kRedisServer << " is missing (apt-get install redis-server)";
    ASSERT_TRUE(started_) << "redis-server did not start";
    ASSERT_EQ(reply_text(redis_command(port(), {"FLUSHALL"})), "OK");
  }

  static int port() { return server_->port(); }

  // A worker that keeps its jobs as long as the tests run, unless it dies.
  static RedisJobQueue::Options options(const std::string& consumer = "w1") {
    RedisJobQueue::Options o;
    o.port = port();
    o.consumer = consumer;
    o.prefix = "test:";
    return o;
  }
  // One whose job another takes over 300 ms after its heartbeat (every 100 ms) stopped.
  static RedisJobQueue::Options fast(const std::string& consumer) {
    RedisJobQueue::Options o = options(consumer);
    o.visibility_timeout = 300ms;
    o.heartbeat = 100ms;
    return o;
  }

  // Claims until a job comes or `limit` passes.
  static std::optional<Job> claim_within(JobQueue& q, milliseconds limit) {
    const auto give_up = Clock::now() + limit;
    std::optional<Job> job;
    while (!job && Clock::now() < give_up) job = q.claim(100ms);
    return job;
  }

  // The consumer whose pending list holds the job's stream entry ("" when none does).
  static std::string pending_consumer() {
    const Reply r = redis_command(port(), {"XPENDING", "test:stream", "workers", "-", "+", "10"});
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 1) return "";
    return std::string(r->element[0]->element[1]->str, r->element[0]->element[1]->len);
  }

  static int64_t pttl(const std::string& key) {
    const Reply r = redis_command(port(), {"PTTL", key});
    return r ? r->integer : -3;
  }

  static inline RedisServer* server_ = nullptr;
  static inline std::string* dir_ = nullptr;
  static inline bool started_ = false;
};

TEST(RedisJobQueueUrl, ParsesTheRedisUrlForm) {
  auto o = RedisJobQueue::parse_url("redis://localhost");
  EXPECT_EQ(o.host, "localhost");
  EXPECT_EQ(o.port, 6379);
  EXPECT_EQ(o.db, 0);
  EXPECT_EQ(o.password, "");
  EXPECT_EQ(o.prefix, "sdcpu:");
  o = RedisJobQueue::parse_url("redis://:s3cr@t/x@10.0.0.5:6380/2");
  EXPECT_EQ(o.password, "s3cr@t/x");
  EXPECT_EQ(o.host, "10.0.0.5");
  EXPECT_EQ(o.port, 6380);
  EXPECT_EQ(o.db, 2);
  o = RedisJobQueue::parse_url("redis://[::1]:7000/1");
  EXPECT_EQ(o.host, "::1");
  EXPECT_EQ(o.port, 7000);
  EXPECT_EQ(o.db, 1);
  EXPECT_EQ(RedisJobQueue::parse_url("redis://queue.internal/").db, 0);

  for (const char* bad :
       {"http://h", "redis://", "redis://h:0", "redis://h:70000", "redis://h:x", "redis://h:", "redis://h/x",
        "redis://h/-1", "redis://user:pw@h", "redis://[::1", "redis://:pw@", "redis://h h", "REDIS://h"})
    EXPECT_THROW(RedisJobQueue::parse_url(bad), InvalidArgument) << bad;
  try {
    RedisJobQueue::parse_url("redis://:hunter2@h:x");
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << "the password leaks: " << e.what();
  }
}

TEST(RedisJobQueueConnect, NoRedisIsAnIoErrorNamingIt) {
  RedisJobQueue::Options o;
  o.port = free_port();
  try {
    RedisJobQueue q(o);
    ADD_FAILURE() << "connected to nothing";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("redis at 127.0.0.1:" + std::to_string(o.port)), std::string::npos)
        << e.what();
  }
}

TEST_F(RedisJobQueueTest, SubmitAndGetRoundTrip) {
  RedisJobQueue q(options());
  const int64_t before = now_ms();
  const JobRequest r = request();
  const auto s = q.submit(r, "owner-a", "");
  EXPECT_TRUE(s.created);
  EXPECT_EQ(s.queue_position, 0);
  EXPECT_TRUE(is_valid_job_id(s.job.id));
  EXPECT_EQ(s.job.status, JobStatus::queued);

  const auto job = q.get(s.job.id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, s.job.id);
  EXPECT_EQ(job->status, JobStatus::queued);
  EXPECT_EQ(job->owner, "owner-a");
  EXPECT_GE(job->created_ms, before);
  EXPECT_LE(job->created_ms, now_ms());
  EXPECT_EQ(job->started_ms, 0);
  EXPECT_EQ(job->finished_ms, 0);
  EXPECT_EQ(job->attempts, 0);
  EXPECT_FALSE(job->cancel_requested);
  EXPECT_EQ(job_request_to_json(job->request), job_request_to_json(r));
  EXPECT_EQ(job->request.options.seed, 0xFFFFFFFFFFFFFF00ull);
  EXPECT_EQ(job->request.options.cfg_scale, 5.5f);
  EXPECT_EQ(job->request.options.batch_count, 2);

  EXPECT_FALSE(q.get(kNoSuchJob));
  EXPECT_FALSE(q.get("not an id"));
  // Another object on the same Redis (an API node beside a worker) sees the same job.
  RedisJobQueue other(options("w2"));
  ASSERT_TRUE(other.get(s.job.id));
  EXPECT_EQ(other.get(s.job.id)->owner, "owner-a");
}

TEST_F(RedisJobQueueTest, RefusesAnUnresolvedSeed) {
  RedisJobQueue q(options());
  EXPECT_THROW(q.submit(request("x", kRandomSeed), "", ""), InvalidArgument);
  EXPECT_EQ(q.counts()[JobStatus::queued], 0);
}

TEST_F(RedisJobQueueTest, IdempotencyKeyReturnsTheSameJobPerOwner) {
  RedisJobQueue q(options());
  const auto first = q.submit(request("one"), "alice", "key-1");
  const auto again = q.submit(request("two"), "alice", "key-1");
  EXPECT_TRUE(first.created);
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, first.job.id);
  EXPECT_EQ(again.job.request.options.prompt, "one");
  EXPECT_EQ(again.queue_position, 0);

  EXPECT_NE(q.submit(request("three"), "bob", "key-1").job.id, first.job.id);
  EXPECT_TRUE(q.submit(request("four"), "alice", "key-2").created);
  // Owner "a:b" with key "c" is not owner "a" with key "b:c".
  EXPECT_NE(q.submit(request(), "a:b", "c").job.id, q.submit(request(), "a", "b:c").job.id);
  // Without a key every submission is new.
  EXPECT_NE(q.submit(request(), "alice", "").job.id, q.submit(request(), "alice", "").job.id);
  EXPECT_EQ(q.counts()[JobStatus::queued], 7);

  // The key still finds the job once it is no longer queued, from any object.
  ASSERT_TRUE(q.claim(0ms));
  RedisJobQueue other(options("w2"));
  const auto later = other.submit(request("five"), "alice", "key-1");
  EXPECT_FALSE(later.created);
  EXPECT_EQ(later.job.id, first.job.id);
  EXPECT_EQ(later.job.status, JobStatus::running);
  EXPECT_EQ(later.queue_position, -1);
}

TEST_F(RedisJobQueueTest, ClaimIsFifoAndQueuePositionCounts) {
  RedisJobQueue q(options());
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    const auto s = q.submit(request(numbered("p", i)), "", "");
    EXPECT_EQ(s.queue_position, i);
    ids.push_back(s.job.id);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.queue_position(ids[i]), i);

  for (int i = 0; i < 4; ++i) {
    const int64_t before = now_ms();
    const auto job = q.claim(0ms);
    ASSERT_TRUE(job);
    EXPECT_EQ(job->id, ids[i]);
    EXPECT_EQ(job->status, JobStatus::running);
    EXPECT_EQ(job->attempts, 1);
    EXPECT_GE(job->started_ms, before);
    EXPECT_EQ(q.queue_position(ids[i]), -1);
    for (int j = i + 1; j < 4; ++j) EXPECT_EQ(q.queue_position(ids[j]), j - i - 1);
  }
  EXPECT_FALSE(q.claim(0ms));
  EXPECT_EQ(q.queue_position(kNoSuchJob), -1);
  EXPECT_EQ(q.queue_position("../x"), -1);
}

// Redis takes batch mates only from right behind in the stream: a job that does not match ends the batch.
TEST_F(RedisJobQueueTest, BatchMatesAreTheMatchingJobsRightBehindWithinTheImageBudget) {
  RedisJobQueue q(options());
  auto make = [](bool matching, int images) {
    JobRequest r = request();
    if (!matching) r.options.steps = 8;
    r.options.batch_count = images;
    return r;
  };
  std::vector<std::string> ids;
  for (auto [matching, images] :
       std::vector<std::pair<bool, int>>{{true, 1}, {true, 2}, {true, 3}, {false, 1}, {true, 1}})
    ids.push_back(q.submit(make(matching, images), "", "").job.id);
  const auto first = q.claim(0ms);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->id, ids[0]);
  EXPECT_TRUE(q.claim_batch_mates(*first, 1).empty());
  // 4 images: #1 (2) fits, #2 (3) does not, and the batch ends there.
  const auto mates = q.claim_batch_mates(*first, 4);
  ASSERT_EQ(mates.size(), 1u);
  EXPECT_EQ(mates[0].id, ids[1]);
  EXPECT_EQ(mates[0].status, JobStatus::running);
  EXPECT_EQ(mates[0].attempts, 1);
  EXPECT_EQ(q.get(ids[1])->status, JobStatus::running);
  EXPECT_EQ(q.queue_position(ids[2]), 0);
  // The next claim starts at #2; #3 does not match it; #4 is then the next job.
  const auto second = q.claim(0ms);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->id, ids[2]);
  EXPECT_TRUE(q.claim_batch_mates(*second, 64).empty());
  EXPECT_EQ(q.claim(0ms)->id, ids[3]);
  // Mates finish like any job, and a cancelled queued job is never a mate.
  q.succeed(ids[1], {1, 2});
  EXPECT_EQ(q.get(ids[1])->status, JobStatus::succeeded);
  const std::string cancelled = q.submit(make(true, 1), "", "").job.id, after = q.submit(make(true, 1), "", "").job.id;
  q.cancel(cancelled);
  const auto mates_after = q.claim_batch_mates(*first, 4);
  ASSERT_EQ(mates_after.size(), 2u);
  EXPECT_EQ(mates_after[0].id, ids[4]);
  EXPECT_EQ(mates_after[1].id, after);
  EXPECT_EQ(q.get(cancelled)->status, JobStatus::cancelled);
  EXPECT_FALSE(q.claim(0ms));
}

TEST_F(RedisJobQueueTest, ClaimWakesWhenAnotherThreadSubmitsAndBlocksNoOtherCall) {
  RedisJobQueue q(options());
  std::optional<Job> claimed;
  Clock::time_point claimed_at;
  std::thread worker([&] {
    claimed = q.claim(5000ms);
    claimed_at = Clock::now();
  });
  std::this_thread::sleep_for(200ms);  // the worker is waiting by now
  // The HTTP side's calls do not wait behind the blocking read.
  const auto call_start = Clock::now();
  EXPECT_EQ(q.counts()[JobStatus::queued], 0);
  EXPECT_FALSE(q.get(kNoSuchJob));
  EXPECT_TRUE(q.healthy());
  EXPECT_LT(Clock::now() - call_start, 500ms);

  const std::string id = submit(q);
  const auto submitted_at = Clock::now();
  worker.join();
  ASSERT_TRUE(claimed);
  EXPECT_EQ(claimed->id, id);
  EXPECT_LT(claimed_at - submitted_at, 250ms);
}

TEST_F(RedisJobQueueTest, ClaimWakesWhenAnotherObjectSubmits) {
  RedisJobQueue api(options("api")), worker_queue(options("w1"));
  std::optional<Job> claimed;
  std::thread worker([&] { claimed = worker_queue.claim(5000ms); });
  std::this_thread::sleep_for(200ms);
  const std::string id = submit(api);
  worker.join();
  ASSERT_TRUE(claimed);
  EXPECT_EQ(claimed->id, id);
}

TEST_F(RedisJobQueueTest, ClaimReturnsNothingAfterItsWait) {
  RedisJobQueue q(options());
  const auto start = Clock::now();
  EXPECT_FALSE(q.claim(150ms));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, 150ms);
  EXPECT_LT(waited, 2000ms);
}

TEST_F(RedisJobQueueTest, ImagesRoundTripByteExactAndExpireWithTheJob) {
  RedisJobQueue q(options());
  const std::string id = q.submit(request(), "alice", "k").job.id;
  std::vector<uint8_t> every_byte(512);
  for (size_t i = 0; i < every_byte.size(); ++i) every_byte[i] = static_cast<uint8_t>(i);  // NULs included
  const auto big = png_bytes(3 << 20);
  q.store_image(id, 0, every_byte);  // not running: not stored
  ASSERT_TRUE(q.claim(0ms));
  q.store_image(id, 0, every_byte);
  q.store_image(id, 1, big);
  q.store_image(id, 2, {});
  EXPECT_FALSE(q.load_image(id, 0));  // not succeeded yet
  q.succeed(id, {0xFFFFFFFFFFFFFF00ull, 0xFFFFFFFFFFFFFF01ull});

  const auto job = q.get(id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::succeeded);
  EXPECT_EQ(job->seeds, (std::vector<uint64_t>{0xFFFFFFFFFFFFFF00ull, 0xFFFFFFFFFFFFFF01ull}));
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(q.load_image(id, 0), every_byte);
  EXPECT_EQ(q.load_image(id, 1), big);
  EXPECT_EQ(q.load_image(id, 2), std::vector<uint8_t>());
  EXPECT_FALSE(q.load_image(id, 3));
  EXPECT_THROW(q.load_image(id, -1), InvalidArgument);
  EXPECT_THROW(q.store_image(id, -1, every_byte), InvalidArgument);

  // Everything of a finished job expires after keep_results (24 h by default).
  for (const std::string& key : {"test:job:" + id, "test:images:" + id, std::string("test:idem:5:alice:k")}) {
    EXPECT_GT(pttl(key), 23 * 3600 * 1000) << key;
    EXPECT_LE(pttl(key), 24 * 3600 * 1000) << key;
  }
  // A finished job's stream entry is gone.
  EXPECT_EQ(redis_command(port(), {"XLEN", "test:stream"})->integer, 0);
}

TEST_F(RedisJobQueueTest, ImageCallsRefuseInvalidIdsBeforeAnyIo) {
  RedisJobQueue q(options());
  const std::string uppercase = "0123456789ABCDEF0123456789ABCDEF";
  for (const std::string& bad :
       {std::string("../x"), std::string(""), std::string(31, 'a'), uppercase, std::string("*"), kNoSuchJob + "\n"}) {
    EXPECT_THROW(q.load_image(bad, 0), InvalidArgument) << bad;
    EXPECT_THROW(q.store_image(bad, 0, png_bytes(3)), InvalidArgument) << bad;
  }
  EXPECT_FALSE(q.load_image(kNoSuchJob, 0));
  const Reply keys = redis_command(port(), {"KEYS", "test:image*"});
  ASSERT_TRUE(keys);
  EXPECT_EQ(keys->elements, 0u);
}

TEST_F(RedisJobQueueTest, CancelQueuedRunningAndFinishedJobs) {
  RedisJobQueue q(options());
  const std::string running = submit(q), queued = submit(q), done = submit(q);
  q.claim(0ms);

  auto job = q.cancel(queued);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::cancelled);
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(q.queue_position(queued), -1);
  EXPECT_EQ(q.queue_position(done), 0);

  job = q.cancel(running);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::running);  // its worker stops it
  EXPECT_TRUE(job->cancel_requested);
  EXPECT_TRUE(q.cancel_requested(running));
  q.mark_cancelled(running);
  EXPECT_EQ(q.get(running)->status, JobStatus::cancelled);

  // The cancelled queued job is skipped: the next claim is the job after it.
  ASSERT_EQ(q.claim(0ms)->id, done);
  q.succeed(done, {7, 8});
  job = q.cancel(done);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::succeeded);
  EXPECT_FALSE(job->cancel_requested);
  EXPECT_FALSE(q.claim(0ms));

  EXPECT_FALSE(q.cancel(kNoSuchJob));
  EXPECT_FALSE(q.cancel_requested(kNoSuchJob));
  const auto counts = q.counts();
  EXPECT_EQ(counts.at(JobStatus::cancelled), 2);
  EXPECT_EQ(counts.at(JobStatus::succeeded), 1);
  EXPECT_EQ(counts.at(JobStatus::queued) + counts.at(JobStatus::running), 0);
}

TEST_F(RedisJobQueueTest, AJobCancelledAfterItWasReadIsSkipped) {
  // A worker read the job's entry (XREADGROUP), then the job was cancelled before the worker started it: the
  // cancellation acknowledges the entry, so no one runs the job, and the next claim is the job after it.
  RedisJobQueue q(fast("w1"));
  const std::string id = submit(q), next = submit(q);
  ASSERT_TRUE(
      redis_command(port(), {"XREADGROUP", "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", "test:stream", ">"}));
  ASSERT_EQ(q.cancel(id)->status, JobStatus::cancelled);
  const auto job = claim_within(q, 2000ms);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, next);
  EXPECT_EQ(pending_consumer(), "w1");  // the cancelled job's entry is acknowledged
}

TEST_F(RedisJobQueueTest, FinishingChangesOnlyUnfinishedJobs) {
  RedisJobQueue q(options());
  const std::string a = submit(q), b = submit(q), c = submit(q);
  q.succeed(a, {1});  // not running: unchanged
  EXPECT_EQ(q.get(a)->status, JobStatus::queued);

  q.claim(0ms);
  q.set_progress(a, {1, 2, 3, 7});
  auto job = q.get(a);
  EXPECT_EQ(job->progress.image, 1);
  EXPECT_EQ(job->progress.images, 2);
  EXPECT_EQ(job->progress.step, 3);
  EXPECT_EQ(job->progress.steps, 7);

  q.fail(a, "out of memory: \"quoted\"\n\x01");
  job = q.get(a);
  EXPECT_EQ(job->status, JobStatus::failed);
  EXPECT_EQ(job->error, "out of memory: \"quoted\"\n\x01");
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(job->progress.steps, 0);

  q.succeed(a, {1});
  q.mark_cancelled(a);
  q.fail(a, "again");
  EXPECT_EQ(q.get(a)->status, JobStatus::failed);
  EXPECT_EQ(q.get(a)->error, "out of memory: \"quoted\"\n\x01");
  EXPECT_EQ(q.get(b)->status, JobStatus::queued);

  // A queued job may fail (or be cancelled) without a worker; it is then never claimed.
  q.fail(b, "unknown model");
  EXPECT_EQ(q.get(b)->status, JobStatus::failed);
  EXPECT_EQ(q.queue_position(b), -1);
  q.set_progress(b, {0, 1, 1, 1});  // not running: nothing
  EXPECT_EQ(q.get(b)->progress.steps, 0);
  EXPECT_EQ(q.claim(0ms)->id, c);
  EXPECT_FALSE(q.claim(0ms));
}

TEST_F(RedisJobQueueTest, ListPagesInSubmissionOrderWithAStatusFilter) {
  RedisJobQueue q(options());
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(submit(q, numbered("p", i)));
  q.claim(0ms);  // ids[0] running
  q.cancel(ids[3]);

  std::vector<std::string> seen;
  std::string after;
  for (;;) {
    const auto page = q.list(std::nullopt, 3, after);
    if (page.empty()) break;
    EXPECT_LE(page.size(), 3u);
    for (const auto& job : page) seen.push_back(job.id);
    after = page.back().id;
  }
  EXPECT_EQ(seen, ids);

  const auto queued = q.list(JobStatus::queued, 2, "");
  ASSERT_EQ(queued.size(), 2u);
  EXPECT_EQ(queued[0].id, ids[1]);
  EXPECT_EQ(queued[1].id, ids[2]);
  const auto next = q.list(JobStatus::queued, 10, queued.back().id);
  ASSERT_EQ(next.size(), 3u);  // ids[3] is cancelled
  EXPECT_EQ(next[0].id, ids[4]);
  EXPECT_EQ(next[2].id, ids[6]);
  // After a job of another status: from its place.
  EXPECT_EQ(q.list(JobStatus::queued, 10, ids[3]).size(), 3u);
  EXPECT_EQ(q.list(JobStatus::running, 10, "").at(0).id, ids[0]);
  EXPECT_EQ(q.list(JobStatus::cancelled, 10, "").at(0).id, ids[3]);
  EXPECT_TRUE(q.list(JobStatus::failed, 10, "").empty());

  EXPECT_TRUE(q.list(std::nullopt, 10, kNoSuchJob).empty());
  EXPECT_TRUE(q.list(std::nullopt, 10, "../x").empty());
  EXPECT_EQ(q.list(std::nullopt, 0, "").size(), 1u);       // clamped up to 1
  EXPECT_EQ(q.list(std::nullopt, 100000, "").size(), 7u);  // and down to 1000
}

TEST_F(RedisJobQueueTest, CountsEveryStatusAndQueuedPerOwner) {
  RedisJobQueue q(options());
  auto counts = q.counts();
  ASSERT_EQ(counts.size(), 5u);
  for (const auto& [status, n] : counts) EXPECT_EQ(n, 0) << job_status_name(status);

  const std::string a = q.submit(request(), "alice", "").job.id;
  q.submit(request(), "alice", "");
  q.submit(request(), "bob", "");
  const std::string d = q.submit(request(), "bob", "").job.id;
  q.claim(0ms);  // a
  q.cancel(d);
  counts = q.counts();
  EXPECT_EQ(counts[JobStatus::queued], 2);
  EXPECT_EQ(counts[JobStatus::running], 1);
  EXPECT_EQ(counts[JobStatus::cancelled], 1);
  EXPECT_EQ(counts[JobStatus::succeeded], 0);
  EXPECT_EQ(counts[JobStatus::failed], 0);
  EXPECT_EQ(q.queued_count("alice"), 1);
  EXPECT_EQ(q.queued_count("bob"), 1);
  EXPECT_EQ(q.queued_count("carol"), 0);
  q.succeed(a, {1});
  EXPECT_EQ(q.counts()[JobStatus::succeeded], 1);
  EXPECT_TRUE(q.healthy());
}

TEST_F(RedisJobQueueTest, FinishedJobsVanishAfterKeepResultsAndExpireCleansTheIndexes) {
  RedisJobQueue::Options o = options();
  o.keep_results = 300ms;
  RedisJobQueue q(o);
  const std::string done = q.submit(request(), "alice", "k").job.id, queued = submit(q);
  ASSERT_EQ(q.claim(0ms)->id, done);
  q.store_image(done, 0, png_bytes(10));
  q.succeed(done, {1});
  EXPECT_EQ(q.load_image(done, 0), png_bytes(10));
  std::this_thread::sleep_for(500ms);

  EXPECT_FALSE(q.get(done));
  EXPECT_FALSE(q.load_image(done, 0));
  EXPECT_EQ(q.list(std::nullopt, 10, "").size(), 1u);
  EXPECT_EQ(q.counts()[JobStatus::succeeded], 1);  // until expire() runs
  EXPECT_EQ(q.expire(std::chrono::system_clock::now() - std::chrono::hours(1)), 1);
  EXPECT_EQ(q.counts()[JobStatus::succeeded], 0);
  EXPECT_EQ(q.expire(std::chrono::system_clock::now()), 0);
  EXPECT_EQ(q.get(queued)->status, JobStatus::queued);  // an unfinished job never expires
  // Its idempotency key expired with it.
  EXPECT_TRUE(q.submit(request(), "alice", "k").created);
}

TEST_F(RedisJobQueueTest, ExpireDeletesJobsThatFinishedBeforeTheCutoff) {
  RedisJobQueue q(options());
  const std::string old_ok = submit(q), old_failed = submit(q), recent = submit(q), running = submit(q),
                    queued = submit(q);
  q.claim(0ms);
  q.store_image(old_ok, 0, png_bytes(10));
  q.succeed(old_ok, {1});
  q.claim(0ms);
  q.fail(old_failed, "boom");
  std::this_thread::sleep_for(20ms);
  const auto cutoff = std::chrono::system_clock::now();
  std::this_thread::sleep_for(20ms);
  q.claim(0ms);
  q.store_image(recent, 0, png_bytes(10));
  q.succeed(recent, {2});
  q.claim(0ms);  // running stays running

  EXPECT_EQ(q.expire(cutoff), 2);
  EXPECT_FALSE(q.get(old_ok));
  EXPECT_FALSE(q.get(old_failed));
  EXPECT_EQ(redis_command(port(), {"EXISTS", "test:images:" + old_ok})->integer, 0);
  EXPECT_TRUE(q.get(recent));
  EXPECT_EQ(q.load_image(recent, 0), png_bytes(10));
  EXPECT_EQ(q.get(running)->status, JobStatus::running);
  EXPECT_EQ(q.get(queued)->status, JobStatus::queued);

  EXPECT_EQ(q.expire(std::chrono::system_clock::now() + std::chrono::hours(1)), 1);
  EXPECT_EQ(redis_command(port(), {"EXISTS", "test:images:" + recent})->integer, 0);
  EXPECT_EQ(q.list(std::nullopt, 10, "").size(), 2u);
  EXPECT_EQ(q.expire(std::chrono::system_clock::now() + std::chrono::hours(1)), 0);
}

TEST_F(RedisJobQueueTest, AnotherWorkerTakesOverTheJobOfADeadOne) {
  auto a = std::make_unique<RedisJobQueue>(fast("a"));
  RedisJobQueue b(fast("b"));
  const std::string id = a->submit(request("p", 42), "", "").job.id;
  const auto first = a->claim(0ms);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->id, id);
  EXPECT_EQ(first->attempts, 1);
  a->set_progress(id, {0, 2, 3, 7});
  a->store_image(id, 0, png_bytes(5));  // a partial result
  a.reset();                            // A dies: its heartbeat stops
  const auto died = Clock::now();
  EXPECT_FALSE(b.claim(0ms));  // not idle long enough yet

  const auto job = claim_within(b, 5000ms);
  ASSERT_TRUE(job);
  EXPECT_GE(Clock::now() - died, 150ms);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->status, JobStatus::running);
  EXPECT_EQ(job->attempts, 2);
  EXPECT_EQ(job->request.options.seed, 42u);
  EXPECT_EQ(job->progress.steps, 0);
  EXPECT_EQ(pending_consumer(), "b");
  b.store_image(id, 0, png_bytes(10));
  b.store_image(id, 1, png_bytes(11));
  b.succeed(id, {42, 43});

  const auto done = b.get(id);
  EXPECT_EQ(done->status, JobStatus::succeeded);
  EXPECT_EQ(done->attempts, 2);
  EXPECT_EQ(done->seeds, (std::vector<uint64_t>{42, 43}));
  EXPECT_EQ(b.load_image(id, 0), png_bytes(10));
  EXPECT_EQ(b.load_image(id, 1), png_bytes(11));
  EXPECT_FALSE(b.claim(0ms));
  EXPECT_EQ(b.counts()[JobStatus::running], 0);
  EXPECT_EQ(pending_consumer(), "");
}

TEST_F(RedisJobQueueTest, ALiveWorkersJobIsNotTakenOver) {
  RedisJobQueue a(fast("a")), b(fast("b"));
  const std::string id = submit(a);
  ASSERT_TRUE(a.claim(0ms));
  // Three visibility timeouts: A's heartbeat keeps its entry from ever looking idle.
  const auto until = Clock::now() + 900ms;
  while (Clock::now() < until) EXPECT_FALSE(b.claim(100ms));
  EXPECT_EQ(pending_consumer(), "a");
  EXPECT_FALSE(a.cancel_requested(id));
  a.succeed(id, {1});
  EXPECT_EQ(a.get(id)->status, JobStatus::succeeded);
  EXPECT_EQ(a.get(id)->attempts, 1);
}

TEST_F(RedisJobQueueTest, AStaleHolderCannotFinishTheJob) {
  // A stalls: its heartbeat (every second) comes after B (visibility timeout 300 ms) took the job over.
  RedisJobQueue::Options slow = options("a");
  slow.visibility_timeout = 2000ms;
  slow.heartbeat = 1000ms;
  RedisJobQueue a(slow), b(fast("b"));
  const std::string id = a.submit(request("p", 42), "", "").job.id;
  const auto claimed_at = Clock::now();
  ASSERT_TRUE(a.claim(0ms));
  const auto job = claim_within(b, 3000ms);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->attempts, 2);
  EXPECT_LT(Clock::now() - claimed_at, 1000ms) << "too slow for this test's timing";

  EXPECT_TRUE(a.cancel_requested(id));  // A learns it lost the job
  EXPECT_FALSE(b.cancel_requested(id));
  a.set_progress(id, {0, 1, 5, 7});
  a.store_image(id, 0, png_bytes(10, 1));
  a.succeed(id, {1});
  a.fail(id, "stale");
  a.mark_cancelled(id);
  auto now = b.get(id);
  EXPECT_EQ(now->status, JobStatus::running);
  EXPECT_EQ(now->progress.steps, 0);
  EXPECT_TRUE(now->seeds.empty());

  // A's heartbeat does not take B's entry back.
  std::this_thread::sleep_for(milliseconds(1300) - (Clock::now() - claimed_at));
  EXPECT_EQ(pending_consumer(), "b");

  b.store_image(id, 0, png_bytes(10, 2));
  b.succeed(id, {42});
  a.succeed(id, {1});
  a.store_image(id, 0, png_bytes(10, 1));
  now = b.get(id);
  EXPECT_EQ(now->status, JobStatus::succeeded);
  EXPECT_EQ(now->seeds, std::vector<uint64_t>{42});
  EXPECT_EQ(b.load_image(id, 0), png_bytes(10, 2));
  EXPECT_EQ(b.counts()[JobStatus::succeeded], 1);
}

TEST_F(RedisJobQueueTest, AJobReadButNeverStartedIsTakenOverWithoutAnAttempt) {
  // A worker died between XREADGROUP and marking the job running.
  RedisJobQueue b(fast("b"));
  const std::string id = submit(b);
  ASSERT_TRUE(
      redis_command(port(), {"XREADGROUP", "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", "test:stream", ">"}));
  EXPECT_FALSE(b.claim(0ms));
  EXPECT_EQ(b.queue_position(id), 0);
  const auto job = claim_within(b, 3000ms);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_EQ(b.counts()[JobStatus::queued], 0);
  EXPECT_EQ(b.queued_count(""), 0);
}

TEST_F(RedisJobQueueTest, ADeadWorkersJobWhoseCancellationWasAskedForIsCancelled) {
  auto a = std::make_unique<RedisJobQueue>(fast("a"));
  RedisJobQueue b(fast("b"));
  const std::string id = submit(*a);
  ASSERT_TRUE(a->claim(0ms));
  EXPECT_TRUE(b.cancel(id)->cancel_requested);
  a.reset();
  EXPECT_FALSE(claim_within(b, 1000ms));
  const auto job = b.get(id);
  EXPECT_EQ(job->status, JobStatus::cancelled);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(pending_consumer(), "");
}

TEST_F(RedisJobQueueTest, AFlushedScriptCacheIsNoError) {
  RedisJobQueue q(options());
  ASSERT_EQ(reply_text(redis_command(port(), {"SCRIPT", "FLUSH"})), "OK");
  const std::string id = submit(q);
  ASSERT_EQ(q.claim(0ms)->id, id);
  q.succeed(id, {1});
  EXPECT_EQ(q.get(id)->status, JobStatus::succeeded);
}

TEST_F(RedisJobQueueTest, ALostConsumerGroupIsMadeAgainWithoutRerunningALiveWorkersJob) {
  RedisJobQueue a(fast("a")), b(fast("b"));
  const std::string running = submit(a), queued = submit(a);
  ASSERT_EQ(a.claim(0ms)->id, running);
  ASSERT_EQ(redis_command(port(), {"XGROUP", "DESTROY", "test:stream", "workers"})->integer, 1);
  // The group is made again from the stream's start: the queued job comes, the running one is not run twice.
  const auto job = claim_within(b, 2000ms);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->id, queued);
  const auto until = Clock::now() + 900ms;
  while (Clock::now() < until) EXPECT_FALSE(b.claim(100ms));
  EXPECT_EQ(b.get(running)->attempts, 1);
  EXPECT_FALSE(a.cancel_requested(running));
  a.succeed(running, {1});
  b.succeed(queued, {2});
  EXPECT_EQ(a.counts()[JobStatus::succeeded], 2);
  EXPECT_EQ(pending_consumer(), "");
}

TEST_F(RedisJobQueueTest, ConcurrentSubmittersAndAWorker) {
  RedisJobQueue q(options());
  constexpr int kThreads = 4, kJobs = 50, kTotal = kThreads * kJobs;
  std::atomic<int> duplicates{0};
  std::set<std::string> claimed;
  std::thread worker([&] {
    const auto give_up = Clock::now() + std::chrono::seconds(30);
    while (static_cast<int>(claimed.size()) < kTotal && Clock::now() < give_up) {
      const auto job = q.claim(100ms);
      if (!job) continue;
      if (!claimed.insert(job->id).second) ++duplicates;
      q.set_progress(job->id, {0, 1, 1, 1});
      q.succeed(job->id, {job->request.options.seed});
    }
  });
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t)
    submitters.emplace_back([&q, t] {
      for (int i = 0; i < kJobs; ++i) q.submit(request(numbered("t", t), t * 1000 + i), "", "");
    });
  for (auto& s : submitters) s.join();
  worker.join();

  EXPECT_EQ(duplicates.load(), 0);
  EXPECT_EQ(static_cast<int>(claimed.size()), kTotal);
  EXPECT_EQ(q.counts()[JobStatus::succeeded], kTotal);
  EXPECT_EQ(q.counts()[JobStatus::queued], 0);
  for (const auto& job : q.list(std::nullopt, 1000, "")) {
    EXPECT_EQ(job.attempts, 1);
    EXPECT_EQ(job.seeds, std::vector<uint64_t>{job.request.options.seed});
  }
}

TEST_F(RedisJobQueueTest, EveryJobSucceedsExactlyOnceWhileWorkersDie) {
  constexpr int kJobs = 300, kWorkers = 3;
  RedisJobQueue api(options("api"));
  std::map<std::string, uint64_t> seed_of;
  for (int i = 0; i < kJobs; ++i) {
    const uint64_t seed = 1000u * i + 7;
    seed_of[api.submit(request(numbered("p", i), seed), "", "").job.id] = seed;
  }
  auto image_of = [](uint64_t seed) { return png_bytes(64, static_cast<int>(seed % 251)); };

  std::atomic<int> consumers{0}, claims{0}, deaths{0}, succeeded{0}, stale{0};
  std::mutex mutex;
  std::map<std::string, int> effective;  // job id -> succeed() calls that took effect
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w)
    workers.emplace_back([&, w] {
      std::mt19937 rng(1234 + w);
      auto q = std::make_unique<RedisJobQueue>(fast(numbered("churn-", consumers++)));
      const auto give_up = Clock::now() + std::chrono::seconds(40);
      while (succeeded.load() < kJobs && Clock::now() < give_up) {
        const auto job = q->claim(100ms);
        if (!job) continue;
        const int token = ++claims;
        const uint64_t seed = job->request.options.seed;
        if (rng() % 100 < 8) {  // dies mid-job, maybe after storing an image
          if (rng() % 2) q->store_image(job->id, 0, png_bytes(64, 99));
          q = std::make_unique<RedisJobQueue>(fast(numbered("churn-", consumers++)));
          ++deaths;
          continue;
        }
        q->set_progress(job->id, {0, 1, 1, 1});
        q->store_image(job->id, 0, image_of(seed));
        q->succeed(job->id, {seed, static_cast<uint64_t>(token)});
        // Whether this call took effect: the job holds this claim's token.
        const auto after = q->get(job->id);
        if (after && after->status == JobStatus::succeeded &&
            after->seeds == std::vector<uint64_t>{seed, static_cast<uint64_t>(token)}) {
          std::lock_guard lock(mutex);
          ++effective[job->id];
          ++succeeded;
        } else {
          ++stale;
        }
      }
    });
  for (auto& t : workers) t.join();

  EXPECT_EQ(succeeded.load(), kJobs);
  EXPECT_GT(deaths.load(), 0);
  EXPECT_EQ(claims.load(), succeeded.load() + deaths.load() + stale.load());
  int attempts = 0;
  for (const auto& [id, seed] : seed_of) {
    const auto job = api.get(id);
    ASSERT_TRUE(job);
    EXPECT_EQ(job->status, JobStatus::succeeded) << id;
    EXPECT_EQ(effective[id], 1) << id;
    ASSERT_EQ(job->seeds.size(), 2u);
    EXPECT_EQ(job->seeds[0], seed);
    EXPECT_EQ(api.load_image(id, 0), image_of(seed)) << id;
    attempts += job->attempts;
  }
  EXPECT_EQ(attempts, claims.load());  // every claim counted once, no job run but by a claim
  const auto counts = api.counts();
  EXPECT_EQ(counts.at(JobStatus::succeeded), kJobs);
  EXPECT_EQ(counts.at(JobStatus::queued) + counts.at(JobStatus::running), 0);
  EXPECT_EQ(pending_consumer(), "");
  std::printf("  %d jobs, %d claims, %d worker deaths, %d stale finishes\n", kJobs, claims.load(), deaths.load(),
              stale.load());
}

TEST(RedisJobQueueOutage, CallsFailWhileRedisIsDownAndNothingIsLostAcrossARestart) {
  if (!have_redis_server()) GTEST_SKIP() << kRedisServer << " is missing (apt-get install redis-server)";
  const std::string dir = testing::temp_dir();
  RedisServer server;
  int port = 0;
  for (int tries = 0; tries < 3 && !port; ++tries)
    if (const int p = free_port(); server.start(p, dir, true)) port = p;
  ASSERT_NE(port, 0) << "redis-server did not start";
  RedisJobQueue::Options o;
  o.port = port;
  o.consumer = "w";
  RedisJobQueue q(o);
  std::vector<std::string> ids;
  ids.push_back(q.submit(request("p0", 10), "alice", "key").job.id);
  for (int i = 1; i < 3; ++i) ids.push_back(q.submit(request(numbered("p", i), 10 + i), "alice", "").job.id);
  ASSERT_EQ(q.claim(0ms)->id, ids[0]);
  EXPECT_TRUE(q.healthy());

  server.kill();
  EXPECT_FALSE(q.healthy());
  try {
    q.submit(request(), "alice", "");
    ADD_FAILURE() << "submitted with Redis down";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("redis at 127.0.0.1:" + std::to_string(port)), std::string::npos) << e.what();
  }
  EXPECT_THROW(q.get(ids[1]), IoError);
  EXPECT_THROW(q.claim(0ms), IoError);
  EXPECT_THROW(q.counts(), IoError);
  EXPECT_THROW(RedisJobQueue{o}, IoError);
  EXPECT_FALSE(q.healthy());

  ASSERT_TRUE(server.start(port, dir, true));
  EXPECT_TRUE(q.healthy());
  const auto jobs = q.list(std::nullopt, 10, "");
  ASSERT_EQ(jobs.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(jobs[i].id, ids[i]);
    EXPECT_EQ(jobs[i].request.options.seed, 10u + i);
  }
  EXPECT_EQ(jobs[0].status, JobStatus::running);
  EXPECT_EQ(q.queue_position(ids[1]), 0);
  EXPECT_FALSE(q.submit(request(), "alice", "key").created);
  // The worker goes on: a new claim (on a connection made again), the running job finishes.
  ASSERT_EQ(q.claim(0ms)->id, ids[1]);
  q.succeed(ids[0], {10});
  EXPECT_EQ(q.get(ids[0])->status, JobStatus::succeeded);
  EXPECT_EQ(q.counts()[JobStatus::running], 1);
}

}  // namespace
}  // namespace sdcpu::service
