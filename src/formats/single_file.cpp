#include "formats/single_file.h"

#include <memory>

#include "core/error.h"
#include "formats/safetensors.h"
#include "formats/single_file_keys.h"

namespace sdcpu {
namespace {

std::shared_ptr<WeightStore> make_store(const char* component, const std::vector<MappedTensor>& tensors,
                                        const std::shared_ptr<const SafetensorsFile>& file) {
  auto store = std::make_shared<WeightStore>(component);
  for (const auto& t : tensors) store->add(t.name, file, t.source);
  return store;
}

}  // namespace

const std::string& sd1_single_file_scheduler_config_json() {
  // SCHEDULER_DEFAULT_CONFIG, then create_scheduler_from_ldm's changes for an SD 1.x/2.x checkpoint: the yaml's
  // linear_start/linear_end (v1-inference.yaml: 0.00085, 0.012), scaled_linear, clip_sample and set_alpha_to_one
  // false, prediction_type epsilon (no `parameterization: "v"`). DDIMScheduler.from_config keeps every key.
  static const std::string kConfig = R"({
  "_class_name": "DDIMScheduler",
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "beta_end": 0.012,
  "interpolation_type": "linear",
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "sample_max_value": 1.0,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "clip_sample": false
}
)";
  return kConfig;
}

ModelFiles open_single_file(const std::string& path) {
  auto file = std::make_shared<const SafetensorsFile>(path);
  std::vector<NamedShape> tensors;
  tensors.reserve(file->tensors().size());
  for (const auto& t : file->tensors()) tensors.push_back({t.name, t.shape});
  SingleFileLayout layout;
  try {
    layout = map_single_file(tensors);
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
  // Only SD 1.x gets here (map_single_file refuses the others).
  m.scheduler_config_json = sd1_single_file_scheduler_config_json();
  m.scheduler_config_path.clear();
  m.tokenizer_dir = "";  // SD 1.x uses the CLIP ViT-L/14 vocabulary sdcpu bundles
  m.text_encoder = make_store("text_encoder", layout.text_encoder, file);
  m.unet = make_store("unet", layout.unet, file);
  m.vae = make_store("vae", layout.vae, file);
  m.ignored_tensors = std::move(layout.ignored);
  m.weight_files = {path};
  return m;
}

}  // namespace sdcpu
