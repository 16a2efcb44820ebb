#include "formats/model_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/diffusers_folder.h"
#include "formats/single_file.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

// torch.save writes a zip archive (PyTorch >= 1.6) or a bare pickle stream (protocol 2+ starts with
// 0x80 and the protocol number). A safetensors file starts with its header length instead.
bool looks_like_pickle(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  unsigned char b[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(b), 4);
  if (in.gcount() < 2) return false;
  const bool zip = in.gcount() == 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4;
  const bool pickle = b[0] == 0x80 && b[1] >= 2 && b[1] <= 5;
  return zip || pickle;
}

}  // namespace

ModelFiles open_model(const std::string& path, const std::string& variant, const std::string& prediction_type) {
  if (path.empty()) throw ModelError("no model path given");
  if (!prediction_type.empty() && prediction_type != "epsilon" && prediction_type != "v_prediction")
    throw InvalidArgument("prediction type '" + prediction_type + "': expected epsilon or v_prediction",
                          "prediction_type");
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) throw ModelError(path + ": no such file or folder");
  if (fs::is_directory(status)) {
    if (!prediction_type.empty())
      throw InvalidArgument(path +
                                ": a prediction type is given only for single-file checkpoints; a diffusers "
                                "folder's scheduler/scheduler_config.json sets it",
                            "prediction_type");
    return open_diffusers_folder(path, variant);
  }
  if (!fs::is_regular_file(status)) throw ModelError(path + ": not a regular file or a folder");

  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool pickle_ext = ext == ".ckpt" || ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".pkl";
  // DESIGN.md: pickle checkpoints are never unpickled (loading one can execute arbitrary code).
  if (pickle_ext || (ext != ".safetensors" && looks_like_pickle(path)))
    throw ModelError(path +
                     ": a PyTorch pickle checkpoint; sdcpu does not load pickle files, since unpickling can run "
                     "arbitrary code. Convert it to .safetensors first (e.g. safetensors.torch.save_file on its "
                     "state_dict) and open that");
  return open_single_file(path, prediction_type);
}

}  // namespace sdcpu
