"""`loop bench thresholds`: the score-threshold procedure on simulated weeks, with fresh traffic."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loop_pipeline.bench.thresholds_trial import FRESH_SEED_OFFSET, parse_seeds
from loop_pipeline.cli import app
from loop_pipeline.core.scoring import ScoringConfig
from loop_pipeline_tests.helpers import REPO_CONFIGS, last_json_line

runner = CliRunner()


def test_seeds_parse_as_ranges_and_lists():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("3") == [3]
    assert parse_seeds("0-2,5, 1") == [0, 1, 2, 5]
    for bad in ("", "a", "3-1", "1-", "-2"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def test_bench_thresholds_prints_a_row_per_seed_totals_and_writes_the_rows(tmp_path):
    out = tmp_path / "trial" / "thresholds.json"
    result = runner.invoke(
        app,
        ["bench", "thresholds", "--seeds", "0-1", "--domains", "banking", "--days", "2", "--traces-per-day", "300", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["seed", "task", "reviews"]
    assert [line.split()[0] for line in lines[1:3]] == ["0", "1"]
    target = ScoringConfig.from_yaml(REPO_CONFIGS / "scoring.yaml").precision_target
    assert lines[3].startswith("certified threshold: ") and f"fresh-traffic precision >= {target:g}" in lines[3]
    assert last_json_line(result.stdout)["totals"]["rows"] == 2
    assert "[1/2] seed 0 intent: rule" in result.stderr and "[2/2] seed 1" in result.stderr

    trial = json.loads(out.read_text(encoding="utf-8"))
    assert trial["fresh_seed_offset"] == FRESH_SEED_OFFSET and trial["simulation"]["domains"] == ["banking"]
    for row in trial["rows"]:
        assert row["traces"] == row["fresh_traces"] == 600
        sides = row["selection"]["reviewed"] + row["certification"]["reviewed"]
        assert 0 < sides < 60  # about 2% of 600 reviewed
        # Too few reviews for a week this small: the fallback, said so, and kept by acceptance.
        assert row["rule"] == "acceptance" and row["threshold"] is None and "too few reviews" in row["reason"]
        # The fallback keeps the accepted outputs that no signal vetoed; acceptance (the comparison's
        # filter a team has without the loop) keeps every accepted output.
        comparison = row["comparison"]
        assert row["kept"] == comparison["fused"]["kept"] > 0 and row["fused_true_error"] == comparison["fused"]["true_error_rate"]
        assert row["acceptance_kept"] == comparison["acceptance"]["kept"] >= row["kept"]
        assert row["acceptance_true_error"] == comparison["acceptance"]["true_error_rate"]
        assert set(row["comparison"]) == {"none", "acceptance", "fused", "fused_at_acceptance_volume", "fused_at_95pct_acceptance_volume"}
        assert 0 < row["fresh_kept"] < row["fresh_traces"] and 0.5 < row["fresh_true_precision"] <= 1.0
    assert trial["totals"]["certified"] == 0 and trial["totals"]["fresh_precision_at_target_share"] is None


def test_bench_thresholds_refuses_bad_seeds():
    result = runner.invoke(app, ["bench", "thresholds", "--seeds", "9-2"])
    assert result.exit_code == 2 and "seeds" in result.stderr
