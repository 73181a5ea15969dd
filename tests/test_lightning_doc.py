"""docs/lightning.md: its example, StyleTransferModule in a user's own Trainer, runs as written (tiny
inputs, random weights) and lowers the loss it was built with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.jobkit import REPO, make_image


@pytest.mark.slow
def test_lightning_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    text = (REPO / "docs" / "lightning.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    content, style = make_image(tmp_path / "c.png", 1), make_image(tmp_path / "s.png", 2, (48, 48))
    small = code
    for name, value in (("CONTENT", f'"{content}"'), ("STYLE", f'"{style}"'), ("WEIGHTS", '"random"')):
        small, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", small, flags=re.M)
        assert n == 1, f"the example sets {name} on a line of its own"
    small, n = re.subn(r"^SIZE, STEPS = .*$", "SIZE, STEPS = 32, 100", small, flags=re.M)
    assert n == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(small, "docs/lightning.md", "exec"), namespace)  # the documented example itself
    module = namespace["module"]
    assert module.evaluations == 100 and (tmp_path / "chelsea_great_wave.png").is_file()
    printed = [line.split(" ", 1) for line in capsys.readouterr().out.splitlines() if re.match(r"^\d+ \{", line)]
    assert [int(n) for n, _ in printed] == [50, 100]
    import torch

    with torch.no_grad():  # the fit lowered the objective from where it started (the photo)
        before = float(module.losses(namespace["content"].to(module.device))["total"])
        after = float(module.losses(module.result())["total"])
    assert after < 0.8 * before
