"""How much of the toy UNet's picture its self-attention carries (CPU, float32).

``python attention_share.py OUT.json`` (PYTHONPATH=services:clients): the colour edit of held-out
red-ball clip 0's first 4 frames, per-frame from each frame's inverted x_T (no injection, no
update, 50 steps), then the same with the output of chosen attention layers zeroed. The mean
absolute difference (0..255) from the plain edit bounds what injecting other frames' keys and
values into those layers could change; Pix2Video's injection changed 0.14 to 0.32 grey levels.
"""

import json
import sys

import numpy as np
import torch

from pix2video.engine.settings import EditSettings
from pix2video.models import load_model_set
from pix2video.toytrain import evaluate as ev

torch.set_num_threads(2)
models = load_model_set("toy", device="cpu", dtype=torch.float32)
engine = ev.engine_for(models)
clip = ev.red_ball_clips(1, 4)[0]
vid = ev.invert(engine, clip, None, 50)
plain = EditSettings(prompt=ev.colour_target(clip), num_steps=50, seed=0, inject_layers="none", latent_update="off")


def edit() -> np.ndarray:
    return ev._frames(engine.edit(vid, plain)).astype(np.float32)


def attention(where: str, kind: str) -> list[torch.nn.Module]:
    blocks = models.unet.up_blocks if where == "decoder" else models.unet.down_blocks
    return [getattr(b, kind) for blk in blocks for t in getattr(blk, "attentions", []) for b in t.transformer_blocks]


base = edit()
rows = [dict(layers="none zeroed", diff=0.0, warp=ev.warp_error(base.astype(np.uint8), clip))]
for where, kind in (("decoder", "attn1"), ("encoder", "attn1"), ("decoder", "attn2")):
    hooks = [m.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)) for m in attention(where, kind)]
    try:
        frames = edit()
    finally:
        for h in hooks:
            h.remove()
    per_frame = np.abs(frames - base).mean(axis=(1, 2, 3))
    rows.append(
        dict(
            layers=f"{where} {kind} zeroed ({len(hooks)} layers)",
            diff=float(per_frame.mean()),
            diff_per_frame=[round(float(d), 3) for d in per_frame],
            warp=ev.warp_error(frames.astype(np.uint8), clip),
        )
    )
    print(json.dumps(rows[-1]), flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(rows, f, indent=1)
