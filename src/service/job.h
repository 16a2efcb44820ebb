// A job of the image service: what a client asked for, and where it stands. Requests arrive as JSON (the native
// API, and translated from AUTOMATIC1111's and OpenAI's routes); every field is bounded as the CLI bounds it.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sdcpu/sdcpu.h"

namespace sdcpu::service {

// A request the service refuses: the HTTP status (400, 401, 404, 413, 429, 503, ...), a short machine-readable
// code ("invalid_request", "unknown_field", ...), the field at fault when there is one, and a message for a person.
struct RequestError : std::runtime_error {
  RequestError(int status, std::string code, std::string message, std::string field = "")
      : std::runtime_error(message), status(status), code(std::move(code)), field(std::move(field)) {}
  int status;
  std::string code;
  std::string field;
};

enum class JobStatus { queued, running, succeeded, failed, cancelled };
const char* job_status_name(JobStatus status);                     // "queued", ...
std::optional<JobStatus> parse_job_status(std::string_view name);  // nullopt for anything else
bool is_finished(JobStatus status);                                // succeeded, failed or cancelled

// What a client asks for: a model the server was started with, and every `sdcpu generate` option.
struct JobRequest {
  std::string model;  // a --model NAME of the server; "" = its default (the first)
  GenerateOptions options;
};

// Parses the JSON body of POST /v1/jobs: {"prompt": ..., "negative_prompt", "model", "width", "height", "steps",
// "cfg_scale", "sampler", "seed", "batch_count", "clip_skip", "timestep_spacing"}. "prompt" is required; a missing
// or -1 seed means a random one (GenerateOptions's kRandomSeed). Throws RequestError 400 naming the field for
// malformed JSON, an unknown field, a wrong type or a value out of the CLI's bounds (sdcpu::validate).
JobRequest parse_job_request(std::string_view body);

// The stored form of a request (a JSON object with every field set); parse_job_request() reads it back.
std::string job_request_to_json(const JobRequest& request);

// Jobs with equal keys can run in one UNet batch (the worker's --max-batch): the same model and everything
// sdcpu::batchable() compares (size, steps, sampler, timestep spacing, guidance, clip skip), as one string so a
// queue can store and compare it.
std::string batch_key(const JobRequest& request);

// How far a running job is: image `image` (from 0) of `images`, `step` of `steps` done.
struct JobProgress {
  int image = 0;
  int images = 0;
  int step = 0;
  int steps = 0;
};

struct Job {
  std::string id;  // 32 lowercase hex digits: 128 random bits
  JobStatus status = JobStatus::queued;
  JobRequest request;  // the seed is always resolved: a random one is drawn at submission and stored
  std::string owner;   // which API key submitted it (a fingerprint, never the key); "" without keys
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0;  // Unix time in milliseconds; 0: not yet
  int attempts = 0;  // how often a worker started it (a crash mid-job makes it run again)
  bool cancel_requested = false;
  JobProgress progress;         // while running
  std::vector<uint64_t> seeds;  // succeeded: the seed of each image
  std::string error;            // failed: why
};

// 32 hex digits from the system's random source.
std::string new_job_id();

// True for exactly what new_job_id() makes (so no path, no other id form reaches a lookup).
bool is_valid_job_id(std::string_view id);

}  // namespace sdcpu::service
