"""The events file (``--chaos-events``): a run's events as JSON, one per line, as they happen.

The Locust process appends (``EventWriter``); ``handshake-chaos soak`` tails the file while it
runs and reads the summary from its last line (``EventReader``). Each event is written as one
whole line and flushed, so a reader sees complete lines, plus at most a partial last one (the
writer was killed mid-line, or is writing it now) that it leaves until it is complete.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from chaos.errors import UsageError
from chaos.results import RunEvent, event_from_json

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"  # its name in a soak's report directory


class EventWriter:
    """Appends events to a file it starts empty."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(f"--chaos-events {path}: cannot write: {exc.strerror or exc}") from None

    def write(self, event: RunEvent) -> None:
        data = (json.dumps(event.to_json(), separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return
            view = memoryview(data)
            try:
                while view:  # one write for a line in practice; a short write is finished, never interleaved
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:  # a full disk must not stop the run: it goes on without its events
                log.error("handshake-chaos: cannot write the events file %s (%s); no more events", self.path, exc)
                os.close(self._fd)
                self._fd = None

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class EventReader:
    """Reads the events appended since the last ``read``; a partial last line waits for its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[RunEvent]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
                self._offset = handle.tell()
        except FileNotFoundError:
            return []  # not written yet (or the writer never started)
        *lines, self._partial = (self._partial + data).split(b"\n")
        events = []
        for line in lines:
            event = _parse(line)
            if event is not None:
                events.append(event)
        return events


def read_events(path: Path) -> list[RunEvent]:
    """Every complete event in the file."""
    return EventReader(path).read()


def _parse(line: bytes) -> RunEvent | None:
    if not line.strip():
        return None
    try:
        data = json.loads(line)
        return event_from_json(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("skipping an unreadable line of the events file: %s", exc)
        return None
