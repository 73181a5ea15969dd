"""What `stylebatch status` shows, made from the pair rows (pair_rows.py) one at a time; the CLI
prints it. Nothing here holds more than one pair's row except the short lists of pairs that need a
look and, for `--all`, one line of text per pair.

    default   a table of the failed, invalid, running and interrupted pairs (at most SHOWN of each),
              then the counts
    --all     one aligned line per pair (a rich table of 100,000 rows takes over a minute to lay out)
    --json    {"pairs": [one object per line, written as it is read], "counts": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from rich.table import Table
from rich.text import Text

from stylebatch.jobdir.state import STATUSES

SHOWN = 50  # pairs of each status needing a look that the default view lists
COLUMNS = ("pair", "status", "evaluations", "attempts", "rank", "seconds", "error")
LOOK = ("failed", "invalid", "running", "interrupted")


def cells(p: dict[str, Any]) -> list[str]:
    steps = f"{p['steps_done']}/{p['steps']}" if p["steps"] else str(p["steps_done"])
    error = (p["error"] or "").splitlines()[0][:300] if p["error"] else ""
    return [
        p["name"],
        p["status"],
        steps,
        str(p["attempts"]),
        "" if p["rank"] is None else str(p["rank"]),
        f"{p['seconds']:.1f}" if p["seconds"] else "",
        error,
    ]


class Summary:
    """Counts every row it is given, keeps the first SHOWN of each status in LOOK (or, with `every`,
    each row's cells)."""

    def __init__(self, every: bool = False, shown: int | None = None) -> None:
        self.counts = dict.fromkeys(STATUSES, 0)
        self.every, self.shown = every, SHOWN if shown is None else shown
        self.look: dict[str, list[list[str]]] = {s: [] for s in LOOK}
        self.lines: list[list[str]] = []

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        status = row["status"]
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.every:
            self.lines.append(cells(row))
        elif status in self.look and len(self.look[status]) < self.shown:
            self.look[status].append(cells(row))
        return row

    def table(self) -> Table | None:
        listed = [c for group in self.look.values() for c in group]
        if not listed:
            return None
        table = Table()
        for col in COLUMNS:  # names and errors wrap; the short columns never break a word ("interrupt-ed")
            wraps = col in ("pair", "error")
            table.add_column(
                col,
                overflow="fold" if wraps else "ellipsis",
                no_wrap=not wraps,
                ratio=2 if col == "error" else (1 if col == "pair" else None),
            )
        for c in listed:
            table.add_row(*(Text(v) for v in c))  # names and errors as they are, never read as rich markup
        return table

    def more(self) -> str | None:
        more = [f"{self.counts[k] - len(v)} more {k}" for k, v in self.look.items() if self.counts[k] > len(v)]
        return f"({', '.join(more)}: --all lists every pair)" if more and not self.every else None

    def line(self, where: str) -> str:
        total = sum(self.counts.values())
        return f"{where}: {total} pairs: " + ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)

    def aligned(self) -> Iterator[str]:
        """One line per pair listed (every pair with `every`, else those needing a look), columns
        padded to the longest entry (at most 60) and never cut: names stay whole for grep and cut."""
        lines = self.lines if self.every else [c for group in self.look.values() for c in group]
        if not lines:
            return
        widths = [min(60, max([len(c[i]) for c in lines] + [len(h)])) for i, h in enumerate(COLUMNS)]
        for c in [list(COLUMNS), *lines]:
            yield "  ".join(x.ljust(w) for x, w in zip(c[:-1], widths)) + "  " + c[-1] + "\n"


_ENCODE = json.JSONEncoder(default=str).encode  # one encoder: json.dumps(default=...) builds one per call


def json_chunks(rows: Iterable[dict[str, Any]], summary: Summary, replaced: list[str] | None = None) -> Iterator[str]:
    """One JSON document, a pair per line, each written before the next record is read; `replaced`:
    the kept copies of outputs a changed setting replaced."""
    yield '{"pairs": [\n'
    for i, row in enumerate(rows):
        yield (",\n" if i else "") + _ENCODE(summary.add(row))
    yield '\n],\n"counts": ' + json.dumps(summary.counts) + ',\n"replaced": ' + json.dumps(replaced or []) + "}\n"
