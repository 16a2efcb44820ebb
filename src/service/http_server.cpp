#include "service/http_server.h"

#include <fstream>
#include <thread>

#include "core/error.h"
#include "service/http_common.h"

namespace sdcpu::service {
namespace {

// 64-bit FNV-1a as 16 hex digits: names which key submitted a job without storing the key.
std::string fingerprint(const std::string& key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

// Compares in time that depends only on the lengths, not on where the first difference is.
bool constant_time_equals(const std::string& a, const std::string& b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() != b.size();
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

json error_body(ErrorShape shape, int status, const std::string& code, const std::string& message,
                const std::string& field) {
  switch (shape) {
    case ErrorShape::openai:  // https://platform.openai.com/docs/guides/error-codes: {"error": {message, type, ...}}
      return {{"error",
               {{"message", message},
                {"type", status == 401   ? "authentication_error"
                         : status >= 500 ? "server_error"
                                         : "invalid_request_error"},
                {"param", field.empty() ? json(nullptr) : json(field)},
                {"code", code}}}};
    case ErrorShape::a1111:  // FastAPI's HTTPException shape, as AUTOMATIC1111's API answers
      return {{"error", code}, {"detail", message}};
    case ErrorShape::native:
      break;
  }
  json e = {{"code", code}, {"message", message}};
  if (!field.empty()) e["field"] = field;
  return {{"error", e}};
}

}  // namespace

std::string base64_encode(const std::vector<uint8_t>& bytes) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(v >> shift) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint32_t{bytes[i]} << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

void reply_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Replace rather than throw on invalid UTF-8: a message may quote what a client sent.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void guarded(httplib::Response& res, ErrorShape shape, const std::function<void()>& body) {
  try {
    body();
  } catch (const RequestError& e) {
    if (e.status == 429) res.set_header("Retry-After", "5");
    if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
    reply_json(res, e.status, error_body(shape, e.status, e.code, e.what(), e.field));
  } catch (const InvalidArgument& e) {
    reply_json(res, 400, error_body(shape, 400, "invalid_request", e.what(), ""));
  } catch (const IoError& e) {
    reply_json(res, 503, error_body(shape, 503, "unavailable", std::string("the job queue failed: ") + e.what(), ""));
  } catch (const std::exception& e) {
    reply_json(res, 500, error_body(shape, 500, "internal_error", e.what(), ""));
  }
}

std::string authenticate(const HttpContext& ctx, const httplib::Request& req) {
  if (ctx.options.api_keys.empty()) return "";
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (header.compare(0, prefix.size(), prefix) == 0) {
    const std::string key = header.substr(prefix.size());
    bool match = false;
    for (const std::string& k : ctx.options.api_keys) match |= constant_time_equals(key, k);  // no early exit
    if (match) return fingerprint(key);
  }
  throw RequestError(401, "unauthorized", "a valid API key is required: Authorization: Bearer KEY");
}

const ServedModel& find_model(const HttpContext& ctx, const std::string& name, const std::string& field) {
  if (name.empty()) return ctx.models.front();
  for (const ServedModel& m : ctx.models)
    if (m.name == name) return m;
  std::string list;
  for (const ServedModel& m : ctx.models) list += (list.empty() ? "" : ", ") + m.name;
  throw RequestError(400, "unknown_model", "unknown model \"" + name + "\"; this server has: " + list, field);
}

JobQueue::Submitted submit_job(HttpContext& ctx, JobRequest request, const std::string& owner,
                               const std::string& idempotency_key) {
  request.model = find_model(ctx, request.model).name;
  if (request.options.seed == kRandomSeed) request.options.seed = random_seed();  // stored: a rerun is the same
  if (idempotency_key.size() > 256)
    throw RequestError(400, "invalid_request", "Idempotency-Key is longer than 256 bytes", "Idempotency-Key");
  const std::map<JobStatus, int64_t> counts = ctx.queue.counts();
  const auto queued = counts.find(JobStatus::queued);
  if (queued != counts.end() && queued->second >= ctx.options.max_queue)
    throw RequestError(429, "queue_full",
                       "the queue is full (" + std::to_string(ctx.options.max_queue) + " jobs); retry later");
  if (!owner.empty() && ctx.queue.queued_count(owner) >= ctx.options.max_queued_per_key)
    throw RequestError(429, "too_many_jobs",
                       "this API key has " + std::to_string(ctx.options.max_queued_per_key) + " jobs queued");
  return ctx.queue.submit(request, owner, idempotency_key);
}

Job wait_for_job(HttpContext& ctx, const std::string& id) {
  for (;;) {
    if (ctx.stopping.load())
      throw RequestError(503, "shutting_down",
                         "the server is stopping; the job stays queued: GET /v1/jobs/" + id + " after the restart");
    std::optional<Job> job = ctx.queue.get(id);
    if (!job) throw RequestError(404, "not_found", "the job is gone");
    if (is_finished(job->status)) return *job;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

json job_to_json(HttpContext& ctx, const Job& job) {
  JobProgress progress = job.progress;
  if (job.status == JobStatus::succeeded)  // the worker's progress ends with the job: show it complete
    progress = {job.request.options.batch_count, job.request.options.batch_count, job.request.options.steps,
                job.request.options.steps};
  json j = {{"id", job.id},
            {"status", job_status_name(job.status)},
            {"model", job.request.model},
            {"request", json::parse(job_request_to_json(job.request))},
            {"attempts", job.attempts},
            {"created_ms", job.created_ms},
            {"started_ms", job.started_ms ? json(job.started_ms) : json(nullptr)},
            {"finished_ms", job.finished_ms ? json(job.finished_ms) : json(nullptr)}};
  j["queue_position"] = job.status == JobStatus::queued ? json(ctx.queue.queue_position(job.id)) : json(nullptr);
  j["progress"] = {{"image", progress.image},
                   {"images", job.request.options.batch_count},
                   {"step", progress.step},
                   {"steps", progress.steps}};
  json timings = json::object();
  if (job.started_ms) timings["queue_wait_s"] = (job.started_ms - job.created_ms) / 1000.0;
  if (job.finished_ms && job.started_ms) timings["run_s"] = (job.finished_ms - job.started_ms) / 1000.0;
  j["timings"] = timings;
  j["cancel_requested"] = job.cancel_requested;
  j["error"] = job.error.empty() ? json(nullptr) : json(job.error);
  json images = json::array();
  if (job.status == JobStatus::succeeded)
    for (size_t k = 0; k < job.seeds.size(); ++k)
      images.push_back(
          {{"url", "/v1/jobs/" + job.id + "/images/" + std::to_string(k) + ".png"}, {"seed", job.seeds[k]}});
  j["images"] = images;
  return j;
}

struct HttpServer::Impl {
  Impl(JobQueue& queue, const std::vector<ServedModel>& models, ServiceMetrics& metrics, HttpOptions options)
      : ctx{queue, models, metrics, std::move(options)} {}
  HttpContext ctx;
  httplib::Server server;
};

HttpServer::HttpServer(JobQueue& queue, const std::vector<ServedModel>& models, ServiceMetrics& metrics,
                       HttpOptions options)
    : impl_(std::make_unique<Impl>(queue, models, metrics, std::move(options))) {
  if (models.empty()) throw InvalidArgument("the service needs at least one model");
  httplib::Server& server = impl_->server;
  const int threads = impl_->ctx.options.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_payload_max_length(impl_->ctx.options.max_body_bytes);
  server.set_read_timeout(10, 0);
  // Replies are written as headers then body: without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK
  // hold every reply on a kept-alive connection back by ~40 ms.
  server.set_tcp_nodelay(true);
  // Replies httplib makes itself (no such route, a body over the limit, a malformed request) get a JSON body.
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const bool too_large = res.status == 413;
    const std::string code = res.status == 404 ? "not_found" : too_large ? "body_too_large" : "bad_request";
    const std::string message = res.status == 404 ? "no such route"
                                : too_large       ? "the request body is larger than the server accepts"
                                                  : "malformed request";
    reply_json(res, res.status, json{{"error", json{{"code", code}, {"message", message}}}});
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    reply_json(res, 500, json{{"error", json{{"code", "internal_error"}, {"message", "internal error"}}}});
  });
  add_native_routes(server, impl_->ctx);
  add_a1111_routes(server, impl_->ctx);
  add_openai_routes(server, impl_->ctx);
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind(const std::string& host, int port) {
  const int bound =
      port == 0 ? impl_->server.bind_to_any_port(host) : (impl_->server.bind_to_port(host, port) ? port : -1);
  if (bound < 0) throw IoError("cannot listen on " + host + ":" + std::to_string(port));
  return bound;
}

void HttpServer::serve() { impl_->server.listen_after_bind(); }

void HttpServer::stop() {
  impl_->ctx.stopping.store(true);
  impl_->server.stop();
}

std::vector<std::string> read_api_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot read the API key file " + path);
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const size_t e = line.find_last_not_of(" \t\r");
    keys.push_back(line.substr(b, e - b + 1));
  }
  if (keys.empty()) throw InvalidArgument("the API key file " + path + " holds no key");
  return keys;
}

}  // namespace sdcpu::service
