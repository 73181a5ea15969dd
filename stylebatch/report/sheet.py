"""One contact sheet per report page: the page's matrices as one JPEG, bounded in size.

    header row:  (corner) | column 1 | column 2 | ...     style thumbnails, or `style_weight=10`
    each row:    row head | result   | result   | ...     content thumbnail (or the row's value)

one header row and its rows per block of the page (a section, or a part of one). Every cell is
`cell` px square with a caption line under it (when cells are large enough to read one). A page
with many rows and few columns is wrapped into `blocks` side by side, so the sheet stays near a
screen's shape instead of a thin strip; the cell size
is the largest that keeps both sides within SHEET_MAX and the area within SHEET_PIXELS (which
bounds the time to encode it: a report of 100,000 pairs draws ~170 sheets). JPEG, not PNG: it
encodes ~20x faster and is ~3x smaller for photographs (measured on a 4.8 Mpx sheet).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from stylebatch.report.matrix import IMAGE_AXES, Block, Layout, Page
from stylebatch.report.thumbs import Thumbs

SHEET_MAX = 4096  # longest side, px
SHEET_PIXELS = 6_000_000  # area, px
CELL_MAX = 160  # px: a cell is never drawn larger than this
CELL_MIN = 8
CAPTION_MIN_CELL = 64  # cells smaller than this get no caption line
CAPTION = 16  # caption line height, px
GAP = 8  # px between blocks
# One letterbox colour for every image (results and the heads' inputs, as on the pages); failed red.
LETTERBOX = (236, 236, 236)
STATUS_COLOURS = {"done": LETTERBOX, "failed": (110, 30, 30), "invalid": (110, 30, 30), "header": LETTERBOX}


@dataclass
class SheetGeometry:
    rows: int  # lines of cells: each block's header row and its rows
    cells_per_row: int  # the row head and one cell per column
    blocks: int
    cell: int
    caption: int
    per_block: int = 0  # lines down each wrapped column, when set (else rows spread evenly)

    @property
    def block_rows(self) -> int:
        if self.per_block:
            return self.per_block
        return math.ceil(self.rows / self.blocks) if self.rows else 0

    @property
    def width(self) -> int:
        return self.blocks * self.cells_per_row * self.cell + (self.blocks - 1) * GAP

    @property
    def height(self) -> int:
        return self.block_rows * (self.cell + self.caption)

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "width": self.width, "height": self.height}


def sheet_geometry(rows: int, columns: int, limit: int = SHEET_MAX, area: int = SHEET_PIXELS) -> SheetGeometry:
    """The largest cell (up to CELL_MAX) that fits; among equal cells, a sheet no more than 3:1,
    then the fewest blocks."""
    per_row = 1 + columns
    best, best_score = SheetGeometry(rows, per_row, 1, CELL_MIN, 0), None
    for b in range(1, max(1, rows) + 1):
        block_rows = math.ceil(rows / b) if rows else 0
        cell = min(CELL_MAX, (limit - (b - 1) * GAP) // (b * per_row))
        while cell > CELL_MIN:
            geo = SheetGeometry(rows, per_row, b, cell, CAPTION if cell >= CAPTION_MIN_CELL else 0)
            if geo.height <= limit and geo.width * geo.height <= area:
                break
            cell -= 1
        if cell <= CELL_MIN:
            if b * per_row * CELL_MIN > limit:
                break
            continue
        geo = SheetGeometry(rows, per_row, b, cell, CAPTION if cell >= CAPTION_MIN_CELL else 0)
        aspect = max(geo.width, geo.height) / max(1, min(geo.width, geo.height))
        score = (cell, aspect <= 3, -b)
        if best_score is None or score > best_score:
            best, best_score = geo, score
        if block_rows <= 1:
            break
    return best


def label_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont) -> str:
    """`text` on one line within `width` px, shortened in the middle (`clock_gray…man_with_hat`): a
    pair's name keeps both its content's and its style's part."""
    text = " ".join(text.split())  # one line: a name with a newline cannot be measured
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 2 and draw.textlength(shorten_middle(text, keep), font=font) > width:
        keep -= 1
    return shorten_middle(text, keep)


def shorten_middle(text: str, limit: int) -> str:
    """`text` within `limit` characters, its middle replaced by an ellipsis: both ends stay readable."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]


def _wrapped_lines(page: Page) -> tuple[list[tuple[Block, int]], SheetGeometry]:
    """The sheet's lines, (block, row index; -1 for the block's header row), in the order they are
    laid out down each wrapped column, and the geometry that holds them. A wrapped column that
    starts inside a block starts with that block's header again, so every column reads alone."""
    plain = [(b, i) for b in page.blocks for i in range(-1, len(b.rows))]
    columns = max(len(b.columns) for b in page.blocks)
    first = sheet_geometry(len(plain), columns)
    geo = sheet_geometry(len(plain) + first.blocks - 1, columns)  # room for a header atop each wrapped column
    per = geo.block_rows
    while True:
        lines: list[tuple[Block, int]] = []
        for line in plain:
            if len(lines) % per == 0 and line[1] >= 0:
                lines.append((line[0], -1))
            lines.append(line)
        if len(lines) <= geo.blocks * per:
            break
        per += 1
    cell = min(geo.cell, SHEET_MAX // per - geo.caption)  # one more line than planned must still fit
    return lines, SheetGeometry(len(lines), geo.cells_per_row, geo.blocks, cell, geo.caption, per)


def render_sheet(page: Page, layout: Layout, thumbs: Thumbs) -> tuple[bytes, SheetGeometry]:
    """The page's contact sheet as JPEG bytes, and its geometry. Each block's corner shows what its
    section fixes (the style image of a sweep's section, say)."""
    lines, geo = _wrapped_lines(page)
    sheet = Image.new("RGB", (max(1, geo.width), max(1, geo.height)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = label_font(max(8, CAPTION - 5))
    t, cap = geo.cell, geo.caption

    def box(x: int, y: int, src: Path | None, caption: str, status: str = "done", text: str = "") -> None:
        draw.rectangle([x + 1, y + 1, x + t - 2, y + t - 2], fill=STATUS_COLOURS.get(status, (90, 90, 60)))
        thumb = thumbs.get(src) if src is not None else None
        if thumb is not None:
            im = thumbs.load(thumb, (t, t))
            scale = (t - 2) / max(im.size)
            im = im.resize(
                (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR
            )
            sheet.paste(im, (x + (t - im.width) // 2, y + (t - im.height) // 2))
        elif t >= 24:
            word = text if status == "header" else ("missing" if status == "done" else status)
            ink = (40, 40, 40) if status == "header" else (240, 240, 240)
            draw.text((x + 4, y + 4), _fit_text(draw, word, t - 8, font), fill=ink, font=font)
        if cap and caption:
            draw.text((x + 2, y + t + 1), _fit_text(draw, caption, t - 4, font), fill=(40, 40, 40), font=font)

    block_w = geo.cells_per_row * t + GAP
    for n, (block, i) in enumerate(lines):
        wrap, k = divmod(n, geo.block_rows)
        x, y = wrap * block_w, k * (t + cap)
        section = layout.sections[block.section]  # its own axes: each grid of a list is its own matrix
        column_axis, row_axis = section.column_axis or layout.column_axis, section.row_axis or layout.row_axis
        col_images, row_images = column_axis in IMAGE_AXES, row_axis in IMAGE_AXES
        if i < 0:
            title = " · ".join(part for part in (section.group.split(":")[0], section.title) if part)
            box(x, y, section.image, title or f"{row_axis} \\ {column_axis}", "header", text=title)
            for j, col in enumerate(block.columns):
                label = col.label if col_images else f"{column_axis}={col.label}"
                box(
                    x + (1 + j) * t,
                    y,
                    col.image if col_images else None,
                    label if col_images else "",
                    "header",
                    text=label,
                )
            continue
        row = block.rows[i]
        label = row.label if row_images else f"{row_axis}={row.label}"
        box(x, y, row.image if row_images else None, label, "header", text=label)
        for j in range(len(block.columns)):
            v = block.cells.get((i, j))
            if v is None:
                continue
            src = v.output if v.output is not None else v.snapshot
            status = "done" if v.output is not None and not v.failed else v.status
            box(x + (1 + j) * t, y, src, v.name, status)
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), geo
