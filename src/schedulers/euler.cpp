// EulerDiscreteScheduler (diffusers 0.27.2): Euler's method on the probability-flow ODE in sigma
// parameterization, Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
// Models", Algorithm 2 without churn (s_churn = 0, so no noise is added). "euler_karras" is the same class with
// use_karras_sigmas (the sigmas of Karras et al.'s eq. 5, rho = 7, at fractional training timesteps).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

class EulerScheduler final : public Scheduler {
 public:
  EulerScheduler(const SchedulerConfig& config, std::string name) : config_(config), name_(std::move(name)) {
    if (config.interpolation_type != "linear")
      throw ModelError(name_ + ": interpolation_type \"" + config.interpolation_type + "\" is not supported");
    const std::vector<float> alphas_cumprod = noise::make_alphas_cumprod(config, /*zero_snr_last_2m24=*/true);
    sigma_table_ = noise::sigmas_from_alphas_cumprod(alphas_cumprod);
    log_sigmas_ = noise::log_f32(sigma_table_);
  }

  const std::string& name() const override { return name_; }

  // EulerDiscreteScheduler.set_timesteps (interpolation_type "linear").
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    const std::vector<float> ts =
        noise::sigma_timesteps(config_.timestep_spacing, T, num_inference_steps, config_.steps_offset);
    std::vector<double> sigmas(ts.size()), timesteps(ts.begin(), ts.end());
    for (size_t i = 0; i < ts.size(); ++i) sigmas[i] = noise::np_interp_index(ts[i], sigma_table_);
    if (config_.use_karras_sigmas) {
      const double sigma_min = config_.sigma_min.value_or(sigmas.back());
      const double sigma_max = config_.sigma_max.value_or(sigmas.front());
      sigmas = noise::karras_sigmas(sigma_min, sigma_max, num_inference_steps);
      for (size_t i = 0; i < sigmas.size(); ++i)
        timesteps[i] = static_cast<float>(noise::sigma_to_t(sigmas[i], log_sigmas_));  // astype(np.float32)
    }
    sigmas_f32_ = noise::sigmas_with_final_zero(sigmas);
    if (config_.timestep_type == "continuous" && config_.prediction_type == "v_prediction") {
      // EDM-style conditioning: c_noise = log(sigma) / 4 (Karras et al. 2022, Table 1)
      for (size_t i = 0; i < timesteps.size(); ++i) timesteps[i] = 0.25f * std::log(sigmas_f32_[i]);
    }
    timesteps_ = timesteps;
    sigmas_.assign(sigmas_f32_.begin(), sigmas_f32_.end());
    reset_steps();
  }

  float init_noise_sigma() const override {
    // (before set_timesteps(): the training table's, as diffusers' __init__ sigmas)
    return noise::sigma_init_noise_sigma(sigmas_f32_.empty() ? sigma_table_ : sigmas_f32_, config_.timestep_spacing);
  }

  Tensor scale_model_input(const Tensor& sample, int step_index) const override {
    check_step_index(step_index);
    return noise::scale_by_sigma(sample, sigmas_f32_[step_index]);
  }

  // EulerDiscreteScheduler.step with s_churn = 0 (gamma = 0, sigma_hat = sigma).
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator& generator) override {
    check_step_index(step_index);
    noise::check_same_shape(model_output, sample, name_.c_str());
    const float sigma = sigmas_f32_[step_index];
    // diffusers draws the churn noise on every step even when gamma = 0 and it goes unused; drawing it
    // keeps the generator where diffusers leaves it.
    (void)generator.randn(model_output.shape());
    const float sigma_hat = sigma * (0.0f + 1.0f);
    // 1. predicted x0 (epsilon uses sigma_hat, v_prediction sigma: equal here)
    const Tensor x0 = noise::sigma_pred_original_sample(config_.prediction_type, model_output, sample, sigma_hat);
    // 2. ODE derivative d = (x - x0) / sigma and the Euler step x + d * (sigma_next - sigma)
    const float dt = sigmas_f32_[step_index + 1] - sigma_hat;
    const float* s = sample.data();
    const float* p = x0.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      const float derivative = (s[i] - p[i]) / sigma_hat;
      o[i] = s[i] + derivative * dt;
    }
    return out;
  }

 private:
  SchedulerConfig config_;
  std::string name_;
  std::vector<float> sigma_table_, log_sigmas_;  // per training timestep
  std::vector<float> sigmas_f32_;                // scheduler.sigmas (float32), num_steps + 1
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_scheduler(const SchedulerConfig& config, const std::string& name) {
  return std::make_unique<EulerScheduler>(config, name);
}

}  // namespace sdcpu
