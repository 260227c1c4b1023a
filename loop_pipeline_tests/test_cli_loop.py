"""The loop from the command line, one command per stage, all on one LOOP_HOME instance:
simulate -> materialize -> thresholds sweep -> datasets build -> train -> eval -> promote.

Each stage command materializes the Dagster assets, so the candidate `loop train` produced is the
one `loop eval` scores (lineage through the asset graph), the gate's checks are recorded on the
instance, and `loop promote` registers it through the gate. A tiny model learns a toy 3-intent task.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.core.registry import CHAMPION
from loop_pipeline.runs import build_stage_defs
from loop_pipeline.settings import LoopSettings
from loop_pipeline.sim import NO_MESS
from loop_pipeline_tests.helpers import last_json_line
from loop_pipeline_tests.tiny_models import build_tiny_model
from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows, write_toy_configs

torch.set_num_threads(1)
runner = CliRunner()
GATE_CHECKS = (
    "holdout_eval_reaches_target_at_min_coverage",
    "holdout_eval_no_regression_vs_champion",
    "holdout_eval_dataset_checks_passed",
)


def loop(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"loop {' '.join(args)}:\n{result.output}"
    return last_json_line(result.stdout)


def _train_config(folder: Path, model: Path) -> Path:
    """A train config that names no data of its own: it trains what training_datasets produced."""
    path = folder / "toy-train.yaml"
    raw = {
        "model": {"base": str(model), "dtype": "float32"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": 300, "per_device_train_batch_size": 16, "learning_rate": 5e-3, "max_length": 64, "logging_steps": 50},
        "data": {"version_dir": "latest", "system_prompt": "drop"},
        "export": {"merged": True, "merged_dtype": "float32"},
        "output_dir": str(folder / "runs" / "toy"),
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def toy_home(loop_home, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(write_toy_configs(tmp_path / "configs")))
    return loop_home


def test_datasets_build_then_train_eval_and_promote_from_the_cli(toy_home, tmp_path):
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in toy_rows(0, 3000)), encoding="utf-8")
    model = build_tiny_model(tmp_path / "tiny-llama", toy_corpus(), vocab_size=300)

    # Tidy traffic (NO_MESS, as in the defs tests): this test is about the stages' lineage from the
    # command line; the tiny model cannot learn typos and multi-turn sessions in 300 steps.
    tidy = tmp_path / "tidy-simulation.yaml"
    tidy.write_text(yaml.safe_dump(dict(NO_MESS)), encoding="utf-8")
    loop("simulate", "--config", str(tidy), "--dataset", "labeled", "--input", str(data), "--days", "1", "--traces-per-day", "700",
         "--start-date", "2026-11-01", "--frontier-error-rate", "0", "--human-review-rate", "0.3", "--seed", "0")
    assert loop("materialize")["partitions"][0]["traces"]["valid"] == 700
    # The toy frontier is never wrong and tidy reviewers never err: no bad review to certify a score
    # threshold against, so the task keeps what users accepted (the fallback), and says so loudly.
    swept = runner.invoke(app, ["thresholds", "sweep"])
    assert swept.exit_code == 0, swept.output
    entry = last_json_line(swept.stdout)["thresholds"]["classification"]
    assert (entry["rule"], entry["threshold"], entry["fallback"]) == ("acceptance", None, "acceptance")
    assert entry["reason"].startswith("too few reviews to select and certify a threshold") and 0 < entry["kept"] < 700
    assert "classification: NO CERTIFIED THRESHOLD, FALLS BACK TO ACCEPTANCE" in swept.stderr
    built = loop("datasets", "build")
    assert built["blocked_by"] == {} and all(built["checks"].values())

    trained = loop("train", "--config", str(_train_config(tmp_path, model)))
    assert trained["sft_steps"] == 300 and trained["dataset_version"] == built["version"]
    assert trained["final_loss"] < trained["initial_loss"]

    evaluated = loop("eval")
    assert evaluated["dataset_version"] == built["version"] and evaluated["mlflow_run_id"]
    assert evaluated["decision"]["promote"] is True, evaluated["decision"]
    promoted = loop("promote")
    assert (promoted["action"], promoted["champion"], promoted["previous"]) == ("promote", "1", None)

    settings = LoopSettings()
    champion = settings.tracking().client().get_model_version_by_alias("loop-candidate", CHAMPION)
    assert champion.run_id == trained["mlflow_run_id"] and champion.tags["dataset_version"] == built["version"]

    graph = build_stage_defs(settings).resolve_asset_graph()
    instance = dg.DagsterInstance.from_config(str(settings.paths.dagster_home))
    try:
        # The gate's checks were recorded on the instance, about this candidate.
        keys = [dg.AssetCheckKey(dg.AssetKey("holdout_eval"), name) for name in GATE_CHECKS]
        recorded = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
        assert {key.name: record.evaluation.passed for key, record in recorded.items()} == dict.fromkeys(GATE_CHECKS, True)
        # Lineage: each stage's run loaded the value its upstream asset materialized.
        for asset, upstream in (("lora_adapter", "training_datasets"), ("holdout_eval", "lora_adapter"), ("registered_model", "holdout_eval")):
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            loaded = [
                (e.dagster_event.event_specific_data.input_name, e.dagster_event.event_specific_data.manager_key)
                for e in instance.all_logs(event.run_id, of_type=dg.DagsterEventType.LOADED_INPUT)
            ]
            assert (upstream, "results_io") in loaded, (asset, loaded)  # (the gate checks load holdout_eval too)
            assert upstream in {k.to_user_string() for k in graph.get(dg.AssetKey(asset)).parent_keys}
        materialized = instance.get_latest_materialization_event(dg.AssetKey("lora_adapter")).asset_materialization
        assert materialized.metadata["dataset_version"].value == built["version"]
    finally:
        instance.dispose()
