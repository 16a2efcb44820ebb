#include "schedulers/scheduler.h"

#include "core/error.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
void Scheduler::check_num_inference_steps(int num_inference_steps, int num_train_timesteps) {
  if (num_inference_steps < 1 || num_inference_steps > num_train_timesteps)
    throw InvalidArgument("number of inference steps must be between 1 and " + std::to_string(num_train_timesteps) +
                          " (the model's training timesteps), got " + std::to_string(num_inference_steps));
}

void Scheduler::check_step_index(int step_index) const {
  if (timesteps_.empty()) throw InvalidArgument(name() + " scheduler: set_timesteps() must be called before use");
  if (step_index < 0 || step_index >= num_steps())
    throw InvalidArgument(name() + " scheduler: step index " + std::to_string(step_index) + " is outside [0, " +
                          std::to_string(num_steps()) + ")");
}

void Scheduler::check_sequential_step(int step_index) {
  check_step_index(step_index);
  if (next_step_ >= 0 && step_index != next_step_)
    throw InvalidArgument(name() + " scheduler: steps must be taken in order: expected step " +
                          std::to_string(next_step_) + ", got " + std::to_string(step_index) +
                          " (call set_timesteps() to start over)");
  next_step_ = step_index + 1;
}

Tensor Scheduler::scale_model_input(const Tensor& sample, int step_index) const {
  check_step_index(step_index);
  return sample;
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& config) {
  // What the name fixes holds whatever `config` says (scheduler_config.cpp's table: fixed_by_name).
  SchedulerConfig c = config;
  if (name.ends_with("_karras")) c.use_karras_sigmas = true;
  if (name.starts_with("dpmpp_2m")) c.solver_order = 2;
  if (name == "pndm") return make_pndm_scheduler(c);
  if (name == "ddim") return make_ddim_scheduler(c);
  if (name == "euler" || name == "euler_karras") return make_euler_scheduler(c, name);
  if (name == "euler_a") return make_euler_ancestral_scheduler(c);
  if (name == "lms") return make_lms_scheduler(c);
  if (name == "heun") return make_heun_scheduler(c);
  if (name == "dpmpp_2m" || name == "dpmpp_2m_karras") return make_dpm_solver_multistep_scheduler(c, name, false);
  if (name == "dpmpp_2m_sde" || name == "dpmpp_2m_sde_karras")
    return make_dpm_solver_multistep_scheduler(c, name, true);
  if (name == "unipc") return make_unipc_scheduler(c);
  if (name == "lcm") return make_lcm_scheduler(c);
  std::string list;
  for (const std::string& n : scheduler_names()) list += (list.empty() ? "" : ", ") + n;
  throw InvalidArgument("unknown scheduler \"" + name + "\"; valid schedulers: " + list);
}

}  // namespace sdcpu
