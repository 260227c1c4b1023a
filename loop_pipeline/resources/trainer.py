"""Where the trainer runs: a local subprocess (default) or a Kubernetes job on a GPU node.

Both go through Dagster Pipes, so the ``lora_adapter`` asset is the same either way: the trainer
process (``python -m loop_pipeline.core.training --pipes``) reads its config from the Pipes extras,
streams progress into the run's event log and reports the materialization. configs/deploy/
holds the Kubernetes variant (see ``K8sTrainerLauncher.from_yaml``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg
import yaml
from pydantic import Field

from loop_pipeline.settings import ConfigError, reject_unknown_keys

TRAINER_MODULE = "loop_pipeline.core.training"
# Variables a trainer process needs to find the same stores and stay offline.
FORWARDED_ENV = (
    "LOOP_HOME",
    "LOOP_MLFLOW_TRACKING_URI",
    "LOOP_MLFLOW_ARTIFACT_ROOT",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "MLFLOW_DISABLE_TELEMETRY",
    "GX_ANALYTICS_ENABLED",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)


class TrainerLauncher(dg.ConfigurableResource):
    """Runs the trainer as a local subprocess through ``PipesSubprocessClient``."""

    python: str = Field(default_factory=lambda: sys.executable, description="Interpreter that runs the trainer.")
    cwd: Optional[str] = Field(default=None, description="Working directory of the trainer process.")

    def command(self) -> list[str]:
        return [self.python, "-m", TRAINER_MODULE, "--pipes"]

    def launch(
        self, context: dg.AssetExecutionContext, extras: Mapping[str, Any], env: Mapping[str, str]
    ) -> dg.PipesClientCompletedInvocation:
        forwarded = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        client = dg.PipesSubprocessClient(cwd=self.cwd)
        return client.run(command=self.command(), context=context, extras=dict(extras), env={**forwarded, **env})


class K8sTrainerLauncher(TrainerLauncher):
    """Runs the trainer as a pod (one GPU by default) through dagster-k8s's ``PipesK8sClient``.

    The image must hold this package (``pip install loop-pipeline``) and see the dataset and model
    folders at the same paths (a shared volume at LOOP_HOME, see configs/deploy/k8s-training.yaml).
    """

    python: str = "python"
    image: str
    namespace: str = "default"
    gpus: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    service_account: Optional[str] = None
    load_incluster_config: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path) -> "K8sTrainerLauncher":
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        section = (raw or {}).get("trainer") if isinstance(raw, Mapping) else None
        if not isinstance(section, Mapping):
            raise ConfigError(f"{path}: expected a `trainer:` mapping")
        reject_unknown_keys(f"{path}: trainer", section, cls.model_fields)
        if not section.get("image"):
            raise ConfigError(f"{path}: trainer.image is required (an image with loop-pipeline installed)")
        return cls(**section)

    def base_pod_spec(self) -> dict[str, Any]:
        """The pod spec around the trainer container; PipesK8sClient adds image, command and the
        Pipes environment to the container it names ``dagster-pipes-execution``."""
        limits: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)  # quantities are strings
        container: dict[str, Any] = {
            "name": "dagster-pipes-execution",
            "resources": {"limits": limits, "requests": dict(limits)},
            "volume_mounts": list(self.volume_mounts),
        }
        spec: dict[str, Any] = {
            "restart_policy": "Never",
            "containers": [container],
            "volumes": list(self.volumes),
            "node_selector": dict(self.node_selector),
            "tolerations": list(self.tolerations),
        }
        if self.service_account:
            spec["service_account_name"] = self.service_account
        return spec

    def launch(
        self, context: dg.AssetExecutionContext, extras: Mapping[str, Any], env: Mapping[str, str]
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        client = PipesK8sClient(load_incluster_config=self.load_incluster_config)
        return client.run(
            context=context,
            image=self.image,
            command=self.command(),
            namespace=self.namespace,
            extras=dict(extras),
            env={**self.env, **env},
            base_pod_spec=self.base_pod_spec(),
        )
