"""Where an ingest run keeps what it has read: Parquet parts in a private folder, so that memory
follows one read batch, not the day.

Each batch's candidate rows and quarantine rows are written as numbered parts (the number keeps
the read order across groups); the run's result is written there too, as the final parts of each
table, and lives until :meth:`SpillFolder.close` (or until the result is garbage collected).

The folder is named ``.ingest-spill-<host>-<pid>-<random>``; a run removes the folders of runs of
its own host whose process is gone (a killed ingest leaves its folder behind).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import weakref
from pathlib import Path

import polars as pl

from loop_pipeline.core.processes import process_alive

PREFIX = ".ingest-spill-"
# Temporary parts: as fast to write and read back as lz4 or none here, a tenth of the rows' size on disk.
_COMPRESSION = "zstd"
_COMPRESSION_LEVEL = 1


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def remove_orphans(parent: Path) -> list[Path]:
    """Remove the spill folders under ``parent`` left by dead ingest processes of this host."""
    removed: list[Path] = []
    host = _host()
    for folder in parent.glob(f"{PREFIX}{host}-*"):
        pid_text = folder.name[len(PREFIX) + len(host) + 1 :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or process_alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class SpillError(RuntimeError):
    """Writing a part failed (a full disk, a folder gone): the run fails, no record is blamed."""


class SpillFolder:
    """Numbered Parquet parts per group (``candidates-trace``, ``quarantine``, ...), in write order."""

    def __init__(self, parent: str | Path | None = None):
        base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        remove_orphans(base)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{_host()}-{os.getpid()}-", dir=base))
        self._sequence = 0
        self._parts: dict[str, list[Path]] = {}
        self._heights: dict[Path, int] = {}
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    @property
    def closed(self) -> bool:
        return not self._cleanup.alive

    def add(self, group: str, frame: pl.DataFrame) -> None:
        """Append ``frame`` to ``group`` (nothing is written for an empty frame)."""
        if self.closed:
            raise RuntimeError(f"spill folder {self.root} is closed")
        if frame.height == 0:
            return
        self._sequence += 1
        path = self.root / f"{self._sequence:09d}-{group}.parquet"
        try:
            frame.write_parquet(path, compression=_COMPRESSION, compression_level=_COMPRESSION_LEVEL, statistics=False)
        except (OSError, pl.exceptions.PolarsError) as exc:
            # Not the landing file's fault: the reader must not report it as unreadable.
            raise SpillError(f"cannot write ingest's temporary rows to {path}: {type(exc).__name__}: {exc}") from exc
        self._parts.setdefault(group, []).append(path)
        self._heights[path] = frame.height

    def parts(self, group: str) -> list[Path]:
        return list(self._parts.get(group, []))

    def height(self, path: Path) -> int:
        return self._heights[path]

    def rows(self, group: str) -> int:
        return sum(self._heights[path] for path in self._parts.get(group, []))

    def discard(self, group: str) -> None:
        """Delete a group's parts (once they have been read for the last time)."""
        for path in self._parts.pop(group, []):
            path.unlink(missing_ok=True)
            self._heights.pop(path, None)

    def close(self) -> None:
        """Delete the folder and every part in it."""
        self._cleanup()
