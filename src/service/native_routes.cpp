// The native API: jobs under /v1, health and metrics (README, "sdcpu serve").
#include <chrono>
#include <thread>

#include "service/http_common.h"

namespace sdcpu::service {
namespace {

// The job `id` names, if the caller may see it: a malformed id is a 400 before any lookup; an unknown id, or one
// another API key submitted, a 404 (so ids cannot be probed).
Job visible_job(HttpContext& ctx, const std::string& id, const std::string& owner) {
  if (!is_valid_job_id(id)) throw RequestError(400, "invalid_job_id", "a job id is 32 lowercase hex digits", "id");
  std::optional<Job> job = ctx.queue.get(id);
  if (!job || job->owner != owner) throw RequestError(404, "not_found", "no such job");
  return *job;
}

int int_param(const httplib::Request& req, const std::string& name, int fallback, int lo, int hi) {
  if (!req.has_param(name)) return fallback;
  const std::string v = req.get_param_value(name);
  try {
    size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used == v.size() && n >= lo && n <= hi) return static_cast<int>(n);
  } catch (const std::exception&) {
  }
  throw RequestError(400, "invalid_request",
                     "\"" + name + "\" must be an integer between " + std::to_string(lo) + " and " + std::to_string(hi),
                     name);
}

std::string metrics_text(HttpContext& ctx) {
  const std::map<JobStatus, int64_t> counts = ctx.queue.counts();
  std::string out;
  out += "# HELP sdcpu_queue_depth Jobs waiting to run.\n# TYPE sdcpu_queue_depth gauge\n";
  const auto queued = counts.find(JobStatus::queued);
  out += "sdcpu_queue_depth " + std::to_string(queued == counts.end() ? 0 : queued->second) + "\n";
  out += "# HELP sdcpu_jobs Jobs the queue holds, by status.\n# TYPE sdcpu_jobs gauge\n";
  for (const auto& [status, n] : counts)
    out += std::string("sdcpu_jobs{status=\"") + job_status_name(status) + "\"} " + std::to_string(n) + "\n";
  out += "# HELP sdcpu_images_total Images this process generated.\n# TYPE sdcpu_images_total counter\n";
  out += "sdcpu_images_total " + std::to_string(ctx.metrics.images()) + "\n";
  out += ctx.metrics.step_seconds.render("sdcpu_step_duration_seconds", "Wall time of one denoising step.");
  out += ctx.metrics.job_seconds.render("sdcpu_job_duration_seconds", "Wall time of one job, from start to end.");
  return out;
}

// One Server-Sent Event.
std::string sse(const std::string& event, const json& data) {
  return "event: " + event + "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace

void add_native_routes(httplib::Server& server, HttpContext& ctx) {
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    reply_json(res, 200, {{"status", "ok"}});
  });

  server.Get("/readyz", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      authenticate(ctx, req);
      json models = json::array();
      for (const ServedModel& m : ctx.models) models.push_back(m.name);
      if (!ctx.queue.healthy()) throw RequestError(503, "unavailable", "the job queue is not reachable");
      reply_json(res, 200, {{"status", "ready"}, {"models", models}});
    });
  });

  server.Get("/metrics", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      authenticate(ctx, req);
      res.set_content(metrics_text(ctx), "text/plain; version=0.0.4");
    });
  });

  server.Post("/v1/jobs", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      const std::string owner = authenticate(ctx, req);
      const JobQueue::Submitted s =
          submit_job(ctx, parse_job_request(req.body), owner, req.get_header_value("Idempotency-Key"));
      json body = {{"id", s.job.id},
                   {"status", job_status_name(s.job.status)},
                   {"queue_position", s.queue_position >= 0 ? json(s.queue_position) : json(nullptr)},
                   {"seed", s.job.request.options.seed},
                   {"url", "/v1/jobs/" + s.job.id}};
      res.set_header("Location", "/v1/jobs/" + s.job.id);
      reply_json(res, s.created ? 202 : 200, body);
    });
  });

  server.Get("/v1/jobs", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      const std::string owner = authenticate(ctx, req);
      std::optional<JobStatus> status;
      if (req.has_param("status")) {
        status = parse_job_status(req.get_param_value("status"));
        if (!status)
          throw RequestError(400, "invalid_request",
                             "\"status\" must be queued, running, succeeded, failed or cancelled", "status");
      }
      const int limit = int_param(req, "limit", 50, 1, 1000);
      std::string after = req.has_param("after") ? req.get_param_value("after") : "";
      if (!after.empty() && !is_valid_job_id(after))
        throw RequestError(400, "invalid_job_id", "\"after\" must be a job id", "after");
      // Other keys' jobs are skipped, so a page may come back short; next_after continues the walk.
      json jobs = json::array();
      std::string last;
      for (const Job& job : ctx.queue.list(status, limit, after)) {
        last = job.id;
        if (job.owner == owner) jobs.push_back(job_to_json(ctx, job));
      }
      reply_json(res, 200, {{"jobs", jobs}, {"next_after", last.empty() ? json(nullptr) : json(last)}});
    });
  });

  server.Get(R"(/v1/jobs/([^/]+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      const std::string owner = authenticate(ctx, req);
      reply_json(res, 200, job_to_json(ctx, visible_job(ctx, req.matches[1], owner)));
    });
  });

  server.Delete(R"(/v1/jobs/([^/]+))", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      const std::string owner = authenticate(ctx, req);
      const Job job = visible_job(ctx, req.matches[1], owner);
      const std::optional<Job> now = ctx.queue.cancel(job.id);
      if (!now) throw RequestError(404, "not_found", "no such job");
      reply_json(res, 200, job_to_json(ctx, *now));
    });
  });

  server.Get(R"(/v1/jobs/([^/]+)/images/([0-9]+)\.png)", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      const std::string owner = authenticate(ctx, req);
      const Job job = visible_job(ctx, req.matches[1], owner);
      const int k = std::stoi(req.matches[2]);
      if (job.status != JobStatus::succeeded)
        throw RequestError(409, "not_ready", std::string("the job is ") + job_status_name(job.status));
      std::optional<std::vector<uint8_t>> png;
      if (k < static_cast<int>(job.seeds.size())) png = ctx.queue.load_image(job.id, k);
      if (!png) throw RequestError(404, "not_found", "the job has no image " + std::to_string(k));
      res.set_content(std::string(png->begin(), png->end()), "image/png");
    });
  });

  // Any other path under /v1/jobs/ holds no valid id (httplib decodes %2F before routing, so "..%2F.." lands here).
  auto malformed_id = [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      authenticate(ctx, req);
      throw RequestError(400, "invalid_job_id", "a job id is 32 lowercase hex digits", "id");
    });
  };

  // Progress as Server-Sent Events: a "progress" event whenever the job's status or step changes, then one
  // "end" event with the job's final JSON.
  server.Get(R"(/v1/jobs/([^/]+)/events)", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::native, [&] {
      const std::string owner = authenticate(ctx, req);
      const std::string id = visible_job(ctx, req.matches[1], owner).id;
      auto last = std::make_shared<std::string>();
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", [&ctx, id, last](size_t, httplib::DataSink& sink) {
        std::optional<Job> job = ctx.queue.get(id);
        if (!job) {
          sink.done();
          return true;
        }
        const json view = job_to_json(ctx, *job);
        const std::string state = std::string(job_status_name(job->status)) + "/" +
                                  std::to_string(job->progress.image) + "/" + std::to_string(job->progress.step);
        if (state != *last) {
          *last = state;
          const std::string event = sse(is_finished(job->status) ? "end" : "progress", view);
          if (!sink.write(event.data(), event.size())) return false;
        }
        if (is_finished(job->status) || ctx.stopping.load()) {
          sink.done();
          return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return sink.is_writable();
      });
    });
  });

  server.Get(R"(/v1/jobs/.*)", malformed_id);
  server.Delete(R"(/v1/jobs/.*)", malformed_id);
}

}  // namespace sdcpu::service
