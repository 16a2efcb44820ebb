// The scheduler configs the tiny-sd pipeline goldens were made from (../shared/fixtures/README.md, "Scheduler
// configs"), for the scheduler and pipeline tests.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "formats/single_file.h"
#include "schedulers/scheduler_config.h"
#include "test_support.h"

namespace sdcpu::testing {

// tiny-sd/scheduler/scheduler_config.json as it is on disk (PNDMScheduler, "timestep_spacing": "leading"): the
// `_folder_scheduler` goldens.
inline std::string tiny_sd_scheduler_json() { return read_text(fixture("tiny-sd/scheduler/scheduler_config.json")); }

// The same file without its "timestep_spacing" key, as runwayml/stable-diffusion-v1-5's (written by diffusers
// 0.6) is: the plain pipeline goldens, whose samplers then take their own class's default spacing.
inline std::string tiny_sd_scheduler_json_without_spacing() {
  nlohmann::json j = nlohmann::json::parse(tiny_sd_scheduler_json());
  j.erase("timestep_spacing");
  return j.dump(2);
}

// Which stored config a pipeline golden (file name) was made from.
inline StoredSchedulerConfig stored_config_of_golden(const std::string& golden) {
  if (golden.find("_single_file_scheduler") != std::string::npos)
    return parse_scheduler_config(sd1_single_file_scheduler_config_json(), SettingSource::single_file_default);
  if (golden.find("_folder_scheduler") != std::string::npos) return parse_scheduler_config(tiny_sd_scheduler_json());
  return parse_scheduler_config(tiny_sd_scheduler_json_without_spacing());
}

// The settings `sampler` runs with for the plain goldens: SD 1.5's scheduler (scaled_linear 0.00085..0.012,
// steps_offset 1, set_alpha_to_one false, skip_prk_steps) with each class's own timestep_spacing.
inline SchedulerConfig sd15_config(const std::string& sampler) {
  return resolve_scheduler_config(sampler, parse_scheduler_config(tiny_sd_scheduler_json_without_spacing())).config;
}

}  // namespace sdcpu::testing
