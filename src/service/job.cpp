#include "service/job.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

namespace sdcpu::service {
namespace {

using nlohmann::json;

[[noreturn]] void bad_field(const std::string& field, const std::string& why) {
  throw RequestError(400, "invalid_request", "\"" + field + "\" " + why, field);
}

int integer_field(const json& v, const std::string& field) {
  if (!v.is_number_integer() &&
      !(v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>())))
    bad_field(field, "must be an integer");
  const double d = v.get<double>();
  if (d < -2147483648.0 || d > 2147483647.0) bad_field(field, "is out of range");
  return static_cast<int>(d);
}

std::string string_field(const json& v, const std::string& field) {
  if (!v.is_string()) bad_field(field, "must be a string");
  return v.get<std::string>();
}

}  // namespace

const char* job_status_name(JobStatus status) {
  switch (status) {
    case JobStatus::queued:
      return "queued";
    case JobStatus::running:
      return "running";
    case JobStatus::succeeded:
      return "succeeded";
    case JobStatus::failed:
      return "failed";
    case JobStatus::cancelled:
      return "cancelled";
  }
  return "?";
}

std::optional<JobStatus> parse_job_status(std::string_view name) {
  for (JobStatus s :
       {JobStatus::queued, JobStatus::running, JobStatus::succeeded, JobStatus::failed, JobStatus::cancelled})
    if (name == job_status_name(s)) return s;
  return std::nullopt;
}

bool is_finished(JobStatus status) {
  return status == JobStatus::succeeded || status == JobStatus::failed || status == JobStatus::cancelled;
}

JobRequest parse_job_request(std::string_view body) {
  json root;
  try {
    root = json::parse(body);
  } catch (const json::exception& e) {
    throw RequestError(400, "invalid_json", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) throw RequestError(400, "invalid_json", "the body must be a JSON object");

  JobRequest r;
  GenerateOptions& o = r.options;
  o.seed = kRandomSeed;
  bool has_prompt = false;
  for (const auto& [key, value] : root.items()) {
    if (key == "prompt") {
      o.prompt = string_field(value, key);
      has_prompt = true;
    } else if (key == "negative_prompt") {
      o.negative_prompt = string_field(value, key);
    } else if (key == "model") {
      r.model = string_field(value, key);
    } else if (key == "sampler") {
      o.sampler = string_field(value, key);
    } else if (key == "timestep_spacing") {
      o.timestep_spacing = string_field(value, key);
    } else if (key == "width") {
      o.width = integer_field(value, key);
    } else if (key == "height") {
      o.height = integer_field(value, key);
    } else if (key == "steps") {
      o.steps = integer_field(value, key);
    } else if (key == "batch_count") {
      o.batch_count = integer_field(value, key);
    } else if (key == "clip_skip") {
      o.clip_skip = integer_field(value, key);
    } else if (key == "cache_interval") {
      o.cache_interval = integer_field(value, key);
    } else if (key == "cache_branch") {
      o.cache_branch = integer_field(value, key);
    } else if (key == "cache_schedule") {
      o.cache_schedule = string_field(value, key);
    } else if (key == "cache_center") {
      o.cache_center = integer_field(value, key);
    } else if (key == "cache_power") {
      if (!value.is_number() || !std::isfinite(value.get<double>())) bad_field(key, "must be a number above 1");
      o.cache_power = value.get<double>();
    } else if (key == "tome_ratio") {
      if (!value.is_number() || !std::isfinite(value.get<double>())) bad_field(key, "must be a number in [0, 1)");
      o.tome_ratio = value.get<double>();
    } else if (key == "tome_max_downsample") {
      o.tome_max_downsample = integer_field(value, key);
    } else if (key == "cfg_scale") {
      if (!value.is_number() || !std::isfinite(value.get<double>()) || std::fabs(value.get<double>()) > 1e6)
        bad_field(key, "must be a number between 0 and 100");
      o.cfg_scale = static_cast<float>(value.get<double>());
    } else if (key == "seed") {
      if (value.is_null()) continue;  // random
      if (!value.is_number_integer()) bad_field(key, "must be an integer (-1: random)");
      if (value.is_number_unsigned()) {
        o.seed = value.get<uint64_t>();
        if (o.seed == kRandomSeed) bad_field(key, "is out of range");
      } else {
        const int64_t s = value.get<int64_t>();
        if (s < -1) bad_field(key, "must be >= 0, or -1 for a random one");
        o.seed = s == -1 ? kRandomSeed : static_cast<uint64_t>(s);
      }
    } else {
      throw RequestError(400, "unknown_field", "unknown field \"" + key + "\"", key);
    }
  }
  if (!has_prompt) bad_field("prompt", "is required");
  try {
    validate(o);
  } catch (const InvalidArgument& e) {
    throw RequestError(400, "invalid_request", e.what(), e.field());
  }
  return r;
}

std::string job_request_to_json(const JobRequest& request) {
  const GenerateOptions& o = request.options;
  json j = {{"prompt", o.prompt},
            {"negative_prompt", o.negative_prompt},
            {"model", request.model},
            {"width", o.width},
            {"height", o.height},
            {"steps", o.steps},
            {"cfg_scale", o.cfg_scale},
            {"sampler", o.sampler},
            {"timestep_spacing", o.timestep_spacing},
            {"batch_count", o.batch_count},
            {"clip_skip", o.clip_skip},
            {"cache_interval", o.cache_interval},
            {"cache_branch", o.cache_branch},
            {"cache_schedule", o.cache_schedule},
            {"cache_center", o.cache_center},
            {"cache_power", o.cache_power},
            {"tome_ratio", o.tome_ratio},
            {"tome_max_downsample", o.tome_max_downsample}};
  j["seed"] = o.seed == kRandomSeed ? json(-1) : json(o.seed);
  return j.dump();
}

std::string batch_key(const JobRequest& request) {
  const GenerateOptions& o = request.options;
  // cfg_scale as its float's exact decimal: equal keys must mean equal guidance.
  char cfg[32];
  std::snprintf(cfg, sizeof cfg, "%.9g", static_cast<double>(o.cfg_scale));
  return json::array({request.model, o.width, o.height, o.steps, o.sampler, o.timestep_spacing, cfg, o.clip_skip,
                      o.cache_interval, o.cache_branch, o.cache_schedule, o.cache_center, o.cache_power, o.tome_ratio,
                      o.tome_max_downsample})
      .dump();
}

std::string new_job_id() {
  std::random_device device;
  std::string id;
  for (int i = 0; i < 4; ++i) {
    char word[9];
    std::snprintf(word, sizeof word, "%08x", static_cast<unsigned>(device()));
    id += word;
  }
  return id;
}

bool is_valid_job_id(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace sdcpu::service
