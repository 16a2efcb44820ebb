// PNG writing/reading with text chunks, and diffusers' float -> uint8 image conversion.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/image_png.h"
#include "test_support.h"

namespace sdcpu {
namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> test_pattern(int w, int h) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 7919u) ^ (i >> 3));
  return px;
}

// Writes a PNG of another pixel format with libpng's simplified API, to test read conversions.
void write_with_libpng(const std::string& path, int w, int h, png_uint_32 format, const void* data,
                       const void* colormap = nullptr, int colormap_entries = 0) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = w;
  image.height = h;
  image.format = format;
  image.colormap_entries = colormap_entries;
  ASSERT_TRUE(png_image_write_to_file(&image, path.c_str(), 0, data, 0, colormap)) << image.message;
}

TEST(Png, RoundTripsPixelsAndText) {
  const std::string path = testing::temp_dir() + "/out.png";
  const int w = 37, h = 23;  // odd sizes: no row padding assumptions
  const auto px = test_pattern(w, h);
  const std::vector<std::pair<std::string, std::string>> text = {
      {"parameters",
       "a photo of an astronaut riding a horse on mars\nNegative prompt: \nSteps: 20, Sampler: Euler a, CFG scale: "
       "7.5, Seed: 42, Size: 512x512"},
      {"Comment", "caf\xc3\xa9 \xc2\xb1 na\xc3\xafve"},                    // Latin-1 range: tEXt
      {"Title", "\xe5\xae\x87\xe5\xae\x99 \xf0\x9f\x9a\x80 caf\xc3\xa9"},  // CJK + emoji: iTXt
      {"Empty", ""},
  };
  write_png_rgb8(path, w, h, px.data(), text);

  const ImageRGB8 img = read_png_rgb8(path);
  EXPECT_EQ(img.width, w);
  EXPECT_EQ(img.height, h);
  EXPECT_EQ(img.pixels, px);
  EXPECT_EQ(img.text, text);

  // The chunk types PIL would choose, and Latin-1 (not UTF-8) bytes inside the tEXt chunk.
  const std::string bytes = read_bytes(path);
  EXPECT_NE(bytes.find("tEXtparameters"), std::string::npos);
  static const char kLatin1Chunk[] = "tEXtComment\0caf\xe9 \xb1 na\xefve";
  EXPECT_NE(bytes.find(std::string(kLatin1Chunk, sizeof kLatin1Chunk - 1)), std::string::npos);
  EXPECT_NE(bytes.find("iTXtTitle"), std::string::npos);
  // Text comes before the image data, where AUTOMATIC1111 and PIL put it.
  EXPECT_LT(bytes.find("tEXtparameters"), bytes.find("IDAT"));
}

TEST(Png, WritesWithoutText) {
  const std::string path = testing::temp_dir() + "/plain.png";
  const auto px = test_pattern(1, 1);
  write_png_rgb8(path, 1, 1, px.data());
  const ImageRGB8 img = read_png_rgb8(path);
  EXPECT_EQ(img.pixels, px);
  EXPECT_TRUE(img.text.empty());
}

TEST(Png, RejectsBadArgumentsAndText) {
  const std::string path = testing::temp_dir() + "/bad.png";
  const auto px = test_pattern(2, 2);
  EXPECT_THROW(write_png_rgb8(path, 0, 2, px.data()), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, -1, px.data()), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, nullptr), InvalidArgument);
  using Text = std::vector<std::pair<std::string, std::string>>;
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{"", "x"}}), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{std::string(80, 'k'), "x"}}), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{"new\nline", "x"}}), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{" lead", "x"}}), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{"\xe5\xae\x87", "x"}}), InvalidArgument);  // not Latin-1
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{"k", "bad \xff utf8"}}), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{"k", "overlong \xc0\xaf"}}), InvalidArgument);
  EXPECT_THROW(write_png_rgb8(path, 2, 2, px.data(), Text{{"k", std::string("nul\0inside", 10)}}), InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(path));
  // A 79-character Latin-1 key is fine.
  write_png_rgb8(path, 2, 2, px.data(), Text{{std::string(78, 'k') + "\xc3\xa9", "v"}});
  EXPECT_EQ(read_png_rgb8(path).text.at(0).first, std::string(78, 'k') + "\xc3\xa9");
}

TEST(Png, UnwritablePathIsIoError) {
  const std::string dir = testing::temp_dir();
  const auto px = test_pattern(2, 2);
  EXPECT_THROW(write_png_rgb8(dir + "/no/such/dir/x.png", 2, 2, px.data()), IoError);
  EXPECT_THROW(write_png_rgb8(dir, 2, 2, px.data()), IoError);  // a directory
}

TEST(Png, BadFilesAreErrors) {
  const std::string dir = testing::temp_dir();
  EXPECT_THROW(read_png_rgb8(dir + "/missing.png"), IoError);

  write_bytes(dir + "/empty.png", "");
  EXPECT_THROW(read_png_rgb8(dir + "/empty.png"), InvalidArgument);
  write_bytes(dir + "/text.png", "this is not a PNG file at all");
  EXPECT_THROW(read_png_rgb8(dir + "/text.png"), InvalidArgument);

  const std::string good = dir + "/good.png";
  const auto px = test_pattern(64, 64);
  write_png_rgb8(good, 64, 64, px.data(), {{"parameters", "x"}});
  const std::string bytes = read_bytes(good);

  // Truncated anywhere after the signature, including inside the image data.
  for (size_t keep : {size_t{8}, size_t{20}, size_t{40}, bytes.size() / 2, bytes.size() - 13}) {
    write_bytes(dir + "/cut.png", bytes.substr(0, keep));
    EXPECT_THROW(read_png_rgb8(dir + "/cut.png"), InvalidArgument) << "kept " << keep << " bytes";
  }
  // A flipped bit in the image data fails its CRC.
  std::string corrupt = bytes;
  const size_t idat = corrupt.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  corrupt[idat + 10] ^= 0x10;
  write_bytes(dir + "/crc.png", corrupt);
  EXPECT_THROW(read_png_rgb8(dir + "/crc.png"), InvalidArgument);
  // A header claiming a huge image is refused before any allocation.
  std::string huge = bytes;
  const size_t ihdr = huge.find("IHDR");
  const unsigned char side[4] = {0x00, 0x01, 0x00, 0x00};  // 65536
  std::memcpy(&huge[ihdr + 4], side, 4);
  write_bytes(dir + "/huge.png", huge);
  EXPECT_THROW(read_png_rgb8(dir + "/huge.png"), InvalidArgument);
}

TEST(Png, ReadsOtherPixelFormatsAsRgb) {
  const std::string dir = testing::temp_dir();
  const int w = 3, h = 2;
  // Gray -> replicated.
  const uint8_t gray[6] = {0, 50, 100, 150, 200, 255};
  write_with_libpng(dir + "/g.png", w, h, PNG_FORMAT_GRAY, gray);
  ImageRGB8 img = read_png_rgb8(dir + "/g.png");
  ASSERT_EQ(img.pixels.size(), 18u);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.pixels[i * 3 + c], gray[i]);
  // RGBA -> alpha dropped, not composited (PIL's convert("RGB")).
  std::vector<uint8_t> rgba(w * h * 4);
  for (size_t i = 0; i < rgba.size(); ++i) rgba[i] = static_cast<uint8_t>(i * 11);
  write_with_libpng(dir + "/rgba.png", w, h, PNG_FORMAT_RGBA, rgba.data());
  img = read_png_rgb8(dir + "/rgba.png");
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.pixels[i * 3 + c], rgba[i * 4 + c]);
  // Palette -> expanded.
  const uint8_t palette[2 * 3] = {10, 20, 30, 200, 100, 50};
  const uint8_t index[6] = {0, 1, 1, 0, 1, 0};
  write_with_libpng(dir + "/pal.png", w, h, PNG_FORMAT_RGB_COLORMAP, index, palette, 2);
  img = read_png_rgb8(dir + "/pal.png");
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.pixels[i * 3 + c], palette[index[i] * 3 + c]);
}

// --- image_to_rgb8 -------------------------------------------------------------------------------------------

// A VAE output value x whose float32 (x / 2 + 0.5) * 255 is exactly `target` (a .5 tie), found by searching
// the floats v near target / 255; NaN if there is none.
float x_for_product(float target) {
  const float v0 = target / 255.0f;
  float below = v0, above = v0;
  for (int step = 0; step < 4096; ++step) {
    for (float v : {below, above}) {
      const float x = (v - 0.5f) * 2.0f;  // exact: v is in [0.25, 1]
      if (v * 255.0f == target && x / 2.0f + 0.5f == v) return x;
    }
    below = std::nextafter(below, 0.0f);
    above = std::nextafter(above, 1.0f);
  }
  return std::numeric_limits<float>::quiet_NaN();
}

TEST(ImageToRgb8, RoundsHalfToEvenLikeNumpy) {
  // 127.5 -> 128 and 126.5 -> 126 (half to even; round-half-away would give 127), 128.5 -> 128, 129.5 -> 130.
  const float x1265 = x_for_product(126.5f), x1285 = x_for_product(128.5f), x1295 = x_for_product(129.5f);
  ASSERT_FALSE(std::isnan(x1265));
  ASSERT_FALSE(std::isnan(x1285));
  ASSERT_FALSE(std::isnan(x1295));
  const std::vector<float> xs = {0.0f, x1265, x1285, x1295, -1.0f, 1.0f, -1.5f, 2.0f, std::nanf("")};
  const std::vector<uint8_t> want = {128, 126, 128, 130, 0, 255, 0, 255, 0};
  // Lay the values out as the R channel of a [1, 3, 1, N] image; G and B are zero (-> 128).
  const int n = static_cast<int>(xs.size());
  Tensor img = Tensor::zeros({1, 3, 1, n});
  for (int i = 0; i < n; ++i) img[i] = xs[i];
  const auto out = image_to_rgb8(img, 0);
  ASSERT_EQ(out.size(), static_cast<size_t>(n) * 3);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(out[i * 3], want[i]) << "x = " << xs[i];
    EXPECT_EQ(out[i * 3 + 1], 128);
    EXPECT_EQ(out[i * 3 + 2], 128);
  }
}

TEST(ImageToRgb8, NchwToHwcForTheChosenBatchItem) {
  // [2, 3, 2, 2]; value encodes (n, c, y, x) so the byte tells where it came from.
  Tensor img({2, 3, 2, 2});
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 2; ++x) {
          const int code = n * 100 + c * 20 + y * 6 + x * 3;  // a byte value < 255
          img[((n * 3 + c) * 2 + y) * 2 + x] = (code / 255.0f - 0.5f) * 2.0f;
        }
  for (int n = 0; n < 2; ++n) {
    const auto out = image_to_rgb8(img, n);
    ASSERT_EQ(out.size(), 12u);
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 2; ++x)
        for (int c = 0; c < 3; ++c) EXPECT_EQ(out[(y * 2 + x) * 3 + c], n * 100 + c * 20 + y * 6 + x * 3);
  }
}

TEST(ImageToRgb8, RejectsBadShapesAndIndices) {
  EXPECT_THROW(image_to_rgb8(Tensor::zeros({1, 4, 2, 2}), 0), InvalidArgument);
  EXPECT_THROW(image_to_rgb8(Tensor::zeros({3, 2, 2}), 0), InvalidArgument);
  EXPECT_THROW(image_to_rgb8(Tensor::zeros({1, 3, 2, 2}), 1), InvalidArgument);
  EXPECT_THROW(image_to_rgb8(Tensor::zeros({1, 3, 2, 2}), -1), InvalidArgument);
}

// The pipeline goldens store the clamped [0, 1] image; diffusers' PNG bytes are round(v * 255) of it. Feeding
// equivalent [-1, 1] values through image_to_rgb8 must give those bytes (checked where 2v - 1 maps back to v
// exactly, which is every v >= 0.25 and most others).
TEST(ImageToRgb8, MatchesGoldenPipelineImage) {
  const Tensor nhwc = testing::golden("tiny-sd/pipeline_euler_a_10steps_cfg7.5.safetensors").read_f32("image");
  const int64_t h = nhwc.dim(1), w = nhwc.dim(2);
  Tensor nchw({1, 3, h, w});
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) nchw[(c * h + y) * w + x] = (nhwc[(y * w + x) * 3 + c] - 0.5f) * 2.0f;
  const auto out = image_to_rgb8(nchw, 0);
  int64_t checked = 0;
  for (int64_t i = 0; i < h * w * 3; ++i) {
    const float v = nhwc[i];
    if ((v - 0.5f) * 2.0f / 2.0f + 0.5f != v) continue;
    ++checked;
    ASSERT_EQ(out[i], std::nearbyint(v * 255.0f)) << "at " << i << ", v = " << v;
  }
  EXPECT_GT(checked, h * w * 3 * 9 / 10);
}

}  // namespace
}  // namespace sdcpu
