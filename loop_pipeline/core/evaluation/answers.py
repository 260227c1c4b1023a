"""Scoring a candidate's answers on the holdout (every trace of the frozen holdout groups), per
task type: agreement with the frontier's output and with the curated reference, the certified
threshold, coverage and out-of-scope escalation; and, on simulated traffic only, accuracy
against the simulator's gold (reported, never a decision input).

Served locally: confidence >= the task's threshold and the answer is not an escalation label
(``out_of_scope``). Out of scope: the row's reference is an escalation label (never the
simulator's gold). Calibration and test halves come from a stable hash of the trace id.

Every row is traffic (coverage, served share), but a figure measured against an answer reads only
the rows that have that answer: agreement with the frontier the rows with a ``frontier_output``
(null for a request the router served locally and nobody shadowed: a local answer is never a
frontier answer), the threshold, served agreement and confusions the rows with the certification
reference (``reference``, or ``frontier_output`` when certifying against the frontier); the
report says how many rows each used (``n_with_frontier``, ``n_certification``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import polars as pl

from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.metrics import agrees, normalize_label
from loop_pipeline.core.evaluation.report import Confusion, TaskReport
from loop_pipeline.core.evaluation.thresholds import choose_threshold, coverage_agreement_curve
from loop_pipeline.core.tasks import TasksConfig, TaskSpec

# The reference_source of a row that nothing vouches for: its reference is the frontier's output.
UNVERIFIED = "frontier_unverified"
# The reference sources that are curated evidence (core.datasets.curate.CURATED_SOURCES; not
# imported: the router imports this package's metrics, and must not pull the datasets stage in).
CURATED_SOURCES = ("review", "edit", "accepted_scored")
HOLDOUT_COLUMNS = ("trace_id", "task_type", "reference", "reference_source", "frontier_output")


def split_of(trace_ids: pl.Series, calibration_fraction: float) -> np.ndarray:
    """Calibration or test by a stable hash of the trace id (same rows in every evaluation)."""
    buckets = np.array([int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for t in trace_ids.to_list()])
    return np.where(buckets < calibration_fraction, "calibration", "test")


def evaluate_answers(
    holdout: pl.DataFrame,
    answers: Sequence[str],
    confidence: np.ndarray,
    tasks: TasksConfig,
    config: EvalConfig,
) -> tuple[dict[str, TaskReport], pl.DataFrame]:
    """Per task type: its report, and the per-example frame (trace_id, task_type, reference,
    reference_source, frontier_output, sim_gold, answer, confidence, split, agrees (against the
    certification reference), agrees_frontier, agrees_reference (each null where the row lacks
    that answer), served, out_of_scope).
    ``holdout`` needs HOLDOUT_COLUMNS; ``sim_gold`` is optional (absent or null: no sim_ figures)."""
    missing = [c for c in HOLDOUT_COLUMNS if c not in holdout.columns]
    if missing:
        raise ValueError(f"the holdout lacks {', '.join(missing)}: rebuild the dataset version (loop datasets build)")
    sim_gold = pl.col("sim_gold") if "sim_gold" in holdout.columns else pl.lit(None, dtype=pl.String).alias("sim_gold")
    split = split_of(holdout.get_column("trace_id"), config.calibration_fraction)
    frame = holdout.select(*HOLDOUT_COLUMNS, sim_gold).with_columns(
        pl.Series("answer", list(answers), dtype=pl.String),
        pl.Series("confidence", confidence, dtype=pl.Float64),
        pl.Series("split", split, dtype=pl.String),
    )
    reports: dict[str, TaskReport] = {}
    frames = []
    for (task_type,), part in frame.group_by("task_type", maintain_order=True):
        reports[task_type], scored = _task_report(part, tasks.spec(task_type), config)
        frames.append(scored)
    return reports, (pl.concat(frames) if frames else frame)


@dataclass(frozen=True)
class _Rows:
    """One task type's rows as arrays: the answers, what they are compared with, and the halves."""

    answer: list[str | None]
    reference: list[str | None]
    frontier: list[str | None]
    expected: list[str | None]  # the certification reference
    curated: np.ndarray  # reference_source is curated evidence (CURATED_SOURCES)
    has_frontier: np.ndarray  # the row has a frontier answer
    certifiable: np.ndarray  # the row has its certification reference
    agrees_reference: np.ndarray
    agrees_frontier: np.ndarray
    agrees: np.ndarray  # against the certification reference
    local: np.ndarray  # the answer is not an escalation label
    out_of_scope: np.ndarray  # the reference is an escalation label
    confidence: np.ndarray
    test: np.ndarray


def _rows(part: pl.DataFrame, spec: TaskSpec, config: EvalConfig) -> _Rows:
    escalation = {normalize_label(x) for x in spec.escalation_labels}
    answer = part.get_column("answer").to_list()
    reference = part.get_column("reference").to_list()
    frontier = part.get_column("frontier_output").to_list()

    def agreement(expected: list[str | None]) -> np.ndarray:
        return np.array([agrees(spec.kind, a, e, config.summary_threshold) for a, e in zip(answer, expected)], dtype=bool)

    agrees_reference, agrees_frontier = agreement(reference), agreement(frontier)
    by_reference = config.certify_against == "reference"
    has_reference = np.array([r is not None for r in reference], dtype=bool)
    has_frontier = np.array([f is not None for f in frontier], dtype=bool)
    return _Rows(
        answer=answer,
        reference=reference,
        frontier=frontier,
        expected=reference if by_reference else frontier,
        curated=part.get_column("reference_source").is_in(CURATED_SOURCES).to_numpy(),
        has_frontier=has_frontier,
        certifiable=has_reference if by_reference else has_frontier,
        agrees_reference=agrees_reference,
        agrees_frontier=agrees_frontier,
        agrees=agrees_reference if by_reference else agrees_frontier,
        local=np.array([normalize_label(a) not in escalation for a in answer], dtype=bool),
        out_of_scope=np.array([normalize_label(r) in escalation for r in reference], dtype=bool),
        confidence=part.get_column("confidence").to_numpy(),
        test=part.get_column("split").to_numpy() == "test",
    )


def _task_report(part: pl.DataFrame, spec: TaskSpec, config: EvalConfig) -> tuple[TaskReport, pl.DataFrame]:
    rows = _rows(part, spec, config)
    conf, agree, local, test = rows.confidence, rows.agrees, rows.local, rows.test
    calibration = ~test
    # Certified on the rows that have the certification reference; served decided for every row.
    cal_c, test_c = calibration & rows.certifiable, test & rows.certifiable
    choice = choose_threshold(
        (conf[cal_c], agree[cal_c], local[cal_c]),
        (conf[test_c], agree[test_c], local[test_c]),
        config.target_agreement,
        config.delta,
    )
    served = local & (conf >= choice.threshold) if choice.threshold is not None else np.zeros(part.height, bool)
    in_scope_test, oos_test = test & ~rows.out_of_scope, test & rows.out_of_scope
    sources = part.group_by("reference_source").len().sort("reference_source")
    routed, all_frontier = _sim_accuracy(spec, rows, served, part.get_column("sim_gold").to_list(), config)
    report = TaskReport(
        task_type=spec.name,
        kind=spec.kind,
        n=part.height,
        n_in_scope=int((~rows.out_of_scope).sum()),
        n_with_reference=int(rows.curated.sum()),
        n_with_frontier=int(rows.has_frontier.sum()),
        n_certification=int(rows.certifiable.sum()),
        reference_sources={str(source): int(n) for source, n in sources.iter_rows()},
        agreement_frontier=float(rows.agrees_frontier[rows.has_frontier].mean()) if rows.has_frontier.any() else None,
        agreement_reference=float(rows.agrees_reference[rows.curated].mean()) if rows.curated.any() else None,
        certified_against=config.certify_against,
        threshold=choice.threshold,
        selection=choice,
        calibration_n=int(calibration.sum()),
        test_n=int(test.sum()),
        coverage=float(served[in_scope_test].mean()) if in_scope_test.any() else 0.0,
        served_agreement=float(agree[served & test_c].mean()) if (served & test_c).any() else None,
        out_of_scope_n=int(oos_test.sum()),
        out_of_scope_escalated=float((~served[oos_test]).mean()) if oos_test.any() else None,
        sim_accuracy_routed=routed,
        sim_accuracy_all_frontier=all_frontier,
        curve=coverage_agreement_curve(conf[test_c], agree[test_c], local[test_c]),
        confusions=worst_confusions(*_certifiable(rows)),
    )
    scored = part.with_columns(
        _masked("agrees", agree, rows.certifiable),
        _masked("agrees_frontier", rows.agrees_frontier, rows.has_frontier),
        _masked("agrees_reference", rows.agrees_reference, np.array([r is not None for r in rows.reference], dtype=bool)),
        pl.Series("served", served),
        pl.Series("out_of_scope", rows.out_of_scope),
    )
    return report, scored


def _masked(name: str, values: np.ndarray, present: np.ndarray) -> pl.Series:
    """Agreement per row, null where the row lacks the answer it is measured against."""
    return pl.Series(name, [bool(v) if p else None for v, p in zip(values, present)], dtype=pl.Boolean)


def _certifiable(rows: _Rows) -> tuple[list[str | None], list[str | None], np.ndarray]:
    keep = np.flatnonzero(rows.certifiable)
    return [rows.answer[i] for i in keep], [rows.expected[i] for i in keep], rows.agrees[keep]


def _sim_accuracy(
    spec: TaskSpec, rows: _Rows, served: np.ndarray, sim_gold: Sequence[str | None], config: EvalConfig
) -> tuple[float | None, float | None]:
    """Simulated traffic only, test half: accuracy against the simulator's gold of the routed
    system (served rows answered locally, the rest by the frontier) and of the frontier alone.
    (None, None) when no test row has gold. Rows without a frontier answer are skipped (neither
    system can be scored on them). Reported only: no decision reads it."""
    routed, frontier = [], []
    for i in np.flatnonzero(rows.test & rows.has_frontier):
        gold = sim_gold[i]
        if gold is None:
            continue
        answer = rows.answer[i] if served[i] else rows.frontier[i]
        routed.append(agrees(spec.kind, answer, gold, config.summary_threshold))
        frontier.append(agrees(spec.kind, rows.frontier[i], gold, config.summary_threshold))
    if not routed:
        return None, None
    return sum(routed) / len(routed), sum(frontier) / len(frontier)


def worst_confusions(answers: Sequence[str | None], expected: Sequence[str | None], agree: np.ndarray, top: int = 10) -> list[Confusion]:
    """The most frequent (expected -> candidate answer) disagreements; expected: the certification
    reference of each row."""
    counts: dict[tuple[str, str], int] = {}
    for a, e, ok in zip(answers, expected, agree):
        if not ok:
            key = (normalize_label(e)[:80], normalize_label(a)[:80])
            counts[key] = counts.get(key, 0) + 1
    worst = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [Confusion(expected=e, candidate=c, count=n) for (e, c), n in worst]
