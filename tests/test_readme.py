"""The README's config reference and exit-code table are generated from the code; fail on drift."""

from __future__ import annotations

import importlib.util

from tests.jobkit import REPO


def _updater():
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_reference_sections_match_code() -> None:
    updater = _updater()
    current = (REPO / "README.md").read_text(encoding="utf-8")
    assert updater.render(current) == current, "run: python scripts/update_readme.py"


def test_reference_lists_every_config_key() -> None:
    from stylebatch.job.config import FIELDS

    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` |" in text for name in FIELDS)


def test_readme_opens_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text(encoding="utf-8")[:1500]
    assert "bash scripts/demo.sh" in head and "bash scripts/test.sh" in head
