"""The promotion gate: the candidate reaches the target agreement at the minimum coverage on every
task type, does not regress against the champion (paired on the same holdout rows), and its
dataset version passed its blocking checks. Each part passes or says why not."""

from __future__ import annotations

from typing import Mapping, Optional

import polars as pl

from loop_pipeline.core.contracts import StageResult
from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.report import EvalReport, TaskReport
from loop_pipeline.core.evaluation.thresholds import binomial_tail


class PairedComparison(StageResult):
    """Candidate vs champion on the same holdout rows (exact sign test on the discordant pairs)."""

    paired_n: int
    candidate_agreement: Optional[float]
    champion_agreement: Optional[float]
    champion_only_right: int
    candidate_only_right: int
    p_value: float
    regression: bool
    champion_version: Optional[str] = None


class GatePart(StageResult):
    passed: bool
    reasons: list[str]


class GateParts(StageResult):
    target_at_min_coverage: GatePart
    no_regression: GatePart
    dataset_checks: GatePart


class GateDecision(StageResult):
    promote: bool
    parts: GateParts

    def failing_reasons(self) -> list[str]:
        return [reason for part in self.parts.model_dump().values() if not part["passed"] for reason in part["reasons"]]


def paired_regression(candidate: pl.DataFrame, champion: pl.DataFrame, alpha: float) -> PairedComparison:
    """Same holdout rows, per-example agreement: b = champion right and candidate wrong, c = the
    reverse. One-sided exact sign test on the discordant pairs: regression when P(X >= b) < alpha."""
    joined = candidate.select("trace_id", pl.col("agrees").alias("cand")).join(
        champion.select("trace_id", pl.col("agrees").alias("champ")), on="trace_id", how="inner"
    )
    b = int((joined["champ"] & ~joined["cand"]).sum())
    c = int((~joined["champ"] & joined["cand"]).sum())
    p_value = binomial_tail(b, b + c, 0.5) if b + c else 1.0
    return PairedComparison(
        paired_n=joined.height,
        candidate_agreement=float(joined["cand"].mean()) if joined.height else None,
        champion_agreement=float(joined["champ"].mean()) if joined.height else None,
        champion_only_right=b,
        candidate_only_right=c,
        p_value=p_value,
        regression=bool(p_value < alpha and b > c),
    )


def _task_shortfall(name: str, task: TaskReport, config: EvalConfig) -> str | None:
    if task.threshold is None:
        selected = task.selection.selected
        why = (
            f" (selected {selected:.6f} on the calibration half; not certified on the test half, p={task.selection.test_p:.3f})"
            if selected is not None
            else ""
        )
        return f"{name}: no confidence threshold reaches {config.target_agreement:.0%} agreement with confidence {1 - config.delta:.0%}{why}"
    if task.coverage < config.min_coverage:
        return f"{name}: coverage {task.coverage:.1%} at {config.target_agreement:.0%} agreement is below the minimum {config.min_coverage:.0%}"
    return None


def _target_part(report: EvalReport, config: EvalConfig) -> GatePart:
    short = [why for name, task in report.tasks.items() if (why := _task_shortfall(name, task, config))]
    if not report.tasks:
        return GatePart(passed=False, reasons=["the holdout has no task types"])
    return GatePart(passed=not short, reasons=short)


def _regression_part(regression: PairedComparison | None) -> GatePart:
    if regression is None:
        return GatePart(passed=True, reasons=["no champion yet: nothing to regress from"])
    r = regression
    return GatePart(
        passed=not r.regression,
        reasons=[
            f"paired on {r.paired_n} holdout requests: candidate agreement {r.candidate_agreement:.3f} "
            f"vs champion {r.champion_agreement:.3f} ({r.champion_only_right} only the champion got right, "
            f"{r.candidate_only_right} only the candidate; sign test p={r.p_value:.4f})"
        ],
    )


def _dataset_part(dataset_checks: Mapping[str, bool] | None) -> GatePart:
    if dataset_checks is None:
        return GatePart(passed=False, reasons=["no dataset check results recorded for this version"])
    failed = sorted(name for name, ok in dataset_checks.items() if not ok)
    return GatePart(
        passed=not failed and bool(dataset_checks),
        reasons=[f"failed: {', '.join(failed)}"] if failed else [f"{len(dataset_checks)} checks passed"],
    )


def gate_decision(
    report: EvalReport,
    config: EvalConfig,
    regression: PairedComparison | None,
    dataset_checks: Mapping[str, bool] | None,
) -> GateDecision:
    """``dataset_checks``: the blocking dataset checks' latest results for the report's version."""
    parts = GateParts(
        target_at_min_coverage=_target_part(report, config),
        no_regression=_regression_part(regression),
        dataset_checks=_dataset_part(dataset_checks),
    )
    passed = parts.target_at_min_coverage.passed and parts.no_regression.passed and parts.dataset_checks.passed
    return GateDecision(promote=passed, parts=parts)
