"""A learnable 3-way toy classification for the trainer tests: the examples frame the datasets
stage would curate, the tokenizer corpus, and a train config around a tiny model."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl

from loop_pipeline.schemas.traces import MESSAGES_DTYPE

SYSTEM = "Classify the request."
LABELS = {"billing": ["invoice", "refund", "charge"], "travel": ["flight", "hotel", "trip"], "tech": ["login", "crash", "error"]}
WRONG = {"billing": "travel", "travel": "tech", "tech": "billing"}
TEMPLATES = ("my {} is wrong", "help with {} please", "question about the {}", "{} problem today")


def examples() -> pl.DataFrame:
    """Every third output wrong (and reviewed), so KTO and DPO get negatives."""
    rows = []
    n = 0
    for label, words in LABELS.items():
        for word in words:
            for template in TEMPLATES:
                n += 1
                bad = n % 3 == 0
                rows.append(
                    {
                        "trace_id": f"t{n:03d}",
                        # When the request arrived (curate_examples carries the trace's), a minute apart.
                        "timestamp": datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=n),
                        "task_type": "classify",
                        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": template.format(word)}],
                        "output": WRONG[label] if bad else label,
                        "frontier_output": WRONG[label] if bad else label,  # direct frontier traffic: its own output
                        "target": label,
                        "target_source": "review" if bad else "output",
                        "reference": label,  # a holdout row's reference (curate_examples sets both)
                        "reference_source": "review" if bad else "accepted_scored",
                        "output_is_bad": bad,
                        "split": "train",
                        "group_key": f"prompt:{n}",
                        "reviewed": bad,
                        "review_label": label if bad else None,
                        "sim_gold": label,
                    }
                )
    return pl.DataFrame(rows).with_columns(pl.col("messages").cast(MESSAGES_DTYPE), pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


def corpus() -> list[str]:
    lines = [SYSTEM, "system user assistant"]
    for label, words in LABELS.items():
        lines.append(label)
        for word in words:
            lines += [template.format(word) for template in TEMPLATES]
    return lines * 3


def train_config(model: Path | str, version: Path | str, root: Path, out: Path, /, **overrides: Any) -> dict[str, Any]:
    """A complete train config (tracking under ``root``); ``overrides`` merge per section."""
    raw: dict[str, Any] = {
        "model": {"base": str(model), "dtype": "auto"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": 100, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "max_length": 64, "seed": 0, "logging_steps": 5},
        "negatives": {"stage": "none"},
        "data": {"version_dir": str(version)},
        "tracking": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_root": (root / "mlflow-artifacts").as_uri(),
        },
        "output_dir": str(out),
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return raw
