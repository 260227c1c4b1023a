"""Past the gate: a registry version for the evaluated training run, tagged with its evidence;
alias ``champion`` moves to it (the old champion becomes ``previous``)."""

from __future__ import annotations

import json

from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.outcome import EvaluationOutcome, RegisteredModel
from loop_pipeline.core.registry import RegistryError, current_champion, promote, register_version
from loop_pipeline.core.tracking import TrackingTarget


def _version_tags(outcome: EvaluationOutcome) -> dict[str, str]:
    report, trained = outcome.report, outcome.trained
    return {
        "dataset_version": report.dataset_version,
        "base_model": trained.base_model,
        "thresholds": json.dumps({name: t.threshold for name, t in report.tasks.items()}),
        "coverage": f"{report.coverage:.4f}",
        "agreement": json.dumps({name: t.served_agreement for name, t in report.tasks.items()}),
        "target_agreement": str(report.target_agreement),
        "cost_ratio": f"{report.cost.blended_cost_ratio:.4f}",
        "system_prompt": outcome.candidate.system_prompt,
        "merged_path": trained.merged_path or "",
        "adapter_path": trained.adapter_path or "",
        "eval_run_id": outcome.mlflow_run_id or "",
    }


def register_and_promote(outcome: EvaluationOutcome, tracking: TrackingTarget, config: EvalConfig) -> RegisteredModel:
    """Register the lineage's training run and make it the champion. Refuses an evaluation of
    anything else (an explicit model folder, another prompt transform) and one the gate refused."""
    if not outcome.from_lineage:
        raise RegistryError(
            f"the evaluation was of {outcome.candidate.label or outcome.candidate.model_path}, not the lora_adapter "
            "training run: only the lineage's candidate can be registered"
        )
    if not outcome.decision.promote:
        raise RegistryError("the gate refused this candidate: " + "; ".join(outcome.decision.failing_reasons()))
    run_id = outcome.trained.mlflow_run_id
    if not run_id:
        raise RegistryError("the training run has no MLflow run id: nothing to register a version from")
    source = f"runs:/{run_id}/{'merged_model' if outcome.trained.merged_path else 'adapter'}"
    tags = _version_tags(outcome)
    client = tracking.client()
    champion = current_champion(client, config.model_name)
    if champion is not None and client.get_model_version(config.model_name, champion).run_id == run_id:
        # Re-evaluating the champion's own training run: nothing new to register.
        return RegisteredModel(
            model_name=config.model_name, champion=champion, previous=None, reason="already the champion",
            unchanged=True, source=source, tags=tags,
        )
    version = register_version(client, config.model_name, source, run_id, tags)
    report = outcome.report
    reason = (
        f"gate passed: coverage {report.coverage:.1%} at {report.target_agreement:.0%} agreement, "
        f"cost ratio {report.cost.blended_cost_ratio:.1%} (dataset {report.dataset_version})"
    )
    move = promote(client, config.model_name, version, reason)
    return RegisteredModel(**move.to_dict(), unchanged=False, source=source, tags=tags)
