"""The router's side of the registry: which version an alias points at, and that version as a local
model folder plus its :class:`~loop_pipeline.core.serving.ServingSpec`.

A version is downloaded once into ``<cache_dir>/<name>/v<version>/`` (the MLflow model: ``MLmodel``
and the merged weights and tokenizer under it): into a dot-prefixed staging folder first, renamed
into place only when complete, so a reader never sees a half-downloaded model; a later resolve of
the same version reuses it. The folder records which registry version it holds (source, run,
creation time): a registry recreated with the same version numbers is downloaded again.

Nothing here reads the environment; mlflow is imported inside the functions.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from loop_pipeline.core.registry import CHAMPION, RegistryError
from loop_pipeline.core.serving import SERVING_SPEC_TAG, ServingSpec
from loop_pipeline.core.tracking import TrackingTarget

IDENTITY_FILE = ".loop-registry-version.json"  # written into the staging folder before its rename
MERGED_ARTIFACT = "merged_model"  # the pyfunc artifact holding the weights (core/registry_model.py)


@dataclass(frozen=True)
class ResolvedModel:
    spec: ServingSpec  # version filled
    model_dir: Path  # merged weights + tokenizer: core.models.load_for_inference(str(model_dir))


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def _explain(exc: Exception, tracking: TrackingTarget, what: str) -> None:
    exc.add_note(f"while {what} on the MLflow registry at {_without_credentials(tracking.tracking_uri)}")


def champion_version(tracking: TrackingTarget, model_name: str, alias: str = CHAMPION) -> str | None:
    """The version number ``alias`` points at; None only when the registered model or the alias
    does not exist (any other registry error propagates). One registry call: cheap to poll."""
    from mlflow.exceptions import MlflowException

    try:
        registered = tracking.client().get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        _explain(exc, tracking, f"reading registered model {model_name!r}")
        raise
    version = (registered.aliases or {}).get(alias)
    return str(version) if version is not None else None


def resolve_champion(
    tracking: TrackingTarget, model_name: str, alias: str = CHAMPION, cache_dir: Path | None = None
) -> ResolvedModel:
    """The version ``alias`` points at, as a local folder and its spec (RegistryError "no champion"
    when the alias does not exist). ``cache_dir`` is required: the caller decides where models go."""
    if cache_dir is None:
        raise ValueError("resolve_champion needs a cache_dir to download the model into")
    version = champion_version(tracking, model_name, alias)
    if version is None:
        raise RegistryError(f"no champion: {model_name!r} has no alias {alias!r} in the registry at {_without_credentials(tracking.tracking_uri)}")
    return resolve_version(tracking, model_name, version, cache_dir)


def read_spec(info, model_name: str) -> ServingSpec:
    """A registry version's serving spec (RegistryError when it has none or it is invalid)."""
    raw = (info.tags or {}).get(SERVING_SPEC_TAG)
    if not raw:
        raise RegistryError(
            f"{model_name} v{info.version} has no {SERVING_SPEC_TAG} tag: it was not registered by register_and_promote "
            "(or predates serving specs); it cannot be served"
        )
    try:
        return ServingSpec.model_validate_json(raw).model_copy(update={"version": str(info.version)})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<spec>'}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"{model_name} v{info.version}: invalid {SERVING_SPEC_TAG} tag: {problems}") from None


def resolve_version(tracking: TrackingTarget, model_name: str, version: str, cache_dir: Path) -> ResolvedModel:
    """One registry version as a local folder (downloaded once, atomically) and its spec."""
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    try:
        info = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        _explain(exc, tracking, f"reading {model_name} v{version}")
        raise
    spec = read_spec(info, model_name)
    identity = {
        "model_name": model_name, "version": str(info.version), "source": info.source, "run_id": info.run_id,
        "creation_timestamp": info.creation_timestamp,
    }
    target = Path(cache_dir) / model_name / f"v{info.version}"
    if _identity(target) != identity:
        _download(tracking, client, identity, target)
    return ResolvedModel(spec=spec, model_dir=target / _merged_subdir(target, model_name, str(info.version)))


def _identity(folder: Path) -> dict | None:
    path = folder / IDENTITY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _merged_subdir(model_folder: Path, model_name: str, version: str) -> str:
    """Where the MLflow model keeps its merged weights (``artifacts/<folder>`` per its MLmodel)."""
    mlmodel = model_folder / "MLmodel"
    if not mlmodel.is_file():
        raise RegistryError(f"{model_name} v{version} is not an MLflow model (no MLmodel in its source): it cannot be served")
    flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")).get("flavors") or {}).get("python_function") or {}
    artifact = (flavor.get("artifacts") or {}).get(MERGED_ARTIFACT)
    if not artifact or not (model_folder / artifact["path"] / "config.json").is_file():
        raise RegistryError(f"{model_name} v{version}: its MLflow model holds no {MERGED_ARTIFACT} artifact with a model folder")
    return artifact["path"]


def _download(tracking: TrackingTarget, client, identity: dict, target: Path) -> None:
    """Download into a staging folder beside ``target``, check it, then rename it into place; a
    stale folder (another registry's version with this number) is moved aside and removed."""
    import mlflow.artifacts

    name, version = identity["model_name"], identity["version"]
    staging = target.parent / f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        try:
            uri = client.get_model_version_download_uri(name, version)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging), tracking_uri=tracking.tracking_uri))
        except Exception as exc:
            _explain(exc, tracking, f"downloading {name} v{version}")
            raise
        _merged_subdir(local, name, version)  # refuse anything the router could not load
        (local / IDENTITY_FILE).write_text(json.dumps(identity), encoding="utf-8")
        current = _identity(target)
        if current == identity:  # a concurrent resolve of the same version finished first
            return
        if target.exists():
            stale = target.parent / f".{target.name}.stale-{uuid.uuid4().hex[:8]}"
            os.replace(target, stale)
            shutil.rmtree(stale)
        try:
            os.replace(local, target)
        except OSError:
            if _identity(target) != identity:  # not a concurrent download of the same version
                raise
    finally:
        shutil.rmtree(staging)
