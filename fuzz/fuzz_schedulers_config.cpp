// libFuzzer target: any bytes as a scheduler_config.json. parse_scheduler_config() either refuses them with a
// ModelError or returns a stored config from which every sampler resolves its settings; building the scheduler
// and its timesteps then succeeds or fails with a ModelError/InvalidArgument, never a crash, hang or an
// allocation without bound.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "schedulers/scheduler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1 << 16) return 0;  // configs are a few hundred bytes; longer inputs only slow the search
  const std::string text(reinterpret_cast<const char*>(data), size);
  sdcpu::StoredSchedulerConfig stored;
  try {
    stored = sdcpu::parse_scheduler_config(text);
  } catch (const sdcpu::ModelError&) {
    return 0;
  }
  for (const std::string& name : sdcpu::scheduler_names()) {
    try {
      const sdcpu::ResolvedSchedulerConfig r = sdcpu::resolve_scheduler_config(name, stored);
      if (r.settings.empty()) __builtin_trap();
      auto scheduler = sdcpu::make_scheduler(name, r.config);
      scheduler->set_timesteps(20);
      if (scheduler->timesteps().empty()) __builtin_trap();
    } catch (const sdcpu::ModelError&) {
    } catch (const sdcpu::InvalidArgument&) {
    }
  }
  return 0;
}
