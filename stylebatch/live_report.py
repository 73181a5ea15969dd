"""The report while the job runs: rank 0 writes it when the job starts, every `report_every` minutes,
and once more at the end, from a thread beside the pairs (so a long pair does not hold it up).
The pages of a job with work left reload themselves meanwhile (report.write_report's live_every).

A report that fails is logged and never fails the job: it is a view of the state, not the state.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from stylebatch.report import Cancelled, write_report

log = logging.getLogger("stylebatch")
DEFAULT_EVERY_MIN = 5.0  # config.report_every's default (the config key may not exist in every version)


def report_every_s(job: Any) -> float:
    """`report_every` (minutes) of the job's pairs, in seconds: the smallest one set; 0 means off."""
    minutes = [float(getattr(p.config, "report_every", DEFAULT_EVERY_MIN)) for p in job.valid_pairs]
    return 60.0 * min(minutes) if minutes else 0.0


class LiveReport:
    def __init__(self, output_dir: Path, every_s: float):
        self.output_dir, self.every_s = Path(output_dir), every_s
        self._wake = threading.Event()
        self._final = False
        self._abort = False
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveReport":
        if self.every_s > 0:
            self._thread = threading.Thread(target=self._loop, name="stylebatch-report", daemon=True)
            self._thread.start()
        return self

    def stop(self, final: bool) -> None:
        """End the refreshes; with `final`, write the report once more (waits for it). Idempotent."""
        if self._thread is None:
            return
        self._final, self._abort = final, not final
        self._wake.set()
        self._thread.join()
        self._thread = None

    def _loop(self) -> None:
        while not self._wake.is_set():
            self._write(live=True)
            self._wake.wait(self.every_s)
        if self._final:
            self._write(live=False)

    def _write(self, live: bool) -> None:
        cancel = self._wake.is_set if live else (lambda: self._abort)
        try:
            result = write_report(self.output_dir, live_every=self.every_s if live else None, cancel=cancel)
            log.info("report: %s (%d of %d pages made)", result.html, result.made, result.pages)
        except Cancelled:
            pass
        except Exception as e:  # noqa: BLE001 (a view of the state: never fails the job)
            log.warning("report not written: %s: %s", type(e).__name__, e, exc_info=True)
