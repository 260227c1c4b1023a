"""``loop serve`` as a process: it answers the ``openai`` client, stops cleanly on Ctrl-C (SIGINT)
with every trace flushed, and ends with its JSON summary; a bad config exits 2 naming the field."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from loop_pipeline.bench.stand_in import create_replay_app, serve_in_thread
from loop_pipeline_tests.helpers import REPO_CONFIGS
from loop_pipeline_tests.router.router_support import read_records

LOOP = [sys.executable, "-m", "loop_pipeline.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOP_")}
    return {**env, "LOOP_HOME": str(tmp_path / "home"), "LOOP_CONFIG_DIR": str(REPO_CONFIGS), **extra}


def test_loop_serve_answers_then_stops_on_sigint_with_every_trace_flushed(tmp_path):
    port = _free_port()
    with serve_in_thread(create_replay_app(default_output="served by the frontier")) as frontier:
        env = _env(
            tmp_path, LOOP_ROUTER_LOAD_CHAMPION="false", LOOP_ROUTER_FRONTIER_BASE_URL=frontier.base_url,
            LOOP_ROUTER_FRONTIER_MODEL="gpt-4o-mini",
        )
        process = subprocess.Popen([*LOOP, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no start"
                time.sleep(0.1)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], metadata={"task_type": "intent"})
            assert reply.choices[0].message.content == "served by the frontier"
        finally:
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["traces_written"] == 1 and summary["port"] == port
    assert "AUTH IS OFF" in stderr
    (trace,) = read_records(tmp_path / "home" / "landing")
    assert trace["output"] == "served by the frontier" and trace["task_type"] == "intent"


def test_loop_serve_refuses_a_bad_config_naming_the_field(tmp_path):
    bad = tmp_path / "router.yaml"
    bad.write_text((REPO_CONFIGS / "router.yaml").read_text().replace("shadow_rate: 0.0", "shadow_rate: 3"), encoding="utf-8")
    done = subprocess.run([*LOOP, "serve", "--config", str(bad)], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{bad}: shadow_rate: Input should be less than or equal to 1" in done.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_loop_serve_help_lists_its_options(flag):
    done = subprocess.run([*LOOP, "serve", flag], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--config" in done.stdout and "--port" in done.stdout
