"""One request's routing as it happened (:class:`Exchange`), and the native trace record it becomes.

Model ``<registered name>@v<version>`` when served locally, the frontier's model otherwise.
``metadata`` holds the route and its reason, confidence and threshold, the champion version, the
local answer when it was not served, the frontier's answer when shadowed, both latencies, the
cost split and any error. Costs: the frontier from ``configs/prices.yaml``; the local call from the
champion's price per hour and measured throughput; an escalation pays both.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from loop_pipeline.core.costs import ModelPrice, PriceTable
from loop_pipeline.core.serving import ServingSpec
from loop_pipeline.router.backends.base import Completion
from loop_pipeline.router.chat_request import ChatCall
from loop_pipeline.router.policy import FRONTIER, LOCAL


def new_trace_id() -> str:
    return f"rt-{uuid.uuid4().hex}"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Exchange:
    call: ChatCall
    trace_id: str = field(default_factory=new_trace_id)
    received_at: dt.datetime = field(default_factory=utc_now)
    started: float = field(default_factory=time.perf_counter)
    route: str = FRONTIER
    reason: str = ""
    spec: ServingSpec | None = None
    threshold: float | None = None
    input_tokens_local: int | None = None
    local: Completion | None = None
    local_error: str | None = None
    frontier: Completion | None = None
    frontier_error: str | None = None
    shadow: Completion | None = None
    shadow_agrees: bool | None = None
    shadow_error: str | None = None
    finished: float | None = None

    @property
    def day(self) -> str:
        return self.received_at.date().isoformat()  # YYYY-MM-DD

    @property
    def answer(self) -> Completion | None:
        """The completion the client got."""
        return self.local if self.route == LOCAL else self.frontier

    @property
    def backend_seconds(self) -> float:
        """Time spent waiting on backends for this request (the shadow call runs after it)."""
        return sum(c.seconds for c in (self.local, self.frontier) if c is not None)

    @property
    def total_seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started


_PRICE_CACHE_SIZE = 256  # model names the frontier answers with; past this, looked up each time


class Pricing:
    def __init__(self, prices: PriceTable):
        self.prices = prices
        self._by_model: dict[str, ModelPrice | None] = {}

    def price(self, model: str) -> ModelPrice | None:
        if model in self._by_model:
            return self._by_model[model]
        price = self.prices.lookup(model)
        if len(self._by_model) < _PRICE_CACHE_SIZE:
            self._by_model[model] = price
        return price

    def frontier(self, completion: Completion | None) -> float | None:
        if completion is None or completion.input_tokens is None or completion.output_tokens is None:
            return None
        price = self.price(completion.model)
        return price.cost(completion.input_tokens, completion.output_tokens) if price is not None else None

    @staticmethod
    def local(spec: ServingSpec | None) -> float | None:
        """One request's share of the machine: price per hour / requests per hour."""
        if spec is None or not spec.local_price_per_hour or not spec.requests_per_s:
            return None
        return spec.local_price_per_hour / 3600.0 / spec.requests_per_s

    def split(self, exchange: Exchange) -> dict[str, float | None]:
        local = self.local(exchange.spec) if (exchange.local is not None or exchange.local_error) else None
        frontier = self.frontier(exchange.frontier)
        shadow = self.frontier(exchange.shadow)
        parts = [c for c in (local, frontier, shadow) if c is not None]
        return {"local": local, "frontier": frontier, "shadow": shadow, "total": sum(parts) if parts else None}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000.0, 3) if seconds is not None else None


def _metadata(exchange: Exchange, costs: dict[str, float | None]) -> dict[str, Any]:
    spec = exchange.spec
    meta: dict[str, Any] = {
        "router": True,
        "route": exchange.route,
        "reason": exchange.reason,
        "confidence": exchange.local.confidence if exchange.local is not None else None,
        "threshold": exchange.threshold,
        "champion_version": spec.version if spec else None,
        "champion_model": spec.label if spec else None,
        "local_latency_ms": _ms(exchange.local.seconds) if exchange.local else None,
        "frontier_latency_ms": _ms(exchange.frontier.seconds) if exchange.frontier else None,
        "router_added_ms": _ms(max(0.0, exchange.total_seconds - exchange.backend_seconds)),
        "cost_local_usd": costs["local"],
        "cost_frontier_usd": costs["frontier"],
        "stream": exchange.call.stream,
    }
    if exchange.local is not None and exchange.route != LOCAL:
        meta["local_output"] = exchange.local.text  # the answer that was not served
    if exchange.local_error:
        meta["local_error"] = exchange.local_error
    if exchange.frontier_error:
        meta["error"] = exchange.frontier_error
    if exchange.shadow is not None or exchange.shadow_error:
        meta["shadow"] = True
        meta["frontier_output"] = exchange.shadow.text if exchange.shadow else None
        meta["frontier_model"] = exchange.shadow.model if exchange.shadow else None
        meta["shadow_agrees"] = exchange.shadow_agrees
        meta["shadow_latency_ms"] = _ms(exchange.shadow.seconds) if exchange.shadow else None
        meta["cost_shadow_usd"] = costs["shadow"]
        if exchange.shadow_error:
            meta["shadow_error"] = exchange.shadow_error
    return meta


def trace_record(exchange: Exchange, costs: dict[str, float | None], frontier_model: str) -> dict[str, Any]:
    """The native trace (README "The native format") of one answered or failed request."""
    answer, call = exchange.answer, exchange.call
    served_locally = exchange.route == LOCAL
    return {
        "trace_id": exchange.trace_id,
        "timestamp": exchange.received_at.isoformat(timespec="microseconds"),
        "task_type": call.task_type,
        "app": call.app,
        "model": exchange.spec.label if served_locally and exchange.spec else (answer.model if answer else frontier_model),
        "provider": "local" if served_locally else "frontier",
        "messages": call.messages,
        "output": answer.text if answer is not None else "",
        "input_tokens": (exchange.input_tokens_local if served_locally else None) or (answer.input_tokens if answer else None),
        "output_tokens": answer.output_tokens if answer else None,
        "cost_usd": costs["total"],
        "cost_source": "computed" if costs["total"] is not None else None,
        "latency_ms": _ms(exchange.total_seconds),
        "user_id": call.user_id,
        "session_id": call.session_id,
        "prompt_version": call.prompt_version,
        "metadata": _metadata(exchange, costs),
    }
