"""The report from plain data: the rounds the instance recorded, the warehouse's traces and the
replay file's simulated gold -> :class:`LoopReport`."""

from __future__ import annotations

from typing import Mapping, Optional

import polars as pl

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.report.flags import regression_flags
from loop_pipeline.core.report.live import NO_CHAMPION, frontier_model_of, gold_figures, live_figures, router_traffic, with_costs
from loop_pipeline.core.report.model import LABEL_DRIFT_TVD, LoopReport, RoundRecord, RoundReport


def rounds_by_version(records: list[RoundRecord]) -> dict[str, int]:
    """Champion version -> the round that made it champion (the first, when a later round
    re-evaluated the same training run and left it in place)."""
    owner: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r.round):
        if record.champion_version is not None:
            owner.setdefault(record.champion_version, record.round)
    return owner


def build_report(
    records: list[RoundRecord],
    traces: Optional[pl.DataFrame],
    replay: Optional[pl.DataFrame],
    prices: PriceTable,
    kinds: Mapping[str, str],
    frontier_model: Optional[str] = None,
    label_drift_tvd: float = LABEL_DRIFT_TVD,
) -> LoopReport:
    """``traces``: raw_traces rows (None: nothing ingested yet); ``replay``: the replay table,
    checked (None: no simulated gold); ``frontier_model``: prices local requests' all-frontier cost
    when the traffic itself names no frontier model."""
    records = sorted(records, key=lambda r: r.round)
    live, gold, model = {}, {}, frontier_model
    if traces is not None and traces.height:
        traffic = router_traffic(traces)
        model = frontier_model_of(traffic) or frontier_model
        traffic = with_costs(traffic, prices, model)
        live = live_figures(traffic)
        gold = gold_figures(traffic, replay, kinds) if replay is not None else {}
    owner = rounds_by_version(records)
    by_round = {owner[v]: figures for v, figures in live.items() if v in owner}
    rounds = [
        RoundReport(
            record=r,
            live=by_round.get(r.round),
            gold=gold.get(r.champion_version) if r.champion_version is not None and owner.get(r.champion_version) == r.round else None,
        )
        for r in records
    ]
    return LoopReport(
        rounds=rounds,
        unattributed=[figures for v, figures in live.items() if v not in owner],
        unattributed_gold={v: figures for v, figures in gold.items() if v not in owner},
        flags=regression_flags(records, by_round, label_drift_tvd),
        frontier_model=model,
        label_drift_tvd=label_drift_tvd,
    )


def report_summary(report: LoopReport) -> dict:
    """The JSON of the report (the CLI's last line, the MLflow artifact)."""
    return report.model_dump(mode="json")


__all__ = ["NO_CHAMPION", "build_report", "report_summary", "rounds_by_version"]
