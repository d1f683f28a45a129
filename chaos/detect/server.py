"""Server-side detection: errors a worker logs between the start of its shutdown and its exit.

A worker's shutdown window opens at the stream position of the log when the controller
signalled it (or at its own "Shutting down" line when something else did); records the
worker writes from there on, and the master's lines about its exit, are judged.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from chaos import catalog
from chaos.deployment.families import MASTER_EVENTS
from chaos.detect.logfollow import FileTail, LogRecord
from chaos.results import ExitKind, Side

Position = tuple[int, int]

_BOOTING = re.compile(r"Booting worker with pid: (\d+)")
_SENT_SIGNAL = re.compile(r"Worker \(pid:(\d+)\) was sent (\w+)")
_TERMINATED_BY = re.compile(r"Worker with pid (\d+) was terminated due to signal (\d+)")
_EXIT_CODE = re.compile(r"Worker \(pid:(\d+)\) exited with code (\d+)")
_TIMEOUT = re.compile(r"WORKER TIMEOUT \(pid:(\d+)\)")
_WORKER_EXITING = re.compile(r"Worker exiting \(pid: ?(\d+)\)|Finished server process \[(\d+)\]")
# uvicorn's supervisor about a worker that ended (whatever way): replaced next.
_CHILD_DIED = re.compile(r"Child process \[(\d+)\] died")
# A worker's own first line of its shutdown: uvicorn's, and gunicorn's ASGI worker's.
_SHUTTING_DOWN = re.compile(r"^(?:Shutting down|Worker shutting down\.\.\.)$")
_SPAWNED_WORKER_CRASH = re.compile(r"^Process SpawnProcess-\d+:$", re.MULTILINE)
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_SHUTDOWN_SIGNALS = {"SIGTERM", "SIGINT", "SIGQUIT", "15", "2", "3"}
# A worker leaves several lines as it goes; the most severe names how it exited.
EXIT_SEVERITY: dict[ExitKind, int] = {"clean": 0, "signalled": 1, "nonzero": 2, "crash": 3, "timeout": 4, "killed": 5}


@dataclass(frozen=True)
class DetectedError:
    side: Side
    signature: str
    example: str
    reference: str | None
    pid: int | None = None


def snake_case(name: str) -> str:
    name = name.rsplit(".", 1)[-1]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Classifier:
    """Names the failures in one error record."""

    def __init__(self) -> None:
        self._generic: set[str] = set()

    def classify(
        self, record: LogRecord, known: tuple[catalog.KnownFailure, str] | None
    ) -> list[tuple[str, str, str | None]]:
        """(signature, example line, reference) for each failure the record shows; ``known`` is its
        catalogue match (``catalog.match``), looked up once by the caller."""
        found: list[tuple[str, str, str | None]] = []
        if known is not None:
            entry, line = known
            found.append((entry.signature, line.strip(), entry.reference))
        else:
            exception = _last_exception(record.text)
            if exception is not None:
                found.append((self._generic_signature(exception[0]), exception[1], None))
            else:
                found.append((catalog.ERROR_LOGGED, record.message.strip(), None))
        if "Exception in worker process" in record.message:
            found.append((catalog.WORKER_CRASH, record.message.strip(), None))
        elif spawned := _SPAWNED_WORKER_CRASH.search(record.text):
            # uvicorn's supervisor: multiprocessing prints the worker's last exception to stderr.
            found.append((catalog.WORKER_CRASH, spawned.group(0), None))
        return found

    def _generic_signature(self, exception_type: str) -> str:
        signature = catalog.EXCEPTION_PREFIX + snake_case(exception_type)
        if signature in self._generic or len(self._generic) < catalog.MAX_GENERIC_SIGNATURES:
            self._generic.add(signature)
            return signature
        return catalog.EXCEPTION_OTHER


def _last_exception(text: str) -> tuple[str, str] | None:
    if "Traceback (most recent call last)" not in text:
        return None
    for line in reversed(text.splitlines()):
        if line.startswith((" ", "\t", "Traceback", "During handling", "The above exception")) or not line:
            continue
        match = _EXCEPTION_LINE.match(line)
        if match is not None:
            return match.group(1), line.strip()
    return None


class ServerDetector:
    """Reads the error log and reports shutdown-time errors and worker exits."""

    def __init__(self, tail: FileTail, on_error: Callable[[DetectedError], None]) -> None:
        self.tail = tail
        self.on_error = on_error
        self.classifier = Classifier()
        self._windows: dict[int, Position] = {}
        self._exit_kinds: dict[int, ExitKind] = {}
        self._master_events: Counter[str] = Counter()
        self._noise: Counter[str] = Counter()
        self.unattributed_errors = 0
        # Records without a pid attributed while several workers were shutting down at once.
        self.ambiguous_errors = 0
        self._lock = threading.Lock()

    def open_window(self, pid: int, position: Position | None = None) -> None:
        """The worker's shutdown begins now (its records from ``position`` on are judged)."""
        with self._lock:
            self._windows.setdefault(pid, position if position is not None else self.tail.position())

    def poll(self) -> int:
        """Judges what is new; returns how many bytes were new (0 when the writers are quiet)."""
        with self._lock:
            before = self.tail.bytes_read
            for record in self.tail.read():
                self._judge(record)
            return self.tail.bytes_read - before

    def complete(self) -> None:
        """Judges the record in progress as it stands (the writer went quiet mid-record)."""
        with self._lock:
            for record in self.tail.flush():
                self._judge(record)

    def drain(self) -> None:
        """Reads to the end and completes the last record (the writers are quiet or gone)."""
        self.poll()
        self.complete()

    def _judge(self, record: LogRecord) -> None:
        if self._about_a_worker(record) or self._master_event(record):
            return
        pid = record.pid
        if pid is not None and _SHUTTING_DOWN.match(record.message.strip()):
            self._windows.setdefault(pid, (record.generation, record.offset))
        if not record.is_error and not catalog.judged_at_any_level(record.text):
            exiting = _WORKER_EXITING.search(record.message)
            if exiting:
                self._exit(int(exiting.group(1) or exiting.group(2)), "clean")
            return
        known = catalog.match(record.text)
        if known is not None and known[0].noise:
            self._noise[known[0].signature] += 1
            return
        if pid is None:
            pid = self._attribute(record)
        window = self._windows.get(pid) if pid is not None else None
        if window is None or (record.generation, record.offset) < window:
            self.unattributed_errors += 1
            return
        for signature, example, reference in self.classifier.classify(record, known):
            if signature == catalog.WORKER_CRASH:
                self._exit(pid, "crash")  # type: ignore[arg-type]
            self.on_error(DetectedError("server", signature, example, reference, pid))

    def _attribute(self, record: LogRecord) -> int | None:
        """A record without a pid belongs to the worker shutting down when it was written: exact while
        one worker shuts down at a time; with several, the one whose shutdown began last (counted as
        ambiguous, and the summary says so)."""
        at = (record.generation, record.offset)
        shutting_down = [
            (window, pid) for pid, window in self._windows.items() if window <= at and pid not in self._exit_kinds
        ]
        if not shutting_down:
            return None
        if len(shutting_down) > 1:
            self.ambiguous_errors += 1
        return max(shutting_down)[1]

    def _master_event(self, record: LogRecord) -> bool:
        message = record.message.strip()
        for pattern, event in MASTER_EVENTS:
            match = pattern.search(message)
            if match:
                names = [group.lower() for group in match.groups() if group]
                self._master_events[event.format(*names)] += 1
                return event != "master_halt_reason"  # why a master halted is an error worth judging too
        return False

    def noise(self) -> dict[str, int]:
        """Recognised error-level lines that are not shutdown errors, by signature."""
        with self._lock:
            return dict(sorted(self._noise.items()))

    def master_events(self) -> dict[str, int]:
        """The masters' own lines so far (start, signals handled, reload, shutdown), by event."""
        with self._lock:
            return dict(sorted(self._master_events.items()))

    def _about_a_worker(self, record: LogRecord) -> bool:
        """Master lines about a worker: its boot (pid reuse ends an old window) and its exit."""
        message = record.message
        booting = _BOOTING.search(message)
        if booting:
            self._windows.pop(int(booting.group(1)), None)
            return True
        for pattern, judge in (
            (_CHILD_DIED, self._died),
            (_SENT_SIGNAL, self._signalled),
            (_TERMINATED_BY, self._signalled),
            (_EXIT_CODE, self._exit_code),
            (_TIMEOUT, self._timeout),
        ):
            match = pattern.search(message)
            if match:
                worker = int(match.group(1))
                if worker in self._windows:
                    judge(worker, match.group(match.lastindex or 1), message.strip())
                return True
        return False

    def _died(self, worker: int, _group: str, line: str) -> None:
        # It ended; a crash says so with its own lines, a clean end with "Finished server process".
        self._exit(worker, "signalled")

    def _signalled(self, worker: int, signal_name: str, line: str) -> None:
        if signal_name in _SHUTDOWN_SIGNALS:
            self._exit(worker, "signalled")
            return
        self._exit(worker, "killed")
        self.on_error(DetectedError("server", catalog.WORKER_KILLED, line, None, worker))

    def _exit_code(self, worker: int, code: str, line: str) -> None:
        if code != "0":
            self._exit(worker, "nonzero")
            self.on_error(DetectedError("server", catalog.WORKER_EXIT_NONZERO, line, None, worker))

    def _timeout(self, worker: int, _group: str, line: str) -> None:
        self._exit(worker, "timeout")
        self.on_error(DetectedError("server", catalog.WORKER_TIMEOUT, line, None, worker))

    def _exit(self, pid: int, kind: ExitKind) -> None:
        previous = self._exit_kinds.get(pid)
        if previous is None or EXIT_SEVERITY[kind] > EXIT_SEVERITY[previous]:
            self._exit_kinds[pid] = kind

    def exit_kind(self, pid: int) -> ExitKind | None:
        """How a worker whose shutdown was watched exited, as far as the log has said."""
        with self._lock:
            return self._exit_kinds.get(pid)
