"""A finished pair whose `format` or `quality` changed. Both are bookkeeping (not part of the pair's
identity), so the picture is not optimised again when its final pixels can still be had:

- from the previous output, when that file is lossless at 8 bits (png, tiff, webp at quality 100)
  and the new format is an 8-bit one: written again from its very pixels, at once, here;
- from the pair's kept final checkpoint (`keep_checkpoints`), which holds the float result: the
  engine renders it without a step (any format, 16-bit ones included);
- otherwise the pair is optimised again, and the note says why: a JPEG or lossy WebP cannot give
  back the lossless pixels a png/tiff promises (converting it would keep its artefacts in a larger
  file, which is not what asking for png means), and an 8-bit file cannot give 16 bits.

Either way the previous file is never left behind nor overwritten: it is moved to
`.stylebatch/replaced/<name>.<id>.<ext>` first (listed by `status` and `inspect`), and the new file
is written from that kept copy, so a run stopped in between finds the copy and finishes the job.
"""

from __future__ import annotations

import logging
from typing import Any

from stylebatch.errors import StylebatchError
from stylebatch.fit.provenance import reencode_output
from stylebatch.images import OUTPUT_FORMATS
from stylebatch.job.pairs import Job, Pair, output_name
from stylebatch.jobdir.state import JobState, output_intact, output_stamp

log = logging.getLogger("stylebatch")
EIGHT_BIT = ("png", "tiff", "jpg", "webp")


def recorded_encoding(record: dict[str, Any]) -> dict[str, Any]:
    encoding = record.get("encoding", {"format": "png"})  # records from before formats say nothing
    return encoding if isinstance(encoding, dict) else {}


def describe(encoding: dict[str, Any]) -> str:
    """`png`, `jpg q95`: an encoding as a note shows it."""
    fmt = str(encoding.get("format"))
    return f"{fmt} q{encoding['quality']}" if "quality" in encoding else fmt


def lossless_8bit(encoding: dict[str, Any]) -> bool:
    fmt = encoding.get("format")
    return fmt in ("png", "tiff") or (fmt == "webp" and encoding.get("quality") == 100)


def convertible(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a file in encoding `old` holds exactly the pixels a fresh `new` file would encode."""
    return lossless_8bit(old) and new.get("format") in EIGHT_BIT


def why_optimised_again(old: dict[str, Any], new: dict[str, Any]) -> str:
    if new.get("format") in ("png16", "tiff16") and not str(old.get("format")).endswith("16"):
        return f"an 8-bit {old.get('format')} cannot give the 16 bits {new.get('format')} is made of"
    if not lossless_8bit(old) and not str(old.get("format")).endswith("16"):
        return f"a {describe(old)} file has lost pixels that {describe(new)} would keep (no conversion of a lossy file)"
    return f"a {old.get('format')} file is not converted here"


def format_rerun(state: JobState, pair: Pair, record: dict[str, Any]) -> bool:
    """Whether a finished pair (its record's id matching) is optimised again because its format
    changed: no lossless 8-bit file and no kept checkpoint to write the new one from."""
    old, new = recorded_encoding(record), pair.config.encoding()
    return old != new and not convertible(old, new) and not state.checkpoint_path(pair.name).exists()


def format_changed(
    job: Job, state: JobState, pair: Pair, record: dict[str, Any], verify: bool
) -> tuple[bool, str] | None:
    """A done pair whose record's encoding is not the pair's: keep the previous file, then write the
    new one from it or leave the pair to run. Returns (whether the pair must run, the note), or None
    when the previous output is missing or was changed since (the caller redoes it as stale)."""
    old, new = recorded_encoding(record), pair.config.encoding()
    if old.get("format") not in OUTPUT_FORMATS:
        return None
    old_path = job.output_dir / output_name(pair.name, str(old["format"]))
    if output_intact(state, pair.name, record, old_path, verify):
        kept = state.keep_replaced(pair.name, pair.id, old_path)
    else:  # an earlier run kept it, then stopped before the new file was recorded
        kept = state.kept_copy(pair.name, pair.id, old_path.suffix, record.get("output_sha256"))
    if kept is None:
        return None
    where = f"the {old_path.name} is kept as {kept.relative_to(job.output_dir)}"
    change = f"{describe(old)} → {describe(new)}"
    new_path = job.output_path(pair)
    if convertible(old, new):
        try:
            sha = reencode_output(kept, new_path, pair.config)
        except StylebatchError as e:
            log.warning("%s: %s; optimising it again", pair.name, e)
        else:
            state.update(
                pair.name,
                encoding=new,
                output=new_path.name,
                output_sha256=sha,
                output_stat=output_stamp(new_path),
            )
            return (
                False,
                f"re-encoded {pair.name}: {change} from its finished picture, nothing optimised again ({where})",
            )
    if state.checkpoint_path(pair.name).exists():
        note = f"re-encoding {pair.name}: {change} from its kept checkpoint, without optimising again ({where})"
    else:
        note = (
            f"redoing {pair.name}: {change}: {why_optimised_again(old, new)}, so it is optimised again "
            f"({pair.config.steps} evaluations; {where})"
        )
    state.update(pair.name, status="pending", steps_done=0, attempts=0, attempt_open=False)
    return True, note
