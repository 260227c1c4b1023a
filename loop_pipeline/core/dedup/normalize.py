"""Normalization (NFKC, case, whitespace, edge punctuation) and the exact-duplicate key."""

from __future__ import annotations

import polars as pl


def _unicode_fold(texts: pl.Series) -> pl.Series:
    """NFKC and format characters (category Cf: zero-width space, soft hyphen, BOM, ...) removed,
    computed only for the texts that are not pure ASCII (where both are the identity)."""
    if texts.dtype != pl.String:
        texts = texts.cast(pl.String)
    non_ascii = (texts.str.len_bytes() != texts.str.len_chars()).fill_null(False)
    index = non_ascii.arg_true()
    if index.len() == 0:
        return texts
    folded = texts.gather(index).str.normalize("NFKC").str.replace_all(r"\p{Cf}+", "")
    return texts.scatter(index, folded)


def normalize_text(expr: pl.Expr) -> pl.Expr:
    """NFKC, lowercase, format characters removed, any Unicode whitespace run -> one space, and
    punctuation (Unicode category P) stripped from both edges of every token; a token of only
    punctuation disappears. Inner punctuation stays (``don't``, ``u.s.a``, ``e-mail``). Symbols
    (``$``, ``+``, emoji) are kept. Null stays null."""
    text = expr.map_batches(_unicode_fold, return_dtype=pl.String, is_elementwise=True).str.to_lowercase()
    # Whitespace runs other than a single plain space (cheaper than rewriting every space).
    text = text.str.replace_all(r"[\s&&[^ ]]\s*| \s+", " ").str.strip_chars(" ")
    text = text.str.replace_all(r"(^| )\p{P}+", "${1}").str.replace_all(r"\p{P}+( |$)", "${1}")
    return text.str.replace_all(r" {2,}", " ").str.strip_chars(" ")


def exact_key(expr: pl.Expr, seed: int = 0) -> pl.Expr:
    """A seeded 64-bit hash (UInt64) of :func:`normalize_text`: equal keys <=> exact duplicates
    (up to a 2**-64 collision); null for a null text. Deterministic across processes for one
    polars version."""
    normalized = normalize_text(expr)
    return pl.when(normalized.is_not_null()).then(normalized.hash(seed))
