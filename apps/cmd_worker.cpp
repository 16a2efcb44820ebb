// sdcpu worker: a compute worker on a shared queue (README, "Scale-out on Redis"): takes jobs from
// --queue redis://... and runs them on the models it loaded, until SIGINT/SIGTERM.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "service/job_queue.h"
#include "service_setup.h"

namespace sdcpu::app {
namespace {

struct WorkerArgs {
  ServiceArgs service;
  std::string name;
};

int run_worker(WorkerArgs& a) {
  if (a.service.queue == "sqlite")
    throw InvalidArgument("sdcpu worker needs a shared queue (--queue redis://...); sdcpu serve runs its own worker");
  std::vector<service::ServedModel> models = load_served_models(a.service, true);
  std::unique_ptr<service::JobQueue> queue = service::open_job_queue(a.service.queue, a.service.queue_options(a.name));
  service::ServiceMetrics metrics;
  service::Worker worker(*queue, models, metrics, a.service.max_batch);
  std::atomic<bool> stop{false};
  stop_on_signals(stop);
  std::printf("sdcpu worker: taking jobs from %s\n", printable_queue(a.service.queue).c_str());
  std::fflush(stdout);
  worker.run(stop);
  std::fprintf(stderr, "sdcpu worker: stopped\n");
  return 0;
}

}  // namespace

Command add_worker_command(CLI::App& app) {
  auto a = std::make_shared<WorkerArgs>();
  auto* cli = app.add_subcommand("worker", "Run jobs from a shared queue (redis://) on this machine");
  add_service_options(*cli, a->service);
  cli->add_option("--name", a->name, "This worker's name in the queue (default: hostname-pid)");
  return {cli, [a] { return run_worker(*a); }};
}

}  // namespace sdcpu::app
