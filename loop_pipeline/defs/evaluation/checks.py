"""The promotion gate as blocking checks on holdout_eval: a failing part stops registered_model
and says why in the check result."""

import dagster as dg

from loop_pipeline.defs.evaluation.assets import HOLDOUT_EVAL
from loop_pipeline.resources import LoopStorage


def _part(storage: LoopStorage, name: str) -> dg.AssetCheckResult:
    outcome = storage.read_document(HOLDOUT_EVAL.path[-1])
    part = outcome["decision"]["parts"][name]
    return dg.AssetCheckResult(
        passed=bool(part["passed"]),
        description="; ".join(part["reasons"]) or "passed",
        metadata={"dataset_version": outcome["report"]["dataset_version"], "candidate": outcome["report"]["model"]},
    )


@dg.asset_check(asset=HOLDOUT_EVAL, blocking=True)
def holdout_eval_reaches_target_at_min_coverage(storage: LoopStorage) -> dg.AssetCheckResult:
    return _part(storage, "target_at_min_coverage")


@dg.asset_check(asset=HOLDOUT_EVAL, blocking=True)
def holdout_eval_no_regression_vs_champion(storage: LoopStorage) -> dg.AssetCheckResult:
    return _part(storage, "no_regression")


@dg.asset_check(asset=HOLDOUT_EVAL, blocking=True)
def holdout_eval_dataset_checks_passed(storage: LoopStorage) -> dg.AssetCheckResult:
    return _part(storage, "dataset_checks")
