#!/usr/bin/env bash
# The package as users get it from `pip install .` (not -e): build the wheel, install it into a fresh
# venv, and from outside the checkout run `validate` with every bundled preset and a tiny `run` of
# the bundled example. Catches what an editable install hides: files outside the package (presets,
# templates) that a checkout finds and a wheel does not carry.
#
# The fresh venv borrows torch and the other dependencies from .venv (a .pth line: its site-packages
# on sys.path, its own .pth files, the editable install's finder among them, not run), so the check
# takes seconds rather than a second torch install. Needs .venv (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . 2>&1 | grep -v "is ignored" || true
wheel=$(ls "$work"/dist/stylebatch-*.whl)
python_bin=$(readlink -f .venv/bin/python)
"$python_bin" -m venv "$work/venv"
deps=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
fresh=$("$work/venv/bin/python" -c "import site; print(site.getsitepackages()[0])")
echo "$deps" > "$fresh/_stylebatch_check_deps.pth"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel" 2>&1 | grep -v "is ignored" || true

cd "$work"  # outside the checkout: nothing of it on sys.path
sb="$work/venv/bin/stylebatch"
where=$("$work/venv/bin/python" -c "import stylebatch; print(stylebatch.__file__)")
case "$where" in
    "$fresh"/*) echo "wheel: stylebatch imported from $where" ;;
    *) echo "wheel: stylebatch imported from $where, not from the fresh venv"; exit 1 ;;
esac
export OMP_NUM_THREADS=1 XDG_CACHE_HOME="$work/cache"
# `validate --config P` for every bundled preset through the CLI's main(), in one process of the fresh
# venv: a process per preset paid torch's import each time (~5 s apiece); the console script itself
# is run below (run, report).
"$work/venv/bin/python" - "$repo/manifests/example.yaml" "$work/validate.log" <<'PY' || exit 1
import contextlib
import sys

from stylebatch.cli.main import main
from stylebatch.job.config import preset_names

manifest, log = sys.argv[1], sys.argv[2]
presets = preset_names()
if not presets:
    sys.exit("wheel: no bundled presets found")
for preset in presets:
    with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        code = main(["validate", manifest, "--config", preset, "--weights", "random"])
    if code != 0:
        print(open(log).read())
        sys.exit(f"wheel: validate --config {preset} failed")
    print(f"wheel: validate --config {preset}: ok")
PY
"$sb" run "$repo/manifests/example.yaml" --weights random --out "$work/out" \
    --set size=48 --set steps=4 --set scales=null --set report_every=0 >"$work/run.log" 2>&1 \
    || { cat "$work/run.log"; echo "wheel: the example run failed"; exit 1; }
n=$(ls "$work"/out/*.png | wc -l)
[ "$n" -eq 3 ] || { cat "$work/run.log"; echo "wheel: expected 3 outputs, found $n"; exit 1; }
"$sb" report "$work/out" >/dev/null
[ -s "$work/out/.stylebatch/report/report.html" ] || { echo "wheel: report wrote no report.html"; exit 1; }
echo "wheel: run of the example (3 pairs), report: ok"
