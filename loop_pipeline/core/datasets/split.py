"""Group keys (pseudonymous) and the frozen holdout assignment of groups."""

from __future__ import annotations

import hashlib

import polars as pl

from loop_pipeline.core import dedup
from loop_pipeline.core.datasets.config import DatasetConfig


def _pseudonyms(ids: pl.Series) -> pl.Series:
    """sha256 (first 16 hex digits) of each id: a user or session id can be an email address or a
    phone number, and group keys are written to the holdout and the stored assignment. hashlib, not
    polars' hash: stored keys must match across processes and library versions."""
    distinct = ids.drop_nulls().unique().to_list()
    digests = [hashlib.sha256(value.encode("utf-8")).hexdigest()[:16] for value in distinct]
    return ids.replace_strict(dict(zip(distinct, digests)), default=None, return_dtype=pl.String)


def group_key(frame: pl.DataFrame, config: DatasetConfig) -> pl.Expr:
    prompt_key = pl.lit("prompt:") + dedup.normalize_text(pl.col("prompt_text"))
    if config.group_by == "prompt":
        return prompt_key
    pseudonym = pl.lit(_pseudonyms(frame.get_column(config.group_by)))
    return pl.when(pseudonym.is_not_null()).then(pl.lit(f"{config.group_by}:") + pseudonym).otherwise(prompt_key)


def _hash_split(keys: pl.Series, fraction: float) -> pl.Series:
    """Holdout draw for groups seen for the first time: a seeded hash of the key (deterministic
    across processes for the pinned polars); the stored assignment keeps it frozen afterwards."""
    bucket = (keys.hash(seed=17) % 1_000_000).cast(pl.Float64) / 1_000_000
    return pl.select(pl.when(bucket < fraction).then(pl.lit("holdout")).otherwise(pl.lit("train"))).to_series().alias("split")


def assign_groups(groups: pl.Series, previous: pl.DataFrame | None, fraction: float) -> pl.DataFrame:
    """Every group's split: stored assignments win; new groups are drawn by hash and stored too."""
    distinct = groups.unique().sort()
    known = previous if previous is not None else pl.DataFrame(schema={"group_key": pl.String, "split": pl.String})
    new = distinct.filter(~distinct.is_in(known.get_column("group_key").implode()))
    fresh = pl.DataFrame({"group_key": new, "split": _hash_split(new, fraction)})
    return pl.concat([known.select("group_key", "split"), fresh]).sort("group_key")
