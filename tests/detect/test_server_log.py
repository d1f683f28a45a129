"""The log follower and the server-side classifier, on recorded logs of real releases and on garbage."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos import catalog
from chaos.detect.logfollow import FileTail, LogRecord, RecordParser
from chaos.detect.server import Classifier, DetectedError, ServerDetector, snake_case

DATA = Path(__file__).resolve().parent.parent / "data"
RECORDED = {
    # Logs of real gunicorn masters, each with one worker TERMed while it held
    # pending handshakes (tests/data/README.md says how they were made).
    "uvicorn-0.19.0-wsproto-term.log": {
        "uvicorn_596_wsproto_close_during_handshake": 9,
        "worker_crash_during_shutdown": 1,
    },
    "uvicorn-0.19.0-websockets-term.log": {
        "uvicorn_1344_websockets_handshake_closed_on_shutdown": 5,
        "uvicorn_1816_websockets_recv_after_shutdown": 5,
    },
    "uvicorn-0.29.0-wsproto-term.log": {"uvicorn_accept_after_shutdown_rejection": 5},
    "uvicorn-0.20.0-wsproto-term.log": {},
    # The late accept, still in 0.52.0 and gone in 0.52.1 (27 handshakes pending at the TERM).
    "uvicorn-0.52.0-wsproto-term.log": {"uvicorn_accept_after_shutdown_rejection": 6},
    "uvicorn-0.52.1-wsproto-term.log": {},
    # gunicorn's own ASGI worker with --graceful-timeout 1: pending handshakes outlast it.
    "gunicorn-asgi-26.2.0-term-graceful-1.log": {"gunicorn_asgi_forced_close": 1},
    # Streamed denials (deny-stream) on 0.54.0: #596's text on another path (the text alone matches #596's
    # entry first: the run names the path from the scenario, test_a_denial_crash_is_named_by_its_state).
    # A 403 rejection still closing when TERM lands (deny-close, 0.30.6): #596's text on a third path.
    "uvicorn-0.30.6-wsproto-deny-close-term.log": {
        "uvicorn_596_wsproto_close_during_handshake": 57,
        "worker_crash_during_shutdown": 1,
        "worker_exit_nonzero": 2,
    },
    "uvicorn-0.54.0-wsproto-deny-stream-term.log": {
        "uvicorn_596_wsproto_close_during_handshake": 7,
        "worker_crash_during_shutdown": 1,
        "worker_exit_nonzero": 1,
    },
}


def test_a_denial_crash_is_named_by_its_state_and_its_release_never_by_its_text():
    """The recorded 0.54.0 log says exactly what a #596 log says; what names the path is the state the
    handshakes were in (deny-stream), or, with several at once, that 0.54.0 from the index has only the
    denial path open."""
    found: list[DetectedError] = []
    detector = ServerDetector(FileTail(DATA / "uvicorn-0.54.0-wsproto-deny-stream-term.log"), found.append)
    detector.drain()
    texts = [error for error in found if error.signature == "uvicorn_596_wsproto_close_during_handshake"]
    assert len(texts) == 7
    entry = catalog.known(texts[0].signature)
    assert entry is not None
    for scenario in ("deny-stream", None):
        named = catalog.name_the_path(entry, scenario, "wsproto", "0.54.0", from_index=True)
        assert named.signature == "uvicorn_wsproto_close_during_denial_response"
        assert catalog.regression_of(named.signature, "wsproto", "0.54.0") is None


def _detect(path: Path) -> tuple[Counter[str], ServerDetector]:
    found: Counter[str] = Counter()
    detector = ServerDetector(FileTail(path), lambda error: found.update([error.signature]))
    detector.drain()
    return found, detector


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_release_logs(name):
    found, detector = _detect(DATA / name)
    assert dict(found) == RECORDED[name]
    assert detector.unattributed_errors == 0


def test_the_596_crash_is_a_crash_exit():
    _, detector = _detect(DATA / "uvicorn-0.19.0-wsproto-term.log")
    assert detector.exit_kind(4599) == "crash"


def test_records_group_tracebacks_and_keep_offsets():
    data = (DATA / "uvicorn-0.19.0-wsproto-term.log").read_bytes()
    parser = RecordParser()
    records = parser.feed(data) + parser.flush()
    crash = [r for r in records if r.message == "Exception in worker process"]
    assert len(crash) == 1 and crash[0].pid == 4599
    assert "LocalProtocolError" in crash[0].text and crash[0].text.count("\n") > 10
    for record in records:
        assert data[record.offset : record.offset + 1] == b"["


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=30000), max_size=40))
def test_any_split_of_the_stream_gives_the_same_records(cuts):
    data = (DATA / "uvicorn-0.19.0-websockets-term.log").read_bytes()
    whole = RecordParser()
    expected = whole.feed(data) + whole.flush()
    parser = RecordParser()
    got: list[LogRecord] = []
    previous = 0
    for cut in sorted(set(min(c, len(data)) for c in cuts)):
        got += parser.feed(data[previous:cut])
        previous = cut
    got += parser.feed(data[previous:]) + parser.flush()
    assert got == expected


@settings(max_examples=200)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_crash_the_parser_or_classifier(blob):
    parser = RecordParser()
    classifier = Classifier()
    for record in parser.feed(blob) + parser.flush():
        assert classifier.classify(record, catalog.match(record.text))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_garbled_tracebacks_never_crash_the_detector(tmp_path_factory, data):
    original = bytearray((DATA / "uvicorn-0.19.0-wsproto-term.log").read_bytes())
    for _ in range(data.draw(st.integers(min_value=1, max_value=50))):
        position = data.draw(st.integers(min_value=0, max_value=len(original) - 1))
        original[position] = data.draw(st.integers(min_value=0, max_value=255))
    path = tmp_path_factory.mktemp("garbled") / "error.log"
    path.write_bytes(bytes(original))
    errors: list[DetectedError] = []
    ServerDetector(FileTail(path), errors.append).drain()
    assert all(error.side == "server" and error.signature for error in errors)


def _line(pid: int, level: str, message: str) -> bytes:
    return f"[2026-11-24 01:00:00 +0000] [{pid}] [{level}] {message}\n".encode()


TRACEBACK = b'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: boom\n'


def test_rotation_mid_run_loses_nothing(tmp_path):
    log = tmp_path / "error.log"
    log.write_bytes(_line(10, "INFO", "Shutting down"))
    errors: list[DetectedError] = []
    detector = ServerDetector(FileTail(log), errors.append)
    detector.poll()
    with log.open("ab") as handle:
        handle.write(_line(10, "ERROR", "Exception in ASGI application") + TRACEBACK[:30])
    detector.poll()
    with log.open("ab") as handle:  # the rest of the traceback lands just before rotation
        handle.write(TRACEBACK[30:])
    os.rename(log, tmp_path / "error.log.1")
    log.write_bytes(_line(11, "INFO", "Shutting down") + _line(11, "ERROR", "Exception in ASGI application"))
    with log.open("ab") as handle:
        handle.write(TRACEBACK.replace(b"ValueError", b"KeyError"))
    detector.drain()
    assert [(e.pid, e.signature) for e in errors] == [
        (10, "shutdown_exception_value_error"),
        (11, "shutdown_exception_key_error"),
    ]
    assert detector.tail.generation == 1


def test_truncation_in_place_starts_over(tmp_path):
    log = tmp_path / "error.log"
    log.write_bytes(_line(10, "INFO", "Shutting down") + _line(10, "ERROR", "first") * 5)
    errors: list[DetectedError] = []
    detector = ServerDetector(FileTail(log), errors.append)
    detector.drain()
    assert len(errors) == 5
    log.write_bytes(b"")  # copytruncate
    detector.poll()
    with log.open("ab") as handle:
        handle.write(_line(12, "INFO", "Shutting down") + _line(12, "ERROR", "after truncation"))
    detector.drain()
    assert [e.example for e in errors[5:]] == ["after truncation"]


def test_errors_before_the_window_are_not_shutdown_errors(tmp_path):
    log = tmp_path / "error.log"
    log.write_bytes(_line(20, "ERROR", "an error before any signal"))
    errors: list[DetectedError] = []
    detector = ServerDetector(FileTail(log), errors.append)
    detector.open_window(20)  # the controller signals worker 20 now
    with log.open("ab") as handle:
        handle.write(_line(20, "ERROR", "Exception in ASGI application") + TRACEBACK)
        handle.write(_line(1, "INFO", "Booting worker with pid: 20"))  # pid reused: window closed
        handle.write(_line(20, "ERROR", "the new process's own error"))
    detector.drain()
    assert [e.signature for e in errors] == ["shutdown_exception_value_error"]
    assert detector.unattributed_errors == 2


@pytest.mark.parametrize(
    ("line", "signature", "kind"),
    [
        ("Worker (pid:30) was sent SIGKILL! Perhaps out of memory?", catalog.WORKER_KILLED, "killed"),
        ("Worker (pid:30) exited with code 255.", catalog.WORKER_EXIT_NONZERO, "nonzero"),
        ("WORKER TIMEOUT (pid:30)", catalog.WORKER_TIMEOUT, "timeout"),
        ("Worker with pid 30 was terminated due to signal 9", catalog.WORKER_KILLED, "killed"),
        ("Worker (pid:30) was sent SIGTERM!", None, "signalled"),
        ("Worker with pid 30 was terminated due to signal 15", None, "signalled"),
    ],
)
def test_master_lines_about_a_signalled_worker(tmp_path, line, signature, kind):
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    errors: list[DetectedError] = []
    detector = ServerDetector(FileTail(log), errors.append)
    detector.open_window(30)
    log.write_bytes(_line(1, "ERROR", line))
    detector.drain()
    assert [e.signature for e in errors] == ([signature] if signature else [])
    assert detector.exit_kind(30) == kind


def test_generic_signatures_stay_bounded():
    classifier = Classifier()
    signatures: set[str] = set()
    for index in range(100):
        text = f"[t] [1] [ERROR] x\nTraceback (most recent call last):\nOdd{index}Error: nope"
        record = LogRecord(1, "ERROR", "x", text, 0, 0)
        signatures.update(signature for signature, _, _ in classifier.classify(record, catalog.match(record.text)))
    assert len(signatures) <= 26 and catalog.EXCEPTION_OTHER in signatures


def test_snake_case():
    assert snake_case("websockets.exceptions.ConnectionClosedError") == "connection_closed_error"
    assert snake_case("HTTPError") == "http_error"


def test_offsets_stay_exact_after_an_overlong_line():
    data = b"x" * 40000 + b"\n" + _line(7, "ERROR", "after the long line")
    for chunks in ([data], [data[:100], data[100:30000], data[30000:]]):
        parser = RecordParser(start_offset=5)
        records = [r for chunk in chunks for r in parser.feed(chunk)] + parser.flush()
        last = records[-1]
        assert last.pid == 7 and data[last.offset - 5 : last.offset - 5 + 1] == b"["


def test_noise_is_recognised_and_never_counted(tmp_path):
    log = tmp_path / "error.log"
    log.write_text(
        "[2026-11-24 10:00:00 +0000] [101] [INFO] Shutting down\n"
        "[2026-11-24 10:00:00 +0000] [101] [ERROR] ASGI callable returned without completing handshake.\n"
        "[2026-11-24 10:00:00 +0000] [101] [ERROR] Cancel 3 running task(s), timeout graceful shutdown exceeded\n"
    )
    found, detector = _detect(log)
    assert dict(found) == {"uvicorn_graceful_shutdown_cancelled_tasks": 1}
    assert detector.noise() == {"noise_asgi_returned_without_completing_handshake": 1}
    assert detector.unattributed_errors == 0


def _detect_with(path: Path, line_format) -> tuple[Counter[str], ServerDetector]:  # type: ignore[no-untyped-def]
    found: Counter[str] = Counter()
    detector = ServerDetector(FileTail(path, line_format=line_format), lambda error: found.update([error.signature]))
    return found, detector


def test_json_records_with_their_own_field_names(tmp_path):
    import json

    from chaos.detect.logfollow import JsonFormat

    log = tmp_path / "structlog.log"
    lines = [
        {"event": "Shutting down", "proc": 7, "level": "info"},
        {
            "event": "Exception in ASGI application",
            "proc": 7,
            "level": "error",
            "exception": "Traceback (most "
            'recent call last):\n  File "x.py", line 1\nwsproto.utilities.LocalProtocolError: Event CloseConnection'
            "(code=1012, reason=None) cannot be sent during the handshake",
        },
        {"event": "not json-shaped noise follows", "proc": 8, "level": "info"},
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n[1, 2]\nplain text\n")
    found, detector = _detect_with(log, JsonFormat.parse_keys("pid=proc"))
    detector.drain()
    assert dict(found) == {"uvicorn_596_wsproto_close_during_handshake": 1}
    assert detector.unattributed_errors == 0


def test_records_without_a_pid_go_to_the_worker_shutting_down_and_ambiguity_is_counted(tmp_path):
    from chaos.detect.logfollow import PlainFormat

    log = tmp_path / "plain.log"
    error = (
        "2026-11-24 10:00:0{0} [ERROR] uvicorn.error: Exception in ASGI application\n"
        'Traceback (most recent call last):\n  File "x"\nValueError: boom {0}\n'
    )
    log.write_text("2026-11-24 10:00:00 [INFO] gunicorn.error: Booting worker with pid: 11\n")
    found, detector = _detect_with(log, PlainFormat())
    detector.drain()
    detector.open_window(11)  # one worker shutting down: exact
    with log.open("a") as handle:
        handle.write(error.format(1))
    detector.drain()
    detector.open_window(12)  # two at once: the latest, and counted as ambiguous
    with log.open("a") as handle:
        handle.write(error.format(2) + "2026-11-24 10:00:03 [INFO] gunicorn.error: Worker exiting (pid: 11)\n")
    detector.drain()
    assert found["shutdown_exception_value_error"] == 2
    assert detector.ambiguous_errors == 1 and detector.unattributed_errors == 0
    assert detector.exit_kind(11) == "clean"


def test_a_real_json_log_through_gunicorns_log_config_json():
    """uvicorn 0.29.0 under gunicorn 21.2.0 with --log-config-json and python-json-logger."""
    from chaos.detect.logfollow import JsonFormat

    found, detector = _detect_with(DATA / "uvicorn-0.29.0-wsproto-term-json.log", JsonFormat())
    detector.drain()
    assert dict(found) == {"uvicorn_accept_after_shutdown_rejection": 6}
    # The master said how it ended: it had been sent TERM.
    assert detector.unattributed_errors == 0 and detector.exit_kind(26266) == "signalled"


def test_a_real_log_without_pids_is_attributed_to_the_worker_the_controller_signalled(tmp_path):
    """The same release logging plain text with no [pid]: the controller's window names the worker."""
    from chaos.detect.logfollow import PlainFormat

    recorded = (DATA / "uvicorn-0.29.0-wsproto-term-plain.log").read_bytes()
    signalled_at = recorded.index(b"uvicorn.error: Shutting down\n")
    log = tmp_path / "error.log"
    log.write_bytes(recorded[:signalled_at])  # the log as it stood when the controller signalled
    found, detector = _detect_with(log, PlainFormat())
    detector.drain()
    detector.open_window(26302)  # as the controller does: that worker's window opens at the log's end
    with log.open("ab") as handle:
        handle.write(recorded[signalled_at:])
    detector.drain()
    assert dict(found) == {"uvicorn_accept_after_shutdown_rejection": 10}
    assert detector.unattributed_errors == 0 and detector.ambiguous_errors == 0


def test_uvicorns_own_supervisor_with_the_1737_guard_undone():
    """A crash under ``uvicorn --workers``: its traceback reaches the log through the worker's stderr."""
    found, detector = _detect(DATA / "uvicorn-0.54.0-1737-undone-uvicorn-workers-term.log")
    assert dict(found) == {"uvicorn_596_wsproto_close_during_handshake": 5, "worker_crash_during_shutdown": 1}
    assert detector.exit_kind(25914) == "crash" and detector.unattributed_errors == 0


def test_a_rejection_crash_is_named_by_its_state_never_by_its_text():
    """0.30.6's log says what a #596 log says; in deny-close on a release from 0.20.0 to 0.52.0 it is the
    rejection path (fixed in 0.52.1), and no regression of #596."""
    found: list[DetectedError] = []
    detector = ServerDetector(FileTail(DATA / "uvicorn-0.30.6-wsproto-deny-close-term.log"), found.append)
    detector.drain()
    entry = catalog.known(found[0].signature) if found else None
    assert entry is not None
    named = catalog.name_the_path(entry, "deny-close", "wsproto", "0.30.6", from_index=True)
    assert named.signature == "uvicorn_wsproto_close_after_rejection"
    assert catalog.regression_of(named.signature, "wsproto", "0.30.6") is None
