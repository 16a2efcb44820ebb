// PNDMScheduler (diffusers 0.27.2): pseudo numerical methods for diffusion models, Liu et al. 2022,
// "Pseudo Numerical Methods for Diffusion Models on Manifolds". With skip_prk_steps (Stable Diffusion's
// setting) it is the PLMS sampler of CompVis latent-diffusion: a linear multistep method on the noise
// predictions ("ets"), whose first two steps form a second-order (Heun-like) start; otherwise four
// pseudo Runge-Kutta steps (3 model calls each) come first.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape()); }

class PndmScheduler final : public Scheduler {
 public:
  explicit PndmScheduler(const SchedulerConfig& config) : config_(config) {
    if (config.prediction_type == "sample")
      throw ModelError("pndm: prediction_type \"sample\" is not supported (diffusers: epsilon or v_prediction)");
    SchedulerConfig no_rescale = config;  // PNDMScheduler has no rescale_betas_zero_snr
    no_rescale.rescale_betas_zero_snr = false;
    alphas_cumprod_ = noise::make_alphas_cumprod(no_rescale, false);
    final_alpha_cumprod_ = config.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  }

  const std::string& name() const override {
    static const std::string kName = "pndm";
    return kName;
  }

  // PNDMScheduler.set_timesteps
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    // _timesteps, ascending (DDIM's grid reversed).
    std::vector<int64_t> base =
        noise::discrete_timesteps(config_.timestep_spacing, T, num_inference_steps, config_.steps_offset);
    std::reverse(base.begin(), base.end());
    const int64_t n = static_cast<int64_t>(base.size());
    std::vector<int64_t> prk, plms;
    if (config_.skip_prk_steps) {
      // plms = concat(_t[:-1], _t[-2:-1], _t[-1:])[::-1]: the second-to-last grid point twice, which is
      // where the second-order start evaluates the model a second time.
      for (int64_t i = 0; i + 1 < n; ++i) plms.push_back(base[i]);
      if (n >= 2) plms.push_back(base[n - 2]);
      plms.push_back(base[n - 1]);
      std::reverse(plms.begin(), plms.end());
    } else {
      if (n < pndm_order_)
        throw InvalidArgument("pndm: the Runge-Kutta warm-up (skip_prk_steps = false) needs at least " +
                              std::to_string(pndm_order_) + " inference steps");
      // prk = (repeat(_t[-4:], 2) + tile([0, T // N // 2], 4))[:-1].repeat(2)[1:-1][::-1]
      const int64_t half = T / num_inference_steps / 2;
      std::vector<int64_t> pairs;
      for (int64_t i = n - pndm_order_; i < n; ++i) {
        pairs.push_back(base[i]);
        pairs.push_back(base[i] + half);
      }
      pairs.pop_back();
      std::vector<int64_t> doubled;
      for (int64_t v : pairs) {
        doubled.push_back(v);
        doubled.push_back(v);
      }
      prk.assign(doubled.begin() + 1, doubled.end() - 1);
      std::reverse(prk.begin(), prk.end());
      for (int64_t i = n - 4; i >= 0; --i) plms.push_back(base[i]);  // _t[:-3][::-1]
    }
    for (int64_t t : prk)
      if (t >= T) throw InvalidArgument("pndm: Runge-Kutta timestep " + std::to_string(t) + " is out of range");
    for (int64_t t : base)
      if (t < 0 || t >= T)
        throw InvalidArgument("pndm: timestep " + std::to_string(t) + " (steps_offset " +
                              std::to_string(config_.steps_offset) + ") is outside the " + std::to_string(T) +
                              " training timesteps");
    prk_timesteps_ = prk;
    int_timesteps_ = prk;
    int_timesteps_.insert(int_timesteps_.end(), plms.begin(), plms.end());
    timesteps_.assign(int_timesteps_.begin(), int_timesteps_.end());
    step_ratio_ = T / num_inference_steps;
    ets_.clear();
    counter_ = 0;
    cur_model_output_ = Tensor();
    cur_sample_ = Tensor();
    reset_steps();
  }

  float init_noise_sigma() const override { return 1.0f; }

  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator&) override {
    check_sequential_step(step_index);
    noise::check_same_shape(model_output, sample, "pndm");
    const int64_t t = int_timesteps_[step_index];
    if (counter_ < static_cast<int64_t>(prk_timesteps_.size()) && !config_.skip_prk_steps)
      return step_prk(model_output, t, sample);
    return step_plms(model_output, t, sample);
  }

 private:
  // PNDMScheduler.step_prk: the four-stage pseudo Runge-Kutta method (PNDM paper, eq. 13).
  Tensor step_prk(const Tensor& model_output_in, int64_t timestep, const Tensor& sample) {
    const int64_t diff_to_prev = counter_ % 2 ? 0 : step_ratio_ / 2;  // T // N // 2: half a step
    const int64_t prev_timestep = timestep - diff_to_prev;
    timestep = prk_timesteps_[counter_ / 4 * 4];
    Tensor model_output = model_output_in;
    if (cur_model_output_.empty()) cur_model_output_ = zeros_like(model_output_in);  // "0" in diffusers
    float* acc = cur_model_output_.data();
    const float* m = model_output_in.data();
    const int64_t n = model_output_in.numel();
    if (counter_ % 4 == 0) {
      const float w = static_cast<float>(1.0 / 6);
      for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + w * m[i];
      ets_.push_back(model_output_in.clone());  // history must not alias the caller's buffers
      cur_sample_ = sample.clone();
    } else if ((counter_ - 1) % 4 == 0 || (counter_ - 2) % 4 == 0) {
      const float w = static_cast<float>(1.0 / 3);
      for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + w * m[i];
    } else {  // (counter - 3) % 4 == 0
      const float w = static_cast<float>(1.0 / 6);
      model_output = Tensor(model_output_in.shape());
      float* o = model_output.data();
      for (int64_t i = 0; i < n; ++i) o[i] = acc[i] + w * m[i];
      cur_model_output_ = Tensor();  // back to 0
    }
    const Tensor& cur_sample = cur_sample_.empty() ? sample : cur_sample_;
    Tensor prev = get_prev_sample(cur_sample, timestep, prev_timestep, model_output);
    ++counter_;
    return prev;
  }

  // PNDMScheduler.step_plms: Adams-Bashforth-style combination of the last (up to) four noise predictions
  // (PNDM paper, eq. 12 / PLMS), with a second-order start.
  Tensor step_plms(const Tensor& model_output_in, int64_t timestep, const Tensor& sample_in) {
    if (!config_.skip_prk_steps && ets_.size() < 3)
      throw InvalidArgument("pndm: PLMS steps need the Runge-Kutta warm-up first");
    int64_t prev_timestep = timestep - step_ratio_;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(model_output_in.clone());
    } else {
      // The second call re-evaluates the model at the first target: average it with the first prediction
      // and redo the first step from the first sample (a second-order start).
      prev_timestep = timestep;
      timestep = timestep + step_ratio_;
    }
    const int64_t n = model_output_in.numel();
    Tensor model_output = model_output_in;
    Tensor sample = sample_in;
    const size_t k = ets_.size();
    auto combine = [&](auto&& f) {
      model_output = Tensor(model_output_in.shape());
      float* o = model_output.data();
      for (int64_t i = 0; i < n; ++i) o[i] = f(i);
    };
    if (k == 1 && counter_ == 0) {
      cur_sample_ = sample_in.clone();
    } else if (k == 1 && counter_ == 1) {
      const float* m = model_output_in.data();
      const float* e1 = ets_[k - 1].data();
      combine([&](int64_t i) { return (m[i] + e1[i]) / 2.0f; });
      sample = cur_sample_;
      cur_sample_ = Tensor();
    } else if (k == 2) {
      const float* e1 = ets_[k - 1].data();
      const float* e2 = ets_[k - 2].data();
      combine([&](int64_t i) { return (3.0f * e1[i] - e2[i]) / 2.0f; });
    } else if (k == 3) {
      const float* e1 = ets_[k - 1].data();
      const float* e2 = ets_[k - 2].data();
      const float* e3 = ets_[k - 3].data();
      combine([&](int64_t i) { return (23.0f * e1[i] - 16.0f * e2[i] + 5.0f * e3[i]) / 12.0f; });
    } else {
      const float* e1 = ets_[k - 1].data();
      const float* e2 = ets_[k - 2].data();
      const float* e3 = ets_[k - 3].data();
      const float* e4 = ets_[k - 4].data();
      const float w = static_cast<float>(1.0 / 24);
      combine([&](int64_t i) { return w * (55.0f * e1[i] - 59.0f * e2[i] + 37.0f * e3[i] - 9.0f * e4[i]); });
    }
    Tensor prev = get_prev_sample(sample, timestep, prev_timestep, model_output);
    ++counter_;
    return prev;
  }

  // PNDMScheduler._get_prev_sample: x_(t-delta) by the PNDM paper's formula (9), in float32.
  Tensor get_prev_sample(const Tensor& sample, int64_t timestep, int64_t prev_timestep,
                         const Tensor& model_output) const {
    if (timestep < 0 || timestep >= config_.num_train_timesteps)
      throw InvalidArgument("pndm: timestep " + std::to_string(timestep) + " is out of range");
    const float alpha_prod_t = alphas_cumprod_[timestep];
    const float alpha_prod_t_prev = prev_timestep >= 0 ? alphas_cumprod_[prev_timestep] : final_alpha_cumprod_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    const float sqrt_alpha_t = std::sqrt(alpha_prod_t), sqrt_beta_t = std::sqrt(beta_prod_t);
    // (alpha_(t-delta) - alpha_t) / (sqrt(alpha_t) (sqrt(alpha_(t-delta)) + sqrt(alpha_t))) + 1
    // = sqrt(alpha_(t-delta) / alpha_t)
    const float sample_coeff = std::sqrt(alpha_prod_t_prev / alpha_prod_t);
    // the denominator of e_theta(x_t, t) in formula (9)
    const float denom =
        alpha_prod_t * std::sqrt(beta_prod_t_prev) + std::sqrt(alpha_prod_t * beta_prod_t * alpha_prod_t_prev);
    const float alpha_diff = alpha_prod_t_prev - alpha_prod_t;
    const bool v_prediction = config_.prediction_type == "v_prediction";
    const float* m = model_output.data();
    const float* s = sample.data();
    Tensor out(sample.shape());
    float* o = out.data();
    for (int64_t i = 0; i < sample.numel(); ++i) {
      float eps = m[i];
      if (v_prediction) eps = sqrt_alpha_t * m[i] + sqrt_beta_t * s[i];
      const float scaled_sample = sample_coeff * s[i];
      const float correction = alpha_diff * eps / denom;
      o[i] = scaled_sample - correction;
    }
    return out;
  }

  static constexpr int64_t pndm_order_ = 4;
  SchedulerConfig config_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  std::vector<int64_t> int_timesteps_, prk_timesteps_;
  int64_t step_ratio_ = 1;  // T // N
  // running values
  std::vector<Tensor> ets_;  // past model outputs
  Tensor cur_model_output_;  // Runge-Kutta accumulator (empty: 0)
  Tensor cur_sample_;        // the sample the current multi-evaluation step started from (empty: None)
  int64_t counter_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm_scheduler(const SchedulerConfig& config) {
  return std::make_unique<PndmScheduler>(config);
}

}  // namespace sdcpu
