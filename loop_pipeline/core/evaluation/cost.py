"""The blended cost ratio (DESIGN.md): every request tries the local model first; escalations also
pay the frontier. (N x local + escalated x frontier) / (N x frontier).

The local cost per request is the evaluating device's price per hour over the requests per second
measured as served (``run.py``): at the router's micro-batching and one at a time, two estimates."""

from __future__ import annotations

from typing import Literal

import polars as pl

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


def blended_cost(
    served_share: float,
    frontier_cost_per_request: float,
    local_price_per_hour: float,
    local_requests_per_s: float,
    throughput_source: ThroughputSource = "measured_batched",
) -> CostEstimate:
    """Every request tries local first; escalations also pay the frontier (both calls counted)."""
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
    )


def served_share(per_example: pl.DataFrame) -> float:
    """All traffic on the test halves (in and out of scope): the share the router keeps local."""
    test = per_example.filter(pl.col("split") == "test")
    return float(test.get_column("served").mean()) if test.height else 0.0


def frontier_cost_per_request(traces: pl.DataFrame, trace_ids: pl.Series) -> float:
    """What the frontier charged, on average, for the holdout's requests (reported or priced).
    ``traces``: the canonical raw traces (at least ``trace_id`` and ``cost_usd``)."""
    costs = traces.select("trace_id", "cost_usd").filter(
        pl.col("trace_id").is_in(trace_ids.to_list()) & pl.col("cost_usd").is_not_null()
    )
    if costs.height == 0:
        raise ValueError("no frontier cost for the holdout's traces: cannot project a cost ratio")
    return float(costs.get_column("cost_usd").mean())
