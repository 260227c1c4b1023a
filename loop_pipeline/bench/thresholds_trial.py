"""``loop bench thresholds``: the score-threshold procedure tried on many simulated weeks.

Per seed: simulate a week (in a temporary folder) from the given simulator config, ingest it
in-process (the core ingest, no Dagster), compute the signals, fit the quality model, sweep the
thresholds and compare the filters against the simulator's gold; then simulate FRESH traffic from
the same config with another seed (``seed + FRESH_SEED_OFFSET``), score it with the SAME quality
model, keep it by the same rule, and measure the kept set's true precision there: what the rule
delivers on traffic it was not chosen on. Gold is read only to measure.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl

from loop_pipeline.core import scoring
from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import IngestConfig, discover, ingest
from loop_pipeline.core.scoring.signals import normalized
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.sim import SimulationConfig, simulate

FRESH_SEED_OFFSET = 1000


@dataclass(frozen=True)
class TrialConfigs:
    """The configs a trial runs with, loaded by the caller (the CLI loads them with LoopSettings)."""

    simulation: SimulationConfig
    scoring: scoring.ScoringConfig
    tasks: TasksConfig
    ingest: IngestConfig
    prices: PriceTable


def parse_seeds(text: str) -> list[int]:
    """``0-9``, ``3``, ``0,4,7`` or ``0-2,5``: the seeds in order, each once."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"seeds: {part!r} is not a seed or a range like 0-9")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"seeds: range {part!r} goes down")
        seeds.extend(s for s in range(first, last + 1) if s not in seeds)
    if not seeds:
        raise ValueError("seeds: none given")
    return seeds


def _week(config: SimulationConfig, configs: TrialConfigs) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Simulated traffic, ingested: (traces, each trace once; feedback)."""
    with tempfile.TemporaryDirectory(prefix="loop-thresholds-trial-") as folder:
        simulate(config, Path(folder), prices=configs.prices)
        result = ingest(discover([folder]), configs.ingest, configs.prices)
    return result.traces.unique("trace_id", keep="first", maintain_order=True), result.feedback


def _true_precision(kept: pl.DataFrame) -> float | None:
    if kept.height == 0:
        return None
    right = normalized(pl.col("output")) == normalized(pl.col("sim_gold"))
    return float(kept.select(right.mean()).item())


def _error(comparison: dict[str, Any] | None, name: str) -> float | None:
    return None if comparison is None else comparison[name]["true_error_rate"]


def trial_seed(seed: int, configs: TrialConfigs) -> list[dict[str, Any]]:
    """One seed: a row per task type (see the module docstring)."""
    simulation = configs.simulation.with_overrides({"seed": seed})
    traces, feedback = _week(simulation, configs)
    traffic = scoring.score_traffic(traces, feedback, configs.scoring, configs.tasks)
    sweep = scoring.sweep_thresholds(traffic.scored, configs.scoring)
    summary = scoring.summarize_sweep(sweep)
    fresh_traces, fresh_feedback = _week(configs.simulation.with_overrides({"seed": seed + FRESH_SEED_OFFSET}), configs)
    fresh_signals = scoring.trace_signals(fresh_traces, fresh_feedback, configs.scoring, configs.tasks)
    fresh = scoring.score_traces(fresh_signals, traffic.model, configs.scoring)  # this week's model, as deployed
    rows = []
    for task_type, entry in summary.items():
        rule = scoring.keep_rule(entry)
        task = traffic.scored.filter(pl.col("task_type") == task_type)
        comparison = scoring.compare_filters(task, {task_type: rule})
        fresh_task = fresh.filter(pl.col("task_type") == task_type)
        fresh_kept = fresh_task.filter(scoring.keep_mask(fresh_task, {task_type: rule}))
        rows.append(
            {
                "seed": seed,
                "task_type": task_type,
                "traces": entry["traces"],
                "selection": entry["selection"],
                "certification": entry["certification"],
                "rule": entry["rule"],
                "threshold": entry["threshold"],
                "selected_threshold": entry["selected_threshold"],
                "estimated_precision": entry["estimated_precision"],
                "precision_interval": entry["precision_interval"],
                "reason": entry["reason"],
                "comparison": comparison,
                "kept": comparison["fused"]["kept"] if comparison else entry["kept"],
                "fused_true_error": _error(comparison, "fused"),
                "acceptance_kept": comparison["acceptance"]["kept"] if comparison else entry["kept"],
                "acceptance_true_error": _error(comparison, "acceptance"),
                "fused_at_acceptance_volume_true_error": _error(comparison, "fused_at_acceptance_volume"),
                "fused_at_95pct_true_error": _error(comparison, "fused_at_95pct_acceptance_volume"),
                "fresh_traces": fresh_task.height,
                "fresh_kept": fresh_kept.height,
                "fresh_true_precision": _true_precision(fresh_kept),
            }
        )
    return rows


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


HEADER = (
    f"{'seed':>4} {'task':<10} {'reviews sel/cert (bad)':<22} {'rule':<10} {'threshold':>9} {'kept':>6} "
    f"{'fused err':>9} {'acc kept':>8} {'acc err':>8} {'f@acc err':>9} {'f@95% err':>9} {'fresh prec':>10}"
)


def format_row(row: dict[str, Any]) -> str:
    sides = f"{row['selection']['reviewed']}({row['selection']['bad']})/{row['certification']['reviewed']}({row['certification']['bad']})"
    threshold = "-" if row["threshold"] is None else f"{row['threshold']:.4f}"
    return (
        f"{row['seed']:>4} {row['task_type']:<10} {sides:<22} {row['rule']:<10} {threshold:>9} {row['kept']:>6} "
        f"{_rate(row['fused_true_error']):>9} {row['acceptance_kept']:>8} {_rate(row['acceptance_true_error']):>8} "
        f"{_rate(row['fused_at_acceptance_volume_true_error']):>9} {_rate(row['fused_at_95pct_true_error']):>9} "
        f"{_rate(row['fresh_true_precision']):>10}"
    )


def totals(rows: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """Counts over the rows: certified, fused@95% beating acceptance, fresh precision at target."""
    certified = [r for r in rows if r["rule"] == "score"]
    beats = [
        r
        for r in rows
        if r["fused_at_95pct_true_error"] is not None
        and r["acceptance_true_error"] is not None
        and r["fused_at_95pct_true_error"] < r["acceptance_true_error"]
    ]
    holding = [r for r in certified if r["fresh_true_precision"] is not None and r["fresh_true_precision"] >= target]
    return {
        "rows": len(rows),
        "certified": len(certified),
        "fused_at_95pct_beats_acceptance": len(beats),
        "fresh_precision_at_target_of_certified": len(holding),
        "fresh_precision_at_target_share": len(holding) / len(certified) if certified else None,
    }


def format_totals(counts: dict[str, Any], target: float) -> str:
    share = counts["fresh_precision_at_target_share"]
    return (
        f"certified threshold: {counts['certified']}/{counts['rows']}; fused@95% error < acceptance error: "
        f"{counts['fused_at_95pct_beats_acceptance']}/{counts['rows']}; fresh-traffic precision >= {target}: "
        f"{counts['fresh_precision_at_target_of_certified']}/{counts['certified']} certified "
        f"({'n/a' if share is None else f'{share:.0%}'})"
    )


def run_trial(seeds: Sequence[int], configs: TrialConfigs, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every seed's rows, and the totals; ``progress`` gets one line per seed."""
    say = progress or (lambda _: None)
    rows: list[dict[str, Any]] = []
    for index, seed in enumerate(seeds, start=1):
        seed_rows = trial_seed(seed, configs)
        rows.extend(seed_rows)
        for row in seed_rows:
            say(f"[{index}/{len(seeds)}] seed {seed} {row['task_type']}: rule {row['rule']}" + (f" ({row['reason']})" if row["reason"] else ""))
    target = configs.scoring.precision_target
    return {
        "simulation": configs.simulation.model_dump(mode="json", exclude={"seed"}),
        "fresh_seed_offset": FRESH_SEED_OFFSET,
        "precision_target": target,
        "rows": rows,
        "totals": totals(rows, target),
    }
