"""How many handshakes a worker holds pending: its exposure at the moment of a TERM.

The client side knows which of its connections are mid-handshake (request sent, no
response yet) by their local address; the kernel knows which worker owns the server
end of each connection. Their intersection is exact for any app, not just the probe,
as long as the clients and the deployment share this host.
"""

from __future__ import annotations

import psutil

Address = tuple[str, int]


class PendingRegistry:
    """Local addresses of this process's client connections whose handshake is in flight."""

    def __init__(self) -> None:
        self._pending: set[Address] = set()

    def add(self, address: Address) -> None:
        self._pending.add(address)

    def discard(self, address: Address) -> None:
        self._pending.discard(address)

    def __contains__(self, address: object) -> bool:
        return address in self._pending

    def __len__(self) -> int:
        return len(self._pending)


class SocketExposure:
    """Counts a worker's inbound connections on ``listen_port`` whose client is pending."""

    def __init__(self, registry: PendingRegistry, listen_port: int) -> None:
        self.registry = registry
        self.listen_port = listen_port

    def __call__(self, pid: int) -> int:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return 0
        return sum(
            1
            for conn in connections
            if conn.status == psutil.CONN_ESTABLISHED
            and conn.laddr
            and conn.laddr.port == self.listen_port
            and conn.raddr
            and (conn.raddr.ip, conn.raddr.port) in self.registry
        )
