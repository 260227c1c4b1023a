"""The champion watcher: polls the registry alias, loads a new champion in the background and swaps
it in atomically.

A request takes the current champion with :meth:`ChampionWatcher.acquire` and keeps it until its
local call is done, so in-flight requests finish on the model they started with; a retired
champion is closed once its last request has left. A version that fails to load leaves the old one
serving; the failure is logged with its traceback and shown on ``/healthz`` (that version is not
retried by the poll, only by ``POST /admin/reload`` or a newer version).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from loop_pipeline.core.serving import ServingSpec
from loop_pipeline.router.backends.base import LocalBackend

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedChampion:
    spec: ServingSpec
    backend: LocalBackend
    in_flight: int = 0
    retired: bool = False
    loaded_at: str = field(default_factory=lambda: _now())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


VersionProbe = Callable[[], "str | None"]  # blocking: the alias's version, None when there is none
Loader = Callable[[str], LoadedChampion]  # blocking: one version, loaded


class ChampionWatcher:
    def __init__(
        self,
        probe: VersionProbe | None,
        loader: Loader | None,
        poll_interval_s: float,
        on_change: Callable[[LoadedChampion | None], None] | None = None,
        on_load: Callable[[str], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ):
        self._probe = probe
        self._loader = loader
        self.poll_interval_s = poll_interval_s
        self._on_change = on_change or (lambda _c: None)
        self._on_load = on_load or (lambda _outcome: None)
        self._on_closed = on_closed or (lambda: None)  # a retired champion was closed
        self.current: LoadedChampion | None = None
        self.enabled = probe is not None and loader is not None
        self.state = "starting" if self.enabled else "disabled"
        self.alias_version: str | None = None
        self.last_error: str | None = None
        self.failed_version: str | None = None
        self.last_check: str | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()

    # -- requests ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[LoadedChampion | None]:
        champion = self.current  # one read: the request keeps this one even if a swap happens now
        if champion is None:
            yield None
            return
        champion.in_flight += 1
        try:
            yield champion
        finally:
            champion.in_flight -= 1
            if champion.retired and champion.in_flight == 0:
                self._close_later(champion)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._poll_loop(), name="champion-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # the cancellation requested just above, nothing else
        async with self._lock:
            champion, self.current = self.current, None
        if champion is not None:
            await champion.backend.aclose()
        if self._closing:
            await asyncio.gather(*self._closing)

    async def _poll_loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.poll_interval_s)

    async def check(self, force: bool = False) -> dict[str, Any]:
        """Look at the alias now; load and swap in a new version. ``force`` retries a failed one."""
        if not self.enabled:
            return self.status()
        async with self._lock:
            self.last_check = _now()
            try:
                version = await asyncio.to_thread(self._probe)
            except Exception as exc:  # the registry is down: keep serving what is loaded, say why
                self._fail(None, f"reading the registry alias failed: {type(exc).__name__}: {exc}")
                return self.status()
            self.alias_version = version
            if version is None:
                self.state = "serving" if self.current else "no_champion"
                return self.status()
            if self.current is not None and self.current.spec.version == version:
                return self.status()
            if version == self.failed_version and not force:
                return self.status()
            await self._load(version)
        return self.status()

    async def _load(self, version: str) -> None:
        log.info("loading champion version %s", version)
        try:
            champion = await asyncio.to_thread(self._loader, version)
        except Exception as exc:
            self._fail(version, f"version {version} failed to load: {type(exc).__name__}: {exc}")
            self._on_load("failed")
            return
        old, self.current = self.current, champion  # the swap: one assignment
        self.state, self.failed_version, self.last_error = "serving", None, None
        self._on_load("loaded")
        self._on_change(champion)
        log.info("now serving %s (was %s)", champion.spec.label, old.spec.label if old else "nothing")
        if old is not None:
            old.retired = True
            if old.in_flight == 0:
                self._close_later(old)

    def _fail(self, version: str | None, message: str) -> None:
        self.last_error = message
        if version is not None:
            self.failed_version = version
        if self.current is None:
            self.state = "failed"
        log.error("%s; %s", message, f"still serving {self.current.spec.label}" if self.current else "serving nothing locally", exc_info=True)

    def _close_later(self, champion: LoadedChampion) -> None:
        task = asyncio.get_running_loop().create_task(champion.backend.aclose(), name=f"close-{champion.spec.label}")
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("closing a retired champion failed", exc_info=task.exception())
        self._on_closed()

    def status(self) -> dict[str, Any]:
        champion = self.current
        return {
            "state": self.state,
            "version": champion.spec.version if champion else None,
            "model": champion.spec.label if champion else None,
            "loaded_at": champion.loaded_at if champion else None,
            "alias_version": self.alias_version,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "failed_version": self.failed_version,
        }
