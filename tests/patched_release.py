"""A uvicorn source tree with a known fix undone, as a maintainer would have one on their disk.

    python -m tests.patched_release DIR VERSION

Downloads the release's source distribution from the package index, unpacks it into DIR, and
undoes PR #1737's guard in the wsproto shutdown path: the close frame is sent whatever the
handshake state, as before 0.20.0, so a pending handshake meets uvicorn #596 again.

The version is always named: a test's verdict never depends on what the index serves that day.
The guard has had more than one shape (``GUARD_SHAPES``); each is undone the same way.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

SIMPLE = "https://pypi.org/simple/uvicorn/"  # PEP 691's JSON form lists every file of every release

_CLOSE = """            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
            output = self.conn.send(wsproto.events.CloseConnection(code=1012))
            self.transport.write(output)
        else:
            self.send_500_response()
"""
# The guard as each range of releases has it: 0.20.0 (PR #1737) to 0.54.x, and 0.55.0 on (which also
# leaves a denial response that has started alone).
GUARD_SHAPES = {
    "0.20.0": "        if self.handshake_complete:\n" + _CLOSE,
    "0.55.0": "        if self.handshake_complete and not self.response_started:\n" + _CLOSE,
}
_UNGUARDED = """        # handshake-chaos: PR #1737's guard undone (close frame sent whatever the handshake state).
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
        output = self.conn.send(wsproto.events.CloseConnection(code=1012))
        self.transport.write(output)
"""


def undo_guard(source: str, version: str) -> tuple[str, str]:
    """``source`` (wsproto_impl.py) with the guard undone, and the shape that was found."""
    for shape, guarded in GUARD_SHAPES.items():
        if guarded in source:
            return source.replace(guarded, _UNGUARDED), shape
    raise RuntimeError(f"uvicorn {version}: no known shape of the #1737 guard; add it to GUARD_SHAPES")


def unpacked_sdist(directory: Path, version: str) -> Path:
    """The source distribution of uvicorn ``version`` from the package index, unpacked under ``directory``."""
    request = urllib.request.Request(SIMPLE, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    [sdist] = [item["url"] for item in files if item["filename"] == f"uvicorn-{version}.tar.gz"]
    with urllib.request.urlopen(sdist, timeout=120) as response:
        archive = tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz")
    directory.mkdir(parents=True, exist_ok=True)
    archive.extractall(directory, filter="data")
    return directory / f"uvicorn-{version}"


def patched_tree(directory: Path, version: str) -> Path:
    """The unpacked source tree of uvicorn ``version`` with #1737's guard undone."""
    tree = unpacked_sdist(directory, version)
    source = tree / "uvicorn" / "protocols" / "websockets" / "wsproto_impl.py"
    patched, _shape = undo_guard(source.read_text(), version)
    source.write_text(patched)
    return tree


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.patched_release DIR VERSION")
    print(patched_tree(Path(sys.argv[1]), sys.argv[2]))
