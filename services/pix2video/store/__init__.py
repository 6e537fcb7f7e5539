"""Latent stores: where inverted videos (x_T, depth, caption, manifest) live."""

from .base import ObjectStore
from .local import LocalDiskStore
from .videos import Manifest, StoredVideo, read_manifest, write_video_record

__all__ = ["ObjectStore", "LocalDiskStore", "Manifest", "StoredVideo", "read_manifest", "write_video_record"]
