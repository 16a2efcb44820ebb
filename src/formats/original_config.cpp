#include "formats/original_config.h"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

constexpr uintmax_t kMaxBytes = 1 << 20;

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// A scalar without its quotes and trailing comment ("v" # note -> v).
std::string scalar(std::string value) {
  value = trim(value);
  if (!value.empty() && (value[0] == '"' || value[0] == '\'')) {
    const size_t close = value.find(value[0], 1);
    return close == std::string::npos ? value.substr(1) : value.substr(1, close - 1);
  }
  const size_t comment = value.find(" #");
  if (comment != std::string::npos) value = value.substr(0, comment);
  return trim(value);
}

double parse_number(const std::string& text, const std::string& where) {
  // std::from_chars for double: locale-independent, rejects trailing garbage ("1.0e-4" and "0.0120" parse).
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size())
    throw ModelError(where + ": '" + text + "' is not a number");
  return v;
}

int parse_positive_int(const std::string& text, const std::string& where) {
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v <= 0 || v > 4096)
    throw ModelError(where + ": '" + text + "' is not a positive integer");
  return v;
}

}  // namespace

std::string original_config_beside(const std::string& checkpoint_path) {
  for (const char* ext : {".yaml", ".yml"}) {
    fs::path candidate = fs::path(checkpoint_path).replace_extension(ext);
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  return "";
}

OriginalConfig read_original_config(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) throw ModelError(path + ": cannot read the original config: " + ec.message());
  if (size > kMaxBytes)
    throw ModelError(path + ": an original config of " + std::to_string(size) + " bytes (over 1 MB)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path + ": cannot open the original config");

  OriginalConfig config;
  config.path = path;
  // The keys above the current line, with their indentation: the path "model.params.unet_config.params".
  std::vector<std::pair<size_t, std::string>> parents;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos) continue;
    const std::string content = trim(line.substr(indent));
    if (content.empty() || content[0] == '#' || content[0] == '-') continue;  // comments, list items
    const size_t colon = content.find(':');
    if (colon == std::string::npos) continue;  // a continuation line this reader does not need
    while (!parents.empty() && parents.back().first >= indent) parents.pop_back();
    const std::string key = trim(content.substr(0, colon));
    const std::string value = scalar(content.substr(colon + 1));
    std::string key_path;
    for (const auto& [i, k] : parents) key_path += k + ".";
    key_path += key;
    if (value.empty()) {
      parents.emplace_back(indent, key);  // a nested mapping follows
      continue;
    }
    const std::string where = path + ":" + std::to_string(line_number) + ": " + key_path;
    if (key_path == "model.params.parameterization") {
      if (value != "v" && value != "eps")
        throw ModelError(where + " is '" + value +
                         "'; sdcpu runs \"eps\" (epsilon prediction) and \"v\" (v-prediction) models only");
      config.parameterization = value;
    } else if (key_path == "model.params.linear_start") {
      config.linear_start = parse_number(value, where);
    } else if (key_path == "model.params.linear_end") {
      config.linear_end = parse_number(value, where);
    } else if (key_path == "model.params.scale_factor") {
      config.scale_factor = parse_number(value, where);
    } else if (key_path == "model.params.unet_config.params.num_heads" ||
               key_path == "model.params.network_config.params.num_heads") {  // SDXL's sgm configs
      config.num_heads = parse_positive_int(value, where);
    } else if (key_path == "model.params.unet_config.params.num_head_channels" ||
               key_path == "model.params.network_config.params.num_head_channels") {
      // LDM's UNetModel: -1 means "use num_heads".
      if (value != "-1") config.num_head_channels = parse_positive_int(value, where);
    }
  }
  return config;
}

}  // namespace sdcpu
