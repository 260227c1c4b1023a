"""Small helpers shared by the test modules."""

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def last_json_line(stdout: str) -> dict[str, Any]:
    """The machine-readable summary every `loop` command prints last."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


@lru_cache(maxsize=1)
def repo_prices():
    """The repository's configs/prices.yaml (the simulator estimates frontier costs from it)."""
    from loop_pipeline.core.costs import PriceTable

    return PriceTable.from_yaml(REPO_CONFIGS / "prices.yaml")


def simulate_landing(config, landing: str | os.PathLike[str], progress: Callable[[str], None] | None = None):
    """``loop_pipeline.sim.simulate`` with the repository's prices: simulated traffic in ``landing``."""
    from loop_pipeline.sim import simulate

    return simulate(config, landing, prices=repo_prices(), progress=progress)
