"""What a simulation wrote: running counts (``Tally``) and the ``SimulationSummary`` ``loop simulate`` prints."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.schemas import FEEDBACK_KINDS
from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.users import USER_TYPES

__all__ = ["MESS_COUNTS", "SimulationSummary", "Tally", "summarize"]

# The production mess the run put in its traffic, counted (SimulationSummary.mess):
MESS_COUNTS = (
    "reviewer_errors",  # human labels whose verdict is wrong
    "thumbs_down_on_correct",  # thumbs-down on a correct output
    "false_hallucination_flags",  # code / judge hallucination flags on a correct output
    "partial_edits",  # edits of a wrong output that fix it only part of the way
    "wrong_edits",  # edits of a wrong output that write another wrong answer
    "edits_of_correct",  # correct outputs a user edited into a wrong answer
    "repeats",  # calls re-sending a popular prompt (paraphrased or not)
    "paraphrased_repeats",  # ...of which lightly retyped
    "multi_turn",  # calls carrying the previous turn of the user's conversation
    "fixed_wrong_answers",  # frontier errors that were the example's own recurring wrong answer
)


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
    mess: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESS_COUNTS, 0))
    held_out_labels: list[str] = field(default_factory=list)  # labels served as unknown intents

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tally:
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
    mess: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESS_COUNTS, 0))
    files: list[str] = field(default_factory=list)
    last_feedback_date: dt.date | None = None

    def count(self, mess: str, happened: bool = True) -> None:
        self.mess[mess] += int(happened)


def summarize(config: SimulationConfig, task_type: str, held_out_labels: tuple[str, ...], tally: Tally,
              prices: PriceTable, out_dir: str) -> SimulationSummary:
    # A model without a price has no estimate.
    price = prices.lookup(config.frontier_model)
    cost = round(price.cost(tally.input_tokens, tally.output_tokens), 6) if price is not None else None
    return SimulationSummary(
        dataset=config.dataset,
        task_type=task_type,
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
        out_dir=out_dir,
        files=sorted(tally.files),
        mess=dict(tally.mess),
        held_out_labels=list(held_out_labels),
    )
