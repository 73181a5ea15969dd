"""A manifest's list of grids in the report: each grid is its own matrix with its own heading and
axes (a photos x paintings grid: contents down, styles across; a style_weight sweep on one pair:
the swept key across), the listed pairs another, in the pages, the index and the contact sheet."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from stylebatch.cli.main import main
from stylebatch.job.jobfile import write_job_file
from stylebatch.jobdir.state import JobState
from stylebatch.memory.autosize import load_job
from stylebatch.report import matrix
from stylebatch.report.build import write_report
from tests.jobkit import tiny_job, write_manifest

GRIDS = [
    {"content": ["images/a.png", "images/b.png"], "style": ["images/s1.png", "images/s2.png"]},
    {"content": ["images/a.png"], "style": ["images/s2.png"], "style_weight": [0.01, 0.1, 1.0]},
]


class _Matrices(HTMLParser):
    """Each `table.matrix` of a page: the grid heading above it, its corner, column heads and rows
    (row head, the pair name in each cell)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.heading = ""
        self._in: str | None = None  # "h2", "th", "name"
        self._text = ""
        self._part = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "h2" and a.get("class") == "grid":
            self._in, self._text = "h2", ""
        elif tag == "table" and a.get("class") == "matrix":
            self.tables.append({"grid": self.heading, "corner": "", "columns": [], "rows": []})
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr" and self._part == "tbody":
            self.tables[-1]["rows"].append(["", []])
        elif tag == "th" and self.tables and self._part:
            self._in, self._text = "th", ""
        elif tag == "div" and a.get("class") == "name":
            self._in, self._text = "name", ""

    def handle_endtag(self, tag: str) -> None:
        text = " ".join(self._text.split())
        if tag == "h2" and self._in == "h2":
            self.heading, self._in = text, None
        elif tag == "th" and self._in == "th":
            table = self.tables[-1]
            if self._part == "tbody":
                table["rows"][-1][0] = text
            elif not table["corner"]:
                table["corner"] = text
            else:
                table["columns"].append(text)
            self._in = None
        elif tag == "span" and self._in == "name":  # the status badge follows the name
            self.tables[-1]["rows"][-1][1].append(text.split()[0])
            self._in = None
        elif tag in ("thead", "tbody"):
            self._part = ""

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """The job directory of a manifest with a 2 x 2 grid, a 3-value sweep and one listed pair, as
    `run` leaves it before any pair has run (job.json; every pair pending)."""
    tiny_job(tmp_path)  # the images
    manifest = write_manifest(
        tmp_path / "grids.yaml",
        {
            "output_dir": "out",
            "defaults": {"size": 32, "steps": 2},
            "grid": GRIDS,
            "pairs": [{"content": "images/b.png", "style": "images/s1.png", "name": "extra", "tv_weight": 1}],
        },
    )
    job = load_job(manifest, weights="random")
    assert not job.all_problems
    state = JobState(job.output_dir)
    state.ensure_dir(state.root)
    write_job_file(job, state.job_file)
    return job.output_dir


def test_each_grid_of_the_list_is_its_own_matrix(job_dir: Path, capsys) -> None:
    result = write_report(job_dir)
    layout = result.layout
    assert layout.grouped and result.pages == 1
    assert [(s.group.split(":")[0], s.row_axis, s.column_axis) for s in layout.sections] == [
        ("pairs", "content", "style"),
        ("grid[0]", "content", "style"),
        ("grid[1]", "content", "style_weight"),
    ]
    page = _Matrices()
    page.feed(result.html.read_text(encoding="utf-8"))
    tables = {t["grid"].split(":")[0]: t for t in page.tables}
    assert list(tables) == ["pairs", "grid[0]", "grid[1]"]
    photos = tables["grid[0]"]
    assert photos["grid"] == "grid[0]: content down, style across"
    assert photos["corner"] == "content \\ style"
    assert photos["columns"] == ["s1.png", "s2.png"]
    assert photos["rows"] == [["a.png", ["a__s1", "a__s2"]], ["b.png", ["b__s1", "b__s2"]]]
    sweep = tables["grid[1]"]
    assert sweep["grid"] == "grid[1]: style s2.png; content down, style_weight across"  # the painting it shares
    assert sweep["corner"] == "content \\ style_weight"
    assert sweep["columns"] == ["style_weight = 0.01", "style_weight = 0.1", "style_weight = 1"]
    assert sweep["rows"] == [
        ["a.png", ["a__s2__style_weight-0.01", "a__s2__style_weight-0.1", "a__s2__style_weight-1"]]
    ]
    assert tables["pairs"]["rows"] == [["b.png", ["extra"]]]  # the listed pair, on its own
    assert len(json.loads((job_dir / ".stylebatch" / "report" / "pages.json").read_text())["pages"]) == 1

    # The command says so too.
    capsys.readouterr()
    assert main(["report", str(job_dir)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "grid[0]: content down, style across" in first and "grid[1]: style s2.png" in first


def test_the_index_of_a_paged_report_keeps_each_grids_axes(job_dir: Path, monkeypatch) -> None:
    """Cut into pages (one cell a page), the index lists each grid's blocks under its own heading
    and corner."""
    monkeypatch.setattr(matrix, "PAGE_CELLS", 2)
    monkeypatch.setattr(matrix, "PAGE_COLS", 2)
    result = write_report(job_dir)
    assert result.pages > 3
    index = (job_dir / ".stylebatch" / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h2>grid[1]: style s2.png; content down, style_weight across</h2>" in index
    assert "<th>content \\ style_weight</th>" in index and "<th>content \\ style</th>" in index


def test_without_a_list_of_grids_the_job_is_one_layout(tmp_path: Path) -> None:
    """A single grid beside listed pairs is laid out together, as before (no grid headings)."""
    tiny_job(tmp_path)
    manifest = write_manifest(
        tmp_path / "one.yaml",
        {
            "output_dir": "out",
            "defaults": {"size": 32, "steps": 2},
            "grid": GRIDS[0],
            "pairs": [{"content": "images/b.png", "style": "images/s2.png", "name": "extra"}],
        },
    )
    job = load_job(manifest, weights="random")
    state = JobState(job.output_dir)
    state.ensure_dir(state.root)
    write_job_file(job, state.job_file)
    result = write_report(job.output_dir)
    assert not result.layout.grouped and all(not s.group for s in result.layout.sections)
    assert '<h2 class="grid">' not in result.html.read_text(encoding="utf-8")
