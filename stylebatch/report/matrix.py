"""The report's layout: the job as a matrix, as the paper's figures are drawn, cut into pages.

Every pair has a value on each *axis*: `content`, `style`, and each config key. One axis makes the
columns, one the rows, and every other axis the job varies makes sections (one matrix per
combination, titled with it). Defaults: a sweep's varied key (in Config order, bookkeeping keys
never) across, contents down, styles as sections (`style_weight: [10, 100, 1000]` reads across
like the paper's Figure 3); without a sweep, styles across and contents down (Figure 2).
`--columns KEY` / `--rows KEY` name any axis.

A section larger than PAGE_COLS columns or PAGE_CELLS cells is cut into blocks of rows and columns
(balanced: 100 styles make 9 column blocks of 11-12, not 8 of 12 and one of 4). Pages take the
blocks in order, several small ones to a page, up to PAGE_CELLS cells, so a page stays around a
megabyte of HTML and its contact sheet stays readable whatever the job's size.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from stylebatch.errors import StylebatchError

PAGE_COLS = 12  # at most this many result columns on a page (about a desktop screen's width)
PAGE_CELLS = 600  # at most this many cells on a page
PAGE_ROWS = 100  # at most this many rows on a page
IMAGE_AXES = ("content", "style")


@dataclass(eq=False)
class PairView:
    """One pair as the report shows it."""

    name: str
    entry: str
    content: Path | None
    styles: list[Path]  # one style, or a blend's
    values: dict[str, Any]  # config values that differ from the job's defaults (overrides)
    status: str  # done, failed, invalid, interrupted, running, pending
    record: dict[str, Any]
    output: Path | None = None  # the output file, when it exists
    snapshot: Path | None = None  # a running pair's latest iter_<n>.png
    has_config: bool = True

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "invalid")

    @property
    def style(self) -> Path | None:
        return self.styles[0] if self.styles else None


@dataclass
class Value:
    """One value of an axis: how it sorts and reads, and (for content/style) the image it is."""

    key: str
    label: str
    image: Path | None = None
    order: tuple = ()


@dataclass
class Block:
    """A block of one section's rows x columns: one matrix on a page."""

    section: int
    rows: list[Value]
    columns: list[Value]
    cells: dict[tuple[int, int], PairView]  # (row index, column index) within the block


@dataclass
class Page:
    number: int  # 1-based over the whole report
    blocks: list[Block]

    @property
    def views(self) -> list[PairView]:
        return [v for b in self.blocks for v in b.cells.values()]


@dataclass
class Section:
    title: str
    fixed: list[tuple[str, Value]]  # (axis, value) that the section fixes

    @property
    def image(self) -> Path | None:
        """The image the section fixes (its style, say), if any: drawn beside its title."""
        return next((v.image for a, v in self.fixed if a in IMAGE_AXES and v.image is not None), None)

    rows: list[Value]
    columns: list[Value]
    row_blocks: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each block of rows
    col_blocks: list[tuple[int, int]] = field(default_factory=list)
    blocks: list[list[Block]] = field(default_factory=list)  # blocks[row block][column block]
    # Its own axes: a manifest's list of grids lays each grid out as its own matrix (build_layout).
    row_axis: str = ""
    column_axis: str = ""
    group: str = ""  # the grid (or the listed pairs) it belongs to, as its heading says it; "": one layout


@dataclass
class Layout:
    column_axis: str  # the first group's, when there are several (each section has its own)
    row_axis: str
    section_axes: list[str]
    varied: list[str]
    sections: list[Section]
    pages: list[Page] = field(default_factory=list)
    grouped: bool = False  # each grid of the manifest's list is its own matrix, the listed pairs another

    def page_of_block(self) -> dict[int, Page]:
        return {id(b): p for p in self.pages for b in p.blocks}


def fmt(x: Any) -> str:
    """A config value as people write it: 10000, not 1e+04; 0.5; {conv1_1: 1, ...} as `conv1_1 1, ...`."""
    if isinstance(x, bool) or x is None:
        return str(x).lower() if isinstance(x, bool) else "empty"
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e7 else f"{x:.4g}"
    if isinstance(x, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in x.items())
    if isinstance(x, list):
        return "[" + ", ".join(fmt(v) for v in x) + "]"
    return str(x)


def _jkey(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Axes:
    """Reads an axis's value off a view: a config value (the job's default unless overridden) or an
    input image."""

    def __init__(self, keys: list[str], defaults: dict[str, Any], bookkeeping: set[str]) -> None:
        self.keys, self.defaults, self.bookkeeping = keys, defaults, bookkeeping

    def known(self) -> list[str]:
        return [*IMAGE_AXES, *self.keys]

    def value(self, view: PairView, axis: str) -> Value:
        if axis == "content":
            p = view.content
            return Value(f"c:{p}", p.name if p else "(none)", p)
        if axis == "style":
            if not view.styles:
                return Value("s:", "(none)")
            return Value("s:" + "|".join(map(str, view.styles)), "+".join(p.name for p in view.styles), view.styles[0])
        if not view.has_config:
            return Value("x:", "(invalid)", order=(2, 0.0, ""))
        raw = view.values[axis] if axis in view.values else self.defaults.get(axis)
        num = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        return Value(_jkey(raw), fmt(raw), order=(0, float(raw), "") if num else (1, 0.0, _jkey(raw)))

    def varied(self, views: list[PairView]) -> list[str]:
        """Axes with more than one value: content, style, then config keys in Config order (the
        defaults are the first configured pair's values, so a key varies iff some pair overrides it)."""
        found = [a for a in IMAGE_AXES if len({self.value(v, a).key for v in views}) > 1]
        overridden = {k for v in views for k in v.values}
        return found + [k for k in self.keys if k in overridden]


def _check_axis(axis: str, axes: Axes, flag: str) -> None:
    if axis not in axes.known():
        close = get_close_matches(axis, axes.known(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise StylebatchError(f"{flag} {axis}: not a key of this job (content, style or a config key){hint}")


def choose_axes(
    views: list[PairView], axes: Axes, columns: str = "auto", rows: str = "auto", within: bool = False
) -> tuple[str, str, list[str], list[str]]:
    """(column axis, row axis, section axes, varied axes) for `--columns` / `--rows` (auto or a key).
    `within`: `views` are one grid of several, and a key varies only if it takes several values among
    them (a key the whole grid sets differs from the job's defaults, yet is one value here)."""
    varied = axes.varied(views)
    if within:
        varied = [a for a in varied if len({axes.value(v, a).key for v in views}) > 1]
    picture = [a for a in varied if a not in IMAGE_AXES and a not in axes.bookkeeping]
    for flag, value in (("--columns", columns), ("--rows", rows)):
        if value != "auto":
            _check_axis(value, axes, flag)
    if columns != "auto" and columns == rows:
        raise StylebatchError(f"--columns and --rows are both {columns}: name two different keys")
    if columns == "auto":
        options = [a for a in (*picture, "style", "content") if a != rows]
        columns = next((a for a in options if a in varied), options[0])
    if rows == "auto":
        rows = next(a for a in ("content", "style", *picture) if a != columns)
    sections = [a for a in varied if a not in (columns, rows) and (a in IMAGE_AXES or a not in axes.bookkeeping)]
    return columns, rows, sections, varied


def _distinct(values: list[Value], sort: bool) -> list[Value]:
    seen: dict[str, Value] = {}
    for v in values:
        seen.setdefault(v.key, v)
    found = list(seen.values())
    return sorted(found, key=lambda v: v.order) if sort and all(v.order for v in found) else found


def blocks(n: int, most: int) -> list[tuple[int, int]]:
    """[start, end) of ceil(n / most) balanced blocks covering range(n)."""
    if n == 0:
        return [(0, 0)]
    count = math.ceil(n / most)
    edges = [round(i * n / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


# A pair of a manifest's list of grids (`grid: [{...}, {...}]`) is the entry `grid[i][n]`.
GRID_OF_LIST = re.compile(r"(grid\[\d+\])\[\d+\]")
LISTED = "pairs"  # the group of the pairs listed one by one (`pairs:`), beside a list of grids


def groups(views: list[PairView]) -> dict[str, list[PairView]]:
    """The views by the grid of a manifest's list of grids they come from (`grid[0]`, `grid[1]`,
    ...), the listed pairs as LISTED; {} when the manifest has no list of grids (one layout)."""
    found: dict[str, list[PairView]] = {}
    for v in views:
        m = GRID_OF_LIST.fullmatch(v.entry)
        found.setdefault(m.group(1) if m else LISTED, []).append(v)
    return found if any(name != LISTED for name in found) else {}


def build_layout(views: list[PairView], axes: Axes, columns: str = "auto", rows: str = "auto") -> Layout:
    """The job as matrices. A manifest's list of grids (a photos x paintings grid beside a
    style_weight sweep on one pair, say) makes one matrix per grid, each with the axes its own pairs
    vary (contents x styles; the swept key across), and the listed pairs another: laid out together,
    the grid's pairs would be cut into sections by the sweep's key and the sweep by style."""
    by_group = groups(views)
    if not by_group:
        col_axis, row_axis, section_axes, varied = choose_axes(views, axes, columns, rows)
        layout = Layout(
            col_axis, row_axis, section_axes, varied, _sections(views, axes, col_axis, row_axis, section_axes)
        )
    else:
        sections, section_axes, first = [], [], None
        for name, members in by_group.items():
            col_axis, row_axis, own, _ = choose_axes(members, axes, columns, rows, within=True)
            first = first or (col_axis, row_axis)
            section_axes += [a for a in own if a not in section_axes]
            # What the whole grid shares (the one photo and painting of a sweep) is named in its heading.
            shared = [
                f"{a} {next(iter(labels))}"
                for a in IMAGE_AXES
                if a not in (col_axis, row_axis, *own) and len(labels := {axes.value(v, a).label for v in members}) == 1
            ]
            heading = f"{name}: " + "".join(f"{x}; " for x in shared) + f"{row_axis} down, {col_axis} across"
            heading += f", by {', '.join(own)}" if own else ""
            sections += _sections(members, axes, col_axis, row_axis, own, heading)
        layout = Layout(*first, section_axes, axes.varied(views), sections, grouped=True)
    cells = rows = 0
    for k, s in enumerate(layout.sections):
        for line in s.blocks:
            for block in line:
                block.section = k
                size = max(1, len(block.rows)) * max(1, len(block.columns))
                if not layout.pages or cells + size > PAGE_CELLS or rows + len(block.rows) > PAGE_ROWS:
                    layout.pages.append(Page(len(layout.pages) + 1, []))
                    cells = rows = 0
                layout.pages[-1].blocks.append(block)
                cells, rows = cells + size, rows + len(block.rows)
    return layout


def _sections(
    views: list[PairView], axes: Axes, col_axis: str, row_axis: str, section_axes: list[str], group: str = ""
) -> list[Section]:
    """One section per combination of the section axes' values, each filled as a matrix."""
    sections: dict[str, tuple[Section, list[PairView]]] = {}
    for v in views:
        fixed = [axes.value(v, a) for a in section_axes]
        key = "|".join(f.key for f in fixed)
        if key not in sections:
            title = " · ".join(
                f"{a}: {f.label}" if a in IMAGE_AXES else f"{a} = {f.label}" for a, f in zip(section_axes, fixed)
            )
            section = Section(title, list(zip(section_axes, fixed)), [], [])
            section.row_axis, section.column_axis, section.group = row_axis, col_axis, group
            sections[key] = (section, [])
        sections[key][1].append(v)
    for section, members in sections.values():
        _fill(section, members, axes, row_axis, col_axis)
    return [section for section, _ in sections.values()]


def _fill(section: Section, members: list[PairView], axes: Axes, row_axis: str, col_axis: str) -> None:
    """Place each view at (its row value, its column value); a second view with the same two values
    (no axis tells them apart, e.g. one pair listed twice under two names) gets a row of its own."""
    section.columns = _distinct([axes.value(v, col_axis) for v in members], sort=col_axis not in IMAGE_AXES)
    col_index = {c.key: i for i, c in enumerate(section.columns)}
    base_rows = _distinct([axes.value(v, row_axis) for v in members], sort=row_axis not in IMAGE_AXES)
    row_order = {r.key: i for i, r in enumerate(base_rows)}
    placed: dict[tuple[str, int], dict[int, PairView]] = {}
    for v in members:
        r, c = axes.value(v, row_axis), col_index[axes.value(v, col_axis).key]
        copy = 0
        while c in placed.get((r.key, copy), {}):
            copy += 1
        placed.setdefault((r.key, copy), {})[c] = v
    labels = {r.key: r for r in base_rows}
    keys = sorted(placed, key=lambda rc: (row_order[rc[0]], rc[1]))
    section.rows = [
        labels[k] if copy == 0 else Value(f"{k}#{copy}", f"{labels[k].label} ({copy + 1})", labels[k].image)
        for k, copy in keys
    ]
    section.col_blocks = blocks(len(section.columns), PAGE_COLS)
    widest = max(e - s for s, e in section.col_blocks) or 1
    section.row_blocks = blocks(len(section.rows), max(1, min(PAGE_ROWS, PAGE_CELLS // widest)))
    for r0, r1 in section.row_blocks:
        line = []
        for c0, c1 in section.col_blocks:
            cells = {
                (i - r0, c - c0): view for i in range(r0, r1) for c, view in placed[keys[i]].items() if c0 <= c < c1
            }
            line.append(Block(0, section.rows[r0:r1], section.columns[c0:c1], cells))
        section.blocks.append(line)
