#include "formats/single_file.h"

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/original_config.h"
#include "formats/safetensors.h"
#include "formats/single_file_keys.h"

namespace sdcpu {
namespace {

std::shared_ptr<WeightStore> make_store(const char* component, const std::vector<MappedTensor>& tensors,
                                        const std::shared_ptr<const SafetensorsFile>& file) {
  auto store = std::make_shared<WeightStore>(component);
  for (const auto& t : tensors) {
    if (t.transposed)
      store->add_transposed(t.name, file, t.source);
    else if (t.first_row >= 0)
      store->add_rows(t.name, file, t.source, t.first_row, t.shape[0]);
    else
      store->add(t.name, file, t.source);
  }
  return store;
}

// The training step a checkpoint may carry (checkpoint["global_step"]; a safetensors file only as a one-element
// integer tensor). diffusers reads 875000 as SD 2.x base (512 px, epsilon).
std::optional<int64_t> global_step(const SafetensorsFile& file) {
  const TensorInfo* info = file.find("global_step");
  if (!info || (info->dtype != DType::I64 && info->dtype != DType::I32)) return std::nullopt;
  const std::vector<int64_t> v = file.read_i64("global_step");
  if (v.size() != 1) return std::nullopt;
  return v[0];
}

std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// diffusers' CHECKPOINT_KEY_NAMES["xl_base"]: the key that makes infer_original_config_file pick sd_xl_base.yaml.
constexpr const char* kSdxlBaseKey = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias";

bool is_sdxl(const SafetensorsFile& file) {
  for (const auto& t : file.tensors())
    if (t.name.starts_with("conditioner.embedders.")) return true;
  return false;
}

}  // namespace

SingleFileSettings single_file_settings(const std::string& path, const SafetensorsFile& file,
                                        const std::string& prediction_option) {
  SingleFileSettings s;
  const std::optional<int64_t> step = global_step(file);
  const bool sd2_base_step = step && *step == 875000;
  const std::string yaml_path = original_config_beside(path);
  bool config_says_v = false;
  std::string config_reason;
  if (!yaml_path.empty()) {
    const OriginalConfig config = read_original_config(yaml_path);
    config_says_v = config.parameterization == "v";
    config_reason =
        file_name(yaml_path) + (config_says_v ? " says parameterization: \"v\"" : " has no parameterization: \"v\"");
    s.hints.num_heads = config.num_heads;
    s.hints.num_head_channels = config.num_head_channels;
    s.hints.scale_factor = config.scale_factor;
    // create_scheduler_from_ldm: original_config["model"]["params"].get("linear_start", 0.02) (and 0.085).
    s.beta_start = config.linear_start.value_or(0.02);
    s.beta_end = config.linear_end.value_or(0.085);
  } else if (file.find(kSdxlBaseKey)) {
    // infer_original_config_file: sd_xl_base.yaml (no parameterization; scale_factor 0.13025).
    config_reason = std::string("no .yaml beside the file; diffusers' rule: ") + kSdxlBaseKey + " exists, so sd_xl_base.yaml";
    s.hints.scale_factor = 0.13025;
  } else {
    // infer_original_config_file: v2-inference-v.yaml when this tensor is 1024 wide (OpenCLIP ViT-H's context),
    // else v1-inference.yaml. Both have linear_start 0.00085, linear_end 0.012 and scale_factor 0.18215.
    const char* key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
    const TensorInfo* to_k = file.find(key);
    config_says_v = to_k && !to_k->shape.empty() && to_k->shape.back() == 1024;
    config_reason = std::string("no .yaml beside the file; diffusers' rule: ") +
                    (config_says_v ? "input_blocks.2.1's cross-attention is 1024 wide, so v2-inference-v.yaml"
                                   : "input_blocks.2.1's cross-attention is not 1024 wide, so v1-inference.yaml");
  }
  // set_image_size and create_scheduler_from_ldm: a "v" config means 768 px v-prediction, except for the global
  // step of SD 2.x base (512 px, epsilon).
  s.hints.image_size = config_says_v && !sd2_base_step ? 768 : 512;
  if (is_sdxl(file)) s.hints.image_size = 1024;  // set_image_size: 1024 for "SDXL", whatever the config says
  const std::string step_note = config_says_v && sd2_base_step ? ", but global_step 875000 is SD 2.x base" : "";
  if (!prediction_option.empty()) {
    s.prediction_type = prediction_option;
    s.reason = "--prediction-type (the original config would give " +
               std::string(config_says_v && !sd2_base_step ? "v_prediction" : "epsilon") + ")";
  } else {
    s.prediction_type = config_says_v && !sd2_base_step ? "v_prediction" : "epsilon";
    s.reason = config_reason + step_note;
  }
  return s;
}

std::string single_file_scheduler_config_json(const std::string& prediction_type, double beta_start, double beta_end) {
  // SCHEDULER_DEFAULT_CONFIG, then create_scheduler_from_ldm's changes for an SD 1.x/2.x checkpoint: the yaml's
  // linear_start/linear_end (v1-inference.yaml, v2-inference*.yaml: 0.00085, 0.012), scaled_linear, clip_sample
  // and set_alpha_to_one false, the prediction type. It sets nothing else for v-prediction (no timestep spacing
  // or rescale keys). num_train_timesteps is always 1000: diffusers reads it with getattr() on a dict.
  // DDIMScheduler.from_config keeps every key.
  nlohmann::ordered_json j;
  j["_class_name"] = "DDIMScheduler";
  j["beta_schedule"] = "scaled_linear";
  j["beta_start"] = beta_start;
  j["beta_end"] = beta_end;
  j["interpolation_type"] = "linear";
  j["num_train_timesteps"] = 1000;
  j["prediction_type"] = prediction_type;
  j["sample_max_value"] = 1.0;
  j["set_alpha_to_one"] = false;
  j["skip_prk_steps"] = true;
  j["steps_offset"] = 1;
  j["timestep_spacing"] = "leading";
  j["clip_sample"] = false;
  return j.dump(2) + "\n";
}

std::string sdxl_single_file_scheduler_config_json(const std::string& prediction_type) {
  // create_scheduler_from_ldm for "SDXL": SCHEDULER_DEFAULT_CONFIG as it is (0.00085..0.012 scaled_linear,
  // "leading", steps_offset 1), num_train_timesteps 1000 and the prediction type, into an EulerDiscreteScheduler.
  nlohmann::ordered_json j;
  j["_class_name"] = "EulerDiscreteScheduler";
  j["beta_schedule"] = "scaled_linear";
  j["beta_start"] = 0.00085;
  j["beta_end"] = 0.012;
  j["interpolation_type"] = "linear";
  j["num_train_timesteps"] = 1000;
  j["prediction_type"] = prediction_type;
  j["sample_max_value"] = 1.0;
  j["set_alpha_to_one"] = false;
  j["skip_prk_steps"] = true;
  j["steps_offset"] = 1;
  j["timestep_spacing"] = "leading";
  return j.dump(2) + "\n";
}

const std::string& sd1_single_file_scheduler_config_json() {
  static const std::string kConfig = single_file_scheduler_config_json("epsilon", 0.00085, 0.012);
  return kConfig;
}

ModelFiles open_single_file(const std::string& path, const std::string& prediction_type) {
  auto file = std::make_shared<const SafetensorsFile>(path);
  std::vector<NamedShape> tensors;
  tensors.reserve(file->tensors().size());
  for (const auto& t : file->tensors()) tensors.push_back({t.name, t.shape});
  SingleFileLayout layout;
  SingleFileSettings settings;
  try {
    settings = single_file_settings(path, *file, prediction_type);
    layout = map_single_file(tensors, settings.hints);
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  }

  ModelFiles m;
  m.path = path;
  m.layout = "single file";
  m.architecture = layout.architecture;
  m.text_encoder_config = layout.text_encoder_config;
  m.unet_config = layout.unet_config;
  m.vae_config = layout.vae_config;
  const bool sdxl = layout.family == SingleFileFamily::kSDXL;
  m.scheduler_config_json =
      sdxl ? sdxl_single_file_scheduler_config_json(settings.prediction_type)
           : single_file_scheduler_config_json(settings.prediction_type, settings.beta_start, settings.beta_end);
  m.scheduler_config_path.clear();
  m.prediction_type = settings.prediction_type;
  m.prediction_type_reason = settings.reason;
  m.tokenizer_dir = "";  // the CLIP ViT-L/14 vocabulary sdcpu bundles, which OpenCLIP's tokenizer shares
  if (layout.family == SingleFileFamily::kSD2) m.tokenizer_pad_token = "!";
  m.text_encoder = make_store("text_encoder", layout.text_encoder, file);
  m.unet = make_store("unet", layout.unet, file);
  m.vae = make_store("vae", layout.vae, file);
  if (sdxl) {
    // StableDiffusionXLPipeline's components: tokenizer_2 (laion bigG's, the same vocabulary, pad "!"; sdcpu's
    // bundled one, as the empty tokenizer_2_dir says) and force_zeros_for_empty_prompt, the pipeline's default.
    m.text_encoder_2_config = layout.text_encoder_2_config;
    m.text_encoder_2 = make_store("text_encoder_2", layout.text_encoder_2, file);
    m.tokenizer_2_dir = "";
    m.force_zeros_for_empty_prompt = true;
  }
  m.ignored_tensors = std::move(layout.ignored);
  m.weight_files = {path};
  return m;
}

}  // namespace sdcpu
