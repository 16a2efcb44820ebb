#!/usr/bin/env python3
"""Write a full-size SDXL base 1.0 diffusers folder with random weights, for speed and memory work.

The configs are SDXL base 1.0's published config.json files (sdxl_base_configs.json beside this script); the tensor
names and shapes follow from them exactly as diffusers 0.27.2 / transformers 4.30.2 build the modules
(UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection), so every kernel does the same
work as on the real model. The distributions are /work/shared/tools/make_random_sd.py's (norm weights 1, biases 0,
embeddings N(0, 0.02), other weights N(0, 1/fan_in)), from one seeded numpy generator, written in fp16 (~6.9 GB).
Needs only numpy.

  make_random_sdxl.py --out /work/sdxl-random --tokenizer /work/shared/fixtures/tiny-sd/tokenizer
  make_random_sdxl.py --check-sd15 /work/shared/tools/sd15_manifest.json   # the shape rules against SD 1.5's
  make_random_sdxl.py --check-unet tests/goldens/sdxl/tiny-sdxl/unet        # and against diffusers' tiny SDXL UNet
"""
import argparse, json, os, shutil, struct
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- tensor shapes from the configs -------------------------------------------------------------------------------
def clip_text_shapes(c):  # transformers CLIPTextModel / CLIPTextModelWithProjection
    d, ff = c["hidden_size"], c["intermediate_size"]
    s = {"text_model.embeddings.token_embedding.weight": [c["vocab_size"], d],
         "text_model.embeddings.position_embedding.weight": [c["max_position_embeddings"], d],
         "text_model.final_layer_norm.weight": [d], "text_model.final_layer_norm.bias": [d]}
    for i in range(c["num_hidden_layers"]):
        p = "text_model.encoder.layers.%d." % i
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + "self_attn.%s.weight" % proj], s[p + "self_attn.%s.bias" % proj] = [d, d], [d]
        for norm in ("layer_norm1", "layer_norm2"):
            s[p + norm + ".weight"], s[p + norm + ".bias"] = [d], [d]
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = [ff, d], [ff]
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = [d, ff], [d]
    if c.get("architectures") == ["CLIPTextModelWithProjection"]:
        s["text_projection.weight"] = [c["projection_dim"], d]
    return s


def norm(s, p, c):
    s[p + ".weight"], s[p + ".bias"] = [c], [c]


def conv(s, p, cin, cout, k):
    s[p + ".weight"], s[p + ".bias"] = [cout, cin, k, k], [cout]


def linear(s, p, cin, cout, bias=True):
    s[p + ".weight"] = [cout, cin]
    if bias:
        s[p + ".bias"] = [cout]


def resnet(s, p, cin, cout, temb=None):  # ResnetBlock2D
    norm(s, p + ".norm1", cin)
    conv(s, p + ".conv1", cin, cout, 3)
    if temb:
        linear(s, p + ".time_emb_proj", temb, cout)
    norm(s, p + ".norm2", cout)
    conv(s, p + ".conv2", cout, cout, 3)
    if cin != cout:
        conv(s, p + ".conv_shortcut", cin, cout, 1)


def transformer(s, p, c, layers, ctx, linear_proj):  # Transformer2DModel of BasicTransformerBlocks
    norm(s, p + ".norm", c)
    proj = (lambda q: linear(s, q, c, c)) if linear_proj else (lambda q: conv(s, q, c, c, 1))
    proj(p + ".proj_in")
    for l in range(layers):
        b = p + ".transformer_blocks.%d" % l
        for n in ("norm1", "norm2", "norm3"):
            norm(s, b + "." + n, c)
        for a, kv in (("attn1", c), ("attn2", ctx)):
            linear(s, b + "." + a + ".to_q", c, c, bias=False)
            linear(s, b + "." + a + ".to_k", kv, c, bias=False)
            linear(s, b + "." + a + ".to_v", kv, c, bias=False)
            linear(s, b + "." + a + ".to_out.0", c, c)
        linear(s, b + ".ff.net.0.proj", c, 8 * c)  # GEGLU
        linear(s, b + ".ff.net.2", 4 * c, c)
    proj(p + ".proj_out")


def unet_shapes(c):  # diffusers UNet2DConditionModel (the SD 1.x/2.x/SDXL subset)
    ch, L = c["block_out_channels"], c["layers_per_block"]
    n = len(ch)
    tl = c.get("transformer_layers_per_block") or 1
    tl = tl if isinstance(tl, list) else [tl] * n
    ctx, lin = c["cross_attention_dim"], c.get("use_linear_projection", False)
    temb = 4 * ch[0]
    s = {}
    conv(s, "conv_in", c["in_channels"], ch[0], c.get("conv_in_kernel", 3))
    linear(s, "time_embedding.linear_1", ch[0], temb)
    linear(s, "time_embedding.linear_2", temb, temb)
    if c.get("addition_embed_type") == "text_time":
        linear(s, "add_embedding.linear_1", c["projection_class_embeddings_input_dim"], temb)
        linear(s, "add_embedding.linear_2", temb, temb)
    out = ch[0]
    for i, kind in enumerate(c["down_block_types"]):
        cin, out = out, ch[i]
        for j in range(L):
            resnet(s, "down_blocks.%d.resnets.%d" % (i, j), cin if j == 0 else out, out, temb)
            if kind == "CrossAttnDownBlock2D":
                transformer(s, "down_blocks.%d.attentions.%d" % (i, j), out, tl[i], ctx, lin)
        if i < n - 1:
            conv(s, "down_blocks.%d.downsamplers.0.conv" % i, out, out, 3)
    resnet(s, "mid_block.resnets.0", ch[-1], ch[-1], temb)
    transformer(s, "mid_block.attentions.0", ch[-1], tl[-1], ctx, lin)
    resnet(s, "mid_block.resnets.1", ch[-1], ch[-1], temb)
    rch, rtl = ch[::-1], tl[::-1]
    prev = rch[0]
    for i, kind in enumerate(c["up_block_types"]):
        out = rch[i]
        below = rch[min(i + 1, n - 1)]  # the skip channels of the level's first down resnet input
        for j in range(L + 1):
            skip = below if j == L else out
            resnet(s, "up_blocks.%d.resnets.%d" % (i, j), (prev if j == 0 else out) + skip, out, temb)
            if kind == "CrossAttnUpBlock2D":
                transformer(s, "up_blocks.%d.attentions.%d" % (i, j), out, rtl[i], ctx, lin)
        if i < n - 1:
            conv(s, "up_blocks.%d.upsamplers.0.conv" % i, out, out, 3)
        prev = out
    norm(s, "conv_norm_out", ch[0])
    conv(s, "conv_out", ch[0], c["out_channels"], c.get("conv_out_kernel", 3))
    return s


def vae_shapes(c):  # diffusers AutoencoderKL
    ch, L, lat = c["block_out_channels"], c["layers_per_block"], c["latent_channels"]
    s = {}

    def mid(p, m):
        resnet(s, p + ".resnets.0", m, m)
        norm(s, p + ".attentions.0.group_norm", m)
        for q in ("to_q", "to_k", "to_v", "to_out.0"):
            linear(s, p + ".attentions.0." + q, m, m)
        resnet(s, p + ".resnets.1", m, m)

    conv(s, "encoder.conv_in", c["in_channels"], ch[0], 3)
    out = ch[0]
    for i in range(len(ch)):
        cin, out = out, ch[i]
        for j in range(L):
            resnet(s, "encoder.down_blocks.%d.resnets.%d" % (i, j), cin if j == 0 else out, out)
        if i < len(ch) - 1:
            conv(s, "encoder.down_blocks.%d.downsamplers.0.conv" % i, out, out, 3)
    mid("encoder.mid_block", ch[-1])
    norm(s, "encoder.conv_norm_out", ch[-1])
    conv(s, "encoder.conv_out", ch[-1], 2 * lat, 3)
    conv(s, "quant_conv", 2 * lat, 2 * lat, 1)
    conv(s, "post_quant_conv", lat, lat, 1)
    conv(s, "decoder.conv_in", lat, ch[-1], 3)
    mid("decoder.mid_block", ch[-1])
    out = ch[-1]
    for i, co in enumerate(ch[::-1]):
        cin, out = out, co
        for j in range(L + 1):
            resnet(s, "decoder.up_blocks.%d.resnets.%d" % (i, j), cin if j == 0 else out, out)
        if i < len(ch) - 1:
            conv(s, "decoder.up_blocks.%d.upsamplers.0.conv" % i, out, out, 3)
    norm(s, "decoder.conv_norm_out", ch[0])
    conv(s, "decoder.conv_out", ch[0], c["out_channels"], 3)
    return s


# ---- writing (make_random_sd.py's distributions and safetensors writer) -------------------------------------------
def random_tensor(name, shape, rng):
    if len(shape) == 1:
        return np.ones(shape, np.float32) if name.endswith("weight") else np.zeros(shape, np.float32)
    if "embedding" in name:
        return 0.02 * rng.standard_normal(shape, dtype=np.float32)
    fan_in = int(np.prod(shape[1:]))
    return rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))


def write_safetensors(path, shapes, rng):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(shapes):
        n = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "F16", "shape": shapes[name], "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name in sorted(shapes):
            f.write(np.ascontiguousarray(random_tensor(name, shapes[name], rng).astype(np.float16)).tobytes())
    return off


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def check_folder_shapes(folder):
    """The UNet rule reproduces a diffusers-made UNet's names and shapes (e.g. tests/goldens/sdxl/tiny-sdxl/unet)."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    with open(os.path.join(folder, "diffusion_pytorch_model.safetensors"), "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    want = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    got = unet_shapes(cfg)
    differing = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert not differing, differing[:6]
    print("unet: %d tensors as in %s" % (len(got), folder))


def check_sd15(manifest_path):
    """The shape rules reproduce make_random_sd.py's SD 1.5 manifest (names and shapes taken from the real model)."""
    m = json.load(open(manifest_path))
    for part, rule in (("unet", unet_shapes), ("vae", vae_shapes), ("text_encoder", clip_text_shapes)):
        want = {k: v for k, v in m["diffusers"][part].items() if not k.endswith("position_ids")}
        got = rule(m["configs"][part])
        differing = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        assert not differing, (part, differing[:6])
        print("%s: %d tensors as in the SD 1.5 manifest" % (part, len(got)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--tokenizer", help="a CLIP tokenizer folder (vocab.json, merges.txt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-sd15", metavar="MANIFEST")
    ap.add_argument("--check-unet", metavar="FOLDER", help="a diffusers UNet folder to check the shape rule against")
    args = ap.parse_args()
    if args.check_unet:
        check_folder_shapes(args.check_unet)
        return
    if args.check_sd15:
        check_sd15(args.check_sd15)
        return
    if not args.out or not args.tokenizer:
        ap.error("--out and --tokenizer are needed")
    cfg = json.load(open(os.path.join(HERE, "sdxl_base_configs.json")))
    rng = np.random.default_rng(args.seed)
    write_json(os.path.join(args.out, "model_index.json"), cfg["model_index"])
    write_json(os.path.join(args.out, "scheduler", "scheduler_config.json"), cfg["scheduler"])
    parts = (("text_encoder", "model.safetensors", clip_text_shapes),
             ("text_encoder_2", "model.safetensors", clip_text_shapes),
             ("unet", "diffusion_pytorch_model.safetensors", unet_shapes),
             ("vae", "diffusion_pytorch_model.safetensors", vae_shapes))
    for part, fname, rule in parts:
        write_json(os.path.join(args.out, part, "config.json"), cfg[part])
        size = write_safetensors(os.path.join(args.out, part, fname), rule(cfg[part]), rng)
        print("%s: %.2f GB" % (part, size / 1e9), flush=True)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    for folder, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):  # SDXL's tokenizer_2 pads with "!"
        d = os.path.join(args.out, folder)
        os.makedirs(d, exist_ok=True)
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(args.tokenizer, f), os.path.join(d, f))
        write_json(os.path.join(d, "special_tokens_map.json"), dict(special, pad_token=pad))
        write_json(os.path.join(d, "tokenizer_config.json"),
                   dict(special, pad_token=pad, tokenizer_class="CLIPTokenizer", model_max_length=77,
                        do_lower_case=True))


if __name__ == "__main__":
    main()
