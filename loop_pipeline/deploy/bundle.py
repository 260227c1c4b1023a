"""``configs/deploy/`` as a whole: the files loaded together and checked against each other, and the
environment they reference checked against docs/deploy.md's tables.

Each check returns ``(file name, message)`` pairs; :func:`cross_file_problems` groups them per file as
one line each, the way ``loop config check`` reports a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from loop_pipeline.config import ConfigError
from loop_pipeline.deploy.dagster_files import ExecutorFile, InstanceFile
from loop_pipeline.deploy.k8s import Container, Manifest, ManifestFile, containers

Problem = tuple[str, str]  # (file name under configs/deploy, message)
INSTANCE, EXECUTOR, TRAINER = "dagster.yaml", "executor.yaml", "k8s-training.yaml"


@dataclass
class Bundle:
    folder: Path
    files: dict[str, Any] = field(default_factory=dict)  # file name -> its loaded model
    errors: dict[str, str] = field(default_factory=dict)  # file name -> why it did not load

    @property
    def instance(self) -> InstanceFile | None:
        return self.files.get(INSTANCE)

    @property
    def executor(self) -> ExecutorFile | None:
        return self.files.get(EXECUTOR)

    @property
    def trainer(self):
        loaded = self.files.get(TRAINER)
        return loaded.trainer if loaded is not None else None

    def manifests(self) -> Iterator[tuple[str, Manifest]]:
        for name, loaded in sorted(self.files.items()):
            if isinstance(loaded, ManifestFile):
                for manifest in loaded.manifests:
                    yield name, manifest

    def objects(self, kind: str) -> list[tuple[str, Manifest]]:
        return [(name, m) for name, m in self.manifests() if m.kind == kind]

    def names(self, kind: str) -> set[str]:
        return {m.name for _, m in self.objects(kind)}

    def containers(self) -> Iterator[tuple[str, Container]]:
        for name, manifest in self.manifests():
            for container in containers(manifest):
                yield name, container

    def config_map_data(self) -> dict[str, dict[str, str]]:
        return {m.name: dict(m.body.get("data") or {}) for _, m in self.objects("ConfigMap")}

    def loop_env(self) -> dict[str, str]:
        """The variables every loop_pipeline pod gets: the run launcher's env_config_maps."""
        data = self.config_map_data()
        names = (self.instance.launcher.get("env_config_maps") if self.instance else None) or []
        return {k: str(v) for name in names for k, v in data.get(name, {}).items()}


def load_bundle(folder: Path) -> Bundle:
    from loop_pipeline.deploy import DeployFile

    bundle = Bundle(folder)
    for path in sorted(folder.glob("*.yaml")):
        try:
            bundle.files[path.name] = DeployFile.from_yaml(path)
        except ConfigError as exc:
            bundle.errors[path.name] = str(exc)
    return bundle


def _claims(volumes: list[dict[str, Any]]) -> set[str]:
    claims = set()
    for volume in volumes or []:
        claim = volume.get("persistentVolumeClaim") or volume.get("persistent_volume_claim") or {}
        name = claim.get("claimName") or claim.get("claim_name")
        if name:
            claims.add(name)
    return claims


def _infrastructure(bundle: Bundle) -> list[Problem]:
    """Namespaces, service accounts, volumes and ConfigMaps the files name exist in the bundle."""
    problems: list[Problem] = []
    instance, trainer = bundle.instance, bundle.trainer
    launcher = instance.launcher if instance else {}
    namespace = launcher.get("job_namespace")
    for name, manifest in bundle.manifests():
        if namespace and manifest.kind != "Namespace" and manifest.namespace != namespace:
            problems.append((name, f"{manifest.ref}: namespace {manifest.namespace!r}, not the run launcher's job_namespace {namespace!r}"))
        for claim in sorted(_claims((manifest.pod_spec() or {}).get("volumes"))):
            if claim not in bundle.names("PersistentVolumeClaim"):
                problems.append((name, f"{manifest.ref}: volume claim {claim!r} is no PersistentVolumeClaim of configs/deploy"))
    accounts, claims = bundle.names("ServiceAccount"), bundle.names("PersistentVolumeClaim")
    if instance:
        if launcher.get("service_account_name") and launcher["service_account_name"] not in accounts:
            problems.append((INSTANCE, f"run_launcher.config.service_account_name {launcher['service_account_name']!r} is no ServiceAccount of configs/deploy"))
        for claim in sorted(_claims(launcher.get("volumes")) - claims):
            problems.append((INSTANCE, f"run_launcher.config.volumes: claim {claim!r} is no PersistentVolumeClaim of configs/deploy"))
        for config_map in launcher.get("env_config_maps") or []:
            if config_map not in bundle.config_map_data():
                problems.append((INSTANCE, f"run_launcher.config.env_config_maps: {config_map!r} is no ConfigMap of configs/deploy"))
    if trainer:
        if namespace and trainer.namespace != namespace:
            problems.append((TRAINER, f"trainer.namespace {trainer.namespace!r}: the run launcher's job_namespace is {namespace!r}"))
        if trainer.service_account and trainer.service_account not in accounts:
            problems.append((TRAINER, f"trainer.service_account {trainer.service_account!r} is no ServiceAccount of configs/deploy"))
        for claim in sorted(_claims(trainer.volumes) - claims):
            problems.append((TRAINER, f"trainer.volumes: claim {claim!r} is no PersistentVolumeClaim of configs/deploy"))
        if trainer.gpus < 1:
            problems.append((TRAINER, "trainer.gpus: the trainer's pod needs a GPU in production"))
    return problems


def _dagster_containers(bundle: Bundle) -> list[tuple[str, Container]]:
    return [(n, c) for n, c in bundle.containers() if c.argv and c.argv[0].startswith("dagster")]


def _dagster(bundle: Bundle, step_names: set[str] | None) -> list[Problem]:
    """The Dagster pods see the instance file at DAGSTER_HOME, run the image runs use, one daemon."""
    problems: list[Problem] = []
    instance = bundle.instance
    launcher = instance.launcher if instance else {}
    home, config_map, image = launcher.get("dagster_home"), launcher.get("instance_config_map"), launcher.get("job_image")
    for name, container in _dagster_containers(bundle):
        env = container.env
        if home and (env.get("DAGSTER_HOME") or {}).get("value") != home:
            problems.append((name, f"{container.ref}: DAGSTER_HOME is not the run launcher's dagster_home {home!r}"))
        mounted = {m["name"]: m.get("mountPath") for m in container.body.get("volumeMounts") or []}
        volumes = {v["name"]: (v.get("configMap") or {}).get("name") for v in (container.manifest.pod_spec() or {}).get("volumes") or []}
        if config_map and not any(volumes.get(v) == config_map and path == home for v, path in mounted.items()):
            problems.append((name, f"{container.ref}: does not mount ConfigMap {config_map!r} (the instance) at {home!r}"))
        if image and container.body.get("image") != image:
            problems.append((name, f"{container.ref}: image {container.body.get('image')!r}, runs use {image!r} (run_launcher.config.job_image)"))
        if container.argv[:2] == ["dagster-daemon", "run"] and (container.manifest.body.get("spec") or {}).get("replicas", 1) != 1:
            problems.append((name, f"{container.manifest.ref}: the daemon must run exactly one replica"))
    if bundle.trainer and image and bundle.trainer.image != image:
        problems.append((TRAINER, f"trainer.image {bundle.trainer.image!r}: runs use {image!r}; the trainer needs the same package"))
    env = bundle.loop_env()
    for variable, file_name in (("LOOP_TRAINER_DEPLOY", TRAINER), ("LOOP_EXECUTOR_DEPLOY", EXECUTOR)):
        value = env.get(variable)
        if value is not None and (Path(value).name != file_name or file_name not in bundle.files):
            problems.append((INSTANCE, f"{variable}={value!r} (run_launcher's env_config_maps) is not configs/deploy/{file_name}"))
    if bundle.executor and step_names is not None:
        unknown = sorted(set(bundle.executor.step_keys) - step_names)
        if unknown:
            problems.append((EXECUTOR, f"per_step_k8s_config: {unknown} are no steps of the project's assets (known: {sorted(step_names)})"))
    return problems


def _loop_variables() -> set[str]:
    from loop_pipeline.router.settings import RouterSettings
    from loop_pipeline.settings import LoopSettings

    names = {f"LOOP_{name.upper()}" for name in LoopSettings.model_fields}
    names |= {f"LOOP_ROUTER_{name.upper()}" for name in RouterSettings.model_fields} | {"LOOP_ROUTER_API_KEYS"}
    return names


def _loop_names(bundle: Bundle, key_variables: set[str]) -> list[Problem]:
    """Every LOOP_* variable set anywhere is one the project reads (a typo would be ignored silently)."""
    known, problems = _loop_variables() | key_variables, []
    for name, container in bundle.containers():
        for variable in sorted(v for v in container.env if v.startswith("LOOP_") and v not in known):
            problems.append((name, f"{container.ref}: env {variable} is read by nothing (LoopSettings / RouterSettings fields, or a key variable the router names)"))
    for name, manifest in bundle.objects("ConfigMap"):
        for variable in sorted(k for k in manifest.body.get("data") or {} if k.startswith("LOOP_") and k not in known):
            problems.append((name, f"{manifest.ref}: {variable} is read by nothing (LoopSettings / RouterSettings fields)"))
    return problems


def cross_file_problems(folder: Path, step_names: set[str] | None = None) -> dict[str, str]:
    """``{path: "<path>: <problem>; <problem>"}`` for every deploy file the others contradict.
    Files that do not load on their own are left to their own check. ``step_names``: the asset steps
    the executor's per_step_k8s_config may name (None: not checked)."""
    from loop_pipeline.deploy.services import key_variables, services

    bundle = load_bundle(folder)
    problems = _infrastructure(bundle) + _dagster(bundle, step_names) + services(bundle)
    problems += _loop_names(bundle, key_variables(bundle))
    grouped: dict[str, list[str]] = {}
    for name, message in problems:
        grouped.setdefault(name, []).append(message)
    return {str(folder / name): f"{folder / name}: " + "; ".join(messages) for name, messages in grouped.items()}


# ------------------------------------------------------------------------------------------------
# The environment against docs/deploy.md


@dataclass(frozen=True)
class DocumentedEnv:
    variables: set[str]
    secrets: dict[str, set[str]]  # Secret name -> its keys


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The rows of the first Markdown table under the ``## `` heading that contains ``heading``."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("#"):
            if inside and rows:
                break
            inside = line.startswith("## ") and heading.lower() in line.lower()
            continue
        if inside and line.startswith("|") and not re.match(r"^\|[\s:|-]+\|?$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def read_documented(doc: Path) -> DocumentedEnv:
    """The variables of the table under "## Environment variables" (first column, in backticks) and
    the Secrets of the table under "## Secrets" (name, then its keys in backticks)."""
    if not doc.is_file():
        raise ConfigError(f"{doc}: not found (the deploy walk-through documents every variable)")
    text = doc.read_text(encoding="utf-8")
    variables = {n for row in _table_rows(text, "Environment variables") for n in re.findall(r"`([^`]+)`", row[0])}
    secrets: dict[str, set[str]] = {}
    for row in _table_rows(text, "Secrets"):
        names = re.findall(r"`([^`]+)`", row[0])
        if names and len(row) > 1:
            secrets.setdefault(names[0], set()).update(re.findall(r"`([^`]+)`", row[1]))
    if not variables or not secrets:
        raise ConfigError(f"{doc}: needs a table under '## Environment variables' and one under '## Secrets'")
    return DocumentedEnv(variables, secrets)


def undocumented(folder: Path, doc: Path) -> list[str]:
    """Every variable and Secret key the deploy files reference that docs/deploy.md does not list,
    as ``<file>: <where>: <what>``."""
    from loop_pipeline.deploy.services import referenced_env

    bundle, documented = load_bundle(folder), read_documented(doc)
    problems = []
    for file_name, where, variable, secret in referenced_env(bundle, documented):
        if secret is not None:
            name, key = secret
            if name not in documented.secrets:
                problems.append(f"{folder / file_name}: {where}: Secret {name!r} is not in {doc}'s Secrets table")
                continue
            if key is not None and key not in documented.secrets[name]:
                problems.append(f"{folder / file_name}: {where}: key {key!r} of Secret {name!r} is not in {doc}'s Secrets table")
        if variable is not None and variable not in documented.variables:
            problems.append(f"{folder / file_name}: {where}: {variable} is not in {doc}'s Environment variables table")
    return problems
