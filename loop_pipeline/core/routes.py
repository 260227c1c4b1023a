"""How the router served a trace, read back from the trace row (the contract between the router's
trace writer and the stages that learn from or report on its traffic).

The router writes ``metadata.route`` (``local`` | ``frontier`` | ``fallback``) on every trace it
answers; a trace without it did not come through the router (an app calling the frontier itself,
a foreign export) and is an ordinary frontier trace. A locally served trace's ``output`` is the
small model's own answer; a shadowed one also carries the frontier's answer to the same request
(``metadata.frontier_output``) and whether the two agreed (``metadata.shadow_agrees``).
"""

from __future__ import annotations

import polars as pl

LOCAL, FRONTIER, FALLBACK = "local", "frontier", "fallback"
ROUTES = (LOCAL, FRONTIER, FALLBACK)
# A trace that never went through the router.
DIRECT = "direct"


def route(metadata: pl.Expr | None = None) -> pl.Expr:
    """The trace's route from its metadata JSON text; ``direct`` when the router did not write one."""
    metadata = pl.col("metadata") if metadata is None else metadata
    return metadata.str.json_path_match("$.route").fill_null(DIRECT)


def served_locally(metadata: pl.Expr | None = None) -> pl.Expr:
    """True when the client got the small model's answer (its output is not a frontier answer)."""
    return route(metadata) == LOCAL


def shadow_frontier_output(metadata: pl.Expr | None = None) -> pl.Expr:
    """The frontier's answer to a shadowed request; null when it was not shadowed (or failed)."""
    metadata = pl.col("metadata") if metadata is None else metadata
    return metadata.str.json_path_match("$.frontier_output")


def shadow_agrees(metadata: pl.Expr | None = None) -> pl.Expr:
    """Whether the shadow call agreed with the served local answer (null when not shadowed)."""
    metadata = pl.col("metadata") if metadata is None else metadata
    return metadata.str.json_path_match("$.shadow_agrees").replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean)


def _metadata_float(metadata: pl.Expr | None, field: str) -> pl.Expr:
    metadata = pl.col("metadata") if metadata is None else metadata
    return metadata.str.json_path_match(f"$.{field}").cast(pl.Float64, strict=False)


def frontier_cost(cost: pl.Expr | None = None, metadata: pl.Expr | None = None) -> pl.Expr:
    """What the frontier charged for the request's frontier answer: the trace's ``cost_usd`` when the
    router did not write it; the frontier call alone (``metadata.cost_frontier_usd``; the router's
    ``cost_usd`` also counts the local try) when escalated or fallen back; the shadow call
    (``metadata.cost_shadow_usd``) when served locally, null when not shadowed."""
    cost = pl.col("cost_usd") if cost is None else cost
    which = route(metadata)
    return (
        pl.when(which == DIRECT)
        .then(cost)
        .when(which == LOCAL)
        .then(_metadata_float(metadata, "cost_shadow_usd"))
        .otherwise(_metadata_float(metadata, "cost_frontier_usd"))
    )
