"""Landing files as byte streams read in bounded batches of whole lines, with their line numbers.

A file (a local path or any fsspec URL) is opened once and read front to back: ``.gz`` and
``.zst`` files are decompressed on the fly, a UTF-16 file (told by its byte order mark) is
transcoded to UTF-8 and a UTF-8 byte order mark is dropped. :func:`line_batches` cuts the stream
into batches of about ``batch_bytes`` ending at a line break, so memory depends on the batch size,
not on the file. A line longer than a whole batch and over ``max_line_bytes`` is not held in
memory: its first ``max_line_bytes`` bytes are kept and its real size is given in ``_bytes``, so
the reader quarantines it as oversized.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import fsspec
import polars as pl

from loop_pipeline.core.ingest.lines import UnreadableFileError, read_lines

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}
_TRANSCODE_CHARS = 1 << 20


def compression_of(name: str) -> str | None:
    """``gzip`` / ``zstd`` from the file name's last suffix, or None for a plain file."""
    lowered = name.lower()
    return next((kind for suffix, kind in COMPRESSIONS.items() if lowered.endswith(suffix)), None)


def plain_name(name: str) -> str:
    """The name without its compression suffix (``a.jsonl.gz`` -> ``a.jsonl``)."""
    lowered = name.lower()
    for suffix in COMPRESSIONS:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def needs_stream(location: str) -> bool:
    """Whether the file cannot be handed to a reader as a local path (compressed or remote)."""
    return compression_of(location) is not None or "://" in location


class _Transcoder(io.RawIOBase):
    """A UTF-16 byte stream read as UTF-8 bytes (undecodable units become U+FFFD)."""

    def __init__(self, raw: BinaryIO, encoding: str):
        self._text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = self._text.read(_TRANSCODE_CHARS)
            if not chunk:
                return 0
            self._pending = chunk.encode("utf-8", errors="replace")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _Decoded(io.RawIOBase):
    """Strips a UTF-8 byte order mark and transcodes UTF-16 (told by its mark) on the first read."""

    def __init__(self, raw: BinaryIO):
        head = _read_exactly(raw, 3)
        self._source: BinaryIO = raw if head.startswith(_UTF8_BOM) else _Prefixed(head, raw)  # type: ignore[assignment]
        for mark, encoding in _UTF16_BOMS.items():
            if head.startswith(mark):
                self._source = _Transcoder(_Prefixed(head[len(mark) :], raw), encoding)  # type: ignore[assignment]
                break

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of a stream."""

    def __init__(self, prefix: bytes, raw: BinaryIO):
        self._prefix = prefix
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read_exactly(raw: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = raw.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


# What a broken compressed stream raises while being read (a truncated gzip raises EOFError).
def _stream_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (OSError, EOFError, zlib.error, zstandard.ZstdError, UnicodeError)


@contextmanager
def open_stream(location: str) -> Iterator[BinaryIO]:
    """The file's content as UTF-8 bytes; any failure to open or read it is :class:`UnreadableFileError`."""
    fs, path = fsspec.core.url_to_fs(location)
    errors = _stream_errors()
    try:
        if fs.isdir(path):
            raise UnreadableFileError(f"{location} is a directory, not a file")
        handle = fs.open(path, "rb")
    except errors as exc:
        raise UnreadableFileError(f"{type(exc).__name__}: {exc}") from exc
    try:
        compression = compression_of(path)
        stream: BinaryIO = handle
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[assignment]
        elif compression == "zstd":
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)  # type: ignore[assignment]
        yield _Guarded(_Decoded(stream), errors)  # type: ignore[misc]
    except errors as exc:
        raise UnreadableFileError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        handle.close()


class _Guarded(io.RawIOBase):
    """Read errors of the underlying stream as :class:`UnreadableFileError`."""

    def __init__(self, raw: io.RawIOBase, errors: tuple[type[BaseException], ...]):
        self._raw = raw
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            return self._raw.readinto(buffer)  # type: ignore[arg-type]
        except self._errors as exc:
            raise UnreadableFileError(f"{type(exc).__name__}: {exc}") from exc


def read_all(location: str) -> bytes:
    """The whole (decompressed, UTF-8) content: for readers that need every record at once."""
    with open_stream(location) as stream:
        return stream.read()


def read_head(location: str, n: int) -> bytes:
    """The first ``n`` bytes of the (decompressed, UTF-8) content. A file that breaks after its
    first bytes (a truncated .gz) gives what came before the break: the full read that follows
    meets the break again and reports it."""
    head = b""
    with open_stream(location) as stream:
        while len(head) < n:
            try:
                chunk = stream.read(min(n - len(head), 1 << 16))
            except UnreadableFileError:
                if not head:
                    raise
                break
            if not chunk:
                break
            head += chunk
    return head


@dataclass
class LineBatch:
    """Whole lines of a file: ``lines`` has ``source_record`` (the 1-based line), ``raw`` and,
    where a line was cut short, ``_bytes`` (its real size)."""

    lines: pl.DataFrame
    line_count: int  # every line of the batch, blank ones included


def line_batches(stream: BinaryIO, batch_bytes: int, max_line_bytes: int) -> Iterator[LineBatch]:
    """Non-blank lines in batches of about ``batch_bytes``; see the module docstring."""
    size = max(batch_bytes, 1)
    longest = max(size, max_line_bytes)
    offset = 0  # lines before this batch
    carry = b""  # the start of a line the last block cut
    pending = b""  # what followed a line too long to hold, read past it

    def read() -> bytes:
        nonlocal pending
        if pending:
            data, pending = pending, b""
            return data
        return stream.read(size)

    while block := read():
        data = carry + block
        cut = data.rfind(b"\n")
        if cut >= 0:
            carry = data[cut + 1 :]
            batch = _batch(data[: cut + 1], offset)
            offset += batch.line_count
            yield batch
        elif len(data) <= longest:
            carry = data
        else:  # a line too long to hold: keep its head, count the rest up to its end
            carry, line_bytes = b"", len(data)
            while rest := read():
                end = rest.find(b"\n")
                if end >= 0:
                    line_bytes += end
                    pending = rest[end + 1 :]
                    break
                line_bytes += len(rest)
            offset += 1
            yield _long_line(offset, data[:max_line_bytes], line_bytes)
    if carry:
        yield _batch(carry, offset)


def _batch(data: bytes, offset: int) -> LineBatch:
    frame = read_lines(data)
    count = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return LineBatch(frame.with_columns(pl.col("source_record") + offset), count)


def _long_line(line: int, head: bytes, size: int) -> LineBatch:
    frame = pl.DataFrame(
        {"source_record": [line], "raw": [head.decode("utf-8", errors="replace")], "_bytes": [size]},
        schema={"source_record": pl.Int64, "raw": pl.String, "_bytes": pl.Int64},
    )
    return LineBatch(frame, 1)
