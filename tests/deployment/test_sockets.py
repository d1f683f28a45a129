"""The exposure snapshot over sock_diag gives psutil's answer: real listeners and connections on loopback in a
child process (and a real deployment's workers), compared with ``psutil_worker_peers`` after each change."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest

from chaos.deployment import sockets
from chaos.deployment.sockets import (
    LiveSockets,
    SocketSnapshots,
    dump_request,
    psutil_worker_peers,
    source_port_bytecode,
    worker_peers,
)
from chaos.load.client import hold_handshake
from chaos.load.ledger import HandshakeLedger
from chaos.results import Address
from tests.helpers import ROOT, wait_until

# A server in its own process, driven over stdin/stdout one JSON command a line: it listens on the
# addresses asked (all on one port), accepts, and closes the connections it is told to.
_SERVER = textwrap.dedent(
    """
    import json, socket, sys

    listeners, held = [], {}

    def listen(addresses):
        for _ in range(20):  # the first address's port may be taken on another address: try another
            port, opened = 0, []
            try:
                for host, v6only in addresses:
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    listener = socket.socket(family)
                    opened.append(listener)
                    if family == socket.AF_INET6:
                        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                    listener.bind((host, port))
                    listener.listen(64)
                    port = listener.getsockname()[1]
            except OSError:
                for listener in opened:
                    listener.close()
                continue
            listeners.extend(opened)
            return port
        raise SystemExit("no port free on every address")

    for line in sys.stdin:
        command, argument = json.loads(line)
        if command == "listen":
            answer = listen(argument)
        elif command == "accept":
            index, count = argument
            answer = []
            for _ in range(count):
                connection, _ = listeners[index].accept()
                held[connection.fileno()] = connection
                answer.append(connection.fileno())
        elif command == "close":
            for fd in argument:
                held.pop(fd).close()
            answer = argument
        elif command == "dup":
            copy = held[argument].dup()
            held[copy.fileno()] = copy
            answer = copy.fileno()
        print(json.dumps(answer), flush=True)
    """
)


# Starts the server as its own child and never reaps it: once the server exits it stays a zombie until this
# parent is killed (the test process may reap its own children at once: Locust's gevent, once imported, does).
_NON_REAPING_PARENT = textwrap.dedent(
    """
    import os, sys, time
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
    time.sleep(120)
    """
)


class Server:
    """The child server: its pid, and the commands it takes. ``zombie_parent``: the server runs under a parent
    that does not reap it."""

    def __init__(self, zombie_parent: bool = False) -> None:
        command = [sys.executable, "-c", *([_NON_REAPING_PARENT] if zombie_parent else []), _SERVER]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.process.pid
        if zombie_parent:
            parent = psutil.Process(self.process.pid)
            wait_until(parent.children, 10, "the server under its parent")
            self.pid = parent.children()[0].pid

    def ask(self, command: str, argument: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([command, argument]) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def listen(self, *addresses: tuple[str, int]) -> int:
        """Listeners on ``(host, v6only)`` each, all on one port; returns the port."""
        port: int = self.ask("listen", addresses)
        return port

    def accept(self, listener: int, count: int) -> list[int]:
        fds: list[int] = self.ask("accept", [listener, count])
        return fds

    def close(self, fds: list[int]) -> None:
        self.ask("close", fds)

    def dup(self, fd: int) -> int:
        copy: int = self.ask("dup", fd)
        return copy

    def kill_server(self) -> None:
        """SIGKILL to the server alone (under a non-reaping parent, it stays a zombie)."""
        os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.pid != self.process.pid:
                # While its parent lives, this pid is the server's (alive, or a zombie no one reaps).
                os.kill(self.pid, signal.SIGKILL)
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):  # a server left alive ends at its stdin's end
            if pipe is not None:
                pipe.close()


@contextmanager
def server(zombie_parent: bool = False) -> Iterator[Server]:
    started = Server(zombie_parent)
    try:
        yield started
    finally:
        started.stop()


@contextmanager
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


def connect(opened: list[socket.socket], host: str, port: int, count: int) -> set[Address]:
    """``count`` connections to ``host``; their local addresses, as the server sees its peers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addresses = set()
    for _ in range(count):
        client = socket.create_connection((host, port), timeout=5)
        assert client.family == family
        opened.append(client)
        addresses.add(client.getsockname()[:2])
    return addresses


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# The kernel's answer, real processes.


def test_the_snapshot_is_psutils_answer_on_ipv4_and_ipv6_loopback():
    with server() as child, clients() as opened:
        port = child.listen(("127.0.0.1", 0), ("::1", 1))
        expected = connect(opened, "127.0.0.1", port, 5)
        child.accept(0, 5)
        expected |= connect(opened, "::1", port, 4)
        child.accept(1, 4)
        snapshot = SocketSnapshots().worker_peers(child.pid, port)
        assert snapshot == psutil_worker_peers(child.pid, port) == expected
        assert {ip for ip, _ in snapshot} == {"127.0.0.1", "::1"}
        # Another port, and this process (the clients' ends: their local port is not the listen port).
        assert worker_peers(child.pid, port + 1 if port < 65535 else port - 1) == frozenset()
        assert worker_peers(os.getpid(), port) == psutil_worker_peers(os.getpid(), port) == frozenset()


def test_an_ipv4_client_of_a_dual_stack_listener_is_v4_mapped_as_psutil_says():
    with server() as child, clients() as opened:
        # A v6 socket bound to the v4-mapped loopback: a dual-stack listener that stays on loopback.
        port = child.listen(("::ffff:127.0.0.1", 0))
        ports = {client_port for _, client_port in connect(opened, "127.0.0.1", port, 3)}
        child.accept(0, 3)
        snapshot = SocketSnapshots().worker_peers(child.pid, port)
        assert snapshot == psutil_worker_peers(child.pid, port)
        assert snapshot == {("::ffff:127.0.0.1", client_port) for client_port in ports}


def test_the_fd_map_follows_closes_and_fd_numbers_reused():
    snapshots = SocketSnapshots()
    with server() as child, clients() as opened:
        port = child.listen(("127.0.0.1", 0), ("::1", 1))
        connect(opened, "127.0.0.1", port, 4)
        connect(opened, "::1", port, 4)
        fds = child.accept(0, 4) + child.accept(1, 4)

        def same_as_psutil() -> frozenset[Address]:
            snapshot = snapshots.worker_peers(child.pid, port)
            assert snapshot == psutil_worker_peers(child.pid, port)
            return snapshot

        assert len(same_as_psutil()) == 8
        assert snapshots.last_readlinks == fd_count(child.pid)  # first seen: every descriptor read
        assert len(same_as_psutil()) == 8
        # Nothing changed: only the descriptors that are not live connections on the port are read again.
        assert snapshots.last_readlinks == fd_count(child.pid) - 8

        # The server closes three (one v6); a client closes one (its server end waits in CLOSE_WAIT, no longer
        # ESTABLISHED, and drops out of both answers while the fd stays open).
        closed = [fds[0], fds[1], fds[5]]
        child.close(closed)
        opened[3].close()
        wait_until(lambda: len(psutil_worker_peers(child.pid, port)) == 4, 5, "the client's close to land")
        assert len(same_as_psutil()) == 4

        # New connections take the lowest free descriptors: the closed ones' numbers, now other sockets.
        new = connect(opened, "127.0.0.1", port, 2) | connect(opened, "::1", port, 1)
        reused = child.accept(0, 2) + child.accept(1, 1)
        assert sorted(reused) == sorted(closed)
        snapshot = same_as_psutil()
        assert new <= snapshot and len(snapshot) == 7
        # Read again: the reused numbers (their cached inodes are gone) and what is not a live connection.
        assert snapshots.last_readlinks == fd_count(child.pid) - 7 + len(reused)


def test_a_connection_under_two_fds_does_not_hide_a_new_one_on_a_reused_number():
    """The connection is dup'ed, its first fd closed and the number reused: the cached inode is still live (under
    the copy), yet the number now holds another connection."""
    snapshots = SocketSnapshots()
    with server() as child, clients() as opened:
        port = child.listen(("127.0.0.1", 0))
        first = connect(opened, "127.0.0.1", port, 1)
        (fd,) = child.accept(0, 1)
        assert snapshots.worker_peers(child.pid, port) == psutil_worker_peers(child.pid, port) == first
        child.dup(fd)
        assert snapshots.worker_peers(child.pid, port) == psutil_worker_peers(child.pid, port) == first
        child.close([fd])
        second = connect(opened, "127.0.0.1", port, 1)
        assert child.accept(0, 1) == [fd]
        assert snapshots.worker_peers(child.pid, port) == psutil_worker_peers(child.pid, port) == first | second


def test_a_process_that_exited_has_no_peers_and_leaves_the_cache():
    snapshots = SocketSnapshots()
    with server(zombie_parent=True) as child, clients() as opened:
        port = child.listen(("127.0.0.1", 0))
        connect(opened, "127.0.0.1", port, 3)
        child.accept(0, 3)
        assert len(snapshots.worker_peers(child.pid, port)) == 3
        assert snapshots.cached_pids() == [child.pid]

        child.kill_server()  # exited, not reaped: a worker its master has not waited for yet
        wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 5, "a zombie")
        assert snapshots.worker_peers(child.pid, port) == psutil_worker_peers(child.pid, port) == frozenset()
        child.stop()
        wait_until(lambda: not psutil.pid_exists(child.pid), 5, "the zombie reaped")
        assert snapshots.worker_peers(child.pid, port) == psutil_worker_peers(child.pid, port) == frozenset()
        assert snapshots.cached_pids() == []


def test_the_cache_keeps_live_processes_only_and_at_most_max_processes():
    snapshots = SocketSnapshots(max_processes=2)
    with server() as first, server() as second, server() as third, clients() as opened:
        ports = []
        for child in (first, second, third):
            ports.append(child.listen(("127.0.0.1", 0)))
            connect(opened, "127.0.0.1", ports[-1], 1)
            child.accept(0, 1)
        for child, port in zip((first, second, third), ports, strict=True):
            assert len(snapshots.worker_peers(child.pid, port)) == 1
        assert snapshots.cached_pids() == [second.pid, third.pid]  # the least recently used went first

        second.stop()
        assert len(snapshots.worker_peers(first.pid, ports[0])) == 1
        assert snapshots.cached_pids() == [third.pid, first.pid]  # the exited one dropped at the next snapshot


def test_a_real_deployments_workers_as_psutil_sees_them(start_deployment):
    target = start_deployment(workers=2)
    ledger = HandshakeLedger()
    url = f"{target.url}/ws/probe?hold=2&keep=1"
    threads = [
        threading.Thread(target=hold_handshake, args=(url,), kwargs={"keep_open": 0, "ledger": ledger})
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    try:
        workers = target.master.workers()
        wait_until(lambda: sum(len(psutil_worker_peers(w.pid, target.port)) for w in workers) == 10, 10, "10 held")
        for worker in workers:
            assert worker_peers(worker.pid, target.port) == psutil_worker_peers(worker.pid, target.port)
    finally:
        for thread in threads:
            thread.join()


def test_under_gevent_the_snapshot_is_psutils_answer():
    """The Locust process is monkey-patched: the netlink socket is then gevent's."""
    program = textwrap.dedent(
        """
        from gevent import monkey
        monkey.patch_all()
        import os, socket
        from chaos.deployment import sockets
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        accepted = [listener.accept() for _ in clients]
        snapshot = sockets.worker_peers(os.getpid(), port)
        assert snapshot == sockets.psutil_worker_peers(os.getpid(), port) and len(snapshot) == 5, snapshot
        assert sockets._SNAPSHOTS.uses_netlink
        """
    )
    subprocess.run([sys.executable, "-c", program], cwd=ROOT, check=True, timeout=60)


def test_where_the_kernel_refuses_the_request_psutil_answers_and_it_is_said_once(monkeypatch, caplog):
    """A real refusal: a program the kernel's audit rejects (a jump past its end) comes back as EINVAL."""
    monkeypatch.setattr(sockets, "source_port_bytecode", lambda port: struct.pack("=BBH", 11, 64, 64) * 2)
    with pytest.raises(OSError) as refused:
        sockets.established_on_port(1)
    assert refused.value.errno == errno.EINVAL

    snapshots = SocketSnapshots()
    with server() as child, clients() as opened, caplog.at_level(logging.DEBUG, logger=sockets.__name__):
        port = child.listen(("127.0.0.1", 0))
        connect(opened, "127.0.0.1", port, 2)
        child.accept(0, 2)
        for _ in range(2):
            assert snapshots.worker_peers(child.pid, port) == psutil_worker_peers(child.pid, port)
            assert len(snapshots.worker_peers(child.pid, port)) == 2
    assert not snapshots.uses_netlink
    assert [record.levelno for record in caplog.records if "sock_diag" in record.message] == [logging.DEBUG]


# The request and the reply, as bytes.


def test_the_bytecode_is_one_source_port_comparison():
    port = 8000
    code, yes, no, _, _, compared = struct.unpack("=BBHBBH", source_port_bytecode(port))
    # INET_DIAG_BC_S_EQ; a match jumps to the end (8), a miss past it (12); the port in the next op's "no".
    assert (code, yes, no, compared) == (11, 8, 12, port)


def test_the_request_asks_for_established_tcp_of_one_family_filtered_by_the_bytecode():
    request = dump_request(socket.AF_INET6, 8000, sequence=7)
    length, kind, flags, sequence, port_id = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, sequence, port_id) == (len(request), 20, 0x301, 7, 0)
    family, protocol, extensions, states = struct.unpack_from("=BBBxI", request, 16)
    assert (family, protocol, extensions, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 1 << 1)
    assert request[24:72] == bytes(48)  # no exact socket asked: a dump
    attribute_length, attribute_type = struct.unpack_from("=HH", request, 72)
    assert (attribute_length, attribute_type) == (12, 1) and request[76:] == source_port_bytecode(8000)


def _reply(family: int, ip: str, port: int, inode: int, attributes: int = 36) -> bytes:
    """One SOCK_DIAG_BY_FAMILY reply as the kernel lays it out, with ``attributes`` bytes of attributes."""
    address = socket.inet_pton(family, ip).ljust(16, b"\0")
    sockid = struct.pack("!HH", 8000, port) + bytes(16) + address + bytes(12)
    message = struct.pack("=BBBB", family, 1, 0, 0) + sockid + struct.pack("=IIIII", 0, 0, 0, 1000, inode)
    body = message + b"\xaa" * attributes
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


_DONE = struct.pack("=IHHIIi", 20, 3, 2, 1, 0, 0)
_SOCKETS = [
    (socket.AF_INET, "127.0.0.1", 40000, 11),
    (socket.AF_INET6, "::1", 40001, 12),
    (socket.AF_INET6, "::ffff:127.0.0.1", 40002, 13),
    (socket.AF_INET6, "fe80::1:2", 40003, 14),
]
_PEERS = {11: ("127.0.0.1", 40000), 12: ("::1", 40001), 13: ("::ffff:127.0.0.1", 40002), 14: ("fe80::1:2", 40003)}


@pytest.mark.parametrize(
    ("attributes", "by_columns"),
    [((36, 36, 36, 36), True), ((36, 44, 36, 36), False), ((36, 36, 36, 40), False)],
    ids=["one-length", "a-longer-one", "the-last-longer"],
)
def test_replies_are_read_to_inodes_and_peers_in_psutils_text(attributes, by_columns):
    """The kernel gives every socket of a dump the same attributes: such a datagram is read as columns, any
    other reply by reply, to the same answer."""
    datagram = b"".join(_reply(*sock, attributes=size) for sock, size in zip(_SOCKETS, attributes, strict=True))
    assert (LiveSockets()._add_uniform(memoryview(datagram), 0) == len(datagram)) is by_columns
    live = LiveSockets()
    live.add(datagram)
    assert not live.done and len(live) == 4
    assert {inode: live.peer(inode) for inode in _PEERS} == _PEERS
    live.add(_reply(socket.AF_INET, "127.0.0.2", 1, 15) + _DONE)  # the dump's last datagram
    assert live.done and live.peer(15) == ("127.0.0.2", 1) and 16 not in live


def test_the_kernels_error_reply_is_an_oserror_with_its_errno():
    error = struct.pack("=IHHIIi", 36, 2, 0, 1, 0, -errno.EPERM) + bytes(16)
    with pytest.raises(PermissionError):
        LiveSockets().add(error)


def test_a_reply_cut_short_is_an_oserror():
    whole = _reply(*_SOCKETS[0]) + _reply(*_SOCKETS[1])
    with pytest.raises(OSError) as cut:
        LiveSockets().add(whole[:-20])
    assert cut.value.errno == errno.EPROTO
