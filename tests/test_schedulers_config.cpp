// scheduler_config.json parsing, make_scheduler() and the Scheduler API's argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <tuple>

#include "core/error.h"
#include "core/torch_rng.h"
#include "scheduler_fixtures.h"
#include "schedulers/scheduler.h"
#include "test_support.h"

namespace sdcpu {
namespace {

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

// The settings `sampler` runs with from a stored config given as JSON text.
SchedulerConfig settings_for(const std::string& sampler, const std::string& json,
                             SettingSource source = SettingSource::file, const std::string& spacing = "") {
  return resolve_scheduler_config(sampler, parse_scheduler_config(json, source), SchedulerOverrides{spacing}).config;
}

// The source recorded for `key` when `sampler` is resolved.
SettingSource source_of(const ResolvedSchedulerConfig& r, const std::string& key) {
  for (const SchedulerSetting& s : r.settings)
    if (s.key == key) return s.source;
  ADD_FAILURE() << key << " is not among " << r.diffusers_class << "'s settings";
  return SettingSource::class_default;
}

std::string value_of(const ResolvedSchedulerConfig& r, const std::string& key) {
  for (const SchedulerSetting& s : r.settings)
    if (s.key == key) return s.value;
  ADD_FAILURE() << key << " is not among " << r.diffusers_class << "'s settings";
  return "";
}

TEST(SchedulerConfig, ParsesTheFixtureConfigKeepingOnlyTheKeysItSets) {
  const StoredSchedulerConfig c = parse_scheduler_config(testing::tiny_sd_scheduler_json());
  EXPECT_EQ(c.class_name, "PNDMScheduler");
  EXPECT_EQ(c.source, SettingSource::file);
  const std::map<std::string, std::string> expected = {{"beta_end", "0.012"},
                                                       {"beta_schedule", "\"scaled_linear\""},
                                                       {"beta_start", "0.00085"},
                                                       {"num_train_timesteps", "1000"},
                                                       {"prediction_type", "\"epsilon\""},
                                                       {"set_alpha_to_one", "false"},
                                                       {"skip_prk_steps", "true"},
                                                       {"steps_offset", "1"},
                                                       {"timestep_spacing", "\"leading\""}};
  EXPECT_EQ(c.keys, expected);  // trained_betas is null: not set; _class_name, _diffusers_version are not keys
}

TEST(SchedulerConfig, EmptyObjectGivesEachClassItsDiffusersDefaults) {
  const StoredSchedulerConfig stored = parse_scheduler_config("{}");
  EXPECT_TRUE(stored.keys.empty());
  EXPECT_EQ(stored.class_name, "");
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    const ResolvedSchedulerConfig r = resolve_scheduler_config(name, stored);
    const SchedulerConfig& c = r.config;
    // HeunDiscreteScheduler and LCMScheduler default to SD's betas; LCM also to SD's schedule.
    const bool sd_betas = name == "heun" || name == "lcm";
    EXPECT_EQ(c.num_train_timesteps, 1000);
    EXPECT_DOUBLE_EQ(c.beta_start, sd_betas ? 0.00085 : 0.0001);
    EXPECT_DOUBLE_EQ(c.beta_end, sd_betas ? 0.012 : 0.02);
    EXPECT_EQ(c.beta_schedule, name == "lcm" ? "scaled_linear" : "linear");
    EXPECT_EQ(c.steps_offset, 0);
    EXPECT_EQ(c.prediction_type, "epsilon");
    EXPECT_FALSE(c.skip_prk_steps);
    EXPECT_EQ(c.clip_sample, !sd_betas);  // DDIM's default is true, Heun's and LCM's false
    EXPECT_TRUE(std::isinf(c.lambda_min_clipped) && c.lambda_min_clipped < 0);
    const bool leading_class = name == "pndm" || name == "ddim" || name == "lcm";
    EXPECT_EQ(c.timestep_spacing, leading_class ? "leading" : "linspace");
    // DDIMScheduler's and LCMScheduler's default is true, PNDMScheduler's false
    EXPECT_EQ(c.set_alpha_to_one, name == "ddim" || name == "lcm");
    EXPECT_EQ(c.solver_type, name == "unipc" ? "bh2" : "midpoint");
    EXPECT_EQ(c.solver_order, 2);
    EXPECT_TRUE(c.predict_x0);
    EXPECT_EQ(c.original_inference_steps, 50);
    EXPECT_DOUBLE_EQ(c.timestep_scaling, 10.0);
    for (const SchedulerSetting& s : r.settings) {
      const bool fixed = (s.key == "solver_order" || s.key == "algorithm_type") && name.starts_with("dpmpp_2m");
      const bool karras = s.key == "use_karras_sigmas" && name.ends_with("_karras");
      EXPECT_EQ(s.source, fixed || karras ? SettingSource::sampler : SettingSource::class_default) << s.key;
    }
    EXPECT_EQ(c.use_karras_sigmas, name.ends_with("_karras"));
  }
}

// The rule of diffusers' ConfigMixin.from_config: a key the stored config sets carries over to whichever sampler
// is picked, whatever class wrote it; a key it does not set takes the picked class's default.
TEST(SchedulerConfig, AKeyTheFileSetsCarriesOverToEverySampler) {
  const std::string pndm = testing::tiny_sd_scheduler_json();  // PNDMScheduler, "timestep_spacing": "leading"
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    const SchedulerConfig c = settings_for(name, pndm);
    EXPECT_EQ(c.timestep_spacing, "leading");
    EXPECT_EQ(c.steps_offset, 1);
    EXPECT_EQ(c.beta_schedule, "scaled_linear");
    EXPECT_FALSE(c.set_alpha_to_one);  // set by the file: DDIM's and LCM's own default (true) does not apply
    EXPECT_EQ(c.clip_sample, name != "heun" && name != "lcm");  // not set: the class's default
  }
  // The same file without the key: each class's own default.
  const std::string no_spacing = testing::tiny_sd_scheduler_json_without_spacing();
  EXPECT_EQ(settings_for("pndm", no_spacing).timestep_spacing, "leading");
  EXPECT_EQ(settings_for("ddim", no_spacing).timestep_spacing, "leading");
  EXPECT_EQ(settings_for("lcm", no_spacing).timestep_spacing, "leading");
  for (const char* name : {"euler", "euler_karras", "euler_a", "lms", "heun", "dpmpp_2m", "dpmpp_2m_karras",
                           "dpmpp_2m_sde", "dpmpp_2m_sde_karras", "unipc"})
    EXPECT_EQ(settings_for(name, no_spacing).timestep_spacing, "linspace") << name;

  // Every other key the same way: SD 1.5's file says clip_sample false (a key PNDM does not take), SDXL's
  // EulerDiscreteScheduler file says leading, sd-turbo's trailing, SD 2.x's DDIM file v_prediction.
  EXPECT_FALSE(settings_for("ddim", R"({"_class_name": "PNDMScheduler", "clip_sample": false})").clip_sample);
  const std::string sdxl = R"({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading",
                               "use_karras_sigmas": false, "interpolation_type": "linear", "steps_offset": 1})";
  for (const char* name : {"euler", "dpmpp_2m", "ddim", "pndm"})
    EXPECT_EQ(settings_for(name, sdxl).timestep_spacing, "leading") << name;
  const std::string turbo = R"({"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"})";
  for (const std::string& name : scheduler_names()) EXPECT_EQ(settings_for(name, turbo).timestep_spacing, "trailing");
  const std::string sd2 = R"({"_class_name": "DDIMScheduler", "prediction_type": "v_prediction",
                              "rescale_betas_zero_snr": true, "use_karras_sigmas": true})";
  for (const char* name : {"euler", "euler_a", "lms", "dpmpp_2m"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(settings_for(name, sd2).prediction_type, "v_prediction");
  }
  EXPECT_TRUE(settings_for("euler", sd2).rescale_betas_zero_snr);
  EXPECT_TRUE(settings_for("euler", sd2).use_karras_sigmas);  // carried: Euler takes it
  EXPECT_TRUE(settings_for("dpmpp_2m", sd2).use_karras_sigmas);
}

// stabilityai/stable-diffusion-2-1's scheduler/scheduler_config.json as published (written by diffusers 0.8): a
// DDIMScheduler file without timestep_spacing, so DDIM/PNDM run leading and the k-diffusion samplers linspace, all
// with v-prediction and without DDIM's clipping.
TEST(SchedulerConfig, Sd21FolderAsPublished) {
  const std::string sd21 = R"({
  "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
  "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null})";
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    const SchedulerConfig c = settings_for(name, sd21);
    EXPECT_EQ(c.prediction_type, "v_prediction");
    EXPECT_EQ(c.timestep_spacing, name == "pndm" || name == "ddim" || name == "lcm" ? "leading" : "linspace");
    EXPECT_FALSE(c.clip_sample);
    EXPECT_FALSE(c.set_alpha_to_one);
    EXPECT_EQ(c.steps_offset, 1);
  }
}

// The name fixes what it says: DPM++ 2M is dpmsolver++ of order 2, and its Karras variant uses Karras sigmas
// (from_config(config, use_karras_sigmas=True)), whatever the file says.
TEST(SchedulerConfig, TheSamplersNameFixesWhatItSays) {
  const std::string file = R"({"algorithm_type": "sde-dpmsolver++", "solver_order": 3, "use_karras_sigmas": false})";
  const ResolvedSchedulerConfig karras = resolve_scheduler_config("dpmpp_2m_karras", parse_scheduler_config(file));
  EXPECT_TRUE(karras.config.use_karras_sigmas);
  EXPECT_EQ(source_of(karras, "use_karras_sigmas"), SettingSource::sampler);
  EXPECT_EQ(value_of(karras, "algorithm_type"), "\"dpmsolver++\"");
  EXPECT_EQ(value_of(karras, "solver_order"), "2");
  EXPECT_EQ(source_of(karras, "solver_order"), SettingSource::sampler);
  const ResolvedSchedulerConfig plain = resolve_scheduler_config("dpmpp_2m", parse_scheduler_config(file));
  EXPECT_FALSE(plain.config.use_karras_sigmas);
  EXPECT_EQ(source_of(plain, "use_karras_sigmas"), SettingSource::file);
  EXPECT_EQ(value_of(plain, "algorithm_type"), "\"dpmsolver++\"");
  // DPM++ 2M SDE is sde-dpmsolver++ of order 2, whatever the file says.
  const std::string ode = R"({"algorithm_type": "dpmsolver++", "solver_order": 3, "use_karras_sigmas": false})";
  for (const char* name : {"dpmpp_2m_sde", "dpmpp_2m_sde_karras"}) {
    SCOPED_TRACE(name);
    const ResolvedSchedulerConfig sde = resolve_scheduler_config(name, parse_scheduler_config(ode));
    EXPECT_EQ(value_of(sde, "algorithm_type"), "\"sde-dpmsolver++\"");
    EXPECT_EQ(source_of(sde, "algorithm_type"), SettingSource::sampler);
    EXPECT_EQ(sde.config.solver_order, 2);
    EXPECT_EQ(sde.config.use_karras_sigmas, std::string(name) == "dpmpp_2m_sde_karras");
  }
  // Euler Karras is Euler with use_karras_sigmas; the others' names fix nothing.
  const ResolvedSchedulerConfig euler_karras = resolve_scheduler_config("euler_karras", parse_scheduler_config(ode));
  EXPECT_EQ(euler_karras.diffusers_class, "EulerDiscreteScheduler");
  EXPECT_TRUE(euler_karras.config.use_karras_sigmas);
  EXPECT_EQ(source_of(euler_karras, "use_karras_sigmas"), SettingSource::sampler);
  const ResolvedSchedulerConfig unipc = resolve_scheduler_config("unipc", parse_scheduler_config(ode));
  EXPECT_EQ(unipc.config.solver_order, 3);  // carried over from the file (and rejected by the scheduler)
  EXPECT_EQ(source_of(unipc, "solver_order"), SettingSource::file);
}

// solver_type means different things to the two classes that read it: each maps the other's names to its own
// default as its __init__ does, so a DPM-Solver config's "midpoint" is UniPC's bh2 and a UniPC config's "bh1" is
// DPM-Solver's midpoint.
TEST(SchedulerConfig, EachClassReadsSolverTypeItsOwnWay) {
  const std::vector<std::tuple<const char*, const char*, const char*>> cases = {
      {"midpoint", "midpoint", "bh2"}, {"heun", "heun", "bh2"},    {"logrho", "midpoint", "bh2"},
      {"bh1", "midpoint", "bh1"},      {"bh2", "midpoint", "bh2"},
  };
  for (const auto& [in, dpm, unipc] : cases) {
    SCOPED_TRACE(in);
    const std::string file = std::string(R"({"solver_type": ")") + in + "\"}";
    EXPECT_EQ(settings_for("dpmpp_2m", file).solver_type, dpm);
    EXPECT_EQ(settings_for("dpmpp_2m_sde", file).solver_type, dpm);
    EXPECT_EQ(settings_for("unipc", file).solver_type, unipc);
    std::string quoted = "\"";
    quoted += unipc;
    quoted += "\"";
    EXPECT_EQ(value_of(resolve_scheduler_config("unipc", parse_scheduler_config(file)), "solver_type"), quoted);
  }
}

// A single file has no scheduler file: diffusers' from_single_file builds a DDIMScheduler from its default
// config, every key set explicitly, and each carries over.
TEST(SchedulerConfig, SingleFileDefaultsCarryOverToEverySampler) {
  const StoredSchedulerConfig stored =
      parse_scheduler_config(sd1_single_file_scheduler_config_json(), SettingSource::single_file_default);
  EXPECT_EQ(stored.class_name, "DDIMScheduler");
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    const ResolvedSchedulerConfig r = resolve_scheduler_config(name, stored);
    EXPECT_EQ(r.config.timestep_spacing, "leading");
    EXPECT_EQ(r.config.steps_offset, 1);
    EXPECT_EQ(r.config.beta_schedule, "scaled_linear");
    EXPECT_DOUBLE_EQ(r.config.beta_start, 0.00085);
    EXPECT_DOUBLE_EQ(r.config.beta_end, 0.012);
    EXPECT_FALSE(r.config.clip_sample);
    EXPECT_FALSE(r.config.set_alpha_to_one);
    EXPECT_TRUE(r.config.skip_prk_steps);
    EXPECT_EQ(source_of(r, "timestep_spacing"), SettingSource::single_file_default);
    EXPECT_EQ(source_of(r, "steps_offset"), SettingSource::single_file_default);
  }
}

TEST(SchedulerConfig, SettingsListEveryKeyOfTheClassWithItsSource) {
  const StoredSchedulerConfig stored = parse_scheduler_config(testing::tiny_sd_scheduler_json());
  const ResolvedSchedulerConfig ddim = resolve_scheduler_config("ddim", stored);
  EXPECT_EQ(ddim.diffusers_class, "DDIMScheduler");
  std::vector<std::string> keys;
  for (const SchedulerSetting& s : ddim.settings) keys.push_back(s.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                            "trained_betas", "clip_sample", "set_alpha_to_one", "steps_offset",
                                            "prediction_type", "thresholding", "clip_sample_range", "timestep_spacing",
                                            "rescale_betas_zero_snr"}));
  EXPECT_EQ(source_of(ddim, "timestep_spacing"), SettingSource::file);
  EXPECT_EQ(value_of(ddim, "timestep_spacing"), "\"leading\"");
  EXPECT_EQ(source_of(ddim, "clip_sample"), SettingSource::class_default);
  EXPECT_EQ(value_of(ddim, "clip_sample"), "true");
  EXPECT_EQ(value_of(ddim, "trained_betas"), "null");
  const ResolvedSchedulerConfig dpm = resolve_scheduler_config("dpmpp_2m", stored);
  EXPECT_EQ(value_of(dpm, "lambda_min_clipped"), "-Infinity");
  EXPECT_EQ(source_of(dpm, "lambda_min_clipped"), SettingSource::class_default);
}

TEST(SchedulerConfig, TheTimestepSpacingOptionOverridesEverySource) {
  const StoredSchedulerConfig stored = parse_scheduler_config(testing::tiny_sd_scheduler_json());
  for (const std::string& name : scheduler_names()) {
    for (const std::string& spacing : timestep_spacing_names()) {
      const ResolvedSchedulerConfig r = resolve_scheduler_config(name, stored, SchedulerOverrides{spacing});
      EXPECT_EQ(r.config.timestep_spacing, spacing) << name;
      EXPECT_EQ(source_of(r, "timestep_spacing"), SettingSource::option) << name;
    }
  }
  expect_throw_mentioning<InvalidArgument>(
      [&] { resolve_scheduler_config("euler", stored, SchedulerOverrides{"uniform"}); }, "timestep spacing");
  // (DPM++ SDE Karras, DPMSolverSDEScheduler, is not implemented: its Brownian tree has no reference here.)
  expect_throw_mentioning<InvalidArgument>([&] { resolve_scheduler_config("dpmpp_sde_karras", stored); },
                                           "valid schedulers");
}

TEST(SchedulerConfig, NullMeansUnsetAndUnknownKeysAreIgnored) {
  const StoredSchedulerConfig c = parse_scheduler_config(
      R"({"trained_betas": null, "timestep_spacing": null, "variance_type": null, "algorithm_type": "dpmsolver++",
          "solver_order": null, "dynamic_thresholding_ratio": 0.995, "some_future_key": {"nested": [1, 2, 3]},
          "_diffusers_version": "0.99"})");
  EXPECT_TRUE(c.keys.empty());
  EXPECT_EQ(resolve_scheduler_config("euler", c).config.timestep_spacing, "linspace");
}

TEST(SchedulerConfig, ReadsEveryKnownKey) {
  const StoredSchedulerConfig stored = parse_scheduler_config(R"({
    "_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000.0, "beta_start": 0.001, "beta_end": 0.01,
    "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "timestep_spacing": "trailing",
    "steps_offset": 0, "set_alpha_to_one": true, "skip_prk_steps": true, "clip_sample": false,
    "clip_sample_range": 2.5, "thresholding": false, "use_karras_sigmas": true, "sigma_min": 0.03, "sigma_max": 14.0,
    "rescale_betas_zero_snr": true, "interpolation_type": "linear", "timestep_type": "continuous",
    "solver_type": "bh2", "lower_order_final": false, "euler_at_final": true, "final_sigmas_type": "sigma_min",
    "lambda_min_clipped": -5.1, "use_lu_lambdas": false, "solver_order": 1, "predict_x0": false,
    "disable_corrector": [0, 3], "original_inference_steps": 40, "timestep_scaling": 5.5})");
  EXPECT_EQ(stored.class_name, "EulerDiscreteScheduler");
  EXPECT_EQ(stored.keys.size(), 29u);  // every key sdcpu reads but trained_betas
  const SchedulerConfig c = resolve_scheduler_config("ddim", stored).config;
  EXPECT_EQ(c.beta_schedule, "squaredcos_cap_v2");
  EXPECT_EQ(c.prediction_type, "v_prediction");
  EXPECT_EQ(c.timestep_spacing, "trailing");
  EXPECT_TRUE(c.set_alpha_to_one);
  EXPECT_FALSE(c.clip_sample);
  EXPECT_DOUBLE_EQ(c.clip_sample_range, 2.5);
  EXPECT_TRUE(c.use_karras_sigmas);
  EXPECT_DOUBLE_EQ(*c.sigma_min, 0.03);
  EXPECT_DOUBLE_EQ(*c.sigma_max, 14.0);
  EXPECT_TRUE(c.rescale_betas_zero_snr);
  EXPECT_EQ(c.timestep_type, "continuous");
  EXPECT_EQ(c.solver_type, "bh2");  // as written: DPM-Solver and UniPC map it (EachClassReadsSolverTypeItsOwnWay)
  EXPECT_FALSE(c.lower_order_final);
  EXPECT_TRUE(c.euler_at_final);
  EXPECT_EQ(c.final_sigmas_type, "sigma_min");
  EXPECT_DOUBLE_EQ(c.lambda_min_clipped, -5.1);
  EXPECT_EQ(c.solver_order, 1);
  EXPECT_FALSE(c.predict_x0);
  EXPECT_EQ(c.disable_corrector, (std::vector<int>{0, 3}));
  EXPECT_EQ(c.original_inference_steps, 40);
  EXPECT_DOUBLE_EQ(c.timestep_scaling, 5.5);
}

TEST(SchedulerConfig, AcceptsPythonsNonFiniteLiterals) {
  // json.dumps(float("-inf")) writes -Infinity; DPMSolverMultistepScheduler configs carry it.
  const SchedulerConfig c = settings_for(
      "dpmpp_2m", R"({"lambda_min_clipped": -Infinity, "prediction_type": "epsilon", "note": "NaN -Infinity"})");
  EXPECT_TRUE(std::isinf(c.lambda_min_clipped) && c.lambda_min_clipped < 0);
  EXPECT_EQ(c.prediction_type, "epsilon");
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
  expect_model_error(R"({"solver_order": "2"})", "solver_order");
  expect_model_error(R"({"predict_x0": 1})", "predict_x0");
  expect_model_error(R"({"disable_corrector": 3})", "disable_corrector");
  expect_model_error(R"({"disable_corrector": [1.5]})", "disable_corrector");
  expect_model_error(R"({"original_inference_steps": 50.5})", "original_inference_steps");
  expect_model_error(R"({"timestep_scaling": "10"})", "timestep_scaling");
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
  expect_model_error(R"({"interpolation_type": "cubic"})", "interpolation_type");
  expect_model_error(R"({"final_sigmas_type": "one"})", "final_sigmas_type");
  expect_model_error(R"({"solver_order": 4})", "solver_order");
  expect_model_error(R"({"solver_type": "bh3"})", "solver_type");
  expect_model_error(R"({"original_inference_steps": 0})", "original_inference_steps");
  expect_model_error(R"({"disable_corrector": [-1]})", "disable_corrector");
  expect_model_error(R"({"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]})", "trained_betas has 2 values");
  expect_model_error(R"({"num_train_timesteps": 2, "trained_betas": [0.1, 1.0]})", "trained_betas");
}

TEST(SchedulerConfig, SchedulersRejectWhatTheyCannotDo) {
  SchedulerConfig c;
  c.interpolation_type = "log_linear";
  expect_throw_mentioning<ModelError>([&] { make_scheduler("euler", c); }, "interpolation_type");
  c = SchedulerConfig();
  c.thresholding = true;
  for (const char* name : {"ddim", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "unipc", "lcm"})
    expect_throw_mentioning<ModelError>([&] { make_scheduler(name, c); }, "thresholding");
  c = SchedulerConfig();
  c.solver_order = 3;  // UniPC's third order needs a 3x3 solve sdcpu does not reproduce
  expect_throw_mentioning<ModelError>([&] { make_scheduler("unipc", c); }, "solver_order 3");
  EXPECT_NO_THROW(make_scheduler("dpmpp_2m", c));  // its name fixes order 2
  c = SchedulerConfig();
  c.original_inference_steps = 1001;
  expect_throw_mentioning<ModelError>([&] { make_scheduler("lcm", c)->set_timesteps(4); }, "original_inference_steps");
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
  const std::vector<std::string> expected = {"pndm",
                                             "ddim",
                                             "euler",
                                             "euler_karras",
                                             "euler_a",
                                             "lms",
                                             "heun",
                                             "dpmpp_2m",
                                             "dpmpp_2m_karras",
                                             "dpmpp_2m_sde",
                                             "dpmpp_2m_sde_karras",
                                             "unipc",
                                             "lcm"};
  EXPECT_EQ(scheduler_names(), expected);
  for (const std::string& name : scheduler_names()) {
    auto s = make_scheduler(name, SchedulerConfig());
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->name(), name);
  }
  for (const char* bad : {"", "Euler", "dpm++", "k_lms", "euler_ancestral"}) {
    SCOPED_TRACE(bad);
    expect_throw_mentioning<InvalidArgument>([&] { make_scheduler(bad, SchedulerConfig()); },
                                             "valid schedulers: pndm, ddim, euler, euler_karras, euler_a, lms, "
                                             "heun, dpmpp_2m, dpmpp_2m_karras, dpmpp_2m_sde, dpmpp_2m_sde_karras, "
                                             "unipc, lcm");
  }
}

TEST(Scheduler, RejectsStepCountsOutsideTheTrainingRange) {
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    SchedulerConfig c = testing::sd15_config(name);
    c.original_inference_steps = 1000;  // LCM: never more steps than this (LcmPicksItsStepsFromItsDistillationSchedule)
    auto s = make_scheduler(name, c);
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
    auto s = make_scheduler(name, testing::sd15_config(name));
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
  for (const char* name : {"pndm", "lms", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"}) {
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
