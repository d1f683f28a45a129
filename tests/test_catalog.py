"""The catalogue of known failures: what it matches, and which release fixed each failure per ws implementation."""

from __future__ import annotations

import pytest

from chaos import catalog
from chaos.results import WS_IMPLEMENTATIONS


def _wsproto_errors() -> dict[str, str]:
    """The texts the installed wsproto (1.x) raises when uvicorn sends in the wrong state, made by wsproto itself."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, RejectData, Request
    from wsproto.utilities import LocalProtocolError

    def server_with_pending_handshake() -> WSConnection:
        client = WSConnection(ConnectionType.CLIENT)
        server = WSConnection(ConnectionType.SERVER)
        server.receive_data(client.send(Request(host="localhost", target="/ws")))
        list(server.events())
        return server

    texts = {}
    attempts = {
        "close_during_handshake": lambda s: s.send(CloseConnection(code=1012)),
        "reject_after_reject": lambda s: (s.send(RejectConnection(status_code=500)), s.send(RejectConnection())),
        "reject_data_before_reject": lambda s: s.send(RejectData(data=b"x")),
        "close_after_close": lambda s: (
            s.send(AcceptConnection()),
            s.send(CloseConnection(code=1012)),
            s.send(CloseConnection(code=1012)),
        ),
    }
    for name, attempt in attempts.items():
        with pytest.raises(LocalProtocolError) as raised:
            attempt(server_with_pending_handshake())
        texts[name] = f"wsproto.utilities.LocalProtocolError: {raised.value}"
    return texts


def test_the_catalog_knows_what_wsproto_1x_raises():
    texts = _wsproto_errors()
    expected = {
        "close_during_handshake": "uvicorn_596_wsproto_close_during_handshake",
        "reject_after_reject": "uvicorn_811_wsproto_rejection_in_wrong_state",
        "reject_data_before_reject": "uvicorn_811_wsproto_rejection_in_wrong_state",
        "close_after_close": "wsproto_event_in_wrong_state",
    }
    for name, signature in expected.items():
        found = catalog.match(texts[name])
        assert found is not None and found[0].signature == signature, (name, texts[name])


def test_fixes_are_per_ws_implementation_and_a_fixed_failure_back_is_a_regression():
    regression = catalog.regression_of
    assert regression("uvicorn_596_wsproto_close_during_handshake", "wsproto", "0.19.0") is None
    assert regression("uvicorn_596_wsproto_close_during_handshake", "wsproto", "0.20.0") == "0.20.0"
    assert regression("uvicorn_596_wsproto_close_during_handshake", "wsproto", "0.55.0rc1") == "0.20.0"
    assert regression("uvicorn_596_wsproto_close_during_handshake", "websockets", "0.54.0") is None
    late_accept = "uvicorn_accept_after_shutdown_rejection"
    assert regression(late_accept, "wsproto", "0.52.0") is None
    assert regression(late_accept, "websockets-sansio", "0.52.1") == "0.52.1"
    assert regression(late_accept, "websockets", "0.54.0") is None  # still present with the legacy one
    assert regression(late_accept, "auto", "0.54.0") is None  # unknown which one ran: never claimed
    assert regression("shutdown_exception_value_error", "wsproto", "0.54.0") is None
    assert regression("uvicorn_596_wsproto_close_during_handshake", "wsproto", "not-a-version") is None
    for entry in catalog.CATALOG:
        assert set(entry.fixed_in) <= set(WS_IMPLEMENTATIONS), entry.signature
        assert entry.reference.startswith("https://"), entry.signature


_CLOSE_TEXT = (
    "wsproto.utilities.LocalProtocolError: Event CloseConnection(code=1012, reason=None) cannot be sent during "
    "the handshake"
)


@pytest.mark.parametrize(
    ("scenario", "uvicorn", "from_index", "named"),
    [
        # The state it was found in names the path.
        ("hold-accept", "0.54.0", True, "uvicorn_596_wsproto_close_during_handshake"),
        ("deny-stream", "0.19.0", True, "uvicorn_wsproto_close_during_denial_response"),
        # Several states at once: a published release whose code has exactly one of the paths open.
        (None, "0.19.0", True, "uvicorn_596_wsproto_close_during_handshake"),
        (None, "0.54.0", True, "uvicorn_wsproto_close_during_denial_response"),
        # A rejection still closing: in 0.19.0 every state took #596's path; 0.20.0..0.52.0 its own; fixed 0.52.1.
        ("deny-close", "0.19.0", True, "uvicorn_596_wsproto_close_during_handshake"),
        ("deny-close", "0.30.6", True, "uvicorn_wsproto_close_after_rejection"),
        ("deny-close", "0.54.0", True, "wsproto_close_during_handshake"),
        (None, "0.30.6", True, "wsproto_close_during_handshake"),  # the rejection and the denial both open
        # A state no path starts in (the error came from another connection of the worker's): the release says.
        ("slow-request", "0.19.0", True, "uvicorn_596_wsproto_close_during_handshake"),
        ("accept-send", "0.55.0", True, "wsproto_close_during_handshake"),
        (None, "0.22.0", True, "uvicorn_wsproto_close_after_rejection"),  # the only path 0.22.0 has open
        # No path open in that release, or a source tree whose code is not the release's: no claim.
        (None, "0.55.0", True, "wsproto_close_during_handshake"),
        (None, "0.54.0", False, "wsproto_close_during_handshake"),
    ],
)
def test_596s_text_is_named_by_the_path_it_took_never_by_its_text_alone(scenario, uvicorn, from_index, named):
    known, _line = catalog.match(_CLOSE_TEXT) or (None, "")
    assert known is not None
    assert catalog.name_the_path(known, scenario, "wsproto", uvicorn, from_index).signature == named


def test_the_denial_response_crash_is_no_regression_of_596_and_its_own_fix_is_0_55_0():
    """The false claim this tool once made: "regression of #596" for the denial path on 0.54.0."""
    assert catalog.regression_of("uvicorn_wsproto_close_during_denial_response", "wsproto", "0.54.0") is None
    assert catalog.regression_of("uvicorn_wsproto_close_during_denial_response", "wsproto", "0.55.0") == "0.55.0"
    assert catalog.regression_of("wsproto_close_during_handshake", "wsproto", "0.55.0") is None
