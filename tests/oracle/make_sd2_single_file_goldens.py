#!/usr/bin/env python3
"""Goldens for SD 2.x single-file checkpoints, made by diffusers 0.27.2's StableDiffusionPipeline.from_single_file.

What it makes (OUT_DIR, default tests/goldens/tiny-sd2/ of this repository)
    tiny-sd2.partial.safetensors  a tiny random SD 2.x-like model in the ORIGINAL single-file layout, as SD 2.1's
                                  v2-1_768-ema-pruned.safetensors has it (model.diffusion_model.*,
                                  first_stage_model.*, cond_stage_model.model.* with fused attn.in_proj_weight,
                                  text_projection, and one more transformer layer than diffusers keeps), fp16,
                                  WITHOUT two parts the shared fixtures already hold, which the tests add back
                                  (tests/sd2_single_file_fixture.h), to keep the goldens small:
                                  cond_stage_model.model.token_embedding.weight (49408 x 64, 12 MB) is
                                  text_model.embeddings.token_embedding.weight of
                                  ../shared/fixtures/tiny-sd/text_encoder/model.safetensors (fp32), and the VAE
                                  (first_stage_model.*) is tiny-sd's, from ../shared/fixtures/tiny-sd.safetensors.
    v.yaml, eps.yaml              the A1111-style original configs (v2-inference-v.yaml / v2-inference.yaml with
                                  the tiny model's sizes): with and without `parameterization: "v"`.
    sd2_<variant>_<sampler>_<steps>steps_cfg<g>.safetensors
                                  a pipeline call of `from_single_file(<full file>, original_config_file=<yaml>)`
                                  at 64x64, seed 42: `image` [1,64,64,3], `latents_per_step` [N,1,4,8,8], `timesteps`,
                                  `text_embeddings` [2,77,64] (uncond, cond: text_encoder(ids)[0]) and `input_ids`
                                  [2,77] (I64) from the pipeline's own tokenizer; metadata: the scheduler config
                                  from_single_file built (`scheduler_config`), the unet and text encoder configs.
    prediction_rule.json          diffusers' own choice for files WITHOUT a yaml (infer_original_config_file,
                                  set_image_size, create_scheduler_from_ldm) on name/shape-only checkpoints: SD 2.x
                                  (to_k width 1024) with and without global_step 875000, and a narrower one.

How the real code is run offline
    * from_single_file needs the hub's "stabilityai/stable-diffusion-2" text_encoder config and tokenizer; they are
      written into a private HF cache (HF_HUB_CACHE) with the tiny sizes: the text encoder config of SD 2 with
      hidden 64, 1 head, num_hidden_layers = file layers - 1 (diffusers keeps 23 of ViT-H's 24), and SD 2's
      tokenizer files (pad token "!") over the fixture's vocab.json/merges.txt (the real CLIP vocabulary).
    * This environment has no `accelerate`, so diffusers takes its `load_state_dict` branch, which is strict: it
      would refuse the extra last layer (its SD_2_TEXT_ENCODER_KEYS_TO_IGNORE names resblocks.23 of ViT-H only) and
      it pops position_ids. With accelerate (the usual install) diffusers skips unexpected keys and keeps the
      position_ids buffer. CLIPTextModel.load_state_dict is therefore called non-strict here, after checking that the
      only unexpected keys are the dropped layer's and the only missing key is position_ids (= arange).
    * infer_original_config_file downloads a yaml; for the rule it is given the URL's content from this script.

Run:  . $ORACLE_DIR/env.sh && /usr/bin/python3 tests/oracle/make_sd2_single_file_goldens.py [OUT_DIR]
"""
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("SDCPU_SHARED", os.path.join(REPO, "..", "shared"))
FIXTURE_TE = os.path.join(SHARED, "fixtures", "tiny-sd", "text_encoder", "model.safetensors")
FIXTURE_SINGLE_FILE = os.path.join(SHARED, "fixtures", "tiny-sd.safetensors")
FIXTURE_TOKENIZER = os.path.join(SHARED, "fixtures", "tiny-sd", "tokenizer")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "goldens", "tiny-sd2")

HF_CACHE = tempfile.mkdtemp(prefix="sd2_hf_cache_")
# Read when huggingface_hub and transformers are imported (transformers 4.30.2 has its own names for it).
for _name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
    os.environ[_name] = HF_CACHE

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

import diffusers  # noqa: E402
from diffusers import (DPMSolverMultistepScheduler, EulerDiscreteScheduler,  # noqa: E402
                       StableDiffusionPipeline, UNet2DConditionModel)
from diffusers.loaders import single_file_utils  # noqa: E402

sys.path.insert(0, HERE)
import make_pipeline_goldens  # noqa: E402
from make_pipeline_goldens import write_golden  # noqa: E402

make_pipeline_goldens._DT.setdefault(np.dtype(np.int64), "I64")  # input_ids

sys.path.insert(0, os.path.join(os.environ["DIFFUSERS_SRC"], "scripts"))
import convert_diffusers_to_original_stable_diffusion as to_original  # noqa: E402

assert diffusers.__version__ == "0.27.2", diffusers.__version__
torch.set_num_threads(2)

PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 42
SIZE = 64
TEXT_LAYERS_IN_FILE = 3  # diffusers keeps 2 (drops the last, as SD 2.x uses the penultimate layer)
HIDDEN = 64
MADE_BY = "tests/oracle/make_sd2_single_file_goldens.py: StableDiffusionPipeline.from_single_file (diffusers 0.27.2)"

# The tiny model's original config: Stability's v2-inference-v.yaml with the sizes changed. num_head_channels 16 on
# 32/64 channels gives attention_head_dim [2, 4] (create_unet_diffusers_config).
YAML = """model:
  base_learning_rate: 1.0e-4
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
{parameterization}    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: 16
    channels: 4
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False # we set this to false because this is an inference only config

    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        use_checkpoint: True
        use_fp16: True
        image_size: 32 # unused
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [ 1 ]
        num_res_blocks: 1
        channel_mult: [ 1, 2 ]
        num_head_channels: 16 # need to fix for flash-attn
        use_spatial_transformer: True
        use_linear_in_transformer: True
        transformer_depth: 1
        context_dim: 64
        legacy: False

    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          #attn_type: "vanilla-xformers"
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult:
          - 1
          - 1
          - 2
          - 2
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity

    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        freeze: True
        layer: "penultimate"
"""

# What stabilityai/stable-diffusion-2's text_encoder/config.json says, at the tiny sizes.
TEXT_CONFIG = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": HIDDEN, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 4 * HIDDEN, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": HIDDEN // 64,
    "num_hidden_layers": TEXT_LAYERS_IN_FILE - 1, "pad_token_id": 1, "projection_dim": 512,
    "torch_dtype": "float32", "vocab_size": 49408,
}
# stabilityai/stable-diffusion-2's tokenizer files (vocab.json and merges.txt are openai/clip-vit-large-patch14's).
TOKENIZER_CONFIG = {
    "add_prefix_space": False, "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": False,
                                             "normalized": True, "rstrip": False, "single_word": False},
    "do_lower_case": True, "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False,
                                         "normalized": True, "rstrip": False, "single_word": False},
    "errors": "replace", "model_max_length": 77, "name_or_path": "stabilityai/stable-diffusion-2",
    "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
    "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": True,
                  "rstrip": False, "single_word": False},
}
SPECIAL_TOKENS_MAP = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
                      "unk_token": "<|endoftext|>"}


def write_fake_hub():
    snapshot = "0" * 40
    repo = os.path.join(HF_CACHE, "models--stabilityai--stable-diffusion-2")
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(snapshot)
    te = os.path.join(repo, "snapshots", snapshot, "text_encoder")
    tok = os.path.join(repo, "snapshots", snapshot, "tokenizer")
    os.makedirs(te)
    os.makedirs(tok)
    with open(os.path.join(te, "config.json"), "w") as f:
        json.dump(TEXT_CONFIG, f)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(FIXTURE_TOKENIZER, name), os.path.join(tok, name))
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f)
    with open(os.path.join(tok, "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_TOKENS_MAP, f)


def make_diffusers_model():
    torch.manual_seed(0)
    cfg = dict(TEXT_CONFIG, num_hidden_layers=TEXT_LAYERS_IN_FILE)
    cfg.pop("architectures")
    cfg.pop("torch_dtype")
    text = CLIPTextModel(CLIPTextConfig(**cfg)).eval()
    token_embedding = load_file(FIXTURE_TE)["text_model.embeddings.token_embedding.weight"]
    with torch.no_grad():
        text.text_model.embeddings.token_embedding.weight.copy_(token_embedding)
        # transformers' init draws N(0, 0.02) for the linears: larger weights so that the layers matter.
        for name, p in text.named_parameters():
            if p.dim() == 2 and (name.endswith("proj.weight") or ".mlp.fc" in name):
                p.normal_(0.0, 1.0 / np.sqrt(p.shape[1]))
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.05)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=HIDDEN, attention_head_dim=[2, 4], use_linear_projection=True).eval()
    return text, unet


def open_clip_state_dict(text):
    """The inverse of convert_open_clip_checkpoint: CLIPTextModel -> OpenCLIP's text tower names."""
    sd = text.state_dict()
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        # x @ text_projection; diffusers splits in_proj at text_projection.shape[0] rows (the width).
        "text_projection": torch.randn(HIDDEN, 32, generator=torch.Generator().manual_seed(1)),
        "logit_scale": torch.tensor(4.6052),
    }
    for i in range(TEXT_LAYERS_IN_FILE):
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        out[dst + "attn.in_proj_weight"] = torch.cat([sd[src + f"self_attn.{c}_proj.weight"] for c in "qkv"], 0)
        out[dst + "attn.in_proj_bias"] = torch.cat([sd[src + f"self_attn.{c}_proj.bias"] for c in "qkv"], 0)
        for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[dst + b + ".weight"] = sd[src + a + ".weight"]
            out[dst + b + ".bias"] = sd[src + a + ".bias"]
    return out


def unet_layer_map(unet):
    """scripts/convert_diffusers_to_original_stable_diffusion.py's unet_conversion_map_layer, which hard-codes SD's
    4 levels of 2 layers with attention on levels 0-2, built by the same rules for this UNet's levels and layers."""
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


def write_single_file(text, unet, path):
    to_original.unet_conversion_map_layer = unet_layer_map(unet)
    state = {"model.diffusion_model." + k: v for k, v in
             to_original.convert_unet_state_dict(unet.state_dict()).items()}
    state.update({k: v for k, v in load_file(FIXTURE_SINGLE_FILE).items() if k.startswith("first_stage_model.")})
    state.update({"cond_stage_model.model." + k: v for k, v in open_clip_state_dict(text).items()})
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    state["cond_stage_model.model.token_embedding.weight"] = text.text_model.embeddings.token_embedding.weight.detach()
    save_file(state, path)
    return state


def load_pipeline(path, yaml_path):
    """StableDiffusionPipeline.from_single_file, with CLIPTextModel.load_state_dict made non-strict for exactly the
    differences accelerate's branch tolerates (see the module docstring)."""
    original = CLIPTextModel.load_state_dict

    def load_state_dict(self, state_dict, strict=True):
        result = original(self, state_dict, strict=False)
        dropped = f"text_model.encoder.layers.{TEXT_LAYERS_IN_FILE - 1}."
        assert all(k.startswith(dropped) for k in result.unexpected_keys), result.unexpected_keys
        assert len(result.unexpected_keys) == 16, result.unexpected_keys  # 12 tensors, q/k/v split: 16
        assert result.missing_keys == ["text_model.embeddings.position_ids"], result.missing_keys
        return result

    CLIPTextModel.load_state_dict = load_state_dict
    try:
        pipe = StableDiffusionPipeline.from_single_file(path, original_config_file=yaml_path, local_files_only=True,
                                                        load_safety_checker=False)
    finally:
        CLIPTextModel.load_state_dict = original
    assert torch.equal(pipe.text_encoder.text_model.embeddings.position_ids, torch.arange(77)[None])
    return pipe


def run_pipeline(pipe, scheduler_cls, steps, guidance):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    latents_per_step = []

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        latents_per_step.append(callback_kwargs["latents"].detach().clone())
        return callback_kwargs

    generator = torch.Generator("cpu").manual_seed(SEED)
    out = pipe(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=steps,
               guidance_scale=guidance, generator=generator, output_type="np",
               callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    ids = pipe.tokenizer(["", PROMPT], padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        emb = pipe.text_encoder(ids)[0]
    return {
        "image": np.asarray(out.images, dtype=np.float32),
        "latents_per_step": torch.stack(latents_per_step).numpy().astype(np.float32),
        "timesteps": pipe.scheduler.timesteps.to(torch.float64).numpy(),
        "text_embeddings": emb.numpy().astype(np.float32),
        "input_ids": ids.numpy().astype(np.int64),
    }


def config_json(config):
    """A diffusers config as JSON, byte-for-byte reproducible (`_use_default_values` is built from a set)."""
    config = dict(config)
    if "_use_default_values" in config:
        config["_use_default_values"] = sorted(config["_use_default_values"])
    return json.dumps(config, sort_keys=True, default=list)


def prediction_rule():
    """diffusers' choices for a file without a yaml, from its own functions, on name/shape-only checkpoints."""
    fetched = []

    class Response:
        def __init__(self, url):
            fetched.append(url)
            self.content = YAML.format(parameterization='    parameterization: "v"\n').encode()

    key = single_file_utils.CHECKPOINT_KEY_NAMES["v2"]
    cases = {
        "to_k width 1024": {key: torch.empty(320, 1024)},
        "to_k width 1024, global_step 875000": {key: torch.empty(320, 1024), "global_step": torch.tensor(875000)},
        "to_k width 1024, global_step 100": {key: torch.empty(320, 1024), "global_step": torch.tensor(100)},
        "to_k width 768": {key: torch.empty(320, 768)},
    }
    results = {}
    original_get = single_file_utils.requests.get
    single_file_utils.requests.get = lambda url: Response(url)
    try:
        for name, checkpoint in cases.items():
            del fetched[:]
            cfg_file = single_file_utils.infer_original_config_file("StableDiffusionPipeline", checkpoint)
            url = fetched[0]
            import yaml
            if url != single_file_utils.CONFIG_URLS["v2"]:
                results[name] = {"config_url": url}
                continue
            original_config = yaml.safe_load(cfg_file)
            image_size = single_file_utils.set_image_size("StableDiffusionPipeline", original_config, checkpoint)
            scheduler = single_file_utils.create_scheduler_from_ldm("StableDiffusionPipeline", original_config,
                                                                    checkpoint)["scheduler"]
            results[name] = {"config_url": url, "image_size": int(image_size),
                             "prediction_type": scheduler.config.prediction_type}
    finally:
        single_file_utils.requests.get = original_get
    return results


def main():
    os.makedirs(OUT, exist_ok=True)
    write_fake_hub()
    text, unet = make_diffusers_model()
    work = tempfile.mkdtemp(prefix="sd2_single_file_")
    full = os.path.join(work, "tiny-sd2.safetensors")
    state = write_single_file(text, unet, full)
    partial = {k: v for k, v in state.items()
               if k != "cond_stage_model.model.token_embedding.weight" and not k.startswith("first_stage_model.")}
    save_file(partial, os.path.join(OUT, "tiny-sd2.partial.safetensors"))

    yamls = {"v": YAML.format(parameterization='    parameterization: "v"\n'), "eps": YAML.format(parameterization="")}
    for name, text_yaml in yamls.items():
        with open(os.path.join(OUT, name + ".yaml"), "w") as f:
            f.write(text_yaml)

    runs = [("v", EulerDiscreteScheduler, "euler", 6, 7.5), ("v", DPMSolverMultistepScheduler, "dpmpp_2m", 8, 7.5),
            ("eps", DPMSolverMultistepScheduler, "dpmpp_2m", 8, 7.5)]
    for variant, cls, sampler, steps, guidance in runs:
        pipe = load_pipeline(full, os.path.join(OUT, variant + ".yaml"))
        scheduler_config = dict(pipe.scheduler.config)
        tensors = run_pipeline(pipe, cls, steps, guidance)
        stem = f"sd2_{variant}_{sampler}_{steps}steps_cfg{guidance:g}"
        meta = {
            "made_by": MADE_BY, "prompt": PROMPT, "negative_prompt": "", "seed": str(SEED), "width": str(SIZE),
            "height": str(SIZE), "steps": str(steps), "guidance_scale": str(guidance), "sampler": sampler,
            "scheduler_class": cls.__name__,
            "scheduler_config": config_json(scheduler_config),
            "unet_config": config_json(pipe.unet.config),
            "vae_config": config_json(pipe.vae.config),
            "text_encoder_config": pipe.text_encoder.config.to_json_string(),
        }
        write_golden(os.path.join(OUT, stem + ".safetensors"), tensors, meta)
        img = tensors["image"]
        inner = float(np.mean((img > 0) & (img < 1)))
        print(f"{stem}: prediction_type {scheduler_config['prediction_type']}, heads "
              f"{pipe.unet.config.attention_head_dim}, text layers {pipe.text_encoder.config.num_hidden_layers}, "
              f"max|latents| {np.abs(tensors['latents_per_step']).max():.3g}, image inside (0,1) {inner:.0%}, "
              f"max|emb| {np.abs(tensors['text_embeddings']).max():.3g}, pad id {tensors['input_ids'][1, -1]}")

    rule = prediction_rule()
    with open(os.path.join(OUT, "prediction_rule.json"), "w") as f:
        json.dump({"made_by": MADE_BY, "cases": rule}, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(rule, indent=2))
    for name in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, name)
        print(f"{os.path.getsize(p):>9}  {name}  {hashlib.sha256(open(p, 'rb').read()).hexdigest()[:16]}")
    shutil.rmtree(work)
    shutil.rmtree(HF_CACHE)


if __name__ == "__main__":
    main()
