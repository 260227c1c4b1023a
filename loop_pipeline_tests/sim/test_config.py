"""SimulationConfig: configs/simulate.yaml as a typed model; a bad value fails with one line naming
the file and the field."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from loop_pipeline.config import ConfigError
from loop_pipeline.settings import LoopSettings
from loop_pipeline.sim import SimulationConfig

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_yaml_holds_the_defaults(tmp_path):
    assert SimulationConfig.from_yaml(REPO_CONFIGS / "simulate.yaml") == SimulationConfig()
    path = tmp_path / "sim.yaml"
    path.write_text("dataset: clinc150\nstart_date: 2026-12-24\nreview_delay_days: [0, 2]\ndays: 3\n",
                    encoding="utf-8")
    loaded = SimulationConfig.from_yaml(path)
    assert (loaded.start_date, loaded.review_delay_days, loaded.days) == ("2026-12-24", (0, 2), 3)
    assert SimulationConfig.from_mapping(loaded.model_dump()) == loaded
    # Entry points load configs/simulate.yaml with overrides merged in.
    merged = LoopSettings(config_dir=REPO_CONFIGS).load(SimulationConfig, {"days": 2, "domains": ["banking"]})
    assert (merged.days, merged.seed, merged.domains) == (2, 0, ["banking"])


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"frontier_error_rate": 1.5}, "frontier_error_rate"),
        ({"human_review_rate": -0.1}, "human_review_rate"),
        ({"rushed_accept_wrong_rate": "high"}, "rushed_accept_wrong_rate"),
        ({"days": 0}, "days"),
        ({"traces_per_day": 2.5}, "traces_per_day"),
        ({"n_users": True}, "n_users"),
        ({"review_delay_days": [3, 1]}, "review_delay_days"),
        ({"review_delay_days": 2}, "review_delay_days"),
        ({"start_date": "Nov 1"}, "start_date"),
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"start_date": dt.datetime(2026, 11, 1, 9, 30)}, "start_date"),
        ({"domains": []}, "domains"),
        ({"app": "  "}, "app"),
        ({"out_of_scope_rate": float("nan")}, "out_of_scope_rate"),
        ({"dataset": "imdb"}, "dataset"),
        ({"dataset": "labeled"}, "input_path"),
        ({"domains": "banking"}, "domains"),
        ({"dataset": "dialogsum", "input_path": "x.jsonl", "domains": ["banking"]}, "domains"),
        ({"seed": -1}, "seed"),
        ({"frontier_modle": "gpt-4o"}, "frontier_modle"),
    ],
)
def test_config_errors_name_the_field(raw, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        SimulationConfig.from_mapping(raw)


def test_yaml_with_unknown_key_names_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("days: 2\ntraffic_per_day: 10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="traffic_per_day"):
        SimulationConfig.from_yaml(path)


def test_a_bad_file_fails_with_one_line_naming_the_file_and_the_field(tmp_path):
    path = tmp_path / "simulate.yaml"
    path.write_text("days: 2\nfrontier_error_rate: 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        SimulationConfig.from_yaml(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: frontier_error_rate: ")
    assert "less than or equal to 1" in message and "1.5" in message


def test_values_are_normalised():
    config = SimulationConfig.from_mapping(
        {"start_date": dt.date(2026, 12, 24), "domains": ["banking", "travel", "banking"],
         "review_delay_days": [0, 2], "input_path": Path("data_full.json"), "frontier_error_rate": 0}
    )
    assert config.start_date == "2026-12-24" and config.start == dt.date(2026, 12, 24)
    assert config.domains == ["banking", "travel"]  # duplicates dropped, order kept
    assert config.review_delay_days == (0, 2)
    assert config.input_path == "data_full.json"
    assert config.frontier_error_rate == 0.0 and isinstance(config.frontier_error_rate, float)
    assert config.resolved_task_type == "intent"
    assert SimulationConfig(dataset="dialogsum", input_path="x.jsonl").resolved_task_type == "summarization"
