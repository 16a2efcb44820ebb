// Reading a text chunk back out of a PNG the worker made (the A1111 route returns each image's "parameters"
// infotext without decoding the image).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sdcpu::service {

// The value of the first tEXt (Latin-1, returned as UTF-8) or uncompressed iTXt (UTF-8) chunk named `key`, or ""
// when there is none. Reads only chunk headers within bounds: any bytes are safe to pass.
std::string png_text_chunk(const std::vector<uint8_t>& png, const std::string& key);

}  // namespace sdcpu::service
