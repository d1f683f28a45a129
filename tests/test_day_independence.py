"""The suite's verdict does not depend on the day: every release a test installs is named.

Reads the tests as code (never runs them): a test that asks the package index for its newest
release ("latest") must say it asserts only what is true of any newest release (the ``newest``
marker); a patched source tree names its version; a source tree's dependencies are resolved as of
a named moment (``--as-of``), never "now".
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


def _has_newest_marker(function: ast.FunctionDef) -> bool:
    return any(ast.unparse(decorator) == "pytest.mark.newest" for decorator in function.decorator_list)


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def unpinned_uses(source: str, where: str) -> list[str]:
    """Every place in a test module that would let the package index pick a release by the day."""
    tree = ast.parse(source)
    found: list[str] = []
    for function in _functions(tree):
        strings = _strings(function)
        if "latest" in strings and not _has_newest_marker(function):
            found.append(f"{where}:{function.lineno} {function.name} asks for 'latest' without @pytest.mark.newest")
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
            name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
            if name == "patched_tree":
                if len(call.args) + len(call.keywords) < 2:
                    found.append(f"{where}:{call.lineno} {function.name} patches a tree without naming its version")
                if "--as-of" not in strings:
                    found.append(f"{where}:{call.lineno} {function.name} soaks a source tree without --as-of")
    return found


def test_no_test_lets_the_index_pick_a_release_by_the_day():
    found: list[str] = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        found += unpinned_uses(path.read_text(), str(path.relative_to(TESTS.parent)))
    assert not found, "\n".join(found)


def test_the_check_sees_an_unpinned_request():
    """The check itself can fail: each kind of unpinned use is reported."""
    source = """
def test_a(tmp_path):
    run(["soak", "--uvicorn", "latest"])

def test_b(tmp_path):
    tree = patched_tree(tmp_path)
    run(["soak", "--uvicorn", str(tree)])

@pytest.mark.newest
def test_c():
    resolve_release(ReleaseSpec("latest"))
"""
    found = unpinned_uses(source, "example.py")
    assert len(found) == 3, found
    assert "test_a asks for 'latest'" in found[0]
    assert "without naming its version" in found[1] and "without --as-of" in found[2]
