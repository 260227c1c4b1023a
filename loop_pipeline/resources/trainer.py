"""Where the trainer runs: a local subprocess (default) or a Kubernetes job on a GPU node.

Both go through Dagster Pipes, so the ``lora_adapter`` asset is the same either way: the trainer
process (``python -m loop_pipeline.core.training --pipes``) reads its config from the Pipes extras,
streams progress into the run's event log and sends its result back as a Pipes message. configs/deploy/
holds the Kubernetes variant (see ``K8sTrainerLauncher.from_yaml``; the file is a ``K8sDeployFile``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import dagster as dg
from pydantic import Field

from loop_pipeline.config import ConfigModel

TRAINER_MODULE = "loop_pipeline.core.training"
DEFAULT_TRAIN_CONFIG = "smollm2-clinc"


class TrainerLauncher(dg.ConfigurableResource):
    """Runs the trainer as a local subprocess through ``PipesSubprocessClient``."""

    python: str = Field(default_factory=lambda: sys.executable, description="Interpreter that runs the trainer.")
    cwd: Optional[str] = Field(default=None, description="Working directory of the trainer process.")
    default_train_config: str = Field(
        default=DEFAULT_TRAIN_CONFIG,
        description="The train config lora_adapter uses when its run config names none (a name under configs/train/ or a YAML path).",
    )

    def command(self) -> list[str]:
        return [self.python, "-m", TRAINER_MODULE, "--pipes"]

    def launch(
        self, context: dg.AssetExecutionContext, extras: Mapping[str, Any], env: Mapping[str, str]
    ) -> dg.PipesClientCompletedInvocation:
        # The subprocess inherits this process's environment (HF_HUB_OFFLINE, OMP_NUM_THREADS, ...).
        client = dg.PipesSubprocessClient(cwd=self.cwd)
        return client.run(command=self.command(), context=context, extras=dict(extras), env=dict(env))


class K8sTrainerSpec(ConfigModel):
    """The ``trainer:`` section of configs/deploy/k8s-training.yaml (what K8sTrainerLauncher takes)."""

    image: str = Field(min_length=1)  # an image with loop-pipeline installed (+ CUDA torch)
    python: str = Field(default="python", min_length=1)
    namespace: str = Field(default="default", min_length=1)
    gpus: int = Field(default=1, ge=0)  # nvidia.com/gpu limit
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    volume_mounts: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    service_account: Optional[str] = None
    load_incluster_config: bool = True


class K8sDeployFile(ConfigModel):
    trainer: K8sTrainerSpec


class K8sTrainerLauncher(TrainerLauncher):
    """Runs the trainer as a pod (one GPU by default) through dagster-k8s's ``PipesK8sClient``.

    The image must hold this package (``pip install loop-pipeline``) and see the dataset and model
    folders at the same paths (a shared volume at LOOP_HOME, see configs/deploy/k8s-training.yaml).
    Its fields are :class:`K8sTrainerSpec`'s (validated there, from the deploy file).
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
    def from_yaml(cls, path: str | Path, **launcher: Any) -> "K8sTrainerLauncher":
        """The launcher the deploy file describes; a bad file raises a ConfigError naming it and
        the field (``k8s-training.yaml: trainer.gpus: Input should be ...``). ``launcher``: other
        fields (``default_train_config``)."""
        deploy = K8sDeployFile.from_yaml(path)
        return cls(**deploy.trainer.model_dump(), **launcher)

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
