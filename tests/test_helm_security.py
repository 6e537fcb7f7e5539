"""The chart's transport security, rendered offline: the production values turn on
TLS (mutual) and tokens; certificates and the tokens file come from Secrets
mounted as folders (so rotation reaches the running services); every file a
service is told to read is mounted; probes use the plaintext health-only port;
Prometheus scrapes over TLS; images and chart listen on 0.0.0.0 themselves."""

from __future__ import annotations

import re

import helm_tools as ht
import pytest

from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.settings import load_settings
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.settings import InversionServerSettings

SETTINGS = {
    "depth": DepthSettings,
    "caption": CaptionSettings,
    "inversion": InversionServerSettings,
    "editor": EditorServerSettings,
}
PRODUCTION = ht.CI_VALUES / "gpu-production.yaml"


@pytest.fixture(scope="module")
def production():
    return ht.template([PRODUCTION], api_versions=["monitoring.coreos.com/v1"])


def workloads(objs):
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet")
    }


def config_of(objs, name):
    return next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)["data"]


def test_production_turns_on_mutual_tls_and_tokens_from_mounted_secrets(production):
    for comp, w in workloads(production).items():
        pod = w["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = config_of(production, c["envFrom"][0]["configMapRef"]["name"])
        settings = load_settings(SETTINGS[comp], [], env=env)
        assert settings.host == "0.0.0.0"
        assert settings.tls_cert_file and settings.tls_key_file and settings.tls_client_ca_file
        assert settings.auth_tokens_file
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        # Every file the service reads lies in a folder mounted from a Secret, without
        # subPath (a subPath mount never sees the Secret's updates).
        files = [
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_client_ca_file,
            settings.auth_tokens_file,
        ]
        if comp == "inversion":
            files += [settings.upstream_tls_ca_file, settings.upstream_tls_cert_file, settings.upstream_token_file]
        for f in files:
            assert f, comp
            folder = f.rsplit("/", 1)[0]
            m = mounts[folder]
            assert "subPath" not in m and m["readOnly"] and m["name"] in secrets, (comp, f)
        assert secrets["tls"] == "pix2video-tls" and secrets["tokens"] == "pix2video-tokens"
        # Probes: plaintext, health only, on its own port.
        health = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
        assert settings.health_port == health
        assert all(c[k]["grpc"]["port"] == health for k in ("startupProbe", "readinessProbe", "livenessProbe"))
    sm = next(o for o in production if o["kind"] == "ServiceMonitor")
    ep = sm["spec"]["endpoints"][0]
    assert ep["scheme"] == "https" and ep["tlsConfig"]["ca"]["secret"]["name"] == "pix2video-tls"
    assert ep["tlsConfig"]["keySecret"]["name"] == "pix2video-tls"


def test_default_install_is_plaintext_without_tokens():
    objs = ht.template()
    for comp, w in workloads(objs).items():
        c = w["spec"]["template"]["spec"]["containers"][0]
        env = config_of(objs, c["envFrom"][0]["configMapRef"]["name"])
        assert not any(k.startswith(("PIX2VIDEO_TLS", "PIX2VIDEO_AUTH", "PIX2VIDEO_HEALTH")) for k in env), comp
        assert env["PIX2VIDEO_HOST"] == "0.0.0.0"


@pytest.mark.parametrize(
    "values, field",
    [
        (["security.tls.enabled=true"], "security.tls.secretName"),
        (["security.tls.mutual=true"], "security.tls.mutual"),
        (["security.tokens.enabled=true"], "security.tokens.existingSecret"),
        (["security.tokens.enabled=true", "security.tokens.existingSecret=t"], "security.tokens.serviceTokenSecret"),
    ],
)
def test_incomplete_security_values_fail_with_the_field(values, field):
    with pytest.raises(ht.HelmError, match=re.escape(field)):
        ht.template(set_values=values)


def test_images_listen_beyond_loopback_themselves():
    # One image serves the four services (deploy/docker/Dockerfile); it sets the host itself.
    text = (ht.ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ENV .*PIX2VIDEO_HOST=0\.0\.0\.0", text, re.M)
