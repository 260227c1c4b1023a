"""Regression flags: a later round that serves less traffic at the same (or a higher) target
agreement, with every cause the report can find: fewer training examples, a drifted label mix, a
failed blocking check."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

import polars as pl

from loop_pipeline.core.evaluation.metrics import normalize_label
from loop_pipeline.core.report.model import LABEL_DRIFT_TVD, Flag, LiveFigures, RoundRecord


def label_counts(sft: pl.DataFrame, classification_tasks: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per classification task type: sft rows per target label (the last, assistant, message)."""
    wanted = list(classification_tasks)
    rows = sft.filter(pl.col("task_type").is_in(wanted)).select(
        "task_type", pl.col("messages").list.last().struct.field("content").alias("label")
    )
    counts: dict[str, dict[str, int]] = {}
    for task, label in rows.iter_rows():
        by_label = counts.setdefault(task, {})
        key = normalize_label(label)
        by_label[key] = by_label.get(key, 0) + 1
    return {task: dict(sorted(by_label.items())) for task, by_label in sorted(counts.items())}


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: n / total for label, n in counts.items()} if total else {}


def total_variation(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """Half the L1 distance between two label distributions (0: the same mix, 1: disjoint)."""
    pa, pb = shares(a), shares(b)
    return 0.5 * sum(abs(pa.get(label, 0.0) - pb.get(label, 0.0)) for label in set(pa) | set(pb))


def label_drift(previous: RoundRecord, current: RoundRecord, threshold: float) -> list[str]:
    """One reason per classification task whose label mix moved more than ``threshold``."""
    found = []
    for task in sorted(set(previous.label_counts) & set(current.label_counts)):
        before, after = previous.label_counts[task], current.label_counts[task]
        tvd = total_variation(before, after)
        if tvd <= threshold:
            continue
        pb, pa = shares(before), shares(after)
        moved = sorted(set(pb) | set(pa), key=lambda label: -abs(pa.get(label, 0.0) - pb.get(label, 0.0)))[:3]
        detail = ", ".join(f"{label} {pb.get(label, 0.0):.0%} -> {pa.get(label, 0.0):.0%}" for label in moved)
        found.append(
            f"drifted label mix in {task}: total variation {tvd:.2f} > {threshold:.2f} from round {previous.round}'s "
            f"training set; moved most: {detail}"
        )
    return found


def _fewer_examples(previous: RoundRecord, current: RoundRecord) -> list[str]:
    if previous.sft_rows is None or current.sft_rows is None or current.sft_rows >= previous.sft_rows:
        return []
    per_task = [
        f"{task} {current.sft_rows_by_task.get(task, 0)} vs {n}"
        for task, n in sorted(previous.sft_rows_by_task.items())
        if current.sft_rows_by_task.get(task, 0) < n
    ]
    return [
        f"fewer training examples: {current.sft_rows} SFT rows vs {previous.sft_rows} in round {previous.round}"
        + (f" ({', '.join(per_task)})" if per_task else "")
    ]


def causes(previous: RoundRecord, current: RoundRecord, threshold: float = LABEL_DRIFT_TVD) -> list[str]:
    found = _fewer_examples(previous, current) + label_drift(previous, current, threshold)
    found += [f"failed check {name}: {why}" for name, why in sorted(current.failed_checks.items())]
    if not found:
        found.append(
            f"no cause found: at least as many training examples as round {previous.round}, label mix within "
            f"total variation {threshold:.2f}, no failed blocking check"
        )
    return found


def _same_or_higher_target(previous: RoundRecord, current: RoundRecord) -> bool:
    if previous.target_agreement is None or current.target_agreement is None:
        return False  # not comparable: the flag is about the same guarantee
    return current.target_agreement >= previous.target_agreement


def _drop(name: str, before: Optional[float], after: Optional[float], previous: int) -> list[str]:
    if before is None or after is None or after >= before:
        return []
    return [f"{name} {after:.3f} < {before:.3f} in round {previous}"]


def regression_flags(
    records: list[RoundRecord], live: Mapping[int, LiveFigures], threshold: float = LABEL_DRIFT_TVD
) -> list[Flag]:
    """Each round against the round before it (holdout coverage) and against the last earlier round
    with live traffic (live local share), both at the same or a higher target agreement."""
    flags = []
    for index, current in enumerate(records[1:], start=1):
        previous = records[index - 1]
        what = []
        if _same_or_higher_target(previous, current):
            what = _drop("holdout coverage", previous.holdout_coverage, current.holdout_coverage, previous.round)
        compared = previous
        earlier = [r for r in records[:index] if r.round in live and _same_or_higher_target(r, current)]
        if current.round in live and earlier:
            before = earlier[-1]
            dropped = _drop("live local share", live[before.round].local_share, live[current.round].local_share, before.round)
            compared = previous if what else before
            what += dropped
        if what:
            target = f" at target agreement {current.target_agreement:.2f}"
            flags.append(Flag(round=current.round, previous_round=compared.round, what=[w + target for w in what],
                              reasons=causes(compared, current, threshold)))
    return flags
