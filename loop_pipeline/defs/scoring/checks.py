"""Checks on the scoring stage."""

import dagster as dg

from loop_pipeline.defs.scoring.assets import SCORE_THRESHOLDS
from loop_pipeline.resources import LoopStorage


@dg.asset_check(asset=SCORE_THRESHOLDS, blocking=False)
def score_thresholds_reach_precision_target(storage: LoopStorage) -> dg.AssetCheckResult:
    """Warns for each task type where no threshold reaches the precision target (it keeps nothing)."""
    thresholds = storage.read_document(SCORE_THRESHOLDS.path[-1])["thresholds"]
    missing = {task: entry.get("reason") for task, entry in thresholds.items() if entry["threshold"] is None}
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"task_types_without_threshold": dg.MetadataValue.json(missing)},
        description=None if not missing else f"no threshold for {sorted(missing)}: those tasks keep no examples",
    )
