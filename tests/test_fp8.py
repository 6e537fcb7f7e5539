"""The fp8 precision setting: the e4m3 code path (emulated on the CPU, the same
arithmetic as torch._scaled_mm) against full precision on tiny models, and the
setting's validation through the runner, the services' settings and the chart.

Tolerances (relative error ||out - ref|| / ||ref||, random inputs):
- one linear layer: 6% (e4m3 keeps 3 mantissa bits: each operand is rounded
  by at most 2^-4 = 6.25% relative, about 2.7% on average);
- the tiny UNet through the runner: 10% (about 50 fp8 layers in a row, with
  residual connections; measured 5%);
- and more than 0.1%, so a path that silently stayed in full precision fails.
"""

from __future__ import annotations

import pytest
import torch

from pix2video.engine.fp8 import E4M3, Fp8Linear, Fp8Linears, emulated_scaled_mm, quantize, quantize_rows
from pix2video.engine.unet_runner import UNetRunner
from pix2video.errors import InvalidInput


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_quantize_is_e4m3_within_its_rounding():
    x = torch.randn(64, 96) * 30
    q, scale = quantize(x)
    assert q.dtype == E4M3
    back = q.float() * scale
    assert float(q.float().abs().max()) == 448.0  # the tensor's max maps to e4m3's max
    assert ((back - x).abs() <= x.abs() * 2**-4 + scale * 2**-9).all()  # half an ulp (3 mantissa bits), or subnormal
    zero_q, zero_scale = quantize(torch.zeros(8, 16))  # padding samples: no division by zero
    assert float(zero_scale) == 1.0 and not zero_q.float().any()


def test_quantize_rows_scales_each_row_to_its_own_range():
    x = torch.randn(64, 96) * torch.logspace(-3, 3, 64).unsqueeze(1)  # rows six decades apart
    x[5] = 0  # a padding row
    q, scale = quantize_rows(x)
    assert q.dtype == E4M3 and scale.shape == (64, 1)
    live = [i for i in range(64) if i != 5]
    assert (q.float()[live].abs().amax(dim=1) == 448.0).all()  # every row's max maps to e4m3's max
    back = q.float() * scale
    assert ((back - x).abs() <= x.abs() * 2**-4 + scale * 2**-9).all()
    assert float(scale[5]) == 1.0 and not q.float()[5].any()


def test_row_scales_keep_small_tokens_beside_an_outlier():
    """One outlier token (x1e5) beside ordinary ones: per-tensor scales push the
    ordinary tokens into e4m3's subnormals; per-row scales keep them at 3
    mantissa bits. Through the layer: the ordinary tokens' error."""
    torch.manual_seed(1)
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(16, 64)
    x[0] *= 1e5
    with torch.no_grad():
        ref = lin(x)[1:]
        row = Fp8Linear(lin, "row")(x)[1:]
        tensor = Fp8Linear(lin, "tensor")(x)[1:]
    assert rel(row, ref) < 0.06
    assert rel(tensor, ref) > 0.2


def test_emulation_is_scaled_mm_arithmetic():
    """On the CPU the product is emulated; where this torch has _scaled_mm on the
    CPU, the emulation must compute the same function."""
    a, sa = quantize(torch.randn(40, 64))
    b, sb = quantize(torch.randn(48, 64))
    emulated = emulated_scaled_mm(a, sa, b.t(), sb)
    try:
        kernel = torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError):
        pytest.skip("this torch has no CPU _scaled_mm")
    assert rel(emulated, kernel) < 1e-5


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_fp8_linear_is_close_to_the_full_precision_layer(granularity):
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 512)
    x = torch.randn(3, 77, 256)
    f8 = Fp8Linear(lin, granularity)
    with torch.no_grad():
        ref, out = lin(x), f8(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert 1e-3 < rel(out, ref) < 0.06
    # With autograd on (the x_t latent update), the fp16 layer itself runs.
    xg = x.clone().requires_grad_(True)
    assert torch.equal(f8(xg), lin(xg))


def _call(runner, models, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, models.unet.config.in_channels, 8, 8, generator=g)
    emb = torch.randn(2, 77, models.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return runner(x, torch.tensor([500, 20]), emb)


def test_fp8_runner_on_the_tiny_unet_within_tolerance(models):
    """The tiny model set saved and reloaded; the fp8 runner's UNet output
    against the same UNet's through a full-precision runner, fresh inputs."""
    full, fp8 = UNetRunner(models.unet), UNetRunner(models.unet, precision="fp8")
    assert len(fp8.fp8) > 0 and fp8.warm.precision == "fp8" and full.fp8 is None
    originals = dict(models.unet.named_modules())
    for seed in range(3):
        ref, out = _call(full, models, seed), _call(fp8, models, seed)
        assert torch.isfinite(out).all()
        assert 1e-3 < rel(out, ref) < 0.10, seed
    # The fp8 layers are installed only while the fp8 runner calls: the model
    # set's UNet is unchanged for every other caller.
    assert dict(models.unet.named_modules()).keys() == originals.keys()
    assert all(a is b for a, b in zip(models.unet.modules(), originals.values(), strict=True))
    assert torch.equal(_call(full, models, 0), _call(UNetRunner(models.unet), models, 0))


def test_only_transformer_linears_are_converted(models):
    converted = Fp8Linears(models.unet)
    with converted.installed():
        names = [n for n, m in models.unet.named_modules() if isinstance(m, Fp8Linear)]
    assert names and all(".attentions." in f".{n}" for n in names)
    assert not any("time_emb" in n or n.startswith("time_embedding") for n in names)
    assert converted.skipped > 0  # the time-embedding layers stay as they are
    assert not any(isinstance(m, Fp8Linear) for m in models.unet.modules())


def test_precision_is_validated_everywhere(models):
    with pytest.raises(ValueError, match="precision"):
        UNetRunner(models.unet, precision="bf8")
    with pytest.raises(ValueError, match="fp8_granularity"):
        UNetRunner(models.unet, precision="fp8", fp8_granularity="column")
    from pix2video.servers.common.settings import load_settings
    from pix2video.servers.editor.settings import EditorServerSettings
    from pix2video.servers.inversion.settings import InversionServerSettings

    env = {"PIX2VIDEO_STORE_DIR": "/tmp/x"}
    for cls in (EditorServerSettings, InversionServerSettings):
        assert load_settings(cls, [], env=env).precision == "fp16"  # the default
        s = load_settings(cls, ["--precision", "fp8"], env=env)
        runner = s.make_runner(models)  # on the CPU too: the emulated fp8 path
        assert runner.precision == "fp8" and len(runner.fp8) > 0
        with pytest.raises(InvalidInput, match="precision"):
            load_settings(cls, [], env={**env, "PIX2VIDEO_PRECISION": "fp4"})


def test_the_chart_carries_precision_to_the_services():
    import helm_tools as ht

    from pix2video.servers.common.settings import load_settings
    from pix2video.servers.editor.settings import EditorServerSettings
    from pix2video.servers.inversion.settings import InversionServerSettings

    try:
        ht.helm_binary()
    except Exception as e:  # noqa: BLE001 - no helm on this machine
        pytest.skip(f"no helm: {e}")
    objs = ht.template(set_values=["editor.settings.precision=fp8"])
    maps = {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "ConfigMap"}
    editor_env = next(d for n, d in maps.items() if n.endswith("-editor"))
    inversion_env = next(d for n, d in maps.items() if n.endswith("-inversion"))
    assert editor_env["PIX2VIDEO_PRECISION"] == "fp8" and inversion_env["PIX2VIDEO_PRECISION"] == "fp16"
    env = {"PIX2VIDEO_STORE_DIR": "/tmp/x"}
    assert load_settings(EditorServerSettings, [], env={**env, **editor_env}).precision == "fp8"
    assert load_settings(InversionServerSettings, [], env={**env, **inversion_env}).precision == "fp16"
    with pytest.raises(ht.HelmError) as exc:
        ht.template(set_values=["inversion.settings.precision=fp4"])
    assert "precision" in exc.value.output
