"""How the watcher reads the alias and loads a version, per local backend.

``in_process``: the version's MLflow model is downloaded once into the model cache
(``core.serving_registry.resolve_version``) and loaded with transformers. ``openai``: only the
version's serving spec is read; the weights are already served at ``local_base_url``. mlflow,
torch and transformers are imported here, on the watcher's worker thread, never at import time.
"""

from __future__ import annotations

import os
from typing import Callable

from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.router.champion import LoadedChampion
from loop_pipeline.router.settings import RouterSettings


def env_secret(variable: str | None) -> str | None:
    """The value of the environment variable named ``variable`` (a key is never in the config)."""
    if not variable:
        return None
    return os.environ.get(variable) or None


def version_probe(settings: RouterSettings, tracking: TrackingTarget) -> Callable[[], "str | None"]:
    from loop_pipeline.core.serving_registry import champion_version

    def probe() -> str | None:
        return champion_version(tracking, settings.model_name, settings.champion_alias)

    return probe


def version_loader(settings: RouterSettings, tracking: TrackingTarget, on_batch: Callable[[int], None]) -> Callable[[str], LoadedChampion]:
    if settings.local_backend == "openai":
        return _openai_loader(settings, tracking)

    def load(version: str) -> LoadedChampion:
        from loop_pipeline.core.serving_registry import resolve_version
        from loop_pipeline.router.backends.in_process import InProcessBackend

        resolved = resolve_version(tracking, settings.model_name, version, settings.resolved_model_cache_dir())
        backend = InProcessBackend.load(
            resolved.model_dir,
            resolved.spec,
            device=settings.device,
            batch_max_size=settings.batch_max_size,
            batch_wait_ms=settings.batch_wait_ms,
            on_batch=on_batch,
        )
        return LoadedChampion(resolved.spec, backend)

    return load


def _openai_loader(settings: RouterSettings, tracking: TrackingTarget) -> Callable[[str], LoadedChampion]:
    def load(version: str) -> LoadedChampion:
        from loop_pipeline.core.serving_registry import read_spec
        from loop_pipeline.router.backends.openai_compatible import OpenAILocalBackend

        spec = read_spec(tracking.client().get_model_version(settings.model_name, version), settings.model_name)
        backend = OpenAILocalBackend(
            spec,
            base_url=str(settings.local_base_url),
            model=settings.local_model or settings.model_name,
            api_key=env_secret(settings.local_api_key_env),
            timeout_s=settings.local_timeout_s,
        )
        return LoadedChampion(spec, backend)

    return load
