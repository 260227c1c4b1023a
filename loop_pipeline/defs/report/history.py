"""The rounds as the Dagster instance recorded them: each holdout_eval materialization with its
gate checks, the training_datasets materialization of its dataset version (and that version's
blocking dataset checks), and the registered_model materialization that registered its candidate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterator, Optional

import dagster as dg
import polars as pl

from loop_pipeline.core.report import RoundRecord, label_counts
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.defs.evaluation import checks as evaluation_checks
from loop_pipeline.defs.evaluation.assets import DATASET_CHECKS, HOLDOUT_EVAL, REGISTERED_MODEL

PAGE = 500
GATE_CHECKS = tuple(
    sorted(spec.name for d in dg.load_asset_checks_from_modules([evaluation_checks]) for spec in d.check_specs if spec.blocking)
)


def materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> Iterator[dg.EventLogRecord]:
    """Every materialization of ``key``, oldest first."""
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=PAGE, cursor=cursor, ascending=True)
        yield from page.records
        if not page.has_more:
            return
        cursor = page.cursor


def values(record: dg.EventLogRecord) -> dict[str, Any]:
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _check_history(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> list:
    return [r for r in instance.event_log_storage.get_asset_check_execution_history(key, limit=10_000) if r.evaluation is not None]


def gate_failures(instance: dg.DagsterInstance) -> dict[tuple[str, Any], dict[str, str]]:
    """Failed gate checks by the materialization they judged: (``storage``, its storage id) when the
    evaluation names its target, else (``run``, the run id) of the run that checked it."""
    failed: dict[tuple[str, Any], dict[str, str]] = {}
    for name in GATE_CHECKS:
        for record in _check_history(instance, dg.AssetCheckKey(HOLDOUT_EVAL, name)):
            evaluation = record.evaluation
            if evaluation.passed:
                continue
            target = evaluation.target_materialization_data
            where = ("storage", target.storage_id) if target is not None else ("run", record.run_id)
            failed.setdefault(where, {})[name] = evaluation.description or "failed"
    return failed


def dataset_check_failures(instance: dg.DagsterInstance) -> dict[str, dict[str, str]]:
    """Per dataset version: the blocking dataset checks whose latest result for it failed."""
    latest: dict[str, dict[str, Any]] = {}
    for name in DATASET_CHECKS:
        for record in _check_history(instance, dg.AssetCheckKey(TRAINING_DATASETS, name)):  # newest first
            checked = record.evaluation.metadata.get("version")
            if checked is not None:
                latest.setdefault(str(checked.value), {}).setdefault(name, record.evaluation)
    return {
        version: {name: e.description or "failed" for name, e in by_name.items() if not e.passed}
        for version, by_name in latest.items()
    }


def champions(instance: dg.DagsterInstance) -> dict[tuple[str, str], str]:
    """registered_model materializations: (``eval``, the evaluation's MLflow run id) and (``run``,
    the Dagster run id) -> the champion version it left."""
    found: dict[tuple[str, str], str] = {}
    for record in materializations(instance, REGISTERED_MODEL):
        meta = values(record)
        champion = meta.get("champion")
        if champion is None:
            continue
        eval_run = (meta.get("tags") or {}).get("eval_run_id")
        if eval_run:
            found[("eval", eval_run)] = str(champion)
        found[("run", record.run_id)] = str(champion)
    return found


def dataset_versions(instance: dg.DagsterInstance) -> dict[str, dict[str, Any]]:
    """Dataset version -> its latest training_datasets metadata."""
    return {str(values(r)["version"]): values(r) for r in materializations(instance, TRAINING_DATASETS) if "version" in values(r)}


def _sft(meta: dict[str, Any], classification: list[str]) -> dict[str, Any]:
    rows = meta.get("rows") or {}
    sft_path = Path(str(meta.get("path", ""))) / "sft.parquet"
    labels = label_counts(pl.read_parquet(sft_path, columns=["task_type", "messages"]), classification) if sft_path.is_file() else {}
    return {"sft_rows": rows.get("sft"), "sft_rows_by_task": (meta.get("rows_by_task_type") or {}).get("sft", {}), "label_counts": labels}


def _aggregate_out_of_scope(tasks: dict[str, dict]) -> Optional[float]:
    rows = [(t.get("out_of_scope_escalated"), t.get("out_of_scope_n") or 0) for t in tasks.values()]
    n = sum(count for value, count in rows if value is not None)
    return sum(value * count for value, count in rows if value is not None) / n if n else None


def _target_agreement(meta: dict[str, Any]) -> Optional[float]:
    config = meta.get("config/evaluation") or {}
    return config.get("target_agreement")


def round_records(instance: dg.DagsterInstance, classification: list[str]) -> list[RoundRecord]:
    """One record per holdout_eval materialization, oldest first. ``classification``: the task
    types whose sft label mix is compared between rounds."""
    gates, dataset_failures = gate_failures(instance), dataset_check_failures(instance)
    registered, versions = champions(instance), dataset_versions(instance)
    records = []
    for number, record in enumerate(materializations(instance, HOLDOUT_EVAL), start=1):
        meta = values(record)
        version = str(meta.get("dataset_version"))
        tasks = meta.get("task_figures") or {}
        failed = {**gates.get(("storage", record.storage_id), {}), **(gates.get(("run", record.run_id), {}) if record.run_id else {})}
        failed |= {f"training_datasets:{name}": why for name, why in dataset_failures.get(version, {}).items()}
        champion = registered.get(("eval", str(meta.get("mlflow_run_id")))) or (registered.get(("run", record.run_id)) if record.run_id else None)
        promoted = bool(meta.get("promote"))
        records.append(RoundRecord(
            round=number,
            evaluated_at=dt.datetime.fromtimestamp(record.timestamp, dt.timezone.utc).isoformat(),
            run_id=record.run_id,
            dataset_version=version,
            candidate=str(meta.get("candidate")),
            target_agreement=_target_agreement(meta),
            holdout_coverage=meta.get("coverage"),
            holdout_out_of_scope_escalated=_aggregate_out_of_scope(tasks),
            holdout_served_agreement={name: t.get("served_agreement") for name, t in tasks.items()},
            holdout_cost_ratio=meta.get("blended_cost_ratio"),
            promoted=promoted,
            champion_version=champion if promoted else None,
            failed_checks=failed,
            **(_sft(versions[version], classification) if version in versions else {}),
        ))
    return records
