#include "test_support.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "core/image_png.h"

namespace sdcpu::testing {

std::string fixtures_dir() {
  if (const char* env = std::getenv("SDCPU_FIXTURES")) return env;
  return SDCPU_FIXTURES_DIR;
}

std::string fixture(const std::string& relative) { return fixtures_dir() + "/" + relative; }

SafetensorsFile& golden(const std::string& relative) {
  static std::map<std::string, std::unique_ptr<SafetensorsFile>> cache;
  auto& slot = cache[relative];
  if (!slot) slot = std::make_unique<SafetensorsFile>(fixture("goldens/" + relative));
  return *slot;
}

SafetensorsFile& repo_golden(const std::string& relative) {
  static std::map<std::string, std::unique_ptr<SafetensorsFile>> cache;
  auto& slot = cache[relative];
  if (!slot) slot = std::make_unique<SafetensorsFile>(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/" + relative);
  return *slot;
}

std::vector<std::string> repo_goldens(const std::string& folder) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/" + folder))
    if (e.path().extension() == ".safetensors") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string sd15_random_dir() {
  const char* env = std::getenv("SDCPU_SD15_RANDOM");
  if (!env || !std::filesystem::exists(std::string(env) + "/unet/config.json")) return "";
  return env;
}

std::string sd15_random_single_file() {
  const char* env = std::getenv("SDCPU_SD15_RANDOM_SINGLE");
  if (!env || !std::filesystem::exists(env)) return "";
  return env;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tiny_sdxl_dir() {
  namespace fs = std::filesystem;
  static const std::string dir = [] {
    const fs::path root = fs::temp_directory_path() / ("sdcpu-tiny-sdxl-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    const fs::path model = root / "tiny-sdxl";
    fs::copy(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/sdxl/tiny-sdxl", model, fs::copy_options::recursive);
    const fs::path sd = fs::absolute(fixture("tiny-sd"));
    const std::pair<const char*, fs::path> links[] = {
        {"text_encoder", sd / "text_encoder"},
        {"tokenizer", sd / "tokenizer"},
        {"tokenizer_2/vocab.json", sd / "tokenizer" / "vocab.json"},
        {"tokenizer_2/merges.txt", sd / "tokenizer" / "merges.txt"},
        {"text_encoder_2/model-00001-of-00002.safetensors", sd / "text_encoder" / "model.safetensors"},
        {"vae/diffusion_pytorch_model.safetensors", sd / "vae" / "diffusion_pytorch_model.safetensors"},
    };
    for (const auto& [name, target] : links) fs::create_symlink(target, model / name);
    return model.string();
  }();
  return dir;
}

std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "." + info->name();
  auto dir = std::filesystem::temp_directory_path() / ("sdcpu-test-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

Diff compare(const Tensor& actual, const Tensor& expected) {
  Diff d;
  const int64_t n = std::min(actual.numel(), expected.numel());
  for (int64_t i = 0; i < n; ++i) {
    const double e = expected[i];
    const double err = std::fabs(static_cast<double>(actual[i]) - e);
    if (std::fabs(e) > d.max_ref) d.max_ref = std::fabs(e);
    if (!(err <= d.max_abs)) {  // also catches NaN
      d.max_abs = std::isnan(err) ? INFINITY : err;
      d.worst_index = i;
    }
  }
  return d;
}

float round_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = (bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff0000u;  // round half to even on the dropped 16 bits
  std::memcpy(&x, &bits, 4);
  return x;
}

Tensor round_to_bf16(const Tensor& t) {
  Tensor r(t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) r[i] = round_to_bf16(t[i]);
  return r;
}

namespace {

// y = x with its channel dimension moved: NCHW [n, c, h, w] <-> NHWC [n, h, w, c].
Tensor move_channels(const Tensor& x, int64_t n, int64_t c, int64_t h, int64_t w, bool to_last) {
  Tensor y(to_last ? Shape{n, h, w, c} : Shape{n, c, h, w});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < h * w; ++p) {
        const int64_t first = (b * c + ch) * h * w + p, last = (b * h * w + p) * c + ch;
        y[to_last ? last : first] = x[to_last ? first : last];
      }
  return y;
}

}  // namespace

Tensor nchw_to_nhwc(const Tensor& x) { return move_channels(x, x.dim(0), x.dim(1), x.dim(2), x.dim(3), true); }
Tensor nhwc_to_nchw(const Tensor& x) { return move_channels(x, x.dim(0), x.dim(3), x.dim(1), x.dim(2), false); }

std::vector<std::vector<int>> input_id_rows(const SafetensorsFile& golden) {
  const std::vector<int64_t> flat = golden.read_i64("input_ids");
  const size_t seq = static_cast<size_t>(golden.find("input_ids")->shape[1]);
  std::vector<std::vector<int>> rows;
  for (size_t i = 0; i + seq <= flat.size(); i += seq) rows.emplace_back(flat.begin() + i, flat.begin() + i + seq);
  return rows;
}

PixelMatch compare_pixels(const Tensor& image, const Tensor& golden_image) {
  const std::vector<uint8_t> ours = image_to_rgb8(image, 0);
  EXPECT_EQ(static_cast<int64_t>(ours.size()), golden_image.numel());
  if (static_cast<int64_t>(ours.size()) != golden_image.numel()) return {0, 255};
  int64_t exact = 0;
  int worst = 0;
  for (int64_t i = 0; i < golden_image.numel(); ++i) {
    const int want = static_cast<int>(std::nearbyint(golden_image[i] * 255.0f));
    const int diff = std::abs(want - ours[i]);
    worst = std::max(worst, diff);
    exact += diff == 0;
  }
  return {static_cast<double>(exact) / static_cast<double>(golden_image.numel()), worst};
}

}  // namespace sdcpu::testing
