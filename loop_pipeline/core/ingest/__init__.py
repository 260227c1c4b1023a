"""Ingest: one module per source format; ``pipeline`` turns files into canonical rows + quarantine."""

from loop_pipeline.core.ingest.pipeline import (
    IngestConfig,
    IngestInputError,
    IngestResult,
    SourceFile,
    discover,
    ingest,
    write_result,
)

__all__ = ["IngestConfig", "IngestInputError", "IngestResult", "SourceFile", "discover", "ingest", "write_result"]
