// DDIMScheduler (diffusers 0.27.2) with eta = 0: the deterministic DDIM sampler of Song et al. 2021,
// "Denoising Diffusion Implicit Models", eq. (12) with sigma_t = 0.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

class DdimScheduler final : public Scheduler {
 public:
  explicit DdimScheduler(const SchedulerConfig& config)
      : config_(config), alphas_cumprod_(noise::make_alphas_cumprod(config, /*zero_snr_last_2m24=*/false)) {
    if (config.thresholding) throw ModelError("ddim: dynamic thresholding is not supported");
    // "When this option is `True` the previous alpha product is fixed to `1`, otherwise it uses the alpha
    // value at step 0." DDIM's default is true; SD configs set false.
    final_alpha_cumprod_ = config.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  }

  const std::string& name() const override {
    static const std::string kName = "ddim";
    return kName;
  }

  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    const std::vector<int64_t> ts =
        noise::discrete_timesteps(config_.timestep_spacing, T, num_inference_steps, config_.steps_offset);
    for (int64_t t : ts)
      if (t < 0 || t >= T)
        throw InvalidArgument("ddim: timestep " + std::to_string(t) + " (steps_offset " +
                              std::to_string(config_.steps_offset) + ") is outside the " + std::to_string(T) +
                              " training timesteps");
    int_timesteps_ = ts;
    timesteps_.assign(ts.begin(), ts.end());
    step_ratio_ = T / num_inference_steps;
    reset_steps();
  }

  float init_noise_sigma() const override { return 1.0f; }

  // DDIMScheduler.step with eta = 0, use_clipped_model_output = False.
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator&) override {
    check_step_index(step_index);
    noise::check_same_shape(model_output, sample, "ddim");
    // 1. prev_timestep = t - T // N
    const int64_t t = int_timesteps_[step_index];
    const int64_t prev_t = t - step_ratio_;
    // 2. alphas and betas (float32 0-dim tensors in diffusers)
    const float alpha_prod_t = alphas_cumprod_[t];
    const float alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float sqrt_alpha_t = std::sqrt(alpha_prod_t), sqrt_beta_t = std::sqrt(beta_prod_t);

    // 5. variance sigma_t(eta) (eq. 16) times eta = 0
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    const float variance = (beta_prod_t_prev / beta_prod_t) * (1.0f - alpha_prod_t / alpha_prod_t_prev);
    const float std_dev_t = 0.0f * std::sqrt(variance);
    // 6. "direction pointing to x_t" coefficient and 7. x_{t-1} = sqrt(alpha_prev) * x0 + direction
    const float direction_coeff = std::sqrt(1.0f - alpha_prod_t_prev - std_dev_t * std_dev_t);
    const float sqrt_alpha_prev = std::sqrt(alpha_prod_t_prev);

    const bool clip = config_.clip_sample;
    const float range = static_cast<float>(config_.clip_sample_range);
    const std::string& pred = config_.prediction_type;
    const float* m = model_output.data();
    const float* s = sample.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      // 3. predicted x0 (eq. 12's "predicted x0") and predicted epsilon
      float x0, eps;
      if (pred == "epsilon") {
        x0 = (s[i] - sqrt_beta_t * m[i]) / sqrt_alpha_t;
        eps = m[i];
      } else if (pred == "sample") {
        x0 = m[i];
        eps = (s[i] - sqrt_alpha_t * x0) / sqrt_beta_t;
      } else {  // v_prediction (Salimans & Ho 2022)
        x0 = sqrt_alpha_t * s[i] - sqrt_beta_t * m[i];
        eps = sqrt_alpha_t * m[i] + sqrt_beta_t * s[i];
      }
      // 4. clip x0 ("for numerical stability")
      if (clip) x0 = std::clamp(x0, -range, range);
      const float direction = direction_coeff * eps;
      o[i] = sqrt_alpha_prev * x0 + direction;
    }
    return out;
  }

 private:
  SchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  std::vector<int64_t> int_timesteps_;
  int64_t step_ratio_ = 1;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim_scheduler(const SchedulerConfig& config) {
  return std::make_unique<DdimScheduler>(config);
}

}  // namespace sdcpu
