// The embedded job queue: one SQLite file, DIR/jobs.sqlite3, and the images under DIR/results/<id>/<k>.png.
//
// Why WAL with synchronous=FULL: the queue promises that a job submit() returned, and every state change after
// it, survives a crash or a power loss. In WAL mode, synchronous=FULL fsyncs the log at each commit, so a
// committed transaction is on disk when the call returns; readers do not block the writer. Every state change
// is one transaction. (NORMAL would be faster but may lose the last commits on power loss.)
//
// Why running jobs are requeued on open: one process owns DIR, so a job still marked running when the queue
// opens belonged to a process that died (kill -9, power loss) before finishing it. It goes back to the queue at
// its place, with its attempts and its stored seed, so it runs again and gives the same images. One whose
// cancellation had been requested is cancelled instead.
//
// One connection, guarded by a mutex: the HTTP threads and the worker take turns; claim() waits on a condition
// variable that submit() signals, so an idle worker wakes at once.
#include "service/sqlite_job_queue.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace sdcpu::service {

namespace {

namespace fs = std::filesystem;

constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order, never reused
  id TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL,
  request TEXT NOT NULL,                  -- job_request_to_json
  owner TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  seeds TEXT NOT NULL DEFAULT '[]',       -- JSON array of unsigned 64-bit integers
  error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_key ON jobs (owner, idempotency_key) WHERE idempotency_key <> '';
)";

// The columns read_job() reads, in its order.
#define JOB_COLUMNS                                                   \
  "id, status, request, owner, created_ms, started_ms, finished_ms, " \
  "attempts, cancel_requested, seeds, error"

[[noreturn]] void sqlite_error(sqlite3* db, const std::string& what) {
  throw IoError("job queue: " + what + ": " + sqlite3_errmsg(db));
}

// Runs constant SQL (pragmas, schema, transaction control); data always goes through Statement's bindings.
void exec(sqlite3* db, const char* sql, const std::string& what) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) sqlite_error(db, what);
}

// One prepared statement with bound parameters, finalized when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& what, const char* sql) : db_(db), what_(what) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) sqlite_error(db, what);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, const std::string& text) {
    return check(sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
  }
  Statement& bind(int i, int64_t value) { return check(sqlite3_bind_int64(stmt_, i, value)); }

  // True while there is a row to read; false once the statement is done.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) sqlite_error(db_, what_);
    return false;
  }
  int64_t integer(int column) { return sqlite3_column_int64(stmt_, column); }
  std::string text(int column) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return p ? std::string(p, sqlite3_column_bytes(stmt_, column)) : std::string();
  }

 private:
  Statement& check(int rc) {
    if (rc != SQLITE_OK) sqlite_error(db_, what_);
    return *this;
  }
  sqlite3* db_;
  std::string what_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT; rolled back when left without commit() (an exception, or nothing to change).
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& what) : db_(db), what_(what) { exec(db, "BEGIN IMMEDIATE", what); }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, "COMMIT", what_);
    done_ = true;
  }

 private:
  sqlite3* db_;
  std::string what_;
  bool done_ = false;
};

// Throws the IoError for errno, closing `fd` first when one is open.
[[noreturn]] void os_error(const std::string& what, const fs::path& path, int fd = -1) {
  const int error = errno;
  if (fd >= 0) ::close(fd);
  throw IoError("job queue: " + what + " " + path.string() + ": " + std::strerror(error));
}

// Makes a folder's entries (a created file or folder, a rename) durable.
void fsync_folder(const fs::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) os_error("cannot open", folder);
  if (::fsync(fd) != 0) os_error("cannot fsync", folder, fd);
  ::close(fd);
}

void create_folder(const fs::path& folder) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec || !fs::is_directory(folder))
    throw IoError("job queue: cannot create the folder " + folder.string() + ": " +
                  (ec ? ec.message() : "a file of that name is in the way"));
}

// Writes `bytes` to `path` durably: a temporary file beside it, fsynced, renamed over it, the folder fsynced.
void write_file_durably(const fs::path& path, const std::vector<uint8_t>& bytes) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) os_error("cannot create", tmp);
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno != EINTR) os_error("cannot write", tmp, fd);
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) os_error("cannot fsync", tmp, fd);
  if (::close(fd) != 0) os_error("cannot close", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) os_error("cannot rename to", path);
  fsync_folder(path.parent_path());
}

void check_image_key(const std::string& id, int k) {
  if (!is_valid_job_id(id)) throw InvalidArgument("invalid job id");
  if (k < 0) throw InvalidArgument("invalid image index " + std::to_string(k));
}

JobStatus status_from_db(const std::string& name) {
  if (auto s = parse_job_status(name)) return *s;
  throw IoError("job queue: unknown job status '" + name + "' in the database");
}

}  // namespace

struct SqliteJobQueue::Impl {
  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };

  fs::path results;
  std::unique_ptr<sqlite3, Close> connection;
  sqlite3* db = nullptr;
  std::mutex mutex;
  std::condition_variable submitted;
  std::map<std::string, JobProgress> progress;  // running jobs only; not durable

  // The functions below run with `mutex` held by their caller (the constructor needs none), except finish().

  void open(const fs::path& file) {
    sqlite3* handle = nullptr;
    const int rc = sqlite3_open_v2(file.c_str(), &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    connection.reset(handle);  // closed even when opening failed
    db = handle;
    if (rc != SQLITE_OK) sqlite_error(db, "cannot open " + file.string());
    sqlite3_busy_timeout(db, 5000);
    exec(db, "PRAGMA journal_mode=WAL", "set the journal mode");
    exec(db, "PRAGMA synchronous=FULL", "set synchronous");

    if (const int64_t version = schema_version(); version > kSchemaVersion)
      throw IoError("job queue: " + file.string() + " has schema version " + std::to_string(version) +
                    ", newer than this sdcpu's " + std::to_string(kSchemaVersion));
    Transaction t(db, "create the schema");
    exec(db, kSchema, "create the schema");
    exec(db, ("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str(), "set the schema version");
    t.commit();
  }

  int64_t schema_version() {
    Statement s(db, "read the schema version", "PRAGMA user_version");
    return s.step() ? s.integer(0) : 0;
  }

  void requeue_running() {
    Transaction t(db, "requeue running jobs");
    Statement cancel(db, "requeue running jobs",
                     "UPDATE jobs SET status = 'cancelled', finished_ms = ?1 "
                     "WHERE status = 'running' AND cancel_requested <> 0");
    cancel.bind(1, now_ms()).step();
    Statement requeue(db, "requeue running jobs",
                      "UPDATE jobs SET status = 'queued', started_ms = 0 WHERE status = 'running'");
    requeue.step();
    t.commit();
  }

  Job read_job(Statement& s) {  // a row of JOB_COLUMNS
    Job job;
    job.id = s.text(0);
    job.status = status_from_db(s.text(1));
    try {
      job.request = parse_job_request(s.text(2));
      job.seeds = nlohmann::json::parse(s.text(9)).get<std::vector<uint64_t>>();
    } catch (const std::exception& e) {
      throw IoError("job queue: job " + job.id + " is unreadable: " + e.what());
    }
    job.owner = s.text(3);
    job.created_ms = s.integer(4);
    job.started_ms = s.integer(5);
    job.finished_ms = s.integer(6);
    job.attempts = static_cast<int>(s.integer(7));
    job.cancel_requested = s.integer(8) != 0;
    job.error = s.text(10);
    if (job.status == JobStatus::running) {
      if (auto p = progress.find(job.id); p != progress.end()) job.progress = p->second;
    }
    return job;
  }

  std::optional<Job> load(const std::string& id) {
    Statement s(db, "get", "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1");
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return read_job(s);
  }

  int64_t position(const std::string& id) {
    Statement s(db, "queue_position",
                "SELECT (SELECT COUNT(*) FROM jobs AS q WHERE q.status = 'queued' AND q.seq < j.seq) "
                "FROM jobs AS j WHERE j.id = ?1 AND j.status = 'queued'");
    s.bind(1, id);
    return s.step() ? s.integer(0) : -1;
  }

  std::optional<Job> claim_next() {
    Transaction t(db, "claim");
    Statement next(db, "claim", "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1");
    if (!next.step()) return std::nullopt;
    const std::string id = next.text(0);
    Statement s(db, "claim",
                "UPDATE jobs SET status = 'running', started_ms = ?2, attempts = attempts + 1 WHERE id = ?1");
    s.bind(1, id).bind(2, now_ms()).step();
    t.commit();
    progress.erase(id);
    return load(id);
  }

  // Up to `max_images` images of queued jobs with `key`, among the next `lookahead` in order, marked running.
  std::vector<Job> claim_matching(const std::string& key, int max_images, int lookahead) {
    Transaction t(db, "claim a batch");
    std::vector<std::string> ids;
    {
      Statement next(db, "claim a batch", "SELECT id, request FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT ?1");
      next.bind(1, lookahead);
      while (max_images > 0 && next.step()) {
        JobRequest request;
        try {
          request = parse_job_request(next.text(1));
        } catch (const std::exception&) {
          continue;  // claim() gives it out alone, and its worker fails it with the reason
        }
        if (batch_key(request) != key || request.options.batch_count > max_images) continue;
        ids.push_back(next.text(0));
        max_images -= request.options.batch_count;
      }
    }
    const int64_t now = now_ms();
    for (const std::string& id : ids) {
      Statement s(db, "claim a batch",
                  "UPDATE jobs SET status = 'running', started_ms = ?2, attempts = attempts + 1 WHERE id = ?1");
      s.bind(1, id).bind(2, now).step();
    }
    t.commit();
    std::vector<Job> jobs;
    for (const std::string& id : ids) {
      progress.erase(id);
      jobs.push_back(*load(id));
    }
    return jobs;
  }

  // Under the lock (unlike the helpers above, which expect it held): runs an UPDATE that finishes a job (?1 = id,
  // ?2 = now, ?3 = the text it stores) and forgets the job's progress.
  void finish(const std::string& id, const char* what, const char* sql, const std::string& text) {
    std::lock_guard lock(mutex);
    Statement s(db, what, sql);
    s.bind(1, id).bind(2, now_ms()).bind(3, text).step();
    progress.erase(id);
  }
};

SqliteJobQueue::SqliteJobQueue(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  const fs::path root(dir);
  impl_->results = root / "results";
  create_folder(root);
  create_folder(impl_->results);
  impl_->open(root / "jobs.sqlite3");
  impl_->requeue_running();
  fsync_folder(root);  // the database's and the results folder's entries
}

SqliteJobQueue::~SqliteJobQueue() = default;

JobQueue::Submitted SqliteJobQueue::submit(const JobRequest& request, const std::string& owner,
                                           const std::string& idempotency_key) {
  if (request.options.seed == kRandomSeed) throw InvalidArgument("submit: the request's seed must be resolved");
  Submitted result;
  {
    std::lock_guard lock(impl_->mutex);
    sqlite3* db = impl_->db;
    Transaction t(db, "submit");
    std::string id;
    if (!idempotency_key.empty()) {
      Statement earlier(db, "submit", "SELECT id FROM jobs WHERE owner = ?1 AND idempotency_key = ?2");
      earlier.bind(1, owner).bind(2, idempotency_key);
      if (earlier.step()) id = earlier.text(0);
    }
    result.created = id.empty();
    if (result.created) {
      id = new_job_id();
      Statement s(db, "submit",
                  "INSERT INTO jobs (id, status, request, owner, idempotency_key, created_ms) "
                  "VALUES (?1, 'queued', ?2, ?3, ?4, ?5)");
      s.bind(1, id).bind(2, job_request_to_json(request)).bind(3, owner).bind(4, idempotency_key);
      s.bind(5, now_ms()).step();
      t.commit();
    }
    result.job = *impl_->load(id);
    result.queue_position = impl_->position(id);
  }
  if (result.created) impl_->submitted.notify_all();
  return result;
}

std::optional<Job> SqliteJobQueue::get(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  return impl_->load(id);
}

std::vector<Job> SqliteJobQueue::list(std::optional<JobStatus> status, int limit, const std::string& after_id) {
  limit = std::clamp(limit, 1, 1000);
  std::lock_guard lock(impl_->mutex);
  sqlite3* db = impl_->db;
  int64_t after_seq = 0;
  if (!after_id.empty()) {
    Statement s(db, "list", "SELECT seq FROM jobs WHERE id = ?1");
    s.bind(1, after_id);
    if (!s.step()) return {};
    after_seq = s.integer(0);
  }
  Statement s(db, "list",
              status ? "SELECT " JOB_COLUMNS " FROM jobs WHERE seq > ?1 AND status = ?3 ORDER BY seq LIMIT ?2"
                     : "SELECT " JOB_COLUMNS " FROM jobs WHERE seq > ?1 ORDER BY seq LIMIT ?2");
  s.bind(1, after_seq).bind(2, int64_t{limit});
  if (status) s.bind(3, std::string(job_status_name(*status)));
  std::vector<Job> jobs;
  while (s.step()) jobs.push_back(impl_->read_job(s));
  return jobs;
}

int64_t SqliteJobQueue::queue_position(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  return impl_->position(id);
}

std::optional<Job> SqliteJobQueue::cancel(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  // At most one of the two matches: a queued job is cancelled now, a running one is asked to stop.
  Statement queued(impl_->db, "cancel",
                   "UPDATE jobs SET status = 'cancelled', finished_ms = ?2 WHERE id = ?1 AND status = 'queued'");
  queued.bind(1, id).bind(2, now_ms()).step();
  Statement running(impl_->db, "cancel", "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'");
  running.bind(1, id).step();
  return impl_->load(id);
}

std::map<JobStatus, int64_t> SqliteJobQueue::counts() {
  std::map<JobStatus, int64_t> counts;
  for (JobStatus s :
       {JobStatus::queued, JobStatus::running, JobStatus::succeeded, JobStatus::failed, JobStatus::cancelled})
    counts[s] = 0;
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db, "counts", "SELECT status, COUNT(*) FROM jobs GROUP BY status");
  while (s.step()) counts[status_from_db(s.text(0))] = s.integer(1);
  return counts;
}

int64_t SqliteJobQueue::queued_count(const std::string& owner) {
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db, "queued_count", "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND owner = ?1");
  s.bind(1, owner).step();
  return s.integer(0);
}

bool SqliteJobQueue::healthy() {
  try {
    std::lock_guard lock(impl_->mutex);
    Statement s(impl_->db, "healthy", "SELECT 1");
    return s.step() && s.integer(0) == 1;
  } catch (const IoError&) {
    return false;
  }
}

std::optional<Job> SqliteJobQueue::claim(std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock lock(impl_->mutex);
  for (;;) {
    if (auto job = impl_->claim_next()) return job;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    impl_->submitted.wait_until(lock, deadline);
  }
}

std::vector<Job> SqliteJobQueue::claim_batch_mates(const Job& first, int max_images) {
  const int left = max_images - first.request.options.batch_count;
  if (left <= 0) return {};
  std::lock_guard lock(impl_->mutex);
  return impl_->claim_matching(batch_key(first.request), left, 32);
}

void SqliteJobQueue::set_progress(const std::string& id, const JobProgress& progress) {
  std::lock_guard lock(impl_->mutex);
  impl_->progress[id] = progress;
}

bool SqliteJobQueue::cancel_requested(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db, "cancel_requested", "SELECT cancel_requested FROM jobs WHERE id = ?1");
  s.bind(1, id);
  return s.step() && s.integer(0) != 0;
}

void SqliteJobQueue::store_image(const std::string& id, int k, const std::vector<uint8_t>& png) {
  check_image_key(id, k);
  const fs::path folder = impl_->results / id;
  std::error_code ec;
  if (fs::create_directory(folder, ec)) fsync_folder(impl_->results);
  if (ec) throw IoError("job queue: cannot create the folder " + folder.string() + ": " + ec.message());
  write_file_durably(folder / (std::to_string(k) + ".png"), png);
}

void SqliteJobQueue::succeed(const std::string& id, const std::vector<uint64_t>& seeds) {
  impl_->finish(id, "succeed",
                "UPDATE jobs SET status = 'succeeded', finished_ms = ?2, seeds = ?3 "
                "WHERE id = ?1 AND status = 'running'",
                nlohmann::json(seeds).dump());
}

void SqliteJobQueue::fail(const std::string& id, const std::string& error) {
  impl_->finish(id, "fail",
                "UPDATE jobs SET status = 'failed', finished_ms = ?2, error = ?3 "
                "WHERE id = ?1 AND status IN ('queued', 'running')",
                error);
}

void SqliteJobQueue::mark_cancelled(const std::string& id) {
  impl_->finish(id, "mark_cancelled",
                "UPDATE jobs SET status = 'cancelled', finished_ms = ?2, error = ?3 "
                "WHERE id = ?1 AND status IN ('queued', 'running')",
                "");
}

std::optional<std::vector<uint8_t>> SqliteJobQueue::load_image(const std::string& id, int k) {
  check_image_key(id, k);
  {
    std::lock_guard lock(impl_->mutex);
    Statement s(impl_->db, "load_image", "SELECT 1 FROM jobs WHERE id = ?1 AND status = 'succeeded'");
    if (!s.bind(1, id).step()) return std::nullopt;
  }
  std::ifstream in(impl_->results / id / (std::to_string(k) + ".png"), std::ios::binary);
  if (!in) return std::nullopt;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int64_t SqliteJobQueue::expire(std::chrono::system_clock::time_point cutoff) {
  const int64_t cutoff_ms = std::chrono::duration_cast<std::chrono::milliseconds>(cutoff.time_since_epoch()).count();
  std::vector<std::string> ids;
  {
    std::lock_guard lock(impl_->mutex);
    Transaction t(impl_->db, "expire");
    Statement s(impl_->db, "expire",
                "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_ms < ?1 "
                "RETURNING id");
    s.bind(1, cutoff_ms);
    while (s.step()) ids.push_back(s.text(0));
    t.commit();
  }
  // The rows go first: a crash in between leaves image files without a job (harmless), never a succeeded job
  // without its images. A folder that cannot be removed stays behind; the jobs are gone either way.
  for (const std::string& id : ids) {
    std::error_code ec;
    if (is_valid_job_id(id)) fs::remove_all(impl_->results / id, ec);
  }
  return static_cast<int64_t>(ids.size());
}

}  // namespace sdcpu::service
