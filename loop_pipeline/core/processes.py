"""Whether a process of this host still runs: what tells a dead writer's leftovers (temporaries,
spill folders, trace segments, Dagster runs) from a live one's."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
