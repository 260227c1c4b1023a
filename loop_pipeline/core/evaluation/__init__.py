"""Holdout evaluation: does the candidate agree with the frontier, how sure is it, what does it save,
and may it replace the champion?

- ``config``: :class:`EvalConfig` (configs/evaluation.yaml).
- ``metrics``: agreement per task kind; ``thresholds``: the confidence threshold with a guarantee;
  ``answers``: scoring answers per task type; ``cost``: the blended cost ratio.
- ``gate``: the paired comparison with the champion and the promotion gate's decision.
- ``candidate`` / ``run``: what to evaluate and the evaluation end to end; ``report`` / ``plots``:
  its results, figures and MLflow run; ``outcome``: the typed stage results and ``loop eval``'s
  summary; ``promotion``: registering a candidate that passed.

Nothing here reads the environment or loads a config: callers pass them in.
"""

from loop_pipeline.core.evaluation.answers import evaluate_answers, split_of
from loop_pipeline.core.evaluation.candidate import Candidate, champion_candidate, read_holdout
from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.cost import CostEstimate, FrontierCost, blended_cost, frontier_cost, served_share
from loop_pipeline.core.evaluation.gate import GateDecision, GatePart, PairedComparison, gate_decision, paired_regression
from loop_pipeline.core.evaluation.metrics import agrees, normalize_label, rouge_l_f1
from loop_pipeline.core.evaluation.outcome import EvaluationOutcome, RegisteredModel, eval_summary
from loop_pipeline.core.evaluation.promotion import register_and_promote
from loop_pipeline.core.evaluation.report import EvalReport, TaskReport
from loop_pipeline.core.evaluation.run import Evaluation, evaluate_candidate, run_evaluation
from loop_pipeline.core.evaluation.thresholds import ThresholdSelection, binomial_tail, choose_threshold, min_testable

__all__ = [
    "Candidate",
    "CostEstimate",
    "EvalConfig",
    "EvalReport",
    "Evaluation",
    "FrontierCost",
    "EvaluationOutcome",
    "GateDecision",
    "GatePart",
    "PairedComparison",
    "RegisteredModel",
    "TaskReport",
    "ThresholdSelection",
    "agrees",
    "binomial_tail",
    "blended_cost",
    "champion_candidate",
    "choose_threshold",
    "eval_summary",
    "evaluate_answers",
    "evaluate_candidate",
    "frontier_cost",
    "gate_decision",
    "min_testable",
    "normalize_label",
    "paired_regression",
    "read_holdout",
    "register_and_promote",
    "rouge_l_f1",
    "run_evaluation",
    "served_share",
    "split_of",
]
