"""Crash safety (issue 16): every stage killed with SIGKILL inside its work, then run again, ends
where an uninterrupted run ends.

Each stage runs the real ``loop`` command in a child process that dies at a point inside the
stage's work (``crash_support``: while a table, a plot or a report is being written, just after a
version folder or a registry version was created, while the trainer reports a step). Then:

- right after the kill, no file a reader can open (every path without a dot-named part) is cut short;
- the same command run again succeeds, and its tables, dataset version, report and registry equal
  what the uninterrupted run of the same stage produced from the same inputs (the uninterrupted run
  is made first, its outputs kept, then removed so the killed run starts from the same state);
- nothing the killed run left behind remains (its temporary files are swept by the rerun).

One toy LOOP_HOME (tiny model, one simulated day) goes through the stages in order; each test runs
the stages before its own when an earlier test did not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline_tests.crash_support import (
    REPO_ROOT,
    child_env,
    hidden_leftovers,
    incomplete_files,
    run_killed,
    snapshot,
)
from loop_pipeline_tests.helpers import last_json_line

runner = CliRunner()
STAGES = ("ingest", "scoring", "datasets", "training", "evaluation", "registration")
DAY = "2026-11-01"
TRAIN_STEPS = 60
MODEL_NAME = "loop-candidate"
INGEST_TABLES = ("raw_traces", "feedback_events", "quarantined_records", "ingest_summaries")
SCORING_OUTPUTS = ("trace_signals", "scored_traces", "orphan_feedback", "quality_model.json", "score_thresholds.json", "score_thresholds.png")


class ToyLoop:
    """A LOOP_HOME with toy traffic, its configs and a tiny model; runs stage commands in-process."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.configs = root / "configs"
        self.train_yaml = root / "configs" / "train" / "crash-tiny.yaml"
        self.done: set[str] = set()
        self.kills = 0

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    def env(self, **more: str) -> dict[str, str]:
        return child_env(LOOP_HOME=str(self.home), LOOP_CONFIG_DIR=str(self.configs), **more)

    def command(self, stage: str) -> list[str]:
        return {
            "ingest": ["materialize", "--partition", DAY],  # the traces' day (a few reviews land the next one)
            "scoring": ["thresholds", "sweep", "--no-mlflow"],
            "datasets": ["datasets", "build", "--no-mlflow"],
            "training": ["train", "--config", str(self.train_yaml)],
            "evaluation": ["eval"],
            "registration": ["promote"],
        }[stage]

    def run(self, stage: str) -> dict:
        """The stage's command in this process (the same CLI the child runs), uninterrupted."""
        result = runner.invoke(app, self.command(stage))
        assert result.exit_code == 0, f"loop {' '.join(self.command(stage))}:\n{result.output[-4000:]}"
        self.done.add(stage)
        return last_json_line(result.stdout)

    def require(self, stage: str) -> None:
        """Every stage before ``stage`` has run (tests run in order; a lone test runs them itself)."""
        for earlier in STAGES[: STAGES.index(stage)]:
            if earlier not in self.done:
                self.run(earlier)

    def kill(self, stage: str, point: dict) -> subprocess.CompletedProcess:
        self.kills += 1
        return run_killed(point, self.command(stage), self.env())

    def assert_killed_runs_failed(self) -> None:
        """The run each killed process was in is marked failed (the rerun reaped it); none of a dead
        process is left "started" (its runs that finished before the kill keep their status)."""
        import dagster as dg

        instance = dg.DagsterInstance.get()
        try:
            others = [r for r in instance.get_runs() if r.tags.get("loop/pid") != str(os.getpid())]
            assert [r.run_id for r in others if not r.is_finished] == []
            failed = [r for r in others if r.status == dg.DagsterRunStatus.FAILURE]
            assert len(failed) == self.kills, [(r.run_id, r.status) for r in others]
            for run in failed:
                message = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].message
                assert "is gone (killed?)" in message, message
        finally:
            instance.dispose()


def _build_toy(root: Path) -> ToyLoop:
    from loop_pipeline.settings import LoopSettings
    from loop_pipeline.sim import NO_MESS, SimulationConfig
    from loop_pipeline_tests.helpers import simulate_landing
    from loop_pipeline_tests.tiny_models import build_tiny_model, write_tiny_train_config
    from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows, write_toy_configs

    toy = ToyLoop(root)
    write_toy_configs(toy.configs)
    evaluation = toy.configs / "evaluation.yaml"
    # A lenient gate: these tests are about crashes, not about how much 60 steps on 200 traces teach a tiny model.
    raw = {**yaml.safe_load(evaluation.read_text()), "max_new_tokens": 8, "target_agreement": 0.3, "min_holdout_rows_per_task": 20}
    evaluation.write_text(yaml.safe_dump(raw))
    model = build_tiny_model(root / "tiny-llama", toy_corpus(), vocab_size=300)
    write_tiny_train_config(toy.train_yaml, model, root / "runs", steps=TRAIN_STEPS)
    train = yaml.safe_load(toy.train_yaml.read_text())
    train["sft"]["logging_steps"] = 10  # the trainer reports every 10 steps: the kill comes mid-run
    toy.train_yaml.write_text(yaml.safe_dump(train))
    data = root / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(0, 2000)), encoding="utf-8")
    simulation = SimulationConfig.from_mapping(
        {**NO_MESS, "dataset": "labeled", "input_path": str(data), "days": 1, "traces_per_day": 200, "start_date": DAY,
         "frontier_error_rate": 0.0, "human_review_rate": 0.3, "review_delay_days": [0, 0], "seed": 0}
    )
    simulate_landing(simulation, LoopSettings().landing)
    return toy


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Iterator[ToyLoop]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("crash")
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("LOOP_") and n != "LOOP_TEST_PG_URL"]:
            patch.delenv(name)
        patch.setenv("LOOP_HOME", str(root / "home"))
        patch.setenv("LOOP_CONFIG_DIR", str(root / "configs"))
        patch.setenv("DAGSTER_HOME", str(root / "home" / "dagster"))
        yield _build_toy(root)


def _remove(folder: Path, names) -> None:
    for name in names:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _assert_nothing_cut_short(folder: Path) -> None:
    assert incomplete_files(folder) == {}, f"a reader would find these files of {folder} cut short"


def test_ingest_killed_while_writing_a_table(toy):
    reference = toy.run("ingest")
    tables = snapshot(toy.warehouse)
    _remove(toy.warehouse, INGEST_TABLES)

    toy.kill("ingest", {"write": "/raw_traces/"})
    _assert_nothing_cut_short(toy.warehouse)
    assert not (toy.warehouse / "raw_traces" / f"{DAY}.parquet").exists()

    rerun = toy.run("ingest")
    assert snapshot(toy.warehouse) == tables  # byte-identical tables and summary
    assert [p["valid"] for p in rerun["partitions"]] == [p["valid"] for p in reference["partitions"]]
    assert hidden_leftovers(toy.warehouse) == []  # no temporary, no spill folder of the killed run
    toy.assert_killed_runs_failed()


def test_scoring_killed_while_writing_the_threshold_plot(toy):
    toy.require("scoring")
    toy.run("scoring")
    reference = snapshot(toy.warehouse)
    _remove(toy.warehouse, SCORING_OUTPUTS)

    toy.kill("scoring", {"write": "score_thresholds.png"})
    _assert_nothing_cut_short(toy.warehouse)

    toy.run("scoring")
    assert snapshot(toy.warehouse) == reference  # signals, scores, model, thresholds and plot
    assert hidden_leftovers(toy.warehouse, SCORING_OUTPUTS) == []
    toy.assert_killed_runs_failed()


def test_datasets_killed_while_staging_then_after_the_version_folder_appeared(toy):
    toy.require("datasets")
    built = toy.run("datasets")
    root = toy.home / "datasets"
    reference = snapshot(root)
    assert set(reference) == {f"{built['version']}/{n}" for n in ("sft.parquet", "kto.parquet", "dpo.parquet", "holdout.parquet", "README.md")} | {"holdout_groups.parquet"}
    shutil.rmtree(root)

    # Killed while writing the version's first file in its staging folder: no version yet.
    toy.kill("datasets", {"write": "/.staging"})
    _assert_nothing_cut_short(root)
    assert not (root / built["version"]).exists() and any(".staging" in p for p in hidden_leftovers(root))
    # Killed again, the version folder in place but the holdout assignment beside it not written yet.
    toy.kill("datasets", {"call": ["os.rename", "os.replace"], "when": "after", "match": f"datasets/{built['version']}"})
    _assert_nothing_cut_short(root)
    assert not (root / "holdout_groups.parquet").exists()

    rebuilt = toy.run("datasets")
    assert rebuilt["version"] == built["version"]
    assert snapshot(root) == reference  # the same version, byte for byte, and the same holdout groups
    assert hidden_leftovers(root) == []  # the killed builds' staging and working folders are gone
    toy.assert_killed_runs_failed()


def _trainer_processes(home: Path) -> list[int]:
    """Live trainer processes (``-m loop_pipeline.core.training --pipes``) working for ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"loop_pipeline.core.training" in command and f"LOOP_HOME={home}".encode() in environ:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = [pid for pid in pids if _running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    return alive


def test_training_killed_mid_run_restarts_cleanly(toy):
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from loop_pipeline.settings import LoopSettings

    toy.require("training")
    results = toy.warehouse / "results" / "lora_adapter.json"
    assert not results.exists()
    runs_before = set((toy.home / "models" / "runs").glob("*")) if (toy.home / "models" / "runs").is_dir() else set()

    # The `loop train` process dies while its trainer (a child process, Dagster Pipes) reports step 30.
    toy.kill("training", {"call": "dagster._core.pipes.context.PipesMessageHandler._handle_log", "when": "before",
                          "match": f"sft step 30/{TRAIN_STEPS}"})
    # Its trainer does not train on as an orphan: it stops when the process that launched it is gone.
    trainers = _trainer_processes(toy.home)  # empty if it already stopped
    assert _wait_gone(trainers, 20) == [], f"the killed run's trainer is still running: {trainers}"
    assert not results.exists()  # no lora_adapter value from the killed run
    killed_runs = set((toy.home / "models" / "runs").glob("*")) - runs_before
    assert len(killed_runs) == 1 and not (next(iter(killed_runs)) / "adapter").exists()
    client = MlflowClient(LoopSettings().tracking().tracking_uri)
    experiment = client.get_experiment_by_name("loop-training")
    killed_mlflow = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in killed_mlflow] == ["FAILED"]

    trained = toy.run("training")
    assert trained["sft_steps"] == TRAIN_STEPS and trained["mlflow_run_id"] != killed_mlflow[0].info.run_id
    adapter = Path(trained["adapter_path"])
    assert adapter.parent not in killed_runs  # a fresh run folder: the rerun restarts, it does not reuse a partial one
    _assert_nothing_cut_short(adapter.parent)
    _adapter_loads(trained)
    toy.assert_killed_runs_failed()
    instance = dg.DagsterInstance.get()
    try:
        latest = instance.get_latest_materialization_event(dg.AssetKey("lora_adapter"))
        assert instance.get_run_by_id(latest.run_id).status == dg.DagsterRunStatus.SUCCESS
    finally:
        instance.dispose()


def _adapter_loads(trained: dict) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(trained["base_model_path"])
    model = PeftModel.from_pretrained(base, trained["adapter_path"])
    assert any("lora" in name for name, _ in model.named_parameters())
    AutoModelForCausalLM.from_pretrained(trained["merged_path"])


def _report(folder: Path) -> dict:
    """report.json without what timing changes from run to run (throughput, the cost made from it)."""
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    for key in ("throughput", "cost", "cost_one_at_a_time"):
        report["report"].pop(key)
    return report


def test_evaluation_killed_while_writing_its_report(toy):
    toy.require("evaluation")
    evaluated = toy.run("evaluation")
    folder = Path(json.loads((toy.warehouse / "results" / "holdout_eval.json").read_text())["report_dir"])
    per_example, report = (folder / "per_example.parquet").read_bytes(), _report(folder)
    shutil.rmtree(folder)
    (toy.warehouse / "results" / "holdout_eval.json").unlink()

    toy.kill("evaluation", {"write": "report.json"})
    _assert_nothing_cut_short(folder)
    assert not (toy.warehouse / "results" / "holdout_eval.json").exists()

    again = toy.run("evaluation")
    assert again["decision"] == evaluated["decision"] and again["decision"]["promote"] is True
    assert (folder / "per_example.parquet").read_bytes() == per_example  # the same answers and confidences
    assert _report(folder) == report
    assert hidden_leftovers(folder) == []
    toy.assert_killed_runs_failed()


def test_registration_killed_after_creating_the_version(toy):
    from loop_pipeline.settings import LoopSettings

    toy.require("registration")
    client = LoopSettings().tracking().client()

    toy.kill("registration", {"call": "mlflow.tracking.MlflowClient.create_model_version", "when": "after"})
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert len(versions) == 1 and versions[0].aliases == []
    tags = dict(versions[0].tags)
    assert {"dataset_version", "serving_spec", "thresholds", "coverage"} <= set(tags)  # created with its tags, in one write

    promoted = toy.run("registration")
    assert (promoted["champion"], promoted["previous"], promoted["unchanged"]) == ("1", None, False)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [str(v.version) for v in versions] == ["1"], "the rerun registered the same training run a second time"
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert dict(champion.tags).items() >= tags.items() and "promotion_reason" in champion.tags
    assert client.get_registered_model(MODEL_NAME).tags["last_move"].startswith("promote 1 (was None)")
    toy.assert_killed_runs_failed()


@pytest.mark.postgres
def test_postgres_going_away_fails_the_run_and_a_retry_succeeds(toy, postgres_url, postgres_server, tmp_path, monkeypatch):
    import dagster as dg
    import psycopg2

    home = tmp_path / "pg_home"
    shutil.copytree(toy.home / "landing", home / "landing")
    database = postgres_url.rsplit("/", 1)[1]
    marker, resume = tmp_path / "paused", tmp_path / "resume"
    point = {"call": "os.replace", "when": "pause", "match": "/raw_traces/", "marker": str(marker), "resume": str(resume),
             "fast_pg_retries": True}
    env = child_env(LOOP_HOME=str(home), LOOP_CONFIG_DIR=str(toy.configs), LOOP_PG_URL=postgres_url)
    child = subprocess.Popen(
        [sys.executable, "-m", "loop_pipeline_tests.crash_support", json.dumps(point), "materialize", "--partition", DAY],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, f"the run never got to writing its table:\n{child.stderr.read() if child.poll() is not None else ''}"
            time.sleep(0.1)
        # The run is under way (its Dagster run and events are in this database): the database goes away.
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
        resume.touch()
        out, err = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            child.kill()
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
    assert child.returncode != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "PostgreSQL" in last and database in last, last

    # PostgreSQL is back: the same command succeeds, and the run that lost its database is marked failed.
    monkeypatch.setenv("LOOP_HOME", str(home))
    monkeypatch.setenv("LOOP_PG_URL", postgres_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    retried = runner.invoke(app, ["materialize", "--partition", DAY])
    assert retried.exit_code == 0, retried.output[-3000:]
    assert pl.read_parquet(home / "warehouse" / "raw_traces" / f"{DAY}.parquet").height == 200
    instance = dg.DagsterInstance.get()
    try:
        runs = instance.get_runs()
        lost = [r for r in runs if r.tags["loop/pid"] == str(child.pid)]
        assert [r.status for r in lost] == [dg.DagsterRunStatus.FAILURE]
        assert "is gone (killed?)" in instance.all_logs(lost[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].message
        assert [r.status for r in runs if r not in lost] == [dg.DagsterRunStatus.SUCCESS]
    finally:
        instance.dispose()
