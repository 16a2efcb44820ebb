#!/usr/bin/env python3
"""Goldens for step caching (DeepCache, Ma et al. 2023; issue 13 item 2), made by the authors' own helper.

What it makes (in OUT_DIR, default tests/goldens/tiny-sd of this repository)
    deepcache_<sampler>_interval<N>_branch<B>_10steps_cfg7.5.safetensors: diffusers 0.27.2's
        StableDiffusionPipeline.__call__ on ../shared/fixtures/tiny-sd with DeepCache's `DeepCacheSDHelper`
        enabled (`set_params(cache_interval=N, cache_branch_id=B)`, uniform schedule), the prompt, seed, size, steps
        and guidance of make_pipeline_goldens.py, and `Cls.from_config(<the folder's scheduler config>)`. Tensors:
        `image` [1,128,128,3] F32, `latents_per_step` [10,1,4,16,16] F32, `timesteps` [10] F64, and
        `full_step` [10] F32 (1 where the whole UNet ran, 0 where the helper served the deep features from its
        cache); metadata as the other pipeline goldens plus `cache_interval` and `cache_branch_id`.
    Also, for reference, the same run with cache_interval 1 must equal the plain pipeline (checked here: printed).

DeepCacheSDHelper comes from a checkout of github.com/horseee/DeepCache (DeepCache/extension/deepcache.py; it is
imported from there, not copied): pass its root as DEEPCACHE_DIR.

How to run (reference environment: ../shared/oracle/README.md)
    . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_deepcache_goldens.py DEEPCACHE_DIR [OUT_DIR]
"""
import importlib.util
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pipeline_goldens import MODEL_DIR, NEGATIVE_PROMPT, PROMPT, REPO, SEED, SIZE, write_golden  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "tiny-sd")
MADE_BY = "tests/oracle/make_deepcache_goldens.py: StableDiffusionPipeline.__call__ + DeepCacheSDHelper"
STEPS, GUIDANCE = 10, 7.5
SAMPLERS = {"dpmpp_2m": DPMSolverMultistepScheduler, "euler_a": EulerAncestralDiscreteScheduler}
# (sampler, cache_interval, cache_branch_id): the paper's usual shallow branch at two intervals, and a deeper one.
RUNS = [("dpmpp_2m", 3, 0), ("dpmpp_2m", 2, 1), ("euler_a", 3, 0)]


def load_helper(deepcache_dir):
    path = os.path.join(deepcache_dir, "DeepCache", "extension", "deepcache.py")
    spec = importlib.util.spec_from_file_location("deepcache_extension", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DeepCacheSDHelper


def run(helper_cls, sampler, interval, branch):
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = SAMPLERS[sampler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    helper = None
    if interval is not None:
        helper = helper_cls(pipe=pipe)
        helper.set_params(cache_interval=interval, cache_branch_id=branch)
        helper.enable()
    # Which steps ran the whole UNet: mid_block's forward is called on full steps only (the helper serves the
    # cached output otherwise), so count its real calls per UNet call.
    full, mid_calls = [], [0]
    original_mid = pipe.unet.mid_block.forward if helper is None else helper.function_dict[("mid", "mid_block", 0, 0)]

    def counting_mid(*args, **kwargs):
        mid_calls[0] += 1
        return original_mid(*args, **kwargs)

    if helper is not None:
        helper.function_dict[("mid", "mid_block", 0, 0)] = counting_mid
    latents = []

    def on_step_end(p, i, t, kwargs):
        latents.append(kwargs["latents"].detach().clone())
        full.append(1 if mid_calls[0] > 0 else 0)
        mid_calls[0] = 0
        return kwargs

    out = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               height=SIZE, width=SIZE, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
               callback_on_step_end=on_step_end)
    if helper is not None:
        helper.disable()
    return (out.images.astype(np.float32), torch.stack(latents).numpy().astype(np.float32),
            pipe.scheduler.timesteps.numpy().astype(np.float64), np.array(full, dtype=np.float32))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    torch.set_num_threads(2)
    helper_cls = load_helper(sys.argv[1])
    out_dir = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    for sampler in SAMPLERS:
        plain = run(helper_cls, sampler, None, 0)
        one = run(helper_cls, sampler, 1, 0)
        print(f"{sampler}: interval 1 vs plain pipeline: max |d latents| "
              f"{np.abs(one[1] - plain[1]).max():.3g}, full steps {one[3].tolist()}")
    for sampler, interval, branch in RUNS:
        image, latents, timesteps, full = run(helper_cls, sampler, interval, branch)
        plain = run(helper_cls, sampler, None, 0)
        name = f"deepcache_{sampler}_interval{interval}_branch{branch}_{STEPS}steps_cfg{GUIDANCE:g}.safetensors"
        meta = {"made_by": MADE_BY, "diffusers": diffusers.__version__, "torch": torch.__version__,
                "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "seed": str(SEED), "width": str(SIZE),
                "height": str(SIZE), "steps": str(STEPS), "guidance_scale": str(GUIDANCE), "sampler": sampler,
                "cache_interval": str(interval), "cache_branch_id": str(branch)}
        write_golden(os.path.join(out_dir, name), {"image": image, "latents_per_step": latents,
                                                   "timesteps": timesteps, "full_step": full}, meta)
        psnr = 10 * np.log10(1.0 / max(np.mean((image - plain[0]) ** 2), 1e-20))
        print(f"{name}: full steps {full.tolist()}, image PSNR against the uncached pipeline {psnr:.2f} dB")


if __name__ == "__main__":
    main()
