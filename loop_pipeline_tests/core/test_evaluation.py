"""Evaluation pieces without a model: agreement per task kind, the threshold's guarantee on fresh
samples, the paired regression test, the cost formula, the gate's reasons, the typed
configuration and stage results, and registration's refusals."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from loop_pipeline.config import ConfigError
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
from loop_pipeline.core.tasks import TasksConfig, TaskSpec
from loop_pipeline.settings import REPO_ROOT


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
        if choice.threshold is None:
            continue
        served = fresh_conf >= choice.threshold
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
    assert choice.threshold is None and choice.selected is None
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
    tasks = TasksConfig(tasks={"intent": TaskSpec(name="intent", kind="classification", escalation_labels=("out_of_scope",))})
    reports, per_example = evaluate_answers(holdout, answers, confidence, tasks, EvalConfig())
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
    assert paired_regression(worse, champion, 0.05).regression is True
    result = paired_regression(same, champion, 0.05)
    assert result.regression is False and result.champion_only_right == 1


def test_blended_cost_counts_both_calls_on_escalation():
    # The article's example: 80% served at 2% of the frontier price -> 0.2 + 0.02 = 22% (every
    # request pays the local call first; the escalated 20% pay the frontier too).
    cost = blended_cost(0.8, frontier_cost_per_request=0.01, local_price_per_hour=0.72, local_requests_per_s=1.0)
    assert cost.local_cost_per_request == pytest.approx(0.0002)
    assert cost.blended_cost_ratio == pytest.approx(0.2 + 0.02)
    with pytest.raises(ValueError, match="frontier cost"):
        blended_cost(0.8, 0.0, 0.72, 1.0)


def _report(threshold: float | None, coverage: float, selection: dict):
    from loop_pipeline.core.evaluation import EvalReport, TaskReport, ThresholdSelection

    task = TaskReport(
        task_type="intent", kind="classification", n=100, n_in_scope=90, agreement=0.7, accuracy_vs_gold=None,
        accuracy_vs_sim_gold=None, threshold=threshold, selection=ThresholdSelection(n_min=45, **selection),
        calibration_n=50, test_n=50, coverage=coverage, served_agreement=None, out_of_scope_n=10, out_of_scope_escalated=1.0,
    )
    cost = blended_cost(coverage, 0.01, 0.1, 10.0)
    return EvalReport(model="m", dataset_version="ds-x", n=100, target_agreement=0.95, requests_per_s=10.0, coverage=coverage,
                      cost=cost, tasks={"intent": task})


def test_gate_lists_every_failing_reason():
    from loop_pipeline.core.evaluation import PairedComparison

    report = _report(None, 0.0, {"threshold": None, "selected": 0.99, "calibration_p": 0.01, "test_p": 0.4})
    regression = PairedComparison(regression=True, paired_n=100, candidate_agreement=0.7, champion_agreement=0.9,
                                  champion_only_right=25, candidate_only_right=5, p_value=0.0001)
    decision = gate_decision(report, EvalConfig(), regression, {"training_datasets_have_no_empty_targets": False})
    assert decision.promote is False
    parts = decision.parts
    assert "no confidence threshold reaches 95% agreement" in parts.target_at_min_coverage.reasons[0]
    assert "not certified on the test half, p=0.400" in parts.target_at_min_coverage.reasons[0]
    assert not parts.no_regression.passed and "champion 0.900" in parts.no_regression.reasons[0]
    assert parts.dataset_checks.reasons == ["failed: training_datasets_have_no_empty_targets"]
    assert len(decision.failing_reasons()) == 3
    assert gate_decision(report, EvalConfig(), None, None).parts.dataset_checks.passed is False


def test_gate_passes_a_certified_threshold_and_refuses_low_coverage():
    selection = {"threshold": 0.9, "selected": 0.9, "calibration_p": 0.01, "test_p": 0.02}
    checks = {"training_datasets_have_no_empty_targets": True}
    passed = gate_decision(_report(0.9, 0.8, selection), EvalConfig(), None, checks)
    assert passed.promote is True
    assert passed.parts.no_regression.reasons == ["no champion yet: nothing to regress from"]
    low = gate_decision(_report(0.9, 0.3, selection), EvalConfig(min_coverage=0.5), None, checks)
    assert low.promote is False
    assert low.parts.target_at_min_coverage.reasons == ["intent: coverage 30.0% at 95% agreement is below the minimum 50%"]


EVALUATION_YAML = REPO_ROOT / "configs" / "evaluation.yaml"


def test_eval_config_is_the_project_file():
    config = EvalConfig.from_yaml(EVALUATION_YAML)
    assert config.model_name == "loop-candidate" and 0 < config.target_agreement < 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target_agreement": 1.5}, "evaluation.yaml: target_agreement: Input should be less than 1 (got 1.5)"),
        ({"coverage_min": 0.8}, "evaluation.yaml: coverage_min: unknown key"),
        ({"batch_size": 0}, "evaluation.yaml: batch_size: Input should be greater than or equal to 1 (got 0)"),
        ({"batch_size": True}, "evaluation.yaml: batch_size: Input should be a valid integer (got True)"),
        ({"dtype": "fp8"}, "evaluation.yaml: dtype: Input should be 'auto', 'float32' or 'bfloat16' (got 'fp8')"),
        ({"local_price_per_hour": -1}, "local_price_per_hour: Input should be greater than or equal to 0 (got -1)"),
    ],
)
def test_eval_config_rejects_bad_values_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        EvalConfig.from_yaml(EVALUATION_YAML, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_frontier_cost_is_the_mean_over_the_holdouts_priced_traces():
    from loop_pipeline.core.evaluation import frontier_cost_per_request

    traces = pl.DataFrame({"trace_id": ["a", "b", "c", "d"], "cost_usd": [0.01, None, 0.03, 1.0], "model": ["x"] * 4})
    assert frontier_cost_per_request(traces, pl.Series(["a", "b", "c"])) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="no frontier cost"):
        frontier_cost_per_request(traces, pl.Series(["b"]))


def _trained(tmp_path, merged: bool):
    from loop_pipeline.core.contracts import TrainedAdapter

    if merged:
        (tmp_path / "merged").mkdir(exist_ok=True)
    return TrainedAdapter(
        adapter_path=str(tmp_path / "adapter"), base_model="tiny", base_model_path=str(tmp_path / "base"), dataset_version="ds-1",
        dataset_path=str(tmp_path / "ds-1"), train_config="tiny.yaml", steps=10, sft_steps=10, negative_stage="none",
        negative_steps=0, tokens=100, tokens_per_s=10.0, seconds_per_step=0.1, train_seconds=1.0, peak_rss_mb=100.0,
        dtype="float32", device="cpu", system_prompt="drop", merged_path=str(tmp_path / "merged"), mlflow_run_id="abc",
    )


def test_candidate_from_the_training_result(tmp_path):
    from loop_pipeline.core.evaluation import Candidate

    unmerged = Candidate.from_adapter(_trained(tmp_path, merged=False))
    assert (unmerged.model_path, unmerged.adapter_path) == (str(tmp_path / "base"), str(tmp_path / "adapter"))
    merged = Candidate.from_adapter(_trained(tmp_path, merged=True))
    assert (merged.model_path, merged.adapter_path, merged.system_prompt, merged.label) == (str(tmp_path / "merged"), None, "drop", "run abc")


def _outcome(tmp_path, promote: bool, from_lineage: bool):
    from loop_pipeline.core.evaluation import Candidate, EvaluationOutcome, GatePart
    from loop_pipeline.core.evaluation.gate import GateDecision, GateParts

    part = GatePart(passed=promote, reasons=["why"])
    trained = _trained(tmp_path, merged=True)
    return EvaluationOutcome(
        report=_report(0.9, 0.8, {"threshold": 0.9, "selected": 0.9, "calibration_p": 0.01, "test_p": 0.02}),
        decision=GateDecision(promote=promote, parts=GateParts(target_at_min_coverage=part, no_regression=part, dataset_checks=part)),
        regression=None,
        candidate=Candidate.from_adapter(trained) if from_lineage else Candidate(model_path="/elsewhere", label="/elsewhere"),
        trained=trained,
        from_lineage=from_lineage,
        report_dir=str(tmp_path),
        plots=[],
        mlflow_run_id="eval-run",
    )


def test_outcome_round_trips_as_json_and_summarizes_like_loop_eval(tmp_path):
    from loop_pipeline.core.evaluation import EvaluationOutcome, eval_summary

    outcome = _outcome(tmp_path, promote=True, from_lineage=True)
    again = EvaluationOutcome.model_validate_json(outcome.model_dump_json())
    assert again == outcome
    summary = eval_summary(again)
    assert list(summary) == [
        "model", "dataset_version", "target_agreement", "tasks", "coverage", "blended_cost_ratio", "requests_per_s", "decision", "mlflow_run_id",
    ]
    assert summary["tasks"]["intent"]["coverage_at_target"] == 0.8
    assert summary["decision"] == {
        "promote": True, "reasons": {"target_at_min_coverage": ["why"], "no_regression": ["why"], "dataset_checks": ["why"]},
    }


def test_registration_refuses_explicit_models_and_refused_candidates(tmp_path):
    from loop_pipeline.core.evaluation import register_and_promote
    from loop_pipeline.core.registry import RegistryError
    from loop_pipeline.core.tracking import TrackingTarget

    tracking = TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    tasks = TasksConfig(tasks={"intent": TaskSpec(name="intent", kind="classification")})
    with pytest.raises(RegistryError, match="only the lineage's candidate can be registered"):
        register_and_promote(_outcome(tmp_path, promote=True, from_lineage=False), tracking, EvalConfig(), tasks)
    with pytest.raises(RegistryError, match="the gate refused this candidate: why; why; why"):
        register_and_promote(_outcome(tmp_path, promote=False, from_lineage=True), tracking, EvalConfig(), tasks)
