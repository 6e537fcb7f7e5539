"""The latent update's normalisation as a setting: its default, its checks, its flag.

The arithmetic is pinned in tests/test_method_pins.py (the divisor, and bitwise
equality of both normalisations at SD2-depth's 64x64 latent) and the authors'
preset in tests/test_oracle_authors.py; the ablation that chose the default is
docs/runs/2026-12-01-h200-update-ablation/.
"""

from __future__ import annotations

import pytest

from pix2video.engine.settings import PRESETS, SD512_LATENT_NUMEL, EditSettings
from pix2video.errors import InvalidInput
from pix2video.video import make_sample_frames, write_video


def test_default_divides_by_sd2_512_latent_and_the_authors_preset_by_the_latent():
    assert SD512_LATENT_NUMEL == 16_384
    default = EditSettings(prompt="x")
    assert default.update_normalisation == "sd512"
    assert default.update_divisor(4 * 32 * 32) == 16_384 and default.update_divisor(4 * 96 * 96) == 16_384
    authors = PRESETS["authors"].apply(default, "edit")
    assert authors.update_normalisation == "latent" and authors.update_divisor(4 * 32 * 32) == 4096
    # a flag given explicitly wins over the preset
    given = EditSettings(prompt="x", update_normalisation="sd512")
    assert PRESETS["authors"].apply(given, "edit", {"update_normalisation"}).update_normalisation == "sd512"


@pytest.mark.parametrize("bad", ["mean", "", None, 16384, "SD512"])
def test_a_bad_normalisation_names_the_field(bad):
    with pytest.raises(InvalidInput, match="update_normalisation"):
        EditSettings(prompt="x", update_normalisation=bad)


def _one_line(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_cli_flag_checks_its_choices_and_is_refused_with_a_server(tmp_path, capsys):
    from pix2video.cli import main

    clip = tmp_path / "in.mp4"
    write_video(clip, make_sample_frames(2, 64, 64), fps=8)
    out = str(tmp_path / "o.mp4")
    with pytest.raises(SystemExit) as exit_:
        main(["edit", str(clip), "--prompt", "x", "-o", out, "--update-normalisation", "mean"])
    assert exit_.value.code == 2 and "--update-normalisation" in capsys.readouterr().err
    # The services' settings carry no normalisation: asking for another one over --server is one line, exit 2,
    # before any connection (nothing listens on port 1).
    code = main(
        ["edit", str(clip), "--prompt", "x", "-o", out, "--update-normalisation", "latent", "--server", "127.0.0.1:1"]
    )
    err = _one_line(capsys)
    assert code == 2 and len(err) == 1 and "update_normalisation" in err[0] and "--server" in err[0], err
    assert "127.0.0.1" not in err[0]
