#!/usr/bin/env python3
"""Goldens for the few-step families (issue 12 items 3 and 4): LCM-distilled UNets and SD-Turbo-style folders.

What it makes (OUT_DIR, default tests/goldens/few_step of this repository)
    tiny-lcm/unet/            a random-weight UNet2DConditionModel with `time_cond_proj_dim` 32, saved with
                              save_pretrained(safe_serialization=True): tiny-sd's UNet layout (two levels, cross
                              attention 64 for tiny-sd's text encoder) made smaller so that it fits the repository
                              (block_out_channels (8, 16), layers_per_block 1, 4 norm groups, 2 heads). Torch's
                              default init from torch.manual_seed(0); cond_proj (TimestepEmbedding's Linear
                              time_cond_proj_dim -> 8, no bias) included.
    tiny-lcm/scheduler/       LCMScheduler's config as LatentConsistencyModelPipeline folders publish it
                              (SimianLuo/LCM_Dreamshaper_v7's keys: scaled_linear 0.00085..0.012, original
                              inference steps 50, set_alpha_to_one true, steps_offset 1).
    tiny-lcm/model_index.json LatentConsistencyModelPipeline's; text_encoder, tokenizer and vae are those of
                              ../shared/fixtures/tiny-sd, not copied: the tests link them in.
    tiny-turbo/               scheduler/scheduler_config.json + model_index.json for tiny-sd's weights:
                              EulerAncestralDiscreteScheduler with timestep_spacing "trailing" (sdxl-turbo's
                              published scheduler; sd-turbo publishes EulerDiscreteScheduler, also trailing).
    lcm_guidance_embedding.safetensors
                              `w_embedding_<dim>_<w>`: LatentConsistencyModelPipeline.get_guidance_scale_embedding(
                              torch.tensor(w - 1).repeat(2), embedding_dim=dim) for dims 32, 256, 7 and guidance
                              0, 1, 1.5, 8.5.
    unet_lcm_timestep_cond.safetensors
                              `sample` [2,4,16,16], `timestep` [1] (499), `encoder_hidden_states` [2,77,64],
                              `timestep_cond` [2,32] (randn) -> `out` = unet(sample, t, encoder_hidden_states,
                              timestep_cond=timestep_cond).sample; `out_no_cond` without timestep_cond.
    pipeline_lcm_<sampler>_4steps_cfg8.5.safetensors
                              LatentConsistencyModelPipeline.__call__ (sampler lcm: the folder's LCMScheduler) and,
                              for another sampler on an LCM UNet, StableDiffusionPipeline.__call__ with
                              EulerDiscreteScheduler.from_config(<the LCM config>) (diffusers runs that one pass per
                              step too: do_classifier_free_guidance is false when time_cond_proj_dim is set): prompt
                              "a photo of an astronaut riding a horse on mars", seed 42, 128x128, 4 steps, guidance
                              8.5. `image` [1,128,128,3] (output_type="np"), `latents_per_step` [4,1,4,16,16] (the
                              callback's latents), `denoised_per_step` (LCM only), `timesteps`.
    pipeline_turbo_<sampler>_<N>steps_cfg0.safetensors
                              StableDiffusionPipeline.__call__ on tiny-sd with tiny-turbo's scheduler (euler_a 1 and 4
                              steps, and EulerDiscreteScheduler from the same config, 1 step), guidance 0.0, as
                              sd-turbo's model card calls it.
    Every pipeline call is repeated in float64 with the float32 run's random numbers; metadata `fp64_rel_diff` is
    max|lat32 - lat64| / max|lat64|.

How to run (reference environment: tests/oracle/README.md)
    . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_few_step_goldens.py [OUT_DIR]    # about 1 min

Versions expected: diffusers 0.27.2, transformers 4.30.2, Debian's torch 1.13.1; torch.set_num_threads(2).
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

import diffusers
from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler,
                       LatentConsistencyModelPipeline, StableDiffusionPipeline, UNet2DConditionModel)
from diffusers.schedulers import scheduling_euler_ancestral_discrete, scheduling_lcm
from transformers import CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_pipeline_goldens import write_golden  # noqa: E402

SHARED = os.environ.get("SDCPU_SHARED", os.path.join(REPO, "..", "shared"))
TINY_SD = os.path.join(SHARED, "fixtures", "tiny-sd")
DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "few_step")

PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 42
SIZE = 128
MADE_BY = "tests/oracle/make_few_step_goldens.py (diffusers 0.27.2)"

LCM_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64, attention_head_dim=2, norm_num_groups=4, time_cond_proj_dim=32)
# SimianLuo/LCM_Dreamshaper_v7's scheduler/scheduler_config.json keys (diffusers writes the rest on save).
LCM_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                     clip_sample_range=1.0, dynamic_thresholding_ratio=0.995, num_train_timesteps=1000,
                     original_inference_steps=50, prediction_type="epsilon", rescale_betas_zero_snr=False,
                     sample_max_value=1.0, set_alpha_to_one=True, steps_offset=1, thresholding=False,
                     timestep_scaling=10.0, timestep_spacing="leading", trained_betas=None)
TURBO_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
                       prediction_type="epsilon", steps_offset=1, timestep_spacing="trailing", trained_betas=None)


def float32_noise(randn_tensor):
    """randn_tensor that always draws float32 and casts: the float64 run sees the float32 run's random numbers."""
    def draw(shape, generator=None, device=None, dtype=None, layout=None):
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32, layout=layout).to(dtype)
    return draw


def write_model_index(folder, pipeline_class, scheduler_class):
    index = {"_class_name": pipeline_class, "_diffusers_version": diffusers.__version__,
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", scheduler_class], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


def make_folders(out_dir):
    lcm_dir = os.path.join(out_dir, "tiny-lcm")
    shutil.rmtree(lcm_dir, ignore_errors=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**LCM_UNET).eval()
    unet.save_pretrained(os.path.join(lcm_dir, "unet"), safe_serialization=True)
    LCMScheduler(**{k: v for k, v in LCM_SCHEDULER.items() if k != "trained_betas"}).save_pretrained(
        os.path.join(lcm_dir, "scheduler"))
    write_model_index(lcm_dir, "LatentConsistencyModelPipeline", "LCMScheduler")

    turbo_dir = os.path.join(out_dir, "tiny-turbo")
    shutil.rmtree(turbo_dir, ignore_errors=True)
    EulerAncestralDiscreteScheduler(**{k: v for k, v in TURBO_SCHEDULER.items() if k != "trained_betas"}).save_pretrained(
        os.path.join(turbo_dir, "scheduler"))
    write_model_index(turbo_dir, "StableDiffusionPipeline", "EulerAncestralDiscreteScheduler")
    return lcm_dir, turbo_dir


def components(unet_dir, dtype):
    return dict(unet=UNet2DConditionModel.from_pretrained(unet_dir, subfolder="unet").to(dtype),
                vae=AutoencoderKL.from_pretrained(TINY_SD, subfolder="vae").to(dtype),
                text_encoder=CLIPTextModel.from_pretrained(TINY_SD, subfolder="text_encoder").to(dtype),
                tokenizer=CLIPTokenizer.from_pretrained(TINY_SD, subfolder="tokenizer"),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def guidance_embeddings():
    tensors = {}
    for dim in (32, 256, 7):
        for w in (0.0, 1.0, 1.5, 8.5):
            emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
                None, torch.tensor(w - 1).repeat(2), embedding_dim=dim)
            tensors[f"w_embedding_{dim}_{w:g}"] = emb.numpy().astype(np.float32)
    return tensors


def unet_golden(lcm_dir):
    unet = UNet2DConditionModel.from_pretrained(lcm_dir, subfolder="unet").eval()
    g = torch.Generator("cpu").manual_seed(7)
    sample = torch.randn([2, 4, 16, 16], generator=g)
    states = torch.randn([2, 77, 64], generator=g)
    cond = torch.randn([2, 32], generator=g)
    t = torch.tensor([499.0])
    with torch.no_grad():
        out = unet(sample, t, states, timestep_cond=cond).sample
        out_no_cond = unet(sample, t, states).sample
    print(f"unet: max|out| {out.abs().max():.4g}, max|out - out_no_cond| {(out - out_no_cond).abs().max():.4g}")
    return {"sample": sample.numpy(), "timestep": t.numpy(), "encoder_hidden_states": states.numpy(),
            "timestep_cond": cond.numpy(), "out": out.numpy(), "out_no_cond": out_no_cond.numpy()}


def run(pipe, steps, guidance, dtype, record_denoised):
    latents_per_step, denoised_per_step = [], []

    def on_step_end(_pipe, _i, _t, kw):
        latents_per_step.append(kw["latents"].detach().clone().to(torch.float64))
        if record_denoised:
            denoised_per_step.append(kw["denoised"].detach().clone().to(torch.float64))
        return kw

    generator = torch.Generator("cpu").manual_seed(SEED)
    latents = None
    if dtype != torch.float32:  # the float32 run's initial noise (prepare_latents scales it by init_noise_sigma)
        latents = torch.randn([1, 4, SIZE // 8, SIZE // 8], generator=generator, dtype=torch.float32).to(dtype)
    inputs = ["latents", "denoised"] if record_denoised else ["latents"]
    out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=guidance,
               generator=generator, latents=latents, output_type="np", callback_on_step_end=on_step_end,
               callback_on_step_end_tensor_inputs=inputs)
    r = {"image": np.asarray(out.images), "latents_per_step": torch.stack(latents_per_step).numpy(),
         "timesteps": pipe.scheduler.timesteps.to(torch.float64).numpy()}
    if record_denoised:
        r["denoised_per_step"] = torch.stack(denoised_per_step).numpy()
    return r


def pipeline_golden(out_dir, name, make_pipe, steps, guidance, record_denoised, meta):
    r32 = run(make_pipe(torch.float32), steps, guidance, torch.float32, record_denoised)
    r64 = run(make_pipe(torch.float64), steps, guidance, torch.float64, record_denoised)
    scale = float(np.abs(r64["latents_per_step"]).max())
    rel = float(np.abs(r32["latents_per_step"] - r64["latents_per_step"]).max()) / scale
    tensors = {k: (v if k == "timesteps" else v.astype(np.float32)) for k, v in r32.items()}
    meta = dict(meta, prompt=PROMPT, seed=str(SEED), steps=str(steps), guidance_scale=str(float(guidance)),
                width=str(SIZE), height=str(SIZE), made_by=MADE_BY, fp64_rel_diff=f"{rel:.3g}")
    path = os.path.join(out_dir, name + ".safetensors")
    write_golden(path, tensors, meta)
    print(f"{name:<40} timesteps {r32['timesteps'].tolist()} max|lat| {scale:.4g} fp64_rel_diff {rel:.3g} "
          f"max|dimg| {np.abs(r32['image'] - r64['image']).max():.3g} {os.path.getsize(path)} bytes")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for module in (scheduling_lcm, scheduling_euler_ancestral_discrete):
        module.randn_tensor = float32_noise(module.randn_tensor)
    lcm_dir, turbo_dir = make_folders(out_dir)
    write_golden(os.path.join(out_dir, "lcm_guidance_embedding.safetensors"), guidance_embeddings(),
                 {"made_by": MADE_BY, "what": "LatentConsistencyModelPipeline.get_guidance_scale_embedding("
                  "torch.tensor(w - 1).repeat(2), embedding_dim=dim) as w_embedding_<dim>_<w>"})
    write_golden(os.path.join(out_dir, "unet_lcm_timestep_cond.safetensors"), unet_golden(lcm_dir),
                 {"made_by": MADE_BY, "model": "tiny-lcm/unet"})

    def lcm_pipe(dtype):
        p = LatentConsistencyModelPipeline(scheduler=LCMScheduler.from_pretrained(lcm_dir, subfolder="scheduler"),
                                           **components(lcm_dir, dtype))
        p.set_progress_bar_config(disable=True)
        return p

    def lcm_unet_sd_pipe(dtype):
        cfg = LCMScheduler.from_pretrained(lcm_dir, subfolder="scheduler").config
        p = StableDiffusionPipeline(scheduler=EulerDiscreteScheduler.from_config(cfg), **components(lcm_dir, dtype))
        p.set_progress_bar_config(disable=True)
        return p

    def turbo_pipe(cls):
        def make(dtype):
            cfg = EulerAncestralDiscreteScheduler.from_pretrained(turbo_dir, subfolder="scheduler").config
            p = StableDiffusionPipeline(scheduler=cls.from_config(cfg), **components(TINY_SD, dtype))
            p.set_progress_bar_config(disable=True)
            return p
        return make

    pipeline_golden(out_dir, "pipeline_lcm_lcm_4steps_cfg8.5", lcm_pipe, 4, 8.5, True,
                    {"pipeline": "LatentConsistencyModelPipeline", "model": "tiny-lcm", "scheduler": "lcm"})
    pipeline_golden(out_dir, "pipeline_lcm_euler_4steps_cfg8.5", lcm_unet_sd_pipe, 4, 8.5, False,
                    {"pipeline": "StableDiffusionPipeline", "model": "tiny-lcm", "scheduler": "euler",
                     "scheduler_built_as": "EulerDiscreteScheduler.from_config(<tiny-lcm LCMScheduler config>)"})
    for sampler, cls, steps in (("euler_a", EulerAncestralDiscreteScheduler, 1),
                                ("euler_a", EulerAncestralDiscreteScheduler, 4),
                                ("euler", EulerDiscreteScheduler, 1)):
        pipeline_golden(out_dir, f"pipeline_turbo_{sampler}_{steps}steps_cfg0", turbo_pipe(cls), steps, 0.0, False,
                        {"pipeline": "StableDiffusionPipeline", "model": "tiny-sd + tiny-turbo scheduler",
                         "scheduler": sampler,
                         "scheduler_built_as": f"{cls.__name__}.from_config(<tiny-turbo scheduler config>)"})


if __name__ == "__main__":
    main()
