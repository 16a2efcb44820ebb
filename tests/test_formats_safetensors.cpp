#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "formats/safetensors.h"
#include "test_support.h"

namespace sdcpu {
namespace {

std::string header_file(const std::string& json, size_t data_bytes) {
  std::string s(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s + json + std::string(data_bytes, '\0');
}

void expect_rejected(const std::string& bytes, const std::string& needle) {
  try {
    parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    FAIL() << "accepted a bad header; expected an error mentioning '" << needle << "'";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ReadsFixtureGoldens) {
  SafetensorsFile f(testing::fixture("goldens/tiny-sd/unet.safetensors"));
  const TensorInfo* out = f.find("out");
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(out->shape, (Shape{2, 4, 16, 16}));
  EXPECT_EQ(f.read_f32("out").numel(), 2 * 4 * 16 * 16);
}

TEST(Safetensors, F16CheckpointConvertsToF32) {
  SafetensorsFile f(testing::fixture("tiny-sd.safetensors"));
  bool saw_f16 = false;
  for (const auto& t : f.tensors())
    if (t.dtype == DType::F16) {
      saw_f16 = true;
      Tensor v = f.read_f32(t);
      for (int64_t i = 0; i < v.numel(); ++i) ASSERT_TRUE(std::isfinite(v[i])) << t.name;
    }
  EXPECT_TRUE(saw_f16);
}

TEST(Safetensors, RoundTripsWrittenFile) {
  std::string path = testing::temp_dir() + "/x.safetensors";
  Tensor a = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  write_safetensors(path, {{"a", a}, {"b", Tensor::full({1}, 7)}}, {{"k", "v"}});
  SafetensorsFile f(path);
  EXPECT_EQ(f.read_f32("a").to_vector(), a.to_vector());
  EXPECT_EQ(f.read_f32("b")[0], 7);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST(Safetensors, RejectsTooShortFile) { expect_rejected("abc", "too short"); }

TEST(Safetensors, RejectsHeaderLengthBeyondFile) {
  std::string s = header_file("{}", 0);
  s[0] = 100;
  expect_rejected(s, "beyond the end of the file");
}

TEST(Safetensors, RejectsMalformedJson) { expect_rejected(header_file("{\"a\": [", 0), "not valid JSON"); }

TEST(Safetensors, RejectsOffsetsOutOfRange) {
  expect_rejected(header_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside the data area");
}

TEST(Safetensors, RejectsDtypeShapeMismatch) {
  expect_rejected(header_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "do not match");
}

TEST(Safetensors, RejectsOverlappingTensors) {
  expect_rejected(header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              12),
                  "overlap");
}

TEST(Safetensors, RejectsUnknownDtypeAndHugeShapes) {
  expect_rejected(header_file(R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", 1), "unknown dtype");
  expect_rejected(header_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8),
                  "do not match");
  expect_rejected(header_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", 8), "non-negative");
}

TEST(Safetensors, TruncatedRealFileIsRejected) {
  std::ifstream in(testing::fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::string path = testing::temp_dir() + "/truncated.safetensors";
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  EXPECT_THROW(SafetensorsFile{path}, ModelError);
}

}  // namespace
}  // namespace sdcpu
