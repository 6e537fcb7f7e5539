"""How a service calls its UNet: CUDA graphs, compilation, batch buckets, warm-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...engine.runner_options import COMPILE_MODES, DEFAULT_BUCKETS, PRECISIONS
from ...errors import InvalidInput

if TYPE_CHECKING:
    from ...engine.unet_runner import UNetRunner


@dataclass(frozen=True)
class UNetRunnerSettingsMixin:
    """How the service calls its UNet."""

    cuda_graphs: bool = True
    """Replay captured CUDA graphs of the UNet (on CUDA devices; ignored elsewhere)."""
    compile_unet: bool = False
    """Also torch.compile the graphs (a minute or more per batch bucket, paid at start-up before SERVING)."""
    compile_mode: str = "default"
    """Inductor mode of compile_unet: default or max-autotune-no-cudagraphs."""
    batch_buckets: str = ",".join(str(b) for b in DEFAULT_BUCKETS)
    """Comma-separated batch sizes (samples) that calls are padded to, so that a few graphs cover every call."""
    warm_up_width: int = 512
    """Frame width whose graphs are captured at start-up (other sizes are captured at first use)."""
    warm_up_height: int = 512
    """Frame height whose graphs are captured at start-up (other sizes are captured at first use)."""
    precision: str = "fp16"
    """Precision of the UNet's transformer linear layers: fp16, or fp8 (e4m3, per-tensor dynamic scales)."""

    def buckets(self) -> tuple[int, ...]:
        try:
            sizes = tuple(sorted({int(b) for b in self.batch_buckets.split(",") if b.strip()}))
        except ValueError:
            sizes = ()
        if not sizes or sizes[0] < 1:
            raise InvalidInput(f"batch_buckets: must be comma-separated positive integers, got {self.batch_buckets!r}")
        return sizes

    def check_runner(self) -> None:
        self.buckets()
        if self.compile_mode not in COMPILE_MODES:
            raise InvalidInput(f"compile_mode: must be one of {', '.join(COMPILE_MODES)}; got {self.compile_mode!r}")
        if self.precision not in PRECISIONS:
            raise InvalidInput(f"precision: must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.compile_unet and not self.cuda_graphs:
            raise InvalidInput("compile_unet: compiles the captured graphs, so it needs cuda_graphs=true")
        for name in ("warm_up_width", "warm_up_height"):
            value = getattr(self, name)
            if value < 8 or value % 8:
                raise InvalidInput(f"{name}: must be a positive multiple of 8, got {value}")

    def make_runner(self, models) -> UNetRunner:
        from ...engine.unet_runner import UNetRunner  # torch: only when a service starts

        return UNetRunner.for_models(
            models,
            cuda_graphs=self.cuda_graphs,
            compile=self.compile_unet,
            compile_mode=self.compile_mode,
            buckets=self.buckets(),
            precision=self.precision,
        )
