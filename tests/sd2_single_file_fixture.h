// The tiny SD 2.x single file of tests/oracle/make_sd2_single_file_goldens.py, put together for a test: the
// golden tiny-sd2.partial.safetensors (UNet and OpenCLIP text encoder) plus what the goldens leave out to stay
// small because the shared fixtures hold it: the VAE of ../shared/fixtures/tiny-sd.safetensors and the token
// embedding of tiny-sd's text encoder (49408 x 64). Written as one original-layout .safetensors file (fp32),
// optionally with an A1111-style .yaml of the same stem beside it.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "formats/safetensors.h"
#include "test_support.h"

namespace sdcpu::testing {

inline std::vector<std::pair<std::string, Tensor>> tiny_sd2_tensors() {
  std::vector<std::pair<std::string, Tensor>> tensors;
  const SafetensorsFile& partial = repo_golden("tiny-sd2/tiny-sd2.partial.safetensors");
  for (const TensorInfo& t : partial.tensors()) tensors.emplace_back(t.name, partial.read_f32(t));
  const SafetensorsFile sd1(fixture("tiny-sd.safetensors"));
  for (const TensorInfo& t : sd1.tensors())
    if (t.name.starts_with("first_stage_model.")) tensors.emplace_back(t.name, sd1.read_f32(t));
  const SafetensorsFile text_encoder(fixture("tiny-sd/text_encoder/model.safetensors"));
  tensors.emplace_back("cond_stage_model.model.token_embedding.weight",
                       text_encoder.read_f32("text_model.embeddings.token_embedding.weight"));
  return tensors;
}

// Writes `tensors` as `dir`/tiny-sd2.safetensors with tests/goldens/tiny-sd2/`yaml`.yaml ("v" or "eps") copied
// beside it as tiny-sd2.yaml, or no .yaml for yaml = "". Returns the file's path.
inline std::string write_tiny_sd2(const std::string& dir, const std::string& yaml,
                                  const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/tiny-sd2.safetensors";
  write_safetensors(path, tensors);
  if (!yaml.empty()) {
    const std::string yaml_path = dir + "/tiny-sd2.yaml";
    std::filesystem::copy_file(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/tiny-sd2/" + yaml + ".yaml", yaml_path,
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(yaml_path, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  }
  return path;
}

// The tiny SD 2.x file with `yaml` beside it, written once per test process into a directory of its own (a
// test's temp_dir() goes when the test ends), removed when the process exits.
inline const std::string& tiny_sd2_file(const std::string& yaml) {
  struct Files {
    std::string dir =
        (std::filesystem::temp_directory_path() / ("sdcpu-tiny-sd2-" + std::to_string(::getpid()))).string();
    std::map<std::string, std::string> paths;
    ~Files() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static Files files;
  std::string& path = files.paths[yaml];
  if (path.empty())
    path = write_tiny_sd2(files.dir + "/" + (yaml.empty() ? "no-yaml" : yaml), yaml, tiny_sd2_tensors());
  return path;
}

}  // namespace sdcpu::testing
