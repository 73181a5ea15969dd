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
    sys.path.insert(0, str(REPO / "scripts"))
    from gpu_check import SECTIONS

    assert [p.splitlines()[0] for p in parts] == list(SECTIONS)
    body = {p.splitlines()[0]: p for p in parts}
    rows = lambda name: [l for l in body[name].splitlines() if re.match(r"\| \d", l)]  # noqa: E731, E741
    bare = rows("evaluation vs bare VGG")
    assert len(bare) == 2 and all(len(r.split("|")) == 14 for r in bare)  # both sizes, three variants
    batches = [r.split("|")[2].strip() for r in rows("pairs/hour by batch size")]
    assert batches == ["1", "2", "auto"] * 2
    assert all(float(r.split("|")[5]) > 0 for r in rows("pairs/hour by batch size"))  # pairs/hour
    assert len(rows("peak memory vs estimate")) >= 6
    precision = rows("fp32 vs bf16")
    assert [r.split("|")[2].strip() for r in precision] == ["32", "bf16", "bf16 vs fp32"] * 2
    head = next(line for line in body["fp32 vs bf16"].splitlines() if line.startswith("| size"))
    assert {"chroma", "colour", "tex_probe", "structure"} <= {c.strip() for c in head.split("|")}
    bf16 = [r for r in precision if "| bf16 |" in r][0].split("|")
    assert float(bf16[4].split()[0]) >= 0  # the pixel difference
    structure = head.split("|").index(" structure ")
    assert -1 <= float(bf16[structure]) <= 1  # a correlation, measured on the bf16 picture
    change = [r for r in precision if "bf16 vs fp32" in r][0].split("|")
    assert change[structure].strip().endswith("%")
    example = rows("bundled example")
    assert example and example[0].split("|")[2].strip() == "3"  # the example's 3 pairs done
    assert re.search(r"^total \d+ s$", report, flags=re.M)
