#include "service_setup.h"

#include <csignal>
#include <cstdio>
#include <filesystem>

#include "commands.h"

namespace sdcpu::app {
namespace {

std::atomic<bool>* g_stop = nullptr;

void on_signal(int) {
  if (g_stop) g_stop->store(true);
}

// "NAME=PATH" -> {NAME, PATH}; a bare PATH is named after its file or folder.
std::pair<std::string, std::string> model_spec(const std::string& spec) {
  const size_t eq = spec.find('=');
  if (eq != std::string::npos && eq > 0) return {spec.substr(0, eq), spec.substr(eq + 1)};
  std::filesystem::path p(spec);
  if (p.filename().empty()) p = p.parent_path();
  return {p.stem().string(), spec};
}

}  // namespace

std::chrono::milliseconds ServiceArgs::keep_results() const {
  return std::chrono::milliseconds(static_cast<int64_t>(keep_results_hours * 3600 * 1000));
}

service::QueueOptions ServiceArgs::queue_options(const std::string& consumer) const {
  service::QueueOptions o;
  o.data_dir = data_dir;
  o.keep_results = keep_results();
  o.consumer = consumer;
  o.visibility_timeout = std::chrono::milliseconds(static_cast<int64_t>(visibility_timeout_s * 1000));
  return o;
}

void add_service_options(CLI::App& cli, ServiceArgs& a) {
  cli.add_option("--model,-m", a.models, "NAME=PATH of a model to serve (repeatable; the first is the default)")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cli.add_option("--queue", a.queue, "sqlite (the embedded queue in --data-dir) or redis://HOST:PORT/DB (shared)")
      ->capture_default_str();
  cli.add_option("--data-dir", a.data_dir, "Folder of the SQLite queue and its result images")->capture_default_str();
  cli.add_option("--keep-results", a.keep_results_hours, "Hours a finished job and its images are kept")
      ->capture_default_str();
  cli.add_option("--visibility-timeout", a.visibility_timeout_s,
                 "Redis: seconds without a heartbeat after which another worker takes a job over")
      ->capture_default_str();
  cli.add_option("--max-batch", a.max_batch,
                 "Images per UNet call: queued jobs with the same model, size, steps, sampler and guidance share "
                 "one (1..64)")
      ->capture_default_str();
  cli.add_option("--threads", a.load.threads, "Compute threads (0: one per physical core)")->capture_default_str();
  cli.add_flag("--pin", a.load.pin_threads, "Bind compute thread i to core i");
  cli.add_option("--precision", a.load.precision, "fp32, bf16 or auto")->capture_default_str();
  add_weight_cache_option(cli, a.load.weight_cache_dir);
  add_memory_option(cli, a.load.low_memory);
  print_load_notices(a.load);
  add_vae_option(cli, a.load.vae_path);
  add_prediction_type_option(cli, a.load.prediction_type);
}

std::vector<service::ServedModel> load_served_models(const ServiceArgs& a, bool load) {
  if (a.models.empty()) throw InvalidArgument("at least one --model NAME=PATH is needed");
  if (!(a.keep_results_hours > 0 && a.keep_results_hours < 24 * 365 * 10))
    throw InvalidArgument("--keep-results must be a positive number of hours");
  if (!(a.visibility_timeout_s >= 0.5 && a.visibility_timeout_s <= 86400))
    throw InvalidArgument("--visibility-timeout must be between 0.5 and 86400 seconds");
  if (a.max_batch < 1 || a.max_batch > 64) throw InvalidArgument("--max-batch must be between 1 and 64");
  std::vector<service::ServedModel> models;
  for (const std::string& spec : a.models) {
    auto [name, path] = model_spec(spec);
    if (name.empty() || name.size() > 128) throw InvalidArgument("a model name must have 1 to 128 bytes: " + spec);
    for (const auto& m : models)
      if (m.name == name) throw InvalidArgument("two models are named " + name);
    models.push_back({name, path, nullptr});
  }
  if (load) {
    for (service::ServedModel& m : models) {
      std::fprintf(stderr, "sdcpu: loading %s from %s\n", m.name.c_str(), m.path.c_str());
      m.pipeline = Pipeline::load(m.path, a.load);
    }
  }
  return models;
}

std::string printable_queue(const std::string& spec) {
  const size_t at = spec.rfind('@');
  if (spec.rfind("redis://:", 0) != 0 || at == std::string::npos) return spec;
  return "redis://:***" + spec.substr(at);
}

void stop_on_signals(std::atomic<bool>& stop) {
  g_stop = &stop;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);  // a client or Redis that hangs up is an error to handle, not a reason to die
}

}  // namespace sdcpu::app
