"""The blended cost ratio (DESIGN.md): every request tries the local model first; escalations also
pay the frontier. (N x local + escalated x frontier) / (N x frontier).

The local cost per request is the evaluating device's price per hour over the requests per second
measured as served (``run.py``): at the router's micro-batching and one at a time, two estimates."""

from __future__ import annotations

from typing import Literal, Optional

import polars as pl

from loop_pipeline.core import routes
from loop_pipeline.core.contracts import StageResult

# Where the requests/s a cost uses came from: measured as served in micro-batches, measured one
# request at a time, or configs/evaluation.yaml's local_requests_per_s (overrides both).
ThroughputSource = Literal["measured_batched", "measured_one_at_a_time", "configured"]


class CostEstimate(StageResult):
    blended_cost_ratio: float
    local_cost_per_request: float
    frontier_cost_per_request: float
    local_to_frontier_price: float
    served_share: float
    local_requests_per_s: float
    local_price_per_hour: float
    throughput_source: ThroughputSource = "measured_batched"
    # Holdout requests whose frontier charge the mean read, and those skipped for having no frontier
    # answer (served locally, not shadowed). None: not counted (a cost given as a bare number).
    frontier_cost_rows: Optional[int] = None
    frontier_cost_skipped: Optional[int] = None


class FrontierCost(StageResult):
    """The mean frontier charge per request over the holdout's requests that have a frontier answer."""

    per_request: float
    rows: int  # requests whose frontier charge is known
    skipped_no_frontier_answer: int  # served locally and not shadowed: no frontier call to price
    skipped_no_cost: int  # a frontier answer without a recorded or computed cost


def blended_cost(
    served_share: float,
    frontier_cost_per_request: float,
    local_price_per_hour: float,
    local_requests_per_s: float,
    throughput_source: ThroughputSource = "measured_batched",
    frontier: FrontierCost | None = None,
) -> CostEstimate:
    """Every request tries local first; escalations also pay the frontier (both calls counted).
    ``frontier``: where ``frontier_cost_per_request`` came from, recorded as its row counts."""
    local = local_price_per_hour / 3600.0 / local_requests_per_s if local_requests_per_s > 0 else float("inf")
    if frontier_cost_per_request <= 0:
        raise ValueError("frontier cost per request must be positive to compare against it")
    ratio = (local + (1.0 - served_share) * frontier_cost_per_request) / frontier_cost_per_request
    return CostEstimate(
        blended_cost_ratio=ratio,
        local_cost_per_request=local,
        frontier_cost_per_request=frontier_cost_per_request,
        local_to_frontier_price=local / frontier_cost_per_request,
        served_share=served_share,
        local_requests_per_s=local_requests_per_s,
        local_price_per_hour=local_price_per_hour,
        throughput_source=throughput_source,
        frontier_cost_rows=frontier.rows if frontier is not None else None,
        frontier_cost_skipped=frontier.skipped_no_frontier_answer if frontier is not None else None,
    )


def served_share(per_example: pl.DataFrame) -> float:
    """All traffic on the test halves (in and out of scope): the share the router keeps local."""
    test = per_example.filter(pl.col("split") == "test")
    return float(test.get_column("served").mean()) if test.height else 0.0


def frontier_cost(traces: pl.DataFrame, trace_ids: pl.Series) -> FrontierCost:
    """What the frontier charged, on average, for the holdout's requests (reported or priced), read
    only from frontier answers (``core.routes.frontier_cost``): a direct trace's ``cost_usd``; the
    frontier call of a router trace that escalated or fell back; the shadow call of a locally served
    one; a locally served request nobody shadowed has no frontier charge and is skipped (counted).
    ``traces``: the canonical raw traces (at least ``trace_id`` and ``cost_usd``; ``metadata`` for
    router traffic: without it every trace is direct)."""
    metadata = pl.col("metadata") if "metadata" in traces.columns else pl.lit(None, dtype=pl.String)
    holdout = traces.filter(pl.col("trace_id").is_in(trace_ids.to_list())).unique("trace_id", keep="first")
    frame = holdout.select(
        (routes.served_locally(metadata) & routes.shadow_frontier_output(metadata).is_null()).alias("no_answer"),
        routes.frontier_cost(pl.col("cost_usd"), metadata).alias("cost"),
    )
    priced = frame.filter(~pl.col("no_answer") & pl.col("cost").is_not_null())
    if priced.height == 0:
        raise ValueError(
            f"no frontier cost for the holdout's traces ({frame.height} found, {int(frame.get_column('no_answer').sum())} "
            "served locally without a shadow): cannot project a cost ratio"
        )
    skipped = int(frame.get_column("no_answer").sum())
    return FrontierCost(
        per_request=float(priced.get_column("cost").mean()),
        rows=priced.height,
        skipped_no_frontier_answer=skipped,
        skipped_no_cost=frame.height - priced.height - skipped,
    )

