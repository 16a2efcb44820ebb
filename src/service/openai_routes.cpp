// OpenAI's image generation route (POST /v1/images/generations), served from the same queue, so the official
// clients work against sdcpu: {prompt, n, size "WxH", response_format "url" | "b64_json", model} ->
// {created, data: [{url} | {b64_json}]}, errors in OpenAI's shape.
#include "service/http_common.h"

namespace sdcpu::service {
namespace {

[[noreturn]] void bad(const std::string& field, const std::string& why) {
  throw RequestError(400, "invalid_value", "'" + field + "' " + why, field);
}

struct ImagesRequest {
  JobRequest job;
  std::string response_format = "url";  // OpenAI's default
};

ImagesRequest parse_images_request(const std::string& body) {
  json r;
  try {
    r = json::parse(body);
  } catch (const json::exception& e) {
    throw RequestError(400, "invalid_json", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!r.is_object()) throw RequestError(400, "invalid_json", "the body must be a JSON object");
  ImagesRequest out;
  GenerateOptions& o = out.job.options;
  o.seed = kRandomSeed;  // OpenAI has no seed: every request draws one (returned in the job's record)
  bool has_prompt = false;
  for (const auto& [key, v] : r.items()) {
    if (v.is_null()) continue;
    if (key == "prompt") {
      if (!v.is_string() || v.get<std::string>().empty()) bad(key, "must be a non-empty string");
      o.prompt = v.get<std::string>();
      has_prompt = true;
    } else if (key == "n") {
      if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 10)
        bad(key, "must be an integer from 1 to 10");
      o.batch_count = static_cast<int>(v.get<int64_t>());
    } else if (key == "size") {
      int w = 0, h = 0;
      char tail = 0;
      if (!v.is_string() || std::sscanf(v.get<std::string>().c_str(), "%5dx%5d%c", &w, &h, &tail) != 2)
        bad(key, "must be \"WIDTHxHEIGHT\", e.g. \"512x512\"");
      o.width = w;
      o.height = h;
    } else if (key == "response_format") {
      if (!v.is_string() || (v.get<std::string>() != "url" && v.get<std::string>() != "b64_json"))
        bad(key, "must be \"url\" or \"b64_json\"");
      out.response_format = v.get<std::string>();
    } else if (key == "model") {
      if (!v.is_string()) bad(key, "must be a string");
      out.job.model = v.get<std::string>();
    } else if (key == "quality" || key == "style" || key == "user") {
      if (!v.is_string()) bad(key, "must be a string");  // accepted; they do not apply to these models
    } else {
      throw RequestError(400, "unknown_parameter", "Unrecognized request argument supplied: " + key, key);
    }
  }
  if (!has_prompt) bad("prompt", "is required");
  try {
    validate(o);
  } catch (const InvalidArgument& e) {
    const std::string field = e.field();
    // The request's own names for what validate() calls width/height and batch_count.
    throw RequestError(400, "invalid_value", e.what(),
                       field == "width" || field == "height" ? "size"
                       : field == "batch_count"              ? "n"
                                                             : field);
  }
  return out;
}

}  // namespace

void add_openai_routes(httplib::Server& server, HttpContext& ctx) {
  server.Post("/v1/images/generations", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::openai, [&] {
      const std::string owner = authenticate(ctx, req);
      const ImagesRequest request = parse_images_request(req.body);
      const JobQueue::Submitted submitted = submit_job(ctx, request.job, owner);
      const Job job = wait_for_job(ctx, submitted.job.id);
      if (job.status != JobStatus::succeeded)
        throw RequestError(500, job_status_name(job.status), job.error.empty() ? "the job was cancelled" : job.error);
      json data = json::array();
      for (size_t k = 0; k < job.seeds.size(); ++k) {
        const std::string path = "/v1/jobs/" + job.id + "/images/" + std::to_string(k) + ".png";
        if (request.response_format == "url") {
          // Absolute, as OpenAI's are; the host is the one the client reached.
          data.push_back({{"url", "http://" + req.get_header_value("Host") + path}});
        } else {
          const std::optional<std::vector<uint8_t>> png = ctx.queue.load_image(job.id, static_cast<int>(k));
          if (!png) throw RequestError(500, "missing_image", "a result image is missing");
          data.push_back({{"b64_json", base64_encode(*png)}});
        }
      }
      reply_json(res, 200, {{"created", job.created_ms / 1000}, {"data", data}});
    });
  });
}

}  // namespace sdcpu::service
