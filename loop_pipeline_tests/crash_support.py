"""Killing a stage with SIGKILL at a chosen point, and what a reader may find afterwards.

A test starts the real ``loop`` CLI in a child process through this module::

    python -m loop_pipeline_tests.crash_support '<kill point as JSON>' materialize

which arms the kill point and then runs the CLI with the remaining arguments. The stage code is
not changed: the point is armed by wrapping a function the stage calls, in the child only.

- ``{"write": "<substring>"}``: killed while writing a file whose path contains the substring,
  whatever writes it (Python's ``open`` / ``io.open``: JSON, PNG, text; polars ``write_parquet`` /
  ``sink_parquet``): half of its bytes are on disk, under whatever name the code wrote them to
  (the final name when it writes in place, a temporary one when it writes atomically).
- ``{"call": "module.attr[.attr]", "when": "before" | "after", "match": "<substring>"}``: killed
  just before or just after a call whose arguments' text contains ``match`` (``os.replace`` into a
  table, an MLflow client method, Dagster Pipes' handler of the trainer's log lines); ``call`` may
  be a list (``["os.rename", "os.replace"]``: whichever the code uses).
- ``{"call": ..., "when": "pause", "match": ..., "marker": PATH, "resume": PATH}``: not killed: the
  child writes ``marker`` and waits for ``resume`` to exist before making the call (the test breaks
  something meanwhile, e.g. PostgreSQL). ``"fast_pg_retries": true`` keeps Dagster's PostgreSQL
  connection retries but not their waits.

``"nth": N`` (default 1) fires on the N-th matching event. Before dying the child prints
``CRASH_POINT reached: ...`` on stderr, so the test can tell its kill from any other death.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REACHED = "CRASH_POINT reached"
REPO_ROOT = Path(__file__).resolve().parent.parent


class _Counter:
    def __init__(self, nth: int):
        self.nth = nth
        self.seen = 0
        self.lock = threading.Lock()

    def hit(self) -> bool:
        with self.lock:
            self.seen += 1
            return self.seen == self.nth


def _die(description: str) -> None:
    print(f"{REACHED}: {description}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _resolve(target: str) -> tuple[Any, str]:
    """``os.replace`` -> (the os module, "replace"); ``polars.DataFrame.write_parquet`` -> (DataFrame, ...)."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        if not hasattr(owner, parts[-1]):
            raise AttributeError(f"kill point {target}: {owner!r} has no {parts[-1]}")
        return owner, parts[-1]
    raise ImportError(f"kill point {target}: no importable module in it")


def _text(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    return " ".join([*(str(a) for a in args), *(f"{k}={v}" for k, v in kwargs.items())])


def _arm_call(point: Mapping[str, Any]) -> None:
    targets = point["call"] if isinstance(point["call"], list) else [point["call"]]
    counter = _Counter(int(point.get("nth", 1)))  # shared: the N-th matching call of any of them
    for target in targets:
        _wrap_call(target, point, counter)


def _wrap_call(target: str, point: Mapping[str, Any], counter: _Counter) -> None:
    owner, name = _resolve(target)
    original = getattr(owner, name)
    when, match = point.get("when", "before"), point.get("match", "")

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        fire = match in _text(args, kwargs) and counter.hit()
        if fire and when == "before":
            _die(f"before {target}({_text(args, kwargs)[:300]})")
        if fire and when == "pause":
            Path(point["marker"]).write_text(_text(args, kwargs)[:300], encoding="utf-8")
            while not Path(point["resume"]).exists():
                time.sleep(0.05)
        result = original(*args, **kwargs)
        if fire and when == "after":
            _die(f"after {target}({_text(args, kwargs)[:300]})")
        return result

    setattr(owner, name, wrapper)


class _HalfWriter(io.RawIOBase):
    """A file opened for writing that gets half of the first chunk written to it, then the process dies."""

    def __init__(self, handle, path: str):
        self.handle, self.path = handle, path

    def write(self, data) -> int:
        chunk = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        raw = self.handle.buffer if hasattr(self.handle, "buffer") else self.handle
        raw.write(chunk[: max(1, len(chunk) // 2)])
        raw.flush()
        os.fsync(raw.fileno())
        _die(f"while writing {self.path} ({len(chunk) // 2} of {len(chunk)} bytes written)")
        return len(chunk)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def _truncate_half(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
        os.fsync(handle.fileno())
    _die(f"while writing {path} ({size // 2} of {size} bytes written)")


def _arm_write(point: Mapping[str, Any]) -> None:
    import polars as pl

    match, counter = point["write"], _Counter(int(point.get("nth", 1)))
    opener = io.open

    def open_for_write(file, mode="r", *args, **kwargs):
        handle = opener(file, mode, *args, **kwargs)
        writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
        if writing and match in os.fspath(file) and counter.hit():
            return _HalfWriter(handle, os.fspath(file))
        return handle

    def native(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self, file, *args, **kwargs):
            result = method(self, file, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and match in os.fspath(file) and counter.hit():
                _truncate_half(os.fspath(file))
            return result

        return wrapper

    io.open = open_for_write
    import builtins

    builtins.open = open_for_write
    pl.DataFrame.write_parquet = native(pl.DataFrame.write_parquet)
    pl.LazyFrame.sink_parquet = native(pl.LazyFrame.sink_parquet)


def _fast_pg_retries() -> None:
    """Dagster retries a PostgreSQL connection 5 times with exponential waits from 0.2 s (about 12 s
    per operation, three operations before a run gives up): the same retries, without the waits."""
    import dagster_postgres.utils as pg_utils

    pg_utils.calculate_delay = lambda **_: 0.01


def arm(point: Mapping[str, Any]) -> None:
    if point.get("fast_pg_retries"):
        _fast_pg_retries()
    if "write" in point:
        _arm_write(point)
    elif "call" in point:
        _arm_call(point)
    else:
        raise ValueError(f"a kill point needs `write` or `call`: {point}")


# What the parent side uses.


def run_killed(point: Mapping[str, Any], args: Sequence[str], env: Mapping[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``loop <args>`` in a child process armed with ``point``; it must die by that kill. Its output
    goes to files, not pipes: a grandchild it leaves running (an orphan) cannot hold this call."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        completed = subprocess.run(
            [sys.executable, "-m", "loop_pipeline_tests.crash_support", json.dumps(point), *args],
            env=dict(env), cwd=REPO_ROOT, stdout=out, stderr=err, text=True, timeout=timeout,
        )
        out.seek(0), err.seek(0)
        completed.stdout, completed.stderr = out.read(), err.read()
    assert REACHED in completed.stderr and completed.returncode == -signal.SIGKILL, (
        f"loop {' '.join(args)} was to be killed at {point}, but it exited with {completed.returncode}:\n"
        f"{completed.stderr[-4000:]}"
    )
    return completed


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without LOOP_* / DAGSTER_HOME, plus ``settings``; the repository on
    PYTHONPATH (the child imports this module) and one thread for torch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOP_") and k != "DAGSTER_HOME"}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true",
        DAGSTER_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="false",
    )
    env.update(settings)
    return env


def _complete(path: Path) -> str | None:
    """Why ``path`` is not a whole file of its kind (None: it is, or its kind is not checked)."""
    try:
        if path.suffix == ".parquet":
            import polars as pl

            pl.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)
        elif path.suffix == ".png":
            if not path.read_bytes().endswith(b"IEND\xaeB`\x82"):
                return "PNG without its end chunk"
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "np"):
                pass
    except Exception as exc:  # noqa: BLE001 -- any failure to read is the finding, reported by name
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` at a reader's names: no component of the path starts with a dot."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def incomplete_files(folder: Path) -> dict[str, str]:
    """Every visible file under ``folder`` that a reader would find cut short, with why."""
    found = {}
    for path in visible_files(folder):
        why = _complete(path)
        if why:
            found[str(path.relative_to(folder))] = why
    return found


def hidden_leftovers(folder: Path, names: Sequence[str] | None = None) -> list[str]:
    """Dot-named files and folders (temporaries, staging folders) under ``folder``, or only those
    of its entries ``names``: inside each, and beside it (``.<name>.*``)."""
    folder = Path(folder)
    if names is None:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))
    found = set()
    for name in names:
        found.update(folder.glob(f".{name}.*"))
        if (folder / name).is_dir():
            found.update((folder / name).rglob(".*"))
    return sorted(str(p.relative_to(folder)) for p in found)


def snapshot(folder: Path, names: Sequence[str] | None = None) -> dict[str, bytes]:
    """The bytes of every visible file under ``folder`` (or of the given relative ``names``)."""
    folder = Path(folder)
    paths = [folder / n for n in names] if names is not None else visible_files(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in paths}


def main(argv: Sequence[str]) -> None:
    point = json.loads(argv[0])
    arm(point)
    from loop_pipeline.cli import app

    app(args=list(argv[1:]), prog_name="loop")


if __name__ == "__main__":
    main(sys.argv[1:])
