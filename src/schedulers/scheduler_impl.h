// The constructors behind make_scheduler(), one per scheduler source file. Internal to src/schedulers.
// make_scheduler() has already applied what the sampler's name fixes (use_karras_sigmas, solver_order).
#pragma once
#include <memory>
#include <string>

#include "schedulers/scheduler.h"

namespace sdcpu {

std::unique_ptr<Scheduler> make_pndm_scheduler(const SchedulerConfig& config);  // pndm.cpp
std::unique_ptr<Scheduler> make_ddim_scheduler(const SchedulerConfig& config);  // ddim.cpp
// euler.cpp: "euler" or "euler_karras".
std::unique_ptr<Scheduler> make_euler_scheduler(const SchedulerConfig& config, const std::string& name);
std::unique_ptr<Scheduler> make_euler_ancestral_scheduler(const SchedulerConfig& config);  // euler_ancestral.cpp
std::unique_ptr<Scheduler> make_lms_scheduler(const SchedulerConfig& config);              // lms.cpp
std::unique_ptr<Scheduler> make_heun_scheduler(const SchedulerConfig& config);             // heun.cpp
// dpm_solver_multistep.cpp: "dpmpp_2m", "dpmpp_2m_karras" (algorithm_type dpmsolver++), "dpmpp_2m_sde" or
// "dpmpp_2m_sde_karras" (sde-dpmsolver++).
std::unique_ptr<Scheduler> make_dpm_solver_multistep_scheduler(const SchedulerConfig& config, const std::string& name,
                                                               bool sde);
std::unique_ptr<Scheduler> make_unipc_scheduler(const SchedulerConfig& config);  // unipc_multistep.cpp
std::unique_ptr<Scheduler> make_lcm_scheduler(const SchedulerConfig& config);    // lcm.cpp

}  // namespace sdcpu
