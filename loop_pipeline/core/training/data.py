"""The training rows: the parquet files the datasets stage writes, turned into what trl expects.

Read with pyarrow, not polars: the trainer also runs on GPU images that lack polars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from loop_pipeline.config import ConfigError
from loop_pipeline.core.models import prepare_prompt
from loop_pipeline.core.training.config import DataSection

SFT_COLUMNS = ("messages",)
NEGATIVE_COLUMNS = {"kto": ("prompt", "completion", "label"), "dpo": ("prompt", "chosen", "rejected")}


def read_rows(path: Path | None, columns: Sequence[str], field_path: str) -> list[dict[str, Any]]:
    """The ``columns`` of a parquet file as dicts; a missing file, column or row is a ConfigError
    naming the config field that pointed there."""
    import pyarrow.parquet as pq

    if path is None or not path.is_file():
        raise ConfigError(f"{field_path}: file not found: {path}")
    schema = pq.read_schema(path)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ConfigError(f"{field_path}: {path} lacks column(s) {missing}; has {schema.names}")
    table = pq.read_table(path, columns=list(columns))
    if table.num_rows == 0:
        raise ConfigError(f"{field_path}: {path} has no rows")
    return table.to_pylist()


def check_files(data: DataSection, negative_stage: str) -> None:
    """Fail on the data before any model is loaded."""
    read_rows(data.path("sft"), SFT_COLUMNS, "data.sft")
    if negative_stage != "none":
        path = data.path(negative_stage)
        if path is None or not path.is_file():
            raise ConfigError(f"data.{negative_stage}: file not found: {path}")


def sft_rows(messages_rows: list[dict[str, Any]], prompt_completion: bool, system_prompt: str = "keep") -> list[dict[str, Any]]:
    """Conversational rows -> prompt/completion (all turns but the last / the last assistant turn),
    or kept as ``messages`` (for templates with generation markers)."""
    out = []
    for row in messages_rows:
        messages = prepare_prompt(row["messages"], system_prompt)
        if not prompt_completion:
            out.append({"messages": messages})
            continue
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ConfigError("data.sft: every conversation must end with an assistant turn")
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def negative_records(data: DataSection, stage: str) -> list[dict[str, Any]]:
    """KTO rows (prompt, completion, label) or DPO rows (prompt, chosen, rejected), with the prompt
    transformed as the SFT stage saw it."""
    rows = read_rows(data.path(stage), NEGATIVE_COLUMNS[stage], f"data.{stage}")
    mode = data.system_prompt
    if stage == "kto":
        return [
            {"prompt": prepare_prompt(r["prompt"], mode), "completion": _plain(r["completion"]), "label": bool(r["label"])}
            for r in rows
        ]
    return [
        {"prompt": prepare_prompt(r["prompt"], mode), "chosen": _plain(r["chosen"]), "rejected": _plain(r["rejected"])}
        for r in rows
    ]


def _plain(messages: Any) -> list[dict[str, str]]:
    return prepare_prompt(messages, "keep")
