"""Simulated people: users with sessions who react to each output, code checks and LLM judges that
flag wrong outputs, and human reviewers whose labels arrive days later. Their imperfections (wrong
edits, false flags, wrong reviews) are in ``sim.mess``.

Each function draws from the random stream it is given, in a fixed order: the same seed gives the
same feedback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop_pipeline.schemas import FEEDBACK_KINDS, FEEDBACK_SOURCES
from loop_pipeline.sim.clock import MICROS_PER_DAY, MICROS_PER_SECOND, delay
from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.task_models import Task
from loop_pipeline.sim.writer import Record, feedback_record

USER_TYPES = ("rushed", "careful")
# How users react to a correct output: P(accept), P(no action), P(regenerate); the rest rejects.
_CORRECT_REACTIONS = {"rushed": (0.85, 0.11, 0.025), "careful": (0.72, 0.20, 0.05)}
# How users who do not accept a wrong output react: P(edit), P(reject), P(regenerate); rest: nothing.
_WRONG_REACTIONS = (0.50, 0.25, 0.15)
_P_COPY_AFTER_ACCEPT = 0.3
_P_THUMBS_UP_AFTER_ACCEPT = 0.12
_P_THUMBS_DOWN = {"edited": 0.2, "rejected": 0.4, "regenerated": 0.1, None: 0.05}
# (median seconds, log-normal sigma) from the output (or the previous action) to each action.
ACTION_DELAYS = {"accepted": (12.0, 0.8), "copied": (3.0, 0.5), "thumbs_up": (5.0, 0.6), "edited": (60.0, 0.7),
                 "rejected": (10.0, 0.7), "regenerated": (5.0, 0.6), "thumbs_down": (4.0, 0.6)}
_SESSION_GAP_US = 30 * 60 * MICROS_PER_SECOND
_N_REVIEWERS = 5
REVIEWERS = [f"reviewer-{i:02d}" for i in range(1, _N_REVIEWERS + 1)]

Event = tuple[int, Record]  # (arrival in microseconds, feedback record)

_SIMULATED_KINDS = ("accepted", "edited", "rejected", "regenerated", "thumbs", "human_label",
                    "hallucination", "copied")
# The simulator writes the ingest contract; fail at import if the contract drops a kind it writes.
assert set(_SIMULATED_KINDS) <= set(FEEDBACK_KINDS)
assert {"user", "human_reviewer", "code", "llm"} <= set(FEEDBACK_SOURCES)


@dataclass(frozen=True)
class UserPopulation:
    """Who sends the traffic: a fixed share is rushed; activity is skewed (a few users send much)."""

    ids: list[str]
    rushed: np.ndarray  # bool per user
    activity: np.ndarray  # share of the traffic per user, sums to 1

    @classmethod
    def draw(cls, config: SimulationConfig, rng: np.random.Generator) -> "UserPopulation":
        n = config.n_users
        width = max(4, len(str(n)))
        rushed = np.zeros(n, dtype=bool)
        rushed[rng.permutation(n)[: int(round(config.rushed_user_rate * n))]] = True
        activity = rng.lognormal(0.0, 0.75, size=n)
        return cls([f"user-{i:0{width}d}" for i in range(1, n + 1)], rushed, activity / activity.sum())

    def user_type(self, user: int) -> str:
        return "rushed" if self.rushed[user] else "careful"


@dataclass(frozen=True)
class Turn:
    """A user's last call: when, in which session, what they asked and what they were answered."""

    at: int
    session_id: str
    text: str
    output: str


class Sessions:
    """A user's calls share a session until they pause for more than 30 minutes; a call that
    continues the conversation resumes the user's last session, whatever the pause."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._last: dict[int, Turn] = {}

    def session_for(self, user: int, micros: int, *, resume: bool = False) -> tuple[str, Turn | None]:
        """(session id, the previous turn when this call resumes the user's conversation, else None)."""
        last = self._last.get(user)
        starts = last is None or micros - last.at > _SESSION_GAP_US
        # Drawn whenever the pause would start a session, resumed or not, so that resuming moves
        # no later trace or session id.
        fresh = self.rng.bytes(8).hex() if starts else ""
        if last is None:
            return fresh, None
        if resume:
            return last.session_id, last
        return fresh or last.session_id, None

    def remember(self, user: int, turn: Turn) -> None:
        self._last[user] = turn


def user_reaction(rng: np.random.Generator, config: SimulationConfig, user_type: str, correct: bool) -> str | None:
    """accepted / edited / rejected / regenerated, or None (the user does nothing)."""
    if correct:
        p_accept, p_none, p_regen = _CORRECT_REACTIONS[user_type]
        r = rng.random()
        return ("accepted" if r < p_accept else None if r < p_accept + p_none
                else "regenerated" if r < p_accept + p_none + p_regen else "rejected")
    p_accept = config.rushed_accept_wrong_rate if user_type == "rushed" else config.careful_accept_wrong_rate
    if rng.random() < p_accept:
        return "accepted"
    p_edit, p_reject, p_regen = _WRONG_REACTIONS
    r = rng.random()
    return ("edited" if r < p_edit else "rejected" if r < p_edit + p_reject
            else "regenerated" if r < p_edit + p_reject + p_regen else None)


def user_events(
    rng: np.random.Generator, reaction: str | None, *, trace_id: str, called_at: int, user_id: str,
    correct: bool, edited: str | None,
) -> list[Event]:
    """The user's feedback on one output, seconds to minutes after it, in the order they act;
    ``edited`` is the text an ``edited`` reaction writes."""
    if reaction == "accepted":
        return _acceptance_events(rng, trace_id, called_at, user_id)
    events: list[Event] = []
    when = called_at
    if reaction is not None:
        when += delay(rng, *ACTION_DELAYS[reaction])
        edited = edited if reaction == "edited" else None
        events.append((when, feedback_record(trace_id, when, reaction, "user", user_id, edited_output=edited)))
    if not correct and rng.random() < _P_THUMBS_DOWN[reaction]:
        when += delay(rng, *ACTION_DELAYS["thumbs_down"])
        events.append((when, feedback_record(trace_id, when, "thumbs", "user", user_id, value=0.0)))
    return events


def _acceptance_events(rng: np.random.Generator, trace_id: str, called_at: int, user_id: str) -> list[Event]:
    """Accepted, then perhaps copied, then perhaps a thumbs up."""
    when = called_at + delay(rng, *ACTION_DELAYS["accepted"])
    events = [(when, feedback_record(trace_id, when, "accepted", "user", user_id))]
    if rng.random() < _P_COPY_AFTER_ACCEPT:
        when += delay(rng, *ACTION_DELAYS["copied"])
        events.append((when, feedback_record(trace_id, when, "copied", "user", user_id)))
    if rng.random() < _P_THUMBS_UP_AFTER_ACCEPT:
        when += delay(rng, *ACTION_DELAYS["thumbs_up"])
        events.append((when, feedback_record(trace_id, when, "thumbs", "user", user_id, value=1.0)))
    return events


def hallucination_flag(rng: np.random.Generator, task: Task, *, trace_id: str, called_at: int) -> Event:
    """An output flagged (rightly or not) by a code check (within a second) or an LLM judge (within a minute)."""
    source = task.hallucination_source(rng)
    if source == "code":
        flagged, annotator = called_at + delay(rng, 0.5, 0.5), "output-check"
    else:
        flagged, annotator = called_at + delay(rng, 30.0, 0.5), "llm-judge"
    return flagged, feedback_record(trace_id, flagged, "hallucination", source, annotator, value=1.0)


def review_event(
    rng: np.random.Generator, *, trace_id: str, called_at: int, day_start: int, delay_days: int,
    time_of_day: int, reviewer: int, value: float, label: str,
) -> Event:
    """A human reviewer's verdict (``sim.mess.review_verdict``), ``delay_days`` after the call at
    ``time_of_day`` (working hours)."""
    review_at = day_start + delay_days * MICROS_PER_DAY + time_of_day
    if review_at <= called_at:  # a same-day review (delay 0) of a late trace
        review_at = called_at + delay(rng, 600.0, 0.5)
    record = feedback_record(trace_id, review_at, "human_label", "human_reviewer", REVIEWERS[reviewer],
                             value=value, label=label)
    return review_at, record
