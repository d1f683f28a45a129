"""The exposure snapshot: which clients a worker holds connections from, fast enough to take at every signal.

``worker_peers(pid, port)`` answers what ``psutil.Process(pid).net_connections("tcp")`` answers
(kept here as ``psutil_worker_peers``, the reference and the fallback), filtered to the ESTABLISHED
connections on the listen port. psutil readlinks every descriptor of the worker and then parses
the whole of /proc/net/tcp and tcp6, the clients' ends included: with 15,000 handshakes held that is
~300 ms per snapshot. Here instead:

* the kernel is asked over NETLINK_SOCK_DIAG (``inet_diag``) for the ESTABLISHED TCP sockets
  whose local port is the listen port, filtered in the kernel by a two-instruction bytecode, so
  only the servers' ends come back: their inode and peer address, in binary;
* which of those the worker owns is read from /proc/PID/fd, the fd -> inode map kept per process
  between snapshots: one listdir, and a readlink only for a descriptor not seen before or whose
  cached inode is no longer a live connection on the port (the number may have been reused).

Both views are of this process's network namespace, as psutil's /proc/net/tcp is. Where netlink
cannot be used (no AF_NETLINK, a seccomp policy, a kernel without ``INET_DIAG_BC_S_EQ``) every
snapshot takes psutil's path; that is logged once, at debug level.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass, field

import psutil

from chaos.results import Address

log = logging.getLogger(__name__)

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, net/tcp_states.h
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_EQ = 11
TCP_ESTABLISHED = 1

# struct nlmsghdr: length, type, flags, sequence, port id (host byte order).
_NLMSG_HEADER = struct.Struct("=IHHII")
# struct inet_diag_req_v2: family, protocol, extensions wanted, pad, state mask, then an all-zero
# struct inet_diag_sockid (48 bytes: a dump matches on the bytecode, not on an exact socket).
_INET_DIAG_REQ_V2 = struct.Struct("=BBBxI48x")
# struct nlattr: length (header included), type.
_NLATTR_HEADER = struct.Struct("=HH")
# struct inet_diag_bc_op: code, offset to jump on yes, offset to jump on no.
_BC_OP = struct.Struct("=BBH")
# A reply is a nlmsghdr (16 bytes) then a struct inet_diag_msg; the attributes after it are skipped by the
# header's length. Read from it: the header's length and type, and of the socket its family (byte 16), peer
# port (22, big-endian), peer address (40, 16 bytes in network order, an IPv4 one in the first 4) and inode
# (84, host order).
_REPLY_HEAD = struct.Struct("=IH")
_REPLY_SIZE = _NLMSG_HEADER.size + 72
_INODE_AT = 84
_INODE = struct.Struct(f"={_INODE_AT}xI")
_PEER = struct.Struct("=16xB5x2s16x16s")
_NLMSG_ALIGN = 4

# Netlink hands a dump over in datagrams of at most 32 KiB (the kernel's cap on max_recvmsg_len);
# a buffer this size is never truncated, and a datagram that fills it is taken as a failure.
_RECEIVE_BUFFER = 1 << 18


def source_port_bytecode(port: int) -> bytes:
    """The inet_diag program "local port == ``port``": an S_EQ op whose port is the ``no`` field of
    the op after it. On a match the kernel jumps 8 bytes, to the program's end (accept); otherwise
    12, past its end (reject). The kernel's audit wants 4-byte-multiple jumps of at most len + 4."""
    return _BC_OP.pack(INET_DIAG_BC_S_EQ, 2 * _BC_OP.size, 3 * _BC_OP.size) + _BC_OP.pack(0, 0, port)


def dump_request(family: int, port: int, sequence: int = 1) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request: TCP sockets of ``family``, ESTABLISHED, local port ``port``."""
    bytecode = source_port_bytecode(port)
    attribute = _NLATTR_HEADER.pack(_NLATTR_HEADER.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    body = _INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_ESTABLISHED) + attribute
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, flags, sequence, 0) + body


def _aligned(length: int) -> int:
    return (length + _NLMSG_ALIGN - 1) & ~(_NLMSG_ALIGN - 1)


class LiveSockets:
    """The kernel's answer: the sockets of a dump by inode. Each reply is kept as received and a peer is
    decoded only when asked for: of some 15,000 sockets (every worker's) a snapshot needs one worker's."""

    def __init__(self) -> None:
        self._replies = bytearray()
        self._offsets: dict[int, int] = {}  # inode -> where its reply starts in _replies
        self.done = False  # the dump's NLMSG_DONE was read

    def __contains__(self, inode: object) -> bool:
        return inode in self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def peer(self, inode: int) -> Address:
        """The (ip, port) psutil gives for the same socket: inet_ntop of the same bytes, so an IPv4 client of
        a dual-stack listener stays "::ffff:a.b.c.d" and IPv6 text is compressed the same way."""
        family, port, address = _PEER.unpack_from(self._replies, self._offsets[inode])
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, address[:4]), int.from_bytes(port, "big")
        return socket.inet_ntop(socket.AF_INET6, address), int.from_bytes(port, "big")

    def add(self, datagram: bytes | bytearray | memoryview) -> None:
        """Takes one datagram of the dump. ``OSError`` for the kernel's error reply (e.g. EINVAL for
        bytecode it does not know) or a malformed one."""
        base = len(self._replies)
        self._replies += datagram
        data = memoryview(self._replies)[base:]
        try:
            start = self._add_uniform(data, base)
            self._add_each(data, base, start)
        finally:
            data.release()  # the bytearray cannot grow while a view of it is held

    def _add_uniform(self, data: memoryview, base: int) -> int:
        """The common case at C speed: a datagram of replies all of one length (the kernel sends the same
        attributes for every socket of a dump) is read as columns, one slice per field, not one unpack per
        reply. Every reply's length and type are checked, so a datagram of mixed lengths is left to
        ``_add_each`` whole. Returns where the replies it took end."""
        if len(data) < _REPLY_SIZE:
            return 0
        length, kind = _REPLY_HEAD.unpack_from(data)
        stride = _aligned(length)
        count = len(data) // stride
        if kind != SOCK_DIAG_BY_FAMILY or length < _REPLY_SIZE or count == 0:
            return 0
        end = count * stride
        with data[:end].cast("I") as words, data[:end].cast("H") as halves:
            # Every reply's first word is its length and its third half-word its type.
            if words[:: stride // 4].tolist().count(length) != count:
                return 0
            if halves[2 :: stride // 2].tolist().count(SOCK_DIAG_BY_FAMILY) != count:
                return 0
            inodes = words[_INODE_AT // 4 :: stride // 4].tolist()
        self._offsets.update(zip(inodes, range(base, base + end, stride), strict=True))
        return end

    def _add_each(self, data: memoryview, base: int, offset: int) -> None:
        """Reply by reply, from ``offset``: the dump's end, an error, or replies of differing lengths."""
        end = len(data)
        while offset + _NLMSG_HEADER.size <= end:
            length, kind = _REPLY_HEAD.unpack_from(data, offset)
            if length < _NLMSG_HEADER.size or offset + length > end:
                raise OSError(errno.EPROTO, "sock_diag: a malformed reply")
            if kind == SOCK_DIAG_BY_FAMILY:
                if length < _REPLY_SIZE:
                    raise OSError(errno.EPROTO, "sock_diag: a reply cut short")
                (inode,) = _INODE.unpack_from(data, offset)
                self._offsets[inode] = base + offset
            elif kind == NLMSG_DONE:
                self.done = True
                return
            elif kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
                if code != 0:
                    raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
            offset += _aligned(length)


def established_on_port(port: int) -> LiveSockets:
    """Every ESTABLISHED TCP socket (IPv4 and IPv6) whose local port is ``port``, from the kernel."""
    live = LiveSockets()
    buffer = bytearray(_RECEIVE_BUFFER)
    view = memoryview(buffer)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as channel:
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            channel.sendall(dump_request(family, port, sequence))
            live.done = False
            while not live.done:
                received = channel.recv_into(buffer)
                if received >= len(buffer):
                    raise OSError(errno.EMSGSIZE, "sock_diag: a datagram filled the receive buffer")
                if received == 0:
                    raise OSError(errno.EPROTO, "sock_diag: the dump ended without NLMSG_DONE")
                live.add(view[:received])
    return live


def psutil_worker_peers(pid: int, listen_port: int) -> frozenset[Address]:
    """The reference answer (and the fallback): psutil's view of the worker's connections."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return frozenset()
    return frozenset(
        (conn.raddr.ip, conn.raddr.port)
        for conn in connections
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port == listen_port and conn.raddr
    )


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): with the pid, its identity,
    so a recycled pid never inherits the map of the process it replaced. None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count the fields after its last ")".
    return int(text[text.rindex(b")") + 2 :].split()[19])


def _socket_inode(link: str) -> int:
    """The inode of a /proc/PID/fd link to a socket ("socket:[123]"); 0 for anything else."""
    return int(link[8:-1]) if link.startswith("socket:[") else 0


# One descriptor as last read: its socket inode (0: not a socket) and, once that inode was seen live on
# the port, its client's address (decoded once: a connection's peer never changes while it lives).
_FdEntry = tuple[int, "Address | None"]


@dataclass
class _FdMap:
    """One process's descriptors, by fd name as /proc/PID/fd lists it."""

    start_time: int
    fds: dict[str, _FdEntry] = field(default_factory=dict)


class SocketSnapshots:
    """Exposure snapshots with each process's fd -> inode map kept between them.

    A cached descriptor is trusted while its inode is still a live connection on the port and no other
    fd of the process holds that inode: a socket's inode number is not reused while it lives, and a
    connection closes with the last fd that holds it, so that fd still names it. (Two fds holding one
    inode are read again: a dup, or a number closed and reused while the connection lived on under the
    copy. A connection also held by another process, through fork or SCM_RIGHTS, could outlive this
    process's fd unseen; a uvicorn worker shares none of its accepted connections.)
    """

    def __init__(self, max_processes: int = 64) -> None:
        self.max_processes = max_processes
        self._maps: dict[int, _FdMap] = {}
        self._lock = threading.Lock()
        self._netlink = True
        self.last_readlinks = 0  # descriptors the last snapshot read (the tests and the benchmark look)

    @property
    def uses_netlink(self) -> bool:
        return self._netlink

    def worker_peers(self, pid: int, listen_port: int) -> frozenset[Address]:
        """Client addresses of the ESTABLISHED connections ``pid`` holds on ``listen_port``."""
        if self._netlink:
            try:
                live = established_on_port(listen_port)
            except OSError as exc:
                # Not for this snapshot only: whatever refused it (a seccomp policy, a kernel without
                # inet_diag or its S_EQ op) refuses the next one too. psutil's answer is the same, slower.
                self._netlink = False
                log.debug("sock_diag unavailable (%s): exposure snapshots read psutil's connections", exc)
            else:
                return self._owned(pid, live)
        return psutil_worker_peers(pid, listen_port)

    def _owned(self, pid: int, live: LiveSockets) -> frozenset[Address]:
        """Which of the ``live`` connections ``pid`` holds, its fd map brought up to date on the way."""
        start_time = _start_time(pid)
        if start_time is None:
            self._forget(pid)
            return frozenset()
        try:
            # Read relative to the open directory: each readlink then skips the lookup of /proc/PID/fd.
            fd_dir = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # gone since, or not ours to look at (psutil: NoSuchProcess, AccessDenied)
            self._forget(pid)
            return frozenset()
        with self._lock:
            cached = self._maps.get(pid)
        old = cached.fds if cached is not None and cached.start_time == start_time else {}
        fds: dict[str, _FdEntry] = {}
        first_fd: dict[int, str] = {}  # live inode -> the first fd found holding it
        doubtful: set[str] = set()
        readlinks = 0
        try:
            for name in os.listdir(fd_dir):
                entry = old.get(name)
                if entry is None or entry[0] not in live:
                    readlinks += 1
                    entry = self._read(fd_dir, name, live)
                    if entry is None:  # closed meanwhile
                        continue
                elif entry[1] is None:  # a socket that was not yet a live connection on the port
                    entry = (entry[0], live.peer(entry[0]))
                fds[name] = entry
                if entry[1] is not None and first_fd.setdefault(entry[0], name) != name:
                    doubtful.update((name, first_fd[entry[0]]))
            # One connection under two fds: a dup, or a cached fd that was closed and reused while the
            # connection lived on under the other (its new socket would go unseen). Read both again.
            for name in doubtful:
                readlinks += 1
                entry = self._read(fd_dir, name, live)
                if entry is None:
                    fds.pop(name, None)
                else:
                    fds[name] = entry
        except OSError:  # the listing itself failed: the process is exiting
            start_time = None
        finally:
            os.close(fd_dir)
        self.last_readlinks = readlinks
        if start_time is None or _start_time(pid) != start_time:
            # Exited (or replaced) while being read: as psutil, nothing.
            self._forget(pid)
            return frozenset()
        with self._lock:
            self._maps.pop(pid, None)  # re-inserted last: the dict's order is least recently used first
            self._maps[pid] = _FdMap(start_time, fds)
            self._prune(keep=pid)
        return frozenset(address for _, address in fds.values() if address is not None)

    @staticmethod
    def _read(fd_dir: int, name: str, live: LiveSockets) -> _FdEntry | None:
        """What fd ``name`` holds now: its socket inode, and its peer if a live connection; None if closed."""
        try:
            inode = _socket_inode(os.readlink(name, dir_fd=fd_dir))
        except OSError:
            return None
        return inode, live.peer(inode) if inode in live else None

    def cached_pids(self) -> list[int]:
        with self._lock:
            return list(self._maps)

    def _forget(self, pid: int) -> None:
        with self._lock:
            self._maps.pop(pid, None)

    def _prune(self, keep: int) -> None:
        """Drops the maps of processes that exited, then the least recently used past ``max_processes``.
        Called with the lock held."""
        for pid in [pid for pid in self._maps if pid != keep and not os.path.exists(f"/proc/{pid}")]:
            del self._maps[pid]
        excess = len(self._maps) - self.max_processes
        for pid in [pid for pid in self._maps if pid != keep][: max(0, excess)]:
            del self._maps[pid]


_SNAPSHOTS = SocketSnapshots()


def worker_peers(pid: int, listen_port: int) -> frozenset[Address]:
    """Client addresses of the connections a worker holds on ``listen_port`` (one cache for the process)."""
    return _SNAPSHOTS.worker_peers(pid, listen_port)
