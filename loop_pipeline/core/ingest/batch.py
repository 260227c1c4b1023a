"""OpenAI Batch request bodies by ``custom_id``, joined to the output lines that answer them."""

from __future__ import annotations

from typing import Any, Sequence

import fsspec

from loop_pipeline.core.ingest.formats import is_batch_input
from loop_pipeline.core.ingest.formats.openai_batch import load_requests
from loop_pipeline.core.ingest.formats.detect import HEAD_BYTES
from loop_pipeline.core.ingest.lines import UnreadableFileError
from loop_pipeline.core.ingest.sources import PARQUET_SUFFIXES, SourceFile, is_ingestible, location_of
from loop_pipeline.core.ingest.stream import read_all, read_head


class BatchRequests:
    """Named input files plus the input files lying beside each output file."""

    def __init__(self, inputs: Sequence[str]):
        self._named: dict[str, list[Any]] = {}
        for location in inputs:
            _add_requests(self._named, location)
        self._by_folder: dict[str, dict[str, list[Any]]] = {}

    def for_source(self, source: SourceFile, fmt: str) -> dict[str, Any]:
        if fmt != "openai-batch":
            return {}
        fs, path = fsspec.core.url_to_fs(source.location)
        folder = path.rsplit("/", 1)[0] if "/" in path else "."
        if folder not in self._by_folder:
            self._by_folder[folder] = _requests_beside(fs, folder)
        merged: dict[str, list[Any]] = {key: list(bodies) for key, bodies in self._by_folder[folder].items()}
        for key, bodies in self._named.items():
            merged[key] = bodies  # named inputs win over guessed neighbours
        return merged


def _requests_beside(fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for sibling in sorted(fs.ls(folder, detail=False)):
        if not is_ingestible(sibling) or sibling.lower().endswith(PARQUET_SUFFIXES) or fs.isdir(sibling):
            continue
        location = location_of(fs, sibling)
        try:
            if is_batch_input(read_head(location, HEAD_BYTES + 1)):
                _add_requests(found, location)
        except UnreadableFileError:
            # Not lost: the sibling is a landing file itself, ingested (and reported unreadable) in turn.
            continue
    return found


def _add_requests(found: dict[str, list[Any]], location: str) -> None:
    data = read_all(location)
    for custom_id, bodies in load_requests(data.decode("utf-8", errors="replace")).items():
        known = found.setdefault(custom_id, [])
        known.extend(body for body in bodies if body not in known)
