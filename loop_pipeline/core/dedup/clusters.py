"""Clusters of exact and near duplicates, and the public functions: cluster ids, deduplication
keeping the best-scored row, and the left rows that duplicate some right row."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from loop_pipeline.core.dedup.config import DedupConfig
from loop_pipeline.core.dedup.lsh import verified_cross_pairs, verified_pairs
from loop_pipeline.core.dedup.minhash import signatures as minhash_signatures
from loop_pipeline.core.dedup.normalize import normalize_text


def _near_pairs(texts: pl.Series, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs among distinct non-null normalized texts (node indices)."""
    return verified_pairs(minhash_signatures(texts, config), config)


def _exact_groups(frame: pl.DataFrame, text_column: str) -> tuple[pl.DataFrame, pl.Series]:
    """Per row: ``_row`` and ``_node`` (index of its distinct normalized text; null for a null
    text), and the distinct normalized texts in order of first appearance."""
    rows = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
        normalize_text(pl.col(text_column)).alias("_norm"),
    )
    distinct = (
        rows.filter(pl.col("_norm").is_not_null())
        .group_by("_norm", maintain_order=True)
        .agg()
        .with_row_index("_node")
        .with_columns(pl.col("_node").cast(pl.Int64))
    )
    rows = rows.join(distinct, on="_norm", how="left", maintain_order="left").select("_row", "_node")
    return rows, distinct.get_column("_norm")


def _check_columns(frame: pl.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"dedup: column(s) {missing} not in the frame (has {frame.columns})")


def _text_dtype_check(frame: pl.DataFrame, text_column: str) -> None:
    dtype = frame.schema[text_column]
    if dtype not in (pl.String, pl.Null):
        raise TypeError(f"dedup: text column {text_column!r} must be a string column, got {dtype}")


def _row_clusters(frame: pl.DataFrame, text_column: str, config: DedupConfig) -> pl.DataFrame:
    """Per row (input order): ``_row``, ``_node``, ``cluster_id`` (smallest row position)."""
    _text_dtype_check(frame, text_column)
    rows, distinct = _exact_groups(frame, text_column)
    n_nodes = len(distinct)
    if n_nodes:
        lo, hi = _near_pairs(distinct, config)
        graph = coo_matrix((np.ones(lo.size, dtype=np.int8), (lo, hi)), shape=(n_nodes, n_nodes)).tocsr()
        _, labels = connected_components(graph, directed=False)
    else:
        labels = np.empty(0, dtype=np.int64)
    node = rows.get_column("_node").fill_null(-1).to_numpy()
    # Null texts are singletons: each gets a component id of its own past the real ones.
    component = np.where(node >= 0, labels[np.maximum(node, 0)] if n_nodes else 0, n_nodes + np.arange(node.size))
    rows = rows.with_columns(pl.Series("_component", component.astype(np.int64)))
    return rows.with_columns(pl.col("_row").min().over("_component").alias("cluster_id")).drop("_component")


# ---------------------------------------------------------------------------------------------
# Public API


def near_duplicate_clusters(
    frame: pl.DataFrame, id_column: str, text_column: str, config: DedupConfig
) -> pl.DataFrame:
    """``[id_column, "cluster_id"]`` for every input row, in input order.

    Rows in one cluster are exact or near duplicates of each other (transitively: connected
    components over verified near pairs and exact groups). ``cluster_id`` is the smallest 0-based
    row position in the cluster, so a row that duplicates nothing has its own position.
    """
    _check_columns(frame, id_column, text_column)
    if id_column == "cluster_id":
        raise ValueError("dedup: the id column cannot be named 'cluster_id' (the output column)")
    clusters = _row_clusters(frame, text_column, config)
    return pl.DataFrame([frame.get_column(id_column), clusters.get_column("cluster_id")])


def deduplicate(
    frame: pl.DataFrame,
    id_column: str,
    text_column: str,
    score_column: str,
    config: DedupConfig,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Keep one row per cluster: the highest ``score_column`` (null / NaN lowest; ties: the
    earliest row). Kept rows keep their input order and all their columns.

    Stats: ``exact_duplicates_removed`` is what exact-key deduplication alone removes (each exact
    group keeps one row); ``near_duplicates_removed`` is what merging exact groups into near-duplicate
    clusters removes on top; ``kept = input - exact - near``.
    """
    _check_columns(frame, id_column, text_column, score_column)
    if not frame.schema[score_column].is_numeric():
        raise TypeError(f"dedup: score column {score_column!r} must be numeric, got {frame.schema[score_column]}")
    clusters = _row_clusters(frame, text_column, config)
    score = pl.col(score_column)
    if frame.schema[score_column].is_float():
        score = score.fill_nan(None)
    ranked = clusters.with_columns(frame.select(score.alias("_score")).to_series())
    kept = (
        ranked.sort(["cluster_id", "_score", "_row"], descending=[False, True, False], nulls_last=True)
        .unique("cluster_id", keep="first", maintain_order=True)
        .get_column("_row")
    )
    mask = np.zeros(frame.height, dtype=bool)
    mask[kept.to_numpy()] = True
    n = frame.height
    # Exact groups: the distinct normalized texts plus the null-text rows (each alone).
    node = clusters.get_column("_node")
    exact_groups = node.drop_nulls().n_unique() + node.null_count()
    n_clusters = kept.len()
    stats = {
        "input": n,
        "exact_duplicates_removed": int(n - exact_groups),
        "near_duplicates_removed": int(exact_groups - n_clusters),
        "kept": int(n_clusters),
    }
    return frame.filter(pl.Series(mask)), stats


def overlapping_ids(
    left: pl.DataFrame,
    right: pl.DataFrame,
    id_column: str,
    text_column: str,
    config: DedupConfig,
) -> pl.DataFrame:
    """``[id_column]``: ids of the ``left`` rows (unique, in left order) whose text is an exact or
    near duplicate of *some* ``right`` row's text, pair by pair (not through chains of left rows).

    Use: train examples that near-duplicate a holdout example are excluded
    (``train.join(overlapping_ids(train, holdout, ...), on=id, how="anti")``).
    """
    _check_columns(left, id_column, text_column)
    _check_columns(right, text_column)
    _text_dtype_check(left, text_column)
    _text_dtype_check(right, text_column)
    normalized = normalize_text(pl.col(text_column)).cast(pl.String).alias("_norm")
    texts = pl.concat(
        [left.select(normalized, pl.lit(True).alias("_left")), right.select(normalized, pl.lit(False).alias("_left"))]
    )
    distinct = (
        texts.filter(pl.col("_norm").is_not_null())
        .group_by("_norm", maintain_order=True)
        .agg(pl.col("_left").any().alias("_has_left"), (~pl.col("_left")).any().alias("_has_right"))
        .with_row_index("_node")
        .with_columns(pl.col("_node").cast(pl.Int64))
    )
    has_left = distinct.get_column("_has_left").to_numpy()
    has_right = distinct.get_column("_has_right").to_numpy()
    flagged = has_left & has_right  # exact overlaps
    if has_left.any() and has_right.any():
        signatures = minhash_signatures(distinct.get_column("_norm"), config)
        # Texts on both sides are exact overlaps already: only left-only texts need a near match.
        left_node, _ = verified_cross_pairs(signatures, has_left & ~has_right, has_right, config)
        flagged[left_node] = True
    node = texts.join(distinct.select("_norm", "_node"), on="_norm", how="left", maintain_order="left")
    node = node.filter(pl.col("_left")).get_column("_node").fill_null(-1).to_numpy()
    is_flagged = (node >= 0) & flagged[np.maximum(node, 0)] if flagged.size else np.zeros(node.size, dtype=bool)
    return left.filter(pl.Series(is_flagged)).select(id_column).unique(maintain_order=True)
