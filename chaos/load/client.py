"""One websocket handshake, held in a chosen state, and a verdict on how it ended.

Built on websockets' sans-I/O ``ClientProtocol`` over one plain blocking socket: under
Locust (gevent monkey-patching) the socket is cooperative, and each held handshake
costs exactly one file descriptor (``websockets.sync`` would spend three).

Each attempt plays one scenario (``chaos.scenarios``): the probe holds most states on the
server's side; the client holds the others on its own (its request sent one header line at a
time, its reading of the answer, its TLS handshake paused before its last message).
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
from typing import Protocol
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from chaos.load.ledger import Flight, HandshakeLedger
from chaos.results import (
    ACCEPTED,
    BAD_RESPONSE,
    DENIAL_TRUNCATED,
    DROPPED,
    FRAME_TRUNCATED,
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
from chaos.scenarios import SCENARIO_SPECS, ClientBehaviour

_RECV_BYTES = 65536
_HEAD_BYTES = 8192
# accept-send: the client's receive buffer (the kernel doubles it) and how long a first frame may take.
_SLOW_READ_BUFFER = 4096
_FIRST_FRAME_SECONDS = 30.0
# The kernel's word for a peer that went away mid-TLS-handshake is not a TLS failure of the client's.
_CLIENT_BEHAVIOURS: dict[str, ClientBehaviour] = {spec.name: spec.client for spec in SCENARIO_SPECS.values()}


class _Stream(Protocol):
    """A plain socket, an ``ssl.SSLSocket``, or ``_PausedTls``: what the exchange needs of each."""

    def settimeout(self, timeout: float | None) -> None: ...

    def sendall(self, data: bytes) -> None: ...

    def recv(self, size: int) -> bytes: ...

    def close(self) -> None: ...


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
    scenario: str = "hold-accept"

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
    # The scenarios each attempt picks from, by weight (chaos.scenarios), and accept-send's first frame.
    scenarios: tuple[str, ...] = ("hold-accept",)
    scenario_weights: tuple[int, ...] = (1,)
    frame_bytes: int = 262144

    def pick_scenario(self, rng: random.Random | None) -> str:
        if len(self.scenarios) == 1 or rng is None:
            return self.scenarios[0]
        return rng.choices(self.scenarios, weights=self.scenario_weights)[0]

    def tls(self) -> ssl.SSLContext:
        return tls_context(self.ca_file, self.insecure)

    @property
    def response_timeout(self) -> float:
        """How long to wait for the handshake's answer: the longest hold plus the timeout."""
        return self.hold_seconds * (1 + self.hold_jitter) + self.handshake_timeout


def draw_hold(profile: LoadProfile, rng: random.Random | None = None) -> float:
    """One attempt's hold, within ``hold_seconds * (1 +/- hold_jitter)``: users started together
    otherwise move in lockstep, and a TERM that lands between two waves finds nothing pending."""
    hold = profile.hold_seconds
    if profile.hold_jitter and rng is not None:
        hold *= rng.uniform(1 - profile.hold_jitter, 1 + profile.hold_jitter)
    return hold


def handshake_url(base: str, profile: LoadProfile, hold: float, scenario: str = "hold-accept") -> str:
    """The URL each user opens: the route with its scenario, hold and keep-open times."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    # The server keeps the connection longer than the client, so a clean run ends with
    # the client's own close and any server-initiated close stands out.
    server_keep = profile.keep_open_seconds + 5
    query = f"hold={hold:.3f}&keep={server_keep:g}"
    if scenario not in ("hold-accept", "app"):  # the probe's default, and a route that is not the probe's
        query += f"&scenario={scenario}"
    if scenario == "accept-send":
        query += f"&frame={profile.frame_bytes}"
    return f"{scheme}://{parts.netloc}{profile.ws_path}?{query}"


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
    """One user's attempt: pick a scenario, open the route, hold the handshake in that state, keep
    an accepted socket open."""
    scenario = profile.pick_scenario(rng)
    hold = draw_hold(profile, rng)
    url = handshake_url(base, profile, hold, scenario)
    result = hold_handshake(
        url,
        connect_timeout=profile.connect_timeout,
        handshake_timeout=profile.response_timeout,
        keep_open=profile.keep_open_seconds,
        ledger=ledger,
        tls=profile.tls() if url.startswith("wss:") else None,
        scenario=scenario,
        client_hold=hold,
    )
    result.scenario = scenario
    return result


class _Attempt:
    """Clock and byte count of one handshake; builds its result."""

    def __init__(self) -> None:
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.received = 0
        # The response's first bytes: whether its status line and headers had come when it was cut.
        self.head = b""
        # Events that arrived in the same read as the response (a close right after accept).
        self.leftover: list[object] = []

    def took(self, data: bytes) -> None:
        self.received += len(data)
        if len(self.head) < _HEAD_BYTES:
            self.head += data[: _HEAD_BYTES - len(self.head)]

    def cut(self, detail: str) -> HandshakeResult:
        """The connection ended mid-response: nothing, part of the head, or a denial's body cut short."""
        if self.received == 0:
            return self.result(DROPPED, detail=detail)
        head, ended, _ = self.head.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if ended and len(status_line) >= 2 and status_line[1].isdigit() and status_line[1] != b"101":
            status = int(status_line[1])
            return self.result(DENIAL_TRUNCATED, status=status, detail=f"HTTP {status}: the body was cut ({detail})")
        return self.result(TRUNCATED, detail=detail)

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
    scenario: str = "hold-accept",
    client_hold: float = 0.0,
) -> HandshakeResult:
    """Open ``url``, wait for the handshake's answer, keep an accepted connection ``keep_open`` seconds.

    A ``wss://`` URL is spoken over TLS (``tls``, else the system's trust store); the TLS
    handshake belongs to the connect, within ``connect_timeout``. The scenario's client side
    (``chaos.scenarios``) holds its state for ``client_hold`` seconds: the request trickled, the
    answer read late, or the TLS handshake paused. The ledger has the handshake in flight for as
    long as the scenario's state lasts.
    """
    uri = parse_uri(url)
    behaviour = _CLIENT_BEHAVIOURS.get(scenario, "request")
    attempt = _Attempt()
    try:
        sock = _connect(uri.host, uri.port, connect_timeout, small_receive_buffer=behaviour == "slow-read")
    except ConnectionRefusedError:
        return attempt.result(REFUSED, detail="connection refused")
    except TimeoutError:
        return attempt.result(TIMEOUT, detail="connect timed out")
    except OSError as exc:
        return attempt.result(_os_error_outcome(exc), detail=str(exc))
    # The states the client holds begin before the request is whole (or before TLS is done).
    early = behaviour in ("trickle-request", "paused-tls")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # before TLS takes the socket over
    local: Address = sock.getsockname()[:2]
    flight = ledger.begin(local, scenario, client_held=True) if ledger is not None and early else None
    stream: _Stream = sock
    try:
        if uri.secure:
            try:
                if behaviour == "paused-tls":
                    stream = _PausedTls(sock, tls or tls_context(), uri.host, client_hold, connect_timeout)
                else:
                    stream = (tls or tls_context()).wrap_socket(sock, server_hostname=uri.host)
            except ssl.SSLCertVerificationError as exc:
                return _ended(
                    ledger, local, flight, attempt.result(TLS_UNTRUSTED, detail=exc.verify_message or str(exc))
                )
            except (ssl.SSLError, OSError) as exc:
                outcome = TIMEOUT if isinstance(exc, TimeoutError) else _tls_failure(exc)
                return _ended(ledger, local, flight, attempt.result(outcome, detail=f"TLS: {exc}"))
            if behaviour == "paused-tls" and flight is not None:
                flight.release()  # the TLS handshake is done: the rest is an ordinary request
        protocol = ClientProtocol(uri)
        protocol.send_request(protocol.connect())
        if flight is None and ledger is not None:
            flight = ledger.begin(local, scenario)
        try:
            if behaviour == "trickle-request":
                _trickle(stream, protocol, client_hold)
                if flight is not None:
                    flight.release()
            elif behaviour == "slow-read":
                _flush(stream, protocol)
                time.sleep(client_hold)  # the answer (101 and a first frame) waits, in flight
            handshake = _await_response(stream, protocol, attempt, handshake_timeout)
            if behaviour == "slow-read" and handshake.outcome == ACCEPTED:
                _await_first_frame(stream, protocol, attempt, handshake)
        except OSError as exc:
            handshake = attempt.result(_os_error_outcome(exc), detail=str(exc))
        finally:
            if ledger is not None:
                ledger.end(local)
        if flight is not None:
            # The ledger keeps the flight for late attribution; it judges this result.
            flight.payload = handshake
            handshake.exposed_by = flight.exposed_by
        if handshake.outcome != ACCEPTED:
            return handshake
        return _hold_open(stream, protocol, keep_open, handshake, attempt.leftover)
    finally:
        stream.close()
        if stream is not sock:
            sock.close()


def _ended(
    ledger: HandshakeLedger | None, local: Address, flight: Flight | None, result: HandshakeResult
) -> HandshakeResult:
    """An attempt that ended before its request went out, with its flight (if one began) judged."""
    if ledger is not None and flight is not None:
        ledger.end(local)
        flight.payload = result
        result.exposed_by = flight.exposed_by
    return result


def _connect(host: str, port: int, timeout: float, small_receive_buffer: bool) -> socket.socket:
    if not small_receive_buffer:
        return socket.create_connection((host, port), timeout=timeout)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Set before connecting, so the window the server sees is small from the start: what the app
    # sends after its accept waits in the server's buffers, not in ours.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SLOW_READ_BUFFER)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _trickle(stream: _Stream, protocol: ClientProtocol, seconds: float) -> None:
    """The upgrade request one header line at a time over ``seconds``: the server's parser waits mid-request."""
    request = b"".join(protocol.data_to_send())
    lines = request.split(b"\r\n")
    pieces = [line + b"\r\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    pause = seconds / max(1, len(pieces) - 1)
    for index, piece in enumerate(pieces):
        if index:
            time.sleep(pause)
        try:
            stream.sendall(piece)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return  # the server closed a request it never had in full: what it answered (if anything) is read next


def _await_first_frame(
    stream: _Stream, protocol: ClientProtocol, attempt: _Attempt, handshake: HandshakeResult
) -> None:
    """accept-send: the app's first frame, whole; a cut one is ``frame_truncated``, a close is its code."""
    if _first_frame_in(attempt.leftover, handshake):
        attempt.leftover = [event for event in attempt.leftover if not _is_data_frame(event)]
        _acknowledge(stream, protocol, handshake)
        return
    deadline = time.monotonic() + _FIRST_FRAME_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        stream.settimeout(remaining)
        try:
            data = _recv(stream)
        except TimeoutError:
            break
        if not data:
            protocol.receive_eof()
            handshake.outcome = FRAME_TRUNCATED
            handshake.detail = "EOF before the first frame was whole"
            return
        attempt.took(data)
        protocol.receive_data(data)
        events = protocol.events_received()
        if _first_frame_in(events, handshake):
            attempt.leftover = [event for event in events if not _is_data_frame(event)]
            _acknowledge(stream, protocol, handshake)
            return
    handshake.outcome = FRAME_TRUNCATED
    handshake.detail = f"the first frame was not whole within {_FIRST_FRAME_SECONDS:g}s"


def _acknowledge(stream: _Stream, protocol: ClientProtocol, handshake: HandshakeResult) -> None:
    """The probe holds its accept-send state until told the whole first frame came."""
    if handshake.outcome != ACCEPTED or protocol.state is not State.OPEN:
        return  # a close came with the frame: nothing more to say
    protocol.send_text(b"first frame whole")
    try:
        _flush(stream, protocol)
    except OSError:
        pass  # the connection went: what that means is read next


def _is_data_frame(event: object) -> bool:
    return isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


def _first_frame_in(events: Sequence[object], handshake: HandshakeResult) -> bool:
    """True once the first data frame is whole (or a close came first: its code is the outcome)."""
    for event in events:
        if _is_data_frame(event):
            return True
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            close = Close.parse(event.data) if event.data else None
            handshake.close_code = close.code if close else 1005
            handshake.outcome = closed_outcome(handshake.close_code)
            return True
    return False


class _PausedTls:
    """A TLS client whose handshake stops before its last message for ``pause`` seconds.

    Driven through a memory BIO: the client has the server's whole flight and its own Finished
    ready, and holds it, so the server's TLS handshake is still in progress. Then it speaks TLS
    over the socket as ``ssl.SSLSocket`` would (the few calls this module makes)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, host: str, pause: float, timeout: float) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        sock.settimeout(timeout)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                data = sock.recv(_RECV_BYTES)
                if not data:
                    raise ssl.SSLEOFError("EOF during the TLS handshake") from None
                self.incoming.write(data)
        time.sleep(pause)  # the server waits for our Finished
        self._send_pending()

    def _send_pending(self) -> None:
        pending = self.outgoing.read()
        if pending:
            self.sock.sendall(pending)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._send_pending()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    return b""
                self.incoming.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def close(self) -> None:
        self.sock.close()


def _await_response(sock: _Stream, protocol: ClientProtocol, attempt: _Attempt, timeout: float) -> HandshakeResult:
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
                attempt.took(data)
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
                return attempt.cut("EOF before the whole response")
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
            return attempt.cut(str(cause) or "EOF")
        return attempt.result(BAD_RESPONSE, detail=f"{exc}: {cause}")
    return attempt.result(BAD_RESPONSE, detail=f"{type(exc).__name__}: {exc}")


def _hold_open(
    sock: _Stream,
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
    events: Sequence[object], sock: _Stream, protocol: ClientProtocol, handshake: HandshakeResult
) -> bool:
    for event in events:
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            close = Close.parse(event.data) if event.data else None
            handshake.close_code = close.code if close else 1005
            handshake.outcome = closed_outcome(handshake.close_code)
            _flush(sock, protocol)  # the protocol queued the close reply
            return True
    return False


def _recv(sock: _Stream) -> bytes:
    """What arrived; b"" at EOF, also when a TLS peer closed without a close_notify."""
    try:
        return sock.recv(_RECV_BYTES)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return b""


def _flush(sock: _Stream, protocol: ClientProtocol) -> None:
    for chunk in protocol.data_to_send():
        if chunk:
            sock.sendall(chunk)


def _tls_failure(exc: Exception) -> str:
    """A TLS handshake the server cut short (it shut down, or reset) is that, not a TLS disagreement."""
    if isinstance(exc, ssl.SSLEOFError | BrokenPipeError):
        return DROPPED
    if isinstance(exc, ConnectionResetError):
        return RESET
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return _os_error_outcome(exc)
    return TLS_FAILED


def _os_error_outcome(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return DROPPED  # the peer closed the TLS connection without a word (its errno means nothing)
    if exc.errno == errno.EPIPE:
        return DROPPED  # the server closed the connection before our request (or its end) went out
    if exc.errno == errno.ECONNRESET:
        return RESET
    if exc.errno == errno.ECONNREFUSED:
        return REFUSED
    if exc.errno in (errno.ETIMEDOUT,):
        return TIMEOUT
    return os_error_outcome(errno.errorcode.get(exc.errno or 0, "unknown"))
