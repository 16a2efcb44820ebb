// Load benchmark of `sdcpu serve`: drives a running server over HTTP (the native job API) and measures what its
// clients see. Not a Google Benchmark: one run is minutes of generation, timed from the outside.
//
// Throughput (default): --clients threads share --jobs jobs; each submits one (POST /v1/jobs), polls it
// (GET /v1/jobs/{id}) every --poll-ms until it is finished, then takes the next. Reports images/min (images of
// succeeded jobs over the wall time from the first submit to the last finish), job latency (submit to finished, as
// the client sees it), queue wait and run time (the server's timings.queue_wait_s, timings.run_s), submit latency
// (the POST round trip) and failures. --warmup N first runs N jobs one at a time, not counted (the server creates
// its kernels' primitives on its first job; `sdcpu bench` times warm runs only).
//
// Submit-only (--submit-only M): M submissions as fast as --clients threads can make them, no polling, while the
// worker is busy (--busy-body: a job submitted first and waited on until it has taken a denoising step, so that the
// weights it maps are already resident); reports the POST round trip and the server's memory growth per 1000
// queued jobs (/proc/PID/status of --server-pid, before and after: VmRSS, and RssAnon, which leaves out mapped
// weight files), then cancels every job it made (DELETE), the busy one last, and waits for it to stop, so the
// server is left idle.
//
//   build/bench_service_load --url http://127.0.0.1:7860 --clients 4 --jobs 40
//     --body '{"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 20}' --server-pid PID --json out.json
//   build/bench_service_load --url http://127.0.0.1:7860 --clients 4 --submit-only 1000 --server-pid PID
//     --busy-body '{"prompt": "busy", "width": 64, "height": 64, "steps": 1000}'
//
// Each client thread has its own connection; by default a fresh one per request (as curl makes), with
// --keep-alive 1 one kept open between requests (as SDK clients' pools do). Either way with TCP_NODELAY.
//
// bench/serve_load.sh starts a server and runs both, and `sdcpu bench` to compare against.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string url;
  int clients = 1;
  int jobs = 10;
  int warmup = 0;
  std::string body = R"({"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 20})";
  std::string api_key;
  int server_pid = 0;
  std::string json_path;
  int submit_only = 0;  // > 0: the submit-only mode with this many jobs
  std::string busy_body;
  int poll_ms = 20;
  bool keep_alive = false;  // reuse each client's connection (else one per request, as curl makes)
  double timeout_s = 3600;  // the whole run; jobs not finished by then count as failures and are cancelled
  std::string label;
};

[[noreturn]] void usage(const std::string& error) {
  std::fprintf(stderr,
               "bench_service_load: %s\n"
               "usage: bench_service_load --url http://HOST:PORT [--clients N] [--jobs M] [--warmup N]\n"
               "         [--body JSON] [--api-key K] [--server-pid PID] [--json FILE] [--poll-ms MS]\n"
               "         [--timeout-s S] [--label TEXT] [--keep-alive 0|1]\n"
               "       bench_service_load --url ... --submit-only M [--clients N] [--busy-body JSON] ...\n",
               error.c_str());
  std::exit(2);
}

int to_int(const std::string& flag, const std::string& v, int lo, int hi) {
  try {
    size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used == v.size() && n >= lo && n <= hi) return static_cast<int>(n);
  } catch (const std::exception&) {
  }
  usage(flag + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " + v);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("help");
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string v = argv[++i];
    if (flag == "--url")
      o.url = v;
    else if (flag == "--clients")
      o.clients = to_int(flag, v, 1, 30);  // the server has 32 HTTP threads
    else if (flag == "--jobs")
      o.jobs = to_int(flag, v, 1, 100000);
    else if (flag == "--warmup")
      o.warmup = to_int(flag, v, 0, 100);
    else if (flag == "--body")
      o.body = v;
    else if (flag == "--api-key")
      o.api_key = v;
    else if (flag == "--server-pid")
      o.server_pid = to_int(flag, v, 1, 1 << 30);
    else if (flag == "--json")
      o.json_path = v;
    else if (flag == "--submit-only")
      o.submit_only = to_int(flag, v, 1, 100000);
    else if (flag == "--busy-body")
      o.busy_body = v;
    else if (flag == "--poll-ms")
      o.poll_ms = to_int(flag, v, 1, 10000);
    else if (flag == "--timeout-s")
      o.timeout_s = to_int(flag, v, 1, 24 * 3600);
    else if (flag == "--label")
      o.label = v;
    else if (flag == "--keep-alive")
      o.keep_alive = to_int(flag, v, 0, 1) == 1;
    else
      usage("unknown option " + flag);
  }
  if (o.url.empty()) usage("--url is required");
  if (!json::accept(o.body)) usage("--body is not valid JSON");
  if (!o.busy_body.empty() && !json::accept(o.busy_body)) usage("--busy-body is not valid JSON");
  return o;
}

double seconds_since(Clock::time_point t0, Clock::time_point t) {
  return std::chrono::duration<double>(t - t0).count();
}

// Linear interpolation between the closest ranks (numpy's default); NaN for no samples.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank)), hi = static_cast<size_t>(std::ceil(rank));
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

json number_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

json summary(const std::vector<double>& v) {
  double mean = std::nan("");
  if (!v.empty()) {
    mean = 0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
  }
  return {{"n", v.size()},
          {"p50", number_or_null(percentile(v, 50))},
          {"p95", number_or_null(percentile(v, 95))},
          {"max", number_or_null(v.empty() ? std::nan("") : *std::max_element(v.begin(), v.end()))},
          {"mean", number_or_null(mean)}};
}

// The server's memory from /proc/PID/status, in MB (1 MB = 1024 KiB as the kernel counts kB).
struct ServerMemory {
  bool read = false;
  double vm_rss_mb = 0, vm_hwm_mb = 0, rss_anon_mb = 0, rss_file_mb = 0;
};

ServerMemory read_memory(int pid) {
  ServerMemory m;
  if (pid <= 0) return m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string key;
    double kb = 0;
    if (!(s >> key >> kb)) continue;
    if (key == "VmRSS:")
      m.vm_rss_mb = kb / 1024, m.read = true;
    else if (key == "VmHWM:")
      m.vm_hwm_mb = kb / 1024;
    else if (key == "RssAnon:")
      m.rss_anon_mb = kb / 1024;
    else if (key == "RssFile:")
      m.rss_file_mb = kb / 1024;
  }
  return m;
}

json memory_json(const ServerMemory& m) {
  if (!m.read) return nullptr;
  return {{"vm_rss_mb", m.vm_rss_mb},
          {"vm_hwm_mb", m.vm_hwm_mb},
          {"rss_anon_mb", m.rss_anon_mb},
          {"rss_file_mb", m.rss_file_mb}};
}

// One HTTP client per thread (httplib's Client is not thread-safe). TCP_NODELAY as curl, Python's http.client and
// browsers set it: httplib writes a request's headers and body in two send() calls, and without it the body waits
// for the server's delayed ACK (40 ms) and the POST round trip measures Nagle's algorithm, not the server.
class Api {
 public:
  explicit Api(const Options& o) : client_(o.url) {
    client_.set_keep_alive(o.keep_alive);
    client_.set_tcp_nodelay(true);
    client_.set_connection_timeout(5, 0);
    client_.set_read_timeout(60, 0);
    client_.set_write_timeout(10, 0);
    if (!o.api_key.empty()) client_.set_bearer_token_auth(o.api_key);
  }

  struct Reply {
    int status = 0;  // 0: no reply (the error says why)
    json body;
    std::string error;
  };

  Reply post(const std::string& path, const std::string& body) {
    return reply(client_.Post(path, body, "application/json"));
  }
  Reply get(const std::string& path) { return reply(client_.Get(path)); }
  Reply del(const std::string& path) { return reply(client_.Delete(path)); }

 private:
  static Reply reply(const httplib::Result& r) {
    Reply out;
    if (!r) {
      out.error = "no reply: " + httplib::to_string(r.error());
      return out;
    }
    out.status = r->status;
    out.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    if (out.status >= 300) {
      out.error = "HTTP " + std::to_string(out.status);
      if (out.body.is_object() && out.body.contains("error") && out.body["error"].is_object())
        out.error += ": " + out.body["error"].value("message", std::string());
      else
        out.error += ": " + r->body.substr(0, 200);
    }
    return out;
  }
  httplib::Client client_;
};

// Failures, counted by message; the first few kept whole.
class Failures {
 public:
  void add(const std::string& what) {
    std::lock_guard lock(mutex_);
    ++count_;
    ++by_message_[what];
  }
  int count() const { return count_; }
  json to_json() const {
    json j = json::object();
    for (const auto& [message, n] : by_message_) j[message] = n;
    return j;
  }
  void print() const {
    for (const auto& [message, n] : by_message_) std::printf("  failure x%d: %s\n", n, message.c_str());
  }

 private:
  mutable std::mutex mutex_;
  int count_ = 0;
  std::map<std::string, int> by_message_;
};

bool is_finished(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "cancelled";
}

// Polls a job until it is finished or `deadline`; nullopt on time-out or when it cannot be read (`error` says why).
std::optional<json> wait_finished(Api& api, const std::string& id, int poll_ms, Clock::time_point deadline,
                                  std::string& error) {
  int misses = 0;
  for (;;) {
    Api::Reply r = api.get("/v1/jobs/" + id);
    if (r.status == 200 && r.body.is_object()) {
      misses = 0;
      if (is_finished(r.body.value("status", std::string()))) return r.body;
    } else if (++misses >= 5) {  // a dropped connection is retried; five in a row is a failure
      error = "polling: " + r.error;
      return std::nullopt;
    }
    if (Clock::now() >= deadline) {
      error = "timed out waiting for the job";
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
}

double timing(const json& job, const char* key) {
  if (!job.contains("timings") || !job["timings"].is_object() || !job["timings"].contains(key)) return std::nan("");
  return job["timings"][key].get<double>();
}

struct JobRecord {
  double submit_start_s = 0, submit_ms = 0, finished_s = 0;
  double queue_wait_s = std::nan(""), run_s = std::nan("");
  int images = 0;
  bool succeeded = false;
};

void write_json(const Options& o, const json& report) {
  if (o.json_path.empty()) return;
  std::ofstream out(o.json_path);
  out << report.dump(2) << "\n";
  if (!out) {
    std::fprintf(stderr, "bench_service_load: cannot write %s\n", o.json_path.c_str());
    std::exit(1);
  }
}

double unix_now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

json base_report(const Options& o, const char* mode) {
  return {{"mode", mode},         {"started_unix", unix_now()},  {"label", o.label},     {"url", o.url},
          {"clients", o.clients}, {"body", json::parse(o.body)}, {"poll_ms", o.poll_ms}, {"keep_alive", o.keep_alive}};
}

// Submits one job; fills the submit timing. Returns its id, or "" after recording the failure.
std::string submit(Api& api, const std::string& body, Clock::time_point t0, JobRecord& rec, Failures& failures) {
  const auto start = Clock::now();
  Api::Reply r = api.post("/v1/jobs", body);
  const auto end = Clock::now();
  rec.submit_start_s = seconds_since(t0, start);
  rec.submit_ms = seconds_since(start, end) * 1000;
  if ((r.status != 202 && r.status != 200) || !r.body.is_object() || !r.body.contains("id")) {
    failures.add("submit: " + (r.error.empty() ? "reply without an id" : r.error));
    return "";
  }
  return r.body["id"].get<std::string>();
}

int run_throughput(const Options& o) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
  json report = base_report(o, "throughput");
  report["jobs"] = o.jobs;
  report["warmup"] = o.warmup;

  // Warm-up: one job at a time, not counted.
  json warmups = json::array();
  {
    Api api(o);
    Failures ignored;
    for (int i = 0; i < o.warmup; ++i) {
      JobRecord rec;
      const auto t = Clock::now();
      const std::string id = submit(api, o.body, t, rec, ignored);
      std::string error;
      std::optional<json> job = id.empty() ? std::nullopt : wait_finished(api, id, o.poll_ms, deadline, error);
      const double s = seconds_since(t, Clock::now());
      const std::string status = job ? job->value("status", std::string("?")) : "error: " + error;
      std::printf("warm-up job %d: %s in %.3f s (run %.3f s)\n", i + 1, status.c_str(), s,
                  job ? timing(*job, "run_s") : std::nan(""));
      warmups.push_back({{"status", status},
                         {"latency_s", s},
                         {"run_s", job ? number_or_null(timing(*job, "run_s")) : json(nullptr)}});
    }
  }
  report["warmup_jobs"] = warmups;

  const ServerMemory before = read_memory(o.server_pid);
  Failures failures;
  std::vector<JobRecord> records(static_cast<size_t>(o.jobs));
  std::atomic<int> next{0};
  report["t0_unix"] = unix_now();
  const auto t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c) {
    clients.emplace_back([&] {
      Api api(o);
      for (int i; (i = next.fetch_add(1)) < o.jobs;) {
        JobRecord& rec = records[static_cast<size_t>(i)];
        if (Clock::now() >= deadline) {
          failures.add("not submitted: the run timed out");
          continue;
        }
        const std::string id = submit(api, o.body, t0, rec, failures);
        if (id.empty()) {
          rec.finished_s = seconds_since(t0, Clock::now());
          continue;
        }
        std::string error;
        std::optional<json> job = wait_finished(api, id, o.poll_ms, deadline, error);
        rec.finished_s = seconds_since(t0, Clock::now());
        if (!job) {
          failures.add(error);
          api.del("/v1/jobs/" + id);  // leave nothing behind
          continue;
        }
        rec.queue_wait_s = timing(*job, "queue_wait_s");
        rec.run_s = timing(*job, "run_s");
        const std::string status = job->value("status", std::string());
        if (status == "succeeded") {
          rec.succeeded = true;
          rec.images = static_cast<int>((*job)["images"].size());
        } else {
          failures.add("job " + status +
                       (job->contains("error") && (*job)["error"].is_string()
                            ? ": " + (*job)["error"].get<std::string>()
                            : std::string()));
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const ServerMemory after = read_memory(o.server_pid);

  std::vector<double> latency, queue_wait, run, submit_ms;
  double first_submit = INFINITY, last_finish = 0;
  int images = 0, succeeded = 0;
  for (const JobRecord& r : records) {
    if (r.submit_ms <= 0) continue;  // never submitted (the run timed out)
    submit_ms.push_back(r.submit_ms);
    first_submit = std::min(first_submit, r.submit_start_s);
    last_finish = std::max(last_finish, r.finished_s);
    if (!r.succeeded) continue;
    ++succeeded;
    images += r.images;
    latency.push_back(r.finished_s - r.submit_start_s);
    if (std::isfinite(r.queue_wait_s)) queue_wait.push_back(r.queue_wait_s);
    if (std::isfinite(r.run_s)) run.push_back(r.run_s);
  }
  const double wall = std::isfinite(first_submit) ? last_finish - first_submit : 0;
  const double per_min = wall > 0 ? 60.0 * images / wall : 0;

  report["succeeded"] = succeeded;
  report["images"] = images;
  report["failures"] = failures.count();
  report["failure_messages"] = failures.to_json();
  report["wall_s"] = wall;
  report["images_per_min"] = per_min;
  report["job_latency_s"] = summary(latency);
  json per_job = json::array();  // seconds from t0_unix, for lining runs up with what else the machine did
  for (const JobRecord& r : records)
    per_job.push_back({{"submit_s", r.submit_start_s},
                       {"finished_s", r.finished_s},
                       {"succeeded", r.succeeded},
                       {"queue_wait_s", number_or_null(r.queue_wait_s)},
                       {"run_s", number_or_null(r.run_s)}});
  report["per_job"] = per_job;
  report["queue_wait_s"] = summary(queue_wait);
  report["run_s"] = summary(run);
  report["submit_ms"] = summary(submit_ms);
  report["server_memory_before"] = memory_json(before);
  report["server_memory_after"] = memory_json(after);
  write_json(o, report);

  std::printf("throughput%s%s: %d clients, %d jobs (%d succeeded, %d images), %d failures; %s\n",
              o.label.empty() ? "" : " ", o.label.c_str(), o.clients, o.jobs, succeeded, images, failures.count(),
              o.keep_alive ? "keep-alive connections" : "a connection per request");
  std::printf("  images/min       %.3f  (%d images in %.3f s, first submit to last finish)\n", per_min, images, wall);
  std::printf("  job latency      p50 %.3f s  p95 %.3f s\n", percentile(latency, 50), percentile(latency, 95));
  std::printf("  queue wait       p50 %.3f s  p95 %.3f s\n", percentile(queue_wait, 50), percentile(queue_wait, 95));
  std::printf("  run time         p50 %.3f s\n", percentile(run, 50));
  std::printf("  submit latency   p50 %.2f ms  p95 %.2f ms  max %.2f ms\n", percentile(submit_ms, 50),
              percentile(submit_ms, 95),
              submit_ms.empty() ? NAN : *std::max_element(submit_ms.begin(), submit_ms.end()));
  if (after.read)
    std::printf("  server memory    VmRSS %.1f MB (%.1f before), VmHWM %.1f MB\n", after.vm_rss_mb, before.vm_rss_mb,
                after.vm_hwm_mb);
  failures.print();
  return failures.count() == 0 ? 0 : 1;
}

int run_submit_only(const Options& o) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
  json report = base_report(o, "submit_only");
  report["jobs"] = o.submit_only;
  Api api(o);

  // The job that keeps the worker busy: submitted first, waited on until it has taken a denoising step (so that
  // the memory read before the submissions already holds what the running job maps: the UNet's weights).
  std::string busy_id;
  if (!o.busy_body.empty()) {
    report["busy_body"] = json::parse(o.busy_body);
    Api::Reply r = api.post("/v1/jobs", o.busy_body);
    if (r.status != 202 || !r.body.is_object() || !r.body.contains("id")) {
      std::fprintf(stderr, "bench_service_load: submitting the busy job: %s\n", r.error.c_str());
      return 1;
    }
    busy_id = r.body["id"].get<std::string>();
    const auto limit = Clock::now() + std::chrono::seconds(300);
    for (;;) {
      Api::Reply g = api.get("/v1/jobs/" + busy_id);
      const std::string status = g.body.is_object() ? g.body.value("status", std::string()) : "";
      if (status == "running" && g.body.contains("progress") && g.body["progress"].value("step", 0) >= 1) break;
      if (is_finished(status) || Clock::now() >= limit) {
        std::fprintf(stderr, "bench_service_load: the busy job did not start running (%s)\n",
                     status.empty() ? g.error.c_str() : status.c_str());
        api.del("/v1/jobs/" + busy_id);
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_ms));
    }
    std::printf("busy job %s is running (past its first step)\n", busy_id.c_str());
  }

  const ServerMemory before = read_memory(o.server_pid);
  Failures failures;
  std::vector<JobRecord> records(static_cast<size_t>(o.submit_only));
  std::vector<std::string> ids(static_cast<size_t>(o.submit_only));
  std::atomic<int> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c) {
    clients.emplace_back([&] {
      Api client(o);
      for (int i; (i = next.fetch_add(1)) < o.submit_only;) {
        if (Clock::now() >= deadline) {
          failures.add("not submitted: the run timed out");
          continue;
        }
        ids[static_cast<size_t>(i)] = submit(client, o.body, t0, records[static_cast<size_t>(i)], failures);
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const double wall = seconds_since(t0, Clock::now());
  const ServerMemory after = read_memory(o.server_pid);

  // Was the worker busy throughout? The busy job must still be running now.
  std::string busy_status_after;
  if (!busy_id.empty()) {
    Api::Reply g = api.get("/v1/jobs/" + busy_id);
    busy_status_after = g.body.is_object() ? g.body.value("status", std::string("?")) : "error: " + g.error;
    if (g.body.is_object() && g.body.contains("progress"))
      report["busy_job_progress_after_submits"] = g.body["progress"];
  }
  int64_t queue_depth = -1;
  {
    httplib::Client raw(o.url);
    raw.set_tcp_nodelay(true);
    if (!o.api_key.empty()) raw.set_bearer_token_auth(o.api_key);
    if (auto r = raw.Get("/metrics"); r && r->status == 200) {
      std::istringstream lines(r->body);
      std::string line;
      while (std::getline(lines, line))
        if (line.rfind("sdcpu_queue_depth ", 0) == 0) queue_depth = std::stoll(line.substr(18));
    }
  }

  std::vector<double> submit_ms;
  int accepted = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].submit_ms > 0) submit_ms.push_back(records[i].submit_ms);
    accepted += !ids[i].empty();
  }
  const double growth_mb = after.vm_rss_mb - before.vm_rss_mb;
  const double anon_growth_mb = after.rss_anon_mb - before.rss_anon_mb;
  const double per_1000 = accepted > 0 ? growth_mb * 1000.0 / accepted : std::nan("");
  const double anon_per_1000 = accepted > 0 ? anon_growth_mb * 1000.0 / accepted : std::nan("");

  // Cancel everything this run queued, then the busy job, and wait for the worker to be idle.
  const auto cancel_start = Clock::now();
  std::atomic<int> cancel_next{0}, cancel_failures{0};
  clients.clear();
  for (int c = 0; c < o.clients; ++c) {
    clients.emplace_back([&] {
      Api client(o);
      for (int i; (i = cancel_next.fetch_add(1)) < o.submit_only;) {
        const std::string& id = ids[static_cast<size_t>(i)];
        if (id.empty()) continue;
        Api::Reply r = client.del("/v1/jobs/" + id);
        const std::string status = r.body.is_object() ? r.body.value("status", std::string()) : "";
        if (r.status != 200 || !is_finished(status)) ++cancel_failures;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  std::string busy_final;
  if (!busy_id.empty()) {
    api.del("/v1/jobs/" + busy_id);
    std::string error;
    std::optional<json> job = wait_finished(api, busy_id, o.poll_ms, Clock::now() + std::chrono::seconds(300), error);
    busy_final = job ? job->value("status", std::string("?")) : error;
  }
  const double cancel_s = seconds_since(cancel_start, Clock::now());

  report["accepted"] = accepted;
  report["failures"] = failures.count();
  report["failure_messages"] = failures.to_json();
  report["wall_s"] = wall;
  report["submits_per_s"] = wall > 0 ? accepted / wall : 0;
  report["submit_ms"] = summary(submit_ms);
  report["server_memory_before"] = memory_json(before);
  report["server_memory_after"] = memory_json(after);
  report["rss_growth_mb"] = before.read ? json(growth_mb) : json(nullptr);
  report["rss_growth_mb_per_1000_jobs"] = before.read ? number_or_null(per_1000) : json(nullptr);
  report["rss_anon_growth_mb_per_1000_jobs"] = before.read ? number_or_null(anon_per_1000) : json(nullptr);
  report["queue_depth_after"] = queue_depth;
  report["busy_job_status_after_submits"] = busy_id.empty() ? json(nullptr) : json(busy_status_after);
  report["busy_job_final_status"] = busy_id.empty() ? json(nullptr) : json(busy_final);
  report["cancel_s"] = cancel_s;
  report["cancel_failures"] = cancel_failures.load();
  write_json(o, report);

  std::printf("submit-only%s%s: %d clients, %d jobs (%d accepted) in %.2f s, %d failures; %s\n",
              o.label.empty() ? "" : " ", o.label.c_str(), o.clients, o.submit_only, accepted, wall, failures.count(),
              o.keep_alive ? "keep-alive connections" : "a connection per request");
  std::printf("  submit latency   p50 %.2f ms  p95 %.2f ms  max %.2f ms\n", percentile(submit_ms, 50),
              percentile(submit_ms, 95),
              submit_ms.empty() ? NAN : *std::max_element(submit_ms.begin(), submit_ms.end()));
  if (before.read) {
    std::printf("  server VmRSS     %.1f -> %.1f MB: %+.2f MB, %+.2f MB per 1000 queued jobs\n", before.vm_rss_mb,
                after.vm_rss_mb, growth_mb, per_1000);
    std::printf("  server RssAnon   %.1f -> %.1f MB: %+.2f MB per 1000 (VmHWM %.1f MB)\n", before.rss_anon_mb,
                after.rss_anon_mb, anon_per_1000, after.vm_hwm_mb);
  }
  std::printf("  queue depth after: %lld; busy job after the submits: %s\n", static_cast<long long>(queue_depth),
              busy_id.empty() ? "(none)" : busy_status_after.c_str());
  std::printf("  cancelled all in %.2f s (%d cancel failures); busy job: %s\n", cancel_s, cancel_failures.load(),
              busy_id.empty() ? "(none)" : busy_final.c_str());
  failures.print();
  const bool busy_ok = busy_id.empty() || busy_status_after == "running";
  if (!busy_ok)
    std::printf("  WARNING: the busy job finished before the submits did; the worker was not busy throughout\n");
  return failures.count() == 0 && cancel_failures.load() == 0 && busy_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    return o.submit_only > 0 ? run_submit_only(o) : run_throughput(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_service_load: %s\n", e.what());
    return 1;
  }
}
