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
- Scales are per tensor. The weight's is computed once, at conversion; the
  activation's is computed dynamically at every call (its absolute maximum
  over 448, e4m3's largest finite value), so no calibration pass and no
  stored statistics: any prompt, frame or step is scaled to its own range.
  Under ``torch.compile`` the max-reduction and the cast fuse into the
  producer of the activation.
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


class Fp8Linear(nn.Module):
    """A linear layer computing ``x @ W.T + b`` with both operands in e4m3."""

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    fp16: nn.Linear

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w8, w_scale = quantize(linear.weight)
        # (out, in) row-major transposed is (in, out) column-major: the layout
        # _scaled_mm wants for its second operand.
        self.register_buffer("weight_t", w8.t(), persistent=False)
        self.register_buffer("weight_scale", w_scale, persistent=False)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Not a submodule: the fp16 layer stays where it was in the UNet's tree.
        self.__dict__["fp16"] = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.fp16(x)
        lead = x.shape[:-1]
        q, x_scale = quantize(x.reshape(-1, self.in_features))
        if x.is_cuda:
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
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def emulated_scaled_mm(a: torch.Tensor, a_scale, b: torch.Tensor, b_scale) -> torch.Tensor:
    """``_scaled_mm``'s arithmetic in float32: products of the e4m3 values
    (exact in float32), summed in float32, scaled."""
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

    def __init__(self, unet: nn.Module):
        self._swaps: list[tuple[nn.Module, str, nn.Module, Fp8Linear]] = []
        parents = dict(unet.named_modules())
        with torch.no_grad():
            for name, module in list(unet.named_modules()):
                if not convertible(name, module):
                    continue
                parent_name, _, attr = name.rpartition(".")
                parent = parents[parent_name] if parent_name else unet
                self._swaps.append((parent, attr, module, Fp8Linear(module)))
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
