"""`stylebatch report`: a page whose every link resolves, that shows every pair (failed ones with
their error), a sweep's varied key as columns, and a contact sheet of the expected grid size."""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from stylebatch.cli import main
from stylebatch.report import (
    CAPTION,
    THUMB,
    Layout,
    PairView,
    Thumbs,
    build_layout,
    render_html,
    sheet_geometry,
)
from tests.jobkit import records, tiny_job

FAST = {"steps": 4, "checkpoint_every": 2, "log_every": 1, "optimizer": "adam", "lr": 0.05}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.ids: set[str] = set()
        self.imgs: list[dict[str, str]] = []
        self.text: list[str] = []
        self.headers: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append((tag, a[key]))
        if tag == "img":
            self.imgs.append(a)
        self._in_th = tag == "th"

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_th:
            self.headers.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _check_links(page: _Page, base: Path) -> int:
    checked = 0
    for tag, url in page.links:
        parts = urlparse(url)
        assert not parts.scheme and not parts.netloc, f"{tag} links outside: {url}"
        if url.startswith("#"):
            assert url[1:] in page.ids, f"anchor {url} has no target"
            continue
        target = (base / unquote(parts.path)).resolve()
        assert target.is_file(), f"{tag} {url} -> {target} does not exist"
        checked += 1
    return checked


def test_report_with_a_failed_and_an_invalid_pair(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pairs = [
        {"content": "images/a.png", "style": "images/s1.png"},
        {"content": "images/a.png", "style": "images/s2.png"},
        {"content": "images/b.png", "style": "images/s1.png"},  # fails while running: b.png broken
        {"content": "images/missing.png", "style": "images/s1.png"},  # invalid: skipped
    ]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults=FAST)
    from stylebatch import runner

    original = runner._run_batch

    def break_b_first(job, batch, *args, **kwargs):  # as test_manifest does: broken after validation
        if any(pair.name == "b__s1" for pair in batch):
            (tmp_path / "images" / "b.png").write_bytes(b"not an image any more")
        return original(job, batch, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_run_batch", break_b_first)
        assert main(["run", str(manifest), "--weights", "random", "--skip-invalid"]) == 1
    error = records(tmp_path / "out")["b__s1"]["error"]
    assert "b.png" in error

    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    report_dir = out / ".stylebatch" / "report"
    page = _parse(report_dir / "report.html")
    assert _check_links(page, report_dir) >= 4 + 2 + 2  # thumbnails and full images
    text = " ".join(page.text)
    for name in ("a__s1", "a__s2", "b__s1", "missing__s1"):
        assert name in text
    assert error in text
    assert "missing.png: file not found" in text
    assert page.imgs and all(img.get("loading") == "lazy" for img in page.imgs)
    full = {unquote(url) for tag, url in page.links if tag == "a" and not url.startswith("#")}
    assert "../../a__s1.png" in full and "../../a__s2.png" in full
    assert text.count("<svg") == 0 and (report_dir / "report.html").read_text().count("<svg") == 2  # curves

    # Grouped by style: s1 holds a, b, missing; s2 holds a. One result column (nothing varied).
    with Image.open(report_dir / "contact_sheet.png") as sheet:
        sheet.load()
        info = json.loads(sheet.text["stylebatch-sheet"])
        assert sheet.size == (3 * THUMB, CAPTION + 4 * (THUMB + CAPTION)) == (480, 720)
        assert (info["rows"], info["cells_per_row"], info["blocks"], info["cell"]) == (4, 3, 1, THUMB)
        rgb = sheet.convert("RGB")
        # The first row's result cell (a__s1, a done pair) holds a picture, not the empty background.
        cell = rgb.crop((2 * THUMB, CAPTION, 3 * THUMB, CAPTION + THUMB))
        assert len(set(cell.getdata())) > 50

    # A report is rebuilt in place; unused thumbnails go.
    stale = report_dir / "thumbs" / "stale.jpg"
    stale.write_bytes(b"x")
    assert main(["report", str(out), "--group-by", "content"]) == 0
    assert not stale.exists()
    assert main(["report", str(tmp_path)]) == 2  # not a job directory


def test_report_of_a_sweep_puts_the_varied_key_in_columns(tmp_path: Path) -> None:
    manifest = tiny_job(tmp_path, pairs=[], defaults=FAST,
                        grid={"content": ["images/a.png"], "style": ["images/s1.png"], "style_weight": [10, 1000]})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    out = tmp_path / "out"
    assert main(["report", str(out)]) == 0
    report_dir = out / ".stylebatch" / "report"
    page = _parse(report_dir / "report.html")
    _check_links(page, report_dir)
    assert page.headers == ["content", "style", "style_weight = 10", "style_weight = 1000"]
    with Image.open(report_dir / "contact_sheet.png") as sheet:
        assert sheet.size == (4 * THUMB, CAPTION + THUMB + CAPTION)  # one row: content, style, two results


def test_sheet_geometry_stays_bounded() -> None:
    for rows, cols in ((1, 1), (4, 1), (12, 4), (1000, 1), (250, 4), (5000, 2)):
        geo = sheet_geometry(rows, cols)
        assert geo.width <= 4096 and geo.height <= 4096, (rows, cols, geo)
        assert geo.blocks * geo.block_rows >= rows
    assert sheet_geometry(4, 1).cell == THUMB
    assert sheet_geometry(1000, 1).cell >= 64  # still a caption, 1000 pairs on one sheet


def test_page_for_a_thousand_pairs_is_light(tmp_path: Path) -> None:
    views = []
    for i in range(1000):
        cfg = {"size": 512, "steps": 500, "optimizer": "lbfgs", "content_weight": 1.0, "style_weight": 1000.0}
        curve = [{"evaluations": n, "content": 1.0 / n, "style": 10.0 / n, "total": 11.0 / n}
                 for n in range(10, 501, 10)]
        views.append(PairView(f"c{i // 30}__s{i % 30}", f"pairs[{i}]", tmp_path / f"c{i // 30}.jpg",
                              tmp_path / f"s{i % 30}.jpg", cfg, "done", None,
                              {"losses": curve[-1], "steps_done": 500, "steps": 500, "seconds": 12.5}, None, curve))
    start = time.perf_counter()
    layout: Layout = build_layout(views)
    page = render_html(tmp_path, {"manifest": "m.yaml", "weights": "imagenet"}, views, layout, tmp_path,
                       Thumbs(tmp_path / "thumbs"))
    assert time.perf_counter() - start < 10
    assert len(layout.groups) == 30 and sum(len(g.rows) for g in layout.groups) == 1000
    assert len(page) < 4_000_000, len(page)  # one page, images lazy: fine in a browser
