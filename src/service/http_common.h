// What the route files share inside the HTTP front end (not a public interface): the server's state, error
// replies, authentication, job JSON and waiting for a job.
#pragma once
#include <httplib.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "service/http_server.h"

namespace sdcpu::service {

using nlohmann::json;

struct HttpContext {
  JobQueue& queue;
  const std::vector<ServedModel>& models;
  ServiceMetrics& metrics;
  HttpOptions options;
  // Set by HttpServer::stop(): requests waiting for a job (A1111, OpenAI, event streams) give up, so that the
  // server's threads can be joined; the jobs stay in the queue.
  std::atomic<bool> stopping{false};
};

// The caller's identity: "" without keys, else a fingerprint of the key it presented. Throws RequestError 401
// when keys are configured and the request has no valid `Authorization: Bearer KEY`.
std::string authenticate(const HttpContext& ctx, const httplib::Request& req);

// The model a request names ("" = the default). Throws RequestError 400 naming `field` for another name.
const ServedModel& find_model(const HttpContext& ctx, const std::string& name, const std::string& field = "model");

// Draws the seed if it is random, checks the queue limits (429) and queues the job. Throws RequestError.
JobQueue::Submitted submit_job(HttpContext& ctx, JobRequest request, const std::string& owner,
                               const std::string& idempotency_key = "");

// Blocks until the job is finished (polling the queue) and returns it. A client that disconnects meanwhile
// cancels nothing: the job stays in the queue and its result can be fetched later. Throws RequestError 503 when
// the server stops first.
Job wait_for_job(HttpContext& ctx, const std::string& id);

// The native JSON view of a job (GET /v1/jobs/{id}).
json job_to_json(HttpContext& ctx, const Job& job);

void reply_json(httplib::Response& res, int status, const json& body);

// Standard base64 (RFC 4648, with padding), as A1111 and OpenAI return images.
std::string base64_encode(const std::vector<uint8_t>& bytes);

// Runs a route body; a RequestError becomes a reply of its status in the native error shape
// {"error": {"code", "message", "field"}} (or `error_shape` for routes that speak another API); any other
// exception a 500 (503 when the queue's backend failed).
enum class ErrorShape { native, openai, a1111 };
void guarded(httplib::Response& res, ErrorShape shape, const std::function<void()>& body);

// The route files register their routes.
void add_native_routes(httplib::Server& server, HttpContext& ctx);
void add_a1111_routes(httplib::Server& server, HttpContext& ctx);
void add_openai_routes(httplib::Server& server, HttpContext& ctx);

}  // namespace sdcpu::service
