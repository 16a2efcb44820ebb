#include "formats/taesd_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/safetensors.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

constexpr uintmax_t kMaxConfigBytes = 1 << 20;  // a TAESD config.json is ~600 bytes

std::string read_config(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw ModelError(file.string() + " is missing (TAESD config)");
  const uintmax_t size = fs::file_size(file, ec);
  if (ec) throw IoError("cannot read " + file.string() + ": " + ec.message());
  if (size > kMaxConfigBytes) throw ModelError(file.string() + " is " + std::to_string(size) + " bytes, too large");
  std::ifstream in(file, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in || !in.read(text.data(), static_cast<std::streamsize>(size))) throw IoError("cannot read " + file.string());
  return text;
}

std::string pickle_refusal(const std::string& path) {
  return path + ": PyTorch pickle weights; sdcpu loads .safetensors only (pickle files can run code when loaded)";
}

TaesdFiles open_folder(const fs::path& dir) {
  TaesdFiles t;
  t.path = dir.string();
  t.layout = "diffusers folder";
  try {
    t.config = parse_taesd_config(read_config(dir / "config.json"));
  } catch (const ModelError& e) {
    throw ModelError(dir.string() + ": " + e.what());
  }
  const fs::path weights = dir / "diffusion_pytorch_model.safetensors";
  std::error_code ec;
  if (!fs::is_regular_file(weights, ec)) {
    if (fs::exists(dir / "diffusion_pytorch_model.bin", ec))
      throw ModelError(pickle_refusal((dir / "diffusion_pytorch_model.bin").string()));
    throw ModelError(dir.string() + ": no TAESD weights: expected " + weights.string());
  }
  t.weights = std::make_shared<WeightStore>("taesd");
  t.weights->add_all(std::make_shared<const SafetensorsFile>(weights.string()));
  t.has_encoder = t.weights->contains("encoder.layers.0.weight");
  return t;
}

// The widths a file without config has: every level as wide as its first convolution (the config's rule), the
// latent channels from the first decoder convolution [C, latent_channels, 3, 3].
void widths_from_shapes(TaesdConfig& c, const Shape& decoder_conv_in, const WeightStore* store) {
  if (decoder_conv_in.size() != 4) throw ModelError("TAESD decoder's first convolution is not 4-dimensional");
  if (decoder_conv_in[0] < 1 || decoder_conv_in[0] > (1 << 16) || decoder_conv_in[1] < 1 ||
      decoder_conv_in[1] > (1 << 16))
    throw ModelError("TAESD decoder's first convolution has an implausible shape");
  c.latent_channels = static_cast<int>(decoder_conv_in[1]);
  c.decoder_block_out_channels.assign(c.num_decoder_blocks.size(), static_cast<int>(decoder_conv_in[0]));
  if (store && store->contains("encoder.layers.0.weight")) {
    const Shape& e = store->shape("encoder.layers.0.weight");
    if (e.size() == 4 && e[0] >= 1 && e[0] <= (1 << 16))
      c.encoder_block_out_channels.assign(c.num_encoder_blocks.size(), static_cast<int>(e[0]));
  }
}

TaesdFiles open_file(const std::string& path) {
  auto file = std::make_shared<const SafetensorsFile>(path);
  TaesdFiles t;
  t.path = path;
  t.weights = std::make_shared<WeightStore>("taesd");
  if (file->find("decoder.layers.0.weight")) {
    t.layout = "diffusers single file";
    t.weights->add_all(file);
    t.has_encoder = t.weights->contains("encoder.layers.0.weight");
    widths_from_shapes(t.config, t.weights->shape("decoder.layers.0.weight"), t.weights.get());
    return t;
  }
  // madebyollin's taesd.py: Decoder = Sequential(Clamp(), conv(latent, 64), ReLU(), Block, ...), so the decoder's
  // first tensor is "1.weight"; Encoder = Sequential(conv(3, 64), Block, ...) starts at "0.weight".
  const TensorInfo* first = file->find("1.weight");
  if (file->find("0.weight"))
    throw ModelError(path +
                     ": this is TAESD's encoder (taesd_encoder.safetensors); a decoder is needed: "
                     "taesd_decoder.safetensors, or the diffusers folder with config.json");
  if (!first)
    throw ModelError(path +
                     ": not a TAESD: no \"1.weight\" (madebyollin's taesd_decoder.safetensors) and no "
                     "\"decoder.layers.0.weight\" (diffusers' AutoencoderTiny)");
  t.layout = "original decoder file";
  // diffusers' converter: decoder.layers.<i - 1>.* = <i>.* (the clamp, module 0, has no parameters).
  for (const TensorInfo& info : file->tensors()) {
    const size_t dot = info.name.find('.');
    const std::string index = info.name.substr(0, dot);
    if (dot == std::string::npos || index.empty() || index.size() > 4 ||
        !std::all_of(index.begin(), index.end(), [](unsigned char ch) { return std::isdigit(ch); }) ||
        std::stoi(index) < 1)
      throw ModelError(path + ": unexpected tensor \"" + info.name + "\" in a TAESD decoder file");
    t.weights->add("decoder.layers." + std::to_string(std::stoi(index) - 1) + info.name.substr(dot), file, info.name);
  }
  widths_from_shapes(t.config, first->shape, nullptr);
  return t;
}

}  // namespace

TaesdFiles open_taesd(const std::string& path) {
  if (path.empty()) throw ModelError("no TAESD path given");
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) throw ModelError(path + ": no such file or folder");
  if (fs::is_directory(status)) return open_folder(path);
  if (!fs::is_regular_file(status)) throw ModelError(path + ": not a regular file or a folder");
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".pth" || ext == ".pt" || ext == ".bin" || ext == ".ckpt" || ext == ".pkl")
    throw ModelError(pickle_refusal(path) + "; use taesd_decoder.safetensors");
  return open_file(path);
}

}  // namespace sdcpu
