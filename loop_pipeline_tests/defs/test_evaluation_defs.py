"""The promotion gate through real Dagster runs with tiny models on simulated traffic of a toy
3-intent task: a good candidate is promoted, a bad one is refused with the reason in the check
result, a second good one moves `champion` and leaves `previous`, rollback restores it, the
champion's threshold keeps its agreement on a fresh simulated sample, and an explicit model folder
is evaluated but never registered.

Each test has its own LOOP_HOME (a copy of one prepared home: landing, warehouse, dataset version,
Dagster instance with the dataset checks' results; no MLflow store, so no registry), and trains
its own candidates. ``holdout_eval`` gets the adapter it evaluates from the ``lora_adapter``
result, written here where the asset would leave it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import numpy as np
import pytest
import torch
import yaml

from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.evaluation import RegisteredModel, agrees
from loop_pipeline.core.models import generate_with_confidence, load_for_inference, prepare_prompt
from loop_pipeline.core.registry import CHAMPION, PREVIOUS, register_version, rollback
from loop_pipeline.core.training import TrainConfig, main
from loop_pipeline.runs import (
    build_stage_defs,
    materialize_datasets,
    materialize_evaluation,
    materialize_ingest,
    materialize_scoring,
    open_instance,
)
from loop_pipeline.settings import LoopSettings
from loop_pipeline.sim import NO_MESS, SimulationConfig
from loop_pipeline_tests.helpers import simulate_landing
from loop_pipeline_tests.tiny_models import build_tiny_model
from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows, write_toy_configs

torch.set_num_threads(1)

MODEL_NAME = "loop-candidate"
MAX_NEW_TOKENS = 8
GATE_CHECKS = {
    "holdout_eval_reaches_target_at_min_coverage",
    "holdout_eval_no_regression_vs_champion",
    "holdout_eval_dataset_checks_passed",
}
GATE_PARTS = {"target_at_min_coverage", "no_regression", "dataset_checks"}


@dataclass(frozen=True)
class Prepared:
    home: Path  # a LOOP_HOME after ingest, scoring and datasets
    configs: Path
    model: Path  # an untrained tiny model whose tokenizer knows the toy vocabulary
    version: str


@dataclass(frozen=True)
class Loop:
    root: Path
    home: Path
    model: Path
    version: str


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Iterator[Prepared]:
    """Simulated toy traffic through ingest, scoring and datasets, once for the module."""
    root = tmp_path_factory.mktemp("evaluation_defs")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("LOOP_LANDING_URL", "LOOP_PG_URL", "DAGSTER_HOME", "LOOP_MLFLOW_TRACKING_URI", "LOOP_MLFLOW_ARTIFACT_ROOT",
                     "LOOP_TRAINER_DEPLOY", "LOOP_TRAIN_CONFIG"):
            patch.delenv(name, raising=False)
        patch.setenv("LOOP_HOME", str(root / "loop_home"))
        configs = write_toy_configs(root / "configs")
        # The tiny tokenizer spells "travel" and "billing" in 6 tokens: 8 new tokens leave room for
        # the end of turn, without which an answer's confidence is 0 and no threshold can serve it.
        evaluation_yaml = configs / "evaluation.yaml"
        evaluation_yaml.write_text(yaml.safe_dump({**yaml.safe_load(evaluation_yaml.read_text()), "max_new_tokens": MAX_NEW_TOKENS}))
        patch.setenv("LOOP_CONFIG_DIR", str(configs))
        data = root / "toy.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(0, 3000)))
        # Tidy traffic (NO_MESS): these tests are about the gate's mechanics, with a good and a bad
        # candidate told apart on a toy task; the numbers on messy traffic are the evaluation's own tests'.
        simulation = SimulationConfig.from_mapping(
            {**NO_MESS, "dataset": "labeled", "input_path": str(data), "days": 1, "traces_per_day": 1000,
             "start_date": "2026-11-01", "frontier_error_rate": 0.0, "human_review_rate": 0.3, "seed": 0}
        )
        simulate_landing(simulation, LoopSettings().landing)
        materialize_ingest()
        materialize_scoring()
        built = materialize_datasets()
        assert not built["blocked_by"], built["blocked_by"]
    model = build_tiny_model(root / "tiny-llama", toy_corpus(), vocab_size=300)
    yield Prepared(root / "loop_home", configs, model, built["version"])


@pytest.fixture
def loop(prepared: Prepared, loop_home: Path, monkeypatch) -> Loop:
    """This test's own LOOP_HOME: a copy of the prepared one, with an empty MLflow store."""
    shutil.copytree(prepared.home, loop_home, ignore=shutil.ignore_patterns("mlflow"))
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(prepared.configs))
    return Loop(loop_home.parent, loop_home, prepared.model, prepared.version)


def _train(loop: Loop, name: str, steps: int, lr: float, seed: int) -> TrainedAdapter:
    """A training run on the dataset version, left as the lora_adapter asset leaves its result."""
    settings = LoopSettings()
    tracking = settings.tracking()
    version_dir = settings.paths.datasets / loop.version
    raw = {
        "model": {"base": str(loop.model), "dtype": "float32"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": steps, "per_device_train_batch_size": 16, "learning_rate": lr, "max_length": 64, "seed": seed, "logging_steps": 10},
        "data": {"version_dir": str(version_dir), "system_prompt": "drop"},
        "export": {"merged": True, "merged_dtype": "float32"},
        "tracking": {"tracking_uri": tracking.tracking_uri, "artifact_root": tracking.artifact_root},
        "output_dir": str(loop.root / "runs" / name),
    }
    result = main(TrainConfig.from_mapping(raw))
    trained = TrainedAdapter(**result.to_dict(), dataset_path=str(version_dir), train_config=f"test:{name}")
    results = Path(build_stage_defs().resources["results_io"].results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "lora_adapter.json").write_text(trained.model_dump_json(), encoding="utf-8")
    return trained


def _passed(done: dict) -> dict[str, bool]:
    return {name: check["passed"] for name, check in done["checks"].items()}


def _client():
    return LoopSettings().tracking().client()


def test_good_candidate_is_promoted_bad_refused_then_second_good_and_rollback(loop):
    client = _client()

    # 1. A trained candidate: passes every part of the gate, becomes the champion.
    good = _train(loop, "good-1", steps=300, lr=5e-3, seed=0)
    first = materialize_evaluation()
    assert _passed(first) == dict.fromkeys(GATE_CHECKS, True), first["checks"]
    # No champion yet: promoted by the first-champion rule, which the check states.
    assert "first-champion rule" in first["checks"]["holdout_eval_no_regression_vs_champion"]["why"]
    assert first["checks"]["holdout_eval_dataset_checks_passed"]["why"] == "all 5 blocking checks recorded and passed for this version"
    outcome = first["outcome"]
    assert outcome.from_lineage and outcome.trained == good  # it evaluated the adapter lora_adapter handed over
    assert outcome.report.dataset_version == loop.version and outcome.regression is None
    registered: RegisteredModel = first["registered"]
    assert (registered.champion, registered.previous, registered.unchanged) == ("1", None, False)
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == "1" and champion.run_id == good.mlflow_run_id
    tags = champion.tags
    assert tags["dataset_version"] == loop.version and tags["system_prompt"] == "drop"
    assert float(tags["coverage"]) >= 0.5 and json.loads(tags["thresholds"])["classification"] is not None
    assert float(tags["cost_ratio"]) < 1.0 and float(tags["cost_ratio_one_at_a_time"]) >= float(tags["cost_ratio"])
    # Priced as the hardware the evaluation ran on, at the rate measured in the router's micro-batches.
    throughput = outcome.report.throughput
    assert tags["device_kind"] == throughput.device_kind == "cpu" and throughput.batch_size == 16
    assert float(tags["local_price_per_hour"]) == outcome.report.cost.local_price_per_hour == 0.10
    spec = json.loads(tags["serving_spec"])
    assert (spec["requests_per_s"], spec["local_price_per_hour"]) == (throughput.batched_requests_per_s, 0.10)
    assert "gate passed" in tags["promotion_reason"]
    eval_run = client.get_run(outcome.mlflow_run_id)
    assert eval_run.data.metrics["classification/agreement_frontier"] > 0.9
    artifacts = {a.path for a in client.list_artifacts(outcome.mlflow_run_id)}
    assert {"coverage_agreement.png", "worst_confusions.png", "per_example.parquet", "report.json"} <= artifacts
    # The run records the configuration it used: the effective evaluation.yaml (with this test's values).
    metadata = open_instance().get_latest_materialization_event(dg.AssetKey("holdout_eval")).asset_materialization.metadata
    assert metadata["config/evaluation"].value["max_new_tokens"] == MAX_NEW_TOKENS and "config/tasks" in metadata
    assert metadata["training_run_id"].value == good.mlflow_run_id and metadata["promote"].value is True
    table = metadata["tasks"].value
    assert "| agreement with the frontier | agreement with the reference |" in table and "(simulated gold)" in table
    assert "| classification |" in table
    costs = metadata["throughput_and_cost"].value
    assert "requests/s one at a time" in costs and "requests/s in micro-batches of 16" in costs and "| device kind | cpu |" in costs

    # Evaluating the same training run again registers nothing new.
    again = materialize_evaluation()
    assert all(_passed(again).values()), again["checks"]
    assert again["registered"].unchanged is True
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1

    # 2. A barely trained candidate: refused, with the reasons in the check results; no new version.
    _train(loop, "bad", steps=2, lr=1e-4, seed=0)
    second = materialize_evaluation()
    checks = second["checks"]
    target = checks["holdout_eval_reaches_target_at_min_coverage"]
    assert not target["passed"] and "no confidence threshold reaches 95% agreement" in target["why"]
    regression = checks["holdout_eval_no_regression_vs_champion"]
    assert not regression["passed"] and "paired on" in regression["why"] and "sign test p=" in regression["why"]
    assert checks["holdout_eval_dataset_checks_passed"]["passed"]
    assert second["registered"] is None
    assert second["outcome"].regression.champion_version == "1"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1

    # 3. Another good candidate: champion moves to it, the old one becomes `previous`.
    _train(loop, "good-2", steps=300, lr=5e-3, seed=1)
    third = materialize_evaluation()
    assert all(_passed(third).values()), third["checks"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias(MODEL_NAME, PREVIOUS).version) == "1"

    # 4. Rollback by hand restores the previous version, with the reason recorded.
    move = rollback(client, MODEL_NAME, "latency regression seen in production")
    assert (move.champion, move.previous) == ("1", "2")
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert "latency regression" in client.get_registered_model(MODEL_NAME).tags["last_move"]


def test_champion_threshold_keeps_agreement_on_a_fresh_sample(loop):
    _train(loop, "good", steps=300, lr=5e-3, seed=0)
    assert materialize_evaluation()["registered"] is not None
    champion = _client().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    threshold = json.loads(champion.tags["thresholds"])["classification"]
    fresh = toy_rows(seed=99, n=300)  # traffic the candidate never saw
    prompts = [prepare_prompt([{"role": "user", "content": r["text"]}], champion.tags["system_prompt"]) for r in fresh]
    model, tokenizer = load_for_inference(champion.tags["merged_path"])
    generations = generate_with_confidence(model, tokenizer, prompts, batch_size=32, max_new_tokens=MAX_NEW_TOKENS)
    served = generations.confidence >= threshold
    assert served.mean() >= 0.5
    agreement = np.mean([agrees("classification", a, r["label"]) for a, r, s in zip(generations.texts, fresh, served) if s])
    assert agreement >= 0.95, agreement


def test_an_explicit_model_is_evaluated_on_the_lineage_dataset_but_never_registered(loop):
    trained = _train(loop, "good", steps=300, lr=5e-3, seed=0)
    explicit = materialize_evaluation(register=False, candidate={"model": trained.merged_path, "system_prompt": "drop"})
    outcome = explicit["outcome"]
    assert not outcome.from_lineage and outcome.candidate.model_path == trained.merged_path
    assert outcome.report.model == trained.merged_path and outcome.report.dataset_version == loop.version
    assert outcome.decision.promote, outcome.decision  # a good model: only its provenance stops it
    with pytest.raises(RuntimeError, match="only the lineage's candidate can be registered"):
        materialize_evaluation(register=True, evaluate=False)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        _client().get_registered_model(MODEL_NAME)

    # One dataset check's latest result is about another version: missing for this one, refused by name.
    missing = "training_datasets_have_no_empty_targets"
    open_instance().report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey("training_datasets"), check_name=missing, passed=True, metadata={"version": "ds-other"})
    )
    again = materialize_evaluation(register=False, candidate={"model": trained.merged_path, "system_prompt": "drop"})
    refused = again["checks"]["holdout_eval_dataset_checks_passed"]
    assert not refused["passed"] and refused["why"] == f"not recorded for this version: {missing}"
    assert not again["outcome"].decision.promote


def test_the_required_dataset_checks_are_the_blocking_checks_defined_on_the_dataset(loop):
    from loop_pipeline.defs.datasets import checks as dataset_checks
    from loop_pipeline.defs.evaluation.assets import DATASET_CHECKS, dataset_check_results

    defined = {spec.name for d in dg.load_asset_checks_from_modules([dataset_checks]) for spec in d.check_specs}
    assert set(DATASET_CHECKS) == defined and len(DATASET_CHECKS) == 5
    recorded = dataset_check_results(open_instance(), loop.version)
    assert recorded.required == DATASET_CHECKS and recorded.results == dict.fromkeys(DATASET_CHECKS, True)
    assert dataset_check_results(open_instance(), "ds-never-built").results == {}


def test_loop_eval_reports_the_gate_and_cli_moves_the_champion(loop):
    from typer.testing import CliRunner

    from loop_pipeline.cli import app
    from loop_pipeline_tests.helpers import last_json_line

    trained = _train(loop, "good", steps=300, lr=5e-3, seed=0)
    assert materialize_evaluation()["registered"].champion == "1"
    client = _client()
    # A second version of the same run, so that there is something to move between.
    register_version(client, MODEL_NAME, f"runs:/{trained.mlflow_run_id}/merged_model", trained.mlflow_run_id, {"note": "copy"})

    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--max-examples", "200"])
    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    task = summary["tasks"]["classification"]
    assert summary["dataset_version"] == loop.version and summary["target_agreement"] == 0.95
    assert task["agreement_frontier"] > 0.9 and 0 < summary["blended_cost_ratio"] < 1
    assert set(summary["decision"]["reasons"]) == GATE_PARTS
    assert "paired on" in summary["decision"]["reasons"]["no_regression"][0]  # the champion was evaluated too

    moved = runner.invoke(app, ["promote", "--version", "2", "--reason", "manual check"])
    assert moved.exit_code == 0, moved.output
    assert last_json_line(moved.stdout) == {"action": "promote", "model_name": MODEL_NAME, "champion": "2", "previous": "1", "reason": "manual check"}
    back = runner.invoke(app, ["rollback", "--reason", "undo manual check"])
    assert back.exit_code == 0 and last_json_line(back.stdout)["champion"] == "1"
    missing = runner.invoke(app, ["promote", "--version", "99", "--reason", "no such"])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_run_config_chooses_the_candidate(tmp_path):
    from pydantic import ValidationError

    from loop_pipeline.defs.evaluation.assets import HoldoutEvalConfig, chosen_candidate

    trained = TrainedAdapter(
        adapter_path=str(tmp_path / "adapter"), base_model="tiny", base_model_path=str(tmp_path / "base"), dataset_version="ds-1",
        dataset_path=str(tmp_path / "ds-1"), train_config="tiny.yaml", steps=1, sft_steps=1, negative_stage="none", negative_steps=0,
        tokens=1, tokens_per_s=1.0, seconds_per_step=1.0, train_seconds=1.0, peak_rss_mb=1.0, dtype="float32", device="cpu",
        system_prompt="drop", mlflow_run_id="abc",
    )
    assert chosen_candidate(HoldoutEvalConfig(), trained) is None  # the lineage's adapter, as trained
    assert chosen_candidate(HoldoutEvalConfig(system_prompt="drop"), trained) is None
    other_prompt = chosen_candidate(HoldoutEvalConfig(system_prompt="keep"), trained)
    assert (other_prompt.adapter_path, other_prompt.system_prompt) == (trained.adapter_path, "keep")
    explicit = chosen_candidate(HoldoutEvalConfig(model="/m", adapter="/a"), trained)
    assert (explicit.model_path, explicit.adapter_path, explicit.system_prompt, explicit.label) == ("/m", "/a", "keep", "/m")
    with pytest.raises(ValidationError, match="adapter needs model"):
        HoldoutEvalConfig(adapter="/a")
