"""Trace formats other tools write, one adapter module each, behind one registry.

``read_format(name, data, context)`` turns a file into canonical trace candidates, feedback
candidates and skip counts (see :class:`common.FormatOutput`); ``detect_format`` picks the name
for ``--format auto``.
"""

from __future__ import annotations

from typing import Callable

from loop_pipeline.core.ingest.formats.common import AdapterContext, FormatOutput
from loop_pipeline.core.ingest.formats.detect import NATIVE, detect_format, is_batch_input

FOREIGN_FORMATS = ("otel", "otlp", "openinference", "langfuse", "mlflow", "litellm", "openai-batch")
FORMAT_CHOICES = ("auto", NATIVE, *FOREIGN_FORMATS)


def _reader(name: str) -> Callable[[str | bytes, AdapterContext], FormatOutput]:
    if name == "otel":
        from loop_pipeline.core.ingest.formats import otel

        return otel.read
    if name == "otlp":
        from loop_pipeline.core.ingest.formats import otlp

        return otlp.read
    if name == "openinference":
        from loop_pipeline.core.ingest.formats import openinference

        return openinference.read
    if name == "langfuse":
        from loop_pipeline.core.ingest.formats import langfuse

        return langfuse.read
    if name == "mlflow":
        from loop_pipeline.core.ingest.formats import mlflow_traces

        return mlflow_traces.read
    if name == "litellm":
        from loop_pipeline.core.ingest.formats import litellm

        return litellm.read
    if name == "openai-batch":
        from loop_pipeline.core.ingest.formats import openai_batch

        return openai_batch.read
    raise ValueError(f"unknown trace format {name!r}; known: {', '.join(FOREIGN_FORMATS)}")


def read_format(name: str, data: str | bytes, context: AdapterContext) -> FormatOutput:
    return _reader(name)(data, context)


__all__ = [
    "FOREIGN_FORMATS",
    "FORMAT_CHOICES",
    "NATIVE",
    "AdapterContext",
    "FormatOutput",
    "detect_format",
    "is_batch_input",
    "read_format",
]
