"""Atomic, deterministic writes: a reader sees the old file or the new one, never half of one.

The new content is written beside its target under a dot-name (``.<name>.<host>-<pid>.<random>.tmp``,
or ``.new`` / ``.old`` for a directory) and renamed over it. A process killed before the rename
leaves that temporary behind; the next successful write of the same target removes the ones of
this host whose process is gone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import polars as pl

from loop_pipeline.core.processes import process_alive


def _owner() -> str:
    """``<host>-<pid>`` of this process, the host without dots or dashes (the name's separators)."""
    host = socket.gethostname().replace(".", "_").replace("-", "_") or "host"
    return f"{host}-{os.getpid()}"


def temporary_sibling(path: Path) -> Path:
    """Where to write ``path``'s new content before renaming it over ``path``."""
    return path.with_name(f".{path.name}.{_owner()}.{uuid.uuid4().hex[:16]}.tmp")


def temporary_directory_prefix(path: Path) -> str:
    """The ``prefix`` that names a working folder like ``path``'s temporaries (create it with
    ``tempfile.mkdtemp(prefix=..., suffix=".tmp", dir=path.parent)``): once its process is dead,
    :func:`sweep_stale_temporaries` (``path``) removes it."""
    return f".{Path(path).name}.{_owner()}."


def sweep_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` (files and directories) that processes of this host left
    when they died before renaming them into place; a live writer's temporaries are kept."""
    path = Path(path)
    prefix = f".{path.name}."
    mine, removed = _owner().rsplit("-", 1)[0], []
    for suffix in (".tmp", ".new", ".old"):
        for stale in path.parent.glob(f"{glob.escape(prefix)}*{suffix}"):
            owner = stale.name[len(prefix) : -len(suffix)].split(".", 1)[0]
            host, _, pid = owner.rpartition("-")
            if host != mine or not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    sweep_stale_temporaries(path)


def write_json_atomic(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` writes the whole file (a plot's ``savefig``, a library's writer), which
    is then renamed over ``path``. The temporary's name ends in ``.tmp``: give ``write`` the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    sweep_stale_temporaries(path)


def write_parquet_atomic(path: Path, frame: pl.DataFrame) -> None:
    """Same frame, same bytes: fixed compression and no write time in the file."""
    write_file_atomic(path, lambda temporary: frame.write_parquet(temporary, compression="zstd", compression_level=3, statistics=True))


def replace_directory(target: Path, build: Callable[[Path], None]) -> None:
    """Build a directory's new content beside it, then swap it in with two renames."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_owner()}.", suffix=".new", dir=target.parent))
    try:
        build(staging)
        retired = target.with_name(f".{target.name}.{_owner()}.{uuid.uuid4().hex[:16]}.old")
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    sweep_stale_temporaries(target)
