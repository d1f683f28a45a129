"""The controller's feed (chaos/run/feed.py): a cursor over bounded events, a page checked field by field
before anything in it is believed, and the token in front of it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chaos.detect.server import DetectedError
from chaos.errors import UsageError
from chaos.run.feed import Feed, FeedFormatError, FeedSignal, check_exposure, controller_url, guarded, parse_page
from chaos.run.signals import measure_exposure
from tests.helpers import signal_record


def _page(feed: Feed, after: int, limit: int = 100) -> dict[str, Any]:
    travelled: dict[str, Any] = json.loads(json.dumps(feed.page(after, limit)))  # as it travels
    return travelled


def test_a_reader_pages_through_the_events_with_its_cursor_and_learns_what_it_lost():
    feed = Feed(max_events=3)
    for number in range(5):
        feed.append("server_error", signature=f"sig_{number}", example="", reference=None, pid=None)
    page = _page(feed, 0, limit=2)
    assert [event["seq"] for event in page["events"]] == [3, 4]  # 1 and 2 are gone: the feed holds 3
    assert page["first"] == 3 and page["next"] == 4 and page["head"] == 5
    assert [event["seq"] for event in _page(feed, 4)["events"]] == [5]
    idle = _page(feed, 5)
    assert idle["events"] == [] and idle["next"] == 5  # nothing new: the cursor stays
    assert _page(feed, 99)["next"] == 5  # a cursor from the future comes back to the head


def test_a_signal_travels_with_its_workers_peers_and_probe_counts():
    feed = Feed()
    record = signal_record(7, pending=0)
    feed.signal(record, {41: (frozenset({("127.0.0.2", 5000), ("127.0.0.2", 5001)}), {"hold-accept": 2})})
    feed.server_error(DetectedError("server", "uvicorn_596_wsproto_close_during_handshake", "text", None, 41))
    page = parse_page(_page(feed, 0))
    signal, error = page.events
    assert isinstance(signal, FeedSignal) and signal.record.id == 7 and signal.record.signal == "TERM"
    (worker,) = signal.workers
    assert worker.pid == 41 and worker.peers == {("127.0.0.2", 5000), ("127.0.0.2", 5001)}
    assert worker.in_state == {"hold-accept": 2}
    assert isinstance(error, DetectedError) and error.pid == 41


def _with_event(event: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "controller": {}, "now": 0, "first": 1, "next": 1, "head": 1, "events": [event]}


_SIGNAL: dict[str, Any] = {
    "kind": "signal",
    "record": {
        "id": 1,
        "time": 1.0,
        "worker_pid": 2,
        "role": "worker",
        "signal": "TERM",
        "dry_run": False,
        "mode": "worker-term",
        "master_pid": 1,
    },
    "workers": [{"pid": 2, "peers": [["127.0.0.1", 1]], "in_state": {}}],
}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "not a JSON object"),
        ({"format": 2}, "feed format 2"),
        ({"format": 1, "controller": "x"}, "no controller header"),
        ({"format": 1, "controller": {}, "events": {}}, "no event list"),
        (_with_event({"kind": "server_error", "signature": "Robert'); DROP TABLE"}), "server_error event is malformed"),
        (_with_event({"kind": "server_error", "signature": "a" * 200}), "server_error event is malformed"),
        (_with_event({**_SIGNAL, "record": {**_SIGNAL["record"], "mode": "worker-kill"}}), "signal event"),
        (_with_event({**_SIGNAL, "record": {**_SIGNAL["record"], "signal": "KILLALL"}}), "signal event"),
        (_with_event({**_SIGNAL, "workers": [{"pid": 2, "peers": [["127.0.0.1"]]}]}), "signal event"),
        (_with_event({"kind": "settled", "id": "seven", "exits": {}}), "settled event"),
        ({**_with_event(_SIGNAL), "next": None}, "cursor is malformed"),
    ],
)
def test_a_malformed_or_hostile_page_is_refused_with_what_is_wrong(data, says):
    with pytest.raises(FeedFormatError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_page(data)


def test_an_event_of_a_newer_controller_is_left_alone():
    assert parse_page(_with_event({"kind": "something_new", "x": 1})).events == ()


def _call(app: Any, path: str, authorization: str | None = None) -> tuple[str, bytes]:
    environ = {"PATH_INFO": path, "QUERY_STRING": "after=0"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers: status.append(code)))
    return status[0], body


def test_the_token_guards_the_feed_and_the_metrics_and_only_the_exact_bearer_passes():
    def metrics(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"metrics"]

    app = guarded(metrics, Feed(), "s3cret")
    assert _call(app, "/feed")[0].startswith("401")
    assert _call(app, "/metrics", "Bearer wrong")[0].startswith("401")
    assert _call(app, "/metrics", "s3cret")[0].startswith("401")
    assert _call(app, "/metrics", "Bearer s3cret") == ("200 OK", b"metrics")
    status, body = _call(app, "/feed", "Bearer s3cret")
    assert status == "200 OK" and json.loads(body)["format"] == 1
    assert _call(guarded(metrics, None, None), "/feed")[0].startswith("404")
    bad = {"PATH_INFO": "/feed", "QUERY_STRING": "after=%27;--", "HTTP_AUTHORIZATION": "Bearer s3cret"}
    said: list[str] = []
    assert b"integers" in b"".join(app(bad, lambda code, headers: said.append(code)))
    assert said == ["400 Bad Request"]


def test_beyond_loopback_a_controller_needs_the_token(two_hosts):
    beyond = two_hosts[0].address  # another host's address: inside a namespace this test made
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure(beyond, "s3cret")
    with pytest.raises(UsageError, match="beyond loopback: set the shared token"):
        check_exposure(beyond, None)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:9646", "http:// or https:// URL"),
        ("ftp://127.0.0.1/", "http:// or https:// URL"),
        ("http://user:pw@127.0.0.1:9646", "must not carry credentials"),
        ("http://127.0.0.1:9646/feed?token=abc", "must not carry credentials"),
    ],
)
def test_a_controller_url_is_checked_and_never_carries_the_token(url, says):
    with pytest.raises(UsageError, match=says):
        controller_url(url)


def test_a_controller_url_may_name_its_feed_or_metrics():
    assert controller_url("http://127.0.0.1:9646/feed") == "http://127.0.0.1:9646"
    assert controller_url("http://127.0.0.1:9646/metrics/") == "http://127.0.0.1:9646"


@pytest.mark.parametrize(
    ("sockets", "worker", "source", "pending"),
    [(3, None, "sockets", 3), (3, 4, "both", 3), (0, 4, "worker", 4), (0, None, "none", 0), (0, 0, "none", 0)],
)
def test_exposure_is_measured_by_sockets_and_where_they_find_nothing_by_the_worker(sockets, worker, source, pending):
    record = signal_record(1, pending=sockets)
    record.pending_by_scenario = {"hold-accept": sockets} if sockets else {}
    record.worker_pending = worker
    record.worker_pending_by_scenario = {"hold-accept": worker} if worker else {}
    measure_exposure(record)
    assert record.exposure_measured_by == source and record.pending == pending
    assert record.pending_by_scenario == ({"hold-accept": pending} if pending else {})
