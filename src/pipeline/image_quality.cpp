#include "pipeline/image_quality.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace sdcpu {
namespace {

double displayed(float v) { return (std::clamp(v, -1.0f, 1.0f) + 1.0) / 2; }

void check_same_images(const Tensor& a, const Tensor& b, const char* what) {
  if (a.shape() != b.shape() || a.ndim() != 4 || a.dim(1) != 3)
    throw InvalidArgument(std::string(what) + ": images must be [B, 3, H, W] of one shape, got " +
                          shape_to_string(a.shape()) + " and " + shape_to_string(b.shape()));
}

// scipy.ndimage.gaussian_filter's kernel for sigma 1.5 and truncate 3.5 (radius int(3.5 * 1.5 + 0.5) = 5),
// normalized to sum 1.
std::vector<double> gaussian_window() {
  constexpr int kRadius = 5;
  constexpr double kSigma = 1.5;
  std::vector<double> w(2 * kRadius + 1);
  double sum = 0;
  for (int i = -kRadius; i <= kRadius; ++i) sum += w[i + kRadius] = std::exp(-0.5 * i * i / (kSigma * kSigma));
  for (double& v : w) v /= sum;
  return w;
}

// The window-weighted mean of `plane` (h x w) at every position where the whole window fits: a separable
// filter, rows then columns. Returns (h - 10) x (w - 10) values.
std::vector<double> filter_valid(const std::vector<double>& plane, int64_t h, int64_t w, const std::vector<double>& k) {
  const int64_t n = static_cast<int64_t>(k.size()), oh = h - n + 1, ow = w - n + 1;
  std::vector<double> rows(h * ow), out(oh * ow);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += k[i] * plane[y * w + x + i];
      rows[y * ow + x] = s;
    }
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += k[i] * rows[(y + i) * ow + x];
      out[y * ow + x] = s;
    }
  return out;
}

}  // namespace

double image_psnr_db(const Tensor& a, const Tensor& b) {
  check_same_images(a, b, "psnr");
  double sq = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = displayed(a[i]) - displayed(b[i]);
    sq += d * d;
  }
  const double mse = sq / static_cast<double>(std::max<int64_t>(1, a.numel()));
  return mse == 0 ? INFINITY : 10.0 * std::log10(1.0 / mse);
}

double image_ssim(const Tensor& a, const Tensor& b) {
  check_same_images(a, b, "ssim");
  const std::vector<double> k = gaussian_window();
  const int64_t h = a.dim(2), w = a.dim(3), plane = h * w;
  if (h < static_cast<int64_t>(k.size()) || w < static_cast<int64_t>(k.size()))
    throw InvalidArgument("ssim: images must be at least 11x11");
  constexpr double kC1 = 0.01 * 0.01, kC2 = 0.03 * 0.03;  // (K L)^2 with data range L = 1
  double total = 0;
  int64_t planes = 0;
  for (int64_t p = 0; p < a.dim(0) * a.dim(1); ++p) {
    std::vector<double> x(plane), y(plane), xx(plane), yy(plane), xy(plane);
    for (int64_t i = 0; i < plane; ++i) {
      x[i] = displayed(a[p * plane + i]);
      y[i] = displayed(b[p * plane + i]);
      xx[i] = x[i] * x[i];
      yy[i] = y[i] * y[i];
      xy[i] = x[i] * y[i];
    }
    const auto mx = filter_valid(x, h, w, k), my = filter_valid(y, h, w, k), mxx = filter_valid(xx, h, w, k),
               myy = filter_valid(yy, h, w, k), mxy = filter_valid(xy, h, w, k);
    double sum = 0;
    for (size_t i = 0; i < mx.size(); ++i) {
      const double vx = mxx[i] - mx[i] * mx[i], vy = myy[i] - my[i] * my[i], cxy = mxy[i] - mx[i] * my[i];
      sum += ((2 * mx[i] * my[i] + kC1) * (2 * cxy + kC2)) / ((mx[i] * mx[i] + my[i] * my[i] + kC1) * (vx + vy + kC2));
    }
    total += sum / static_cast<double>(mx.size());
    ++planes;
  }
  return total / static_cast<double>(planes);
}

LatentError latent_error(const Tensor& a, const Tensor& reference) {
  if (a.shape() != reference.shape())
    throw InvalidArgument("latent error: shapes differ: " + shape_to_string(a.shape()) + " and " +
                          shape_to_string(reference.shape()));
  LatentError e;
  double sq = 0, ref_sq = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a[i]) - reference[i];
    e.max_abs = std::max(e.max_abs, std::fabs(d));
    sq += d * d;
    ref_sq += static_cast<double>(reference[i]) * reference[i];
  }
  e.rel_rms = ref_sq > 0 ? std::sqrt(sq / ref_sq) : (sq > 0 ? INFINITY : 0);
  return e;
}

}  // namespace sdcpu
