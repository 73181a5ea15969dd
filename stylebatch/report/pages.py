"""The pages of `stylebatch report` (report.py): what every page of one report is made from (Pages),
each page and its contact sheet rendered from the Jinja2 templates in `templates/` (autoescaped),
the changed ones in forked processes when there are several (render_all), and the index of a report
of several pages (write_index). A page's cells are made in report_cells.py, its sheet in sheet.py.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import jinja2

from stylebatch.job.jobfile import JobFile
from stylebatch.jobdir.curves import read_curve
from stylebatch.jobdir.state import JobState
from stylebatch.report.cells import CURVE_POINTS, SERIES, anchor, cell, counts, curve_data, head, href, problems
from stylebatch.report.matrix import Layout, Page, PairView, fmt
from stylebatch.report.sheet import SheetGeometry, render_sheet
from stylebatch.report.thumbs import THUMB, Thumbs, write_cache_file

SHOWN = ("size", "steps", "optimizer", "lr", "content_weight", "style_weight", "tv_weight", "init", "format")
ACTIVE = ("pending", "running", "interrupted")
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("stylebatch.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def _digest(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def template_version(*code: str) -> str:
    """What every cached page also depends on: the templates, the thumbnail size, the curve's points
    and the code that makes pages (this module and `code`): a change to one makes every page again."""
    sources = [_ENV.loader.get_source(_ENV, n)[0] for n in ("base.html.j2", "page.html.j2", "index.html.j2")]
    return _digest([sources, THUMB, CURVE_POINTS, [Path(f).stat().st_mtime_ns for f in (__file__, *code)]])


LOSS_NOTE = (
    "Losses: content is how far the result's VGG features are from the photo's, style how far its "
    "feature statistics (textures and colours) are from the painting's; both are relative errors, lower means closer "
    "(total = α·content + β·style)."
)


def relative_to_job(path: str, out_dir: Path, cwd: str | Path = "") -> str:
    """A file the job names (manifest, weights) as a path relative to the job directory, so the
    page shows no local directory; `imagenet` and `random` as they are."""
    if not path or path in ("imagenet", "random"):
        return path
    full = Path(cwd or ".", path) if not os.path.isabs(path) else Path(path)
    try:
        relative = os.path.relpath(os.path.abspath(full), os.path.abspath(out_dir))
    except ValueError:  # another drive (Windows): the file's name at least
        return Path(path).name
    # Far from the job (a shared weights file), the climb says nothing but the machine's layout.
    return Path(path).name if relative.startswith(os.path.join("..", "..", "..")) else relative


def _shown(key: str, defaults: dict[str, Any]) -> str:
    """A shared setting as the page says it: an empty `lr` is the optimizer's own default."""
    value = defaults.get(key)
    if key == "lr" and value is None:
        optimizer = defaults.get("optimizer", "adam")
        return f"{1.0 if optimizer == 'lbfgs' else 0.1:g} ({optimizer}'s default)"
    return fmt(value)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _stat(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st else None


class Pages:
    """What every page of one report is made from (shared, by fork, with the page writers)."""

    def __init__(
        self,
        job: JobFile,
        views: list[PairView],
        layout: Layout,
        report_dir: Path,
        out_dir: Path,
        thumbs: Thumbs,
        live_every: float | None,
    ) -> None:
        self.job, self.views, self.layout, self.thumbs = job, views, layout, thumbs
        self.report_dir, self.out_dir = report_dir, out_dir
        pages = layout.pages
        self.names = (
            [("report.html", "contact_sheet.jpg")]
            if len(pages) == 1
            else [(f"page-{p.number:04d}.html", f"sheet-{p.number:04d}.jpg") for p in pages]
        )
        active = any(v.status == "running" for v in views) or (live_every and any(v.status in ACTIVE for v in views))
        common = [(k, _shown(k, job.defaults)) for k in SHOWN if k in job.defaults and k not in layout.varied]
        self.base_ctx = {
            "manifest": relative_to_job(job.manifest, out_dir, job.cwd),
            "weights": relative_to_job(job.weights, out_dir, job.cwd),
            "loss_note": LOSS_NOTE,
            "row_axis": layout.row_axis,
            "column_axis": layout.column_axis,
            "section_axes": layout.section_axes,
            "varied": layout.varied,
            "grouped": layout.grouped,
            "common": common,
            "series": list(SERIES.items()),
            "thumb": THUMB,
            "page_count": len(pages),
            "refresh": max(10, round(live_every or 60)) if active else None,
            "title": f"stylebatch report: {out_dir.resolve().name}",
        }

    def _images(self, p: Page) -> list[Path | None]:
        found = []
        for b in p.blocks:
            found.append(self.layout.sections[b.section].image)
            found += [v.image for v in (*b.rows, *b.columns)]
            found += [v.output if v.output is not None else v.snapshot for v in b.cells.values()]
        return found

    def signature(self, p: Page) -> str:
        """What the page shows, without making anything: a page with the same signature as last
        time is not made again."""
        cells = [
            (
                b.section,
                [r.label for r in b.rows],
                [c.label for c in b.columns],
                sorted((i, j, v.name, v.status, v.record) for (i, j), v in b.cells.items()),
            )
            for b in p.blocks
        ]
        return _digest(
            [
                self.base_ctx,
                self.names[p.number - 1],
                len(self.names),
                cells,
                [(str(path), _stat(path)) for path in self._images(p)],
            ]
        )

    def keep(self, p: Page) -> None:
        """An unchanged page: its thumbnails stay (they are in use)."""
        for path in self._images(p):
            self.thumbs.get(path)

    def render(self, p: Page) -> SheetGeometry:
        html_name, sheet_name = self.names[p.number - 1]
        single = len(self.names) == 1
        ctx = _page_context(p, self.layout, self.base_ctx, self.report_dir, self.out_dir, self.thumbs, self.job)
        ctx.update(
            sheet=sheet_name,
            number=p.number,
            index=None if single else "report.html",
            prev=self.names[p.number - 2][0] if p.number > 1 else None,
            next=self.names[p.number][0] if p.number < len(self.names) else None,
        )
        if single:
            ctx["problems"], ctx["problems_total"] = problems(self.views, lambda v: None)
        _add_curves(p, ctx, self.out_dir)
        html = _ENV.get_template("page.html.j2").render(
            **ctx,
            made=_now(),
            total=len(p.views),
            counts=counts(p.views),
            scope="" if single else f"page {p.number} of {len(self.names)}: ",
        )
        data, geo = render_sheet(p, self.layout, self.thumbs)
        self.thumbs.forget()
        write_cache_file(self.report_dir / sheet_name, data)
        write_cache_file(self.report_dir / html_name, html.encode("utf-8", "replace"))
        return geo


_SHARED: list[Any] = []  # (run, pages) for the forked page writers


def _render_shared(k: int) -> tuple[SheetGeometry, set[str], dict[str, Any]]:
    run, pages = _SHARED
    geo = run.render(pages[k])
    return (geo, *run.thumbs.take())


def render_all(run: Pages, pages: list[Page], workers: int) -> Iterator[tuple[SheetGeometry, set[str], dict]]:
    """Each page's (sheet geometry, thumbnails used, thumbnails made), in `workers` processes."""
    workers = min(workers, len(pages))
    if workers <= 1:
        for p in pages:
            yield (run.render(p), *run.thumbs.take())
        return
    _SHARED[:] = [run, pages]
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            yield from pool.map(_render_shared, range(len(pages)))
    finally:
        _SHARED.clear()


def _page_context(
    p: Page, layout: Layout, base_ctx: dict[str, Any], report_dir: Path, out_dir: Path, thumbs: Thumbs, job: JobFile
) -> dict[str, Any]:
    blocks, previous, previous_group = [], None, None
    for k, b in enumerate(p.blocks):
        section = layout.sections[b.section]
        col_axis, row_axis = section.column_axis or layout.column_axis, section.row_axis or layout.row_axis
        rows = []
        for i, row in enumerate(b.rows):
            cells = []
            for j in range(len(b.columns)):
                v = b.cells.get((i, j))
                steps = v.values.get("steps", job.defaults.get("steps")) if v is not None else None
                cells.append(cell(v, report_dir, out_dir, thumbs, steps) if v is not None else None)
            rows.append({"head": head(row, row_axis, report_dir, thumbs), "cells": cells})
        image = thumbs.get(section.image)
        new_group = section.group != previous_group
        blocks.append(
            {
                "anchor": f"block-{k + 1}",
                "group": section.group if new_group and section.group else None,
                "row_axis": row_axis,
                "column_axis": col_axis,
                "title": section.title if section.title != previous or new_group else None,
                "image": {
                    "src": href(image.path, report_dir),
                    "w": image.width,
                    "h": image.height,
                    "href": href(section.image, report_dir),
                }
                if image
                else None,
                "rows": rows,
                "columns": [head(c, col_axis, report_dir, thumbs) for c in b.columns],
            }
        )
        previous, previous_group = section.title, section.group
    return {**base_ctx, "blocks": blocks, "problems": [], "problems_total": 0}


def _add_curves(p: Page, ctx: dict[str, Any], out_dir: Path) -> None:
    state = JobState(out_dir)
    for b, block in zip(p.blocks, ctx["blocks"]):
        for i, row in enumerate(block["rows"]):
            for j, c in enumerate(row["cells"]):
                if c is not None and c["status"] not in ("pending", "invalid"):
                    c["curve"] = curve_data(read_curve(state.curve_path(b.cells[(i, j)].name)))


def _span(values: list[Any], a: int, b: int) -> str:
    if not values:
        return ""
    return f"{values[a].label} … {values[b - 1].label}" if b - a > 1 else values[a].label


def _index_context(layout: Layout, names: list[tuple[str, str]], views: list[PairView]) -> dict[str, Any]:
    page_of = {id(v): p for p in layout.pages for v in p.views}
    page_of_block = layout.page_of_block()
    sections = []
    for s in layout.sections:
        lines = []
        for (a, b), line in zip(s.row_blocks, s.blocks):
            cells = []
            for block in line:
                page = page_of_block[id(block)]
                frag = f"#block-{page.blocks.index(block) + 1}"
                cells.append(
                    {
                        "number": page.number,
                        "href": names[page.number - 1][0] + frag,
                        "sheet": names[page.number - 1][1],
                        "counts": ", ".join(f"{n} {st}" for st, n in counts(list(block.cells.values()))),
                    }
                )
            lines.append({"head": _span(s.rows, a, b), "pages": cells})
        sections.append(
            {
                "title": " · ".join(t for t in (s.group, s.title) if t),
                "row_axis": s.row_axis or layout.row_axis,
                "column_axis": s.column_axis or layout.column_axis,
                "col_heads": [_span(s.columns, a, b) for a, b in s.col_blocks],
                "lines": lines,
            }
        )

    def href(v: PairView) -> str | None:
        page = page_of.get(id(v))
        return f"{names[page.number - 1][0]}#{anchor(v.name)}" if page else None

    failed, total = problems(views, href)
    return {"sections": sections, "problems": failed, "problems_total": total}


def write_index(run: Pages) -> None:
    """report.html of a report of several pages: the index of its pages and the failed pairs."""
    html = _ENV.get_template("index.html.j2").render(
        **run.base_ctx,
        **_index_context(run.layout, run.names, run.views),
        made=_now(),
        total=len(run.views),
        counts=counts(run.views),
        scope="",
    )
    write_cache_file(run.report_dir / "report.html", html.encode("utf-8", "replace"))
