// SqliteJobQueue: the job lifecycle, its durability across a reopen (a crash), result images, and concurrency.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "core/error.h"
#include "service/sqlite_job_queue.h"
#include "test_support.h"

namespace sdcpu::service {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

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

std::vector<uint8_t> png_bytes(int n) {
  std::vector<uint8_t> bytes(n);
  for (int i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  return bytes;
}

TEST(SqliteJobQueue, SubmitAndGetRoundTrip) {
  SqliteJobQueue q(testing::temp_dir());
  const int64_t before = now_ms();
  const JobRequest r = request();
  const auto s = q.submit(r, "owner-a", "");
  EXPECT_TRUE(s.created);
  EXPECT_EQ(s.queue_position, 0);

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
  EXPECT_EQ(job->request.model, "sd15");
  EXPECT_EQ(job->request.options.prompt, "a red fox");
  EXPECT_EQ(job->request.options.seed, 0xFFFFFFFFFFFFFF00ull);
  EXPECT_EQ(job->request.options.cfg_scale, 5.5f);
  EXPECT_EQ(job->request.options.batch_count, 2);

  EXPECT_FALSE(q.get("0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(q.get("not an id"));
}

TEST(SqliteJobQueue, RefusesAnUnresolvedSeed) {
  SqliteJobQueue q(testing::temp_dir());
  EXPECT_THROW(q.submit(request("x", kRandomSeed), "", ""), InvalidArgument);
  EXPECT_EQ(q.counts()[JobStatus::queued], 0);
}

TEST(SqliteJobQueue, IdsAreValidAndDistinct) {
  SqliteJobQueue q(testing::temp_dir());
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    const std::string id = submit(q);
    EXPECT_TRUE(is_valid_job_id(id)) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 50u);
}

TEST(SqliteJobQueue, IdempotencyKeyReturnsTheSameJobPerOwner) {
  SqliteJobQueue q(testing::temp_dir());
  const auto first = q.submit(request("one"), "alice", "key-1");
  const auto again = q.submit(request("two"), "alice", "key-1");
  EXPECT_TRUE(first.created);
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, first.job.id);
  EXPECT_EQ(again.job.request.options.prompt, "one");

  const auto other_owner = q.submit(request("three"), "bob", "key-1");
  EXPECT_TRUE(other_owner.created);
  EXPECT_NE(other_owner.job.id, first.job.id);
  const auto other_key = q.submit(request("four"), "alice", "key-2");
  EXPECT_TRUE(other_key.created);
  // Without a key every submission is new.
  EXPECT_NE(q.submit(request(), "alice", "").job.id, q.submit(request(), "alice", "").job.id);
  EXPECT_EQ(q.counts()[JobStatus::queued], 5);

  // The key still finds the job once it is no longer queued.
  ASSERT_TRUE(q.claim(milliseconds(0)));
  const auto later = q.submit(request("five"), "alice", "key-1");
  EXPECT_FALSE(later.created);
  EXPECT_EQ(later.job.status, JobStatus::running);
  EXPECT_EQ(later.queue_position, -1);
}

TEST(SqliteJobQueue, ClaimIsFifoAndQueuePositionCounts) {
  SqliteJobQueue q(testing::temp_dir());
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    const auto s = q.submit(request(numbered("p", i)), "", "");
    EXPECT_EQ(s.queue_position, i);
    ids.push_back(s.job.id);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.queue_position(ids[i]), i);

  for (int i = 0; i < 4; ++i) {
    const int64_t before = now_ms();
    const auto job = q.claim(milliseconds(0));
    ASSERT_TRUE(job);
    EXPECT_EQ(job->id, ids[i]);
    EXPECT_EQ(job->status, JobStatus::running);
    EXPECT_EQ(job->attempts, 1);
    EXPECT_GE(job->started_ms, before);
    EXPECT_EQ(q.queue_position(ids[i]), -1);
    for (int j = i + 1; j < 4; ++j) EXPECT_EQ(q.queue_position(ids[j]), j - i - 1);
  }
  EXPECT_FALSE(q.claim(milliseconds(0)));
  EXPECT_EQ(q.queue_position("0123456789abcdef0123456789abcdef"), -1);
}

// A request that batches with request() or not, with `images` images.
JobRequest batch_request(bool matching, int images) {
  JobRequest r = request();
  if (!matching) r.options.steps = 8;
  r.options.batch_count = images;
  return r;
}

TEST(SqliteJobQueue, BatchMatesAreMatchingQueuedJobsWithinTheImageBudget) {
  SqliteJobQueue q(testing::temp_dir());
  std::vector<std::string> ids;
  for (auto [matching, images] :
       std::vector<std::pair<bool, int>>{{true, 1}, {false, 1}, {true, 4}, {true, 2}, {true, 1}, {true, 1}})
    ids.push_back(q.submit(batch_request(matching, images), "", "").job.id);
  const auto first = q.claim(milliseconds(0));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->id, ids[0]);
  EXPECT_TRUE(q.claim_batch_mates(*first, 1).empty());  // the first fills the batch
  // 4 images: the first's 1, then #3 (2) and #4 (1); #1 does not match, #2 (4) does not fit.
  const auto mates = q.claim_batch_mates(*first, 4);
  ASSERT_EQ(mates.size(), 2u);
  EXPECT_EQ(mates[0].id, ids[3]);
  EXPECT_EQ(mates[1].id, ids[4]);
  for (const Job& mate : mates) {
    EXPECT_EQ(mate.status, JobStatus::running);
    EXPECT_EQ(mate.attempts, 1);
    EXPECT_EQ(q.get(mate.id)->status, JobStatus::running);
    EXPECT_EQ(batch_key(mate.request), batch_key(first->request));
  }
  // The rest stay queued, in order.
  EXPECT_EQ(q.queue_position(ids[1]), 0);
  EXPECT_EQ(q.queue_position(ids[2]), 1);
  EXPECT_EQ(q.queue_position(ids[5]), 2);
  EXPECT_EQ(q.claim(milliseconds(0))->id, ids[1]);
}

TEST(SqliteJobQueue, BatchKeysDifferInEverySettingThatSharesTheUNet) {
  const std::string key = batch_key(request());
  EXPECT_EQ(batch_key(request("another prompt", 5)), key);  // prompt and seed may differ
  for (auto change : std::vector<std::function<void(JobRequest&)>>{
           [](JobRequest& r) { r.model = "other"; }, [](JobRequest& r) { r.options.width = 512; },
           [](JobRequest& r) { r.options.height = 512; }, [](JobRequest& r) { r.options.steps = 20; },
           [](JobRequest& r) { r.options.sampler = "lms"; }, [](JobRequest& r) { r.options.timestep_spacing = ""; },
           [](JobRequest& r) { r.options.cfg_scale = 5.5000005f; }, [](JobRequest& r) { r.options.clip_skip = 0; },
           [](JobRequest& r) { r.options.cache_interval = 3; }, [](JobRequest& r) { r.options.cache_branch = 1; },
           [](JobRequest& r) { r.options.cache_schedule = "quadratic"; },
           [](JobRequest& r) { r.options.cache_center = 3; }, [](JobRequest& r) { r.options.cache_power = 1.5; }}) {
    JobRequest r = request();
    change(r);
    EXPECT_NE(batch_key(r), key) << job_request_to_json(r);
    EXPECT_FALSE(batchable(r.options, request().options) && r.model == request().model);
  }
}

TEST(SqliteJobQueue, ClaimWakesWhenAnotherThreadSubmits) {
  SqliteJobQueue q(testing::temp_dir());
  std::optional<Job> claimed;
  Clock::time_point claimed_at;
  std::thread worker([&] {
    claimed = q.claim(milliseconds(5000));
    claimed_at = Clock::now();
  });
  std::this_thread::sleep_for(milliseconds(200));  // the worker is waiting by now
  const std::string id = submit(q);
  const auto submitted_at = Clock::now();
  worker.join();
  ASSERT_TRUE(claimed);
  EXPECT_EQ(claimed->id, id);
  EXPECT_LT(claimed_at - submitted_at, milliseconds(250));
}

TEST(SqliteJobQueue, ClaimReturnsNothingAfterItsWait) {
  SqliteJobQueue q(testing::temp_dir());
  const auto start = Clock::now();
  EXPECT_FALSE(q.claim(milliseconds(150)));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, milliseconds(150));
  EXPECT_LT(waited, milliseconds(2000));
}

TEST(SqliteJobQueue, ReopeningRequeuesTheJobThatWasRunning) {
  const std::string dir = testing::temp_dir();
  std::vector<std::string> ids;
  std::string running;
  {
    SqliteJobQueue q(dir);
    for (int i = 0; i < 5; ++i) ids.push_back(q.submit(request("p", 1000 + i), "", "").job.id);
    running = q.claim(milliseconds(0))->id;
    q.set_progress(running, {0, 2, 3, 7});
  }  // the process dies here: the running job never finishes

  SqliteJobQueue q(dir);
  EXPECT_EQ(q.list(std::nullopt, 100, "").size(), 5u);
  const auto job = q.get(running);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::queued);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_EQ(job->started_ms, 0);
  EXPECT_EQ(job->request.options.seed, 1000u);
  EXPECT_EQ(job->progress.steps, 0);  // progress is not kept
  EXPECT_EQ(q.queue_position(running), 0);

  const auto again = q.claim(milliseconds(0));  // it keeps its place at the front
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, running);
  EXPECT_EQ(again->attempts, 2);
  EXPECT_EQ(again->request.options.seed, 1000u);
  for (int i = 1; i < 5; ++i) EXPECT_EQ(q.queue_position(ids[i]), i - 1);
}

TEST(SqliteJobQueue, ReopeningCancelsARunningJobWhoseCancellationWasRequested) {
  const std::string dir = testing::temp_dir();
  std::string id;
  {
    SqliteJobQueue q(dir);
    id = submit(q);
    q.claim(milliseconds(0));
    q.cancel(id);
    EXPECT_TRUE(q.cancel_requested(id));
  }
  SqliteJobQueue q(dir);
  const auto job = q.get(id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::cancelled);
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_FALSE(q.claim(milliseconds(0)));
}

TEST(SqliteJobQueue, ImagesRoundTripByteExact) {
  const std::string dir = testing::temp_dir();
  SqliteJobQueue q(dir);
  const std::string id = submit(q);
  q.claim(milliseconds(0));
  const auto first = png_bytes(10000), second = png_bytes(1);
  q.store_image(id, 0, first);
  q.store_image(id, 1, second);
  EXPECT_FALSE(q.load_image(id, 0));  // not succeeded yet
  q.succeed(id, {0xFFFFFFFFFFFFFF00ull, 0xFFFFFFFFFFFFFF01ull});

  const auto job = q.get(id);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::succeeded);
  EXPECT_EQ(job->seeds, (std::vector<uint64_t>{0xFFFFFFFFFFFFFF00ull, 0xFFFFFFFFFFFFFF01ull}));
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(q.load_image(id, 0), first);
  EXPECT_EQ(q.load_image(id, 1), second);
  EXPECT_FALSE(q.load_image(id, 2));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "results" / id / "0.png"));
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / "results" / id))
    EXPECT_EQ(entry.path().extension(), ".png") << "temporary file left: " << entry.path();
  EXPECT_THROW(q.load_image(id, -1), InvalidArgument);
  EXPECT_THROW(q.store_image(id, -1, first), InvalidArgument);
}

TEST(SqliteJobQueue, ImageCallsRefuseInvalidIdsWithoutTouchingFiles) {
  const std::string dir = testing::temp_dir();
  SqliteJobQueue q(dir);
  // What results/../x/0.png would read if the id reached a path.
  fs::create_directories(fs::path(dir) / "x");
  std::ofstream(fs::path(dir) / "x" / "0.png") << "secret";
  const std::string uppercase = "0123456789ABCDEF0123456789ABCDEF";
  for (const std::string& bad : {std::string("../x"), std::string(""), std::string(31, 'a'), uppercase}) {
    EXPECT_THROW(q.load_image(bad, 0), InvalidArgument) << bad;
    EXPECT_THROW(q.store_image(bad, 0, png_bytes(3)), InvalidArgument) << bad;
  }
  EXPECT_TRUE(fs::is_empty(fs::path(dir) / "results"));
  // A valid id of no job: nothing.
  EXPECT_FALSE(q.load_image("0123456789abcdef0123456789abcdef", 0));
}

TEST(SqliteJobQueue, CancelQueuedRunningAndFinishedJobs) {
  SqliteJobQueue q(testing::temp_dir());
  const std::string running = submit(q), queued = submit(q), done = submit(q);
  q.claim(milliseconds(0));

  auto job = q.cancel(queued);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::cancelled);
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(q.queue_position(queued), -1);

  job = q.cancel(running);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::running);  // its worker stops it
  EXPECT_TRUE(job->cancel_requested);
  EXPECT_TRUE(q.cancel_requested(running));
  q.mark_cancelled(running);
  EXPECT_EQ(q.get(running)->status, JobStatus::cancelled);

  ASSERT_EQ(q.claim(milliseconds(0))->id, done);
  q.succeed(done, {7, 8});
  job = q.cancel(done);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, JobStatus::succeeded);
  EXPECT_FALSE(job->cancel_requested);

  EXPECT_FALSE(q.cancel("0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(q.cancel_requested("0123456789abcdef0123456789abcdef"));
}

TEST(SqliteJobQueue, FinishingChangesOnlyUnfinishedJobs) {
  SqliteJobQueue q(testing::temp_dir());
  const std::string a = submit(q), b = submit(q);
  q.succeed(a, {1});  // not running: unchanged
  EXPECT_EQ(q.get(a)->status, JobStatus::queued);

  q.claim(milliseconds(0));
  q.set_progress(a, {1, 2, 3, 7});
  auto job = q.get(a);
  EXPECT_EQ(job->progress.image, 1);
  EXPECT_EQ(job->progress.images, 2);
  EXPECT_EQ(job->progress.step, 3);
  EXPECT_EQ(job->progress.steps, 7);

  q.fail(a, "out of memory");
  job = q.get(a);
  EXPECT_EQ(job->status, JobStatus::failed);
  EXPECT_EQ(job->error, "out of memory");
  EXPECT_GT(job->finished_ms, 0);
  EXPECT_EQ(job->progress.steps, 0);

  q.succeed(a, {1});
  q.mark_cancelled(a);
  EXPECT_EQ(q.get(a)->status, JobStatus::failed);
  EXPECT_EQ(q.get(b)->status, JobStatus::queued);
}

TEST(SqliteJobQueue, ListPagesInSubmissionOrderWithAStatusFilter) {
  SqliteJobQueue q(testing::temp_dir());
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(submit(q, numbered("p", i)));
  q.claim(milliseconds(0));  // ids[0] running
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
  EXPECT_TRUE(q.list(JobStatus::failed, 10, "").empty());

  EXPECT_TRUE(q.list(std::nullopt, 10, "0123456789abcdef0123456789abcdef").empty());
  EXPECT_EQ(q.list(std::nullopt, 0, "").size(), 1u);       // clamped up to 1
  EXPECT_EQ(q.list(std::nullopt, 100000, "").size(), 7u);  // and down to 1000
}

TEST(SqliteJobQueue, CountsEveryStatusAndQueuedPerOwner) {
  SqliteJobQueue q(testing::temp_dir());
  auto counts = q.counts();
  ASSERT_EQ(counts.size(), 5u);
  for (const auto& [status, n] : counts) EXPECT_EQ(n, 0) << job_status_name(status);

  const std::string a = q.submit(request(), "alice", "").job.id;
  q.submit(request(), "alice", "");
  q.submit(request(), "bob", "");
  const std::string d = q.submit(request(), "bob", "").job.id;
  q.claim(milliseconds(0));  // a
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

TEST(SqliteJobQueue, ExpireRemovesOldFinishedJobsAndTheirImages) {
  const std::string dir = testing::temp_dir();
  SqliteJobQueue q(dir);
  const std::string old_ok = submit(q), old_failed = submit(q), recent = submit(q), running = submit(q),
                    queued = submit(q);
  q.claim(milliseconds(0));
  q.store_image(old_ok, 0, png_bytes(10));
  q.succeed(old_ok, {1});
  q.claim(milliseconds(0));
  q.fail(old_failed, "boom");
  std::this_thread::sleep_for(milliseconds(20));
  const auto cutoff = std::chrono::system_clock::now();
  std::this_thread::sleep_for(milliseconds(20));
  q.claim(milliseconds(0));
  q.store_image(recent, 0, png_bytes(10));
  q.succeed(recent, {2});
  q.claim(milliseconds(0));  // running stays running

  EXPECT_EQ(q.expire(cutoff), 2);
  EXPECT_FALSE(q.get(old_ok));
  EXPECT_FALSE(q.get(old_failed));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "results" / old_ok));
  EXPECT_TRUE(q.get(recent));
  EXPECT_EQ(q.load_image(recent, 0), png_bytes(10));
  EXPECT_EQ(q.get(running)->status, JobStatus::running);
  EXPECT_EQ(q.get(queued)->status, JobStatus::queued);

  // Far in the future: every finished job, still never a queued or running one.
  EXPECT_EQ(q.expire(std::chrono::system_clock::now() + std::chrono::hours(1)), 1);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "results" / recent));
  EXPECT_EQ(q.list(std::nullopt, 10, "").size(), 2u);
  EXPECT_EQ(q.expire(std::chrono::system_clock::now() + std::chrono::hours(1)), 0);
}

TEST(SqliteJobQueue, AFolderThatCannotBeCreatedIsAnIoError) {
  const std::string dir = testing::temp_dir();
  std::ofstream(dir + "/file") << "not a folder";
  EXPECT_THROW(SqliteJobQueue(dir + "/file/queue"), IoError);
  EXPECT_THROW(SqliteJobQueue(dir + "/file"), IoError);
  try {
    SqliteJobQueue q(dir + "/file/queue");
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/file/queue"), std::string::npos) << e.what();
  }
}

// What `sqlite3 FILE "PRAGMA name"` prints.
std::string pragma(const std::string& file, const char* name) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  std::string value;
  auto keep = [](void* out, int, char** values, char**) {
    *static_cast<std::string*>(out) = values[0] ? values[0] : "";
    return 0;
  };
  EXPECT_EQ(sqlite3_exec(db, (std::string("PRAGMA ") + name).c_str(), keep, &value, nullptr), SQLITE_OK);
  sqlite3_close(db);
  return value;
}

TEST(SqliteJobQueue, TheFileIsInWalModeWithASchemaVersion) {
  const std::string dir = testing::temp_dir();
  { SqliteJobQueue q(dir); }
  EXPECT_EQ(pragma(dir + "/jobs.sqlite3", "journal_mode"), "wal");
  EXPECT_EQ(pragma(dir + "/jobs.sqlite3", "user_version"), "1");
  EXPECT_TRUE(fs::is_directory(dir + "/results"));
}

TEST(SqliteJobQueue, RefusesADatabaseFromANewerVersion) {
  const std::string dir = testing::temp_dir();
  { SqliteJobQueue q(dir); }
  pragma(dir + "/jobs.sqlite3", "user_version = 99");
  EXPECT_THROW(SqliteJobQueue q(dir), IoError);
}

TEST(SqliteJobQueue, ReopeningKeepsTheDataAndTheSchema) {
  const std::string dir = testing::temp_dir();
  std::string id;
  {
    SqliteJobQueue q(dir);
    id = q.submit(request(), "alice", "k").job.id;
  }
  SqliteJobQueue q(dir);
  const auto again = q.submit(request(), "alice", "k");
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, id);
}

TEST(SqliteJobQueue, ConcurrentSubmittersAndAWorker) {
  SqliteJobQueue q(testing::temp_dir());
  constexpr int kThreads = 4, kJobs = 50, kTotal = kThreads * kJobs;
  std::atomic<int> duplicates{0};
  std::set<std::string> claimed;
  std::thread worker([&] {
    const auto give_up = Clock::now() + std::chrono::seconds(60);
    while (static_cast<int>(claimed.size()) < kTotal && Clock::now() < give_up) {
      const auto job = q.claim(milliseconds(100));
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

}  // namespace
}  // namespace sdcpu::service
