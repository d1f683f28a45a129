"""The harness for other hosts (tests/netns.py) and the port forwarder (tests/forwarder.py), tested on their own:
two namespaces talk over their veth, the forwarder hides the client's address and carries half-closes, resets
and thousands of connections, and nothing is left behind whatever the body did."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time

import psutil
import pytest

from chaos.deployment.processes import ServerMaster
from chaos.results import ACCEPTED
from tests import netns
from tests.helpers import ROOT, assert_gone, wait_until

pytestmark = pytest.mark.netns

PYTHON = sys.executable
# Accepts one connection on ADDRESS:0, prints its port, then the peer's address, and answers upper-cased.
ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
conn, peer = server.accept()
conn.sendall(conn.recv(100).upper())
print(peer[0], flush=True)
"""
# Connects to ADDRESS PORT, prints its own address and the answer to "hello".
ECHO_CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
conn.sendall(b"hello")
print(conn.getsockname()[0], conn.recv(100).decode())
"""
# Ignores TERM (so it is KILLed past the deadline), says so, sleeps.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
# Starts a sleep in a session of its own (out of the group teardown signals), prints its pid, exits.
# (Its output elsewhere: a child holding the pipe would keep ``run`` waiting for the end of it.)
ESCAPING = (
    "import subprocess as s; "
    "print(s.Popen(['sleep', '30'], start_new_session=True, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"
)


def recv_until_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_two_hosts_talk_over_the_veth(two_hosts):
    a, b = two_hosts
    assert a.address != b.address
    server = a.popen([PYTHON, "-c", ECHO_SERVER, a.address], stdout=subprocess.PIPE, text=True)
    port = int(netns.read_line(server, 10))
    client = b.run([PYTHON, "-c", ECHO_CLIENT, a.address, str(port)], timeout=10)
    assert client.stdout.split() == [b.address, "HELLO"]
    assert netns.read_line(server, 10) == b.address  # the server saw the other host
    assert server.wait(timeout=5) == 0
    # Each host is a machine of its own: its loopback and its end of the veth, nothing of this one's.
    addresses = a.run([netns.IP, "-j", "-4", "addr", "show"]).stdout
    assert {info["local"] for link in json.loads(addresses) for info in link["addr_info"]} == {"127.0.0.1", a.address}


def test_the_forwarder_stands_for_nat(two_hosts):
    a, b = two_hosts
    server = a.popen([PYTHON, "-c", ECHO_SERVER, a.address], stdout=subprocess.PIPE, text=True)
    port = int(netns.read_line(server, 10))
    forwarder, mapped = netns.start_forwarder(a, (a.address, port))
    assert mapped[0] == a.address and mapped[1] != port
    client = b.run([PYTHON, "-c", ECHO_CLIENT, *map(str, mapped)], timeout=10)
    assert client.stdout.split() == [b.address, "HELLO"]  # the client sees its own address
    assert netns.read_line(server, 10) == a.address  # the server sees the forwarder's, never the client's
    forwarder.terminate()
    assert forwarder.wait(timeout=5) == 0  # SIGTERM: a clean exit


def test_the_forwarder_carries_half_close_and_reset_both_ways(two_hosts):
    a, b = two_hosts
    listener = a.listen()
    listener.settimeout(5)
    _, mapped = netns.start_forwarder(a, listener.getsockname()[:2])

    # The client finishes sending first: the server reads to EOF, answers, and closes.
    client = b.connect(mapped)
    server, peer = listener.accept()
    assert peer[0] == a.address
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    assert recv_until_eof(server) == b"request"
    server.sendall(b"answer")  # the other direction still flows
    server.close()
    assert recv_until_eof(client) == b"answer"
    client.close()

    # The server finishes sending first: the client reads to EOF and still sends.
    client = b.connect(mapped)
    server, _ = listener.accept()
    server.sendall(b"greeting")
    server.shutdown(socket.SHUT_WR)
    assert recv_until_eof(client) == b"greeting"
    client.sendall(b"reply")
    client.close()
    assert recv_until_eof(server) == b"reply"
    server.close()

    # A reset is carried as a reset, each way, promptly.
    for resetting in ("client", "server"):
        client = b.connect(mapped)
        server, _ = listener.accept()
        client.sendall(b"x")
        server.settimeout(5)
        assert server.recv(1) == b"x"
        gone, other = (client, server) if resetting == "client" else (server, client)
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            recv_until_eof(other)
        assert time.monotonic() - started < 2
        other.close()


def test_the_forwarder_holds_thousands_of_connections_at_once(two_hosts):
    a, b = two_hosts
    count = 3000
    listener = a.listen()
    listener.setblocking(False)
    _, mapped = netns.start_forwarder(a, listener.getsockname()[:2])
    sockets = b.inside(lambda: [netns.plain_socket() for _ in range(count)])
    peers: list[str] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def connect(index: int, sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, mapped)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"{index}\n".encode())
        assert await reader.readline() == f"{index}\n".encode()
        return reader, writer

    async def main() -> None:
        server = await asyncio.start_server(echo, sock=listener)
        try:
            streams = await asyncio.wait_for(asyncio.gather(*(connect(i, s) for i, s in enumerate(sockets))), 60)
            assert len(peers) == count and set(peers) == {a.address}  # every one open at once
            for _, writer in streams:
                writer.write_eof()
            # Each client's FIN went through to its server side, and each server's close came back.
            assert (
                await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in streams)), 30) == [b""] * count
            )
            for _, writer in streams:
                writer.close()
        finally:
            server.close()

    try:
        asyncio.run(main())
    finally:
        for sock in sockets:
            sock.close()


def _pids_alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_teardown_leaves_nothing_behind(failure):
    pids: list[int] = []
    names: list[str] = []
    with pytest.raises(failure, match="the body failed"):
        with netns.two_hosts(stop_timeout=1) as (a, b):
            names += [a.name, b.name]
            # A shell and its child (one process group), and a process that ignores TERM (KILLed past the
            # deadline), and sockets made in each namespace.
            shell = a.popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
            pids += [shell.pid, int(netns.read_line(shell, 10))]
            stubborn = b.popen([PYTHON, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
            netns.read_line(stubborn, 10)
            forwarder, mapped = netns.start_forwarder(a, (a.address, a.listen().getsockname()[1]))
            b.connect(mapped)
            pids += [stubborn.pid, forwarder.pid]
            assert _pids_alive(pids) == pids
            assert set(a.pids_inside()) == {shell.pid, pids[1], forwarder.pid} and b.pids_inside() == [stubborn.pid]
            raise failure("the body failed")
    assert not set(names) & set(netns.netns_names())
    assert not set(names) & set(netns.link_names())
    assert not any((netns.NETNS_RUN_DIR / name).exists() for name in names)
    assert_gone(pids)


def test_teardown_names_a_process_that_left_its_group():
    escaped: psutil.Process | None = None
    try:
        with pytest.raises(netns.LeftBehind, match="processes left inside the namespaces") as caught:
            with netns.two_hosts(stop_timeout=1) as (a, _):
                name = a.name
                started = a.run([PYTHON, "-c", ESCAPING])
                escaped = psutil.Process(int(started.stdout))
        assert escaped is not None
        assert f"{name}: {escaped.pid} (sleep 30)" in str(caught.value)
        assert escaped.is_running()  # named, not signalled
        assert name not in netns.netns_names()
    finally:
        if escaped is not None:
            escaped.kill()  # it was started here (psutil checks it is the same process)
            escaped.wait(5)


def test_check_netns_says_why_it_cannot(monkeypatch):
    netns.check_netns()  # root, with ip: nothing to say
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(netns.NetnsUnavailable, match="network namespaces need root"):
        netns.check_netns()
    monkeypatch.undo()
    monkeypatch.setattr(netns, "IP", "/nonexistent/ip")
    with pytest.raises(netns.NetnsUnavailable, match="not found"):
        netns.check_netns()


def _established_from(pid: int, port: int) -> set[str]:
    """Remote IPv4 addresses of the established connections to local ``port`` in PID's own namespace."""
    peers = set()
    for line in open(f"/proc/{pid}/net/tcp").read().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "01" and int(local.split(":")[1], 16) == port:
            peers.add(socket.inet_ntoa(bytes.fromhex(remote.split(":")[0])[::-1]))
    return peers


HANDSHAKE = """
import json, sys
from chaos.load.client import hold_handshake
result = hold_handshake(sys.argv[1] + "/ws/probe?hold=0.2&keep=30", keep_open=float(sys.argv[2]))
print(json.dumps({"outcome": result.outcome, "status": result.status}), flush=True)
"""


def test_a_deployment_in_one_host_serves_a_websocket_from_the_other(two_hosts, tmp_path):
    a, b = two_hosts
    serving = a.popen(
        [PYTHON, "-m", "tests.deployment_in_host", "--host", a.address, "--run-dir", str(tmp_path / "target")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    deployment = json.loads(netns.read_line(serving, 90))
    assert deployment["url"] == f"ws://{a.address}:{deployment['port']}"
    # One pid namespace: the master and its workers are seen, and verified, from here.
    master = ServerMaster(deployment["master"])
    assert [worker.pid for worker in master.workers()] == deployment["workers"]

    client = b.popen([PYTHON, "-c", HANDSHAKE, deployment["url"], "3"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # While the websocket is open, the worker holding it has it from B's address (in A's /proc/PID/net/tcp).
    wait_until(
        lambda: any(b.address in _established_from(pid, deployment["port"]) for pid in deployment["workers"]),
        15,
        "a worker to hold a connection from the other host",
    )
    assert json.loads(netns.read_line(client, 30)) == {"outcome": ACCEPTED, "status": 101}

    serving.terminate()
    assert serving.wait(timeout=30) == 0
    assert_gone([deployment["master"], *deployment["workers"]])
