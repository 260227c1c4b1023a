"""Promotion and rollback on a real MLflow registry, with SQLite and PostgreSQL backend stores:
aliases move in order (a reader never sees `champion` missing), reasons are recorded, and moves
that cannot happen say why."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from loop_pipeline.core.registry import (
    CHAMPION,
    PREVIOUS,
    RegistryError,
    current_champion,
    promote,
    register_version,
    rollback,
)
from loop_pipeline.core.tracking import TrackingTarget

NAME = "loop-test-model"


@pytest.fixture(params=["sqlite", "postgres"])
def client(request, tmp_path):
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("postgres_url")
    target = TrackingTarget(uri, (tmp_path / "artifacts").as_uri())
    return target.client(), target


def _versions(client, target, tmp_path: Path, count: int) -> list[str]:
    experiment = target.experiment_id(client, "registry-test")
    versions = []
    for i in range(count):
        run = client.create_run(experiment)
        folder = tmp_path / f"model-{i}"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        client.log_artifacts(run.info.run_id, str(folder), "merged_model")
        client.set_terminated(run.info.run_id)
        versions.append(
            register_version(client, NAME, f"runs:/{run.info.run_id}/merged_model", run.info.run_id, {"dataset_version": f"ds-{i}"})
        )
    return versions


def test_promote_moves_champion_and_previous_and_rollback_restores(client, tmp_path):
    client, target = client
    v1, v2, v3 = _versions(client, target, tmp_path, 3)
    assert current_champion(client, NAME) is None
    first = promote(client, NAME, v1, "first model")
    assert (first.champion, first.previous) == (v1, None)
    promote(client, NAME, v2, "better on holdout")
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == v2
    assert str(client.get_model_version_by_alias(NAME, PREVIOUS).version) == v1
    assert client.get_model_version(NAME, v2).tags["promotion_reason"] == "better on holdout"
    assert client.get_model_version(NAME, v2).tags["dataset_version"] == "ds-1"

    back = rollback(client, NAME, "bad answers in production")
    assert (back.champion, back.previous) == (v1, v2)
    assert current_champion(client, NAME) == v1
    assert "bad answers in production" in client.get_model_version(NAME, v2).tags["rolled_back"]
    assert client.get_registered_model(NAME).tags["last_move"].startswith(f"rollback {v2} -> {v1}")

    with pytest.raises(RegistryError, match="already the champion"):
        promote(client, NAME, v1, "again")
    with pytest.raises(RegistryError, match="needs a reason"):
        promote(client, NAME, v3, "  ")


def test_rollback_without_previous_says_why(client, tmp_path):
    client, target = client
    (v1,) = _versions(client, target, tmp_path, 1)
    with pytest.raises(RegistryError, match="no `previous` version"):
        rollback(client, NAME, "nothing to go back to")
    promote(client, NAME, v1, "only one")
    with pytest.raises(RegistryError, match="no `previous` version"):
        rollback(client, NAME, "still nothing")


def test_a_reader_never_sees_champion_missing_while_it_moves(client, tmp_path):
    client, target = client
    versions = _versions(client, target, tmp_path, 4)
    promote(client, NAME, versions[0], "start")
    seen: list[str | None] = []
    stop = threading.Event()
    reader = target.client()

    def watch() -> None:
        while not stop.is_set():
            seen.append(current_champion(reader, NAME))

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for version in versions[1:]:
            promote(client, NAME, version, f"to {version}")
        rollback(client, NAME, "back one")
    finally:
        stop.set()
        thread.join()
    assert seen and None not in seen
    assert set(seen) <= set(versions)
    assert current_champion(client, NAME) == versions[2]


def test_champion_version_is_one_cheap_read_of_the_alias(client, tmp_path):
    from loop_pipeline.core.serving_registry import champion_version

    client, target = client
    assert champion_version(target, NAME) is None  # no registered model yet
    v1, v2 = _versions(client, target, tmp_path, 2)
    assert champion_version(target, NAME) is None  # versions, but no alias
    promote(client, NAME, v1, "first")
    promote(client, NAME, v2, "second")
    assert (champion_version(target, NAME), champion_version(target, NAME, PREVIOUS)) == (v2, v1)
    rollback(client, NAME, "back")
    assert (champion_version(target, NAME), champion_version(target, NAME, PREVIOUS)) == (v1, v2)
    assert champion_version(target, NAME, "no-such-alias") is None


def test_no_champion_only_when_the_registry_says_so(client, tmp_path):
    client, target = client
    assert current_champion(client, NAME) is None  # no registered model
    v1, v2 = _versions(client, target, tmp_path, 2)
    assert current_champion(client, NAME) is None  # versions, no alias
    client.set_registered_model_alias(NAME, PREVIOUS, v1)
    assert current_champion(client, NAME) is None  # another alias is not the champion
    client.set_registered_model_alias(NAME, CHAMPION, v2)
    assert current_champion(client, NAME) == v2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Registry:
    """A stand-in registry server answering every request with one fixed HTTP response."""

    def __init__(self, status: int, body: str, content_type: str = "application/json") -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        reply = (status, body.encode(), content_type)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                code, payload, kind = reply
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def quick_http(monkeypatch):
    """No retries: an unreachable registry fails in seconds instead of minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_a_registry_error_is_not_a_missing_champion(quick_http):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(MlflowException, match="127.0.0.1"):
        current_champion(MlflowClient(tracking_uri=dead, registry_uri=dead), NAME)

    refusals = [
        (403, '{"error_code": "PERMISSION_DENIED", "message": "no access to registered model"}', "application/json"),
        (200, "<html>a proxy login page</html>", "text/html"),  # malformed: not the registry's JSON
        (404, "<html>Not Found</html>", "text/html"),  # not an MLflow server: ENDPOINT_NOT_FOUND
        (500, '{"error_code": "INTERNAL_ERROR", "message": "database is locked"}', "application/json"),
    ]
    for status, body, kind in refusals:
        with _Registry(status, body, kind) as uri:
            with pytest.raises(MlflowException):
                current_champion(MlflowClient(tracking_uri=uri, registry_uri=uri), NAME)

    # The server's own "not found" for the model is the one answer that means "no champion".
    missing = f'{{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name={NAME} not found"}}'
    with _Registry(404, missing) as uri:
        assert current_champion(MlflowClient(tracking_uri=uri, registry_uri=uri), NAME) is None
