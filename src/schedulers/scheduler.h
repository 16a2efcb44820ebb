// Noise schedulers ("samplers"), each a faithful port of one diffusers 0.27.2 scheduler class, so that a
// seed and a step count give the latents diffusers gives, step for step:
//
//   name               diffusers class                                   file
//   pndm               PNDMScheduler (PLMS when skip_prk_steps, else PRK)   pndm.cpp
//   ddim               DDIMScheduler (eta = 0)                              ddim.cpp
//   euler              EulerDiscreteScheduler                               euler.cpp
//   euler_a            EulerAncestralDiscreteScheduler                      euler_ancestral.cpp
//   lms                LMSDiscreteScheduler (order 4)                       lms.cpp
//   dpmpp_2m           DPMSolverMultistepScheduler (dpmsolver++, order 2)   dpm_solver_multistep.cpp
//   dpmpp_2m_karras    the same with use_karras_sigmas = true               dpm_solver_multistep.cpp
//
// The schedule tables are computed as diffusers computes them (torch float32 betas and cumprod, numpy
// float64 interpolation), and every step does its tensor arithmetic in float32, one operation at a time in
// the order diffusers writes it, so the rounding is the same (see noise_schedule.h).
//
// Usage, as StableDiffusionPipeline.__call__ does:
//   auto s = make_scheduler("euler", config);
//   s->set_timesteps(steps);
//   latents = generator.randn(shape) * s->init_noise_sigma();
//   for (int i = 0; i < s->timesteps().size(); ++i) {
//     eps = unet(s->scale_model_input(latents, i), (float)s->timesteps()[i], ...);   // + guidance
//     latents = s->step(eps, i, latents, generator);
//   }
#pragma once
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sdcpu {

class TorchGenerator;

// The keys of a diffusers scheduler_config.json that these schedulers read. A key absent from the file
// takes diffusers' default; where that default differs between scheduler classes the field is optional and
// each scheduler fills in its own, as diffusers' from_config() does.
struct SchedulerConfig {
  // "_class_name": the diffusers class that wrote the config ("PNDMScheduler" for SD 1.x); tells a saved
  // default from an explicit choice (see timestep_spacing).
  std::string class_name = "PNDMScheduler";
  int num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::vector<double> trained_betas;            // non-empty: used instead of beta_start/end/schedule
  std::string prediction_type = "epsilon";      // epsilon | v_prediction | sample
  // leading | linspace | trailing. Unset: the scheduler's own default (leading for PNDM and DDIM, linspace
  // for the others). diffusers lets a scheduler created from another class's config keep its own default
  // for every key the original config did not set explicitly (ConfigMixin's `_use_default_values`); the
  // goldens were made that way: from the SD 1.x PNDM config, Euler, LMS and DPM-Solver use linspace. A config
  // file cannot tell "set explicitly" from "saved default", so a timestep_spacing equal to the default of
  // `class_name` counts as unset when another scheduler class reads the config.
  std::optional<std::string> timestep_spacing;
  int steps_offset = 1;
  // PNDM and DDIM: the alphas_cumprod "before" step 0. Unset: the class default (PNDM false, DDIM true).
  std::optional<bool> set_alpha_to_one = false;
  bool skip_prk_steps = true;  // PNDM: PLMS only (true) or the 12 Runge-Kutta steps first (false)
  // DDIM: clamp the predicted x0 to [-clip_sample_range, clip_sample_range]. DDIM's default, which the
  // goldens use (their config has no clip_sample); runwayml's SD 1.5 config sets false.
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool thresholding = false;                   // dynamic thresholding (Imagen) is not implemented: true is rejected
  bool use_karras_sigmas = false;              // Euler, LMS, DPM-Solver (dpmpp_2m_karras sets it)
  std::optional<double> sigma_min, sigma_max;  // Euler and DPM-Solver Karras schedule bounds
  bool rescale_betas_zero_snr = false;         // DDIM, Euler, Euler a, DPM-Solver (Lin et al. 2023)
  std::string timestep_type = "discrete";      // Euler: discrete | continuous (t = log(sigma) / 4 with v-prediction)
  // DPMSolverMultistepScheduler
  std::string solver_type = "midpoint";  // midpoint | heun
  bool lower_order_final = true;
  bool euler_at_final = false;
  std::string final_sigmas_type = "zero";  // zero | sigma_min
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  bool use_lu_lambdas = false;  // not implemented: true is rejected by the DPM-Solver

  // The config diffusers builds when a key is absent from every file: diffusers' own __init__ defaults
  // (beta 0.0001..0.02 linear, steps_offset 0, ...). parse_scheduler_config() starts from this.
  static SchedulerConfig diffusers_defaults();
};

// Parses a diffusers scheduler_config.json. Unknown keys are ignored; null means absent. Throws ModelError
// when the text is not a JSON object, a known key has the wrong type or an invalid value, or asks for
// interpolation_type log_linear (not implemented; thresholding and use_lu_lambdas are rejected by the
// schedulers that would use them). Python's bare Infinity/NaN (json.dumps of lambda_min_clipped) is accepted.
SchedulerConfig parse_scheduler_config(const std::string& json_text);

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // The sdcpu name ("euler", ...).
  virtual const std::string& name() const = 0;

  // Computes the timesteps (and sigmas) for `num_inference_steps` and resets the step history.
  // Throws InvalidArgument unless 1 <= num_inference_steps <= num_train_timesteps.
  virtual void set_timesteps(int num_inference_steps) = 0;

  // The timestep the UNet sees at each step, as diffusers' `scheduler.timesteps` holds it (integers for
  // PNDM/DDIM/DPM-Solver, float32 values for Euler/LMS). One entry per call of step(): PNDM has one more
  // than the steps asked for, as in diffusers.
  const std::vector<double>& timesteps() const { return timesteps_; }
  int num_steps() const { return static_cast<int>(timesteps_.size()); }

  // diffusers' `scheduler.sigmas` (float32 values, timesteps().size() + 1 of them, ending in 0) for the
  // sigma-based schedulers; empty for PNDM and DDIM.
  const std::vector<double>& sigmas() const { return sigmas_; }

  // The initial latents are randn * init_noise_sigma().
  virtual float init_noise_sigma() const = 0;

  // The UNet input at step `step_index` (any batch size): sample / sqrt(sigma^2 + 1) for Euler/LMS,
  // unchanged for the others.
  virtual Tensor scale_model_input(const Tensor& sample, int step_index) const;

  // One denoising step: returns prev_sample (the latents for the next step) from the guided model output
  // at timesteps()[step_index]. Multistep schedulers keep history: after set_timesteps() the first call
  // may be at any index, later calls must follow in order. `generator` is the one that made the initial
  // latents: Euler a draws its noise from it (Euler draws and discards, as diffusers does); the
  // others leave it alone.
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

// The scheduler names make_scheduler() accepts, in a stable order.
const std::vector<std::string>& scheduler_names();

// Builds the named scheduler from a config. Throws InvalidArgument for an unknown name (listing the valid
// ones) and ModelError when the config asks the scheduler for something it does not support.
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& config);

}  // namespace sdcpu
