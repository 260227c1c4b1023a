"""The MLflow model registry: candidate versions, alias ``champion`` (what the router serves) and
``previous`` (the rollback target), with the reason for every move recorded.

Moves are ordered so that a reader never sees ``champion`` missing or pointing at a half-made
version: the new version is created and tagged first, ``previous`` moves next, ``champion`` last
(one alias update, a single row in the registry's store).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping

CHAMPION = "champion"
PREVIOUS = "previous"


class RegistryError(Exception):
    """A promotion or rollback that cannot happen (no such version, nothing to roll back to)."""


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    champion: str
    previous: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "champion": self.champion, "previous": self.previous, "reason": self.reason}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# What the pinned MLflow (3.x) raises when the registered model does not exist, on every store
# (SQL, and a tracking server relaying it as JSON). A plain HTTP 404 from something that is not an
# MLflow server is ENDPOINT_NOT_FOUND instead, and is an error like any other.
_MODEL_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client, name: str):
    """The registered model; None only on a confirmed "not found". Any other registry error
    (unreachable, permission, a malformed response) propagates: it does not mean "no model"."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == _MODEL_NOT_FOUND and "not found" in exc.message.lower():
            return None
        raise


def _alias_version(client, name: str, alias: str) -> str | None:
    """The version ``alias`` points at: None when the model or the alias does not exist. Read from
    the registered model's alias map, not by asking for the alias: a missing alias is reported as
    INVALID_PARAMETER_VALUE, the same code as a malformed request, so an error cannot say "none"."""
    registered = _registered_model(client, name)
    if registered is None:
        return None
    version = (registered.aliases or {}).get(alias)
    return str(version) if version is not None else None


def current_champion(client, name: str) -> str | None:
    """The champion's version; None only when the registry confirms there is none."""
    return _alias_version(client, name, CHAMPION)


def register_version(
    client, name: str, source: str, run_id: str | None, tags: Mapping[str, Any], description: str = "", model_id: str | None = None
) -> str:
    """A new model version of ``name`` (created if needed) from ``source``: the artifact location of
    an MLflow model (with ``model_id``, the logged model it is), or any artifact URI."""
    if _registered_model(client, name) is None:
        client.create_registered_model(name, description="Fine-tuned small model served by the loop_pipeline router.")
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, description=description, model_id=model_id
    )
    return str(version.version)


def promote(client, name: str, version: str, reason: str) -> AliasMove:
    """``champion`` -> ``version``; the old champion becomes ``previous``."""
    if not reason.strip():
        raise RegistryError("a promotion needs a reason")
    client.get_model_version(name, version)  # raises if it does not exist
    old = current_champion(client, name)
    if old == str(version):
        raise RegistryError(f"{name} version {version} is already the champion")
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    client.set_model_version_tag(name, version, "promoted_at", _now())
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, "last_move", f"promote {version} (was {old}): {reason}")
    return AliasMove(name, str(version), old, reason)


def rollback(client, name: str, reason: str) -> AliasMove:
    """``champion`` back to ``previous``; the version rolled away from becomes ``previous``."""
    if not reason.strip():
        raise RegistryError("a rollback needs a reason")
    champion = current_champion(client, name)
    previous = _alias_version(client, name, PREVIOUS) if champion is not None else None
    if previous is None:
        raise RegistryError(f"{name} has no `previous` version to roll back to (champion: {champion})")
    client.set_model_version_tag(name, champion, "rolled_back", f"{_now()}: {reason}")
    client.set_registered_model_alias(name, PREVIOUS, champion)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, "last_move", f"rollback {champion} -> {previous}: {reason}")
    return AliasMove(name, previous, champion, reason)
