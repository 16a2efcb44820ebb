// Helpers shared by the tests: where the fixtures are, reading goldens, comparing tensors.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/safetensors.h"

namespace sdcpu::testing {

// ../shared/fixtures (override with the SDCPU_FIXTURES environment variable).
std::string fixtures_dir();
// fixtures_dir() + "/" + relative
std::string fixture(const std::string& relative);
// A golden file under fixtures/goldens/, e.g. golden("tiny-sd/unet.safetensors").
SafetensorsFile& golden(const std::string& relative);
// A golden this repository makes itself (tests/oracle/), under tests/goldens/, e.g.
// repo_golden("tiny-sd/pipeline_euler_..._pipeline_call.safetensors").
SafetensorsFile& repo_golden(const std::string& relative);
// The files of a folder under tests/goldens/, sorted by name.
std::vector<std::string> repo_goldens(const std::string& folder);
// The full-size random SD 1.5 folder written by ../shared/tools/make_random_sd.py (--layout diffusers
// --dtype fp32 --seed 0), from SDCPU_SD15_RANDOM; empty when not set or missing (tests then skip).
std::string sd15_random_dir();
// The same tool's single-file layout (--layout single --dtype fp16), from SDCPU_SD15_RANDOM_SINGLE; empty
// when not set or missing. A different random model from the folder's (other draw order): no goldens.
std::string sd15_random_single_file();
// The tiny SDXL pipeline folder of tests/oracle/make_sdxl_goldens.py, assembled as that script does: a copy of
// tests/goldens/sdxl/tiny-sdxl (the parts of its own) in a fresh temporary directory, plus links to tiny-sd's
// text encoder, tokenizer files and VAE weights (fixture("tiny-sd")). Made once per process.
std::string tiny_sdxl_dir();
// The whole content of a text file (config.json, ...); throws IoError when it cannot be read.
std::string read_text(const std::string& path);
// A fresh temporary directory for this test.
std::string temp_dir();

struct Diff {
  double max_abs = 0;  // max |a - b|
  double max_ref = 0;  // max |b|: the output scale
  int64_t worst_index = -1;
};
Diff compare(const Tensor& actual, const Tensor& expected);

// Each value rounded to the nearest bfloat16 (ties to even, as oneDNN's and AVX512_BF16's conversions round),
// returned as fp32: what a bf16 kernel's inputs are, so that a bf16 kernel can be checked against an fp32
// reference run on rounded inputs.
float round_to_bf16(float x);
Tensor round_to_bf16(const Tensor& t);

// [N, C, H, W] -> [N, H, W, C] (x.permute(0, 2, 3, 1).contiguous()) and back: the networks' channels-last
// images against the tests' NCHW references.
Tensor nchw_to_nhwc(const Tensor& x);
Tensor nhwc_to_nchw(const Tensor& x);

// An image [1, 3, H, W] in about [-1, 1] as sdcpu's PNGs hold it (core/image_png.h image_to_rgb8) against a
// pipeline golden's "image" [1, H, W, 3] in [0, 1], rounded to 8 bits as diffusers' numpy_to_pil does.
struct PixelMatch {
  double exact_fraction = 0;  // of the values that agree exactly
  int worst = 0;              // the largest difference, in 1/255
};
PixelMatch compare_pixels(const Tensor& image, const Tensor& golden_image);

// A text-encoder golden's "input_ids" [batch, seq] as one row of token ids per prompt.
std::vector<std::vector<int>> input_id_rows(const SafetensorsFile& golden);

}  // namespace sdcpu::testing

// Asserts equal shapes and max |actual - expected| <= rel_tol * max(1, max |expected|).
#define EXPECT_TENSOR_NEAR(actual, expected, rel_tol)                                                                \
  do {                                                                                                               \
    const ::sdcpu::Tensor& a_ = (actual);                                                                            \
    const ::sdcpu::Tensor& e_ = (expected);                                                                          \
    ASSERT_EQ(::sdcpu::shape_to_string(a_.shape()), ::sdcpu::shape_to_string(e_.shape()));                           \
    auto d_ = ::sdcpu::testing::compare(a_, e_);                                                                     \
    const double scale_ = d_.max_ref > 1.0 ? d_.max_ref : 1.0;                                                       \
    if (std::getenv("SDCPU_TEST_VERBOSE"))                                                                           \
      std::printf("  %s: max abs error %.3g, output scale %.3g\n", #actual, d_.max_abs, d_.max_ref);                 \
    EXPECT_LE(d_.max_abs, (rel_tol)*scale_)                                                                          \
        << "max abs error " << d_.max_abs << " at flat index " << d_.worst_index << ", output scale " << d_.max_ref; \
  } while (0)
