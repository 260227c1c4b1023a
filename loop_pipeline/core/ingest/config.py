"""``configs/ingest.yaml``: record size limits, decoding slices, and the foreign-format mappings."""

from __future__ import annotations

from pydantic import Field

from loop_pipeline.config import ConfigModel
from loop_pipeline.core.ingest.formats.mapping import FeedbackMapping, TaskTypeMapping


class IngestConfig(ConfigModel):
    FILE = "ingest"

    # Records over this size are quarantined, not parsed (strict: a YAML `true` is not a size).
    max_record_bytes: int = Field(default=1 << 20, ge=1, strict=True)
    # Lines decoded together; a slice holding a malformed record is re-read in blocks to find it.
    decode_slice_rows: int = Field(default=200_000, ge=1, strict=True)
    # A native JSONL file (plain, .gz or .zst) is read, decoded and checked this many bytes of
    # whole lines at a time: memory follows the batch, not the file. Results do not depend on it.
    read_batch_bytes: int = Field(default=8 << 20, ge=1, strict=True)
    # The end of a run (repeated ids, costs, schema checks) reads the spilled rows back this many
    # at a time: memory follows it, not the day. Results do not depend on it.
    finalize_batch_rows: int = Field(default=200_000, ge=1, strict=True)
    # A JSON document (a Langfuse or MLflow export, not JSONL) is parsed whole: this bounds it.
    max_document_bytes: int = Field(default=256 << 20, ge=1, strict=True)
    # OpenAI's Batch API bills half the synchronous price; computed batch costs use this factor.
    openai_batch_price_factor: float = Field(default=0.5, gt=0, le=1, strict=True)
    task_type: TaskTypeMapping = TaskTypeMapping()
    feedback: FeedbackMapping = FeedbackMapping()
