"""The promotion gate through real Dagster runs with tiny models on simulated traffic of a toy
3-intent task: a good candidate is promoted, a bad one is refused with the reason in the check
result, a second good one moves `champion` and leaves `previous`, rollback restores it, and the
champion's threshold keeps its agreement on a fresh simulated sample."""

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

from loop_pipeline.core.evaluation import agrees, generate_with_confidence, load_for_inference
from loop_pipeline.core.registry import CHAMPION, PREVIOUS, rollback
from loop_pipeline.sim import SimulationConfig
from loop_pipeline.settings import LoopSettings
from loop_pipeline.core.models import prepare_prompt
from loop_pipeline.core.training import TrainConfig, main, materialization_metadata
from loop_pipeline.definitions import build_defs
from loop_pipeline.defs.evaluation.assets import HOLDOUT_EVAL, REGISTERED_MODEL
from loop_pipeline.runs import materialize_datasets, materialize_ingest, materialize_scoring
from loop_pipeline.settings import REPO_ROOT, paths
from loop_pipeline_tests.tiny_models import build_tiny_model
from loop_pipeline_tests.helpers import simulate_landing

torch.set_num_threads(1)

KEYWORDS = {"billing": ["invoice", "refund", "charge"], "travel": ["flight", "hotel", "luggage"], "tech": ["login", "crash", "password"]}
FILLER = [f"w{i}" for i in range(30)]
MODEL_NAME = "loop-candidate"


def _toy_rows(seed: int, n: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(rng.choice(list(KEYWORDS)))
        words = list(rng.choice(FILLER, size=2)) + [str(rng.choice(KEYWORDS[label]))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@dataclass
class Loop:
    root: Path
    model: Path
    version: str
    tracking_uri: str


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Iterator[Loop]:
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("evaluation_defs")
        patch.setenv("LOOP_HOME", str(root / "loop_home"))
        for name in ("LOOP_LANDING_URL", "LOOP_PG_URL", "DAGSTER_HOME", "LOOP_MLFLOW_TRACKING_URI", "LOOP_MLFLOW_ARTIFACT_ROOT", "LOOP_TRAINER_DEPLOY"):
            patch.delenv(name, raising=False)
        configs = root / "configs"
        shutil.copytree(REPO_ROOT / "configs", configs)
        for name, changes in {
            "datasets": {"holdout_fraction": 0.4, "min_rows_per_task": 20},
            "evaluation": {"batch_size": 16, "max_new_tokens": 6, "min_coverage": 0.5},
        }.items():
            raw = yaml.safe_load((configs / f"{name}.yaml").read_text())
            raw.update(changes)
            (configs / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        patch.setenv("LOOP_CONFIG_DIR", str(configs))
        data = root / "toy.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _toy_rows(0, 3000)))
        simulate_landing(
            LoopSettings().load(
                SimulationConfig,
                {"dataset": "labeled", "input_path": str(data), "days": 1, "traces_per_day": 700, "start_date": "2026-11-01",
                 "frontier_error_rate": 0.0, "human_review_rate": 0.3, "seed": 0},
            ),
            paths().landing,
        )
        materialize_ingest()
        materialize_scoring()
        built = materialize_datasets()
        assert not built["blocked_by"], built["blocked_by"]
        corpus = [r["text"] for r in _toy_rows(1, 300)] + list(KEYWORDS) + ["system user assistant"] + FILLER
        model = build_tiny_model(root / "tiny-llama", corpus * 2, vocab_size=300)
        yield Loop(root, model, built["version"], build_defs().resources["mlflow"].tracking_uri)


def _train(loop: Loop, name: str, steps: int, lr: float, seed: int) -> dict:
    raw = {
        "model": {"base": str(loop.model), "dtype": "float32"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": steps, "per_device_train_batch_size": 16, "learning_rate": lr, "max_length": 64, "seed": seed, "logging_steps": 10},
        "data": {"version_dir": str(paths().datasets / loop.version), "system_prompt": "drop"},
        "export": {"merged": True, "merged_dtype": "float32"},
        "output_dir": str(loop.root / "runs" / name),
    }
    result = main(TrainConfig.from_mapping(raw))
    document = materialization_metadata(result)
    storage = build_defs().resources["storage"]
    storage.write_document("lora_adapter", document)  # what the lora_adapter asset leaves behind
    return document


def _gate(loop: Loop) -> dg.ExecuteInProcessResult:
    """holdout_eval, its blocking checks and registered_model, on the LOOP_HOME instance (which
    holds the dataset checks' results that the gate reads)."""
    from loop_pipeline.runs import _instance

    defs = build_defs()
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(HOLDOUT_EVAL, REGISTERED_MODEL),
        resources=defs.resources,
        instance=_instance(),
        raise_on_error=False,
    )


def _checks(run: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.description or "") for e in run.get_asset_check_evaluations()}


def _client(loop: Loop):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=loop.tracking_uri)


def test_good_candidate_is_promoted_bad_refused_then_second_good_and_rollback(loop):
    client = _client(loop)

    # 1. A trained candidate: passes every part of the gate, becomes the champion.
    _train(loop, "good-1", steps=300, lr=5e-3, seed=0)
    first = _gate(loop)
    checks = _checks(first)
    assert all(passed for passed, _ in checks.values()), checks
    assert first.asset_materializations_for_node("registered_model")
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == "1"
    tags = champion.tags
    assert tags["dataset_version"] == loop.version and tags["system_prompt"] == "drop"
    assert float(tags["coverage"]) >= 0.5 and json.loads(tags["thresholds"])["classification"] is not None
    assert float(tags["cost_ratio"]) < 1.0
    assert "gate passed" in tags["promotion_reason"]
    evaluation = build_defs().resources["storage"].read_document("holdout_eval")
    eval_run = client.get_run(evaluation["mlflow_run_id"])
    assert eval_run.data.metrics["classification/agreement"] > 0.9
    artifacts = {a.path for a in client.list_artifacts(evaluation["mlflow_run_id"])}
    assert {"coverage_agreement.png", "worst_confusions.png", "per_example.parquet", "report.json"} <= artifacts

    # Evaluating the same training run again registers nothing new.
    again = _gate(loop)
    assert all(passed for passed, _ in _checks(again).values())
    assert build_defs().resources["storage"].read_document("registered_model")["unchanged"] is True
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1

    # 2. A barely trained candidate: refused, with the reasons in the check results; no new version.
    _train(loop, "bad", steps=2, lr=1e-4, seed=0)
    second = _gate(loop)
    checks = _checks(second)
    passed, why = checks["holdout_eval_reaches_target_at_min_coverage"]
    assert not passed and "no confidence threshold reaches 95% agreement" in why
    passed, why = checks["holdout_eval_no_regression_vs_champion"]
    assert not passed and "paired on" in why and "sign test p=" in why
    assert checks["holdout_eval_dataset_checks_passed"][0]
    assert not second.asset_materializations_for_node("registered_model")
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1

    # 3. Another good candidate: champion moves to it, the old one becomes `previous`.
    _train(loop, "good-2", steps=300, lr=5e-3, seed=1)
    third = _gate(loop)
    assert all(passed for passed, _ in _checks(third).values()), _checks(third)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias(MODEL_NAME, PREVIOUS).version) == "1"

    # 4. Rollback by hand restores the previous version, with the reason recorded.
    move = rollback(client, MODEL_NAME, "latency regression seen in production")
    assert (move.champion, move.previous) == ("1", "2")
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert "latency regression" in client.get_registered_model(MODEL_NAME).tags["last_move"]


def test_champion_threshold_keeps_agreement_on_a_fresh_sample(loop):
    client = _client(loop)
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    threshold = json.loads(champion.tags["thresholds"])["classification"]
    fresh = _toy_rows(seed=99, n=300)  # traffic the candidate never saw
    prompts = [prepare_prompt([{"role": "user", "content": r["text"]}], champion.tags["system_prompt"]) for r in fresh]
    model, tokenizer = load_for_inference(champion.tags["merged_path"])
    generations = generate_with_confidence(model, tokenizer, prompts, batch_size=32, max_new_tokens=6)
    served = generations.confidence >= threshold
    assert served.mean() >= 0.5
    agreement = np.mean([agrees("classification", a, r["label"]) for a, r, s in zip(generations.texts, fresh, served) if s])
    assert agreement >= 0.95, agreement


def test_loop_eval_reports_the_gate_and_cli_moves_the_champion(loop):
    from typer.testing import CliRunner

    from loop_pipeline.cli import app
    from loop_pipeline_tests.helpers import last_json_line

    runner = CliRunner()
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    task = summary["tasks"]["classification"]
    assert summary["dataset_version"] == loop.version and summary["target_agreement"] == 0.95
    assert task["agreement"] > 0.9 and 0 < summary["blended_cost_ratio"] < 1
    assert set(summary["decision"]["reasons"]) == {"target_at_min_coverage", "no_regression", "dataset_checks"}
    assert "paired on" in summary["decision"]["reasons"]["no_regression"][0]  # the champion was evaluated too

    client = _client(loop)
    before = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
    other = "2" if before == "1" else "1"
    moved = runner.invoke(app, ["promote", "--version", other, "--reason", "manual check"])
    assert moved.exit_code == 0, moved.output
    assert last_json_line(moved.stdout) == {"action": "promote", "model_name": MODEL_NAME, "champion": other, "previous": before, "reason": "manual check"}
    back = runner.invoke(app, ["rollback", "--reason", "undo manual check"])
    assert back.exit_code == 0 and last_json_line(back.stdout)["champion"] == before
    missing = runner.invoke(app, ["promote", "--version", "99", "--reason", "no such"])
    assert missing.exit_code == 2 and "error:" in missing.output
