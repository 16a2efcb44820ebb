#!/usr/bin/python3
"""Goldens for sdcpu's image quality metrics (src/pipeline/image_quality.h), computed by scikit-image itself.

Writes tests/goldens/quality/metrics.json: pairs of small images as sdcpu's VAE outputs hold them ([B, 3, H, W] in
[-1, 1], some values outside to check the clamp), and for each pair scikit-image 0.19's PSNR and SSIM of the images
as displayed (clamped to [-1, 1], mapped to [0, 1]):
  peak_signal_noise_ratio(ref, img, data_range=1)
  structural_similarity(ref, img, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                        data_range=1), averaged over the images of the batch.
Needs only Debian's python3-numpy and python3-skimage:  /usr/bin/python3 tests/oracle/make_quality_goldens.py [OUT]
"""
import json
import os
import sys

import numpy as np
import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def displayed(x):  # [3, H, W] in about [-1, 1] -> [H, W, 3] in [0, 1], as the C++ does
    return ((np.clip(x, -1.0, 1.0) + 1.0) / 2.0).astype(np.float64).transpose(1, 2, 0)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "goldens", "quality")
    os.makedirs(out, exist_ok=True)
    rng = np.random.RandomState(0)
    cases = []
    # A smooth image and versions of it: slight noise, strong noise, a shift, blur-like averaging, and its negative.
    b, h, w = 2, 16, 13
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    ref = np.round(np.stack([np.stack([np.sin(3 * xx + k + c) * np.cos(2 * yy - c) * 1.1 for c in range(3)])
                             for k in range(b)]), 5).astype(np.float32)
    variants = {
        "slight_noise": ref + 0.01 * rng.randn(*ref.shape).astype(np.float32),
        "strong_noise": ref + 0.3 * rng.randn(*ref.shape).astype(np.float32),
        "shifted": ref + np.float32(0.2),
        "smoothed": (ref + np.roll(ref, 1, axis=3) + np.roll(ref, 1, axis=2)) / np.float32(3),
        "negative": -ref,
    }
    for name, img in variants.items():
        img = np.round(img, 5).astype(np.float32)  # as stored: the golden is computed from what the test reads
        psnr = peak_signal_noise_ratio(np.stack([displayed(r) for r in ref]), np.stack([displayed(i) for i in img]),
                                       data_range=1)
        ssim = np.mean([structural_similarity(displayed(r), displayed(i), channel_axis=-1, gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False, data_range=1)
                        for r, i in zip(ref, img)])
        cases.append({"name": name, "image": [round(float(v), 5) for v in img.ravel()], "psnr_db": float(psnr),
                      "ssim": float(ssim)})
        print(f"{name:14s} psnr {psnr:8.4f} dB  ssim {ssim:.6f}")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"made_by": f"tests/oracle/make_quality_goldens.py, scikit-image {skimage.__version__}",
                   "shape": list(ref.shape), "reference": [round(float(v), 5) for v in ref.ravel()],
                   "cases": cases}, f)


if __name__ == "__main__":
    main()
