#!/usr/bin/env bash
# Set up (or reuse) .venv, install stylebatch with its test extra, run the test suite.
# pip reads this machine's own configuration (e.g. /etc/xdg/pip constraints and local wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv"
    "$PYTHON" -m venv .venv
fi
# pip runs only when pyproject.toml (the dependencies) changed since the last install into this .venv
# for this checkout, or an import fails: on a rerun both installs found everything satisfied and
# still took ~15 s (resolving, rebuilding the editable wheel).
stamp=.venv/.stylebatch-installed
want="$(pwd) $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || [ ! -x .venv/bin/ruff ] \
    || ! .venv/bin/python -c "import stylebatch, torch, torchvision, lightning, pytest, xdist" 2>/dev/null; then
    rm -f "$stamp"
    # torch and torchvision first, as a matched pair: a lone torchvision upgrade would pull another torch.
    .venv/bin/python -m pip install -q "torch>=2.4" "torchvision>=0.19" 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored" || true
    echo "$want" > "$stamp"
fi
.venv/bin/python -c "import stylebatch, torch, torchvision, lightning; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__)"
# --durations (in pyproject's addopts) prints the slowest tests. Two pytest-xdist workers: every test
# runs single-threaded (tests/conftest.py), so two cores run two tests at once (whole suite 13:14 with
# two workers on the 2-core reference machine). STYLEBATCH_TEST_WORKERS=0 runs in-process.
# Lint and format first: a change that breaks either fails here, before the slower tests.
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . || { echo "ruff: fix the lines above (ruff check --fix; ruff format)"; exit 1; }
# The package as a wheel (pip install ., not -e) in a fresh venv, used from outside the checkout.
# STYLEBATCH_SKIP_WHEEL=1 skips it in a quick loop.
[ "${STYLEBATCH_SKIP_WHEEL:-0}" = 1 ] || bash scripts/check_wheel.sh
exec .venv/bin/python -m pytest -n "${STYLEBATCH_TEST_WORKERS:-2}" "$@"
