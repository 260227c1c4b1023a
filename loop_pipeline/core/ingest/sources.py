"""Finding and opening the files to ingest: local paths or any fsspec URL."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import fsspec
import polars as pl

from loop_pipeline.core.ingest.lines import UnreadableFileError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet",)


class IngestInputError(Exception):
    """Nothing could be read: a path does not exist, or holds no ingestible file."""


@dataclass(frozen=True)
class SourceFile:
    """One file to ingest: ``location`` is a local path or an fsspec URL, ``name`` what rows record."""

    location: str
    name: str
    record_kind: str | None = None
    # None: whatever ``ingest`` is asked for (``auto`` by default, detected per file).
    source_format: str | None = None

    @property
    def is_parquet(self) -> bool:
        return self.location.lower().endswith(PARQUET_SUFFIXES)


def discover(paths: Sequence[str], record_kind: str | None = None) -> list[SourceFile]:
    """Expand files and folders (recursively, sorted) into the files to ingest.

    Raises :class:`IngestInputError` naming the first path that does not exist.
    """
    found: list[SourceFile] = []
    for path in paths:
        fs, root = fsspec.core.url_to_fs(str(path))
        if not fs.exists(root):
            raise IngestInputError(f"no such file or folder: {path}")
        if fs.isdir(root):
            members = sorted(p for p in fs.find(root) if is_ingestible(p) and not _hidden(p, root))
            for member in members:
                relative = member[len(root) :].lstrip("/")
                found.append(SourceFile(location_of(fs, member), f"{str(path).rstrip('/')}/{relative}", record_kind))
        else:
            found.append(SourceFile(location_of(fs, root), str(path), record_kind))
    return found


def is_ingestible(path: str) -> bool:
    return path.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def _hidden(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in path[len(root) :].split("/") if part)


def location_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path found through ``fs`` as something :func:`read_source` opens again."""
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def read_source(location: str) -> str | bytes:
    """A local path as is (polars maps it), anything else fetched through fsspec."""
    fs, root = fsspec.core.url_to_fs(location)
    if _is_local(fs):
        return root
    try:
        with fs.open(root, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UnreadableFileError(str(exc)) from exc


def source_bytes(data: str | bytes) -> bytes:
    """What :func:`read_source` returned, as bytes (a local path is read here)."""
    if isinstance(data, bytes):
        return data
    with open(data, "rb") as handle:
        return handle.read()


def detect_record_kind(source: SourceFile, data: str | bytes) -> str:
    """Traces carry messages / output; feedback carries a kind. Folder names break a tie."""
    if source.record_kind:
        return source.record_kind
    keys: set[str] = set()
    if source.is_parquet:
        keys = set(pl.read_parquet_schema(io.BytesIO(data) if isinstance(data, bytes) else data))
    else:
        for line in _head_lines(data, 50):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                keys |= set(record)
    if keys & {"messages", "output", "model"}:
        return "trace"
    if "kind" in keys:
        return "feedback"
    return "feedback" if "feedback" in Path(source.name).parts else "trace"


def _head_lines(data: str | bytes, n: int) -> list[str]:
    if isinstance(data, bytes):
        head = data[: 1 << 20]
    else:
        with open(data, "rb") as handle:
            head = handle.read(1 << 20)
    return [line for line in head.decode("utf-8", errors="replace").splitlines() if line.strip()][:n]
