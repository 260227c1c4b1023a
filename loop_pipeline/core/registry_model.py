"""The MLflow model a registry version holds: a small pyfunc around the merged weights and tokenizer.

Registration (``core/evaluation/promotion.py``) saves it as an MLflow 3 logged model of the training
run, so ``models:/<name>@champion`` loads on any machine that reaches the tracking server, with
``mlflow.pyfunc.load_model`` or, for the router, as a plain model folder
(``core/serving_registry.py``). It answers through the same prompt transform, generation and
confidence code as the evaluation (``core/models.py``).

The model is saved "from code": MLflow copies a two-line script that builds :class:`MergedChatModel`
from this module, instead of pickling an object. mlflow is imported at this module's top: only
registration and MLflow's loader import it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import mlflow.pyfunc
from pydantic import BaseModel

from loop_pipeline.core.serving_registry import MERGED_ARTIFACT  # the pyfunc artifact holding the weights

LOGGED_MODEL_NAME = "serving_model"
_MODEL_SCRIPT = "from loop_pipeline.core.registry_model import MergedChatModel\nimport mlflow.models\n\nmlflow.models.set_model(MergedChatModel())\n"


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    messages: list[ChatMessage]


class ChatAnswer(BaseModel):
    answer: str
    confidence: float  # the probability the model gave its own answer (end of turn included)


class MergedChatModel(mlflow.pyfunc.PythonModel):
    """Greedy answers with confidence; ``model_config``: system_prompt, max_new_tokens, dtype, batch_size."""

    def load_context(self, context) -> None:
        from loop_pipeline.core.models import load_for_inference

        config = context.model_config or {}
        self.system_prompt = str(config["system_prompt"])
        self.max_new_tokens = int(config["max_new_tokens"])
        self.batch_size = int(config.get("batch_size", 16))
        self.model, self.tokenizer = load_for_inference(context.artifacts[MERGED_ARTIFACT], dtype=str(config.get("dtype", "auto")))

    def predict(self, context, model_input: list[ChatRequest], params: dict[str, Any] | None = None) -> list[ChatAnswer]:
        from loop_pipeline.core.models import generate_with_confidence, prepare_prompt

        prompts = [prepare_prompt([m.model_dump() for m in request.messages], self.system_prompt) for request in model_input]
        generations = generate_with_confidence(
            self.model, self.tokenizer, prompts, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens
        )
        return [ChatAnswer(answer=text, confidence=float(conf)) for text, conf in zip(generations.texts, generations.confidence)]


def save_serving_model(path: Path, merged_dir: Path, model_config: dict[str, Any], mlflow_model=None) -> Path:
    """The MLflow model folder at ``path`` (which must not exist): the merged folder copied in as
    the ``merged_model`` artifact, requirements pinned to what this environment runs."""
    from importlib.metadata import version

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="loop-serving-model-") as scratch:
        script = Path(scratch) / "loop_serving_model.py"  # MLflow copies it into the model folder
        script.write_text(_MODEL_SCRIPT, encoding="utf-8")
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(script),
            artifacts={MERGED_ARTIFACT: str(merged_dir)},
            model_config=model_config,
            mlflow_model=mlflow_model,
            # Inferred requirements would import the model and pull in unrelated packages.
            pip_requirements=[
                f"{name}=={version(name).split('+')[0]}" for name in ("loop_pipeline", "torch", "transformers", "mlflow")
            ],
        )
    return path


@dataclass(frozen=True)
class LoggedServingModel:
    model_id: str
    artifact_location: str  # what a registry version's source points at
    reused: bool


def _config_params(model_config: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in sorted(model_config.items())}


def reusable_serving_model(client, run_id: str, model_config: Mapping[str, Any]) -> LoggedServingModel | None:
    """A serving model this training run already holds with the same settings (a version of the
    same run registered again), so the weights are not uploaded twice."""
    from mlflow.entities import LoggedModelStatus

    run = client.get_run(run_id)
    for output in (run.outputs.model_outputs if run.outputs else []):
        logged = client.get_logged_model(output.model_id)
        if (
            logged.name == LOGGED_MODEL_NAME
            and logged.status == LoggedModelStatus.READY
            and logged.params == _config_params(model_config)
        ):
            return LoggedServingModel(logged.model_id, logged.artifact_location, reused=True)
    return None


def log_serving_model(client, run_id: str, merged_dir: Path, model_config: Mapping[str, Any]) -> LoggedServingModel:
    """The merged folder as an MLflow logged model of the training run ``run_id`` (status READY
    once its artifacts are uploaded, FAILED if the upload fails)."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(
        experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, params=_config_params(model_config),
        tags={"loop.kind": "merged_chat_model"},
    )
    try:
        with tempfile.TemporaryDirectory(prefix="loop-serving-model-") as scratch:
            described = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id)
            local = save_serving_model(Path(scratch) / "model", merged_dir, dict(model_config), described)
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return LoggedServingModel(logged.model_id, logged.artifact_location, reused=False)
