"""Router traffic for the report tests, written by the router's own record code
(``router.records``: Exchange -> Pricing.split -> trace_record), and the demo's replay rows."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Optional

import polars as pl

from loop_pipeline.core.report import REPLAY_COLUMNS
from loop_pipeline.core.serving import ServingSpec, TaskServing
from loop_pipeline.router.backends.base import Completion
from loop_pipeline.router.chat_request import ChatCall
from loop_pipeline.router.policy import FRONTIER, LOCAL
from loop_pipeline.router.records import Exchange, Pricing, trace_record
from loop_pipeline_tests.helpers import repo_prices

FRONTIER_MODEL = "gpt-4o-mini"
TASK = "intent"
PRICE_PER_HOUR, REQUESTS_PER_S = 0.36, 10.0
LOCAL_COST = PRICE_PER_HOUR / 3600.0 / REQUESTS_PER_S
IN_TOKENS, OUT_TOKENS = 100, 5
FRONTIER_COST = (IN_TOKENS * 0.15 + OUT_TOKENS * 0.60) / 1e6  # configs/prices.yaml gpt-4o-mini


def spec(version: Optional[str]) -> Optional[ServingSpec]:
    if version is None:
        return None
    return ServingSpec(
        model_name="loop-candidate", version=version, base_model="tiny", dataset_version=f"ds-{version}", system_prompt="drop",
        max_new_tokens=8, target_agreement=0.95, requests_per_s=REQUESTS_PER_S, local_price_per_hour=PRICE_PER_HOUR,
        tasks={TASK: TaskServing(kind="classification", threshold=0.5, escalation_labels=("out_of_scope",))},
    )


@dataclass(frozen=True)
class Request:
    """One request: what the champion (``version``) did with it and the simulator's gold."""

    trace_id: str
    version: Optional[str]  # None: no champion loaded
    route: str  # local | frontier
    answer: str  # what the client got
    gold: str
    shadow_agrees: Optional[bool] = None  # local only: shadowed, and the verdict

    @property
    def in_scope(self) -> bool:
        return self.gold != "out_of_scope"


def record(request: Request, at: dt.datetime) -> dict:
    call = ChatCall(body={}, messages=[{"role": "user", "content": f"question {request.trace_id}"}], stream=False,
                    task_type=TASK, app="bank", user_id="u1", session_id=None, prompt_version=None)
    exchange = Exchange(call=call, trace_id=request.trace_id, received_at=at, spec=spec(request.version), threshold=0.5)
    frontier_answer = Completion(request.answer if request.route == FRONTIER else request.gold, FRONTIER_MODEL, 0.2,
                                 input_tokens=IN_TOKENS, output_tokens=OUT_TOKENS)
    if request.version is not None:
        local_text = request.answer if request.route == LOCAL else "out_of_scope"
        exchange.local = Completion(local_text, f"loop-candidate@v{request.version}", 0.01, confidence=0.9,
                                    input_tokens=IN_TOKENS, output_tokens=OUT_TOKENS)
    exchange.route = request.route
    exchange.reason = "confident" if request.route == LOCAL else ("no_champion" if request.version is None else "low_confidence")
    if request.route == FRONTIER:
        exchange.frontier = frontier_answer
    elif request.shadow_agrees is not None:
        exchange.shadow, exchange.shadow_agrees = frontier_answer, request.shadow_agrees
    exchange.finished = exchange.started + 0.05
    return trace_record(exchange, Pricing(repo_prices()).split(exchange), FRONTIER_MODEL)


def records(requests: list[Request], start: dt.datetime) -> list[dict]:
    return [record(r, start + dt.timedelta(seconds=i)) for i, r in enumerate(requests)]


def traces_frame(rows: list[dict]) -> pl.DataFrame:
    """As raw_traces holds them: metadata as JSON text, timestamps parsed."""
    frame = pl.DataFrame([{**r, "metadata": json.dumps(r["metadata"])} for r in rows], infer_schema_length=None)
    return frame.with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))


def replay_frame(requests: list[Request]) -> pl.DataFrame:
    frame = pl.DataFrame({"trace_id": [r.trace_id for r in requests], "task_type": [TASK] * len(requests),
                          "sim_gold": [r.gold for r in requests], "in_scope": [r.in_scope for r in requests]})
    return frame.select(*REPLAY_COLUMNS)


def round_traffic(prefix: str, version: Optional[str], local_right: int, local_wrong: int, escalated_in: int,
                  escalated_oos: int, local_oos: int = 0, shadow_every: int = 2) -> list[Request]:
    """``local_right`` / ``local_wrong``: in-scope requests served locally with the gold / another
    label (every ``shadow_every``-th shadowed, agreeing when right); ``escalated_in`` /
    ``escalated_oos``: in-scope / out-of-scope requests the frontier answered (correctly);
    ``local_oos``: out-of-scope requests served locally (wrongly, as "billing")."""
    out: list[Request] = []

    def add(route: str, answer: str, gold: str, agrees: Optional[bool] = None) -> None:
        out.append(Request(f"{prefix}-{len(out):04d}", version, route, answer, gold, agrees))

    for i in range(local_right):
        add(LOCAL, "travel", "travel", True if i % shadow_every == 0 else None)
    for i in range(local_wrong):
        add(LOCAL, "billing", "travel", False if i % shadow_every == 0 else None)
    for _ in range(escalated_in):
        add(FRONTIER, "travel", "travel")
    for _ in range(escalated_oos):
        add(FRONTIER, "out_of_scope", "out_of_scope")
    for _ in range(local_oos):
        add(LOCAL, "billing", "out_of_scope")
    return out
