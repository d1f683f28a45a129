"""A userspace TCP port forwarder, standing for NAT or a container's port mapping (docker-proxy).

    python tests/forwarder.py --listen HOST:PORT --to HOST:PORT

Each connection accepted on ``--listen`` is matched by one this process opens to ``--to``, and bytes
are copied both ways: the server sees the forwarder's own address as its client, never the real one.
It forwards only to the one address it is given. Half-close is carried across (a FIN read on one side
is a FIN written on the other, the other direction goes on), a reset is carried across as a reset, and
a connection to ``--to`` that fails resets the client's. Prints ``listening HOST:PORT`` once bound (port 0:
any free port, the one bound is printed). SIGTERM or SIGINT: stop listening, drop every connection,
exit 0. Standard library only (asyncio): a few thousand connections cost a few thousand descriptors
each way; the soft open-file limit is raised to the hard one at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import socket
import struct
import sys


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _reset(transport: asyncio.Transport) -> None:
    """Close with a RST (SO_LINGER 0), as the kernel does to a connection whose peer reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Side(asyncio.Protocol):
    """One socket of a forwarded connection: what it reads is written to its peer's."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.read_eof = False  # its remote end sent FIN
        self.lost = False
        self.early: list[bytes] = []  # read before the peer was linked (the target's first bytes)

    def link(self, peer: _Side) -> None:
        """Joins the two sides; what this one read meanwhile goes to the peer now."""
        self.peer = peer
        transport = self._peer_transport()
        early, self.early = self.early, []
        if transport is not None:
            for data in early:
                transport.write(data)
            if self.read_eof and transport.can_write_eof():
                transport.write_eof()

    def _peer_transport(self) -> asyncio.Transport | None:
        peer = self.peer
        if peer is None or peer.transport is None or peer.lost or peer.transport.is_closing():
            return None
        return peer.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.forwarder.sides.add(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
            return
        peer = self._peer_transport()
        if peer is not None:
            peer.write(data)

    def eof_received(self) -> bool:
        self.read_eof = True
        peer = self._peer_transport()
        if peer is not None and peer.can_write_eof():
            peer.write_eof()  # after what is buffered
        if self.peer is not None and self.peer.read_eof:
            # Both directions are done: close both once their buffers are written.
            if peer is not None:
                peer.close()
            assert self.transport is not None
            self.transport.close()
        return True  # keep writing to this side: the other direction may go on

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.forwarder.sides.discard(self)
        peer = self._peer_transport()
        if peer is None:
            return
        if exc is not None:
            _reset(peer)  # a reset (or any error) on one side is a reset on the other
        else:
            peer.close()

    # Flow control: a peer that cannot take more pauses reading on this side.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()


class _Client(_Side):
    """The accepted side: reads nothing until the connection to the target is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._connect())
        self.forwarder.tasks.add(task)
        task.add_done_callback(self.forwarder.tasks.discard)

    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        host, port = self.forwarder.target
        try:
            _, upstream = await loop.create_connection(lambda: _Side(self.forwarder), host, port)
        except OSError:
            if not self.lost:
                _reset(self.transport)  # as a refused connection would be
            return
        assert isinstance(upstream, _Side) and upstream.transport is not None
        if self.lost:
            upstream.transport.close()
            return
        if upstream.lost:  # the target reset it before it was linked
            _reset(self.transport)
            return
        self.link(upstream)
        upstream.link(self)
        self.transport.resume_reading()


class Forwarder:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sides: set[_Side] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, listen: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = await loop.create_server(lambda: _Client(self), listen[0], listen[1], backlog=4096, reuse_address=True)
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening {host}:{port}", flush=True)
        await stop.wait()
        server.close()
        for task in list(self.tasks):
            task.cancel()
        for side in list(self.sides):
            if side.transport is not None:
                side.transport.abort()
        await server.wait_closed()


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--to", type=_address, required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    _raise_open_file_limit()
    try:
        asyncio.run(Forwarder(args.to).serve(args.listen))
    except OSError as exc:
        print(f"forwarder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
