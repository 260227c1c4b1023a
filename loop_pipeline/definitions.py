"""Dagster entry point: merges each stage's definitions under defs/ and binds the resources.

Loading stays light (no torch / transformers / great_expectations import) so the webserver and
`dg check defs` start fast; heavy stages import their libraries inside the asset bodies.
"""

import os

import dagster as dg

import loop_pipeline  # noqa: F401  (sets the no-telemetry environment first)
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.defs import datasets, evaluation, ingest, scoring, training
from loop_pipeline.resources import LoopStorage, MlflowTracking
from loop_pipeline.resources.trainer import K8sTrainerLauncher, TrainerLauncher
from loop_pipeline.settings import landing_url, paths

STAGES = (ingest.defs, scoring.defs, datasets.defs, training.defs, evaluation.defs)


def build_trainer() -> TrainerLauncher:
    """A local subprocess; LOOP_TRAINER_DEPLOY=configs/deploy/k8s-training.yaml: a Kubernetes job."""
    deploy = os.environ.get("LOOP_TRAINER_DEPLOY")
    return K8sTrainerLauncher.from_yaml(deploy) if deploy else TrainerLauncher()


def build_resources() -> dict[str, object]:
    """Resources for the current environment (LOOP_HOME, LOOP_LANDING_URL, LOOP_MLFLOW_*)."""
    tracking = TrackingTarget.default()
    return {
        "storage": LoopStorage(
            landing_url=landing_url(),
            warehouse_dir=str(paths().warehouse),
            datasets_dir=str(paths().datasets),
            models_dir=str(paths().models),
        ),
        "mlflow": MlflowTracking(tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root),
        "trainer": build_trainer(),
    }


def build_defs() -> dg.Definitions:
    return dg.Definitions.merge(*STAGES, dg.Definitions(resources=build_resources()))


defs = build_defs()
