from __future__ import annotations

import re
from dataclasses import dataclass

from ...engine.settings import MAX_FRAMES_IN_FLIGHT
from ...errors import InvalidInput
from ..common.runner_settings import UNetRunnerSettingsMixin
from ..common.settings import ModelServerSettings
from ..common.store_settings import StoreSettingsMixin


@dataclass(frozen=True)
class EditorServerSettings(UNetRunnerSettingsMixin, StoreSettingsMixin, ModelServerSettings):
    """Settings of the editor service."""

    port: int = 50064
    metrics_port: int = 9464
    max_sessions: int = 16
    """Open sessions (attached or detached) per replica."""
    idle_timeout_seconds: float = 300.0
    """Free a session that made no progress (no frame made or sent, no client attached) for this long."""
    frames_in_flight: int = 4
    """Default wavefront width when a request leaves it 0."""
    max_batch_items: int = 64
    """Most frames in one batched UNet call, all sessions together."""
    buffered_frames: int = 8
    """Frames a session may run ahead of its client (back-pressure); also sent frames kept for replay."""
    replica_name: str = ""
    """Prefix of session ids (the pod name): a reconnecting client reaches the replica holding its state."""
    feature_slots: int = 512
    """Injected-feature slots preallocated on the device (about 14 MB each at 512x512); growth recaptures graphs."""
    detach_grace_seconds: float = 30.0
    """Keep a session whose stream broke (client killed, channel closed) this long for a resume, then free it."""
    stall_timeout_seconds: float = 120.0
    """Free an attached session whose client has not read a frame for this long."""
    max_sessions_per_tenant: int = 0
    """Most open sessions one tenant may hold on this replica (0: no limit but max_sessions)."""
    devices: str = ""
    """Step-parallel editing: a GPU count N (cuda:0..N-1) or devices cuda:0,cuda:1,... sharing every session's steps."""

    def __post_init__(self):
        super().__post_init__()
        self.check_store()
        self.check_runner()
        for name in ("max_sessions", "max_batch_items", "buffered_frames", "feature_slots"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.frames_in_flight <= MAX_FRAMES_IN_FLIGHT:
            raise InvalidInput(f"frames_in_flight: must be in [1, {MAX_FRAMES_IN_FLIGHT}], got {self.frames_in_flight}")
        for name in ("idle_timeout_seconds", "detach_grace_seconds", "stall_timeout_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise InvalidInput(f"{name}: must be a number of seconds > 0, got {value!r}")
        if not isinstance(self.max_sessions_per_tenant, int) or self.max_sessions_per_tenant < 0:
            raise InvalidInput(
                f"max_sessions_per_tenant: must be an integer >= 0, got {self.max_sessions_per_tenant!r}"
            )
        self.device_list()
        if "." in self.replica_name or "/" in self.replica_name:
            raise InvalidInput(f"replica_name: must not contain '.' or '/', got {self.replica_name!r}")

    def device_list(self) -> list[str] | None:
        """The step-parallel editor's devices, in stage order; None: one device (the device setting)."""
        text = self.devices.strip()
        if not text:
            return None
        if text.isdigit():
            count = int(text)
            if not 1 <= count <= MAX_DEVICES:
                raise InvalidInput(f"devices: a GPU count must be in [1, {MAX_DEVICES}], got {self.devices!r}")
            return [f"cuda:{g}" for g in range(count)]
        names = [d.strip() for d in text.split(",")]
        bad = next((d for d in names if not _DEVICE.fullmatch(d)), None)
        if bad is not None:
            raise InvalidInput(
                f"devices: expected a GPU count or names like cuda:0,cuda:1, got {bad!r} in {self.devices!r}"
            )
        if len(names) > MAX_DEVICES:
            raise InvalidInput(f"devices: at most {MAX_DEVICES} devices, got {len(names)}")
        return names


MAX_DEVICES = 64
_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,3})?")
