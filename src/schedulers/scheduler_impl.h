// The constructors behind make_scheduler(), one per scheduler source file. Internal to src/schedulers.
#pragma once
#include <memory>
#include <string>

#include "schedulers/scheduler.h"

namespace sdcpu {

std::unique_ptr<Scheduler> make_pndm_scheduler(const SchedulerConfig& config);             // pndm.cpp
std::unique_ptr<Scheduler> make_ddim_scheduler(const SchedulerConfig& config);             // ddim.cpp
std::unique_ptr<Scheduler> make_euler_scheduler(const SchedulerConfig& config);            // euler.cpp
std::unique_ptr<Scheduler> make_euler_ancestral_scheduler(const SchedulerConfig& config);  // euler_ancestral.cpp
std::unique_ptr<Scheduler> make_lms_scheduler(const SchedulerConfig& config);              // lms.cpp
// dpm_solver_multistep.cpp: "dpmpp_2m" or "dpmpp_2m_karras" (config.use_karras_sigmas already set).
std::unique_ptr<Scheduler> make_dpm_solver_multistep_scheduler(const SchedulerConfig& config, const std::string& name);

}  // namespace sdcpu
