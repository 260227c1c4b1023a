"""Throughput as a user pays for it, with a real (tiny) model: the holdout answered in arrival order
in the router's micro-batches, the first requests also timed one at a time, model load reported
apart, the price of the device it ran on, and both costs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from loop_pipeline.core.evaluation import Candidate, EvalConfig, evaluate_candidate
from loop_pipeline.core.models import device_kind, generate_as_served, generate_with_confidence, load_for_inference
from loop_pipeline.core.tasks import TasksConfig, TaskSpec
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline_tests.tiny_models import build_tiny_model
from loop_pipeline_tests.toy_intents import toy_corpus, toy_rows

torch.set_num_threads(1)
TASKS = TasksConfig(tasks={"classification": TaskSpec(name="classification", kind="classification")})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("throughput") / "tiny", toy_corpus(), vocab_size=300)


def _prompts(n: int) -> list[list[dict[str, str]]]:
    # Lengths vary: a length-sorted batching would reorder these.
    return [[{"role": "user", "content": " ".join([r["text"]] * (1 + i % 4))}] for i, r in enumerate(toy_rows(5, n))]


def test_answers_as_served_keep_arrival_order_and_match_one_at_a_time(tiny):
    model, tokenizer = load_for_inference(str(tiny), dtype="float32")
    prompts = _prompts(21)
    served = generate_as_served(model, tokenizer, prompts, batch_size=8, max_new_tokens=4, one_at_a_time_n=5)
    assert (len(served.texts), served.batch_size, served.one_at_a_time_n) == (21, 8, 5)
    assert served.batched_requests_per_s > 0 and served.one_at_a_time_requests_per_s > 0
    # Each answer is the one its own prompt gets alone: arrival order kept, padding changes nothing.
    for i in (0, 7, 13, 20):
        alone = generate_with_confidence(model, tokenizer, [prompts[i]], batch_size=1, max_new_tokens=4)
        assert served.texts[i] == alone.texts[0]
        assert served.confidence[i] == pytest.approx(alone.confidence[0], rel=1e-4, abs=1e-7)
    fewer = generate_as_served(model, tokenizer, prompts[:3], batch_size=8, max_new_tokens=4, one_at_a_time_n=64)
    assert fewer.one_at_a_time_n == 3  # never more than the holdout
    assert device_kind(model) == "cpu"


def _holdout(n: int) -> pl.DataFrame:
    rows = toy_rows(11, n)
    rng = np.random.default_rng(3)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    return pl.DataFrame(
        {
            "trace_id": [f"t{i:04d}" for i in range(n)],
            "task_type": ["classification"] * n,
            "prompt": [[{"role": "user", "content": r["text"]}] for r in rows],
            "reference": [r["label"] for r in rows],
            "reference_source": ["frontier_unverified"] * n,
            "frontier_output": [r["label"] for r in rows],
            "sim_gold": [r["label"] for r in rows],
            # Stored by trace id; arrived in another order.
            "timestamp": [start + dt.timedelta(seconds=int(s)) for s in rng.permutation(n)],
        },
        schema_overrides={"prompt": MESSAGES_DTYPE},
    )


def test_evaluation_measures_as_served_and_prices_the_device_it_ran_on(tiny):
    holdout = _holdout(80)
    config = EvalConfig(batch_size=16, max_new_tokens=4, dtype="float32", local_price_per_hour={"cpu": 0.36, "nvidia-h100": 4.0})
    evaluation = evaluate_candidate(Candidate(model_path=str(tiny)), holdout, TASKS, config, 0.01, "ds-x")
    report = evaluation.report
    t = report.throughput
    assert (t.device_kind, t.batch_size, t.one_at_a_time_n) == ("cpu", 16, 64)  # a sample of 64 on a CPU
    assert t.load_seconds > 0 and t.batched_requests_per_s > 0 and t.one_at_a_time_requests_per_s > 0
    assert report.cost.local_price_per_hour == 0.36 and report.cost_one_at_a_time.local_price_per_hour == 0.36
    assert (report.cost.local_requests_per_s, report.cost.throughput_source) == (t.batched_requests_per_s, "measured_batched")
    assert report.cost_one_at_a_time.local_requests_per_s == t.one_at_a_time_requests_per_s
    assert report.requests_per_s == t.batched_requests_per_s and report.certified_against == "reference"
    # Answered in arrival order (by timestamp), not as stored nor by length.
    arrived = holdout.sort("timestamp").get_column("trace_id").to_list()
    assert evaluation.per_example.get_column("trace_id").to_list() == arrived

    fixed = evaluate_candidate(Candidate(model_path=str(tiny)), holdout, TASKS, config.model_copy(update={"local_requests_per_s": 3.0}), 0.01, "ds-x")
    assert fixed.report.cost.local_requests_per_s == fixed.report.cost_one_at_a_time.local_requests_per_s == 3.0
    assert fixed.report.cost.throughput_source == "configured"
    assert fixed.report.throughput.batched_requests_per_s > 0  # still measured and reported


def test_a_device_with_no_price_stops_the_evaluation(tiny):
    config = EvalConfig(max_new_tokens=4, dtype="float32", local_price_per_hour={"nvidia-h100": 4.0})
    with pytest.raises(ValueError, match=r"local_price_per_hour has no price for device 'cpu' \(known: nvidia-h100\); add one"):
        evaluate_candidate(Candidate(model_path=str(tiny)), _holdout(10), TASKS, config, 0.01, "ds-x")
