"""A local uvicorn git checkout as history: the commits between two release tags, and any commit's
source tree on disk, ready to be built like a release (``--uvicorn DIR``).

A commit's tree is a clone of the checkout at that commit (a local clone: its objects hard-linked
where the file system allows, and it stands on its own once made), so a build that takes its
version from git (uvicorn's ``uv-dynamic-versioning`` from 0.55.0) finds the tags. Every file's
time is set to the commit's, so the same commit is the same tree to the environment cache from
one run to the next, and its environment is built once. The checkout itself is only read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chaos.errors import DeploymentError, UsageError

_MARKER = "handshake-chaos-commit"  # in the tree's .git: the commit it holds, written last


@dataclass(frozen=True)
class Commit:
    sha: str
    describe: str  # e.g. 0.54.0-3-g1a2b3c4 (a tag itself: 0.55.0)
    subject: str
    time: int  # committer time, seconds since the epoch

    @property
    def label(self) -> str:
        return f"{self.describe} ({self.subject})" if self.subject else self.describe


def _git(repo: Path, *arguments: str, check: bool = True) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *arguments], capture_output=True, text=True, timeout=300, check=False
        )
    except FileNotFoundError:
        raise UsageError("--repo needs git, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"git {' '.join(arguments)} in {repo} took longer than 5 minutes") from None
    if check and done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise DeploymentError(f"git {' '.join(arguments)} in {repo}: {reason}")
    return done.stdout.strip() if done.returncode == 0 else ""


def check_repo(path: Path) -> Path:
    """The checkout's top directory; one line and exit 2 when ``path`` is not a git checkout."""
    if not path.is_dir():
        raise UsageError(f"--repo {path}: no such directory")
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    if not top:
        raise UsageError(f"--repo {path}: not a git checkout")
    return Path(top)


def release_tag(repo: Path, version: str) -> str | None:
    """The commit a release's tag points at (``0.20.0`` or ``v0.20.0``), or None."""
    for name in (version, f"v{version}"):
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/tags/{name}^{{commit}}", check=False)
        if sha:
            return sha
    return None


def commit(repo: Path, sha: str) -> Commit:
    fields = _git(repo, "show", "-s", "--format=%H%x00%ct%x00%s", sha).split("\x00", 2)
    describe = _git(repo, "describe", "--tags", "--always", fields[0], check=False) or fields[0][:12]
    return Commit(fields[0], describe, fields[2] if len(fields) > 2 else "", int(fields[1]))


def commits_between(repo: Path, old: str, new: str) -> list[Commit]:
    """``old``, then every commit on the first-parent line from it to ``new`` (inclusive), oldest first.
    The first-parent line is the one a release branch's history follows (a merged branch is one step)."""
    ancestor = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", old, new], capture_output=True, check=False
    )
    if ancestor.returncode != 0:
        raise DeploymentError(f"{old[:12]} is not an ancestor of {new[:12]}: no line of history between them")
    line = _git(repo, "rev-list", "--reverse", "--first-parent", f"{old}..{new}").split()
    return [commit(repo, sha) for sha in [old, *line]]


def source_tree(repo: Path, item: Commit, root: Path) -> Path:
    """The source tree of ``item`` under ``root`` (reused when already there)."""
    tree = root.resolve() / f"uvicorn-{item.sha[:12]}"
    marker = tree / ".git" / _MARKER
    if marker.is_file() and marker.read_text().strip() == item.sha:
        # Whole: its objects still readable (a clone stands alone, but a tree may have been tampered with).
        if _git(tree, "rev-parse", "--verify", "--quiet", "HEAD^{tree}", check=False):
            return tree
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "clone", "--quiet", "--local", "--no-checkout", str(repo), str(tree))
    _git(tree, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", item.sha)
    for directory, subdirectories, files in os.walk(tree):
        if ".git" in subdirectories and Path(directory) == tree:
            subdirectories.remove(".git")
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.utime(path, (item.time, item.time))
    marker.write_text(item.sha + "\n")
    return tree
