"""A pair's loss curve: `<out>/.stylebatch/pairs/<name>/losses.csv`, one row per log interval.

    evaluations,content,style,total        (a `tv` column too when tv_weight is set)
    10,0.0123,4.56,4560.0123

The file lives next to the pair's checkpoint and follows it: when a fit starts (or resumes from a
checkpoint at n evaluations) the rows past n are dropped, and before each checkpoint is written the
rows so far are fsynced. A resumed curve is then the same as an uninterrupted one, row for row.
Values are written with `repr`, so they read back as the exact floats that were logged.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import IO

from stylebatch.atomic import atomic_write, read_nofollow

CURVE_FILE = "losses.csv"
X_COLUMN = "evaluations"


def read_curve(path: Path) -> list[dict[str, float]]:
    """The rows of a curve file ({column: value}), skipping any row that does not parse (a kill can
    leave a half-written last line); [] when the file is missing."""
    try:
        # Never through a link (a planted one is refused): a finished pair's directory is not
        # walked at a run's start, and the report reads the curves of finished pairs.
        text = read_nofollow(path).decode("utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or header[0] != X_COLUMN:
        return []
    rows = []
    for fields in reader:
        if len(fields) != len(header):
            continue
        try:
            rows.append({key: float(value) for key, value in zip(header, fields)})
        except ValueError:
            continue
    return rows


def _format_rows(columns: list[str], rows: list[dict[str, float]]) -> str:
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_fmt(row[c], c) for c in columns))
    return "\n".join(lines) + "\n"


def _fmt(value: float, column: str) -> str:
    return str(int(value)) if column == X_COLUMN else repr(float(value))


class CurveWriter:
    """Appends rows to one pair's curve file; `restart(at)` drops the rows past a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        self._fh: IO[str] | None = None

    def restart(self, at: int) -> None:
        """Keep only the rows at or before `at` evaluations (0: none), rewritten atomically."""
        self.close()
        kept = [r for r in read_curve(self.path) if r[X_COLUMN] <= at]
        self.columns = None
        if kept:
            self.columns = list(kept[0])
            data = _format_rows(self.columns, kept)
        else:
            data = ""
        if kept or self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, data.encode())

    def append(self, evaluations: int, losses: dict[str, float]) -> None:
        columns = [X_COLUMN, *losses]
        if self.columns != columns:
            # A new file, or one with other columns (another config): start it over with ours.
            self.close()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, (",".join(columns) + "\n").encode())
            self.columns = columns
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8", newline="")
        row = {X_COLUMN: evaluations, **losses}
        self._fh.write(",".join(_fmt(row[c], c) for c in columns) + "\n")
        self._fh.flush()

    def sync(self) -> None:
        """Make the rows so far durable (called before a checkpoint is written)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self.sync()  # once per fit: a kept final checkpoint never outlives its last rows
            self._fh.close()
            self._fh = None
