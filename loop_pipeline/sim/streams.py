"""Independent random streams from one seed: each behaviour draws from its own, so turning one rate
off (or up) leaves every other behaviour's draws where they were.

Streams are children of ``SeedSequence(seed)`` in the fixed order of ``STREAM_NAMES``; a new
behaviour appends its stream at the end, which leaves the earlier streams, and so the traffic they
decide, unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAM_NAMES", "Streams", "seed_sequence"]

STREAM_NAMES = (
    # The first simulator's streams, in their original order.
    "users", "traffic", "ids", "frontier", "reactions", "review",
    # Production's mess, one stream per behaviour.
    "reviewer_errors", "false_thumbs_down", "false_flags", "edits", "hardness", "consistency",
    "held_out_labels", "repeats", "paraphrases", "drift", "turns",
)


def seed_sequence(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of stream ``name``; its own children key per-item draws (one per example)."""
    index = STREAM_NAMES.index(name)
    return np.random.SeedSequence(seed, spawn_key=(index,))


class Streams:
    """One generator per name of ``STREAM_NAMES``, as attributes (``streams.frontier``, ...)."""

    users: np.random.Generator
    traffic: np.random.Generator
    ids: np.random.Generator
    frontier: np.random.Generator
    reactions: np.random.Generator
    review: np.random.Generator
    reviewer_errors: np.random.Generator
    false_thumbs_down: np.random.Generator
    false_flags: np.random.Generator
    edits: np.random.Generator
    hardness: np.random.Generator
    consistency: np.random.Generator
    held_out_labels: np.random.Generator
    repeats: np.random.Generator
    paraphrases: np.random.Generator
    drift: np.random.Generator
    turns: np.random.Generator

    def __init__(self, seed: int):
        # spawn(n)'s i-th child is SeedSequence(seed, spawn_key=(i,)): the same as seed_sequence().
        for name, child in zip(STREAM_NAMES, np.random.SeedSequence(seed).spawn(len(STREAM_NAMES))):
            setattr(self, name, np.random.default_rng(child))
