"""Exit codes and the errors that reach the user as one clear line.

The exit-code table lives here once; the CLI and the README both read it.
"""

from __future__ import annotations

import errno

EXIT_CODES: dict[int, str] = {
    0: "every pair done",
    1: "finished, but some pairs failed (see `stylebatch status`)",
    2: "invalid input or usage, refused before any work (also `--num-nodes` above 1 with no SLURM or torchrun "
    "to start the other nodes: its line gives the srun and torchrun commands)",
    3: "interrupted (signal); run the same command again to resume",
    4: "the output directory is locked by another running job",
    5: "validate: a pair does not fit the device's memory (its line says so; try tile: auto or a lower size)",
    70: "internal error (a bug: please report it with the traceback from --debug)",
}
EXIT_OK, EXIT_FAILED_PAIRS, EXIT_INVALID, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_INTERNAL = 0, 1, 2, 3, 4, 70
EXIT_TOO_LARGE = 5


class StylebatchError(Exception):
    """An error the user can fix; printed as one line (or one line per problem), no traceback."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str | list[str]) -> None:
        self.problems = [message] if isinstance(message, str) else list(message)
        super().__init__("\n".join(self.problems))


class ConfigError(StylebatchError):
    """A config key, type or value is wrong."""


class ManifestError(StylebatchError):
    """The manifest (or a file it names) is invalid: what the Python API raises with every problem
    the CLI would print before refusing to run (exit 2)."""


class ImageError(StylebatchError):
    """An image file cannot be used (missing, not an image, truncated, too large)."""


class WeightsError(StylebatchError):
    """The VGG weights cannot be obtained or are not valid VGG19 weights."""


class LockedError(StylebatchError):
    """Another job holds the output directory."""

    exit_code = EXIT_LOCKED


class StopNow(BaseException):
    """A second Ctrl-C: stop at once (the pair resumes from its last periodic checkpoint).

    A BaseException that is not KeyboardInterrupt: Lightning's fit turns a KeyboardInterrupt into
    `sys.exit(1)` (exit 1 means "some pairs failed"), but re-raises anything else, so this reaches
    the CLI, which exits 3 as it says."""


class UnsafePathError(StylebatchError):
    """A symbolic link (or another non-directory) where stylebatch keeps its own state: refused,
    never followed, so the job's writes cannot be redirected outside the output directory."""


class JobGoneError(StylebatchError):
    """The job directory was started afresh (`run --fresh`) under a worker of an earlier run: the
    worker stops without writing anything more there."""

    exit_code = EXIT_INTERRUPTED


class WorkerLostError(StylebatchError):
    """A worker process died on its own; the others checkpointed and stopped: resumable."""

    exit_code = EXIT_INTERRUPTED


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(e: BaseException) -> bool:
    """A full disk or an exhausted quota: the whole job stops (exit 3), no pair is blamed for it."""
    return isinstance(e, OSError) and e.errno in DISK_FULL
