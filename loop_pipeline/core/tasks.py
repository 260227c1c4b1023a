"""Task types (``configs/tasks.yaml``): how outputs of each kind are compared and checked, which
labels a classifier may answer, and which answers mean "escalate" (``out_of_scope``).

Used by scoring (heuristic checks), the dataset expectations, evaluation (agreement per kind) and
the router (escalation labels).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from loop_pipeline.config import ConfigModel

TaskKind = Literal["classification", "extraction", "summarization", "tagging", "other"]


class TaskSpec(ConfigModel):
    name: str = ""  # filled from the key in tasks.yaml
    kind: TaskKind
    description: str = ""
    labels: tuple[str, ...] = ()
    escalation_labels: tuple[str, ...] = ()
    min_words: Optional[int] = Field(default=None, ge=0)
    max_words: Optional[int] = Field(default=None, ge=1)

    @field_validator("labels", "escalation_labels", mode="before")
    @classmethod
    def _as_strings(cls, value):
        return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else value

    @model_validator(mode="after")
    def _word_bounds(self) -> "TaskSpec":
        if self.min_words is not None and self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) must be >= min_words ({self.min_words})")
        return self

    def is_escalation(self, answer: str) -> bool:
        """Whether ``answer`` is one of this task's escalation labels (normalized)."""
        normalized = answer.strip().lower()
        return any(normalized == label.lower() for label in self.escalation_labels)


class TasksConfig(ConfigModel):
    """``configs/tasks.yaml``: task type -> :class:`TaskSpec`."""

    FILE = "tasks"
    tasks: dict[str, TaskSpec] = Field(min_length=1)

    @field_validator("tasks", mode="before")
    @classmethod
    def _names_from_keys(cls, value):
        if isinstance(value, dict):
            return {
                str(name): ({**entry, "name": str(name)} if isinstance(entry, dict) else entry)
                for name, entry in value.items()
            }
        return value

    def spec(self, task_type: str) -> TaskSpec:
        """The task's spec; an unknown task type is compared as ``other`` (exact text)."""
        return self.tasks.get(task_type) or TaskSpec(name=task_type, kind="other")
