#!/usr/bin/env bash
# The GPU checks in one go (about 9 minutes on one modern GPU): the bench (128..1024 px, floor,
# memory, checkpoint bytes, pairs/hour unbatched and batched, the ratio sweep and `modern` batched
# vs unbatched at 256 and 512 px), the GPU-only equivalence checks
# (bf16 vs fp32, batched vs unbatched), and the memory model on CUDA (predicted vs allocated peak at
# 512..4096 px, tiled too; the largest size that fits, run; the out-of-memory ladder's allocator check). Uses the machine's own Python and torch (no network, no
# install; run from the source tree). Writes the tables to ${OUT:-.}/gpu_check.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dest=${OUT:-.}/gpu_check.txt
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
    echo "# stylebatch GPU check $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
    timeout 300 "$PY" scripts/bench.py --evals 5 --e2e-pairs 16 --e2e-sizes 256 --layer-gain 256 8 --e2e-steps 50 --batch-sizes 1 8
    echo
    # One fit path: the paper's sweep and the coarse-to-fine preset, unbatched vs batched, on the GPU.
    timeout 240 "$PY" scripts/bench.py --sizes --e2e-sizes --jobs ratio_sweep modern --job-sizes 256 512 --job-steps 100
    echo
    timeout 180 "$PY" scripts/gpu_equivalence.py
    echo
    timeout 150 "$PY" scripts/memory_model.py --device cuda --sizes 512 1024 2048 4096
} 2>&1 | tee "$dest"
