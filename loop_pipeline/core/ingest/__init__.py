"""Ingest: landing files (native records or other tools' trace formats) -> canonical traces,
feedback and quarantine.

``sources`` finds and opens files, ``pipeline.ingest`` reads them (``native`` or an adapter in
``formats``) into an :class:`IngestResult`, ``writing.write_result`` writes it in the warehouse
layout. The configuration is :class:`IngestConfig` (``configs/ingest.yaml``), passed in by the
entry point together with the :class:`~loop_pipeline.core.costs.PriceTable`.
"""

from loop_pipeline.core.ingest.config import IngestConfig
from loop_pipeline.core.ingest.formats import FOREIGN_FORMATS, FORMAT_CHOICES
from loop_pipeline.core.ingest.pipeline import ingest
from loop_pipeline.core.ingest.result import IngestResult, KindCounts
from loop_pipeline.core.ingest.sources import IngestInputError, SourceFile, discover, is_ingestible
from loop_pipeline.core.ingest.writing import write_result

__all__ = [
    "FOREIGN_FORMATS",
    "FORMAT_CHOICES",
    "IngestConfig",
    "IngestInputError",
    "IngestResult",
    "KindCounts",
    "SourceFile",
    "discover",
    "ingest",
    "is_ingestible",
    "write_result",
]
