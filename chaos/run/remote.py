"""Locust's side of a controller on another host: its feed read with a cursor and folded into this run.

Each ``--chaos-controller URL`` is read by a ``FeedReader``: ``GET URL/feed?after=CURSOR`` with the
shared token in the ``Authorization`` header. ``RemoteControllers`` folds every page into the run's
``SignalBook`` as if the signals had been sent from here: each signal's reached workers and their
client addresses go to this run's exposure strategy (the local ledger, or in Locust's distributed
mode the broadcast to its workers), the probe's own counts come with them, recoveries settle the
records, and server-side errors are counted under the scenario this run can tie them to.

A feed that cannot be read or is malformed is said in one line (once per distinct fault) and read
again at the next poll; the run goes on, and the summary says how many pages failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from chaos.detect.server import DetectedError
from chaos.errors import DeploymentError
from chaos.results import MODES, SERVER_FAMILIES, WS_CHOICES, Address, SignalRecord
from chaos.run.feed import (
    FEED_PATH,
    FeedFormatError,
    FeedPage,
    FeedSettled,
    FeedSignal,
    controller_url,
    parse_page,
)
from chaos.run.signals import SignalBook

log = logging.getLogger(__name__)

_TIMEOUT_SECONDS = 5.0
_MAX_PAGE_BYTES = 32 * 1024 * 1024  # a page is at most PAGE_EVENTS events: far less than this


class FeedReader:
    """One controller's feed, read page by page from a cursor."""

    def __init__(self, url: str, token: str | None, timeout: float = _TIMEOUT_SECONDS) -> None:
        self.url = controller_url(url)
        self._token = token
        self._timeout = timeout
        self.cursor = 0
        self.offset = 0.0  # the controller's clock minus this host's, estimated at each page
        self.failures = 0
        self.lost = 0  # events the controller no longer held when this reader asked for them
        self._last_fault: str | None = None

    def fetch(self) -> FeedPage:
        """The next page after the cursor (the cursor moves on only once the page is folded: ``advance``)."""
        request = urllib.request.Request(f"{self.url}{FEED_PATH}?after={self.cursor}")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        sent = time.time()
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # http(s) only: controller_url
                body = response.read(_MAX_PAGE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise FeedUnreadable(f"controller {self.url}: 401, the shared token is missing or wrong") from None
            raise FeedUnreadable(f"controller {self.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FeedUnreadable(f"controller {self.url}: unreachable ({reason})") from None
        received = time.time()
        if len(body) > _MAX_PAGE_BYTES:
            raise FeedUnreadable(f"controller {self.url}: a page larger than {_MAX_PAGE_BYTES} bytes")
        try:
            page = parse_page(json.loads(body))
        except (ValueError, FeedFormatError) as exc:
            raise FeedUnreadable(f"controller {self.url}: not a feed page ({str(exc)[:200]})") from None
        self.offset = page.now - (sent + received) / 2
        return page

    def advance(self, page: FeedPage) -> None:
        if page.first > self.cursor + 1 and self.cursor:
            self.lost += page.first - self.cursor - 1
            log.warning("controller %s: %d events were gone before this run read them", self.url, self.lost)
        self.cursor = page.next

    def fault(self, exc: FeedUnreadable) -> None:
        """One line per distinct fault; the same fault again stays quiet."""
        self.failures += 1
        if str(exc) != self._last_fault:
            log.warning("handshake-chaos: %s; reading it again", exc)
            self._last_fault = str(exc)

    def recovered(self) -> None:
        if self._last_fault is not None:
            log.info("handshake-chaos: controller %s read again", self.url)
            self._last_fault = None


class FeedUnreadable(Exception):
    """One page could not be read or understood (said in one line; the run goes on)."""


class RemoteControllers:
    """Every ``--chaos-controller`` feed folded into one run's ``SignalBook``."""

    def __init__(
        self,
        urls: list[str],
        token: str | None,
        book: SignalBook,
        on_server_error: Callable[[DetectedError, str], None],
    ) -> None:
        self.readers = [FeedReader(url, token) for url in urls]
        self.book = book
        self.on_server_error = on_server_error
        # Per feed: its signal ids, mapped to this run's records.
        self._records: dict[str, dict[int, SignalRecord]] = {reader.url: {} for reader in self.readers}
        self.headers: dict[str, dict[str, Any]] = {}

    def connect(self) -> dict[str, Any]:
        """Reads each controller's header and starts its cursor at its newest event; returns the first's
        header (what is under test). A controller that cannot be read at the start is no run."""
        for reader in self.readers:
            try:
                page = reader.fetch()
            except FeedUnreadable as exc:
                raise DeploymentError(str(exc)) from None
            self.headers[reader.url] = page.controller
            reader.cursor = page.head
        first = self.headers[self.readers[0].url]
        for url, header in self.headers.items():
            if header.get("versions") != first.get("versions"):
                log.warning("handshake-chaos: controller %s runs other versions than %s", url, self.readers[0].url)
        return first

    def skip_to_now(self) -> None:
        """What happened while no test ran is not this test's: the cursors move to each feed's newest event."""
        for reader in self.readers:
            try:
                reader.cursor = reader.fetch().head
            except FeedUnreadable as exc:
                reader.fault(exc)

    def poll(self) -> int:
        """Reads and folds every feed's new events; returns how many were folded."""
        folded = 0
        for reader in self.readers:
            for _ in range(50):  # bounded: a reader far behind catches up over several polls
                try:
                    page = reader.fetch()
                except FeedUnreadable as exc:
                    reader.fault(exc)
                    break
                reader.recovered()
                self.headers[reader.url] = page.controller
                for event in page.events:
                    self._fold(reader, event)
                folded += len(page.events)
                reader.advance(page)
                if page.next >= page.head:
                    break
        return folded

    def running(self) -> bool:
        """Some controller still sends signals (each says so in its header)."""
        return any(bool(header.get("running", True)) for header in self.headers.values())

    def _fold(self, reader: FeedReader, event: FeedSignal | FeedSettled | DetectedError) -> None:
        records = self._records[reader.url]
        if isinstance(event, FeedSignal):
            record = dataclasses.replace(
                event.record,
                id=len(self.book.records) + 1,
                time=event.record.time - reader.offset,  # on this host's clock, as the ledger's handshakes are
                controller=reader.url,
                reach=[],
            )
            records[event.record.id] = record
            self.book.state.records.append(record)
            peers: dict[int, frozenset[Address]] = {worker.pid: worker.peers for worker in event.workers}
            pending = self.book.on_signal(record, peers, {worker.pid: worker.in_state for worker in event.workers})
            if pending is not None:
                record.pending = pending
        elif isinstance(event, FeedSettled):
            settled = records.get(event.id)
            if settled is not None:
                settled.worker_exit_seconds = event.worker_exit_seconds
                settled.replacement_seconds = event.replacement_seconds
                self.book.on_remote_settled(settled, event.exits)
        else:
            self.on_server_error(event, reader.url)


def what_runs_there(header: dict[str, Any], url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """From a controller's header: the versions under test, and the options this run takes from it (ws,
    mode, server, release: the deployment's truth, not this host's defaults). Checked: values become
    metric labels."""
    versions = header.get("versions")
    if not isinstance(versions, dict):
        raise DeploymentError(f"controller {url}: its header names no versions")
    clean = {
        str(name)[:40]: value if isinstance(value, bool | int | float) or value is None else str(value)[:80]
        for name, value in list(versions.items())[:40]
    }
    adopted: dict[str, Any] = {}
    for key, allowed in (("ws", WS_CHOICES), ("mode", MODES), ("server", SERVER_FAMILIES)):
        value = header.get(key)
        if value not in allowed:
            raise DeploymentError(f"controller {url}: its header's {key} {str(value)[:40]!r} is not one of {allowed}")
        adopted[key] = value
    release = header.get("release")
    if isinstance(release, str) and release:
        adopted["release"] = release[:80]
    return clean, adopted
