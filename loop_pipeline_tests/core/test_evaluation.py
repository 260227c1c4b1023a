"""Evaluation pieces: agreement per task kind, the threshold's guarantee on fresh samples, the paired
regression test, the cost formula at the rates measured as served and the device's price, the
gate's reasons (no part passes with nothing to look at), the typed configuration and stage
results, and registration's refusals. Answer scoring: test_evaluation_answers.py."""

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


def _task(name: str, n: int, threshold: float | None, coverage: float, selection: dict):
    from loop_pipeline.core.evaluation import TaskReport, ThresholdSelection

    return TaskReport(
        task_type=name, kind="classification", n=n, n_in_scope=n - 10, n_with_reference=n // 2,
        reference_sources={"review": n // 2, "frontier_unverified": n - n // 2}, agreement_frontier=0.7, agreement_reference=0.72,
        certified_against="reference", threshold=threshold, selection=ThresholdSelection(n_min=45, **selection),
        calibration_n=n // 2, test_n=n - n // 2, coverage=coverage, served_agreement=None, out_of_scope_n=10, out_of_scope_escalated=1.0,
    )


def _report(threshold: float | None, coverage: float, selection: dict, tasks: dict | None = None):
    from loop_pipeline.core.evaluation import EvalReport
    from loop_pipeline.core.evaluation.report import Throughput

    throughput = Throughput(device_kind="cpu", load_seconds=1.5, one_at_a_time_requests_per_s=2.0, batched_requests_per_s=10.0,
                            batch_size=32, one_at_a_time_n=64)
    return EvalReport(
        model="m", dataset_version="ds-x", n=100, target_agreement=0.95, certified_against="reference", coverage=coverage,
        throughput=throughput, cost=blended_cost(coverage, 0.01, 0.1, 10.0),
        cost_one_at_a_time=blended_cost(coverage, 0.01, 0.1, 2.0, "measured_one_at_a_time"),
        tasks=tasks if tasks is not None else {"intent": _task("intent", 100, threshold, coverage, selection)},
    )


CERTIFIED = {"threshold": 0.9, "selected": 0.9, "calibration_p": 0.01, "test_p": 0.02}
ALL_CHECKS = ("training_datasets_have_min_rows_per_task", "training_datasets_have_no_empty_targets")
TRAINED = {"intent": 400}


def _checks(**results: bool):
    from loop_pipeline.core.evaluation.gate import DatasetChecks

    return DatasetChecks(required=ALL_CHECKS, results=results)


PASSED_CHECKS = {name: True for name in ALL_CHECKS}


def test_gate_lists_every_failing_reason():
    from loop_pipeline.core.evaluation import PairedComparison

    report = _report(None, 0.0, {"threshold": None, "selected": 0.99, "calibration_p": 0.01, "test_p": 0.4})
    regression = PairedComparison(regression=True, paired_n=100, candidate_agreement=0.7, champion_agreement=0.9,
                                  champion_only_right=25, candidate_only_right=5, p_value=0.0001)
    checks = _checks(training_datasets_have_min_rows_per_task=True, training_datasets_have_no_empty_targets=False)
    decision = gate_decision(report, EvalConfig(), regression, checks, TRAINED)
    assert decision.promote is False
    parts = decision.parts
    assert "no confidence threshold reaches 95% agreement" in parts.target_at_min_coverage.reasons[0]
    assert "not certified on the test half, p=0.400" in parts.target_at_min_coverage.reasons[0]
    assert not parts.no_regression.passed and "champion 0.900" in parts.no_regression.reasons[0]
    assert parts.dataset_checks.reasons == ["failed: training_datasets_have_no_empty_targets"]
    assert len(decision.failing_reasons()) == 3


def test_gate_refuses_a_candidate_that_serves_less_than_the_champion():
    """Same agreement, no paired regression, but less coverage at the target on the same holdout."""
    from loop_pipeline.core.evaluation import PairedComparison

    def paired(candidate_coverage: float, champion_coverage: float, config: EvalConfig) -> PairedComparison:
        return PairedComparison(
            regression=False, paired_n=600, candidate_agreement=0.925, champion_agreement=0.930, champion_only_right=16,
            candidate_only_right=13, p_value=0.36, candidate_coverage=candidate_coverage, champion_coverage=champion_coverage,
            coverage_regression=candidate_coverage < champion_coverage - config.max_coverage_drop,
        )

    config = EvalConfig()
    report = _report(0.9, 0.8, CERTIFIED)
    refused = gate_decision(report, config, paired(0.826, 0.940, config), _checks(**PASSED_CHECKS), TRAINED)
    assert refused.promote is False and not refused.parts.no_regression.passed
    assert "candidate 0.826 vs champion 0.940 (serves less max_coverage_drop 0.02)" in refused.parts.no_regression.reasons[1]
    within = gate_decision(report, config, paired(0.925, 0.940, config), _checks(**PASSED_CHECKS), TRAINED)
    assert within.promote is True and "(within max_coverage_drop 0.02)" in within.parts.no_regression.reasons[1]


def test_gate_passes_a_certified_threshold_by_the_first_champion_rule_and_refuses_low_coverage():
    passed = gate_decision(_report(0.9, 0.8, CERTIFIED), EvalConfig(), None, _checks(**PASSED_CHECKS), TRAINED)
    assert passed.promote is True
    assert passed.parts.no_regression.reasons == [
        "no champion yet; first-champion rule: every task type of the training set has >= 50 holdout rows and a confidence "
        "threshold certified at >= 95% agreement (reference) with confidence 90%, serving >= 50% of its in-scope test "
        "requests: met"
    ]
    assert passed.parts.dataset_checks.reasons == ["all 2 blocking checks recorded and passed for this version"]
    low = gate_decision(_report(0.9, 0.3, CERTIFIED), EvalConfig(min_coverage=0.5), None, _checks(**PASSED_CHECKS), TRAINED)
    assert low.promote is False
    assert low.parts.target_at_min_coverage.reasons == ["intent: coverage 30.0% at 95% agreement is below the minimum 50%"]
    # With no champion, the first-champion rule is what stops it: that part fails too, saying so.
    assert not low.parts.no_regression.passed and low.parts.no_regression.reasons[0].endswith("not met (see target_at_min_coverage)")


def test_gate_refuses_a_trained_task_type_without_enough_holdout_rows():
    good = _task("intent", 100, 0.9, 0.8, CERTIFIED)
    few = _task("slot_extraction", 12, 0.9, 0.8, CERTIFIED)
    trained = {"intent": 400, "slot_extraction": 90, "summarization": 60}
    report = _report(0.9, 0.8, CERTIFIED, tasks={"intent": good, "slot_extraction": few})
    decision = gate_decision(report, EvalConfig(min_holdout_rows_per_task=50), None, _checks(**PASSED_CHECKS), trained)
    assert decision.promote is False
    assert decision.parts.target_at_min_coverage.reasons == [
        "slot_extraction: 12 holdout rows for a task type with 90 training rows; at least 50 needed to evaluate it",
        "summarization: 0 holdout rows for a task type with 60 training rows; at least 50 needed to evaluate it",
    ]
    # The same report passes when the minimum is met by every trained task type.
    enough = gate_decision(report, EvalConfig(min_holdout_rows_per_task=10), None, _checks(**PASSED_CHECKS), {"intent": 400, "slot_extraction": 90})
    assert enough.promote is True
    untrained = gate_decision(report, EvalConfig(), None, _checks(**PASSED_CHECKS), {})
    assert untrained.parts.target_at_min_coverage.reasons == [
        "the dataset version's training set (sft) has no task types: nothing the candidate was trained for"
    ]


def test_gate_refuses_dataset_checks_not_all_recorded_for_the_version():
    from loop_pipeline.core.evaluation.gate import DatasetChecks

    report = _report(0.9, 0.8, CERTIFIED)
    partial = gate_decision(report, EvalConfig(), None, _checks(training_datasets_have_no_empty_targets=True), TRAINED)
    assert partial.promote is False
    assert partial.parts.dataset_checks.reasons == ["not recorded for this version: training_datasets_have_min_rows_per_task"]
    nothing = gate_decision(report, EvalConfig(), None, _checks(), TRAINED).parts.dataset_checks
    assert not nothing.passed and nothing.reasons == [f"not recorded for this version: {', '.join(ALL_CHECKS)}"]
    both = _checks(training_datasets_have_no_empty_targets=False)
    assert gate_decision(report, EvalConfig(), None, both, TRAINED).parts.dataset_checks.reasons == [
        "not recorded for this version: training_datasets_have_min_rows_per_task",
        "failed: training_datasets_have_no_empty_targets",
    ]
    undefined = gate_decision(report, EvalConfig(), None, DatasetChecks(required=(), results={"anything": True}), TRAINED)
    assert undefined.parts.dataset_checks.reasons == ["no blocking dataset checks are defined: nothing vouches for the dataset version"]


def test_costs_use_both_as_served_rates_unless_one_is_configured():
    from loop_pipeline.core.evaluation.run import costs

    throughput = _report(0.9, 0.8, CERTIFIED).throughput
    batched, single = costs(0.8, 0.01, 0.72, throughput, EvalConfig())
    assert (batched.local_requests_per_s, batched.throughput_source) == (10.0, "measured_batched")
    assert (single.local_requests_per_s, single.throughput_source) == (2.0, "measured_one_at_a_time")
    assert single.local_cost_per_request == pytest.approx(0.72 / 3600 / 2.0)
    assert single.blended_cost_ratio > batched.blended_cost_ratio
    fixed, fixed_single = costs(0.8, 0.01, 0.72, throughput, EvalConfig(local_requests_per_s=5.0))
    assert fixed == fixed_single and (fixed.local_requests_per_s, fixed.throughput_source) == (5.0, "configured")


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
        ({"local_price_per_hour": -1}, "local_price_per_hour: Input should be a valid dictionary (got -1)"),
        ({"local_price_per_hour": {"cpu": -1}}, "local_price_per_hour: Value error, device kinds need a name and a price >= 0: ['cpu']"),
        ({"min_holdout_rows_per_task": 0}, "min_holdout_rows_per_task: Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_eval_config_rejects_bad_values_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        EvalConfig.from_yaml(EVALUATION_YAML, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_price_is_the_evaluating_devices():
    config = EvalConfig.from_yaml(EVALUATION_YAML)
    assert config.price_per_hour("cpu") == config.local_price_per_hour["cpu"]
    # The GPU's name as core.models.device_kind writes it, priced by the longest matching key.
    assert config.price_per_hour("nvidia-h100-80gb-hbm3") == config.local_price_per_hour["nvidia-h100"]
    priced = EvalConfig(local_price_per_hour={"cpu": 0.1, "nvidia-a100": 3.0, "nvidia-a100-sxm4-80gb": 3.5})
    assert priced.price_per_hour("nvidia-a100-sxm4-80gb") == 3.5 and priced.price_per_hour("nvidia-a100-pcie-40gb") == 3.0
    with pytest.raises(ValueError, match=r"no price for device 'nvidia-l40s' \(known: cpu, nvidia-a100, nvidia-a100-sxm4-80gb\); add one"):
        priced.price_per_hour("nvidia-l40s")


def test_frontier_cost_is_the_mean_over_the_holdouts_priced_traces():
    from loop_pipeline.core.evaluation import frontier_cost

    traces = pl.DataFrame({"trace_id": ["a", "b", "c", "d"], "cost_usd": [0.01, None, 0.03, 1.0], "model": ["x"] * 4})
    assert frontier_cost(traces, pl.Series(["a", "b", "c"])).per_request == pytest.approx(0.02)
    with pytest.raises(ValueError, match="no frontier cost"):
        frontier_cost(traces, pl.Series(["b"]))


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
    # The as-served throughput and both costs survive the round trip, each cost naming its rate's source.
    assert again.report.throughput.one_at_a_time_requests_per_s == 2.0 and again.report.requests_per_s == 10.0
    assert (again.report.cost.throughput_source, again.report.cost_one_at_a_time.throughput_source) == ("measured_batched", "measured_one_at_a_time")
    summary = eval_summary(again)  # its figures: test_evaluation_answers.py
    task = summary["tasks"]["intent"]
    assert summary["certified_against"] == "reference" and summary["requests_per_s"] == 10.0
    assert (task["coverage_at_target"], task["agreement_frontier"], task["agreement_reference"]) == (0.8, 0.7, 0.72)
    assert task["simulated_gold_accuracy"] is None  # no simulator gold in this report
    assert summary["blended_cost_ratio_one_at_a_time"] > summary["blended_cost_ratio"]
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
