#include "pipeline/model_family.h"

#include <algorithm>

#include "core/error.h"

namespace sdcpu {
namespace {

// A key of the stored scheduler config as a string ("" when it does not set it); the values are JSON text.
std::string stored_string(const StoredSchedulerConfig& scheduler, const std::string& key) {
  auto it = scheduler.keys.find(key);
  if (it == scheduler.keys.end() || it->second.size() < 2 || it->second.front() != '"') return "";
  return it->second.substr(1, it->second.size() - 2);
}

// The defaults of family `name` for these files.
ModelFamily family_defaults(const std::string& name, const ModelFiles& files, const StoredSchedulerConfig& scheduler) {
  ModelFamily f;
  f.name = name;
  // height = height or unet.config.sample_size * vae_scale_factor, as every diffusers SD pipeline defaults it.
  const int vae_scale_factor = 1 << (std::max<size_t>(files.vae_config.block_out_channels.size(), 1) - 1);
  const int side = std::clamp(files.unet_config.sample_size * vae_scale_factor / 8 * 8, 64, 2048);
  f.width = f.height = side;
  f.embedded_guidance = files.unet_config.time_cond_proj_dim > 0;
  if (name == "sdxl") {
    // StableDiffusionXLPipeline.__call__'s guidance_scale default (5.0); 1024x1024 comes from sample_size 128.
    f.cfg_scale = 5.0f;
  } else if (name == "sd-turbo" || name == "sdxl-turbo") {
    // sd-turbo's and sdxl-turbo's model cards: pipe(prompt, num_inference_steps=1, guidance_scale=0.0), with the
    // folder's scheduler (EulerDiscreteScheduler, timestep_spacing "trailing"); sdxl-turbo publishes Euler ancestral.
    // sdxl-turbo's UNet has sample_size 64: 512x512, the size it was distilled at.
    f.steps = 1;
    f.cfg_scale = 0.0f;
    f.sampler = scheduler.class_name == "EulerAncestralDiscreteScheduler" ? "euler_a" : "euler";
  } else if (name == "lcm") {
    // LatentConsistencyModelPipeline.__call__'s defaults: num_inference_steps 4, guidance_scale 8.5. Without the
    // UNet's guidance embedding (an LCM-LoRA fused into an ordinary UNet) guidance is classifier-free again, and
    // LCM-LoRA's documentation runs it at guidance 1 (no unconditional pass).
    f.steps = 4;
    f.cfg_scale = files.unet_config.time_cond_proj_dim > 0 ? 8.5f : 1.0f;
    f.sampler = "lcm";
  }
  return f;
}

}  // namespace

std::vector<std::string> model_family_names() {
  return {"sd1", "sd2", "sd2-v", "sd-turbo", "sdxl", "sdxl-turbo", "lcm"};
}

ModelFamily detect_model_family(const ModelFiles& files, const StoredSchedulerConfig& scheduler) {
  const UNetConfig& unet = files.unet_config;
  if (unet.time_cond_proj_dim > 0) {
    ModelFamily f = family_defaults("lcm", files, scheduler);
    f.reason = "the UNet has time_cond_proj_dim " + std::to_string(unet.time_cond_proj_dim) +
               " (LCM-distilled: guidance enters as an embedding, one UNet pass per step)";
    return f;
  }
  if (scheduler.class_name == "LCMScheduler" || files.pipeline_class == "LatentConsistencyModelPipeline") {
    ModelFamily f = family_defaults("lcm", files, scheduler);
    f.reason = scheduler.class_name == "LCMScheduler" ? "the scheduler config is an LCMScheduler's"
                                                      : "model_index.json names LatentConsistencyModelPipeline";
    return f;
  }
  if (files.architecture == "SDXL") {
    const std::string arch_reason = "SDXL: two text encoders and a text_time UNet";
    if (stored_string(scheduler, "timestep_spacing") == "trailing") {
      // As for sd-turbo: sdxl-turbo's published scheduler config is what tells it from SDXL base's.
      ModelFamily f = family_defaults("sdxl-turbo", files, scheduler);
      f.reason = arch_reason +
                 ", timestep_spacing \"trailing\": stabilityai/sdxl-turbo's published config (no file names the "
                 "model; --family overrides)";
      return f;
    }
    ModelFamily f = family_defaults("sdxl", files, scheduler);
    f.reason = arch_reason;
    return f;
  }
  if (files.architecture.starts_with("SD 2.x")) {
    const std::string arch_reason = "SD 2.x UNet (" + std::to_string(unet.cross_attention_dim) +
                                    "-wide cross attention" +
                                    (unet.use_linear_projection ? ", linear projections" : "") + ")";
    if (stored_string(scheduler, "prediction_type") == "v_prediction") {
      ModelFamily f = family_defaults("sd2-v", files, scheduler);
      f.reason = arch_reason + " with v_prediction in the scheduler config";
      return f;
    }
    if (stored_string(scheduler, "timestep_spacing") == "trailing") {
      // Nothing in sd-turbo's files names it; this is what its published config has that SD 2.1-base's lacks.
      ModelFamily f = family_defaults("sd-turbo", files, scheduler);
      f.reason = arch_reason +
                 ", epsilon prediction and timestep_spacing \"trailing\": stabilityai/sd-turbo's published config "
                 "(no file names the model; --family overrides)";
      return f;
    }
    ModelFamily f = family_defaults("sd2", files, scheduler);
    f.reason = arch_reason + " with epsilon prediction";
    return f;
  }
  ModelFamily f = family_defaults("sd1", files, scheduler);
  f.reason = files.architecture + " UNet (" + std::to_string(unet.cross_attention_dim) + "-wide cross attention)";
  return f;
}

ModelFamily model_family_named(const std::string& name, const ModelFiles& files,
                               const StoredSchedulerConfig& scheduler) {
  const std::vector<std::string> names = model_family_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    throw InvalidArgument("unknown model family \"" + name + "\"; valid families: " + list, "family");
  }
  ModelFamily f = family_defaults(name, files, scheduler);
  f.reason = "chosen with --family (detected: " + detect_model_family(files, scheduler).name + ")";
  return f;
}

}  // namespace sdcpu
