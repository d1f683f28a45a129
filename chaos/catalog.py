"""Known handshake-time shutdown failures, and the generic signatures for everything else.

Each entry matches the exact text the failure logs, names the upstream issue or PR,
and the first release that fixed it (None when no fix is known). A traceback that
matches no entry still counts, under a generic signature named after its exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownFailure:
    signature: str
    pattern: re.Pattern[str]
    summary: str
    reference: str
    component: str
    fixed_in: str | None


def _entry(signature: str, pattern: str, summary: str, reference: str, component: str, fixed_in: str | None):  # type: ignore[no-untyped-def]
    return KnownFailure(signature, re.compile(pattern), summary, reference, component, fixed_in)


CATALOG: tuple[KnownFailure, ...] = (
    _entry(
        "uvicorn_596_wsproto_close_during_handshake",
        r"LocalProtocolError: Event CloseConnection\(code=1012, reason=None\) cannot be sent during the handshake",
        "wsproto: shutdown sends a close frame to a connection still in its handshake; the worker crashes",
        "https://github.com/encode/uvicorn/issues/596 (fixed by PR #1737)",
        "uvicorn",
        "0.20.0",
    ),
    _entry(
        "uvicorn_811_wsproto_response_during_handshake",
        r"LocalProtocolError: Event Response\(status_code=\d+.*\) cannot be sent during the handshake",
        "wsproto: an HTTP rejection sent in the wrong handshake state",
        "https://github.com/encode/uvicorn/issues/811",
        "uvicorn",
        None,
    ),
    _entry(
        "uvicorn_1344_websockets_handshake_closed_on_shutdown",
        r"opening handshake failed[\s\S]*ConnectionClosedError: no close frame received or sent",
        "websockets: shutdown closes the transport of a pending handshake, no HTTP response is sent",
        "https://github.com/encode/uvicorn/issues/1344 (fixed by PR #1816)",
        "uvicorn",
        "0.21.0",
    ),
    _entry(
        "uvicorn_1816_websockets_recv_after_shutdown",
        r"websockets_impl\.py[\s\S]*AttributeError: 'NoneType' object has no attribute 'add_done_callback'",
        "websockets: the app's receive() on a connection the shutdown closed finds no transfer task",
        "https://github.com/encode/uvicorn/pull/1816",
        "uvicorn",
        "0.21.0",
    ),
    _entry(
        "uvicorn_accept_after_shutdown_rejection",
        r"RuntimeError: Expected ASGI message 'websocket\.send' or 'websocket\.close', but got 'websocket\.accept'",
        "shutdown already answered the handshake with HTTP 500; the app's own accept then raises into it",
        "https://github.com/encode/uvicorn/pull/2312 (related: disconnect before accept)",
        "uvicorn",
        None,
    ),
    _entry(
        "websockets_1138_closing_transport_closed",
        r"RuntimeError: unable to perform operation on <\w*Transport closed=True",
        "websockets: closing handshake writes to a transport the shutdown already closed",
        "https://github.com/python-websockets/websockets/issues/1138",
        "websockets",
        None,
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
GENERIC_SERVER_SIGNATURES = (WORKER_CRASH, WORKER_EXIT_NONZERO, WORKER_KILLED, WORKER_TIMEOUT, ERROR_LOGGED)

# Client side: a handshake that was pending when its worker's shutdown began, and got
# no valid HTTP answer (or, when asked, an HTTP rejection).
CLIENT_PREFIX = "handshake_"
CLIENT_SIGNATURES = (
    "handshake_dropped",
    "handshake_truncated_response",
    "handshake_bad_response",
    "handshake_reset",
    "handshake_timeout",
)

_BY_SIGNATURE = {entry.signature: entry for entry in CATALOG}


def reference(signature: str) -> str | None:
    entry = _BY_SIGNATURE.get(signature)
    return entry.reference if entry else None


def match(text: str) -> tuple[KnownFailure, str] | None:
    """The first catalog entry matching ``text``, with the line that matched."""
    for entry in CATALOG:
        found = entry.pattern.search(text)
        if found is not None:
            line = found.group(0).splitlines()[-1]
            return entry, line
    return None
