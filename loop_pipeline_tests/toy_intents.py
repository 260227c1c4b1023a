"""A toy 3-intent task a tiny model learns in a few hundred steps, and configs sized for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

from loop_pipeline.settings import REPO_ROOT

KEYWORDS = {"billing": ["invoice", "refund", "charge"], "travel": ["flight", "hotel", "luggage"], "tech": ["login", "crash", "password"]}
FILLER = [f"w{i}" for i in range(30)]


def toy_rows(seed: int, n: int) -> list[dict[str, str]]:
    """``n`` labeled requests: two filler words and one keyword of the label, shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(rng.choice(list(KEYWORDS)))
        words = list(rng.choice(FILLER, size=2)) + [str(rng.choice(KEYWORDS[label]))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def toy_corpus() -> list[str]:
    """What the tiny model's tokenizer is trained on: the toy vocabulary and the chat roles."""
    return ([r["text"] for r in toy_rows(1, 300)] + list(KEYWORDS) + ["system user assistant"] + FILLER) * 2


def write_toy_configs(folder: Path) -> Path:
    """The project's configs with a holdout large enough to certify a threshold on toy traffic."""
    shutil.copytree(REPO_ROOT / "configs", folder)
    for name, changes in {
        "datasets": {"holdout_fraction": 0.4, "min_rows_per_task": 20},
        "evaluation": {"batch_size": 16, "max_new_tokens": 8, "min_coverage": 0.5},  # the tiny tokenizer spells travel/billing in 6 tokens
    }.items():
        raw = yaml.safe_load((folder / f"{name}.yaml").read_text())
        raw.update(changes)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return folder
