"""``configs/dedup.yaml``: shingles, MinHash / LSH sizes, the Jaccard threshold, giant buckets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictFloat, StrictInt, model_validator

from loop_pipeline.config import ConfigModel


class DedupConfig(ConfigModel):
    """Settings of near-duplicate detection; documented in ``configs/dedup.yaml`` (whose values
    equal these defaults)."""

    FILE = "dedup"

    shingle: Literal["word", "char"] = "word"
    shingle_size: StrictInt = Field(default=3, ge=1)  # word 3-grams (char: e.g. 5-grams)
    num_perm: StrictInt = Field(default=64, ge=1)  # MinHash permutations
    bands: StrictInt = Field(default=16, ge=1)  # LSH bands; rows per band = num_perm // bands
    # One word changed in the middle of a 20-word text leaves a word-3-gram Jaccard of 15/21 = 0.71,
    # so the threshold sits below that (with 64 permutations the estimate's spread is about 0.06).
    jaccard_threshold: StrictFloat = Field(default=0.6, gt=0.0, le=1.0)
    seed: StrictInt = Field(default=0, ge=0, lt=2**63)  # seeds numpy's generator and polars' hash
    max_bucket_size: StrictInt = Field(default=64, ge=2)  # LSH buckets up to this size are compared all-pairs ...
    giant_bucket_window: StrictInt = Field(default=8, ge=1)  # ... larger ones: each text with the next this-many texts

    @model_validator(mode="after")
    def _bands_divide_permutations(self) -> "DedupConfig":
        if self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm}) evenly")
        return self

    @property
    def rows_per_band(self) -> int:
        return self.num_perm // self.bands
