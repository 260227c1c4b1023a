"""``loop bench router``'s figures: one side's latency summary, the target check, and what the
command prints for each scenario."""

from __future__ import annotations

import statistics
from typing import Any, Callable

from loop_pipeline.bench.router_traces import percentile

TARGET = {"added_p50_ms": 2.0, "added_p99_ms": 10.0, "errors": 0, "traces_lost": 0}


def side_summary(latencies_ms: list[float], seconds: float, errors: dict[str, int]) -> dict[str, Any]:
    lat = latencies_ms
    return {
        "answered": len(lat),
        "p50_ms": round(percentile(lat, 0.50), 3) if lat else None,
        "p99_ms": round(percentile(lat, 0.99), 3) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
        "requests_per_s": round(len(lat) / seconds, 1) if seconds else None,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def target_met(result: dict[str, Any]) -> bool:
    return (
        result["added_p50_ms"] is not None
        and result["added_p50_ms"] < TARGET["added_p50_ms"]
        and result["added_p99_ms"] < TARGET["added_p99_ms"]
        and result["errors"] == 0
        and result["traces_lost"] == 0
        and result["traces_duplicated"] == 0
        and result["router_stopped_cleanly"]
    )


def say_scenario(name: str, result: dict[str, Any], say: Callable[[str], None]) -> None:
    d, r = result["direct"], result["router"]
    say(f"{name} (stand-in answers after {result['backend_latency_ms']:g} ± {result['backend_jitter_ms']:g} ms): {result['what_it_measures']}")
    say(f"  direct to the stand-in: p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, {d['requests_per_s']:,.0f} requests/s, {d['errors']} errors")
    say(f"  through the router:     p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, {r['requests_per_s']:,.0f} requests/s, {r['errors']} errors")
    say(f"  added by the router (per distribution): p50 {result['added_p50_ms']:+.2f} ms, p99 {result['added_p99_ms']:+.2f} ms "
        f"(target < {TARGET['added_p50_ms']:g} / < {TARGET['added_p99_ms']:g} ms: {'met' if result['target_met'] else 'NOT met'})")
    one, inside = result["one_at_a_time"], result["inside_router"]
    if one is not None:
        say(f"  one request at a time: direct p50 {one['direct_p50_ms']:.2f} ms, through the router p50 {one['router_p50_ms']:.2f} ms: "
            f"added p50 {one['added_p50_ms']:+.2f} ms, p99 {one['added_p99_ms']:+.2f} ms (no queueing)")
    if inside:
        say(f"  inside the router (its traces' router_added_ms: handler time minus the frontier call): "
            f"p50 {inside['p50_ms']:.2f} ms, p99 {inside['p99_ms']:.2f} ms")
    cpu = result["cpu_ms_per_request"]
    say(f"  CPU per request: router {cpu['router']:.2f} ms, stand-in {cpu['stand_in']:.2f} ms, client {cpu['client']:.2f} ms; "
        f"1-minute load average {result['load_average_1m']['before']} before, {result['load_average_1m']['after']} after")
    say(f"  traces: {result['answered_through_router']:,} answered, {result['traces_written']:,} written, {result['traces_lost']} lost, "
        f"{result['traces_duplicated']} twice, {result['open_segments_left']} open segments left; "
        f"ingest: {result.get('ingest_valid', 0):,} valid, {result.get('ingest_quarantined', 0)} quarantined")
