"""``configs/datasets.yaml``: how the holdout is drawn, which targets count, the expectations' bounds."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from loop_pipeline.config import ConfigModel

GroupKey = Literal["user_id", "session_id", "prompt"]
GROUP_KEYS: tuple[str, ...] = get_args(GroupKey)


class DatasetConfig(ConfigModel):
    FILE = "datasets"

    group_by: GroupKey = "user_id"
    holdout_fraction: StrictFloat = Field(default=0.1, gt=0.0, lt=1.0)
    include_edits: StrictBool = True
    include_review_labels: StrictBool = True
    min_rows_per_task: StrictInt = Field(default=20, ge=0)  # sft rows per task type
    max_label_share: StrictFloat = Field(default=0.5, gt=0.0, le=1.0)  # classification labels
