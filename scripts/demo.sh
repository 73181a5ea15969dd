#!/usr/bin/env bash
# Set up .venv if missing, install stylebatch, and run the bundled example manifest:
# 3 small public-domain pairs with the `fast` preset (about a minute on a laptop CPU once the
# VGG19 weights are there). Outputs go to runs/example/ (runs/example-random/ when it falls back to
# random weights, below); it ends by printing the commands that show them.
#
# The default network is torchvision's ImageNet VGG19 (548 MB, downloaded once into torch's
# cache). If it cannot be downloaded (no internet), stylebatch says where to put the file; this
# demo then runs again with `--weights random` so you can see the pipeline work end to end
# (untrained weights: the pictures will not look like paintings). The failed attempt writes nothing:
# `run` obtains the weights before it creates the output directory. Extra arguments are passed on,
# e.g. `bash scripts/demo.sh --weights path/to/vgg19.pth`.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv"
    "$PYTHON" -m venv .venv || exit 1
fi
.venv/bin/python -m pip install -q "torch>=2.4" "torchvision>=0.19" 2>&1 | grep -v "is ignored"
.venv/bin/python -m pip install -q -e . 2>&1 | grep -v "is ignored"
log=$(mktemp)
out=runs/example
.venv/bin/stylebatch run manifests/example.yaml "$@" 2> >(tee "$log" >&2)
code=$?
if [ "$code" -eq 2 ] && grep -q "cannot obtain the ImageNet VGG19 weights" "$log"; then
    echo
    echo "demo: the ImageNet VGG19 weights are not available here (see the line above for where to put them)."
    echo "demo: running the same manifest with --weights random instead, to show the pipeline working."
    out=runs/example-random
    .venv/bin/stylebatch run manifests/example.yaml --weights random --out "$out" "$@"
    code=$?
fi
rm -f "$log"
if [ "$code" -ne 2 ]; then
    echo
    echo "demo: the outputs are in $out/. Next (or \`source .venv/bin/activate\` once, then plain \`stylebatch\`):"
    echo "  .venv/bin/stylebatch status $out     # every pair's state"
    echo "  .venv/bin/stylebatch report $out     # the results as a grid: $out/.stylebatch/report/report.html"
    echo "  .venv/bin/stylebatch validate manifests/example.yaml   # the plan and time estimate of a manifest"
fi
exit $code
