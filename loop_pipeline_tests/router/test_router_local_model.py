"""The in-process backend with real champions (tiny models trained, evaluated and registered by the
pipeline's own code in a real MLflow registry): the router's confidence equals the evaluation's on
the holdout, concurrent requests are micro-batched, over-long inputs are pre-routed, and a champion
swapped while 200 requests are in flight costs no request and mixes no versions."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
import torch

from loop_pipeline.bench.stand_in import create_replay_app, serve_in_thread
from loop_pipeline.core.evaluation import Candidate, evaluate_candidate
from loop_pipeline.core.models import generate_with_confidence, load_for_inference, prepare_prompt
from loop_pipeline.core.registry import promote
from loop_pipeline.core.serving_registry import resolve_champion, resolve_version
from loop_pipeline_tests.router.router_support import ingest_landing, router_settings, router_state, running_router, traces_by_id, wait_for_champion
from loop_pipeline_tests.router.trained_champions import TASK_TYPE, TASKS, build_workspace, eval_config, register

torch.set_num_threads(1)
FRONTIER_ANSWER = "frontier answer"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("router_local"))


@pytest.fixture
def frontier():
    with serve_in_thread(create_replay_app(default_output=FRONTIER_ANSWER)) as server:
        yield server


def _settings(tmp_path, frontier, workspace, name: str, **overrides):
    tracking = workspace["tracking"]
    return router_settings(
        tmp_path, frontier, load_champion=True, local_backend="in_process", model_name=name, device="cpu",
        tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root, local_timeout_s=60.0, **overrides,
    )


def _holdout_prompts(workspace) -> list[tuple[str, list[dict]]]:
    holdout = workspace["holdout"]
    return list(zip(holdout.get_column("trace_id").to_list(), holdout.get_column("prompt").to_list()))


async def _ask_all(url: str, conversations: list[list[dict]], task_type: str = TASK_TYPE) -> list:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

    async def one(messages):
        raw = await client.chat.completions.with_raw_response.create(model="loop", messages=messages, metadata={"task_type": task_type})
        return raw.parse(), raw.headers

    try:
        return await asyncio.gather(*[one(m) for m in conversations])
    finally:
        await client.close()


def test_router_confidence_equals_the_evaluations_on_holdout_prompts(workspace, tmp_path, frontier):
    name = "confidence"
    version = register(workspace["runs"][0], workspace["tracking"], name, threshold=0.5)
    resolved = resolve_champion(workspace["tracking"], name, cache_dir=tmp_path / "eval-cache")
    candidate = Candidate(model_path=str(resolved.model_dir), system_prompt=resolved.spec.system_prompt)
    evaluation = evaluate_candidate(candidate, workspace["holdout"], TASKS, eval_config(name), 0.01, "v-toy")
    expected = {row["trace_id"]: row for row in evaluation.per_example.iter_rows(named=True)}
    prompts = _holdout_prompts(workspace)
    assert len(prompts) == 9

    with running_router(_settings(tmp_path, frontier, workspace, name, batch_wait_ms=20)) as router:
        wait_for_champion(router, version)
        # Twice, concurrently: batches of other sizes and paddings than the evaluation's.
        answers = asyncio.run(_ask_all(router.url, [p for _, p in prompts] * 2))
    confidences = [float(headers["x-loop-confidence"]) for _, headers in answers]
    assert len({round(c, 6) for c in confidences}) > 1  # not a constant: the comparison means something
    traces = traces_by_id(tmp_path / "landing")
    for (trace_id, _), (reply, headers) in zip(prompts * 2, answers):
        want = expected[trace_id]
        assert float(headers["x-loop-confidence"]) == pytest.approx(want["confidence"], rel=1e-5, abs=1e-7)
        trace = traces[headers["x-loop-trace-id"]]
        local_answer = reply.choices[0].message.content if headers["x-loop-route"] == "local" else trace["metadata"]["local_output"]
        assert local_answer == want["answer"]
        served = want["confidence"] >= 0.5 and want["answer"] != "out_of_scope"
        assert headers["x-loop-route"] == ("local" if served else "frontier")
    assert ingest_landing(tmp_path / "landing").counts["trace"].quarantined == 0


def test_concurrent_requests_are_micro_batched_and_long_inputs_pre_routed(workspace, tmp_path, frontier):
    name = "batching"
    version = register(workspace["runs"][0], workspace["tracking"], name, threshold=0.0)
    conversations = [[{"role": "user", "content": f"help with {w} please"}] for w in ("refund", "hotel", "crash", "invoice")] * 6
    with running_router(_settings(tmp_path, frontier, workspace, name, batch_wait_ms=100, batch_max_size=8)) as router:
        wait_for_champion(router, version)
        backend = router_state(router).watcher.current.backend
        answers = asyncio.run(_ask_all(router.url, conversations))
        assert {h["x-loop-route"] for _, h in answers} == {"local"}
        assert 3 <= backend.batches < len(conversations)  # 24 requests, batches of up to 8
        long = [{"role": "user", "content": " ".join(["refund"] * 200)}]
        (reply, headers), = asyncio.run(_ask_all(router.url, [long]))
        assert (headers["x-loop-route"], headers["x-loop-reason"]) == ("frontier", "input_too_long")
        assert reply.choices[0].message.content == FRONTIER_ANSWER
        metrics = httpx.get(f"{router.url}/metrics").text
    assert f"loop_router_local_batch_size_count {float(backend.batches)}" in metrics
    assert f"loop_router_local_batch_size_sum {float(len(conversations))}" in metrics


def _answers_of(model_dir, conversations) -> list[str]:
    model, tokenizer = load_for_inference(str(model_dir), dtype="float32")
    prompts = [prepare_prompt(c, "drop") for c in conversations]
    return generate_with_confidence(model, tokenizer, prompts, batch_size=32, max_new_tokens=8).texts


def test_a_champion_swapped_while_200_requests_are_in_flight_fails_none_and_mixes_no_versions(workspace, tmp_path, frontier):
    name, tracking = "swapped", workspace["tracking"]
    first = register(workspace["runs"][0], tracking, name, threshold=0.0)
    second = register(workspace["runs"][1], tracking, name, threshold=0.0)
    promote(tracking.client(), name, first, "start the test on v1")  # v2 registered, v1 champion
    words = ("refund", "hotel", "crash", "invoice", "flight", "login", "charge", "trip", "error", "fee")
    conversations = [[{"role": "user", "content": f"{template} {w}"}] for w in words for template in ("my", "help with", "the")]
    expected = {v: _answers_of(resolve_version(tracking, name, v, tmp_path / "expected").model_dir, conversations) for v in (first, second)}
    assert expected[first] != expected[second]  # the two versions answer differently

    settings = _settings(tmp_path, frontier, workspace, name, batch_wait_ms=5, batch_max_size=8, poll_interval_s=3600)
    with running_router(settings) as router:
        wait_for_champion(router, first)
        old = router_state(router).watcher.current
        results = asyncio.run(_swap_during(router, tracking, name, second, conversations))
        assert old.retired and old.in_flight == 0
        time.sleep(0.2)
        assert old.backend._batcher.done()  # the retired model was closed after its last request
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [] and len(results) == 200
    seen = {}
    traces = traces_by_id(tmp_path / "landing")
    for index, (reply, headers) in results:
        version = headers["x-loop-champion-version"]
        seen[version] = seen.get(version, 0) + 1
        assert reply.choices[0].message.content == expected[version][index % len(conversations)]
        assert traces[headers["x-loop-trace-id"]]["model"] == f"{name}@v{version}" == reply.model
    assert set(seen) == {first, second}, seen
    assert len(traces) == 200


async def _swap_during(router, tracking, name, new_version, conversations):
    """200 requests; once 40 are answered the alias moves and the router reloads, while the rest
    keep coming (a request at a time per worker, 16 workers)."""
    client = openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=120)
    results: list = []
    swapped = asyncio.Event()
    counter = iter(range(200))

    async def worker():
        for index in counter:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="loop", messages=conversations[index % len(conversations)], metadata={"task_type": TASK_TYPE}
                )
                results.append((index, (raw.parse(), raw.headers)))
            except Exception as exc:  # counted as an error by the test
                results.append(exc)
            if len(results) == 40:
                swapped.set()
            if len(results) >= 100 and not swapped_done.is_set():
                await swapped_done.wait()  # the second half runs after the swap

    swapped_done = asyncio.Event()

    async def swap():
        await swapped.wait()
        await asyncio.to_thread(promote, tracking.client(), name, new_version, "swap under load")
        async with httpx.AsyncClient(timeout=120) as http:
            reload = await http.post(f"{router.url}/admin/reload")
        assert reload.status_code == 200, reload.text
        swapped_done.set()

    try:
        await asyncio.gather(swap(), *[worker() for _ in range(16)])
    finally:
        await client.close()
    return results
