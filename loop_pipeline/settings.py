"""The one reader of the environment: ``LoopSettings`` (pydantic-settings, prefix ``LOOP_``).

Everything embedded lives under one folder, ``LOOP_HOME`` (default ``.loop`` in the working
directory): deleting it resets the project. Production swaps the pieces for PostgreSQL, an MLflow
server and object storage through ``LOOP_*`` variables. Only entry points (the CLI, Dagster's
definitions and resources, the router app) build a ``LoopSettings``; core functions take their
configuration and paths as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from loop_pipeline.config import ConfigError, ConfigModel

REPO_ROOT = Path(__file__).resolve().parent.parent
M = TypeVar("M", bound=ConfigModel)

__all__ = ["ConfigError", "LoopPaths", "LoopSettings", "REPO_ROOT"]


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


class LoopSettings(BaseSettings):
    """``LOOP_HOME``, ``LOOP_CONFIG_DIR``, ``LOOP_LANDING_URL``, ``LOOP_PG_URL``,
    ``LOOP_MLFLOW_TRACKING_URI``, ``LOOP_MLFLOW_ARTIFACT_ROOT``, ``LOOP_TRAINER_DEPLOY``,
    ``LOOP_TRAIN_CONFIG``, ``LOOP_ROUTER_URL``, ``LOOP_ROUTER_ADMIN_KEY``."""

    model_config = SettingsConfigDict(env_prefix="LOOP_", extra="ignore", frozen=True)

    home: Path = Path(".loop")
    # Default: ./configs when it holds the project's files, else the configs/ beside the package.
    config_dir: Optional[Path] = None
    # The landing folder: a local path (default: $LOOP_HOME/landing) or any fsspec URL.
    landing_url: Optional[str] = None
    # A PostgreSQL URL for the Dagster instance (default: SQLite under $LOOP_HOME/dagster).
    pg_url: Optional[str] = None
    # MLflow backend store and artifact root (default: SQLite and files under $LOOP_HOME/mlflow).
    mlflow_tracking_uri: Optional[str] = None
    mlflow_artifact_root: Optional[str] = None
    # configs/deploy/k8s-training.yaml: train as a Kubernetes job instead of a local process.
    trainer_deploy: Optional[str] = None
    # configs/deploy/executor.yaml: each step of a run as a Kubernetes job (dagster-k8s's k8s_job_executor).
    executor_deploy: Optional[str] = None
    # The train config lora_adapter uses when its run config names none.
    train_config: Optional[str] = None
    # The running router the champion_reload_sensor tells about a new champion (POST /admin/reload),
    # e.g. http://127.0.0.1:8080; unset: the sensor skips and says so.
    router_url: Optional[str] = None
    # A key that router accepts (its sha256 is in the router's api_keys_sha256), sent as Bearer.
    router_admin_key: Optional[SecretStr] = None

    @property
    def paths(self) -> LoopPaths:
        return LoopPaths(self.home.expanduser().resolve())

    @property
    def landing(self) -> str:
        return self.landing_url or str(self.paths.landing)

    @property
    def configs(self) -> Path:
        if self.config_dir is not None:
            found = self.config_dir.expanduser()
            if not found.is_dir():
                raise ConfigError(f"LOOP_CONFIG_DIR={str(self.config_dir)!r} is not a directory")
            return found.resolve()
        local = Path("configs")
        if (local / "prices.yaml").is_file():
            return local.resolve()
        return REPO_ROOT / "configs"

    def config_path(self, name: str) -> Path:
        return self.configs / f"{name}.yaml"

    def load(self, model: type[M], overrides: Mapping[str, Any] | None = None) -> M:
        """``<config dir>/<model.FILE>.yaml`` validated as ``model`` (with ``overrides`` merged in)."""
        if not model.FILE:
            raise TypeError(f"{model.__name__} is not a file-level config (no FILE)")
        return model.from_yaml(self.config_path(model.FILE), overrides)

    def tracking(self):
        """Where MLflow runs go: the LOOP_MLFLOW_* settings, else SQLite and files under LOOP_HOME."""
        from loop_pipeline.core.tracking import TrackingTarget

        folder = self.paths.mlflow
        return TrackingTarget(
            self.mlflow_tracking_uri or f"sqlite:///{folder / 'mlflow.db'}",
            self.mlflow_artifact_root or (folder / "artifacts").as_uri(),
        )

