// Timestep grids, sigma tables and the shared noise-schedule numerics, against the pipeline goldens
// (diffusers 0.27.2) and values derived from diffusers' formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <sstream>
#include <string>

#include "core/error.h"
#include "scheduler_fixtures.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler.h"
#include "test_support.h"

namespace sdcpu {
namespace {

// A float64 tensor of a golden, exactly.
std::vector<double> read_f64(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* info = f.find(name);
  if (!info) return {};
  EXPECT_EQ(info->dtype, DType::F64) << name;
  std::vector<double> v((info->end - info->begin) / sizeof(double));
  std::memcpy(v.data(), f.bytes(*info), v.size() * sizeof(double));
  return v;
}

std::vector<std::string> pipeline_goldens() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(testing::fixture("goldens/tiny-sd"))) {
    const std::string n = e.path().filename().string();
    if (n.rfind("pipeline_", 0) == 0 && e.path().extension() == ".safetensors") names.push_back("tiny-sd/" + n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<double> timesteps_for(const std::string& name, int steps, const SchedulerConfig& c) {
  auto s = make_scheduler(name, c);
  s->set_timesteps(steps);
  return s->timesteps();
}

// With SD 1.5's scheduler and the class's own default spacing (the plain goldens' settings).
std::vector<double> timesteps_for(const std::string& name, int steps) {
  return timesteps_for(name, steps, testing::sd15_config(name));
}

// SD 1.5's scheduler with the given spacing.
SchedulerConfig sd15_with_spacing(const std::string& name, const std::string& spacing) {
  SchedulerConfig c = testing::sd15_config(name);
  c.timestep_spacing = spacing;
  return c;
}

// Every pipeline golden: its scheduler, configured from the stored config the golden was made from (the folder's
// file, the file without timestep_spacing, or diffusers' single-file default), has exactly the golden's timesteps
// and sigmas (bit for bit: the float32 tables are computed as torch does).
TEST(SchedulerGoldens, TimestepsAndSigmasMatchEveryPipelineGolden) {
  const std::vector<std::string> goldens = pipeline_goldens();
  ASSERT_GE(goldens.size(), 29u);
  for (const std::string& g : goldens) {
    SCOPED_TRACE(g);
    const SafetensorsFile& f = testing::golden(g);
    const std::string name = f.metadata().at("scheduler");
    const int steps = std::stoi(f.metadata().at("steps"));
    auto s = make_scheduler(name, resolve_scheduler_config(name, testing::stored_config_of_golden(g)).config);
    s->set_timesteps(steps);
    const std::vector<double> timesteps = read_f64(f, "timesteps");
    ASSERT_EQ(s->timesteps().size(), timesteps.size());
    for (size_t i = 0; i < timesteps.size(); ++i) EXPECT_EQ(s->timesteps()[i], timesteps[i]) << "timestep " << i;
    const std::vector<double> sigmas = read_f64(f, "sigmas");
    if (sigmas.empty()) {
      EXPECT_TRUE(s->sigmas().empty());
    } else {
      ASSERT_EQ(s->sigmas().size(), sigmas.size());
      for (size_t i = 0; i < sigmas.size(); ++i) {
        EXPECT_EQ(s->sigmas()[i], sigmas[i]) << "sigma " << i;
        EXPECT_NEAR(s->sigmas()[i], sigmas[i], 1e-6 * sigmas[i]) << "sigma " << i;
      }
    }
    // latents_per_step has one entry per step() call.
    EXPECT_EQ(f.find("latents_per_step")->shape[0], s->num_steps());
  }
}

// The samplers added later (tests/oracle/make_sampler_goldens.py): set_timesteps alone, from the folder's config
// with each timestep spacing, at 1, 10 and 25 steps. Bit for bit, Karras timesteps (float32 interpolation weights)
// and Heun's repeated entries included.
TEST(SchedulerGoldens, NewSamplersScheduleAsDiffusersForEverySpacing) {
  const SafetensorsFile& f = testing::repo_golden("tiny-sd/sampler_schedules.safetensors");
  const StoredSchedulerConfig stored = parse_scheduler_config(testing::tiny_sd_scheduler_json());
  int checked = 0;
  for (const char* name : {"euler_karras", "heun", "dpmpp_2m_sde", "dpmpp_2m_sde_karras", "unipc", "lcm"}) {
    for (const std::string& spacing : timestep_spacing_names()) {
      for (int steps : {1, 10, 25}) {
        const std::string key = std::string(name) + "_" + spacing + "_" + std::to_string(steps);
        SCOPED_TRACE(key);
        auto s = make_scheduler(name, resolve_scheduler_config(name, stored, SchedulerOverrides{spacing}).config);
        s->set_timesteps(steps);
        const std::vector<double> timesteps = read_f64(f, key + "_timesteps");
        ASSERT_FALSE(timesteps.empty());
        EXPECT_EQ(s->timesteps(), timesteps);
        EXPECT_EQ(s->sigmas(), read_f64(f, key + "_sigmas"));  // none for lcm
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 54);
}

// LCMScheduler: k = T // original_inference_steps, the distillation schedule k - 1, 2k - 1, ..., T - 1, and N of its
// entries taken evenly by index from the top; never more steps than the schedule has.
TEST(Lcm, PicksItsStepsFromItsDistillationSchedule) {
  SchedulerConfig c = testing::sd15_config("lcm");
  EXPECT_EQ(timesteps_for("lcm", 4, c), (std::vector<double>{999, 759, 499, 259}));
  EXPECT_EQ(timesteps_for("lcm", 1, c), (std::vector<double>{999}));
  c.original_inference_steps = 8;                                               // k = 125
  EXPECT_EQ(timesteps_for("lcm", 3, c), (std::vector<double>{999, 749, 374}));  // indices 0, 2, 5 of 8
  auto s = make_scheduler("lcm", c);
  EXPECT_NO_THROW(s->set_timesteps(8));
  try {
    s->set_timesteps(9);
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("original_inference_steps"), std::string::npos) << e.what();
  }
}

TEST(SchedulerGoldens, InitNoiseSigma) {
  for (const char* name : {"pndm", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "unipc", "lcm"}) {
    auto s = make_scheduler(name, testing::sd15_config(name));
    s->set_timesteps(10);
    EXPECT_EQ(s->init_noise_sigma(), 1.0f) << name;
  }
  for (const char* name : {"euler", "euler_karras", "euler_a", "lms", "heun"}) {
    auto s = make_scheduler(name, testing::sd15_config(name));
    s->set_timesteps(10);
    EXPECT_EQ(s->init_noise_sigma(), 14.614645004272461f) << name;  // the largest sigma (linspace)
  }
  // "leading" spacing scales by sqrt(sigma_max^2 + 1) instead.
  auto s = make_scheduler("euler", sd15_with_spacing("euler", "leading"));
  s->set_timesteps(10);
  const float sigma_max = static_cast<float>(s->sigmas()[0]);
  EXPECT_EQ(s->init_noise_sigma(), std::sqrt(sigma_max * sigma_max + 1.0f));
}

TEST(TimestepSpacing, LeadingWithStepsOffset) {
  // SD 1.5's config, 20 steps: 951, 901, ..., 1 (step 1000 // 20 = 50, offset 1).
  std::vector<double> expected;
  for (int t = 951; t >= 1; t -= 50) expected.push_back(t);
  EXPECT_EQ(timesteps_for("ddim", 20), expected);
  // PNDM (PLMS) repeats the second grid point for its second-order start.
  std::vector<double> pndm = {951, 901, 901};
  for (int t = 851; t >= 1; t -= 50) pndm.push_back(t);
  EXPECT_EQ(timesteps_for("pndm", 20), pndm);
}

TEST(TimestepSpacing, Linspace) {
  EXPECT_EQ(timesteps_for("ddim", 20, sd15_with_spacing("ddim", "linspace")),
            (std::vector<double>{999, 946, 894, 841, 789, 736, 684, 631, 578, 526,
                                 473, 421, 368, 315, 263, 210, 158, 105, 53,  0}));
  // Euler keeps np.linspace's fractions (as float32).
  EXPECT_EQ(timesteps_for("euler", 7), (std::vector<double>{999, 832.5, 666, 499.5, 333, 166.5, 0}));
  EXPECT_EQ(timesteps_for("lms", 7), (std::vector<double>{999, 832.5, 666, 499.5, 333, 166.5, 0}));
  // Non-representable fractions are the float32 of the float64 grid point.
  const std::vector<double> e11 = timesteps_for("euler_a", 11);
  EXPECT_EQ(e11[1], static_cast<double>(static_cast<float>(9 * (999.0 / 10))));
  EXPECT_NE(e11[1], 899.1);
  // DPM-Solver spaces N + 1 points and drops the last (t = 0).
  EXPECT_EQ(timesteps_for("dpmpp_2m", 7), (std::vector<double>{999, 856, 714, 571, 428, 285, 143}));
}

TEST(TimestepSpacing, Trailing) {
  auto c = [](const std::string& name) { return sd15_with_spacing(name, "trailing"); };
  EXPECT_EQ(timesteps_for("ddim", 20, c("ddim")),
            (std::vector<double>{999, 949, 899, 849, 799, 749, 699, 649, 599, 549,
                                 499, 449, 399, 349, 299, 249, 199, 149, 99,  49}));
  EXPECT_EQ(timesteps_for("ddim", 7, c("ddim")), (std::vector<double>{999, 856, 713, 570, 428, 285, 142}));
  EXPECT_EQ(timesteps_for("euler", 7, c("euler")), (std::vector<double>{999, 856, 713, 570, 428, 285, 142}));
  // 1000 / 16 = 62.5: the halves round to even, as np.round does.
  EXPECT_EQ(timesteps_for("dpmpp_2m", 16, c("dpmpp_2m")),
            (std::vector<double>{999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61}));
  EXPECT_EQ(timesteps_for("dpmpp_2m", 10, c("dpmpp_2m")),
            (std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
}

TEST(TimestepSpacing, DpmSolverLeading) {
  // step 1000 // (10 + 1) = 90, offset 1
  EXPECT_EQ(timesteps_for("dpmpp_2m", 10, sd15_with_spacing("dpmpp_2m", "leading")),
            (std::vector<double>{901, 811, 721, 631, 541, 451, 361, 271, 181, 91}));
}

TEST(Pndm, RungeKuttaWarmupTimesteps) {
  SchedulerConfig c = testing::sd15_config("pndm");
  c.skip_prk_steps = false;
  // _timesteps 1, 101, ..., 901; Runge-Kutta on the last four with half steps of 1000 // 10 // 2 = 50,
  // then PLMS from 601 down.
  EXPECT_EQ(timesteps_for("pndm", 10, c), (std::vector<double>{901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651,
                                                               601, 601, 501, 401, 301, 201, 101, 1}));
  auto s = make_scheduler("pndm", c);
  EXPECT_THROW(s->set_timesteps(3), InvalidArgument);
}

TEST(Pndm, FewSteps) {
  EXPECT_EQ(timesteps_for("pndm", 1), (std::vector<double>{1}));
  EXPECT_EQ(timesteps_for("pndm", 2), (std::vector<double>{501, 1, 1}));
}

TEST(Karras, SigmasFollowEquation5) {
  const std::vector<double> s = noise::karras_sigmas(0.03, 14.6, 10);
  ASSERT_EQ(s.size(), 10u);
  EXPECT_NEAR(s.front(), 14.6, 1e-12);
  EXPECT_NEAR(s.back(), 0.03, 1e-15);
  for (int i = 0; i < 10; ++i) {
    const double ramp = i / 9.0;
    const double expected =
        std::pow(std::pow(14.6, 1 / 7.0) + ramp * (std::pow(0.03, 1 / 7.0) - std::pow(14.6, 1 / 7.0)), 7.0);
    EXPECT_NEAR(s[i], expected, 1e-12 * expected);
    if (i > 0) {
      EXPECT_LT(s[i], s[i - 1]);
    }
  }
  ASSERT_EQ(noise::karras_sigmas(0.03, 14.6, 1).size(), 1u);
  EXPECT_NEAR(noise::karras_sigmas(0.03, 14.6, 1)[0], 14.6, 1e-12);
}

TEST(Karras, DpmSolverKarrasSchedule) {
  auto s = make_scheduler("dpmpp_2m_karras", testing::sd15_config("dpmpp_2m_karras"));
  s->set_timesteps(10);
  // Between the table's extremes (sigma at t = 0 and t = 999), timesteps from log-sigma interpolation.
  EXPECT_EQ(s->timesteps(), (std::vector<double>{999, 916, 815, 687, 523, 327, 146, 41, 7, 0}));
  EXPECT_EQ(static_cast<float>(s->sigmas()[0]), 14.614645004272461f);
  EXPECT_EQ(static_cast<float>(s->sigmas()[9]), 0.029167532920837402f);
  EXPECT_EQ(s->sigmas()[10], 0.0);
  // Configured bounds replace the table's.
  SchedulerConfig c = testing::sd15_config("dpmpp_2m_karras");
  c.sigma_min = 0.1;
  c.sigma_max = 10.0;
  auto b = make_scheduler("dpmpp_2m_karras", c);
  b->set_timesteps(5);
  EXPECT_FLOAT_EQ(b->sigmas()[0], 10.0f);
  EXPECT_FLOAT_EQ(b->sigmas()[4], 0.1f);
}

TEST(Karras, EulerAndLmsKarrasKeepFractionalTimesteps) {
  for (const char* name : {"euler", "lms"}) {
    SCOPED_TRACE(name);
    SchedulerConfig c = testing::sd15_config(name);
    c.use_karras_sigmas = true;
    auto s = make_scheduler(name, c);
    s->set_timesteps(10);
    EXPECT_EQ(static_cast<float>(s->sigmas()[0]), 14.614645004272461f);
    EXPECT_NEAR(s->timesteps()[0], 999.0, 1e-3);
    EXPECT_NEAR(s->timesteps()[1], 916.0, 0.5);  // the same sigmas as DPM-Solver's, not rounded
    EXPECT_NE(s->timesteps()[1], std::round(s->timesteps()[1]));
    EXPECT_NEAR(s->timesteps()[9], 0.0, 1e-3);
  }
}

TEST(NoiseSchedule, SigmaToTInvertsTheTable) {
  const std::vector<float> ac = noise::make_alphas_cumprod(testing::sd15_config("euler"), false);
  const std::vector<float> table = noise::sigmas_from_alphas_cumprod(ac);
  const std::vector<float> logs = noise::log_f32(table);
  for (int t : {0, 1, 100, 500, 998, 999}) EXPECT_NEAR(noise::sigma_to_t(table[t], logs), t, 1e-4) << t;
  // Between two entries: linear in log sigma.
  const double mid = std::exp(0.5 * (static_cast<double>(logs[300]) + logs[301]));
  EXPECT_NEAR(noise::sigma_to_t(mid, logs), 300.5, 1e-6);
  // Outside the table: clamped to the ends.
  EXPECT_EQ(noise::sigma_to_t(1e-6, logs), 0.0);
  EXPECT_EQ(noise::sigma_to_t(1e6, logs), 999.0);
}

// np.log of float32 values is numpy's own vectorized approximation, not the C library's logf; the sigma table's
// logs decide Karras timesteps. (Bit for bit against numpy 1.24 on 900k values when it was ported; here: a few
// values whose numpy results differ from the correctly rounded logarithm, and the special cases.)
TEST(NoiseSchedule, NumpyLogOfFloat32) {
  const std::vector<float> table =
      noise::sigmas_from_alphas_cumprod(noise::make_alphas_cumprod(testing::sd15_config("euler"), false));
  int differs_from_libm = 0;
  for (float sigma : table) {
    const float ours = noise::numpy_logf(sigma);
    EXPECT_NEAR(ours, std::log(static_cast<double>(sigma)), 4 * 1.2e-7 * std::fabs(std::log(sigma)) + 1e-9);
    differs_from_libm += ours != std::log(sigma);
  }
  EXPECT_GT(differs_from_libm, 100);  // about one in five (numpy's is up to 3.8 ulp off)
  EXPECT_EQ(noise::numpy_logf(1.0f), 0.0f);
  EXPECT_EQ(noise::numpy_logf(0.0f), -INFINITY);
  EXPECT_TRUE(std::isnan(noise::numpy_logf(-1.0f)));
  EXPECT_EQ(noise::numpy_logf(INFINITY), INFINITY);
  EXPECT_NEAR(noise::numpy_logf(1e-40f), std::log(1e-40), 1e-5);  // denormal
}

TEST(NoiseSchedule, AlphasCumprodOfSd15) {
  const std::vector<float> ac = noise::make_alphas_cumprod(testing::sd15_config("euler"), false);
  ASSERT_EQ(ac.size(), 1000u);
  EXPECT_NEAR(ac[0], 1 - 0.00085, 1e-7);
  EXPECT_NEAR(ac[999], 0.0046600951, 1e-9);
  const std::vector<float> table = noise::sigmas_from_alphas_cumprod(ac);
  EXPECT_EQ(table[999], 14.614645004272461f);
  EXPECT_EQ(table[0], 0.029167532920837402f);
}

TEST(NoiseSchedule, TorchLinspace) {
  // Endpoints exact, the halves counted from each end, the same values for AVX2 and AVX-512 chunking at
  // SD's schedule level.
  for (int w : {1, 8, 16}) {
    const std::vector<float> v = noise::torch_linspace_f32(0.1, 0.9, 37, w);
    EXPECT_EQ(v.front(), 0.1f);
    EXPECT_EQ(v.back(), 0.9f);
    for (size_t i = 1; i < v.size(); ++i) EXPECT_NEAR(v[i] - v[i - 1], 0.8 / 36, 1e-7);
  }
  EXPECT_EQ(noise::torch_linspace_f32(0.5, 1.0, 1), std::vector<float>{0.5f});
}

TEST(NoiseSchedule, OtherBetaSchedules) {
  SchedulerConfig c;  // diffusers' __init__ defaults: linear 0.0001 .. 0.02
  std::vector<float> b = noise::make_betas(c);
  EXPECT_EQ(b.front(), 0.0001f);
  EXPECT_EQ(b.back(), 0.02f);
  c.beta_schedule = "squaredcos_cap_v2";
  b = noise::make_betas(c);
  ASSERT_EQ(b.size(), 1000u);
  auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2), 2); };
  EXPECT_FLOAT_EQ(b[0], static_cast<float>(1 - alpha_bar(0.001) / alpha_bar(0)));
  EXPECT_EQ(b.back(), 0.999f);  // max_beta
  c.trained_betas.assign(1000, 0.01);
  b = noise::make_betas(c);
  EXPECT_EQ(b[123], 0.01f);
}

TEST(NoiseSchedule, ZeroTerminalSnr) {
  SchedulerConfig c = testing::sd15_config("euler");
  c.rescale_betas_zero_snr = true;
  const std::vector<float> plain = noise::make_alphas_cumprod(testing::sd15_config("euler"), false);
  const std::vector<float> ac = noise::make_alphas_cumprod(c, false);
  EXPECT_NEAR(ac[0], plain[0], 1e-6);   // first timestep kept
  EXPECT_NEAR(ac.back(), 0.0f, 1e-12);  // zero SNR at the end
  EXPECT_EQ(noise::make_alphas_cumprod(c, true).back(), std::ldexp(1.0f, -24));
  // Euler's first sigma is then finite and huge.
  auto s = make_scheduler("euler", c);
  s->set_timesteps(10);
  EXPECT_TRUE(std::isfinite(s->sigmas()[0]));
  EXPECT_GT(s->sigmas()[0], 4000.0);
}

TEST(NoiseSchedule, NumpyHelpers) {
  EXPECT_EQ(noise::np_round(0.5), 0.0);
  EXPECT_EQ(noise::np_round(1.5), 2.0);
  EXPECT_EQ(noise::np_round(2.5), 2.0);
  EXPECT_EQ(noise::np_round(-0.5), -0.0);
  EXPECT_EQ(noise::np_linspace(0, 1, 5), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(noise::np_linspace(3, 7, 1), std::vector<double>{3});
  EXPECT_TRUE(noise::np_linspace(3, 7, 0).empty());
  EXPECT_EQ(noise::np_arange(10, 0, -2.5), (std::vector<double>{10, 7.5, 5, 2.5}));
  EXPECT_EQ(noise::np_arange(0, 1, 0.3).size(), 4u);
  EXPECT_TRUE(noise::np_arange(0, 1, -1).empty());
  const std::vector<float> fp = {1, 2, 4};
  EXPECT_EQ(noise::np_interp_index(-1, fp), 1.0);
  EXPECT_EQ(noise::np_interp_index(0.5, fp), 1.5);
  EXPECT_EQ(noise::np_interp_index(1.25, fp), 2.5);
  EXPECT_EQ(noise::np_interp_index(2, fp), 4.0);
  EXPECT_EQ(noise::np_interp_index(9, fp), 4.0);
}

// dqk21's rule is exact for polynomials up to degree 31 (the 10-point Gauss part up to 19); a mistyped
// node or weight breaks that.
TEST(GaussKronrod21, ExactForPolynomialsUpToDegree31) {
  for (int k = 0; k <= 31; ++k) {
    const double got = noise::gauss_kronrod_21([k](double x) { return std::pow(x, k); }, -1, 1);
    const double expected = k % 2 ? 0.0 : 2.0 / (k + 1);
    EXPECT_NEAR(got, expected, 1e-14) << "x^" << k;
  }
  // Reversed interval (LMS integrates from sigma_i down to sigma_(i+1)).
  const double got = noise::gauss_kronrod_21([](double x) { return 3 * x * x - 2 * x + 1; }, 2.0, 0.5);
  EXPECT_NEAR(got, -(8 - 4 + 2 - (0.125 - 0.25 + 0.5)), 1e-13);
  // Not exact beyond: x^32 and exp differ measurably (so the test above has teeth) but stay close.
  EXPECT_GT(std::fabs(noise::gauss_kronrod_21([](double x) { return std::pow(x, 40); }, -1, 1) - 2.0 / 41), 1e-12);
  EXPECT_NEAR(noise::gauss_kronrod_21([](double x) { return std::exp(x); }, 0, 1), std::exp(1.0) - 1, 1e-14);
}

}  // namespace
}  // namespace sdcpu
