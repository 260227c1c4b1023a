"""The loop running itself, on real Dagster instances: the nightly_retrain schedule and the
retrain_sensor with their run requests and skip reasons, the champion_reload_sensor against a real
router on 127.0.0.1 and a real MLflow registry, the run_failure_sensor on a real failed run, the
default automation sensor on by default (eager scoring requested for a newly ingested day), the
instance's run retries; and, marked slow, a retrain run that trains a tiny model, promotes it, and
the router reloading it when the sensor ticks."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import httpx
import polars as pl
import pytest

from loop_pipeline.bench.stand_in import create_replay_app, serve_in_thread
from loop_pipeline.config import ConfigError
from loop_pipeline.core.automation import AutomationConfig, RetrainSensor, new_curated_counts, shortfall
from loop_pipeline.core.contracts import DatasetVersion, TrainedAdapter
from loop_pipeline.defs.automation.sensors import FAILURES_FILE
from loop_pipeline.execution import open_instance
from loop_pipeline.instance import instance_config
from loop_pipeline.resources import LoopConfigs
from loop_pipeline.runs import build_stage_defs, materialize_datasets, materialize_ingest, materialize_scoring, read_result
from loop_pipeline.settings import LoopSettings
from loop_pipeline_tests.defs.automation_support import (
    ADMIN_DIGEST,
    ADMIN_KEY,
    evaluate_schedule,
    ephemeral_instance,
    record_retrain_run,
    schedule_context,
    sensor_context,
    simulate_toy_day,
    skip_message,
    tick,
    latest_day,
)
from loop_pipeline_tests.helpers import REPO_CONFIGS
from loop_pipeline_tests.router.router_support import intent_spec, register_spec_version, router_settings, running_router
from loop_pipeline_tests.toy_intents import write_toy_configs

DAY = "2026-11-01"
NIGHT = dt.datetime(2026, 11, 3, 2, 0, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Prepared:
    home: Path  # ingested, scored and built into a dataset version
    configs: Path
    version: str


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Iterator[Prepared]:
    """One toy day through ingest, scoring and datasets, once for the module (real runs)."""
    root = tmp_path_factory.mktemp("automation_defs")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("LOOP_LANDING_URL", "LOOP_PG_URL", "DAGSTER_HOME", "LOOP_MLFLOW_TRACKING_URI", "LOOP_MLFLOW_ARTIFACT_ROOT",
                     "LOOP_TRAINER_DEPLOY", "LOOP_TRAIN_CONFIG", "LOOP_ROUTER_URL", "LOOP_ROUTER_ADMIN_KEY"):
            patch.delenv(name, raising=False)
        patch.setenv("LOOP_HOME", str(root / "loop_home"))
        configs = write_toy_configs(root / "configs")
        patch.setenv("LOOP_CONFIG_DIR", str(configs))
        simulate_toy_day(root, DAY, traces=400)
        materialize_ingest()
        materialize_scoring(log_to_mlflow=False)
        built = materialize_datasets(log_to_mlflow=False)
        assert not built["blocked_by"], built["blocked_by"]
    yield Prepared(root / "loop_home", configs, built["version"])


@pytest.fixture
def home(prepared: Prepared, loop_home: Path, monkeypatch) -> Path:
    """This test's own copy of the prepared LOOP_HOME (its Dagster instance included)."""
    shutil.copytree(prepared.home, loop_home)
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(prepared.configs))
    return loop_home


@pytest.fixture
def instance(home) -> Iterator[dg.DagsterInstance]:
    instance = open_instance()
    yield instance
    instance.dispose()


# -- the config ----------------------------------------------------------------------------------


def test_automation_yaml_is_typed_and_a_bad_value_names_the_field(tmp_path):
    config = AutomationConfig.from_yaml(REPO_CONFIGS / "automation.yaml")
    assert (config.nightly_retrain.cron, config.nightly_retrain.timezone) == ("0 2 * * *", "UTC")
    assert config.retrain_sensor.minimum("intent") == 200
    bad = tmp_path / "automation.yaml"
    bad.write_text("nightly_retrain:\n  cron: '0 2 * *'\n  timezone: Mars/Olympus\nretrain_sensor:\n  min_new_examples: {intent: 0}\n")
    with pytest.raises(ConfigError) as error:
        AutomationConfig.from_yaml(bad)
    message = str(error.value)
    assert message.startswith(f"{bad}: nightly_retrain.cron: Value error, expected five cron fields")
    assert "nightly_retrain.timezone: Value error, unknown IANA time zone" in message
    assert "retrain_sensor.min_new_examples: Value error, needs a 'default' entry" in message


def test_new_curated_examples_are_the_kept_traces_newer_than_the_trained_version():
    at = [dt.datetime(2026, 11, 1, h, tzinfo=dt.timezone.utc) for h in range(6)]
    scored = pl.DataFrame({
        "trace_id": ["a", "b", "c", "d", "e", "f"],
        "timestamp": at,
        "task_type": ["intent", "intent", "intent", "intent", "summary", "intent"],
        "accepted": [True, True, True, False, True, True],
        "p_good_signals": [0.9, 0.9, 0.9, 0.95, 0.99, 0.2],
        "vetoed": [False, False, False, False, False, True],
    })
    rules = {"intent": "acceptance", "summary": 0.95}
    # Nothing trained yet: every kept trace counts (d not accepted, f vetoed).
    assert new_curated_counts(scored, rules, None) == {"intent": 3, "summary": 1}
    # Trained on a version holding a and b: only what came after b (c, and e for summary).
    assert new_curated_counts(scored, rules, {"a", "b"}) == {"intent": 1, "summary": 1}
    due, line = shortfall({"intent": 1, "summary": 1}, RetrainSensor(min_new_examples={"default": 2, "summary": 1}))
    assert due == {"summary": 1} and line == "intent 1/2, summary 1/1"


# -- nightly_retrain -----------------------------------------------------------------------------


def test_nightly_retrain_requests_every_ingested_day_and_skips_with_its_reason(home, instance):
    defs = build_stage_defs()
    schedule = defs.get_schedule_def("nightly_retrain")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.job_name == "retrain_job"

    # The toy day's traces, and its feedback that landed on the days after it: every day ingested.
    ingested = defs.resources["storage"].table_partitions("raw_traces")
    assert ingested[0] == DAY and len(ingested) > 1
    request = evaluate_schedule(schedule, schedule_context(instance, defs, NIGHT)).run_requests[0]
    assert request.job_name == "retrain_job" and request.run_key == f"nightly_retrain:{NIGHT.isoformat()}"
    config = request.run_config["ops"]["retrain"]["config"]
    assert config["days"] == ingested
    assert config["reason"] == f"nightly_retrain: {len(ingested)} day(s) landed since the last retrain ({', '.join(ingested)})"
    assert request.tags["loop/landed_days"] == ",".join(ingested) and request.tags["loop/trigger"] == "nightly_retrain"

    # A retrain run still going: skipped, naming it.
    going = record_retrain_run(instance, dg.DagsterRunStatus.STARTED, request.run_config)
    skipped = evaluate_schedule(schedule, schedule_context(instance, defs, NIGHT))
    assert skipped.run_requests == [] and skipped.skip_message == f"a retrain run is still going ({going.run_id})"

    # It succeeded: nothing landed since it started, so the next night skips and says since when.
    instance.report_run_canceled(going)  # no longer going...
    done = record_retrain_run(instance, dg.DagsterRunStatus.SUCCESS, request.run_config)
    skipped = evaluate_schedule(schedule, schedule_context(instance, defs, NIGHT + dt.timedelta(days=1)))
    assert skipped.run_requests == [] and skipped.skip_message.startswith(f"no day landed since the last retrain (run {done.run_id} at ")

    # Late feedback for the day lands and is ingested: the next night retrains again.
    materialize_ingest([DAY], instance=instance)
    request = evaluate_schedule(schedule, schedule_context(instance, defs, NIGHT + dt.timedelta(days=2))).run_requests[0]
    assert request.tags["loop/landed_days"] == DAY


def test_nightly_retrain_takes_its_cron_and_time_zone_from_the_config(home, tmp_path, monkeypatch):
    configs = Path(LoopSettings().configs)
    own = tmp_path / "own-configs"
    shutil.copytree(configs, own)
    (own / "automation.yaml").write_text("nightly_retrain:\n  cron: '30 3 * * 1-5'\n  timezone: Europe/Paris\n")
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(own))
    schedule = build_stage_defs().get_schedule_def("nightly_retrain")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 3 * * 1-5", "Europe/Paris")


# -- retrain_sensor ------------------------------------------------------------------------------


def _with_minimum(defs: dg.Definitions, minimum: int) -> LoopConfigs:
    return LoopConfigs(config_dir=defs.resources["configs"].config_dir,
                       overrides={"automation": {"retrain_sensor": {"min_new_examples": {"default": minimum}}}})


def test_retrain_sensor_counts_new_curated_examples_against_the_last_trained_version(home, instance, prepared):
    defs = build_stage_defs()
    sensor = defs.get_sensor_def("retrain_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.job_name == "retrain_job"
    kept = defs.resources["storage"].read_document("score_thresholds")["thresholds"]["classification"]["kept"]
    assert 0 < kept < 400

    # Nothing trained yet: every curated example is new; one more than that is not reached.
    result = tick(defs, "retrain_sensor", sensor_context(instance, defs, configs=_with_minimum(defs, kept + 1)))
    assert skip_message(result) == (
        f"not enough new data: classification {kept}/{kept + 1} (new curated examples since nothing trained yet)"
    )
    # A minimum it reaches: a retrain of every scored day, saying why.
    request = tick(defs, "retrain_sensor", sensor_context(instance, defs, configs=_with_minimum(defs, kept)))
    assert isinstance(request, dg.RunRequest) and request.job_name == "retrain_job"
    assert request.run_config["ops"]["retrain"]["config"]["days"] == defs.resources["storage"].table_partitions("scored_traces")
    assert json.loads(request.tags["loop/new_examples"]) == {"classification": kept}
    assert request.run_key == 'retrain_sensor:{"counts": {"classification": %d}, "since": null}' % kept

    # An adapter trained on the version built from all of it: nothing is new any more.
    version: DatasetVersion = read_result(defs, "training_datasets", DatasetVersion)
    assert version.version == prepared.version
    trained = TrainedAdapter(
        adapter_path="unused", base_model="tiny", base_model_path="unused", dataset_version=version.version,
        dataset_path=version.path, train_config="test", steps=1, sft_steps=1, negative_stage="none", negative_steps=0,
        tokens=1, tokens_per_s=1.0, seconds_per_step=1.0, train_seconds=1.0, peak_rss_mb=1.0, dtype="float32",
        device="cpu", system_prompt="drop",
    )
    results = Path(defs.resources["results_io"].results_dir)
    (results / "lora_adapter.json").write_text(trained.model_dump_json(), encoding="utf-8")
    result = tick(defs, "retrain_sensor", sensor_context(instance, defs, configs=_with_minimum(defs, 1)))
    assert skip_message(result) == (
        f"not enough new data: classification 0/1 (new curated examples since dataset {version.version}, the last one trained on)"
    )

    # A retrain run still going: skipped, naming it.
    going = record_retrain_run(instance, dg.DagsterRunStatus.STARTING)
    result = tick(defs, "retrain_sensor", sensor_context(instance, defs))
    assert skip_message(result) == f"a retrain run is still going ({going.run_id})"


def test_retrain_sensor_skips_before_anything_is_scored(loop_home, monkeypatch, tmp_path):
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(write_toy_configs(tmp_path / "configs")))
    defs = build_stage_defs()
    with ephemeral_instance() as instance:
        message = skip_message(tick(defs, "retrain_sensor", sensor_context(instance, defs)))
    assert message == f"nothing scored yet: no scored_traces / score_thresholds under {LoopSettings().paths.warehouse}"


# -- champion_reload_sensor ----------------------------------------------------------------------


@pytest.fixture
def router(tmp_path, loop_home, monkeypatch):
    """The router on 127.0.0.1 serving the champion of LOOP_HOME's registry through a local stand-in
    (it polls the alias only hourly: a new champion comes from the sensor's reload), keys required."""
    import mlflow  # noqa: F401  (imported here first: the router's thread and this one importing it at once race)

    frontier_app = create_replay_app(default_output="frontier says hi")
    local_app = create_replay_app(default_output="freeze_account", confidence=0.9, model_ids=("loop-candidate",))
    tracking = LoopSettings().tracking()
    tracking.client().search_registered_models()  # the store's tables exist before two threads open it
    with serve_in_thread(frontier_app) as frontier, serve_in_thread(local_app) as local:
        settings = router_settings(
            tmp_path, frontier, load_champion=True, local_backend="openai", local_base_url=local.base_url,
            tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root, poll_interval_s=3600.0,
            api_keys_sha256=[ADMIN_DIGEST],
        )
        with running_router(settings) as server:
            monkeypatch.setenv("LOOP_ROUTER_URL", server.url)
            yield server, tracking


def _served(server) -> str | None:
    return httpx.get(f"{server.url}/healthz").json()["champion"]["version"]


def test_champion_reload_sensor_makes_the_router_load_a_moved_alias(router, tmp_path, monkeypatch):
    server, tracking = router
    defs = build_stage_defs()
    sensor = defs.get_sensor_def("champion_reload_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and defs.resources["router_admin"].url == server.url
    with ephemeral_instance() as instance:
        assert skip_message(tick(defs, "champion_reload_sensor", sensor_context(instance, defs))) == (
            "no champion yet: loop-candidate has no alias 'champion'"
        )
        first = register_spec_version(tracking, intent_spec(), tmp_path / "v1")
        # No key: the router refuses, the cursor stays, the router still serves nothing.
        result = tick(defs, "champion_reload_sensor", sensor_context(instance, defs))
        assert "401, the router refused the key (LOOP_ROUTER_ADMIN_KEY)" in skip_message(result) and _served(server) is None

        monkeypatch.setenv("LOOP_ROUTER_ADMIN_KEY", ADMIN_KEY)
        result = tick(defs, "champion_reload_sensor", sensor_context(instance, defs))
        assert isinstance(result, dg.SensorResult) and result.cursor == first == "1"
        assert skip_message(result) == f"router at {server.url} now serves loop-candidate v1 (was not told yet)"
        assert _served(server) == "1"
        assert skip_message(tick(defs, "champion_reload_sensor", sensor_context(instance, defs, cursor="1"))) == (
            f"champion unchanged: loop-candidate v1, already served by {server.url}"
        )

        second = register_spec_version(tracking, intent_spec(threshold=0.5), tmp_path / "v2")
        assert _served(server) == "1"  # the router's own poll is an hour away
        result = tick(defs, "champion_reload_sensor", sensor_context(instance, defs, cursor="1"))
        assert result.cursor == second == "2" and _served(server) == "2"
        health = httpx.get(f"{server.url}/healthz").json()["champion"]
        assert health["alias_version"] == "2" and health["last_error"] is None


def test_champion_reload_sensor_reports_a_router_that_is_down_and_keeps_its_cursor(loop_home, tmp_path, monkeypatch):
    tracking = LoopSettings().tracking()
    register_spec_version(tracking, intent_spec(), tmp_path / "v1")
    with serve_in_thread(create_replay_app()) as gone:
        url = gone.url
    monkeypatch.setenv("LOOP_ROUTER_URL", url)  # nothing listens there any more
    defs = build_stage_defs()
    with ephemeral_instance() as instance:
        result = tick(defs, "champion_reload_sensor", sensor_context(instance, defs, cursor=None))
    assert isinstance(result, dg.SkipReason)  # no cursor: asked again on the next tick
    assert result.skip_message.startswith(f"router did not reload loop-candidate v1 (asked again next tick): POST {url}/admin/reload: ConnectError")

    monkeypatch.delenv("LOOP_ROUTER_URL")
    defs = build_stage_defs()
    with ephemeral_instance() as instance:
        assert skip_message(tick(defs, "champion_reload_sensor", sensor_context(instance, defs))) == (
            "no router to tell: LOOP_ROUTER_URL is not set"
        )


# -- run_failure_sensor, retries, default automation ----------------------------------------------


def test_a_failed_run_is_recorded_with_its_reason(loop_home, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(write_toy_configs(tmp_path / "configs")))
    defs = build_stage_defs()
    instance = open_instance()
    try:
        # Nothing ingested: the retrain fails at once, without retrying (no retry can fix that).
        result = defs.get_job_def("retrain_job").execute_in_process(instance=instance, raise_on_error=False, tags={"loop/trigger": "test"})
        assert not result.success
        assert [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY] == []
        failure = next(e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
        sensor = defs.get_sensor_def("run_failure_sensor")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_sensor", dagster_event=failure.dagster_event, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id), resources={"storage": defs.resources["storage"]},
        ).for_run_failure()
        with context:
            sensor(context)
            sensor(context)  # a second line is appended, the first kept
    finally:
        instance.dispose()
    lines = (LoopSettings().paths.warehouse / FAILURES_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert (record["run_id"], record["job"], record["partition"], record["trigger"]) == (result.run_id, "retrain_job", None, "test")
    assert record["steps"][0]["step"] == "retrain"
    assert record["steps"][0]["error"].startswith("dagster._core.definitions.events.Failure: no ingested day under") and "nothing to score" in record["steps"][0]["error"]


def test_retrain_job_retries_with_backoff_and_the_instance_retries_dead_runs():
    defs = build_stage_defs()
    policy = defs.get_job_def("retrain_job").op_retry_policy
    assert (policy.max_retries, policy.delay, policy.backoff) == (2, 30.0, dg.Backoff.EXPONENTIAL)
    config = instance_config(None, Path("unused"))
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert config["concurrency"]["pools"]["default_limit"] == 1  # the gpu pool: one step at a time


def test_default_automation_sensor_runs_on_a_fresh_instance_and_requests_eager_scoring(loop_home, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(write_toy_configs(tmp_path / "configs")))
    defs = build_stage_defs()
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("default_automation_condition_sensor")
    # Ours, RUNNING by default: Dagster adds its own (stopped) one only for assets no sensor targets.
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition) and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    targeted = sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert {dg.AssetKey(k) for k in ("trace_signals", "quality_model", "scored_traces", "score_thresholds")} <= targeted
    assert [s.name for s in repository.sensor_defs].count("default_automation_condition_sensor") == 1

    # A day lands and is ingested on a fresh instance: the eager conditions request its scoring.
    day = latest_day()
    simulate_toy_day(tmp_path, day, traces=60)
    instance = open_instance()
    try:
        # The sensor's first tick only starts watching (eager conditions ignore what came before).
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        materialize_ingest([day], instance=instance)  # (its feedback lands on days still to come)
        evaluated = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert evaluated.get_num_requested(dg.AssetKey("trace_signals")) == 1
        assert evaluated.get_requested_partitions(dg.AssetKey("trace_signals")) == {day}
    finally:
        instance.dispose()


def test_late_data_for_an_older_day_is_rescored_too(loop_home, tmp_path, monkeypatch):
    """Not only the newest day: a day within the feedback lookback whose data changed is re-scored
    (Dagster's own eager() would look at the latest partition only)."""
    import datetime as dt

    monkeypatch.setenv("LOOP_CONFIG_DIR", str(write_toy_configs(tmp_path / "configs")))
    defs = build_stage_defs()
    older = (dt.date.fromisoformat(latest_day()) - dt.timedelta(days=2)).isoformat()
    simulate_toy_day(tmp_path, older, traces=60)
    instance = open_instance()
    try:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        days = [(dt.date.fromisoformat(older) + dt.timedelta(days=k)).isoformat() for k in range(3)]
        assert days[-1] == latest_day()
        materialize_ingest(days, instance=instance)  # the older day and the feedback days after it
        evaluated = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = evaluated.get_requested_partitions(dg.AssetKey("trace_signals"))
        assert older in requested and older != latest_day(), requested
        too_old = (dt.date.fromisoformat(latest_day()) - dt.timedelta(days=30)).isoformat()
        assert too_old not in evaluated.get_requested_partitions(dg.AssetKey("trace_signals"))
    finally:
        instance.dispose()


# -- the loop closing itself ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_scheduled_retrain_promotes_and_the_router_reloads_it(loop_home, tmp_path, monkeypatch):
    """nightly_retrain's request run as a real retrain_job run: a tiny model trained through Pipes,
    evaluated, promoted; champion_reload_sensor's tick makes the running router serve it."""
    import mlflow  # noqa: F401  (imported before the router's thread does)

    from loop_pipeline.core.registry import CHAMPION
    from loop_pipeline_tests.defs.automation_support import write_train_config
    from loop_pipeline_tests.tiny_models import build_tiny_model
    from loop_pipeline_tests.toy_intents import toy_corpus

    monkeypatch.setenv("LOOP_CONFIG_DIR", str(write_toy_configs(tmp_path / "configs")))
    model = build_tiny_model(tmp_path / "tiny-llama", toy_corpus(), vocab_size=300)
    monkeypatch.setenv("LOOP_TRAIN_CONFIG", str(write_train_config(tmp_path, model)))
    simulate_toy_day(tmp_path, DAY, traces=700)
    tracking = LoopSettings().tracking()
    tracking.client().search_registered_models()  # the store's tables exist before two threads open it
    with serve_in_thread(create_replay_app(default_output="frontier says hi")) as frontier:
        settings = router_settings(tmp_path, frontier, load_champion=True, tracking_uri=tracking.tracking_uri,
                                   artifact_root=tracking.artifact_root, poll_interval_s=3600.0, api_keys_sha256=[ADMIN_DIGEST],
                                   device="cpu")
        with running_router(settings) as server:
            monkeypatch.setenv("LOOP_ROUTER_URL", server.url)
            monkeypatch.setenv("LOOP_ROUTER_ADMIN_KEY", ADMIN_KEY)
            instance = open_instance()
            try:
                materialize_ingest(instance=instance)
                defs = build_stage_defs()
                schedule = defs.get_schedule_def("nightly_retrain")
                request = evaluate_schedule(schedule, schedule_context(instance, defs, NIGHT)).run_requests[0]
                run = defs.get_job_def("retrain_job").execute_in_process(
                    run_config=request.run_config, instance=instance, tags=request.tags
                )
                assert run.success
                tags = instance.get_run_by_id(run.run_id).tags
                assert tags["loop/champion"] == "loop-candidate v1" and "loop/blocked_by" not in tags
                assert tags["loop/trigger"] == "nightly_retrain"
                champion = tracking.client().get_model_version_by_alias("loop-candidate", CHAMPION)
                assert str(champion.version) == "1"
                # Every stage ran as its own asset run on this instance, in graph order.
                for asset in ("trace_signals", "quality_model", "scored_traces", "score_thresholds", "training_datasets",
                              "lora_adapter", "holdout_eval", "registered_model"):
                    assert instance.get_latest_materialization_event(dg.AssetKey(asset)) is not None, asset

                # The router has not looked (its poll is an hour away) until the sensor tells it.
                assert _served(server) is None
                result = tick(defs, "champion_reload_sensor", sensor_context(instance, defs))
                assert result.cursor == "1" and _served(server) == "1"
                answer = httpx.post(f"{server.url}/v1/chat/completions", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                                    json={"model": "loop", "messages": [{"role": "user", "content": "w1 refund w2"}],
                                          "metadata": {"task_type": "classification"}}, timeout=60)
                assert answer.status_code == 200, answer.text

                # Nothing landed since: the next night skips; no new curated data: the sensor too.
                skipped = evaluate_schedule(schedule, schedule_context(instance, defs, NIGHT + dt.timedelta(days=1)))
                assert skipped.skip_message.startswith(f"no day landed since the last retrain (run {run.run_id} at ")
                version = read_result(defs, "training_datasets", DatasetVersion).version
                assert skip_message(tick(defs, "retrain_sensor", sensor_context(instance, defs))) == (
                    f"not enough new data: classification 0/200 (new curated examples since dataset {version}, the last one trained on)"
                )
            finally:
                instance.dispose()
