"""Other hosts for the tests: Linux network namespaces the tests create and remove themselves.

``two_hosts()`` makes two namespaces joined by a veth pair, each end with an address of a /24 that no
route of this machine uses, and yields them as ``Host`` objects once a TCP connection from one to the
other works. A ``Host`` runs commands inside its namespace (``ip netns exec``) and makes sockets there
from this process (a thread that joins the namespace creates them; a socket stays in the namespace it was
made in). Everything a host started is stopped at the end, by the handles kept here (TERM to each
process group, KILL to what outlasts the deadline), then the namespaces are deleted, which deletes the
veth; whatever still runs inside a namespace is reported (``LeftBehind``), never signalled.

Only the network is separate: a process in a namespace sees the same filesystem and the same /proc, and
the same pids (no pid namespace), as a sidecar with a shared process namespace does. Reading /proc/net/tcp
shows the *reader's* namespace; /proc/PID/net/tcp shows PID's. The processes inherit this process's
open-file limit.

Needs root and iproute2's ``ip`` (``check_netns`` says which is missing). Nothing here touches the
machine's own interfaces or routes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

IP = shutil.which("ip") or "/usr/sbin/ip"  # iproute2 (scripts/test installs it where it is missing)
FORWARDER = Path(__file__).resolve().parent / "forwarder.py"
NETNS_RUN_DIR = Path("/run/netns")  # where ``ip netns add`` pins each namespace
# The /16 the pairs take their /24 from; the addresses exist only inside the namespaces.
SUBNETS = ipaddress.IPv4Network("10.231.0.0/16")
_CLONE_NEWNET = 0x40000000
_IFNAMSIZ = 15  # an interface name's longest
_pairs = itertools.count(1)

T = TypeVar("T")
Socket = socket.socket


class NetnsUnavailable(RuntimeError):
    """This machine cannot give the tests other hosts: not root, no ``ip``, or ``ip netns`` failed."""


class LeftBehind(AssertionError):
    """Processes still ran inside a namespace after every process the hosts started was stopped
    (something escaped its process group): named here, never signalled."""


class CommandFailed(subprocess.CalledProcessError):
    """A command run in a namespace exited non-zero; the message carries its stderr."""

    def __str__(self) -> str:
        stderr = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode(errors="replace")
        return f"{super().__str__()}: {stderr.strip()[-2000:]}"


def _ip(*args: str, timeout: float = 10.0) -> str:
    """``ip ARGS`` in this (the machine's) namespace; its stdout, or NetnsUnavailable with its stderr."""
    try:
        done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise NetnsUnavailable(f"{IP} not found: network namespaces need iproute2") from None
    if done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def check_netns() -> None:
    """Raises NetnsUnavailable saying why, unless this process can create network namespaces."""
    if os.geteuid() != 0:
        raise NetnsUnavailable(f"network namespaces need root (running as uid {os.geteuid()})")
    if not Path(IP).is_file():
        raise NetnsUnavailable(f"{IP} not found: network namespaces need iproute2")
    _ip("netns", "list")


def netns_names() -> list[str]:
    """The named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def link_names() -> list[str]:
    """The interfaces of this process's namespace (``ip link``)."""
    return [link["ifname"] for link in json.loads(_ip("-j", "link", "show") or "[]")]


def free_subnet(start: int = 0) -> ipaddress.IPv4Network:
    """A /24 of SUBNETS that no route and no address of this machine's namespace overlaps (the default
    route aside), searched from the ``start``-th. Two pairs may share one: each lives in its own namespaces."""
    used = [
        ipaddress.ip_network(route["dst"], strict=False)
        for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]")
        if route.get("dst") not in (None, "default")
    ]
    used += [
        ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
        for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]")
        for info in link.get("addr_info", [])
    ]
    candidates = list(SUBNETS.subnets(new_prefix=24))
    for index in range(len(candidates)):
        subnet = candidates[(start + index) % len(candidates)]
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise NetnsUnavailable(f"every /24 of {SUBNETS} overlaps a route of this machine")


def _signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    """``signum`` to the process group ``process`` leads (its own session: it and its children).

    The group's id is the leader's pid, which the kernel gives no new process while any member of the
    group lives: once the group is empty this finds nothing (ESRCH)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_processes(processes: Sequence[subprocess.Popen[Any]], timeout: float) -> None:
    """TERM each process's group, wait up to ``timeout`` seconds for the leaders, then KILL the groups
    (a leader that ignored TERM, and any child that outlived its leader) and reap the leaders."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        _signal_group(process, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def plain_socket(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> Socket:
    """A socket of the interpreter's own class, gevent or not: one made by gevent's would belong to the hub of
    the thread that made it (``inside``'s), and could not be used from any other."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        original: Callable[[int, int], Socket] = monkey.get_original("socket", "socket")
        return original(family, kind)
    return socket.socket(family, kind)


def _real_thread_primitives() -> tuple[Callable[..., Any], Callable[[], Any]]:
    """``_thread.start_new_thread`` and ``allocate_lock`` as the interpreter made them, gevent or not."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        return monkey.get_original("_thread", "start_new_thread"), monkey.get_original("_thread", "allocate_lock")
    import _thread

    return _thread.start_new_thread, _thread.allocate_lock


class Host:
    """One network namespace standing for another machine: ``address`` is its IPv4 on the veth."""

    def __init__(self, name: str, address: str, interface: str) -> None:
        self.name = name
        self.address = address
        self.interface = interface
        self._processes: list[subprocess.Popen[Any]] = []
        self._sockets: list[Socket] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address!r})"

    @property
    def path(self) -> Path:
        return NETNS_RUN_DIR / self.name

    @property
    def processes(self) -> list[subprocess.Popen[Any]]:
        """Every process started through this host, oldest first (exited ones too)."""
        with self._lock:
            return list(self._processes)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """``argv`` started inside the namespace (``ip netns exec NAME argv``, which execs it: the
        handle's pid is argv's own), in a session of its own. Popen's keyword arguments otherwise."""
        for key in ("start_new_session", "process_group"):
            if key in kwargs:
                raise TypeError(f"Host.popen sets {key} itself: every process leads its own group")
        with self._lock:  # kept the moment it exists: teardown stops what it started
            process = subprocess.Popen([IP, "netns", "exec", self.name, *argv], start_new_session=True, **kwargs)
            self._processes.append(process)
        return process

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,  # noqa: A002 -- subprocess.run's own name
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """A short command inside the namespace: its output as text. Past ``timeout`` its group is killed
        and TimeoutExpired raised; a non-zero exit raises CommandFailed (with stderr) when ``check``. Its
        output is read to the end: a child it leaves running must not hold stdout or stderr (redirect them).
        Popen's other keyword arguments (``cwd``, ``env``) pass through."""
        process = self.popen(
            argv,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:
            _signal_group(process, signal.SIGKILL)
            process.communicate()
            raise
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check and done.returncode != 0:
            raise CommandFailed(done.returncode, done.args, stdout, stderr)
        return done

    def inside(self, work: Callable[[], T]) -> T:
        """``work()`` run in a thread that has joined this namespace; its result (or exception).

        Sockets it creates belong to the namespace for their whole life, whichever thread uses them
        later; closing them is the caller's (or use ``socket``, ``listen``, ``connect``)."""
        result: list[T] = []
        error: list[BaseException] = []

        def enter_and_work() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, f"setns into {self.name}: {os.strerror(errno)}")
                finally:
                    os.close(fd)
                result.append(work())
            except BaseException as exc:  # raised again in the caller's thread
                error.append(exc)

        # A real OS thread even under gevent's monkey-patching (Locust's, once any test imported it): a
        # patched Thread is a greenlet on the main thread, and setns there moves the whole test process
        # into the namespace (cut off from everything else, the package index included).
        start_thread, allocate_lock = _real_thread_primitives()
        done = allocate_lock()
        done.acquire()

        def run() -> None:
            try:
                enter_and_work()
            finally:
                done.release()

        own_namespace = os.stat("/proc/thread-self/ns/net").st_ino
        start_thread(run, ())
        done.acquire()
        if os.stat("/proc/thread-self/ns/net").st_ino != own_namespace:
            raise NetnsUnavailable(f"the calling thread left its network namespace while entering {self.name}")
        if error:
            raise error[0]
        return result[0]

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> Socket:  # noqa: A002
        """A socket in this namespace; closed at teardown if still open."""
        sock = self.inside(lambda: plain_socket(family, type))
        with self._lock:
            self._sockets.append(sock)
        return sock

    def listen(self, port: int = 0, backlog: int = 4096) -> Socket:
        """A TCP socket listening on ``address:port`` (0: any free port) in this namespace."""
        sock = self.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, port))
        sock.listen(backlog)
        return sock

    def connect(self, address: tuple[str, int], timeout: float = 5.0) -> Socket:
        """A TCP connection from this namespace to ``address`` (blocking, with ``timeout``)."""
        sock = self.socket()
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def pids_inside(self) -> list[int]:
        """Every process whose network namespace is this one (read from /proc; nothing is signalled)."""
        try:
            ns = os.stat(self.path)
        except FileNotFoundError:
            return []
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                mine = os.stat(f"/proc/{entry.name}/ns/net")
                if (mine.st_dev, mine.st_ino) == (ns.st_dev, ns.st_ino):
                    pids.append(int(entry.name))
        return pids

    def close_sockets(self) -> None:
        """Closes every socket made through ``socket``, ``listen`` or ``connect``."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line ``process`` prints (started with ``stdout=PIPE, text=True``), stripped; AssertionError
    if none comes within ``timeout`` seconds or it exits first."""
    assert process.stdout is not None, "start the process with stdout=subprocess.PIPE, text=True"
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else None
    if not line:
        code = process.poll()
        state = "printed nothing" if line is None else f"exited ({code}) first" if code is not None else "closed stdout"
        raise AssertionError(f"{process.args!r} {state} within {timeout:g}s")
    return line.strip()


def start_forwarder(
    host: Host, to: tuple[str, int], port: int = 0, timeout: float = 10.0
) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """tests/forwarder.py in ``host``, listening on its address (``port``; 0: any free one) and forwarding
    to ``to``, as NAT or a container's port mapping does: the handle and the address it listens on."""
    process = host.popen(
        [sys.executable, str(FORWARDER), "--listen", f"{host.address}:{port}", "--to", f"{to[0]}:{to[1]}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    word, _, bound = read_line(process, timeout).partition(" ")
    assert word == "listening", f"forwarder printed {word} {bound}"
    address, _, bound_port = bound.rpartition(":")
    return process, (address, int(bound_port))


def _describe(pids: list[int]) -> str:
    described = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = "?"
        described.append(f"{pid} ({cmdline.strip()[:120]})")
    return ", ".join(described)


def _teardown(hosts: Sequence[Host], created: Sequence[str], stop_timeout: float) -> None:
    """Stop what the hosts started, then delete every namespace created, whatever fails on the way."""
    try:
        stop_processes([process for host in hosts for process in host.processes], stop_timeout)
    finally:
        for host in hosts:
            host.close_sockets()  # a socket keeps its namespace alive after the name is gone
        # What still runs inside is no process of ours (a grandchild that left its group): wait a
        # moment for it to go, name it if it does not.
        deadline = time.monotonic() + 2.0
        leftovers = {host.name: host.pids_inside() for host in hosts}
        while any(leftovers.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
            leftovers = {host.name: host.pids_inside() for host in hosts}
        errors: list[str] = []
        for name in created:
            if not (NETNS_RUN_DIR / name).exists():  # ``ip netns add`` interrupted before it made it
                continue
            try:
                _ip("netns", "delete", name)
            except NetnsUnavailable as exc:
                errors.append(str(exc))
        left = {name: pids for name, pids in leftovers.items() if pids}
        if left:
            errors.append(
                "processes left inside the namespaces (not started through a Host, or out of their group): "
                + "; ".join(f"{name}: {_describe(pids)}" for name, pids in left.items())
            )
        if errors:
            raise LeftBehind("\n".join(errors))


def _wait_connected(client: Host, server: Host, timeout: float) -> None:
    """Polls until a TCP connection from ``client`` to a socket listening on ``server`` completes."""
    deadline = time.monotonic() + timeout
    listener = server.listen(backlog=16)
    try:
        target = (server.address, listener.getsockname()[1])
        while True:
            try:
                client.connect(target, timeout=0.5).close()
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise NetnsUnavailable(
                        f"no TCP connection from {client.name} to {target[0]}:{target[1]} within {timeout:g}s: {exc}"
                    ) from None
            time.sleep(0.02)
    finally:
        listener.close()


@contextlib.contextmanager
def two_hosts(ready_timeout: float = 10.0, stop_timeout: float = 10.0) -> Iterator[tuple[Host, Host]]:
    """Two hosts joined by a veth pair, once a TCP connection from the second to the first works.

    Names are ``hc-<pid>-<n>-a`` and ``-b`` (the veth end in each is named after it); addresses .1 and .2
    of a /24 no route here uses. At the end, also when the body raises (KeyboardInterrupt too): every
    process started through either host gets TERM, KILL after ``stop_timeout`` seconds, then the
    namespaces (and with them the veth) are deleted."""
    check_netns()
    number = next(_pairs)
    names = [f"hc-{os.getpid()}-{number}-{side}" for side in ("a", "b")]
    subnet = free_subnet(os.getpid() + number)
    addresses = [str(subnet.network_address + 1), str(subnet.network_address + 2)]
    hosts = [Host(name, address, name[:_IFNAMSIZ]) for name, address in zip(names, addresses, strict=True)]
    a, b = hosts
    created: list[str] = []
    try:
        for name in names:
            created.append(name)  # before: a namespace made by a command interrupted midway is deleted too
            _ip("netns", "add", name)
        # Each end is made inside its namespace: the veth never shows in this one.
        _ip("link", "add", a.interface, "netns", a.name, "type", "veth", "peer", "name", b.interface, "netns", b.name)
        for host in hosts:
            _ip("-n", host.name, "link", "set", "lo", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", host.interface)
            _ip("-n", host.name, "link", "set", host.interface, "up")
        _wait_connected(b, a, ready_timeout)
        yield a, b
    finally:
        _teardown(hosts, created, stop_timeout)
