"""Ingest: one module per source format; ``pipeline`` turns files into canonical rows + quarantine."""

from loop_pipeline.core.ingest.formats import FOREIGN_FORMATS, FORMAT_CHOICES
from loop_pipeline.core.ingest.pipeline import (
    IngestConfig,
    IngestInputError,
    IngestResult,
    SourceFile,
    discover,
    ingest,
    write_result,
)

__all__ = [
    "FOREIGN_FORMATS",
    "FORMAT_CHOICES",
    "IngestConfig",
    "IngestInputError",
    "IngestResult",
    "SourceFile",
    "discover",
    "ingest",
    "write_result",
]
