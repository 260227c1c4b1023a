"""Finding and opening the files to ingest: local paths or any fsspec URL."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import fsspec
import polars as pl

from loop_pipeline.core.ingest.lines import UnreadableFileError
from loop_pipeline.core.ingest.stream import COMPRESSIONS, plain_name
from loop_pipeline.core.ingest.safejson import loads

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet",)
# JSONL / JSON files may also be compressed: ``traces.jsonl.gz``, ``spans.json.zst``.
COMPRESSED_SUFFIXES = tuple(COMPRESSIONS)


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
    # A file found in a folder whose name ingest does not read (no supported suffix): it is only
    # reported (``unsupported_files`` in the summary, with its size in bytes).
    unsupported: bool = False
    size: int | None = None

    @property
    def is_parquet(self) -> bool:
        return self.location.lower().endswith(PARQUET_SUFFIXES)


def discover(paths: Sequence[str], record_kind: str | None = None) -> list[SourceFile]:
    """Expand files and folders (recursively, sorted) into the files to ingest.

    A file named explicitly is read whatever its name; a folder's files that ingest does not read
    come back marked ``unsupported`` (with their size), to be reported, never silently passed over.
    Raises :class:`IngestInputError` naming the first path that does not exist, or when the
    folders hold files but none that ingest reads.
    """
    found: list[SourceFile] = []
    for path in paths:
        fs, root = fsspec.core.url_to_fs(str(path))
        if not fs.exists(root):
            raise IngestInputError(f"no such file or folder: {path}")
        if fs.isdir(root):
            members = fs.find(root, detail=True)
            for member in sorted(members):
                if _hidden(member, root):
                    continue
                relative = member[len(root) :].lstrip("/")
                found.append(
                    SourceFile(
                        location_of(fs, member),
                        f"{str(path).rstrip('/')}/{relative}",
                        record_kind,
                        unsupported=not is_ingestible(member),
                        size=members[member].get("size"),
                    )
                )
        else:
            found.append(SourceFile(location_of(fs, root), str(path), record_kind))
    if found and all(source.unsupported for source in found):
        listed = ", ".join(f"{source.name} ({source.size} bytes)" for source in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise IngestInputError(
            f"no .jsonl, .ndjson, .json or .parquet files (plain, or .jsonl / .json compressed as .gz or .zst) "
            f"under {', '.join(map(str, paths))}; unsupported file(s) not read: {listed}{more}"
        )
    return found


def is_ingestible(path: str) -> bool:
    """A name ingest reads: JSONL / JSON (plain, ``.gz`` or ``.zst``) or Parquet."""
    lowered = path.lower()
    return lowered.endswith(PARQUET_SUFFIXES) or plain_name(lowered).endswith(JSONL_SUFFIXES)


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
                record = loads(line)
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
