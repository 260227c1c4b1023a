"""The Dagster side of ``configs/deploy/``: the instance file and the step executor.

``dagster.yaml`` is validated as Dagster itself loads an instance (``dagster_instance_config``: its
schema and its own consistency rules), its ``run_launcher`` section against ``K8sRunLauncher``'s
config schema; ``executor.yaml`` against dagster-k8s's ``k8s_job_executor`` config schema. The
Kubernetes fragments both carry (volumes, resources, container / pod config) are walked against the
Kubernetes API models (:mod:`loop_pipeline.deploy.k8s`), since Dagster takes them as free-form maps.
Errors read like every other config file's: ``<file>: <field>: <message>``. dagster_k8s is imported
inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from loop_pipeline.config import ConfigError, read_yaml_mapping
from loop_pipeline.deploy.k8s import check_against_model, location

K8S_RUN_LAUNCHER = ("dagster_k8s", "K8sRunLauncher")
# Fields of the launcher / executor configs that are Kubernetes objects, and their client model.
_LAUNCHER_K8S_FIELDS = {
    "volumes": "list[V1Volume]",
    "volume_mounts": "list[V1VolumeMount]",
    "resources": "V1ResourceRequirements",
    "security_context": "V1SecurityContext",
}
_STEP_K8S_FIELDS = {
    "container_config": "V1Container",
    "pod_spec_config": "V1PodSpec",
    "pod_template_spec_metadata": "V1ObjectMeta",
    "job_spec_config": "V1JobSpec",
    "job_metadata": "V1ObjectMeta",
}


def _describe_dagster_error(error: Any) -> str:
    """One Dagster EvaluationError as ``<field>: <message>``."""
    loc = tuple(
        getattr(entry, "field_name", None) or getattr(entry, "list_index", None) or getattr(entry, "map_key", None)
        for entry in error.stack.entries
    )
    data, reason = error.error_data, error.reason.name
    if reason == "FIELD_NOT_DEFINED":
        return f"{location((*loc, data.field_name))}: unknown key"
    if reason == "FIELDS_NOT_DEFINED":
        return "; ".join(f"{location((*loc, name))}: unknown key" for name in data.field_names)
    if reason == "MISSING_REQUIRED_FIELD":
        return f"{location((*loc, data.field_name))}: missing"
    if reason == "MISSING_REQUIRED_FIELDS":
        return "; ".join(f"{location((*loc, name))}: missing" for name in data.field_names)
    if reason == "RUNTIME_TYPE_MISMATCH":
        expected = data.config_type_snap.given_name or data.config_type_snap.key
        return f"{location(loc)}: expected {expected} (got {data.value_rep})"
    return f"{location(loc)}: {' '.join(str(error.message).split())[:200]}"


def _fail(path: Path, problems: list[str], prefix: str = "") -> None:
    if problems:
        shown = problems[:5] + ([f"and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise ConfigError(f"{path}: " + "; ".join(prefix + p for p in shown))


def _validate(path: Path, schema: Any, value: Any, prefix: str = "") -> Any:
    from dagster._config import validate_config

    result = validate_config(schema, value)
    if not result.success:
        _fail(path, [_describe_dagster_error(e) for e in result.errors], prefix)
    return result.value


def _k8s_fields(config: Mapping[str, Any], fields: Mapping[str, str], loc: tuple[Any, ...]) -> list[str]:
    return [p for key, model in fields.items() if key in config for p in check_against_model(config[key], model, (*loc, key))]


class InstanceFile:
    """``configs/deploy/dagster.yaml``: the production Dagster instance."""

    def __init__(self, path: Path, config: Mapping[str, Any]):
        self.path = path
        self.config = config

    @property
    def launcher(self) -> Mapping[str, Any]:
        """The K8sRunLauncher's config (empty when the instance has another launcher)."""
        launcher = self.config.get("run_launcher") or {}
        if (launcher.get("module"), launcher.get("class")) != K8S_RUN_LAUNCHER:
            return {}
        return launcher.get("config") or {}

    @classmethod
    def from_yaml(cls, path: Path | str, overrides: Mapping[str, Any] | None = None) -> "InstanceFile":
        from dagster._core.errors import DagsterInvalidConfigError
        from dagster._core.instance.config import dagster_instance_config
        from dagster_k8s import K8sRunLauncher

        path = Path(path)
        raw = read_yaml_mapping(path)  # the file's own errors first, in the project's words
        if overrides:
            raise ConfigError(f"{path}: the instance file takes no overrides")
        try:
            config, _ = dagster_instance_config(str(path.parent), config_filename=path.name)
        except DagsterInvalidConfigError as exc:
            problems = [_describe_dagster_error(e) for e in exc.errors] or [" ".join(str(exc).split())[:300]]
            _fail(path, problems)
        launcher = raw.get("run_launcher") or {}
        if (launcher.get("module"), launcher.get("class")) != K8S_RUN_LAUNCHER:
            _fail(path, [f"run_launcher: expected module dagster_k8s, class K8sRunLauncher (got {launcher.get('module')}.{launcher.get('class')})"])
        launcher_config = launcher.get("config") or {}
        _validate(path, K8sRunLauncher.config_type(), launcher_config, prefix="run_launcher.config.")
        _fail(path, _k8s_fields(launcher_config, _LAUNCHER_K8S_FIELDS, ("run_launcher", "config")))
        return cls(path, config)


class ExecutorFile:
    """``configs/deploy/executor.yaml``: the ``k8s_job_executor`` config of the code location."""

    def __init__(self, path: Path, config: Mapping[str, Any]):
        self.path = path
        self.config = config

    @property
    def step_keys(self) -> list[str]:
        return sorted(self.config.get("per_step_k8s_config") or {})

    @classmethod
    def from_yaml(cls, path: Path | str, overrides: Mapping[str, Any] | None = None) -> "ExecutorFile":
        from dagster_k8s import k8s_job_executor

        from loop_pipeline.config import deep_merge

        path = Path(path)
        raw = deep_merge(read_yaml_mapping(path), overrides or {})
        _validate(path, k8s_job_executor.config_schema.as_field().config_type, raw)
        problems = _k8s_fields(raw, _LAUNCHER_K8S_FIELDS, ())
        problems += _k8s_fields(raw.get("step_k8s_config") or {}, _STEP_K8S_FIELDS, ("step_k8s_config",))
        for step, config in (raw.get("per_step_k8s_config") or {}).items():
            problems += _k8s_fields(config or {}, _STEP_K8S_FIELDS, ("per_step_k8s_config", step))
        _fail(path, problems)
        return cls(path, raw)


def build_executor(path: Path | str | None):
    """The executor the code location's definitions use: dagster-k8s's ``k8s_job_executor``
    configured from ``path`` (LOOP_EXECUTOR_DEPLOY), or None (Dagster's default) without one."""
    if not path:
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(ExecutorFile.from_yaml(path).config, name="loop_k8s_job_executor")
