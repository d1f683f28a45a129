"""A uvicorn git repository made from real source distributions: one commit per release, tagged.

    python -m tests.release_repo DIR VERSION [VERSION...]

Each release's sdist (from the package index) becomes one commit of its whole tree, tagged with
the version, oldest first. ``split`` adds, before a release's commit, one commit with all of that
release's changes except the files it names (kept as the release before had them): the release's
commit then changes only those files, so a commit bisect has a middle step and one commit to find.
The versions are always named: a test's verdict never depends on what the index serves that day.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.patched_release import unpacked_sdist

# The file uvicorn 0.55.0 fixed the denial-response crash in (the rest of 0.55.0 leaves it open).
WSPROTO_IMPL = "uvicorn/protocols/websockets/wsproto_impl.py"
_AUTHOR = ["-c", "user.name=handshake-chaos tests", "-c", "user.email=tests@handshake-chaos.invalid"]


def _git(repo: Path, *arguments: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *_AUTHOR, *arguments], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _replace_tree(repo: Path, source: Path) -> None:
    for path in repo.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.copytree(source, repo, dirs_exist_ok=True)


def _commit(repo: Path, message: str, when: int) -> str:
    # Every file hashed anew: sdists give all their files one time, and a file of the same size and time
    # would otherwise look unchanged to git's index (0.54.0's __init__.py differs from 0.53.0's by a digit).
    _git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", ".")
    _git(repo, "add", "--all")
    date = f"{when} +0000"
    subprocess.run(
        ["git", "-C", str(repo), *_AUTHOR, "commit", "--quiet", "--allow-empty", "-m", message],
        check=True,
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "PATH": "/usr/bin:/bin", "HOME": str(repo)},
    )
    return _git(repo, "rev-parse", "HEAD")


def release_repo(directory: Path, versions: Sequence[str], split: dict[str, Sequence[str]] | None = None) -> Path:
    """The repository at ``directory``: returns it. ``split``: version -> files its own commit alone changes."""
    repo = directory
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "--quiet", "--initial-branch", "master")
    when = 1_700_000_000
    previous: Path | None = None
    with tempfile.TemporaryDirectory() as downloads:
        for version in versions:
            tree = unpacked_sdist(Path(downloads) / version, version)
            held = (split or {}).get(version, ())
            if held and previous is not None:
                _replace_tree(repo, tree)
                for name in held:
                    shutil.copy2(previous / name, repo / name)
                when += 3600
                _commit(repo, f"{version}'s changes but {', '.join(held)}", when)
            _replace_tree(repo, tree)
            when += 3600
            _commit(repo, f"Release {version}", when)
            _git(repo, "tag", version)
            previous = tree
    return repo


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m tests.release_repo DIR VERSION [VERSION...]")
    print(release_repo(Path(sys.argv[1]), sys.argv[2:]))
