"""Versioned datasets from scored traces: redacted, split by group with a frozen holdout.

:func:`curate_examples` (:mod:`.curate`) decides, per trace, what it can teach (an SFT target, a
KTO label, a DPO pair) and where it belongs (train or holdout, :mod:`.split`). Train keeps the
traces that teach something, deduplicated; the holdout keeps every trace of its groups (the
traffic the router will see), each with a ``reference`` and its ``reference_source`` (review,
edit, accepted_scored; or, when nothing vouches for the output, frontier_unverified: a frontier
output as is, frontier_shadow: the shadow's frontier answer to a locally served request, or
local_unverified: a local answer no shadow checked, no reference);
:func:`build_datasets` (:mod:`.shape`) shapes the four datasets in trl's conversational formats;
:func:`write_version` (:mod:`.store`) stores them as Parquet with a dataset card under a
content-hash version that is never rewritten; :func:`build_dataset_version` (:mod:`.build`) does
all of it and logs the version to MLflow (:mod:`.lineage`). Configs are arguments: entry points
load ``configs/datasets.yaml``, ``redaction.yaml`` and ``dedup.yaml``.
"""

from loop_pipeline.core.datasets.build import build_dataset_version, config_hash
from loop_pipeline.core.datasets.config import GROUP_KEYS, DatasetConfig
from loop_pipeline.core.datasets.curate import (
    CURATED_SOURCES,
    EXPLICIT_POSITIVE,
    NEGATIVE_SIGNALS,
    REFERENCE_SOURCES,
    Curation,
    curate_examples,
)
from loop_pipeline.core.datasets.lineage import log_version_to_mlflow
from loop_pipeline.core.datasets.shape import DATASET_NAMES, build_datasets, counts_by_route, counts_by_task
from loop_pipeline.core.datasets.split import assign_groups
from loop_pipeline.core.datasets.store import ASSIGNMENTS_FILE, read_assignments, read_version, write_version

__all__ = [
    "ASSIGNMENTS_FILE",
    "CURATED_SOURCES",
    "DATASET_NAMES",
    "GROUP_KEYS",
    "NEGATIVE_SIGNALS",
    "REFERENCE_SOURCES",
    "Curation",
    "DatasetConfig",
    "EXPLICIT_POSITIVE",
    "assign_groups",
    "build_dataset_version",
    "build_datasets",
    "config_hash",
    "counts_by_route",
    "counts_by_task",
    "curate_examples",
    "log_version_to_mlflow",
    "read_assignments",
    "read_version",
    "write_version",
]
