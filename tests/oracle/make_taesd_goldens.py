#!/usr/bin/env python3
"""TAESD goldens made by diffusers 0.27.2's own AutoencoderTiny and StableDiffusionPipeline.

What it makes (OUT_DIR, default tests/goldens/taesd of this repository)
    tiny-taesd/             a random-weight AutoencoderTiny folder in exactly the layout of madebyollin/taesd on
                            the Hub (config.json + diffusion_pytorch_model.safetensors, from save_pretrained with
                            safe_serialization=True): the block structure of TAESD (4 levels, num_encoder_blocks
                            (1, 3, 3, 3), num_decoder_blocks (3, 3, 3, 1), ReLU, latent_channels 4, upsampling
                            factor 2) with small widths: decoder 16 channels, encoder 8.
    taesd_decoder.safetensors
                            the same decoder in madebyollin's original layout (the file taesd_decoder.safetensors
                            the Hub repository also carries): diffusers' decoder.layers.<i>.* is <i + 1>.*, the
                            inverse of diffusers' scripts/convert_tiny_autoencoder_to_diffusers.py; checked here by
                            running that script's mapping and comparing every tensor.
    taesd_decoder_<h>x<w>.safetensors
                            `latent` [B, 4, h, w] -> `image` [B, 3, 8h, 8w]: vae.decode(latent).sample, as
                            StableDiffusionPipeline calls it (latent = latents / vae.config.scaling_factor, which
                            is 1.0 for TAESD), in about [-1, 1], not clamped. The latents are randn * 2, so that
                            DecoderTiny's tanh(x / 3) * 3 clamp is exercised. 8x8 (B = 1) and 6x10 (B = 2).
    taesd_encoder_<H>x<W>.safetensors
                            `image` [B, 3, H, W] in [-1, 1] -> `latents` [B, 4, H/8, W/8]: vae.encode(image).latents
                            (EncoderTiny maps the image to [0, 1] first). 64x64 and 40x56 (B = 1).
    pipeline_taesd_dpmpp_2m_10steps_cfg7.5.safetensors
                            StableDiffusionPipeline.from_pretrained(../shared/fixtures/tiny-sd, vae=<tiny-taesd>),
                            scheduler DPMSolverMultistepScheduler.from_config(<the folder's PNDM config>), prompt
                            "a photo of an astronaut riding a horse on mars", negative "", seed 42, 128x128,
                            10 steps, guidance 7.5, output_type="np": `image` [1, 128, 128, 3] float32 in [0, 1],
                            `latents_per_step` [10, 1, 4, 16, 16], `timesteps`, `sigmas`; the settings in
                            __metadata__ (the format of tests/goldens/tiny-sd).
    With --full-size DIR it also writes a full-size random TAESD folder (the published config: 64 channels
    everywhere) to DIR, for benchmarks; no golden is made for it.

How to run (reference environment: ../shared/oracle/README.md)
    . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_taesd_goldens.py [OUT_DIR] [--full-size DIR]

Versions expected: diffusers 0.27.2, Debian's torch 1.13.1 (reports 1.13.0a0), numpy 1.24;
torch.set_num_threads(2). The output is byte-for-byte reproducible.
"""
import argparse
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import AutoencoderTiny, DPMSolverMultistepScheduler, StableDiffusionPipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pipeline_goldens import write_golden  # noqa: E402  (the goldens' safetensors writer)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("SDCPU_SHARED", os.path.join(REPO, "..", "shared"))
MODEL_DIR = os.path.join(SHARED, "fixtures", "tiny-sd")
DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "taesd")
MADE_BY = "tests/oracle/make_taesd_goldens.py: AutoencoderTiny / StableDiffusionPipeline.__call__ (diffusers 0.27.2)"

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE_PROMPT = ""
SEED = 42
SIZE = 128
STEPS = 10
GUIDANCE = 7.5

# madebyollin/taesd's structure (its config.json on the Hub) with small widths.
TINY_CONFIG = dict(in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8, 8, 8),
                   decoder_block_out_channels=(16, 16, 16, 16), act_fn="relu", latent_channels=4,
                   upsampling_scaling_factor=2, num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1),
                   latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0)
LAST_CONV_SCALE = 0.3
FULL_CONFIG = dict(TINY_CONFIG, encoder_block_out_channels=(64, 64, 64, 64),
                   decoder_block_out_channels=(64, 64, 64, 64))


# ----------------------------------------------------------------------------------------------------------
def make_taesd(config, seed):
    """An AutoencoderTiny whose every parameter is drawn from one generator: conv weights N(0, 1 / fan_in) and
    biases N(0, 0.1^2), so that a forgotten or misplaced bias shows. The decoder's last convolution is scaled by
    LAST_CONV_SCALE: through its ~30 residual convolutions the image would otherwise reach |x| ~ 5, nearly all
    clamped by the pipeline's (x / 2 + 0.5).clamp(0, 1); scaled, about half of it lies inside [-1, 1]."""
    torch.manual_seed(seed)  # only the constructor's default init, overwritten below
    vae = AutoencoderTiny(**config).eval()
    last = f"decoder.layers.{len(vae.decoder.layers) - 1}."
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(vae.named_parameters()):
            scale = LAST_CONV_SCALE if name.startswith(last) else 1.0
            if name.endswith(".weight"):
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=g) * (scale / fan_in ** 0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 * scale))
    return vae


def original_decoder_layout(vae):
    """diffusers' decoder.layers.<i>.* -> madebyollin's <i + 1>.* (index 0 of the original Sequential is the
    Clamp module), checked against convert_tiny_autoencoder_to_diffusers.py's own mapping."""
    sd = {k[len("decoder.layers."):]: v for k, v in vae.state_dict().items() if k.startswith("decoder.layers.")}
    original = {}
    for k, v in sd.items():
        i, rest = k.split(".", 1)
        original[f"{int(i) + 1}.{rest}"] = v.detach().clone().contiguous()
    # The converter's mapping, as written in diffusers' scripts/convert_tiny_autoencoder_to_diffusers.py:
    for k, v in original.items():
        layer_id = int(k.split(".")[0]) - 1
        back = str(layer_id) + "." + ".".join(k.split(".")[1:])
        assert torch.equal(sd[back], v), k
    assert len(original) == len(sd)
    return original


def decode_golden(vae, latents):
    with torch.no_grad():
        latent = latents / vae.config.scaling_factor  # as StableDiffusionPipeline.__call__ does
        image = vae.decode(latent, return_dict=False)[0]
    return {"latent": latent.numpy().astype(np.float32), "image": image.numpy().astype(np.float32)}


def encode_golden(vae, image):
    with torch.no_grad():
        latents = vae.encode(image).latents
    return {"image": image.numpy().astype(np.float32), "latents": latents.numpy().astype(np.float32)}


def pipeline_golden(vae):
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, vae=vae, safety_checker=None,
                                                   requires_safety_checker=False, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    latents_per_step = []

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        latents_per_step.append(callback_kwargs["latents"].detach().clone())
        return callback_kwargs

    generator = torch.Generator("cpu").manual_seed(SEED)
    out = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
               guidance_scale=GUIDANCE, generator=generator, output_type="np", callback_on_step_end=on_step_end,
               callback_on_step_end_tensor_inputs=["latents"])
    tensors = {
        "image": np.asarray(out.images, dtype=np.float32),
        "latents_per_step": torch.stack(latents_per_step).numpy().astype(np.float32),
        "timesteps": pipe.scheduler.timesteps.to(torch.float64).numpy(),
        "sigmas": pipe.scheduler.sigmas.to(torch.float64).numpy(),
    }
    meta = {"prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "seed": str(SEED), "steps": str(STEPS),
            "guidance_scale": str(GUIDANCE), "width": str(SIZE), "height": str(SIZE), "scheduler": "dpmpp_2m",
            "scheduler_built_as": "DPMSolverMultistepScheduler.from_config(PNDMScheduler.from_pretrained("
                                  "'<model>/scheduler').config)",
            "vae": "tiny-taesd (AutoencoderTiny)", "made_by": MADE_BY}
    return tensors, meta


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=DEFAULT_OUT)
    parser.add_argument("--full-size", metavar="DIR", help="also write a full-size random TAESD folder here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    os.makedirs(args.out_dir, exist_ok=True)

    vae = make_taesd(TINY_CONFIG, seed=0)
    folder = os.path.join(args.out_dir, "tiny-taesd")
    vae.save_pretrained(folder, safe_serialization=True)
    # Read back through diffusers, as a user's from_pretrained would: the goldens come from the files.
    vae = AutoencoderTiny.from_pretrained(folder).eval()

    from safetensors.torch import save_file  # the oracle's writer (../shared/oracle/shims)
    save_file(original_decoder_layout(vae), os.path.join(args.out_dir, "taesd_decoder.safetensors"))

    g = torch.Generator("cpu").manual_seed(1234)
    meta = {"made_by": MADE_BY, "model": "tiny-taesd"}
    for b, h, w in [(1, 8, 8), (2, 6, 10)]:
        latents = torch.randn([b, 4, h, w], generator=g) * 2.0
        t = decode_golden(vae, latents)
        write_golden(os.path.join(args.out_dir, f"taesd_decoder_{h}x{w}.safetensors"), t, meta)
        img = t["image"]
        print(f"decoder {h}x{w}: latent |max| {np.abs(t['latent']).max():.3g}, image range "
              f"[{img.min():.3g}, {img.max():.3g}], in [-1, 1]: {np.mean(np.abs(img) <= 1):.0%}")
    for b, h, w in [(1, 64, 64), (1, 40, 56)]:
        image = torch.rand([b, 3, h, w], generator=g) * 2.0 - 1.0
        t = encode_golden(vae, image)
        write_golden(os.path.join(args.out_dir, f"taesd_encoder_{h}x{w}.safetensors"), t, meta)
        print(f"encoder {h}x{w}: latents range [{t['latents'].min():.3g}, {t['latents'].max():.3g}]")

    tensors, pmeta = pipeline_golden(vae)
    write_golden(os.path.join(args.out_dir, f"pipeline_taesd_dpmpp_2m_{STEPS}steps_cfg{GUIDANCE:g}.safetensors"),
                 tensors, pmeta)
    img = tensors["image"]
    print(f"pipeline: image mean {img.mean():.3g}, pixels strictly inside (0, 1): {np.mean((img > 0) & (img < 1)):.0%}")

    if args.full_size:
        make_taesd(FULL_CONFIG, seed=0).save_pretrained(args.full_size, safe_serialization=True)
        print(f"full-size random TAESD written to {args.full_size}")

    print(f"\nwritten to {args.out_dir}:")
    for root, _, files in sorted(os.walk(args.out_dir)):
        for name in sorted(files):
            p = os.path.join(root, name)
            print(f"  {os.path.relpath(p, args.out_dir)}  {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
