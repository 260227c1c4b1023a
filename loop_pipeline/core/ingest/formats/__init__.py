"""Trace formats other tools write, one adapter module each, behind one registry.

``read_format(name, data, context)`` turns a file into canonical trace candidates, feedback
candidates and skip counts (see :class:`rows.FormatOutput`); ``detect_format`` picks the name
for ``--format auto``.
"""

from __future__ import annotations

import importlib
from typing import Callable

from loop_pipeline.core.ingest.formats.detect import NATIVE, detect_format, is_batch_input
from loop_pipeline.core.ingest.formats.rows import AdapterContext, FormatOutput

FOREIGN_FORMATS = ("otel", "otlp", "openinference", "langfuse", "mlflow", "litellm", "openai-batch")
FORMAT_CHOICES = ("auto", NATIVE, *FOREIGN_FORMATS)


# Format -> adapter module, imported on first use (the CLI's help and Dagster loading stay light).
_MODULES = {
    "otel": "otel",
    "otlp": "otlp",
    "openinference": "openinference",
    "langfuse": "langfuse",
    "mlflow": "mlflow_traces",
    "litellm": "litellm",
    "openai-batch": "openai_batch",
}


def _reader(name: str) -> Callable[[str | bytes, AdapterContext], FormatOutput]:
    module = _MODULES.get(name)
    if module is None:
        raise ValueError(f"unknown trace format {name!r}; known: {', '.join(FOREIGN_FORMATS)}")
    return importlib.import_module(f"loop_pipeline.core.ingest.formats.{module}").read


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
