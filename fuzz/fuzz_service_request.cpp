// libFuzzer target: any bytes as the body of POST /v1/jobs, and as a PNG whose text the A1111 route reads back.
// parse_job_request() accepts a request within every bound or throws a RequestError (a 400), never anything
// else; an accepted request's stored form parses back to the same; png_text_chunk() never reads out of bounds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "service/job.h"
#include "service/png_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  (void)sdcpu::service::png_text_chunk(std::vector<uint8_t>(data, data + size), "parameters");
  sdcpu::service::JobRequest request;
  try {
    request = sdcpu::service::parse_job_request(body);
  } catch (const sdcpu::service::RequestError& e) {
    if (e.status != 400) __builtin_trap();
    return 0;
  }
  const sdcpu::GenerateOptions& o = request.options;
  if (o.width < 64 || o.width > 2048 || o.height < 64 || o.height > 2048 || o.steps < 1 || o.steps > 1000 ||
      o.batch_count < 1 || o.batch_count > 1000 || !(o.cfg_scale >= 0 && o.cfg_scale <= 100))
    __builtin_trap();
  const std::string stored = sdcpu::service::job_request_to_json(request);
  if (sdcpu::service::job_request_to_json(sdcpu::service::parse_job_request(stored)) != stored) __builtin_trap();
  return 0;
}
