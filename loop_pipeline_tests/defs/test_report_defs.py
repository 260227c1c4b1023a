"""loop_report on a real Dagster instance: three rounds recorded as holdout_eval / training_datasets /
registered_model materializations carrying the metadata those assets write (holdout_eval's from its
own ``evaluation_metadata`` of real EvaluationOutcomes), a failed gate check on the third; the
router's traces (written by the router's record code) ingested by the real ingest assets; the
demo's replay table. Then `loop report` materializes loop_report: the table, the flags with their
causes, the PNG, the MLflow run and the Dagster metadata."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.evaluation import EvalConfig, RegisteredModel
from loop_pipeline.core.evaluation.gate import GateDecision, GatePart
from loop_pipeline.core.report import EXPERIMENT, REPLAY_TABLE
from loop_pipeline.core.storage import write_parquet_atomic
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.defs.evaluation.assets import HOLDOUT_EVAL, REGISTERED_MODEL, evaluation_metadata
from loop_pipeline.defs.report import LOOP_REPORT
from loop_pipeline.defs.report.run import materialize_report
from loop_pipeline.resources import LoopConfigs
from loop_pipeline.runs import materialize_ingest, open_instance
from loop_pipeline.settings import LoopSettings
from loop_pipeline_tests.helpers import REPO_CONFIGS, last_json_line
from loop_pipeline_tests.report_traffic import records, replay_frame, round_traffic
from loop_pipeline_tests.router.trained_champions import passed_outcome

DAY = "2026-11-02"
CHECK = "holdout_eval_reaches_target_at_min_coverage"


def _dataset(instance, home: Path, version: str, labels: dict[str, int]) -> None:
    """A version folder with its sft.parquet, and the training_datasets materialization naming it."""
    folder = home / "datasets" / version
    targets = [label for label, n in labels.items() for _ in range(n)]
    sft = pl.DataFrame({
        "trace_id": [f"{version}-{i}" for i in range(len(targets))], "task_type": ["intent"] * len(targets),
        "messages": [[{"role": "user", "content": "q"}, {"role": "assistant", "content": t}] for t in targets],
    })
    write_parquet_atomic(folder / "sft.parquet", sft)
    instance.report_runless_asset_event(dg.AssetMaterialization(TRAINING_DATASETS, metadata={
        "version": version, "path": dg.MetadataValue.path(str(folder)), "rows": dg.MetadataValue.json({"sft": sft.height}),
        "rows_by_task_type": dg.MetadataValue.json({"sft": {"intent": sft.height}}),
    }))


def _evaluated(instance, version: str, run: str, coverage: float, promote: bool) -> int:
    """holdout_eval's metadata for an outcome at ``coverage``; returns the materialization's storage id."""
    trained = TrainedAdapter(adapter_path=f"/runs/{run}", base_model="tiny", base_model_path="/tiny", dataset_version=version,
                             dataset_path=f"/datasets/{version}", train_config="test", steps=10, sft_steps=10, negative_stage="none",
                             negative_steps=0, tokens=100, tokens_per_s=10.0, seconds_per_step=0.1, train_seconds=1.0, peak_rss_mb=1.0,
                             dtype="float32", device="cpu", system_prompt="drop", mlflow_run_id=f"train-{run}")
    outcome = passed_outcome(trained, 0.5)
    task = outcome.report.tasks["classify"].model_copy(update={"coverage": coverage, "out_of_scope_n": 20, "out_of_scope_escalated": 0.9})
    report = outcome.report.model_copy(update={"coverage": coverage, "tasks": {"classify": task}})
    refused = GatePart(passed=False, reasons=[f"classify: coverage {coverage:.1%} is below the minimum"])
    decision = outcome.decision if promote else GateDecision(promote=False, parts=outcome.decision.parts.model_copy(
        update={"target_at_min_coverage": refused}))
    outcome = outcome.model_copy(update={"report": report, "decision": decision, "mlflow_run_id": f"eval-{run}"})
    metadata = {**evaluation_metadata(outcome), **LoopConfigs(config_dir=str(REPO_CONFIGS)).metadata(EvalConfig.from_yaml(REPO_CONFIGS / "evaluation.yaml"))}
    instance.report_runless_asset_event(dg.AssetMaterialization(HOLDOUT_EVAL, metadata=metadata))
    return instance.fetch_materializations(HOLDOUT_EVAL, limit=1).records[0].storage_id


def _registered(instance, run: str, champion: str, previous: str | None) -> None:
    move = RegisteredModel(model_name="loop-candidate", champion=champion, previous=previous, reason="gate passed", unchanged=False,
                           source=f"models:/m-{run}", tags={"eval_run_id": f"eval-{run}", "dataset_version": run})
    metadata = {k: v for k, v in move.model_dump(exclude={"tags"}).items() if v is not None}
    instance.report_runless_asset_event(dg.AssetMaterialization(REGISTERED_MODEL, metadata={**metadata, "tags": dg.MetadataValue.json(move.tags)}))


def _history(home: Path) -> None:
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

    instance = open_instance()
    _dataset(instance, home, "ds1", {"travel": 60, "billing": 60})
    _evaluated(instance, "ds1", "r1", coverage=0.8, promote=True)
    _registered(instance, "r1", "1", None)
    _dataset(instance, home, "ds2", {"travel": 60, "billing": 10})
    _evaluated(instance, "ds2", "r2", coverage=0.6, promote=True)
    _registered(instance, "r2", "2", "1")
    # Round 3: as many examples, the same mix, refused by the gate: its check says why.
    _dataset(instance, home, "ds3", {"travel": 60, "billing": 10})
    storage_id = _evaluated(instance, "ds3", "r3", coverage=0.4, promote=False)
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=HOLDOUT_EVAL, check_name=CHECK, passed=False, description="classify: coverage 40.0% is below the minimum 50%",
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(storage_id=storage_id, run_id="", timestamp=0.0),
    ))


def _traffic(home: Path) -> None:
    """The router's traces in the landing folder, ingested by the real assets; the replay table."""
    one = round_traffic("a", "1", local_right=60, local_wrong=4, escalated_in=16, escalated_oos=10)
    two = round_traffic("b", "2", local_right=30, local_wrong=2, escalated_in=48, escalated_oos=8, local_oos=2)
    requests = one + two
    landing = Path(LoopSettings().landing) / "traces" / DAY
    landing.mkdir(parents=True)
    rows = records(requests, dt.datetime.fromisoformat(f"{DAY}T08:00:00+00:00"))
    (landing / "router-0001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    materialize_ingest()
    write_parquet_atomic(home / "warehouse" / REPLAY_TABLE / f"{DAY}.parquet", replay_frame(requests))


def test_loop_report_on_recorded_rounds_and_ingested_router_traffic(loop_home, tmp_path):
    _history(loop_home)
    _traffic(loop_home)
    lines: list[str] = []
    summary = materialize_report(progress=lines.append, plot=str(tmp_path / "plots" / "report.png"))

    one, two, three = summary["rounds"]
    assert [r["champion_version"] for r in summary["rounds"]] == ["1", "2", None]
    assert [r["sft_rows"] for r in summary["rounds"]] == [120, 70, 70]
    assert [r["holdout"]["coverage"] for r in summary["rounds"]] == [0.8, 0.6, 0.4]
    assert one["holdout"]["out_of_scope_escalated"] == pytest.approx(0.9)
    assert one["live"]["requests"] == 90 and one["live"]["served_locally"] == 64
    assert one["live"]["shadow_agreement"] == pytest.approx(30 / 32) and one["live"]["shadowed"] == 32
    assert two["live"]["local_share"] == pytest.approx(34 / 90)
    assert one["simulated_gold"]["coverage"] == pytest.approx(0.8) and two["simulated_gold"]["out_of_scope_escalated"] == pytest.approx(0.8)
    assert three["live"] is None and three["failed_checks"] == [CHECK]

    flags = {f["round"]: f for f in summary["flags"]}
    assert sorted(flags) == [2, 3]
    assert flags[2]["what"][0].startswith("holdout coverage 0.600 < 0.800 in round 1")
    assert flags[2]["what"][1].startswith("live local share 0.378 < 0.711 in round 1")
    assert flags[2]["reasons"][0].startswith("fewer training examples: 70 SFT rows vs 120 in round 1")
    assert flags[2]["reasons"][1].startswith("drifted label mix in intent: total variation 0.36 > 0.15")
    assert flags[3]["reasons"] == [f"failed check {CHECK}: classify: coverage 40.0% is below the minimum 50%"]

    # The tables reached the terminal; the PNG is under the warehouse and at --plot.
    assert any("| 1 | v1 | 90 | 64 | 0.711 | 0.938 (n=32) |" in line for line in lines)
    for path in (summary["plot"], summary["plot_copy"]):
        assert Path(path).read_bytes()[:4] == b"\x89PNG"
    assert Path(summary["plot"]).parent == loop_home / "warehouse" / "report"

    # Dagster metadata of the materialization.
    latest = open_instance().fetch_materializations(LOOP_REPORT, limit=1).records[0].asset_materialization.metadata
    assert latest["flagged_rounds"].value == [2, 3]
    assert "| 3 |" in latest["rounds_table"].value and "FLAGGED" in latest["rounds_table"].value
    assert latest["plot"].value == summary["plot"]

    # The MLflow run: one series per figure, the round as its step; the PNG and JSON as artifacts.
    client = LoopSettings().tracking().client()
    run = client.get_run(summary["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    coverage = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "holdout_coverage")}
    assert coverage == {1: 0.8, 2: 0.6, 3: 0.4}
    shares = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "live_local_share")}
    assert shares == {1: pytest.approx(64 / 90), 2: pytest.approx(34 / 90)}
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["loop_report.json", "loop_report.png"]
    assert run.data.tags["flagged_rounds"] == "2,3"

    # The command: the same asset, the tables on stderr, one JSON line last.
    done = CliRunner().invoke(app, ["report", "--no-mlflow"])
    assert done.exit_code == 0, done.output
    line = last_json_line(done.stdout)
    assert [f["round"] for f in line["flags"]] == [2, 3] and line["mlflow_run_id"] is None
