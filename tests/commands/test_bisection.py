"""The bisection core with fake steps: both directions, skips, retries, no boundary; judging a soak."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from chaos.commands.bisection import (
    Attempt,
    AttemptOutcome,
    Search,
    answer,
    bisect,
    check_signature,
    followed,
    judge,
    next_candidate,
    release_candidates,
    steps_left,
    tolerated,
)
from chaos.errors import UsageError
from chaos.results import ErrorRow, GateResult, SignalsSummary
from chaos.run.gate import EvidencePolicy, GatePolicy
from tests.helpers import SIGNATURE_596, run_summary, signal_record

VERSIONS = [f"0.{minor}.0" for minor in range(19, 31)]  # 12 candidates, oldest first


class Fake:
    """A history whose answer changes at ``boundary`` (the first index with the new state)."""

    def __init__(
        self,
        boundary: int,
        old: AttemptOutcome = "appears",
        new: AttemptOutcome = "gone",
        broken: frozenset[int] = frozenset(),
        flaky: dict[int, int] | None = None,
    ) -> None:
        self.boundary, self.old, self.new, self.broken = boundary, old, new, broken
        self.flaky = dict(flaky or {})  # index -> how many attempts come out inconclusive first
        self.calls: list[tuple[int, int]] = []

    def __call__(self, index: int, number: int) -> Attempt:
        self.calls.append((index, number))
        if index in self.broken:
            return Attempt("error", "error", f"could not build {VERSIONS[index]}")
        if number < self.flaky.get(index, 0):
            return Attempt("inconclusive", "inconclusive", "no signal landed on a worker holding pending handshakes")
        outcome = self.old if index < self.boundary else self.new
        return Attempt(outcome, "fail" if outcome == "appears" else "pass", f"{outcome} at {index}", wall_seconds=2.0)

    @property
    def measured(self) -> list[int]:
        return list(dict.fromkeys(index for index, _ in self.calls))


def _run(fake: Callable[[int, int], Attempt], retries: int = 2, count: int = len(VERSIONS)) -> Search:
    return bisect("release", VERSIONS[:count], fake, retries=retries)


@pytest.mark.parametrize("boundary", range(1, len(VERSIONS)))
def test_a_fix_is_found_wherever_it_is(boundary):
    fake = Fake(boundary)
    search = _run(fake)
    assert search.status == "found" and search.exit_code() == 0
    assert (search.last, search.first) == (VERSIONS[boundary - 1], VERSIONS[boundary])
    assert (search.old_state, search.new_state) == ("appears", "gone")
    assert fake.measured[:2] == [0, len(VERSIONS) - 1]  # the ends first
    assert len(fake.measured) <= 2 + steps_left(len(VERSIONS) - 2)  # a bisection, not a walk
    assert answer(search, SIGNATURE_596) == (
        f"first release where {SIGNATURE_596} is gone: {VERSIONS[boundary]} "
        f"(last where it appears: {VERSIONS[boundary - 1]})"
    )


@pytest.mark.parametrize("boundary", [1, 5, 11])
def test_a_regression_is_found_the_same_way(boundary):
    search = _run(Fake(boundary, old="gone", new="appears"))
    assert search.status == "found" and (search.last, search.first) == (VERSIONS[boundary - 1], VERSIONS[boundary])
    assert answer(search, None) == (
        f"first release where handshake-time errors appear: {VERSIONS[boundary]} "
        f"(last where they are gone: {VERSIONS[boundary - 1]})"
    )


def test_two_adjacent_releases_are_two_steps():
    fake = Fake(1)
    search = _run(fake, count=2)
    assert search.status == "found" and fake.measured == [0, 1]
    assert [step.name for step in search.steps] == ["0.19.0", "0.20.0"]


def test_a_step_that_cannot_be_built_is_skipped_and_the_search_goes_around_it():
    middle = next_candidate(0, len(VERSIONS) - 1, {0, len(VERSIONS) - 1})
    assert middle is not None
    fake = Fake(8, broken=frozenset({middle}))
    search = _run(fake)
    assert search.status == "found" and (search.last, search.first) == (VERSIONS[7], VERSIONS[8])
    [skipped] = [step for step in search.steps if step.outcome == "skipped"]
    assert skipped.index == middle and skipped.skip_kind == "error" and "could not build" in skipped.reason
    assert len(skipped.attempts) == 1  # a build failure is not retried
    assert search.step(VERSIONS[middle]) is skipped


def test_skips_next_to_the_boundary_leave_it_ambiguous_and_name_every_candidate():
    fake = Fake(6, broken=frozenset({5, 6}))
    search = _run(fake)
    assert search.status == "ambiguous" and search.exit_code() == 3
    assert search.last == VERSIONS[4] and search.maybe_first == [VERSIONS[5], VERSIONS[6], VERSIONS[7]]
    assert answer(search, SIGNATURE_596) == (
        f"first release where {SIGNATURE_596} is gone: one of 0.24.0, 0.25.0, 0.26.0 (last where it appears: 0.23.0)"
    )


def test_an_inconclusive_step_is_retried_before_it_counts():
    fake = Fake(3, flaky={0: 2})
    search = _run(fake, retries=2)
    first = search.steps[0]
    assert first.outcome == "appears" and [a.outcome for a in first.attempts] == [
        "inconclusive",
        "inconclusive",
        "appears",
    ]
    assert fake.calls[:3] == [(0, 0), (0, 1), (0, 2)]
    assert first.wall_seconds == 2.0
    assert search.status == "found" and search.first == VERSIONS[3]


def test_a_step_still_inconclusive_after_its_retries_is_skipped():
    fake = Fake(3, flaky={3: 99})
    search = _run(fake, retries=1)
    step = search.step(VERSIONS[3])
    assert step is not None and step.outcome == "skipped" and step.skip_kind == "inconclusive"
    assert len(step.attempts) == 2 and step.reason.startswith("inconclusive after 2 tries")
    assert search.status == "ambiguous" and search.maybe_first == [VERSIONS[3], VERSIONS[4]]


def test_both_ends_alike_is_no_boundary():
    fake = Fake(len(VERSIONS))  # every release shows it
    search = _run(fake)
    assert search.status == "no_boundary" and search.exit_code() == 3 and fake.measured == [0, len(VERSIONS) - 1]
    assert answer(search, SIGNATURE_596) == f"no boundary: {SIGNATURE_596} appears at both ends (0.19.0 and 0.30.0)"


def test_an_end_that_cannot_be_built_ends_the_search_with_exit_4():
    search = _run(Fake(3, broken=frozenset({0})))
    assert search.status == "unmeasured" and search.exit_code() == 4 and len(search.steps) == 1
    assert answer(search, None).startswith("no answer: oldest end 0.19.0 skipped: could not build")
    inconclusive = _run(Fake(3, flaky={len(VERSIONS) - 1: 99}), retries=0)
    assert inconclusive.status == "unmeasured" and inconclusive.exit_code() == 3


def test_an_interruption_stops_the_search_at_once():
    def measure(index: int, number: int) -> Attempt:
        return Attempt("interrupted" if index == 5 else "appears" if index < 8 else "gone", "x", "")

    search = _run(measure)
    assert search.status == "interrupted" and [s.index for s in search.steps][-1] == 5


def test_progress_is_announced_after_every_step_with_what_is_left():
    seen: list[tuple[str, str, int]] = []
    bisect("release", VERSIONS, Fake(4), announce=lambda step, left: seen.append((step.name, step.outcome, left)))
    assert seen[0] == ("0.19.0", "appears", 11) and seen[1] == ("0.30.0", "gone", 10)
    assert seen[-1][2] == 0 and all(a[2] >= b[2] for a, b in zip(seen, seen[1:], strict=False))


def test_release_candidates_keep_releases_between_the_ends_in_order():
    published = ["0.20.0", "0.19.0", "0.21.0rc1", "0.21.0", "0.24.0.post1", "0.24.0", "0.18.3", "0.25.0", "0.26.0"]
    assert release_candidates(published, ("0.25.0", "0.19.0"), False) == [
        "0.19.0",
        "0.20.0",
        "0.21.0",
        "0.24.0",
        "0.24.0.post1",
        "0.25.0",
    ]
    assert "0.21.0rc1" in release_candidates(published, ("0.19.0", "0.25.0"), True)
    assert release_candidates(published, ("0.21.0rc1", "0.21.0"), False) == ["0.21.0rc1", "0.21.0"]


def _judged(summary_changes: dict[str, object], signature: str | None, source_tree: bool = False) -> tuple[str, str]:
    summary = dataclasses.replace(run_summary(), **summary_changes)  # type: ignore[arg-type]
    names = followed(signature, source_tree) if signature else frozenset()
    return judge(summary, signature, names, EvidencePolicy(signals=2, pending=5))


def test_judging_a_soak_for_any_error_follows_the_gate():
    outcome, evidence = _judged({}, None)
    assert outcome == "appears" and f"{SIGNATURE_596} x9" in evidence and "1/2 signals landed" in evidence
    passed = GateResult("pass", 0, "2 signals landed with pending handshakes, no errors")
    assert _judged({"gate": passed, "errors": []}, None)[0] == "gone"
    assert _judged({"gate": GateResult("inconclusive", 3, "no signal landed")}, None) == (
        "inconclusive",
        "no signal landed",
    )
    assert _judged({"gate": GateResult("error", 4, "worker failed to boot")}, None) == (
        "error",
        "could not start: worker failed to boot",
    )


def test_judging_a_soak_for_one_signature_looks_past_the_others():
    assert _judged({}, SIGNATURE_596)[0] == "appears"
    other = [ErrorRow("client", "handshake_dropped", 3, "EOF")]
    failed = GateResult("fail", 1, "3 errors", ["handshake_dropped"])
    # Failed on another signature before the signals caught enough: not yet evidence it is gone.
    outcome, evidence = _judged({"gate": failed, "errors": other}, SIGNATURE_596)
    assert outcome == "inconclusive" and "other errors: handshake_dropped x3" in evidence
    strong = [signal_record(n, pending=8, settled=True) for n in (1, 2)]
    outcome, evidence = _judged({"gate": failed, "errors": other, "signals": SignalsSummary.of(strong)}, SIGNATURE_596)
    assert outcome == "gone" and f"no {SIGNATURE_596} in 2 signals" in evidence
    passed = GateResult("pass", 0, "fine")
    assert _judged({"gate": passed, "errors": other}, SIGNATURE_596)[0] == "gone"


def test_in_a_source_tree_the_pathless_name_of_the_same_text_counts():
    generic = [ErrorRow("server", "wsproto_close_during_handshake", 4, "LocalProtocolError")]
    failed = GateResult("fail", 1, "4 errors", ["wsproto_close_during_handshake"])
    denial = "uvicorn_wsproto_close_during_denial_response"
    assert _judged({"gate": failed, "errors": generic}, denial, source_tree=True)[0] == "appears"
    assert _judged({"gate": failed, "errors": generic}, denial, source_tree=False)[0] == "inconclusive"


def test_every_other_known_signature_is_tolerated_but_never_the_followed_one():
    allowances = GatePolicy.parse(tolerated(SIGNATURE_596)).allow
    assert SIGNATURE_596 not in allowances and "wsproto_close_during_handshake" not in allowances
    assert {"uvicorn_accept_after_shutdown_rejection", "handshake_dropped", "worker_crash_during_shutdown"} <= set(
        allowances
    )
    assert "noise_asgi_returned_without_completing_handshake" not in allowances


@pytest.mark.parametrize(
    ("signature", "message"),
    [("no_such_thing", "unknown signature"), ("noise_asgi_returned_without_completing_handshake", "noise")],
)
def test_a_signature_that_is_never_counted_is_bad_usage(signature, message):
    with pytest.raises(UsageError, match=message):
        check_signature(signature)
    check_signature("shutdown_exception_value_error")
    check_signature("handshake_http_500")


def test_a_bisect_result_round_trips_and_validates_against_its_schema(tmp_path):
    import json

    import jsonschema

    from chaos.commands.bisect_report import junit_xml, markdown, terminal
    from chaos.commands.bisection import BisectResult
    from chaos.results import json_schema

    releases = _run(Fake(8, broken=frozenset({5})))
    result = BisectResult(
        signature=SIGNATURE_596,
        good="0.30.0",
        bad="0.19.0",
        ws="wsproto",
        mode="worker-term",
        server="gunicorn-uvicorn",
        scenarios=["hold-accept"],
        app=None,
        retries=2,
        releases=releases,
        answer=answer(releases, SIGNATURE_596),
        exit_code=releases.exit_code(),
    )
    result.write(tmp_path / "bisect.json")
    data = json.loads((tmp_path / "bisect.json").read_text())
    jsonschema.validate(data, json_schema(BisectResult))
    assert BisectResult.read(tmp_path / "bisect.json") == result
    assert data["releases"]["first"] == "0.27.0" and data["releases"]["steps"][0]["attempts"][0]["outcome"] == "appears"
    text = terminal(result)
    assert text.startswith(f"handshake-chaos bisect: first release where {SIGNATURE_596} is gone: 0.27.0")
    assert "skipped" in text and "could not build 0.24.0" in text
    page = markdown(result)
    assert f"**{result.answer}**" in page and "| **skipped** |" in page
    xml = junit_xml(result)
    assert 'skipped="1"' in xml and 'failures="0"' in xml and 'name="boundary"' in xml
