"""The operator's report reads without the code: losses explained, curves on labelled log axes, one
letterbox colour, names shortened in the middle, and no local directory in its header."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageDraw

from stylebatch.cli.main import main
from stylebatch.report.build import write_report
from stylebatch.report.cells import PLOT, curve_data
from stylebatch.report.pages import relative_to_job
from stylebatch.report.sheet import LETTERBOX, _fit_text, label_font
from tests.jobkit import make_image, write_manifest


def test_curve_has_log_axes_with_labels() -> None:
    rows = [{"evaluations": n, "content": 100 / 10 ** (n / 10), "style": 5.0, "total": 6.0} for n in (10, 20, 30, 40)]
    curve = curve_data(rows)
    labels = [label for _, label in curve["ticks"]]
    assert labels == ["0.01", "0.1", "1", "10"]  # every power of ten the losses span (0.01 to 10)
    ys = [y for y, _ in curve["ticks"]]
    steps = {round(a - b, 1) for a, b in zip(ys, ys[1:])}
    assert len(steps) == 1  # equal steps per decade: a log axis
    content = [tuple(map(float, p.split(","))) for p in curve["lines"][0][1].split()]
    assert content[1][1] == dict((label, y) for y, label in curve["ticks"])["1"]  # content 1 at evaluation 20
    assert content[0][0] == PLOT[0] and content[-1][0] == PLOT[2]
    assert curve["x_labels"] == ("10", "40 evaluations")


def test_paths_relative_to_the_job() -> None:
    out = Path("/data/jobs/portraits")
    assert relative_to_job("/data/weights/vgg19.pth", out) == "../../weights/vgg19.pth"
    assert relative_to_job("/srv/models/weights/vgg19.pth", out) == "vgg19.pth"  # far away: its name
    assert relative_to_job("manifests/m.yaml", out, "/data/jobs") == "../manifests/m.yaml"
    assert relative_to_job("imagenet", out) == "imagenet"


def test_names_are_shortened_in_the_middle() -> None:
    draw = ImageDraw.Draw(Image.new("RGB", (4, 4)))
    font = label_font(11)
    name = "clock_gray__woman_with_a_hat_by_matisse"
    shown = _fit_text(draw, name, 120, font)
    assert "…" in shown and shown.startswith("clock") and shown.endswith("matisse")
    assert draw.textlength(shown, font=font) <= 120


def test_report_header_explains_and_shows_no_local_path(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "wide.png", 1, (48, 24))
    make_image(tmp_path / "img" / "paint.png", 2)
    pair = {"content": "img/wide.png", "style": "img/paint.png"}
    data = {"output_dir": "out", "defaults": {"size": 32, "steps": 20, "log_every": 5, "scales": None}, "pairs": [pair]}
    manifest = write_manifest(tmp_path / "job.yaml", data)
    assert main(["run", str(manifest), "--weights", "random", "--set", "report_every=0"]) == 0
    result = write_report(tmp_path / "out")
    html = result.html.read_text(encoding="utf-8")
    assert str(tmp_path) not in html  # the manifest (and any weights file) relative to the job
    assert "manifest ../job.yaml" in html
    assert "lr empty" not in html and "lr 0.1 (adam&#39;s default)" in html
    assert "lower means closer" in html
    svg = re.search(r'<svg class="curve".*?</svg>', html, re.S).group(0)
    assert "20 evaluations" in svg and re.search(r"<text[^>]*>(0\.1|1|10|100|1e-?\d+)</text>", svg)
    # the sheet letterboxes the wide result as it does the inputs: light grey, never black
    geo = result.geometry
    with Image.open(result.sheets[0]) as sheet:
        t, cap = geo.cell, geo.caption
        pixel = sheet.convert("RGB").getpixel((t + t // 2, t + cap + 3))  # above the wide result
    assert all(abs(a - b) <= 8 for a, b in zip(pixel, LETTERBOX)), pixel
