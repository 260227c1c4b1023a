"""Dagster resources: thin, configurable handles on real storage and services."""

from loop_pipeline.resources.configs import LoopConfigs
from loop_pipeline.resources.mlflow import MlflowTracking
from loop_pipeline.resources.results import StageResultIOManager
from loop_pipeline.resources.storage import LoopStorage

__all__ = ["LoopConfigs", "LoopStorage", "MlflowTracking", "StageResultIOManager"]
