"""Where assets read the landing folder and write their tables."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Optional

import dagster as dg
import fsspec
import polars as pl

from loop_pipeline.core.ingest import SourceFile
from loop_pipeline.core.ingest.pipeline import is_ingestible
from loop_pipeline.core.storage import write_json_atomic, write_parquet_atomic

LANDING_KINDS = {"traces": "trace", "feedback": "feedback"}
_DAY = re.compile(r"^(?:dt=|date=)?(\d{4}-\d{2}-\d{2})$")


def day_of_folder(name: str) -> str | None:
    """``2026-11-01``, ``dt=2026-11-01`` or ``date=2026-11-01`` -> ``2026-11-01``; else None."""
    match = _DAY.match(name)
    if not match:
        return None
    try:
        dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return match.group(1)


class LoopStorage(dg.ConfigurableResource):
    """Landing folder (local path or any fsspec URL) and the warehouse of asset tables.

    Landing layout: ``<landing>/traces/<day>/*`` and ``<landing>/feedback/<day>/*`` with
    ``<day>`` as ``YYYY-MM-DD`` (or ``dt=`` / ``date=`` prefixed): the day the files arrived,
    which is the partition that ingests them.
    """

    landing_url: str
    warehouse_dir: str
    # Versioned datasets; default: `datasets` beside the warehouse (both under LOOP_HOME).
    datasets_dir: Optional[str] = None

    # Base-model cache and training runs; default: `models` beside the warehouse.
    models_dir: Optional[str] = None

    @property
    def datasets_root(self) -> Path:
        return Path(self.datasets_dir) if self.datasets_dir else Path(self.warehouse_dir).parent / "datasets"

    @property
    def models_root(self) -> Path:
        return Path(self.models_dir) if self.models_dir else Path(self.warehouse_dir).parent / "models"

    def _landing_files(self, day: str | None = None) -> list[tuple[str, str, str, dict]]:
        """(day, record kind, path relative to the landing root, fsspec info) of each landing file,
        those ingest does not read included (they are reported as unsupported, not passed over)."""
        fs, root = fsspec.core.url_to_fs(self.landing_url)
        root = root.rstrip("/")
        found: list[tuple[str, str, str, dict]] = []
        for folder, record_kind in LANDING_KINDS.items():
            base = f"{root}/{folder}"
            if not fs.isdir(base):
                continue
            for entry in sorted(fs.ls(base, detail=False)):
                folder_day = day_of_folder(entry.rstrip("/").rsplit("/", 1)[-1])
                if folder_day is None or (day is not None and folder_day != day) or not fs.isdir(entry):
                    continue
                for path, info in sorted(fs.find(entry, detail=True).items()):
                    relative = path[len(root) :].lstrip("/")
                    if not any(p.startswith(".") for p in relative.split("/")):
                        found.append((folder_day, record_kind, relative, info))
        return found

    def landing_days(self) -> dict[str, list[dict]]:
        """Every landing day with its files' names, sizes and times (what the sensor watches)."""
        days: dict[str, list[dict]] = {}
        for day, _, relative, info in self._landing_files():
            stamp = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
            days.setdefault(day, []).append({"file": relative, "size": info.get("size"), "mtime": str(stamp)})
        return days

    def landing_sources(self, day: str) -> list[SourceFile]:
        """The files that partition ``day`` ingests; rows name them relative to the landing root.
        Files with a name ingest does not read come marked ``unsupported`` (with their size)."""
        base = self.landing_url.rstrip("/")
        return [
            SourceFile(
                f"{base}/{relative}",
                relative,
                record_kind,
                unsupported=not is_ingestible(relative),
                size=info.get("size"),
            )
            for _, record_kind, relative, info in self._landing_files(day)
        ]

    def table_path(self, table: str, partition: str) -> Path:
        return Path(self.warehouse_dir) / table / f"{partition}.parquet"

    def write_table(self, table: str, partition: str, frame: pl.DataFrame) -> Path:
        path = self.table_path(table, partition)
        write_parquet_atomic(path, frame)
        return path

    def read_table(self, table: str, partition: str) -> pl.DataFrame:
        path = self.table_path(table, partition)
        if not path.is_file():
            raise FileNotFoundError(f"{table} has no data for partition {partition}: {path} is missing")
        return pl.read_parquet(path)

    def table_partitions(self, table: str) -> list[str]:
        folder = Path(self.warehouse_dir) / table
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def read_partitions(self, table: str, partitions: list[str] | None = None) -> pl.DataFrame:
        """The given partitions that exist (default: all of them), concatenated in day order."""
        wanted = self.table_partitions(table) if partitions is None else partitions
        frames = [pl.read_parquet(self.table_path(table, p)) for p in wanted if self.table_path(table, p).is_file()]
        if not frames:
            raise FileNotFoundError(f"{table} has no materialized partitions under {self.warehouse_dir}")
        return pl.concat(frames, how="vertical")

    def document_path(self, name: str) -> Path:
        return Path(self.warehouse_dir) / f"{name}.json"

    def write_document(self, name: str, payload: dict) -> Path:
        path = self.document_path(name)
        write_json_atomic(path, payload)
        return path

    def read_document(self, name: str) -> dict:
        path = self.document_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{name} has not been materialized yet: {path} is missing")
        return json.loads(path.read_text(encoding="utf-8"))

    def summary_path(self, partition: str) -> Path:
        return Path(self.warehouse_dir) / "ingest_summaries" / f"{partition}.json"

    def write_summary(self, partition: str, summary: dict) -> Path:
        path = self.summary_path(partition)
        write_json_atomic(path, summary)
        return path

