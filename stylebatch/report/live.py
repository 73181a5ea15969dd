"""The report while the job runs: rank 0 rewrites it every `report_every` minutes (the first time
after at most FIRST_S) and once more at the end; its pages reload themselves meanwhile.

Each refresh while pairs run is `stylebatch report OUT --live-every S` in a child process (which
lowers its own priority: no preexec_fn in a process with threads), in a session of its own: a report of 100,000 pairs keeps a core busy for a while, and in
a thread of this process it held the GIL so much that a 32 px pair ran 20x slower beside it
(measured). A thread here only starts the child, waits for it, and stops it when the job ends.
The final report, when no pair runs any more, is written in this process (no start-up cost).

A report that fails is logged and never fails the job: it is a view of the state, not the state.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import stylebatch
from stylebatch.job.pairs import Job
from stylebatch.jobdir.state import JobState
from stylebatch.report.build import write_report

log = logging.getLogger("stylebatch")
FIRST_S = 60.0  # the first live report comes after at most this long


def report_every_s(job: Job) -> float:
    """`report_every` (minutes) of the job's pairs, in seconds: the smallest one set; 0 means off."""
    minutes = [float(p.config.report_every) for p in job.valid_pairs]
    return 60.0 * min(minutes) if minutes else 0.0


def _report_command(output_dir: Path, live_every: float) -> list[str]:
    # `--live-every` is in minutes, like report_every
    return [sys.executable, "-m", "stylebatch", "report", str(output_dir), "--live-every", f"{live_every / 60:g}"]


class LiveReport:
    def __init__(self, output_dir: Path, every_s: float) -> None:
        self.output_dir, self.every_s = Path(output_dir).resolve(), every_s
        self._wake = threading.Event()
        self._final = False
        self._thread: threading.Thread | None = None

    def start(self) -> LiveReport:
        if self.every_s > 0:
            self._thread = threading.Thread(target=self._loop, name="stylebatch-report", daemon=True)
            self._thread.start()
        return self

    def stop(self, final: bool) -> None:
        """End the refreshes (a report in progress is stopped); with `final`, write the report once
        more, here. Idempotent."""
        if self._thread is not None:
            self._wake.set()
            self._thread.join()
            self._thread = None
        if final and self.every_s > 0 and not self._final:
            self._final = True
            try:
                result = write_report(self.output_dir)
                log.info("report: %s (%d of %d pages made)", result.html, result.made, result.pages)
            except Exception as e:  # noqa: BLE001 (a view of the state: never fails the job)
                log.warning("report not written: %s: %s", type(e).__name__, e, exc_info=True)

    def _loop(self) -> None:
        delay = min(self.every_s, FIRST_S)
        while not self._wake.wait(delay):
            self._run()
            delay = self.every_s

    def _run(self) -> None:
        env = dict(os.environ)
        # The child imports this same stylebatch (a checkout on sys.path, not another install).
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(stylebatch.__file__).resolve().parent.parent), *filter(None, [env.get("PYTHONPATH")])]
        )
        logs = JobState(self.output_dir).logs_dir
        try:
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / "report.log", "ab") as err:
                proc = subprocess.Popen(
                    _report_command(self.output_dir, self.every_s),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                    start_new_session=True,
                )  # a Ctrl-C is the job's to handle
        except OSError as e:
            log.warning("report not started: %s", e)
            return
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if self._wake.is_set():
                    proc.terminate()  # the job is ending: the final report (if any) replaces this one
                    code = proc.wait()
                    break
        if code not in (0, -15):
            log.warning("report exited %s (see %s)", code, logs / "report.log")
