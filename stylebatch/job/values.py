"""Checks on values the user gives (flags, manifest entries, settings carried by an image) before
anything uses them, and how a message echoes a value back.

Text that becomes a file name, a log line, a report cell or a terminal line must be printable,
valid UTF-8: a control character (a newline in a name) breaks every line-based view of the job,
and a lone surrogate (YAML's `"\\ud83c"`) cannot be encoded at all, so it would crash the first
`open` or `print` that meets it. Numbers must be ones torch can hold: the image and the optimizer
run in float32, where `lr: 1e308` overflows inside the optimizer step.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

SHORTEN_AT = 200  # characters of a value a message echoes; the rest is cut, and the cut counted
PATH_MAX = 4096  # Linux's limit on a whole path, in bytes
FLOAT_MAX = 3.4028234663852886e38  # the largest float32: torch computes the image in float32
INT_MAX = 2**63 - 1  # int64, what torch takes for counts and sizes


def shorten(value: Any, limit: int = SHORTEN_AT) -> str:
    """`repr`-like text of `value`, at most about `limit` characters: safe to print (control
    characters and surrogates escaped) and short even when the value is 50 MB."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"<an integer of about {int(value.bit_length() * 0.30103):,} digits>"  # repr() refuses > 4300
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = f"{text[: limit // 2]}…[{len(text) - limit:,} characters cut]…{text[-(limit // 2) :]}"
    return text if text.isprintable() else "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def shown(value: Any) -> str:
    """A value quoted for a message: `'text'` (escaped and shortened) or the shortened repr."""
    return (
        repr(value)
        if isinstance(value, str) and len(value) <= SHORTEN_AT
        else (f"'{shorten(value)}'" if isinstance(value, str) else shorten(value))
    )


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a name or a path, or None."""
    if text.isprintable():  # the common case, at C speed (a 50 MB value takes milliseconds)
        return None
    for ch in text:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return (
                f"contains U+{ord(ch):04X}, a lone surrogate (half of an escaped character, or bytes that "
                "are not UTF-8): not valid text"
            )
        if unicodedata.category(ch) in ("Cc", "Cf") and ch != "\u200d":  # a zero-width joiner joins emoji: allowed
            return f"contains the control character U+{ord(ch):04X}"
    return None


def path_problem(text: str) -> str | None:
    """Why `text` cannot be a path stylebatch reads or writes, or None."""
    if problem := text_problem(text):
        return problem
    size = len(text.encode("utf-8"))
    if size > PATH_MAX:
        return f"is {size:,} bytes long, more than a path can be ({PATH_MAX:,} bytes)"
    return None


def number_problem(value: Any, int_max: int = INT_MAX) -> str | None:
    """Why a number (or a list/mapping of numbers) is out of what torch can compute with, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) > FLOAT_MAX:
            return f"must be at most {FLOAT_MAX:.4g} in size (a 32-bit float), got {value:g}"
        return None
    if isinstance(value, int):
        return None if abs(value) <= int_max else f"must be at most {int_max:,}, got {shorten(value)}"
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return next((p for p in map(number_problem, value) if p), None)
    return None
