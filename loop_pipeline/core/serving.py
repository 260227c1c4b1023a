"""What a server needs to serve a registered version: the contract between the registry and the router.

Registration (``core/evaluation/promotion.py``) writes a :class:`ServingSpec` on every registry
version (tag ``serving_spec``, JSON); the router reads it back from ``models:/<name>@champion``
together with the version's MLflow model (merged weights and tokenizer), on any machine that
reaches the tracking server.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from loop_pipeline.core.models import PromptTransform

SERVING_SPEC_TAG = "serving_spec"


class TaskServing(BaseModel):
    """How the router treats one task type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str  # classification | extraction | summarization | tagging | other (core/tasks.py)
    # The certified confidence threshold; None: no threshold reached the target, always escalate.
    threshold: Optional[float] = None
    escalation_labels: tuple[str, ...] = ()  # answers that mean "send it to the frontier" (out_of_scope)
    served_agreement: Optional[float] = None  # measured on the evaluation's test half
    coverage: Optional[float] = None


class ServingSpec(BaseModel):
    """Everything the router needs besides the weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    version: Optional[str] = None  # filled when read back from the registry
    base_model: str
    dataset_version: str
    system_prompt: PromptTransform  # the prompt transform (core.models.prepare_prompt)
    max_new_tokens: int = Field(gt=0)
    dtype: str = "auto"
    max_input_tokens: Optional[int] = Field(default=None, gt=0)  # the length it was trained on
    target_agreement: float
    tasks: dict[str, TaskServing]
    requests_per_s: Optional[float] = None  # measured throughput of the evaluation
    local_price_per_hour: Optional[float] = None
    training_run_id: Optional[str] = None

    @property
    def label(self) -> str:
        """How traces name the local model: ``<registered name>@v<version>``."""
        return f"{self.model_name}@v{self.version}" if self.version else self.model_name
