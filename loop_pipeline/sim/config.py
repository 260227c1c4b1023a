"""``configs/simulate.yaml``: what traffic the simulator writes (``SimulationConfig``)."""

from __future__ import annotations

import datetime as dt
import os
from types import MappingProxyType
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import Field, field_validator, model_validator

from loop_pipeline.config import ConfigModel

__all__ = ["DEFAULT_TASK_TYPES", "DatasetName", "NO_MESS", "SimulationConfig"]

DatasetName = Literal["clinc150", "labeled", "restaurant8k", "dialogsum"]
DEFAULT_TASK_TYPES: dict[str, str] = {
    "clinc150": "intent",
    "labeled": "classification",
    "restaurant8k": "slot_extraction",
    "dialogsum": "summarization",
}

# Strict numbers: YAML's `true` or `2.5` is a mistake, not a count of 1 or a rate of 1.0.
Probability = Annotated[float, Field(ge=0.0, le=1.0, strict=True)]
# Written as-is on every trace, so it must say something: at least one non-space character.
Name = Annotated[str, Field(pattern=r"\S")]
ReviewDelay = Annotated[int, Field(ge=0, le=365, strict=True)]
# Log-normal sigma of the per-example error propensity; beyond 3 a handful of prompts hold every error.
Concentration = Annotated[float, Field(ge=0.0, le=3.0, strict=True)]
Label = Annotated[str, Field(min_length=1)]

# The overrides that switch every production mess off: the tidy traffic of the first simulator
# (edits equal the gold, reviewers never wrong, errors independent coin flips, no repeats, ...).
NO_MESS: Mapping[str, Any] = MappingProxyType({
    "reviewer_error_rate": 0.0,
    "thumbs_down_correct_rate": 0.0,
    "hallucination_false_flag_rate": 0.0,
    "edit_partial_rate": 0.0,
    "edit_wrong_rate": 0.0,
    "edit_correct_rate": 0.0,
    "frontier_error_concentration": 0.0,
    "frontier_error_consistency": 0.0,
    "out_of_scope_labels": None,
    "out_of_scope_label_share": 0.0,
    "repeat_rate": 0.0,
    "paraphrase_rate": 0.0,
    "label_drift": 0.0,
    "multi_turn_rate": 0.0,
})


class SimulationConfig(ConfigModel):
    """What traffic to simulate; see configs/simulate.yaml for what each field means."""

    FILE = "simulate"

    dataset: DatasetName = "clinc150"
    # Required for labeled / restaurant8k / dialogsum; clinc150 defaults to the bundled copy.
    input_path: Optional[Annotated[str, Field(min_length=1)]] = None
    text_column: Name = "text"
    label_column: Name = "label"
    task_type: Optional[Name] = None  # None: the dataset's default (DEFAULT_TASK_TYPES)
    domains: Optional[Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]] = None
    days: Annotated[int, Field(ge=1, le=36600, strict=True)] = 7
    start_date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")] = "2026-11-01"
    traces_per_day: Annotated[int, Field(ge=1, le=100_000_000, strict=True)] = 1000
    out_of_scope_rate: Probability = 0.1
    frontier_model: Name = "gpt-4o-2024-08-06"
    provider: Name = "openai"
    app: Name = "support-bot"
    frontier_error_rate: Probability = 0.05
    rushed_user_rate: Probability = 0.3
    rushed_accept_wrong_rate: Probability = 0.6
    careful_accept_wrong_rate: Probability = 0.05
    human_review_rate: Probability = 0.02
    hallucination_flag_rate: Probability = 0.3
    review_delay_days: tuple[ReviewDelay, ReviewDelay] = (1, 3)
    n_users: Annotated[int, Field(ge=1, le=10_000_000, strict=True)] = 200
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    # Production's mess (see NO_MESS for all of it off).
    reviewer_error_rate: Probability = 0.01
    thumbs_down_correct_rate: Probability = 0.01
    hallucination_false_flag_rate: Probability = 0.01
    edit_partial_rate: Probability = 0.15
    edit_wrong_rate: Probability = 0.05
    edit_correct_rate: Probability = 0.005
    frontier_error_concentration: Concentration = 1.0
    frontier_error_consistency: Probability = 0.8
    out_of_scope_labels: Optional[Annotated[list[Label], Field(min_length=1)]] = None
    out_of_scope_label_share: Probability = 0.1
    repeat_rate: Probability = 0.15
    paraphrase_rate: Probability = 0.5
    label_drift: Probability = 0.3
    multi_turn_rate: Probability = 0.15

    @field_validator("input_path", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("start_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2026-11-01 as a date; a datetime is not a day and stays an error.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    @field_validator("start_date")
    @classmethod
    def _real_calendar_day(cls, value: str) -> str:
        dt.date.fromisoformat(value)  # 2026-02-30 raises ValueError, reported on start_date
        return value

    @field_validator("domains")
    @classmethod
    def _distinct_domains(cls, value: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(value)) if value is not None else None

    @field_validator("out_of_scope_labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(value)) if value is not None else None

    @field_validator("review_delay_days")
    @classmethod
    def _ordered_delay(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] > value[1]:
            raise ValueError("must be [min, max] with min <= max")
        return value

    @model_validator(mode="after")
    def _dataset_needs(self) -> "SimulationConfig":
        if self.input_path is None and self.dataset != "clinc150":
            raise ValueError(
                f"input_path is required for dataset {self.dataset!r} (only clinc150 ships with the package)"
            )
        if self.domains is not None and self.dataset != "clinc150":
            raise ValueError(f"domains only applies to dataset clinc150, not {self.dataset!r}")
        if self.out_of_scope_labels is not None and self.dataset not in ("clinc150", "labeled"):
            raise ValueError(f"out_of_scope_labels only applies to clinc150 and labeled, not {self.dataset!r}")
        if self.edit_partial_rate + self.edit_wrong_rate > 1.0:
            raise ValueError(
                f"edit_partial_rate + edit_wrong_rate must be at most 1 (shares of the same edits), got "
                f"{self.edit_partial_rate} + {self.edit_wrong_rate}"
            )
        return self

    @property
    def resolved_task_type(self) -> str:
        return self.task_type or DEFAULT_TASK_TYPES[self.dataset]

    @property
    def start(self) -> dt.date:
        return dt.date.fromisoformat(self.start_date)
