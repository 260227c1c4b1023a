"""The promotion gate as blocking checks on holdout_eval: a failing part stops registered_model
and says why in the check result. Each check reads the asset's typed value (EvaluationOutcome)."""

import dagster as dg

from loop_pipeline.core.evaluation import EvaluationOutcome, GatePart
from loop_pipeline.defs.evaluation.assets import HOLDOUT_EVAL


def _result(outcome: EvaluationOutcome, part: GatePart) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=part.passed,
        description="; ".join(part.reasons) or "passed",
        metadata={"dataset_version": outcome.report.dataset_version, "candidate": outcome.report.model},
    )


@dg.asset_check(asset=HOLDOUT_EVAL, blocking=True)
def holdout_eval_reaches_target_at_min_coverage(holdout_eval: EvaluationOutcome) -> dg.AssetCheckResult:
    return _result(holdout_eval, holdout_eval.decision.parts.target_at_min_coverage)


@dg.asset_check(asset=HOLDOUT_EVAL, blocking=True)
def holdout_eval_no_regression_vs_champion(holdout_eval: EvaluationOutcome) -> dg.AssetCheckResult:
    return _result(holdout_eval, holdout_eval.decision.parts.no_regression)


@dg.asset_check(asset=HOLDOUT_EVAL, blocking=True)
def holdout_eval_dataset_checks_passed(holdout_eval: EvaluationOutcome) -> dg.AssetCheckResult:
    return _result(holdout_eval, holdout_eval.decision.parts.dataset_checks)
