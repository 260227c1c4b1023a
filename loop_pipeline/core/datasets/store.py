"""Content-addressed version folders: Parquet files, a dataset card, the stored holdout groups.

A version is the hash of its files' content: the same inputs give the same version, reused as is,
and a version folder is never rewritten. No pointer names a "latest" version: the asset graph
hands the version it built to what consumes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from loop_pipeline.core.datasets.shape import DATASET_NAMES, counts_by_task
from loop_pipeline.core.storage import sweep_stale_temporaries, temporary_directory_prefix, write_parquet_atomic

ASSIGNMENTS_FILE = "holdout_groups.parquet"


def _content_version(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8"))
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "ds-" + digest.hexdigest()[:16]


def _card(version: str, datasets: Mapping[str, pl.DataFrame], info: Mapping[str, Any]) -> str:
    counts = counts_by_task(datasets)
    tasks = sorted({t for per_task in counts.values() for t in per_task})
    header = ["---", "configs:"]
    for name in DATASET_NAMES:
        header += [f"- config_name: {name}", f"  data_files: {name}.parquet"]
    header += ["---", ""]
    table = ["| dataset | " + " | ".join(tasks) + " | total |", "|---|" + "---|" * (len(tasks) + 1)]
    for name in DATASET_NAMES:
        row = [str(counts[name].get(t, 0)) for t in tasks]
        table.append(f"| {name} | " + " | ".join(row) + f" | {datasets[name].height} |")
    body = [
        f"# loop_pipeline datasets {version}",
        "",
        "Built by loop_pipeline from production traces. Every row keeps its `trace_id` (lineage to the",
        "trace and its feedback). Text was redacted (typed placeholders) before writing. The holdout is",
        "split by group and frozen; train prompts were deduplicated (exact and MinHash near-duplicates)",
        "and train rows that near-duplicate a holdout prompt were dropped.",
        "",
        "- `sft`: `messages` (prompt + assistant target; the target is the human reviewer's label, the",
        "  user's edit, or the output when its quality score cleared the task threshold).",
        "- `kto`: `prompt`, `completion`, `label` (true: a target; false: an output with negative feedback).",
        "- `dpo`: `prompt`, `chosen` (the edit or review label), `rejected` (the original output).",
        "- `holdout`: every trace of the holdout groups, as production sent it (not filtered by feedback,",
        "  not deduplicated: a repeated prompt is repeated traffic): `prompt`, `frontier_output` (the",
        "  frontier's answer), `reference` and `reference_source`: `review` (a human reviewer's label, or",
        "  the output when the reviewer found it right), `edit` (the user's edit), `accepted_scored` (the",
        "  output, kept by the quality score threshold or its acceptance fallback; a locally served",
        "  answer also needs an explicit positive signal), `frontier_unverified` (nothing vouches for a",
        "  frontier output: the reference is that output as is), `frontier_shadow` (a locally served",
        "  answer nothing vouches for: the reference is the shadow's frontier answer), `local_unverified`",
        "  (a locally served answer nothing vouches for and no shadow checked: no reference); `sim_gold`",
        "  (the simulator's answer, for measuring only; null on real traffic). `frontier_output` is only",
        "  ever a frontier answer: for a request the router served locally, the shadow's answer or null.",
        "",
        *table,
        "",
        "```json",
        json.dumps(info, indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    return "\n".join(header + body)


def write_version(
    datasets: Mapping[str, pl.DataFrame],
    assignments: pl.DataFrame,
    root: Path,
    info: Mapping[str, Any],
) -> tuple[str, dict[str, Path], bool]:
    """Store the datasets under ``root/<version>`` (version = hash of their content).

    Returns the version, the path of each dataset, and whether the version was new. An existing
    version is never rewritten: the same inputs give the same version, reused as is.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=temporary_directory_prefix(root / "staging"), suffix=".tmp", dir=root))
    try:
        files = []
        for name in DATASET_NAMES:
            path = staging / f"{name}.parquet"
            write_parquet_atomic(path, datasets[name])
            files.append(path)
        version = _content_version(files)
        target = root / version
        created = not target.exists()
        if created:
            (staging / "README.md").write_text(_card(version, datasets, {"version": version, **info}), encoding="utf-8")
            staging.rename(target)
        # The holdout assignment only ever grows; storing it after the version keeps both in step.
        write_parquet_atomic(root / ASSIGNMENTS_FILE, assignments)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    sweep_stale_temporaries(root / "staging")  # the staging folders of killed builds
    return version, {name: root / version / f"{name}.parquet" for name in DATASET_NAMES}, created


def read_assignments(root: Path) -> pl.DataFrame | None:
    path = Path(root) / ASSIGNMENTS_FILE
    return pl.read_parquet(path) if path.is_file() else None


def read_version(folder: Path) -> dict[str, pl.DataFrame]:
    """The four datasets of one version folder."""
    folder = Path(folder)
    missing = [name for name in DATASET_NAMES if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise FileNotFoundError(f"dataset version {folder} lacks {', '.join(f'{m}.parquet' for m in missing)}")
    return {name: pl.read_parquet(folder / f"{name}.parquet") for name in DATASET_NAMES}
