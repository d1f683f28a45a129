"""One websocket handshake, held pending, and a verdict on how it ended.

Built on websockets' sans-I/O ``ClientProtocol`` over one plain blocking socket: under
Locust (gevent monkey-patching) the socket is cooperative, and each held handshake
costs exactly one file descriptor (``websockets.sync`` would spend three).
"""

from __future__ import annotations

import errno
import functools
import random
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from chaos.load.ledger import HandshakeLedger
from chaos.results import (
    ACCEPTED,
    BAD_RESPONSE,
    DROPPED,
    LOST_AFTER_ACCEPT,
    REFUSED,
    RESET,
    TIMEOUT,
    TLS_FAILED,
    TLS_UNTRUSTED,
    TRUNCATED,
    Address,
    closed_outcome,
    http_outcome,
    os_error_outcome,
)

_RECV_BYTES = 65536


@dataclass
class HandshakeResult:
    outcome: str
    handshake_seconds: float
    started: float
    status: int | None = None
    close_code: int | None = None
    detail: str = ""
    response_bytes: int = 0
    # Id of the controller signal whose shutdown caught this handshake pending, if any.
    exposed_by: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 101


@dataclass(frozen=True)
class LoadProfile:
    """What each user does: which route, how long the server holds the handshake, the timeouts."""

    hold_seconds: float = 2.0
    hold_jitter: float = 0.5
    keep_open_seconds: float = 1.0
    ws_path: str = "/ws/probe"
    connect_timeout: float = 5.0
    handshake_timeout: float = 30.0
    # wss://: trust this CA file instead of the system's store, or verify nothing (self-signed).
    ca_file: str | None = None
    insecure: bool = False

    def tls(self) -> ssl.SSLContext:
        return tls_context(self.ca_file, self.insecure)

    @property
    def response_timeout(self) -> float:
        """How long to wait for the handshake's answer: the longest hold plus the timeout."""
        return self.hold_seconds * (1 + self.hold_jitter) + self.handshake_timeout


def handshake_url(base: str, profile: LoadProfile, rng: random.Random | None = None) -> str:
    """The URL each user opens: the route with its hold and keep-open times.

    Each attempt's hold is drawn within ``hold_seconds * (1 +/- hold_jitter)``: users
    started together otherwise move in lockstep, and a TERM that lands between two
    waves finds nothing pending.
    """
    hold = profile.hold_seconds
    if profile.hold_jitter and rng is not None:
        hold *= rng.uniform(1 - profile.hold_jitter, 1 + profile.hold_jitter)
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    # The server keeps the connection longer than the client, so a clean run ends with
    # the client's own close and any server-initiated close stands out.
    server_keep = profile.keep_open_seconds + 5
    return f"{scheme}://{parts.netloc}{profile.ws_path}?hold={hold:.3f}&keep={server_keep:g}"


@functools.cache
def tls_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """One client context per trust setting, shared by every handshake of this process."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def hold_one(
    base: str, profile: LoadProfile, rng: random.Random | None = None, ledger: HandshakeLedger | None = None
) -> HandshakeResult:
    """One user's attempt: open the route, hold the handshake, keep an accepted socket open."""
    url = handshake_url(base, profile, rng)
    return hold_handshake(
        url,
        connect_timeout=profile.connect_timeout,
        handshake_timeout=profile.response_timeout,
        keep_open=profile.keep_open_seconds,
        ledger=ledger,
        tls=profile.tls() if url.startswith("wss:") else None,
    )


class _Attempt:
    """Clock and byte count of one handshake; builds its result."""

    def __init__(self) -> None:
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.received = 0
        # Events that arrived in the same read as the response (a close right after accept).
        self.leftover: list[object] = []

    def result(
        self, outcome: str, *, status: int | None = None, close_code: int | None = None, detail: str = ""
    ) -> HandshakeResult:
        return HandshakeResult(
            outcome,
            time.monotonic() - self.started,
            self.started_wall,
            status=status,
            close_code=close_code,
            detail=detail,
            response_bytes=self.received,
        )


def hold_handshake(
    url: str,
    *,
    connect_timeout: float = 5.0,
    handshake_timeout: float = 30.0,
    keep_open: float = 1.0,
    ledger: HandshakeLedger | None = None,
    tls: ssl.SSLContext | None = None,
) -> HandshakeResult:
    """Open ``url``, wait for the handshake's answer, keep an accepted connection ``keep_open`` seconds.

    A ``wss://`` URL is spoken over TLS (``tls``, else the system's trust store); the TLS
    handshake belongs to the connect, within ``connect_timeout``.
    """
    uri = parse_uri(url)
    attempt = _Attempt()
    try:
        sock = socket.create_connection((uri.host, uri.port), timeout=connect_timeout)
    except ConnectionRefusedError:
        return attempt.result(REFUSED, detail="connection refused")
    except TimeoutError:
        return attempt.result(TIMEOUT, detail="connect timed out")
    except OSError as exc:
        return attempt.result(_os_error_outcome(exc), detail=str(exc))
    if uri.secure:
        try:
            sock = (tls or tls_context()).wrap_socket(sock, server_hostname=uri.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            return attempt.result(TLS_UNTRUSTED, detail=exc.verify_message or str(exc))
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            outcome = TIMEOUT if isinstance(exc, TimeoutError) else TLS_FAILED
            return attempt.result(outcome, detail=f"TLS: {exc}")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local: Address = sock.getsockname()[:2]
        protocol = ClientProtocol(uri)
        protocol.send_request(protocol.connect())
        flight = ledger.begin(local) if ledger is not None else None
        try:
            handshake = _await_response(sock, protocol, attempt, handshake_timeout)
        finally:
            if ledger is not None:
                ledger.end(local)
        if flight is not None:
            # The ledger keeps the flight for late attribution; it judges this result.
            flight.payload = handshake
            handshake.exposed_by = flight.exposed_by
        if handshake.outcome != ACCEPTED:
            return handshake
        return _hold_open(sock, protocol, keep_open, handshake, attempt.leftover)
    finally:
        sock.close()


def _await_response(
    sock: socket.socket, protocol: ClientProtocol, attempt: _Attempt, timeout: float
) -> HandshakeResult:
    try:
        _flush(sock, protocol)
        deadline = attempt.started + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return attempt.result(TIMEOUT, detail=f"no response within {timeout:g}s")
            sock.settimeout(remaining)
            data = _recv(sock)
            if data:
                attempt.received += len(data)
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = protocol.events_received()
            for index, event in enumerate(events):
                if isinstance(event, Response):
                    attempt.leftover = list(events[index + 1 :])
                    return _judge_response(event, protocol, attempt)
            if protocol.handshake_exc is not None:
                return _judge_exception(protocol.handshake_exc, attempt)
            if not data:
                return attempt.result(DROPPED if attempt.received == 0 else TRUNCATED, detail="EOF before a response")
    except TimeoutError:
        return attempt.result(TIMEOUT, detail=f"no response within {timeout:g}s")
    except ConnectionResetError:
        return attempt.result(RESET, detail="connection reset during the handshake")
    except OSError as exc:
        return attempt.result(_os_error_outcome(exc), detail=str(exc))


def _judge_response(response: Response, protocol: ClientProtocol, attempt: _Attempt) -> HandshakeResult:
    status = response.status_code
    # Not the state: a close frame read together with the 101 has already moved it on.
    if status == 101 and protocol.handshake_exc is None:
        return attempt.result(ACCEPTED, status=101)
    if status == 101:
        # A 101 that failed validation (bad accept key, extensions): a broken handshake.
        return attempt.result(BAD_RESPONSE, status=101, detail=str(protocol.handshake_exc))
    return attempt.result(http_outcome(status), status=status, detail=response.reason_phrase)


def _judge_exception(exc: Exception, attempt: _Attempt) -> HandshakeResult:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return attempt.result(http_outcome(status), status=status)
    if isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        if isinstance(cause, EOFError):
            return attempt.result(DROPPED if attempt.received == 0 else TRUNCATED, detail=str(cause) or "EOF")
        return attempt.result(BAD_RESPONSE, detail=f"{exc}: {cause}")
    return attempt.result(BAD_RESPONSE, detail=f"{type(exc).__name__}: {exc}")


def _hold_open(
    sock: socket.socket,
    protocol: ClientProtocol,
    keep_open: float,
    handshake: HandshakeResult,
    leftover: Sequence[object],
) -> HandshakeResult:
    """Keep the accepted connection; report who closed it and how."""
    deadline = time.monotonic() + keep_open
    try:
        if _closed_by_server(leftover, sock, protocol, handshake):
            return handshake
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data = _recv(sock)
            except TimeoutError:
                break
            if not data:
                protocol.receive_eof()
                handshake.outcome = LOST_AFTER_ACCEPT
                return handshake
            protocol.receive_data(data)
            if _closed_by_server(protocol.events_received(), sock, protocol, handshake):
                return handshake
        protocol.send_close(1000)
        _flush(sock, protocol)
        return handshake
    except OSError as exc:
        handshake.outcome = LOST_AFTER_ACCEPT
        handshake.detail = str(exc)
        return handshake


def _closed_by_server(
    events: Sequence[object], sock: socket.socket, protocol: ClientProtocol, handshake: HandshakeResult
) -> bool:
    for event in events:
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            close = Close.parse(event.data) if event.data else None
            handshake.close_code = close.code if close else 1005
            handshake.outcome = closed_outcome(handshake.close_code)
            _flush(sock, protocol)  # the protocol queued the close reply
            return True
    return False


def _recv(sock: socket.socket) -> bytes:
    """What arrived; b"" at EOF, also when a TLS peer closed without a close_notify."""
    try:
        return sock.recv(_RECV_BYTES)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return b""


def _flush(sock: socket.socket, protocol: ClientProtocol) -> None:
    for chunk in protocol.data_to_send():
        if chunk:
            sock.sendall(chunk)


def _os_error_outcome(exc: OSError) -> str:
    if exc.errno == errno.ECONNRESET:
        return RESET
    if exc.errno == errno.ECONNREFUSED:
        return REFUSED
    if exc.errno in (errno.ETIMEDOUT,):
        return TIMEOUT
    return os_error_outcome(errno.errorcode.get(exc.errno or 0, "unknown"))
