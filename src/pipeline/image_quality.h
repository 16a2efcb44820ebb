// How far an image is from a reference: PSNR and SSIM of decoded images, and the error of final latents. The
// quality half of `sdcpu bench --quality` (README, "Quality against fp32"): every approximation (bf16, and the
// step caching, token merging and int8 modes to come) is judged by these against the fp32 image of the same seed.
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// Images are VAE outputs [B, 3, H, W] in about [-1, 1]; both functions take them as displayed: clamped to
// [-1, 1] and mapped to [0, 1].

// Peak signal-to-noise ratio in dB (peak 1) of `a` against the reference `b`; infinite when they are equal.
double image_psnr_db(const Tensor& a, const Tensor& b);

// Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality assessment: from error visibility
// to structural similarity"), as scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
// use_sample_covariance=False, data_range=1) computes it: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
// K2 = 0.03, the mean over the positions where the whole window fits, each channel on its own, then averaged
// over channels and images. 1 for equal images. Needs H, W >= 11.
double image_ssim(const Tensor& a, const Tensor& b);

struct LatentError {
  double max_abs = 0;  // largest |a - b|
  double rel_rms = 0;  // rms(a - b) / rms(b): comparable across models and sizes
};
LatentError latent_error(const Tensor& a, const Tensor& reference);

}  // namespace sdcpu
