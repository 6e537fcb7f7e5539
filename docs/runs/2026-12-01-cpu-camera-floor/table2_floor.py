"""Table 2 on chosen held-out red-ball clips, their camera's sideways speed floored.

``python table2_floor.py OUT.json FLOOR K [K ...]`` (PYTHONPATH=services:clients; CPU, float32):
toytrain.evaluate's colour edit on clip K of ``red_ball_clips`` with ``min_camera_speed=FLOOR``,
one JSON row per clip, written after each clip. The shipped ``toy`` set, 8 frames, 50 steps.
"""

import json
import sys
import time

import numpy as np
import torch

from pix2video.models import load_model_set
from pix2video.toytrain import evaluate as ev

out, floor, ks = sys.argv[1], float(sys.argv[2]), [int(k) for k in sys.argv[3:]]
torch.set_num_threads(2)
engine = ev.engine_for(load_model_set("toy", device="cpu", dtype=torch.float32))
rows = []
for k in ks:
    t0 = time.time()
    clip = ev.red_ball_clips(1, 8, floor, first=k)[0]
    h, w = clip.prev_xy.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    median_flow = float(np.median(np.hypot(clip.prev_xy[1:, ..., 0] - xx, clip.prev_xy[1:, ..., 1] - yy)))
    c = ev.colour_edit(engine, clip, 50)
    row = dict(
        k=k,
        floor=floor,
        camera_vx=clip.scene.camera.vx,
        median_flow_px=median_flow,
        p2v=c.warp_pix2video,
        d2i=c.warp_depth2img,
        per_frame=c.warp_per_frame,
        input=c.warp_input,
        blue=c.blue_fraction,
        outside=c.outside_psnr,
        ratio=c.warp_pix2video / c.warp_depth2img,
        seconds=time.time() - t0,
    )
    rows.append(row)
    print(json.dumps({a: round(b, 3) if isinstance(b, float) else b for a, b in row.items()}), flush=True)
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
