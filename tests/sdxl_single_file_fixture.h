// The tiny SDXL single file of tests/oracle/make_sdxl_single_file_goldens.py, put together for a test: the golden
// tiny-sdxl.partial.safetensors (UNet and both text encoders) plus what the goldens leave out to stay small because
// the shared fixtures hold it: the VAE of ../shared/fixtures/tiny-sd.safetensors and, for both encoders, the token
// embedding of tiny-sd's text encoder (49408 x 64). Written as one original-layout .safetensors file (fp32) with
// tests/goldens/tiny-sdxl-single/tiny-sdxl.yaml beside it (or not).
#pragma once
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "formats/safetensors.h"
#include "test_support.h"

namespace sdcpu::testing {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

inline NamedTensors tiny_sdxl_tensors() {
  NamedTensors tensors;
  const SafetensorsFile& partial = repo_golden("tiny-sdxl-single/tiny-sdxl.partial.safetensors");
  for (const TensorInfo& t : partial.tensors()) tensors.emplace_back(t.name, partial.read_f32(t));
  const SafetensorsFile sd1(fixture("tiny-sd.safetensors"));
  for (const TensorInfo& t : sd1.tensors())
    if (t.name.starts_with("first_stage_model.")) tensors.emplace_back(t.name, sd1.read_f32(t));
  const SafetensorsFile text_encoder(fixture("tiny-sd/text_encoder/model.safetensors"));
  const Tensor embedding = text_encoder.read_f32("text_model.embeddings.token_embedding.weight");
  tensors.emplace_back("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", embedding);
  tensors.emplace_back("conditioner.embedders.1.model.token_embedding.weight", embedding);
  return tensors;
}

// Writes `tensors` as `dir`/tiny-sdxl.safetensors, with the golden tiny-sdxl.yaml beside it when `with_yaml`.
inline std::string write_tiny_sdxl(const std::string& dir, bool with_yaml, const NamedTensors& tensors) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/tiny-sdxl.safetensors";
  write_safetensors(path, tensors);
  if (with_yaml) {
    const std::string yaml_path = dir + "/tiny-sdxl.yaml";
    std::filesystem::copy_file(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/tiny-sdxl-single/tiny-sdxl.yaml",
                               yaml_path, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(yaml_path, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  }
  return path;
}

// The tiny SDXL file with its .yaml, written once per test process, removed when the process exits.
inline const std::string& tiny_sdxl_file() {
  struct File {
    std::string dir =
        (std::filesystem::temp_directory_path() / ("sdcpu-tiny-sdxl-" + std::to_string(::getpid()))).string();
    std::string path = write_tiny_sdxl(dir, true, tiny_sdxl_tensors());
    ~File() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static File file;
  return file.path;
}

}  // namespace sdcpu::testing
