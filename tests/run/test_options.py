"""The options model: one declaration per option, the same conversion from every door."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

import configargparse
import pytest

from chaos.commands.cli import build_parser
from chaos.commands.matrix import MatrixSettings
from chaos.commands.soak import SoakSettings
from chaos.errors import UsageError
from chaos.load.client import LoadProfile, draw_hold, handshake_url
from chaos.optionmodel import add_to_locust, build, changed_args, declared, declared_on, with_test_scope
from chaos.run.options import ChaosOptions


def _form(**overrides: str) -> dict[str, object]:
    """What Locust's web UI posts: every option as text, blanks as ""."""
    values: dict[str, object] = {}
    for item in declared_on(ChaosOptions, "locust"):
        values[item.name] = False if item.base is bool else item.text(item.default)
    values.update(overrides)
    return values


def test_the_web_form_with_every_field_posted_builds_the_defaults():
    blanks = {item.name: "" for item in declared_on(ChaosOptions, "locust") if item.base is not bool}
    assert build(ChaosOptions, _form(**blanks), "locust") == ChaosOptions()
    assert build(ChaosOptions, _form(), "locust") == ChaosOptions()


def test_form_text_becomes_typed_values():
    options = build(ChaosOptions, _form(term_interval="0.5", max_signals="2", dry_run="true"), "locust")
    assert options.term_interval == 0.5 and options.max_signals == 2 and options.dry_run is True
    assert isinstance(options.max_signals, int)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("term_interval", "fast", "--term-interval: expected a number"),
        ("max_signals", "2.5", "--max-signals: expected a whole number"),
        ("hold_seconds", "61", "--hold-seconds: must be at most 60"),
        ("hold_seconds", "nan", "--hold-seconds: expected a finite number"),
        ("min_alive", "-1", "--min-alive: must be at least 0"),
        ("connect_timeout", "0", "--connect-timeout: must be above 0"),
        ("metrics_port", "70000", "--metrics-port: must be at most 65535"),
        ("ws", "tornado", "--ws: unknown implementation 'tornado' (uvicorn's ws implementations are"),
        ("dry_run", "maybe", "--dry-run: expected true or false"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_flag(field, value, message):
    with pytest.raises(UsageError) as caught:
        build(ChaosOptions, _form(**{field: value}), "locust")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_only_test_scope_options_change_at_test_start():
    current = build(ChaosOptions, _form(ws="wsproto", workers="3"), "locust")
    edited = with_test_scope(current, _form(ws="websockets", workers="5", term_interval="7", hold_seconds="1"))
    assert (edited.term_interval, edited.hold_seconds) == (7.0, 1.0)
    assert (edited.ws, edited.workers) == ("wsproto", 3)  # the deployment is already running


def test_the_locust_form_offers_exactly_the_test_scope_options():
    parser = configargparse.ArgumentParser()
    add_to_locust(parser, ChaosOptions)
    in_form = {action.dest for action in parser._actions if getattr(action, "include_in_web_ui", False)}
    test_scope = {item.name for item in declared(ChaosOptions) if item.meta.scope == "test"}
    assert in_form == test_scope & {item.name for item in declared_on(ChaosOptions, "locust")}
    assert {"term_interval", "max_signals", "hold_seconds"} <= in_form
    assert not {"ws", "workers", "target_python", "app", "metrics_port", "target_pidfile"} & in_form


def test_every_run_option_exists_on_soak_and_matrix_with_the_same_default():
    parser = build_parser()
    for entry in ("soak", "matrix"):
        values = vars(parser.parse_args([entry, "--uvicorn", "0.19.0"]))
        soak_options = build(ChaosOptions, values, entry)
        for item in declared_on(ChaosOptions, "locust"):
            if entry in item.meta.entry_points:
                assert getattr(soak_options, item.name) == item.default_for(entry), (entry, item.name)
    # The two defaults that differ by entry point, as docs/usage.md says.
    assert [item.name for item in declared(ChaosOptions) if item.meta.defaults] == ["ws", "until_verdict"]
    matrix_values = vars(parser.parse_args(["matrix", "--uvicorn", "0.19.0", "--no-until-verdict"]))
    assert build(ChaosOptions, matrix_values, "matrix").until_verdict is False
    run_options = {item.name for item in declared_on(ChaosOptions, "matrix")}
    for name in ("min_alive", "graceful_timeout", "max_signals", "hold_jitter", "term_interval", "allow"):
        assert name in run_options
    assert "processes" in {item.name for item in declared_on(SoakSettings, "soak")}


def test_forwarding_to_locust_round_trips():
    options = ChaosOptions(term_interval=0.5, max_signals=3, dry_run=True, ws="wsproto", allow="a=1", hold_jitter=0)
    parser = configargparse.ArgumentParser()
    add_to_locust(parser, ChaosOptions)
    forwarded = build(ChaosOptions, vars(parser.parse_args(changed_args(options, "locust"))), "locust")
    assert forwarded == options
    assert changed_args(ChaosOptions(), "locust") == []


def test_env_vars_feed_the_commands(monkeypatch):
    monkeypatch.setenv("HANDSHAKE_CHAOS_TERM_INTERVAL", "9")
    values = vars(build_parser().parse_args(["soak"]))
    assert build(ChaosOptions, values, "soak").term_interval == 9.0


def test_durations_use_locusts_parser():
    settings = build(SoakSettings, {"duration": "1h30m"}, "soak")
    assert settings.duration == 5400
    with pytest.raises(UsageError, match="--duration: bad duration '1500ms'"):
        build(SoakSettings, {"duration": "1500ms"}, "soak")


def test_matrix_axes_are_required_and_checked():
    with pytest.raises(UsageError, match="--uvicorn is required"):
        build(MatrixSettings, {}, "matrix")
    with pytest.raises(UsageError, match="--ws: unknown implementation 'tornado'"):
        build(MatrixSettings, {"releases": ["0.19.0"], "ws": ["wsproto", "tornado"]}, "matrix")


def test_handshake_url_holds_within_the_jitter_and_keeps_the_server_longer():
    profile = LoadProfile(hold_seconds=2.0, hold_jitter=0.5, keep_open_seconds=1.0, ws_path="/ws/probe")
    rng = random.Random(7)
    holds = []
    for base in ("http://127.0.0.1:8000", "ws://127.0.0.1:8000", "https://[::1]:8443"):
        url = urlsplit(handshake_url(base, profile, draw_hold(profile, rng)))
        query = parse_qs(url.query)
        holds.append(float(query["hold"][0]))
        assert url.path == "/ws/probe" and float(query["keep"][0]) == 6.0
    assert urlsplit(handshake_url("https://[::1]:8443", profile, 2.0)).scheme == "wss"
    assert all(1.0 <= hold <= 3.0 for hold in holds) and len(set(holds)) == 3
    still = LoadProfile(hold_seconds=2.0, hold_jitter=0.0)
    assert "hold=2.000" in handshake_url("ws://127.0.0.1:1", still, draw_hold(still, rng))
    # Each scenario is asked for by name; the probe's default (hold-accept) is not spelled out.
    assert "scenario" not in url.query
    sending = handshake_url("ws://127.0.0.1:1", LoadProfile(frame_bytes=4096), 1.0, "accept-send")
    assert parse_qs(urlsplit(sending).query) == {
        "hold": ["1.000"],
        "keep": ["6"],
        "scenario": ["accept-send"],
        "frame": ["4096"],
    }
    assert profile.response_timeout == 2.0 * 1.5 + 30.0


@pytest.mark.parametrize(
    ("options", "host", "message"),
    [
        (ChaosOptions(target_pid=10, target_pidfile="/x"), "ws://127.0.0.1:1", "one of them, not both"),
        (ChaosOptions(target_pid=10), None, "needs --host"),
        (ChaosOptions(), "ftp://127.0.0.1", "--host must be"),
        (ChaosOptions(ws_path="ws"), None, "--ws-path must start"),
        (ChaosOptions(app="nocolon"), None, "module:attribute"),
        (ChaosOptions(allow="x"), None, "--allow takes"),
        (ChaosOptions(workers=2, min_alive=2), None, "min-alive"),
    ],
)
def test_cross_option_validation(options, host, message):
    with pytest.raises(UsageError, match=message):
        options.validate(host)


def test_options_built_in_code_are_held_to_the_same_declarations():
    with pytest.raises(UsageError, match="--hold-seconds: must be at most 60"):
        ChaosOptions(hold_seconds=100).validate(None)
    with pytest.raises(UsageError, match="--ws: unknown implementation 'tornado'"):
        ChaosOptions(ws="tornado").validate("ws://127.0.0.1:1")
