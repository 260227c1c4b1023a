"""Feedback events: many per trace, possibly days after it."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa

from loop_pipeline.schemas.traces import UTC_MICROS

FEEDBACK_KINDS = (
    "accepted",
    "edited",
    "rejected",
    "regenerated",
    "thumbs",
    "human_label",
    "hallucination",
    "judge_score",
    "copied",
)
FEEDBACK_SOURCES = ("user", "human_reviewer", "code", "llm")


class FeedbackSchema(pa.DataFrameModel):
    feedback_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    trace_id: str = pa.Field(str_length={"min_value": 1})
    timestamp: UTC_MICROS = pa.Field()
    kind: str = pa.Field(isin=list(FEEDBACK_KINDS))
    value: Optional[float] = pa.Field(nullable=True)
    label: Optional[str] = pa.Field(nullable=True)
    edited_output: Optional[str] = pa.Field(nullable=True)
    source: str = pa.Field(isin=list(FEEDBACK_SOURCES))
    annotator_id: Optional[str] = pa.Field(nullable=True)
    source_format: str = pa.Field()
    source_file: str = pa.Field()
    source_record: int = pa.Field(ge=1)

    class Config:
        strict = True
        coerce = True


FEEDBACK_COLUMNS: tuple[str, ...] = tuple(FeedbackSchema.to_schema().columns)
