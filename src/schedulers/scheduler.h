// Noise schedulers ("samplers"), each a faithful port of one diffusers 0.27.2 scheduler class, so that a
// seed and a step count give the latents diffusers gives, step for step:
//
//   name                 diffusers class                                       file
//   pndm                 PNDMScheduler (PLMS when skip_prk_steps, else PRK)       pndm.cpp
//   ddim                 DDIMScheduler (eta = 0)                                  ddim.cpp
//   euler                EulerDiscreteScheduler                                   euler.cpp
//   euler_karras         the same with use_karras_sigmas = true                   euler.cpp
//   euler_a              EulerAncestralDiscreteScheduler                          euler_ancestral.cpp
//   lms                  LMSDiscreteScheduler (order 4)                           lms.cpp
//   heun                 HeunDiscreteScheduler (2 model evaluations per step)     heun.cpp
//   dpmpp_2m             DPMSolverMultistepScheduler (dpmsolver++, order 2)       dpm_solver_multistep.cpp
//   dpmpp_2m_karras      the same with use_karras_sigmas = true                   dpm_solver_multistep.cpp
//   dpmpp_2m_sde         DPMSolverMultistepScheduler (sde-dpmsolver++, order 2)   dpm_solver_multistep.cpp
//   dpmpp_2m_sde_karras  the same with use_karras_sigmas = true                   dpm_solver_multistep.cpp
//   unipc                UniPCMultistepScheduler (bh2, order 2)                   unipc_multistep.cpp
//   lcm                  LCMScheduler                                             lcm.cpp
//
// The schedule tables are computed as diffusers computes them (torch float32 betas and cumprod, numpy
// float64 interpolation), and every step does its tensor arithmetic in float32, one operation at a time in
// the order diffusers writes it, so the rounding is the same (see noise_schedule.h).
//
// Usage, as StableDiffusionPipeline.__call__ does:
//   auto s = make_scheduler("euler", resolve_scheduler_config("euler", stored_config).config);
//   s->set_timesteps(steps);
//   latents = generator.randn(shape) * s->init_noise_sigma();
//   for (int i = 0; i < s->timesteps().size(); ++i) {
//     eps = unet(s->scale_model_input(latents, i), (float)s->timesteps()[i], ...);   // + guidance
//     latents = s->step(eps, i, latents, generator);
//   }
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "schedulers/scheduler_config.h"

namespace sdcpu {

class TorchGenerator;

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // The sdcpu name ("euler", ...).
  virtual const std::string& name() const = 0;

  // Computes the timesteps (and sigmas) for `num_inference_steps` and resets the step history.
  // Throws InvalidArgument unless 1 <= num_inference_steps <= num_train_timesteps.
  virtual void set_timesteps(int num_inference_steps) = 0;

  // The timestep the UNet sees at each step, as diffusers' `scheduler.timesteps` holds it (integers for
  // PNDM/DDIM/DPM-Solver/UniPC/LCM, float32 values for Euler/LMS/Heun). One entry per call of step(): PNDM has
  // one more than the steps asked for and Heun 2 * steps - 1, as in diffusers.
  const std::vector<double>& timesteps() const { return timesteps_; }
  int num_steps() const { return static_cast<int>(timesteps_.size()); }

  // diffusers' `scheduler.sigmas` (float32 values, timesteps().size() + 1 of them, ending in 0, or for UniPC in
  // the training table's smallest sigma) for the sigma-based schedulers; empty for PNDM, DDIM and LCM.
  const std::vector<double>& sigmas() const { return sigmas_; }

  // The initial latents are randn * init_noise_sigma().
  virtual float init_noise_sigma() const = 0;

  // The UNet input at step `step_index` (any batch size): sample / sqrt(sigma^2 + 1) for Euler/LMS/Heun,
  // unchanged for the others.
  virtual Tensor scale_model_input(const Tensor& sample, int step_index) const;

  // One denoising step: returns prev_sample (the latents for the next step) from the guided model output
  // at timesteps()[step_index]. Multistep schedulers keep history: after set_timesteps() the first call
  // may be at any index, later calls must follow in order. `generator` is the one that made the initial
  // latents: Euler a, DPM++ 2M SDE and LCM draw their noise from it (Euler draws and discards, as diffusers
  // does); the others leave it alone.
  virtual Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator& generator) = 0;

 protected:
  // Throws InvalidArgument unless set_timesteps() was called and step_index is in range.
  void check_step_index(int step_index) const;
  // check_step_index() plus the order rule of multistep schedulers; records the step as taken.
  void check_sequential_step(int step_index);
  // Clears the step history (called by set_timesteps()).
  void reset_steps() { next_step_ = -1; }
  // Throws InvalidArgument unless 1 <= num_inference_steps <= num_train_timesteps.
  static void check_num_inference_steps(int num_inference_steps, int num_train_timesteps);

  std::vector<double> timesteps_;
  std::vector<double> sigmas_;

 private:
  int next_step_ = -1;  // -1: no step taken since set_timesteps()
};

// The scheduler names make_scheduler() accepts, in a stable order (scheduler_config.cpp's table of their classes).
const std::vector<std::string>& scheduler_names();

// Builds the named scheduler with exactly these settings (resolve_scheduler_config() makes them from a model's
// stored config; what the name fixes wins whatever `config` says: the *_karras names set use_karras_sigmas). Throws
// InvalidArgument for an unknown name (listing the valid ones) and ModelError when the config asks the scheduler for
// something it does not support.
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& config);

}  // namespace sdcpu
