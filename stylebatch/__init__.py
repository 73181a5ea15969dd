"""stylebatch: Gatys et al. (2016) neural style transfer for many content/style pairs at once,
on PyTorch Lightning, with checkpointed, resumable progress.

The Python API (stylebatch/api.py), imported on first use so that `import stylebatch` stays quick
and loads no torch: `stylebatch.stylize(content, style, ...)` for one picture, `stylebatch.run(manifest,
...)` for what `stylebatch run` does, and their `JobSummary` / `PairSummary`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["JobSummary", "PairSummary", "__version__", "run", "stylize"]

_API = ("stylize", "run", "JobSummary", "PairSummary")


def __getattr__(name: str) -> Any:
    if name in _API:
        from stylebatch import api

        return getattr(api, name)
    raise AttributeError(f"module 'stylebatch' has no attribute {name!r}")
