// sdcpu serve: the image service (README, "sdcpu serve"): an HTTP front end and, unless --no-worker, one compute
// worker over a durable job queue, models loaded once and kept warm.
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "commands.h"
#include "service/http_server.h"
#include "service/job_queue.h"
#include "service_setup.h"

namespace sdcpu::app {
namespace {

struct ServeArgs {
  ServiceArgs service;
  std::string listen = "127.0.0.1:7860";
  std::string api_key_file;
  bool no_worker = false;
  service::HttpOptions http;
};

// "HOST:PORT" -> {HOST, PORT}; port 0 picks a free one (printed).
std::pair<std::string, int> host_port(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) throw InvalidArgument("--listen must be HOST:PORT, got " + listen);
  try {
    size_t used = 0;
    const int port = std::stoi(listen.substr(colon + 1), &used);
    if (used == listen.size() - colon - 1 && port >= 0 && port <= 65535) return {listen.substr(0, colon), port};
  } catch (const std::exception&) {
  }
  throw InvalidArgument("--listen port must be 0..65535, got " + listen);
}

int run_serve(ServeArgs& a) {
  const auto [host, port] = host_port(a.listen);
  if (a.no_worker && a.service.queue == "sqlite")
    throw InvalidArgument("--no-worker needs a shared queue (--queue redis://...): nothing would run the jobs");
  if (a.http.max_queue < 1 || a.http.max_queued_per_key < 1)
    throw InvalidArgument("--max-queue and --max-queued-per-key must be at least 1");
  if (!a.api_key_file.empty()) a.http.api_keys = service::read_api_keys(a.api_key_file);
  std::vector<service::ServedModel> models = load_served_models(a.service, !a.no_worker);
  std::unique_ptr<service::JobQueue> queue = service::open_job_queue(a.service.queue, a.service.queue_options());
  service::ServiceMetrics metrics;
  service::HttpServer server(*queue, models, metrics, a.http);
  const int bound = server.bind(host, port);
  std::printf("sdcpu serve: listening on http://%s:%d (queue %s%s)\n", host.c_str(), bound,
              printable_queue(a.service.queue).c_str(), a.no_worker ? ", no worker" : "");
  std::fflush(stdout);

  std::atomic<bool> stop{false};
  stop_on_signals(stop);
  // The worker computes on this thread, the one that loaded the models: OpenMP keeps one thread pool per thread
  // that starts parallel work, and a second pool (more threads than cores, shorter spin-waits) measured 12-17 us
  // per parallel region against 4 us. HTTP is served from its own thread.
  std::thread http([&] {
    server.serve();
    stop.store(true);
  });
  std::thread watcher([&] {
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server.stop();
  });
  // Finished jobs expire after --keep-results, with their files (Redis expires its own; this trims its indexes).
  std::thread expiry([&] {
    for (int tick = 0; !stop.load(); ++tick) {
      if (tick % 600 == 0) {
        try {
          queue->expire(std::chrono::system_clock::now() - a.service.keep_results());
        } catch (const std::exception& e) {
          std::fprintf(stderr, "sdcpu serve: expiring results: %s\n", e.what());
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  service::Worker worker(*queue, models, metrics, a.service.max_batch);
  if (a.no_worker) {
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } else {
    worker.run(stop);
  }
  watcher.join();
  http.join();
  expiry.join();
  std::fprintf(stderr, "sdcpu serve: stopped\n");
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cli = app.add_subcommand("serve", "Serve images over HTTP from a durable job queue");
  add_service_options(*cli, a->service);
  cli->add_option("--listen", a->listen, "HOST:PORT to listen on (port 0: any free port)")->capture_default_str();
  cli->add_option("--api-key-file", a->api_key_file, "File of API keys, one per line; clients send Bearer KEY");
  cli->add_flag("--no-worker", a->no_worker, "An API node only: workers elsewhere run the jobs (needs redis://)");
  cli->add_option("--max-queue", a->http.max_queue, "Queued jobs beyond which submissions get 429")
      ->capture_default_str();
  cli->add_option("--max-queued-per-key", a->http.max_queued_per_key, "Queued jobs one API key may have")
      ->capture_default_str();
  return {cli, [a] { return run_serve(*a); }};
}

}  // namespace sdcpu::app
