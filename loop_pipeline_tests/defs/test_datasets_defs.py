"""The datasets stage through real Dagster runs: training_datasets with its blocking expectation
checks, and an asset downstream of it that only runs on a version whose expectations pass."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import polars as pl
import pytest

from loop_pipeline.sim import SimulationConfig
from loop_pipeline.core.contracts import DatasetVersion
from loop_pipeline.core.storage import write_json_atomic
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.resources import LoopConfigs, StageResultIOManager
from loop_pipeline.runs import materialize_datasets, materialize_ingest, materialize_scoring
from loop_pipeline.settings import REPO_ROOT, LoopSettings
from loop_pipeline_tests.helpers import simulate_landing

SIMULATION = {"days": 2, "traces_per_day": 600, "start_date": "2026-11-01", "human_review_rate": 0.3}
CHECKS = {
    "training_datasets_have_min_rows_per_task",
    "training_datasets_have_no_sensitive_text",
    "training_datasets_holdout_disjoint_from_train",
    "training_datasets_label_shares_within_bounds",
    "training_datasets_have_no_empty_targets",
}
DOWNSTREAM = "fine_tune_on_datasets"


@dg.asset(name=DOWNSTREAM, ins={"training_datasets": dg.AssetIn(TRAINING_DATASETS)})
def fine_tune_on_datasets(training_datasets: DatasetVersion) -> dg.MaterializeResult:
    """Stands in for training: it gets the version training_datasets built as its input."""
    assert Path(training_datasets.path, "sft.parquet").is_file()
    return dg.MaterializeResult(metadata={"trained_on": training_datasets.version})


@dataclass
class Pipeline:
    home: Path
    instance: dg.DagsterInstance


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Iterator[Pipeline]:
    """Two simulated days ingested and scored through Dagster, once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("datasets_defs") / "loop_home"
        patch.setenv("LOOP_HOME", str(home))
        for name in (
            "LOOP_LANDING_URL",
            "LOOP_PG_URL",
            "LOOP_CONFIG_DIR",
            "DAGSTER_HOME",
            "LOOP_MLFLOW_TRACKING_URI",
            "LOOP_MLFLOW_ARTIFACT_ROOT",
        ):
            patch.delenv(name, raising=False)
        patch.chdir(REPO_ROOT)
        simulate_landing(SimulationConfig.from_mapping(SIMULATION), LoopSettings().paths.landing)
        with dg.instance_for_test() as instance:
            materialize_ingest(instance=instance)
            document = materialize_scoring(instance=instance)
            intent = document["thresholds"]["intent"]
            # A certified threshold or the acceptance fallback: either way outputs are kept.
            assert intent["rule"] in ("score", "acceptance") and intent["kept"] > 0
            yield Pipeline(home, instance)


def config_copy(tmp_path: Path, monkeypatch, old: str, new: str) -> Path:
    """configs/ copied with one line of datasets.yaml changed, and LOOP_CONFIG_DIR pointing at it."""
    folder = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", folder)
    text = (folder / "datasets.yaml").read_text(encoding="utf-8")
    assert old in text
    (folder / "datasets.yaml").write_text(text.replace(old, new), encoding="utf-8")
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(folder))
    return folder


def run_with_downstream(instance: dg.DagsterInstance, datasets_overrides: dict | None = None) -> dg.ExecuteInProcessResult:
    """training_datasets, its checks and the stand-in for training; ``datasets_overrides`` go over
    configs/datasets.yaml for this run (the configs resource, as in the launchpad)."""
    from loop_pipeline.definitions import build_defs

    defs = build_defs()
    configs = defs.resources["configs"]
    if datasets_overrides:
        configs = LoopConfigs(config_dir=configs.config_dir, overrides={"datasets": datasets_overrides})
    return dg.materialize(
        [*defs.assets, *defs.asset_checks, fine_tune_on_datasets],
        selection=dg.AssetSelection.assets(TRAINING_DATASETS, DOWNSTREAM),
        instance=instance,
        resources={**defs.resources, "configs": configs},
        raise_on_error=False,
    )


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def steps(result: dg.ExecuteInProcessResult, event_type: dg.DagsterEventType) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == event_type}


def test_a_failing_expectation_blocks_the_downstream_asset(pipeline):
    result = run_with_downstream(pipeline.instance, {"min_rows_per_task": 100000})

    # The version is still built; the expectation fails, and training does not run on it.
    (built,) = result.asset_materializations_for_node("training_datasets")
    checks = checks_of(result)
    assert set(checks) == CHECKS
    failed = checks["training_datasets_have_min_rows_per_task"]
    assert failed.passed is False and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "below 100000 sft rows" in failed.description and "intent" in failed.description
    assert failed.metadata["version"].value == built.metadata["version"].value
    assert failed.metadata["config/datasets"].value["min_rows_per_task"] == 100000
    assert all(checks[name].passed for name in CHECKS - {failed.check_name})
    # The failed blocking check fails its step and the run; the downstream step never starts.
    assert result.success is False
    assert steps(result, dg.DagsterEventType.STEP_FAILURE) == {"training_datasets_training_datasets_have_min_rows_per_task"}
    assert "training_datasets" in steps(result, dg.DagsterEventType.STEP_SUCCESS)
    assert DOWNSTREAM not in steps(result, dg.DagsterEventType.STEP_START)
    assert result.asset_materializations_for_node(DOWNSTREAM) == []


def test_passing_expectations_let_the_downstream_asset_run(pipeline):
    from mlflow.tracking import MlflowClient

    result = run_with_downstream(pipeline.instance)
    assert result.success
    checks = checks_of(result)
    assert set(checks) == CHECKS and all(e.passed for e in checks.values()), {
        n: e.description for n, e in checks.items()
    }
    (built,) = result.asset_materializations_for_node("training_datasets")
    metadata = {k: v.value for k, v in built.metadata.items()}
    version = metadata["version"]
    datasets_root = LoopSettings().paths.datasets
    assert not (datasets_root / "LATEST").exists()  # the version travels with the asset graph
    assert metadata["path"] == str(datasets_root / version)
    assert metadata["config/datasets"]["group_by"] == "user_id" and "config/redaction" in metadata
    assert metadata["rows"]["sft"] >= 20 and metadata["rows"]["holdout"] > 0
    assert metadata["rows_by_task_type"]["sft"] == {"intent": metadata["rows"]["sft"]}
    # Simulated traffic never went through the router: every row is direct, no local output left out.
    assert metadata["rows_by_route"] == {name: {"direct": n} for name, n in metadata["rows"].items() if n}
    assert metadata["local_excluded_unverified"] == 0 and metadata["shadow_agreement"] == {}
    (trained,) = result.asset_materializations_for_node(DOWNSTREAM)
    assert trained.metadata["trained_on"].value == version
    assert DOWNSTREAM in steps(result, dg.DagsterEventType.STEP_SUCCESS)

    # The asset logged the version to MLflow (SQLite under LOOP_HOME), once.
    client = MlflowClient(tracking_uri=LoopSettings().tracking().tracking_uri)
    run = client.get_run(metadata["mlflow_run_id"])
    assert run.data.tags["loop.dataset_version"] == version
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == sorted(
        f"{name}@{version}" for name in ("sft", "kto", "dpo", "holdout")
    )
    again = run_with_downstream(pipeline.instance)
    (rebuilt,) = again.asset_materializations_for_node("training_datasets")
    assert rebuilt.metadata["version"].value == version and rebuilt.metadata["new_version"].value is False
    assert rebuilt.metadata["mlflow_run_id"].value == metadata["mlflow_run_id"]
    assert again.asset_materializations_for_node(DOWNSTREAM)


def test_materialize_datasets_names_what_blocks_a_version(pipeline, tmp_path, monkeypatch):
    config_copy(tmp_path, monkeypatch, "max_label_share: 0.5 ", "max_label_share: 0.001 ")
    said: list[str] = []
    summary = materialize_datasets(progress=said.append, instance=pipeline.instance)
    assert (LoopSettings().paths.datasets / summary["version"] / "sft.parquet").is_file()
    assert set(summary["checks"]) == CHECKS
    assert list(summary["blocked_by"]) == ["training_datasets_label_shares_within_bounds"]
    assert "labels above 0%" in summary["blocked_by"]["training_datasets_label_shares_within_bounds"]
    assert summary["checks"]["training_datasets_label_shares_within_bounds"] is False
    assert any("BLOCKED by training_datasets_label_shares_within_bounds" in line for line in said)


def test_datasets_definitions_snapshot(pipeline):
    from loop_pipeline.definitions import build_defs

    defs = build_defs()
    graph = defs.resolve_asset_graph()
    node = graph.get(TRAINING_DATASETS)
    assert {k.to_user_string() for k in node.parent_keys} == {"scored_traces", "score_thresholds", "raw_traces"}
    specs = [spec for checks in defs.asset_checks for spec in checks.check_specs]
    ours = {spec.name: spec for spec in specs if spec.asset_key == TRAINING_DATASETS}
    assert set(ours) == CHECKS
    assert all(spec.blocking for spec in ours.values())
    assert {k.name for k in graph.asset_check_keys if k.asset_key == TRAINING_DATASETS} == CHECKS


def test_checks_report_sensitive_text_and_empty_targets_in_the_version_they_are_given(pipeline, tmp_path):
    """A version edited by hand (a leaked email, an empty target): the checks alone, on it."""
    root = LoopSettings().paths.datasets
    root.mkdir(parents=True, exist_ok=True)
    prompt = [{"role": "system", "content": "Classify."}, {"role": "user", "content": "write to jane.doe@example.com"}]
    answer = [{"role": "assistant", "content": "contact"}]
    tampered = {
        "sft": pl.DataFrame(
            {"trace_id": ["t1", "t2"], "task_type": ["intent"] * 2, "messages": [prompt + answer, prompt[:1] + [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]], "target_source": ["output"] * 2},
            schema_overrides={"messages": MESSAGES_DTYPE},
        ),
        "kto": pl.DataFrame(
            {"trace_id": ["t1"], "task_type": ["intent"], "prompt": [prompt], "completion": [answer], "label": [True]},
            schema_overrides={"prompt": MESSAGES_DTYPE, "completion": MESSAGES_DTYPE},
        ),
        "dpo": pl.DataFrame(
            schema={"trace_id": pl.String, "task_type": pl.String, "prompt": MESSAGES_DTYPE, "chosen": MESSAGES_DTYPE, "rejected": MESSAGES_DTYPE}
        ),
        "holdout": pl.DataFrame(
            {"trace_id": ["h1"], "task_type": ["intent"], "group_key": ["user_id:x"], "prompt": [[{"role": "user", "content": "set an alarm"}]], "reference": ["alarm"]},
            schema_overrides={"prompt": MESSAGES_DTYPE},
        ),
    }
    folder = root / "ds-tampered"
    folder.mkdir(exist_ok=True)
    for name, frame in tampered.items():
        frame.write_parquet(folder / f"{name}.parquet")
    # The checks read the version from the asset's value: store one naming the tampered folder.
    results = StageResultIOManager(results_dir=str(tmp_path / "results"))
    value = DatasetVersion(version="ds-tampered", path=str(folder), new_version=True, rows={n: f.height for n, f in tampered.items()})
    write_json_atomic(tmp_path / "results" / "training_datasets.json", value.model_dump(mode="json"))
    from loop_pipeline.definitions import build_defs

    defs = build_defs()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.checks_for_assets(TRAINING_DATASETS),
        instance=pipeline.instance,
        resources={**defs.resources, "results_io": results},
        raise_on_error=False,
    )
    assert result.asset_materializations_for_node("training_datasets") == []
    checks = checks_of(result)
    assert set(checks) == CHECKS
    sensitive = checks["training_datasets_have_no_sensitive_text"]
    assert sensitive.passed is False and sensitive.metadata["version"].value == "ds-tampered"
    assert sensitive.description == "2 text fields still match a PII / secret pattern"
    details = sensitive.metadata["details"].value
    assert details["sensitive"] == 2 and {e["trace_id"] for e in details["examples"]} == {"t1"}
    empty = checks["training_datasets_have_no_empty_targets"]
    assert empty.passed is False and [e["trace_id"] for e in empty.metadata["details"].value["examples"]] == ["t2"]
    assert checks["training_datasets_holdout_disjoint_from_train"].passed is True
