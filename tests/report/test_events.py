"""The events file: typed events written as whole lines, read back as they were, a partial last line left for later."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chaos.errors import UsageError
from chaos.report.events import EventReader, EventWriter, read_events
from chaos.results import (
    ErrorRow,
    FirstSeen,
    Progress,
    RunFinished,
    RunStarted,
    SignalSent,
    VerdictSettled,
)
from tests.helpers import SIGNATURE_596 as _596
from tests.helpers import run_summary as _summary


def _events() -> list[Any]:
    row = ErrorRow("server", _596, 3, "LocalProtocolError: Event | CloseConnection", "uvicorn #596", "0.20.0")
    return [
        RunStarted("0.19.0", "wsproto", "master-hup", "gunicorn-uvicorn", "http://127.0.0.1:1/metrics", None, 1.5),
        SignalSent(1, "HUP", "master", 7, 2.0, 4599),
        FirstSeen.of(row),
        Progress(7.0, 5.5, {"HUP": 2}, 140, 3, 1, pending=9),
        VerdictSettled("verdict settled: fail", 8.0),
        RunFinished(_summary()),
    ]


def test_events_read_back_as_written(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    for event in _events():
        writer.write(event)
    writer.close()
    writer.write(SignalSent(2, "HUP", "master", 0, 3.0, 4600))  # after close: nothing
    assert read_events(path) == _events()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [
        "started",
        "signal",
        "first_seen",
        "progress",
        "verdict_settled",
        "summary",
    ]


def test_a_partial_last_line_waits_for_its_end(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read() == []  # not written yet
    writer = EventWriter(path)
    first, second, *_ = _events()
    writer.write(first)
    line = (json.dumps(second.to_json()) + "\n").encode()
    with path.open("ab") as handle:
        handle.write(line[:10])
    assert reader.read() == [first]
    assert read_events(path) == [first]
    with path.open("ab") as handle:
        handle.write(line[10:])
    assert reader.read() == [second]
    assert reader.read() == []


def test_unknown_kinds_and_bad_lines_are_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    started = _events()[0]
    path.write_text('{"kind": "from-the-future", "x": 1}\nnot json\n' + json.dumps(started.to_json()) + "\n")
    assert read_events(path) == [started]


def test_a_writer_starts_the_file_empty_and_says_when_it_cannot(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("a previous run's\n")
    EventWriter(path).close()
    assert path.read_text() == ""
    with pytest.raises(UsageError, match="--chaos-events"):
        EventWriter(path / "under-a-file")


def test_the_console_lines_of_the_events():
    first = _events()[2]
    assert first.line() == (
        f"first server-side {_596}, 3 so far: LocalProtocolError: Event | CloseConnection (see uvicorn #596)"
        f" -- REGRESSION: regression of uvicorn #596, fixed in 0.20.0"
    )
    assert _events()[3].counts() == "signals 2 (HUP 2), handshakes 140, errors 3 (1 signature)"
    assert Progress(1.0, 1.0, {}, 0, 0, 0).counts() == "signals 0, handshakes 0, errors 0 (0 signatures)"
