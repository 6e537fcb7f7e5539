"""FP8 (e4m3) matrix products for the UNet's transformer linear layers.

Why these layers, and how:

- Linear layers are 31% of the UNet's FLOPs (attention 22%, convolution 47%:
  docs/benchmark.md). Hopper runs e4m3 products at about twice the fp16 rate.
  Convolutions stay fp16 (no FP8 convolution in torch's cuDNN path), and so
  does attention (torch's SDPA has no FP8 kernel in the versions we run).
- Only the layers inside the transformer blocks (``*.attentions.*``: q/k/v/out
  projections, feed-forward, proj_in/proj_out) are converted. The time
  embedding and the ResNets' time projections multiply a batch of a few rows:
  quantizing costs more there than the product saves.
- Scales are computed dynamically (no calibration pass, no stored
  statistics: any prompt, frame or step is scaled to its own range), at one
  of two granularities (:data:`GRANULARITIES`):
  - ``row`` (the default): one scale per row of the activation (per token)
    and per output channel of the weight, so an outlier token no longer
    flattens every other token's range (toy model edits: 35.0 dB against
    fp16, per-tensor 33.4). A row's maximum is a reduction along the same
    axis as the layer norm (or GEGLU) that produces the activation, and
    under ``torch.compile`` it does fuse into that producer's kernel, but
    as a looped reduction that computes the producer twice: on an H200 the
    compiled batch-64 call is 8.6% slower than fp16 (docs/benchmark.md,
    run 4), so fp8 stays off by default;
  - ``tensor``: one scale per tensor (the activation's absolute maximum over
    448, e4m3's largest finite value). The maximum is a global reduction
    that must finish before the cast, a second pass over the activation
    that inductor does not fuse (measured on an H200, docs/benchmark.md).
- The product is ``torch._scaled_mm`` (cuBLASLt FP8 on Hopper, fp32
  accumulation, fp16 output with the bias added in the epilogue). torchao's
  float8 inference path does the same with more machinery; ``_scaled_mm`` is
  in torch itself, so nothing more has to be installed on the GPU machines.
- Off CUDA the same quantization is applied and the product is computed in
  float32 from the dequantized e4m3 values: the arithmetic ``_scaled_mm``
  does (exact products of e4m3 numbers, float32 sums), so CPU tests check the
  fp8 code path's numerics.

Calls with autograd enabled (the x_t latent update differentiates through the
UNet) use the original fp16 layer: ``_scaled_mm`` has no backward.

:class:`Fp8Linears` holds the converted layers beside the original ones and
installs them only while the UNet runner calls the UNet, so one loaded model
set can serve fp16 and fp8 callers (the benchmark measures both in one run).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .runner_options import PRECISIONS

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
# cuBLASLt's FP8 products need both matrix dimensions of the weight divisible by 16.
_ALIGN = 16


GRANULARITIES = ("row", "tensor")  # of the dynamic scales (module docstring)


def check_granularity(granularity: object, name: str = "fp8_granularity") -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"{name}: must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    return str(granularity)


def check_precision(precision: object, name: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{name}: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(precision)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as e4m3 with one float32 scale: ``x ~= q.float() * scale``."""
    amax = x.detach().abs().amax().float()
    # An all-zero tensor (padding samples) gets scale 1 rather than a division by zero.
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (..., K) as e4m3 with one float32 scale per row: ``x ~= q.float() * scale``, scale (..., 1)."""
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    # All-zero rows (padding samples) get scale 1 rather than a division by zero.
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


_ROWWISE_OUT: dict[torch.device, torch.dtype] = {}


def rowwise_out_dtype(device: torch.device) -> torch.dtype:
    """The output dtype cuBLASLt's row-wise-scaled FP8 product gives on ``device``:
    float16 where this torch supports it, else bfloat16 (cast back after the
    product; under ``torch.compile`` the cast fuses into the next kernel).
    Probed once per device with a 16x16x16 product."""
    device = torch.device(device)
    if device not in _ROWWISE_OUT:
        a = torch.ones(16, 16, device=device).to(E4M3)
        b = torch.ones(16, 16, device=device).to(E4M3).t()
        sa, sb = torch.ones(16, 1, device=device), torch.ones(1, 16, device=device)
        try:
            torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.float16)
            _ROWWISE_OUT[device] = torch.float16
        except (RuntimeError, NotImplementedError, ValueError):
            _ROWWISE_OUT[device] = torch.bfloat16
    return _ROWWISE_OUT[device]


class Fp8Linear(nn.Module):
    """A linear layer computing ``x @ W.T + b`` with both operands in e4m3,
    scaled per row (``granularity="row"``) or per tensor (see the module docstring)."""

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    fp16: nn.Linear

    def __init__(self, linear: nn.Linear, granularity: str = "row"):
        super().__init__()
        self.granularity = check_granularity(granularity)
        if granularity == "row":
            # Per output channel: (out, 1) scales, as (1, out) for the product's second operand.
            w8, w_scale = quantize_rows(linear.weight)
            w_scale = w_scale.t().contiguous()
        else:
            w8, w_scale = quantize(linear.weight)
        # (out, in) row-major transposed is (in, out) column-major: the layout
        # _scaled_mm wants for its second operand.
        self.register_buffer("weight_t", w8.t(), persistent=False)
        self.register_buffer("weight_scale", w_scale, persistent=False)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight
        self._out_dtype = rowwise_out_dtype(w.device) if granularity == "row" and w.is_cuda else None
        # Not a submodule: the fp16 layer stays where it was in the UNet's tree.
        self.__dict__["fp16"] = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.fp16(x)
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        q, x_scale = quantize_rows(rows) if self.granularity == "row" else quantize(rows)
        if x.is_cuda and self.granularity == "row":
            # Row-wise scaling takes no bias in every torch version: added after, fused by inductor.
            out = torch._scaled_mm(
                q, self.weight_t, scale_a=x_scale, scale_b=self.weight_scale, out_dtype=self._out_dtype
            ).to(x.dtype)
            if self.bias is not None:
                out = out + self.bias.to(x.dtype)
        elif x.is_cuda:
            out = torch._scaled_mm(
                q,
                self.weight_t,
                scale_a=x_scale,
                scale_b=self.weight_scale,
                bias=None if self.bias is None else self.bias.to(x.dtype),
                out_dtype=x.dtype,
            )
        else:
            out = emulated_scaled_mm(q, x_scale, self.weight_t, self.weight_scale)
            if self.bias is not None:
                out = out + self.bias.float()
            out = out.to(x.dtype)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3, per {self.granularity}"


def emulated_scaled_mm(a: torch.Tensor, a_scale, b: torch.Tensor, b_scale) -> torch.Tensor:
    """``_scaled_mm``'s arithmetic in float32: products of the e4m3 values
    (exact in float32), summed in float32, scaled (per tensor: scalars; per
    row: ``a_scale`` (M, 1) and ``b_scale`` (1, N), broadcast)."""
    return (a.float() @ b.float()) * (a_scale * b_scale)


def convertible(name: str, module: nn.Module) -> bool:
    """Whether the UNet layer ``name`` is computed in FP8 (see the module docstring)."""
    return (
        isinstance(module, nn.Linear)
        and ".attentions." in f".{name}"
        and module.in_features % _ALIGN == 0
        and module.out_features % _ALIGN == 0
    )


class Fp8Linears:
    """The FP8 versions of a UNet's transformer linear layers, installed on demand."""

    def __init__(self, unet: nn.Module, granularity: str = "row"):
        self.granularity = check_granularity(granularity)
        self._swaps: list[tuple[nn.Module, str, nn.Module, Fp8Linear]] = []
        parents = dict(unet.named_modules())
        with torch.no_grad():
            for name, module in list(unet.named_modules()):
                if not convertible(name, module):
                    continue
                parent_name, _, attr = name.rpartition(".")
                parent = parents[parent_name] if parent_name else unet
                self._swaps.append((parent, attr, module, Fp8Linear(module, granularity)))
        self.skipped = sum(1 for _, m in unet.named_modules() if isinstance(m, nn.Linear)) - len(self._swaps)
        self._depth = 0

    def __len__(self) -> int:
        return len(self._swaps)

    @property
    def weight_bytes(self) -> int:
        """Device memory the e4m3 weights take (on top of the fp16 ones)."""
        return sum(f.weight_t.numel() for *_, f in self._swaps)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The UNet computes its transformer linears in FP8 inside this block."""
        self._depth += 1
        if self._depth == 1:
            for parent, attr, _, fp8 in self._swaps:
                setattr(parent, attr, fp8)
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                for parent, attr, fp16, _ in self._swaps:
                    setattr(parent, attr, fp16)
