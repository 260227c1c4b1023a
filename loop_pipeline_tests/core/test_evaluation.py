"""Evaluation pieces without a model: agreement per task kind, the threshold's guarantee on fresh
samples, the paired regression test, the cost formula, the gate's reasons; and generation with
confidence on a tiny trained model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from loop_pipeline.core.evaluation import (
    EvalConfig,
    agrees,
    blended_cost,
    choose_threshold,
    evaluate_answers,
    gate_decision,
    min_testable,
    paired_regression,
    rouge_l_f1,
)
from loop_pipeline.core.scoring import TaskSpec
from loop_pipeline.settings import ConfigError


def test_agreement_per_task_kind():
    assert agrees("classification", " Balance.", "balance")
    assert not agrees("classification", "balance due", "balance")
    assert agrees("extraction", '{"time": "7pm", "people": "2"}', '{"people": "2", "time": "7PM"}')
    assert not agrees("extraction", '{"time": "7pm"}', '{"time": "7pm", "people": "2"}')
    assert not agrees("extraction", "not json", '{"time": "7pm"}')
    assert rouge_l_f1("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l_f1("a b c d", "a x c y") == pytest.approx(0.5)
    assert agrees("summarization", "the cat sat on the mat", "the cat sat on a mat", 0.5)
    assert not agrees("summarization", "completely different words", "the cat sat on a mat", 0.5)


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A model whose confidence is informative but not calibrated: P(agree) = conf ** 0.5."""
    confidence = rng.beta(5, 0.6, size=n)
    agree = rng.random(n) < confidence**0.5
    return confidence, agree


def test_chosen_threshold_keeps_its_target_on_fresh_samples():
    """Over 200 draws of 300 calibration + 300 test requests, the served agreement on a fresh 20,000-request
    sample falls below the target at most about delta of the time (here it must be < 2 x delta)."""
    target, delta = 0.95, 0.1
    rng = np.random.default_rng(0)
    fresh_conf, fresh_agree = _synthetic(rng, 20_000)
    misses, coverages = 0, []
    for _ in range(200):
        conf, agree = _synthetic(rng, 600)
        local = np.ones(len(conf), bool)
        choice = choose_threshold((conf[:300], agree[:300], local[:300]), (conf[300:], agree[300:], local[300:]), target, delta)
        if choice["threshold"] is None:
            continue
        served = fresh_conf >= choice["threshold"]
        coverages.append(served.mean())
        misses += fresh_agree[served].mean() < target
    print(f"certified {len(coverages)}/200, mean coverage {np.mean(coverages):.3f}, misses {misses}")
    assert len(coverages) > 100, len(coverages)  # it does certify thresholds
    assert np.mean(coverages) > 0.3
    assert misses / len(coverages) < 2 * delta, misses


def test_threshold_refuses_when_agreement_is_low_everywhere():
    rng = np.random.default_rng(1)
    conf = rng.random(500)
    agree = rng.random(500) < 0.6
    local = np.ones(500, bool)
    choice = choose_threshold((conf[:250], agree[:250], local[:250]), (conf[250:], agree[250:], local[250:]), 0.95, 0.1)
    assert choice["threshold"] is None and choice["selected"] is None
    assert min_testable(0.95, 0.1) == 45


def test_escalation_answers_are_never_served_and_out_of_scope_is_measured():
    n = 400
    trace_ids = [f"t{i:04d}" for i in range(n)]
    oos = [i % 5 == 0 for i in range(n)]
    holdout = pl.DataFrame(
        {
            "trace_id": trace_ids,
            "task_type": ["intent"] * n,
            "reference": ["out_of_scope" if o else "balance" for o in oos],
            "gold": [None] * n,
            "sim_gold": ["out_of_scope" if o else "balance" for o in oos],
        }
    )
    answers = ["out_of_scope" if o else "balance" for o in oos]
    confidence = np.full(n, 0.99)
    spec = {"intent": TaskSpec(name="intent", kind="classification", escalation_labels=("out_of_scope",))}
    reports, per_example = evaluate_answers(holdout, answers, confidence, spec, EvalConfig())
    report = reports["intent"]
    assert report.threshold is not None
    assert report.coverage == 1.0 and report.served_agreement == 1.0
    assert report.out_of_scope_escalated == 1.0  # answered out_of_scope: escalated, not served
    assert not per_example.filter(pl.col("out_of_scope")).get_column("served").any()
    assert report.calibration_n + report.test_n == n


def test_paired_regression_detects_a_worse_candidate():
    ids = [f"t{i}" for i in range(300)]
    champion = pl.DataFrame({"trace_id": ids, "agrees": [True] * 300})
    worse = pl.DataFrame({"trace_id": ids, "agrees": [i % 4 != 0 for i in range(300)]})
    same = pl.DataFrame({"trace_id": ids, "agrees": [i != 7 for i in range(300)]})
    assert paired_regression(worse, champion, 0.05)["regression"] is True
    result = paired_regression(same, champion, 0.05)
    assert result["regression"] is False and result["champion_only_right"] == 1


def test_blended_cost_counts_both_calls_on_escalation():
    # The article's example: 80% served at 2% of the frontier price -> 0.2 + 0.02 = 22% (every
    # request pays the local call first; the escalated 20% pay the frontier too).
    cost = blended_cost(0.8, frontier_cost_per_request=0.01, local_price_per_hour=0.72, local_requests_per_s=1.0)
    assert cost["local_cost_per_request"] == pytest.approx(0.0002)
    assert cost["blended_cost_ratio"] == pytest.approx(0.2 + 0.02)
    with pytest.raises(ValueError, match="frontier cost"):
        blended_cost(0.8, 0.0, 0.72, 1.0)


def test_gate_lists_every_failing_reason():
    from loop_pipeline.core.evaluation import EvalReport, TaskReport

    selection = {"selected": 0.99, "test_p": 0.4}
    task = TaskReport("intent", "classification", 100, 90, 0.7, None, None, None, selection, 50, 50, 0.0, None, 10, 1.0)
    report = EvalReport("m", "ds-x", 100, 10.0, {"intent": task}, 0.0, {"blended_cost_ratio": 1.0}, pl.DataFrame())
    regression = {"regression": True, "paired_n": 100, "candidate_agreement": 0.7, "champion_agreement": 0.9,
                  "champion_only_right": 25, "candidate_only_right": 5, "p_value": 0.0001}
    decision = gate_decision(report, EvalConfig(), regression, {"training_datasets_have_no_empty_targets": False})
    assert decision["promote"] is False
    parts = decision["parts"]
    assert "no confidence threshold reaches 95% agreement" in parts["target_at_min_coverage"]["reasons"][0]
    assert "not certified on the test half, p=0.400" in parts["target_at_min_coverage"]["reasons"][0]
    assert not parts["no_regression"]["passed"] and "champion 0.900" in parts["no_regression"]["reasons"][0]
    assert parts["dataset_checks"]["reasons"] == ["failed: training_datasets_have_no_empty_targets"]
    assert gate_decision(report, EvalConfig(), None, None)["parts"]["dataset_checks"]["passed"] is False


def test_eval_config_rejects_bad_values(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="evaluation.target_agreement"):
        EvalConfig.load({"target_agreement": 1.5})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['coverage_min'\]"):
        EvalConfig.load({"coverage_min": 0.8})
