#!/usr/bin/env python3
"""Goldens for the samplers added after the first seven, made by diffusers' own code on tiny-sd.

What it makes (in OUT_DIR, default tests/goldens/tiny-sd of this repository)
    sampler_<name>_10steps_cfg7.5_folder_scheduler.safetensors, one per sampler below: diffusers 0.27.2's
        StableDiffusionPipeline.__call__ on ../shared/fixtures/tiny-sd (../shared from the repository root) with
        `pipe.scheduler = Cls.from_config(<the folder's PNDMScheduler config>, **what the name fixes)`, prompt
        "a photo of an astronaut riding a horse on mars", negative prompt "", seed 42 (torch.Generator("cpu")),
        128x128, 10 steps, guidance 7.5, output_type "np" -- the settings of make_pipeline_goldens.py. Tensors:
        `image` [1,128,128,3] F32, `latents_per_step` [N,1,4,16,16] F32 (callback_on_step_end after every
        scheduler step; N = len(scheduler.timesteps): 19 for Heun), `timesteps` [N] F64, `sigmas` [N+1] F64
        (all but lcm); metadata as the other pipeline goldens, plus `fp64_rel_diff` (below).
    sampler_schedules.safetensors: `<name>_<spacing>_<steps>_timesteps` and `..._sigmas` for every sampler,
        spacing (leading, linspace, trailing: the folder's config with timestep_spacing replaced) and step count
        (1, 10, 25; lcm: 1, 10, 25 too, under its original_inference_steps = 50), from set_timesteps alone.

Chaos check
    Every pipeline run is repeated in float64 (the modules and the initial noise; noise the schedulers draw
    is drawn in float32 as in the float32 run and cast, so both runs see the same random numbers). The printed
    `fp64_rel_diff` = max|latents32 - latents64| / max|latents64| over all steps says how much the float32
    reference itself depends on rounding: around 1e-6 for a stable run; a large value (DDIM with clip_sample,
    0.8%) means an implementation cannot be checked free-running against it and is checked teacher-forced.

Samplers (sdcpu name: diffusers class and what the name fixes)
    euler_karras:        EulerDiscreteScheduler(use_karras_sigmas=True)
    heun:                HeunDiscreteScheduler()
    dpmpp_2m_sde:        DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2)
    dpmpp_2m_sde_karras: the same with use_karras_sigmas=True
    unipc:               UniPCMultistepScheduler()
    lcm:                 LCMScheduler()
    (dpmpp_sde_karras, DPMSolverSDEScheduler, needs torchsde's BrownianTree, which Debian does not package: no
    golden, and sdcpu does not implement it.)

How to run (reference environment: ../shared/oracle/README.md, ORACLE_DIR outside the repository)
    . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_sampler_goldens.py [OUT_DIR]

Versions expected: diffusers 0.27.2 (b69fd990a), transformers 4.30.2, Debian's torch 1.13.1 (reports 1.13.0a0),
numpy 1.24; torch.set_num_threads(2). The output is byte-for-byte reproducible.
"""
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, LCMScheduler,
                       StableDiffusionPipeline, UniPCMultistepScheduler)
import diffusers.schedulers.scheduling_lcm as scheduling_lcm
import diffusers.schedulers.scheduling_dpmsolver_multistep as scheduling_dpmsolver_multistep

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pipeline_goldens import MODEL_DIR, NEGATIVE_PROMPT, PROMPT, REPO, SEED, SIZE, write_golden  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "tiny-sd")
MADE_BY = "tests/oracle/make_sampler_goldens.py: StableDiffusionPipeline.__call__ (diffusers 0.27.2)"
STEPS, GUIDANCE = 10, 7.5

# sdcpu name -> (scheduler class, what the name fixes: from_config kwargs)
SAMPLERS = {
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde_karras": (DPMSolverMultistepScheduler,
                            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
}
NO_SIGMAS = {"lcm"}


def float32_noise(randn_tensor):
    """randn_tensor that always draws float32 and casts: the float64 run sees the float32 run's random numbers."""
    def draw(shape, generator=None, device=None, dtype=None, layout=None):
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32, layout=layout).to(dtype)
    return draw


def run_pipeline(pipe, dtype):
    """One pipeline call in `dtype`: (latents per step [N,1,4,16,16] float64, image, timesteps, sigmas or None)."""
    latents_per_step = []

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        latents_per_step.append(callback_kwargs["latents"].detach().clone().to(torch.float64))
        return callback_kwargs

    generator = torch.Generator("cpu").manual_seed(SEED)
    latents = None
    if dtype != torch.float32:  # the float32 run's initial noise (prepare_latents scales it by init_noise_sigma)
        latents = torch.randn([1, 4, SIZE // 8, SIZE // 8], generator=generator, dtype=torch.float32).to(dtype)
    out = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
               guidance_scale=GUIDANCE, generator=generator, latents=latents, output_type="np",
               callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    sigmas = getattr(pipe.scheduler, "sigmas", None)
    return (torch.stack(latents_per_step).numpy(), np.asarray(out.images), pipe.scheduler.timesteps.to(torch.float64).numpy(),
            None if sigmas is None else sigmas.to(torch.float64).numpy())


def schedules(base_cfg):
    """Every sampler's timesteps and sigmas for each spacing and step count, from set_timesteps alone."""
    tensors = {}
    for name, (cls, fixed) in SAMPLERS.items():
        for spacing in ("leading", "linspace", "trailing"):
            for steps in (1, 10, 25):
                s = cls.from_config({**base_cfg, "timestep_spacing": spacing}, **fixed)
                s.set_timesteps(steps)
                key = f"{name}_{spacing}_{steps}"
                tensors[key + "_timesteps"] = s.timesteps.to(torch.float64).numpy()
                if name not in NO_SIGMAS:
                    tensors[key + "_sigmas"] = s.sigmas.to(torch.float64).numpy()
    return tensors


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"threads {torch.get_num_threads()}")
    for module in (scheduling_lcm, scheduling_dpmsolver_multistep):
        module.randn_tensor = float32_noise(module.randn_tensor)

    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base_cfg = dict(pipe.scheduler.config)  # the PNDMScheduler read from scheduler/scheduler_config.json
    pipe64 = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None, requires_safety_checker=False,
                                                     torch_dtype=torch.float32).to(torch.float64)
    pipe64.set_progress_bar_config(disable=True)

    print(f"\n{'sampler':<20} {'entries':>7} {'max|latents|':>12} {'fp64_rel_diff':>13} {'max|dimg| 32-64':>16}  file")
    for name, (cls, fixed) in SAMPLERS.items():
        pipe.scheduler = cls.from_config(base_cfg, **fixed)
        lat32, img32, timesteps, sigmas = run_pipeline(pipe, torch.float32)
        pipe64.scheduler = cls.from_config(base_cfg, **fixed)
        lat64, img64, _, _ = run_pipeline(pipe64, torch.float64)
        scale = float(np.abs(lat64).max())
        rel = float(np.abs(lat32 - lat64).max()) / scale
        built_as = f"{cls.__name__}.from_config(PNDMScheduler.from_pretrained('<model>/scheduler').config" + \
            "".join(f", {k}={v!r}" for k, v in fixed.items()) + ")"
        tensors = {"image": img32.astype(np.float32), "latents_per_step": lat32.astype(np.float32),
                   "timesteps": timesteps}
        if sigmas is not None:
            tensors["sigmas"] = sigmas
        meta = {"prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "seed": str(SEED), "steps": str(STEPS),
                "guidance_scale": str(float(GUIDANCE)), "width": str(SIZE), "height": str(SIZE), "scheduler": name,
                "scheduler_built_as": built_as, "made_by": MADE_BY, "fp64_rel_diff": f"{rel:.3g}"}
        path = os.path.join(out_dir, f"sampler_{name}_{STEPS}steps_cfg{GUIDANCE:g}_folder_scheduler.safetensors")
        write_golden(path, tensors, meta)
        print(f"{name:<20} {len(timesteps):>7} {scale:>12.4g} {rel:>13.3g} "
              f"{float(np.abs(img32 - img64).max()):>16.3g}  {os.path.basename(path)} {os.path.getsize(path)} bytes")

    path = os.path.join(out_dir, "sampler_schedules.safetensors")
    write_golden(path, schedules(base_cfg),
                 {"made_by": MADE_BY.replace("StableDiffusionPipeline.__call__", "set_timesteps"),
                  "base_config": "the folder's PNDMScheduler config with timestep_spacing replaced"})
    print(f"{os.path.basename(path)} {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
