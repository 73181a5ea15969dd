"""`stylebatch report`: the job as the paper's matrix (contents down, styles or a sweep's key
across), every link resolving, paged for large jobs with one bounded contact sheet per page, live
while the job runs, and escaped (Jinja2 autoescape)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from stylebatch.cli.main import main
from stylebatch.fit.provenance import read_metadata
from stylebatch.job.config import Config
from stylebatch.jobdir.state import HOST, JobState
from stylebatch.report import matrix
from stylebatch.report.build import write_report
from stylebatch.report.sheet import CELL_MAX, SHEET_MAX, SHEET_PIXELS, sheet_geometry
from tests.jobkit import make_image, records, tiny_job

FAST = {"steps": 3, "checkpoint_every": 2, "log_every": 1, "optimizer": "adam", "lr": 0.05}
CONTENTS = ["images/a.png", "images/b.png", "images/c.png"]
STYLES = ["images/s1.png", "images/s2.png", "images/s3.png", "images/s4.png"]


class _Report(HTMLParser):
    """Links, ids and the matrix: column heads, and per body row its head and cells."""

    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.imgs: list[dict[str, str]] = []
        self.metas: list[dict[str, str]] = []
        self.text: list[str] = []
        self.col_heads: list[str] = []
        self.rows: list[dict] = []  # {"head": text, "cells": [None | {"id", "links", "text", "class"}]}
        self._where: str | None = None  # "thead-th", "row-th", "td"
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append((tag, a[key]))
                if self._cell is not None:
                    self._cell["links"].append(a[key])
        if tag == "img":
            self.imgs.append(a)
        if tag == "meta":
            self.metas.append(a)
        if tag == "thead":
            self._where = "thead"
        elif tag == "tbody":
            self._where = "tbody"
        elif tag == "tr" and self._where == "tbody":
            self.rows.append({"head": "", "cells": []})
        elif tag == "th" and self._where in ("thead", "tbody"):
            self._cell = {"text": "", "links": []}
        elif tag == "td" and self._where == "tbody":
            self._cell = {"text": "", "links": [], "id": a.get("id"), "class": a.get("class", "")}

    def handle_endtag(self, tag):
        if tag == "th" and self._cell is not None:
            label = " ".join(self._cell["text"].split())
            if self._where == "thead":
                self.col_heads.append(label)
            else:
                self.rows[-1]["head"] = label
            self._cell = None
        elif tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append(self._cell if self._cell["id"] else None)
            self._cell = None
        elif tag in ("thead", "tbody"):
            self._where = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


def _parse(path: Path) -> _Report:
    page = _Report()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _check_links(page: _Report, base: Path) -> int:
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


def _output_of(cell: dict, base: Path) -> Path:
    """The output a cell links to (the link that is not a thumbnail)."""
    full = [u for u in cell["links"] if "/thumbs/" not in u and not u.startswith("thumbs/")]
    assert len(full) == 1, cell
    return (base / unquote(full[0])).resolve()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 3 contents x 4 styles job (random weights, 32 px, 3 evaluations)."""
    root = tmp_path_factory.mktemp("grid")
    for i, name in enumerate(["c.png", "s3.png", "s4.png"]):
        make_image(root / "images" / name, seed=10 + i, size=(36, 28))
    manifest = tiny_job(root, pairs=[], defaults=FAST, grid={"content": CONTENTS, "style": STYLES})
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    return root / "out"


def test_3x4_grid_cell_i_j_holds_content_i_and_style_j(grid: Path) -> None:
    assert main(["report", str(grid)]) == 0
    report_dir = grid / ".stylebatch" / "report"
    page = _parse(report_dir / "report.html")
    assert _check_links(page, report_dir) >= 12 * 2 + 3 * 2 + 4 * 2  # results, inputs: thumbnails and files
    assert page.col_heads[1:] == ["s1.png", "s2.png", "s3.png", "s4.png"]
    assert [r["head"] for r in page.rows] == ["a.png", "b.png", "c.png"]
    for i, row in enumerate(page.rows):
        assert len(row["cells"]) == 4
        for j, cell in enumerate(row["cells"]):
            # What the cell links to says itself what made it: content i and style j.
            meta = read_metadata(_output_of(cell, report_dir))
            assert Path(meta["content"]).name == Path(CONTENTS[i]).name
            assert Path(meta["style"]).name == Path(STYLES[j]).name
            assert cell["id"] == f"pair-{meta['name']}" and "done" in cell["text"]
    assert not page.metas or not any(m.get("http-equiv") == "refresh" for m in page.metas)  # a finished job
    with Image.open(report_dir / "contact_sheet.jpg") as sheet:
        geo = sheet_geometry(1 + 3, 4)  # the header row and 3 rows, 4 columns
        assert sheet.size == (geo.width, geo.height) == (5 * CELL_MAX, 4 * (CELL_MAX + 16))
        # Row 1, column 1 (a__s1, done) holds a picture, not a plain status fill.
        t = geo.cell
        cell = sheet.convert("RGB").crop((t, t + 16, 2 * t, 2 * t + 16))
        assert len(set(cell.getdata())) > 50


def test_columns_and_rows_can_be_named(grid: Path) -> None:
    report_dir = grid / ".stylebatch" / "report"
    assert main(["report", str(grid), "--columns", "style"]) == 0  # refused before: "not a key this job varies"
    assert _parse(report_dir / "report.html").col_heads[1:] == ["s1.png", "s2.png", "s3.png", "s4.png"]
    assert main(["report", str(grid), "--columns", "content"]) == 0  # transposed: styles down
    page = _parse(report_dir / "report.html")
    assert page.col_heads[1:] == ["a.png", "b.png", "c.png"] and len(page.rows) == 4
    for j, row in enumerate(page.rows):
        for i, cell in enumerate(row["cells"]):
            meta = read_metadata(_output_of(cell, report_dir))
            assert (Path(meta["content"]).name, Path(meta["style"]).name) == (
                Path(CONTENTS[i]).name,
                Path(STYLES[j]).name,
            )
    # A key that does not vary makes one column; a misspelt one is one clear line.
    assert main(["report", str(grid), "--columns", "style_weight", "--rows", "style"]) == 0
    page = _parse(report_dir / "report.html")
    one = f"style_weight = {matrix.fmt(Config().style_weight)}"  # the default: the job does not set it
    assert page.col_heads == ["style \\ style_weight", one] * 3  # one section per content
    assert len(page.rows) == 12 and "content: a.png" in " ".join(page.text)
    assert main(["report", str(grid), "--columns", "stlye"]) == 2


def test_a_sweep_puts_its_varied_key_across(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = tiny_job(
        tmp_path,
        pairs=[],
        defaults=FAST,
        grid={"content": ["images/a.png", "images/b.png"], "style": ["images/s1.png"], "style_weight": [1000, 10]},
    )
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    out = tmp_path / "out"
    report_dir = out / ".stylebatch" / "report"
    assert main(["report", str(out)]) == 0
    page = _parse(report_dir / "report.html")
    _check_links(page, report_dir)
    assert page.col_heads[1:] == ["style_weight = 10", "style_weight = 1000"]  # sorted as numbers
    assert [r["head"] for r in page.rows] == ["a.png", "b.png"]
    for i, row in enumerate(page.rows):
        for j, cell in enumerate(row["cells"]):
            meta = read_metadata(_output_of(cell, report_dir))
            assert meta["config"]["style_weight"] == (10, 1000)[j]
            assert Path(meta["content"]).name == ("a.png", "b.png")[i]
    # Styles across instead: one column, and the sweep's values become sections.
    capsys.readouterr()
    assert main(["report", str(out), "--columns", "style"]) == 0
    assert "sections by style_weight" in capsys.readouterr().out
    page = _parse(report_dir / "report.html")
    assert page.col_heads == ["content \\ style", "s1.png", "content \\ style", "s1.png"]
    assert "style_weight = 10" in page.text and "style_weight = 1000" in page.text


def test_failed_and_invalid_pairs_show_their_errors(tmp_path: Path) -> None:
    pairs = [
        {"content": "images/a.png", "style": "images/s1.png"},
        {"content": "images/b.png", "style": "images/s1.png"},  # fails while running: b.png broken
        {"content": "images/missing.png", "style": "images/s2.png"},  # invalid: skipped
    ]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults=FAST)
    from stylebatch.runner import loop as runner

    original = runner._run_batch

    def break_b_first(job, batch, *args, **kwargs):  # as test_manifest does: broken after validation
        if any(pair.name == "b__s1" for pair in batch):
            (tmp_path / "images" / "b.png").write_bytes(b"not an image any more")
        return original(job, batch, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_run_batch", break_b_first)
        assert main(["run", str(manifest), "--weights", "random", "--skip-invalid", "--set", "batch_size=1"]) == 1
    error = records(tmp_path / "out")["b__s1"]["error"]
    out = tmp_path / "out"
    assert main(["report", str(out)]) == 0
    report_dir = out / ".stylebatch" / "report"
    page = _parse(report_dir / "report.html")
    _check_links(page, report_dir)
    text = " ".join(page.text)
    assert error in text and "missing.png: file not found" in text
    cells = {c["id"]: c for r in page.rows for c in r["cells"] if c}
    assert "failed" in cells["pair-b__s1"]["class"] and "invalid" in cells["pair-missing__s2"]["class"]
    assert "done" in cells["pair-a__s1"]["class"]
    assert page.imgs and all(img.get("loading") == "lazy" for img in page.imgs)
    assert (report_dir / "report.html").read_text().count("<svg") == 1  # a's curve (b failed before its first step)
    assert main(["report", str(tmp_path)]) == 2  # not a job directory


def test_large_matrices_are_paged_with_an_index_and_a_sheet_per_page(grid: Path, monkeypatch) -> None:
    monkeypatch.setattr(matrix, "PAGE_COLS", 2)
    monkeypatch.setattr(matrix, "PAGE_CELLS", 4)
    # 3 x 4: rows in blocks of 2 and 1, columns in blocks of 2 and 2: blocks of 4, 4, 2 and 2 cells, so
    # three pages (the two small blocks share one).
    report_dir = grid / ".stylebatch" / "report"
    result = write_report(grid)
    assert result.pages == 3
    index = _parse(report_dir / "report.html")
    _check_links(index, report_dir)
    block_links = [unquote(u) for _, u in index.links if u.startswith("page-")]
    assert block_links == [
        "page-0001.html#block-1",
        "page-0002.html#block-1",
        "page-0003.html#block-1",
        "page-0003.html#block-2",
    ]
    seen: list[str] = []
    for n in (1, 2, 3):
        page = _parse(report_dir / f"page-000{n}.html")
        _check_links(page, report_dir)
        assert page.col_heads == [
            "content \\ style",
            *(["s1.png", "s2.png"], ["s3.png", "s4.png"], ["s1.png", "s2.png", "content \\ style", "s3.png", "s4.png"])[
                n - 1
            ],
        ]
        seen += [c["id"] for r in page.rows for c in r["cells"] if c]
        with Image.open(report_dir / f"sheet-000{n}.jpg") as sheet:
            assert max(sheet.size) <= SHEET_MAX
    assert sorted(seen) == sorted(f"pair-{n}" for n in records(grid))  # every pair once
    assert not (report_dir / "contact_sheet.jpg").exists()

    # The same pages made by two forked writers (as the CLI does): every link still resolves (no
    # thumbnail a writer made was pruned by the report).
    def page_text(path: Path) -> str:
        return re.sub(r"made \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "", path.read_text())

    first = {f.name: page_text(f) for f in report_dir.glob("page-*.html")}
    shutil.rmtree(report_dir)
    assert write_report(grid, workers=2).made == 3
    for name, text in first.items():
        _check_links(_parse(report_dir / name), report_dir)
        assert page_text(report_dir / name) == text
    # Back to one page: the pages of the larger report go.
    monkeypatch.undo()
    assert write_report(grid).pages == 1
    assert not list(report_dir.glob("page-*")) and not list(report_dir.glob("sheet-*"))


def test_an_unchanged_page_is_not_made_again(grid: Path) -> None:
    write_report(grid)
    assert write_report(grid).made == 0
    state = JobState(grid)
    state.update("b__s2", seconds=99.0)  # one record changes: its page is made again
    assert write_report(grid).made == 1


def test_a_running_job_reloads_and_shows_progress_and_the_latest_snapshot(grid: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(grid, out)
    state = JobState(out)
    state.update("c__s4", status="running", steps_done=2, steps=3, host=HOST, pid=os.getpid())
    for n in (1, 2):
        make_image(state.pair_dir("c__s4") / f"iter_{n}.png", seed=50 + n, size=(32, 24))
    shutil.rmtree(state.pair_dir("b__s4"))  # no record yet: pending
    report_dir = state.root / "report"
    write_report(out, live_every=120)
    page = _parse(report_dir / "report.html")
    assert {m.get("http-equiv"): m.get("content") for m in page.metas}.get("refresh") == "120"
    cells = {c["id"]: c for r in page.rows for c in r["cells"] if c}
    running = cells["pair-c__s4"]
    assert "running 2/3" in running["text"] and "snapshot 2" in running["text"]
    assert any(u.endswith("iter_2.png") for u in running["links"])
    assert "pending" in cells["pair-b__s4"]["text"]
    html = (report_dir / "report.html").read_text()
    assert '<span class="st st-running">running 2/3</span>' in html  # a badge: one nowrap span
    assert "white-space:nowrap" in html.split(".st{")[1].split("}")[0]
    # The job ended (the final report is not live): no reload, although a pair is pending.
    state.update("c__s4", status="interrupted")
    write_report(out)
    assert not any(m.get("http-equiv") == "refresh" for m in _parse(report_dir / "report.html").metas)


def test_names_are_escaped(tmp_path: Path) -> None:
    pairs = [{"content": "images/a.png", "style": "images/s1.png", "name": '<i>bold<i> & "q"'}]
    manifest = tiny_job(tmp_path, pairs=pairs, defaults=FAST)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    write_report(tmp_path / "out")
    html = (tmp_path / "out" / ".stylebatch" / "report" / "report.html").read_text()
    assert "<i>bold" not in html and "&lt;i&gt;bold&lt;i&gt; &amp; &#34;q&#34;" in html


def test_sheet_geometry_is_bounded_and_never_a_strip() -> None:
    for rows in (1, 2, 7, 40, 100):
        for cols in (1, 2, 5, 12):
            if rows * cols > matrix.PAGE_CELLS:
                continue
            geo = sheet_geometry(1 + rows, cols)
            assert geo.width <= SHEET_MAX and geo.height <= SHEET_MAX and geo.width * geo.height <= SHEET_PIXELS
            assert geo.blocks * geo.block_rows >= 1 + rows
            assert geo.cell >= 64, (rows, cols, geo)  # every page's sheet is readable, with captions
            if rows > 3 * cols:  # a tall page wraps into blocks side by side instead of a strip
                assert max(geo.width, geo.height) / min(geo.width, geo.height) <= 3, (rows, cols, geo)
    assert sheet_geometry(1 + 4, 1).cell == CELL_MAX


CURVE = "evaluations,content,style,total\n" + "".join(
    f"{n},{1 / n!r},{10 / n!r},{11 / n!r}\n" for n in range(10, 501, 10)
)


def _records_only_job(out: Path, pairs: list[tuple[str, str, str]]) -> None:
    """A job directory as a run leaves it, written directly: job.json and, per (name, content,
    style), a done record and a loss curve (no images)."""
    root = out / ".stylebatch"
    (root / "pairs").mkdir(parents=True)
    entries = []
    for i, (name, content, style) in enumerate(pairs):
        entries.append(
            json.dumps(
                {"name": name, "id": f"{i:016x}", "entry": f"grid[{i}]", "content": content, "style": style, "set": {}}
            )
        )
        d = root / "pairs" / name
        d.mkdir()
        (d / "state.json").write_text(
            json.dumps(
                {
                    "status": "done",
                    "steps_done": 500,
                    "steps": 500,
                    "seconds": 12.5,
                    "losses": {"content": 0.002, "style": 0.02},
                    "name": name,
                }
            )
        )
        (d / "losses.csv").write_text(CURVE)
    head = {
        "format": 2,
        "manifest": "m.yaml",
        "cwd": str(out.parent),
        "weights": "imagenet",
        "keys": ["size", "steps"],
        "bookkeeping": [],
        "defaults": {"size": 512, "steps": 500},
    }
    (root / "job.json").write_text(json.dumps(head)[:-1] + ', "pairs": [\n' + ",\n".join(entries) + "\n]}")


def test_a_name_with_a_newline_is_drawn_on_one_line(tmp_path: Path) -> None:
    _records_only_job(tmp_path / "out", [("two\nlines <b>", "images/a.png", "images/s1.png")])
    result = write_report(tmp_path / "out")  # the contact sheet's caption could not be measured before
    assert result.pages == 1 and "two\nlines &lt;b&gt;" in result.html.read_text()


def test_pages_stay_small_for_a_big_job(tmp_path: Path) -> None:
    """3,000 done pairs (60 contents x 50 styles) with curves, from records alone: every page well
    under 2 MB, the index lists every page, every pair is on exactly one."""
    out = tmp_path / "out"
    _records_only_job(
        out, [(f"c{i // 50}__s{i % 50}", f"images/c{i // 50}.jpg", f"images/s{i % 50}.jpg") for i in range(3000)]
    )
    root = out / ".stylebatch"
    result = write_report(out)
    report_dir = root / "report"
    assert result.pages == 5  # 50 columns: 5 blocks of 10; 60 rows fit one block of 600 cells
    index = _parse(report_dir / "report.html")
    assert sorted({u.split("#")[0] for _, u in index.links if u.startswith("page-")}) == [
        f"page-000{i}.html" for i in range(1, 6)
    ]
    seen = []
    for page_file in sorted(report_dir.glob("page-*.html")):
        assert page_file.stat().st_size < 1_500_000, page_file.stat().st_size
        page = _parse(page_file)
        seen += [c["id"] for r in page.rows for c in r["cells"] if c]
    assert len(seen) == len(set(seen)) == 3000


def test_the_running_job_writes_a_report_that_reloads_then_a_final_one(tmp_path: Path, monkeypatch) -> None:
    """Rank 0 refreshes the report (in a child process) while pairs run, and once more at the end."""
    from stylebatch.fit import engine

    manifest = tiny_job(
        tmp_path,
        pairs=[
            {"content": "images/a.png", "style": "images/s1.png"},
            {"content": "images/b.png", "style": "images/s2.png"},
        ],
        # The Gram loss: the live report is under test, and the default loss's steps cost ~5x more here.
        defaults={
            **FAST,
            "steps": 40,
            "checkpoint_every": 5,
            "batch_size": 1,
            "report_every": 0.02,
            "style_loss": "gram",
        },
    )  # every 1.2 s
    page = tmp_path / "out" / ".stylebatch" / "report" / "report.html"
    original = engine._BudgetCallback.on_train_batch_end
    seen: list[str] = []

    def wait_for_a_live_page(self, trainer, module, *rest):
        if module.evaluations == 30 and not seen:
            for _ in range(600):  # up to 60 s: a child process writes it
                text = page.read_text() if page.exists() else ""
                if 'http-equiv="refresh"' in text and "running" in text:
                    seen.append(text)
                    break
                time.sleep(0.1)
            else:
                seen.append("")
        return original(self, trainer, module, *rest)

    monkeypatch.setattr(engine._BudgetCallback, "on_train_batch_end", wait_for_a_live_page)
    assert main(["run", str(manifest), "--weights", "random"]) == 0
    assert seen and seen[0], "no live report appeared while the job ran"
    assert '<meta http-equiv="refresh" content="10">' in seen[0]  # every max(10 s, report_every)
    final = _parse(page)
    assert not any(m.get("http-equiv") == "refresh" for m in final.metas)
    assert {c["id"] for r in final.rows for c in r["cells"] if c and "done" in c["text"]} == {
        "pair-a__s1",
        "pair-b__s2",
    }


def test_report_every_is_read_from_the_pairs_config() -> None:
    from types import SimpleNamespace as NS

    from stylebatch.job.config import Config
    from stylebatch.report.live import report_every_s

    assert report_every_s(NS(valid_pairs=[NS(config=Config())])) == 5 * 60  # the default: every 5 minutes
    assert report_every_s(NS(valid_pairs=[NS(config=NS(report_every=2.0)), NS(config=NS(report_every=0.5))])) == 30
    assert report_every_s(NS(valid_pairs=[NS(config=NS(report_every=0))])) == 0


def test_every_wrapped_column_of_a_sheet_starts_with_its_header() -> None:
    from stylebatch.report.sheet import _wrapped_lines

    rows = [matrix.Value(f"r{i}", f"r{i}") for i in range(90)]
    page = matrix.Page(
        1,
        [
            matrix.Block(0, rows[:60], [matrix.Value("c", "c")], {}),
            matrix.Block(1, rows[60:], [matrix.Value("c", "c")], {}),
        ],
    )
    lines, geo = _wrapped_lines(page)
    assert geo.blocks > 1 and geo.width <= SHEET_MAX and geo.height <= SHEET_MAX
    columns = [lines[k : k + geo.block_rows] for k in range(0, len(lines), geo.block_rows)]
    assert len(columns) <= geo.blocks and all(col[0][1] == -1 for col in columns)
    data_rows = [(block.section, i) for block, i in lines if i >= 0]
    assert data_rows == [(0, i) for i in range(60)] + [(1, i) for i in range(30)]  # each row once, in order
