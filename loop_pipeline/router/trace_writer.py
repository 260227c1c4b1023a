"""Traces and feedback back into the loop: JSONL segments in the landing folder, as ingest reads them.

    <landing>/traces/<UTC day>/.router-<host>-<pid>-<run>-<n>.jsonl   while open (ingest skips dot files)
    <landing>/traces/<UTC day>/router-<host>-<pid>-<run>-<n>.jsonl    once closed (fsync, then rename)

Requests hand serialized records to a bounded queue; one writer thread takes them in batches,
appends them to the open segment of their day and rotates it after ``max_records`` records or
``max_seconds``. Nothing is dropped: a full queue makes the caller wait (the app also refuses new
work with 503 while it is full), a failed write is retried and reported on ``/healthz``, and
``close()`` writes everything still queued before it returns. Segments a crashed router on this
host left open are closed on the next start (their last, partial line dropped and logged).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from loop_pipeline.core.processes import process_alive

log = logging.getLogger(__name__)
_STOP = object()
_BATCH = 1000  # records taken from the queue per write
_RETRY_S = 1.0
_LINGER_S = 0.02  # how long the writer lets records gather after the first one
_CLOSE_RETRIES = 5


def _host_tag() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def serialize(record: Mapping[str, Any]) -> str:
    """One JSON line; NaN / infinity are refused here (in the request) rather than written as
    invalid JSON that ingest would quarantine."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _Segment:
    def __init__(self, folder: Path, name: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.open_path = folder / f".{name}"
        self.final_path = folder / name
        self.handle = self.open_path.open("w", encoding="utf-8", newline="\n")
        self.opened = time.monotonic()
        self.records = 0

    def write(self, lines: list[str]) -> None:
        position = self.handle.tell()
        try:
            self.handle.write("".join(line + "\n" for line in lines))
            self.handle.flush()
        except OSError:
            # No half line stays behind for a retry to append to.
            self.handle.seek(position)
            self.handle.truncate()
            raise
        self.records += len(lines)

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        os.replace(self.open_path, self.final_path)


class SegmentWriter:
    """One record kind (``traces`` or ``feedback``) under ``landing/<kind>/<day>/``."""

    def __init__(
        self,
        landing: Path,
        kind: str,
        *,
        max_records: int,
        max_seconds: float,
        queue_size: int,
        on_written: Callable[[int], None] | None = None,
    ):
        self.root = Path(landing) / kind
        self.kind = kind
        self.max_records = max_records
        self.max_seconds = max_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._on_written = on_written or (lambda _n: None)
        self._prefix = f"router-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = 0
        self._segment: _Segment | None = None
        self._segment_day: str | None = None
        self._thread: threading.Thread | None = None
        self._overflow: list[threading.Thread] = []  # puts waiting for room in a full queue
        self.submitted = 0
        self.written = 0
        self.segments_closed = 0
        self.error: str | None = None  # the last write failure, until a write succeeds again

    # -- the request side ---------------------------------------------------------------------

    def has_room(self) -> bool:
        return not self._queue.full()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, day: str, line: str) -> None:
        """Queue one serialized record of ``day`` (YYYY-MM-DD). Never drops it and never blocks the
        caller: when the queue is full a helper thread waits for room (the app meanwhile refuses
        new requests with 503, so this stays rare)."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError(f"the {self.kind} writer is not running: {self.error or 'not started'}")
        try:
            self._queue.put_nowait((day, line))
        except queue.Full:
            waiter = threading.Thread(target=self._queue.put, args=((day, line),), name=f"{self.kind}-overflow", daemon=True)
            waiter.start()
            self._overflow = [t for t in self._overflow if t.is_alive()] + [waiter]
        self.submitted += 1

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover_orphans()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-writer", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 60.0) -> None:
        """Write everything queued, close the open segment, stop the thread."""
        if self._thread is None:
            return
        for waiter in self._overflow:  # their records go in before the stop
            waiter.join(timeout_s)
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"the {self.kind} writer did not finish within {timeout_s} s ({self.depth} records queued)")
        if self.error is not None:
            raise RuntimeError(f"the {self.kind} writer stopped with records unwritten: {self.error}")

    def recover_orphans(self) -> int:
        """Close segments that a router process of this host, no longer running, left open."""
        closed = 0
        host_prefix = f".router-{_host_tag()}-"
        for path in sorted(self.root.glob(f"*/{host_prefix}*.jsonl")):
            pid = path.name[len(host_prefix):].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
                continue
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                log.warning("%s: dropped a partial last line (%d bytes) a crashed router left", path, len(data) - len(complete))
                path.write_bytes(complete)
            os.replace(path, path.with_name(path.name[1:]))
            closed += 1
        if closed:
            log.warning("closed %d %s segment(s) a stopped router left open under %s", closed, self.kind, self.root)
        return closed

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take()
                if batch:
                    self._with_retry(lambda: self._write(batch), stopping, batch)
                if self._segment is not None and (stopping or time.monotonic() - self._segment.opened >= self.max_seconds):
                    self._with_retry(self._close_segment, stopping, batch)
        except BaseException as exc:
            self.error = f"the writer thread died: {type(exc).__name__}: {exc}"
            log.exception("the %s writer thread died", self.kind)
            raise

    def _take(self) -> tuple[list[tuple[str, str]], bool]:
        wait = 0.5 if self._segment is None else max(0.0, min(0.5, self._segment.opened + self.max_seconds - time.monotonic()))
        batch: list[tuple[str, str]] = []
        try:
            item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return batch, False
        if item is not _STOP:
            # Let the burst gather: one wake-up and one write per burst, rather than this thread
            # taking the GIL from the request loop at every record.
            time.sleep(_LINGER_S)
        while True:
            if item is _STOP:
                # Whatever was queued before the stop is written too.
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        return [b for b in batch if b is not _STOP], True
            batch.append(item)
            if len(batch) >= _BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _with_retry(self, step: Callable[[], None], stopping: bool, batch: list) -> None:
        attempts = 0
        while True:
            try:
                step()
                self.error = None
                return
            except OSError as exc:
                attempts += 1
                self.error = f"{type(exc).__name__}: {exc} ({len(batch)} records waiting)"
                log.exception("writing %s under %s failed (attempt %d)", self.kind, self.root, attempts)
                if stopping and attempts >= _CLOSE_RETRIES:
                    return
                time.sleep(_RETRY_S)

    def _write(self, batch: list[tuple[str, str]]) -> None:
        """Append ``batch`` to the segments of its days; what is written leaves ``batch``, so a
        retry after a failure continues where it stopped (nothing twice)."""
        while batch:
            day = batch[0][0]
            same_day = 1
            while same_day < len(batch) and batch[same_day][0] == day:
                same_day += 1
            segment = self._open_segment(day)
            count = min(same_day, self.max_records - segment.records)
            segment.write([line for _, line in batch[:count]])
            del batch[:count]
            self.written += count
            self._on_written(count)
            if segment.records >= self.max_records:
                self._close_segment()

    def _open_segment(self, day: str) -> _Segment:
        if self._segment is not None and self._segment_day != day:
            self._close_segment()
        if self._segment is None:
            self._sequence += 1
            self._segment = _Segment(self.root / day, f"{self._prefix}-{self._sequence:06d}.jsonl")
            self._segment_day = day
        return self._segment

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()  # raises before forgetting it: a retry closes it again
            self._segment, self._segment_day = None, None
            self.segments_closed += 1

