// The service's request parsing (POST /v1/jobs), job ids, and reading a PNG's text back.
#include <gtest/gtest.h>

#include <set>

#include "core/image_png.h"
#include "service/http_common.h"
#include "service/job.h"
#include "service/png_text.h"

namespace sdcpu::service {
namespace {

// The RequestError a body gets, or a failure when it is accepted.
RequestError refusal(const std::string& body) {
  try {
    parse_job_request(body);
  } catch (const RequestError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return RequestError(0, "", "");
}

TEST(JobRequest, ReadsEveryField) {
  const JobRequest r = parse_job_request(R"({"prompt": "a lighthouse", "negative_prompt": "blurry", "model": "sd15",
      "width": 256, "height": 128, "steps": 7, "cfg_scale": 5.5, "sampler": "euler_a", "seed": 42,
      "batch_count": 3, "clip_skip": 1, "timestep_spacing": "trailing", "cache_interval": 3, "cache_branch": 2,
      "cache_schedule": "quadratic", "cache_center": 7, "cache_power": 1.5,
      "tome_ratio": 0.5, "tome_max_downsample": 2})");
  EXPECT_EQ(r.model, "sd15");
  EXPECT_EQ(r.options.prompt, "a lighthouse");
  EXPECT_EQ(r.options.negative_prompt, "blurry");
  EXPECT_EQ(r.options.width, 256);
  EXPECT_EQ(r.options.height, 128);
  EXPECT_EQ(r.options.steps, 7);
  EXPECT_FLOAT_EQ(r.options.cfg_scale, 5.5f);
  EXPECT_EQ(r.options.sampler, "euler_a");
  EXPECT_EQ(r.options.seed, 42u);
  EXPECT_EQ(r.options.batch_count, 3);
  EXPECT_EQ(r.options.clip_skip, 1);
  EXPECT_EQ(r.options.timestep_spacing, "trailing");
  EXPECT_EQ(r.options.cache_interval, 3);
  EXPECT_EQ(r.options.cache_branch, 2);
  EXPECT_EQ(r.options.cache_schedule, "quadratic");
  EXPECT_EQ(r.options.cache_center, 7);
  EXPECT_EQ(r.options.cache_power, 1.5);
  EXPECT_EQ(r.options.tome_ratio, 0.5);
  EXPECT_EQ(r.options.tome_max_downsample, 2);
  // The stored form reads back the same.
  const JobRequest again = parse_job_request(job_request_to_json(r));
  EXPECT_EQ(job_request_to_json(again), job_request_to_json(r));
}

TEST(JobRequest, DefaultsAreGenerates) {
  const JobRequest r = parse_job_request(R"({"prompt": "x"})");
  const GenerateOptions defaults;
  EXPECT_EQ(r.model, "");
  EXPECT_EQ(r.options.steps, defaults.steps);
  EXPECT_EQ(r.options.width, defaults.width);
  EXPECT_EQ(r.options.sampler, defaults.sampler);
  EXPECT_EQ(r.options.seed, kRandomSeed);  // absent: random
  EXPECT_EQ(parse_job_request(R"({"prompt": "x", "seed": -1})").options.seed, kRandomSeed);
  EXPECT_EQ(parse_job_request(R"({"prompt": "x", "seed": null})").options.seed, kRandomSeed);
  EXPECT_EQ(parse_job_request(R"({"prompt": "x", "seed": 18446744073709551614})").options.seed,
            18446744073709551614ull);
}

TEST(JobRequest, RefusesWhatTheCliRefuses) {
  struct Bad {
    const char* body;
    const char* code;
    const char* field;
  };
  const Bad cases[] = {
      {"", "invalid_json", ""},
      {"{\"prompt\": \"x\"", "invalid_json", ""},
      {"[1]", "invalid_json", ""},
      {"{}", "invalid_request", "prompt"},
      {R"({"prompt": 5})", "invalid_request", "prompt"},
      {R"({"prompt": "x", "steps": "ten"})", "invalid_request", "steps"},
      {R"({"prompt": "x", "steps": 2.5})", "invalid_request", "steps"},
      {R"({"prompt": "x", "width": 1e300})", "invalid_request", "width"},
      {R"({"prompt": "x", "cfg_scale": "high"})", "invalid_request", "cfg_scale"},
      {R"({"prompt": "x", "cfg_scale": 1e300})", "invalid_request", "cfg_scale"},
      {R"({"prompt": "x", "seed": -2})", "invalid_request", "seed"},
      {R"({"prompt": "x", "seed": 1.5})", "invalid_request", "seed"},
      {R"({"prompt": "x", "seed": 18446744073709551615})", "invalid_request", "seed"},
      {R"({"prompt": "x", "image": "..."})", "unknown_field", "image"},
      {R"({"prompt": "x", "Prompt": "y"})", "unknown_field", "Prompt"},
  };
  for (const Bad& b : cases) {
    SCOPED_TRACE(b.body);
    const RequestError e = refusal(b.body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, b.code);
    EXPECT_EQ(e.field, b.field);
  }
  // Bounds are the CLI's (sdcpu::validate): the error names the option (InvalidArgument::field()).
  const std::pair<const char*, const char*> out_of_bounds[] = {
      {R"({"prompt": "x", "width": 100000})", "width"},
      {R"({"prompt": "x", "height": 100})", "height"},
      {R"({"prompt": "x", "steps": 0})", "steps"},
      {R"({"prompt": "x", "steps": 100000})", "steps"},
      {R"({"prompt": "x", "sampler": "no_such_sampler"})", "sampler"},
      {R"({"prompt": "x", "timestep_spacing": "uniform"})", "timestep_spacing"},
      {R"({"prompt": "x", "batch_count": 0})", "batch_count"},
      {R"({"prompt": "x", "clip_skip": 50})", "clip_skip"},
      {R"({"prompt": "x", "cache_interval": 0})", "cache_interval"},
      {R"({"prompt": "x", "cache_branch": -1})", "cache_branch"},
      {R"({"prompt": "x", "cache_schedule": "cubic"})", "cache_schedule"},
      {R"({"prompt": "x", "cache_center": -5})", "cache_center"},
      {R"({"prompt": "x", "cache_power": 0.5})", "cache_power"},
      {R"({"prompt": "x", "tome_ratio": 1.5})", "tome_ratio"},
      {R"({"prompt": "x", "tome_ratio": "half"})", "tome_ratio"},
      {R"({"prompt": "x", "cfg_scale": -1})", "cfg_scale"}};
  for (const auto& [body, field] : out_of_bounds) {
    SCOPED_TRACE(body);
    const RequestError e = refusal(body);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.field, field);
  }
  // JSON strings must be UTF-8: the parser refuses the bytes before any field is read.
  EXPECT_EQ(refusal("{\"prompt\": \"caf\xc3\"}").code, "invalid_json");
}

TEST(JobId, RandomHexAndStrictlyValidated) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = new_job_id();
    EXPECT_TRUE(is_valid_job_id(id)) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000u);
  for (const char* bad :
       {"", "../../etc/passwd", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0",
        "0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcde/", "0123456789abcdeg0123456789abcdef"})
    EXPECT_FALSE(is_valid_job_id(bad)) << bad;
}

TEST(PngText, ReadsTheParametersTheEncoderWrote) {
  const std::vector<uint8_t> rgb(4 * 3 * 3, 200);
  const std::string latin1 = "a caf\xc3\xa9 at dusk\nSteps: 20";            // tEXt (Latin-1 on disk)
  const std::string utf8 = "\xe7\x81\xaf\xe5\xa1\x94 lighthouse\nSeed: 1";  // iTXt
  EXPECT_EQ(png_text_chunk(encode_png_rgb8(4, 3, rgb.data(), {{"parameters", latin1}}), "parameters"), latin1);
  EXPECT_EQ(png_text_chunk(encode_png_rgb8(4, 3, rgb.data(), {{"parameters", utf8}}), "parameters"), utf8);
  EXPECT_EQ(png_text_chunk(encode_png_rgb8(4, 3, rgb.data(), {{"other", "x"}}), "parameters"), "");
  // Anything else is safe to pass.
  std::vector<uint8_t> png = encode_png_rgb8(4, 3, rgb.data(), {{"parameters", latin1}});
  for (size_t cut = 0; cut < png.size(); cut += 7) {
    const std::vector<uint8_t> truncated(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(cut));
    const std::string text = png_text_chunk(truncated, "parameters");
    EXPECT_TRUE(text.empty() || text == latin1);
  }
  png[11] = 0xff;  // a chunk length pointing past the end
  EXPECT_EQ(png_text_chunk(png, "parameters"), "");
}

TEST(Base64, MatchesRfc4648) {
  auto enc = [](const std::string& s) { return base64_encode(std::vector<uint8_t>(s.begin(), s.end())); };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "Zg==");
  EXPECT_EQ(enc("fo"), "Zm8=");
  EXPECT_EQ(enc("foo"), "Zm9v");
  EXPECT_EQ(enc("foob"), "Zm9vYg==");
  EXPECT_EQ(enc("fooba"), "Zm9vYmE=");
  EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode({0xff, 0xfe, 0x00}), "//4A");
}

}  // namespace
}  // namespace sdcpu::service
