"""``handshake-chaos soak`` as CI runs it: real releases, real exit codes."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.report.events import read_events
from chaos.results import FirstSeen, RunFinished, RunStarted, SignalSent, VerdictSettled
from tests.helpers import CLI, FAST, assert_gone, locust_requests, read_summary, run_cli, signatures


def _assert_one_channel(report: Path, summary: dict[str, Any], stderr: str, signal_name: str) -> None:
    """The soak learned its run from events.jsonl: every signal, each first-seen signature, the summary."""
    events = read_events(report / "events.jsonl")
    assert isinstance(events[0], RunStarted) and (events[0].release, events[0].ws) == (
        summary["release"],
        summary["ws"],
    )
    assert isinstance(events[-1], RunFinished)
    # summary.json is the Locust process's summary event plus the soak's own section, written once.
    assert {**events[-1].summary.to_json(), "soak": summary["soak"]} == summary
    sent = [event for event in events if isinstance(event, SignalSent) and not event.dry_run]
    assert len(sent) == summary["signals"]["sent"] >= 1 and {event.signal for event in sent} == {signal_name}
    first = {(event.side, event.signature) for event in events if isinstance(event, FirstSeen)}
    assert first == {(row["side"], row["signature"]) for row in summary["errors"]}
    settled = [event.reason for event in events if isinstance(event, VerdictSettled)]
    assert settled == ([summary["stop_reason"]] if summary["stop_reason"].startswith("verdict settled") else [])
    progress = [line for line in stderr.splitlines() if "elapsed" in line and "signals" in line]
    assert all(f"({signal_name} " in line for line in progress if "signals 0," not in line), progress
    assert "TERMs" not in stderr


def test_soak_0_19_0_wsproto_fails_on_596(tmp_path, release_cache):
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--uvicorn", "0.19.0", "--ws", "wsproto", "--duration", "12s", "--users", "30"]
        + [*FAST, "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert summary["release"] == "0.19.0" and summary["ws"] == "wsproto"
    assert summary["gate"] == summary["gate"] | {"verdict": "fail", "exit_code": 1}
    assert signatures(summary).get("uvicorn_596_wsproto_close_during_handshake", 0) > 0
    assert summary["versions"]["gunicorn"] == "20.1.0"
    for name in ("report.md", "report.html", "locust_stats.csv", "locust.html", "server/gunicorn-error.log.gz"):
        assert (report / name).is_file(), name
    # The server's log is kept whole, compressed once the run ended.
    assert not list(report.rglob("*.log.gz.partial")) and not (report / "server" / "gunicorn-error.log").exists()
    with gzip.open(report / "server" / "gunicorn-error.log.gz", "rt") as log:
        assert "cannot be sent during the handshake" in log.read()
    assert "uvicorn_596_wsproto_close_during_handshake" in (report / "report.md").read_text()
    page = (report / "report.html").read_text()
    assert page.count('class="signal-marker"') == 2 * summary["signals"]["sent"] and "<script" not in page
    assert len(summary["timeline"]) >= 5 and summary["timeline"][-1]["errors"]
    assert "elapsed" in done.stderr  # progress while it ran
    # The first time a signature is seen: one line with its name, count so far, example and reference.
    first = [line for line in done.stderr.splitlines() if "first server-side uvicorn_596" in line]
    assert len(first) == 1 and "so far: " in first[0] and "cannot be sent during the handshake" in first[0], first
    assert "issues/596" in first[0]
    assert any("signature" in line and "errors" in line for line in done.stderr.splitlines() if "elapsed" in line)
    assert any("signals" in line and "(TERM " in line for line in done.stderr.splitlines() if "elapsed" in line)
    _assert_one_channel(report, summary, done.stderr, "TERM")


def test_soak_0_20_0_wsproto_has_none_of_596(tmp_path, release_cache):
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--uvicorn", "0.20.0", "--ws", "wsproto", "--duration", "10s", "--users", "30"]
        + [*FAST, "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert "uvicorn_596_wsproto_close_during_handshake" not in signatures(summary)
    assert summary["signals"]["landed_with_pending"] >= 1


def test_soak_with_nothing_pending_is_inconclusive(tmp_path):
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--target-python", sys.executable, "--ws", "auto", "--duration", "6s", "--users", "1"]
        + ["--scenario", "hold-accept"]
        + [*FAST, "--hold-seconds", "0", "--keep-open-seconds", "10", "--report-dir", str(report)],
        tmp_path,
    )
    summary = read_summary(report / "summary.json")
    assert done.returncode == 3, summary["gate"]
    assert summary["gate"]["verdict"] == "inconclusive" and summary["signals"]["sent"] >= 1


def test_soak_of_your_own_app_with_the_probe_mounted(tmp_path):
    (tmp_path / "myservice.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        while True:\n"
        "            message = await receive()\n"
        "            await send({'type': message['type'] + '.complete'})\n"
        "            if message['type'] == 'lifespan.shutdown':\n"
        "                return\n"
    )
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--target-python", sys.executable, "--ws", "wsproto", "--app", "myservice:app", "--duration", "8s"]
        + ["--users", "20", "--release", "myservice-1.2", *FAST, "--report-dir", str(report)],
        tmp_path,
    )
    summary = read_summary(report / "summary.json")
    assert done.returncode in (0, 1), summary["gate"]
    assert summary["release"] == "myservice-1.2"
    # The probe mounted beside the app completes handshakes: accepted, or accepted and then closed by a shutdown.
    completed = summary["outcomes"].get("accepted", 0) + summary["outcomes"].get("closed_1012", 0)
    assert completed > 0 and summary["signals"]["landed_with_pending"] >= 1, summary["outcomes"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--uvicorn", "99.0.0"], 4, "not on the package index"),
        (["--uvicorn", "0.x"], 2, "not a version"),
        (["--ws", "tornado"], 2, "unknown implementation"),
        (["--duration", "soon"], 2, "bad duration"),
        (["--uvicorn", "0.19.0", "--ws", "websockets-sansio"], 2, "has no ws implementation"),
        (["--uvicorn", "0.19.0", "--server", "uvicorn-workers"], 2, "needs uvicorn 0.30.0 or later"),
        (["--uvicorn", "0.19.0", "--server", "gunicorn-asgi"], 2, "needs gunicorn 24.0 or later"),
        (["--uvicorn", "0.19.0", "--scenario", "deny-stream"], 2, "no scenario applies: deny-stream: uvicorn 0.19.0"),
        (["--scenario", "sideways"], 2, "unknown scenario 'sideways'"),
    ],
)
def test_soak_bad_input(tmp_path, release_cache, args, code, message):
    done = run_cli(["soak", *args, "--report-dir", str(tmp_path / "r"), "--cache-dir", str(release_cache)], tmp_path)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("handshake-chaos:")]
    assert len(errors) == 1 and message in errors[0], done.stderr


def test_ctrl_c_stops_the_soak_and_keeps_the_report(tmp_path):
    import os
    import signal

    import psutil

    from tests.helpers import assert_gone, wait_until

    report = tmp_path / "report"
    soak = subprocess.Popen(
        [*CLI, "soak", "--target-python", sys.executable, "--ws", "auto", "--duration", "120s", "--users", "20"]
        + [*FAST, "--scenario", "hold-accept", "--report-dir", str(report)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal of its own: we press Ctrl-C in it below
    )
    try:
        # Under load: a TERM sent and handshakes already counted (users are stopped first on Ctrl-C,
        # so what is still in flight then is not an outcome).
        wait_until(
            lambda: _signalled(report) and locust_requests(report / "locust_stats.csv") > 0, 90, "a TERM under load"
        )
        started = [p.pid for p in psutil.Process(soak.pid).children(recursive=True)]
        os.killpg(soak.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        _, stderr = soak.communicate(timeout=150)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.communicate()
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = read_summary(report / "summary.json")
    assert summary["signals"]["sent"] >= 1 and sum(summary["outcomes"].values()) > 0
    assert soak.returncode == summary["gate"]["exit_code"]
    assert (report / "report.md").is_file()
    assert_gone(started)


def _signalled(report: Path) -> bool:
    log = report / "locust.log"
    return log.is_file() and "sent TERM to worker" in log.read_text()


CHAT_APP = """
import asyncio

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect


async def chat(websocket):
    await asyncio.sleep(1.0)  # the lookup a real route does before it accepts (auth, a database)
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[WebSocketRoute("/ws/chat", chat)])
"""


def test_soak_of_a_framework_app_in_a_release_environment_finds_596(tmp_path, release_cache):
    app_dir = tmp_path / "service"
    app_dir.mkdir()
    (app_dir / "chatapp.py").write_text(CHAT_APP)
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--uvicorn", "0.19.0", "--ws", "wsproto", "--with", "starlette", "--app-dir", str(app_dir)]
        + ["--app", "chatapp:app", "--ws-path", "/ws/chat", "--duration", "12s", "--users", "30"]
        + [*FAST, "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert signatures(summary).get("uvicorn_596_wsproto_close_during_handshake", 0) > 0
    assert summary["options"]["ws_path"] == "/ws/chat" and summary["options"]["app"] == "chatapp:app"
    assert summary["outcomes"].get("accepted", 0) > 0  # the app's own route served the users


def test_with_requirements_that_cannot_be_resolved_are_one_line_and_exit_4(tmp_path, release_cache):
    done = run_cli(
        ["soak", "--uvicorn", "0.19.0", "--with", "handshake-chaos-no-such-package-here", "--duration", "5s"]
        + ["--report-dir", str(tmp_path / "r"), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 4, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("handshake-chaos:")]
    assert len(errors) == 1 and "handshake-chaos-no-such-package-here" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("mode", ["master-hup", "master-ttou", "master-term", "rollout"])
def test_0_19_0_wsproto_fails_on_596_through_the_master(tmp_path, release_cache, mode):
    """The report behind #596: "it happens every time we send TERM to gunicorn master process"."""
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--uvicorn", "0.19.0", "--ws", "wsproto", "--mode", mode, "--duration", "20s", "--users", "30"]
        + [*FAST, "--until-verdict", "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert summary["mode"] == mode and signatures(summary).get("uvicorn_596_wsproto_close_during_handshake", 0) > 0
    _assert_one_channel(report, summary, done.stderr, {"master-hup": "HUP", "master-ttou": "TTOU"}.get(mode, "TERM"))
    records = summary["signals"]["records"]
    assert records and all(r["role"] == "master" and r["mode"] == mode for r in records)
    reached = [len(r["reach"]) for r in records if r["worker_exit_seconds"] is not None]
    assert reached and all(n == (1 if mode == "master-ttou" else 2) for n in reached), reached
    assert sum(r["pending"] for r in records) == sum(reach["pending"] for r in records for reach in r["reach"])
    # It stopped as soon as the fail could not change, well before the 20 s cap.
    assert summary["stop_reason"].startswith("verdict settled: fail"), summary["stop_reason"]
    assert summary["duration_seconds"] < 20
    signalled = {"master-hup": "hup", "master-ttou": "ttou", "master-term": "term", "rollout": "term"}[mode]
    assert summary["master_events"].get(f"handling_signal_{signalled}", 0) >= 1, summary["master_events"]
    if mode in ("master-term", "rollout"):
        # A new master for each one TERMed, every one of them started (and stopped) by the run.
        masters = {r["master_pid"] for r in records} | {r["replacement_pid"] for r in records if r["replacement_pid"]}
        assert len(masters) >= 2 and masters <= set(summary["target"]["pids"])
        assert summary["master_events"]["master_start"] >= 2
    assert_gone(summary["target"]["pids"])


@pytest.mark.parametrize("mode", ["master-hup", "master-term", "rollout"])
def test_the_locked_uvicorn_with_wsproto_passes_through_the_master(tmp_path, mode):
    """This interpreter's uvicorn (the release uv.lock pins) has #1737's guard: a pending handshake is safe
    (its denial-response path is not: see the deny-stream tests)."""
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--ws", "wsproto", "--mode", mode, "--duration", "40s", "--users", "30", *FAST]
        + ["--scenario", "hold-accept"]
        + ["--until-verdict", "--evidence-signals", "3", "--evidence-pending", "5", "--report-dir", str(report)],
        tmp_path,
    )
    summary = read_summary(report / "summary.json")
    assert done.returncode == 0, (summary["gate"], summary["errors"], done.stderr[-1500:])
    strong = [r for r in summary["signals"]["records"] if r["pending"] >= 5]
    assert len(strong) >= 3 and summary["stop_reason"].startswith("verdict settled: pass")
    assert_gone(summary["target"]["pids"])


# The source trees' dependencies are resolved as of this fixed moment, not "now": the verdict never
# depends on the day the suite runs.
SOURCE_TREE_AS_OF = "2026-12-01T00:00:00Z"


@pytest.mark.parametrize(
    ("version", "server"),
    [
        ("0.54.0", "gunicorn-uvicorn"),
        ("0.54.0", "uvicorn-workers"),
        ("0.55.0", "gunicorn-uvicorn"),  # the guard's second shape (it also spares a started denial)
    ],
)
def test_a_fix_undone_in_a_source_tree_is_reported_as_a_regression(tmp_path, release_cache, version, server):
    """A maintainer's tree of a release with #1737's guard undone: #596 is back, and said so,
    under gunicorn and under uvicorn's own supervisor alike, whichever shape the guard had."""
    from tests.patched_release import patched_tree

    tree = patched_tree(tmp_path / "src", version)
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--uvicorn", str(tree), "--as-of", SOURCE_TREE_AS_OF, "--ws", "wsproto", "--server", server]
        # The state #596's path is reached in: in a source tree the scenario alone names the path.
        + ["--duration", "30s", "--users", "30", "--scenario", "hold-accept"]
        + [*FAST, "--until-verdict", "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert summary["server"] == server
    [row] = [r for r in summary["errors"] if r["signature"] == "uvicorn_596_wsproto_close_during_handshake"]
    assert row["regression_fixed_in"] == "0.20.0" and row["count"] > 0
    line = "regression of https://github.com/encode/uvicorn/issues/596 (fixed by PR #1737), fixed in 0.20.0"
    assert line in done.stderr  # the console, the first time it is seen
    assert line in done.stdout  # the summary printed at the end
    assert line in (report / "report.md").read_text() and line in (report / "report.html").read_text()


@pytest.mark.parametrize(("server", "mode"), [("uvicorn-workers", "master-hup"), ("gunicorn-asgi", "worker-term")])
def test_the_locked_release_under_the_other_server_families_passes(tmp_path, server, mode):
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--server", server, "--mode", mode, "--duration", "40s", "--users", "40", *FAST]
        + ["--scenario", "hold-accept"]
        + ["--until-verdict", "--evidence-signals", "3", "--evidence-pending", "5", "--report-dir", str(report)],
        tmp_path,
    )
    summary = read_summary(report / "summary.json")
    assert done.returncode == 0, (summary["gate"], summary["errors"], done.stderr[-1500:])
    assert summary["server"] == server and summary["stop_reason"].startswith("verdict settled: pass")
    assert summary["ws"] == ("gunicorn" if server == "gunicorn-asgi" else "wsproto")
    assert_gone(summary["target"]["pids"])


def test_a_deployment_logging_json_through_its_own_log_config(tmp_path, release_cache):
    """gunicorn's --log-config-json with python-json-logger, as production deployments log."""
    error_log = tmp_path / "json-error.log"
    template = (Path(__file__).resolve().parent.parent / "data" / "log-configs" / "json.json").read_text()
    config = tmp_path / "log-config.json"
    config.write_text(template.replace("ERROR_LOG", str(error_log)))
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--uvicorn", "0.29.0", "--ws", "wsproto", "--with", "python-json-logger", "--duration", "30s"]
        + ["--log-config-json", str(config), "--server-log", str(error_log), "--log-format", "json"]
        + ["--scenario", "hold-accept"]  # the late accept's state (0.29.0 has other paths open in others)
        + ["--users", "30", *FAST, "--until-verdict", "--report-dir", str(report), "--cache-dir", str(release_cache)],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    summary = read_summary(report / "summary.json")
    assert signatures(summary).get("uvicorn_accept_after_shutdown_rejection", 0) > 0
    assert error_log.read_text().startswith("{") and summary["unattributed_server_errors"] == 0


def test_the_denial_response_crash_of_the_locked_release_is_named_for_what_it_is(tmp_path):
    """0.54.0 with wsproto crashes on a streamed denial at shutdown with #596's own text: the tool names the
    denial-response path (fixed in 0.55.0) and never calls it a regression of #596."""
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--ws", "wsproto", "--scenario", "deny-stream", "--duration", "30s", "--users", "30", *FAST]
        + ["--until-verdict", "--report-dir", str(report)],
        tmp_path,
    )
    summary = read_summary(report / "summary.json")
    assert done.returncode == 1, (summary["gate"], done.stderr[-1500:])
    [row] = [r for r in summary["errors"] if r["signature"] == "uvicorn_wsproto_close_during_denial_response"]
    assert row["scenario"] == "deny-stream" and row["regression_fixed_in"] is None and row["count"] > 0
    assert "0.55.0" in row["reference"]
    assert "uvicorn_596_wsproto_close_during_handshake" not in signatures(summary)
    everything = done.stdout + done.stderr + (report / "report.md").read_text()
    assert "regression of" not in everything.lower()
    caught = [r for r in summary["signals"]["records"] if r["in_state_by_scenario"].get("deny-stream", 0) > 0]
    assert caught, "the probe was streaming denials when the signals landed"


def test_your_app_streaming_denials_gets_the_right_fix_not_596(tmp_path):
    """Your own app (--app, its own route) answers upgrades with a streamed denial: on 0.54.0 wsproto the crash
    is the denial-response path, fixed in 0.55.0, however the load reached it."""
    service = tmp_path / "service"
    service.mkdir()
    (service / "denying.py").write_text(DENYING_APP)
    report = tmp_path / "report"
    done = run_cli(
        ["soak", "--ws", "wsproto", "--app", "denying:app", "--app-dir", str(service), "--ws-path", "/private"]
        + ["--duration", "30s", "--users", "30", *FAST, "--until-verdict", "--report-dir", str(report)],
        tmp_path,
    )
    summary = read_summary(report / "summary.json")
    assert summary["scenarios"] == ["slow-request", "app"], summary["scenarios"]
    assert done.returncode == 1, (summary["gate"], done.stderr[-1500:])
    found = signatures(summary)
    assert found.get("uvicorn_wsproto_close_during_denial_response", 0) > 0, found
    assert "uvicorn_596_wsproto_close_during_handshake" not in found
    assert "regression of" not in (done.stdout + done.stderr).lower()


# An app of a user's: its /private websocket route denies every upgrade with a 403 streamed in chunks
# (the ASGI websocket.http.response extension), as an auth proxy might.
DENYING_APP = """
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        return
    await receive()
    if scope["path"] != "/private" or "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"not for you. " * 8
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body) * 4).encode())]
    await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
    for index in range(4):
        await asyncio.sleep(0.3)
        await send({"type": "websocket.http.response.body", "body": body, "more_body": index < 3})
"""


def test_0_55_0_ends_a_streamed_denial_cleanly_or_as_asked_an_incomplete_answer(tmp_path, release_cache):
    """0.55.0 fixed the denial-response crash by closing the transport: no error in the log, the denial's
    body cut on the wire. An incomplete answer by default; an error with --incomplete-is-error."""
    common = ["soak", "--uvicorn", "0.55.0", "--ws", "wsproto", "--scenario", "deny-stream", "--users", "30"]
    common += [*FAST, "--until-verdict", "--evidence-signals", "3", "--evidence-pending", "3"]
    common += ["--duration", "40s", "--cache-dir", str(release_cache)]
    clean = run_cli([*common, "--report-dir", str(tmp_path / "clean")], tmp_path)
    summary = read_summary(tmp_path / "clean" / "summary.json")
    assert clean.returncode == 0, (summary["gate"], summary["errors"], clean.stderr[-1500:])
    assert not [row for row in summary["errors"] if row["side"] == "server"]
    strict = run_cli([*common, "--incomplete-is-error", "--report-dir", str(tmp_path / "strict")], tmp_path)
    summary = read_summary(tmp_path / "strict" / "summary.json")
    assert strict.returncode == 1, (summary["gate"], strict.stderr[-1500:])
    assert signatures(summary).get("handshake_denial_truncated", 0) > 0, summary["errors"]
    assert summary["outcomes_by_scenario"]["deny-stream"].get("denial_truncated", 0) > 0
