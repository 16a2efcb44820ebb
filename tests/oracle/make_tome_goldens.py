"""Goldens for token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023) made by tomesd's own code.

Runs tomesd's merge.bipartite_soft_matching_random2d (github.com/dbolya/tomesd, commit 27a14a3, the file
tomesd/merge.py read unchanged from a git mirror) on small random [B, N, C] token tensors and writes, per case,
tests/goldens/tome/<case>.safetensors with:
  metric      [B, N, C]  what tomesd matches on (ToMeBlock passes the block's input hidden_states)
  x           [B, N, C]  what is merged (ToMeBlock merges norm1(hidden_states))
  merged      [B, N - r, C]  merge(x, mode="mean")
  y           [B, N - r, C]  a random tensor in the merged shape (stands in for attn1's output)
  unmerged    [B, N, C]  unmerge(y)
  rand_idx    [hsy * wsx]  (as F32: write_golden writes floats) the destination choice torch.randint drew, or zeros for no_rand
and, for cases drawing twice from one generator (two transformer blocks), rand_idx_2 / merged_2 / unmerged_2.
The generator is torch.Generator("cpu").manual_seed(seed), as sdcpu seeds its ToMe generator (see
src/nets/token_merging.h for why).

It also runs tomesd.apply_patch on the tiny UNet (unet_*.safetensors) and on diffusers' StableDiffusionPipeline
(pipeline_tome_*.safetensors); see unet_goldens() and pipeline_goldens().

Run: . /work/oracle-env/env.sh && /usr/bin/python3 tests/oracle/make_tome_goldens.py [OUT_DIR]
TOMESD_GIT (default /work/.mirror/dbolya+tomesd/repo) is a git directory holding that commit.
"""
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pipeline_goldens import write_golden  # noqa: E402

TOMESD_COMMIT = "27a14a372beecaa85c101fb588631643f379b8ce"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tomesd():
    """tomesd's package (merge.py, patch.py, utils.py, __init__.py) at TOMESD_COMMIT, imported unchanged."""
    git_dir = os.environ.get("TOMESD_GIT", "/work/.mirror/dbolya+tomesd/repo")
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "tomesd"))
    for name in ("__init__.py", "merge.py", "patch.py", "utils.py"):
        source = subprocess.run(["git", "--git-dir", git_dir, "show", "%s:tomesd/%s" % (TOMESD_COMMIT, name)],
                                check=True, capture_output=True).stdout
        with open(os.path.join(root, "tomesd", name), "wb") as f:
            f.write(source)
    sys.path.insert(0, root)
    return importlib.import_module("tomesd")


# name, batch, h, w, channels, sx, sy, ratio, no_rand, seed, draws
CASES = [
    ("b2_8x8_r0.5", 2, 8, 8, 16, 2, 2, 0.5, False, 0, 2),
    ("b2_7x9_r0.3", 2, 7, 9, 12, 2, 2, 0.3, False, 1, 1),
    ("b1_8x8_norand_r0.5", 1, 8, 8, 16, 2, 2, 0.5, True, 2, 1),
    ("b2_6x6_sx3_r0.95_clipped", 2, 6, 6, 8, 3, 3, 0.95, False, 3, 1),
    ("b4_16x16_r0.5", 4, 16, 16, 8, 2, 2, 0.5, False, 4, 1),
]


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "goldens", "tome")
    os.makedirs(out_dir, exist_ok=True)
    tomesd = load_tomesd()
    merge = tomesd.merge
    for name, b, h, w, c, sx, sy, ratio, no_rand, seed, draws in CASES:
        data = torch.Generator().manual_seed(1000 + seed)  # the test tensors' own stream
        metric = torch.randn(b, h * w, c, generator=data)
        x = torch.randn(b, h * w, c, generator=data)
        r = int(h * w * ratio)  # compute_merge: r = int(x.shape[1] * ratio)
        generator = torch.Generator("cpu").manual_seed(seed)
        tensors = {"metric": metric.numpy(), "x": x.numpy()}
        for draw in range(draws):
            suffix = "" if draw == 0 else "_%d" % (draw + 1)
            # The draw tomesd makes inside bipartite_soft_matching_random2d, replayed on a copy of the generator.
            hsy, wsx = h // sy, w // sx
            if no_rand:
                rand_idx = torch.zeros(hsy * wsx, dtype=torch.int64)
            else:
                replay = torch.Generator("cpu").set_state(generator.get_state())
                rand_idx = torch.randint(sy * sx, size=(hsy, wsx, 1), generator=replay).flatten()
            m, u = merge.bipartite_soft_matching_random2d(metric, w, h, sx, sy, r, no_rand=no_rand,
                                                          generator=generator)
            merged = m(x, mode="mean")
            y = torch.randn(merged.shape, generator=data)
            unmerged = u(y)
            tensors.update({"rand_idx" + suffix: rand_idx.numpy().astype(np.float32), "merged" + suffix: merged.numpy(),
                            "y" + suffix: y.numpy(), "unmerged" + suffix: unmerged.numpy()})
        meta = {"made_by": "tests/oracle/make_tome_goldens.py (tomesd %s merge.py, torch %s)"
                % (TOMESD_COMMIT[:7], torch.__version__),
                "batch": str(b), "h": str(h), "w": str(w), "sx": str(sx), "sy": str(sy), "r": str(r),
                "no_rand": str(int(no_rand)), "seed": str(seed), "draws": str(draws)}
        path = os.path.join(out_dir, name + ".safetensors")
        write_golden(path, tensors, meta)
        print("%-28s N=%4d r=%4d merged %s  %6d bytes" % (name, h * w, r, tuple(merged.shape), os.path.getsize(path)))


    unet_goldens(tomesd, out_dir)
    pipeline_goldens(tomesd, out_dir)


# name, ratio, max_downsample, batch rows of the UNet golden's inputs, seed, calls
UNET_CASES = [
    ("unet_r0.5_md1", 0.5, 1, (0, 2), 0, 2),
    ("unet_r0.3_md2", 0.3, 2, (0, 2), 1, 1),
    ("unet_r0.5_md1_batch1", 0.5, 1, (1, 2), 2, 1),
]


def unet_goldens(tomesd, out_dir):
    """tomesd.apply_patch on the tiny UNet (../shared/fixtures/tiny-sd), run on the shared UNet golden's inputs.

    tomesd forks torch's default CPU generator at the first merging block (utils.init_generator) and keeps drawing
    from the fork, call after call: torch.manual_seed(seed) just before the first call makes that fork
    torch.Generator().manual_seed(seed), the generator sdcpu seeds. Later calls continue its stream."""
    from diffusers import UNet2DConditionModel
    from make_pipeline_goldens import MODEL_DIR, read_golden

    inputs, _ = read_golden(os.path.join(os.path.dirname(MODEL_DIR), "goldens", "tiny-sd", "unet.safetensors"))
    unet = UNet2DConditionModel.from_pretrained(MODEL_DIR, subfolder="unet").eval()
    for name, ratio, max_downsample, (first, last), seed, calls in UNET_CASES:
        tomesd.apply_patch(unet, ratio=ratio, max_downsample=max_downsample)
        sample = torch.from_numpy(inputs["sample"][first:last])
        states = torch.from_numpy(inputs["encoder_hidden_states"][first:last])
        timestep = torch.from_numpy(inputs["timestep"])
        tensors = {"sample": sample.numpy(), "encoder_hidden_states": states.numpy(),
                   "timestep": timestep.numpy().astype(np.float32)}
        torch.manual_seed(seed)
        with torch.no_grad():
            for call in range(calls):
                tensors["out_%d" % (call + 1)] = unet(sample, timestep, encoder_hidden_states=states).sample.numpy()
            tomesd.remove_patch(unet)
            plain = unet(sample, timestep, encoder_hidden_states=states).sample.numpy()
        meta = {"made_by": "tests/oracle/make_tome_goldens.py (tomesd %s apply_patch, torch %s)"
                % (TOMESD_COMMIT[:7], torch.__version__),
                "ratio": repr(ratio), "max_downsample": str(max_downsample), "seed": str(seed), "calls": str(calls)}
        path = os.path.join(out_dir, name + ".safetensors")
        write_golden(path, tensors, meta)
        print("%-28s |out_1 - plain| max %.3g, scale %.3g  %6d bytes"
              % (name, np.abs(tensors["out_1"] - plain).max(), np.abs(plain).max(), os.path.getsize(path)))


PIPELINE_RUNS = [("dpmpp_2m", 0.5, 1), ("euler_a", 0.5, 1), ("dpmpp_2m", 0.6, 2)]
STEPS, GUIDANCE = 10, 7.5


def pipeline_goldens(tomesd, out_dir):
    """diffusers' StableDiffusionPipeline on the tiny model with tomesd.apply_patch(pipe, ratio, max_downsample),
    torch.manual_seed(SEED) just before the call (the fork tomesd makes is then manual_seed(SEED)) and
    generator=torch.Generator("cpu").manual_seed(SEED) for the noise, as sdcpu does for seed SEED."""
    import diffusers
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline
    from make_pipeline_goldens import MODEL_DIR, NEGATIVE_PROMPT, PROMPT, SEED, SIZE

    samplers = {"dpmpp_2m": DPMSolverMultistepScheduler, "euler_a": EulerAncestralDiscreteScheduler}
    for sampler, ratio, max_downsample in PIPELINE_RUNS:
        results = {}
        for tome in (False, True):
            pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None,
                                                           requires_safety_checker=False)
            pipe.scheduler = samplers[sampler].from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            if tome:
                tomesd.apply_patch(pipe, ratio=ratio, max_downsample=max_downsample)
            latents = []

            def on_step_end(p, i, t, kwargs):
                latents.append(kwargs["latents"].detach().clone())
                return kwargs

            torch.manual_seed(SEED)
            out = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                       height=SIZE, width=SIZE, generator=torch.Generator("cpu").manual_seed(SEED),
                       output_type="np", callback_on_step_end=on_step_end)
            results[tome] = (out.images.astype(np.float32), torch.stack(latents).numpy().astype(np.float32))
        image, latents = results[True]
        name = "pipeline_tome_r%g_md%d_%s_%dsteps_cfg%g" % (ratio, max_downsample, sampler, STEPS, GUIDANCE)
        meta = {"made_by": "tests/oracle/make_tome_goldens.py (tomesd %s apply_patch)" % TOMESD_COMMIT[:7],
                "diffusers": diffusers.__version__, "torch": torch.__version__, "prompt": PROMPT,
                "negative_prompt": NEGATIVE_PROMPT, "seed": str(SEED), "width": str(SIZE), "height": str(SIZE),
                "steps": str(STEPS), "guidance_scale": str(GUIDANCE), "sampler": sampler, "tome_ratio": repr(ratio),
                "tome_max_downsample": str(max_downsample)}
        path = os.path.join(out_dir, name + ".safetensors")
        write_golden(path, {"image": image, "latents_per_step": latents}, meta)
        psnr = 10 * np.log10(1.0 / max(np.mean((image - results[False][0]) ** 2), 1e-20))
        print("%s: image PSNR against the pipeline without ToMe %.2f dB, %d bytes" % (name, psnr,
                                                                                        os.path.getsize(path)))


if __name__ == "__main__":
    main()
