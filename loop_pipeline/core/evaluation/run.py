"""One candidate, end to end: generate on the holdout, score, compare with the champion, decide
the gate, write the report folder and log an MLflow run (the ``holdout_eval`` asset calls this).

The holdout is answered as the router serves it (``generate_as_served``): its prompts in arrival
order (by ``timestamp`` when the holdout has one, else as stored: never sorted by length),
transformed the way the model was trained (``prepare_prompt``), greedy, in consecutive micro-batches
of ``batch_size`` (the router's); the first prompts are also timed one at a time. Those timings,
model load excluded (and reported), give the requests/s the cost uses; the price per hour is the
evaluating device's (``EvalConfig.price_per_hour``). Confidence per example: the probability the
model gave its own answer (the generated tokens' probabilities up to and including the end of turn).
torch / transformers are imported inside the model functions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.evaluation.answers import evaluate_answers
from loop_pipeline.core.evaluation.candidate import Candidate, champion_candidate, read_holdout
from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.cost import CostEstimate, FrontierCost, blended_cost, served_share
from loop_pipeline.core.evaluation.gate import DatasetChecks, PairedComparison, gate_decision, paired_regression
from loop_pipeline.core.evaluation.outcome import EvaluationOutcome
from loop_pipeline.core.evaluation.plots import save_plots
from loop_pipeline.core.evaluation.report import EvalReport, Throughput, log_evaluation
from loop_pipeline.core.models import device_kind, generate_as_served, load_for_inference, prepare_prompt
from loop_pipeline.core.storage import write_bytes_atomic, write_parquet_atomic
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.core.tracking import TrackingTarget

Progress = Callable[[str], None]
ChampionLoader = Callable[[object, str, str], Candidate]  # (client, model name, version) -> Candidate

# Requests timed one at a time (the first ones in arrival order): a sample on a CPU, where each
# takes a fraction of a second; more where the device is fast. Recorded as one_at_a_time_n.
ONE_AT_A_TIME_SAMPLE = {"cpu": 64}
ONE_AT_A_TIME_SAMPLE_OTHER_DEVICES = 256


@dataclass(frozen=True)
class Evaluation:
    report: EvalReport
    per_example: pl.DataFrame  # trace_id, task_type, answer, confidence, agrees, served, split, ...


def _quiet(_: str) -> None:
    """No progress output."""


def arrival_order(holdout: pl.DataFrame) -> pl.DataFrame:
    """The holdout in the order its requests arrived: by ``timestamp`` when it has one, else as stored
    (by trace id: unrelated to prompt length, unlike a length-sorted batching)."""
    return holdout.sort("timestamp", maintain_order=True) if "timestamp" in holdout.columns else holdout


def one_at_a_time_sample(kind: str) -> int:
    return ONE_AT_A_TIME_SAMPLE.get(kind, ONE_AT_A_TIME_SAMPLE_OTHER_DEVICES)


def costs(
    share: float, frontier: float | FrontierCost, price_per_hour: float, throughput: Throughput, config: EvalConfig
) -> tuple[CostEstimate, CostEstimate]:
    """At the router's batching and one at a time; a configured local_requests_per_s overrides both.
    ``frontier``: the mean frontier cost per request, with the rows it read when it is a FrontierCost."""
    counted = frontier if isinstance(frontier, FrontierCost) else None
    per_request = counted.per_request if counted is not None else float(frontier)
    if config.local_requests_per_s is not None:
        fixed = blended_cost(share, per_request, price_per_hour, config.local_requests_per_s, "configured", counted)
        return fixed, fixed
    return (
        blended_cost(share, per_request, price_per_hour, throughput.batched_requests_per_s, "measured_batched", counted),
        blended_cost(share, per_request, price_per_hour, throughput.one_at_a_time_requests_per_s, "measured_one_at_a_time", counted),
    )


def evaluate_candidate(
    candidate: Candidate,
    holdout: pl.DataFrame,
    tasks: TasksConfig,
    config: EvalConfig,
    frontier_cost_per_request: float | FrontierCost,
    dataset_version: str,
    progress: Progress | None = None,
) -> Evaluation:
    say = progress or _quiet
    holdout = arrival_order(holdout)
    prompts = [prepare_prompt(p, candidate.system_prompt) for p in holdout.get_column("prompt").to_list()]
    say(f"evaluating {candidate.label or candidate.model_path} on {len(prompts)} holdout requests (system prompt: {candidate.system_prompt})")
    started = time.perf_counter()
    model, tokenizer = load_for_inference(candidate.model_path, candidate.adapter_path, config.dtype)
    load_seconds = time.perf_counter() - started
    kind = device_kind(model)
    price = config.price_per_hour(kind)  # before generating: a device with no price stops here
    generations = generate_as_served(
        model, tokenizer, prompts, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
        one_at_a_time_n=one_at_a_time_sample(kind), progress=say,
    )
    reports, per_example = evaluate_answers(holdout, generations.texts, generations.confidence, tasks, config)
    throughput = Throughput(
        device_kind=kind,
        load_seconds=round(load_seconds, 3),
        one_at_a_time_requests_per_s=round(generations.one_at_a_time_requests_per_s, 3),
        batched_requests_per_s=round(generations.batched_requests_per_s, 3),
        batch_size=config.batch_size,
        one_at_a_time_n=generations.one_at_a_time_n,
    )
    cost, cost_one_at_a_time = costs(served_share(per_example), frontier_cost_per_request, price, throughput, config)
    in_scope_test = per_example.filter((pl.col("split") == "test") & ~pl.col("out_of_scope"))
    report = EvalReport(
        model=candidate.label or candidate.model_path,
        dataset_version=dataset_version,
        n=holdout.height,
        target_agreement=config.target_agreement,
        certified_against=config.certify_against,
        coverage=float(in_scope_test.get_column("served").mean()) if in_scope_test.height else 0.0,
        throughput=throughput,
        cost=cost,
        cost_one_at_a_time=cost_one_at_a_time,
        tasks=reports,
    )
    return Evaluation(report, per_example)


def trained_task_rows(version_dir: Path) -> dict[str, int]:
    """Rows per task type of the dataset version's training set (sft.parquet): what the candidate
    was trained for, so what the gate must see evaluated."""
    path = Path(version_dir) / "sft.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no training set in {version_dir} (sft.parquet): cannot tell which task types the candidate was trained for")
    counts = pl.read_parquet(path, columns=["task_type"]).group_by("task_type").len("rows")
    return {str(task): int(rows) for task, rows in counts.iter_rows()}


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
    evaluated = run(incumbent)
    comparison = paired_regression(candidate.per_example, evaluated.per_example, config.regression_alpha)
    mine, theirs = candidate.report.coverage, evaluated.report.coverage
    return comparison.model_copy(update={
        "champion_version": version, "candidate_coverage": mine, "champion_coverage": theirs,
        "coverage_regression": mine < theirs - config.max_coverage_drop,
    })


def _say_results(say: Progress, outcome: EvaluationOutcome) -> None:
    report = outcome.report
    for name, task in report.tasks.items():
        frontier = "n/a" if task.agreement_frontier is None else f"{task.agreement_frontier:.3f}"
        say(
            f"  {name}: agreement with the frontier {frontier} (n={task.n_with_frontier}), with the reference "
            f"{task.agreement_reference}, threshold {task.threshold}, coverage {task.coverage:.3f} (served agreement "
            f"{task.served_agreement}), out-of-scope escalated {task.out_of_scope_escalated}"
        )
    t = report.throughput
    say(
        f"  {t.device_kind}: {t.batched_requests_per_s:.2f} requests/s in micro-batches of {t.batch_size}, "
        f"{t.one_at_a_time_requests_per_s:.2f} one at a time ({t.one_at_a_time_n} timed), load {t.load_seconds:.1f} s"
    )
    verdict = "promote" if outcome.decision.promote else "refuse"
    say(
        f"  blended cost ratio {report.cost.blended_cost_ratio:.4f} batched, {report.cost_one_at_a_time.blended_cost_ratio:.4f} "
        f"one at a time ({report.cost.throughput_source}); gate: {verdict}"
    )


def run_evaluation(
    trained: TrainedAdapter,
    config: EvalConfig,
    tasks: TasksConfig,
    *,
    tracking: TrackingTarget,
    frontier_cost: Callable[[pl.Series], float | FrontierCost],
    dataset_checks: DatasetChecks,
    output_dir: Path,
    candidate: Candidate | None = None,
    champion: ChampionLoader = champion_candidate,
    progress: Progress | None = None,
) -> EvaluationOutcome:
    """Evaluate ``candidate`` (default: ``trained`` itself) on the holdout of ``trained``'s dataset
    version, and the champion paired on the same rows; decide the gate (``dataset_checks``: the
    blocking dataset checks and the results recorded for that version; the task types trained on
    come from the version's sft.parquet); write ``output_dir`` (report.json, per_example.parquet,
    plots) and log an MLflow run. A registry error reading the champion stops the evaluation."""
    say = progress or _quiet
    version = trained.dataset_version
    holdout = read_holdout(Path(trained.dataset_path), config.max_examples)
    trained_tasks = trained_task_rows(Path(trained.dataset_path))
    cost = frontier_cost(holdout.get_column("trace_id"))
    from_lineage = candidate is None
    candidate = candidate or Candidate.from_adapter(trained)

    def run(model: Candidate) -> Evaluation:
        return evaluate_candidate(model, holdout, tasks, config, cost, version, progress=say)

    evaluation = run(candidate)
    regression = _compare_with_champion(evaluation, run, tracking, config, champion, say)
    decision = gate_decision(evaluation.report, config, regression, dataset_checks, trained_tasks)
    output_dir.mkdir(parents=True, exist_ok=True)
    plots = save_plots(evaluation.report, output_dir)
    write_parquet_atomic(output_dir / "per_example.parquet", evaluation.per_example)
    outcome = EvaluationOutcome(
        report=evaluation.report, decision=decision, regression=regression, candidate=candidate, trained=trained,
        from_lineage=from_lineage, report_dir=str(output_dir), plots=[str(p) for p in plots],
    )
    report_json = json.dumps(outcome.model_dump(mode="json", exclude={"mlflow_run_id"}), indent=2)
    write_bytes_atomic(output_dir / "report.json", (report_json + "\n").encode("utf-8"))
    training_run_id = trained.mlflow_run_id if from_lineage else None
    run_id = log_evaluation(tracking, evaluation.report, decision.promote, output_dir, training_run_id)
    outcome = outcome.model_copy(update={"mlflow_run_id": run_id})
    _say_results(say, outcome)
    return outcome
