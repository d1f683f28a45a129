"""A local git checkout as history: tags, the first-parent line between two of them, a commit's tree on disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chaos.deployment import git_history
from chaos.errors import DeploymentError, UsageError

_AUTHOR = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def _git(repo: Path, *arguments: str, when: int = 1_700_000_000) -> str:
    date = f"{when} +0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    done = subprocess.run(
        ["git", "-C", str(repo), *_AUTHOR, *arguments], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


def _commit(repo: Path, text: str, when: int) -> str:
    (repo / "version.txt").write_text(text)
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "-m", f"set {text}", when=when)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """1.0 (tagged 1.0) - a - b - 1.1 (tagged v1.1), with a side branch merged between a and b."""
    path = tmp_path / "checkout"
    path.mkdir()
    _git(path, "init", "--quiet", "--initial-branch", "main")
    _commit(path, "1.0", 1_700_000_000)
    _git(path, "tag", "1.0")
    _commit(path, "a", 1_700_000_100)
    _git(path, "checkout", "--quiet", "-b", "side")
    _commit(path, "side", 1_700_000_150)
    _git(path, "checkout", "--quiet", "main")
    _git(path, "merge", "--quiet", "--no-ff", "-m", "merge side", "side", when=1_700_000_200)
    _commit(path, "b", 1_700_000_300)
    _commit(path, "1.1", 1_700_000_400)
    _git(path, "tag", "v1.1")
    return path


def test_release_tags_with_or_without_a_v(repo):
    assert git_history.release_tag(repo, "1.0") == _git(repo, "rev-parse", "1.0^{commit}")
    assert git_history.release_tag(repo, "1.1") == _git(repo, "rev-parse", "v1.1^{commit}")
    assert git_history.release_tag(repo, "2.0") is None


def test_the_commits_between_two_tags_follow_the_first_parent_line(repo):
    old, new = git_history.release_tag(repo, "1.0"), git_history.release_tag(repo, "1.1")
    assert old is not None and new is not None
    commits = git_history.commits_between(repo, old, new)
    assert [c.subject for c in commits] == ["set 1.0", "set a", "merge side", "set b", "set 1.1"]
    assert commits[0].describe == "1.0" and commits[-1].describe == "v1.1" and commits[1].describe.startswith("1.0-1-g")
    assert commits[0].label == "1.0 (set 1.0)" and commits[0].time == 1_700_000_000
    with pytest.raises(DeploymentError, match="not an ancestor"):
        git_history.commits_between(repo, new, old)


def test_a_commits_tree_is_a_clone_with_the_commits_time_and_is_reused(repo, tmp_path):
    old = git_history.release_tag(repo, "1.0")
    assert old is not None
    [first, *_] = git_history.commits_between(repo, old, old)
    tree = git_history.source_tree(repo, first, tmp_path / "sources")
    assert tree.name == f"uvicorn-{first.sha[:12]}" and (tree / "version.txt").read_text() == "1.0"
    assert (tree / "version.txt").stat().st_mtime == first.time
    assert _git(tree, "describe", "--tags") == "1.0"  # the tags come along: a build can take its version from git
    (tree / "version.txt").write_text("1.0")
    os.utime(tree / "version.txt", (first.time, first.time))
    marker = tree / ".git" / "handshake-chaos-commit"
    made = marker.stat().st_mtime_ns
    assert git_history.source_tree(repo, first, tmp_path / "sources") == tree and marker.stat().st_mtime_ns == made
    assert _git(repo, "status", "--porcelain") == ""  # the checkout is only read


def test_a_directory_that_is_no_checkout_is_bad_usage(tmp_path):
    with pytest.raises(UsageError, match="not a git checkout"):
        git_history.check_repo(tmp_path)
    with pytest.raises(UsageError, match="no such directory"):
        git_history.check_repo(tmp_path / "missing")
