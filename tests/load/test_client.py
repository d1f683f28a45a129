"""How a handshake ended, judged from what real sockets did on the wire."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from chaos.load.client import hold_handshake
from chaos.load.ledger import HandshakeLedger
from chaos.results import ACCEPTED, BAD_RESPONSE, DROPPED, REFUSED, RESET, TIMEOUT, TRUNCATED


@pytest.fixture
def raw_server() -> Iterator[Callable[..., int]]:
    """A loopback server that handles one connection with the given behaviour."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def serve(behaviour: Callable[[socket.socket], None], capture: list[bytes] | None = None) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def run() -> None:
            connection, _ = listener.accept()
            with connection:
                request = connection.recv(4096)  # the handshake request
                if capture is not None:
                    capture.append(request)
                behaviour(connection)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    yield serve
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=5)


def _reset(connection: socket.socket) -> None:
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [
        (lambda c: None, DROPPED),
        (lambda c: c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Le"), TRUNCATED),
        (lambda c: c.sendall(b"\x00\x01garbage that is not http\r\n\r\n"), BAD_RESPONSE),
        (_reset, RESET),
        (lambda c: c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"), BAD_RESPONSE),
    ],
    ids=["eof", "truncated", "garbage", "reset", "bad-101"],
)
def test_no_valid_response_outcomes(raw_server, behaviour, outcome):
    port = raw_server(behaviour)
    ledger = HandshakeLedger()
    result = hold_handshake(f"ws://127.0.0.1:{port}/ws/probe", handshake_timeout=5, ledger=ledger)
    assert result.outcome == outcome, result
    assert len(ledger) == 0


def test_http_rejection_names_its_status(raw_server):
    port = raw_server(lambda c: c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
    result = hold_handshake(f"ws://127.0.0.1:{port}/", handshake_timeout=5)
    assert (result.outcome, result.status) == ("http_503", 503)


def test_timeout_when_nothing_answers(raw_server):
    release = threading.Event()
    port = raw_server(lambda c: release.wait(5))
    result = hold_handshake(f"ws://127.0.0.1:{port}/", handshake_timeout=0.3)
    release.set()
    assert result.outcome == TIMEOUT and 0.3 <= result.handshake_seconds < 2


def test_refused_when_nothing_listens():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    assert hold_handshake(f"ws://127.0.0.1:{port}/").outcome == REFUSED


def test_accept_then_server_close_reports_the_code(start_deployment):
    target = start_deployment(workers=1)
    result = hold_handshake(f"{target.url}/ws/probe?hold=0&keep=0.2", keep_open=5)
    assert (result.outcome, result.close_code) == ("closed_1000", 1000)
    result = hold_handshake(f"{target.url}/ws/probe?hold=0&keep=5", keep_open=0.2)
    assert result.outcome == ACCEPTED
    result = hold_handshake(f"{target.url}/elsewhere", keep_open=0.2)
    assert result.outcome == "http_403"


def test_accept_and_close_in_one_read_is_closed_not_broken(raw_server):
    """A server that accepts and closes at once (shutdown right after accept): one read holds both."""
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    def accept_then_close(connection: socket.socket) -> None:
        server = ServerProtocol()
        server.receive_data(_REQUEST[0])
        request = server.events_received()[0]
        assert isinstance(request, Request)
        server.send_response(server.accept(request))
        server.send_close(1012)
        connection.sendall(b"".join(server.data_to_send()))
        connection.recv(4096)  # the client's close reply

    _REQUEST.clear()
    port = raw_server(accept_then_close, capture=_REQUEST)
    result = hold_handshake(f"ws://127.0.0.1:{port}/ws/probe", handshake_timeout=5, keep_open=5)
    assert (result.outcome, result.status, result.close_code) == ("closed_1012", 101, 1012), result


_REQUEST: list[bytes] = []


def test_wss_verifies_the_certificate_unless_told(start_deployment):
    from chaos.load.client import tls_context
    from chaos.results import TLS_UNTRUSTED

    target = start_deployment(workers=1, tls=True)
    assert target.url.startswith("wss://") and target.ca_file is not None
    url = f"{target.url}/ws/probe?hold=0&keep=5"
    untrusted = hold_handshake(url, keep_open=0, tls=tls_context())  # the system's store knows no throwaway CA
    assert untrusted.outcome == TLS_UNTRUSTED and "certificate" in untrusted.detail
    assert hold_handshake(url, keep_open=0, tls=tls_context(str(target.ca_file))).outcome == ACCEPTED
    assert hold_handshake(url, keep_open=0.2, tls=tls_context(insecure=True)).outcome == ACCEPTED
    plain = hold_handshake(url.replace("wss://", "ws://"), keep_open=0)  # plain text to a TLS port
    assert plain.outcome not in (ACCEPTED,) and plain.status is None
