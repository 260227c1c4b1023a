"""Past the gate: a registry version for the evaluated training run, tagged with its evidence and
its :class:`~loop_pipeline.core.serving.ServingSpec`; alias ``champion`` moves to it (the old
champion becomes ``previous``).

The version's source is an MLflow logged model of the training run (``core/registry_model.py``:
a pyfunc holding the merged weights and tokenizer), not a folder of the training machine, so
``models:/<name>@champion`` loads wherever the tracking server is reachable.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from loop_pipeline.core.evaluation.config import EvalConfig
from loop_pipeline.core.evaluation.outcome import EvaluationOutcome, RegisteredModel
from loop_pipeline.core.registry import RegistryError, current_champion, promote, register_version
from loop_pipeline.core.serving import SERVING_SPEC_TAG, ServingSpec, TaskServing
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.core.tracking import TrackingTarget

MERGED_RUN_ARTIFACT = "merged_model"  # where training logs the merged folder in its run


def _version_tags(outcome: EvaluationOutcome, spec: ServingSpec) -> dict[str, str]:
    report, trained = outcome.report, outcome.trained
    return {
        "dataset_version": report.dataset_version,
        "base_model": trained.base_model,
        "thresholds": json.dumps({name: t.threshold for name, t in report.tasks.items()}),
        "coverage": f"{report.coverage:.4f}",
        "agreement": json.dumps({name: t.served_agreement for name, t in report.tasks.items()}),
        "agreement_frontier": json.dumps({name: t.agreement_frontier for name, t in report.tasks.items()}),
        "agreement_reference": json.dumps({name: t.agreement_reference for name, t in report.tasks.items()}),
        "certified_against": report.certified_against,
        "target_agreement": str(report.target_agreement),
        "cost_ratio": f"{report.cost.blended_cost_ratio:.4f}",
        "cost_ratio_one_at_a_time": f"{report.cost_one_at_a_time.blended_cost_ratio:.4f}",
        "requests_per_s": f"{report.cost.local_requests_per_s:.3f}",
        "requests_per_s_one_at_a_time": f"{report.cost_one_at_a_time.local_requests_per_s:.3f}",
        "throughput_source": report.cost.throughput_source,
        "device_kind": report.throughput.device_kind,
        "local_price_per_hour": f"{report.cost.local_price_per_hour:g}",
        "system_prompt": outcome.candidate.system_prompt,
        # Where training left its folders (informational: serving reads the registered model).
        "merged_path": trained.merged_path or "",
        "adapter_path": trained.adapter_path or "",
        "eval_run_id": outcome.mlflow_run_id or "",
        SERVING_SPEC_TAG: spec.model_dump_json(exclude={"version"}),
    }


def serving_spec(outcome: EvaluationOutcome, config: EvalConfig, tasks: TasksConfig, max_input_tokens: int | None) -> ServingSpec:
    """What the router needs besides the weights: the evaluation's thresholds and measurements per
    task type, each configured task's kind and escalation labels (a task the holdout did not
    cover gets no threshold: always escalated), generation settings and cost figures: the
    requests/s at the router's micro-batching and the price per hour of the device that measured it."""
    report, trained = outcome.report, outcome.trained
    served = {
        name: TaskServing(
            kind=task.kind,
            threshold=task.threshold,
            escalation_labels=tasks.spec(name).escalation_labels,
            served_agreement=task.served_agreement,
            coverage=task.coverage,
        )
        for name, task in report.tasks.items()
    }
    for name, task in tasks.tasks.items():
        served.setdefault(name, TaskServing(kind=task.kind, escalation_labels=task.escalation_labels))
    return ServingSpec(
        model_name=config.model_name,
        base_model=trained.base_model,
        dataset_version=report.dataset_version,
        system_prompt=outcome.candidate.system_prompt,
        max_new_tokens=config.max_new_tokens,
        dtype=config.dtype,
        max_input_tokens=max_input_tokens,
        target_agreement=report.target_agreement,
        tasks=served,
        requests_per_s=report.cost.local_requests_per_s,
        local_price_per_hour=report.cost.local_price_per_hour,
        training_run_id=trained.mlflow_run_id,
    )


def _trained_max_length(outcome: EvaluationOutcome, run) -> int | None:
    """The length the model was trained on: the lora_adapter result's, else the run's param."""
    if outcome.trained.max_length is not None:
        return outcome.trained.max_length
    logged = run.data.params.get("sft.max_length")
    return int(logged) if logged else None


def _merged_folder(outcome: EvaluationOutcome, client, run_id: str, scratch: Path) -> Path:
    """The merged weights and tokenizer: where training left them, else the training run's
    artifact (another machine trained it), else base + adapter merged here (export.merged: false)."""
    trained = outcome.trained
    if trained.merged_path and Path(trained.merged_path, "config.json").is_file():
        return Path(trained.merged_path)
    if any(Path(a.path).name == MERGED_RUN_ARTIFACT for a in client.list_artifacts(run_id)):
        return Path(client.download_artifacts(run_id, MERGED_RUN_ARTIFACT, str(scratch)))
    base, adapter = Path(trained.base_model_path), Path(trained.adapter_path)
    if not (base / "config.json").is_file() or not adapter.is_dir():
        raise RegistryError(
            f"training run {run_id} has no merged model (artifact {MERGED_RUN_ARTIFACT}), and its base {base} and "
            f"adapter {adapter} are not on this machine to merge: nothing servable to register"
        )
    from loop_pipeline.core.models import resolve_dtype
    from loop_pipeline.core.training.export import save_merged

    return save_merged(str(base), adapter, scratch / MERGED_RUN_ARTIFACT, resolve_dtype("float32"), "same")


def _serving_model(outcome: EvaluationOutcome, client, run_id: str, model_config: dict[str, Any]):
    from loop_pipeline.core.registry_model import log_serving_model, reusable_serving_model

    reused = reusable_serving_model(client, run_id, model_config)
    if reused is not None:
        return reused
    with tempfile.TemporaryDirectory(prefix="loop-register-") as scratch:
        return log_serving_model(client, run_id, _merged_folder(outcome, client, run_id, Path(scratch)), model_config)


def _check_registrable(outcome: EvaluationOutcome) -> str:
    if not outcome.from_lineage:
        raise RegistryError(
            f"the evaluation was of {outcome.candidate.label or outcome.candidate.model_path}, not the lora_adapter "
            "training run: only the lineage's candidate can be registered"
        )
    if not outcome.decision.promote:
        raise RegistryError("the gate refused this candidate: " + "; ".join(outcome.decision.failing_reasons()))
    if not outcome.trained.mlflow_run_id:
        raise RegistryError("the training run has no MLflow run id: nothing to register a version from")
    return outcome.trained.mlflow_run_id


def _registered_before(client, name: str, run_id: str, tags: dict[str, str]) -> tuple[str | None, str | None]:
    """(version, source) of a version of this training run already registered with these very tags
    (the same evaluation: its run id is one of them) and never promoted: what a registration killed
    after creating the version left. Reused, so a rerun does not register the run twice. A version
    that was champion once (``promoted_at``) has a history of its own: registering its run again
    makes a new version (on the same logged model)."""
    for existing in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        held = dict(existing.tags)
        if "promoted_at" not in held and held.items() >= tags.items():
            return str(existing.version), existing.source
    return None, None


def register_and_promote(
    outcome: EvaluationOutcome, tracking: TrackingTarget, config: EvalConfig, tasks: TasksConfig
) -> RegisteredModel:
    """Register the lineage's training run as a loadable MLflow model with its serving spec and
    make it the champion. Refuses an evaluation of anything else (an explicit model folder,
    another prompt transform) and one the gate refused."""
    run_id = _check_registrable(outcome)
    client = tracking.client()
    champion = current_champion(client, config.model_name)
    existing = client.get_model_version(config.model_name, champion) if champion is not None else None
    if existing is not None and existing.run_id == run_id:
        # Re-evaluating the champion's own training run: nothing new to register.
        return RegisteredModel(
            model_name=config.model_name, champion=champion, previous=None, reason="already the champion",
            unchanged=True, source=existing.source, tags=dict(existing.tags),
        )
    spec = serving_spec(outcome, config, tasks, _trained_max_length(outcome, client.get_run(run_id)))
    model_config = {
        "system_prompt": spec.system_prompt, "max_new_tokens": spec.max_new_tokens, "dtype": spec.dtype,
        "batch_size": config.batch_size,
    }
    tags = _version_tags(outcome, spec)
    version, source = _registered_before(client, config.model_name, run_id, tags)
    if version is None:
        logged = _serving_model(outcome, client, run_id, model_config)
        version = register_version(client, config.model_name, logged.artifact_location, run_id, tags, model_id=logged.model_id)
        source = logged.artifact_location
    report = outcome.report
    reason = (
        f"gate passed: coverage {report.coverage:.1%} at {report.target_agreement:.0%} agreement, "
        f"cost ratio {report.cost.blended_cost_ratio:.1%} at {report.cost.local_requests_per_s:.1f} requests/s on "
        f"{report.throughput.device_kind} (dataset {report.dataset_version})"
    )
    move = promote(client, config.model_name, version, reason)
    return RegisteredModel(**move.to_dict(), unchanged=False, source=source, tags=tags)
