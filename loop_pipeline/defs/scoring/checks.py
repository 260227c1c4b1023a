"""Checks on the scoring stage."""

import dagster as dg

from loop_pipeline.defs.scoring.assets import SCORE_THRESHOLDS
from loop_pipeline.resources import LoopStorage


@dg.asset_check(asset=SCORE_THRESHOLDS, blocking=False)
def score_thresholds_reach_precision_target(storage: LoopStorage) -> dg.AssetCheckResult:
    """Warns, naming each task type and the rule it falls back to, where no threshold was certified
    at the precision target: its outputs are kept by the fallback (acceptance: accepted and not
    vetoed; none: nothing) instead of a certified score threshold."""
    thresholds = storage.read_document(SCORE_THRESHOLDS.path[-1])["thresholds"]
    fallen_back = {
        task: {"rule": entry.get("rule", "none"), "kept": entry.get("kept"), "reason": entry.get("reason")}
        for task, entry in sorted(thresholds.items())
        if entry["threshold"] is None
    }
    description = None
    if fallen_back:
        description = "no certified threshold: " + "; ".join(
            f"{task} falls back to {info['rule']} (keeps {info['kept']}): {info['reason']}" for task, info in fallen_back.items()
        )
    return dg.AssetCheckResult(
        passed=not fallen_back,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "task_types_without_threshold": dg.MetadataValue.json(fallen_back),
            "rules": dg.MetadataValue.json({task: entry.get("rule") for task, entry in sorted(thresholds.items())}),
        },
        description=description,
    )
