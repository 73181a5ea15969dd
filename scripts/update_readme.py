"""Regenerate the README's reference sections from the code (the config dataclass and the
exit-code table). `python scripts/update_readme.py` rewrites them; `--check` exits 1 if stale.
tests/test_readme.py runs the check, so the docs cannot drift from the code."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import yaml

from stylebatch.errors import EXIT_CODES
from stylebatch.job.config import FIELDS, HINTS, type_name

README = Path(__file__).resolve().parent.parent / "README.md"


def reference_table() -> str:
    """The README's config reference, generated from the field docs."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name, f in FIELDS.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "empty" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("...").strip()
        doc = f.metadata["doc"] + ("" if f.metadata["identity"] else f" *(bookkeeping: {f.metadata['bookkeeping']})*")
        rows.append(f"| `{name}` | {type_name(HINTS[name])} | `{shown}` | {doc} |")
    return "\n".join(rows)


def exit_code_table() -> str:
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code} | {text} |" for code, text in EXIT_CODES.items()]
    return "\n".join(rows)


SECTIONS = {"config-reference": reference_table, "exit-codes": exit_code_table}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md: missing <!-- {name} --> ... <!-- /{name} --> markers")
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)  # noqa: B023
    return text


def main(argv: list[str]) -> int:
    current = README.read_text(encoding="utf-8")
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("README.md reference sections are stale: run python scripts/update_readme.py")
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
