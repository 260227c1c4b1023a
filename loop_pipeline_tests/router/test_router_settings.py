"""RouterSettings (YAML < environment < overrides, one-line errors, hashed keys), the policy's rules
on their own, and the router's import path (no torch / transformers / mlflow / Dagster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from loop_pipeline.config import ConfigError
from loop_pipeline.core.serving import TaskServing
from loop_pipeline.router.auth import ApiKeys, key_digest
from loop_pipeline.router.errors import RouterError
from loop_pipeline.router.policy import judge, pre_route
from loop_pipeline.router.settings import RouterSettings
from loop_pipeline_tests.helpers import REPO_CONFIGS
from loop_pipeline_tests.router.router_support import intent_spec


def test_yaml_then_environment_then_overrides(tmp_path, monkeypatch):
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"frontier_base_url": "http://f/v1", "frontier_model": "gpt-4o", "port": 9000, "shadow_rate": 0.1}))
    assert RouterSettings.load(path).port == 9000
    shipped = RouterSettings.load(REPO_CONFIGS / "router.yaml")
    assert (shipped.model_name, shipped.champion_alias, shipped.local_backend, shipped.api_keys_sha256) == ("loop-candidate", "champion", "in_process", [])
    monkeypatch.setenv("LOOP_ROUTER_PORT", "9100")
    monkeypatch.setenv("LOOP_ROUTER_SHADOW_RATE", "0.25")
    monkeypatch.setenv("LOOP_ROUTER_API_KEYS", f" {key_digest('a').upper()} ,{key_digest('b')}")
    settings = RouterSettings.load(path, port=9200)
    assert (settings.port, settings.shadow_rate, settings.frontier_model) == (9200, 0.25, "gpt-4o")
    assert settings.api_keys_sha256 == [key_digest("a"), key_digest("b")]


def test_bad_values_fail_in_one_line_naming_the_file_and_field_and_never_echo_a_key(tmp_path, monkeypatch):
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"frontier_base_url": "http://f/v1", "frontier_model": "m", "batch_max_size": 0}))
    with pytest.raises(ConfigError, match=rf"^{path}: batch_max_size: Input should be greater than or equal to 1 \(got 0\)$"):
        RouterSettings.load(path)
    path.write_text(yaml.safe_dump({"frontier_base_url": "http://f/v1", "frontier_model": "m", "local_backend": "openai"}))
    with pytest.raises(ConfigError, match="local_backend openai needs local_base_url"):
        RouterSettings.load(path)
    monkeypatch.setenv("LOOP_ROUTER_API_KEYS", "sk-raw-secret-key")
    path.write_text(yaml.safe_dump({"frontier_base_url": "http://f/v1", "frontier_model": "m"}))
    with pytest.raises(ConfigError) as caught:
        RouterSettings.load(path)
    assert "not sha256 hex digests" in str(caught.value) and "sk-raw-secret-key" not in str(caught.value)


def test_api_keys_are_checked_against_their_hashes():
    keys = ApiKeys([key_digest("right")])
    keys.check("Bearer right")
    for header in (None, "", "Bearer", "Basic right", "Bearer wrong", "bearer  rightx"):
        with pytest.raises(RouterError) as refused:
            keys.check(header)
        assert refused.value.status == 401 and refused.value.rejection == "unauthorized"
    ApiKeys([]).check(None)  # no keys configured: auth off


def test_the_policy_pre_routes_then_judges_like_the_evaluation():
    spec = intent_spec(threshold=0.8, max_input_tokens=10)
    assert pre_route(None, "intent", 3).reason == "no_champion"
    assert pre_route(spec, None, 3).reason == "no_task_type"
    assert pre_route(spec, "other", 3).reason == "unknown_task_type"
    assert pre_route(spec, "summarization", 3).reason == "no_threshold"
    assert pre_route(spec, "intent", 11).reason == "input_too_long"
    assert pre_route(spec, "intent", 10).try_local and pre_route(spec, "intent", None).try_local
    task = TaskServing(kind="classification", threshold=0.8, escalation_labels=("out_of_scope",))
    assert judge("freeze_account", 0.8, task) == ("local", "confident")  # >= as in the evaluation
    assert judge("freeze_account", 0.79, task) == ("frontier", "low_confidence")
    assert judge(" Out_Of_Scope ", 0.99, task) == ("frontier", "escalation_label")


def test_the_feedback_route_accepts_exactly_the_schemas_kinds_and_sources():
    from loop_pipeline.router.routes.feedback import FEEDBACK_KINDS, FEEDBACK_SOURCES
    from loop_pipeline.schemas import feedback

    assert (FEEDBACK_KINDS, FEEDBACK_SOURCES) == (feedback.FEEDBACK_KINDS, feedback.FEEDBACK_SOURCES)


def test_importing_the_router_and_creating_an_app_without_a_champion_imports_no_heavy_library(tmp_path):
    code = (
        "import json, sys\n"
        "from loop_pipeline.router import RouterSettings, create_app\n"
        f"settings = RouterSettings.load({str(REPO_CONFIGS / 'router.yaml')!r}, load_champion=False, landing_dir={str(tmp_path)!r})\n"
        "create_app(settings)\n"
        "heavy = ('torch', 'transformers', 'mlflow', 'dagster', 'peft', 'trl')\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOP_ROUTER_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
