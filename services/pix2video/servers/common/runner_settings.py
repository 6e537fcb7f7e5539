"""How a service calls its UNet: CUDA graphs, compilation, batch buckets, warm-up."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.fp8 import PRECISIONS
from ...engine.unet_runner import COMPILE_MODES, DEFAULT_BUCKETS, UNetRunner
from ...errors import InvalidInput


@dataclass(frozen=True)
class UNetRunnerSettingsMixin:
    """cuda_graphs: replay captured CUDA graphs of the UNet (on CUDA devices;
    ignored elsewhere). compile_unet: also ``torch.compile`` them (a minute or
    more per batch bucket, paid at start-up before SERVING), in inductor mode
    compile_mode (``default`` or ``max-autotune-no-cudagraphs``). batch_buckets:
    comma-separated batch sizes (samples) calls are padded to, so a few
    graphs cover every call. warm_up_width/height: the frame size whose
    graphs are captured at start-up; other sizes are captured at first use.
    """

    cuda_graphs: bool = True
    compile_unet: bool = False
    compile_mode: str = "default"
    batch_buckets: str = ",".join(str(b) for b in DEFAULT_BUCKETS)
    warm_up_width: int = 512
    warm_up_height: int = 512
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
        return UNetRunner.for_models(
            models,
            cuda_graphs=self.cuda_graphs,
            compile=self.compile_unet,
            compile_mode=self.compile_mode,
            buckets=self.buckets(),
            precision=self.precision,
        )
