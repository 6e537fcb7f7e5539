"""Layout of an inverted video in an object store.

    videos/<video_id>/<attempt>/frames/<index:06d>.safetensors   x_T (4, h, w) and depth (1, h, w)
    videos/<video_id>/manifest.json                              written last

The manifest lists every object with its SHA-256; it is written only after all
objects are in place, so a video without a manifest does not exist for
readers, and each object is verified against it when read.

Each write goes under a fresh ``attempt`` prefix: two writers of the same
video (two processes or replicas racing on a new clip) never touch each
other's objects, and a reader holding one manifest keeps reading valid objects
whichever manifest lands last. Objects of attempts that died before their
manifest stay unreferenced.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CorruptObject, NotFound
from .base import ObjectStore

FORMAT_VERSION = 1


def video_prefix(video_id: str) -> str:
    return f"videos/{video_id}/"


def manifest_key(video_id: str) -> str:
    return video_prefix(video_id) + "manifest.json"


def frame_key(video_id: str, index: int, attempt: str) -> str:
    return video_prefix(video_id) + f"{attempt}/frames/{index:06d}.safetensors"


@dataclass
class Manifest:
    video_id: str
    num_frames: int
    width: int
    height: int
    num_steps: int
    source_prompt: str
    model: str
    fps: float
    settings: dict = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)  # object key -> sha256
    attempt: str = ""  # prefix of this write's objects
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        d = json.loads(data)
        if not isinstance(d, dict):
            raise CorruptObject(f"manifest: expected a JSON object, got {type(d).__name__}")
        if d.get("format_version") != FORMAT_VERSION:
            raise CorruptObject(f"manifest: unsupported format_version {d.get('format_version')!r}")
        return cls(**d)


def read_manifest(store: ObjectStore, video_id: str) -> Manifest | None:
    """The video's manifest, or None when the video is absent or half-written."""
    try:
        data = store.get(manifest_key(video_id))
    except NotFound:
        return None
    try:
        manifest = Manifest.from_json(data)
    except (ValueError, TypeError) as exc:
        raise CorruptObject(f"manifest of video {video_id!r} is unreadable: {exc}") from exc
    if manifest.video_id != video_id:
        raise CorruptObject(f"manifest of video {video_id!r} names another video {manifest.video_id!r}")
    return manifest


def write_video_record(store: ObjectStore, manifest: Manifest, latents: torch.Tensor, depth: torch.Tensor) -> Manifest:
    """Writes every frame object, then the manifest (with checksums) last."""
    checksums = {}
    manifest.attempt = uuid.uuid4().hex[:12]
    for i in range(manifest.num_frames):
        data = st_save({"latent": latents[i].contiguous().cpu(), "depth": depth[i].float().contiguous().cpu()})
        key = frame_key(manifest.video_id, i, manifest.attempt)
        store.put(key, data)
        checksums[key] = hashlib.sha256(data).hexdigest()
    manifest.checksums = checksums
    store.put(manifest_key(manifest.video_id), manifest.to_json())
    return manifest


class StoredVideo:
    """A stored inverted video read frame by frame (the editor's FrameSource).

    Only the frame being admitted is read, so editing a long video does not
    hold all of it in memory.
    """

    def __init__(self, store: ObjectStore, video_id: str):
        manifest = read_manifest(store, video_id)
        if manifest is None:
            raise NotFound(f"video_id: no inverted video {video_id!r} in the store")
        self.store = store
        self.manifest = manifest
        self.num_frames = manifest.num_frames
        self.num_steps = manifest.num_steps
        # The timestep offset the video was inverted with (None: the model's);
        # an edit must denoise on the same timesteps.
        self.steps_offset = (manifest.settings or {}).get("steps_offset")
        self._cached: tuple[int, dict[str, torch.Tensor]] | None = None

    def _frame(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame index {index} out of range [0, {self.num_frames})")
        if self._cached is None or self._cached[0] != index:
            key = frame_key(self.manifest.video_id, index, self.manifest.attempt)
            try:
                data = self.store.get(key)
            except NotFound:
                raise CorruptObject(f"object {key!r} listed in the manifest is missing from the store") from None
            if hashlib.sha256(data).hexdigest() != self.manifest.checksums.get(key):
                raise CorruptObject(f"object {key!r} does not match its checksum in the manifest")
            self._cached = (index, st_load(data))
        return self._cached[1]

    def latent(self, index: int) -> torch.Tensor:
        return self._frame(index)["latent"]

    def depth(self, index: int) -> torch.Tensor:
        return self._frame(index)["depth"]
