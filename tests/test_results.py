"""The typed results: JSON round-trips, and the schema in docs/ is the one the code derives; the
generated docs (whole files in docs/, marked sections of docs/contract.md, docs/detection.md and
docs/metrics.md) are the code's."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from chaos import catalog
from chaos.commands.reference import COMMAND, DOCUMENTS, SECTIONS, documents, generated_files, with_sections
from chaos.errors import UsageError
from chaos.report.dashboard import variables
from chaos.report.metrics import METRICS
from chaos.results import MatrixResult, RunSummary, json_schema
from tests.helpers import ROOT, matrix_result, run_summary


@pytest.mark.parametrize("name", sorted(generated_files()))
def test_the_docs_are_generated_from_the_code(name):
    assert (ROOT / "docs" / name).read_text() == generated_files()[name], (
        f"docs/{name} differs from the code: run {COMMAND}"
    )


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
def test_the_marked_sections_are_generated_from_the_code(document):
    assert (ROOT / document).read_text() == documents(ROOT)[document], (
        f"a generated section of {document} differs from the code: run {COMMAND}"
    )


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
def test_the_sections_list_every_signature_metric_and_variable(document):
    text = (ROOT / document).read_text()
    if "catalogue" in DOCUMENTS[document]:
        for entry in catalog.CATALOG:
            assert f"| `{entry.signature}` |" in text, entry.signature
        for generic in catalog.GENERIC_SIGNATURES:
            assert f"| `{generic.signature}` |" in text, generic.signature
    if "metrics" in DOCUMENTS[document]:
        for spec in METRICS:
            assert f"| `{spec.exposed_name}` | {spec.type}" in text and ", ".join(spec.labels) in text, spec.name
    if "dashboard-variables" in DOCUMENTS[document]:
        for variable in variables():
            assert f"| `${variable['name']}` |" in text, variable["name"]


def test_every_section_has_a_home():
    assert {name for sections in DOCUMENTS.values() for name in sections} == set(SECTIONS)


def test_a_section_is_rewritten_in_place_and_the_prose_kept():
    def stale(name: str) -> str:
        return f"<!-- generated: {name} -->\n| old | table |\n<!-- end generated: {name} -->"

    text = f"# Title\n\nProse before.\n\n{stale('metrics')}\n\nProse between.\n\n{stale('catalogue')}\n\nProse after.\n"
    with pytest.raises(UsageError, match="dashboard-variables"):
        with_sections(text, "docs/contract.md")  # a section missing from the document is an error, not skipped
    text += f"\n{stale('dashboard-variables')}\n"
    done = with_sections(text, "docs/contract.md")
    assert done.startswith("# Title\n\nProse before.\n\n<!-- generated: metrics (from chaos/report/metrics.py")
    assert "\n\nProse between.\n\n" in done and "\n\nProse after.\n" in done and "| old | table |" not in done
    assert with_sections(done, "docs/contract.md") == done  # a second run changes nothing


def test_the_readme_links_its_own_docs_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if target.startswith(("http://", "https://")):
            # Only upstream issues, PRs and sources (the catalogue's references), never this project's docs.
            assert re.match(r"https://github\.com/(encode|Kludex|python-websockets|benoitc)/", target), target
        else:
            assert (ROOT / target.split("#")[0]).exists(), target


def test_a_summary_round_trips_and_validates(tmp_path):
    summary = run_summary()
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
    data = run_summary().to_json()
    data["gate"]["verdict"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema(RunSummary))
    del data["signals"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema(RunSummary))


def test_a_matrix_round_trips_and_validates():
    result = matrix_result()
    data = json.loads(result.dumps())
    jsonschema.validate(data, json_schema(MatrixResult))
    assert MatrixResult.from_json(data) == result
