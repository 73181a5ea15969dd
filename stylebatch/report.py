"""`stylebatch report OUT_DIR`: the job as a matrix of results (see matrix.py), in HTML pages and
contact sheets under `<out>/.stylebatch/report/` (pair names cannot start with '.', so nothing
there can collide with an output):

    report.html          the whole job when it fits one page; otherwise the index of the pages
    page-0001.html ...   one block of rows x columns of a section each (only when there are several)
    contact_sheet.jpg    the page's matrix as one image (sheet-0001.jpg ... for several pages)
    thumbs/              small copies of every image shown (thumbs.py)
    pages.json           what each page was made from: an unchanged page is not made again

Cells: the result's thumbnail (linked to the output), status, final losses, evaluations, seconds,
the loss curve (inline SVG) and the error of a failed pair; a running pair shows its evaluations
done and its latest snapshot (`save_every`). Pages are rendered from the Jinja2 templates in
`templates/` (autoescaped). While the job runs, rank 0 rewrites the report every `report_every`
minutes (LiveReport) and the pages reload themselves.

It reads only files: `.stylebatch/job.json`, the pairs' records and loss curves, the images; it
never loads torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jinja2

from stylebatch.curves import CURVE_FILE, read_curve
from stylebatch.errors import StylebatchError
from stylebatch.jobfile import JobFile, read_job_file
from stylebatch.matrix import Axes, Layout, Page, PairView, build_layout, fmt
from stylebatch.report_cells import CURVE_POINTS, SERIES, anchor, cell, counts, curve_data, head, href, problems
from stylebatch.sheet import SheetGeometry, render_sheet
from stylebatch.state import INVALID_PREFIX, STATE_DIR, JobState, effective_status
from stylebatch.thumbs import THUMB, Thumbs, write_cache_file

REPORT_DIR = "report"
SHOWN = ("size", "steps", "optimizer", "lr", "content_weight", "style_weight", "tv_weight", "init", "format")
ACTIVE = ("pending", "running", "interrupted")
SHOWN_RECORD = ("steps_done", "steps", "losses", "seconds", "error", "updated")  # what a cell uses of a record
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("stylebatch", "templates"), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


# ---------------------------------------------------------------- reading the job directory


def _snapshot(pair_dir: str) -> Path | None:
    """The newest `iter_<n>.png` of a pair (save_every), or None."""
    best, best_n = None, -1
    try:
        with os.scandir(pair_dir) as it:
            for e in it:
                n = e.name[5:-4]
                if e.name.startswith("iter_") and e.name.endswith(".png") and n.isdigit() and int(n) > best_n:
                    best, best_n = Path(e.path), int(n)
    except OSError:
        return None
    return best


def load_views(out_dir: Path) -> tuple[JobFile, list[PairView]]:
    """The job file and one view per pair of it, in manifest order (one record read per pair)."""
    state = JobState(out_dir)
    job = read_job_file(state.root)
    if job is None:
        raise StylebatchError(f"{out_dir}: not a stylebatch output directory (no {STATE_DIR}/job.json)")
    invalid = {}
    for name in state.names():
        if name.startswith(INVALID_PREFIX):
            record = state.read(name) or {}
            invalid[record.get("entry")] = record
    views = []
    now = time.time()
    for e in job.entries:
        bad = invalid.get(e.entry) if e.entry else None
        record = (bad if bad is not None else state.read(e.name)) or {}
        if bad is not None or not e.has_config:
            status = "invalid"
        else:
            status = effective_status(record, now) if record else "pending"
        styles = [job.resolve(s) for s in (e.styles or [e.style])]
        shown = {k: record[k] for k in SHOWN_RECORD if k in record}  # the rest of a record, ~1 KB, is not shown
        view = PairView(e.name, e.entry, job.resolve(e.content), [s for s in styles if s is not None],
                        e.overrides or {}, status, shown, has_config=e.has_config)
        if status == "done":
            out_name = record.get("output") or f"{e.name}.{job.value(e, 'format') or 'png'}"
            out = out_dir / out_name
            view.output = out if os.path.isfile(out) else None
        elif status in ("running", "interrupted"):
            view.snapshot = _snapshot(f"{state.root}/pairs/{e.name}")
        views.append(view)
    return job, views


# ---------------------------------------------------------------- the whole report


@dataclass
class ReportResult:
    html: Path
    sheets: list[Path]
    pairs: int
    counts: dict[str, int]
    pages: int
    made: int  # pages (and their sheets) written this time; the others were unchanged
    geometry: SheetGeometry | None  # the first page's sheet, when made this time
    layout: Layout


def _digest(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _template_version() -> str:
    sources = [_ENV.loader.get_source(_ENV, n)[0] for n in ("base.html.j2", "page.html.j2", "index.html.j2")]
    return _digest([sources, THUMB, CURVE_POINTS, Path(__file__).stat().st_mtime_ns])


@contextlib.contextmanager
def _locked(report_dir: Path) -> Iterator[None]:
    """One report writer at a time (the live report's child, a `stylebatch report` by hand): one
    could otherwise prune the thumbnails the other just linked."""
    report_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(report_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_report(out_dir: str | Path, columns: str = "auto", rows: str = "auto",
                 live_every: float | None = None, workers: int = 1) -> ReportResult:
    """Write the report under `<out>/.stylebatch/report/`. `live_every` (seconds): written for the
    running job (live_report.py), so pages of a job with work left reload themselves at that
    interval; otherwise they reload only while a pair's owner is alive. `workers` > 1 makes the
    changed pages in that many forked processes (the CLI; never inside a run, which has threads)."""
    out_dir = Path(out_dir)
    job, views = load_views(out_dir)
    layout = build_layout(views, Axes(job.keys, job.defaults, job.bookkeeping), columns, rows)
    report_dir = JobState(out_dir).root / REPORT_DIR
    with _locked(report_dir):
        run = _Pages(job, views, layout, report_dir, out_dir, Thumbs(report_dir / "thumbs"), live_every)
        cache_file = report_dir / "pages.json"
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        version = _template_version()
        old = cache.get("pages", {}) if cache.get("version") == version else {}
        new, todo = {}, []
        for p in layout.pages:
            html_name, sheet_name = run.names[p.number - 1]
            new[html_name] = run.signature(p)
            if old.get(html_name) == new[html_name] and (report_dir / html_name).is_file() \
                    and (report_dir / sheet_name).is_file():
                run.keep(p)
            else:
                todo.append(p)
        geometry = None
        for geo, used, made in _render_all(run, todo, workers):
            run.thumbs.used |= used
            run.thumbs.existing.update(made)
            geometry = geometry or geo
        if len(layout.pages) > 1:
            html = _ENV.get_template("index.html.j2").render(**run.base_ctx, **_index_context(layout, run.names, views),
                                                             made=_now(), total=len(views), counts=counts(views),
                                                             scope="")
            write_cache_file(report_dir / "report.html", html.encode("utf-8", "replace"))
        _remove_stale(report_dir, {n for pair in run.names for n in pair} | {"report.html"})
        write_cache_file(cache_file, json.dumps({"version": version, "pages": new}).encode())
        run.thumbs.prune()
    return ReportResult(report_dir / "report.html", [report_dir / s for _, s in run.names], len(views),
                        dict(counts(views)), len(layout.pages), len(todo), geometry, layout)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _stat(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st else None


class _Pages:
    """What every page of one report is made from (shared, by fork, with the page writers)."""

    def __init__(self, job: JobFile, views: list[PairView], layout: Layout, report_dir: Path, out_dir: Path,
                 thumbs: Thumbs, live_every: float | None):
        self.job, self.views, self.layout, self.thumbs = job, views, layout, thumbs
        self.report_dir, self.out_dir = report_dir, out_dir
        pages = layout.pages
        self.names = [("report.html", "contact_sheet.jpg")] if len(pages) == 1 else \
            [(f"page-{p.number:04d}.html", f"sheet-{p.number:04d}.jpg") for p in pages]
        active = any(v.status == "running" for v in views) or (live_every and any(v.status in ACTIVE for v in views))
        common = [(k, fmt(job.defaults[k])) for k in SHOWN if k in job.defaults and k not in layout.varied]
        self.base_ctx = {
            "manifest": job.manifest, "weights": job.weights, "row_axis": layout.row_axis,
            "column_axis": layout.column_axis, "section_axes": layout.section_axes, "varied": layout.varied,
            "common": common, "series": list(SERIES.items()), "thumb": THUMB, "page_count": len(pages),
            "refresh": max(10, round(live_every or 60)) if active else None,
            "title": f"stylebatch report: {out_dir.resolve().name}"}

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
        cells = [(b.section, [r.label for r in b.rows], [c.label for c in b.columns],
                  sorted((i, j, v.name, v.status, v.record) for (i, j), v in b.cells.items())) for b in p.blocks]
        return _digest([self.base_ctx, self.names[p.number - 1], len(self.names), cells,
                        [(str(path), _stat(path)) for path in self._images(p)]])

    def keep(self, p: Page) -> None:
        """An unchanged page: its thumbnails stay (they are in use)."""
        for path in self._images(p):
            self.thumbs.get(path)

    def render(self, p: Page) -> SheetGeometry:
        html_name, sheet_name = self.names[p.number - 1]
        single = len(self.names) == 1
        ctx = _page_context(p, self.layout, self.base_ctx, self.report_dir, self.out_dir, self.thumbs, self.job)
        ctx.update(sheet=sheet_name, number=p.number, index=None if single else "report.html",
                   prev=self.names[p.number - 2][0] if p.number > 1 else None,
                   next=self.names[p.number][0] if p.number < len(self.names) else None)
        if single:
            ctx["problems"], ctx["problems_total"] = problems(self.views, lambda v: None)
        _add_curves(p, ctx, self.out_dir)
        html = _ENV.get_template("page.html.j2").render(
            **ctx, made=_now(), total=len(p.views), counts=counts(p.views),
            scope="" if single else f"page {p.number} of {len(self.names)}: ")
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


def _render_all(run: _Pages, pages: list[Page], workers: int) -> Iterator[tuple[SheetGeometry, set[str], dict]]:
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


def _page_context(p: Page, layout: Layout, base_ctx: dict[str, Any], report_dir: Path, out_dir: Path,
                  thumbs: Thumbs, job: JobFile) -> dict[str, Any]:
    col_axis, row_axis = base_ctx["column_axis"], base_ctx["row_axis"]
    blocks, previous = [], None
    for k, b in enumerate(p.blocks):
        rows = []
        for i, row in enumerate(b.rows):
            cells = []
            for j in range(len(b.columns)):
                v = b.cells.get((i, j))
                steps = v.values.get("steps", job.defaults.get("steps")) if v is not None else None
                cells.append(cell(v, report_dir, out_dir, thumbs, steps) if v is not None else None)
            rows.append({"head": head(row, row_axis, report_dir, thumbs), "cells": cells})
        section = layout.sections[b.section]
        image = thumbs.get(section.image)
        blocks.append({"anchor": f"block-{k + 1}", "title": section.title if section.title != previous else None,
                       "image": {"src": href(image.path, report_dir), "w": image.width, "h": image.height,
                                 "href": href(section.image, report_dir)} if image else None,
                       "rows": rows, "columns": [head(c, col_axis, report_dir, thumbs) for c in b.columns]})
        previous = section.title
    return {**base_ctx, "blocks": blocks, "problems": [], "problems_total": 0}


def _add_curves(p: Page, ctx: dict[str, Any], out_dir: Path) -> None:
    state = JobState(out_dir)
    for b, block in zip(p.blocks, ctx["blocks"]):
        for i, row in enumerate(block["rows"]):
            for j, c in enumerate(row["cells"]):
                if c is not None and c["status"] not in ("pending", "invalid"):
                    c["curve"] = curve_data(read_curve(state.pair_dir(b.cells[(i, j)].name) / CURVE_FILE))


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
                cells.append({"number": page.number, "href": names[page.number - 1][0] + frag,
                              "sheet": names[page.number - 1][1],
                              "counts": ", ".join(f"{n} {st}" for st, n in counts(list(block.cells.values())))})
            lines.append({"head": _span(s.rows, a, b), "pages": cells})
        sections.append({"title": s.title, "col_heads": [_span(s.columns, a, b) for a, b in s.col_blocks], "lines": lines})

    def href(v: PairView) -> str | None:
        page = page_of.get(id(v))
        return f"{names[page.number - 1][0]}#{anchor(v.name)}" if page else None

    failed, total = problems(views, href)
    return {"sections": sections, "problems": failed, "problems_total": total}


def _remove_stale(report_dir: Path, keep: set[str]) -> None:
    """Pages and sheets of an earlier, larger report (and the PNG sheet of earlier versions)."""
    for f in report_dir.iterdir():
        stale = f.name.startswith(("page-", "sheet-")) or f.name == "contact_sheet.png" or f.name == "contact_sheet.jpg"
        if stale and f.name not in keep and f.is_file():
            f.unlink(missing_ok=True)
