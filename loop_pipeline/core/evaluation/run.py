"""One candidate, end to end: generate on the holdout, score, compare with the champion, decide
the gate, write the report folder and log an MLflow run (the ``holdout_eval`` asset calls this).

Answers come from batched greedy generation (left padding) with prompts transformed the way the
model was trained (``prepare_prompt``). Confidence per example: the probability the model gave its
own answer (the generated tokens' probabilities up to and including the end of turn).
torch / transformers are imported inside the model functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import polars as pl

from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.evaluation.answers import evaluate_answers
from loop_pipeline.core.evaluation.candidate import Candidate, champion_candidate, read_holdout
from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.cost import blended_cost, served_share
from loop_pipeline.core.evaluation.gate import PairedComparison, gate_decision, paired_regression
from loop_pipeline.core.evaluation.outcome import EvaluationOutcome
from loop_pipeline.core.evaluation.plots import save_plots
from loop_pipeline.core.evaluation.report import EvalReport, log_evaluation
from loop_pipeline.core.models import generate_with_confidence, load_for_inference, prepare_prompt
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.core.tracking import TrackingTarget

Progress = Callable[[str], None]
ChampionLoader = Callable[[object, str, str], Candidate]  # (client, model name, version) -> Candidate


@dataclass(frozen=True)
class Evaluation:
    report: EvalReport
    per_example: pl.DataFrame  # trace_id, task_type, answer, confidence, agrees, served, split, ...


def _quiet(_: str) -> None:
    """No progress output."""


def evaluate_candidate(
    candidate: Candidate,
    holdout: pl.DataFrame,
    tasks: TasksConfig,
    config: EvalConfig,
    frontier_cost_per_request: float,
    dataset_version: str,
    progress: Progress | None = None,
) -> Evaluation:
    say = progress or _quiet
    prompts = [prepare_prompt(p, candidate.system_prompt) for p in holdout.get_column("prompt").to_list()]
    say(f"evaluating {candidate.label or candidate.model_path} on {len(prompts)} holdout requests (system prompt: {candidate.system_prompt})")
    model, tokenizer = load_for_inference(candidate.model_path, candidate.adapter_path, config.dtype)
    generations = generate_with_confidence(
        model, tokenizer, prompts, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens, progress=say
    )
    reports, per_example = evaluate_answers(holdout, generations.texts, generations.confidence, tasks, config)
    throughput = config.local_requests_per_s or generations.requests_per_s
    cost = blended_cost(served_share(per_example), frontier_cost_per_request, config.local_price_per_hour, throughput)
    in_scope_test = per_example.filter((pl.col("split") == "test") & ~pl.col("out_of_scope"))
    report = EvalReport(
        model=candidate.label or candidate.model_path,
        dataset_version=dataset_version,
        n=holdout.height,
        target_agreement=config.target_agreement,
        requests_per_s=round(generations.requests_per_s, 3),
        coverage=float(in_scope_test.get_column("served").mean()) if in_scope_test.height else 0.0,
        cost=cost,
        tasks=reports,
    )
    return Evaluation(report, per_example)


def _compare_with_champion(
    candidate: Evaluation, run: Callable[[Candidate], Evaluation], tracking: TrackingTarget, config: EvalConfig,
    champion: ChampionLoader, say: Progress,
) -> PairedComparison | None:
    """The champion on the same rows, paired with the candidate; None when there is no champion."""
    from loop_pipeline.core.registry import current_champion

    client = tracking.client()
    version = current_champion(client, config.model_name)
    if version is None:
        return None
    incumbent = champion(client, config.model_name, version)
    say(f"paired comparison with the champion, {incumbent.label}")
    comparison = paired_regression(candidate.per_example, run(incumbent).per_example, config.regression_alpha)
    return comparison.model_copy(update={"champion_version": version})


def _say_results(say: Progress, outcome: EvaluationOutcome) -> None:
    for name, task in outcome.report.tasks.items():
        say(
            f"  {name}: agreement {task.agreement:.3f}, threshold {task.threshold}, coverage {task.coverage:.3f} "
            f"(served agreement {task.served_agreement}), out-of-scope escalated {task.out_of_scope_escalated}"
        )
    verdict = "promote" if outcome.decision.promote else "refuse"
    say(f"  blended cost ratio {outcome.report.cost.blended_cost_ratio:.4f}; gate: {verdict}")


def run_evaluation(
    trained: TrainedAdapter,
    config: EvalConfig,
    tasks: TasksConfig,
    *,
    tracking: TrackingTarget,
    frontier_cost: Callable[[pl.Series], float],
    dataset_checks: Mapping[str, bool] | None,
    output_dir: Path,
    candidate: Candidate | None = None,
    champion: ChampionLoader = champion_candidate,
    progress: Progress | None = None,
) -> EvaluationOutcome:
    """Evaluate ``candidate`` (default: ``trained`` itself) on the holdout of ``trained``'s dataset
    version, and the champion paired on the same rows; decide the gate (``dataset_checks``: the
    blocking dataset checks' results for that version, None when none were recorded); write
    ``output_dir`` (report.json, per_example.parquet, plots) and log an MLflow run."""
    say = progress or _quiet
    version = trained.dataset_version
    holdout = read_holdout(Path(trained.dataset_path), config.max_examples)
    cost = frontier_cost(holdout.get_column("trace_id"))
    from_lineage = candidate is None
    candidate = candidate or Candidate.from_adapter(trained)

    def run(model: Candidate) -> Evaluation:
        return evaluate_candidate(model, holdout, tasks, config, cost, version, progress=say)

    evaluation = run(candidate)
    regression = _compare_with_champion(evaluation, run, tracking, config, champion, say)
    decision = gate_decision(evaluation.report, config, regression, dataset_checks)
    output_dir.mkdir(parents=True, exist_ok=True)
    plots = save_plots(evaluation.report, output_dir)
    evaluation.per_example.write_parquet(output_dir / "per_example.parquet")
    outcome = EvaluationOutcome(
        report=evaluation.report, decision=decision, regression=regression, candidate=candidate, trained=trained,
        from_lineage=from_lineage, report_dir=str(output_dir), plots=[str(p) for p in plots],
    )
    report_json = json.dumps(outcome.model_dump(mode="json", exclude={"mlflow_run_id"}), indent=2)
    (output_dir / "report.json").write_text(report_json + "\n", encoding="utf-8")
    training_run_id = trained.mlflow_run_id if from_lineage else None
    run_id = log_evaluation(tracking, evaluation.report, decision.promote, output_dir, training_run_id)
    outcome = outcome.model_copy(update={"mlflow_run_id": run_id})
    _say_results(say, outcome)
    return outcome
