"""``simulate()``: days of traffic from the simulated frontier model and its users, written to a
landing folder, and the ``SimulationSummary`` of what was written."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.sim.clock import MICROS_PER_HOUR, delay, iso, start_of_day
from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.datasets import build_task
from loop_pipeline.sim.hardness import FrontierErrors
from loop_pipeline.sim.mess import edit_kind, edited_output, false_thumbs_down, review_verdict
from loop_pipeline.sim.streams import Streams
from loop_pipeline.sim.summary import SimulationSummary, Tally, summarize
from loop_pipeline.sim.task_models import OUT_OF_SCOPE, Example, Task
from loop_pipeline.sim.text import estimate_tokens
from loop_pipeline.sim.traffic import Pick, Traffic, TrafficDay
from loop_pipeline.sim.users import (
    ACTION_DELAYS,
    REVIEWERS,
    Event,
    Sessions,
    Turn,
    UserPopulation,
    hallucination_flag,
    review_event,
    user_events,
    user_reaction,
)
from loop_pipeline.sim.writer import AtomicLines, FeedbackQueue, feedback_record, traces_file

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
_TURN_FRAMING_TOKENS = 4  # per message of an earlier turn
_REVIEW_HOURS = (9, 18)  # reviewers label during working hours (UTC)


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
        run.simulate_day(day_index)
    run.flush_late_feedback()
    return run.summary(prices)


def _quiet(_line: str) -> None:
    """No progress output."""


@dataclass
class _DayDraws:
    """Everything drawn for a whole day before its calls are played one by one."""

    offsets: np.ndarray  # microseconds after midnight, sorted
    users: np.ndarray
    from_oos: np.ndarray
    latency_noise: np.ndarray
    frontier_draw: np.ndarray  # uniform: wrong below the example's error propensity
    reviewed: np.ndarray
    review_delay_days: np.ndarray
    review_time: np.ndarray
    reviewer: np.ndarray
    traffic: TrafficDay  # drift, repeats, paraphrases
    reviewer_wrong: np.ndarray
    thumbs_down_correct: np.ndarray
    false_flag: np.ndarray
    edit_correct: np.ndarray
    multi_turn: np.ndarray


@dataclass(frozen=True)
class _Call:
    """One call of the frontier model as the simulation decided it."""

    trace_id: str
    called_at: int  # microseconds since the epoch
    day_start: int
    user_id: str
    user_type: str
    session_id: str
    pick: Pick
    previous: Turn | None  # the earlier turn of the conversation this call continues
    output: str

    @property
    def example(self) -> Example:
        return self.pick.example

    @property
    def correct(self) -> bool:
        return self.output == self.pick.example.gold


class _Simulation:
    """The state of one run: random streams, users, sessions, traffic, frontier errors, feedback queue."""

    def __init__(self, config: SimulationConfig, landing: Path, say: Callable[[str], None]):
        self.config, self.landing, self.say = config, landing, say
        self.task: Task = build_task(config)
        self.rng = Streams(config.seed)
        self.users = UserPopulation.draw(config, self.rng.users)
        self.sessions = Sessions(self.rng.ids)
        self.traffic = Traffic(self.task, config, self.rng)
        self.errors = FrontierErrors(self.task, config, self.rng, self.traffic.expected_shares())
        self.system_message = {"role": "system", "content": self.task.instruction}
        self.system_tokens = estimate_tokens(self.task.instruction)
        self.feedback = FeedbackQueue(landing)
        self.tally = Tally()

    def simulate_day(self, day_index: int) -> None:
        day = self.config.start + dt.timedelta(days=day_index)
        n = self.config.traces_per_day
        draws = self._draw_day(day_index, n)
        day_start = start_of_day(day)
        relative = traces_file(day)
        queued_before = self.feedback.generated
        with AtomicLines(self.landing / relative) as writer:
            for i in range(n):
                writer.write(self._call(draws, i, day_start + int(draws.offsets[i]), day_start))
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

    def _draw_day(self, day_index: int, n: int) -> _DayDraws:
        # The first simulator's draws, in their order, then one array per mess from its own stream
        # (drawn whatever its rate, so that a rate of 0 moves no other draw of the stream).
        config, traffic, review = self.config, self.rng.traffic, self.rng.review
        hours = traffic.choice(24, size=n, p=_HOUR_WEIGHTS)
        offsets = np.sort(hours * MICROS_PER_HOUR + traffic.integers(0, MICROS_PER_HOUR, size=n))
        users = traffic.choice(config.n_users, size=n, p=self.users.activity)
        oos_rate = self.traffic.oos_rate
        from_oos = traffic.random(n) < oos_rate if oos_rate > 0 else np.zeros(n, dtype=bool)
        latency_noise = traffic.lognormal(0.0, _LATENCY_NOISE_SIGMA, size=n)
        frontier_draw = self.rng.frontier.random(n)
        reviewed = review.random(n) < config.human_review_rate
        low, high = config.review_delay_days
        review_delay_days = review.integers(low, high + 1, size=n)
        first, last = _REVIEW_HOURS
        review_time = review.integers(first * MICROS_PER_HOUR, last * MICROS_PER_HOUR, size=n)
        reviewer = review.integers(0, len(REVIEWERS), size=n)
        return _DayDraws(
            offsets, users, from_oos, latency_noise, frontier_draw, reviewed, review_delay_days, review_time,
            reviewer,
            traffic=self.traffic.draw_day(day_index, n),
            reviewer_wrong=self.rng.reviewer_errors.random(n) < config.reviewer_error_rate,
            thumbs_down_correct=self.rng.false_thumbs_down.random(n) < config.thumbs_down_correct_rate,
            false_flag=self.rng.false_flags.random(n) < config.hallucination_false_flag_rate,
            edit_correct=self.rng.edits.random(n) < config.edit_correct_rate,
            multi_turn=self.rng.turns.random(n) < config.multi_turn_rate,
        )

    def _call(self, draws: _DayDraws, i: int, called_at: int, day_start: int) -> dict[str, Any]:
        """Play call ``i`` of the day: the trace record to write; its feedback goes to the queue."""
        user = int(draws.users[i])
        pick = self.traffic.pick(draws.traffic, i, bool(draws.from_oos[i]))
        output = self.errors.output(pick.example, pick.pool, float(draws.frontier_draw[i]))
        trace_id = self.rng.ids.bytes(16).hex()
        session_id, previous = self.sessions.session_for(user, called_at, resume=bool(draws.multi_turn[i]))
        self.sessions.remember(user, Turn(called_at, session_id, pick.text, output))
        call = _Call(trace_id=trace_id, called_at=called_at, day_start=day_start, user_id=self.users.ids[user],
                     user_type=self.users.user_type(user), session_id=session_id, pick=pick, previous=previous,
                     output=output)
        events, edit = self._user_and_judge_feedback(call, draws, i)
        review = None
        if draws.reviewed[i]:
            events.append(self._review(call, draws, i))
            review = "wrong" if draws.reviewer_wrong[i] else "right"
        for when, event in events:
            self.feedback.add(when, event)
        record = self._trace_record(call, float(draws.latency_noise[i]), edit=edit, review=review)
        self._count_call(record, call)
        return record

    def _messages(self, call: _Call) -> list[dict[str, str]]:
        """[system, user] or, continuing a conversation, [system, user, assistant, user]: the current
        question is always the last user message."""
        if call.previous is None:
            return [self.system_message, {"role": "user", "content": call.pick.text}]
        return [self.system_message, {"role": "user", "content": call.previous.text},
                {"role": "assistant", "content": call.previous.output}, {"role": "user", "content": call.pick.text}]

    def _trace_record(self, call: _Call, latency_noise: float, *, edit: str | None, review: str | None) -> dict[str, Any]:
        """A native trace (the ingest contract, keys in this order); the gold answer only in metadata."""
        config = self.config
        messages = self._messages(call)
        input_tokens = (self.system_tokens + sum(estimate_tokens(m["content"]) for m in messages[1:])
                        + _CHAT_FRAMING_TOKENS + _TURN_FRAMING_TOKENS * (len(messages) - 2))
        output_tokens = max(1, estimate_tokens(call.output))
        latency = (
            _LATENCY_BASE_MS
            + _LATENCY_PER_INPUT_TOKEN_MS * input_tokens
            + _LATENCY_PER_OUTPUT_TOKEN_MS * output_tokens
        ) * latency_noise
        sim = {"frontier_correct": call.correct, "user_type": call.user_type, "seed": config.seed,
               "turns": 1 if call.previous is None else 2, "repeat": call.pick.repeat, "edit_kind": edit,
               "review": review}
        return {
            "trace_id": call.trace_id,
            "timestamp": iso(call.called_at),
            "task_type": self.task.task_type,
            "app": config.app,
            "model": config.frontier_model,
            "provider": config.provider,
            "messages": messages,
            "output": call.output,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "latency_ms": round(latency, 1),
            "user_id": call.user_id,
            "session_id": call.session_id,
            "prompt_version": f"{self.task.task_type}-v1",
            "metadata": {"gold": call.example.gold, "sim": sim},
        }

    def _count_call(self, record: dict[str, Any], call: _Call) -> None:
        tally = self.tally
        tally.traces += 1
        tally.input_tokens += record["input_tokens"]
        tally.output_tokens += record["output_tokens"]
        tally.out_of_scope += call.example.gold == OUT_OF_SCOPE
        tally.count("repeats", call.pick.repeat is not None)
        tally.count("paraphrased_repeats", call.pick.repeat == "paraphrase")
        tally.count("multi_turn", call.previous is not None)
        if not call.correct:
            tally.wrong += 1
            tally.wrong_by_user_type[call.user_type] += 1

    def _user_and_judge_feedback(self, call: _Call, draws: _DayDraws, i: int) -> tuple[list[Event], str | None]:
        """The user's reaction and an automated hallucination flag, with their mess; (events, edit kind)."""
        config, rng, edits = self.config, self.rng.reactions, self.rng.edits
        reaction = user_reaction(rng, config, call.user_type, call.correct)
        if reaction == "accepted" and not call.correct:
            self.tally.accepted_wrong_by_user_type[call.user_type] += 1
        edited = kind = None
        if reaction == "edited":  # the user edits a wrong output, not always to the gold
            edited, kind = edited_output(self.task, call.example, call.output, edit_kind(edits, config), edits)
            self.tally.count("partial_edits", kind == "partial")
            self.tally.count("wrong_edits", kind == "wrong")
        events = user_events(rng, reaction, trace_id=call.trace_id, called_at=call.called_at,
                             user_id=call.user_id, correct=call.correct, edited=edited)
        if not call.correct and rng.random() < config.hallucination_flag_rate:
            events.append(hallucination_flag(rng, self.task, trace_id=call.trace_id, called_at=call.called_at))
        if call.correct:
            if draws.edit_correct[i]:  # instead of their reaction, the user edits a right answer wrong
                edited, kind = edited_output(self.task, call.example, call.output, "wrong", edits)
                when = call.called_at + delay(edits, *ACTION_DELAYS["edited"])
                events = [(when, feedback_record(call.trace_id, when, "edited", "user", call.user_id,
                                                 edited_output=edited))]
                self.tally.count("edits_of_correct")
            if draws.thumbs_down_correct[i]:
                events = false_thumbs_down(self.rng.false_thumbs_down, events, trace_id=call.trace_id,
                                           called_at=call.called_at, user_id=call.user_id)
                self.tally.count("thumbs_down_on_correct")
            if draws.false_flag[i]:
                events.append(hallucination_flag(self.rng.false_flags, self.task, trace_id=call.trace_id,
                                                 called_at=call.called_at))
                self.tally.count("false_hallucination_flags")
        return events, kind

    def _review(self, call: _Call, draws: _DayDraws, i: int) -> Event:
        """A human review days later; at ``reviewer_error_rate`` the reviewer gets it wrong."""
        reviewer_wrong = bool(draws.reviewer_wrong[i])
        value, label = review_verdict(self.rng.reviewer_errors, self.task, call.example, call.output,
                                      reviewer_wrong=reviewer_wrong)
        self.tally.reviewed += 1
        self.tally.count("reviewer_errors", reviewer_wrong)
        return review_event(
            self.rng.review, trace_id=call.trace_id, called_at=call.called_at, day_start=call.day_start,
            delay_days=int(draws.review_delay_days[i]), time_of_day=int(draws.review_time[i]),
            reviewer=int(draws.reviewer[i]), value=value, label=label,
        )

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
        self.tally.mess["fixed_wrong_answers"] = self.errors.fixed_answers_given
        return summarize(self.config, self.task.task_type, self.task.held_out_labels, self.tally, prices,
                         str(self.landing))
