"""A session's events, appended to ``--chaos-events`` as they happen (``chaos.report.events``).

``started`` once the deployment is up; ``signal`` for each signal; ``first_seen`` for each new
signature; ``progress`` every few seconds; ``verdict_settled`` when ``--until-verdict`` stops the
run; ``summary`` last. ``handshake-chaos soak`` learns everything about its Locust process from these.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from chaos.report.events import EventWriter
from chaos.results import (
    ErrorRow,
    FirstSeen,
    Progress,
    RunEvent,
    RunFinished,
    RunStarted,
    RunSummary,
    SignalRecord,
    SignalSent,
    VerdictSettled,
)
from chaos.run.session import ChaosSession

PROGRESS_SECONDS = 5.0


class RunEvents:
    """Writes one session's events; attach before ``session.start()`` so nothing is missed."""

    def __init__(self, path: Path, session: ChaosSession, progress_seconds: float = PROGRESS_SECONDS) -> None:
        self.writer = EventWriter(path)
        self.session = session
        self.progress_seconds = progress_seconds
        self._stop = threading.Event()
        self._progress_thread: threading.Thread | None = None
        session.totals.on_first_seen(self._first_seen)
        session.on_signal(self._signal)

    def started(self) -> None:
        """The session has started: its labels, then progress every few seconds."""
        session = self.session
        self.write(
            RunStarted(
                release=session.release,
                ws=session.ws,
                mode=session.mode,
                server=session.options.server,
                metrics_url=session.metrics_url,
                target_url=session.host,
                time=time.time(),
                versions=dict(session.versions),
            )
        )
        if self._progress_thread is None:
            self._progress_thread = threading.Thread(target=self._progress_loop, name="handshake-chaos-events")
            self._progress_thread.daemon = True
            self._progress_thread.start()

    def verdict_settled(self, reason: str) -> None:
        self.write(VerdictSettled(reason, time.time()))

    def stop_progress(self) -> None:
        self._stop.set()
        thread, self._progress_thread = self._progress_thread, None
        if thread is not None:
            thread.join(timeout=5)

    def finish(self, summary: RunSummary) -> None:
        """The summary, last; then the file is closed."""
        self.stop_progress()
        self.write(RunFinished(summary))
        self.close()

    def close(self) -> None:
        self.stop_progress()
        self.writer.close()

    def write(self, event: RunEvent) -> None:
        self.writer.write(event)

    def progress(self) -> Progress:
        session = self.session
        rows = session.totals.error_rows()
        sent = Counter(record.signal for record in session.records() if not record.dry_run)
        return Progress(
            time=time.time(),
            elapsed=round(time.time() - session.started, 1),
            signals=dict(sorted(sent.items())),
            handshakes=sum(session.totals.outcomes().values()),
            errors=sum(row.count for row in rows),
            signatures=len(rows),
            pending=session.exposure.pending(),
        )

    def _progress_loop(self) -> None:
        while not self._stop.wait(self.progress_seconds):
            self.write(self.progress())

    def _first_seen(self, row: ErrorRow) -> None:
        self.write(FirstSeen.of(row))

    def _signal(self, record: SignalRecord) -> None:
        self.write(
            SignalSent(
                id=record.id,
                signal=record.signal,
                role=record.role,
                pending=record.pending,
                time=record.time,
                worker_pid=record.worker_pid,
                dry_run=record.dry_run,
            )
        )
