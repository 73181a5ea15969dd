"""`stylebatch report OUT_DIR`: one HTML page and one contact sheet of a job's results.

Written under `<out>/.stylebatch/report/` (pair names cannot start with '.', so nothing there can
collide with an output):

    report.html          pairs grouped by style (or content); per pair its thumbnails, settings,
                         final losses, evaluations, time, status, error and loss curve (inline SVG)
    contact_sheet.png    the same grid as one image, at most SHEET_MAX px a side
    thumbs/*.jpg         small copies (THUMB px), lazy-loaded by the page, cached by file and mtime

Layout: one row per (content, style) of a group; the config key that the job varies (a grid's
`style_weight: [10, 100, 1000]`) becomes the columns, so a sweep reads across. With several varied
keys the first (in Config order, or `columns=`) makes the columns and the others label the rows; when
no row would hold two cells (every pair its own settings), the page is a plain list instead.

It reads only files: `.stylebatch/job.json` (the pairs, their inputs and configs), the pairs' state
records and loss curves, and the images; it never loads torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin

from stylebatch.atomic import atomic_write
from stylebatch.config import FIELDS
from stylebatch.curves import CURVE_FILE, X_COLUMN, read_curve
from stylebatch.errors import StylebatchError
from stylebatch.state import STATE_DIR, JobState, effective_status

REPORT_DIR = "report"
THUMB = 160  # longest side of a thumbnail, px
SHEET_MAX = 4096  # longest side of the contact sheet, px
SHEET_GAP = 8  # px between blocks of columns when the sheet wraps
CAPTION_MIN_CELL = 64  # cells smaller than this get no caption line
CAPTION = 16  # caption line height, px
CURVE_POINTS = 60  # a curve is drawn with at most this many points
SERIES = {"content": "#1f77b4", "style": "#e4572e", "total": "#333333"}
STATUS_COLOURS = {"done": (34, 34, 34), "failed": (110, 30, 30), "invalid": (110, 30, 30)}


@dataclass
class PairView:
    """One pair as the report shows it."""

    name: str
    entry: str
    content: Path | None
    style: Path | None
    config: dict[str, Any] | None
    status: str  # done, failed, invalid, interrupted, running, pending
    error: str | None
    record: dict[str, Any]
    output: Path | None  # the output file, when it exists
    curve: list[dict[str, float]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "invalid")


@dataclass
class Row:
    content: Path | None
    style: Path | None
    labels: dict[str, Any]  # other varied keys' values
    cells: list[PairView | None]


@dataclass
class Group:
    title: str
    path: Path | None
    rows: list[Row]


@dataclass
class Layout:
    group_by: str
    column_key: str | None
    columns: list[Any]
    groups: list[Group]
    varied: list[str]


@dataclass
class SheetGeometry:
    """The contact sheet's grid: rows of (content, style, one cell per column), wrapped into
    `blocks` side by side when there are many rows, cells `cell` px square plus a caption line."""

    rows: int
    cells_per_row: int
    blocks: int
    cell: int
    caption: int

    @property
    def block_rows(self) -> int:
        return math.ceil(self.rows / self.blocks) if self.rows else 0

    @property
    def width(self) -> int:
        return self.blocks * self.cells_per_row * self.cell + (self.blocks - 1) * SHEET_GAP

    @property
    def height(self) -> int:
        return self.caption + self.block_rows * (self.cell + self.caption)


def sheet_geometry(rows: int, columns: int, limit: int = SHEET_MAX) -> SheetGeometry:
    """The largest cell (up to THUMB) that fits `rows` x (2 + `columns`) cells within `limit` px a
    side, trying every number of side-by-side blocks; fewer blocks win ties."""
    per_row = 2 + columns
    best = SheetGeometry(rows, per_row, 1, 8, 0)
    for blocks in range(1, max(1, rows) + 1):
        block_rows = math.ceil(rows / blocks) if rows else 0
        cell = min(THUMB, (limit - (blocks - 1) * SHEET_GAP) // (blocks * per_row))
        while cell >= 8:
            caption = CAPTION if cell >= CAPTION_MIN_CELL else 0
            if caption + block_rows * (cell + caption) <= limit:
                break
            cell -= 1
        if cell > best.cell:
            best = SheetGeometry(rows, per_row, blocks, cell, CAPTION if cell >= CAPTION_MIN_CELL else 0)
        if cell < 8 and blocks * per_row * 8 > limit:
            break
    return best


# ---------------------------------------------------------------- reading the job directory


def _resolve(path: str | None, cwd: Path) -> Path | None:
    if not path or path == "None":
        return None
    p = Path(path)
    return p if p.is_absolute() else cwd / p


def load_views(out_dir: Path) -> tuple[dict[str, Any], list[PairView]]:
    """The job file and one view per pair of it, in manifest order."""
    state = JobState(out_dir)
    job_file = state.root / "job.json"
    try:
        job = json.loads(job_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StylebatchError(f"{out_dir}: not a stylebatch output directory (no {STATE_DIR}/job.json)") from None
    except (OSError, ValueError) as e:
        raise StylebatchError(f"{job_file}: unreadable ({e})") from None
    cwd = Path(job.get("cwd") or os.getcwd())
    invalid = {r.get("entry"): r for r in state.records() if r["name"].startswith("_invalid_")}
    views = []
    for p in job.get("pairs", []):
        name = str(p.get("name"))
        entry = str(p.get("entry") or "")
        bad = invalid.get(entry) if entry else None
        record = (bad if bad is not None else state.read(name)) or {}
        if bad is not None:
            status = "invalid"
        else:
            status = effective_status(record) if record else "pending"
        cfg = p.get("config") or None
        out_name = record.get("output") if bad is None else None
        if not out_name and cfg:
            out_name = f"{name}.{cfg.get('format', 'png')}"
        output = out_dir / out_name if out_name and bad is None else None
        views.append(PairView(
            name=name, entry=entry, content=_resolve(p.get("content"), cwd), style=_resolve(p.get("style"), cwd),
            config=cfg, status=status, error=record.get("error") if status in ("failed", "invalid") else None,
            record=record, output=output if output is not None and output.is_file() else None,
            curve=read_curve(state.pair_dir(name) / CURVE_FILE) if bad is None else [],
        ))
    return job, views


# ---------------------------------------------------------------- layout


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, _key(value))


def varied_keys(views: list[PairView]) -> list[str]:
    """Config keys with more than one value among the pairs, in Config order."""
    configs = [v.config for v in views if v.config]
    return [k for k in FIELDS if len({_key(c.get(k)) for c in configs}) > 1]


def build_layout(views: list[PairView], group_by: str = "style", columns: str = "auto") -> Layout:
    if group_by not in ("style", "content"):
        raise StylebatchError(f"--group-by must be style or content, got {group_by!r}")
    varied = varied_keys(views)
    if columns == "auto":
        column_key = varied[0] if varied else None
    elif columns == "none":
        column_key = None
    elif columns in varied:
        column_key = columns
    else:
        choice = ", ".join(varied) if varied else "none: every pair has the same config"
        raise StylebatchError(f"--columns {columns}: not a key this job varies (varied: {choice})")
    layout = _arrange(views, group_by, column_key, varied)
    if columns == "auto" and column_key and not any(sum(c is not None for c in r.cells) > 1
                                                    for g in layout.groups for r in g.rows):
        layout = _arrange(views, group_by, None, varied)  # no row would hold two cells: a plain list reads better
    return layout


def _arrange(views: list[PairView], group_by: str, column_key: str | None, varied: list[str]) -> Layout:
    col_values: list[Any] = [None]
    if column_key:
        found = {_key(v.config.get(column_key)): v.config.get(column_key) for v in views if v.config}
        col_values = sorted(found.values(), key=_sort_key)
    col_index = {_key(v): i for i, v in enumerate(col_values)}
    others = [k for k in varied if k != column_key]

    groups: dict[str, Group] = {}
    rows: dict[tuple, Row] = {}
    for v in views:
        gpath = v.style if group_by == "style" else v.content
        gkey = str(gpath)
        if gkey not in groups:
            groups[gkey] = Group(f"{group_by}: {gpath.name if gpath else '(none)'}", gpath, [])
        labels = {k: v.config.get(k) for k in others} if v.config else {}
        if column_key and v.config:
            col = col_index[_key(v.config.get(column_key))]
        else:
            col = 0
        rkey = (gkey, str(v.content), str(v.style), _key(labels))
        # A pair whose cell is taken (no varied key to tell them apart, or no config) gets a row of its own.
        if rkey in rows and rows[rkey].cells[col] is not None:
            rkey = (*rkey, v.name)
        if rkey not in rows:
            rows[rkey] = Row(v.content, v.style, labels, [None] * len(col_values))
            groups[gkey].rows.append(rows[rkey])
        rows[rkey].cells[col] = v
    ordered = sorted(groups.values(), key=lambda g: g.title)
    other = "content" if group_by == "style" else "style"
    for g in ordered:
        g.rows.sort(key=lambda r: (str(getattr(r, other)), _key(r.labels)))
    return Layout(group_by, column_key, col_values, ordered, varied)


# ---------------------------------------------------------------- thumbnails


class Thumbs:
    """Small JPEG copies in `directory`, named by the source's path, size and mtime (so a changed
    file gets a new one and an unchanged one is never redone); unused ones are removed by `prune`."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.used: dict[str, Path] = {}

    def get(self, src: Path | None) -> Path | None:
        if src is None:
            return None
        try:
            st = src.stat()
        except OSError:
            return None
        ident = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        key = hashlib.sha1(ident.encode()).hexdigest()[:20] + ".jpg"
        path = self.dir / key
        if not path.exists():
            try:
                with Image.open(src) as im:
                    im.draft("RGB", (THUMB, THUMB))  # JPEG: decode at reduced size
                    im = ImageOps.exif_transpose(im)
                    im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
                    rgb = _flatten(im)
            except Exception:  # noqa: BLE001 (a missing or broken input shows as missing, never fails the report)
                return None
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=85)
            atomic_write(path, buf.getvalue())
        self.used[key] = path
        return path

    def prune(self) -> None:
        for stale in self.dir.glob("*.jpg"):
            if stale.name not in self.used:
                stale.unlink(missing_ok=True)


def _flatten(im: Image.Image) -> Image.Image:
    """Any mode → RGB, transparency over white."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB")


# ---------------------------------------------------------------- HTML


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e7 else f"{x:.4g}"  # 10000, not 1e+04
    if isinstance(x, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in x.items())
    return str(x)


def _href(target: Path, base: Path) -> str:
    rel = os.path.relpath(target, base)
    return quote(rel.replace(os.sep, "/"))


def _img(thumb: Path | None, base: Path, alt: str) -> str:
    if thumb is None:
        return f'<div class="missing">{html.escape(alt)}<br>not available</div>'
    with Image.open(thumb) as im:
        w, h = im.size
    scale = THUMB / max(w, h)  # small images are shown at thumbnail size too, so the grid stays even
    w, h = max(1, round(w * scale)), max(1, round(h * scale))
    return (f'<img src="{_href(thumb, base)}" loading="lazy" decoding="async" width="{w}" height="{h}" '
            f'alt="{html.escape(alt, quote=True)}">')


def _linked(full: Path | None, thumb: Path | None, base: Path, alt: str) -> str:
    img = _img(thumb, base, alt)
    if full is None or not full.exists():
        return img
    return f'<a href="{_href(full, base)}">{img}</a>'


def curve_svg(rows: list[dict[str, float]], width: int = 160, height: int = 56) -> str:
    """Content, style and total loss against evaluations, log scale, as one small inline SVG."""
    if len(rows) < 1:
        return ""
    if len(rows) > CURVE_POINTS:
        step = (len(rows) - 1) / (CURVE_POINTS - 1)
        rows = [rows[round(i * step)] for i in range(CURVE_POINTS)]
    series = [k for k in SERIES if k in rows[0]]
    values = [r[k] for r in rows for k in series if r[k] > 0 and math.isfinite(r[k])]
    if not values:
        return ""
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = rows[0][X_COLUMN], rows[-1][X_COLUMN]
    pad = 2

    def xy(r: dict[str, float], k: str) -> str:
        x = pad + (width - 2 * pad) * ((r[X_COLUMN] - x0) / (x1 - x0) if x1 > x0 else 1.0)
        y = pad + (height - 2 * pad) * (1 - (math.log10(max(r[k], 10 ** lo)) - lo) / (hi - lo))
        return f"{x:.1f},{y:.1f}"

    lines = []
    for k in series:
        points = " ".join(xy(r, k) for r in rows)
        lines.append(f'<polyline fill="none" stroke="{SERIES[k]}" stroke-width="1.3" points="{points}"/>')
    first, last = rows[0], rows[-1]
    title = "; ".join(f"{k} {first[k]:.3g} → {last[k]:.3g}" for k in series)
    title += f" (evaluations {int(x0)}–{int(x1)}; log scale 1e{lo:.1f}–1e{hi:.1f})"
    return (f'<svg class="curve" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f"<title>{html.escape(title)}</title>{''.join(lines)}</svg>")


def _settings_line(cfg: dict[str, Any] | None) -> str:
    if not cfg:
        return ""
    return (f"{cfg.get('size')} px · {cfg.get('steps')} × {cfg.get('optimizer')} · "
            f"α {_fmt(cfg.get('content_weight'))} · β {_fmt(cfg.get('style_weight'))}")


def _cell_html(v: PairView | None, out_dir: Path, base: Path, thumbs: Thumbs) -> str:
    if v is None:
        return '<td class="cell empty"></td>'
    parts = [_linked(v.output, thumbs.get(v.output), base, v.name)]
    parts.append(f'<div class="name">{html.escape(v.name)} <span class="st st-{v.status}">{v.status}</span></div>')
    losses = v.record.get("losses") or (v.curve[-1] if v.curve else None)
    stats = []
    if losses:
        stats.append(f"content {_fmt(float(losses.get('content', float('nan'))))}")
        stats.append(f"style {_fmt(float(losses.get('style', float('nan'))))}")
    done, steps = v.record.get("steps_done"), v.record.get("steps") or (v.config or {}).get("steps")
    if done is not None:
        stats.append(f"{done}/{steps} evals")
    if v.record.get("seconds"):
        stats.append(f"{float(v.record['seconds']):.1f} s")
    if stats:
        parts.append(f'<div class="stats">{" · ".join(stats)}</div>')
    if v.config:
        parts.append(f'<div class="settings">{html.escape(_settings_line(v.config))}</div>')
    parts.append(curve_svg(v.curve))
    if v.error:
        parts.append(f'<div class="error">{html.escape(v.error)}</div>')
    cls = "failed" if v.failed else v.status
    return f'<td class="cell c-{cls}" id="{html.escape(_anchor(v.name), quote=True)}">{"".join(parts)}</td>'


def _anchor(name: str) -> str:
    return "pair-" + quote(name, safe="")


CSS = """
body{font:13px/1.35 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}
table.grid{border-collapse:collapse}
.grid th{font-weight:600;text-align:left;padding:4px 6px;background:#eee;position:sticky;top:0}
.grid td{vertical-align:top;padding:6px;border:1px solid #ddd;background:#fff}
.grid td.input{width:164px;text-align:center;color:#555}
.cell{width:170px}.cell img,.input img{display:block;margin:0 auto 4px;background:#222;object-fit:contain}
.c-failed{background:#fff0f0!important}.c-interrupted,.c-pending,.c-running{background:#f6f6e8!important}
.name{font-weight:600;word-break:break-all}.stats,.settings{color:#555;font-size:12px}
.error{color:#a00;font-size:12px;white-space:pre-wrap;word-break:break-word}
.st{font-weight:400;font-size:11px;padding:0 4px;border-radius:3px;background:#ddd}
.st-done{background:#cdeccd}.st-failed,.st-invalid{background:#f3c0c0}
.missing{width:160px;height:60px;display:flex;align-items:center;justify-content:center;background:#eee;
 color:#888;font-size:11px;text-align:center;margin:0 auto 4px}
.labels{font-size:12px;color:#333;margin-top:4px}.curve{display:block;margin-top:4px;background:#fcfcfc}
.legend span{display:inline-block;width:14px;height:3px;margin:0 4px 3px 10px;vertical-align:middle}
ul.problems li{margin:2px 0}
"""


def render_html(out_dir: Path, job: dict[str, Any], views: list[PairView], layout: Layout, report_dir: Path,
                thumbs: Thumbs) -> str:
    base = report_dir
    counts: dict[str, int] = {}
    for v in views:
        counts[v.status] = counts.get(v.status, 0) + 1
    configs = [v.config for v in views if v.config]
    common = {k: configs[0].get(k) for k in FIELDS if configs and k not in layout.varied}
    shown = ("size", "steps", "optimizer", "lr", "content_weight", "style_weight", "tv_weight", "init", "format")
    title = f"stylebatch report: {out_dir.name}"
    h = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
         f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    h.append(f"<p>{len(views)} pairs: " + ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items()))
             + f" · manifest {html.escape(str(job.get('manifest', '')))} · weights "
             f"{html.escape(str(job.get('weights', '')))} · made {time.strftime('%Y-%m-%d %H:%M')}"
             f' · <a href="contact_sheet.png">contact sheet</a></p>')
    if common:
        items = " · ".join(f"{k} {html.escape(_fmt(common[k]))}" for k in shown if k in common)
        h.append(f"<p>Same for every pair: {items}. α content weight, β style weight.</p>")
    if layout.varied:
        h.append(f"<p>Varied: {html.escape(', '.join(layout.varied))}"
                 + (f"; columns: <b>{html.escape(layout.column_key)}</b>" if layout.column_key else "") + "</p>")
    h.append('<p class="legend">Loss curves (log scale, against evaluations):'
             + "".join(f'<span style="background:{c}"></span>{k}' for k, c in SERIES.items()) + "</p>")
    problems = [v for v in views if v.failed]
    if problems:
        h.append(f"<h2>Failed ({len(problems)})</h2><ul class=problems>")
        for v in problems:
            h.append(f'<li><a href="#{_anchor(v.name)}">{html.escape(v.name)}</a> '
                     f"({html.escape(v.entry)}): <span class=error>{html.escape(v.error or '')}</span></li>")
        h.append("</ul>")
    if len(layout.groups) > 1:
        h.append("<p>Groups: " + " · ".join(f'<a href="#group-{i}">{html.escape(g.title)}</a>'
                                           for i, g in enumerate(layout.groups)) + "</p>")
    col_heads = [("result" if layout.column_key is None else f"{layout.column_key} = {_fmt(c)}")
                 for c in layout.columns]
    for i, g in enumerate(layout.groups):
        h.append(f'<h2 id="group-{i}">{html.escape(g.title)}</h2><table class=grid><thead><tr>'
                 "<th>content</th><th>style</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in col_heads)
                 + "</tr></thead><tbody>")
        for r in g.rows:
            cells = []
            for role, path in (("content", r.content), ("style", r.style)):
                label = html.escape(path.name if path else "(none)")
                extra = ""
                if role == "style" and r.labels:
                    extra = '<div class="labels">' + "<br>".join(
                        f"{html.escape(k)} = {html.escape(_fmt(val))}" for k, val in r.labels.items()) + "</div>"
                cells.append(f'<td class="input">{_linked(path, thumbs.get(path), base, label)}{label}{extra}</td>')
            cells += [_cell_html(v, out_dir, base, thumbs) for v in r.cells]
            h.append("<tr>" + "".join(cells) + "</tr>")
        h.append("</tbody></table>")
    h.append("</body></html>")
    return "\n".join(h)


# ---------------------------------------------------------------- contact sheet


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_sheet(layout: Layout, thumbs: Thumbs, limit: int = SHEET_MAX) -> tuple[Image.Image, SheetGeometry]:
    rows = [r for g in layout.groups for r in g.rows]
    geo = sheet_geometry(len(rows), len(layout.columns), limit)
    sheet = Image.new("RGB", (max(1, geo.width), max(1, geo.height)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = _font(max(8, CAPTION - 5))
    t, cap = geo.cell, geo.caption
    heads = ["content", "style"] + [("result" if layout.column_key is None else f"{layout.column_key}={_fmt(c)}")
                                    for c in layout.columns]

    def cell(x: int, y: int, src: Path | None, caption: str, status: str = "done") -> None:
        bg = STATUS_COLOURS.get(status, (90, 90, 60))
        draw.rectangle([x + 1, y + 1, x + t - 2, y + t - 2], fill=bg)  # 1 px of background between cells
        thumb = thumbs.get(src) if src is not None else None
        if thumb is not None:
            with Image.open(thumb) as im:
                scale = (t - 2) / max(im.size)  # up or down: every cell filled alike
                im = im.convert("RGB").resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                              Image.Resampling.LANCZOS)
                sheet.paste(im, (x + (t - im.width) // 2, y + (t - im.height) // 2))
        else:
            word = "missing" if status == "done" else status
            draw.text((x + 4, y + 4), _fit_text(draw, word, t - 8, font), fill=(240, 240, 240), font=font)
        if cap:
            draw.text((x + 2, y + t + 1), _fit_text(draw, caption, t - 4, font), fill=(40, 40, 40), font=font)

    block_w = geo.cells_per_row * t + SHEET_GAP
    for b in range(geo.blocks if rows else 0):
        if cap:
            for j, head in enumerate(heads):
                draw.text((b * block_w + j * t + 2, 1), _fit_text(draw, head, t - 4, font), fill=(0, 0, 0), font=font)
    for i, r in enumerate(rows):
        b, k = divmod(i, geo.block_rows)
        x, y = b * block_w, cap + k * (t + cap)
        cell(x, y, r.content, r.content.name if r.content else "(none)")
        cell(x + t, y, r.style, r.style.name if r.style else "(none)")
        for j, v in enumerate(r.cells):
            cx = x + (2 + j) * t
            if v is None:
                continue
            status = "done" if v.output is not None and not v.failed else v.status
            cell(cx, y, v.output, v.name, status)
    return sheet, geo


# ---------------------------------------------------------------- entry point


@dataclass
class ReportResult:
    html: Path
    sheet: Path
    pairs: int
    counts: dict[str, int]
    geometry: SheetGeometry


def write_report(out_dir: str | Path, group_by: str = "style", columns: str = "auto") -> ReportResult:
    """Build `report.html`, `contact_sheet.png` and the thumbnails under `<out>/.stylebatch/report/`."""
    out_dir = Path(out_dir)
    job, views = load_views(out_dir)
    layout = build_layout(views, group_by, columns)
    report_dir = JobState(out_dir).root / REPORT_DIR
    thumbs = Thumbs(report_dir / "thumbs")
    page = render_html(out_dir, job, views, layout, report_dir, thumbs)
    sheet, geo = render_sheet(layout, thumbs)
    info = PngImagePlugin.PngInfo()
    info.add_text("stylebatch-sheet", json.dumps({**dataclasses.asdict(geo), "column_key": layout.column_key,
                                                  "columns": [_fmt(c) for c in layout.columns]}, default=str))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", pnginfo=info, optimize=False)
    html_path, sheet_path = report_dir / "report.html", report_dir / "contact_sheet.png"
    atomic_write(sheet_path, buf.getvalue())
    atomic_write(html_path, page.encode("utf-8"))
    thumbs.prune()
    counts: dict[str, int] = {}
    for v in views:
        counts[v.status] = counts.get(v.status, 0) + 1
    return ReportResult(html_path, sheet_path, len(views), counts, geo)
