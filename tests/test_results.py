"""The typed results: JSON round-trips, and the schema in docs/ is the one the code derives."""

from __future__ import annotations

import json

import jsonschema
import pytest

from chaos.commands.reference import generated_files
from chaos.results import MatrixResult, RunSummary, json_schema
from tests.conftest import ROOT
from tests.report.test_files import _matrix, _summary


@pytest.mark.parametrize("name", sorted(generated_files()))
def test_the_docs_are_generated_from_the_code(name):
    assert (ROOT / "docs" / name).read_text() == generated_files()[name], (
        "run: python -m chaos.commands.reference docs/"
    )


def test_a_summary_round_trips_and_validates(tmp_path):
    summary = _summary()
    path = tmp_path / "summary.json"
    summary.write(path)
    data = json.loads(path.read_text())
    jsonschema.validate(data, json_schema(RunSummary))
    assert RunSummary.read(path) == summary
    for key in ("release", "ws", "versions", "mode", "gate", "errors", "signals", "outcomes"):
        assert key in data  # the contract's fields
    assert data["gate"] == {
        "verdict": "fail",
        "exit_code": 1,
        "reason": data["gate"]["reason"],
        "failing": [data["errors"][0]["signature"]],
    }


def test_the_schema_rejects_what_ci_jobs_could_not_parse():
    data = _summary().to_json()
    data["gate"]["verdict"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema(RunSummary))
    del data["signals"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema(RunSummary))


def test_a_matrix_round_trips_and_validates():
    result = _matrix()
    data = json.loads(result.dumps())
    jsonschema.validate(data, json_schema(MatrixResult))
    assert MatrixResult.from_json(data) == result
