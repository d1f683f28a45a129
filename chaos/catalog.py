"""Known handshake-time shutdown failures, the noise that is not one, and the generic signatures.

Each entry matches the exact text the failure logs, names the upstream issue or PR, and, per
uvicorn ws implementation it occurs with, the first uvicorn release that fixed it there (None:
not fixed). A traceback that matches no entry still counts, under a generic signature named
after its exception. Noise entries are recognised and never counted as shutdown errors.

Sources: uvicorn's release notes and PRs, and the texts wsproto (``handshake.py``,
``connection.py``, 1.x) and websockets raise; every entry is exercised by a recorded log of a
real release in ``tests/data`` (see its README for how each was made).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from chaos.results import (
    BAD_RESPONSE,
    DENIAL_TRUNCATED,
    DROPPED,
    FRAME_TRUNCATED,
    LOST_AFTER_ACCEPT,
    RESET,
    TIMEOUT,
    TRUNCATED,
    Side,
)


@dataclass(frozen=True)
class KnownFailure:
    signature: str
    pattern: re.Pattern[str]
    summary: str
    reference: str
    component: str
    # ws implementation -> the first uvicorn release without it (None: still present there).
    fixed_in: Mapping[str, str | None] = field(default_factory=dict)
    noise: bool = False  # recognised, and not a handshake-time shutdown error
    # Judged whatever the record's level (a server that logs this failure as a warning).
    any_level: bool = False
    # The handshake states (scenarios) its code path is reached in; empty: any, or unknown.
    scenarios: tuple[str, ...] = ()
    # ws implementation -> the first uvicorn release with it (absent: every release before the fix).
    introduced_in: Mapping[str, str] = field(default_factory=dict)
    # What a client sees of it, where the server's log may say nothing (its text came from a library
    # release the environment may not have): the history check counts either as the failure showing.
    client_symptom: str | None = None

    def fixed_for(self, ws: str) -> str | None:
        return self.fixed_in.get(ws)

    def open_in(self, ws: str, uvicorn: str) -> bool:
        """The release's own code has this path for ``ws``: introduced by then, not yet fixed."""
        try:
            version = Version(uvicorn)
            if ws in self.introduced_in and version < Version(self.introduced_in[ws]):
                return False
            fixed = self.fixed_in.get(ws, "absent")
            if fixed == "absent":
                return False
            return fixed is None or version < Version(fixed)
        except InvalidVersion:
            return False


def _entry(
    signature: str,
    pattern: str,
    summary: str,
    reference: str,
    component: str = "uvicorn",
    fixed_in: Mapping[str, str | None] | None = None,
    noise: bool = False,
    any_level: bool = False,
    scenarios: tuple[str, ...] = (),
    introduced_in: Mapping[str, str] | None = None,
    client_symptom: str | None = None,
) -> KnownFailure:
    return KnownFailure(
        signature,
        re.compile(pattern),
        summary,
        reference,
        component,
        dict(fixed_in or {}),
        noise,
        any_level,
        scenarios,
        dict(introduced_in or {}),
        client_symptom,
    )


# wsproto's words when a close frame is sent to a connection still in its handshake: three code paths
# of uvicorn's say it, fixed years apart (a pending handshake: #596, 0.20.0; a rejection still closing:
# 0.52.1; a denial response under way: 0.55.0).
_CLOSE_DURING_HANDSHAKE = (
    r"LocalProtocolError: Event CloseConnection\(code=1012, reason=None\) cannot be sent during the handshake"
)


# The client-side signature of a connection that closed before a byte of response (GENERIC_SIGNATURES).
CLIENT_DROPPED = "handshake_" + DROPPED

CATALOG: tuple[KnownFailure, ...] = (
    _entry(
        "uvicorn_596_wsproto_close_during_handshake",
        _CLOSE_DURING_HANDSHAKE,
        "wsproto: shutdown sends a close frame to a handshake still pending (nothing answered yet); the worker crashes",
        "https://github.com/encode/uvicorn/issues/596 (fixed by PR #1737)",
        fixed_in={"wsproto": "0.20.0"},
        scenarios=("hold-accept", "before-receive", "deny-close"),
    ),
    _entry(
        "uvicorn_wsproto_close_during_denial_response",
        _CLOSE_DURING_HANDSHAKE,
        "wsproto: shutdown sends a close frame while the app streams a denial response (the ASGI "
        "websocket.http.response extension, from 0.25.0): #596's text on another path; the worker crashes",
        "https://github.com/encode/uvicorn/releases/tag/0.55.0 (0.55.0 closes the transport instead; "
        "test_shutdown_during_denial_response)",
        fixed_in={"wsproto": "0.55.0"},
        scenarios=("deny-stream",),
        introduced_in={"wsproto": "0.25.0"},
    ),
    _entry(
        "uvicorn_wsproto_close_after_rejection",
        _CLOSE_DURING_HANDSHAKE,
        "wsproto: shutdown sends a close frame to a connection whose 403 rejection (the app closed before "
        "accepting) was already written while its transport closes: #596's text on a third path; the "
        "worker crashes",
        "https://github.com/encode/uvicorn/releases/tag/0.52.1 (shutdown() returns early for a connection whose "
        "close or rejection was already sent)",
        fixed_in={"wsproto": "0.52.1"},
        scenarios=("deny-close",),
        # Before #1737 (0.20.0) every state took #596's path. From 0.20.0 it shows in some soaks and not in
        # others (0.20.0: 71 in one 30 s deny-close soak, none in another; 0.23.1: 93; 0.23.2: 77, then none):
        # a bisect over single soaks once placed it at 0.23.2, and the health table's evidence undid that.
        introduced_in={"wsproto": "0.20.0"},
    ),
    _entry(
        "wsproto_close_during_handshake",
        _CLOSE_DURING_HANDSHAKE,
        "wsproto: a close frame sent during the handshake, on a path the run cannot name: the text of #596 "
        "(a pending handshake, fixed in 0.20.0), of a rejection still closing (fixed in 0.52.1) and of a "
        "denial response under way (fixed in 0.55.0), from a release or a state where not exactly one of "
        "them is known to be open",
        "https://github.com/encode/uvicorn/issues/596, https://github.com/encode/uvicorn/releases/tag/0.52.1 "
        "and https://github.com/encode/uvicorn/releases/tag/0.55.0",
    ),
    _entry(
        "uvicorn_811_wsproto_response_during_handshake",
        r"LocalProtocolError: Event Response\(status_code=\d+.*\) cannot be sent during the handshake",
        "wsproto < 1.0: an HTTP rejection sent in the wrong handshake state",
        "https://github.com/encode/uvicorn/issues/811",
        fixed_in={"wsproto": None},
    ),
    _entry(
        "uvicorn_811_wsproto_rejection_in_wrong_state",
        r"LocalProtocolError: (?:Connection cannot be rejected in state ConnectionState\.\w+"
        r"|Cannot send rejection data in state ConnectionState\.\w+)",
        "wsproto >= 1.0 wording of #811: a rejection (or its body) sent after the handshake was already answered",
        "https://github.com/encode/uvicorn/issues/811 (wsproto 1.x handshake.py: _reject, _send_reject_data)",
        fixed_in={"wsproto": None},
    ),
    _entry(
        "wsproto_event_in_wrong_state",
        r"LocalProtocolError: Event \w+\(.*\) cannot be sent in state ConnectionState\.\w+",
        "wsproto >= 1.0: a frame (close, message) sent on a connection the shutdown already rejected or closed",
        "https://github.com/encode/uvicorn/issues/811 (wsproto 1.x connection.py: Connection.send)",
        fixed_in={"wsproto": None},
    ),
    _entry(
        "uvicorn_1344_websockets_handshake_closed_on_shutdown",
        r"opening handshake failed[\s\S]*ConnectionClosedError: no close frame received or sent",
        "websockets: shutdown closes the transport of a pending handshake, no HTTP response is sent (the "
        "client sees the connection dropped; the log says so only with the websockets library before 10.4, "
        "which uvicorn 0.20.0 and later require)",
        "https://github.com/encode/uvicorn/issues/1344 (fixed by PR #1816, 0.21.0: an HTTP 500 instead)",
        fixed_in={"websockets": "0.21.0"},
        client_symptom=CLIENT_DROPPED,
    ),
    _entry(
        "uvicorn_1816_websockets_recv_after_shutdown",
        r"websockets_impl\.py[\s\S]*AttributeError: 'NoneType' object has no attribute 'add_done_callback'",
        "websockets: the app's receive() on a connection the shutdown closed finds no transfer task",
        "https://github.com/encode/uvicorn/pull/1753 (0.20.0: receive() after a lost connection returns a "
        "disconnect; #1816 in 0.21.0 reworked the same shutdown path)",
        fixed_in={"websockets": "0.20.0"},
    ),
    _entry(
        "uvicorn_accept_after_shutdown_rejection",
        r"RuntimeError: Expected ASGI message 'websocket\.send' or 'websocket\.close', but got 'websocket\.accept'",
        "shutdown already answered the handshake with HTTP 500; the app's own late accept then raises into it",
        "https://github.com/Kludex/uvicorn/pull/3050 (0.52.1; related: PR #2312)",
        fixed_in={"wsproto": "0.52.1", "websockets-sansio": "0.52.1", "websockets": None},
        # The app has not accepted when the shutdown answers: it awaits work, or has not taken connect yet.
        scenarios=("hold-accept", "before-receive"),
    ),
    _entry(
        "uvicorn_graceful_shutdown_cancelled_tasks",
        r"Cancel \d+ running task\(s\), timeout graceful shutdown exceeded",
        "uvicorn's --timeout-graceful-shutdown ran out: the tasks still running (pending handshakes among "
        "them) are cancelled, and each leaves a CancelledError",
        "https://github.com/encode/uvicorn/pull/1950 (--timeout-graceful-shutdown, 0.24.0)",
    ),
    _entry(
        "gunicorn_asgi_forced_close",
        r"Forcing close of \d+ connections",
        "gunicorn's ASGI worker: connections still open at the graceful timeout are closed; a handshake "
        "still pending then is answered HTTP 403 (logged as a warning)",
        "https://github.com/benoitc/gunicorn/blob/master/gunicorn/workers/gasgi.py (_shutdown; gunicorn >= 24)",
        component="gunicorn",
        any_level=True,
    ),
    _entry(
        "websockets_1138_closing_transport_closed",
        r"RuntimeError: unable to perform operation on <\w*Transport closed=True",
        "websockets: closing handshake writes to a transport the shutdown already closed",
        "https://github.com/python-websockets/websockets/issues/1138",
        component="websockets",
        fixed_in={"websockets": None},
    ),
    # Noise: an app that denies a websocket by returning without accepting logs this on every
    # denial, shutdown or not; it is the app's choice, not a handshake-time shutdown error.
    _entry(
        "noise_asgi_returned_without_completing_handshake",
        r"ASGI callable returned without completing handshake",
        "the app returned without accepting (a denial): logged by uvicorn at ERROR, not a shutdown error",
        "https://github.com/encode/uvicorn/blob/master/uvicorn/protocols/websockets/wsproto_impl.py (run_asgi)",
        noise=True,
    ),
)

# Generic signatures: nothing unknown is lost.
WORKER_CRASH = "worker_crash_during_shutdown"
WORKER_EXIT_NONZERO = "worker_exit_nonzero"
WORKER_KILLED = "worker_killed_during_shutdown"
WORKER_TIMEOUT = "worker_timeout_during_shutdown"
ERROR_LOGGED = "shutdown_error_logged"
EXCEPTION_PREFIX = "shutdown_exception_"
EXCEPTION_OTHER = "shutdown_exception_other"
# Generic exception signatures are named after the exception type; past this many
# distinct ones they share one label value, so a flood of odd errors stays bounded.
MAX_GENERIC_SIGNATURES = 25
# Client side: a handshake that was pending when its worker's shutdown began, and got
# no valid HTTP answer (or, when asked, an HTTP rejection).
CLIENT_PREFIX = "handshake_"


@dataclass(frozen=True)
class GenericSignature:
    """A signature no catalogue entry names: what a shutdown left that matched no known text."""

    signature: str  # a name, or a family of names (``<type>``: filled in when seen)
    side: Side
    what: str
    precreated: bool = True  # a zero series before it is seen


GENERIC_SIGNATURES: tuple[GenericSignature, ...] = (
    GenericSignature(
        WORKER_CRASH,
        "server",
        "\"Exception in worker process\" (or, under uvicorn's supervisor, a worker process's own traceback) "
        "after the signal: the worker died and dropped every connection it held",
    ),
    GenericSignature(
        WORKER_EXIT_NONZERO, "server", "the master reports the signalled worker exited with a non-zero code"
    ),
    GenericSignature(
        WORKER_KILLED,
        "server",
        "the master reports the signalled worker ended by a signal other than TERM, INT or QUIT",
    ),
    GenericSignature(
        WORKER_TIMEOUT, "server", "the master timed the signalled worker out (WORKER TIMEOUT) and killed it"
    ),
    GenericSignature(
        ERROR_LOGGED, "server", "an error record in the shutdown window with no traceback and no catalogued text"
    ),
    GenericSignature(
        EXCEPTION_PREFIX + "<type>",
        "server",
        "any other traceback in the shutdown window, named after its exception in snake_case "
        f"(`ValueError`: `{EXCEPTION_PREFIX}value_error`)",
        precreated=False,
    ),
    GenericSignature(
        EXCEPTION_OTHER,
        "server",
        f"any other traceback once {MAX_GENERIC_SIGNATURES} exception names were seen (label values stay bounded)",
        precreated=False,
    ),
    GenericSignature(CLIENT_DROPPED, "client", "the connection closed before a single byte of HTTP response"),
    GenericSignature(CLIENT_PREFIX + TRUNCATED, "client", "the connection closed part-way through the HTTP response"),
    GenericSignature(CLIENT_PREFIX + BAD_RESPONSE, "client", "an answer that is not a valid HTTP handshake response"),
    GenericSignature(CLIENT_PREFIX + RESET, "client", "the connection was reset (RST) before an answer"),
    GenericSignature(CLIENT_PREFIX + TIMEOUT, "client", "no answer within `--handshake-timeout` (beyond the hold)"),
    GenericSignature(CLIENT_PREFIX + "os_error", "client", "any other socket error before an answer", precreated=False),
    GenericSignature(
        CLIENT_PREFIX + DENIAL_TRUNCATED,
        "client",
        "deny-stream: the denial response's status and headers came, its body was cut; an error with "
        "`--incomplete-is-error`",
        precreated=False,
    ),
    GenericSignature(
        CLIENT_PREFIX + FRAME_TRUNCATED,
        "client",
        "accept-send: accepted, and the app's first frame was cut; an error with `--incomplete-is-error`",
        precreated=False,
    ),
    GenericSignature(
        CLIENT_PREFIX + LOST_AFTER_ACCEPT,
        "client",
        "accepted, then the connection went without a close frame; an error with `--incomplete-is-error`",
        precreated=False,
    ),
    GenericSignature(
        CLIENT_PREFIX + "http_<status>",
        "client",
        "a well-formed HTTP rejection (e.g. `http_500`), counted as an error only with `--http-rejection-is-error`",
        precreated=False,
    ),
)
GENERIC_SERVER_SIGNATURES = tuple(g.signature for g in GENERIC_SIGNATURES if g.side == "server" and g.precreated)
CLIENT_SIGNATURES = tuple(g.signature for g in GENERIC_SIGNATURES if g.side == "client" and g.precreated)

_BY_SIGNATURE = {entry.signature: entry for entry in CATALOG}
ERROR_ENTRIES = tuple(entry for entry in CATALOG if not entry.noise)


def known(signature: str) -> KnownFailure | None:
    return _BY_SIGNATURE.get(signature)


def reference(signature: str) -> str | None:
    found = _BY_SIGNATURE.get(signature)
    return found.reference if found else None


def judged_at_any_level(text: str) -> bool:
    """A record below ERROR that still shows a catalogued failure (one its server logs as a warning)."""
    return any(entry.any_level and entry.pattern.search(text) for entry in CATALOG)


def match(text: str) -> tuple[KnownFailure, str] | None:
    """The first catalog entry matching ``text``, with the line that matched."""
    for known in CATALOG:
        found = known.pattern.search(text)
        if found is not None:
            line = found.group(0).splitlines()[-1]
            return known, line
    return None


def name_the_path(
    known: KnownFailure, scenario: str | None, ws: str, uvicorn: str | None, from_index: bool
) -> KnownFailure:
    """Which of the entries sharing ``known``'s text a record is, never claiming more than is known.

    The scenario it was found in names it when exactly one entry's path is reached there. Else a
    release from the package index (whose code is known) names it when exactly one entry's path is
    open in that release for ``ws``. Else it is the group's entry that names no path."""
    group = [entry for entry in CATALOG if entry.pattern.pattern == known.pattern.pattern and not entry.noise]
    if len(group) == 1:
        return known
    paths = [entry for entry in group if entry.scenarios]
    if scenario is not None:
        reached = [entry for entry in paths if scenario in entry.scenarios]
        if len(reached) == 1:
            return reached[0]
        # No path is known to start in that state (the error came from a connection in another one that
        # the worker also held): the state says nothing, the release's code may.
        paths = reached or paths
    if from_index and uvicorn:
        # Several paths reach this state (or the state is unknown): the release's own code may have one open.
        open_paths = [entry for entry in paths if entry.open_in(ws, uvicorn)]
        if len(open_paths) == 1:
            return open_paths[0]
    return next(entry for entry in group if not entry.scenarios)


def regression_of(signature: str, ws: str, uvicorn: str | None) -> str | None:
    """The release that fixed ``signature`` for ``ws`` when ``uvicorn`` is that release or later
    (the failure is back: a regression), else None. Unknown versions are never called regressions."""
    known = _BY_SIGNATURE.get(signature)
    fixed = known.fixed_for(ws) if known is not None else None
    if fixed is None or uvicorn is None:
        return None
    try:
        return fixed if Version(uvicorn) >= Version(fixed) else None
    except InvalidVersion:
        return None
