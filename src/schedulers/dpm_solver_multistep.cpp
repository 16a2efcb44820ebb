// DPMSolverMultistepScheduler (diffusers 0.27.2) as "DPM++ 2M": algorithm_type "dpmsolver++" (Lu et al.
// 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Algorithm 2:
// multistep second order on the data prediction x0 in log-SNR time lambda = log(alpha / sigma)),
// solver_order 2, with the first step and (for < 15 steps, or final_sigmas_type "zero") the last step taken
// at first order. use_karras_sigmas spaces the sigmas as Karras et al. 2022 (rho = 7) and maps each back to
// a (rounded) training timestep by log-sigma interpolation.
// As "DPM++ 2M SDE": algorithm_type "sde-dpmsolver++" (Lu et al. 2022, section 4 / appendix: the same
// multistep data-prediction solver for the diffusion SDE), which shrinks the deterministic part by e^{-h} and
// adds sigma_t sqrt(1 - e^{-2h}) times fresh noise, drawn each step from the pipeline's generator.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

constexpr int kSolverOrder = 2;  // the "2" of DPM++ 2M

// DPMSolverMultistepScheduler._sigma_to_alpha_sigma_t: the VP (alpha_t, sigma_t) of a k-diffusion sigma.
struct AlphaSigma {
  float alpha, sigma;
};
AlphaSigma alpha_sigma(float sigma) {
  const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  return {alpha, sigma * alpha};
}
// lambda = log(alpha_t) - log(sigma_t), the half log-SNR.
float lambda_of(const AlphaSigma& as) { return std::log(as.alpha) - std::log(as.sigma); }

class DpmSolverMultistepScheduler final : public Scheduler {
 public:
  DpmSolverMultistepScheduler(const SchedulerConfig& config, std::string name, bool sde)
      : config_(config), name_(std::move(name)), sde_(sde) {
    if (config.thresholding) throw ModelError(name_ + ": dynamic thresholding is not supported");
    if (config.use_lu_lambdas) throw ModelError(name_ + ": use_lu_lambdas is not supported");
    alphas_cumprod_ = noise::make_alphas_cumprod(config, /*zero_snr_last_2m24=*/true);
    sigma_table_ = noise::sigmas_from_alphas_cumprod(alphas_cumprod_);
    log_sigmas_ = noise::log_f32(sigma_table_);
    // lambda_t over the training timesteps (alpha_t = sqrt(alphas_cumprod), sigma_t = sqrt(1 - alphas_cumprod)),
    // only used to clip the schedule at lambda_min_clipped.
    lambda_table_.resize(alphas_cumprod_.size());
    for (size_t i = 0; i < alphas_cumprod_.size(); ++i)
      lambda_table_[i] = std::log(std::sqrt(alphas_cumprod_[i])) - std::log(std::sqrt(1.0f - alphas_cumprod_[i]));
  }

  const std::string& name() const override { return name_; }

  // DPMSolverMultistepScheduler.set_timesteps
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    // "Clipping the minimum of all lambda(t) for numerical stability": searchsorted(flip(lambda_t), clip).
    int64_t clipped_idx = 0;
    for (auto it = lambda_table_.rbegin(); it != lambda_table_.rend(); ++it)
      if (static_cast<double>(*it) < config_.lambda_min_clipped) ++clipped_idx;
    const int64_t last_timestep = T - clipped_idx;
    const int64_t N = num_inference_steps;

    std::vector<double> ts;  // float64 before the final cast to int64
    if (config_.timestep_spacing == "linspace") {
      const std::vector<double> grid = noise::np_linspace(0, static_cast<double>(last_timestep - 1), N + 1);
      for (int64_t i = N; i >= 1; --i) ts.push_back(noise::np_round(grid[i]));  // [::-1][:-1]
    } else if (config_.timestep_spacing == "leading") {
      const int64_t ratio = last_timestep / (N + 1);
      for (int64_t i = N; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + config_.steps_offset));
    } else if (config_.timestep_spacing == "trailing") {
      const double ratio = static_cast<double>(T) / static_cast<double>(N);
      for (double v : noise::np_arange(static_cast<double>(last_timestep), 0, -ratio))
        ts.push_back(noise::np_round(v) - 1);
    } else {
      throw ModelError(name_ + ": unsupported timestep_spacing \"" + config_.timestep_spacing + "\"");
    }
    if (ts.empty()) throw InvalidArgument(name_ + ": no timesteps for " + std::to_string(N) + " steps");

    std::vector<double> sigmas(ts.size());
    if (config_.use_karras_sigmas) {
      // in_sigmas = flip(sigma table): sigma_min = table[0], sigma_max = table[T - 1] unless configured.
      const double sigma_min = config_.sigma_min.value_or(sigma_table_.front());
      const double sigma_max = config_.sigma_max.value_or(sigma_table_.back());
      sigmas = noise::karras_sigmas(sigma_min, sigma_max, static_cast<int>(N));
      ts.resize(sigmas.size());
      for (size_t i = 0; i < sigmas.size(); ++i) ts[i] = noise::np_round(noise::sigma_to_t(sigmas[i], log_sigmas_));
    } else {
      for (size_t i = 0; i < ts.size(); ++i) sigmas[i] = noise::np_interp_index(ts[i], sigma_table_);
    }
    float sigma_last = 0.0f;  // final_sigmas_type "zero"
    if (config_.final_sigmas_type == "sigma_min") {
      const float a0 = alphas_cumprod_[0];
      sigma_last = std::sqrt((1.0f - a0) / a0);
    }
    sigmas_f32_.resize(sigmas.size() + 1);
    for (size_t i = 0; i < sigmas.size(); ++i) sigmas_f32_[i] = static_cast<float>(sigmas[i]);
    sigmas_f32_.back() = sigma_last;

    timesteps_.resize(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) timesteps_[i] = static_cast<double>(static_cast<int64_t>(ts[i]));
    sigmas_.assign(sigmas_f32_.begin(), sigmas_f32_.end());
    model_outputs_.assign(kSolverOrder, Tensor());
    lower_order_nums_ = 0;
    reset_steps();
  }

  float init_noise_sigma() const override { return 1.0f; }

  // DPMSolverMultistepScheduler.step
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator& generator) override {
    check_sequential_step(step_index);
    noise::check_same_shape(model_output, sample, name_.c_str());
    const int n = num_steps();
    // "Improve numerical stability for small number of steps": the last steps at lower order.
    const bool few_steps = config_.lower_order_final && n < 15;
    const bool lower_order_final =
        step_index == n - 1 && (config_.euler_at_final || few_steps || config_.final_sigmas_type == "zero");

    Tensor x0 = convert_model_output(model_output, sample, step_index);
    for (int i = 0; i + 1 < kSolverOrder; ++i) model_outputs_[i] = model_outputs_[i + 1];
    model_outputs_.back() = x0;
    // sde-dpmsolver++: randn_tensor(model_output.shape, generator), every step, first order or not.
    const Tensor noise = sde_ ? generator.randn(model_output.shape()) : Tensor();

    Tensor prev;
    if (lower_order_nums_ < 1 || lower_order_final) {
      prev = sde_ ? sde_first_order_update(x0, sample, noise, step_index) : first_order_update(x0, sample, step_index);
    } else {  // (diffusers' lower_order_second only caps order 3 at 2; 2 is our highest)
      prev = sde_ ? sde_second_order_update(sample, noise, step_index) : second_order_update(sample, step_index);
    }
    if (lower_order_nums_ < kSolverOrder) ++lower_order_nums_;
    return prev;
  }

 private:
  // convert_model_output for dpmsolver++: the data prediction x0.
  Tensor convert_model_output(const Tensor& model_output, const Tensor& sample, int step_index) const {
    const std::string& pred = config_.prediction_type;
    if (pred == "sample") return model_output.clone();
    const AlphaSigma as = alpha_sigma(sigmas_f32_[step_index]);
    const float* m = model_output.data();
    const float* s = sample.data();
    Tensor out(sample.shape());
    float* o = out.data();
    if (pred == "epsilon") {
      for (int64_t i = 0; i < sample.numel(); ++i) o[i] = (s[i] - as.sigma * m[i]) / as.alpha;
    } else {  // v_prediction
      for (int64_t i = 0; i < sample.numel(); ++i) o[i] = as.alpha * s[i] - as.sigma * m[i];
    }
    return out;
  }

  // dpm_solver_first_order_update, dpmsolver++ (= DDIM in x0 form):
  // x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0.
  Tensor first_order_update(const Tensor& x0, const Tensor& sample, int step_index) const {
    const AlphaSigma t = alpha_sigma(sigmas_f32_[step_index + 1]);
    const AlphaSigma s0 = alpha_sigma(sigmas_f32_[step_index]);
    const float h = lambda_of(t) - lambda_of(s0);
    const float ratio = t.sigma / s0.sigma;
    const float c0 = t.alpha * (std::exp(-h) - 1.0f);
    const float* s = sample.data();
    const float* d0 = x0.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      const float a = ratio * s[i];
      const float b = c0 * d0[i];
      o[i] = a - b;
    }
    return out;
  }

  // multistep_dpm_solver_second_order_update, dpmsolver++ (DPM-Solver++(2M), Lu et al. 2022, Algorithm 2):
  // D0 = m0, D1 = (m0 - m1) / r0 with r0 = h_0 / h; midpoint: x_t = (sigma_t / sigma_s0) x - alpha_t (e^{-h} - 1)
  // (D0 + D1 / 2); heun: ... + alpha_t ((e^{-h} - 1) / h + 1) D1.
  Tensor second_order_update(const Tensor& sample, int step_index) const {
    const AlphaSigma t = alpha_sigma(sigmas_f32_[step_index + 1]);
    const AlphaSigma s0 = alpha_sigma(sigmas_f32_[step_index]);
    const AlphaSigma s1 = alpha_sigma(sigmas_f32_[step_index - 1]);
    const float lambda_t = lambda_of(t), lambda_s0 = lambda_of(s0), lambda_s1 = lambda_of(s1);
    const Tensor& m0 = model_outputs_[kSolverOrder - 1];
    const Tensor& m1 = model_outputs_[kSolverOrder - 2];
    const float h = lambda_t - lambda_s0, h_0 = lambda_s0 - lambda_s1;
    const float r0 = h_0 / h;
    const float inv_r0 = 1.0f / r0;
    const float ratio = t.sigma / s0.sigma;
    const float em1 = std::exp(-h) - 1.0f;
    const float c0 = t.alpha * em1;
    const bool heun = config_.solver_type == "heun";
    const float c1 = heun ? t.alpha * (em1 / h + 1.0f) : 0.5f * c0;
    const float* s = sample.data();
    const float* p0 = m0.data();
    const float* p1 = m1.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      const float d1 = inv_r0 * (p0[i] - p1[i]);
      const float a = ratio * s[i];
      const float b = c0 * p0[i];
      const float c = c1 * d1;
      o[i] = heun ? (a - b) + c : (a - b) - c;
    }
    return out;
  }

  // dpm_solver_first_order_update, sde-dpmsolver++:
  // x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0 + sigma_t sqrt(1 - e^{-2h}) noise.
  Tensor sde_first_order_update(const Tensor& x0, const Tensor& sample, const Tensor& noise, int step_index) const {
    const AlphaSigma t = alpha_sigma(sigmas_f32_[step_index + 1]);
    const AlphaSigma s0 = alpha_sigma(sigmas_f32_[step_index]);
    const float h = lambda_of(t) - lambda_of(s0);
    const float ratio = t.sigma / s0.sigma;
    const float cs = ratio * std::exp(-h);
    const float one_minus_e2h = 1.0f - std::exp(-2.0f * h);
    const float c0 = t.alpha * one_minus_e2h;
    const float cn = t.sigma * std::sqrt(one_minus_e2h);
    const float* s = sample.data();
    const float* d0 = x0.data();
    const float* z = noise.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      const float a = cs * s[i];
      const float b = c0 * d0[i];
      const float c = cn * z[i];
      o[i] = (a + b) + c;
    }
    return out;
  }

  // multistep_dpm_solver_second_order_update, sde-dpmsolver++: D0 = m0, D1 = (m0 - m1) / r0;
  // midpoint: x_t = (sigma_t / sigma_s0) e^{-h} x + alpha_t (1 - e^{-2h}) (D0 + D1 / 2) + sigma_t sqrt(1 - e^{-2h})
  // noise; heun: D1's coefficient alpha_t ((1 - e^{-2h}) / (-2h) + 1).
  Tensor sde_second_order_update(const Tensor& sample, const Tensor& noise, int step_index) const {
    const AlphaSigma t = alpha_sigma(sigmas_f32_[step_index + 1]);
    const AlphaSigma s0 = alpha_sigma(sigmas_f32_[step_index]);
    const AlphaSigma s1 = alpha_sigma(sigmas_f32_[step_index - 1]);
    const float lambda_t = lambda_of(t), lambda_s0 = lambda_of(s0), lambda_s1 = lambda_of(s1);
    const Tensor& m0 = model_outputs_[kSolverOrder - 1];
    const Tensor& m1 = model_outputs_[kSolverOrder - 2];
    const float h = lambda_t - lambda_s0, h_0 = lambda_s0 - lambda_s1;
    const float r0 = h_0 / h;
    const float inv_r0 = 1.0f / r0;
    const float ratio = t.sigma / s0.sigma;
    const float cs = ratio * std::exp(-h);
    const float one_minus_e2h = 1.0f - std::exp(-2.0f * h);
    const float c0 = t.alpha * one_minus_e2h;
    const float c1 = config_.solver_type == "heun" ? t.alpha * (one_minus_e2h / (-2.0f * h) + 1.0f) : 0.5f * c0;
    const float cn = t.sigma * std::sqrt(one_minus_e2h);
    const float* s = sample.data();
    const float* p0 = m0.data();
    const float* p1 = m1.data();
    const float* z = noise.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      const float d1 = inv_r0 * (p0[i] - p1[i]);
      const float a = cs * s[i];
      const float b = c0 * p0[i];
      const float c = c1 * d1;
      const float d = cn * z[i];
      o[i] = ((a + b) + c) + d;
    }
    return out;
  }

  SchedulerConfig config_;
  std::string name_;
  bool sde_;  // sde-dpmsolver++ rather than dpmsolver++
  std::vector<float> alphas_cumprod_, sigma_table_, log_sigmas_, lambda_table_;
  std::vector<float> sigmas_f32_;
  std::vector<Tensor> model_outputs_;  // the last kSolverOrder x0 predictions, oldest first
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver_multistep_scheduler(const SchedulerConfig& config, const std::string& name,
                                                               bool sde) {
  return std::make_unique<DpmSolverMultistepScheduler>(config, name, sde);
}

}  // namespace sdcpu
