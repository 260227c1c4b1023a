"""`loop bench economics` end to end through the CLI, at toy size: a labeled CSV (its own column
names) simulated into the bench's LOOP_HOME, one Dagster plan over ingest, scoring, datasets,
training (a tiny model, steps capped), evaluation and registration, one JSON line at the end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline_tests.browser_support import MAX_NEW_TOKENS
from loop_pipeline_tests.helpers import last_json_line
from loop_pipeline_tests.tiny_models import build_tiny_model, write_tiny_train_config
from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows, write_toy_configs

torch.set_num_threads(1)
runner = CliRunner()
CAP = 60  # the tiny train config says 300 steps


@pytest.fixture
def toy_configs(loop_home, tmp_path, monkeypatch) -> Path:
    """The project's configs sized for toy traffic (LOOP_CONFIG_DIR), reviewers on 30% of traces,
    their reviews landing the same day (one landing day: fewer Dagster runs, a faster test), one of
    the toy's three labels held out as out-of-scope traffic."""
    configs = write_toy_configs(tmp_path / "configs")
    evaluation = configs / "evaluation.yaml"
    evaluation.write_text(yaml.safe_dump({**yaml.safe_load(evaluation.read_text()), "max_new_tokens": MAX_NEW_TOKENS}))
    simulate = configs / "simulate.yaml"
    changes = {"human_review_rate": 0.3, "review_delay_days": [0, 0], "out_of_scope_label_share": 0.34}
    simulate.write_text(yaml.safe_dump({**yaml.safe_load(simulate.read_text()), **changes}))
    datasets = configs / "datasets.yaml"  # two labels left in scope: one of them holds more than half
    datasets.write_text(yaml.safe_dump({**yaml.safe_load(datasets.read_text()), "max_label_share": 0.8}))
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(configs))
    return configs


def _toy_csv(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utterance", "intent"])
        writer.writerows((row["text"], row["label"]) for row in toy_rows(0, 3000))
    return path


def test_bench_economics_runs_the_loop_on_a_labeled_csv_and_says_training_was_capped(toy_configs, loop_home, tmp_path):
    data = _toy_csv(tmp_path / "toy.csv")
    model = build_tiny_model(tmp_path / "tiny-llama", toy_corpus(), vocab_size=300)
    train = write_tiny_train_config(tmp_path / "tiny-train.yaml", model, tmp_path / "runs")
    home, out = tmp_path / "bench-home", tmp_path / "out" / "economics.json"

    result = runner.invoke(app, [
        "bench", "economics", "--dataset", "labeled", "--input", str(data), "--text-column", "utterance",
        "--label-column", "intent", "--days", "1", "--traces-per-day", "500", "--frontier-error-rate", "0",
        "--train-max-steps", str(CAP), "--train-config", str(train), "--home", str(home), "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    figures = last_json_line(result.stdout)
    assert len(result.stdout.strip().splitlines()) == 1  # progress went to stderr
    assert json.loads(out.read_text()) == figures
    print(json.dumps(figures, sort_keys=True))

    assert figures["bench"] == "economics" and figures["simulated"] is True
    assert figures["dataset"] == "labeled" and figures["domains"] is None
    assert figures["input"] == str(data.resolve())
    assert (figures["days"], figures["traces_per_day"], figures["frontier_error_rate"]) == (1, 500, 0.0)
    # The bench's own LOOP_HOME got the data; the test's LOOP_HOME (and its variable) stayed as they were.
    assert figures["home"] == str(home.resolve()) and (home / "landing").is_dir() and (home / "warehouse").is_dir()
    assert os.environ["LOOP_HOME"] == str(loop_home) and not loop_home.exists()

    # Training: capped by the flag, and the JSON says what an uninterrupted epoch would need.
    training = figures["training"]
    assert figures["train_steps_capped"] is True and training["capped"] is True
    assert training["steps"] == training["max_steps"] == CAP and training["config_steps"] == 300
    assert training["batch_size"] == 16 and training["train_rows"] == figures["sft_rows"] > 0
    assert training["epoch_steps"] == -(-training["train_rows"] // 16)
    assert training["epochs"] == pytest.approx(CAP * 16 / training["train_rows"], abs=1e-3)
    assert training["tokens_per_s"] > 0 and training["seconds"] > 0 and training["tokens"] > 0
    assert f"CAPPED at {CAP} steps by --train-max-steps" in result.stderr
    assert f"one epoch needs {training['epoch_steps']} steps" in result.stderr

    # Evaluation: the one task type, on the frozen holdout's halves, against the simulator's gold.
    assert set(figures["tasks"]) == {"classification"}
    task = figures["tasks"]["classification"]
    assert task["holdout_rows"] == figures["holdout_rows"] > 0
    assert task["calibration_rows"] + task["test_rows"] <= task["holdout_rows"] and task["test_rows"] > 0
    assert task["target_agreement"] == figures["target_agreement"] == 0.95
    assert task["certified_against"] in ("reference", "frontier")
    assert 0.0 <= task["coverage_at_target"] <= 1.0
    # One of the three labels is held out: its queries are out of scope, and the classification task
    # escalates them (configs/tasks.yaml: escalation_labels), never counts them as served traffic.
    assert task["out_of_scope_test_rows"] > 0 and 0.0 <= task["out_of_scope_escalated"] <= 1.0
    # The frontier is never wrong here: sending everything to it is right on every in-scope row.
    assert task["all_frontier_accuracy_vs_gold"] == 1.0
    assert 0.0 <= task["routed_accuracy_vs_gold"] <= 1.0
    # Escalated requests pay the frontier on top of the local model's try: nothing served costs more than 1.
    for ratio in (figures["blended_cost_ratio"], figures["blended_cost_ratio_one_at_a_time"]):
        assert ratio > 0 and (ratio >= 1.0 if task["coverage_at_target"] == 0 else ratio < 1.0)
    assert figures["local_requests_per_s"] > 0
    # The gate's decision is in the JSON, with its reasons when it refused.
    assert isinstance(figures["promoted"], bool) and (figures["promoted"] or figures["gate_refused_because"])
    assert figures["seconds"] > 0 and {"simulate", "training", "evaluation"} <= set(figures["step_seconds"])

    # The figures are the bench home's own artifacts: its dataset version's files, its evaluation report.
    version = home / "datasets" / figures["dataset_version"]
    assert pl.read_parquet(version / "sft.parquet").height == training["train_rows"]
    assert pl.read_parquet(version / "holdout.parquet").height == figures["holdout_rows"]
    landed = sorted(p.name for p in (home / "landing" / "traces").iterdir())
    assert landed == ["2026-11-01"]


def test_bench_economics_without_input_or_with_a_missing_column_is_a_clean_error(toy_configs, tmp_path):
    missing = runner.invoke(app, ["bench", "economics", "--dataset", "labeled", "--home", str(tmp_path / "h1")])
    assert missing.exit_code == 2, missing.output
    assert isinstance(missing.exception, SystemExit)  # no traceback: the command exited on its own
    assert "--dataset labeled needs --input FILE" in missing.stderr and missing.stdout == ""
    assert not (tmp_path / "h1").exists()  # told before any folder was made

    data = _toy_csv(tmp_path / "toy.csv")
    column = runner.invoke(app, ["bench", "economics", "--dataset", "labeled", "--input", str(data), "--home", str(tmp_path / "h2")])
    assert column.exit_code == 2, column.output
    assert isinstance(column.exception, SystemExit)
    assert "error:" in column.stderr and "text" in column.stderr and "utterance" in column.stderr, column.stderr
