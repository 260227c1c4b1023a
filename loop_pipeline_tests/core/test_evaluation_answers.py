"""Scoring answers on a holdout of production traffic (issue 13): agreement with the frontier on
every row and with the curated reference where there is one, certification on the configured
reference, in-scope from the reference (never the simulator's gold), simulated accuracy reported
apart; and what `loop eval`, MLflow and the plots show of it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from loop_pipeline.core.evaluation import EvalConfig, evaluate_answers
from loop_pipeline.core.tasks import TasksConfig, TaskSpec

TASKS = TasksConfig(tasks={"intent": TaskSpec(name="intent", kind="classification", escalation_labels=("out_of_scope",))})
SOURCES = ("review", "edit", "accepted_scored", "frontier_unverified")
# Fields the gate, the cost and the router read: none may depend on the simulator's gold.
DECISION_FIELDS = (
    "threshold", "selection", "coverage", "served_agreement", "out_of_scope_n", "out_of_scope_escalated",
    "n_in_scope", "calibration_n", "test_n", "agreement_frontier", "agreement_reference", "confusions",
)


def traffic(n: int = 1200) -> tuple[pl.DataFrame, list[str], np.ndarray]:
    """A holdout where the frontier is sometimes wrong (the curated reference corrects it), a tenth
    of the traffic is out of scope by its reference, and the simulator's gold disagrees with the
    reference on some rows (in both directions of scope); and a candidate's answers and confidence."""
    rng = np.random.default_rng(7)
    rows, answers, confidence = [], [], []
    for i in range(n):
        source = SOURCES[i % 4]
        oos = i % 10 == 3
        frontier = "out_of_scope" if oos else "balance"
        # The frontier was wrong and a curated source says so.
        reference = "transfer" if source != "frontier_unverified" and i % 9 == 0 and not oos else frontier
        gold = "out_of_scope" if i % 17 == 0 else ("balance" if oos and i % 3 == 0 else reference)
        wrong = rng.random() < 0.08
        answer = "freeze_account" if wrong else ("out_of_scope" if oos else reference)
        rows.append({"trace_id": f"t{i:05d}", "task_type": "intent", "reference": reference, "reference_source": source,
                     "frontier_output": frontier, "sim_gold": gold, "group_key": f"user_id:{i % 50}"})
        answers.append(answer)
        # Less sure where the frontier was corrected, least sure where it is wrong itself.
        confidence.append(rng.uniform(0.2, 0.6) if wrong else rng.uniform(0.65, 0.75) if reference != frontier else rng.uniform(0.8, 1.0))
    return pl.DataFrame(rows), answers, np.array(confidence)


def test_the_simulators_gold_changes_no_decision():
    holdout, answers, confidence = traffic()
    with_gold, per_example = evaluate_answers(holdout, answers, confidence, TASKS, EvalConfig())
    report = with_gold["intent"]
    assert report.threshold is not None and 0 < report.coverage < 1 and report.out_of_scope_n > 0
    assert report.sim_accuracy_routed is not None and report.sim_accuracy_all_frontier is not None
    without = [
        holdout.drop("sim_gold"),
        holdout.with_columns(pl.lit(None, dtype=pl.String).alias("sim_gold")),
        holdout.with_columns(pl.lit("out_of_scope").alias("sim_gold")),  # gold that says everything is out of scope
    ]
    for variant in without:
        other, other_rows = evaluate_answers(variant, answers, confidence, TASKS, EvalConfig())
        for field in DECISION_FIELDS:
            assert getattr(other["intent"], field) == getattr(report, field), field
        for column in ("agrees", "served", "out_of_scope", "split"):
            assert other_rows.get_column(column).equals(per_example.get_column(column)), column
    assert other["intent"].sim_accuracy_routed is not None  # the last variant has gold: measured, not decisive
    for variant in without[:2]:
        other, _ = evaluate_answers(variant, answers, confidence, TASKS, EvalConfig())
        assert other["intent"].sim_accuracy_routed is None and other["intent"].sim_accuracy_all_frontier is None


def test_agreement_with_the_frontier_on_all_rows_and_with_the_reference_where_curated():
    holdout, answers, confidence = traffic()
    reports, per_example = evaluate_answers(holdout, answers, confidence, TASKS, EvalConfig())
    report = reports["intent"]
    answer = np.array(answers)
    frontier = holdout.get_column("frontier_output").to_numpy()
    reference = holdout.get_column("reference").to_numpy()
    curated = holdout.get_column("reference_source").to_numpy() != "frontier_unverified"
    assert report.n == holdout.height and report.n_with_reference == int(curated.sum())
    assert report.reference_sources == {s: holdout.height // 4 for s in sorted(SOURCES)}
    assert report.agreement_frontier == pytest.approx(float((answer == frontier).mean()))
    assert report.agreement_reference == pytest.approx(float((answer[curated] == reference[curated]).mean()))
    # The candidate follows the corrected references, so it agrees more with them than with the frontier.
    assert report.agreement_reference > report.agreement_frontier
    assert report.certified_against == "reference"
    assert per_example.get_column("agrees").to_list() == list(answer == reference)
    assert report.n_in_scope == int((reference != "out_of_scope").sum())
    for confusion in report.confusions:
        assert confusion.expected in {"balance", "transfer", "out_of_scope"} and confusion.candidate == "freeze_account"


def test_certifying_against_the_frontier_compares_with_its_output():
    holdout, answers, confidence = traffic()
    by_reference, _ = evaluate_answers(holdout, answers, confidence, TASKS, EvalConfig())
    by_frontier, per_example = evaluate_answers(holdout, answers, confidence, TASKS, EvalConfig(certify_against="frontier"))
    report = by_frontier["intent"]
    frontier = holdout.get_column("frontier_output").to_list()
    assert report.certified_against == "frontier"
    assert per_example.get_column("agrees").to_list() == [a == f for a, f in zip(answers, frontier)]
    served_test = per_example.filter(pl.col("served") & (pl.col("split") == "test"))
    expected = float(np.mean([a == f for a, f in served_test.select("answer", "frontier_output").iter_rows()]))
    assert report.served_agreement == pytest.approx(expected)
    # Against the frontier the corrected rows disagree: the threshold must leave them out.
    assert report.threshold is not None and report.threshold > by_reference["intent"].threshold
    assert report.coverage < by_reference["intent"].coverage
    # Agreement figures are reported the same whichever is certified; scope comes from the reference.
    for field in ("agreement_frontier", "agreement_reference", "n_in_scope", "out_of_scope_n"):
        assert getattr(report, field) == getattr(by_reference["intent"], field), field
    assert {c.expected for c in report.confusions} <= {"balance", "out_of_scope"}  # never a corrected reference


def test_simulated_accuracy_of_the_routed_system_and_of_the_frontier_alone():
    holdout, answers, confidence = traffic()
    reports, per_example = evaluate_answers(holdout, answers, confidence, TASKS, EvalConfig())
    test = per_example.filter(pl.col("split") == "test")
    routed = [(a if s else f) == g for a, s, f, g in test.select("answer", "served", "frontier_output", "sim_gold").iter_rows()]
    frontier = [f == g for f, g in test.select("frontier_output", "sim_gold").iter_rows()]
    report = reports["intent"]
    assert report.sim_accuracy_routed == pytest.approx(float(np.mean(routed)))
    assert report.sim_accuracy_all_frontier == pytest.approx(float(np.mean(frontier)))


def test_escalation_answers_are_never_served_and_out_of_scope_comes_from_the_reference():
    n = 400
    oos = [i % 5 == 0 for i in range(n)]
    label = ["out_of_scope" if o else "balance" for o in oos]
    holdout = pl.DataFrame(
        {
            "trace_id": [f"t{i:04d}" for i in range(n)],
            "task_type": ["intent"] * n,
            "reference": label,
            "reference_source": ["frontier_unverified"] * n,
            "frontier_output": label,
            # The simulator's gold says the opposite about scope on every row: it must not matter.
            "sim_gold": ["balance" if o else "out_of_scope" for o in oos],
        }
    )
    reports, per_example = evaluate_answers(holdout, label, np.full(n, 0.99), TASKS, EvalConfig())
    report = reports["intent"]
    assert report.threshold is not None
    assert report.coverage == 1.0 and report.served_agreement == 1.0
    assert report.out_of_scope_escalated == 1.0  # answered out_of_scope: escalated, not served
    assert per_example.get_column("out_of_scope").to_list() == oos
    assert not per_example.filter(pl.col("out_of_scope")).get_column("served").any()
    assert report.calibration_n + report.test_n == n
    assert report.n_with_reference == 0 and report.agreement_reference is None and report.agreement_frontier == 1.0
    assert report.sim_accuracy_all_frontier == 0.0


def test_a_holdout_without_its_reference_columns_is_refused_in_one_line():
    holdout, answers, confidence = traffic(40)
    with pytest.raises(ValueError, match=r"^the holdout lacks reference_source, frontier_output: rebuild"):
        evaluate_answers(holdout.drop("reference_source", "frontier_output"), answers, confidence, TASKS, EvalConfig())


# ---------------------------------------------------------------------------------------------
# What `loop eval`, the MLflow run and the plots show


def _outcome(tmp_path):
    from loop_pipeline.core.contracts import TrainedAdapter
    from loop_pipeline.core.evaluation import Candidate, EvalReport, EvaluationOutcome, GatePart, blended_cost
    from loop_pipeline.core.evaluation.gate import GateDecision, GateParts
    from loop_pipeline.core.evaluation.report import Throughput

    holdout, answers, confidence = traffic()
    reports, _ = evaluate_answers(holdout, answers, confidence, TASKS, EvalConfig())
    throughput = Throughput(device_kind="cpu", load_seconds=2.5, one_at_a_time_requests_per_s=4.0,
                            batched_requests_per_s=40.0, batch_size=32, one_at_a_time_n=100)
    report = EvalReport(
        model="m", dataset_version="ds-x", n=holdout.height, target_agreement=0.95, certified_against="reference",
        coverage=reports["intent"].coverage, throughput=throughput,
        cost=blended_cost(served_share=0.8, frontier_cost_per_request=0.01, local_price_per_hour=0.1, local_requests_per_s=40.0),
        cost_one_at_a_time=blended_cost(served_share=0.8, frontier_cost_per_request=0.01, local_price_per_hour=0.1, local_requests_per_s=4.0),
        tasks=reports,
    )
    part = GatePart(passed=True, reasons=["why"])
    trained = TrainedAdapter(
        adapter_path=str(tmp_path / "adapter"), base_model="tiny", base_model_path=str(tmp_path / "base"), dataset_version="ds-x",
        dataset_path=str(tmp_path / "ds-x"), train_config="tiny.yaml", steps=10, sft_steps=10, negative_stage="none",
        negative_steps=0, tokens=100, tokens_per_s=10.0, seconds_per_step=0.1, train_seconds=1.0, peak_rss_mb=100.0,
        dtype="float32", device="cpu", system_prompt="drop", merged_path=None, mlflow_run_id="abc",
    )
    return EvaluationOutcome(
        report=report,
        decision=GateDecision(promote=True, parts=GateParts(**{name: part for name in GateParts.model_fields})),
        regression=None, candidate=Candidate.from_adapter(trained), trained=trained, from_lineage=True,
        report_dir=str(tmp_path), plots=[], mlflow_run_id="eval-run",
    )


def test_loop_eval_summary_shows_both_agreements_the_simulated_accuracy_apart_and_both_costs(tmp_path):
    from loop_pipeline.core.evaluation import eval_summary

    outcome = _outcome(tmp_path)
    summary = eval_summary(outcome)
    task, report = summary["tasks"]["intent"], outcome.report.tasks["intent"]
    assert summary["certified_against"] == "reference"
    assert task["agreement_frontier"] == report.agreement_frontier and task["agreement_reference"] == report.agreement_reference
    assert task["n_with_reference"] == 900 and task["reference_sources"]["frontier_unverified"] == 300
    assert task["coverage_at_target"] == report.coverage
    assert task["simulated_gold_accuracy"] == {"routed": report.sim_accuracy_routed, "all_frontier": report.sim_accuracy_all_frontier}
    assert "agreement" not in task and "accuracy_vs_gold" not in task
    assert summary["blended_cost_ratio"] == outcome.report.cost.blended_cost_ratio
    assert summary["blended_cost_ratio_one_at_a_time"] > summary["blended_cost_ratio"]
    assert summary["requests_per_s"] == 40.0
    assert summary["throughput"] == {
        "device_kind": "cpu", "batched_requests_per_s": 40.0, "batch_size": 32, "one_at_a_time_requests_per_s": 4.0,
        "load_seconds": 2.5, "local_price_per_hour": 0.1,
    }


def test_the_mlflow_run_and_the_plots_carry_the_new_figures(tmp_path):
    from mlflow.tracking import MlflowClient

    from loop_pipeline.core.evaluation.plots import save_plots
    from loop_pipeline.core.evaluation.report import log_evaluation
    from loop_pipeline.core.tracking import TrackingTarget

    outcome = _outcome(tmp_path)
    folder = tmp_path / "report"
    plots = save_plots(outcome.report, folder)
    assert [p.name for p in plots] == ["coverage_agreement.png", "worst_confusions.png"]
    assert all(p.stat().st_size > 1000 for p in plots)
    tracking = TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    run_id = log_evaluation(tracking, outcome.report, True, folder, "abc")
    run = MlflowClient(tracking_uri=tracking.tracking_uri).get_run(run_id)
    task = outcome.report.tasks["intent"]
    metrics, params = run.data.metrics, run.data.params
    assert metrics["intent/agreement_frontier"] == pytest.approx(task.agreement_frontier)
    assert metrics["intent/agreement_reference"] == pytest.approx(task.agreement_reference)
    assert metrics["intent/sim_accuracy_routed"] == pytest.approx(task.sim_accuracy_routed)
    assert metrics["blended_cost_ratio_one_at_a_time"] == pytest.approx(outcome.report.cost_one_at_a_time.blended_cost_ratio)
    assert metrics["load_seconds"] == 2.5 and metrics["one_at_a_time_requests_per_s"] == 4.0
    assert params["certified_against"] == "reference" and params["device_kind"] == "cpu"
    assert "intent/agreement" not in metrics
