"""The one-line notes a run gives for a pair it makes again: what changed since its output was made
(redo_note), or why a done pair whose id matches is redone (stale_output_note)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stylebatch.errors import StylebatchError
from stylebatch.images import OUTPUT_FORMATS
from stylebatch.job.pairs import Pair, output_name
from stylebatch.jobdir.state import sha256_file


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e7 else f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def redo_note(
    pair: Pair, record: dict[str, Any], output: Path, weights: str, kept: str = "the previous output is replaced"
) -> str | None:
    """What changed since a pair was made, for a pair whose id no longer matches its record:
    "redoing X: style_weight 1.5 → 3 (<kept>)", from the settings the previous output carries;
    for a pair stopped part way, that its checkpoint is dropped."""
    from stylebatch.fit.provenance import read_metadata  # only for a changed pair (it reads the output's text chunk)

    try:
        meta = read_metadata(output) if record.get("status") == "done" else None
    except StylebatchError:
        meta = None
    if meta is None or meta.get("id") != record.get("id"):
        done = int(record.get("steps_done") or 0)
        if not done:
            return None
        return (
            f"restarting {pair.name}: its inputs, weights or settings changed "
            f"(its checkpoint at {done} evaluations is dropped)"
        )
    changes = []
    old_cfg = meta.get("config") or {}
    for key, value in pair.config.identity().items():
        if key in old_cfg and old_cfg[key] != _as_json(value):
            changes.append(f"{key} {_fmt(old_cfg[key])} → {_fmt(value)}")
    old_styles = meta.get("styles") or [meta.get("style")]
    old_hashes = meta.get("styles_sha256") or [meta.get("style_sha256")]
    inputs = [
        ("content", [meta.get("content")], [meta.get("content_sha256")], [pair.content]),
        ("style", old_styles, old_hashes, list(pair.styles)),
    ]
    for role, old_paths, old_shas, paths in inputs:
        now = [str(Path(p).resolve()) for p in paths]
        if now != old_paths:
            changes.append(
                f"{role} {'+'.join(Path(str(p)).name for p in old_paths)} → {'+'.join(Path(p).name for p in now)}"
            )
        elif [sha256_file(Path(p)) for p in now] != old_shas:
            changes.append(f"{role} {'+'.join(Path(p).name for p in now)} changed")
    source = weights if weights in ("imagenet", "random") else str(Path(weights).resolve())
    if meta.get("weights_source") != source:
        changes.append(f"weights {meta.get('weights_source')} → {source}")
    return f"redoing {pair.name}: {', '.join(changes) or 'the weights file changed'} ({kept})"


def stale_output_note(name: str, record: dict[str, Any], encoding: dict[str, Any], output: Path) -> str:
    """Why a done pair is made again although its id matches."""
    old = record.get("encoding", {"format": "png"})
    if old != encoding and isinstance(old, dict):
        # The previous file could not be kept and re-encoded (runner/reencode.py): missing, or
        # changed since it was written, in which case it is someone's and stays where it is.
        fmt = str(old.get("format"))
        previous = output.with_name(output_name(name, fmt)) if fmt in OUTPUT_FORMATS else None
        gone = previous is None or not os.path.lexists(previous)
        what = "is missing" if gone else "changed since it was written (left as it is)"
        return f"redoing {name}: format {fmt} → {encoding.get('format')}, and its previous {fmt} output {what}"
    if not os.path.lexists(output):
        return f"redoing {name}: its output {output.name} is missing"
    return f"redoing {name}: its output {output.name} changed since it was written (it is replaced)"
