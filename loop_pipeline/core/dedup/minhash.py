"""Shingles of normalized texts and their MinHash signatures (numpy uint64 arithmetic wraps,
which these rely on)."""

from __future__ import annotations

import numpy as np
import polars as pl

from loop_pipeline.core.dedup.config import DedupConfig

_MASK32 = np.uint64(0xFFFFFFFF)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Rows per tokenization chunk and shingles per MinHash block (bounds memory; blocks fit in cache).
_ROWS_PER_CHUNK = 65_536
_SHINGLES_PER_BLOCK = 1_024


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijective avalanche of uint64 values (returns a new array)."""
    x = values + GOLDEN
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _permutations(config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the num_perm hash functions, uniform 64-bit values drawn from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xD3D0]))
    a = rng.integers(0, 1 << 64, size=config.num_perm, dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 1 << 64, size=config.num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def _universal_hash(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``((a*x + b) mod 2**64) >> 32`` for 32-bit keys x (column) and every (a, b) (row).

    Dietzfelbinger's multiply-add-shift: strongly universal from 32-bit keys to 32-bit values,
    using only wrapping uint64 arithmetic (no modulus). Returns uint32 (len(x), num_perm).
    """
    values = x[:, None] * a
    values += b
    values >>= np.uint64(32)
    return values.astype(np.uint32)


def _shingle_hashes(texts: pl.Series, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hashed shingles of non-null normalized ``texts``, grouped by text in order.

    Returns (hashes uint64 of all shingles, offsets int64 of length len(texts) + 1).
    """
    k = config.shingle_size
    tokens = texts.str.split(" ") if config.shingle == "word" else texts.str.split("")
    lengths = tokens.list.len().to_numpy().astype(np.int64)
    is_long = lengths >= k
    counts = np.where(is_long, lengths - k + 1, 1)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    hashes = np.empty(int(offsets[-1]), dtype=np.uint64)

    short_rows = np.flatnonzero(~is_long)
    if short_rows.size:  # too short for one shingle: the whole normalized text is the shingle
        hashes[offsets[short_rows]] = texts.gather(short_rows).hash(config.seed).to_numpy()
    long_rows = np.flatnonzero(is_long)
    if long_rows.size:
        token_hashes = tokens.gather(long_rows).explode().hash(config.seed).to_numpy()
        row_lengths = lengths[long_rows]
        n_starts = token_hashes.size - k + 1
        combined = token_hashes[:n_starts].copy()
        for j in range(1, k):  # order-sensitive combination of k consecutive token hashes
            combined *= GOLDEN
            combined ^= token_hashes[j : j + n_starts]
        if k > 1:
            combined = mix64(combined)
        token_row_start = np.zeros(row_lengths.size, dtype=np.int64)
        np.cumsum(row_lengths[:-1], out=token_row_start[1:])
        position = np.arange(token_hashes.size, dtype=np.int64) - np.repeat(token_row_start, row_lengths)
        position = position[:n_starts]
        valid = position <= np.repeat(row_lengths - k, row_lengths)[:n_starts]
        target = np.repeat(offsets[long_rows], row_lengths)[:n_starts] + position
        hashes[target[valid]] = combined[valid]
    return hashes, offsets


def _minhash(hashes: np.ndarray, offsets: np.ndarray, config: DedupConfig) -> np.ndarray:
    """MinHash signatures (n, num_perm) uint32 of the texts whose shingles ``hashes`` holds."""
    a, b = _permutations(config)
    n = offsets.size - 1
    signatures = np.empty((n, config.num_perm), dtype=np.uint32)
    folded = (hashes ^ (hashes >> np.uint64(32))) & _MASK32  # 32-bit shingle ids, x < 2**32
    # Blocks of whole texts of about _SHINGLES_PER_BLOCK shingles (a longer text is a block alone).
    block_of_row = offsets[:-1] // _SHINGLES_PER_BLOCK
    bounds = np.concatenate(([0], np.flatnonzero(block_of_row[1:] != block_of_row[:-1]) + 1, [n]))
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        start, stop = offsets[first], offsets[last]
        values = _universal_hash(folded[start:stop], a, b)
        signatures[first:last] = np.minimum.reduceat(values, offsets[first:last] - start, axis=0)
    return signatures


def signatures(texts: pl.Series, config: DedupConfig) -> np.ndarray:
    """MinHash signatures of non-null normalized texts, chunked by rows to bound memory."""
    parts = []
    for start in range(0, len(texts), _ROWS_PER_CHUNK):
        hashes, offsets = _shingle_hashes(texts.slice(start, _ROWS_PER_CHUNK), config)
        parts.append(_minhash(hashes, offsets, config))
    if not parts:
        return np.empty((0, config.num_perm), dtype=np.uint32)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
