"""Where the toy edit's flicker comes from: Table 2's figures against the guidance scale (CPU).

``python guidance_sweep.py OUT.json`` (PYTHONPATH=services:clients): held-out red-ball clip 0's
first 4 frames, 50 steps, float32. At each guidance scale: Pix2Video (anchor+previous, update
on), per-frame editing from inversion (no injection, no update) and per-frame depth2img with the
same seed; their flow-warped errors, and whether the ball turns blue. The documented protocol
is guidance 7.5.
"""

import json
import sys

import torch

from pix2video.engine.settings import EditSettings
from pix2video.models import load_model_set
from pix2video.toytrain import evaluate as ev

torch.set_num_threads(2)
models = load_model_set("toy", device="cpu", dtype=torch.float32)
engine = ev.engine_for(models)
clip = ev.red_ball_clips(1, 4)[0]
target = ev.colour_target(clip)
vid = ev.invert(engine, clip, None, 50)
rows = []
for guidance in (7.5, 5.0, 3.0, 1.5):
    common = dict(prompt=target, num_steps=50, seed=0, guidance_scale=guidance)
    p2v = ev._frames(engine.edit(vid, EditSettings(**common)))
    per_frame = ev._frames(engine.edit(vid, EditSettings(**common, inject_layers="none", latent_update="off")))
    d2i = ev.per_frame_depth2img(models, clip.frames, target, 50, 0, per_clip=False, guidance=guidance)
    fig = ev.colour_figures(clip, p2v)
    rows.append(
        dict(
            guidance=guidance,
            p2v=fig["warp"],
            per_frame=ev.warp_error(per_frame, clip),
            d2i=ev.warp_error(d2i, clip),
            blue=fig["blue_fraction"],
            outside=fig["outside_psnr"],
        )
    )
    rows[-1]["ratio"] = rows[-1]["p2v"] / rows[-1]["d2i"]
    print(json.dumps(rows[-1]), flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(rows, f, indent=1)
