"""One definition per fact: the choices and defaults shared by the SDK, the
services and the CLI, and their protobuf values, agree everywhere."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from pix2video.engine.settings import EditSettings
from pix2video.jobs import InversionSettings
from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2
from pix2video_api.inversion.v1 import inversion_pb2
from pix2video_client import EditOptions, InversionOptions, enums, options

TABLES = [
    (enums.REFERENCE, editor_pb2.Reference, "reference"),
    (enums.INJECT_LAYERS_VALUE, editor_pb2.InjectLayers, "inject_layers"),
    (enums.LATENT_UPDATE, editor_pb2.LatentUpdate, "latent_update"),
    (enums.RESIZE, inversion_pb2.ResizeMode, "resize"),
    (enums.ENCODING, common_pb2.ImageEncoding, "encoding"),
]


@pytest.mark.parametrize("table, enum, field", TABLES, ids=[t[2] for t in TABLES])
def test_every_proto_value_has_exactly_one_name(table, enum, field):
    set_values = sorted(v.number for v in enum.DESCRIPTOR.values if v.number != 0)
    assert sorted(table.values()) == set_values  # no value left out, none twice
    for name, value in table.items():
        assert enums.to_proto(table, name, field) == value
        assert enums.from_proto(table, value, field) == name
    with pytest.raises(ValueError, match=field):
        enums.to_proto(table, "no-such-name", field)
    with pytest.raises(ValueError, match=field):
        enums.from_proto(table, max(set_values) + 1, field)


def test_unset_means_the_default():
    assert enums.from_proto(enums.REFERENCE, 0, "reference") == options.DEFAULT_REFERENCE
    assert enums.from_proto(enums.RESIZE, 0, "resize") == options.DEFAULT_RESIZE


def test_sdk_engine_and_cli_defaults_are_the_same_facts():
    edit = {f.name: f.default for f in dataclasses.fields(EditSettings)}
    sdk = {f.name: f.default for f in dataclasses.fields(EditOptions)}
    for name in ("reference", "inject_layers", "latent_update", "negative_prompt", "seed"):
        assert sdk[name] == edit[name], name
    assert edit["guidance_scale"] == options.DEFAULT_GUIDANCE_SCALE and edit["num_steps"] == options.DEFAULT_NUM_STEPS
    inv = {f.name: f.default for f in dataclasses.fields(InversionSettings)}
    sdk_inv = {f.name: f.default for f in dataclasses.fields(InversionOptions)}
    for name in ("width", "height", "resize", "num_steps"):
        assert sdk_inv[name] == inv[name], name
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(EditSettings)}
    assert choices["reference"] == options.REFERENCES == tuple(enums.REFERENCE)


def test_the_shared_modules_import_without_torch():
    code = (
        "import sys, pix2video_client.options, pix2video_client.enums, pix2video_client.atomic, "
        "pix2video.engine.settings, pix2video.settings, pix2video.flags; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
