"""Small helpers shared by the test modules."""

import json
from typing import Any


def last_json_line(stdout: str) -> dict[str, Any]:
    """The machine-readable summary every `loop` command prints last."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])
