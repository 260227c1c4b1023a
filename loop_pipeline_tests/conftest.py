"""Shared fixtures: real PostgreSQL databases, one thread for torch, no network."""

import os
import uuid
from pathlib import Path

import pytest

# Before anything imports torch / polars: one thread each is stable under CPU contention.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import loop_pipeline  # noqa: E402,F401  (no-telemetry environment)

PG_SERVER_URL = os.environ.get("LOOP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
FIXTURES = Path(__file__).parent / "fixtures"


def _server_url_with_db(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A reachable PostgreSQL server. Skips on a laptop without one; fails in CI (CI=true)."""
    import psycopg2

    try:
        psycopg2.connect(PG_SERVER_URL, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL not reachable at {PG_SERVER_URL}: {exc}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return PG_SERVER_URL


@pytest.fixture
def postgres_url(postgres_server: str):
    """A fresh, empty database for one test; dropped afterwards."""
    import psycopg2

    name = f"loop_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_url_with_db(postgres_server, name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def loop_home(tmp_path, monkeypatch) -> Path:
    """An empty LOOP_HOME for one test (and no stray LOOP_* settings from the environment)."""
    home = tmp_path / "loop_home"
    # Every setting LoopSettings reads (LOOP_*), so a developer's shell cannot leak into a test.
    for name in [n for n in os.environ if n.startswith("LOOP_") and n != "LOOP_TEST_PG_URL"]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("LOOP_HOME", str(home))
    return home
