"""The controller's feed: what a controller on a deployment's host did and found, for load on other hosts.

``handshake-chaos controller`` appends an event for each signal it sends (with each reached worker's
client addresses and the states its probe held), for each signal the deployment recovered from (with
how each worker exited), and for each server-side error its log showed. It serves them beside its
``/metrics`` at ``/feed?after=N``: a cursor, not a stream, so a reader that is slow or restarts
misses nothing the controller still holds. Locust (``--chaos-controller URL``) reads every feed and
folds it into its own run (``chaos.run.remote``).

Beyond loopback the endpoint requires the shared token (``Authorization: Bearer``), compared in
constant time; a URL never carries it, so it never lands in a log.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from chaos.detect.server import DetectedError
from chaos.errors import UsageError
from chaos.results import MODES, Address, SignalRecord
from chaos.run.controller import MODE_SPECS, WORKER_SIGNALS

FEED_PATH = "/feed"
FEED_FORMAT = 1  # what a reader checks: the events' shape, not the tool's version
# A controller keeps this many events; a reader whose cursor fell further behind is told how many it lost.
MAX_EVENTS = 200_000
PAGE_EVENTS = 2_000

_SIGNATURE = re.compile(r"[a-z][a-z0-9_]{0,79}")
# Every signal a controller can send: what each mode sends (and restores with), and the worker signals.
_SIGNAL_NAMES = tuple(
    sorted(
        {spec.signal for spec in MODE_SPECS.values()}
        | {spec.restore for spec in MODE_SPECS.values() if spec.restore}
        | set(WORKER_SIGNALS)
    )
)

_SECRET_QUERY = ("token", "access_token", "auth", "key", "password")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Feed:
    """Append-only events with sequence numbers (from 1); thread-safe, bounded."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        # What the controller says of itself on every page, read then (the session sets it).
        self.header: Callable[[], Mapping[str, Any]] = dict
        self._max = max_events
        self._events: list[dict[str, Any]] = []
        self._next = 1
        self._lock = threading.Lock()

    def append(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._events.append({"seq": self._next, "kind": kind, **data})
            self._next += 1
            if len(self._events) > self._max:
                del self._events[: len(self._events) - self._max]

    def page(self, after: int, limit: int = PAGE_EVENTS) -> dict[str, Any]:
        with self._lock:
            first = self._events[0]["seq"] if self._events else self._next
            start = max(0, after + 1 - first)
            events = self._events[start : start + limit]
            last = events[-1]["seq"] if events else max(min(after, self._next - 1), first - 1)
            head = self._next - 1
        return {
            "format": FEED_FORMAT,
            "controller": dict(self.header()),
            "now": time.time(),  # the reader estimates the clocks' offset from it
            "first": first,  # the oldest event still held: a cursor before it lost events
            "events": events,
            "next": last,  # the cursor to ask with next time
            "head": head,  # the newest event: a reader that starts here skips what came before it
        }

    # -- what the controller appends --------------------------------------------------

    def signal(self, record: SignalRecord, workers: Mapping[int, tuple[frozenset[Address], Mapping[str, int]]]) -> None:
        """A signal as it was sent: each reached worker's client addresses, and the states its probe held."""
        self.append(
            "signal",
            record=_record_fields(record),
            workers=[
                {"pid": pid, "peers": [list(peer) for peer in sorted(peers)], "in_state": dict(in_state)}
                for pid, (peers, in_state) in workers.items()
            ],
        )

    def settled(self, record: SignalRecord) -> None:
        """The deployment recovered from a signal; how each worker it reached exited."""
        self.append(
            "settled",
            id=record.id,
            exits={str(reach.pid): reach.exit_kind for reach in record.reach},
            worker_exit_seconds=record.worker_exit_seconds,
            replacement_seconds=record.replacement_seconds,
        )

    def server_error(self, error: DetectedError) -> None:
        """One server-side error as the log showed it (the reader decides its scenario: it knows the load)."""
        self.append(
            "server_error",
            signature=error.signature,
            example=error.example,
            reference=error.reference,
            pid=error.pid,
        )


def _record_fields(record: SignalRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "time": record.time,
        "worker_pid": record.worker_pid,
        "role": record.role,
        "signal": record.signal,
        "dry_run": record.dry_run,
        "mode": record.mode,
        "master_pid": record.master_pid,
    }


def controller_url(text: str) -> str:
    """The controller's base URL, checked: http(s), a host, no credentials in it (a URL gets logged)."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--chaos-controller must be an http:// or https:// URL with a host, got {text!r}")
    if parts.username or parts.password or any(f"{name}=" in parts.query.lower() for name in _SECRET_QUERY):
        raise UsageError("--chaos-controller: a URL must not carry credentials; set HANDSHAKE_CHAOS_TOKEN instead")
    path = parts.path.rstrip("/").removesuffix(FEED_PATH).removesuffix("/metrics")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_exposure(host: str, token: str | None) -> None:
    """A controller listening beyond loopback only with the shared token."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"--metrics-host {host} is beyond loopback: set the shared token (HANDSHAKE_CHAOS_TOKEN or --chaos-token)"
        )


def authorized(environ: Mapping[str, Any], token: str | None) -> bool:
    if not token:
        return True
    given = str(environ.get("HTTP_AUTHORIZATION", ""))
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def guarded(app: WsgiApp, feed: Feed | None, token: str | None) -> WsgiApp:
    """``app`` (the metrics) with ``/feed`` beside it, both behind the token when there is one."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not authorized(environ, token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"the shared token is required (Authorization: Bearer ...)\n"]
        if environ.get("PATH_INFO") == FEED_PATH:
            if feed is None:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"no feed here: only handshake-chaos controller serves one\n"]
            return _serve_feed(feed, environ, start_response)
        return app(environ, start_response)

    return serve


def _serve_feed(feed: Feed, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    try:
        after = int(query.get("after", ["0"])[0])
        limit = min(PAGE_EVENTS, max(1, int(query.get("limit", [str(PAGE_EVENTS)])[0])))
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"after and limit are integers\n"]
    body = json.dumps(feed.page(after, limit)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@dataclass(frozen=True)
class FeedWorker:
    """One worker a signal reached, as the controller saw it."""

    pid: int
    peers: frozenset[Address]
    in_state: dict[str, int]


@dataclass(frozen=True)
class FeedSignal:
    record: SignalRecord
    workers: tuple[FeedWorker, ...]


@dataclass(frozen=True)
class FeedSettled:
    id: int
    exits: dict[int, str | None]
    worker_exit_seconds: float | None
    replacement_seconds: float | None


@dataclass(frozen=True)
class FeedPage:
    """One page of a feed, checked field by field: a reader never trusts what arrives."""

    controller: dict[str, Any]
    now: float
    first: int
    next: int
    head: int
    events: tuple[FeedSignal | FeedSettled | DetectedError, ...]


class FeedFormatError(ValueError):
    """What arrived is not a feed page this reader understands."""


def parse_page(data: Any) -> FeedPage:
    """A page from its JSON, or ``FeedFormatError`` naming the first thing wrong with it."""
    if not isinstance(data, dict):
        raise FeedFormatError("not a JSON object")
    if data.get("format") != FEED_FORMAT:
        raise FeedFormatError(f"feed format {data.get('format')!r}, this reader reads {FEED_FORMAT}")
    controller = data.get("controller")
    if not isinstance(controller, dict):
        raise FeedFormatError("no controller header")
    events: list[FeedSignal | FeedSettled | DetectedError] = []
    raw_events = data.get("events")
    if not isinstance(raw_events, list):
        raise FeedFormatError("no event list")
    for raw in raw_events:
        if not isinstance(raw, dict):
            raise FeedFormatError("an event is not an object")
        kind = raw.get("kind")
        try:
            if kind == "signal":
                events.append(_parse_signal(raw))
            elif kind == "settled":
                events.append(
                    FeedSettled(
                        int(raw["id"]),
                        {int(pid): (None if kind is None else str(kind)) for pid, kind in dict(raw["exits"]).items()},
                        _optional_float(raw.get("worker_exit_seconds")),
                        _optional_float(raw.get("replacement_seconds")),
                    )
                )
            elif kind == "server_error":
                pid = raw.get("pid")
                reference = raw.get("reference")
                events.append(
                    DetectedError(
                        "server",
                        _signature(raw["signature"]),
                        _bounded_text(raw.get("example", ""), 2000),
                        None if reference is None else _bounded_text(reference, 500),
                        None if pid is None else int(pid),
                    )
                )
            # Other kinds: a newer controller's; this reader leaves them.
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedFormatError(f"a {kind} event is malformed ({exc.__class__.__name__}: {exc})") from None
    try:
        return FeedPage(
            controller, float(data["now"]), int(data["first"]), int(data["next"]), int(data["head"]), tuple(events)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FeedFormatError(f"the page's cursor is malformed ({exc})") from None


def _parse_signal(raw: Mapping[str, Any]) -> FeedSignal:
    fields = dict(raw["record"])
    record = SignalRecord(
        id=int(fields["id"]),
        time=float(fields["time"]),
        worker_pid=int(fields["worker_pid"]),
        role=_choice(fields["role"], ("worker", "master")),  # type: ignore[arg-type]
        signal=_choice(fields["signal"], _SIGNAL_NAMES),
        pending=0,
        dry_run=bool(fields["dry_run"]),
        mode=_choice(fields["mode"], MODES),  # type: ignore[arg-type]
        master_pid=None if fields.get("master_pid") is None else int(fields["master_pid"]),
    )
    workers = tuple(
        FeedWorker(
            int(worker["pid"]),
            frozenset((str(host), int(port)) for host, port in worker["peers"]),
            {str(name): int(count) for name, count in dict(worker.get("in_state") or {}).items() if int(count) > 0},
        )
        for worker in raw["workers"]
    )
    return FeedSignal(record, workers)


def _signature(value: Any) -> str:
    """A signature becomes a metric label: only the snake_case names the detector makes, bounded."""
    if not isinstance(value, str) or not _SIGNATURE.fullmatch(value):
        raise ValueError(f"{str(value)[:40]!r} is not a signature")
    return value


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _bounded_text(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value[:limit]


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
