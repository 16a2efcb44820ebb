#!/usr/bin/env python3
"""Goldens for SDXL single-file checkpoints, made by diffusers 0.27.2's StableDiffusionXLPipeline.from_single_file.

What it makes (OUT_DIR, default tests/goldens/tiny-sdxl-single/ of this repository)
    tiny-sdxl.partial.safetensors  a tiny random SDXL-like model in the ORIGINAL single-file layout, as
                                   sd_xl_base_1.0.safetensors has it, written by diffusers' own
                                   scripts/convert_diffusers_to_original_sdxl.py (model.diffusion_model.* with
                                   label_emb.0.*, conditioner.embedders.0.transformer.* = CLIP in transformers'
                                   layout, conditioner.embedders.1.model.* = OpenCLIP with fused in_proj and
                                   text_projection [W, P]), fp16, WITHOUT what the shared fixtures hold, which the
                                   tests add back (tests/sdxl_single_file_fixture.h): both encoders' token
                                   embeddings (tiny-sd's text encoder's, 49408 x 64) and the VAE (tiny-sd's).
    tiny-sdxl.yaml                 sd_xl_base.yaml at the tiny sizes (network_config, num_head_channels 16,
                                   scale_factor 0.13025).
    sdxl_<sampler>_<steps>steps_cfg<g>.safetensors
                                   a pipeline call of from_single_file(<full file>, original_config_file=<yaml>)
                                   at 64x64, seed 42: `image` [1,64,64,3], `latents_per_step` [N,1,4,8,8],
                                   `timesteps`; metadata: the configs from_single_file built.

Why the tiny model is not make_sdxl_goldens.py's tiny UNet, and the two places the real code is helped
    * from_single_file builds the configs from the yaml with fixed values the tiny folder does not have:
      norm_num_groups 32 (so 32-multiple channels: 32, 64, 64), addition_time_embed_dim 256 and the second encoder's
      projection_dim 1280 (laion bigG's config with projection_dim=1280), so add_embedding takes 1280 + 6 x 256 = 2816
      inputs as in SDXL base.
    * create_unet_diffusers_config takes the text_time branch only for context_dim 2048 or 1280, and
      infer_model_type says "SDXL" only for 2048; the tiny context is 64 + 64 = 128. from_single_file is given
      model_type="SDXL" (its own argument), and the UNet config's class_embed_type "projection" is turned into
      addition_embed_type "text_time" (addition_time_embed_dim 256), what the 2048-wide real model gets.
    * Without `accelerate` diffusers loads the text encoders with a strict load_state_dict and pops position_ids;
      they are loaded non-strict after checking that position_ids is the only missing key and nothing is
      unexpected (accelerate's branch, the usual install, keeps the buffer).
    * torch.baddbmm with beta=0 is replaced by what it means (see below): Debian's torch 1.13 gave NaN attention
      scores from uninitialized memory in some runs.
    * The hub configs and tokenizers (openai/clip-vit-large-patch14, laion/CLIP-ViT-bigG-14-laion2B-39B-b160k with
      pad "!") are written into a private HF cache at the tiny sizes, over the fixture's vocabulary.

Run:  . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_sdxl_single_file_goldens.py [OUT_DIR]
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("SDCPU_SHARED", os.path.join(REPO, "..", "shared"))
FIXTURE_TE = os.path.join(SHARED, "fixtures", "tiny-sd", "text_encoder", "model.safetensors")
FIXTURE_SINGLE_FILE = os.path.join(SHARED, "fixtures", "tiny-sd.safetensors")
FIXTURE_TOKENIZER = os.path.join(SHARED, "fixtures", "tiny-sd", "tokenizer")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "goldens", "tiny-sdxl-single")

HF_CACHE = tempfile.mkdtemp(prefix="sdxl_hf_cache_")
for _name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
    os.environ[_name] = HF_CACHE

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

import diffusers  # noqa: E402
from diffusers import (EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,  # noqa: E402
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from diffusers.loaders import single_file_utils  # noqa: E402

sys.path.insert(0, HERE)
from make_pipeline_goldens import write_golden  # noqa: E402

sys.path.insert(0, os.path.join(os.environ["DIFFUSERS_SRC"], "scripts"))
import convert_diffusers_to_original_sdxl as to_original  # noqa: E402

assert diffusers.__version__ == "0.27.2", diffusers.__version__
torch.set_num_threads(2)

# diffusers' AttnProcessor computes the attention scores as torch.baddbmm(torch.empty(...), q, k^T, beta=0,
# alpha=scale). beta=0 is documented to ignore the input, but Debian's torch 1.13 on this CPU let NaNs in the
# uninitialized memory through in some runs (NaN latents, different from run to run; never with beta=0 replaced).
# What it is meant to compute, exactly: alpha * (q @ k^T).
_baddbmm = torch.baddbmm


def _baddbmm_ignoring_input_when_beta_is_0(input, batch1, batch2, *, beta=1, alpha=1):
    if beta == 0:
        return alpha * torch.bmm(batch1, batch2)
    return _baddbmm(input, batch1, batch2, beta=beta, alpha=alpha)


torch.baddbmm = _baddbmm_ignoring_input_when_beta_is_0

PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 42
SIZE = 64
HIDDEN = 64
LAYERS = (2, 3)  # text encoder 1, 2 (SDXL keeps every layer of both)
MADE_BY = "tests/oracle/make_sdxl_single_file_goldens.py: StableDiffusionXLPipeline.from_single_file (diffusers 0.27.2)"

YAML = """model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    scale_factor: 0.13025
    disable_first_stage_autocast: True

    network_config:
      target: sgm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        adm_in_channels: 2816
        num_classes: sequential
        use_checkpoint: True
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [4, 2]
        num_res_blocks: 1
        channel_mult: [1, 2, 2]
        num_head_channels: 16
        use_linear_in_transformer: True
        transformer_depth: [1, 1, 2]
        context_dim: 128
        spatial_transformer_attn_type: softmax-xformers

    first_stage_config:
      target: sgm.models.autoencoder.AutoencoderKLInferenceWrapper
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          attn_type: vanilla-xformers
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [1, 1, 2, 2]
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
"""


def text_config(layers, act, projection):
    return {"architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"],
            "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": act,
            "hidden_size": HIDDEN, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": 4 * HIDDEN, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": HIDDEN // 64, "num_hidden_layers": layers,
            "pad_token_id": 1, "projection_dim": projection or 768, "vocab_size": 49408}


HUB = {  # repo id -> (text config, tokenizer pad token)
    "openai/clip-vit-large-patch14": (text_config(LAYERS[0], "quick_gelu", 0), "<|endoftext|>"),
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": (text_config(LAYERS[1], "gelu", 1280), "!"),
}


def write_fake_hub():
    snapshot = "0" * 40
    for repo_id, (config, pad) in HUB.items():
        repo = os.path.join(HF_CACHE, "models--" + repo_id.replace("/", "--"))
        root = os.path.join(repo, "snapshots", snapshot)
        os.makedirs(os.path.join(repo, "refs"))
        os.makedirs(root)
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(snapshot)
        with open(os.path.join(root, "config.json"), "w") as f:
            json.dump(config, f)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), os.path.join(root, name))
        special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
                   "unk_token": "<|endoftext|>"}
        with open(os.path.join(root, "special_tokens_map.json"), "w") as f:
            json.dump(special, f)
        with open(os.path.join(root, "tokenizer_config.json"), "w") as f:
            json.dump(dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True), f)


def make_diffusers_model():
    torch.manual_seed(0)
    token_embedding = load_file(FIXTURE_TE)["text_model.embeddings.token_embedding.weight"]
    encoders = []
    for repo_id, cls in (("openai/clip-vit-large-patch14", CLIPTextModel),
                         ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", CLIPTextModelWithProjection)):
        cfg = dict(HUB[repo_id][0])
        cfg.pop("architectures")
        text = cls(CLIPTextConfig(**cfg)).eval()
        with torch.no_grad():
            text.text_model.embeddings.token_embedding.weight.copy_(token_embedding)
            for name, p in text.named_parameters():  # larger than transformers' init, so that the layers matter
                if p.dim() == 2 and (name.endswith("proj.weight") or ".mlp.fc" in name or name == "text_projection.weight"):
                    p.normal_(0.0, 1.0 / np.sqrt(p.shape[1]))
                elif name.endswith(".bias"):
                    p.normal_(0.0, 0.05)
        encoders.append(text)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=2 * HIDDEN, attention_head_dim=[2, 4, 4], use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=1280 + 6 * 256).eval()
    with torch.no_grad():  # diffusers zero-initializes nothing here, but larger added-embedding weights matter more
        for name, p in unet.named_parameters():
            if name.startswith("add_embedding") and p.dim() == 2:
                p.normal_(0.0, 1.0 / np.sqrt(p.shape[1]))
    return encoders, unet


def unet_layer_map(unet):
    """convert_diffusers_to_original_sdxl.py's unet_conversion_map_layer, which hard-codes SDXL's 3 levels of 2
    layers, built by the same rules for this UNet's levels and layers (one per level)."""
    levels, layers = len(unet.config.block_out_channels), unet.config.layers_per_block
    per = layers + 1
    down_attn = [t.startswith("CrossAttn") for t in unet.config.down_block_types]
    up_attn = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    out = []
    for i in range(levels):
        for j in range(layers):
            out.append((f"input_blocks.{per * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                out.append((f"input_blocks.{per * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(per):
            out.append((f"output_blocks.{per * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                out.append((f"output_blocks.{per * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            out.append((f"input_blocks.{per * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            out.append((f"output_blocks.{per * i + layers}.{2 if up_attn[i] else 1}.", f"up_blocks.{i}.upsamplers.0."))
    out.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        out.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return out


def write_single_file(encoders, unet, path):
    """convert_diffusers_to_original_sdxl.py's __main__, on these modules' state dicts."""
    to_original.unet_conversion_map_layer = unet_layer_map(unet)
    state = {"model.diffusion_model." + k: v for k, v in to_original.convert_unet_state_dict(unet.state_dict()).items()}
    state.update({k: v for k, v in load_file(FIXTURE_SINGLE_FILE).items() if k.startswith("first_stage_model.")})
    te1 = to_original.convert_openai_text_enc_state_dict(encoders[0].state_dict())
    state.update({"conditioner.embedders.0.transformer." + k: v for k, v in te1.items()})
    te2 = to_original.convert_openclip_text_enc_state_dict(encoders[1].state_dict())
    te2 = {"conditioner.embedders.1.model." + k: v for k, v in te2.items()}
    te2["conditioner.embedders.1.model.text_projection"] = te2.pop(
        "conditioner.embedders.1.model.text_projection.weight").T.contiguous()
    state.update(te2)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items() if not k.endswith("position_ids")}
    for prefix in ("conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model."):
        key = prefix + ("embeddings.token_embedding.weight" if "transformer" in prefix else "token_embedding.weight")
        state[key] = encoders[0].text_model.embeddings.token_embedding.weight.detach().clone()  # the fixture's fp32
    save_file(state, path)
    return state


def load_pipeline(path, yaml_path):
    originals = {cls: cls.load_state_dict for cls in (CLIPTextModel, CLIPTextModelWithProjection)}
    create_unet_config = single_file_utils.create_unet_diffusers_config

    def lenient(cls):
        def load_state_dict(self, state_dict, strict=True):
            result = originals[cls](self, state_dict, strict=False)
            assert result.unexpected_keys == [], result.unexpected_keys
            assert result.missing_keys == ["text_model.embeddings.position_ids"], result.missing_keys
            return result
        return load_state_dict

    def unet_config(original_config, image_size):
        config = create_unet_config(original_config, image_size)
        assert config["class_embed_type"] == "projection" and config["cross_attention_dim"] == 2 * HIDDEN
        config.update(class_embed_type=None, addition_embed_type="text_time", addition_time_embed_dim=256)
        return config

    for cls in originals:
        cls.load_state_dict = lenient(cls)
    single_file_utils.create_unet_diffusers_config = unet_config
    try:
        pipe = StableDiffusionXLPipeline.from_single_file(path, original_config_file=yaml_path, model_type="SDXL",
                                                          local_files_only=True)
    finally:
        for cls, f in originals.items():
            cls.load_state_dict = f
        single_file_utils.create_unet_diffusers_config = create_unet_config
    for enc in (pipe.text_encoder, pipe.text_encoder_2):
        assert torch.equal(enc.text_model.embeddings.position_ids, torch.arange(77)[None])
    assert pipe.tokenizer_2.pad_token_id == 0 and pipe.tokenizer.pad_token_id == 49407
    return pipe


def run_pipeline(pipe, scheduler_cls, steps, guidance, negative_prompt):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    latents_per_step = []

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        latents_per_step.append(callback_kwargs["latents"].detach().clone())
        return callback_kwargs

    generator = torch.Generator("cpu").manual_seed(SEED)
    out = pipe(PROMPT, negative_prompt=negative_prompt, height=SIZE, width=SIZE, num_inference_steps=steps,
               guidance_scale=guidance, generator=generator, output_type="np",
               callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    return {
        "image": np.asarray(out.images, dtype=np.float32),
        "latents_per_step": torch.stack(latents_per_step).numpy().astype(np.float32),
        "timesteps": pipe.scheduler.timesteps.to(torch.float64).numpy(),
    }


def config_json(config):
    config = dict(config)
    if "_use_default_values" in config:
        config["_use_default_values"] = sorted(config["_use_default_values"])
    return json.dumps(config, sort_keys=True, default=list)


RUNS = [(EulerDiscreteScheduler, "euler", 6, 5.0, None), (EulerAncestralDiscreteScheduler, "euler_a", 4, 1.0, None)]


def run_case(index, full, yaml_path):
    """One golden, in a process of its own (see main)."""
    write_fake_hub()
    cls, sampler, steps, guidance, negative = RUNS[index]
    pipe = load_pipeline(full, yaml_path)
    scheduler_config = dict(pipe.scheduler.config)
    tensors = run_pipeline(pipe, cls, steps, guidance, negative)
    for name, value in tensors.items():
        assert np.isfinite(value).all(), f"{name} is not finite"
    stem = f"sdxl_{sampler}_{steps}steps_cfg{guidance:g}"
    meta = {
        "made_by": MADE_BY, "prompt": PROMPT, "negative_prompt": "", "seed": str(SEED), "width": str(SIZE),
        "height": str(SIZE), "steps": str(steps), "guidance_scale": str(guidance), "sampler": sampler,
        "scheduler_class": cls.__name__, "scheduler_config": config_json(scheduler_config),
        "unet_config": config_json(pipe.unet.config), "vae_config": config_json(pipe.vae.config),
        "text_encoder_config": pipe.text_encoder.config.to_json_string(),
        "text_encoder_2_config": pipe.text_encoder_2.config.to_json_string(),
    }
    write_golden(os.path.join(OUT, stem + ".safetensors"), tensors, meta)
    img = tensors["image"]
    print(f"{stem}: scheduler {type(pipe.scheduler).__name__}, heads {pipe.unet.config.attention_head_dim}, "
          f"scaling {pipe.vae.config.scaling_factor}, max|latents| {np.abs(tensors['latents_per_step']).max():.3g}, "
          f"image inside (0,1) {float(np.mean((img > 0) & (img < 1))):.0%}, std {img.std():.3g}")


def main():
    if os.environ.get("SDXL_GOLDEN_CASE"):
        run_case(int(os.environ["SDXL_GOLDEN_CASE"]), os.environ["SDXL_GOLDEN_FILE"], os.environ["SDXL_GOLDEN_YAML"])
        shutil.rmtree(HF_CACHE)
        return
    os.makedirs(OUT, exist_ok=True)
    write_fake_hub()
    encoders, unet = make_diffusers_model()
    work = tempfile.mkdtemp(prefix="sdxl_single_file_")
    full = os.path.join(work, "tiny-sdxl.safetensors")
    state = write_single_file(encoders, unet, full)
    partial = {k: v for k, v in state.items() if "token_embedding" not in k and not k.startswith("first_stage_model.")}
    save_file(partial, os.path.join(OUT, "tiny-sdxl.partial.safetensors"))
    yaml_path = os.path.join(OUT, "tiny-sdxl.yaml")
    with open(yaml_path, "w") as f:
        f.write(YAML)
    # Each pipeline in a process of its own, so that no run depends on what an earlier one left in memory.
    for index in range(len(RUNS)):
        env = dict(os.environ, SDXL_GOLDEN_CASE=str(index), SDXL_GOLDEN_FILE=full, SDXL_GOLDEN_YAML=yaml_path)
        subprocess.run([sys.executable, os.path.abspath(__file__), OUT], env=env, check=True)
    for name in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, name)
        print(f"{os.path.getsize(p):>9}  {name}  {hashlib.sha256(open(p, 'rb').read()).hexdigest()[:16]}")
    shutil.rmtree(work)
    shutil.rmtree(HF_CACHE)


if __name__ == "__main__":
    main()
