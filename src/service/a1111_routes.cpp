// AUTOMATIC1111's web UI API (modules/api/api.py, modules/api/models.py), served from the same queue: a txt2img
// request becomes a job, and the route answers when the job is done. Front ends written for A1111's API work
// unchanged for what sdcpu does; options that would change the picture in ways sdcpu does not implement (hires
// fix, face restoration, tiling, variation seeds, scripts) are refused rather than ignored.
#include <algorithm>
#include <ctime>

#include "service/http_common.h"
#include "service/png_text.h"

namespace sdcpu::service {
namespace {

// A1111's sampler names are those sdcpu writes into its PNGs (sdcpu::a1111_sampler_name); sdcpu's own names are
// accepted too. A sampler with scheduler "Karras" (A1111 1.9+: "DPM++ 2M", "Euler", "DPM++ 2M SDE") is its Karras
// variant where sdcpu has one.
std::string sdcpu_sampler(const std::string& name, const std::string& scheduler) {
  const auto& names = sampler_names();
  std::string list;
  for (const std::string& s : names) {
    if (name == a1111_sampler_name(s) || name == s) {
      const std::string karras = s + "_karras";
      const bool has_karras = std::find(names.begin(), names.end(), karras) != names.end();
      return (scheduler == "Karras" || scheduler == "karras") && has_karras ? karras : s;
    }
    list += (list.empty() ? "" : ", ") + a1111_sampler_name(s);
  }
  throw RequestError(422, "unknown_sampler", "sampler \"" + name + "\" not found; samplers: " + list, "sampler_name");
}

int int_of(const json& v, const char* field) {
  if (!v.is_number_integer())
    throw RequestError(422, "invalid_request", std::string(field) + " must be an integer", field);
  const int64_t n = v.get<int64_t>();
  if (n < -2147483648LL || n > 2147483647LL)
    throw RequestError(422, "invalid_request", std::string(field) + " is out of range", field);
  return static_cast<int>(n);
}

// StableDiffusionTxt2ImgProcessingAPI -> a job request. A1111's API defaults: 50 steps, CFG 7, 512x512, "Euler".
JobRequest parse_txt2img(const std::string& body, int& batch_size) {
  json r;
  try {
    r = json::parse(body);
  } catch (const json::exception& e) {
    throw RequestError(422, "invalid_json", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!r.is_object()) throw RequestError(422, "invalid_json", "the body must be a JSON object");
  JobRequest job;
  GenerateOptions& o = job.options;
  o.steps = 50;
  o.cfg_scale = 7.0f;
  o.sampler = "euler";
  o.seed = kRandomSeed;
  auto str = [&](const char* key) -> std::string {
    const json& v = r.at(key);
    if (!v.is_string()) throw RequestError(422, "invalid_request", std::string(key) + " must be a string", key);
    return v.get<std::string>();
  };
  auto has = [&](const char* key) { return r.contains(key) && !r[key].is_null(); };
  if (has("prompt")) o.prompt = str("prompt");
  if (has("negative_prompt")) o.negative_prompt = str("negative_prompt");
  if (has("steps")) o.steps = int_of(r["steps"], "steps");
  if (has("width")) o.width = int_of(r["width"], "width");
  if (has("height")) o.height = int_of(r["height"], "height");
  if (has("cfg_scale")) {
    if (!r["cfg_scale"].is_number() || !std::isfinite(r["cfg_scale"].get<double>()) ||
        std::fabs(r["cfg_scale"].get<double>()) > 1e6)
      throw RequestError(422, "invalid_request", "cfg_scale must be a number", "cfg_scale");
    o.cfg_scale = static_cast<float>(r["cfg_scale"].get<double>());
  }
  if (has("seed")) {
    const int64_t seed = r["seed"].is_number_integer() ? r["seed"].get<int64_t>() : -2;
    if (seed < -1) throw RequestError(422, "invalid_request", "seed must be an integer >= -1", "seed");
    o.seed = seed == -1 ? kRandomSeed : static_cast<uint64_t>(seed);
  }
  const std::string sampler = has("sampler_name")    ? str("sampler_name")
                              : has("sampler_index") ? str("sampler_index")
                                                     : "";
  if (!sampler.empty()) o.sampler = sdcpu_sampler(sampler, has("scheduler") ? str("scheduler") : "");
  batch_size = has("batch_size") ? int_of(r["batch_size"], "batch_size") : 1;
  const int n_iter = has("n_iter") ? int_of(r["n_iter"], "n_iter") : 1;
  if (batch_size < 1 || batch_size > 64 || n_iter < 1 || n_iter > 100)
    throw RequestError(422, "invalid_request", "batch_size must be 1..64 and n_iter 1..100", "batch_size");
  // A1111 gives image i of the whole request seed + i, as batch_count does.
  o.batch_count = batch_size * n_iter;
  for (const char* unsupported : {"enable_hr", "restore_faces", "tiling"})
    if (has(unsupported) && r[unsupported].is_boolean() && r[unsupported].get<bool>())
      throw RequestError(422, "unsupported", std::string(unsupported) + " is not supported by sdcpu", unsupported);
  if (has("subseed_strength") && r["subseed_strength"].is_number() && r["subseed_strength"].get<double>() != 0)
    throw RequestError(422, "unsupported", "variation seeds (subseed_strength) are not supported", "subseed_strength");
  if (has("script_name") && r["script_name"].is_string() && !r["script_name"].get<std::string>().empty())
    throw RequestError(422, "unsupported", "scripts are not supported", "script_name");
  if (has("override_settings")) {
    const json& s = r["override_settings"];
    if (!s.is_object())
      throw RequestError(422, "invalid_request", "override_settings must be an object", "override_settings");
    if (s.contains("sd_model_checkpoint") && s["sd_model_checkpoint"].is_string())
      job.model = s["sd_model_checkpoint"].get<std::string>();
    if (s.contains("CLIP_stop_at_last_layers"))
      o.clip_skip = int_of(s["CLIP_stop_at_last_layers"], "CLIP_stop_at_last_layers") - 1;
  }
  try {
    validate(o);
  } catch (const InvalidArgument& e) {
    throw RequestError(422, "invalid_request", e.what(), e.field());
  }
  return job;
}

std::string job_timestamp(int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y%m%d%H%M%S", &tm);
  return out;
}

}  // namespace

void add_a1111_routes(httplib::Server& server, HttpContext& ctx) {
  server.Post("/sdapi/v1/txt2img", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::a1111, [&] {
      const std::string owner = authenticate(ctx, req);
      int batch_size = 1;
      const JobRequest request = parse_txt2img(req.body, batch_size);
      try {
        find_model(ctx, request.model, "sd_model_checkpoint");
      } catch (const RequestError& e) {
        throw RequestError(422, e.code, e.what(), e.field);  // A1111 answers every request error with 422
      }
      const JobQueue::Submitted submitted = submit_job(ctx, request, owner);
      const Job job = wait_for_job(ctx, submitted.job.id);
      if (job.status != JobStatus::succeeded)
        throw RequestError(job.status == JobStatus::cancelled ? 409 : 500, job_status_name(job.status),
                           job.status == JobStatus::cancelled ? "interrupted" : job.error);
      const GenerateOptions& o = job.request.options;
      json images = json::array(), infotexts = json::array(), seeds = json::array(), prompts = json::array(),
           negatives = json::array();
      for (size_t k = 0; k < job.seeds.size(); ++k) {
        const std::optional<std::vector<uint8_t>> png = ctx.queue.load_image(job.id, static_cast<int>(k));
        if (!png) throw RequestError(500, "missing_image", "a result image is missing");
        images.push_back(base64_encode(*png));
        infotexts.push_back(png_text_chunk(*png, "parameters"));
        seeds.push_back(job.seeds[k]);
        prompts.push_back(o.prompt);
        negatives.push_back(o.negative_prompt);
      }
      const json info = {{"prompt", o.prompt},
                         {"all_prompts", prompts},
                         {"negative_prompt", o.negative_prompt},
                         {"all_negative_prompts", negatives},
                         {"seed", job.seeds.front()},
                         {"all_seeds", seeds},
                         {"subseed", job.seeds.front()},
                         {"all_subseeds", seeds},
                         {"subseed_strength", 0},
                         {"width", o.width},
                         {"height", o.height},
                         {"sampler_name", a1111_sampler_name(o.sampler)},
                         {"cfg_scale", o.cfg_scale},
                         {"steps", o.steps},
                         {"batch_size", batch_size},
                         {"restore_faces", false},
                         {"face_restoration_model", nullptr},
                         {"sd_model_name", job.request.model},
                         {"sd_model_hash", nullptr},
                         {"sd_vae_name", nullptr},
                         {"sd_vae_hash", nullptr},
                         {"seed_resize_from_w", -1},
                         {"seed_resize_from_h", -1},
                         {"denoising_strength", nullptr},
                         {"extra_generation_params", json::object()},
                         {"index_of_first_image", 0},
                         {"infotexts", infotexts},
                         {"styles", json::array()},
                         {"job_timestamp", job_timestamp(job.created_ms)},
                         {"clip_skip", o.clip_skip + 1},
                         {"is_using_inpainting_conditioning", false},
                         {"version", std::string("sdcpu ") + kVersion}};
      json parameters = json::parse(req.body);  // A1111 echoes the request, its defaults filled in
      parameters["prompt"] = o.prompt;
      parameters["negative_prompt"] = o.negative_prompt;
      parameters["seed"] = job.seeds.front();
      parameters["steps"] = o.steps;
      parameters["cfg_scale"] = o.cfg_scale;
      parameters["width"] = o.width;
      parameters["height"] = o.height;
      parameters["sampler_name"] = a1111_sampler_name(o.sampler);
      parameters["batch_size"] = batch_size;
      parameters["n_iter"] = o.batch_count / batch_size;
      reply_json(res, 200,
                 {{"images", images},
                  {"parameters", parameters},
                  {"info", info.dump(-1, ' ', false, json::error_handler_t::replace)}});
    });
  });

  server.Get("/sdapi/v1/samplers", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::a1111, [&] {
      authenticate(ctx, req);
      json list = json::array();
      for (const std::string& s : sampler_names())
        list.push_back({{"name", a1111_sampler_name(s)}, {"aliases", {s}}, {"options", json::object()}});
      reply_json(res, 200, list);
    });
  });

  server.Get("/sdapi/v1/sd-models", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::a1111, [&] {
      authenticate(ctx, req);
      json list = json::array();
      for (const ServedModel& m : ctx.models)
        list.push_back({{"title", m.name},
                        {"model_name", m.name},
                        {"hash", nullptr},
                        {"sha256", nullptr},
                        {"filename", m.name},
                        {"config", nullptr}});  // never the server's paths
      reply_json(res, 200, list);
    });
  });

  server.Get("/sdapi/v1/options", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::a1111, [&] {
      authenticate(ctx, req);
      reply_json(res, 200,
                 {{"sd_model_checkpoint", ctx.models.front().name},
                  {"CLIP_stop_at_last_layers", 1},
                  {"samples_format", "png"}});
    });
  });

  server.Get("/sdapi/v1/progress", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::a1111, [&] {
      authenticate(ctx, req);
      const std::vector<Job> running = ctx.queue.list(JobStatus::running, 1, "");
      const std::map<JobStatus, int64_t> counts = ctx.queue.counts();
      double progress = 0;
      json state = {{"skipped", false},
                    {"interrupted", false},
                    {"job", ""},
                    {"job_count", counts.at(JobStatus::queued)},
                    {"job_timestamp", "0"},
                    {"job_no", 0},
                    {"sampling_step", 0},
                    {"sampling_steps", 0}};
      if (!running.empty()) {
        const Job job = ctx.queue.get(running.front().id).value_or(running.front());
        const JobProgress& p = job.progress;
        const int images = std::max(1, job.request.options.batch_count);
        if (p.steps > 0) progress = (p.image + static_cast<double>(p.step) / p.steps) / images;
        state["job"] = job.id;
        state["job_timestamp"] = job_timestamp(job.created_ms);
        state["job_no"] = p.image;
        state["sampling_step"] = p.step;
        state["sampling_steps"] = p.steps;
      }
      reply_json(res, 200,
                 {{"progress", progress},
                  {"eta_relative", 0.0},
                  {"state", state},
                  {"current_image", nullptr},
                  {"textinfo", nullptr}});
    });
  });

  // Stops the caller's running job at its next denoising step.
  server.Post("/sdapi/v1/interrupt", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, ErrorShape::a1111, [&] {
      const std::string owner = authenticate(ctx, req);
      for (const Job& job : ctx.queue.list(JobStatus::running, 1000, ""))
        if (job.owner == owner) ctx.queue.cancel(job.id);
      reply_json(res, 200, json::object());
    });
  });
}

}  // namespace sdcpu::service
