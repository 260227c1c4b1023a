"""The promotion gate: the candidate reaches the target agreement at the minimum coverage on every
task type, does not regress against the champion (paired on the same holdout rows), and its
dataset version passed its blocking checks. Each part passes or says why not.

No part passes by having nothing to look at: every task type of the training set must have at least
``min_holdout_rows_per_task`` holdout rows; every blocking dataset check must have been recorded,
and passed, for the version; with no champion, the first-champion rule is checked explicitly."""

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
    # Coverage at the target on the same holdout, each model with its own certified thresholds.
    candidate_coverage: Optional[float] = None
    champion_coverage: Optional[float] = None
    coverage_regression: bool = False


class DatasetChecks(StageResult):
    """The blocking dataset checks for a dataset version: which exist and what was recorded."""

    required: tuple[str, ...]  # every blocking check defined on the dataset version
    results: dict[str, bool] = {}  # recorded for this version: check name -> passed


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


def _holdout_shortfall(trained_tasks: Mapping[str, int], report: EvalReport, config: EvalConfig) -> list[str]:
    """A task type the candidate was trained on (and the router would serve) with too few holdout
    rows to be judged: refused, whatever the other task types show."""
    minimum = config.min_holdout_rows_per_task
    short = []
    for name, trained_rows in sorted(trained_tasks.items()):
        rows = report.tasks[name].n if name in report.tasks else 0
        if rows < minimum:
            short.append(f"{name}: {rows} holdout rows for a task type with {trained_rows} training rows; at least {minimum} needed to evaluate it")
    return short


def _target_part(report: EvalReport, config: EvalConfig, trained_tasks: Mapping[str, int]) -> GatePart:
    if not trained_tasks:
        return GatePart(passed=False, reasons=["the dataset version's training set (sft) has no task types: nothing the candidate was trained for"])
    if not report.tasks:
        return GatePart(passed=False, reasons=["the holdout has no task types"])
    short = _holdout_shortfall(trained_tasks, report, config)
    short += [why for name, task in report.tasks.items() if (why := _task_shortfall(name, task, config))]
    return GatePart(passed=not short, reasons=short)


def first_champion_rule(config: EvalConfig) -> str:
    """The rule a candidate meets to become the first champion (nothing to compare it with)."""
    return (
        f"every task type of the training set has >= {config.min_holdout_rows_per_task} holdout rows and a confidence "
        f"threshold certified at >= {config.target_agreement:.0%} agreement ({config.certify_against}) with "
        f"confidence {1 - config.delta:.0%}, serving >= {config.min_coverage:.0%} of its in-scope test requests"
    )


def _regression_part(regression: PairedComparison | None, target: GatePart, config: EvalConfig) -> GatePart:
    if regression is None:
        met = "met" if target.passed else "not met (see target_at_min_coverage)"
        return GatePart(passed=target.passed, reasons=[f"no champion yet; first-champion rule: {first_champion_rule(config)}: {met}"])
    r = regression
    reasons = [
        f"paired on {r.paired_n} holdout requests: candidate agreement {r.candidate_agreement:.3f} "
        f"vs champion {r.champion_agreement:.3f} ({r.champion_only_right} only the champion got right, "
        f"{r.candidate_only_right} only the candidate; sign test p={r.p_value:.4f})"
    ]
    if r.candidate_coverage is not None and r.champion_coverage is not None:
        verdict = "serves less" if r.coverage_regression else "within"
        reasons.append(
            f"coverage at the target on the same holdout: candidate {r.candidate_coverage:.3f} vs champion "
            f"{r.champion_coverage:.3f} ({verdict} max_coverage_drop {config.max_coverage_drop:.2f})"
        )
    return GatePart(passed=not r.regression and not r.coverage_regression, reasons=reasons)


def _dataset_part(checks: DatasetChecks) -> GatePart:
    if not checks.required:
        return GatePart(passed=False, reasons=["no blocking dataset checks are defined: nothing vouches for the dataset version"])
    missing = [name for name in checks.required if name not in checks.results]
    failed = sorted(name for name in checks.required if checks.results.get(name) is False)
    reasons = [f"not recorded for this version: {', '.join(missing)}"] if missing else []
    reasons += [f"failed: {', '.join(failed)}"] if failed else []
    if reasons:
        return GatePart(passed=False, reasons=reasons)
    return GatePart(passed=True, reasons=[f"all {len(checks.required)} blocking checks recorded and passed for this version"])


def gate_decision(
    report: EvalReport,
    config: EvalConfig,
    regression: PairedComparison | None,
    dataset_checks: DatasetChecks,
    trained_tasks: Mapping[str, int],
) -> GateDecision:
    """``dataset_checks``: the blocking dataset checks and their results for the report's version;
    ``trained_tasks``: the training set's rows per task type (the version's sft.parquet)."""
    target = _target_part(report, config, trained_tasks)
    parts = GateParts(
        target_at_min_coverage=target,
        no_regression=_regression_part(regression, target, config),
        dataset_checks=_dataset_part(dataset_checks),
    )
    passed = parts.target_at_min_coverage.passed and parts.no_regression.passed and parts.dataset_checks.passed
    return GateDecision(promote=passed, parts=parts)
