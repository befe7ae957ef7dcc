"""Write ``panodit_xl2_keys.json``: the official PanoDiT DiT-XL/2 state-dict keys and shapes.

Derived from the module tree described in shared/specs/lookbeyond-videopanda-diffpano.md §1b
and the official source (YiGuYT/LookBeyond:PanoDiT/models/DiT_with_text.py, built on timm's
PatchEmbed/Attention/Mlp), written out by hand here, NOT by instantiating Pano360's module,
so the test comparing the two is not circular.  Run: ``python tests/data/make_panodit_xl2_keys.py``.
"""

import json
import pathlib

D = 1152  # hidden size, DiT-XL
DEPTH = 28
PATCH = 2
IN_CH = 4
OUT_CH = 8  # learn_sigma: eps + variance value
TOKENS = (64 // PATCH) ** 2  # 64x64 latent canvas -> 1024 tokens
TEXT = 1024  # OpenCLIP ViT-H-14 text feature
FREQ = 256  # timestep frequency embedding
MLP = 4 * D  # mlp_ratio 4.0 -> 4608
MOD = 9 * D  # nine adaLN chunks per block -> 10368


def linear(prefix, n_in, n_out, bias=True):
    out = {f"{prefix}.weight": [n_out, n_in]}
    if bias:
        out[f"{prefix}.bias"] = [n_out]
    return out


def official_keys():
    keys = {
        "x_embedder.proj.weight": [D, IN_CH, PATCH, PATCH],
        "x_embedder.proj.bias": [D],
        "x_pos_embed": [1, TOKENS, D],
    }
    keys |= linear("t_embedder.mlp.0", FREQ, D) | linear("t_embedder.mlp.2", D, D)
    keys |= linear("text_embedder.mlp.0", TEXT, D) | linear("text_embedder.mlp.2", D, D)
    for i in range(DEPTH):
        b = f"blocks.{i}"
        keys |= linear(f"{b}.attn.qkv", D, 3 * D) | linear(f"{b}.attn.proj", D, D)
        keys |= linear(f"{b}.mlp.fc1", D, MLP) | linear(f"{b}.mlp.fc2", MLP, D)
        keys |= linear(f"{b}.adaLN_modulation.1", D, MOD)
        for name in ("to_q", "to_k", "to_v"):
            keys |= linear(f"{b}.cross_atten.{name}", D, D, bias=False)
        keys |= linear(f"{b}.cross_atten.to_out.0", D, D)
    keys |= linear("final_layer.linear", D, PATCH * PATCH * OUT_CH)
    keys |= linear("final_layer.adaLN_modulation.1", D, 2 * D)
    return keys


if __name__ == "__main__":
    out = pathlib.Path(__file__).with_name("panodit_xl2_keys.json")
    keys = official_keys()
    doc = {
        "source": "YiGuYT/LookBeyond@ea00c7b PanoDiT/models/DiT_with_text.py DiT-XL/2, input_size 64 (spec §1b)",
        "num_parameters": sum(int(__import__("math").prod(s)) for s in keys.values()),
        "keys": keys,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(keys)} keys, {doc['num_parameters']:,} parameters to {out}")
