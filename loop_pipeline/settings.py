"""Where loop_pipeline keeps its state and finds its configuration.

Everything embedded lives under one folder, ``LOOP_HOME`` (default ``.loop`` in the working
directory): deleting it resets the project. Production swaps the pieces for PostgreSQL, an MLflow
server and object storage through ``LOOP_*`` variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A configuration file or value is missing or invalid; the message names it."""


@dataclass(frozen=True)
class LoopPaths:
    home: Path

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def datasets(self) -> Path:
        return self.home / "datasets"

    @property
    def models(self) -> Path:
        return self.home / "models"


def loop_home() -> Path:
    return Path(os.environ.get("LOOP_HOME", ".loop")).expanduser().resolve()


def paths() -> LoopPaths:
    return LoopPaths(loop_home())


def landing_url() -> str:
    """The landing folder: a local path by default, any fsspec URL through ``LOOP_LANDING_URL``."""
    return os.environ.get("LOOP_LANDING_URL") or str(paths().landing)


def config_dir() -> Path:
    """``LOOP_CONFIG_DIR``, else ``./configs`` when it exists, else the project's own configs/."""
    explicit = os.environ.get("LOOP_CONFIG_DIR")
    if explicit:
        found = Path(explicit).expanduser()
        if not found.is_dir():
            raise ConfigError(f"LOOP_CONFIG_DIR={explicit!r} is not a directory")
        return found
    local = Path("configs")
    if (local / "prices.yaml").is_file():
        return local.resolve()
    return REPO_ROOT / "configs"


@lru_cache(maxsize=32)
def _load_yaml_cached(path: str, mtime_ns: int) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def reject_unknown_keys(section: str, raw: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise a ConfigError naming the keys of ``raw`` that ``section`` does not know."""
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")


def load_config(name: str) -> dict[str, Any]:
    """Load ``configs/<name>.yaml`` (see :func:`config_dir`)."""
    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        return _load_yaml_cached(str(path), path.stat().st_mtime_ns)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
