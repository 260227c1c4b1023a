"""LSH banding for candidate pairs (all-pairs in small buckets, a window in giant ones) and
their verification by the share of equal MinHash values.

Pairs are generated, deduplicated and verified ``_PAIRS_PER_CHUNK`` at a time: a million texts
can share tens of millions of candidate pairs, and only the verified ones (a few percent) are
kept, so memory follows the chunk. The verified pairs are the same, in the same order (by pair
code), as verifying every candidate at once.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from loop_pipeline.core.dedup.config import DedupConfig
from loop_pipeline.core.dedup.minhash import mix64

from typing import Iterator

_PAIRS_PER_VERIFY_CHUNK = 1 << 18
# Candidate pairs expanded at a time (a few int64 arrays of this length).
_PAIRS_PER_CHUNK = 1 << 21


def _band_keys(signatures: np.ndarray, config: DedupConfig) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's values, distinct per band index."""
    n = signatures.shape[0]
    if config.rows_per_band % 2 == 0:  # two uint32 values per uint64 word: half the mixing rounds
        words = np.ascontiguousarray(signatures).view(np.uint64).reshape(n, config.bands, -1)
    else:
        words = signatures.reshape(n, config.bands, config.rows_per_band).astype(np.uint64)
    keys = mix64(np.arange(config.bands, dtype=np.uint64) + np.uint64(config.seed))
    for j in range(words.shape[2]):
        keys = mix64(keys ^ words[:, :, j])
    return keys


def _shared_buckets(
    signatures: np.ndarray, config: DedupConfig, rank: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The LSH bucket entries of buckets with at least two texts, grouped by bucket.

    Within a bucket, entries are ordered by ``rank[node]`` (when given), then by their key in the
    neighbouring band, then by node: deterministic. Returns (node, bucket_start, bucket_size,
    position in bucket) per entry.
    """
    keys = _band_keys(signatures, config)
    flat = keys.ravel()
    # Only keys that occur more than once make buckets: find them with one sort of the keys.
    # (Each temporary is dropped as soon as it is used: these arrays are bands x texts long.)
    order = np.argsort(flat)
    sorted_keys = flat[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    del sorted_keys
    shared = np.zeros(flat.size, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    del same
    chosen = order[shared]  # positions in flat = node * bands + band
    del order, shared
    node = chosen // config.bands
    band = chosen % config.bands
    neighbour = keys[node, (band + 1) % config.bands] if config.bands > 1 else np.zeros(chosen.size, np.uint64)
    key = flat[chosen]
    del band, chosen, flat, keys
    sort_keys = (node, neighbour, key) if rank is None else (node, neighbour, rank[node], key)
    arrange = np.lexsort(sort_keys)
    del sort_keys, neighbour
    key, node = key[arrange], node[arrange]
    del arrange
    size = key.size
    is_first = np.ones(size, dtype=bool)
    is_first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(is_first)
    sizes = np.diff(np.append(starts, size))
    bucket_start = np.repeat(starts, sizes)
    return node, bucket_start, np.repeat(sizes, sizes), np.arange(size, dtype=np.int64) - bucket_start


def _expand(entry: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each entry repeated ``count`` times, with 0..count-1 alongside."""
    total = int(count.sum())
    repeated = np.repeat(entry, count)
    step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    return repeated, step


def _unique_sorted(codes: np.ndarray) -> np.ndarray:
    """np.unique's result; polars' parallel hash unique is ~40x faster on tens of millions of pairs."""
    return np.sort(pl.Series(codes, dtype=pl.Int64).unique().to_numpy())


def _ranges(counts: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive [start, stop) ranges of entries whose ``counts`` add up to about ``limit``
    (an entry with more than ``limit`` is a range of its own)."""
    total = np.cumsum(counts)
    start = 0
    while start < counts.size:
        before = total[start - 1] if start else 0
        stop = max(int(np.searchsorted(total, before + limit, side="right")), start + 1)
        yield start, stop
        start = stop


def _candidate_codes(signatures: np.ndarray, config: DedupConfig) -> Iterator[np.ndarray]:
    """Codes ``lo * n + hi`` (lo < hi) of the node pairs that share an LSH bucket, a bounded
    chunk at a time, each chunk unique and sorted (a pair may recur in other chunks)."""
    n = signatures.shape[0]
    if n < 2:
        return
    node, _, members, position = _shared_buckets(signatures, config)
    forward = members - 1 - position
    forward = np.where(members > config.max_bucket_size, np.minimum(forward, config.giant_bucket_window), forward)
    del members, position
    for start, stop in _ranges(forward, _PAIRS_PER_CHUNK):
        entry, step = _expand(np.arange(start, stop, dtype=np.int64), forward[start:stop])
        a, b = node[entry], node[entry + step + 1]
        yield _unique_sorted(np.minimum(a, b) * n + np.maximum(a, b))


def _cross_candidate_codes(
    signatures: np.ndarray, is_left: np.ndarray, is_right: np.ndarray, config: DedupConfig
) -> Iterator[np.ndarray]:
    """Codes ``left * n + right`` of (left node, right node) pairs that share an LSH bucket, in
    chunks as :func:`_candidate_codes`."""
    n = signatures.shape[0]
    if n < 2 or not is_left.any() or not is_right.any():
        return
    # Right texts first in each bucket (rank 0), left-only texts after them (rank 1).
    rank = (~is_right).astype(np.int8)
    node, bucket_start, members, position = _shared_buckets(signatures, config, rank)
    if node.size == 0:
        return
    right_entry = is_right[node]
    starts = np.flatnonzero(position == 0)
    rights_in_bucket = np.repeat(np.add.reduceat(right_entry.astype(np.int64), starts), members[starts])
    left_entry = np.flatnonzero(is_left[node] & ~right_entry & (rights_in_bucket > 0))
    rights = rights_in_bucket[left_entry]
    del right_entry, rights_in_bucket, members
    giant = rights > config.max_bucket_size
    count = np.where(giant, np.minimum(rights, config.giant_bucket_window), rights)
    # Giant: a window of right texts that moves with the left text's position (spreads the work).
    base = np.where(giant, ((position[left_entry] - rights) * config.giant_bucket_window) % np.maximum(rights, 1), 0)
    first_right = bucket_start[left_entry]
    left_node = node[left_entry]
    del giant, position, bucket_start, left_entry
    for start, stop in _ranges(count, _PAIRS_PER_CHUNK):
        entry, step = _expand(np.arange(start, stop, dtype=np.int64), count[start:stop])
        partner = first_right[entry] + (base[entry] + step) % rights[entry]
        yield _unique_sorted(left_node[entry] * n + node[partner])


def _split(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return codes // n, codes % n


def _all_unique(chunks: list[np.ndarray]) -> np.ndarray:
    if not chunks:
        return np.empty(0, dtype=np.int64)
    return chunks[0] if len(chunks) == 1 else _unique_sorted(np.concatenate(chunks))


def _verified_codes(signatures: np.ndarray, chunks: Iterator[np.ndarray], config: DedupConfig) -> np.ndarray:
    """The codes of the candidate pairs that pass :func:`verified`, unique and sorted."""
    n = signatures.shape[0]
    kept = []
    for codes in chunks:
        keep = verified(signatures, *_split(codes, n), config)
        kept.append(codes[keep])
    return _all_unique(kept)


def candidate_pairs(signatures: np.ndarray, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Unique (lo, hi) node pairs, lo < hi, that share an LSH bucket (see the module docstring)."""
    return _split(_all_unique(list(_candidate_codes(signatures, config))), signatures.shape[0])


def verified_pairs(signatures: np.ndarray, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`candidate_pairs` that pass :func:`verified` (same pairs, same order), verified
    chunk by chunk so that only the near duplicates are ever held together."""
    return _split(_verified_codes(signatures, _candidate_codes(signatures, config), config), signatures.shape[0])


def cross_candidate_pairs(
    signatures: np.ndarray, is_left: np.ndarray, is_right: np.ndarray, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (left node, right node) pairs that share an LSH bucket.

    Each left text is compared with every right text of a bucket they share when the bucket holds
    at most ``max_bucket_size`` right texts, else with ``giant_bucket_window`` of them. So the
    answer for a pair never depends on how many *left* texts there are (a train set with its leaks
    removed gives the same answer again)."""
    codes = _all_unique(list(_cross_candidate_codes(signatures, is_left, is_right, config)))
    return _split(codes, signatures.shape[0])


def verified_cross_pairs(
    signatures: np.ndarray, is_left: np.ndarray, is_right: np.ndarray, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`cross_candidate_pairs` that pass :func:`verified`, verified chunk by chunk."""
    chunks = _cross_candidate_codes(signatures, is_left, is_right, config)
    return _split(_verified_codes(signatures, chunks, config), signatures.shape[0])


def verified(signatures: np.ndarray, lo: np.ndarray, hi: np.ndarray, config: DedupConfig) -> np.ndarray:
    """Mask of the pairs whose estimated Jaccard (share of equal MinHash values) >= threshold."""
    needed = config.jaccard_threshold * config.num_perm - 1e-9
    keep = np.empty(lo.size, dtype=bool)
    for start in range(0, lo.size, _PAIRS_PER_VERIFY_CHUNK):
        stop = start + _PAIRS_PER_VERIFY_CHUNK
        equal = (signatures[lo[start:stop]] == signatures[hi[start:stop]]).sum(axis=1)
        keep[start:stop] = equal >= needed
    return keep
