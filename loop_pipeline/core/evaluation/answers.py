"""Scoring a candidate's answers on the holdout: agreement, certified threshold, coverage and
out-of-scope escalation per task type.

Served locally: confidence >= the task's threshold and the answer is not an escalation label
(``out_of_scope``). Calibration and test halves come from a stable hash of the trace id.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import polars as pl

from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.metrics import agrees, normalize_label
from loop_pipeline.core.evaluation.report import Confusion, TaskReport
from loop_pipeline.core.evaluation.thresholds import choose_threshold, coverage_agreement_curve
from loop_pipeline.core.tasks import TasksConfig, TaskSpec


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
    """Per task type: its report, and the per-example frame (trace_id, task_type, reference, gold,
    sim_gold, answer, confidence, split, agrees, served, out_of_scope)."""
    split = split_of(holdout.get_column("trace_id"), config.calibration_fraction)
    frame = holdout.select("trace_id", "task_type", "reference", "gold", "sim_gold").with_columns(
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


def _task_report(part: pl.DataFrame, spec: TaskSpec, config: EvalConfig) -> tuple[TaskReport, pl.DataFrame]:
    escalation = {normalize_label(x) for x in spec.escalation_labels}
    reference = part.get_column("reference").to_list()
    answer = part.get_column("answer").to_list()
    agree = np.array([agrees(spec.kind, a, r, config.summary_threshold) for a, r in zip(answer, reference)], dtype=bool)
    local = np.array([normalize_label(a) not in escalation for a in answer], dtype=bool)
    # Out of scope: what the frontier (or the simulator's truth, when kept) calls an escalation.
    truth = [g if g is not None else r for g, r in zip(part.get_column("sim_gold").to_list(), reference)]
    out_of_scope = np.array([normalize_label(t) in escalation for t in truth], dtype=bool) if escalation else np.zeros(part.height, bool)
    conf = part.get_column("confidence").to_numpy()
    calibration = part.get_column("split").to_numpy() == "calibration"
    test = ~calibration
    choice = choose_threshold(
        (conf[calibration], agree[calibration], local[calibration]),
        (conf[test], agree[test], local[test]),
        config.target_agreement,
        config.delta,
    )
    served = local & (conf >= choice.threshold) if choice.threshold is not None else np.zeros(part.height, bool)
    in_scope_test, oos_test = test & ~out_of_scope, test & out_of_scope
    report = TaskReport(
        task_type=spec.name,
        kind=spec.kind,
        n=part.height,
        n_in_scope=int((~out_of_scope).sum()),
        agreement=float(agree.mean()) if part.height else 0.0,
        accuracy_vs_gold=_accuracy(spec, answer, part.get_column("gold").to_list(), config),
        accuracy_vs_sim_gold=_accuracy(spec, answer, part.get_column("sim_gold").to_list(), config),
        threshold=choice.threshold,
        selection=choice,
        calibration_n=int(calibration.sum()),
        test_n=int(test.sum()),
        coverage=float(served[in_scope_test].mean()) if in_scope_test.any() else 0.0,
        served_agreement=float(agree[served & test].mean()) if (served & test).any() else None,
        out_of_scope_n=int(oos_test.sum()),
        out_of_scope_escalated=float((~served[oos_test]).mean()) if oos_test.any() else None,
        curve=coverage_agreement_curve(conf[test], agree[test], local[test]),
        confusions=worst_confusions(answer, reference, agree),
    )
    scored = part.with_columns(pl.Series("agrees", agree), pl.Series("served", served), pl.Series("out_of_scope", out_of_scope))
    return report, scored


def _accuracy(spec: TaskSpec, answers: Sequence[str], truth: Sequence[str | None], config: EvalConfig) -> float | None:
    pairs = [(a, t) for a, t in zip(answers, truth) if t is not None]
    if not pairs:
        return None
    return sum(agrees(spec.kind, a, t, config.summary_threshold) for a, t in pairs) / len(pairs)


def worst_confusions(answers: Sequence[str], references: Sequence[str], agree: np.ndarray, top: int = 10) -> list[Confusion]:
    """The most frequent (frontier answer -> candidate answer) disagreements."""
    counts: dict[tuple[str, str], int] = {}
    for a, r, ok in zip(answers, references, agree):
        if not ok:
            key = (normalize_label(r)[:80], normalize_label(a)[:80])
            counts[key] = counts.get(key, 0) + 1
    worst = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [Confusion(frontier=f, candidate=c, count=n) for (f, c), n in worst]
