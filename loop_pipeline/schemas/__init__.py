"""pandera (polars) models: the contracts every stage validates against."""

from loop_pipeline.schemas.feedback import FEEDBACK_KINDS, FEEDBACK_SOURCES, FeedbackSchema
from loop_pipeline.schemas.quarantine import QUARANTINE_REASONS, QuarantineSchema
from loop_pipeline.schemas.traces import MESSAGE_ROLES, MESSAGES_DTYPE, TraceSchema

__all__ = [
    "FEEDBACK_KINDS",
    "FEEDBACK_SOURCES",
    "MESSAGES_DTYPE",
    "MESSAGE_ROLES",
    "QUARANTINE_REASONS",
    "FeedbackSchema",
    "QuarantineSchema",
    "TraceSchema",
]
