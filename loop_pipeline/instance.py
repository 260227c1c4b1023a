"""The Dagster instance: SQLite under LOOP_HOME by default, PostgreSQL when LOOP_PG_URL is set
(both read by :class:`~loop_pipeline.settings.LoopSettings` and passed in here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from loop_pipeline.core.storage import write_bytes_atomic


RUN_RETRIES = 2


def instance_config(pg_url: str | None, sqlite_dir: Path) -> dict:
    # Telemetry off in the instance itself, so `dagster dev` does not phone home either.
    config: dict = {"telemetry": {"enabled": False}}
    # Pools without their own limit (the `gpu` pool of lora_adapter) run one step at a time:
    # one training run per GPU. More GPUs: `dagster instance concurrency set gpu N`.
    config["concurrency"] = {"pools": {"default_limit": 1}}
    # A run whose worker died (killed, out of memory, a lost pod) is retried by the daemon, twice;
    # an op that failed is not retried here: the retrain job's own RetryPolicy decides that
    # (configs/automation.yaml retries), so a failed check or a bad config fails once.
    config["run_retries"] = {"enabled": True, "max_retries": RUN_RETRIES, "retry_on_asset_or_op_failure": False}
    if pg_url:
        config["storage"] = {"postgres": {"postgres_url": pg_url}}
    else:
        config["storage"] = {"sqlite": {"base_dir": str(sqlite_dir)}}
    return config


def ensure_dagster_home(home: Path, pg_url: str | None = None) -> Path:
    """Write ``dagster.yaml`` for the embedded (or LOOP_PG_URL) instance; return DAGSTER_HOME.

    Rewritten only when its content changes, so a running webserver is not disturbed.
    """
    dagster_home = Path(home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(instance_config(pg_url, dagster_home / "storage"), sort_keys=True)
    target = dagster_home / "dagster.yaml"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        write_bytes_atomic(target, text.encode("utf-8"))
    return dagster_home
