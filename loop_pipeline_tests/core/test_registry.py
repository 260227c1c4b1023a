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
