#!/usr/bin/env python3
"""Goldens for SDXL's networks, made by transformers 4.30.2 and diffusers 0.27.2 themselves.

What it makes (in OUT_DIR, default tests/goldens/sdxl of this repository)
    text_encoder/{config.json,model.safetensors}    a tiny random transformers.CLIPTextModel (quick_gelu), the
                                                    layout of SDXL's first encoder (CLIP ViT-L/14)
    text_encoder_2/{config.json,model.safetensors}  a tiny random CLIPTextModelWithProjection (gelu, bias-less
                                                    text_projection), the layout of SDXL's second encoder
                                                    (OpenCLIP ViT-bigG/14 in transformers names)
    text_encoders.safetensors                       for two prompts of token ids (row 0 padded with EOS as
                                                    tokenizer 1 pads, row 1 padded with "!" = id 0 as SDXL's
                                                    tokenizer_2 does): per encoder hidden_states[-2] (what
                                                    StableDiffusionXLPipeline.encode_prompt uses: the
                                                    penultimate layer's output, no final_layer_norm),
                                                    hidden_states[-3] (its clip_skip=1) and last_hidden_state,
                                                    and encoder 2's text_embeds (pooled, projected)
    tiny-sdxl/                                      the parts of a tiny StableDiffusionXLPipeline folder that
                                                    are its own (see assemble_tiny_sdxl: the rest are links to
                                                    ../shared/fixtures/tiny-sd, whose 49408-token embeddings are
                                                    too large to store twice):
        unet/                                       a tiny random UNet2DConditionModel with SDXL's structure:
                                                    3 levels, DownBlock2D first, transformer_layers_per_block
                                                    [1, 1, 2], per-level heads, use_linear_projection,
                                                    addition_embed_type "text_time"
        text_encoder_2/                             CLIPTextModelWithProjection config (gelu) and a sharded
                                                    index: shard 1 is tiny-sd's text encoder weights, shard 2
                                                    the random text_projection stored here
        model_index.json, scheduler/, tokenizer_2/ (pad token "!"), vae/config.json (scaling_factor
                                                    0.13025): SDXL base 1.0's settings
    unet.safetensors                                sample, timestep, encoder_hidden_states, text_embeds,
                                                    time_ids -> out, for a batch of 2 (as classifier-free
                                                    guidance runs it) at 8x8 latents
    pipeline_<sampler>_<steps>steps_cfg<g>_<negative>.safetensors
                                                    StableDiffusionXLPipeline.__call__ on the assembled folder,
                                                    128x128, seed 42: `image` [1,128,128,3] (output_type "np"),
                                                    `latents_per_step`, `timesteps`, prompt embeddings and
                                                    added conditions as the UNet saw them, settings in metadata
    Weights are stored as float16 (to keep the files small) and the references are computed in float32 from
    those rounded weights, so sdcpu reading the same files sees exactly the model that made the goldens.

How to run (reference environment: tests/oracle/README.md)
    . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_sdxl_goldens.py [OUT_DIR]

Versions expected: diffusers 0.27.2, transformers 4.30.2, Debian's torch 1.13.1, numpy 1.24;
torch.set_num_threads(2). The output is byte-for-byte reproducible.
"""
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch

import diffusers
import transformers
from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "sdxl")
SHARED = os.environ.get("SDCPU_SHARED", os.path.join(REPO, "..", "shared"))
TINY_SD = os.path.join(SHARED, "fixtures", "tiny-sd")
PROJECTION_DIM = 32  # text_encoder_2's projection_dim in the tiny SDXL folder
MADE_BY = "tests/oracle/make_sdxl_goldens.py (transformers 4.30.2, diffusers 0.27.2)"

_DT = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
       np.dtype(np.int64): "I64"}


def write_safetensors(path, tensors, metadata):
    """safetensors as the shared goldens lay it out: __metadata__ first, tensors sorted by name."""
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


def round_weights_to_fp16(module):
    """Rounds every floating parameter to float16 and back, in place; returns the fp16 state dict to store."""
    stored = {}
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if not p.is_floating_point():
                continue  # e.g. CLIP's position_ids buffer
            half = p.to(torch.float16)
            p.copy_(half.to(torch.float32))
            stored[name] = half.numpy()
    return stored


def save_model(module, out_dir, weights_file, config_dict):
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, weights_file), round_weights_to_fp16(module), {"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
        f.write("\n")


# ----------------------------------------------------------------------------------------------------------
# Text encoders. Ids below VOCAB; BOS/EOS the two highest ids, so that the EOS is the argmax of a row as with
# the real vocabulary (49406/49407), which is how CLIPTextTransformer 4.30.2 finds the pooled token.
VOCAB = 512
BOS, EOS = VOCAB - 2, VOCAB - 1
SEQ = 77


def text_encoder_configs():
    common = dict(vocab_size=VOCAB, max_position_embeddings=SEQ, layer_norm_eps=1e-5, bos_token_id=BOS,
                  eos_token_id=EOS, pad_token_id=1)
    enc1 = CLIPTextConfig(hidden_size=16, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                          hidden_act="quick_gelu", projection_dim=16, **common)
    enc1.architectures = ["CLIPTextModel"]
    enc2 = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                          hidden_act="gelu", projection_dim=24, **common)
    enc2.architectures = ["CLIPTextModelWithProjection"]
    return enc1, enc2


def prompt_ids(gen):
    rows = []
    for length, pad in ((9, EOS), (14, 0)):  # tokenizer pads with EOS; SDXL's tokenizer_2 with "!" (id 0)
        words = torch.randint(1, VOCAB - 2, (length,), generator=gen).tolist()
        row = [BOS] + words + [EOS]
        rows.append(row + [pad] * (SEQ - len(row)))
    return torch.tensor(rows, dtype=torch.int64)


def make_text_encoders(out_dir):
    enc1_config, enc2_config = text_encoder_configs()
    torch.manual_seed(1)
    enc1 = CLIPTextModel(enc1_config).eval()
    torch.manual_seed(2)
    enc2 = CLIPTextModelWithProjection(enc2_config).eval()
    save_model(enc1, os.path.join(out_dir, "text_encoder"), "model.safetensors", enc1_config.to_dict())
    save_model(enc2, os.path.join(out_dir, "text_encoder_2"), "model.safetensors", enc2_config.to_dict())

    ids = prompt_ids(torch.Generator().manual_seed(3))
    golden = {"input_ids": ids.numpy()}
    with torch.no_grad():
        out1 = enc1(ids, output_hidden_states=True)
        out2 = enc2(ids, output_hidden_states=True)
    for prefix, out in (("text_encoder", out1), ("text_encoder_2", out2)):
        golden[prefix + ".hidden_states_minus_2"] = out.hidden_states[-2].numpy()
        golden[prefix + ".hidden_states_minus_3"] = out.hidden_states[-3].numpy()
        golden[prefix + ".last_hidden_state"] = out.last_hidden_state.numpy()
    golden["text_encoder_2.text_embeds"] = out2.text_embeds.numpy()
    write_safetensors(os.path.join(out_dir, "text_encoders.safetensors"), golden,
                      {"made_by": MADE_BY, "what": "hidden_states[-2], [-3], last_hidden_state; text_embeds"})
    print("text encoders: text_embeds scale %.3g, hidden_states[-2] scales %.3g / %.3g" %
          (out2.text_embeds.abs().max(), out1.hidden_states[-2].abs().max(), out2.hidden_states[-2].abs().max()))
    return enc1_config, enc2_config


# ----------------------------------------------------------------------------------------------------------
def unet_config(cross_attention_dim, text_embeds_dim):
    """SDXL base 1.0's UNet config with every size shrunk (the real one: block_out_channels [320, 640, 1280],
    attention_head_dim [5, 10, 20], transformer_layers_per_block [1, 2, 10], cross_attention_dim 2048,
    addition_time_embed_dim 256, projection_class_embeddings_input_dim 2816 = 1280 + 6 * 256)."""
    addition_time_embed_dim = 8
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=[16, 32, 32],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        layers_per_block=1,
        attention_head_dim=[1, 2, 4],  # diffusers reads it as the number of heads
        transformer_layers_per_block=[1, 1, 2],
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        projection_class_embeddings_input_dim=text_embeds_dim + 6 * addition_time_embed_dim,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def make_unet(out_dir, folder_dir):
    """The tiny SDXL folder's UNet, conditioned on its two encoders (both 64 wide, projection 32)."""
    config = unet_config(cross_attention_dim=2 * 64, text_embeds_dim=PROJECTION_DIM)
    torch.manual_seed(4)
    unet = UNet2DConditionModel(**config).eval()
    # _use_default_values is a set (its order varies from run to run) and only for diffusers' own bookkeeping.
    full_config = {k: v for k, v in unet.config.items() if k != "_use_default_values"}
    full_config["_class_name"] = "UNet2DConditionModel"
    full_config["_diffusers_version"] = diffusers.__version__
    save_model(unet, os.path.join(folder_dir, "unet"), "diffusion_pytorch_model.safetensors", full_config)

    gen = torch.Generator().manual_seed(5)
    batch, size = 2, 8
    sample = torch.randn(batch, 4, size, size, generator=gen)
    ehs = torch.randn(batch, 11, config["cross_attention_dim"], generator=gen)
    text_embeds = torch.randn(batch, PROJECTION_DIM, generator=gen)
    # original_size + crops_coords_top_left + target_size, as the pipeline builds them (a float tensor)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0], [64.0, 64.0, 8.0, 16.0, 64.0, 64.0]])
    timestep = torch.tensor(681, dtype=torch.int64)
    # One run in a few on this machine (Debian torch 1.13.1, 2 threads, while other work ran) gave an all-NaN output;
    # the forward is therefore run twice and must agree bit for bit and be finite.
    outs = []
    for _ in range(2):
        with torch.no_grad():
            outs.append(unet(sample, timestep.float(), ehs,
                             added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample)
    out = outs[0]
    if not (torch.isfinite(out).all() and torch.equal(outs[0], outs[1])):
        raise SystemExit("unet reference not reproducible (non-finite or differing runs): run the script again")
    golden = {"sample": sample.numpy(), "timestep": timestep.reshape(1).numpy(), "encoder_hidden_states": ehs.numpy(),
              "text_embeds": text_embeds.numpy(), "time_ids": time_ids.numpy(), "out": out.numpy()}
    write_safetensors(os.path.join(out_dir, "unet.safetensors"), golden,
                      {"made_by": MADE_BY, "what": "UNet2DConditionModel forward with added_cond_kwargs"})
    print("unet: out scale %.3g" % out.abs().max())


# ----------------------------------------------------------------------------------------------------------
# The tiny SDXL folder. SDXL base 1.0's model_index.json, scheduler config, tokenizer_2 special tokens and VAE
# scaling factor; both text encoders are tiny-sd's 5-layer, 64-wide CLIP text transformer (the first as is,
# quick_gelu; the second as a CLIPTextModelWithProjection with gelu and a random projection), its VAE weights.
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.27.2",
    "force_zeros_for_empty_prompt": True,
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SCHEDULER_CONFIG = {  # stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
TOKENIZER_2_SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
                       "unk_token": "<|endoftext|>"}
TOKENIZER_2_CONFIG = dict(TOKENIZER_2_SPECIAL, tokenizer_class="CLIPTokenizer", model_max_length=77,
                          do_lower_case=True)
ENCODER_2_SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def make_folder_parts(folder_dir):
    write_json(os.path.join(folder_dir, "model_index.json"), MODEL_INDEX)
    write_json(os.path.join(folder_dir, "scheduler", "scheduler_config.json"), SCHEDULER_CONFIG)
    write_json(os.path.join(folder_dir, "tokenizer_2", "special_tokens_map.json"), TOKENIZER_2_SPECIAL)
    write_json(os.path.join(folder_dir, "tokenizer_2", "tokenizer_config.json"), TOKENIZER_2_CONFIG)
    with open(os.path.join(TINY_SD, "vae", "config.json")) as f:
        vae = json.load(f)
    vae["scaling_factor"] = 0.13025  # SDXL's VAE
    write_json(os.path.join(folder_dir, "vae", "config.json"), vae)

    with open(os.path.join(TINY_SD, "text_encoder", "config.json")) as f:
        enc2 = json.load(f)
    enc2.update(architectures=["CLIPTextModelWithProjection"], hidden_act="gelu", projection_dim=PROJECTION_DIM)
    write_json(os.path.join(folder_dir, "text_encoder_2", "config.json"), enc2)
    torch.manual_seed(6)
    projection = torch.nn.Linear(enc2["hidden_size"], PROJECTION_DIM, bias=False).weight.detach()
    write_safetensors(os.path.join(folder_dir, "text_encoder_2", ENCODER_2_SHARDS[1]),
                      {"text_projection.weight": projection.to(torch.float16).numpy()}, {"format": "pt"})
    weight_map = {"text_projection.weight": ENCODER_2_SHARDS[1]}
    with open(os.path.join(TINY_SD, "text_encoder", "model.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        names = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
    for name in names:
        weight_map[name] = ENCODER_2_SHARDS[0]
    write_json(os.path.join(folder_dir, "text_encoder_2", "model.safetensors.index.json"),
               {"metadata": {}, "weight_map": weight_map})


def assemble_tiny_sdxl(parts_dir, model_dir):
    """The folder sdcpu's tests assemble the same way (tests/test_support.h tiny_sdxl_folder): the parts, plus
    links to tiny-sd's text encoder, tokenizer files and VAE weights."""
    shutil.copytree(parts_dir, model_dir)
    links = {
        "text_encoder": os.path.join(TINY_SD, "text_encoder"),
        "tokenizer": os.path.join(TINY_SD, "tokenizer"),
        "tokenizer_2/vocab.json": os.path.join(TINY_SD, "tokenizer", "vocab.json"),
        "tokenizer_2/merges.txt": os.path.join(TINY_SD, "tokenizer", "merges.txt"),
        "text_encoder_2/" + ENCODER_2_SHARDS[0]: os.path.join(TINY_SD, "text_encoder", "model.safetensors"),
        "vae/diffusion_pytorch_model.safetensors": os.path.join(TINY_SD, "vae", "diffusion_pytorch_model.safetensors"),
    }
    for rel, target in links.items():
        os.symlink(os.path.abspath(target), os.path.join(model_dir, rel))


PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 42
SIZE = 128
# (sampler, scheduler class and from_config kwargs, steps, guidance, negative prompt or None)
PIPELINE_RUNS = [
    ("euler", EulerDiscreteScheduler, {}, 8, 5.0, None),
    ("dpmpp_2m", DPMSolverMultistepScheduler, {}, 8, 5.0, "blurry, low quality"),
    ("euler_a", EulerAncestralDiscreteScheduler, {}, 8, 1.0, None),
]


def make_pipeline_goldens(model_dir, out_dir):
    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.scaling_factor == 0.13025 and pipe.config.force_zeros_for_empty_prompt
    assert pipe.tokenizer_2.pad_token_id == 0 and pipe.tokenizer.pad_token_id == 49407
    base_config = pipe.scheduler.config
    for sampler, cls, kwargs, steps, guidance, negative in PIPELINE_RUNS:
        pipe.scheduler = cls.from_config(base_config, **kwargs)
        latents, unet_inputs = [], {}

        def on_step_end(_pipe, _i, _t, callback_kwargs):
            latents.append(callback_kwargs["latents"].detach().clone())
            for k in ("prompt_embeds", "add_text_embeds", "add_time_ids"):
                unet_inputs.setdefault(k, callback_kwargs[k].detach().clone())
            return {}

        image = pipe(PROMPT, negative_prompt=negative, height=SIZE, width=SIZE, num_inference_steps=steps,
                     guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
                     callback_on_step_end=on_step_end,
                     callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "add_text_embeds",
                                                         "add_time_ids"]).images
        if not (np.isfinite(image).all() and all(torch.isfinite(l).all() for l in latents)):
            raise SystemExit("non-finite pipeline output for %s: run the script again" % sampler)
        golden = {
            "image": image.astype(np.float32),
            "latents_per_step": torch.stack(latents).numpy(),
            "timesteps": pipe.scheduler.timesteps.numpy().astype(np.float64),
            "prompt_embeds": unet_inputs["prompt_embeds"].numpy(),
            "add_text_embeds": unet_inputs["add_text_embeds"].numpy(),
            "add_time_ids": unet_inputs["add_time_ids"].numpy(),
        }
        neg_name = "noneg" if negative is None else "neg"
        name = "pipeline_%s_%dsteps_cfg%g_%s.safetensors" % (sampler, steps, guidance, neg_name)
        meta = {"made_by": MADE_BY, "prompt": PROMPT, "negative_prompt": negative or "", "scheduler": sampler,
                "steps": str(steps), "guidance_scale": str(guidance), "seed": str(SEED), "width": str(SIZE),
                "height": str(SIZE)}
        write_safetensors(os.path.join(out_dir, name), golden, meta)
        print("%s: latents scale %.3g, image in [%.3f, %.3f]" % (name, golden["latents_per_step"].__abs__().max(),
                                                                 image.min(), image.max()))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    assert diffusers.__version__ == "0.27.2", diffusers.__version__
    assert transformers.__version__ == "4.30.2", transformers.__version__
    torch.set_num_threads(2)
    os.makedirs(out_dir, exist_ok=True)
    make_text_encoders(out_dir)
    folder_dir = os.path.join(out_dir, "tiny-sdxl")
    make_unet(out_dir, folder_dir)
    make_folder_parts(folder_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny-sdxl")
        assemble_tiny_sdxl(folder_dir, model)
        make_pipeline_goldens(model, out_dir)
    for root, _, files in sorted(os.walk(out_dir)):
        for name in sorted(files):
            path = os.path.join(root, name)
            print("%8d %s" % (os.path.getsize(path), os.path.relpath(path, out_dir)))


if __name__ == "__main__":
    main()
