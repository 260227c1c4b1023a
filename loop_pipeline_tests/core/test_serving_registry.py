"""What the registry holds for a server, on a real MLflow store (SQLite) with a tiny model trained by
the real trainer and registered by the real ``register_and_promote``:

- the version is an MLflow model of its own (not the training machine's folder): it resolves into a
  fresh cache with the training outputs deleted, ``models:/<name>@champion`` loads as a pyfunc, and
  both answer exactly as the original merged model (same text, same confidence);
- the serving spec round-trips (thresholds, kinds, escalation labels, generation, cost, lengths);
- the cache is reused, filled atomically (two concurrent resolves), and refreshed when a recreated
  registry reuses a version number;
- a missing alias is "no champion", a version that is no serving model says why, and other registry
  errors propagate with where they happened (credentials left out);
- ``champion_version`` follows promote and rollback.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.datasets import build_datasets
from loop_pipeline.core.evaluation import Candidate, EvalConfig, EvalReport, EvaluationOutcome, TaskReport, blended_cost
from loop_pipeline.core.evaluation.gate import GateDecision, GatePart, GateParts
from loop_pipeline.core.evaluation.promotion import register_and_promote, serving_spec
from loop_pipeline.core.evaluation.report import Throughput
from loop_pipeline.core.evaluation.thresholds import ThresholdSelection
from loop_pipeline.core.models import generate_with_confidence, load_for_inference, prepare_prompt
from loop_pipeline.core.registry import RegistryError, promote, register_version, rollback
from loop_pipeline.core.serving import SERVING_SPEC_TAG, TaskServing
from loop_pipeline.core.serving_registry import IDENTITY_FILE, champion_version, resolve_champion, resolve_version
from loop_pipeline.core.storage import write_parquet_atomic
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.core.training import TrainConfig, main
from loop_pipeline_tests.core.training.toy import SYSTEM, corpus, examples, train_config
from loop_pipeline_tests.tiny_models import build_tiny_model

torch.set_num_threads(1)

PRICE_PER_HOUR = 0.2  # the evaluating CPU's price, as configs/evaluation.yaml would give it

TASKS = TasksConfig.from_mapping(
    {
        "tasks": {
            "classify": {"kind": "classification", "labels": ["billing", "travel", "tech", "out_of_scope"], "escalation_labels": ["out_of_scope"]},
            "summarize": {"kind": "summarization"},  # configured, not in the holdout: served nowhere
        }
    }
)
PROMPTS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    for text in ("my refund is wrong", "help with hotel please", "crash problem today", "question about the flight")
]


def _train(root: Path, model: Path, version: Path, name: str, steps: int) -> TrainedAdapter:
    raw = train_config(model, version, root, root / name, sft={"max_steps": steps}, data={"system_prompt": "drop"},
                       export={"merged": True, "merged_dtype": "float32"})
    result = main(TrainConfig.from_mapping(raw))
    return TrainedAdapter(**result.to_dict(), dataset_path=str(version), train_config=f"test:{name}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Two training runs of a tiny model in one MLflow store (their merged folders on disk)."""
    root = tmp_path_factory.mktemp("serving_registry")
    model = build_tiny_model(root / "tiny-llama", corpus())
    version = root / "datasets" / "v-toy"
    version.mkdir(parents=True)
    for name, frame in build_datasets(examples()).items():
        write_parquet_atomic(version / f"{name}.parquet", frame)
    first, second = _train(root, model, version, "run-a", 60), _train(root, model, version, "run-b", 20)
    tracking = TrackingTarget(f"sqlite:///{root / 'mlflow.db'}", (root / "mlflow-artifacts").as_uri())
    return {"root": root, "tracking": tracking, "runs": [first, second]}


def _outcome(trained: TrainedAdapter) -> EvaluationOutcome:
    """An evaluation the gate passed (its figures as holdout_eval would report them), measured on a
    CPU priced at PRICE_PER_HOUR: the serving spec takes its rate and price from the report's cost."""
    task = TaskReport(
        task_type="classify", kind="classification", n=200, n_in_scope=180, n_with_reference=150,
        reference_sources={"review": 20, "edit": 10, "accepted_scored": 120, "frontier_unverified": 50},
        agreement_frontier=0.95, agreement_reference=0.96, certified_against="reference",
        threshold=0.62, selection=ThresholdSelection(threshold=0.62, selected=0.62, calibration_p=0.01, test_p=0.02, n_min=45),
        calibration_n=100, test_n=100, coverage=0.91, served_agreement=0.975, out_of_scope_n=20, out_of_scope_escalated=0.9,
    )
    throughput = Throughput(device_kind="cpu", load_seconds=0.5, one_at_a_time_requests_per_s=3.0, batched_requests_per_s=12.5,
                            batch_size=32, one_at_a_time_n=64)
    report = EvalReport(
        model=f"run {trained.mlflow_run_id}", dataset_version=trained.dataset_version, n=200, target_agreement=0.95,
        certified_against="reference", coverage=0.91, throughput=throughput,
        cost=blended_cost(0.91, 0.01, PRICE_PER_HOUR, 12.5),
        cost_one_at_a_time=blended_cost(0.91, 0.01, PRICE_PER_HOUR, 3.0, "measured_one_at_a_time"),
        tasks={"classify": task},
    )
    passed = GatePart(passed=True, reasons=["ok"])
    return EvaluationOutcome(
        report=report, decision=GateDecision(promote=True, parts=GateParts(target_at_min_coverage=passed, no_regression=passed, dataset_checks=passed)),
        regression=None, candidate=Candidate.from_adapter(trained), trained=trained, from_lineage=True, report_dir=str(trained.adapter_path),
        plots=[], mlflow_run_id=None,
    )


def _answers(model_dir: Path | str):
    model, tokenizer = load_for_inference(str(model_dir), dtype="float32")
    prompts = [prepare_prompt(p, "drop") for p in PROMPTS]
    return generate_with_confidence(model, tokenizer, prompts, batch_size=4, max_new_tokens=8)


def test_a_registered_version_is_a_model_of_its_own_and_its_spec_round_trips(workspace, tmp_path):
    tracking, trained = workspace["tracking"], workspace["runs"][0]
    # The config's own CPU price (0.10) is not what the spec carries: the report's cost, priced on the
    # device that measured the throughput, is.
    config = EvalConfig(model_name="served", max_new_tokens=8, dtype="float32")
    outcome = _outcome(trained)
    original = _answers(trained.merged_path)
    assert original.texts == ["billing", "travel", "tech", "travel"]  # it learned the toy task

    started = time.perf_counter()
    moved = register_and_promote(outcome, tracking, config, TASKS)
    print(f"registration of a {sum(f.stat().st_size for f in Path(trained.merged_path).iterdir()) / 1e6:.1f} MB model: "
          f"{time.perf_counter() - started:.2f} s")
    assert (moved.champion, moved.previous, moved.unchanged) == ("1", None, False)
    version = tracking.client().get_model_version("served", "1")
    assert version.run_id == trained.mlflow_run_id and "/models/m-" in version.source  # a logged model of the training run
    assert trained.merged_path not in version.source and version.tags["dataset_version"] == "v-toy"
    assert (version.tags["device_kind"], version.tags["local_price_per_hour"], version.tags["throughput_source"]) == ("cpu", "0.2", "measured_batched")
    assert (version.tags["requests_per_s"], version.tags["requests_per_s_one_at_a_time"]) == ("12.500", "3.000")

    # The training machine's folders are gone: the registry alone serves the model (later
    # registrations of this run take the merged folder from the training run's artifacts).
    shutil.rmtree(Path(trained.merged_path).parent)
    resolved = resolve_champion(tracking, "served", cache_dir=tmp_path / "cache")
    assert resolved.model_dir.is_relative_to(tmp_path / "cache" / "served" / "v1")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in resolved.model_dir.iterdir()}
    downloaded = _answers(resolved.model_dir)
    assert downloaded.texts == original.texts and downloaded.confidence.tolist() == original.confidence.tolist()

    import mlflow.pyfunc
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking.tracking_uri):
        pyfunc = mlflow.pyfunc.load_model("models:/served@champion")
    predicted = pyfunc.predict([{"messages": p} for p in PROMPTS])
    assert [p.answer for p in predicted] == original.texts
    assert [p.confidence for p in predicted] == pytest.approx(original.confidence.tolist(), abs=1e-6)

    expected = serving_spec(outcome, config, TASKS, max_input_tokens=64).model_copy(update={"version": "1"})
    assert resolved.spec == expected
    spec = resolved.spec
    assert (spec.label, spec.system_prompt, spec.max_new_tokens, spec.dtype, spec.max_input_tokens) == ("served@v1", "drop", 8, "float32", 64)
    assert spec.tasks["classify"] == TaskServing(kind="classification", threshold=0.62, escalation_labels=("out_of_scope",),
                                                 served_agreement=0.975, coverage=0.91)
    assert spec.tasks["summarize"] == TaskServing(kind="summarization")  # no certified threshold
    assert (spec.requests_per_s, spec.local_price_per_hour, spec.target_agreement) == (12.5, PRICE_PER_HOUR, 0.95)
    assert (spec.base_model, spec.dataset_version, spec.training_run_id) == (trained.base_model, "v-toy", trained.mlflow_run_id)


def test_the_cache_is_reused_filled_atomically_and_refreshed_for_a_recreated_registry(workspace, tmp_path):
    tracking, (first, second) = workspace["tracking"], workspace["runs"]
    config = EvalConfig(model_name="cached", max_new_tokens=4)
    register_and_promote(_outcome(first), tracking, config, TASKS)
    cache = tmp_path / "cache"

    results, errors = [], []

    def resolve() -> None:
        try:
            results.append(resolve_champion(tracking, "cached", "champion", cache))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len({r.model_dir for r in results}) == 1
    assert [p.name for p in (cache / "cached").iterdir()] == ["v1"]  # no staging folder left behind
    weights = results[0].model_dir / "model.safetensors"
    inode = weights.stat().st_ino

    again = resolve_champion(tracking, "cached", cache_dir=cache)
    assert again == results[0] and weights.stat().st_ino == inode  # reused, not downloaded again

    # The registry is recreated: version 1 is now another training run; the cache must notice.
    tracking.client().delete_registered_model("cached")
    register_and_promote(_outcome(second), tracking, config, TASKS)
    refreshed = resolve_champion(tracking, "cached", cache_dir=cache)
    assert refreshed.spec.version == "1" and refreshed.spec.training_run_id == second.mlflow_run_id
    assert refreshed.model_dir.joinpath("model.safetensors").stat().st_ino != inode
    assert second.mlflow_run_id in (cache / "cached" / "v1" / IDENTITY_FILE).read_text()
    assert sorted(p.name for p in (cache / "cached").iterdir()) == ["v1"]


def test_champion_version_follows_promote_and_rollback(workspace, tmp_path):
    tracking, (first, second) = workspace["tracking"], workspace["runs"]
    config = EvalConfig(model_name="moving", max_new_tokens=4)
    assert champion_version(tracking, "moving") is None
    register_and_promote(_outcome(first), tracking, config, TASKS)
    assert champion_version(tracking, "moving") == "1"
    # A second run with its own trained length (the lora_adapter result carries it).
    moved = register_and_promote(_outcome(second.model_copy(update={"max_length": 48})), tracking, config, TASKS)
    assert (moved.champion, moved.previous) == ("2", "1")
    assert champion_version(tracking, "moving") == "2" and champion_version(tracking, "moving", "previous") == "1"
    assert resolve_champion(tracking, "moving", cache_dir=tmp_path).spec.max_input_tokens == 48

    client = tracking.client()
    rollback(client, "moving", "bad answers")
    assert champion_version(tracking, "moving") == "1"
    back = resolve_champion(tracking, "moving", cache_dir=tmp_path)
    assert (back.spec.version, back.spec.training_run_id, back.spec.max_input_tokens) == ("1", first.mlflow_run_id, 64)
    promote(client, "moving", "2", "fixed")
    assert champion_version(tracking, "moving") == "2"
    # Registering the first run again reuses its logged model: no second upload of the weights.
    assert register_and_promote(_outcome(first), tracking, config, TASKS).champion == "3"
    assert client.get_model_version("moving", "3").source == client.get_model_version("moving", "1").source


def test_no_champion_and_versions_that_are_no_serving_model_say_why(workspace, tmp_path):
    tracking, trained = workspace["tracking"], workspace["runs"][0]
    client = tracking.client()
    with pytest.raises(RegistryError, match="no champion: 'nobody' has no alias 'champion'"):
        resolve_champion(tracking, "nobody", cache_dir=tmp_path)

    run = trained.mlflow_run_id
    plain = register_version(client, "by-hand", f"runs:/{run}/merged_model", run, {"note": "no spec"})
    assert champion_version(tracking, "by-hand") is None
    with pytest.raises(RegistryError, match="no champion: 'by-hand' has no alias 'champion'"):
        resolve_champion(tracking, "by-hand", cache_dir=tmp_path)
    promote(client, "by-hand", plain, "by hand")
    with pytest.raises(RegistryError, match=f"by-hand v1 has no {SERVING_SPEC_TAG} tag"):
        resolve_champion(tracking, "by-hand", cache_dir=tmp_path)

    # A spec on a folder that is not an MLflow model (the old runs:/<run>/merged_model source).
    spec = serving_spec(_outcome(trained), EvalConfig(), TASKS, None).model_dump_json(exclude={"version"})
    folder = register_version(client, "by-hand", f"runs:/{run}/merged_model", run, {SERVING_SPEC_TAG: spec})
    with pytest.raises(RegistryError, match="by-hand v2 is not an MLflow model"):
        resolve_version(tracking, "by-hand", folder, tmp_path)
    assert not (tmp_path / "by-hand" / "v2").exists() and list((tmp_path / "by-hand").iterdir()) == []
    client.set_model_version_tag("by-hand", folder, SERVING_SPEC_TAG, '{"model_name": "x"}')
    with pytest.raises(RegistryError, match="by-hand v2: invalid serving_spec tag: base_model: Field required"):
        resolve_version(tracking, "by-hand", folder, tmp_path)


def test_other_registry_errors_propagate_with_where_they_happened(monkeypatch, tmp_path):
    import socket

    from mlflow.exceptions import MlflowException

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    unreachable = TrackingTarget(f"http://user:secret@127.0.0.1:{port}", "mlflow-artifacts:/")
    with pytest.raises(MlflowException) as error:
        champion_version(unreachable, "served")
    notes = " ".join(getattr(error.value, "__notes__", []))
    assert f"while reading registered model 'served' on the MLflow registry at http://127.0.0.1:{port}" in notes
    assert "secret" not in notes
    with pytest.raises(ValueError, match="needs a cache_dir"):
        resolve_champion(unreachable, "served")
