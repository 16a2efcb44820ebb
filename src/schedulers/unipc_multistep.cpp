// UniPCMultistepScheduler (diffusers 0.27.2): UniPC, Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
// Framework for Fast Sampling of Diffusion Models". Each step first corrects the sample the previous step
// predicted (UniC, using the model output just computed at it), then predicts the next one (UniP), both
// exponential-integrator updates in log-SNR time lambda = log(alpha / sigma) on the data prediction x0
// (predict_x0, the default) or on the noise. B(h) = e^h - 1 ("bh2", the default) or h ("bh1"). Orders 1 and 2
// (diffusers' default solver_order = 2): the order-2 corrector's coefficients solve a 2x2 linear system, as
// torch.linalg.solve does in float32.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "schedulers/noise_schedule.h"
#include "schedulers/scheduler_impl.h"

namespace sdcpu {
namespace {

constexpr int kMaxSolverOrder = 2;

// _sigma_to_alpha_sigma_t: the VP (alpha_t, sigma_t) of a k-diffusion sigma, and lambda = log(alpha) - log(sigma).
struct Point {
  float alpha, sigma, lambda;
};
Point point_at(float k_sigma) {
  const float alpha = 1.0f / std::sqrt(k_sigma * k_sigma + 1.0f);
  const float sigma = k_sigma * alpha;
  return {alpha, sigma, std::log(alpha) - std::log(sigma)};
}

// torch.linalg.solve(R, b) for R = [[1, 1], [rk, 1]] in float32 as torch 1.13 computes it: R is contiguous, so it
// LU-factors R^T = [[1, rk], [1, 1]] (LAPACK sgetrf: the pivot column is [1, 1], a tie, so no row swap;
// L = [[1, 0], [1, 1]], U = [[1, rk], [0, 1 - rk]]) and solves R x = U^T L^T x = b (sgetrs, transposed):
// U^T y = b gives y0 = b0, y1 = (b1 - rk * y0) / (1 - rk); L^T x = y gives x1 = y1, x0 = y0 - x1. (Checked
// bit for bit against torch.linalg.solve on 20000 random systems with rk in [-3, -0.2].)
void solve_corrector_system(float rk, float b0, float b1, float& x0, float& x1) {
  const float u11 = 1.0f - rk;
  const float rk_y0 = rk * b0;
  x1 = (b1 - rk_y0) / u11;
  x0 = b0 - x1;
}

class UniPcScheduler final : public Scheduler {
 public:
  explicit UniPcScheduler(const SchedulerConfig& config) : config_(config) {
    if (config.thresholding) throw ModelError("unipc: dynamic thresholding is not supported");
    if (config.solver_order < 1 || config.solver_order > kMaxSolverOrder)
      throw ModelError("unipc: solver_order " + std::to_string(config.solver_order) + " is not supported (1 or 2)");
    // UniPCMultistepScheduler.__init__ registers any solver_type but bh1/bh2 as bh2.
    bh1_ = config.solver_type == "bh1";
    SchedulerConfig no_rescale = config;  // UniPCMultistepScheduler has no rescale_betas_zero_snr
    no_rescale.rescale_betas_zero_snr = false;
    alphas_cumprod_ = noise::make_alphas_cumprod(no_rescale, false);
    sigma_table_ = noise::sigmas_from_alphas_cumprod(alphas_cumprod_);
    log_sigmas_ = noise::log_f32(sigma_table_);
  }

  const std::string& name() const override {
    static const std::string kName = "unipc";
    return kName;
  }

  // UniPCMultistepScheduler.set_timesteps
  void set_timesteps(int num_inference_steps) override {
    const int T = config_.num_train_timesteps;
    check_num_inference_steps(num_inference_steps, T);
    const int64_t N = num_inference_steps;
    std::vector<double> ts;  // float64 before the cast to int64
    if (config_.timestep_spacing == "linspace") {
      const std::vector<double> grid = noise::np_linspace(0, static_cast<double>(T - 1), N + 1);
      for (int64_t i = N; i >= 1; --i) ts.push_back(noise::np_round(grid[i]));  // [::-1][:-1]
    } else if (config_.timestep_spacing == "leading") {
      const int64_t ratio = T / (N + 1);
      for (int64_t i = N; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + config_.steps_offset));
    } else if (config_.timestep_spacing == "trailing") {
      const double ratio = static_cast<double>(T) / static_cast<double>(N);
      for (double v : noise::np_arange(static_cast<double>(T), 0, -ratio)) ts.push_back(noise::np_round(v) - 1);
    } else {
      throw ModelError("unipc: unsupported timestep_spacing \"" + config_.timestep_spacing + "\"");
    }

    sigmas_f32_.clear();
    if (config_.use_karras_sigmas) {
      // in_sigmas = flip(sigma table): sigma_min = table[0], sigma_max = table[T - 1] unless configured.
      const double sigma_min = config_.sigma_min.value_or(sigma_table_.front());
      const double sigma_max = config_.sigma_max.value_or(sigma_table_.back());
      const std::vector<double> sigmas = noise::karras_sigmas(sigma_min, sigma_max, static_cast<int>(N));
      ts.resize(sigmas.size());
      for (size_t i = 0; i < sigmas.size(); ++i) {
        ts[i] = noise::np_round(noise::sigma_to_t(sigmas[i], log_sigmas_));
        sigmas_f32_.push_back(static_cast<float>(sigmas[i]));
      }
      sigmas_f32_.push_back(sigmas_f32_.back());  // np.concatenate([sigmas, sigmas[-1:]])
    } else {
      for (double t : ts) sigmas_f32_.push_back(static_cast<float>(noise::np_interp_index(t, sigma_table_)));
      const float a0 = alphas_cumprod_[0];  // sigma_last: the training table's smallest sigma
      sigmas_f32_.push_back(std::sqrt((1.0f - a0) / a0));
    }
    timesteps_.resize(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) timesteps_[i] = static_cast<double>(static_cast<int64_t>(ts[i]));
    sigmas_.assign(sigmas_f32_.begin(), sigmas_f32_.end());
    model_outputs_.assign(config_.solver_order, Tensor());
    lower_order_nums_ = 0;
    this_order_ = 0;
    last_sample_ = Tensor();
    reset_steps();
  }

  float init_noise_sigma() const override { return 1.0f; }

  // UniPCMultistepScheduler.step
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, TorchGenerator&) override {
    check_sequential_step(step_index);
    noise::check_same_shape(model_output, sample, "unipc");
    const auto& disabled = config_.disable_corrector;
    const bool use_corrector = step_index > 0 &&
                               std::find(disabled.begin(), disabled.end(), step_index - 1) == disabled.end() &&
                               last_sample_.numel() > 0;
    const Tensor converted = convert_model_output(model_output, sample, step_index);
    Tensor corrected = use_corrector ? corrector_update(converted, step_index) : sample.clone();

    for (size_t i = 0; i + 1 < model_outputs_.size(); ++i) model_outputs_[i] = model_outputs_[i + 1];
    model_outputs_.back() = converted;

    int order = config_.solver_order;
    if (config_.lower_order_final) order = std::min(order, num_steps() - step_index);
    this_order_ = std::min(order, lower_order_nums_ + 1);  // warm-up of the multistep method
    last_sample_ = std::move(corrected);
    Tensor prev = predictor_update(last_sample_, step_index);
    if (lower_order_nums_ < config_.solver_order) ++lower_order_nums_;
    return prev;
  }

 private:
  // convert_model_output: x0 (predict_x0) or the noise, from the model's prediction type.
  Tensor convert_model_output(const Tensor& model_output, const Tensor& sample, int step_index) const {
    const Point p = point_at(sigmas_f32_[step_index]);
    const std::string& pred = config_.prediction_type;
    const float* m = model_output.data();
    const float* s = sample.data();
    Tensor out(sample.shape());
    float* o = out.data();
    const int64_t n = sample.numel();
    if (config_.predict_x0) {
      if (pred == "epsilon") {
        for (int64_t i = 0; i < n; ++i) o[i] = (s[i] - p.sigma * m[i]) / p.alpha;
      } else if (pred == "sample") {
        for (int64_t i = 0; i < n; ++i) o[i] = m[i];
      } else {  // v_prediction
        for (int64_t i = 0; i < n; ++i) o[i] = p.alpha * s[i] - p.sigma * m[i];
      }
    } else {
      if (pred == "epsilon") {
        for (int64_t i = 0; i < n; ++i) o[i] = m[i];
      } else if (pred == "sample") {
        for (int64_t i = 0; i < n; ++i) o[i] = (s[i] - p.alpha * m[i]) / p.sigma;
      } else {  // v_prediction
        for (int64_t i = 0; i < n; ++i) o[i] = p.alpha * m[i] + p.sigma * s[i];
      }
    }
    return out;
  }

  // The scalars both updates share, for a step from `s0` to `t`: hh = -h (x0) or h (noise), h_phi_1 = e^hh - 1,
  // B(h), and b_1, b_2 of the order conditions (b_k = h_phi_k * k! / B(h)).
  struct Coefficients {
    float hh, h_phi_1, b_h, b[kMaxSolverOrder];
  };
  Coefficients coefficients(float h, int order) const {
    Coefficients c{};
    c.hh = config_.predict_x0 ? -h : h;
    c.h_phi_1 = std::expm1(c.hh);
    float h_phi_k = c.h_phi_1 / c.hh - 1.0f;
    c.b_h = bh1_ ? c.hh : std::expm1(c.hh);
    int factorial = 1;
    for (int i = 1; i <= order; ++i) {
      c.b[i - 1] = h_phi_k * static_cast<float>(factorial) / c.b_h;
      factorial *= i + 1;
      h_phi_k = h_phi_k / c.hh - static_cast<float>(1.0 / factorial);
    }
    return c;
  }

  // multistep_uni_p_bh_update: x_t = (sigma_t / sigma_s0) x - alpha_t h_phi_1 m0 - alpha_t B(h) rho D1
  // (x0 form; the noise form uses alpha_t / alpha_s0 and sigma_t), D1 = (m1 - m0) / r1, rho = 1/2 at order 2.
  Tensor predictor_update(const Tensor& x, int step_index) const {
    const int order = this_order_;
    const Point t = point_at(sigmas_f32_[step_index + 1]);
    const Point s0 = point_at(sigmas_f32_[step_index]);
    const float h = t.lambda - s0.lambda;
    const Tensor& m0 = model_outputs_.back();
    float rk = 0.0f;
    const Tensor* m1 = nullptr;
    if (order == 2) {
      const Point s1 = point_at(sigmas_f32_[step_index - 1]);
      rk = (s1.lambda - s0.lambda) / h;
      m1 = &model_outputs_[model_outputs_.size() - 2];
    }
    const Coefficients c = coefficients(h, order);
    const float rho = 0.5f;  // rhos_p for order 2 (no system to solve)
    const float cx = config_.predict_x0 ? t.sigma / s0.sigma : t.alpha / s0.alpha;
    const float scale = config_.predict_x0 ? t.alpha : t.sigma;
    const float cm = scale * c.h_phi_1;
    const float cb = scale * c.b_h;
    const float* xs = x.data();
    const float* p0 = m0.data();
    const float* p1 = m1 ? m1->data() : nullptr;
    Tensor out(x.shape());
    float* o = out.data();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float a = cx * xs[i];
      const float b = cm * p0[i];
      const float x_t = a - b;
      if (p1) {
        const float d1 = (p1[i] - p0[i]) / rk;
        const float pred_res = rho * d1;
        o[i] = x_t - cb * pred_res;
      } else {
        o[i] = x_t;  // pred_res = 0
      }
    }
    return out;
  }

  // multistep_uni_c_bh_update: recomputes the sample the previous step predicted from last_sample_, now with
  // the model output just computed there (model_t): x_t = (sigma_t / sigma_s0) x - alpha_t h_phi_1 m0
  // - alpha_t B(h) (rho_1 D1 + rho_t (model_t - m0)), rho from the order-`this_order_` conditions.
  Tensor corrector_update(const Tensor& model_t, int step_index) const {
    const int order = this_order_;
    const Point t = point_at(sigmas_f32_[step_index]);
    const Point s0 = point_at(sigmas_f32_[step_index - 1]);
    const float h = t.lambda - s0.lambda;
    const Tensor& m0 = model_outputs_.back();  // the previous step's converted output
    float rk = 0.0f;
    const Tensor* m1 = nullptr;
    if (order == 2) {
      const Point s1 = point_at(sigmas_f32_[step_index - 2]);
      rk = (s1.lambda - s0.lambda) / h;
      m1 = &model_outputs_[model_outputs_.size() - 2];
    }
    const Coefficients c = coefficients(h, order);
    float rho_1 = 0.0f, rho_t = 0.5f;  // order 1: rhos_c = [0.5]
    if (order == 2) solve_corrector_system(rk, c.b[0], c.b[1], rho_1, rho_t);
    const float cx = config_.predict_x0 ? t.sigma / s0.sigma : t.alpha / s0.alpha;
    const float scale = config_.predict_x0 ? t.alpha : t.sigma;
    const float cm = scale * c.h_phi_1;
    const float cb = scale * c.b_h;
    const float* xs = last_sample_.data();
    const float* p0 = m0.data();
    const float* p1 = m1 ? m1->data() : nullptr;
    const float* mt = model_t.data();
    Tensor out(last_sample_.shape());
    float* o = out.data();
    for (int64_t i = 0; i < last_sample_.numel(); ++i) {
      const float a = cx * xs[i];
      const float b = cm * p0[i];
      const float x_t = a - b;
      const float d1_t = mt[i] - p0[i];
      float corr = rho_t * d1_t;  // corr_res = 0 at order 1
      if (p1) {
        const float d1 = (p1[i] - p0[i]) / rk;
        const float corr_res = rho_1 * d1;
        corr = corr_res + corr;
      }
      o[i] = x_t - cb * corr;
    }
    return out;
  }

  SchedulerConfig config_;
  bool bh1_ = false;
  std::vector<float> alphas_cumprod_, sigma_table_, log_sigmas_;
  std::vector<float> sigmas_f32_;      // scheduler.sigmas (float32), num_steps + 1
  std::vector<Tensor> model_outputs_;  // the last solver_order converted outputs, oldest first
  int lower_order_nums_ = 0;
  int this_order_ = 0;  // the order of the last predictor, which its corrector uses
  Tensor last_sample_;  // the (corrected) sample the last predictor started from
};

}  // namespace

std::unique_ptr<Scheduler> make_unipc_scheduler(const SchedulerConfig& config) {
  return std::make_unique<UniPcScheduler>(config);
}

}  // namespace sdcpu
