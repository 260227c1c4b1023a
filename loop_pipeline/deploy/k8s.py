"""Kubernetes manifests under ``configs/deploy/``: loaded (multi-document YAML) and checked.

Every object is walked against the Kubernetes API model the ``kubernetes`` client generates for its
``apiVersion`` / ``kind`` (``V1Deployment``, ``V1Service``, ...: their ``openapi_types`` and
``attribute_map``), so a misspelt or misplaced key fails here instead of being dropped by the API
server's pruning or ignored by a client. On top: every container has an image, resource requests and
limits, a GPU request equal to its limit and a toleration for it, and every ``$(VAR)`` in its command
and arguments names a variable the container defines (Kubernetes leaves an unknown one as literal
text). The ``kubernetes`` package is imported inside the functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from loop_pipeline.config import ConfigError

GPU = "nvidia.com/gpu"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_QUANTITY_KEYS = {"limits", "requests", "sizeLimit", "storage"}  # int or string quantities


def location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        parts.append(f"[{part}]" if isinstance(part, int) else ("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def model_class(api_version: str, kind: str):
    """The kubernetes client model of an object (``apps/v1`` + ``Deployment`` -> ``V1Deployment``)."""
    import kubernetes.client

    version = str(api_version).rsplit("/", 1)[-1]
    return getattr(kubernetes.client, version[:1].upper() + version[1:] + str(kind), None)


def _inner(type_name: str, prefix: str) -> str:
    return type_name[len(prefix) : -1]


def check_against_model(value: Any, type_name: str, loc: tuple[Any, ...] = ()) -> list[str]:
    """Problems of ``value`` as the kubernetes client type ``type_name`` (``V1PodSpec``,
    ``list[V1Container]``, ``dict(str, str)``, ``str``): unknown keys and wrong types, each
    ``<location>: <message>``. Keys may be the API's camelCase or the client's snake_case (dagster-k8s
    takes both)."""
    import kubernetes.client

    if value is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{location(loc)}: expected a list (got {type(value).__name__})"]
        inner = _inner(type_name, "list[")
        return [p for i, item in enumerate(value) for p in check_against_model(item, inner, (*loc, i))]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return [f"{location(loc)}: expected a mapping (got {type(value).__name__})"]
        inner = _inner(type_name, "dict(").split(", ", 1)[1]
        return [p for key, item in value.items() for p in check_against_model(item, inner, (*loc, key))]
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if type_name == "str" and loc and (loc[-1] in _QUANTITY_KEYS or (len(loc) > 1 and loc[-2] in _QUANTITY_KEYS)):
            allowed = (str, int, float)
        if isinstance(value, bool) and type_name != "bool" or not isinstance(value, allowed):
            return [f"{location(loc)}: expected {type_name} (got {value!r})"]
        return []
    model = getattr(kubernetes.client, type_name, None)
    if model is None:  # object, datetime and the like: anything goes
        return []
    if not isinstance(value, dict):
        return [f"{location(loc)}: expected a {type_name} mapping (got {type(value).__name__})"]
    by_key = {json: attr for attr, json in model.attribute_map.items()} | {attr: attr for attr in model.attribute_map}
    problems = []
    for key, item in value.items():
        attr = by_key.get(key)
        if attr is None:
            problems.append(f"{location((*loc, key))}: unknown key (a {type_name} has {sorted(model.attribute_map.values())})")
        else:
            problems.extend(check_against_model(item, model.openapi_types[attr], (*loc, key)))
    return problems


@dataclass(frozen=True)
class Manifest:
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name"))

    @property
    def namespace(self) -> str | None:
        return (self.body.get("metadata") or {}).get("namespace")

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def pod_spec(self) -> dict[str, Any] | None:
        if self.kind not in WORKLOAD_KINDS:
            return None
        return ((self.body.get("spec") or {}).get("template") or {}).get("spec") or {}

    def pod_labels(self) -> dict[str, str]:
        return (((self.body.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


@dataclass(frozen=True)
class Container:
    manifest: Manifest
    body: dict[str, Any]
    init: bool = False

    @property
    def name(self) -> str:
        return str(self.body.get("name"))

    @property
    def ref(self) -> str:
        return f"{self.manifest.ref}: {'init container' if self.init else 'container'} {self.name}"

    @property
    def argv(self) -> list[str]:
        return [str(a) for a in (self.body.get("command") or []) + (self.body.get("args") or [])]

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {str(e.get("name")): e for e in self.body.get("env") or []}

    def env_from(self, kind: str) -> list[str]:
        """Names of the ConfigMaps (``configMapRef``) or Secrets (``secretRef``) it takes whole."""
        return [str(source[kind]["name"]) for source in self.body.get("envFrom") or [] if kind in source]

    def ports(self) -> set[int]:
        return {int(p["containerPort"]) for p in self.body.get("ports") or [] if "containerPort" in p}

    def limits(self) -> dict[str, Any]:
        return (self.body.get("resources") or {}).get("limits") or {}


def containers(manifest: Manifest) -> Iterator[Container]:
    spec = manifest.pod_spec() or {}
    for body in spec.get("initContainers") or []:
        yield Container(manifest, body, init=True)
    for body in spec.get("containers") or []:
        yield Container(manifest, body)


def _container_problems(container: Container, tolerates_gpu: bool) -> list[str]:
    body, problems = container.body, []
    if not body.get("image"):
        problems.append(f"{container.ref}: no image")
    resources = body.get("resources") or {}
    for part in ("requests", "limits"):
        missing = [r for r in ("cpu", "memory") if r not in (resources.get(part) or {})]
        if missing:
            problems.append(f"{container.ref}: resources.{part} has no {' / '.join(missing)}")
    gpus = container.limits().get(GPU)
    requested = (resources.get("requests") or {}).get(GPU)
    if requested is not None and str(requested) != str(gpus):
        problems.append(f"{container.ref}: resources.requests {GPU} {requested!r} differs from its limit {gpus!r}")
    if gpus is not None and not tolerates_gpu:
        problems.append(f"{container.ref}: asks for {GPU} but the pod has no toleration for {GPU} nodes")
    defined = set(container.env)
    for arg in container.argv:
        for name in VAR_REFERENCE.findall(arg):
            if name not in defined:
                problems.append(f"{container.ref}: $({name}) in its command is not one of its env variables (Kubernetes would pass it literally)")
    for name, entry in container.env.items():
        if ("value" in entry) == ("valueFrom" in entry):
            problems.append(f"{container.ref}: env {name} needs exactly one of value / valueFrom")
    return problems


def manifest_problems(body: Any, index: int) -> list[str]:
    """What is wrong with one document of a manifest file (empty: nothing)."""
    if not isinstance(body, dict):
        return [f"document {index}: expected a Kubernetes object (a mapping), got {type(body).__name__}"]
    where = f"document {index}"
    missing = [k for k in ("apiVersion", "kind") if not body.get(k)]
    if missing or not (body.get("metadata") or {}).get("name"):
        return [f"{where}: needs apiVersion, kind and metadata.name"]
    manifest = Manifest(body)
    model = model_class(body["apiVersion"], body["kind"])
    if model is None:
        return [f"{where} ({manifest.ref}): no Kubernetes model for apiVersion {body['apiVersion']!r} kind {body['kind']!r}"]
    problems = [f"{manifest.ref}: {p}" for p in check_against_model(body, model.__name__)]
    spec = manifest.pod_spec()
    if spec is not None:
        if not spec.get("containers"):
            problems.append(f"{manifest.ref}: the pod has no containers")
        tolerates_gpu = any(t.get("key") == GPU for t in spec.get("tolerations") or [])
        problems.extend(p for c in containers(manifest) for p in _container_problems(c, tolerates_gpu))
        selector = ((body.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        labels = manifest.pod_labels()
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{manifest.ref}: spec.selector.matchLabels {selector} does not match the pod labels {labels}")
    return problems


class ManifestFile:
    """A multi-document file of Kubernetes objects; ``from_yaml`` raises a ConfigError naming the file,
    the object and the field (``vllm.yaml: Deployment/vllm: spec.replica: unknown key ...``)."""

    def __init__(self, path: Path, manifests: list[Manifest]):
        self.path = path
        self.manifests = manifests

    @classmethod
    def from_yaml(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> "ManifestFile":
        if overrides:
            raise ConfigError(f"{path}: Kubernetes manifests take no overrides")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from exc
        if not documents:
            raise ConfigError(f"{path}: no Kubernetes object in the file")
        problems = [p for i, doc in enumerate(documents) for p in manifest_problems(doc, i)]
        if problems:
            shown = problems[:5] + ([f"and {len(problems) - 5} more"] if len(problems) > 5 else [])
            raise ConfigError(f"{path}: " + "; ".join(shown))
        return cls(path, [Manifest(d) for d in documents])

    def find(self, kind: str, name: str | None = None) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind and (name is None or m.name == name)]
