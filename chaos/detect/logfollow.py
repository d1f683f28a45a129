"""Following a deployment's error log: records out of a byte stream, across rotation and truncation.

gunicorn's error log is one line per record, ``[time] [pid] [LEVEL] message``, with a
traceback's lines following its record without that prefix. The parser groups them
into one ``LogRecord``; it never raises on any input (garbage, NULs, half a line).

External deployments often log otherwise: one JSON object per line (python-json-logger,
structlog; ``JsonFormat`` with configurable field names), or text without gunicorn's
``[pid]`` (``PlainFormat``: a level word near the start of the line). Records without a pid
are attributed by the detector from the time window (``chaos.detect.server``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

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


@dataclass(frozen=True)
class Header:
    """What the first line of a record says: who logged it, at what level, what (and its full text)."""

    pid: int | None
    level: str
    message: str
    text: str


class LineFormat(Protocol):
    def header(self, line: bytes) -> Header | None:
        """The header of a record starting at ``line``, or None when it continues the record before."""


class GunicornFormat:
    """gunicorn's own: ``[time] [pid] [LEVEL] message``."""

    def header(self, line: bytes) -> Header | None:
        match = _HEADER.match(line)
        if match is None:
            return None
        text = line.decode("utf-8", "replace")
        return Header(int(match.group("pid")), match.group("level").decode(), _text(match.group("message")), text)


_PLAIN_HEADER = re.compile(
    rb"^(?P<prefix>[^\s].{0,100}?)?(?:^|(?<=[\s\[|]))(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)"
    rb"(?=[\s\]:|])[\]:|]*\s?(?P<message>.*)$"
)
_PID_IN_PREFIX = re.compile(rb"\[(\d{1,10})\]")
_LEVELS = {"WARN": "WARNING", "FATAL": "CRITICAL"}


class PlainFormat:
    """Text records with a level word near the start (``2026-11-24 10:00:00 [ERROR] message``), a
    ``[pid]`` before it when the format has one; indented lines continue the record (tracebacks)."""

    def header(self, line: bytes) -> Header | None:
        if not line or line[:1].isspace() or line.startswith(b"Traceback"):
            return None
        match = _PLAIN_HEADER.match(line)
        if match is None:
            return None
        pid = _PID_IN_PREFIX.search(match.group("prefix") or b"")
        level = match.group("level").decode()
        text = line.decode("utf-8", "replace")
        message = _text(match.group("message")).lstrip(" |:-")
        return Header(int(pid.group(1)) if pid else None, _LEVELS.get(level, level), message, text)


# Where common JSON loggers put each field (python-json-logger's LogRecord names, structlog's).
DEFAULT_JSON_KEYS: Mapping[str, tuple[str, ...]] = {
    "message": ("message", "msg", "event"),
    "pid": ("process", "pid"),
    "level": ("levelname", "level", "severity"),
    "exception": ("exc_info", "exception", "exc_text", "stack_info"),
}


@dataclass(frozen=True)
class JsonFormat:
    """One JSON object per line; ``keys`` names the field holding each part (first present wins)."""

    keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_JSON_KEYS))

    @classmethod
    def parse_keys(cls, text: str) -> JsonFormat:
        """``message=event,pid=proc``: the named fields replace the defaults for those parts."""
        keys = dict(DEFAULT_JSON_KEYS)
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            part, _, name = item.partition("=")
            if part.strip() not in keys or not name.strip():
                raise ValueError(f"expected PART=FIELD with PART one of {', '.join(keys)}, got {item!r}")
            keys[part.strip()] = (name.strip(),)
        return cls(keys)

    def _field(self, record: Mapping[str, Any], part: str) -> Any:
        for name in self.keys[part]:
            if record.get(name) not in (None, ""):
                return record[name]
        return None

    def header(self, line: bytes) -> Header | None:
        if not line.lstrip().startswith(b"{"):
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        message = str(self._field(record, "message") or "")
        pid = self._field(record, "pid")
        level = str(self._field(record, "level") or "UNKNOWN").upper()
        exception = self._field(record, "exception")
        if isinstance(exception, list):  # structlog's dict tracebacks, or a list of lines
            exception = "\n".join(str(item) for item in exception)
        text = message + (f"\n{exception}" if exception else "")
        digits = str(pid) if isinstance(pid, int | str) else ""
        return Header(int(digits) if digits.isdigit() else None, _LEVELS.get(level, level), message, text)


GUNICORN_FORMAT = GunicornFormat()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class RecordParser:
    """Turns bytes into records; a record is complete once the next header (or a flush) arrives."""

    def __init__(self, generation: int = 0, start_offset: int = 0, line_format: LineFormat = GUNICORN_FORMAT) -> None:
        self.line_format = line_format
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
        header = self.line_format.header(line)
        if header is None:
            if self._current_header is not None and len(self._current) < _MAX_RECORD_LINES:
                self._current.append(line.decode("utf-8", "replace"))
            elif self._current_header is None and line.strip():
                # Text with no header before it (e.g. a worker's stderr): its own record.
                self._current_header = (None, "UNKNOWN", line.decode("utf-8", "replace"), offset)
                self._current = [line.decode("utf-8", "replace")]
            return []
        finished = self._finish()
        self._current_header = (header.pid, header.level, header.message, offset)
        self._current = [header.text]
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

    def __init__(
        self, path: str | os.PathLike[str], from_start: bool = True, line_format: LineFormat = GUNICORN_FORMAT
    ) -> None:
        self.path = Path(path)
        self.generation = 0
        self._handle: BinaryIO | None = None
        self._from_start = from_start
        self.line_format = line_format
        self.parser = RecordParser(line_format=line_format)
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
        self.parser = RecordParser(self.generation, line_format=self.line_format)
        return records

    def _open(self, at_end: bool) -> bool:
        try:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open across reads on purpose
        except OSError:
            return False
        if at_end:
            self._handle.seek(0, os.SEEK_END)
        self.parser = RecordParser(self.generation, start_offset=self._handle.tell(), line_format=self.line_format)
        return True

    def _drain(self, limit: int) -> list[LogRecord]:
        assert self._handle is not None
        data = self._handle.read(limit)
        self.bytes_read += len(data)
        return self.parser.feed(data) if data else []
