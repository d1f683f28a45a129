"""Bad input at every entry point: one clear line, the documented exit code, no traceback, nothing started."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaos.commands.cli import main
from tests.helpers import LOCUST

SOAK = ["soak", "--target-python", sys.executable, "--duration", "5s"]
MATRIX = ["matrix", "--uvicorn", "0.19.0", "0.20.0", "--ws", "wsproto"]

# (arguments, exit code, what the one line says). {tmp} is a fresh directory, {file} a file in it.
CASES: list[tuple[list[str], int, str]] = [
    # soak: the run's options
    ([*SOAK, "--duration", "soon"], 2, "bad duration"),
    ([*SOAK, "--duration", "1500ms"], 2, "bad duration"),
    ([*SOAK, "--duration", "0"], 2, "--duration: must be above 0"),
    ([*SOAK, "--users", "0"], 2, "--users: must be at least 1"),
    ([*SOAK, "--users", "many"], 2, "--users: expected a whole number"),
    ([*SOAK, "--spawn-rate", "0"], 2, "--spawn-rate: must be above 0"),
    ([*SOAK, "--spawn-rate", "fast"], 2, "--spawn-rate: expected a number"),
    ([*SOAK, "--processes", "0"], 2, "--processes: must be at least 1"),
    ([*SOAK, "--hold-seconds", "-1"], 2, "--hold-seconds: must be at least 0"),
    ([*SOAK, "--hold-seconds", "61"], 2, "--hold-seconds: must be at most 60"),
    ([*SOAK, "--hold-seconds", "abc"], 2, "--hold-seconds: expected a number"),
    ([*SOAK, "--hold-seconds", "inf"], 2, "--hold-seconds: expected a finite number"),
    ([*SOAK, "--hold-jitter", "2"], 2, "--hold-jitter: must be at most 1"),
    ([*SOAK, "--keep-open-seconds", "-1"], 2, "--keep-open-seconds: must be at least 0"),
    ([*SOAK, "--ws", "tornado"], 2, "unknown implementation 'tornado'"),
    ([*SOAK, "--ws-path", "noslash"], 2, "--ws-path must start with '/'"),
    ([*SOAK, "--connect-timeout", "0"], 2, "--connect-timeout: must be above 0"),
    ([*SOAK, "--handshake-timeout", "-5"], 2, "--handshake-timeout: must be above 0"),
    ([*SOAK, "--max-handshakes", "0"], 2, "--max-handshakes: must be at least 1"),
    ([*SOAK, "--workers", "0"], 2, "--workers: must be at least 1"),
    ([*SOAK, "--server", "hypercorn"], 2, "unknown server 'hypercorn'"),
    ([*SOAK, "--server", "uvicorn-workers", "--mode", "master-ttou"], 2, "does not apply to --server uvicorn-workers"),
    ([*SOAK, "--mode", "rollout", "--replicas", "9"], 2, "--replicas: must be at most 8"),
    ([*SOAK, "--log-format", "xml"], 2, "unknown log format 'xml'"),
    ([*SOAK, "--log-format", "json", "--log-json-keys", "colour=red"], 2, "--log-json-keys: expected PART=FIELD"),
    ([*SOAK, "--log-json-keys", "pid=p"], 2, "--log-json-keys applies to --log-format json"),
    ([*SOAK, "--log-config-json", "{file}"], 2, "--log-config-json: give --server-log"),
    ([*SOAK, "--server-log", "{file}"], 2, "--server-log names an external deployment's log"),
    ([*SOAK, "--evidence-signals", "0"], 2, "--evidence-signals: must be at least 1"),
    ([*SOAK, "--workers", "two"], 2, "--workers: expected a whole number"),
    ([*SOAK, "--graceful-timeout", "-1"], 2, "--graceful-timeout: must be at least 0"),
    ([*SOAK, "--app", "nocolon"], 2, "module:attribute"),
    ([*SOAK, "--term-interval", "-1"], 2, "--term-interval: must be at least 0"),
    ([*SOAK, "--term-jitter", "x"], 2, "--term-jitter: expected a number"),
    ([*SOAK, "--min-alive", "-1"], 2, "--min-alive: must be at least 0"),
    ([*SOAK, "--min-alive", "2"], 2, "min-alive 2 leaves no worker"),
    ([*SOAK, "--max-signals", "-1"], 2, "--max-signals: must be at least 0"),
    ([*SOAK, "--metrics-port", "70000"], 2, "--metrics-port: must be at most 65535"),
    ([*SOAK, "--metrics-port", "-1"], 2, "--metrics-port: must be at least 0"),
    ([*SOAK, "--allow", "foo"], 2, "--allow takes SIGNATURE=COUNT"),
    ([*SOAK, "--allow", "foo=x"], 2, "--allow takes SIGNATURE=COUNT"),
    ([*SOAK, "--report-dir", "/proc/x"], 2, "--report-dir /proc/x"),
    ([*SOAK, "--report-dir", "{file}/sub"], 2, "is not a directory"),
    ([*SOAK, "--cache-dir", "{file}"], 2, "--cache-dir"),
    ([*SOAK, "--constraint", "/nonexistent/constraints.txt"], 2, "--constraint: no such file"),
    ([*SOAK, "--target-python", "/nonexistent/python"], 4, "target interpreter not found"),
    ([*SOAK, "--uvicorn", "0.19.0"], 2, "not both"),
    (["soak", "--uvicorn", "0.x"], 2, "not a version"),
    (["soak", "--uvicorn", "./no/such/checkout"], 2, "not a uvicorn wheel or source directory"),
    (["soak", "--uvicorn", "0.19.0", "--as-of", "yesterday"], 2, "not an ISO date"),
    (["soak", "--uvicorn", "0.19.0", "--gunicorn", "x.y"], 2, "not a version"),
    (["soak", "--uvicorn", "0.19.0", "--ws-version", "latest-please"], 2, "not a version"),
    ([*SOAK, "--no-such-flag"], 2, "unrecognized arguments"),
    (["soak", "--dry-run", "extra"], 2, "unrecognized arguments"),
    # matrix
    (["matrix"], 2, "--uvicorn"),
    (["matrix", "--uvicorn", "0.x"], 2, "not a version"),
    ([*MATRIX, "tornado"], 2, "unknown implementation 'tornado'"),
    ([*MATRIX, "--expect-fail", "0.18.0"], 2, "--expect-fail 0.18.0: no such cell"),
    ([*MATRIX, "--expect-fail", "0.19.0:websockets"], 2, "no such cell"),
    ([*MATRIX, "--expect-fail", "0.19.0:tornado"], 2, "--expect-fail takes RELEASE, RELEASE:WS or RELEASE:WS:MODE"),
    ([*MATRIX, "--expect-fail", ":wsproto"], 2, "--expect-fail takes RELEASE, RELEASE:WS or RELEASE:WS:MODE"),
    ([*MATRIX, "--baseline-release", "0.18.0"], 2, "is not among --uvicorn"),
    ([*MATRIX, "--duration", "0"], 2, "--duration: must be above 0"),
    ([*MATRIX, "--users", "0"], 2, "--users: must be at least 1"),
    ([*MATRIX, "--report-dir", "/proc/x"], 2, "cannot be written"),
    ([*MATRIX, "--cache-dir", "{file}"], 2, "--cache-dir"),
    # controller
    (["controller"], 2, "give the gunicorn master as --target-pid or --target-pidfile"),
    (["controller", "--pid", "999999999"], 2, "no process with pid"),
    (["controller", "--pidfile", "/nonexistent/gunicorn.pid"], 2, "cannot read pidfile"),
    (["controller", "--pidfile", "{file}"], 2, "does not hold a pid"),
    (["controller", "--pid", "1", "--duration", "soon"], 2, "bad duration"),
    (["controller", "--pid", "abc"], 2, "--target-pid: expected a whole number"),
    (["controller", "--pid", "0"], 2, "--target-pid: must be at least 1"),
    (["controller", "--pid", "1", "--pidfile", "{file}"], 2, "one of them"),
    (["controller", "--pid", "{self}"], 2, "is not a gunicorn or uvicorn master"),
    (["controller", "--pid", "1", "--signal", "KILL"], 2, "--signal: unknown signal 'KILL'"),
    (["controller", "--pid", "1", "--interval", "-1"], 2, "--term-interval: must be at least 0"),
    (["controller", "--pid", "1", "--metrics-port", "x"], 2, "--metrics-port: expected a whole number"),
    # dashboards
    (["dashboards"], 2, "the following arguments are required"),
    (["dashboards", "/proc/x"], 2, "cannot write the dashboards"),
    (["no-such-command"], 2, "invalid choice"),
]


@pytest.fixture
def restored_signals() -> Iterator[None]:
    """The commands install their SIGINT/SIGTERM flags; pytest gets its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _fill(args: list[str], tmp_path: Path) -> list[str]:
    file = tmp_path / "a-file"
    file.write_text("not a pid\n")
    return [a.format(tmp=tmp_path, file=file, self=psutil.Process().pid) for a in args]


@pytest.mark.parametrize(("args", "code", "message"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line_and_its_exit_code(args, code, message, tmp_path, capsys, restored_signals):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert (
        main(
            _fill(args, tmp_path)
            + (
                ["--report-dir", str(tmp_path / "r")]
                if "--report-dir" not in args and args[0] in ("soak", "matrix")
                else []
            )
        )
        == code
    )
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("handshake-chaos: ") and message in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # nothing left running


LOCUST_CASES: list[tuple[list[str], str]] = [
    (["--ws", "tornado"], "unknown implementation 'tornado'"),
    (["--workers", "2", "--min-alive", "2"], "min-alive"),
    (["--hold-seconds", "abc"], "--hold-seconds: expected a number"),
    (["--hold-seconds", "90"], "--hold-seconds: must be at most 60"),
    (["--target-pid", "5"], "needs --host"),
    (["--host", "ftp://127.0.0.1:1"], "--host must be a ws:// or http:// URL"),
    (["--metrics-port", "70000"], "--metrics-port: must be at most 65535"),
    (["--allow", "bad"], "--allow takes SIGNATURE=COUNT"),
    (["--term-interval", "-1"], "--term-interval: must be at least 0"),
    (["--max-signals", "lots"], "--max-signals: expected a whole number"),
    (["--dry-run", "--min-alive", "x"], "--min-alive: expected a whole number"),
    (["--host", "ws://127.0.0.1:1", "--target-pid", "1", "--target-pidfile", "/x"], "one of them, not both"),
]


@pytest.mark.parametrize(("args", "message"), LOCUST_CASES, ids=[" ".join(c[0]) for c in LOCUST_CASES])
def test_bad_locustfile_options_are_one_line_and_exit_2(args, message, tmp_path):
    done = subprocess.run(
        [*LOCUST, "-u", "1", "-t", "2s", "--metrics-port", "0", *args]
        if "--metrics-port" not in args
        else [*LOCUST, "-u", "1", "-t", "2s", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "handshake-chaos:" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "starting gunicorn" not in done.stderr  # validated before anything started


def test_enough_bad_inputs_are_covered():
    assert len(CASES) + len(LOCUST_CASES) >= 60


def test_another_platform_is_one_line_and_exit_2():
    """Linux is said, not assumed: elsewhere every command stops before anything with one line."""
    # Imported first (the standard library picks its own modules by platform), then the platform is another.
    code = (
        "import sys; from chaos.commands.cli import main; sys.platform = 'darwin'; "
        "raise SystemExit(main(['soak', '--duration', '5s']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs on Linux only" in lines[0] and "darwin" in lines[0], lines


def test_the_platform_check_itself():
    from chaos.errors import UsageError
    from chaos.linux import require_linux

    require_linux("linux")
    with pytest.raises(UsageError, match="this is win32"):
        require_linux("win32")
