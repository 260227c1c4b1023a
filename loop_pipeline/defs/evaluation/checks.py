"""The promotion gate as blocking checks on holdout_eval: a failing part stops registered_model
and says why in the check result. Each check reads the asset's typed value (EvaluationOutcome);
none passes by having nothing to look at (core/evaluation/gate.py)."""

import dagster as dg

from loop_pipeline.core.evaluation import EvaluationOutcome, GatePart
from loop_pipeline.defs.evaluation.assets import HOLDOUT_EVAL


def _result(outcome: EvaluationOutcome, part: GatePart) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=part.passed,
        description="; ".join(part.reasons) or "passed",
        metadata={"dataset_version": outcome.report.dataset_version, "candidate": outcome.report.model},
    )


@dg.asset_check(
    asset=HOLDOUT_EVAL,
    blocking=True,
    description="Every task type of the training set has at least min_holdout_rows_per_task holdout rows, and every "
    "task type on the holdout has a confidence threshold certified at the target agreement that serves at least "
    "min_coverage of its in-scope requests (configs/evaluation.yaml).",
)
def holdout_eval_reaches_target_at_min_coverage(holdout_eval: EvaluationOutcome) -> dg.AssetCheckResult:
    return _result(holdout_eval, holdout_eval.decision.parts.target_at_min_coverage)


@dg.asset_check(
    asset=HOLDOUT_EVAL,
    blocking=True,
    description="With a champion: the candidate is not worse on the same holdout rows (one-sided exact sign test on "
    "the discordant pairs, refused when p < regression_alpha). With no champion yet, the first-champion rule: every "
    "task type of the training set has >= min_holdout_rows_per_task holdout rows and a threshold certified at >= "
    "target_agreement (certify_against) with confidence 1 - delta, serving >= min_coverage of its in-scope requests.",
)
def holdout_eval_no_regression_vs_champion(holdout_eval: EvaluationOutcome) -> dg.AssetCheckResult:
    return _result(holdout_eval, holdout_eval.decision.parts.no_regression)


@dg.asset_check(
    asset=HOLDOUT_EVAL,
    blocking=True,
    description="Every blocking check defined on training_datasets was recorded for this dataset version and passed "
    "(a check missing for the version fails, naming it).",
)
def holdout_eval_dataset_checks_passed(holdout_eval: EvaluationOutcome) -> dg.AssetCheckResult:
    return _result(holdout_eval, holdout_eval.decision.parts.dataset_checks)
