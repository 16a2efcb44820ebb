#include "service/png_text.h"

#include <cstring>

namespace sdcpu::service {

std::string png_text_chunk(const std::vector<uint8_t>& png, const std::string& key) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (png.size() < 8 || std::memcmp(png.data(), kSignature, 8) != 0) return "";
  size_t at = 8;
  while (at + 12 <= png.size()) {  // length (4), type (4), data, CRC (4)
    const uint32_t length = (uint32_t{png[at]} << 24) | (uint32_t{png[at + 1]} << 16) | (uint32_t{png[at + 2]} << 8) |
                            uint32_t{png[at + 3]};
    if (length > png.size() - at - 12) return "";
    const std::string type(reinterpret_cast<const char*>(&png[at + 4]), 4);
    const std::string data(reinterpret_cast<const char*>(&png[at + 8]), length);
    at += 12 + length;
    if (type == "IEND") break;
    if (type != "tEXt" && type != "iTXt") continue;
    const size_t nul = data.find('\0');
    if (nul == std::string::npos || data.compare(0, nul, key) != 0 || nul != key.size()) continue;
    if (type == "tEXt") {  // Latin-1 -> UTF-8
      std::string out;
      for (size_t i = nul + 1; i < data.size(); ++i) {
        const auto c = static_cast<unsigned char>(data[i]);
        if (c < 0x80) {
          out += static_cast<char>(c);
        } else {
          out += static_cast<char>(0xc0 | (c >> 6));
          out += static_cast<char>(0x80 | (c & 0x3f));
        }
      }
      return out;
    }
    // iTXt: keyword\0 compression-flag compression-method language\0 translated-keyword\0 text
    size_t p = nul + 1;
    if (p + 2 > data.size() || data[p] != 0) continue;  // compressed: not what the worker writes
    p += 2;
    const size_t lang_end = data.find('\0', p);
    if (lang_end == std::string::npos) continue;
    const size_t translated_end = data.find('\0', lang_end + 1);
    if (translated_end == std::string::npos) continue;
    return data.substr(translated_end + 1);
  }
  return "";
}

}  // namespace sdcpu::service
