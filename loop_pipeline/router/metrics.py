"""Prometheus metrics of one router app (its own registry: two apps in one process never mix).

Label values are bounded: routes, reasons and rejection kinds are fixed sets; a task type is its
name when the champion or configs/tasks.yaml knows it, else ``unknown`` (``none`` when absent), so
a client cannot grow the label space. Nothing from a request's headers becomes a label.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Router overhead is sub-millisecond to a few ms; backends take ms to seconds.
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BACKEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

__all__ = ["CONTENT_TYPE_LATEST", "RouterMetrics"]


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("loop_router_requests", "Chat requests answered, by route and task type", ["route", "task_type"], registry=r)
        self.escalations = Counter("loop_router_escalations", "Requests sent to the frontier, by reason", ["reason", "task_type"], registry=r)
        self.fallbacks = Counter("loop_router_fallbacks", "Local failures answered by the frontier", ["reason", "task_type"], registry=r)
        self.rejections = Counter("loop_router_rejections", "Requests refused before routing (no trace)", ["reason"], registry=r)
        self.frontier_errors = Counter("loop_router_frontier_errors", "Frontier calls that failed", ["kind"], registry=r)
        self.shadow = Counter("loop_router_shadow_comparisons", "Shadowed local answers compared with the frontier", ["task_type", "agrees"], registry=r)
        self.shadow_agreement = Gauge("loop_router_shadow_agreement", "Live agreement of shadowed local answers with the frontier", ["task_type"], registry=r)
        self.latency = Histogram("loop_router_request_seconds", "Time to answer a chat request", ["route"], buckets=_BACKEND_BUCKETS, registry=r)
        self.overhead = Histogram("loop_router_added_seconds", "Time the router added on top of its backends", ["route"], buckets=_OVERHEAD_BUCKETS, registry=r)
        self.backend_latency = Histogram("loop_router_backend_seconds", "Time of one backend call", ["backend"], buckets=_BACKEND_BUCKETS, registry=r)
        self.cost = Counter("loop_router_cost_usd", "Cost of answered requests in USD", ["route", "backend"], registry=r)
        self.traces_written = Counter("loop_router_traces_written", "Trace records written into closed or open segments", ["kind"], registry=r)
        self.queue_depth = Gauge("loop_router_trace_queue_depth", "Records waiting for the writer", ["kind"], registry=r)
        self.champion = Gauge("loop_router_champion_version", "Version of the champion being served (0: none)", registry=r)
        self.champion_loads = Counter("loop_router_champion_loads", "Champion loads, by outcome", ["outcome"], registry=r)
        self.batch_size = Histogram("loop_router_local_batch_size", "Requests per in-process generation batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self._shadow_counts: dict[str, list[int]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)`` (values in the order of its label names), looked up once:
        label values are bounded (see above), so is this cache, and a request skips prometheus'
        lock and validation."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def record_shadow(self, task_type: str, agreed: bool) -> None:
        self.shadow.labels(task_type=task_type, agrees=str(agreed).lower()).inc()
        counts = self._shadow_counts.setdefault(task_type, [0, 0])
        counts[0] += int(agreed)
        counts[1] += 1
        self.shadow_agreement.labels(task_type=task_type).set(counts[0] / counts[1])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
