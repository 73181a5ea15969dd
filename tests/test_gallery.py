"""`stylebatch gallery`: a folder to send: pages that parse, links that resolve, no local path in
any file, titles from names, a sweep as columns, losses only when asked, labels never cut."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image, ImageDraw

from stylebatch.cli.main import main
from stylebatch.report.gallery import (
    MARK,
    check_links,
    shorten_middle,
    title,
    without_settings,
    wrap_label,
)
from stylebatch.report.sheet import label_font
from tests.jobkit import make_image, write_manifest


class _Page(HTMLParser):
    """Every link and image of a page, and whether its tags balance."""

    VOID = {"meta", "img", "br", "col", "link", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """A finished sweep (two contents, one style, two style weights) and a plain pair, in several
    formats, with a long name that a label would have to cut."""
    root = tmp_path_factory.mktemp("gallery")
    images = root / "photos"
    make_image(images / "harbour_at_dawn.png", 1)
    make_image(images / "old_town.png", 2, (30, 40))
    make_image(images / "the_great_wave_off_kanagawa_by_hokusai_1831.png", 3)
    data = {
        "output_dir": "out",
        "defaults": {"size": 32, "steps": 4, "scales": None, "report_every": 0},
        "grid": {
            "content": ["photos/harbour_at_dawn.png", "photos/old_town.png"],
            "style": ["photos/the_great_wave_off_kanagawa_by_hokusai_1831.png"],
            "style_weight": [0.01, 1.0],
        },
    }
    manifest = write_manifest(root / "job.yaml", data)
    assert main(["run", str(manifest), "--weights", "random", "--set", "format=webp"]) == 0
    return root


def _gallery(job: Path, name: str, *args: str) -> Path:
    dest = job / name
    assert main(["gallery", str(job / "out"), str(dest), *args]) == 0
    return dest


def test_pages_parse_links_resolve_and_no_local_path(job: Path) -> None:
    dest = _gallery(job, "send")
    pages = sorted(dest.glob("*.html"))
    assert [p.name for p in pages] == ["index.html"]
    page = _Page()
    page.feed(pages[0].read_text(encoding="utf-8"))
    page.close()
    assert page.stack == [] and page.links
    for link in page.links:
        target = (dest / unquote(link)).resolve()
        assert target.is_file() and dest.resolve() in target.parents, link
    assert check_links(dest) == []
    # the four pictures at full size (same pixels as the outputs), shown through sRGB copies
    outputs = sorted((job / "out").glob("*.webp"))
    assert len(outputs) == 4
    for out in outputs:
        sent = dest / "pictures" / out.name
        with Image.open(sent) as a, Image.open(out) as b:
            assert a.size == b.size and a.tobytes() == b.tobytes()
        assert f"pictures/{out.name}" in page.links
    # no local path in any file: not the job's folder, not the cwd, not the home directory
    local = {str(job), str(job.resolve()), os.getcwd(), str(Path.home()), str(job / "out")}
    for f in dest.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for path in local:
                assert path.encode() not in data, (f, path)
            assert b'"content": "/' not in data and b"weights_source" not in data, f


def test_titles_sweep_columns_and_losses_only_when_asked(job: Path) -> None:
    plain = _Gallery.text(_gallery(job, "plain"))
    assert "Harbour at dawn" in plain and "Old town" in plain  # rows: contents, titled from file names
    assert "style weight 0.01" in plain and "style weight 1" in plain  # the sweep's values as columns
    assert "Style: The great wave off kanagawa by hokusai 1831" in plain  # the one style, in the header
    assert "lower means closer" not in plain and "content 0." not in plain
    with_losses = _Gallery.text(_gallery(job, "losses", "--losses"))
    assert "lower means closer" in with_losses and "style " in with_losses


def test_print_css_and_remaking_and_refusals(job: Path, capsys) -> None:
    dest = _gallery(job, "again")
    html = (dest / "index.html").read_text(encoding="utf-8")
    assert "@media print" in html and "break-inside:avoid" in html and MARK in html
    (dest / "view" / "stale.jpg").write_bytes(b"x")
    dest = _gallery(job, "again")  # an earlier gallery is remade, its old files gone
    assert not (dest / "view" / "stale.jpg").exists()
    other = job / "not-a-gallery"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["gallery", str(job / "out"), str(other)]) == 2
    assert (other / "notes.txt").read_text() == "mine"
    assert main(["gallery", str(job / "out"), str(job / "out" / "inside")]) == 2
    assert "outside the job directory" in capsys.readouterr().err


def test_contact_sheet_is_readable_and_labels_are_never_cut(job: Path) -> None:
    dest = _gallery(job, "sheet")
    with Image.open(dest / "contact-sheet-1.jpg") as sheet:
        assert sheet.width >= 3 * 300  # a head column and two result columns of 300 px cells
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = label_font(18)
    name = "the_great_wave_off_kanagawa_by_hokusai_1831__style_weight-0.01.webp"
    lines = wrap_label(draw, name, 296, font)
    assert 1 < len(lines) <= 2 and all(draw.textlength(line, font=font) <= 296 for line in lines)
    assert lines[0].startswith("the_great_wave") and lines[-1].endswith("0.01.webp")  # both ends kept
    assert shorten_middle("abcdefghij", 5) == "ab…ij"
    assert title("the_scream.jpg") == "The scream" and title("a.jpg+b_c.png") == "A + B c"


def test_settings_are_removed_from_every_format(tmp_path: Path) -> None:
    from stylebatch.images import save_image, save_output

    text = {"stylebatch": '{"content": "/home/someone/photo.png"}'}
    img = Image.new("RGB", (8, 6), (10, 200, 30))
    for fmt in ("png", "jpg", "webp", "tiff"):
        data = save_image(img, tmp_path / f"a.{fmt}", text, fmt)
        clean = without_settings(data)
        assert b"/home/someone" in data and b"/home/someone" not in clean, fmt
        (tmp_path / f"clean.{fmt}").write_bytes(clean)
        with Image.open(tmp_path / f"clean.{fmt}") as im:
            im.load()
            assert im.size == (8, 6), fmt
    import numpy as np

    for fmt in ("png16", "tiff16"):
        data = save_output(np.full((6, 8, 3), 0.5, np.float32), None, tmp_path / f"b.{fmt}", text=text, format=fmt)
        assert b"/home/someone" not in without_settings(data)


class _Gallery:
    @staticmethod
    def text(dest: Path) -> str:
        page = _Page()
        page.feed((dest / "index.html").read_text(encoding="utf-8"))
        return " ".join(" ".join(page.text).split())
