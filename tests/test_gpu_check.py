"""scripts/gpu_check.sh --dry-run: the GPU check's every section runs on CPU at tiny sizes, so the
command a GPU machine is given works there without editing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "evaluation vs bare VGG",
    "pairs/hour by batch size",
    "peak memory vs estimate",
    "fp32 vs bf16",
    "bundled example",
)


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_section(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = (tmp_path / "gpu_check.txt").read_text()
    assert "(dry run)" in report.splitlines()[0]
    assert "section failed" not in report, report
    parts = re.split(r"^## ", report, flags=re.M)[1:]
    assert [p.splitlines()[0] for p in parts] == list(SECTIONS)
    body = {p.splitlines()[0]: p for p in parts}
    rows = lambda name: [l for l in body[name].splitlines() if re.match(r"\| \d", l)]  # noqa: E731, E741
    assert len(rows("evaluation vs bare VGG")) == 2  # both sizes
    batches = [r.split("|")[2].strip() for r in rows("pairs/hour by batch size")]
    assert batches == ["1", "2", "auto"] * 2
    assert all(float(r.split("|")[5]) > 0 for r in rows("pairs/hour by batch size"))  # pairs/hour
    assert len(rows("peak memory vs estimate")) >= 6
    precision = rows("fp32 vs bf16")
    assert [r.split("|")[2].strip() for r in precision] == ["32", "bf16"] * 2
    bf16 = [r for r in precision if "bf16" in r][0].split("|")
    assert float(bf16[4].split()[0]) >= 0 and float(bf16[7]) > 0  # pixel difference, score ratio
    example = rows("bundled example")
    assert example and example[0].split("|")[2].strip() == "3"  # the example's 3 pairs done
    assert re.search(r"^total \d+ s$", report, flags=re.M)
