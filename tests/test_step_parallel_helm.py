"""The chart's editor.gpusPerReplica: the editor pod's GPU request and its --devices follow from it."""

import helm_tools as ht
import pytest

from pix2video.servers.common.settings import load_settings
from pix2video.servers.editor.settings import EditorServerSettings

SECRET = "store.credentials.existingSecret=pix2video-s3"


def _editor(objs):
    (sts,) = [o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"].endswith("-editor")]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    cm_name = c["envFrom"][0]["configMapRef"]["name"]
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name]
    return c["resources"]["limits"], cm["data"]


def test_gpus_per_replica_sets_the_gpu_request_and_the_editors_devices():
    limits, env = _editor(ht.template(set_values=[SECRET, "editor.gpusPerReplica=4"]))
    assert limits["nvidia.com/gpu"] == 4
    assert env["PIX2VIDEO_DEVICES"] == "4"
    # What the pod's editor makes of that environment: one stage per GPU it was given.
    settings = load_settings(
        EditorServerSettings, [], env={**env, "PIX2VIDEO_S3_ACCESS_KEY": "a", "PIX2VIDEO_S3_SECRET_KEY": "b"}
    )
    assert settings.device_list() == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


def test_by_default_the_editor_asks_for_one_gpu_and_edits_on_one_device():
    limits, env = _editor(ht.template(set_values=[SECRET]))
    assert limits["nvidia.com/gpu"] == 1 and "PIX2VIDEO_DEVICES" not in env
    limits, env = _editor(ht.template(set_values=[SECRET, "editor.gpusPerReplica=1"]))
    assert limits["nvidia.com/gpu"] == 1 and "PIX2VIDEO_DEVICES" not in env


@pytest.mark.parametrize("value", ["0", "17", "two"])
def test_bad_gpus_per_replica_is_refused_by_the_schema(value):
    result = ht.helm(
        "template", "t", str(ht.CHART), "--set", SECRET, "--set", f"editor.gpusPerReplica={value}", check=False
    )
    assert result.returncode != 0 and "gpusPerReplica" in result.stderr
