"""Every file under configs/ is a typed model: the shipped files are valid, and a bad value in any
of them fails with one line naming the file, the field and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.config import ConfigError
from loop_pipeline.config_files import FILE_MODELS, check_config_dir, config_files, model_for
from loop_pipeline_tests.helpers import REPO_CONFIGS, last_json_line

# file (relative to configs/) -> (path of the field to break, bad value, what the error must say)
BAD_VALUES: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    "tasks.yaml": (("tasks", "intent", "kind"), "clasification", "'classification'"),
    "scoring.yaml": (("precision_target",), 1.5, "less than 1"),
    "prices.yaml": (("models", "gpt-4o", "input"), -1, "greater than or equal to 0"),
    "ingest.yaml": (("openai_batch_price_factor",), -0.5, "greater than"),
    "simulate.yaml": (("frontier_error_rate",), 2, "less than or equal to 1"),
    "redaction.yaml": (("detectors", "email"), "sometimes", "valid boolean"),
    "dedup.yaml": (("shingle",), "sentence", "'word'"),
    "datasets.yaml": (("holdout_fraction",), 0, "greater than 0"),
    "evaluation.yaml": (("dtype",), "float8", "'bfloat16'"),
    "router.yaml": (("shadow_rate",), 1.5, "less than or equal to 1"),
    "automation.yaml": (("retrain_sensor", "minimum_interval_s"), 5, "greater than or equal to 30"),
    "train/tiny.yaml": (("lora", "r"), 0, "greater than 0"),
    "train/smollm2-clinc.yaml": (("sft", "learning_rate"), -1, "greater than 0"),
    "deploy/k8s-training.yaml": (("trainer", "gpus"), -2, "greater than or equal to 0"),
    "deploy/dagster.yaml": (("run_monitoring", "poll_interval_seconds"), "often", "expected Int"),
    "deploy/executor.yaml": (("max_concurrent",), "eight", "expected Int"),
}
# Multi-document Kubernetes manifests: broken and checked in test_deploy_configs.py.
DEPLOY_MANIFESTS = {"deploy/dagster-k8s.yaml", "deploy/mlflow.yaml", "deploy/router.yaml", "deploy/vllm.yaml"}


def _with_value(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node = raw
    for part in path[:-1]:
        node = node[part]
    assert path[-1] in node, f"{path} is not in the shipped file: update BAD_VALUES"
    node[path[-1]] = value
    return raw


def test_every_shipped_config_file_is_valid_and_covered_here():
    files = config_files(REPO_CONFIGS)
    assert {str(p.relative_to(REPO_CONFIGS)) for p in files} == set(BAD_VALUES) | DEPLOY_MANIFESTS
    assert check_config_dir(REPO_CONFIGS) == {str(p): None for p in files}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_fails_with_one_line_naming_file_field_and_what_is_allowed(name, tmp_path):
    field, value, allowed = BAD_VALUES[name]
    shipped = REPO_CONFIGS / name
    broken = tmp_path / name
    broken.parent.mkdir(parents=True, exist_ok=True)
    raw = _with_value(yaml.safe_load(shipped.read_text(encoding="utf-8")), field, value)
    broken.write_text(yaml.safe_dump(raw), encoding="utf-8")
    model = model_for(shipped, REPO_CONFIGS)

    with pytest.raises(ConfigError) as caught:
        model.from_yaml(broken)

    message = str(caught.value)
    assert "\n" not in message
    dotted = ".".join(str(part) for part in field)
    assert message.startswith(f"{broken}: {dotted}: "), message
    assert allowed in message, message
    assert repr(value) in message  # the value that was given


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_an_unknown_key_is_refused(name, tmp_path):
    shipped = REPO_CONFIGS / name
    broken = tmp_path / Path(name).name
    raw = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    raw["surprise_key"] = 1
    broken.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{broken}: surprise_key: unknown key$"):
        model_for(shipped, REPO_CONFIGS).from_yaml(broken)


def test_config_check_command_reports_the_broken_file_and_exits_2(tmp_path):
    folder = tmp_path / "configs"
    for path in config_files(REPO_CONFIGS):
        target = folder / path.relative_to(REPO_CONFIGS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    shipped = (REPO_CONFIGS / "scoring.yaml").read_text(encoding="utf-8")
    broken, replaced = re.subn(r"(?m)^precision_target: .*$", "precision_target: 7", shipped)
    assert replaced == 1
    (folder / "scoring.yaml").write_text(broken, encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", "--dir", str(folder)])
    assert result.exit_code == 2
    summary = last_json_line(result.stdout)
    assert list(summary["failed"]) == [str(folder / "scoring.yaml")]
    assert summary["files"] == len(BAD_VALUES) + len(DEPLOY_MANIFESTS)
    assert f"FAIL  {folder / 'scoring.yaml'}: precision_target: " in result.stderr

    (folder / "scoring.yaml").unlink()
    missing = CliRunner().invoke(app, ["config", "check", "--dir", str(folder)])
    assert missing.exit_code == 2 and "configuration file not found" in missing.stderr
    assert list(last_json_line(missing.stdout)["failed"]) == [str(folder / "scoring.yaml")]
    assert "scoring" in FILE_MODELS


def test_a_launchpad_override_for_an_unknown_file_is_refused_not_ignored():
    from loop_pipeline.core.scoring import ScoringConfig
    from loop_pipeline.resources import LoopConfigs

    assert LoopConfigs(config_dir=str(REPO_CONFIGS), overrides={"scoring": {"precision_target": 0.85}}).load(ScoringConfig).precision_target == 0.85
    misspelled = LoopConfigs(config_dir=str(REPO_CONFIGS), overrides={"scorng": {"precision_target": 0.9}})
    with pytest.raises(ConfigError, match=r"unknown config file\(s\) \['scorng'\]"):
        misspelled.load(ScoringConfig)
