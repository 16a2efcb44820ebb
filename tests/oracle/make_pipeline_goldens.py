#!/usr/bin/env python3
"""Pipeline goldens for tiny-sd made by diffusers' own StableDiffusionPipeline.__call__.

What it makes
    `<shared golden stem>_pipeline_call.safetensors` in OUT_DIR (default tests/goldens/tiny-sd of this
    repository), for the tiny model ../shared/fixtures/tiny-sd (../shared from the repository root), in
    two variants:
      * folder       the folder as is; each sampler is `Cls.from_config(pipe.scheduler.config)` where
                     pipe.scheduler is the PNDMScheduler that from_pretrained read from scheduler_config.json;
      * single file  the same modules with every unet/vae/text_encoder parameter rounded to fp16 and back
                     (= the weights of ../shared/fixtures/tiny-sd.safetensors); each sampler is
                     `Cls.from_config(DDIMScheduler.from_config(<diffusers single-file default config>).config)`,
                     the scheduler `from_single_file` gives an SD 1.x checkpoint.
    Samplers pndm, ddim, euler, euler_a, lms, dpmpp_2m, dpmpp_2m_karras at 10 steps / guidance 7.5, and
    dpmpp_2m at 20 steps / guidance 1.0. Prompt "a photo of an astronaut riding a horse on mars", negative
    prompt "", seed 42 (torch.Generator("cpu")), 128x128. Each file holds `image` [1,128,128,3] F32 (the
    pipeline's output_type="np" image), `latents_per_step` [N,1,4,16,16] F32 (callback_on_step_end, after
    each scheduler step), `timesteps` [N] F64 and, for the sigma-based samplers, `sigmas` [N+1] F64, plus the
    settings in `__metadata__` -- the format of the shared goldens in ../shared/fixtures/goldens/tiny-sd.

    Every run is compared with the shared golden of the same stem (a table is printed), and only the files
    that a shared golden does not already cover are kept (see `keep_file`). Where a run differs and
    init_noise_sigma changed with set_timesteps, the same call is repeated starting from
    noise * init_noise_sigma-before-set_timesteps; it must give the shared golden back (column pre-scaled).

Why these goldens exist
    The shared goldens were made by a hand-written loop that multiplies the initial noise by
    `scheduler.init_noise_sigma` BEFORE `set_timesteps`. The real `StableDiffusionPipeline.__call__` of
    diffusers 0.27.2 calls `retrieve_timesteps` (set_timesteps) first and `prepare_latents` (the
    multiplication) after. For Euler, Euler a and LMS with "leading" timestep spacing init_noise_sigma changes
    with set_timesteps (sqrt(max sigma^2 + 1) of the 1000-step training table, 14.6488, before; of the
    inference sigmas, 8.4501, after), so what a diffusers user gets differs from those shared goldens.
    PNDM, DDIM and DPM++ 2M (init_noise_sigma 1 at all times) are not affected.

How to run (reference environment: ../shared/oracle/README.md, ORACLE_DIR outside the repository)
    . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_pipeline_goldens.py [OUT_DIR]

Versions expected: diffusers 0.27.2 (b69fd990a), transformers 4.30.2 (66fd3a8d6), huggingface_hub 0.21.4,
Debian's torch 1.13.1 (reports 1.13.0a0) with libopenblas0-openmp, numpy 1.24; torch.set_num_threads(2).
"""
import copy
import json
import os
import struct
import sys

import numpy as np
import torch

import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline)
from diffusers.loaders import single_file_utils

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("SDCPU_SHARED", os.path.join(REPO, "..", "shared"))
MODEL_DIR = os.path.join(SHARED, "fixtures", "tiny-sd")
SHARED_GOLDENS = os.path.join(SHARED, "fixtures", "goldens", "tiny-sd")
DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "tiny-sd")

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE_PROMPT = ""
SEED = 42
SIZE = 128
MADE_BY = "tests/oracle/make_pipeline_goldens.py: StableDiffusionPipeline.__call__ (diffusers 0.27.2)"

# sdcpu name -> (scheduler class, extra from_config kwargs)
SAMPLERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}
HAS_SIGMAS = {"euler", "euler_a", "lms", "dpmpp_2m", "dpmpp_2m_karras"}
# (sampler, steps, guidance scale)
RUNS = [(s, 10, 7.5) for s in SAMPLERS] + [("dpmpp_2m", 20, 1.0)]

# Agreement with a shared golden is judged on the per-step latents, relative to their largest magnitude (on
# these random weights the latents grow to about 30, where float32 rounding alone -- e.g. transformers'
# CLIPTextModel vs the openai/CLIP text transformer the shared goldens used, 3e-6 apart -- leaves ~3e-5).
REL_TOL = 1e-5
# DDIM with clip_sample=True (the folder config has no clip_sample key, DDIM's default is True) amplifies
# rounding about 3x per step: the same pipeline call in float32 and float64 ends 1.5e-2 apart (0.8% of the
# latents' scale). Such a run is only checked loosely; see ../shared/oracle/README.md section 4.
CHAOTIC_REL_TOL = 5e-2


# ----------------------------------------------------------------------------------------------------------
# safetensors in the layout of the shared goldens: header JSON with __metadata__ first, then the tensors by
# name, data in that order, header padded with spaces to a multiple of 8.
_DT = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}
_NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def write_golden(path, tensors, metadata):
    header = {"__metadata__": dict(metadata)}
    chunks, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DT[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(chunks))


def read_golden(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = np.dtype(_NP[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(buf[8 + n + b:8 + n + e], dtype=dt).reshape(info["shape"]).astype(dt.newbyteorder("="))
    return out, meta


# ----------------------------------------------------------------------------------------------------------
def single_file_base_config():
    """diffusers 0.27.2's scheduler config for an SD 1.x single file (create_scheduler_from_ldm)."""
    cfg = copy.deepcopy(single_file_utils.SCHEDULER_DEFAULT_CONFIG)  # never mutate the module's global
    cfg.update(num_train_timesteps=1000, prediction_type="epsilon", beta_start=0.00085, beta_end=0.012,
               beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    return cfg


def load_variants():
    """[(variant, pipe, base scheduler config, stem suffix, how the base scheduler was built)]"""
    folder = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None, requires_safety_checker=False,
                                                     torch_dtype=torch.float32)
    folder_cfg = folder.scheduler.config  # the PNDMScheduler read from scheduler/scheduler_config.json

    single = StableDiffusionPipeline.from_pretrained(MODEL_DIR, safety_checker=None, requires_safety_checker=False,
                                                     torch_dtype=torch.float32)
    with torch.no_grad():
        for module in (single.unet, single.vae, single.text_encoder):
            for p in module.parameters():
                p.copy_(p.half().float())
    single_cfg = DDIMScheduler.from_config(single_file_base_config()).config

    return [
        ("folder", folder, folder_cfg, "_folder_scheduler",
         "PNDMScheduler.from_pretrained('<model>/scheduler').config"),
        ("single_file", single, single_cfg, "_fp16weights_single_file_scheduler",
         "DDIMScheduler.from_config(diffusers single-file default scheduler config).config"),
    ]


def run_pipeline(pipe, sampler, steps, guidance, init_scale=None):
    """One pipeline call. With init_scale, the initial noise is drawn from the generator here and passed in as
    `latents` multiplied by init_scale / (the pipeline's init_noise_sigma), so that the pipeline starts from
    noise * init_scale; the generator then continues exactly as in a plain call (euler_a draws from it)."""
    latents_per_step = []

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        latents_per_step.append(callback_kwargs["latents"].detach().clone())
        return callback_kwargs

    generator = torch.Generator("cpu").manual_seed(SEED)
    latents = None
    if init_scale is not None:
        noise = torch.randn([1, 4, SIZE // 8, SIZE // 8], generator=generator, dtype=torch.float32)
        probe = copy.deepcopy(pipe.scheduler)
        probe.set_timesteps(steps)
        latents = noise * (init_scale / float(probe.init_noise_sigma))
    out = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, height=SIZE, width=SIZE, num_inference_steps=steps,
               guidance_scale=guidance, generator=generator, latents=latents, output_type="np",
               callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    tensors = {
        "image": np.asarray(out.images, dtype=np.float32),
        "latents_per_step": torch.stack(latents_per_step).numpy().astype(np.float32),
        "timesteps": pipe.scheduler.timesteps.to(torch.float64).numpy(),
    }
    if sampler in HAS_SIGMAS:
        tensors["sigmas"] = pipe.scheduler.sigmas.to(torch.float64).numpy()
    return tensors


def shared_reference(variant, sampler, stem):
    """Path of the shared golden this run is checked against, or None where there is none."""
    if variant == "folder" and sampler in ("pndm", "ddim"):
        # no _folder_scheduler golden for these two: their plain golden was built from the folder's config
        stem = stem[:-len("_folder_scheduler")]
    p = os.path.join(SHARED_GOLDENS, stem + ".safetensors")
    return p if os.path.exists(p) else None


def compare(mine, ref):
    """max|d latents|, max|ref latents|, max|d image|, timesteps identical?, sigmas identical? (None: no sigmas)"""
    lat_a, lat_b = mine["latents_per_step"], ref["latents_per_step"]
    lat = float(np.abs(lat_a - lat_b).max()) if lat_a.shape == lat_b.shape else float("inf")
    scale = float(np.abs(lat_b).max())
    img = float(np.abs(mine["image"] - ref["image"]).max())
    ts = mine["timesteps"].shape == ref["timesteps"].shape and bool(np.array_equal(mine["timesteps"], ref["timesteps"]))
    if "sigmas" in mine or "sigmas" in ref:
        sg = ("sigmas" in mine and "sigmas" in ref and mine["sigmas"].shape == ref["sigmas"].shape
              and bool(np.array_equal(mine["sigmas"], ref["sigmas"])))
    else:
        sg = None
    return lat, scale, img, ts, sg


def is_chaotic(scheduler):
    return isinstance(scheduler, DDIMScheduler) and bool(scheduler.config.clip_sample)


def keep_file(ref_path, latent_diff, ref_scale, chaotic):
    """The keep rule: write a run's file only where it adds something to the shared goldens, i.e.
    - no shared golden covers the run (here: the folder-scheduler cfg-1 run), or
    - the real pipeline call disagrees with that golden's per-step latents by more than rounding:
      REL_TOL of their scale (CHAOTIC_REL_TOL for DDIM with clip_sample=True).
      Expected: euler, euler_a and lms of both variants, through the init_noise_sigma ordering.
    A run that agrees is the shared golden over again and is not written (an old copy is removed)."""
    if ref_path is None:
        return True
    return latent_diff > (CHAOTIC_REL_TOL if chaotic else REL_TOL) * ref_scale


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    rows = []
    for variant, pipe, base_cfg, suffix, base_desc in load_variants():
        pipe.set_progress_bar_config(disable=True)
        for sampler, steps, guidance in RUNS:
            cls, kwargs = SAMPLERS[sampler]
            pipe.scheduler = cls.from_config(base_cfg, **kwargs)
            sigma_before = float(pipe.scheduler.init_noise_sigma)  # what the shared goldens' loop used
            built_as = f"{cls.__name__}.from_config({base_desc}" + \
                "".join(f", {k}={v!r}" for k, v in kwargs.items()) + ")"
            g = f"{guidance:g}"
            stem = f"pipeline_{sampler}_{steps}steps_cfg{g}{suffix}"
            tensors = run_pipeline(pipe, sampler, steps, guidance)
            sigma_after = float(pipe.scheduler.init_noise_sigma)  # what the pipeline used
            chaotic = is_chaotic(pipe.scheduler)
            meta = {"prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "seed": str(SEED), "steps": str(steps),
                    "guidance_scale": str(float(guidance)), "width": str(SIZE), "height": str(SIZE),
                    "scheduler": sampler, "scheduler_built_as": built_as, "made_by": MADE_BY}

            ref_path = shared_reference(variant, sampler, stem)
            lat = scale = img = ts = sg = explained = None
            if ref_path is not None:
                ref, _ = read_golden(ref_path)
                lat, scale, img, ts, sg = compare(tensors, ref)
            keep = keep_file(ref_path, lat, scale, chaotic)
            if ref_path is not None and keep and sigma_before != sigma_after:
                # Cause check: the same call started from noise * sigma_before, as the shared loop did,
                # must give the shared golden back.
                pipe.scheduler = cls.from_config(base_cfg, **kwargs)
                explained = compare(run_pipeline(pipe, sampler, steps, guidance, init_scale=sigma_before), ref)[0]

            out_path = os.path.join(out_dir, stem + "_pipeline_call.safetensors")
            if keep:
                write_golden(out_path, tensors, meta)
            elif os.path.exists(out_path):
                os.remove(out_path)
            rows.append((variant, f"{sampler} {steps}st cfg{g}" + (" (chaotic)" if chaotic else ""),
                         os.path.basename(ref_path)[:-len(".safetensors")] if ref_path else "(no shared golden)",
                         sigma_before, sigma_after, lat, None if lat is None else lat / scale, img, ts, sg,
                         explained, keep))

    def f(x):
        return "-" if x is None else (f"{x:.3g}" if isinstance(x, float) else ("same" if x else "DIFF"))

    print("\ninit_sigma: init_noise_sigma before -> after set_timesteps; max|dlat|, rel (of max|latents|), "
          "max|dimg|, timesteps, sigmas: this run vs the shared golden; pre-scaled: max|dlat| of the same call "
          "started from noise * init_sigma-before, vs the shared golden")
    print(f"{'variant':<12} {'run':<36} {'init_sigma':>16} {'max|dlat|':>9} {'rel':>8} {'max|dimg|':>9} "
          f"{'timesteps':>9} {'sigmas':>6} {'pre-scaled':>10} {'kept':>4}  compared with")
    for v, r, refname, sb, sa, lat, rel, img, ts, sg, ex, keep in rows:
        print(f"{v:<12} {r:<36} {sb:>7.4f}->{sa:<7.4f} {f(lat):>9} {f(rel):>8} {f(img):>9} {f(ts):>9} "
              f"{f(sg):>6} {f(ex):>10} {'yes' if keep else 'no':>4}  {refname}")
    print(f"\nwritten to {out_dir}:")
    for name in sorted(os.listdir(out_dir)):
        if name.endswith("_pipeline_call.safetensors"):
            print(f"  {name}  {os.path.getsize(os.path.join(out_dir, name))} bytes")


if __name__ == "__main__":
    main()
