"""Data-quality expectations on a dataset version, run with Great Expectations.

Each suite returns an :class:`Outcome`; the Dagster asset checks on ``training_datasets`` turn them
into blocking check results. great_expectations is imported here only, inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from loop_pipeline.core import dedup, redaction
from loop_pipeline.core.datasets.config import DatasetConfig
from loop_pipeline.core.datasets.curate import last_user_message
from loop_pipeline.core.tasks import TasksConfig


@dataclass
class Outcome:
    passed: bool
    description: str
    details: dict[str, Any] = field(default_factory=dict)


class _Validator:
    """One ephemeral GX context; each frame becomes a whole-dataframe batch of a pandas asset."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("loop_datasets")
        self._assets = 0

    def validate(self, frame: pl.DataFrame, expectation, index_column: str | None = None):
        self._assets += 1
        asset = self.source.add_dataframe_asset(f"frame_{self._assets}")
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame.to_pandas()}
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if index_column:
            result_format["unexpected_index_column_names"] = [index_column]
        return batch.validate(expectation, result_format=result_format)


def _plain(value: Any) -> Any:
    """numpy scalars (GX reports pandas values) as Python ones: check metadata must be JSON."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _unexpected(result, limit: int = 20) -> list:
    found = result.result.get("unexpected_index_list") or result.result.get("partial_unexpected_list") or []
    return [{k: _plain(v) for k, v in x.items()} if isinstance(x, Mapping) else _plain(x) for x in found[:limit]]


def min_rows_per_task(datasets: Mapping[str, pl.DataFrame], config: DatasetConfig, validator: _Validator | None = None) -> Outcome:
    validator = validator or _Validator()
    counts = datasets["sft"].group_by("task_type").len("rows").sort("task_type")
    if counts.height == 0:
        return Outcome(False, "the sft dataset is empty", {"rows_by_task": {}})
    result = validator.validate(
        counts, validator.gx.expectations.ExpectColumnValuesToBeBetween(column="rows", min_value=config.min_rows_per_task), "task_type"
    )
    rows = {t: int(n) for t, n in counts.iter_rows()}
    return Outcome(
        bool(result.success),
        f"every task type has >= {config.min_rows_per_task} sft rows" if result.success else f"task types below {config.min_rows_per_task} sft rows: {[r['task_type'] for r in _unexpected(result)]}",
        {"rows_by_task": rows},
    )


def _text_rows(datasets: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Every text field of every dataset as (dataset, trace_id, text) rows."""
    parts = []
    for name, frame in datasets.items():
        for column, dtype in frame.schema.items():
            if column in ("trace_id", "task_type", "group_key", "target_source", "reference_source"):
                continue
            if dtype == pl.String:
                text = frame.select(pl.lit(name).alias("dataset"), "trace_id", pl.col(column).alias("text"))
            elif isinstance(dtype, pl.List):
                text = frame.select(
                    pl.lit(name).alias("dataset"),
                    "trace_id",
                    pl.col(column).list.eval(pl.element().struct.field("content")).list.join("\n").alias("text"),
                )
            else:
                continue
            parts.append(text.filter(pl.col("text").is_not_null()))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"dataset": pl.String, "trace_id": pl.String, "text": pl.String})


def no_sensitive_text(
    datasets: Mapping[str, pl.DataFrame], redaction_config: redaction.RedactionConfig, validator: _Validator | None = None
) -> Outcome:
    validator = validator or _Validator()
    rows = _text_rows(datasets).with_columns(redaction.find_sensitive_expr(pl.col("text"), redaction_config).alias("sensitive"))
    if rows.height == 0:
        return Outcome(False, "no text field in any dataset: nothing to check for PII or secrets", {"texts_checked": 0})
    result = validator.validate(
        rows.select("trace_id", "dataset", "sensitive"),
        validator.gx.expectations.ExpectColumnValuesToBeInSet(column="sensitive", value_set=[False]),
        "trace_id",
    )
    count = int(result.result.get("unexpected_count") or 0)
    return Outcome(
        bool(result.success),
        "no PII or secret pattern in any text field" if result.success else f"{count} text fields still match a PII / secret pattern",
        {"texts_checked": rows.height, "sensitive": count, "examples": _unexpected(result)},
    )


def holdout_disjoint(
    datasets: Mapping[str, pl.DataFrame], dedup_config: dedup.DedupConfig, validator: _Validator | None = None
) -> Outcome:
    validator = validator or _Validator()

    def prompts(frame: pl.DataFrame, column: str) -> pl.DataFrame:
        return frame.select("trace_id", last_user_message(pl.col(column)).alias("prompt_text")).unique(
            "trace_id", keep="first", maintain_order=True
        )

    train = pl.concat(
        [prompts(datasets["sft"], "messages"), prompts(datasets["kto"], "prompt"), prompts(datasets["dpo"], "prompt")]
    ).unique("trace_id", keep="first", maintain_order=True)
    holdout = prompts(datasets["holdout"], "prompt")
    if train.height == 0 or holdout.height == 0:
        empty = "holdout" if holdout.height == 0 else "training set"
        return Outcome(False, f"the {empty} has no prompts: nothing to check for overlap", {"train_prompts": train.height, "holdout_prompts": holdout.height})
    leaks = dedup.overlapping_ids(train, holdout, "trace_id", "prompt_text", dedup_config)
    result = validator.validate(leaks.select("trace_id"), validator.gx.expectations.ExpectTableRowCountToEqual(value=0))
    return Outcome(
        bool(result.success),
        "no train prompt is an exact or near duplicate of a holdout prompt" if result.success else f"{leaks.height} train prompts overlap the holdout",
        {"train_prompts": train.height, "holdout_prompts": holdout.height, "overlapping": leaks.get_column("trace_id").head(20).to_list()},
    )


def _label_shares_scope(datasets: Mapping[str, pl.DataFrame], classification: list[str]) -> tuple[list[str], list[str]]:
    """Configured classification task types with sft rows, and those with holdout traffic but no sft row."""
    in_sft = set(datasets["sft"].get_column("task_type").unique().to_list())
    in_holdout = set(datasets["holdout"].get_column("task_type").unique().to_list())
    checked = [t for t in classification if t in in_sft]
    untrained = [t for t in classification if t in in_holdout and t not in in_sft]
    return checked, untrained


def label_shares_within_bounds(
    datasets: Mapping[str, pl.DataFrame], tasks: TasksConfig, config: DatasetConfig, validator: _Validator | None = None
) -> Outcome:
    """No label above ``max_label_share`` of its classification task's sft rows.

    Never passes with nothing to check: with classification task types in tasks.yaml, it fails when
    none of them has an sft row, and when one has holdout traffic but no sft row (the traffic has it,
    training does not). A configured type with neither sft nor holdout rows is not this version's
    traffic (listed in details). Not applicable, and says so, only when tasks.yaml configures no
    classification task type at all."""
    classification = sorted(name for name, spec in tasks.tasks.items() if spec.kind == "classification")
    if not classification:
        return Outcome(True, "not applicable: tasks.yaml configures no classification task type", {"applicable": False})
    checked, untrained = _label_shares_scope(datasets, classification)
    absent = sorted(set(classification) - set(checked) - set(untrained))
    scope = {"applicable": True, "checked_task_types": checked, "no_sft_rows": untrained, "absent_task_types": absent}
    if not checked:
        return Outcome(
            False,
            f"no sft row of any classification task type configured in tasks.yaml ({', '.join(classification)}): "
            "no label shares to check (remove them from tasks.yaml if this traffic has none)",
            scope,
        )
    if untrained:
        return Outcome(False, f"classification task types with holdout traffic but no sft rows: {', '.join(untrained)}", scope)
    validator = validator or _Validator()
    target = pl.col("messages").list.last().struct.field("content")
    shares = (
        datasets["sft"]
        .filter(pl.col("task_type").is_in(checked))
        .group_by("task_type", target.alias("label"))
        .len("rows")
        .with_columns((pl.col("rows") / pl.col("rows").sum().over("task_type")).alias("share"))
        .with_columns(pl.concat_str("task_type", pl.lit("/"), "label").alias("task_label"))
        .sort("share", descending=True)
    )
    result = validator.validate(
        shares.select("task_label", "share"),
        validator.gx.expectations.ExpectColumnValuesToBeBetween(column="share", max_value=config.max_label_share),
        "task_label",
    )
    top = {r["task_label"]: round(r["share"], 4) for r in shares.head(5).iter_rows(named=True)}
    return Outcome(
        bool(result.success),
        f"no label above {config.max_label_share:.0%} of its task's sft rows ({', '.join(checked)})" if result.success else f"labels above {config.max_label_share:.0%}: {[r['task_label'] for r in _unexpected(result)]}",
        {**scope, "top_shares": top},
    )


def no_empty_targets(datasets: Mapping[str, pl.DataFrame], validator: _Validator | None = None) -> Outcome:
    validator = validator or _Validator()
    holdout = datasets["holdout"]
    if "reference_source" in holdout.columns:  # a local answer nothing vouches for has no reference, by design
        holdout = holdout.filter(pl.col("reference_source") != "local_unverified")
    targets = pl.concat(
        [
            datasets["sft"].select("trace_id", pl.col("messages").list.last().struct.field("content").alias("target")),
            holdout.select("trace_id", pl.col("reference").alias("target")),
        ]
    ).with_columns(pl.col("target").fill_null("").str.strip_chars().str.len_chars().alias("length"))
    if targets.height == 0:
        return Outcome(False, "no sft target and no holdout reference: nothing to check", {"targets": 0, "empty": 0})
    result = validator.validate(
        targets.select("trace_id", "length"),
        validator.gx.expectations.ExpectColumnValuesToBeBetween(column="length", min_value=1),
        "trace_id",
    )
    count = int(result.result.get("unexpected_count") or 0)
    return Outcome(
        bool(result.success),
        "every sft target and holdout reference is non-empty" if result.success else f"{count} empty targets",
        {"targets": targets.height, "empty": count, "examples": _unexpected(result)},
    )
