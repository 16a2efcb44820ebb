// scheduler_config.json parsing, make_scheduler() and the Scheduler API's argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/scheduler.h"
#include "test_support.h"

namespace sdcpu {
namespace {

std::string fixture_config_json() {
  return testing::read_text(testing::fixture("tiny-sd/scheduler/scheduler_config.json"));
}

template <typename E>
void expect_throw_mentioning(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void expect_model_error(const std::string& json, const std::string& needle) {
  SCOPED_TRACE(json);
  expect_throw_mentioning<ModelError>([&] { parse_scheduler_config(json); }, needle);
}

TEST(SchedulerConfig, ParsesTheFixtureConfig) {
  const SchedulerConfig c = parse_scheduler_config(fixture_config_json());
  EXPECT_EQ(c.class_name, "PNDMScheduler");
  EXPECT_EQ(c.num_train_timesteps, 1000);
  EXPECT_DOUBLE_EQ(c.beta_start, 0.00085);
  EXPECT_DOUBLE_EQ(c.beta_end, 0.012);
  EXPECT_EQ(c.beta_schedule, "scaled_linear");
  EXPECT_TRUE(c.trained_betas.empty());
  EXPECT_EQ(c.prediction_type, "epsilon");
  ASSERT_TRUE(c.timestep_spacing.has_value());
  EXPECT_EQ(*c.timestep_spacing, "leading");
  EXPECT_EQ(c.steps_offset, 1);
  ASSERT_TRUE(c.set_alpha_to_one.has_value());
  EXPECT_FALSE(*c.set_alpha_to_one);
  EXPECT_TRUE(c.skip_prk_steps);
  EXPECT_TRUE(c.clip_sample);  // absent: DDIM's default
  EXPECT_FALSE(c.use_karras_sigmas);
}

TEST(SchedulerConfig, DefaultIsStableDiffusion15) {
  const SchedulerConfig d;
  const SchedulerConfig f = parse_scheduler_config(fixture_config_json());
  EXPECT_EQ(d.class_name, f.class_name);
  EXPECT_EQ(d.num_train_timesteps, f.num_train_timesteps);
  EXPECT_EQ(d.beta_start, f.beta_start);
  EXPECT_EQ(d.beta_end, f.beta_end);
  EXPECT_EQ(d.beta_schedule, f.beta_schedule);
  EXPECT_EQ(d.steps_offset, f.steps_offset);
  EXPECT_EQ(d.set_alpha_to_one, f.set_alpha_to_one);
  EXPECT_EQ(d.skip_prk_steps, f.skip_prk_steps);
  // Every scheduler runs the same schedule from either.
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    auto a = make_scheduler(name, d);
    auto b = make_scheduler(name, f);
    a->set_timesteps(25);
    b->set_timesteps(25);
    EXPECT_EQ(a->timesteps(), b->timesteps());
    EXPECT_EQ(a->sigmas(), b->sigmas());
    EXPECT_EQ(a->init_noise_sigma(), b->init_noise_sigma());
  }
}

TEST(SchedulerConfig, EmptyObjectGivesDiffusersDefaults) {
  const SchedulerConfig c = parse_scheduler_config("{}");
  EXPECT_EQ(c.class_name, "");
  EXPECT_EQ(c.num_train_timesteps, 1000);
  EXPECT_DOUBLE_EQ(c.beta_start, 0.0001);
  EXPECT_DOUBLE_EQ(c.beta_end, 0.02);
  EXPECT_EQ(c.beta_schedule, "linear");
  EXPECT_FALSE(c.timestep_spacing.has_value());
  EXPECT_EQ(c.steps_offset, 0);
  EXPECT_FALSE(c.set_alpha_to_one.has_value());
  EXPECT_FALSE(c.skip_prk_steps);
  EXPECT_TRUE(std::isinf(c.lambda_min_clipped) && c.lambda_min_clipped < 0);
}

TEST(SchedulerConfig, NullMeansUnsetAndUnknownKeysAreIgnored) {
  const SchedulerConfig c = parse_scheduler_config(
      R"({"trained_betas": null, "timestep_spacing": null, "variance_type": null, "algorithm_type": "dpmsolver++",
          "solver_order": 2, "some_future_key": {"nested": [1, 2, 3]}, "_diffusers_version": "0.99"})");
  EXPECT_TRUE(c.trained_betas.empty());
  EXPECT_FALSE(c.timestep_spacing.has_value());
}

TEST(SchedulerConfig, ReadsEveryKnownKey) {
  const SchedulerConfig c = parse_scheduler_config(R"({
    "_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000.0, "beta_start": 0.001, "beta_end": 0.01,
    "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "timestep_spacing": "trailing",
    "steps_offset": 0, "set_alpha_to_one": true, "skip_prk_steps": true, "clip_sample": false,
    "clip_sample_range": 2.5, "thresholding": false, "use_karras_sigmas": true, "sigma_min": 0.03, "sigma_max": 14.0,
    "rescale_betas_zero_snr": true, "interpolation_type": "linear", "timestep_type": "continuous",
    "solver_type": "bh2", "lower_order_final": false, "euler_at_final": true, "final_sigmas_type": "sigma_min",
    "lambda_min_clipped": -5.1, "use_lu_lambdas": false})");
  EXPECT_EQ(c.class_name, "EulerDiscreteScheduler");
  EXPECT_EQ(c.beta_schedule, "squaredcos_cap_v2");
  EXPECT_EQ(c.prediction_type, "v_prediction");
  EXPECT_EQ(*c.timestep_spacing, "trailing");
  EXPECT_TRUE(*c.set_alpha_to_one);
  EXPECT_FALSE(c.clip_sample);
  EXPECT_DOUBLE_EQ(c.clip_sample_range, 2.5);
  EXPECT_TRUE(c.use_karras_sigmas);
  EXPECT_DOUBLE_EQ(*c.sigma_min, 0.03);
  EXPECT_DOUBLE_EQ(*c.sigma_max, 14.0);
  EXPECT_TRUE(c.rescale_betas_zero_snr);
  EXPECT_EQ(c.timestep_type, "continuous");
  EXPECT_EQ(c.solver_type, "midpoint");  // diffusers maps bh2 (and logrho, bh1) to midpoint
  EXPECT_FALSE(c.lower_order_final);
  EXPECT_TRUE(c.euler_at_final);
  EXPECT_EQ(c.final_sigmas_type, "sigma_min");
  EXPECT_DOUBLE_EQ(c.lambda_min_clipped, -5.1);
}

TEST(SchedulerConfig, AcceptsPythonsNonFiniteLiterals) {
  // json.dumps(float("-inf")) writes -Infinity; DPMSolverMultistepScheduler configs carry it.
  const SchedulerConfig c = parse_scheduler_config(
      R"({"lambda_min_clipped": -Infinity, "prediction_type": "epsilon", "note": "NaN -Infinity"})");
  EXPECT_TRUE(std::isinf(c.lambda_min_clipped) && c.lambda_min_clipped < 0);
  expect_model_error(R"({"beta_start": NaN})", "beta_start");
  expect_model_error(R"({"lambda_min_clipped": NaN})", "lambda_min_clipped");
}

TEST(SchedulerConfig, RejectsMalformedJson) {
  expect_model_error("", "not valid JSON");
  expect_model_error("{\"beta_start\": 0.1", "not valid JSON");
  expect_model_error("[1, 2]", "JSON object");
  expect_model_error("42", "JSON object");
}

TEST(SchedulerConfig, RejectsWrongTypes) {
  expect_model_error(R"({"num_train_timesteps": "1000"})", "num_train_timesteps");
  expect_model_error(R"({"num_train_timesteps": 1000.5})", "num_train_timesteps");
  expect_model_error(R"({"beta_start": "0.1"})", "beta_start");
  expect_model_error(R"({"beta_end": [0.1]})", "beta_end");
  expect_model_error(R"({"beta_schedule": 3})", "beta_schedule");
  expect_model_error(R"({"set_alpha_to_one": 1})", "set_alpha_to_one");
  expect_model_error(R"({"skip_prk_steps": "true"})", "skip_prk_steps");
  expect_model_error(R"({"clip_sample": 0})", "clip_sample");
  expect_model_error(R"({"timestep_spacing": 5})", "timestep_spacing");
  expect_model_error(R"({"trained_betas": "0.1"})", "trained_betas");
  expect_model_error(R"({"trained_betas": [0.1, "x"]})", "trained_betas");
  expect_model_error(R"({"steps_offset": true})", "steps_offset");
  expect_model_error(R"({"use_karras_sigmas": "yes"})", "use_karras_sigmas");
  expect_model_error(R"({"sigma_min": "small"})", "sigma_min");
}

TEST(SchedulerConfig, RejectsInvalidOrUnsupportedValues) {
  expect_model_error(R"({"beta_schedule": "cosine"})", "squaredcos_cap_v2");
  expect_model_error(R"({"prediction_type": "noise"})", "prediction_type");
  expect_model_error(R"({"timestep_spacing": "uniform"})", "timestep_spacing");
  expect_model_error(R"({"num_train_timesteps": 0})", "num_train_timesteps");
  expect_model_error(R"({"num_train_timesteps": 10000000})", "num_train_timesteps");
  expect_model_error(R"({"steps_offset": -1})", "steps_offset");
  expect_model_error(R"({"beta_end": 1.5})", "beta_start and beta_end");
  expect_model_error(R"({"beta_start": -0.1})", "beta_start and beta_end");
  expect_model_error(R"({"clip_sample_range": 0})", "clip_sample_range");
  expect_model_error(R"({"sigma_max": -1})", "sigma_max");
  expect_model_error(R"({"interpolation_type": "log_linear"})", "interpolation_type");
  expect_model_error(R"({"final_sigmas_type": "one"})", "final_sigmas_type");
  expect_model_error(R"({"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]})", "trained_betas has 2 values");
  expect_model_error(R"({"num_train_timesteps": 2, "trained_betas": [0.1, 1.0]})", "trained_betas");
}

TEST(SchedulerConfig, SchedulersRejectWhatTheyCannotDo) {
  SchedulerConfig c;
  c.thresholding = true;
  for (const char* name : {"ddim", "dpmpp_2m", "dpmpp_2m_karras"})
    expect_throw_mentioning<ModelError>([&] { make_scheduler(name, c); }, "thresholding");
  c = SchedulerConfig();
  c.use_lu_lambdas = true;
  expect_throw_mentioning<ModelError>([&] { make_scheduler("dpmpp_2m", c); }, "use_lu_lambdas");
  c = SchedulerConfig();
  c.prediction_type = "sample";  // diffusers raises for these two
  expect_throw_mentioning<ModelError>([&] { make_scheduler("pndm", c); }, "sample");
  expect_throw_mentioning<ModelError>([&] { make_scheduler("euler_a", c); }, "sample");
  for (const char* name : {"ddim", "euler", "lms", "dpmpp_2m"}) EXPECT_NO_THROW(make_scheduler(name, c)) << name;
}

TEST(MakeScheduler, KnowsEveryNameAndRejectsOthers) {
  const std::vector<std::string> expected = {"pndm", "ddim", "euler", "euler_a", "lms", "dpmpp_2m", "dpmpp_2m_karras"};
  EXPECT_EQ(scheduler_names(), expected);
  for (const std::string& name : scheduler_names()) {
    auto s = make_scheduler(name, SchedulerConfig());
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->name(), name);
  }
  for (const char* bad : {"", "Euler", "dpm++", "k_lms", "euler_ancestral"}) {
    SCOPED_TRACE(bad);
    expect_throw_mentioning<InvalidArgument>([&] { make_scheduler(bad, SchedulerConfig()); },
                                             "valid schedulers: pndm, ddim, euler, euler_a, lms, dpmpp_2m, "
                                             "dpmpp_2m_karras");
  }
}

TEST(Scheduler, RejectsStepCountsOutsideTheTrainingRange) {
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    auto s = make_scheduler(name, SchedulerConfig());
    for (int steps : {0, -1, 1001, 100000})
      expect_throw_mentioning<InvalidArgument>([&] { s->set_timesteps(steps); }, "between 1 and 1000");
    EXPECT_NO_THROW(s->set_timesteps(1));
    EXPECT_NO_THROW(s->set_timesteps(999));
  }
  // A smaller training range moves the bound.
  SchedulerConfig c;
  c.num_train_timesteps = 100;
  auto s = make_scheduler("euler", c);
  expect_throw_mentioning<InvalidArgument>([&] { s->set_timesteps(101); }, "between 1 and 100");
}

TEST(Scheduler, LeadingOffsetPastTheLastTrainingTimestepIsAnError) {
  // With steps_offset 1 and 1000 steps the "leading" grid reaches t = 1000, which has no alphas_cumprod.
  for (const char* name : {"ddim", "pndm"}) {
    auto s = make_scheduler(name, SchedulerConfig());
    EXPECT_THROW(s->set_timesteps(1000), InvalidArgument) << name;
  }
}

TEST(Scheduler, ChecksStepIndexAndShapes) {
  TorchGenerator gen(0);
  const Tensor x = Tensor::zeros({1, 4, 8, 8});
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    auto s = make_scheduler(name, SchedulerConfig());
    expect_throw_mentioning<InvalidArgument>([&] { s->step(x, 0, x, gen); }, "set_timesteps");
    s->set_timesteps(5);
    const int n = s->num_steps();
    expect_throw_mentioning<InvalidArgument>([&] { s->step(x, n, x, gen); }, "outside");
    expect_throw_mentioning<InvalidArgument>([&] { s->step(x, -1, x, gen); }, "outside");
    expect_throw_mentioning<InvalidArgument>([&] { s->scale_model_input(x, n); }, "outside");
    expect_throw_mentioning<InvalidArgument>([&] { s->step(Tensor::zeros({1, 4, 8, 9}), 0, x, gen); }, "shape");
  }
}

TEST(Scheduler, MultistepSchedulersRequireStepsInOrder) {
  TorchGenerator gen(0);
  const Tensor x = Tensor::full({1, 4, 8, 8}, 0.5f);
  for (const char* name : {"pndm", "lms", "dpmpp_2m"}) {
    SCOPED_TRACE(name);
    auto s = make_scheduler(name, SchedulerConfig());
    s->set_timesteps(10);
    s->step(x, 2, x, gen);  // the first step may start anywhere (img2img)
    expect_throw_mentioning<InvalidArgument>([&] { s->step(x, 2, x, gen); }, "in order");
    expect_throw_mentioning<InvalidArgument>([&] { s->step(x, 4, x, gen); }, "in order");
    EXPECT_NO_THROW(s->step(x, 3, x, gen));
    s->set_timesteps(10);  // starts over
    EXPECT_NO_THROW(s->step(x, 0, x, gen));
  }
}

}  // namespace
}  // namespace sdcpu
