"""The vLLM init container of configs/deploy/vllm.yaml (``python -m loop_pipeline.deploy.champion``):
a tiny model trained by the real trainer and registered by the real promotion in a real MLflow
registry (SQLite) comes out as the folders vLLM loads: merged weights, or base + LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from transformers import AutoConfig

from loop_pipeline.deploy.champion import main
from loop_pipeline_tests.core.training.toy import corpus
from loop_pipeline_tests.router.trained_champions import HELD_OUT, register, train_run
from loop_pipeline_tests.tiny_models import build_tiny_model

MODEL = "loop-candidate-deploy"


def dataset_version(root: Path) -> Path:
    """The toy classification as a dataset version (prompts of one template held out); the frontier
    answered every trace (the curated frame's frontier_output)."""
    from loop_pipeline.core.datasets import build_datasets
    from loop_pipeline.core.storage import write_parquet_atomic
    from loop_pipeline_tests.core.training.toy import examples

    frame = examples().with_columns(
        pl.when(pl.col("messages").list.last().struct.field("content").str.starts_with(HELD_OUT))
        .then(pl.lit("holdout"))
        .otherwise(pl.lit("train"))
        .alias("split"),
        pl.col("output").alias("frontier_output"),
    )
    version = root / "datasets" / "v-toy"
    version.mkdir(parents=True)
    for name, table in build_datasets(frame).items():
        write_parquet_atomic(version / f"{name}.parquet", table)
    return version


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("deploy_champion")
    base = build_tiny_model(root / "tiny-llama", corpus())
    trained = train_run(root, base, dataset_version(root), "run-a", 5)
    from loop_pipeline.core.tracking import TrackingTarget

    tracking = TrackingTarget(f"sqlite:///{root / 'mlflow.db'}", (root / "mlflow-artifacts").as_uri())
    version = register(trained, tracking, MODEL, threshold=0.5)
    return {"root": root, "tracking": tracking, "version": str(version), "base": base}


def _run(monkeypatch, capsys, registry, *args: str) -> tuple[int, dict | str]:
    monkeypatch.setenv("LOOP_MLFLOW_TRACKING_URI", registry["tracking"].tracking_uri)
    monkeypatch.setenv("LOOP_MLFLOW_ARTIFACT_ROOT", registry["tracking"].artifact_root)
    code = main(["--model-name", MODEL, *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else err)


def test_merged_weights_are_linked_where_vllm_serves_them(registry, tmp_path, monkeypatch, capsys):
    dest, cache = tmp_path / "models" / "champion", tmp_path / "models" / "cache"
    code, result = _run(monkeypatch, capsys, registry, "--dest", str(dest), "--cache-dir", str(cache))
    assert code == 0, result
    assert result["version"] == registry["version"] and dest.is_symlink()
    assert AutoConfig.from_pretrained(dest).model_type == "llama"  # a model folder vLLM can load
    assert (dest / "tokenizer_config.json").is_file()
    # A restarted pod finds the version cached and replaces its link.
    code, again = _run(monkeypatch, capsys, registry, "--dest", str(dest), "--cache-dir", str(cache))
    assert code == 0 and again["weights"] == result["weights"]


def test_the_adapter_and_its_base_for_vllm_enable_lora(registry, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "models"
    code, result = _run(monkeypatch, capsys, registry, "--adapter", "--dest", str(dest), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, result
    adapter = json.loads((dest / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and Path(adapter["base_model_name_or_path"]).name == "tiny-llama"
    assert (dest / "base").resolve() == Path(registry["base"]).resolve()


def test_no_champion_fails_in_one_line_naming_the_alias(registry, tmp_path, monkeypatch, capsys):
    code, err = _run(monkeypatch, capsys, registry, "--alias", "nobody", "--dest", str(tmp_path / "c"), "--cache-dir", str(tmp_path / "k"))
    assert code == 2
    assert f"champion: no champion: '{MODEL}' has no alias 'nobody'" in err
