#!/usr/bin/env bash
# The GPU check of the training issue, for a lent H100 / H200 (the device tool), in two calls:
#
#   here, once:  bash scripts/gpu_check.sh prepare     # wheels + the GGUF in two halves under .gpu/
#   call 1:      carry [".gpu/a"]  command: bash scripts/gpu_check.sh stash
#   call 2:      carry [".gpu/b"]  command: bash scripts/gpu_check.sh run     (within 30 s of call 1)
#
# `run` trains SmolLM2-135M-Instruct with LoRA (bf16) on the full CLINC150 train split and its
# out-of-scope examples (oos_train) for one epoch, selects the confidence threshold on the val
# split (val + oos_val, never the test data) and reports coverage, accuracy and out-of-scope
# escalation on test + oos_test, and throughput as served; $OUT/gpu_check.json holds them with
# tokens/s, step time and peak GPU memory. The image has torch, transformers, peft, pyarrow; trl,
# datasets, dill, multiprocess, gguf and pydantic (the typed train config) travel as wheels
# (without scipy the script computes the exact binomial tail itself). On CPU: `bash scripts/gpu_check.sh smoke`.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu
STASH="$HOME/.loop-gpu-stash"   # survives between calls while the machine stays warm
SITE="$HOME/.loop-gpu-site"

case "${1:-}" in
  prepare)
    grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
    rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR/a" "$GPU_DIR/b/whl"
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$GPU_DIR/b/whl" \
      trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 \
      pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    gguf=$(.venv/bin/python -c "from loop_pipeline.core.models import packaged_gguf_path as p; print(p('smollm2-135m-instruct'))")
    split -b 50M "$gguf" "$GPU_DIR/part-"
    mv "$GPU_DIR/part-aa" "$GPU_DIR/a/" && mv "$GPU_DIR/part-ab" "$GPU_DIR/b/"
    du -sh "$GPU_DIR"/a "$GPU_DIR"/b
    ;;
  stash)
    mkdir -p "$STASH" && cp "$GPU_DIR/a/part-aa" "$STASH/"
    ;;
  run)
    cat "$STASH/part-aa" "$GPU_DIR/b/part-ab" > "$STASH/SmolLM2-135M-Instruct.Q4_1.gguf"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$GPU_DIR"/b/whl/*.whl
    export PYTHONPATH="$SITE" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv
    python3 scripts/gpu_check.py --gguf "$STASH/SmolLM2-135M-Instruct.Q4_1.gguf" --out "${OUT:-gpu_check_out}"
    ;;
  smoke)
    work=$(mktemp -d)
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python scripts/gpu_check.py --train-limit 64 --test-limit 32 \
      --batch-size 16 --eval-batch-size 32 --one-at-a-time 8 --work "$work" --out "$work/out"
    ;;
  *)
    echo "usage: $0 prepare | stash | run | smoke" >&2
    exit 2
    ;;
esac
