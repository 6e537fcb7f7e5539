"""Help that explains: every flag of every service and of ``edit`` says what it
does and what its default is (both generated from the settings classes' field
docstrings), and help answers without importing torch."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from pix2video.cli import build_parser
from pix2video.commands.edit import EDIT_FLAGS
from pix2video.commands.job import RUNTIME_FLAGS
from pix2video.engine.settings import EditSettings
from pix2video.flags import field_docs
from pix2video.servers.common.settings import settings_parser
from pix2video.servers.registry import SERVICES, settings_class
from pix2video.settings import RuntimeSettings


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def description(help_text: str) -> str:
    """The help before its trailing '(default: ...)' or '(required)'."""
    return help_text.rsplit("(", 1)[0].strip()


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_flag_has_a_description_and_its_default(name):
    cls = settings_class(name)
    parser = settings_parser(cls, f"pix2video serve {name}")
    flags = options(parser)
    assert {a.dest for a in flags} == {f.name for f in dataclasses.fields(cls) if f.init}
    for action in flags:
        field = next(f for f in dataclasses.fields(cls) if f.name == action.dest)
        assert description(action.help), (name, action.dest, action.help)
        assert description(action.help) == field_docs(cls)[field.name].replace("%", "%%")
        d = field.default
        if isinstance(d, bool):
            shown = "true" if d else "false"
        else:
            shown = "none" if d == "" else f"{d:g}" if isinstance(d, float) else str(d)
        assert f"(default: {shown}; env PIX2VIDEO_{field.name.upper()})" in action.help, action.help
    text = parser.format_help()
    assert "PIX2VIDEO_BATCH_SIZE" in text or name == "editor"


def test_every_edit_flag_has_a_description_and_its_default():
    parser = subparser("edit")
    flags = options(parser)
    assert len(flags) >= 25
    for action in flags:
        assert description(action.help), action.option_strings
        assert "(default: " in action.help or (action.required and "(required)" in action.help), action.help
    # The method switches are EditSettings' fields, described by their docstrings.
    by_dest = {a.dest: a for a in flags}
    docs = field_docs(EditSettings)
    for f in dataclasses.fields(EditSettings):
        if f.name == "num_steps":  # --steps, shared with the inversion
            continue
        action = by_dest[f.name]
        assert action.option_strings[-1] == EDIT_FLAGS[f.name]
        assert docs[f.name] and description(action.help) == docs[f.name]
        if f.default is not dataclasses.MISSING:
            assert action.default == f.default
        if "choices" in f.metadata:
            assert tuple(action.choices) == f.metadata["choices"]
    # The runtime flags are RuntimeSettings' fields.
    runtime_docs = field_docs(RuntimeSettings)
    for name, flag in RUNTIME_FLAGS.items():
        assert by_dest[name].option_strings == [flag]
        assert description(by_dest[name].help) == runtime_docs[name]


HELP_PROBE = """
import contextlib, io, json, sys
from pix2video.cli import main
codes, outs = [], []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            codes.append(main(argv))
        except SystemExit as e:
            codes.append(e.code)
    outs.append(out.getvalue())
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps({"codes": codes, "outs": outs, "heavy": heavy}))
"""


def test_help_exits_0_without_importing_torch():
    argvs = [["--help"], ["serve", "--help"], ["edit", "--help"], ["invert", "--help"], ["serve", "--all", "--help"]]
    argvs += [["serve", name, "--help"] for name in SERVICES]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, json.dumps(argvs)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["heavy"] == [], got["heavy"]
    assert got["codes"] == [0] * len(argvs), got["codes"]
    top, serve = got["outs"][0], got["outs"][1]
    assert "edit" in top and "serve" in top and "build-tiny" in top
    assert all(name in serve for name in SERVICES) and "serve NAME --help" in serve
    assert "--guidance GUIDANCE" in got["outs"][2] and "(default: 7.5)" in got["outs"][2]
    assert "--max-wait-ms" in got["outs"][5 + 0] and "(default: 16;" in got["outs"][5 + 0]  # depth's batch_size


def test_serve_without_a_name_is_still_an_error(capsys):
    from pix2video.cli import main

    assert main(["serve"]) == 2
    assert "name one of depth, caption, inversion, editor" in capsys.readouterr().err
