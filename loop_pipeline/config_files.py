"""Which model validates which file under ``configs/`` (``loop config check``, and the tests)."""

from __future__ import annotations

import importlib
from pathlib import Path

from loop_pipeline.config import ConfigError, ConfigModel

# configs/<name>.yaml -> "module:Model"
FILE_MODELS = {
    "tasks": "loop_pipeline.core.tasks:TasksConfig",
    "scoring": "loop_pipeline.core.scoring:ScoringConfig",
    "prices": "loop_pipeline.core.costs:PriceTable",
    "ingest": "loop_pipeline.core.ingest:IngestConfig",
    "simulate": "loop_pipeline.sim:SimulationConfig",
    "redaction": "loop_pipeline.core.redaction:RedactionConfig",
    "dedup": "loop_pipeline.core.dedup:DedupConfig",
    "datasets": "loop_pipeline.core.datasets:DatasetConfig",
    "evaluation": "loop_pipeline.core.evaluation:EvalConfig",
    "automation": "loop_pipeline.core.automation:AutomationConfig",
    # Not a ConfigModel but pydantic-settings (LOOP_ROUTER_* override it); same from_yaml and errors.
    "router": "loop_pipeline.router.settings:RouterSettings",
}
# configs/<folder>/*.yaml -> "module:Model"
FOLDER_MODELS = {
    "train": "loop_pipeline.core.training:TrainConfig",
    # k8s-training.yaml, dagster.yaml, executor.yaml: their models; any other file: Kubernetes manifests.
    "deploy": "loop_pipeline.deploy:DeployFile",
}


def _model(reference: str) -> type[ConfigModel]:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def model_for(path: Path, config_dir: Path) -> type[ConfigModel] | None:
    """The model of a file under ``config_dir`` (None for a file no stage reads)."""
    relative = path.relative_to(config_dir)
    if len(relative.parts) == 1 and relative.stem in FILE_MODELS:
        return _model(FILE_MODELS[relative.stem])
    if len(relative.parts) == 2 and relative.parts[0] in FOLDER_MODELS:
        return _model(FOLDER_MODELS[relative.parts[0]])
    return None


def config_files(config_dir: Path) -> list[Path]:
    return sorted(p for p in config_dir.rglob("*.yaml") if p.is_file())


def check_config_dir(config_dir: Path) -> dict[str, str | None]:
    """Every YAML under ``config_dir`` validated by its model: path -> the one-line error, or None.
    A file no stage reads is reported as such; a missing file of the ones every run needs too."""
    results: dict[str, str | None] = {}
    for name in FILE_MODELS:
        if not (config_dir / f"{name}.yaml").is_file():
            results[str(config_dir / f"{name}.yaml")] = f"configuration file not found: {config_dir / f'{name}.yaml'}"
    for path in config_files(config_dir):
        model = model_for(path, config_dir)
        if model is None:
            results[str(path)] = f"{path}: no stage reads this file (known: {sorted(FILE_MODELS)}, train/*, deploy/*)"
            continue
        try:
            model.from_yaml(path)
            results[str(path)] = None
        except ConfigError as exc:
            results[str(path)] = str(exc)
    if (config_dir / "deploy").is_dir():  # the deploy files against each other (loop_pipeline/deploy)
        from loop_pipeline.deploy.bundle import cross_file_problems

        for path, problem in cross_file_problems(config_dir / "deploy").items():
            results[path] = results.get(path) or problem
    return results
