"""``configs/automation.yaml``: when the loop retrains itself, and the counts its sensor decides on.

The Dagster side (schedules, sensors, the retrain job) lives in ``loop_pipeline/defs/automation``;
this module is the typed config and the plain computations on tables, so they are tested without
an instance.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Iterable, Mapping

import polars as pl
from pydantic import Field, StrictInt, StrictStr, field_validator

from loop_pipeline.config import ConfigModel
from loop_pipeline.core.scoring import keep_mask

# Five cron fields: minute hour day-of-month month day-of-week (numbers, *, ranges, steps, lists, names).
_CRON_FIELD = re.compile(r"^[\w*/,\-?]+$")
DEFAULT_TASK = "default"


class NightlyRetrain(ConfigModel):
    """The ``nightly_retrain`` schedule: a retrain of the days that landed since the last one."""

    cron: StrictStr = "0 2 * * *"
    timezone: StrictStr = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError("expected five cron fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone ({exc})") from None
        return value


class RetrainSensor(ConfigModel):
    """The ``retrain_sensor``: a retrain as soon as enough new curated examples arrived."""

    # Per task type; ``default`` applies to every task type not named.
    min_new_examples: dict[str, StrictInt] = Field(default_factory=lambda: {DEFAULT_TASK: 200})
    minimum_interval_s: StrictInt = Field(default=300, ge=30)

    @field_validator("min_new_examples")
    @classmethod
    def _positive_with_default(cls, value: dict[str, int]) -> dict[str, int]:
        if DEFAULT_TASK not in value:
            raise ValueError(f"needs a {DEFAULT_TASK!r} entry (the minimum of task types not named)")
        bad = sorted(task for task, n in value.items() if n < 1)
        if bad:
            raise ValueError(f"every minimum must be >= 1 (not: {bad})")
        return value

    def minimum(self, task_type: str) -> int:
        return self.min_new_examples.get(task_type, self.min_new_examples[DEFAULT_TASK])


class ChampionReload(ConfigModel):
    """The ``champion_reload_sensor``: tells the router (LOOP_ROUTER_URL) the champion moved."""

    minimum_interval_s: StrictInt = Field(default=30, ge=5)
    # The router loads the new version before it answers POST /admin/reload.
    timeout_s: float = Field(default=300.0, gt=0)


class Retries(ConfigModel):
    """Op retries of the retrain job (a transient failure: the registry or the disk went away)."""

    max_retries: StrictInt = Field(default=2, ge=0)
    delay_s: float = Field(default=30.0, ge=0)
    backoff: bool = True  # exponential backoff from delay_s


class AutomationConfig(ConfigModel):
    FILE = "automation"

    nightly_retrain: NightlyRetrain = NightlyRetrain()
    retrain_sensor: RetrainSensor = RetrainSensor()
    champion_reload: ChampionReload = ChampionReload()
    retries: Retries = Retries()


def new_curated_counts(
    scored: pl.DataFrame, rules: Mapping[str, object], trained_trace_ids: Iterable[str] | None
) -> dict[str, int]:
    """Per task type, the curated examples (traces ``keep_mask`` keeps: what would enter SFT)
    newer than the newest trace of the dataset version the last adapter trained on.

    ``trained_trace_ids``: every trace id of that version (None: nothing trained yet, so every
    curated example is new). Task types without a keep rule count zero.
    """
    counts = {task: 0 for task in rules}
    if scored.is_empty():
        return counts
    kept = scored.filter(keep_mask(scored, rules))  # type: ignore[arg-type]
    if trained_trace_ids is not None:
        ids = pl.Series("trace_id", list(trained_trace_ids), dtype=pl.String)
        newest = scored.filter(pl.col("trace_id").is_in(ids.implode())).get_column("timestamp").max()
        if newest is not None:
            kept = kept.filter(pl.col("timestamp") > newest)
    for row in kept.group_by("task_type").len().iter_rows(named=True):
        counts[row["task_type"]] = int(row["len"])
    return counts


def shortfall(counts: Mapping[str, int], config: RetrainSensor) -> tuple[dict[str, int], str]:
    """The task types that reached their minimum, and the line that says where each one stands
    (``intent 12/200, summarization 250/200``)."""
    due = {task: n for task, n in counts.items() if n >= config.minimum(task)}
    line = ", ".join(f"{task} {n}/{config.minimum(task)}" for task, n in sorted(counts.items())) or "no task type has a keep rule"
    return due, line
