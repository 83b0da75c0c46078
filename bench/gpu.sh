#!/usr/bin/env bash
# The full-size benchmarks on a CUDA GPU, bf16 autocast: one training step (bench/train_full.py, ours against the
# release's way) and one forward (bench/model_forward.py), each printing its JSON line with samples/s and
# torch.cuda.max_memory_allocated per way. About 3-5 minutes on one recent GPU; each run is capped at 240 s.
#     bash bench/gpu.sh [--frames 64]        # extra flags go to both benches
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "bench/gpu.sh: no CUDA device here (torch.cuda.is_available() is False); nothing was run" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
echo "== bench/train_full.py --device cuda --amp" >&2
# --check-frames 0: the float64 exactness check runs on the CPU whatever --device says; the CPU run covers it
timeout 240 "$PY" bench/train_full.py --device cuda --amp --warmup 1 --threads 8 --check-frames 0 "$@" | tail -1
echo "== bench/model_forward.py --device cuda --amp" >&2
timeout 240 "$PY" bench/model_forward.py --device cuda --amp --threads 8 "$@" | tail -1
