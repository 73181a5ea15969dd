"""What one cell of the report shows, one row or column head, one line of the failed list; and
the loss curve as a small SVG. Plain dicts for the templates (`templates/page.html.j2`), which
escape every value."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stylebatch.jobdir.curves import X_COLUMN
from stylebatch.report.matrix import IMAGE_AXES, PairView, Value, fmt
from stylebatch.report.thumbs import Thumbs

CURVE_POINTS = 24  # a curve is drawn with at most this many points (it is 40 px tall)
SERIES = {"content": "#1f77b4", "style": "#e4572e", "total": "#333333"}
MAX_PROBLEMS = 200  # failed pairs listed by name on a page; `status` lists them all
ERROR_CHARS = 400  # an error is cut to this length in its cell


def href(target: Path, base: Path) -> str:
    # The file's own bytes, %-escaped: a name that is not UTF-8 still links to its file.
    return quote(os.fsencode(os.path.relpath(target, base).replace(os.sep, "/")))


# The curve's chart, in SVG user units (drawn at the cell's width, 0.55 as tall): the plot area
# inside, the y axis' decade labels to its left and the evaluation counts under it.
CHART_W, CHART_H = 220, 120
PLOT = (34, 6, 214, 96)  # left, top, right, bottom


def _decade(e: int) -> str:
    return {-2: "0.01", -1: "0.1", 0: "1", 1: "10", 2: "100", 3: "1000"}.get(e, f"1e{e}")


def curve_data(rows: list[dict[str, float]]) -> dict[str, Any] | None:
    """Content, style and total loss against evaluations on a log y axis, as a small labelled chart:
    polylines in the plot area, a gridline and label at each power of ten the losses span (or at
    their ends when they span less than one), the first and last evaluation counts under the x axis."""
    if not rows:
        return None
    if len(rows) > CURVE_POINTS:
        step = (len(rows) - 1) / (CURVE_POINTS - 1)
        rows = [rows[round(i * step)] for i in range(CURVE_POINTS)]
    series = [k for k in SERIES if k in rows[0]]
    values = [r[k] for r in rows for k in series if r[k] > 0 and math.isfinite(r[k])]
    if not values:
        return None
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    left, top, right, bottom = PLOT
    x0, x1 = rows[0][X_COLUMN], rows[-1][X_COLUMN]
    xs = [round(left + (right - left) * ((r[X_COLUMN] - x0) / (x1 - x0) if x1 > x0 else 1.0), 1) for r in rows]
    floor, span = 10**lo, (bottom - top) / (hi - lo)

    def y(v: float) -> float:
        return round(top + span * (hi - math.log10(max(v, floor))), 1)

    lines = []
    for k in series:
        ys = [y(r[k]) if math.isfinite(r[k]) else bottom for r in rows]
        lines.append((SERIES[k], " ".join(f"{a},{b}" for a, b in zip(xs, ys))))
    decades = list(range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1))
    if len(decades) > 4:  # at most four labels: every other power of ten, and so on
        decades = decades[:: math.ceil(len(decades) / 4)]
    ticks = [(y(10.0**e), _decade(e)) for e in decades] or [(y(10**hi), f"{10**hi:.2g}"), (y(10**lo), f"{10**lo:.2g}")]
    first, last = rows[0], rows[-1]
    title = "; ".join(f"{k} {first[k]:.3g} → {last[k]:.3g}" for k in series)
    title += f" (evaluations {int(x0)}–{int(x1)}; log scale)"
    return {
        "w": CHART_W,
        "h": CHART_H,
        "plot": {"left": left, "top": top, "right": right, "bottom": bottom},
        "ticks": ticks,
        "x_labels": (f"{int(x0)}", f"{int(x1)} evaluations"),
        "title": title,
        "lines": lines,
    }


def anchor(name: str) -> str:
    return "pair-" + quote(name.encode("utf-8", "surrogateescape"), safe="")


def cell(v: PairView, base: Path, out_dir: Path, thumbs: Thumbs, steps: Any) -> dict[str, Any]:
    r = v.record
    done = int(r.get("steps_done") or 0)
    total = r.get("steps") or steps
    shown = v.output if v.output is not None else v.snapshot
    thumb = thumbs.get(shown)
    badge = v.status
    if v.status in ("running", "interrupted") and total:
        badge = f"{v.status} {done}/{total}"
    stats = []
    losses = r.get("losses") if v.status == "done" else None  # their meaning: LOSS_NOTE, atop the page
    if losses:
        stats += [
            f"content {fmt(float(losses.get('content', float('nan'))))}",
            f"style {fmt(float(losses.get('style', float('nan'))))}",
        ]
    if v.status == "done" and done:
        stats.append(f"{done} evals")
    if r.get("seconds") and v.status == "done":
        stats.append(f"{float(r['seconds']):.1f} s")
    if v.snapshot is not None and v.output is None:
        stats.append(f"snapshot {v.snapshot.stem.removeprefix('iter_')}")
    error = r.get("error") if v.failed else None
    return {
        "name": v.name,
        "status": v.status,
        "badge": badge,
        "anchor": anchor(v.name),
        "href": href(shown, base) if shown is not None else None,
        "thumb": {"src": href(thumb.path, base), "w": thumb.width, "h": thumb.height} if thumb else None,
        "placeholder": {"done": "output missing"}.get(v.status, v.status),
        "progress": round(100 * min(done, total) / total) if v.status in ("running", "interrupted") and total else None,
        "stats": " · ".join(stats),
        "error": error[:ERROR_CHARS] + ("…" if len(error) > ERROR_CHARS else "") if error else None,
        "curve": None,
    }


def head(value: Value, axis: str, base: Path, thumbs: Thumbs) -> dict[str, Any]:
    thumb = thumbs.get(value.image) if axis in IMAGE_AXES else None
    return {
        "label": value.label,
        "key": None if axis in IMAGE_AXES else axis,
        "href": href(value.image, base) if thumb is not None else None,
        "thumb": {"src": href(thumb.path, base), "w": thumb.width, "h": thumb.height} if thumb else None,
    }


def counts(views: list[PairView]) -> list[tuple[str, int]]:
    found: dict[str, int] = {}
    for v in views:
        found[v.status] = found.get(v.status, 0) + 1
    order = ("done", "running", "interrupted", "pending", "failed", "invalid")
    return sorted(found.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


def problems(views: list[PairView], href: Callable[[PairView], str | None]) -> tuple[list[dict[str, Any]], int]:
    failed = [v for v in views if v.failed]
    return (
        [
            {
                "name": v.name,
                "entry": v.entry,
                "error": v.record.get("error") or "",
                "href": href(v),
                "anchor": anchor(v.name),
            }
            for v in failed[:MAX_PROBLEMS]
        ],
        len(failed),
    )
