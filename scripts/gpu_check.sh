#!/usr/bin/env bash
# The GPU questions in one command, within 8 minutes on one GPU (scripts/gpu_check.py): per size
# (256 and 512 px) the evaluation next to the bare VGG19 pass, pairs/hour at batch_size 1, 4, 8, 16
# and auto, peak memory against the estimate, fp32 against bf16 (speed, pixel difference and
# scripts/quality.py's measures), and the bundled example with --devices N for every N the machine has.
# Uses the machine's own Python and torch (no network, no install; run from the source tree).
# Writes the report to ${OUT:-.}/gpu_check.txt as it goes.
#
#   scripts/gpu_check.sh              # the check (about 5 minutes on one modern GPU)
#   scripts/gpu_check.sh --dry-run    # CPU, tiny sizes: every section in a minute (the test suite runs it)
#   scripts/gpu_check.sh --full       # then also the older, longer checks (bench tables, bf16 and batching
#                                     # equivalence, the memory model up to 4096 px): about 10 more minutes
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dest=${OUT:-.}/gpu_check.txt
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
full=0
args=()
for a in "$@"; do
    if [ "$a" = "--full" ]; then full=1; else args+=("$a"); fi
done
mkdir -p "$(dirname "$dest")"
timeout 470 "$PY" scripts/gpu_check.py --out "$dest" ${args[@]+"${args[@]}"}
code=$?
if [ "$code" = 124 ]; then echo "gpu_check.py stopped at its 470 s limit; the sections so far are in $dest"; fi
if [ "$full" = 1 ]; then
    {
        timeout 300 "$PY" scripts/bench.py --evals 5 --e2e-pairs 16 --e2e-sizes 256 --layer-gain 256 8 --e2e-steps 50 --batch-sizes 1 8
        timeout 240 "$PY" scripts/bench.py --sizes --e2e-sizes --jobs ratio_sweep modern --job-sizes 256 512 --job-steps 100
        timeout 180 "$PY" scripts/gpu_equivalence.py
        timeout 150 "$PY" scripts/memory_model.py --device cuda --sizes 512 1024 2048 4096
    } 2>&1 | tee -a "${dest%.txt}_full.txt"
fi
exit "$code"
