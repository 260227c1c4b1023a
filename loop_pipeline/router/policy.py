"""The routing policy: which requests the local model may answer, and which of its answers it keeps.

Pre-route to the frontier (the local model is not asked):

- ``no_champion``: nothing is loaded (no champion yet, loading, or loading disabled);
- ``no_task_type``: the request names none (``metadata.task_type`` or ``x-loop-task-type``);
- ``unknown_task_type``: the champion was not evaluated on it;
- ``no_threshold``: it was, but no threshold was certified (always escalate);
- ``input_too_long``: longer than the champion was trained on (``max_input_tokens``).

Cascade (the local model answered): served locally (``confident``) when its confidence clears the
task's threshold and the answer is not an escalation label, else escalated (``low_confidence``,
``escalation_label``). A local failure or timeout falls back (``local_error``, ``local_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass

from loop_pipeline.core.evaluation.metrics import normalize_label
from loop_pipeline.core.serving import ServingSpec, TaskServing

from loop_pipeline.core.routes import FALLBACK, FRONTIER, LOCAL, ROUTES  # noqa: F401  (the router's names for them)


@dataclass(frozen=True)
class PreRoute:
    """Whether to ask the local model: ``reason`` set means straight to the frontier."""

    reason: str | None
    task: TaskServing | None = None

    @property
    def try_local(self) -> bool:
        return self.reason is None


def pre_route(spec: ServingSpec | None, task_type: str | None, input_tokens: int | None) -> PreRoute:
    if spec is None:
        return PreRoute("no_champion")
    if task_type is None:
        return PreRoute("no_task_type")
    task = spec.tasks.get(task_type)
    if task is None:
        return PreRoute("unknown_task_type")
    if task.threshold is None:
        return PreRoute("no_threshold", task)
    if spec.max_input_tokens is not None and input_tokens is not None and input_tokens > spec.max_input_tokens:
        return PreRoute("input_too_long", task)
    return PreRoute(None, task)


def is_escalation(answer: str, task: TaskServing) -> bool:
    """The evaluation's rule (core.evaluation.answers): normalized answer among the labels."""
    escalation = {normalize_label(label) for label in task.escalation_labels}
    return normalize_label(answer) in escalation


def judge(answer: str, confidence: float, task: TaskServing) -> tuple[str, str]:
    """(route, reason) for a local answer of a task with a certified threshold."""
    if is_escalation(answer, task):
        return FRONTIER, "escalation_label"
    if task.threshold is None or confidence < task.threshold:
        return FRONTIER, "low_confidence"
    return LOCAL, "confident"
