// The service's HTTP front end (cpp-httplib): the native job API under /v1, the routes AUTOMATIC1111's and
// OpenAI's clients speak, health and metrics. It never computes: it validates, queues, and reads the queue. The
// routes are listed in the README ("sdcpu serve").
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "service/job_queue.h"
#include "service/metrics.h"
#include "service/worker.h"

namespace sdcpu::service {

struct HttpOptions {
  std::vector<std::string> api_keys;  // empty: no authentication
  int64_t max_queue = 1000;           // queued jobs beyond which a submission gets 429
  int64_t max_queued_per_key = 200;   // queued jobs one API key may have
  size_t max_body_bytes = 1 << 20;
  int threads = 32;  // HTTP threads; the A1111 and OpenAI routes hold one while their job runs
};

class HttpServer {
 public:
  // `queue`, `models` and `metrics` must outlive the server.
  HttpServer(JobQueue& queue, const std::vector<ServedModel>& models, ServiceMetrics& metrics, HttpOptions options);
  ~HttpServer();

  // Binds host:port (port 0: any free one); returns the port. Throws IoError when it cannot.
  int bind(const std::string& host, int port);
  // Serves until stop(); call after bind().
  void serve();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads an --api-key-file: one key per line; blank lines and lines starting with # are skipped, surrounding
// whitespace trimmed. Throws IoError when it cannot be read, InvalidArgument when it holds no key.
std::vector<std::string> read_api_keys(const std::string& path);

}  // namespace sdcpu::service
