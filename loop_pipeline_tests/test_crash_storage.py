"""The atomic writes' temporaries: a killed writer's are swept by the next write of the same file,
a live writer's and another host's are left alone (core/storage.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import polars as pl
import pytest

from loop_pipeline.core.storage import (
    replace_directory,
    sweep_stale_temporaries,
    temporary_sibling,
    write_file_atomic,
    write_json_atomic,
    write_parquet_atomic,
)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_")


def test_a_dead_writers_temporary_is_swept_by_the_next_write(tmp_path):
    target = tmp_path / "table" / "2026-11-01.parquet"
    target.parent.mkdir()
    dead = target.with_name(f".{target.name}.{_host()}-{_dead_pid()}.0123456789abcdef.tmp")
    dead.write_bytes(b"PAR1 half a file")
    alive = target.with_name(f".{target.name}.{_host()}-{os.getppid()}.0123456789abcdef.tmp")  # a live process
    alive.write_bytes(b"being written")
    elsewhere = target.with_name(f".{target.name}.otherhost-{_dead_pid()}.0123456789abcdef.tmp")  # not ours to judge
    elsewhere.write_bytes(b"another machine's")
    other_file = tmp_path / "table" / f".2026-11-02.parquet.{_host()}-{_dead_pid()}.0123456789abcdef.tmp"
    other_file.write_bytes(b"another table's")

    write_parquet_atomic(target, pl.DataFrame({"a": [1, 2]}))

    assert pl.read_parquet(target).height == 2
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists() and other_file.exists()
    # The next write of the other file sweeps its own.
    write_json_atomic(other_file.parent / "2026-11-02.parquet", {"not": "parquet, but a write"})
    assert not other_file.exists()


def test_temporaries_are_named_after_their_writer(tmp_path):
    temporary = temporary_sibling(tmp_path / "report.json")
    assert temporary.name.startswith(f".report.json.{_host()}-{os.getpid()}.") and temporary.suffix == ".tmp"
    assert sweep_stale_temporaries(tmp_path / "report.json") == []  # nothing there, nothing removed


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    def broken(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file_atomic(tmp_path / "plot.png", broken)
    assert list(tmp_path.iterdir()) == []


def test_a_dead_writers_directories_are_swept_by_the_next_replace(tmp_path):
    target = tmp_path / "out"
    staging = tmp_path / f".out.{_host()}-{_dead_pid()}.abc123.new"
    retired = tmp_path / f".out.{_host()}-{_dead_pid()}.0123456789abcdef.old"
    for folder in (staging, retired):
        folder.mkdir()
        (folder / "summary.json").write_text("{}")

    replace_directory(target, lambda new: (new / "summary.json").write_text('{"ok": true}'))

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "summary.json").read_text() == '{"ok": true}'
