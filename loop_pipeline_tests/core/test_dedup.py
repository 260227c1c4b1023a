"""Exact and near-duplicate detection (loop_pipeline.core.dedup).

Small hand-written frames check the semantics (normalization, clusters, which row is kept, stats,
train/holdout leaks, short texts, configuration); a seeded synthetic corpus of 200,000 texts with
planted near-duplicates checks recall, false merges and that the whole path is vectorized (its speed: `loop bench datasets`).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from loop_pipeline.config import ConfigError
from loop_pipeline.core.dedup import (
    DedupConfig,
    deduplicate,
    exact_key,
    near_duplicate_clusters,
    normalize_text,
    overlapping_ids,
)
from loop_pipeline.core.dedup import lsh, minhash
from loop_pipeline_tests.helpers import REPO_CONFIGS

DEFAULT = DedupConfig()

BASE_20 = (
    "please summarize the attached quarterly report for the finance team and highlight "
    "any risks that need our attention before friday"
)
# Unrelated texts (no word 3-gram in common).
UNRELATED = [
    "what is the balance of my checking account right now",
    "book a table for four at an italian place downtown tonight",
    "translate the following paragraph into german and keep the formal tone",
    "my package never arrived and the tracking page shows no updates since monday",
    "write a haiku about autumn leaves falling on a quiet lake",
    "how do i reset the password for my company email account",
    "list three differences between mitochondria and chloroplasts in plant cells",
    "cancel my gym membership effective at the end of this month",
]


def _replace_word(text: str, position: int, word: str) -> str:
    words = text.split()
    words[position] = word
    return " ".join(words)


def _normalized(values: list[str | None]) -> list[str | None]:
    return pl.select(normalize_text(pl.lit(pl.Series(values, dtype=pl.String)))).to_series().to_list()


def _clusters(texts: list[str | None], config: DedupConfig = DEFAULT) -> list[int]:
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": pl.Series(texts, dtype=pl.String)})
    result = near_duplicate_clusters(frame, "id", "text", config)
    assert result.columns == ["id", "cluster_id"]
    assert result.get_column("id").to_list() == frame.get_column("id").to_list()
    return result.get_column("cluster_id").to_list()


# ---------------------------------------------------------------------------------------------
# Normalization and the exact key


def test_normalize_text_folds_case_whitespace_and_edge_punctuation():
    variants = [
        "Hello, World!",
        "hello world",
        "  HELLO\u00a0\u00a0world...  ",  # no-break spaces
        "hello\t\n world",
        "\u201cHello\u201d \u2014 (world)",  # curly quotes, a lone em dash token, brackets
        "\uff28\uff45\uff4c\uff4c\uff4f world",  # full-width letters (NFKC)
        "hel\u200blo world\u3000",  # zero-width space inside, ideographic space at the end
    ]
    assert set(_normalized(variants)) == {"hello world"}
    # Inner punctuation and symbols stay; a missing text stays missing.
    assert _normalized(["Don't e-mail U.S.A. staff: $5 + tax", None, "", "?!"]) == [
        "don't e-mail u.s.a staff $5 + tax",
        None,
        "",
        "",
    ]


def test_exact_key_is_equal_exactly_for_equal_normalized_texts():
    frame = pl.DataFrame({"text": ["Hello, World!", "hello   world", "hello worlds", None]})
    keys = frame.select(exact_key(pl.col("text")).alias("key")).get_column("key")
    assert keys.dtype == pl.UInt64
    assert keys[0] == keys[1]
    assert keys[0] != keys[2]
    assert keys[3] is None


def test_exact_key_is_the_same_in_another_process():
    here = pl.select(exact_key(pl.lit("Same TEXT, everywhere."))).item()
    code = (
        "import polars as pl; from loop_pipeline.core.dedup import exact_key; "
        "print(pl.select(exact_key(pl.lit('same text everywhere'))).item())"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(there.stdout.strip()) == here


# ---------------------------------------------------------------------------------------------
# Clusters


def test_exact_duplicates_collapse_and_cluster_id_is_smallest_position():
    texts = ["Unrelated first row here", "Hello, World!", "hello   world", "HELLO WORLD?!", "hello there world"]
    assert _clusters(texts) == [0, 1, 1, 1, 4]


def test_one_word_changed_in_a_20_word_text_clusters():
    assert len(BASE_20.split()) == 20
    changed = _replace_word(BASE_20, 9, "marketing")  # "finance" -> "marketing", mid-text
    assert _clusters([BASE_20, changed]) == [0, 0]
    # And in general: 300 random 20-word texts, each with one word changed in the middle
    # (true word-3-gram Jaccard 15/21 = 0.71), against the default threshold.
    rng = np.random.default_rng(11)
    vocab = np.array([f"w{i}" for i in range(5000)])
    words = vocab[rng.integers(0, vocab.size, size=(300, 20))]
    changed_words = words.copy()
    changed_words[np.arange(300), rng.integers(2, 18, size=300)] = "replacementword"
    originals = [" ".join(row) for row in words]
    copies = [" ".join(row) for row in changed_words]
    frame = pl.DataFrame({"id": np.arange(600), "text": originals + copies})
    cluster = near_duplicate_clusters(frame, "id", "text", DEFAULT).get_column("cluster_id").to_numpy()
    recovered = np.mean(cluster[:300] == cluster[300:])
    assert recovered >= 0.9
    # No pair of different originals merged.
    assert np.unique(cluster[:300]).size == 300


def test_unrelated_texts_do_not_cluster():
    assert _clusters(UNRELATED) == list(range(len(UNRELATED)))
    # Two edits far apart in 20 words (Jaccard 12/24 = 0.5, below the 0.6 threshold) are mostly
    # no longer near duplicates; the 64-permutation estimate lets a few through (about 5%).
    rng = np.random.default_rng(12)
    vocab = np.array([f"w{i}" for i in range(5000)])
    words = vocab[rng.integers(0, vocab.size, size=(300, 20))]
    edited = words.copy()
    edited[:, 3], edited[:, 15] = "editone", "edittwo"
    frame = pl.DataFrame({"id": np.arange(600), "text": [" ".join(r) for r in words] + [" ".join(r) for r in edited]})
    cluster = near_duplicate_clusters(frame, "id", "text", DEFAULT).get_column("cluster_id").to_numpy()
    assert np.mean(cluster[:300] == cluster[300:]) <= 0.12


def test_clusters_are_transitive_through_exact_and_near_links():
    changed = _replace_word(BASE_20, 10, "sales")
    texts = [UNRELATED[0], changed.upper() + "!", BASE_20, UNRELATED[1], changed]
    assert _clusters(texts) == [0, 1, 1, 3, 1]


def test_short_texts_are_one_shingle():
    texts = ["Hi!", "hi", "hello there", "hello where", "", "   ...", None, None, "ok"]
    # "hi" == "Hi!" exactly; two-word texts are single whole-text shingles, so they only match
    # exactly; empty-after-normalization texts are exact duplicates of each other; nulls are alone.
    assert _clusters(texts) == [0, 0, 2, 3, 4, 4, 6, 7, 8]
    # Character shingles: "ok" is shorter than a 5-gram and still gets a signature.
    char = DedupConfig(shingle="char", shingle_size=5)
    assert _clusters(texts, char) == [0, 0, 2, 3, 4, 4, 6, 7, 8]


def test_char_shingles_catch_typos():
    config = DedupConfig(shingle="char", shingle_size=5)
    text = "Could you please send me the invoice for order 48213 by the end of the week?"
    typo = text.replace("invoice", "invoise")
    assert _clusters([text, typo, *UNRELATED[:3]], config) == [0, 0, 2, 3, 4]


def test_minhash_estimates_jaccard_without_bias():
    # Sets of distinct tokens with a known Jaccard: 80 shared of 120 -> 2/3.
    left = " ".join(f"t{i}" for i in range(100))
    right = " ".join(f"t{i}" for i in range(20, 120))
    texts = pl.Series([left, right])
    estimates = []
    for seed in range(60):
        config = DedupConfig(shingle_size=1, seed=seed)
        signatures = minhash.signatures(texts, config)
        assert signatures.shape == (2, 64) and signatures.dtype == np.uint32
        estimates.append(np.mean(signatures[0] == signatures[1]))
    assert abs(np.mean(estimates) - 2 / 3) < 0.02
    # Spread close to the binomial sqrt(J (1 - J) / 64) = 0.059: the permutations are independent.
    assert 0.035 < np.std(estimates) < 0.085


def test_giant_buckets_are_capped_and_still_connected():
    # 300 texts that differ only in their last word share most LSH buckets.
    texts = [f"{BASE_20} ref{i}" for i in range(300)]
    capped = DedupConfig(max_bucket_size=4, giant_bucket_window=2)
    assert set(_clusters(texts, capped)) == {0}
    signatures = minhash.signatures(pl.Series(texts).str.to_lowercase(), capped)
    lo, hi = lsh.candidate_pairs(signatures, capped)
    assert lo.size <= 300 * capped.bands * capped.giant_bucket_window
    assert lo.size < 300 * 299 // 2
    assert np.all(lo < hi)
    uncapped_lo, _ = lsh.candidate_pairs(signatures, DedupConfig(max_bucket_size=1000))
    assert uncapped_lo.size > lo.size


def test_results_are_deterministic_and_seeded():
    texts = [BASE_20, _replace_word(BASE_20, 12, "legal"), *UNRELATED]
    frame = pl.DataFrame({"id": range(len(texts)), "text": texts})
    first = near_duplicate_clusters(frame, "id", "text", DedupConfig(seed=3))
    second = near_duplicate_clusters(frame, "id", "text", DedupConfig(seed=3))
    assert first.equals(second)
    series = pl.Series(texts)
    same = minhash.signatures(series, DedupConfig(seed=3))
    assert np.array_equal(same, minhash.signatures(series, DedupConfig(seed=3)))
    assert not np.array_equal(same, minhash.signatures(series, DedupConfig(seed=4)))


def test_empty_and_all_null_frames():
    empty = pl.DataFrame({"id": pl.Series([], dtype=pl.Int64), "text": pl.Series([], dtype=pl.String)})
    assert near_duplicate_clusters(empty, "id", "text", DEFAULT).height == 0
    kept, stats = deduplicate(empty.with_columns(pl.lit(1.0).alias("score")), "id", "text", "score", DEFAULT)
    assert kept.height == 0
    assert stats == {"input": 0, "exact_duplicates_removed": 0, "near_duplicates_removed": 0, "kept": 0}
    nulls = pl.DataFrame({"id": [1, 2], "text": [None, None]})
    assert near_duplicate_clusters(nulls, "id", "text", DEFAULT).get_column("cluster_id").to_list() == [0, 1]


def test_bad_columns_are_rejected():
    frame = pl.DataFrame({"id": [1], "text": ["a"], "number": [1.0]})
    with pytest.raises(ValueError, match="missing|not in the frame"):
        near_duplicate_clusters(frame, "id", "prompt", DEFAULT)
    with pytest.raises(TypeError, match="string"):
        near_duplicate_clusters(frame, "id", "number", DEFAULT)
    with pytest.raises(TypeError, match="numeric"):
        deduplicate(frame, "id", "text", "text", DEFAULT)


# ---------------------------------------------------------------------------------------------
# deduplicate


def test_deduplicate_keeps_highest_score_ties_earliest_and_input_order():
    near = _replace_word(BASE_20, 9, "marketing")
    frame = pl.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
            "text": [
                UNRELATED[0],  # a: alone
                "Tie, first.",  # b: ties with c on score -> b (earlier) is kept
                "tie first",  # c
                BASE_20,  # d: near cluster {d, e, f}; f has the highest score
                near,  # e
                BASE_20.upper(),  # f
                UNRELATED[1],  # g: exact cluster {g, h}; h's score is NaN (lowest)
                UNRELATED[1] + "!!",  # h
                None,  # i: null text is kept alone
            ],
            "score": [0.1, 0.5, 0.5, 0.2, 0.7, 0.9, 0.3, float("nan"), None],
            "extra": list(range(9)),
        }
    )
    kept, stats = deduplicate(frame, "id", "text", "score", DEFAULT)
    assert kept.get_column("id").to_list() == ["a", "b", "f", "g", "i"]
    assert kept.columns == frame.columns
    assert kept.get_column("extra").to_list() == [0, 1, 5, 6, 8]
    # Exact groups: {a} {b,c} {d,f} {e} {g,h} {i} = 6 of 9 rows -> 3 exact removed;
    # clusters: {a} {b,c} {d,e,f} {g,h} {i} = 5 -> 1 more removed as a near duplicate.
    assert stats == {"input": 9, "exact_duplicates_removed": 3, "near_duplicates_removed": 1, "kept": 5}


def test_deduplicate_null_scores_lose_and_integer_scores_work():
    frame = pl.DataFrame({"id": [1, 2, 3], "text": ["same text", "Same text.", "SAME TEXT"], "score": [None, 2, 2]})
    kept, stats = deduplicate(frame, "id", "text", "score", DEFAULT)
    assert kept.get_column("id").to_list() == [2]
    assert stats["input"] == stats["exact_duplicates_removed"] + stats["near_duplicates_removed"] + stats["kept"]


# ---------------------------------------------------------------------------------------------
# overlapping_ids (train / holdout leakage)


def test_overlapping_ids_finds_exact_and_near_leaks():
    holdout = pl.DataFrame({"id": [100, 101, 102], "text": [BASE_20, UNRELATED[0], UNRELATED[1]]})
    train = pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "text": [
                UNRELATED[2],
                UNRELATED[0].title() + "?",  # exact leak of 101
                _replace_word(BASE_20, 8, "board"),  # near leak of 100
                UNRELATED[3],
                None,
                UNRELATED[4],
            ],
        }
    )
    leaked = overlapping_ids(train, holdout, "id", "text", DEFAULT)
    assert leaked.columns == ["id"]
    assert leaked.get_column("id").to_list() == [2, 3]
    clean = train.join(leaked, on="id", how="anti")
    assert clean.get_column("id").to_list() == [1, 4, 5, 6]


def test_overlapping_ids_is_empty_for_disjoint_sets():
    left = pl.DataFrame({"id": ["x", "y", "z"], "text": UNRELATED[:3]})
    right = pl.DataFrame({"id": ["p", "q"], "text": UNRELATED[3:5]})
    result = overlapping_ids(left, right, "id", "text", DEFAULT)
    assert result.height == 0
    assert result.schema == pl.Schema({"id": pl.String})


def test_overlapping_ids_is_pairwise_not_through_chains():
    # B is a near duplicate of both A and C, but A and C are too far apart: a left row A that only
    # reaches the right row C through another left row B is not a leak.
    words = [f"word{i}" for i in range(100)]
    b = " ".join(words)
    a = " ".join(words[:20] + [f"alpha{i}" for i in range(8)] + words[28:])
    c = " ".join(words[:70] + [f"gamma{i}" for i in range(8)] + words[78:])
    config = DedupConfig(num_perm=256, bands=64, jaccard_threshold=0.74)
    assert _clusters([a, b, c], config) == [0, 0, 0]  # one cluster through B
    assert _clusters([a, c], config) == [0, 1]  # A and C themselves are not near duplicates
    left = pl.DataFrame({"id": ["A", "B"], "text": [a, b]})
    right = pl.DataFrame({"id": ["C"], "text": [c]})
    assert overlapping_ids(left, right, "id", "text", config).get_column("id").to_list() == ["B"]


def test_overlapping_ids_compares_every_left_text_with_the_right_texts_of_a_crowded_bucket():
    # 300 train texts share their LSH buckets (one template); the holdout text sits in them too.
    # Capping left-left comparisons must not hide any train text from the holdout text, and a
    # second check on the cleaned train set finds nothing (the datasets expectation relies on it).
    capped = DedupConfig(max_bucket_size=4, giant_bucket_window=2)
    train = pl.DataFrame({"id": range(300), "text": [f"{BASE_20} ref{i}" for i in range(300)] })
    train = pl.concat([train, pl.DataFrame({"id": [300, 301], "text": UNRELATED[:2]})])
    holdout = pl.DataFrame({"id": [-1], "text": [f"{BASE_20} refholdout"]})
    leaked = overlapping_ids(train, holdout, "id", "text", capped)
    assert leaked.get_column("id").to_list() == list(range(300))
    clean = train.join(leaked, on="id", how="anti")
    assert overlapping_ids(clean, holdout, "id", "text", capped).height == 0


def test_overlapping_ids_agrees_with_brute_force_on_signatures():
    rng = np.random.default_rng(5)
    vocab = np.array([f"v{i}" for i in range(400)])  # a small vocabulary: many partial overlaps
    words = vocab[rng.integers(0, vocab.size, size=(400, 24))]
    edited = words[:200].copy()
    for _ in range(3):  # 0-3 random substitutions: Jaccard spread around the threshold
        rows = rng.random(200) < 0.5
        edited[rows, rng.integers(0, 24, size=rows.sum())] = vocab[rng.integers(0, vocab.size, size=rows.sum())]
    left_texts = [" ".join(r) for r in words[200:]] + [" ".join(r) for r in edited[:100]]
    right_texts = [" ".join(r) for r in words[:200]]
    left = pl.DataFrame({"id": range(len(left_texts)), "text": left_texts})
    right = pl.DataFrame({"id": range(len(right_texts)), "text": right_texts})
    config = DedupConfig()
    found = set(overlapping_ids(left, right, "id", "text", config).get_column("id").to_list())
    # Brute force: every left x right pair by its MinHash estimate.
    signatures = minhash.signatures(pl.Series(left_texts + right_texts), config)
    estimate = (signatures[: len(left_texts), None, :] == signatures[None, len(left_texts) :, :]).mean(axis=2)
    truth = set(np.flatnonzero((estimate >= config.jaccard_threshold).any(axis=1)).tolist())
    assert found <= truth  # every reported leak is a verified one
    assert len(truth) >= 60
    assert len(found) >= 0.95 * len(truth)  # LSH misses only a few borderline pairs


# ---------------------------------------------------------------------------------------------
# Configuration


def test_config_file_documents_the_defaults():
    assert DedupConfig.from_yaml(REPO_CONFIGS / "dedup.yaml") == DedupConfig()
    assert DedupConfig.from_mapping({}) == DedupConfig()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"shingles": "word", "bandz": 4}, r"^dedup.yaml: shingles: unknown key; bandz: unknown key$"),
        ({"shingle": "sentence"}, r"shingle: Input should be 'word' or 'char' \(got 'sentence'\)"),
        ({"shingle_size": 0}, r"shingle_size: Input should be greater than or equal to 1 \(got 0\)"),
        ({"shingle_size": 2.5}, r"shingle_size: Input should be a valid integer"),
        ({"num_perm": 64, "bands": 10}, r"bands \(10\) must divide num_perm \(64\) evenly"),
        ({"jaccard_threshold": 0}, r"jaccard_threshold: Input should be greater than 0"),
        ({"jaccard_threshold": 1.5}, r"jaccard_threshold: Input should be less than or equal to 1"),
        ({"jaccard_threshold": "high"}, r"jaccard_threshold: Input should be a valid number"),
        ({"seed": -1}, r"seed: Input should be greater than or equal to 0"),
        ({"max_bucket_size": 1}, r"max_bucket_size: Input should be greater than or equal to 2"),
        ({"giant_bucket_window": True}, r"giant_bucket_window: Input should be a valid integer \(got True\)"),
    ],
)
def test_config_errors_name_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        DedupConfig.from_mapping(raw, source="dedup.yaml")


def test_config_errors_from_a_file_and_from_code(tmp_path):
    path = tmp_path / "dedup.yaml"
    path.write_text("shingle: word\nnum_permutations: 32\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: num_permutations: unknown key$"):
        DedupConfig.from_yaml(path)
    path.write_text("shingle: char\nshingle_size: 5\njaccard_threshold: 1\n", encoding="utf-8")
    assert DedupConfig.from_yaml(path) == DedupConfig(shingle="char", shingle_size=5, jaccard_threshold=1.0)
    # Built in code, a config is validated just the same: no invalid one reaches the algorithms.
    with pytest.raises(ValidationError, match="must divide num_perm"):
        DedupConfig(bands=7)


# ---------------------------------------------------------------------------------------------
# Scale: 200,000 texts


def _synthetic_corpus(n: int, seed: int) -> pl.DataFrame:
    """n texts of 20-40 Zipf-distributed words; 10% are planted copies of another text with one
    word substituted (8%) or with only case / spacing / punctuation changed (2%). Columns: id,
    text, family (the original's id; a copy shares its original's family)."""
    rng = np.random.default_rng(seed)
    vocab_size = 20_000
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    word_lengths = rng.integers(2, 10, size=vocab_size)
    vocab = (
        pl.DataFrame(
            {
                "word": np.repeat(np.arange(vocab_size), word_lengths),
                "letter": letters[rng.integers(0, 26, size=int(word_lengths.sum()))],
            }
        )
        .group_by("word", maintain_order=True)
        .agg(pl.col("letter").str.join(""))
        .get_column("letter")
    )
    weights = 1.0 / (np.arange(vocab_size) + 10.0)
    n_planted = n // 10
    n_original = n - n_planted
    lengths = rng.integers(20, 41, size=n_original)
    words = rng.choice(vocab_size, size=int(lengths.sum()), p=weights / weights.sum())
    starts = np.cumsum(lengths) - lengths
    sources = rng.choice(n_original, size=n_planted, replace=False)
    copy_lengths = lengths[sources]
    within = np.arange(copy_lengths.sum()) - np.repeat(np.cumsum(copy_lengths) - copy_lengths, copy_lengths)
    copy_words = words[np.repeat(starts[sources], copy_lengths) + within]
    substituted = rng.random(n_planted) < 0.8
    position = (rng.random(n_planted) * copy_lengths).astype(np.int64)
    slots = (np.cumsum(copy_lengths) - copy_lengths + position)[substituted]
    copy_words[slots] = rng.integers(0, vocab_size, size=slots.size)
    row = np.repeat(np.arange(n), np.concatenate([lengths, copy_lengths]))
    texts = (
        pl.DataFrame({"row": row, "word": vocab.gather(np.concatenate([words, copy_words]))})
        .group_by("row", maintain_order=True)
        .agg(pl.col("word").str.join(" "))
        .get_column("word")
    )
    restyled = np.concatenate([np.zeros(n_original, bool), ~substituted])
    texts = pl.select(
        pl.when(pl.lit(pl.Series(restyled)))
        .then(pl.concat_str(pl.lit(pl.Series(texts)).str.to_uppercase().str.replace_all(" ", "  "), pl.lit("?!")))
        .otherwise(pl.lit(pl.Series(texts)))
    ).to_series()
    family = np.concatenate([np.arange(n_original), sources])
    order = rng.permutation(n)
    return pl.DataFrame({"id": np.arange(n), "text": texts.gather(order), "family": family[order]})


@pytest.mark.slow
def test_200k_texts_planted_near_duplicates_recovered():
    # Speed is measured by `loop bench datasets` (dedup on 1M rows against a bare read), not here.
    corpus = _synthetic_corpus(200_000, seed=2024)
    clusters = near_duplicate_clusters(corpus, "id", "text", DEFAULT)
    joined = corpus.with_columns(clusters.get_column("cluster_id"))
    families = joined.group_by("family").agg(pl.len().alias("rows"), pl.col("cluster_id").n_unique().alias("clusters"))
    planted = families.filter(pl.col("rows") == 2)
    assert planted.height == 20_000
    recall = (planted.get_column("clusters") == 1).mean()
    assert recall >= 0.95
    # False merges: rows of different families in one cluster, over all unrelated pairs.
    per_cluster = joined.group_by("cluster_id", "family").agg(pl.len().alias("rows"))
    sizes = per_cluster.group_by("cluster_id").agg(pl.col("rows").sum().alias("total"), pl.len().alias("families"))
    merged_pairs = sizes.filter(pl.col("families") > 1).select(
        (pl.col("total") * (pl.col("total") - 1) // 2).sum()
    ).item() or 0
    unrelated_pairs = 180_000 * 179_999 // 2
    assert merged_pairs / unrelated_pairs < 1e-7
    assert sizes.filter(pl.col("families") > 1).height <= 5

    kept, stats = deduplicate(corpus.with_columns(pl.col("id").cast(pl.Float64).alias("score")), "id", "text", "score", DEFAULT)
    assert stats["input"] == 200_000
    assert stats["kept"] == kept.height == joined.get_column("cluster_id").n_unique()
    assert stats["exact_duplicates_removed"] + stats["near_duplicates_removed"] + stats["kept"] == 200_000
    assert stats["exact_duplicates_removed"] >= 3_900  # the 2% restyled copies (plus chance repeats)
    assert kept.get_column("id").is_sorted()  # input order

    holdout = corpus.slice(180_000)
    leaked = overlapping_ids(corpus.slice(0, 180_000), holdout, "id", "text", DEFAULT)
    leaked_families = corpus.join(leaked, on="id").get_column("family")
    assert leaked_families.is_in(holdout.get_column("family").implode()).all()
    expected = corpus.slice(0, 180_000).filter(pl.col("family").is_in(holdout.get_column("family").implode()))
    assert leaked.height >= 0.95 * expected.height
