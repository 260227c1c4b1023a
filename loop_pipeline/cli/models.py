"""Model commands: train, eval, promote, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from loop_pipeline.cli.common import app, emit, fail, say
from loop_pipeline.config import ConfigError


def _explicit_data(config: Path) -> bool:
    """Whether a train config names its own data (a version folder or files) rather than `latest`."""
    from loop_pipeline.config import read_yaml_mapping

    data = read_yaml_mapping(config).get("data") or {}
    if not isinstance(data, dict):
        return True  # let the trainer's validation say what is wrong
    return bool(data.get("sft")) or data.get("version_dir") not in (None, "", "latest")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", help="Train config YAML (see configs/train/smollm2-clinc.yaml)."),
    max_steps: Optional[int] = typer.Option(None, help="Cap the SFT steps (overrides sft.max_steps)."),
) -> None:
    """LoRA SFT (+ optional KTO / DPO). With `data.version_dir: latest` (or none) it materializes
    `lora_adapter` on the LOOP_HOME instance, on the version training_datasets materialized; a config
    naming its own `data.version_dir` or `data.sft` runs outside Dagster (a user's own run, the same
    as `python -m loop_pipeline.core.training --config FILE`)."""
    from loop_pipeline.core.training import cli as training_cli

    try:
        explicit = _explicit_data(config)
    except ConfigError as exc:
        fail(str(exc))
    if explicit:
        argv = ["--config", str(config), *(["--max-steps", str(max_steps)] if max_steps else [])]
        code = training_cli(argv)
        if code:
            raise typer.Exit(code)
        return
    from loop_pipeline.core.training import TrainConfig
    from loop_pipeline.runs import materialize_training

    try:
        TrainConfig.from_yaml(config)  # a bad file fails here, naming the field, before any run starts
        emit(materialize_training(train_config=str(config.resolve()), max_steps=max_steps, progress=say))
    except (ConfigError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))


@app.command("eval")
def eval_command(
    model: Optional[str] = typer.Option(None, help="A model folder to evaluate instead of the latest training run's."),
    adapter: Optional[str] = typer.Option(None, help="A LoRA adapter folder applied on --model."),
    system_prompt: Optional[str] = typer.Option(None, help="keep | drop | none: the prompt transform (default: as trained; keep for --model)."),
    max_examples: Optional[int] = typer.Option(None, help="Evaluate on the first N holdout requests."),
) -> None:
    """Evaluate a candidate on the frozen holdout (the holdout_eval asset and its blocking gate
    checks): agreement per task type, the confidence threshold that reaches the target agreement
    (with its guarantee), coverage, out-of-scope escalation, the blended cost ratio and the gate's
    decision with its reasons. Registers nothing (`loop promote` does, when the gate passed)."""
    from loop_pipeline.core.evaluation import eval_summary
    from loop_pipeline.runs import materialize_evaluation

    if system_prompt not in (None, "keep", "drop", "none"):
        fail(f"--system-prompt must be keep, drop or none, got {system_prompt!r}")
    if adapter and not model:
        fail("--adapter needs --model (the base it applies to)")
    candidate = {k: v for k, v in {"model": model, "adapter": adapter, "system_prompt": system_prompt}.items() if v}
    try:
        done = materialize_evaluation(max_examples, progress=say, register=False, candidate=candidate)
    except (ConfigError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    emit(eval_summary(done["outcome"]))


def _move_alias(action: str, move_fn, model_name: Optional[str]) -> None:
    """Run a promote / rollback on the LOOP_HOME registry; a move that cannot happen exits 2 saying why."""
    from mlflow.exceptions import MlflowException

    from loop_pipeline.core.evaluation import EvalConfig
    from loop_pipeline.core.registry import RegistryError
    from loop_pipeline.settings import LoopSettings

    settings = LoopSettings()
    client = settings.tracking().client()
    try:
        move = move_fn(client, model_name or settings.load(EvalConfig).model_name)
    except (RegistryError, MlflowException, ConfigError) as exc:
        fail(str(exc))
    say(f"{move.model_name}: champion v{move.champion} (previous: {move.previous})")
    emit({"action": action, **move.to_dict()})


def _promote_through_gate() -> None:
    """registered_model: the last evaluated candidate, only if its gate passed."""
    from loop_pipeline.runs import materialize_evaluation

    try:
        done = materialize_evaluation(progress=say, register=True, candidate=None, evaluate=False)
    except (ConfigError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    registered = done["registered"]
    if registered is None:
        fail("not promoted: the gate refused the last evaluated candidate (see `loop eval`)")
    emit({"action": "promote", **registered.model_dump(mode="json")})


@app.command("promote")
def promote_command(
    version: Optional[str] = typer.Option(
        None, help="Registered model version to make the champion by hand. Without it: register the candidate "
        "`loop eval` last evaluated, if the gate passed (the registered_model asset)."
    ),
    reason: Optional[str] = typer.Option(None, help="Why (recorded on the version and the registered model); needed with --version."),
    model_name: Optional[str] = typer.Option(None, help="Registered model (default: evaluation.yaml model_name)."),
) -> None:
    """Make a candidate the champion: through the gate (no --version), or by hand (--version N
    --reason TEXT; the old champion becomes `previous`)."""
    if version is None:
        if model_name:
            fail("--model-name needs --version (the gate registers under evaluation.yaml model_name)")
        _promote_through_gate()
        return
    if not reason:
        fail("--version needs --reason (recorded on the version and the registered model)")
    from loop_pipeline.core.registry import promote

    _move_alias("promote", lambda client, name: promote(client, name, version, reason), model_name)


@app.command("rollback")
def rollback_command(
    reason: str = typer.Option(..., help="Why (recorded on the version and the registered model)."),
    model_name: Optional[str] = typer.Option(None, help="Registered model (default: evaluation.yaml model_name)."),
) -> None:
    """Move alias `champion` back to `previous` (and `previous` to the version rolled away from)."""
    from loop_pipeline.core.registry import rollback

    _move_alias("rollback", lambda client, name: rollback(client, name, reason), model_name)
