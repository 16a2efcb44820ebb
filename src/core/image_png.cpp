#include "core/image_png.h"

#include <png.h>

#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace sdcpu {
namespace {

// libpng reports errors by calling our handler, which must not return. Throwing a C++ exception through
// libpng's C frames is not safe in general, so the handler records the message and longjmps back to a
// setjmp in png_guarded(); the caller turns the failure into an exception. Between setjmp and longjmp only
// libpng calls run, so no C++ object with a destructor is skipped.
struct PngContext {
  std::string message;
};

[[noreturn]] void on_png_error(png_structp png, png_const_charp message) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  if (ctx) ctx->message = message ? message : "unknown libpng error";
  png_longjmp(png, 1);
}

// Warnings (e.g. a damaged ancillary chunk that libpng skips) do not stop reading, as in PIL.
void on_png_warning(png_structp, png_const_charp) {}

// Runs `f` (libpng calls only); false if libpng raised an error meanwhile.
template <typename F>
bool png_guarded(png_structp png, F&& f) {
  if (setjmp(png_jmpbuf(png))) return false;
  f();
  return true;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

// Decodes UTF-8 into code points; false on malformed input (overlong forms, surrogates, > U+10FFFF).
bool decode_utf8(const std::string& s, std::vector<uint32_t>* out) {
  out->clear();
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    int len;
    uint32_t cp;
    if (b0 < 0x80) {
      len = 1, cp = b0;
    } else if ((b0 & 0xe0) == 0xc0) {
      len = 2, cp = b0 & 0x1f;
    } else if ((b0 & 0xf0) == 0xe0) {
      len = 3, cp = b0 & 0x0f;
    } else if ((b0 & 0xf8) == 0xf0) {
      len = 4, cp = b0 & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    out->push_back(cp);
    i += len;
  }
  return true;
}

std::string latin1_to_utf8(const char* s, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

// A text entry in the form libpng wants it: key in Latin-1, value in Latin-1 (tEXt) or UTF-8 (iTXt).
struct EncodedText {
  std::string key;
  std::string value;
  bool itxt = false;
};

EncodedText encode_text(const std::pair<std::string, std::string>& entry) {
  std::vector<uint32_t> cps;
  EncodedText enc;
  // PNG keywords (section 11.3.4.2): 1-79 Latin-1 characters from 32-126 and 161-255, no leading, trailing
  // or consecutive spaces.
  if (!decode_utf8(entry.first, &cps)) throw InvalidArgument("PNG text key is not valid UTF-8");
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t c = cps[i];
    const bool printable = (c >= 32 && c <= 126) || (c >= 161 && c <= 255);
    const bool bad_space = c == ' ' && (i == 0 || i + 1 == cps.size() || cps[i - 1] == ' ');
    if (!printable || bad_space)
      throw InvalidArgument("PNG text key '" + entry.first + "' must be printable Latin-1 without stray spaces");
    enc.key += static_cast<char>(c);
  }
  if (enc.key.empty() || enc.key.size() > 79)
    throw InvalidArgument("PNG text key '" + entry.first + "' must have 1 to 79 characters");

  // Like PIL's PngInfo.add_text: tEXt if the value encodes as Latin-1, else iTXt (UTF-8).
  if (!decode_utf8(entry.second, &cps))
    throw InvalidArgument("PNG text value for '" + entry.first + "' is not valid UTF-8");
  for (uint32_t c : cps) {
    if (c == 0) throw InvalidArgument("PNG text value for '" + entry.first + "' contains a NUL character");
    if (c > 0xff) enc.itxt = true;
  }
  if (enc.itxt) {
    enc.value = entry.second;
  } else {
    for (uint32_t c : cps) enc.value += static_cast<char>(c);
  }
  return enc;
}

// Limits on images read_png_rgb8 accepts: far above any image this engine works on, small enough that a
// hostile header (a few KB of deflate can claim gigapixels) cannot make us allocate without bound.
constexpr int kMaxReadSide = 16384;
constexpr uint64_t kMaxReadPixels = uint64_t{1} << 26;  // 64 Mpx: 192 MiB of RGB

}  // namespace

std::vector<uint8_t> encode_png_rgb8(int width, int height, const uint8_t* rgb,
                    const std::vector<std::pair<std::string, std::string>>& text) {
  if (width <= 0 || height <= 0 || width > 0x7fffffff / 3)
    throw InvalidArgument("encode_png_rgb8: bad image size " + std::to_string(width) + "x" + std::to_string(height));
  if (!rgb) throw InvalidArgument("encode_png_rgb8: no pixel data");

  std::vector<EncodedText> encoded;
  encoded.reserve(text.size());
  for (const auto& entry : text) encoded.push_back(encode_text(entry));
  std::vector<png_text> chunks(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) {
    png_text& t = chunks[i];
    std::memset(&t, 0, sizeof t);
    t.key = encoded[i].key.data();
    t.text = encoded[i].value.data();
    if (encoded[i].itxt) {
      t.compression = PNG_ITXT_COMPRESSION_NONE;
      t.itxt_length = encoded[i].value.size();
      t.lang = const_cast<char*>("");
      t.lang_key = const_cast<char*>("");
    } else {
      t.compression = PNG_TEXT_COMPRESSION_NONE;
      t.text_length = encoded[i].value.size();
    }
  }
  std::vector<png_bytep> rows(height);
  const size_t stride = static_cast<size_t>(width) * 3;
  for (int y = 0; y < height; ++y) rows[y] = const_cast<png_bytep>(rgb + stride * y);

  std::vector<uint8_t> out;
  PngContext ctx;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  bool ok = png && info;
  if (!ok) ctx.message = "out of memory";
  if (ok) {
    ok = png_guarded(png, [&] {
      png_set_write_fn(
          png, &out,
          [](png_structp p, png_bytep data, png_size_t length) {
            auto* bytes = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
            bytes->insert(bytes->end(), data, data + length);
          },
          nullptr);
      png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                   PNG_FILTER_TYPE_DEFAULT);
      if (!chunks.empty()) png_set_text(png, info, chunks.data(), static_cast<int>(chunks.size()));
      png_write_info(png, info);
      png_write_image(png, rows.data());
      png_write_end(png, info);
    });
  }
  if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  if (!ok) throw InvalidArgument("cannot encode PNG: " + ctx.message);
  return out;
}

void write_png_rgb8(const std::string& path, int width, int height, const uint8_t* rgb,
                    const std::vector<std::pair<std::string, std::string>>& text) {
  const std::vector<uint8_t> bytes = encode_png_rgb8(width, height, rgb, text);
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) throw IoError("cannot create " + path + ": " + std::strerror(errno));
  std::string error;
  if (std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size()) error = std::strerror(errno);
  // A full disk may only show up when the buffered data is flushed.
  if (std::fclose(file) != 0 && error.empty()) error = std::strerror(errno);
  if (!error.empty()) {
    // Remove the partial file, but never a device or anything else that is not a plain file we wrote.
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) std::filesystem::remove(path, ec);
    throw IoError("cannot write PNG " + path + ": " + error);
  }
}

ImageRGB8 read_png_rgb8(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) throw IoError("cannot open " + path + ": " + std::strerror(errno));
  png_byte signature[8];
  if (std::fread(signature, 1, 8, file.get()) != 8 || png_sig_cmp(signature, 0, 8) != 0)
    throw InvalidArgument(path + " is not a PNG file");

  PngContext ctx;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  // Destroys the libpng structures on every way out of this function.
  struct ReadStructs {
    png_structp* png;
    png_infop* info;
    ~ReadStructs() {
      if (*png) png_destroy_read_struct(png, *info ? info : nullptr, nullptr);
    }
  } guard{&png, &info};
  if (!png || !info) throw std::bad_alloc();

  png_uint_32 width = 0, height = 0;
  size_t rowbytes = 0;
  bool ok = png_guarded(png, [&] {
    png_init_io(png, file.get());
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, kMaxReadSide, kMaxReadSide);
    png_read_info(png, info);
    width = png_get_image_width(png, info);
    height = png_get_image_height(png, info);
    // To 8-bit RGB, as Image.convert("RGB"): palette -> RGB, 1/2/4-bit gray -> 8-bit, tRNS -> alpha (then
    // dropped), 16 -> 8 bits by keeping the high byte, alpha dropped, gray replicated.
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    rowbytes = png_get_rowbytes(png, info);
  });
  if (!ok) throw InvalidArgument("bad PNG " + path + ": " + ctx.message);
  if (static_cast<uint64_t>(width) * height > kMaxReadPixels)
    throw InvalidArgument("bad PNG " + path + ": " + std::to_string(width) + "x" + std::to_string(height) +
                          " is too large");
  if (width == 0 || height == 0 || rowbytes != static_cast<size_t>(width) * 3)
    throw InvalidArgument("bad PNG " + path + ": unsupported pixel format");

  ImageRGB8 image;
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.pixels.resize(rowbytes * height);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = image.pixels.data() + rowbytes * y;
  ok = png_guarded(png, [&] {
    png_read_image(png, rows.data());
    png_read_end(png, info);  // text chunks after the image data land in `info` too
  });
  if (!ok) throw InvalidArgument("bad PNG " + path + ": " + ctx.message);

  png_textp chunks = nullptr;
  const int count = png_get_text(png, info, &chunks, nullptr);
  for (int i = 0; i < count; ++i) {
    const png_text& t = chunks[i];
    std::string key = latin1_to_utf8(t.key, std::strlen(t.key));
    const bool itxt = t.compression == PNG_ITXT_COMPRESSION_NONE || t.compression == PNG_ITXT_COMPRESSION_zTXt;
    std::string value;
    if (t.text) value = itxt ? std::string(t.text, t.itxt_length) : latin1_to_utf8(t.text, t.text_length);
    image.text.emplace_back(std::move(key), std::move(value));
  }
  return image;
}

std::vector<uint8_t> image_to_rgb8(const Tensor& nchw, int batch_index) {
  if (nchw.ndim() != 4 || nchw.dim(1) != 3)
    throw InvalidArgument("image_to_rgb8: expected an [N, 3, H, W] image, got " + shape_to_string(nchw.shape()));
  if (batch_index < 0 || batch_index >= nchw.dim(0))
    throw InvalidArgument("image_to_rgb8: batch index " + std::to_string(batch_index) + " out of range for " +
                          shape_to_string(nchw.shape()));
  const int64_t h = nchw.dim(2), w = nchw.dim(3), plane = h * w;
  const float* src = nchw.data() + batch_index * 3 * plane;
  std::vector<uint8_t> out(static_cast<size_t>(plane) * 3);
  for (int c = 0; c < 3; ++c) {
    const float* channel = src + c * plane;
    for (int64_t i = 0; i < plane; ++i) {
      // VaeImageProcessor.denormalize in float32: x / 2 is exact, then one rounding for + 0.5.
      float v = channel[i] / 2.0f + 0.5f;
      if (std::isnan(v)) v = 0.0f;
      v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
      // numpy_to_pil: float32 product, then np.round (half to even, the default rounding mode of rint).
      out[static_cast<size_t>(i) * 3 + c] = static_cast<uint8_t>(std::nearbyint(v * 255.0f));
    }
  }
  return out;
}

}  // namespace sdcpu
