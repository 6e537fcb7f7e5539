"""Table 2 and the colour bars on more held-out red-ball clips (toytrain.evaluate's functions).

``python table2_more.py N OUT.json`` on the GPU machine, the shipped ``toy`` set; what
``python -m pix2video.toytrain.evaluate --table2-clips N`` now does inside its report.
"""

import json
import sys
import time

import numpy as np
import torch

from pix2video.models import load_model_set
from pix2video.toytrain import evaluate as ev

n, out = int(sys.argv[1]), sys.argv[2]
m = load_model_set("toy", device="cuda", dtype=torch.float32)
e = ev.engine_for(m)
rows = []
for k in range(n):
    t0 = time.time()
    clip = ev.held_out_clips(1, 8, start=2000 + k, main_colour="red", main_shape="ball")[0]
    c = ev.colour_edit(e, clip, 50)
    r = dict(
        k=k,
        caption=clip.caption,
        p2v=c.warp_pix2video,
        d2i=c.warp_depth2img,
        d2i_clip=c.warp_depth2img_clip_generator,
        per_frame=c.warp_per_frame,
        input=c.warp_input,
        blue=c.blue_fraction,
        outside=c.outside_psnr,
        ratio=c.warp_pix2video / c.warp_depth2img,
    )
    rows.append(r)
    rounded = {a: (round(b, 3) if isinstance(b, float) else b) for a, b in r.items()}
    print(json.dumps(rounded), f"{time.time() - t0:.1f} s", flush=True)
    json.dump(rows, open(out, "w"), indent=1)


def mean(key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


print(
    "clips",
    len(rows),
    "ratio of means %.3f" % (mean("p2v") / mean("d2i")),
    "mean of ratios %.3f" % mean("ratio"),
    "clips <= 0.5: %d" % sum(r["ratio"] <= 0.5 for r in rows),
    "blue %.3f outside %.2f" % (mean("blue"), mean("outside")),
)
