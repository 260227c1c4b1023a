"""``simulate()``: days of traffic from the simulated frontier model and its users, written to a
landing folder, and the ``SimulationSummary`` of what was written."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.schemas import FEEDBACK_KINDS
from loop_pipeline.sim.clock import MICROS_PER_HOUR, iso, start_of_day
from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.datasets import build_task
from loop_pipeline.sim.task_models import Example, Task
from loop_pipeline.sim.text import estimate_tokens
from loop_pipeline.sim.users import (
    REVIEWERS,
    USER_TYPES,
    Event,
    Sessions,
    UserPopulation,
    hallucination_flag,
    review_event,
    user_events,
    user_reaction,
)
from loop_pipeline.sim.writer import AtomicLines, FeedbackQueue, traces_file

__all__ = ["SimulationSummary", "simulate"]

# Share of the day's traffic per UTC hour: quiet nights, busy working hours.
_HOUR_WEIGHTS = np.array(
    [0.20, 0.15, 0.10, 0.10, 0.10, 0.15, 0.30, 0.60, 1.00, 1.30, 1.40, 1.40,
     1.30, 1.40, 1.40, 1.30, 1.20, 1.00, 0.80, 0.70, 0.60, 0.50, 0.40, 0.30]
)
_HOUR_WEIGHTS = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
# Latency model: base + per token, times log-normal noise.
_LATENCY_BASE_MS = 350.0
_LATENCY_PER_INPUT_TOKEN_MS = 0.02
_LATENCY_PER_OUTPUT_TOKEN_MS = 15.0
_LATENCY_NOISE_SIGMA = 0.25
_CHAT_FRAMING_TOKENS = 8
_REVIEW_HOURS = (9, 18)  # reviewers label during working hours (UTC)


@dataclass
class SimulationSummary:
    dataset: str
    task_type: str
    seed: int
    days: int
    start_date: str
    end_date: str
    traces: int
    feedback_events: int
    feedback_by_kind: dict[str, int]
    frontier_errors: int
    frontier_error_rate: float
    human_reviewed: int
    out_of_scope: int
    accepted_wrong_rate: dict[str, float | None]
    last_feedback_date: str | None
    estimated_frontier_cost_usd: float | None
    out_dir: str
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate(
    config: SimulationConfig,
    landing: str | os.PathLike[str],
    prices: PriceTable,
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Write ``config.days`` days of simulated traffic and its feedback under ``landing``.

    ``prices`` (configs/prices.yaml) only estimates what the frontier calls cost; a model without a
    price has no estimate. ``progress`` receives one line per day written.
    """
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"simulate() needs a SimulationConfig, got {type(config).__name__}")
    run = _Simulation(config, Path(landing), progress or _quiet)
    for day_index in range(config.days):
        run.simulate_day(config.start + dt.timedelta(days=day_index))
    run.flush_late_feedback()
    return run.summary(prices)


def _quiet(_line: str) -> None:
    """No progress output."""


class _Streams:
    """Independent random streams from one seed, so changing one behaviour leaves the others alone."""

    def __init__(self, seed: int):
        (self.users, self.traffic, self.ids, self.frontier, self.reactions, self.review) = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
        )


class _Cycler:
    """Indices of a pool in random order, without replacement until the pool is used up, then again."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.order: list[int] = []
        self.pos = 0

    def next(self) -> int:
        if self.pos >= len(self.order):
            self.order = self.rng.permutation(self.size).tolist()
            self.pos = 0
        self.pos += 1
        return self.order[self.pos - 1]


@dataclass
class _DayDraws:
    """Everything drawn for a whole day before its calls are played one by one."""

    offsets: np.ndarray  # microseconds after midnight, sorted
    users: np.ndarray
    from_oos: np.ndarray
    latency_noise: np.ndarray
    frontier_wrong: np.ndarray
    reviewed: np.ndarray
    review_delay_days: np.ndarray
    review_time: np.ndarray
    reviewer: np.ndarray


@dataclass
class _Tally:
    traces: int = 0
    feedback: int = 0
    wrong: int = 0
    reviewed: int = 0
    out_of_scope: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    wrong_by_user_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USER_TYPES, 0))
    accepted_wrong_by_user_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USER_TYPES, 0))
    feedback_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDBACK_KINDS, 0))
    files: list[str] = field(default_factory=list)
    last_feedback_date: dt.date | None = None


class _Simulation:
    """The state of one run: random streams, users, sessions, the pools and the feedback queue."""

    def __init__(self, config: SimulationConfig, landing: Path, say: Callable[[str], None]):
        self.config, self.landing, self.say = config, landing, say
        self.task: Task = build_task(config)
        self.rng = _Streams(config.seed)
        self.users = UserPopulation.draw(config, self.rng.users)
        self.sessions = Sessions(self.rng.ids)
        self.in_scope = _Cycler(len(self.task.pool), self.rng.traffic)
        self.out_of_scope = _Cycler(len(self.task.oos_pool), self.rng.traffic) if self.task.oos_pool else None
        self.oos_rate = config.out_of_scope_rate if config.dataset == "clinc150" else 0.0
        self.system_message = {"role": "system", "content": self.task.instruction}
        self.system_tokens = estimate_tokens(self.task.instruction)
        self.feedback = FeedbackQueue(landing)
        self.tally = _Tally()

    def simulate_day(self, day: dt.date) -> None:
        n = self.config.traces_per_day
        draws = self._draw_day(n)
        day_start = start_of_day(day)
        relative = traces_file(day)
        queued_before = self.feedback.generated
        with AtomicLines(self.landing / relative) as writer:
            for i in range(n):
                called_at = day_start + int(draws.offsets[i])
                writer.write(self._call(draws, i, called_at, day_start))
        self.tally.files.append(relative)
        self.say(
            f"{day.isoformat()}: {n} traces, {self.feedback.generated - queued_before} feedback events generated "
            f"-> {relative}"
        )
        assert all(d >= day for d in self.feedback.days()), "feedback cannot arrive before its trace"
        self._flush(day, late=False)

    def flush_late_feedback(self) -> None:
        """Feedback arriving after the last day of traffic (human reviews, mostly)."""
        for day in self.feedback.days():
            self._flush(day, late=True)

    def _draw_day(self, n: int) -> _DayDraws:
        traffic, review = self.rng.traffic, self.rng.review
        hours = traffic.choice(24, size=n, p=_HOUR_WEIGHTS)
        offsets = np.sort(hours * MICROS_PER_HOUR + traffic.integers(0, MICROS_PER_HOUR, size=n))
        users = traffic.choice(self.config.n_users, size=n, p=self.users.activity)
        from_oos = traffic.random(n) < self.oos_rate if self.oos_rate > 0 else np.zeros(n, dtype=bool)
        latency_noise = traffic.lognormal(0.0, _LATENCY_NOISE_SIGMA, size=n)
        frontier_wrong = self.rng.frontier.random(n) < self.config.frontier_error_rate
        reviewed = review.random(n) < self.config.human_review_rate
        low, high = self.config.review_delay_days
        review_delay_days = review.integers(low, high + 1, size=n)
        first, last = _REVIEW_HOURS
        review_time = review.integers(first * MICROS_PER_HOUR, last * MICROS_PER_HOUR, size=n)
        reviewer = review.integers(0, len(REVIEWERS), size=n)
        return _DayDraws(offsets, users, from_oos, latency_noise, frontier_wrong, reviewed, review_delay_days,
                         review_time, reviewer)

    def _next_example(self, from_oos: bool) -> Example:
        if from_oos and self.out_of_scope is not None:
            self.tally.out_of_scope += 1
            return self.task.oos_pool[self.out_of_scope.next()]
        return self.task.pool[self.in_scope.next()]

    def _call(self, draws: _DayDraws, i: int, called_at: int, day_start: int) -> dict[str, Any]:
        """Play call ``i`` of the day: the trace record to write; its feedback goes to the queue."""
        user = int(draws.users[i])
        example = self._next_example(bool(draws.from_oos[i]))
        wrong = bool(draws.frontier_wrong[i])
        output = self.task.wrong(example, self.rng.frontier) if wrong else example.gold
        if wrong and output == example.gold:  # every error path returns something else; a guard
            raise AssertionError("simulated frontier error produced the gold answer")
        call = _Call(
            trace_id=self.rng.ids.bytes(16).hex(),
            called_at=called_at,
            user_id=self.users.ids[user],
            user_type=self.users.user_type(user),
            session_id=self.sessions.session_for(user, called_at),
            example=example,
            output=output,
        )
        record = self._trace_record(call, float(draws.latency_noise[i]))
        self._count_call(record, call)
        events = self._user_and_judge_feedback(call)
        if draws.reviewed[i]:
            self.tally.reviewed += 1
            events.append(review_event(
                self.rng.review, trace_id=call.trace_id, called_at=called_at, day_start=day_start,
                delay_days=int(draws.review_delay_days[i]), time_of_day=int(draws.review_time[i]),
                reviewer=int(draws.reviewer[i]), correct=call.correct, gold=example.gold,
            ))
        for when, event in events:
            self.feedback.add(when, event)
        return record

    def _trace_record(self, call: "_Call", latency_noise: float) -> dict[str, Any]:
        """A native trace (the ingest contract, keys in this order); the gold answer only in metadata."""
        config = self.config
        input_tokens = self.system_tokens + estimate_tokens(call.example.text) + _CHAT_FRAMING_TOKENS
        output_tokens = max(1, estimate_tokens(call.output))
        latency = (
            _LATENCY_BASE_MS
            + _LATENCY_PER_INPUT_TOKEN_MS * input_tokens
            + _LATENCY_PER_OUTPUT_TOKEN_MS * output_tokens
        ) * latency_noise
        return {
            "trace_id": call.trace_id,
            "timestamp": iso(call.called_at),
            "task_type": self.task.task_type,
            "app": config.app,
            "model": config.frontier_model,
            "provider": config.provider,
            "messages": [self.system_message, {"role": "user", "content": call.example.text}],
            "output": call.output,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "latency_ms": round(latency, 1),
            "user_id": call.user_id,
            "session_id": call.session_id,
            "prompt_version": f"{self.task.task_type}-v1",
            "metadata": {
                "gold": call.example.gold,
                "sim": {"frontier_correct": call.correct, "user_type": call.user_type, "seed": config.seed},
            },
        }

    def _count_call(self, record: dict[str, Any], call: "_Call") -> None:
        self.tally.traces += 1
        self.tally.input_tokens += record["input_tokens"]
        self.tally.output_tokens += record["output_tokens"]
        if not call.correct:
            self.tally.wrong += 1
            self.tally.wrong_by_user_type[call.user_type] += 1

    def _user_and_judge_feedback(self, call: "_Call") -> list[Event]:
        """The user's reaction, then an automated hallucination flag on a wrong output."""
        rng = self.rng.reactions
        reaction = user_reaction(rng, self.config, call.user_type, call.correct)
        if reaction == "accepted" and not call.correct:
            self.tally.accepted_wrong_by_user_type[call.user_type] += 1
        events = user_events(rng, reaction, trace_id=call.trace_id, called_at=call.called_at,
                             user_id=call.user_id, correct=call.correct, gold=call.example.gold)
        if not call.correct and rng.random() < self.config.hallucination_flag_rate:
            events.append(hallucination_flag(rng, self.task, trace_id=call.trace_id, called_at=call.called_at))
        return events

    def _flush(self, day: dt.date, *, late: bool) -> None:
        flushed = self.feedback.flush(day)
        if flushed is None:
            return
        relative, records = flushed
        self.tally.files.append(relative)
        self.tally.feedback += len(records)
        for record in records:
            self.tally.feedback_by_kind[record["kind"]] += 1
        self.tally.last_feedback_date = day
        if late:
            self.say(f"{day.isoformat()}: {len(records)} late feedback events -> {relative}")

    def summary(self, prices: PriceTable) -> SimulationSummary:
        config, tally = self.config, self.tally
        # A model without a price has no estimate.
        price = prices.lookup(config.frontier_model)
        cost = round(price.cost(tally.input_tokens, tally.output_tokens), 6) if price is not None else None
        return SimulationSummary(
            dataset=config.dataset,
            task_type=self.task.task_type,
            seed=config.seed,
            days=config.days,
            start_date=config.start.isoformat(),
            end_date=(config.start + dt.timedelta(days=config.days - 1)).isoformat(),
            traces=tally.traces,
            feedback_events=tally.feedback,
            feedback_by_kind=tally.feedback_by_kind,
            frontier_errors=tally.wrong,
            frontier_error_rate=tally.wrong / tally.traces if tally.traces else 0.0,
            human_reviewed=tally.reviewed,
            out_of_scope=tally.out_of_scope,
            accepted_wrong_rate={
                kind: (tally.accepted_wrong_by_user_type[kind] / tally.wrong_by_user_type[kind]
                       if tally.wrong_by_user_type[kind] else None)
                for kind in USER_TYPES
            },
            last_feedback_date=tally.last_feedback_date.isoformat() if tally.last_feedback_date else None,
            estimated_frontier_cost_usd=cost,
            out_dir=str(self.landing),
            files=sorted(tally.files),
        )


@dataclass(frozen=True)
class _Call:
    """One call of the frontier model as the simulation decided it."""

    trace_id: str
    called_at: int  # microseconds since the epoch
    user_id: str
    user_type: str
    session_id: str
    example: Example
    output: str

    @property
    def correct(self) -> bool:
        return self.output == self.example.gold
