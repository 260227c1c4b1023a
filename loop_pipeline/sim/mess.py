"""People and checks as imperfect as in production: edits that fix only part of an output or write
another wrong answer, correct outputs edited into wrong ones, thumbs-down and hallucination flags on
correct outputs, and reviewers who are sometimes wrong.

Each behaviour draws from its own stream (``sim.streams``), so turning one rate off leaves the others'
draws alone; with every rate at 0 the feedback is the first simulator's (edits equal the gold,
flags and thumbs-down only on wrong outputs, reviewers always right).
"""

from __future__ import annotations

import numpy as np

from loop_pipeline.sim.clock import delay
from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.task_models import Example, Task
from loop_pipeline.sim.users import ACTION_DELAYS, Event
from loop_pipeline.sim.writer import feedback_record

__all__ = ["EDIT_KINDS", "edit_kind", "edited_output", "false_thumbs_down", "review_verdict"]

EDIT_KINDS = ("gold", "partial", "wrong")  # what an edit writes: the gold, a half-way fix, a wrong answer
_WRONG_EDIT_TRIES = 8


def edit_kind(rng: np.random.Generator, config: SimulationConfig) -> str:
    """What a user's edit of a wrong output writes: ``partial`` / ``wrong`` at their rates, else ``gold``."""
    if config.edit_partial_rate == 0 and config.edit_wrong_rate == 0:
        return "gold"
    r = rng.random()
    return "partial" if r < config.edit_partial_rate else "wrong" if r < config.edit_partial_rate + config.edit_wrong_rate else "gold"


def edited_output(task: Task, example: Example, output: str, kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """(text the edit writes, its kind). ``partial`` and ``wrong`` never write the gold; a partial
    fix that does not exist for this output becomes a wrong answer, and a wrong answer other than the
    output that cannot be found becomes a partial fix (each says so in the kind it returns)."""
    gold = example.gold
    if kind == "gold":
        return gold, "gold"
    if kind == "partial":
        text = task.partial_fix(example, output, rng)
        if text is not None and text not in (gold, output):
            return text, "partial"
    for _ in range(_WRONG_EDIT_TRIES):  # another wrong answer than the output
        text = task.wrong(example, rng)
        if text == gold:  # wrong() never returns the gold; a guard
            raise AssertionError("a wrong edit produced the gold answer")
        if text != output:
            return text, "wrong"
    text = task.partial_fix(example, output, rng)  # e.g. the only plausible wrong label is the output
    if text is not None and text not in (gold, output):
        return text, "partial"
    return output, "wrong"  # nothing else to write: the edit leaves the wrong output as it was


def false_thumbs_down(
    rng: np.random.Generator, events: list[Event], *, trace_id: str, called_at: int, user_id: str,
) -> list[Event]:
    """A thumbs-down on a correct output: the user's thumbs-up turned down, else one after their last action."""
    for index, (when, record) in enumerate(events):
        if record["kind"] == "thumbs" and record["value"] == 1.0:
            return events[:index] + [(when, {**record, "value": 0.0})] + events[index + 1:]
    last = max((when for when, record in events if record["source"] == "user"), default=called_at)
    when = last + delay(rng, *ACTION_DELAYS["thumbs_down"])
    return events + [(when, feedback_record(trace_id, when, "thumbs", "user", user_id, value=0.0))]


def review_verdict(
    rng: np.random.Generator, task: Task, example: Example, output: str, *, reviewer_wrong: bool,
) -> tuple[float, str]:
    """(value, label) of a human review. A right reviewer: 1.0 / 0.0 and the gold. A wrong one flips the
    value: a correct output judged bad gets a plausible wrong label, a bad output passed gets the output."""
    correct = output == example.gold
    if not reviewer_wrong:
        return (1.0 if correct else 0.0), example.gold
    if correct:
        return 0.0, task.wrong(example, rng)
    return 1.0, output
