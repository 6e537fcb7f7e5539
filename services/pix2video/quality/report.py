"""One clip's quality figures, and how they are printed and stored."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

# The paper's Table 2 (Ceylan et al., ICCV 2023), for side-by-side tables.
PAPER_TABLE_2 = {
    "Pix2Video": (0.2891, 0.9767, 228.62),
    "without the latent update": (0.2893, 0.9740, 371.18),
    "per-frame SDEdit": (0.2775, 0.8731, 2324.29),
}


@dataclass(frozen=True)
class QualityReport:
    """CLIP-Text, CLIP-Image and Pixel-MSE of one edited clip."""

    frames: int
    clip_model: str
    prompt: str
    clip_text: float
    clip_image: float
    pixel_mse: float | None = None  # None without source frames
    occluded_fraction: float | None = None
    flow_method: str | None = None
    pixel_mse_per_pair: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown_table(rows: dict[str, QualityReport]) -> str:
    """``| method | CLIP-Text | CLIP-Image | Pixel-MSE | occluded |``, one row per entry."""
    lines = [
        "| method | CLIP-Text | CLIP-Image | Pixel-MSE | occluded |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {_fmt(r.clip_text, 4)} | {_fmt(r.clip_image, 4)} | {_fmt(r.pixel_mse, 2)} "
            f"| {_fmt(None if r.occluded_fraction is None else 100 * r.occluded_fraction, 1)}% |"
        )
    return "\n".join(lines)


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def print_quality(q) -> None:
    """Prints the editor's figures of a finished edit (an SDK ``EditQuality``, or None)."""
    if q is None:
        print("quality: not measured (the edit was reopened from a later frame on another replica)")
        return
    print(
        f"CLIP-Text {q.clip_text:.4f}  CLIP-Image {q.clip_image:.4f}  "
        f"({q.frames} frames, measured by the editor in {q.seconds:.2f} s; Pixel-MSE: pix2video eval --source)"
    )
