"""`loop demo` closes the loop, at toy size: round one promotes a tiny model, the router serves it on
127.0.0.1 with the frontier stand-in, a fresh day is replayed through it with the `openai` client
while the simulated users send feedback, that traffic is ingested, round two runs on it, the day is
replayed through round two's champion, and `loop report` shows both rounds."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from loop_pipeline.core.report import REPLAY_COLUMNS
from loop_pipeline.demo import run_demo
from loop_pipeline.settings import LoopSettings
from loop_pipeline_tests.browser_support import MAX_NEW_TOKENS, tiny_train_config
from loop_pipeline_tests.tiny_models import build_tiny_model
from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows, write_toy_configs


def _toy_loop_home(tmp_path: Path, monkeypatch) -> Path:
    configs = tmp_path / "configs"
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(configs))
    write_toy_configs(configs)
    evaluation = configs / "evaluation.yaml"
    evaluation.write_text(yaml.safe_dump({**yaml.safe_load(evaluation.read_text()), "max_new_tokens": MAX_NEW_TOKENS}))
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(0, 3000)))
    simulate = configs / "simulate.yaml"
    raw = yaml.safe_load(simulate.read_text())
    raw.update({"dataset": "labeled", "input_path": str(data), "frontier_error_rate": 0.0, "human_review_rate": 0.3})
    simulate.write_text(yaml.safe_dump(raw))
    train = tiny_train_config(configs, build_tiny_model(tmp_path / "tiny-llama", toy_corpus(), vocab_size=300))
    monkeypatch.setenv("LOOP_TRAIN_CONFIG", str(train))
    return configs


@pytest.mark.slow
def test_the_demo_closes_the_loop(loop_home, tmp_path, monkeypatch):
    _toy_loop_home(tmp_path, monkeypatch)
    lines: list[str] = []
    summary = run_demo(days=1, traces_per_day=800, seed=0, progress=lines.append, domains=None, frontier_error_rate=None)
    text = "\n".join(lines)
    assert summary["evaluation"]["registered"] is not None, text
    loop = summary["loop"]

    # The router served the fresh day: some of it locally, with the users' feedback sent back.
    first = loop["replays"]["round_1"]
    assert first["requests"] > 0 and first["errors"] == 0
    assert 0 < first["served_locally"] <= first["requests"]
    assert first["feedback_sent"] > 0
    # Its traces and feedback were ingested as a partition of today (the router's clock).
    home = LoopSettings().paths
    router_day = loop["round_2"]["ingested_router_days"][-1]
    traces = pl.read_parquet(home.warehouse / "raw_traces" / f"{router_day}.parquet")
    routes = traces.get_column("metadata").str.json_path_match("$.route").drop_nulls()
    assert routes.len() == first["requests"] + loop["replays"]["round_2"]["requests"]
    assert set(routes.unique()) <= {"local", "frontier", "fallback"} and "local" in set(routes)
    feedback = pl.read_parquet(home.warehouse / "feedback_events" / f"{router_day}.parquet")
    assert feedback.height == first["feedback_sent"] + loop["replays"]["round_2"]["feedback_sent"]
    assert feedback.get_column("trace_id").is_in(traces.get_column("trace_id")).all()

    # The simulator's gold of every replayed request, kept apart for measuring only.
    gold = pl.read_parquet(home.warehouse / "replay" / f"{router_day}.parquet")
    assert gold.columns == list(REPLAY_COLUMNS)
    assert gold.height == routes.len()

    # Round two ran on all of it, and the report has both rounds with their live figures.
    report = loop["report"]
    assert len(report["rounds"]) == 2, report
    served = [r for r in report["rounds"] if r["live"] is not None]
    assert served and all(r["simulated_gold"] is not None for r in served)
    assert Path(report["plot"]).is_file()
    # Every step was timed, and the demo said so as it went.
    assert {"simulate", "router + replay (round 1)", "round 2: ingest", "router + replay (round 2)", "report"} <= set(summary["step_seconds"])
    for heading in ("[7/10]", "[8/10]", "[9/10]", "[10/10]", "round 2: ", "loop report"):
        assert heading in text
