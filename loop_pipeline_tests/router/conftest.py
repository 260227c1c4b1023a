"""Router tests: no router setting or backend key from the developer's shell leaks into a test."""

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_router_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("LOOP_ROUTER_") or n == "LOOP_FRONTIER_API_KEY"]:
        monkeypatch.delenv(name)
