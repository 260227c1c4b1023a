"""One call from scored traces to a stored (and optionally MLflow-logged) dataset version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import polars as pl

from loop_pipeline.config import ConfigModel
from loop_pipeline.core import dedup, redaction
from loop_pipeline.core.datasets.config import DatasetConfig
from loop_pipeline.core.datasets.curate import curate_examples
from loop_pipeline.core.datasets.lineage import log_version_to_mlflow
from loop_pipeline.core.datasets.shape import build_datasets, counts_by_route, counts_by_task
from loop_pipeline.core.datasets.store import read_assignments, write_version
from loop_pipeline.core.tracking import TrackingTarget


def config_hash(*configs: ConfigModel) -> str:
    """A short hash of the effective configuration values, recorded with each version."""
    text = json.dumps([c.model_dump(mode="json") for c in configs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def build_dataset_version(
    scored: pl.DataFrame | pl.LazyFrame,
    traces: pl.DataFrame | pl.LazyFrame,
    thresholds: Mapping[str, float | None],
    root: Path,
    *,
    config: DatasetConfig,
    redaction_config: redaction.RedactionConfig,
    dedup_config: dedup.DedupConfig,
    source_partitions: Sequence[str] = (),
    tracking: TrackingTarget | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Curate, shape, version and (with ``tracking``) log to MLflow; the summary `loop datasets
    build` prints. Returns version, created, paths, rows, counts, rows_by_route, router, redacted,
    dedup, mlflow_run_id (``router``: traces per route, local outputs left out unverified, the
    shadows' live agreement per task type; see :func:`~loop_pipeline.core.datasets.curate.curate_examples`)."""
    Path(root).mkdir(parents=True, exist_ok=True)  # the curation's temporary file goes there too
    curation = curate_examples(
        scored, traces, thresholds, read_assignments(root), config, redaction_config, dedup_config, progress, work_dir=root
    )
    datasets = build_datasets(curation.examples)
    by_route = counts_by_route(datasets, curation.examples)
    info = {
        "thresholds": dict(thresholds),
        "config_hash": config_hash(config, redaction_config, dedup_config),
        "source_partitions": list(source_partitions),
        "scored_traces": scored.height if isinstance(scored, pl.DataFrame) else scored.select(pl.len()).collect().item(),
        "holdout_groups": int(curation.assignments.filter(pl.col("split") == "holdout").height),
        **curation.stats,
        "rows_by_route": by_route,
    }
    version, paths, created = write_version(datasets, curation.assignments, root, info)
    run_id = log_version_to_mlflow(version, paths, tracking, info) if tracking is not None else None
    return {
        "version": version,
        "created": created,
        "paths": {name: str(path) for name, path in paths.items()},
        "rows": {name: frame.height for name, frame in datasets.items()},
        "counts": counts_by_task(datasets),
        "rows_by_route": by_route,
        "router": curation.stats["router"],
        "redacted": curation.stats["redacted"],
        "dedup": {k: v for k, v in curation.stats.items() if k.startswith("dedup_") or k.startswith("train_excluded")},
        "mlflow_run_id": run_id,
    }
