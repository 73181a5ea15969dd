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
`templates/` (autoescaped; report_pages.py), only those that changed. While the job runs, rank 0
rewrites the report every `report_every` minutes (LiveReport) and the pages reload themselves.

It reads only files: `.stylebatch/job.json`, the pairs' records and loss curves, the images; it
never loads torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stylebatch.errors import StylebatchError
from stylebatch.job.jobfile import JobFile, read_job_file
from stylebatch.job.pairs import output_name
from stylebatch.jobdir.state import STATE_DIR, JobState
from stylebatch.report.cells import counts
from stylebatch.report.matrix import Axes, Layout, PairView, build_layout
from stylebatch.report.pages import Pages, render_all, template_version, write_index
from stylebatch.report.rows import job_records
from stylebatch.report.sheet import SheetGeometry
from stylebatch.report.thumbs import Thumbs, write_cache_file

OWN_PAGE = re.compile(r"(page-\d{4,}\.html|sheet-\d{4,}\.(jpg|png)|contact_sheet\.(jpg|png))")  # names pages.py gives
SHOWN_RECORD = ("steps_done", "steps", "losses", "seconds", "error", "updated")  # what a cell uses of a record


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
    job = read_job_file(state.job_file)
    if job is None:
        raise StylebatchError(f"{out_dir}: not a stylebatch output directory (no {STATE_DIR}/job.json)")
    views = []
    for e, record, status in job_records(state, job):
        styles = [job.resolve(s) for s in (e.styles or [e.style])]
        shown = {k: record[k] for k in SHOWN_RECORD if k in record}  # the rest of a record, ~1 KB, is not shown
        view = PairView(
            e.name,
            e.entry,
            job.resolve(e.content),
            [s for s in styles if s is not None],
            e.overrides or {},
            status,
            shown,
            has_config=e.has_config,
        )
        if status == "done":
            out_name = record.get("output") or output_name(e.name, job.value(e, "format") or "png")
            out = out_dir / out_name
            view.output = out if os.path.isfile(out) else None
        elif status in ("running", "interrupted"):
            view.snapshot = _snapshot(str(state.pair_dir(e.name)))
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


@contextlib.contextmanager
def _locked(state: JobState, report_dir: Path) -> Iterator[None]:
    """One report writer at a time (the live report's child, a `stylebatch report` by hand): one
    could otherwise prune the thumbnails the other just linked."""
    state.ensure_dir(report_dir)
    fd = os.open(report_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_report(
    out_dir: str | Path, columns: str = "auto", rows: str = "auto", live_every: float | None = None, workers: int = 1
) -> ReportResult:
    """Write the report under `<out>/.stylebatch/report/`. `live_every` (seconds): written for the
    running job (live_report.py), so pages of a job with work left reload themselves at that
    interval; otherwise they reload only while a pair's owner is alive. `workers` > 1 makes the
    changed pages in that many forked processes (the CLI; never inside a run, which has threads)."""
    out_dir = Path(out_dir)
    state = JobState(out_dir)
    report_dir = state.report_dir
    # Nothing read or written through a link: one planted at `.stylebatch/`, the report directory
    # or anything in it is refused with one line naming it.
    state.check_links(report_dir)
    job, views = load_views(out_dir)
    layout = build_layout(views, Axes(job.keys, job.defaults, job.bookkeeping), columns, rows)
    with _locked(state, report_dir):
        run = Pages(job, views, layout, report_dir, out_dir, Thumbs(report_dir / "thumbs"), live_every)
        cache_file = report_dir / "pages.json"
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        version = template_version(__file__)
        old = cache.get("pages", {}) if cache.get("version") == version else {}
        new, todo = {}, []
        for p in layout.pages:
            html_name, sheet_name = run.names[p.number - 1]
            new[html_name] = run.signature(p)
            if (
                old.get(html_name) == new[html_name]
                and (report_dir / html_name).is_file()
                and (report_dir / sheet_name).is_file()
            ):
                run.keep(p)
            else:
                todo.append(p)
        geometry = None
        for geo, used, made in render_all(run, todo, workers):
            run.thumbs.used |= used
            run.thumbs.existing.update(made)
            geometry = geometry or geo
        if len(layout.pages) > 1:
            write_index(run)
        _remove_stale(report_dir, {n for pair in run.names for n in pair} | {"report.html"})
        write_cache_file(cache_file, json.dumps({"version": version, "pages": new}).encode())
        run.thumbs.prune()
    return ReportResult(
        report_dir / "report.html",
        [report_dir / s for _, s in run.names],
        len(views),
        dict(counts(views)),
        len(layout.pages),
        len(todo),
        geometry,
        layout,
    )


def _remove_stale(report_dir: Path, keep: set[str]) -> None:
    """Pages and sheets of an earlier, larger report (and the PNG sheet of earlier versions): only
    files named exactly as the report names them, never another file that happens to be there."""
    for f in report_dir.iterdir():
        if f.name not in keep and OWN_PAGE.fullmatch(f.name) and f.is_file() and not f.is_symlink():
            f.unlink(missing_ok=True)
