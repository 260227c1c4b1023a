"""Versioned datasets from scored traces: redacted, deduplicated, split by group with a frozen holdout.

``curate_examples`` decides, per trace, what it can teach (an SFT target, a KTO label, a DPO pair)
and where it belongs (train or holdout); ``build_datasets`` shapes the four datasets in trl's
conversational formats; ``write_version`` stores them as Parquet with a dataset card under a
content-hash version that is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from loop_pipeline.core import dedup, redaction
from loop_pipeline.core.scoring import keep_mask
from loop_pipeline.core.storage import write_parquet_atomic
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline.settings import ConfigError, load_config, reject_unknown_keys

DATASET_NAMES = ("sft", "kto", "dpo", "holdout")
GROUP_KEYS = ("user_id", "session_id", "prompt")
ASSIGNMENTS_FILE = "holdout_groups.parquet"
# The original output is a bad example when any of these is true (KTO's undesirable side).
NEGATIVE_SIGNALS = ("rejected", "hallucination", "edited", "thumbs_down", "heuristic_failed")


@dataclass(frozen=True)
class DatasetConfig:
    group_by: str = "user_id"
    holdout_fraction: float = 0.1
    include_edits: bool = True
    include_review_labels: bool = True
    min_rows_per_task: int = 20
    max_label_share: float = 0.5

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "DatasetConfig":
        reject_unknown_keys("datasets", raw, cls.__dataclass_fields__)
        config = cls(**raw)
        if config.group_by not in GROUP_KEYS:
            raise ConfigError(f"datasets.group_by: one of {GROUP_KEYS}, got {config.group_by!r}")
        if not 0.0 < config.holdout_fraction < 1.0:
            raise ConfigError(f"datasets.holdout_fraction: in (0, 1), got {config.holdout_fraction}")
        if not 0.0 < config.max_label_share <= 1.0:
            raise ConfigError(f"datasets.max_label_share: in (0, 1], got {config.max_label_share}")
        if not isinstance(config.min_rows_per_task, int) or config.min_rows_per_task < 0:
            raise ConfigError("datasets.min_rows_per_task: a non-negative integer")
        return config

    @classmethod
    def load(cls) -> "DatasetConfig":
        return cls.from_mapping(load_config("datasets"))


@dataclass
class Curation:
    examples: pl.DataFrame
    assignments: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def _last_user_message(messages: pl.Expr) -> pl.Expr:
    return (
        messages.list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.last()
        .fill_null("")
    )


def _assistant(text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), text.alias("content"))).cast(MESSAGES_DTYPE)


def _pseudonyms(ids: pl.Series) -> pl.Series:
    """sha256 (first 16 hex digits) of each id: a user or session id can be an email address or a
    phone number, and group keys are written to the holdout and the stored assignment. hashlib, not
    polars' hash: stored keys must match across processes and library versions."""
    distinct = ids.drop_nulls().unique().to_list()
    digests = [hashlib.sha256(value.encode("utf-8")).hexdigest()[:16] for value in distinct]
    return ids.replace_strict(dict(zip(distinct, digests)), default=None, return_dtype=pl.String)


def _group_key(frame: pl.DataFrame, config: DatasetConfig) -> pl.Expr:
    prompt_key = pl.lit("prompt:") + dedup.normalize_text(pl.col("prompt_text"))
    if config.group_by == "prompt":
        return prompt_key
    pseudonym = pl.lit(_pseudonyms(frame.get_column(config.group_by)))
    return pl.when(pseudonym.is_not_null()).then(pl.lit(f"{config.group_by}:") + pseudonym).otherwise(prompt_key)


def _hash_split(keys: pl.Series, fraction: float) -> pl.Series:
    """Holdout draw for groups seen for the first time: a seeded hash of the key (deterministic
    across processes for the pinned polars); the stored assignment keeps it frozen afterwards."""
    bucket = (keys.hash(seed=17) % 1_000_000).cast(pl.Float64) / 1_000_000
    return pl.select(pl.when(bucket < fraction).then(pl.lit("holdout")).otherwise(pl.lit("train"))).to_series().alias("split")


def assign_groups(groups: pl.Series, previous: pl.DataFrame | None, fraction: float) -> pl.DataFrame:
    """Every group's split: stored assignments win; new groups are drawn by hash and stored too."""
    distinct = groups.unique().sort()
    known = previous if previous is not None else pl.DataFrame(schema={"group_key": pl.String, "split": pl.String})
    new = distinct.filter(~distinct.is_in(known.get_column("group_key").implode()))
    fresh = pl.DataFrame({"group_key": new, "split": _hash_split(new, fraction)})
    return pl.concat([known.select("group_key", "split"), fresh]).sort("group_key")


def curate_examples(
    scored: pl.DataFrame,
    traces: pl.DataFrame,
    thresholds: Mapping[str, float | None],
    previous_assignments: pl.DataFrame | None = None,
    config: DatasetConfig | None = None,
    redaction_config: redaction.RedactionConfig | None = None,
    dedup_config: dedup.DedupConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> Curation:
    """One row per usable trace: redacted prompt, target, KTO label, DPO pair, split."""
    say = progress or (lambda _: None)
    config = config or DatasetConfig.load()
    redaction_config = redaction_config or redaction.RedactionConfig.load()
    dedup_config = dedup_config or dedup.DedupConfig.load()
    # Sorted: the join's row order is unspecified, and deduplication breaks score ties by row order,
    # so without it the same traces could give another version.
    frame = scored.join(
        traces.select("trace_id", "messages", "session_id", "prompt_version"), on="trace_id", how="inner"
    ).sort("trace_id")
    review_bad = pl.col("review_good").eq(False).fill_null(False)
    use_review = review_bad & pl.col("review_label").is_not_null() & pl.lit(config.include_review_labels)
    use_edit = pl.col("edited") & pl.col("user_edit").is_not_null() & pl.lit(config.include_edits)
    keep_output = keep_mask(scored, thresholds) & ~review_bad
    frame = frame.with_columns(
        pl.when(use_review).then(pl.lit("review")).when(use_edit).then(pl.lit("edit")).when(keep_output).then(pl.lit("output")).alias("target_source"),
        (pl.any_horizontal([pl.col(n) for n in NEGATIVE_SIGNALS]) | review_bad).alias("output_is_bad"),
    ).with_columns(
        pl.when(pl.col("target_source") == "review")
        .then(pl.col("review_label"))
        .when(pl.col("target_source") == "edit")
        .then(pl.col("user_edit"))
        .when(pl.col("target_source") == "output")
        .then(pl.col("output"))
        .alias("target"),
    )
    # Only traces that teach something: a target, or a bad output (a KTO negative).
    frame = frame.filter(pl.col("target").is_not_null() | pl.col("output_is_bad"))
    frame, redacted = redaction.redact_frame(
        frame, text_columns=["output", "target", "user_edit", "review_label"], message_columns=["messages"], config=redaction_config
    )
    say(f"redacted: {sum(redacted.values())} replacements {redacted}")
    frame = frame.with_columns(_last_user_message(pl.col("messages")).alias("prompt_text"))
    frame = frame.with_columns(_group_key(frame, config).alias("group_key"))
    assignments = assign_groups(frame.get_column("group_key"), previous_assignments, config.holdout_fraction)
    frame = frame.join(assignments, on="group_key", how="left", maintain_order="left")

    # Best copy first: deduplicate keeps the highest score among exact and near duplicates.
    score = pl.col("p_good").fill_null(0.0)
    frame = frame.with_columns(score.alias("_score"))
    parts, stats = [], {"redacted": redacted}
    for split in ("train", "holdout"):
        part = frame.filter(pl.col("split") == split)
        kept, dedup_stats = dedup.deduplicate(part, "trace_id", "prompt_text", "_score", dedup_config)
        stats[f"dedup_{split}"] = dedup_stats
        parts.append(kept)
    train, holdout = parts
    leaks = dedup.overlapping_ids(train, holdout, "trace_id", "prompt_text", dedup_config)
    stats["train_excluded_near_holdout"] = leaks.height
    train = train.join(leaks.select("trace_id"), on="trace_id", how="anti", maintain_order="left")
    examples = pl.concat([train, holdout]).drop("_score")
    stats["examples"] = examples.height
    say(
        f"examples: {train.height} train, {holdout.height} holdout "
        f"({leaks.height} train rows dropped as near-duplicates of holdout prompts)"
    )
    return Curation(examples, assignments, stats)


def build_datasets(examples: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """sft (messages), kto (prompt, completion, label), dpo (prompt, chosen, rejected), holdout."""
    train = examples.filter(pl.col("split") == "train")
    prompt = pl.col("messages").alias("prompt")
    sft = train.filter(pl.col("target").is_not_null()).select(
        "trace_id",
        "task_type",
        pl.concat_list(pl.col("messages"), _assistant(pl.col("target"))).alias("messages"),
        "target_source",
    )
    kto_good = train.filter(pl.col("target").is_not_null()).select(
        "trace_id", "task_type", prompt, _assistant(pl.col("target")).alias("completion"), pl.lit(True).alias("label")
    )
    kto_bad = train.filter(pl.col("output_is_bad")).select(
        "trace_id", "task_type", prompt, _assistant(pl.col("output")).alias("completion"), pl.lit(False).alias("label")
    )
    kto = pl.concat([kto_good, kto_bad]).sort("trace_id", "label")
    dpo = train.filter(
        pl.col("target_source").is_in(["edit", "review"]) & (pl.col("target") != pl.col("output"))
    ).select(
        "trace_id",
        "task_type",
        prompt,
        _assistant(pl.col("target")).alias("chosen"),
        _assistant(pl.col("output")).alias("rejected"),
    )
    holdout = examples.filter((pl.col("split") == "holdout") & pl.col("target").is_not_null()).select(
        "trace_id",
        "task_type",
        "group_key",
        prompt,
        pl.col("target").alias("reference"),
        pl.col("target_source").alias("reference_source"),
        pl.col("output").alias("frontier_output"),
        # Gold where known: the human reviewer's label (the simulator's gold is kept apart, for measuring).
        pl.when(pl.col("reviewed")).then(pl.col("review_label")).alias("gold"),
        "sim_gold",
    )
    return {
        "sft": sft.sort("trace_id"),
        "kto": kto,
        "dpo": dpo.sort("trace_id"),
        "holdout": holdout.sort("trace_id"),
    }


def counts_by_task(datasets: Mapping[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, frame in datasets.items():
        grouped = frame.group_by("task_type").len().sort("task_type")
        out[name] = {str(task): int(n) for task, n in grouped.iter_rows()}
    return out


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
        "trace and its feedback). Text was redacted (typed placeholders) before writing; prompts were",
        "deduplicated (exact and MinHash near-duplicates); the holdout is split by group and frozen.",
        "",
        "- `sft`: `messages` (prompt + assistant target; the target is the human reviewer's label, the",
        "  user's edit, or the output when its quality score cleared the task threshold).",
        "- `kto`: `prompt`, `completion`, `label` (true: a target; false: an output with negative feedback).",
        "- `dpo`: `prompt`, `chosen` (the edit or review label), `rejected` (the original output).",
        "- `holdout`: `prompt`, `reference`, `frontier_output`, `gold` (human review), `sim_gold`.",
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
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
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
        (root / "LATEST").write_text(version + "\n", encoding="utf-8")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return version, {name: root / version / f"{name}.parquet" for name in DATASET_NAMES}, created


def read_assignments(root: Path) -> pl.DataFrame | None:
    path = Path(root) / ASSIGNMENTS_FILE
    return pl.read_parquet(path) if path.is_file() else None


def config_hash(*configs: object) -> str:
    text = json.dumps([asdict(c) if hasattr(c, "__dataclass_fields__") else c for c in configs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def log_version_to_mlflow(version: str, paths: Mapping[str, Path], tracking, info: Mapping[str, Any]) -> str:
    """One MLflow run per dataset version with each dataset as an input; reused if already logged."""
    import mlflow

    client = tracking.client()
    experiment_id = tracking.experiment_id(client, "loop-datasets")
    existing = client.search_runs([experiment_id], filter_string=f"tags.`loop.dataset_version` = '{version}'", max_results=1)
    if existing:
        return existing[0].info.run_id
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking.tracking_uri)
    try:
        with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment_id, run_name=f"datasets-{version}") as run:
            # A local path matches two equivalent MLflow source types; it says so once per dataset.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            mlflow.set_tags({"loop.kind": "dataset_version", "loop.dataset_version": version})
            mlflow.log_params({k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))})
            for name, path in paths.items():
                frame = pl.read_parquet(path)
                # MLflow's digest and schema want flat columns: conversations go in as JSON text.
                flat = frame.select(
                    pl.col(c).list.eval(pl.element().struct.json_encode()).list.join("\n") if frame.schema[c].is_nested() else pl.col(c)
                    for c in frame.columns
                )
                dataset = mlflow.data.from_pandas(
                    flat.to_pandas(),
                    source=str(path),
                    name=f"{name}@{version}",
                )
                mlflow.log_input(dataset, context=name)
                mlflow.log_metric(f"rows_{name}", frame.height)
            mlflow.log_artifact(str(Path(next(iter(paths.values()))).parent / "README.md"))
            return run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous_uri)


def build_dataset_version(
    scored: pl.DataFrame,
    traces: pl.DataFrame,
    thresholds: Mapping[str, float | None],
    root: Path,
    source_partitions: list[str] | None = None,
    tracking=None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Curate, shape, version and (optionally) log to MLflow; the summary `loop datasets build` prints."""
    config = DatasetConfig.load()
    redaction_config = redaction.RedactionConfig.load()
    dedup_config = dedup.DedupConfig.load()
    curation = curate_examples(
        scored, traces, thresholds, read_assignments(root), config, redaction_config, dedup_config, progress
    )
    datasets = build_datasets(curation.examples)
    info = {
        "thresholds": dict(thresholds),
        "config_hash": config_hash(config, redaction_config, dedup_config),
        "source_partitions": source_partitions or [],
        "scored_traces": scored.height,
        "holdout_groups": int(curation.assignments.filter(pl.col("split") == "holdout").height),
        **curation.stats,
    }
    version, paths, created = write_version(datasets, curation.assignments, root, info)
    run_id = log_version_to_mlflow(version, paths, tracking, info) if tracking is not None else None
    return {
        "version": version,
        "created": created,
        "paths": {name: str(path) for name, path in paths.items()},
        "rows": {name: frame.height for name, frame in datasets.items()},
        "counts": counts_by_task(datasets),
        "redacted": curation.stats["redacted"],
        "dedup": {k: v for k, v in curation.stats.items() if k.startswith("dedup_") or k.startswith("train_excluded")},
        "mlflow_run_id": run_id,
    }
