"""pandera (polars) models: the contracts every stage validates against."""

import polars as pl

from loop_pipeline.schemas.feedback import FEEDBACK_KINDS, FEEDBACK_SOURCES, FeedbackSchema
from loop_pipeline.schemas.quarantine import QUARANTINE_REASONS, QuarantineSchema
from loop_pipeline.schemas.traces import MESSAGE_ROLES, MESSAGES_DTYPE, TraceSchema



def empty_frame(model) -> pl.DataFrame:
    """A zero-row frame with a schema model's columns and dtypes."""
    return pl.DataFrame(schema={name: column.dtype.type for name, column in model.to_schema().columns.items()})


__all__ = [
    "empty_frame",
    "FEEDBACK_KINDS",
    "FEEDBACK_SOURCES",
    "MESSAGES_DTYPE",
    "MESSAGE_ROLES",
    "QUARANTINE_REASONS",
    "FeedbackSchema",
    "QuarantineSchema",
    "TraceSchema",
]
