"""Live figures per champion version from the router's traces (raw_traces rows whose metadata the
router wrote), and, for simulated traffic, the same requests against the simulator's gold."""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Optional

import polars as pl

from loop_pipeline.core import routes
from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.evaluation.metrics import agrees
from loop_pipeline.core.report.model import REPLAY_COLUMNS, GoldFigures, LiveFigures

NO_CHAMPION = "none"  # the group key of requests served while no champion was loaded


def _meta(path: str) -> pl.Expr:
    return pl.col("metadata").str.json_path_match(f"$.{path}")


def router_traffic(traces: pl.DataFrame) -> pl.DataFrame:
    """One row per request the router answered (a trace id once): route, champion version, costs
    and shadow verdict read from the trace's metadata."""
    routed = traces.unique("trace_id", keep="last", maintain_order=True).with_columns(route=routes.route())
    routed = routed.filter(pl.col("route") != routes.DIRECT)
    return routed.select(
        "trace_id",
        "timestamp",
        "task_type",
        "model",
        "output",
        "input_tokens",
        "output_tokens",
        "route",
        _meta("champion_version").fill_null(NO_CHAMPION).alias("champion_version"),
        routes.shadow_agrees().alias("shadow_agrees"),
        _meta("frontier_model").alias("shadow_model"),
        *(_meta(f"cost_{part}_usd").cast(pl.Float64).alias(f"cost_{part}") for part in ("local", "frontier", "shadow")),
    )


def frontier_model_of(traffic: pl.DataFrame) -> Optional[str]:
    """The frontier model the router used: the commonest model of frontier-answered requests, else of
    shadow calls; None when the traffic holds no frontier answer at all."""
    names = traffic.filter(pl.col("route") != routes.LOCAL)["model"].drop_nulls().to_list()
    names = names or traffic["shadow_model"].drop_nulls().to_list()
    return Counter(names).most_common(1)[0][0] if names else None


def with_costs(traffic: pl.DataFrame, prices: PriceTable, frontier_model: Optional[str]) -> pl.DataFrame:
    """``routed``: what the routing paid (local + frontier calls; the shadow call is measurement).
    ``all_frontier``: what the request would have cost at the frontier: its frontier call's cost,
    else its shadow call's, else (``estimated``) its token counts at ``frontier_model``'s price."""
    price = prices.lookup(frontier_model) if frontier_model else None
    if price is None:
        estimate = pl.lit(None, dtype=pl.Float64)
    else:
        estimate = (pl.col("input_tokens") * price.input_per_mtok + pl.col("output_tokens") * price.output_per_mtok) / 1e6
    known = pl.coalesce("cost_frontier", "cost_shadow")
    local_unpriced = (pl.col("route") == routes.LOCAL) & pl.col("cost_local").is_null()
    return traffic.with_columns(
        routed=pl.when(local_unpriced).then(None).otherwise(pl.col("cost_local").fill_null(0.0) + pl.col("cost_frontier").fill_null(0.0)),
        all_frontier=pl.coalesce(known, estimate),
        estimated=known.is_null() & estimate.is_not_null(),
    )


def _mean(frame: pl.DataFrame, column: str) -> Optional[float]:
    return float(frame[column].cast(pl.Float64).mean()) if frame.height else None


def _figures(version: str, rows: pl.DataFrame) -> LiveFigures:
    local = rows.filter(pl.col("route") == routes.LOCAL)
    shadowed = local.filter(pl.col("shadow_agrees").is_not_null())
    costed = rows.filter(pl.col("routed").is_not_null() & pl.col("all_frontier").is_not_null())
    all_frontier = float(costed["all_frontier"].sum())
    times = rows["timestamp"].cast(pl.String)
    return LiveFigures(
        champion_version=None if version == NO_CHAMPION else version,
        requests=rows.height,
        served_locally=local.height,
        local_share=local.height / rows.height if rows.height else None,
        by_route={str(k): int(v) for k, v in rows.group_by("route").len().sort("route").iter_rows()},
        shadowed=shadowed.height,
        shadow_agreement=_mean(shadowed, "shadow_agrees"),
        costed=costed.height,
        routed_cost_usd=float(costed["routed"].sum()),
        all_frontier_cost_usd=all_frontier,
        frontier_cost_estimated=int(costed["estimated"].sum()),
        shadow_cost_usd=float(rows["cost_shadow"].fill_null(0.0).sum()),
        blended_cost_ratio=float(costed["routed"].sum()) / all_frontier if all_frontier > 0 else None,
        first_request=times.min(),
        last_request=times.max(),
    )


def live_figures(traffic: pl.DataFrame) -> dict[str, LiveFigures]:
    """Per champion version (``none``: no champion): requests, local share, shadow agreement, cost.
    ``traffic``: :func:`router_traffic` with :func:`with_costs`."""
    return {version: _figures(version, traffic.filter(pl.col("champion_version") == version))
            for version in sorted(traffic["champion_version"].unique().to_list())}


def check_replay(replay: pl.DataFrame, source: str) -> pl.DataFrame:
    missing = [c for c in REPLAY_COLUMNS if c not in replay.columns]
    if missing:
        raise ValueError(f"{source}: replay table lacks column(s) {missing} (expected {list(REPLAY_COLUMNS)})")
    return replay.select(*REPLAY_COLUMNS).unique("trace_id", keep="last")


def _gold(rows: pl.DataFrame) -> GoldFigures:
    in_scope = rows.filter(pl.col("in_scope"))
    out_of_scope = rows.filter(~pl.col("in_scope"))
    local = rows.filter(pl.col("local"))
    return GoldFigures(
        matched=rows.height,
        in_scope=in_scope.height,
        out_of_scope=out_of_scope.height,
        coverage=_mean(in_scope, "local"),
        local_n=local.height,
        local_agreement=_mean(local, "correct"),
        out_of_scope_escalated=float((~out_of_scope["local"]).mean()) if out_of_scope.height else None,
        routed_accuracy=_mean(rows, "correct"),
    )


def gold_figures(traffic: pl.DataFrame, replay: pl.DataFrame, kinds: Mapping[str, str]) -> dict[str, GoldFigures]:
    """Per champion version: the router's answers against the simulator's gold (simulated traffic
    only). ``kinds``: task type -> kind (how an answer is compared; classification by default)."""
    joined = traffic.join(replay.drop("task_type"), on="trace_id", how="inner")
    if not joined.height:
        return {}
    correct = [
        agrees(kinds.get(task or "", "classification"), output, gold)
        for task, output, gold in joined.select("task_type", "output", "sim_gold").iter_rows()
    ]
    joined = joined.with_columns(local=pl.col("route") == routes.LOCAL, correct=pl.Series(correct, dtype=pl.Boolean))
    return {version: _gold(joined.filter(pl.col("champion_version") == version))
            for version in sorted(joined["champion_version"].unique().to_list())}
