"""Dagster entry point: merges each stage's definitions under defs/ and binds the resources.

Loading stays light (no torch / transformers / great_expectations import) so the webserver and
`dg check defs` start fast; heavy stages import their libraries inside the asset bodies. The
resources come from :class:`~loop_pipeline.settings.LoopSettings`, the only reader of ``LOOP_*``.
"""

from __future__ import annotations

import dagster as dg

import loop_pipeline  # noqa: F401  (sets the no-telemetry environment first)
from loop_pipeline.core.scoring import ScoringConfig
from loop_pipeline.deploy import build_executor
from loop_pipeline.defs import automation, datasets, evaluation, ingest, report, scoring, training
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking, StageResultIOManager
from loop_pipeline.resources.trainer import K8sTrainerLauncher, TrainerLauncher
from loop_pipeline.settings import LoopSettings


def build_trainer(settings: LoopSettings) -> TrainerLauncher:
    """A local subprocess; LOOP_TRAINER_DEPLOY=configs/deploy/k8s-training.yaml: a Kubernetes job."""
    extra = {"default_train_config": settings.train_config} if settings.train_config else {}
    if settings.trainer_deploy:
        return K8sTrainerLauncher.from_yaml(settings.trainer_deploy, **extra)
    return TrainerLauncher(**extra)


def build_resources(
    settings: LoopSettings | None = None, warehouse_dir: str | None = None, datasets_dir: str | None = None
) -> dict[str, object]:
    """Resources for ``settings`` (default: the environment). ``warehouse_dir`` / ``datasets_dir``
    point a run at other tables (``loop thresholds sweep --traces DIR``, ``loop datasets build --out``)."""
    settings = settings or LoopSettings()
    home = settings.paths
    tracking = settings.tracking()
    warehouse = warehouse_dir or str(home.warehouse)
    return {
        "storage": LoopStorage(
            landing_url=settings.landing,
            warehouse_dir=warehouse,
            datasets_dir=datasets_dir or str(home.datasets),
            models_dir=str(home.models),
        ),
        "mlflow": MlflowTracking(tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root),
        "trainer": build_trainer(settings),
        "configs": LoopConfigs(config_dir=str(settings.configs)),
        # Typed stage results (dataset version -> adapter -> evaluation -> registered model), kept
        # beside the instance: a version built from another folder (--traces) still feeds `loop train`.
        "results_io": StageResultIOManager(results_dir=str(home.warehouse / "results")),
    }


def build_defs(settings: LoopSettings | None = None, **resource_overrides: str | None) -> dg.Definitions:
    settings = settings or LoopSettings()
    # The feedback lookback is part of the scoring stage's asset graph (its partition mapping).
    lookback_days = settings.load(ScoringConfig).feedback_lookback_days
    stages = (ingest.defs, scoring.scoring_defs(lookback_days), datasets.defs, training.defs, evaluation.defs, report.defs, automation.automation_defs(settings))
    # LOOP_EXECUTOR_DEPLOY (configs/deploy/executor.yaml): every step a Kubernetes job; unset: Dagster's default.
    executor = build_executor(settings.executor_deploy)
    return dg.Definitions.merge(*stages, dg.Definitions(resources=build_resources(settings, **resource_overrides), executor=executor))


defs = build_defs()
