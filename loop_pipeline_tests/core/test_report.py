"""loop report's pure logic: live figures and costs from the router's own trace records, simulated
gold from replay rows, regression flags with their causes, the table and the plot."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from loop_pipeline.core.report import (
    RoundRecord,
    build_report,
    causes,
    check_replay,
    label_counts,
    regression_flags,
    report_text,
    save_plot,
    total_variation,
)
from loop_pipeline.core.report.model import LiveFigures
from loop_pipeline_tests.helpers import repo_prices
from loop_pipeline_tests.report_traffic import (
    FRONTIER_COST,
    FRONTIER_MODEL,
    LOCAL_COST,
    records,
    replay_frame,
    round_traffic,
    traces_frame,
)

START = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
KINDS = {"intent": "classification"}


def _record(number: int, **fields) -> RoundRecord:
    base = dict(round=number, evaluated_at=f"2026-11-0{number}T00:00:00+00:00", run_id=f"run-{number}", dataset_version=f"ds{number}",
                candidate=f"cand{number}", target_agreement=0.95, holdout_coverage=0.8, promoted=True, champion_version=str(number),
                sft_rows=1000, sft_rows_by_task={"intent": 1000}, label_counts={"intent": {"travel": 500, "billing": 500}})
    return RoundRecord(**{**base, **fields})


def _traffic():
    one = round_traffic("a", "1", local_right=60, local_wrong=4, escalated_in=16, escalated_oos=10)
    two = round_traffic("b", "2", local_right=30, local_wrong=2, escalated_in=48, escalated_oos=8, local_oos=2)
    none = round_traffic("c", None, 0, 0, escalated_in=5, escalated_oos=0)
    requests = none + one + two
    return traces_frame(records(requests, START)), replay_frame(requests)


def test_live_and_gold_figures_per_champion_from_router_records():
    traces, replay = _traffic()
    report = build_report([_record(1), _record(2, holdout_coverage=0.7)], traces, check_replay(replay, "replay"), repo_prices(), KINDS)
    first, second = (item.live for item in report.rounds)
    assert report.frontier_model == FRONTIER_MODEL
    assert (first.requests, first.served_locally, first.by_route) == (90, 64, {"frontier": 26, "local": 64})
    # Every other local answer shadowed: 30 right ones agree, 2 wrong ones do not.
    assert (first.shadowed, first.shadow_agreement) == (32, pytest.approx(30 / 32))
    # Routed: every champion request pays the local call, escalations the frontier too. All frontier:
    # the frontier call's cost, the shadow's, or (32 unshadowed local requests) tokens at gpt-4o-mini.
    assert first.frontier_cost_estimated == 32 and first.costed == 90
    assert first.routed_cost_usd == pytest.approx(90 * LOCAL_COST + 26 * FRONTIER_COST)
    assert first.all_frontier_cost_usd == pytest.approx(90 * FRONTIER_COST)
    assert first.blended_cost_ratio == pytest.approx((90 * LOCAL_COST + 26 * FRONTIER_COST) / (90 * FRONTIER_COST))
    assert first.shadow_cost_usd == pytest.approx(32 * FRONTIER_COST)
    assert (second.requests, second.served_locally) == (90, 34)
    # No champion: all frontier, no local cost: ratio 1, and no round owns it.
    [unowned] = report.unattributed
    assert (unowned.champion_version, unowned.requests, unowned.blended_cost_ratio) == (None, 5, pytest.approx(1.0))
    gold1, gold2 = (item.gold for item in report.rounds)
    assert (gold1.in_scope, gold1.out_of_scope, gold1.coverage) == (80, 10, pytest.approx(64 / 80))
    assert gold1.local_agreement == pytest.approx(60 / 64) and gold1.out_of_scope_escalated == 1.0
    assert gold1.routed_accuracy == pytest.approx((60 + 16 + 10) / 90)
    # Two out-of-scope requests served locally in round 2: escalation 8 of 10.
    assert (gold2.coverage, gold2.out_of_scope_escalated) == (pytest.approx(32 / 80), pytest.approx(0.8))
    assert gold2.local_agreement == pytest.approx(30 / 34)


def test_a_round_serving_less_at_the_same_target_is_flagged_with_every_cause():
    traces, replay = _traffic()
    drifted = _record(2, holdout_coverage=0.7, sft_rows=600, sft_rows_by_task={"intent": 600},
                      label_counts={"intent": {"travel": 500, "billing": 100}},
                      failed_checks={"training_datasets:max_label_share": "travel is 83% of intent"})
    report = build_report([_record(1), drifted], traces, replay, repo_prices(), KINDS)
    [flag] = report.flags
    assert (flag.round, flag.previous_round) == (2, 1)
    assert flag.what == ["holdout coverage 0.700 < 0.800 in round 1 at target agreement 0.95",
                         "live local share 0.378 < 0.711 in round 1 at target agreement 0.95"]
    fewer, drift, check = flag.reasons
    assert fewer == "fewer training examples: 600 SFT rows vs 1000 in round 1 (intent 600 vs 1000)"
    # billing 50% -> 17%, travel 50% -> 83%: total variation 0.33.
    assert drift.startswith("drifted label mix in intent: total variation 0.33 > 0.15") and "billing 50% -> 17%" in drift
    assert check == "failed check training_datasets:max_label_share: travel is 83% of intent"
    text = report_text(report)
    assert "| 2 |" in text and "FLAGGED" in text and "| v1 | 90 | 64 | 0.711 | 0.938 (n=32) |" in text
    assert "0.800 (n=80)" in text  # coverage against simulated gold, with its n


def test_flags_need_a_drop_at_the_same_or_higher_target():
    live = {1: _live(0.8), 2: _live(0.6)}
    # Higher target agreement: serving less is the price of a stricter guarantee, not a regression.
    assert regression_flags([_record(1), _record(2, target_agreement=0.97, holdout_coverage=0.5)], live)[0].round == 2
    assert regression_flags([_record(1, target_agreement=0.97), _record(2, holdout_coverage=0.5)], live) == []
    assert regression_flags([_record(1), _record(2, holdout_coverage=0.9)], {1: _live(0.8), 2: _live(0.85)}) == []
    # The live share alone dropping is enough; nothing explains it: said so.
    [flag] = regression_flags([_record(1), _record(2)], live)
    assert flag.what == ["live local share 0.600 < 0.800 in round 1 at target agreement 0.95"]
    assert flag.reasons[0].startswith("no cause found")
    # A refused round with no live traffic between: round 3 compares its live share with round 1's.
    refused = _record(2, promoted=False, champion_version=None)
    [flag] = regression_flags([_record(1), refused, _record(3)], {1: _live(0.8), 3: _live(0.5)})
    assert (flag.round, flag.previous_round) == (3, 1)


def _live(share: float) -> LiveFigures:
    return LiveFigures(champion_version="x", requests=100, served_locally=int(share * 100), local_share=share, by_route={}, shadowed=0,
                       shadow_agreement=None, costed=0, routed_cost_usd=0, all_frontier_cost_usd=0, frontier_cost_estimated=0,
                       shadow_cost_usd=0, blended_cost_ratio=None)


def test_label_counts_read_the_sft_targets_of_classification_tasks_only():
    # sft rows as training_datasets writes them: the prompt, then the target as the assistant's turn.
    targets = [("intent", "Travel"), ("intent", "travel "), ("intent", "billing"), ("summary", "a summary")]
    sft = pl.DataFrame({
        "trace_id": [f"t{i}" for i in range(4)], "task_type": [task for task, _ in targets],
        "messages": [[{"role": "user", "content": "q"}, {"role": "assistant", "content": target}] for _, target in targets],
    })
    assert label_counts(sft, ["intent"]) == {"intent": {"billing": 1, "travel": 2}}
    assert total_variation({"a": 1, "b": 1}, {"a": 1, "b": 1}) == 0.0
    assert total_variation({"a": 1}, {"b": 3}) == 1.0
    assert causes(_record(1), _record(2, label_counts={"intent": {"travel": 550, "billing": 450}}))[0].startswith("no cause found")


def test_replay_without_its_columns_is_refused_by_name():
    with pytest.raises(ValueError, match=r"warehouse/replay: replay table lacks column\(s\) \['in_scope'\]"):
        check_replay(pl.DataFrame({"trace_id": ["t"], "task_type": ["intent"], "sim_gold": ["x"]}), "warehouse/replay")


def test_plot_is_a_png(tmp_path):
    traces, replay = _traffic()
    report = build_report([_record(1), _record(2, holdout_coverage=0.7)], traces, replay, repo_prices(), KINDS)
    path = save_plot(report, tmp_path / "out" / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    # No traffic at all: the holdout rounds alone, still a report.
    bare = build_report([_record(1)], None, None, repo_prices(), KINDS)
    assert bare.rounds[0].live is None and "no router traffic" in report_text(bare)
