"""The serving side of ``configs/deploy/``: the router's settings (the ConfigMap's ``router.yaml``,
validated by :class:`RouterSettings`) against the vLLM Deployment and Service it calls, and the MLflow
server's arguments (parsed by MLflow's own ``mlflow server`` command) against the tracking URI the
pods use. Also which environment variables and Secret keys the files reference (for docs/deploy.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from loop_pipeline.config import ConfigError
from loop_pipeline.deploy.bundle import INSTANCE, TRAINER, Bundle, Problem
from loop_pipeline.deploy.k8s import GPU, Container, Manifest, containers

ROUTER_FILE_KEY = "router.yaml"  # the ConfigMap key holding the router's settings
ANY_HOST = ("0.0.0.0", "::")


def flags(argv: list[str]) -> dict[str, list[str]]:
    """``--flag value`` / ``--flag=value`` -> {flag: [values]} (a flag alone gets ``""``);
    positional arguments under ``""``."""
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            found.setdefault(name, []).append(value)
        else:
            found.setdefault("", []).append(token)
        i += 1
    return found


def behind(bundle: Bundle, url: str) -> tuple[Container | None, str]:
    """The container a cluster URL (``http://<service>.<namespace>.svc:<port>/...``) reaches, or
    None and why not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    service_name = host.split(".")[0]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    services = [m for _, m in bundle.objects("Service") if m.name == service_name]
    if not services:
        return None, f"{url}: no Service {service_name!r} in configs/deploy"
    spec = services[0].body.get("spec") or {}
    entry = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    if entry is None:
        return None, f"{url}: Service {service_name!r} has no port {port}"
    target = entry.get("targetPort", port)
    selector = spec.get("selector") or {}
    for _, manifest in bundle.manifests():
        labels = manifest.pod_labels()
        if manifest.pod_spec() is None or not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        for container in containers(manifest):
            named = {p.get("name"): p.get("containerPort") for p in container.body.get("ports") or []}
            if (named.get(target) if isinstance(target, str) else target) in container.ports() and not container.init:
                return container, ""
    return None, f"{url}: Service {service_name!r} port {port} reaches no container port {target}"


def served_names(container: Container) -> set[str]:
    """The model names a vLLM container answers to."""
    found = flags(container.argv)
    if "--enable-lora" in found:
        names = set()
        for value in found.get("--lora-modules", []):
            for module in value.split():
                names.add(module.split("=", 1)[0])
        return names
    if "--served-model-name" in found:
        return {name for value in found["--served-model-name"] for name in value.split()}
    model = found.get("--model") or [a for a in found.get("", []) if a not in ("vllm", "serve")][:1]
    return set(model)


def _vllm(file_name: str, container: Container) -> list[Problem]:
    found, ref = flags(container.argv), container.ref
    problems = []
    if "--enable-lora" in found and not found.get("--lora-modules"):
        problems.append((file_name, f"{ref}: --enable-lora without --lora-modules serves no adapter"))
    port = int((found.get("--port") or ["8000"])[-1])
    if port not in container.ports():
        problems.append((file_name, f"{ref}: --port {port} is not a containerPort ({sorted(container.ports())})"))
    host = (found.get("--host") or ["0.0.0.0"])[-1]
    if host not in ANY_HOST:
        problems.append((file_name, f"{ref}: --host {host} is unreachable through its Service (use 0.0.0.0)"))
    parallel = int((found.get("--tensor-parallel-size") or ["1"])[-1])
    gpus = container.limits().get(GPU)
    if gpus is None or int(gpus) != parallel:
        problems.append((file_name, f"{ref}: {GPU} limit {gpus!r} is not --tensor-parallel-size {parallel}"))
    return problems


def _router_settings(file_name: str, manifest: Manifest, text: str):
    """RouterSettings from the ConfigMap's text, the error naming the file and the ConfigMap."""
    from loop_pipeline.router.settings import RouterSettings

    with tempfile.TemporaryDirectory(prefix="loop-deploy-") as scratch:
        path = Path(scratch) / ROUTER_FILE_KEY
        path.write_text(text, encoding="utf-8")
        try:
            return RouterSettings.load(path), None
        except ConfigError as exc:
            return None, (file_name, str(exc).replace(str(path), f"{manifest.ref}: {ROUTER_FILE_KEY}", 1))


def _router_container(bundle: Bundle, config_map: str) -> tuple[str, Container] | None:
    for name, container in bundle.containers():
        volumes = {v["name"]: (v.get("configMap") or {}).get("name") for v in (container.manifest.pod_spec() or {}).get("volumes") or []}
        mounts = {m["name"]: m.get("mountPath") for m in container.body.get("volumeMounts") or []}
        config = (flags(container.argv).get("--config") or [None])[-1]
        if "serve" in container.argv and any(volumes.get(v) == config_map and config == f"{p}/{ROUTER_FILE_KEY}" for v, p in mounts.items()):
            return name, container
    return None


def routers(bundle: Bundle) -> Iterator[tuple[str, Manifest, Any, Problem | None]]:
    for name, manifest in bundle.objects("ConfigMap"):
        text = (manifest.body.get("data") or {}).get(ROUTER_FILE_KEY)
        if text is not None:
            settings, problem = _router_settings(name, manifest, text)
            yield name, manifest, settings, problem


def _router(bundle: Bundle) -> list[Problem]:
    problems: list[Problem] = []
    for name, manifest, settings, problem in routers(bundle):
        if problem is not None:
            problems.append(problem)
            continue
        found = _router_container(bundle, manifest.name)
        if found is None:
            problems.append((name, f"{manifest.ref}: no container runs `loop serve --config <mount>/{ROUTER_FILE_KEY}` with it mounted"))
            continue
        _, container = found
        ref = container.ref
        if settings.host not in ANY_HOST:
            problems.append((name, f"{manifest.ref}: host {settings.host} is unreachable through the Service (use 0.0.0.0)"))
        if settings.port not in container.ports():
            problems.append((name, f"{ref}: the router listens on {settings.port}, not a containerPort ({sorted(container.ports())})"))
        keys = [settings.frontier_api_key_env] + ([settings.local_api_key_env] if settings.local_api_key_env else [])
        for variable in keys:
            if variable not in container.env:
                problems.append((name, f"{ref}: {variable} (named by the router settings) is not set in its env"))
        if not settings.api_keys_sha256 and "LOOP_ROUTER_API_KEYS" not in container.env:
            problems.append((name, f"{ref}: no api_keys_sha256 and no LOOP_ROUTER_API_KEYS: the router would run without auth"))
        if settings.load_champion and settings.local_backend == "openai":
            problems.extend(_router_to_vllm(bundle, name, manifest, settings))
    return problems


def _router_to_vllm(bundle: Bundle, name: str, manifest: Manifest, settings) -> list[Problem]:
    server, why = behind(bundle, str(settings.local_base_url))
    if server is None:
        return [(name, f"{manifest.ref}: local_base_url {why}")]
    wanted = settings.local_model or settings.model_name
    served = served_names(server)
    if wanted not in served:
        return [(name, f"{manifest.ref}: local_model {wanted!r} is not served by {server.ref} (serves {sorted(served)})")]
    return []


def _mlflow(bundle: Bundle) -> list[Problem]:
    import click
    from mlflow.cli import server as mlflow_server
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    problems: list[Problem] = []
    env = bundle.loop_env()
    tracking, artifact_root = env.get("LOOP_MLFLOW_TRACKING_URI", ""), env.get("LOOP_MLFLOW_ARTIFACT_ROOT", "")
    for name, container in bundle.containers():
        argv = container.argv
        if argv[:2] != ["mlflow", "server"]:
            continue
        try:
            params = mlflow_server.make_context("mlflow server", argv[2:]).params
        except click.UsageError as exc:
            problems.append((name, f"{container.ref}: mlflow server {exc.format_message()}"))
            continue
        if params["host"] not in ANY_HOST or int(params["port"]) not in container.ports():
            problems.append((name, f"{container.ref}: listens on {params['host']}:{params['port']}, not 0.0.0.0 and a containerPort"))
        store = str(params["backend_store_uri"] or "")
        if not (store.startswith("postgresql") or "$(" in store):
            problems.append((name, f"{container.ref}: --backend-store-uri {store!r} is not PostgreSQL"))
        destination = str(params["artifacts_destination"] or params["default_artifact_root"] or "")
        if destination.startswith("s3://") and "MLFLOW_S3_ENDPOINT_URL" not in container.env:
            problems.append((name, f"{container.ref}: artifacts in {destination} but no MLFLOW_S3_ENDPOINT_URL (the S3-compatible store)"))
        if artifact_root.startswith("mlflow-artifacts:") and not params["serve_artifacts"]:
            problems.append((name, f"{container.ref}: pods log to {artifact_root} but the server runs without --serve-artifacts"))
        allowed = [h.strip() for h in (params["allowed_hosts"] or "").split(",") if h.strip()] or get_default_allowed_hosts()
        if tracking and not is_allowed_host_header(allowed, urlsplit(tracking).netloc):
            problems.append((name, f"{container.ref}: refuses Host {urlsplit(tracking).netloc} of LOOP_MLFLOW_TRACKING_URI (--allowed-hosts)"))
        server, why = behind(bundle, tracking)
        if tracking and server != container:
            problems.append((INSTANCE, f"LOOP_MLFLOW_TRACKING_URI {why or tracking + ' reaches ' + server.ref + ', not ' + container.ref}"))
    return problems


def services(bundle: Bundle) -> list[Problem]:
    problems = _router(bundle) + _mlflow(bundle)
    for name, container in bundle.containers():
        if container.argv[:2] == ["vllm", "serve"]:
            problems.extend(_vllm(name, container))
    return problems


def key_variables(bundle: Bundle) -> set[str]:
    """The variables the router's settings name as holding keys (frontier_api_key_env, ...)."""
    names = set()
    for _, _, settings, _ in routers(bundle):
        if settings is not None:
            names |= {settings.frontier_api_key_env} | ({settings.local_api_key_env} if settings.local_api_key_env else set())
    return names


Reference = tuple[str, str, "str | None", "tuple[str, str | None] | None"]  # file, where, variable, (secret, key)


def _instance_env(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """``{env: NAME}`` sources anywhere in Dagster config."""
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            yield where, value["env"]
        for key, item in value.items():
            yield from _instance_env(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _instance_env(item, f"{where}[{i}]")


def _container_references(bundle: Bundle, documented) -> Iterator[Reference]:
    config_maps = bundle.config_map_data()
    for name, container in bundle.containers():
        for variable, entry in container.env.items():
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            yield name, f"{container.ref}: env", variable, ((ref["name"], ref.get("key")) if ref else None)
        for config_map in container.env_from("configMapRef"):
            for variable in config_maps.get(config_map, {}):
                yield name, f"{container.ref}: envFrom ConfigMap {config_map}", variable, None
        for secret in container.env_from("secretRef"):
            yield name, f"{container.ref}: envFrom", None, (secret, None)
            for variable in sorted(documented.secrets.get(secret, ())):
                yield name, f"{container.ref}: envFrom Secret {secret}", variable, None


def referenced_env(bundle: Bundle, documented) -> Iterator[Reference]:
    """Every environment variable and Secret (key) the deploy files reference."""
    yield from _container_references(bundle, documented)
    for file_name in (INSTANCE, "executor.yaml"):
        loaded = bundle.files.get(file_name)
        raw = loaded.config if loaded is not None else {}
        for where, variable in _instance_env(raw, ""):
            yield file_name, where, variable, None
        launcher = raw.get("run_launcher", {}).get("config", {}) if file_name == INSTANCE else raw
        for entry in launcher.get("env_vars") or []:
            yield file_name, "env_vars", str(entry).split("=", 1)[0], None
        for secret in launcher.get("env_secrets") or []:
            yield file_name, "env_secrets", None, (secret, None)
            for variable in sorted(documented.secrets.get(secret, ())):
                yield file_name, f"env_secrets {secret}", variable, None
    if bundle.trainer is not None:
        for variable in bundle.trainer.env:
            yield TRAINER, "trainer.env", variable, None
    for name, manifest, settings, _ in routers(bundle):
        if settings is not None:
            for variable in key_variables(bundle):
                yield name, f"{manifest.ref}: {ROUTER_FILE_KEY}", variable, None
