"""The production deployment as configuration (``configs/deploy/``, docs/deploy.md), validated.

One file, one model (``DeployFile.from_yaml`` picks it by name, for ``loop config check``):

- ``k8s-training.yaml``: the trainer's GPU pod (``resources.trainer.K8sDeployFile``);
- ``dagster.yaml``: the Dagster instance (``dagster_files.InstanceFile``: Dagster's schema, the
  K8sRunLauncher's);
- ``executor.yaml``: the k8s_job_executor (``dagster_files.ExecutorFile``; ``build_executor``);
- any other ``*.yaml``: Kubernetes manifests (``k8s.ManifestFile``).

``bundle.cross_file_problems`` then checks the files against each other (the router's URL and model
against vLLM's Service and served name, the MLflow URI against its server, images, namespaces,
volumes, service accounts) and ``bundle.undocumented`` the environment against docs/deploy.md.
Nothing here imports dagster_k8s, kubernetes or mlflow at import time.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from loop_pipeline.deploy.dagster_files import ExecutorFile, InstanceFile, build_executor
from loop_pipeline.deploy.k8s import ManifestFile

# configs/deploy/<name> -> "module:Model"; any other file there is Kubernetes manifests.
SPECIAL_FILES = {
    "k8s-training.yaml": "loop_pipeline.resources.trainer:K8sDeployFile",
    "dagster.yaml": "loop_pipeline.deploy.dagster_files:InstanceFile",
    "executor.yaml": "loop_pipeline.deploy.dagster_files:ExecutorFile",
}

__all__ = ["DeployFile", "ExecutorFile", "InstanceFile", "ManifestFile", "SPECIAL_FILES", "build_executor", "model_for_file"]


def model_for_file(path: Path | str) -> type:
    reference = SPECIAL_FILES.get(Path(path).name)
    if reference is None:
        return ManifestFile
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


class DeployFile:
    """What ``loop config check`` calls for ``configs/deploy/*.yaml``: the file's own model."""

    @classmethod
    def from_yaml(cls, path: Path | str, overrides: Mapping[str, Any] | None = None) -> Any:
        return model_for_file(path).from_yaml(path, overrides)
