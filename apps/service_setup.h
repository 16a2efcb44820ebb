// What `sdcpu serve` and `sdcpu worker` share: --model NAME=PATH specs, loading the models, the queue options,
// and stopping on SIGINT/SIGTERM.
#pragma once
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "sdcpu/sdcpu.h"
#include "service/job_queue.h"
#include "service/worker.h"

namespace sdcpu::app {

struct ServiceArgs {
  std::vector<std::string> models;  // NAME=PATH or PATH
  std::string data_dir = "sdcpu-data";
  std::string queue = "sqlite";
  double keep_results_hours = 24;
  double visibility_timeout_s = 60;
  int max_batch = 1;  // images per UNet call across jobs (README, "Batching across requests")
  LoadOptions load;

  std::chrono::milliseconds keep_results() const;
  // The queue's options; `consumer` names this worker on a shared queue ("" = hostname-pid).
  service::QueueOptions queue_options(const std::string& consumer = "") const;
};

// Registers --model, --data-dir, --queue, --keep-results, --visibility-timeout, --max-batch and the load options
// (--threads,
// --pin, --precision, --weight-cache, --low-memory) on `cli`.
void add_service_options(CLI::App& cli, ServiceArgs& args);

// Validates the options (before anything loads) and loads every model (or, with `load` false, only names them:
// an API node without a worker). Throws InvalidArgument for bad specs.
std::vector<service::ServedModel> load_served_models(const ServiceArgs& args, bool load);

// The --queue spec as it may be printed: a Redis password replaced by ***.
std::string printable_queue(const std::string& spec);

// Sets `stop` on SIGINT or SIGTERM (only that: a signal handler may do little safely; threads watch the flag), and
// ignores SIGPIPE.
void stop_on_signals(std::atomic<bool>& stop);

}  // namespace sdcpu::app
