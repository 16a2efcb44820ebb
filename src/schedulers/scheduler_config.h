// Scheduler configs as diffusers 0.27.2 reads them, and which settings a sampler runs with.
//
// A model stores one scheduler config. A diffusers folder keeps it in scheduler/scheduler_config.json; a single
// file keeps none, and diffusers' from_single_file builds one from its own defaults (loaders/single_file_utils.py:
// get_default_scheduler_config() into a DDIMScheduler, create_scheduler_from_ldm). Whichever sampler a user then
// picks is built with `Cls.from_config(pipe.scheduler.config)`, and ConfigMixin.extract_init_dict decides:
//
//   - a key the stored config sets carries over to the picked class, whichever class wrote it;
//   - a key it does not set takes the picked class's own __init__ default.
//
// So Euler from a folder whose file says "timestep_spacing": "leading" steps 901, 801, ... (10 steps), and from
// one whose file lacks the key (runwayml/stable-diffusion-v1-5's, written by diffusers 0.6) takes Euler's default,
// linspace: 999, 888, ... resolve_scheduler_config() applies that rule, then what the sampler's name fixes
// (the *_karras samplers: use_karras_sigmas, as `from_config(config, use_karras_sigmas=True)`), then the user's
// explicit choices (--timestep-spacing), and records where each value came from.
#pragma once
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sdcpu {

// The settings one scheduler runs with: the keys of a diffusers scheduler_config.json that sdcpu's schedulers
// read. Default-constructed, every key holds a diffusers __init__ default (PNDMScheduler's where classes differ:
// timestep_spacing, set_alpha_to_one, ...); scheduler_class_defaults() gives any sampler's class's own.
struct SchedulerConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";      // linear | scaled_linear | squaredcos_cap_v2
  std::vector<double> trained_betas;         // non-empty: used instead of beta_start/end/schedule
  std::string prediction_type = "epsilon";   // epsilon | v_prediction | sample
  std::string timestep_spacing = "leading";  // leading | linspace | trailing
  int steps_offset = 0;
  // PNDM and DDIM: the alphas_cumprod "before" step 0 is 1 (true) or that of step 0 (false).
  bool set_alpha_to_one = false;
  bool skip_prk_steps = false;  // PNDM: PLMS only (true) or the Runge-Kutta warm-up steps first (false)
  // DDIM: clamp the predicted x0 to [-clip_sample_range, clip_sample_range].
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool thresholding = false;                   // dynamic thresholding (Imagen) is not implemented: true is rejected
  std::string interpolation_type = "linear";   // Euler: linear | log_linear (not implemented: rejected)
  bool use_karras_sigmas = false;              // Euler, LMS, Heun, DPM-Solver, UniPC (the *_karras names set it)
  std::optional<double> sigma_min, sigma_max;  // Euler and DPM-Solver Karras schedule bounds
  bool rescale_betas_zero_snr = false;         // DDIM, Euler, Euler a, DPM-Solver (Lin et al. 2023)
  std::string timestep_type = "discrete";      // Euler: discrete | continuous (t = log(sigma) / 4 with v-prediction)
  // DPMSolverMultistepScheduler and UniPCMultistepScheduler
  int solver_order = 2;  // the DPM++ 2M samplers fix 2; UniPC reads it (1 or 2 supported)
  // DPM-Solver: midpoint | heun; UniPC: bh1 | bh2. Each class maps the other's names to its default as its
  // __init__ does (resolve_scheduler_config() applies that), so a DPM-Solver config's "midpoint" is bh2 for UniPC.
  std::string solver_type = "midpoint";
  bool lower_order_final = true;
  bool euler_at_final = false;
  std::string final_sigmas_type = "zero";  // zero | sigma_min
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  bool use_lu_lambdas = false;  // not implemented: true is rejected by the DPM-Solver
  // UniPCMultistepScheduler
  bool predict_x0 = true;              // UniC/UniP on the data prediction (true) or on the noise (false)
  std::vector<int> disable_corrector;  // step indices whose UniC correction is skipped
  // LCMScheduler
  int original_inference_steps = 50;  // the distillation schedule the inference timesteps are picked from
  double timestep_scaling = 10.0;     // t * timestep_scaling in the consistency boundary condition
};

// Where a setting in effect comes from.
enum class SettingSource {
  file,                 // the model's scheduler_config.json sets it
  single_file_default,  // diffusers' default config for a single-file checkpoint sets it
  class_default,        // the stored config does not set it: the sampler's diffusers class default
  sampler,              // the sampler's name fixes it (dpmpp_2m_karras: use_karras_sigmas)
  option,               // the user chose it (--timestep-spacing)
};
const char* setting_source_name(SettingSource source);  // "file", "single-file default", ...

// A scheduler config as a model stores it: the keys it sets, nothing else.
struct StoredSchedulerConfig {
  std::string class_name;                      // "_class_name" (the class that wrote it), "" when absent
  SettingSource source = SettingSource::file;  // file or single_file_default
  // Every key sdcpu reads that the config sets to a value (null counts as not set), as the JSON text of that
  // value: {"timestep_spacing": "\"leading\"", "steps_offset": "1", ...}. Already validated.
  std::map<std::string, std::string> keys;
};

// Parses a diffusers scheduler_config.json (or diffusers' single-file default config, written as one). Unknown
// keys are ignored; null means not set. Throws ModelError when the text is not a JSON object, or a key sdcpu
// reads has the wrong type or an invalid value. Python's bare Infinity/NaN (json.dumps of lambda_min_clipped) is
// accepted.
StoredSchedulerConfig parse_scheduler_config(const std::string& json_text, SettingSource source = SettingSource::file);

// diffusers' __init__ defaults of the class a sampler mirrors ("euler" -> EulerDiscreteScheduler's). Throws
// InvalidArgument for an unknown sampler.
SchedulerConfig scheduler_class_defaults(const std::string& sampler);

// What the user may choose beyond the sampler; empty = as the model's config says.
struct SchedulerOverrides {
  std::string timestep_spacing;  // leading | linspace | trailing
};

// One key a sampler's class reads, its value in effect (JSON text) and where that value came from.
struct SchedulerSetting {
  std::string key;
  std::string value;
  SettingSource source;
};

struct ResolvedSchedulerConfig {
  std::string sampler;          // "euler"
  std::string diffusers_class;  // "EulerDiscreteScheduler"
  SchedulerConfig config;       // what make_scheduler() gets
  // Every key the class's __init__ takes that sdcpu reads or fixes, in __init__ order.
  std::vector<SchedulerSetting> settings;
};

// The settings `sampler` runs with from the model's stored config (see the top of this file). Throws
// InvalidArgument for an unknown sampler or a bad override, ModelError when the stored config and the sampler
// together are inconsistent (trained_betas of the wrong length).
ResolvedSchedulerConfig resolve_scheduler_config(const std::string& sampler, const StoredSchedulerConfig& stored,
                                                 const SchedulerOverrides& overrides = {});

// The timestep spacings diffusers knows, for options that take one.
const std::vector<std::string>& timestep_spacing_names();

}  // namespace sdcpu
