"""Following a gunicorn error log: records out of a byte stream, across rotation and truncation.

gunicorn's error log is one line per record, ``[time] [pid] [LEVEL] message``, with a
traceback's lines following its record without that prefix. The parser groups them
into one ``LogRecord``; it never raises on any input (garbage, NULs, half a line).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_HEADER = re.compile(rb"^\[(?P<time>[^\]]{1,64})\] \[(?P<pid>\d{1,10})\] \[(?P<level>[A-Z]{1,10})\] ?(?P<message>.*)$")
# A record's continuation lines are kept up to this many; a runaway traceback is cut.
_MAX_RECORD_LINES = 400
_MAX_LINE_BYTES = 16384


@dataclass(frozen=True)
class LogRecord:
    pid: int | None
    level: str
    message: str
    text: str
    offset: int
    generation: int

    @property
    def is_error(self) -> bool:
        return self.level in ("ERROR", "CRITICAL") or "Traceback (most recent call last)" in self.text


class RecordParser:
    """Turns bytes into records; a record is complete once the next header (or a flush) arrives."""

    def __init__(self, generation: int = 0, start_offset: int = 0) -> None:
        self.generation = generation
        self._offset = start_offset  # stream offset of the next byte fed
        self._partial = b""  # the line in progress (its head only, if it runs long)
        self._partial_offset = start_offset
        self._current: list[str] = []
        self._current_header: tuple[int | None, str, str, int] | None = None

    def feed(self, data: bytes) -> list[LogRecord]:
        # Offsets come from the data as fed, not from the (possibly cut) partial line.
        records: list[LogRecord] = []
        position = self._offset
        self._offset += len(data)
        *complete, rest = data.split(b"\n")
        for piece in complete:
            line = self._partial + piece
            records.extend(self._line(line[:_MAX_LINE_BYTES].rstrip(b"\r"), self._partial_offset))
            position += len(piece) + 1
            self._partial, self._partial_offset = b"", position
        # A line this long without a newline is not a log line; keep its head only.
        self._partial = (self._partial + rest)[:_MAX_LINE_BYTES]
        return records

    def flush(self) -> list[LogRecord]:
        """Completes the record in progress (the writer has gone quiet)."""
        records = []
        if self._partial:
            records.extend(self._line(self._partial, self._partial_offset))
            self._partial_offset += len(self._partial)
            self._partial = b""
        record = self._finish()
        if record is not None:
            records.append(record)
        return records

    def _line(self, line: bytes, offset: int) -> list[LogRecord]:
        match = _HEADER.match(line)
        if match is None:
            if self._current_header is not None and len(self._current) < _MAX_RECORD_LINES:
                self._current.append(line.decode("utf-8", "replace"))
            elif self._current_header is None and line.strip():
                # Text with no header before it (e.g. a worker's stderr): its own record.
                self._current_header = (None, "UNKNOWN", line.decode("utf-8", "replace"), offset)
                self._current = [line.decode("utf-8", "replace")]
            return []
        finished = self._finish()
        message = match.group("message").decode("utf-8", "replace")
        self._current_header = (int(match.group("pid")), match.group("level").decode(), message, offset)
        self._current = [line.decode("utf-8", "replace")]
        return [finished] if finished is not None else []

    def _finish(self) -> LogRecord | None:
        if self._current_header is None:
            return None
        pid, level, message, offset = self._current_header
        record = LogRecord(pid, level, message, "\n".join(self._current), offset, self.generation)
        self._current_header = None
        self._current = []
        return record


class FileTail:
    """Reads what was appended to a file since last time; follows rotation and truncation.

    The open handle keeps a rotated file readable to its end before the new one is
    opened. ``position()`` names the current end of the stream as (generation, offset),
    so a caller can say "records written from now on", across rotations too.
    """

    def __init__(self, path: str | os.PathLike[str], from_start: bool = True) -> None:
        self.path = Path(path)
        self.generation = 0
        self._handle: BinaryIO | None = None
        self._from_start = from_start
        self.parser = RecordParser()
        self.bytes_read = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def position(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except OSError:
            stat = None
        if self._handle is None:
            return (self.generation, stat.st_size if stat else 0)
        own = os.fstat(self._handle.fileno())
        if stat is not None and (stat.st_dev, stat.st_ino) != (own.st_dev, own.st_ino):
            return (self.generation + 1, stat.st_size)
        if own.st_size < self._handle.tell():
            return (self.generation + 1, own.st_size)
        return (self.generation, own.st_size)

    def read(self, limit: int = 8 * 1024 * 1024) -> list[LogRecord]:
        """New complete records; ``flush`` completes the one in progress."""
        if self._handle is None and not self._open(at_end=not self._from_start):
            return []
        assert self._handle is not None
        records: list[LogRecord] = []
        own = os.fstat(self._handle.fileno())
        if own.st_size < self._handle.tell():
            # Truncated in place (copytruncate): start over from its beginning.
            records.extend(self._next_generation())
            self._handle.seek(0)
        records.extend(self._drain(limit))
        try:
            stat = self.path.stat()
        except OSError:
            return records
        if (stat.st_dev, stat.st_ino) != (own.st_dev, own.st_ino):
            # Rotated: the old file was drained above; continue with the new one.
            records.extend(self._next_generation())
            self.close()
            if self._open(at_end=False):
                records.extend(self._drain(limit))
        return records

    def flush(self) -> list[LogRecord]:
        return self.parser.flush()

    def _next_generation(self) -> list[LogRecord]:
        records = self.parser.flush()
        self.generation += 1
        self.parser = RecordParser(self.generation)
        return records

    def _open(self, at_end: bool) -> bool:
        try:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open across reads on purpose
        except OSError:
            return False
        if at_end:
            self._handle.seek(0, os.SEEK_END)
        self.parser = RecordParser(self.generation, start_offset=self._handle.tell())
        return True

    def _drain(self, limit: int) -> list[LogRecord]:
        assert self._handle is not None
        data = self._handle.read(limit)
        self.bytes_read += len(data)
        return self.parser.feed(data) if data else []
