// PNG output (and input, for tests and img2img) with libpng, plus diffusers' float-image -> 8-bit conversion.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sdcpu {

// Writes an 8-bit RGB PNG of `width` x `height` pixels from `rgb` (row-major HWC, 3 bytes a pixel). Each
// `text` entry (UTF-8 key and value) becomes a text chunk before the image data, as PIL's PngInfo.add_text
// writes them (AUTOMATIC1111 stores its generation settings as {"parameters", "..."}): tEXt when the value
// is representable in Latin-1, otherwise uncompressed iTXt. Keys must be 1-79 printable Latin-1 characters.
// Throws InvalidArgument for bad sizes or text, IoError when the file cannot be written (no partial file is
// left behind).
void write_png_rgb8(const std::string& path, int width, int height, const uint8_t* rgb,
                    const std::vector<std::pair<std::string, std::string>>& text = {});

// The same PNG as bytes in memory (write_png_rgb8 writes exactly these). Throws InvalidArgument for bad sizes
// or text.
std::vector<uint8_t> encode_png_rgb8(int width, int height, const uint8_t* rgb,
                                     const std::vector<std::pair<std::string, std::string>>& text = {});

struct ImageRGB8 {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;                            // row-major HWC RGB, width * height * 3 bytes
  std::vector<std::pair<std::string, std::string>> text;  // tEXt/zTXt/iTXt chunks in file order, as UTF-8
};

// Reads any PNG and converts it to 8-bit RGB the way PIL's Image.convert("RGB") does for common files:
// palette and low-bit gray are expanded, 16-bit samples keep their high byte, alpha is dropped (not
// composited), gray is replicated; no gamma correction. Throws IoError when the file cannot be opened and
// InvalidArgument when it is not a valid PNG (bad signature, corrupt or truncated data) or is too large
// (more than 16384 pixels on a side or 64 Mpx in all).
ImageRGB8 read_png_rgb8(const std::string& path);

// diffusers' VaeImageProcessor.postprocess to 8 bits for image `batch_index` of an NCHW (C = 3) float image in
// [-1, 1] (the VAE decoder output): (x / 2 + 0.5).clamp(0, 1) in float32, then numpy's
// (x * 255).round().astype("uint8") -- float32 multiply, round half to even. Returns HWC RGB bytes. NaN,
// which numpy would turn into an unspecified byte, becomes 0. Throws InvalidArgument for another shape or an
// out-of-range index.
std::vector<uint8_t> image_to_rgb8(const Tensor& nchw, int batch_index);

}  // namespace sdcpu
