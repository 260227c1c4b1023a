"""The ``loop`` command.

Every command ends its output with one JSON line (the machine-readable summary), so scripts can
take ``tail -n 1``; progress goes to stderr. The stage commands (``materialize``, ``thresholds
sweep``, ``datasets build``, ``train``, ``eval``, ``promote``) materialize the Dagster assets on the
LOOP_HOME instance, so the CLI, the demo, the UI and the schedules run one graph and record the same
checks. Heavy libraries are imported inside commands: ``loop --help`` stays fast.
"""

from __future__ import annotations

import sys


import loop_pipeline  # noqa: F401  (sets the no-telemetry environment first)
from loop_pipeline.cli.common import app
from loop_pipeline.cli import bench, bench_router, config, data, models, report, serve  # noqa: F401,E402  (registers the commands)

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
