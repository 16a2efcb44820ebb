// The step() arithmetic. Per-step goldens need the UNet, but the goldens share first steps: every pipeline
// starts from the same seed-42 latents at t = 999 or 901 with the same prompt, so one scheduler's golden
// step tells the (guided) model output another scheduler saw at the same input. From those we check
// DDIM, LMS (including its second-order coefficients), Euler a (with the generator's continued noise) and
// DPM-Solver++ Karras against diffusers' numbers. The rest is checked with exact "oracle" models: a model
// that knows x0 makes every sampler land on x0, whatever the prediction type, and a constant noise
// prediction makes the multistep methods agree with their one-step counterparts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/torch_rng.h"
#include "scheduler_fixtures.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const Shape kLatentShape = {1, 4, 16, 16};

// The plain pipeline goldens' settings for `sampler` (scheduler_fixtures.h).
SchedulerConfig fixture_config(const std::string& sampler) { return testing::sd15_config(sampler); }

// latents_per_step[step] of a pipeline golden.
Tensor golden_latents(const std::string& stem, int step) {
  const Tensor all = testing::golden("tiny-sd/" + stem + ".safetensors").read_f32("latents_per_step");
  return all.slice0(step, step + 1).reshape(kLatentShape).clone();
}

// The pipeline's initial latents: randn(seed 42) * init_noise_sigma, in float32 as diffusers multiplies.
Tensor initial_latents(TorchGenerator& gen, float init_noise_sigma) {
  Tensor x = gen.randn(kLatentShape);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = x[i] * init_noise_sigma;
  return x;
}

Tensor map2(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  Tensor out(a.shape());
  for (int64_t i = 0; i < a.numel(); ++i) out[i] = static_cast<float>(f(a[i], b[i]));
  return out;
}

// ---- golden cross-checks ----

TEST(SchedulerSteps, InitialLatentsAreTheRngGolden) {
  TorchGenerator gen(42);
  EXPECT_TENSOR_NEAR(gen.randn(kLatentShape),
                     testing::golden("tiny-sd/rng.safetensors").read_f32("randn_1x4x16x16_seed42"), 0.0);
}

// PNDM's first step and DDIM's first step evaluate the model at the same input (the initial latents, t = 901);
// the noise prediction recovered from PNDM's golden step must give DDIM's golden step, clipping of the
// predicted x0 included (DDIM's clip_sample default: the fixture config does not set it).
TEST(SchedulerSteps, DdimFirstStepFromPndmsModelOutput) {
  const SchedulerConfig config = fixture_config("ddim");
  const std::vector<float> ac = noise::make_alphas_cumprod(config, false);
  TorchGenerator gen(42);
  const Tensor x = initial_latents(gen, 1.0f);
  // PNDM step 0 (_get_prev_sample 901 -> 801, float32 coefficients) solved for the model output.
  const float at = ac[901], ap = ac[801];
  const double coeff = std::sqrt(ap / at);
  const double denom = at * std::sqrt(1.0f - ap) + std::sqrt(at * (1.0f - at) * ap);
  const double alpha_diff = ap - at;
  const Tensor eps = map2(x, golden_latents("pipeline_pndm_10steps_cfg7.5", 0),
                          [&](double xi, double pi) { return (coeff * xi - pi) * denom / alpha_diff; });

  auto pndm = make_scheduler("pndm", fixture_config("pndm"));
  pndm->set_timesteps(10);
  EXPECT_TENSOR_NEAR(pndm->step(eps, 0, x, gen), golden_latents("pipeline_pndm_10steps_cfg7.5", 0), 1e-6);

  auto ddim = make_scheduler("ddim", config);
  ddim->set_timesteps(10);
  const Tensor expected = golden_latents("pipeline_ddim_10steps_cfg7.5", 0);
  EXPECT_TENSOR_NEAR(ddim->step(eps, 0, x, gen), expected, 2e-6);

  // Without clipping the result is far off: the golden did clip.
  SchedulerConfig no_clip = config;
  no_clip.clip_sample = false;
  auto unclipped = make_scheduler("ddim", no_clip);
  unclipped->set_timesteps(10);
  const testing::Diff d = testing::compare(unclipped->step(eps, 0, x, gen), expected);
  EXPECT_GT(d.max_abs, 0.1);
}

// Euler and LMS share timesteps, sigmas and input scaling, and LMS's first step is an Euler step, so both
// goldens' first two UNet evaluations coincide. Euler's golden steps give those model outputs; LMS must then
// reproduce its golden first step (order 1) and second step (order 2: the integrated Lagrange coefficients).
TEST(SchedulerSteps, LmsFirstTwoStepsFromEulersModelOutputs) {
  auto euler = make_scheduler("euler", fixture_config("euler"));
  euler->set_timesteps(10);
  const std::vector<double>& sig = euler->sigmas();
  TorchGenerator gen(42);
  const Tensor x0 = initial_latents(gen, euler->init_noise_sigma());
  const Tensor x1 = golden_latents("pipeline_euler_10steps_cfg7.5", 0);
  const Tensor x2 = golden_latents("pipeline_euler_10steps_cfg7.5", 1);
  // Euler: x_next = x + eps * (sigma_next - sigma)  (epsilon prediction, derivative = eps)
  const Tensor m0 = map2(x1, x0, [&](double a, double b) { return (a - b) / (sig[1] - sig[0]); });
  const Tensor m1 = map2(x2, x1, [&](double a, double b) { return (a - b) / (sig[2] - sig[1]); });

  EXPECT_TENSOR_NEAR(golden_latents("pipeline_lms_10steps_cfg7.5", 0), x1, 0.0);  // the shared first step

  auto lms = make_scheduler("lms", fixture_config("lms"));
  lms->set_timesteps(10);
  EXPECT_TENSOR_NEAR(lms->step(m0, 0, x0, gen), golden_latents("pipeline_lms_10steps_cfg7.5", 0), 1e-6);
  EXPECT_TENSOR_NEAR(lms->step(m1, 1, x1, gen), golden_latents("pipeline_lms_10steps_cfg7.5", 1), 1e-6);

  // And Euler itself reproduces its goldens from them.
  auto e = make_scheduler("euler", fixture_config("euler"));
  e->set_timesteps(10);
  TorchGenerator g2(42);
  const Tensor start = initial_latents(g2, e->init_noise_sigma());
  EXPECT_TENSOR_NEAR(e->step(m0, 0, start, g2), x1, 1e-6);
  EXPECT_TENSOR_NEAR(e->step(m1, 1, x1, g2), x2, 1e-6);
}

// Euler a's first UNet call is Euler's (same sigmas, same scaled input). Its golden first step then pins the
// ancestral split and the noise: the second randn([1, 4, 16, 16]) of the seed-42 generator.
TEST(SchedulerSteps, EulerAncestralFirstStepContinuesTheGenerator) {
  auto euler = make_scheduler("euler", fixture_config("euler"));
  euler->set_timesteps(10);
  const std::vector<double>& sig = euler->sigmas();
  TorchGenerator gen(42);
  auto ea = make_scheduler("euler_a", fixture_config("euler_a"));
  ea->set_timesteps(10);
  const Tensor x0 = initial_latents(gen, ea->init_noise_sigma());
  const Tensor m0 = map2(golden_latents("pipeline_euler_10steps_cfg7.5", 0), x0,
                         [&](double a, double b) { return (a - b) / (sig[1] - sig[0]); });
  EXPECT_TENSOR_NEAR(ea->step(m0, 0, x0, gen), golden_latents("pipeline_euler_a_10steps_cfg7.5", 0), 1e-6);
}

// DPM-Solver++ with and without Karras sigmas start at the same t = 999 with the same unscaled input, so
// they see the same model output; their first steps (first order) differ only in the target sigma.
TEST(SchedulerSteps, DpmSolverKarrasFirstStepFromDpmSolversModelOutput) {
  auto dpm = make_scheduler("dpmpp_2m", fixture_config("dpmpp_2m"));
  dpm->set_timesteps(10);
  TorchGenerator gen(42);
  const Tensor x = initial_latents(gen, dpm->init_noise_sigma());
  // First-order DPM-Solver++: x1 = (sigma_t / sigma_s) x - alpha_t (exp(-h) - 1) x0, solved for x0, then
  // x0 = (x - sigma_s m) / alpha_s solved for the model output m.
  auto vp = [](double sigma) {
    return std::pair{1 / std::sqrt(sigma * sigma + 1), sigma / std::sqrt(sigma * sigma + 1)};
  };
  const auto [alpha_s, sigma_s] = vp(dpm->sigmas()[0]);
  const auto [alpha_t, sigma_t] = vp(dpm->sigmas()[1]);
  const double h = std::log(alpha_t / sigma_t) - std::log(alpha_s / sigma_s);
  const double c = alpha_t * (std::exp(-h) - 1);
  const Tensor pred_x0 = map2(x, golden_latents("pipeline_dpmpp_2m_10steps_cfg7.5", 0),
                              [&](double xi, double x1) { return (sigma_t / sigma_s * xi - x1) / c; });
  const Tensor m = map2(x, pred_x0, [&](double xi, double p) { return (xi - alpha_s * p) / sigma_s; });

  EXPECT_TENSOR_NEAR(dpm->step(m, 0, x, gen), golden_latents("pipeline_dpmpp_2m_10steps_cfg7.5", 0), 1e-6);
  auto karras = make_scheduler("dpmpp_2m_karras", fixture_config("dpmpp_2m_karras"));
  karras->set_timesteps(10);
  EXPECT_TENSOR_NEAR(karras->step(m, 0, x, gen), golden_latents("pipeline_dpmpp_2m_karras_10steps_cfg7.5", 0), 1e-6);
}

// ---- oracle models ----

// A random tensor from its own generator.
Tensor random_tensor(uint64_t seed, float scale = 1.0f) {
  Tensor t = TorchGenerator(seed).randn(kLatentShape);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] *= scale;
  return t;
}

// How a scheduler's sample relates to x0 at step i: sample = a * x0 + s * eps, and the (alpha, sigma) of the
// variance-preserving process that v-prediction is defined in (Salimans & Ho 2022: v = alpha eps - sigma x0).
struct Noise {
  double a, s, vp_alpha, vp_sigma;
};

Noise noise_at(const std::string& name, const Scheduler& sched, const std::vector<float>& ac, int i) {
  if (name == "ddim" || name == "pndm") {
    const double alpha = std::sqrt(static_cast<double>(ac[static_cast<int>(sched.timesteps()[i])]));
    const double sigma = std::sqrt(1 - static_cast<double>(ac[static_cast<int>(sched.timesteps()[i])]));
    return {alpha, sigma, alpha, sigma};
  }
  if (name == "lcm") {  // an x0 predictor on the DDPM schedule, like DDIM
    const double alpha = std::sqrt(static_cast<double>(ac[static_cast<int>(sched.timesteps()[i])]));
    return {alpha, std::sqrt(1 - alpha * alpha), alpha, std::sqrt(1 - alpha * alpha)};
  }
  const double sigma = sched.sigmas()[i];
  const double vp_alpha = 1 / std::sqrt(sigma * sigma + 1);
  if (name.starts_with("dpmpp") || name == "unipc") return {vp_alpha, sigma * vp_alpha, vp_alpha, sigma * vp_alpha};
  return {1.0, sigma, vp_alpha, sigma * vp_alpha};  // k-diffusion: x = x0 + sigma eps
}

// Runs a full sampling loop with a model that knows x0 and answers in `prediction`. With `end`, also returns where
// the exact solution ends: x0 itself, or for UniPC (whose last sigma is the training table's smallest, not 0)
// alpha x0 + sigma eps at that sigma, with the starting noise eps.
Tensor sample_with_oracle(const std::string& name, const std::string& prediction, const Tensor& x0, int steps,
                          Tensor* end = nullptr) {
  SchedulerConfig config = fixture_config(name);
  config.prediction_type = prediction;
  config.clip_sample = false;      // DDIM: no clipping of the (exact) x0
  config.set_alpha_to_one = true;  // DDIM: the last step goes all the way to alpha = 1
  auto sched = make_scheduler(name, config);
  sched->set_timesteps(steps);
  const std::vector<float> ac = noise::make_alphas_cumprod(config, false);
  TorchGenerator gen(3);
  const Tensor noise = random_tensor(99);
  // Start exactly on the noisy-x0 manifold of the first step.
  const Noise n0 = noise_at(name, *sched, ac, 0);
  Tensor x = map2(x0, noise, [&](double a, double e) { return n0.a * a + n0.s * e; });
  if (end) {
    const double sigma = sched->sigmas().empty() ? 0.0 : sched->sigmas().back();
    const double alpha = name == "unipc" ? 1 / std::sqrt(sigma * sigma + 1) : 1.0;
    const double s = name == "unipc" ? sigma * alpha : 0.0;
    *end = map2(x0, noise, [&](double a, double e) { return alpha * a + s * e; });
  }
  for (int i = 0; i < sched->num_steps(); ++i) {
    const Noise n = noise_at(name, *sched, ac, i);
    const Tensor eps = map2(x, x0, [&](double xi, double a) { return (xi - n.a * a) / n.s; });
    Tensor out;
    if (prediction == "epsilon") out = eps;
    if (prediction == "sample") out = x0;
    if (prediction == "v_prediction")
      out = map2(eps, x0, [&](double e, double a) { return n.vp_alpha * e - n.vp_sigma * a; });
    x = sched->step(out, i, x, gen);
  }
  return x;
}

TEST(SchedulerOracle, EverySamplerLandsOnX0InEveryPredictionType) {
  const Tensor x0 = random_tensor(11, 0.8f);
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"ddim", {"epsilon", "v_prediction", "sample"}},
      {"euler", {"epsilon", "v_prediction", "sample"}},
      {"euler_a", {"epsilon", "v_prediction"}},
      {"lms", {"epsilon", "v_prediction", "sample"}},
      {"dpmpp_2m", {"epsilon", "v_prediction", "sample"}},
      {"dpmpp_2m_karras", {"epsilon", "v_prediction", "sample"}},
      {"euler_karras", {"epsilon", "v_prediction", "sample"}},
      {"heun", {"epsilon", "v_prediction", "sample"}},
      {"dpmpp_2m_sde", {"epsilon", "v_prediction", "sample"}},  // the noise it adds is the noise it removes
      {"dpmpp_2m_sde_karras", {"epsilon", "v_prediction", "sample"}},
      {"unipc", {"epsilon", "v_prediction", "sample"}},
      {"lcm", {"epsilon", "v_prediction", "sample"}},
  };
  for (const auto& [name, predictions] : cases) {
    for (const std::string& prediction : predictions) {
      for (int steps : {1, 4, 20}) {
        SCOPED_TRACE(name + " " + prediction + " " + std::to_string(steps) + " steps");
        Tensor end;
        const Tensor x = sample_with_oracle(name, prediction, x0, steps, &end);
        EXPECT_TENSOR_NEAR(x, end, 2e-5);
      }
    }
  }
  // UniPC without its data prediction (predict_x0 false) and with bh1 walks the same exact path.
  SchedulerConfig c = fixture_config("unipc");
  for (const bool predict_x0 : {true, false}) {
    for (const char* solver : {"bh1", "bh2"}) {
      SCOPED_TRACE(std::string("unipc predict_x0 ") + (predict_x0 ? "true " : "false ") + solver);
      c.predict_x0 = predict_x0;
      c.solver_type = solver;
      auto s = make_scheduler("unipc", c);
      s->set_timesteps(8);
      const std::vector<float> ac = noise::make_alphas_cumprod(c, false);
      TorchGenerator gen(3);
      const Tensor eps = random_tensor(99);
      auto at = [&](int i) {
        const double sigma = s->sigmas()[i], alpha = 1 / std::sqrt(sigma * sigma + 1);
        return map2(x0, eps, [&](double a, double e) { return alpha * a + sigma * alpha * e; });
      };
      Tensor x = at(0);
      for (int i = 0; i < s->num_steps(); ++i) x = s->step(eps, i, x, gen);  // epsilon: the model knows eps
      EXPECT_TENSOR_NEAR(x, at(s->num_steps()), 2e-5);
    }
  }
}

// A constant noise prediction: every PNDM combination of past predictions is that prediction, and formula (9)
// is DDIM's update, so PLMS walks DDIM's path (its second call recomputes the first step), and with the
// Runge-Kutta warm-up it still ends where DDIM ends. LMS's coefficients sum to sigma_next - sigma: Euler.
TEST(SchedulerOracle, ConstantNoisePredictionMakesMultistepMethodsAgree) {
  const Tensor eps = random_tensor(5);
  const Tensor start = random_tensor(6);
  TorchGenerator gen(1);
  auto config = [](const std::string& name) {
    SchedulerConfig c = fixture_config(name);
    c.clip_sample = false;
    return c;
  };

  auto run = [&](const std::string& name, const SchedulerConfig& c, int steps, float scale) {
    auto s = make_scheduler(name, c);
    s->set_timesteps(steps);
    std::vector<Tensor> xs;
    Tensor x = start.clone();
    for (int64_t i = 0; i < x.numel(); ++i) x[i] *= scale * s->init_noise_sigma();
    for (int i = 0; i < s->num_steps(); ++i) {
      x = s->step(eps, i, x, gen);
      xs.push_back(x);
    }
    return xs;
  };
  const std::vector<Tensor> ddim = run("ddim", config("ddim"), 10, 1.0f);
  const std::vector<Tensor> plms = run("pndm", config("pndm"), 10, 1.0f);
  ASSERT_EQ(plms.size(), 11u);
  EXPECT_TENSOR_NEAR(plms[0], ddim[0], 1e-6);
  EXPECT_TENSOR_NEAR(plms[1], ddim[0], 1e-6);
  for (int k = 1; k < 10; ++k) {
    SCOPED_TRACE("step " + std::to_string(k));
    EXPECT_TENSOR_NEAR(plms[k + 1], ddim[k], 1e-5);
  }
  SchedulerConfig prk = config("pndm");
  prk.skip_prk_steps = false;
  const std::vector<Tensor> rk = run("pndm", prk, 10, 1.0f);
  ASSERT_EQ(rk.size(), 19u);
  EXPECT_TENSOR_NEAR(rk.back(), ddim.back(), 1e-5);

  const std::vector<Tensor> euler = run("euler", config("euler"), 10, 1.0f);
  const std::vector<Tensor> lms = run("lms", config("lms"), 10, 1.0f);
  for (int k = 0; k < 10; ++k) {
    SCOPED_TRACE("lms step " + std::to_string(k));
    EXPECT_TENSOR_NEAR(lms[k], euler[k], 1e-5);
  }
  // Heun's two derivatives are the same eps: its first halves are Euler's steps and its second halves repeat them.
  const std::vector<Tensor> heun = run("heun", config("heun"), 10, 1.0f);
  ASSERT_EQ(heun.size(), 19u);
  for (int k = 0; k < 10; ++k) {
    SCOPED_TRACE("heun step " + std::to_string(k));
    EXPECT_TENSOR_NEAR(heun[2 * k], euler[k], 1e-5);
    if (k < 9) EXPECT_TENSOR_NEAR(heun[2 * k + 1], euler[k], 1e-5);
  }
}

TEST(SchedulerSteps, DdimClipsThePredictedX0) {
  SchedulerConfig config = fixture_config("ddim");
  config.clip_sample_range = 2.0;
  auto ddim = make_scheduler("ddim", config);
  ddim->set_timesteps(10);
  const std::vector<float> ac = noise::make_alphas_cumprod(config, false);
  TorchGenerator gen(0);
  const Tensor zero = Tensor::zeros(kLatentShape);
  const Tensor big = Tensor::full(kLatentShape, 50.0f), small = Tensor::full(kLatentShape, -50.0f);
  // eps = 0: x0 = x / sqrt(alpha_t) clipped to +-2, prev = sqrt(alpha_prev) * x0.
  EXPECT_EQ(ddim->step(zero, 3, big, gen)[17], std::sqrt(ac[501]) * 2.0f);
  EXPECT_EQ(ddim->step(zero, 3, small, gen)[17], std::sqrt(ac[501]) * -2.0f);
}

TEST(SchedulerSteps, DpmSolverLastStepReturnsThePredictedX0) {
  auto dpm = make_scheduler("dpmpp_2m", fixture_config("dpmpp_2m"));
  dpm->set_timesteps(1);
  TorchGenerator gen(0);
  const Tensor x = random_tensor(1), m = random_tensor(2);
  const Tensor out = dpm->step(m, 0, x, gen);
  const float sigma = static_cast<float>(dpm->sigmas()[0]);
  const float alpha_t = 1.0f / std::sqrt(sigma * sigma + 1.0f), sigma_t = sigma * alpha_t;
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(out[i], (x[i] - sigma_t * m[i]) / alpha_t) << i;
}

TEST(SchedulerSteps, EulerDrawsAndDiscardsNoiseLikeDiffusers) {
  auto euler = make_scheduler("euler", fixture_config("euler"));
  euler->set_timesteps(4);
  TorchGenerator a(9), b(9);
  const Tensor x = random_tensor(1), m = random_tensor(2);
  euler->step(m, 0, x, a);
  (void)b.randn(kLatentShape);
  EXPECT_TENSOR_NEAR(a.randn({16}), b.randn({16}), 0.0);
  // DPM++ 2M SDE draws one latent-sized randn every step; LCM every step but the last.
  for (const char* name : {"dpmpp_2m_sde", "lcm"}) {
    SCOPED_TRACE(name);
    auto s = make_scheduler(name, fixture_config(name));
    s->set_timesteps(3);
    TorchGenerator c(9), d(9);
    Tensor y = x;
    for (int i = 0; i < 3; ++i) y = s->step(m, i, y, c);
    for (int i = 0; i < (std::string(name) == "lcm" ? 2 : 3); ++i) (void)d.randn(kLatentShape);
    EXPECT_TENSOR_NEAR(c.randn({16}), d.randn({16}), 0.0);
  }
  // Deterministic schedulers leave the generator alone.
  for (const char* name : {"pndm", "ddim", "lms", "heun", "dpmpp_2m", "unipc"}) {
    SCOPED_TRACE(name);
    auto s = make_scheduler(name, fixture_config(name));
    s->set_timesteps(4);
    TorchGenerator c(9), d(9);
    s->step(m, 0, x, c);
    EXPECT_TENSOR_NEAR(c.randn({16}), d.randn({16}), 0.0);
  }
}

TEST(SchedulerSteps, ScaleModelInput) {
  const Tensor x = Tensor::full({2, 4, 8, 8}, 3.0f);  // the guidance batch
  for (const char* name : {"euler", "euler_karras", "euler_a", "lms", "heun"}) {
    auto s = make_scheduler(name, fixture_config(name));
    s->set_timesteps(10);
    const float sigma = static_cast<float>(s->sigmas()[2]);
    const Tensor y = s->scale_model_input(x, 2);
    ASSERT_EQ(y.shape(), x.shape());
    EXPECT_EQ(y[100], 3.0f / std::sqrt(sigma * sigma + 1.0f)) << name;
  }
  for (const char* name : {"pndm", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "unipc", "lcm"}) {
    auto s = make_scheduler(name, fixture_config(name));
    s->set_timesteps(10);
    EXPECT_EQ(s->scale_model_input(x, 2)[100], 3.0f) << name;
  }
}

// History lives in the scheduler, not in the caller's buffers: reusing one output buffer (as a pipeline
// that writes the guided prediction in place might) gives the same latents.
TEST(SchedulerSteps, HistoryDoesNotAliasCallerBuffers) {
  for (const char* name : {"pndm", "lms", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"}) {
    SCOPED_TRACE(name);
    auto fresh = make_scheduler(name, fixture_config(name));
    auto reused = make_scheduler(name, fixture_config(name));
    fresh->set_timesteps(6);
    reused->set_timesteps(6);
    TorchGenerator g1(0), g2(0);
    Tensor x1 = random_tensor(1), x2 = x1.clone();
    Tensor buffer(kLatentShape);
    for (int i = 0; i < fresh->num_steps(); ++i) {
      const Tensor m = random_tensor(100 + i);
      x1 = fresh->step(m.clone(), i, x1, g1);
      std::copy(m.data(), m.data() + m.numel(), buffer.data());
      x2 = reused->step(buffer, i, x2, g2);
    }
    EXPECT_TENSOR_NEAR(x2, x1, 0.0);
  }
}

}  // namespace
}  // namespace sdcpu
