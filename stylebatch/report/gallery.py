"""`stylebatch gallery OUT_DIR DEST`: the job's pictures as a folder to send to a client.

    DEST/index.html          the grid (contents down, styles across, a sweep's values as columns),
                             page-2.html ... when the job needs several pages
    DEST/contact-sheet-1.jpg one contact sheet per page, readable: 300 px cells, labels wrapped
    DEST/pictures/           every finished output at full size, as made (format, bit depth, ICC
                             profile), without the settings stylebatch embeds (they hold local paths)
    DEST/view/               what the pages show: sRGB JPEG copies at most 1200 px, each linking to
                             its picture
    DEST/inputs/             the contents and styles the rows and columns show, at most 600 px

Self-contained (relative links only, no script, no web font), printable (print CSS: one block per
sheet of paper where it fits, no link colours), no local path in any file, no losses unless asked
(`losses=True`). Titles come from the file names (`great_wave.jpg` → "Great wave"); the layout is
the report's (matrix.py). Made from files only: no torch.
"""

from __future__ import annotations

import html
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from PIL import Image, ImageDraw

from stylebatch import icc as colour
from stylebatch.errors import StylebatchError
from stylebatch.report.build import load_views
from stylebatch.report.matrix import IMAGE_AXES, Axes, Block, Layout, Page, PairView, Value, build_layout
from stylebatch.report.sheet import label_font, shorten_middle
from stylebatch.report.thumbs import flatten

VIEW_SIDE = 1200  # px: the pages' copy of a picture (a print at ~10 cm and 300 dpi)
INPUT_SIDE = 600  # px: a content or style shown as a row or column head
SHEET_CELL = 300  # px: a contact sheet's cell
SHEET_FONT = 18  # px: its labels
MARK = "<!-- made by stylebatch gallery -->"
LOSS_NOTE = (
    "Losses: content is how far the picture's features are from the photo's, style how far its textures "
    "(Gram matrices) are from the painting's; each is a relative error, lower means closer."
)


@dataclass
class GalleryResult:
    index: Path
    pages: int
    pictures: int
    sheets: list[Path]


def title(label: str) -> str:
    """A file name or a value as a title: `great_wave.jpg` → `Great wave`, `a.jpg+b.png` → `A + b`."""
    parts = []
    for part in label.split("+"):
        stem = re.sub(r"\.(jpe?g|png|webp|tiff?|bmp|gif)$", "", part.strip(), flags=re.I)
        words = " ".join(re.split(r"[_\s]+", stem)).strip()
        parts.append(words[:1].upper() + words[1:] if words.islower() or not words[:1].isupper() else words)
    return " + ".join(p for p in parts if p) or label


def head_title(value: Value, axis: str) -> str:
    if axis in IMAGE_AXES:
        return title(value.label)
    return f"{axis.replace('_', ' ')} {value.label}"


# ---------------------------------------------------------------- the pictures, without local paths


def _png_without_text(data: bytes) -> bytes:
    out, pos = [data[:8]], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind not in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _jpeg_without_exif(data: bytes) -> bytes:
    out, pos = [data[:2]], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos : pos + 2 + length]
        if not (marker == 0xE1 and segment[4:10] == b"Exif\0\0"):
            out.append(segment)
        pos += 2 + length
    out.append(data[pos:])
    return b"".join(out)


def _webp_without_exif(data: bytes) -> bytes:
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind, (size,) = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)
        chunk = data[pos : pos + 8 + size + (size & 1)]
        if kind == b"VP8X":
            flags = chunk[8] & ~0x08  # the EXIF flag, for the chunk removed below
            chunk = chunk[:8] + bytes([flags]) + chunk[9:]
        if kind != b"EXIF":
            chunks.append(chunk)
        pos += 8 + size + (size & 1)
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _tiff_without_description(data: bytes) -> bytes:
    """The ImageDescription (tag 270) of the first IFD blanked in place: offsets stay valid."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    out = bytearray(data)
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, _, n = struct.unpack_from(order + "HHI", data, at)
        if tag == 270:
            start = at + 8 if n <= 4 else struct.unpack_from(order + "I", data, at + 8)[0]
            out[start : start + n] = b"\0" * n
    return bytes(out)


def without_settings(data: bytes) -> bytes:
    """An output's bytes without the settings stylebatch embeds (which name local files), pixels
    and ICC profile untouched."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_without_text(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_without_exif(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_without_exif(data)
    if data[:4] in (b"II*\0", b"MM\0*"):
        return _tiff_without_description(data)
    return data


def _display_copy(src: Path, dest: Path, side: int) -> tuple[int, int] | None:
    """A browser's copy of an image: sRGB (its profile applied), over white, at most `side` px, JPEG."""
    try:
        with Image.open(src) as im:
            im.load()
            rgb = flatten(colour.shown_as_srgb(im))
    except Exception:  # noqa: BLE001 (an unreadable picture shows as missing, never a failed gallery)
        return None
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(dest, format="JPEG", quality=90)
    return rgb.size


# ---------------------------------------------------------------- the pages

CSS = """
*{box-sizing:border-box}
body{font:15px/1.4 Georgia,'Times New Roman',serif;margin:0 auto;max-width:1600px;padding:24px 28px;color:#1d1d1d;background:#fff}
header h1{font-weight:400;font-size:28px;margin:0 0 4px;letter-spacing:.01em}
header p{margin:0 0 4px;color:#555}
nav{margin:14px 0;font:13px system-ui,sans-serif;display:flex;gap:16px;flex-wrap:wrap}
nav a{color:#333}
h2{font-weight:400;font-size:20px;margin:30px 0 10px;display:flex;align-items:center;gap:12px}
h2 img{height:64px;width:auto}
table.grid{border-collapse:separate;border-spacing:14px 10px;margin:0 -14px;table-layout:fixed;width:calc(100% + 28px)}
.grid th{font-weight:400;text-align:center;vertical-align:bottom;font-size:15px}
.grid th.row{vertical-align:middle;width:14%}
.grid td{vertical-align:top;text-align:center}
.frame{display:flex;align-items:center;justify-content:center;aspect-ratio:4/3;background:#f3f3f1}
.frame img{width:100%;height:100%;object-fit:contain;display:block}
thead .frame{aspect-ratio:auto;height:150px;background:none}
th.row .frame{background:none}
.label{display:block;margin-top:5px;font:12px/1.3 system-ui,sans-serif;color:#555;overflow-wrap:anywhere}
.caption{font-size:14px;margin-top:4px;overflow-wrap:anywhere}
.losses{font:11px system-ui,sans-serif;color:#666}
.missing{font:13px system-ui,sans-serif;color:#999}
a{color:inherit;text-decoration:none}
.shared{display:flex;align-items:center;gap:12px;margin:10px 0 0;font-size:17px}
.shared img{height:90px;width:auto}
footer{margin-top:28px;font:12px system-ui,sans-serif;color:#777}
@page{size:A4 landscape;margin:12mm}
@media print{
 body{max-width:none;padding:0;font-size:11pt}
 nav,.screen{display:none}
 section{break-inside:avoid;page-break-inside:avoid}
 tr{break-inside:avoid;page-break-inside:avoid}
 .frame{background:none}
 h2{break-after:avoid}
}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(path: str) -> str:
    return quote(path)


class _Gallery:
    def __init__(self, dest: Path, layout: Layout, losses: bool, heading: str):
        self.dest, self.layout, self.losses, self.heading = dest, layout, losses, heading
        self.pictures: dict[str, tuple[str, str, tuple[int, int]]] = {}  # pair name -> (picture, view, size)
        self.inputs: dict[Path, tuple[str, tuple[int, int]] | None] = {}
        self.used_names: set[str] = set()

    def picture(self, v: PairView) -> tuple[str, str, tuple[int, int]] | None:
        if v.name in self.pictures:
            return self.pictures[v.name]
        if v.output is None or v.status != "done":
            return None
        size = _display_copy(v.output, self.dest / "view" / f"{v.name}.jpg", VIEW_SIDE)
        if size is None:
            return None
        target = self.dest / "pictures" / v.output.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(without_settings(v.output.read_bytes()))
        self.pictures[v.name] = (f"pictures/{v.output.name}", f"view/{v.name}.jpg", size)
        return self.pictures[v.name]

    def input(self, path: Path | None) -> tuple[str, tuple[int, int]] | None:
        if path is None:
            return None
        if path not in self.inputs:
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "image"
            name, n = f"{stem}.jpg", 1
            while name in self.used_names:
                n += 1
                name = f"{stem}-{n}.jpg"
            self.used_names.add(name)
            size = _display_copy(path, self.dest / "inputs" / name, INPUT_SIDE)
            self.inputs[path] = (f"inputs/{name}", size) if size else None
        return self.inputs[path]

    def head(self, value: Value, axis: str, cls: str = "") -> str:
        label = head_title(value, axis)
        image = self.input(value.image) if axis in IMAGE_AXES else None
        if image is None:
            return f'<th class="{cls}"><span class="caption">{_e(label)}</span></th>'
        src, (w, h) = image
        return (
            f'<th class="head {cls}"><div class="frame"><img src="{_link(src)}" width="{w}" height="{h}" '
            f'alt="{_e(label)}"></div><span class="caption">{_e(label)}</span></th>'
        )

    def cell(self, v: PairView | None) -> str:
        if v is None:
            return "<td></td>"
        found = self.picture(v)
        if found is None:
            return f'<td><div class="frame"><span class="missing">not made</span></div><span class="label">{_e(v.name)}</span></td>'
        picture, view, (w, h) = found
        extra = ""
        losses = v.record.get("losses") or {}
        if self.losses and losses:
            extra = (
                f'<span class="losses">content {float(losses.get("content", 0)):.3g} · '
                f"style {float(losses.get('style', 0)):.3g}</span>"
            )
        return (
            f'<td><a href="{_link(picture)}"><div class="frame"><img src="{_link(view)}" width="{w}" height="{h}" '
            f'loading="lazy" alt="{_e(v.name)}"></div></a><span class="label">{_e(Path(picture).name)}</span>{extra}</td>'
        )

    def block(self, block: Block, previous_title: str | None) -> str:
        layout = self.layout
        section = layout.sections[block.section]
        parts = ["<section>"]
        if section.title and section.title != previous_title:
            fixed = " · ".join(head_title(v, a) for a, v in section.fixed)
            image = self.input(section.image)
            img = f'<img src="{_link(image[0])}" alt="">' if image else ""
            parts.append(f"<h2>{img}{_e(fixed)}</h2>")
        parts.append('<table class="grid"><thead><tr><th class="row"></th>')
        parts += [self.head(c, section.column_axis or layout.column_axis) for c in block.columns]
        parts.append("</tr></thead><tbody>")
        for i, row in enumerate(block.rows):
            parts.append("<tr>" + self.head(row, section.row_axis or layout.row_axis, "row"))
            parts += [self.cell(block.cells.get((i, j))) for j in range(len(block.columns))]
            parts.append("</tr>")
        parts.append("</tbody></table></section>")
        return "\n".join(parts)

    def shared(self, page: Page) -> str:
        """The content or style every picture shares (not a row, column or section): named, and
        shown, in the header, since no grid head shows it."""
        layout, out = self.layout, []
        for axis in IMAGE_AXES:
            if axis in (layout.row_axis, layout.column_axis, *layout.section_axes):
                continue
            paths = {v.content if axis == "content" else tuple(v.styles) for v in page.views}
            if len(paths) != 1:
                continue
            (found,) = paths
            images = [found] if axis == "content" else list(found)
            names = " + ".join(title(p.name) for p in images if p is not None)
            thumbs = "".join(
                f'<img src="{_link(shown[0])}" width="{shown[1][0]}" height="{shown[1][1]}" alt="">'
                for p in images
                if (shown := self.input(p)) is not None
            )
            out.append(f'<div class="shared">{thumbs}<span>{axis.title()}: <b>{_e(names)}</b></span></div>')
        return "".join(out)

    def page(self, page: Page, names: list[str], sheet: str) -> str:
        n, total = page.number, len(names)
        nav = []
        if total > 1:
            nav += [f'<a href="{_link(names[n - 2])}">← previous</a>'] if n > 1 else []
            nav.append(f"<span>page {n} of {total}</span>")
            nav += [f'<a href="{_link(names[n])}">next →</a>'] if n < total else []
        nav.append(f'<a href="{_link(sheet)}">contact sheet</a>')
        blocks, previous, group = [], None, ""
        for b in page.blocks:
            section = self.layout.sections[b.section]
            if section.group and section.group != group:  # each grid of a manifest's list: its own matrix
                blocks.append(f'<h2 class="grid">{_e(section.group)}</h2>')
                previous = None
            group = section.group
            blocks.append(self.block(b, previous))
            previous = section.title
        count = len([v for v in page.views if v.status == "done"])
        shared = self.shared(page)
        note = f"<p>{_e(LOSS_NOTE)}</p>" if self.losses else ""
        return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(self.heading)}</title>
<style>{CSS}</style>
</head>
<body>
{MARK}
<header><h1>{_e(self.heading)}</h1>
<p>{count} picture{"s" if count != 1 else ""}{f" on this page of {total}" if total > 1 else ""}: each links to its full-size file in <i>pictures/</i>.</p>
{note}{shared}</header>
<nav>{" ".join(nav)}</nav>
{"".join(blocks)}
<nav class="screen">{" ".join(nav)}</nav>
<footer>Made with stylebatch (neural style transfer, Gatys et al. 2016).</footer>
</body>
</html>
"""


# ---------------------------------------------------------------- contact sheets


def wrap_label(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any, lines: int = 2) -> list[str]:
    """`text` in at most `lines` lines of `width` px: broken at spaces, underscores and dashes where
    it can, and the last line shortened in the middle if the rest still does not fit: never cut off."""
    words = re.findall(r"[^\s_\-+]+[\s_\-+]*", " ".join(text.split())) or [text]
    out: list[str] = []
    current = ""
    for i, word in enumerate(words):
        if draw.textlength(current + word, font=font) <= width or not current:
            current += word
            continue
        out.append(current.rstrip())
        current = word
        if len(out) == lines - 1:
            current += "".join(words[i + 1 :])
            break
    out.append(current.rstrip())
    out = out[:lines]
    for k, line in enumerate(out):
        limit = len(line)
        while limit > 3 and draw.textlength(shorten_middle(line, limit), font=font) > width:
            limit -= 1
        out[k] = shorten_middle(line, limit)
    return out


def contact_sheet(gallery: _Gallery, page: Page, dest: Path) -> None:
    """One JPEG per page: its blocks one under another, SHEET_CELL px wide 4:3 boxes (most photos'
    shape; others letterboxed in white), two-line labels right under them."""
    layout = gallery.layout
    cell, font = SHEET_CELL, label_font(SHEET_FONT)
    box_h = cell * 3 // 4
    label_h = 2 * (SHEET_FONT + 4) + 10
    pad = 12
    columns = max(len(b.columns) for b in page.blocks)
    width = pad + (1 + columns) * (cell + pad)
    lines = sum(1 + len(b.rows) for b in page.blocks)
    height = pad + lines * (box_h + label_h) + 40 * len(page.blocks)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)

    def put(x: int, y: int, src: Path | None, label: str) -> None:
        if src is not None and (found := _load_view(src)) is not None:
            scale = min(cell / found.width, box_h / found.height)  # small outputs as large as the others
            found = found.resize(
                (max(1, round(found.width * scale)), max(1, round(found.height * scale))), Image.Resampling.LANCZOS
            )
            sheet.paste(found, (x + (cell - found.width) // 2, y + box_h - found.height))  # on the label line
        elif label:
            draw.rectangle([x, y, x + cell - 1, y + box_h - 1], fill=(243, 243, 241))
        for k, line in enumerate(wrap_label(draw, label, cell - 4, font)):
            w = draw.textlength(line, font=font)
            draw.text((x + (cell - w) / 2, y + box_h + 5 + k * (SHEET_FONT + 4)), line, fill=(40, 40, 40), font=font)

    y = pad
    for b in page.blocks:
        section = layout.sections[b.section]
        if section.title:
            draw.text((pad, y + 8), " · ".join(head_title(v, a) for a, v in section.fixed), fill=(0, 0, 0), font=font)
        y += 40
        for j, col in enumerate(b.columns):
            src = gallery.dest / gallery.input(col.image)[0] if col.image and gallery.input(col.image) else None
            put(pad + (1 + j) * (cell + pad), y, src, head_title(col, section.column_axis or layout.column_axis))
        y += box_h + label_h
        for i, row in enumerate(b.rows):
            src = gallery.dest / gallery.input(row.image)[0] if row.image and gallery.input(row.image) else None
            put(pad, y, src, head_title(row, section.row_axis or layout.row_axis))
            for j in range(len(b.columns)):
                v = b.cells.get((i, j))
                if v is None:
                    continue
                found = gallery.picture(v)
                put(
                    pad + (1 + j) * (cell + pad),
                    y,
                    gallery.dest / found[1] if found else None,
                    Path(found[0]).name if found else f"{v.name} (not made)",
                )
            y += box_h + label_h
    sheet.crop((0, 0, width, min(height, y + pad))).save(dest, format="JPEG", quality=90)


def _load_view(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError:
        return None


# ---------------------------------------------------------------- the whole gallery


def _prepare(dest: Path, out_dir: Path) -> None:
    """DEST empty, new, or an earlier gallery (remade); never the job directory or inside it."""
    if dest.resolve() == out_dir.resolve() or out_dir.resolve() in dest.resolve().parents:
        raise StylebatchError(f"{dest}: the gallery goes outside the job directory (it is a folder to send)")
    if dest.exists() and not dest.is_dir():
        raise StylebatchError(f"{dest}: exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        index = dest / "index.html"
        if not (index.is_file() and MARK in index.read_text(encoding="utf-8", errors="replace")):
            raise StylebatchError(f"{dest}: not empty and not an earlier gallery; choose a new folder")
        for old in dest.iterdir():
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    dest.mkdir(parents=True, exist_ok=True)


def write_gallery(
    out_dir: str | Path,
    dest: str | Path,
    *,
    losses: bool = False,
    columns: str = "auto",
    rows: str = "auto",
    heading: str | None = None,
) -> GalleryResult:
    """Write the gallery of the job in `out_dir` into the folder `dest` (see the module doc)."""
    out_dir, dest = Path(out_dir), Path(dest)
    job, views = load_views(out_dir)
    layout = build_layout(views, Axes(job.keys, job.defaults, job.bookkeeping), columns, rows)
    _prepare(dest, out_dir)
    gallery = _Gallery(dest, layout, losses, heading or title(out_dir.resolve().name))
    names = ["index.html"] + [f"page-{p.number}.html" for p in layout.pages[1:]]
    sheets = []
    for page, name in zip(layout.pages, names):
        sheet = f"contact-sheet-{page.number}.jpg"
        (dest / name).write_text(gallery.page(page, names, sheet), encoding="utf-8")
        contact_sheet(gallery, page, dest / sheet)
        sheets.append(dest / sheet)
    return GalleryResult(dest / "index.html", len(layout.pages), len(gallery.pictures), sheets)


def check_links(dest: Path) -> list[str]:
    """Every `src`/`href` of the gallery's pages that does not resolve to a file in it (tests, CLI)."""
    broken = []
    for page in sorted(dest.glob("*.html")):
        for link in re.findall(r'(?:src|href)="([^"]+)"', page.read_text(encoding="utf-8")):
            target = (dest / unquote(link)).resolve()
            if not target.is_file() or dest.resolve() not in target.parents:
                broken.append(f"{page.name}: {link}")
    return broken
