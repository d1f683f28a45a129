"""A uvicorn source tree with a known fix undone, as a maintainer would have one on their disk.

    python -m tests.patched_release DIR [VERSION]   (default: the newest release on the index)

Downloads the release's source distribution from the package index, unpacks it into DIR, and
undoes PR #1737's guard in the wsproto shutdown path: the close frame is sent whatever the
handshake state, as before 0.20.0, so a pending handshake meets uvicorn #596 again.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

INDEX = "https://pypi.org/pypi/uvicorn"
SIMPLE = "https://pypi.org/simple/uvicorn/"  # PEP 691's JSON form lists every file of every release
_GUARDED = """        if self.handshake_complete:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
            output = self.conn.send(wsproto.events.CloseConnection(code=1012))
            self.transport.write(output)
        else:
            self.send_500_response()
"""
_UNGUARDED = """        # handshake-chaos: PR #1737's guard undone (close frame sent whatever the handshake state).
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
        output = self.conn.send(wsproto.events.CloseConnection(code=1012))
        self.transport.write(output)
"""


def newest_version() -> str:
    with urllib.request.urlopen(f"{INDEX}/json", timeout=60) as response:
        return str(json.load(response)["info"]["version"])


def patched_tree(directory: Path, version: str | None = None) -> Path:
    """The unpacked, patched source tree of ``version`` (default: the newest release)."""
    version = version or newest_version()
    request = urllib.request.Request(SIMPLE, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    [sdist] = [item["url"] for item in files if item["filename"] == f"uvicorn-{version}.tar.gz"]
    with urllib.request.urlopen(sdist, timeout=120) as response:
        archive = tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz")
    directory.mkdir(parents=True, exist_ok=True)
    archive.extractall(directory, filter="data")
    [tree] = [path for path in directory.iterdir() if path.is_dir() and path.name.startswith("uvicorn-")]
    source = tree / "uvicorn" / "protocols" / "websockets" / "wsproto_impl.py"
    text = source.read_text()
    if _GUARDED not in text:
        raise RuntimeError(f"uvicorn {version}: the #1737 guard is not where it was; update tests/patched_release.py")
    source.write_text(text.replace(_GUARDED, _UNGUARDED))
    return tree


if __name__ == "__main__":
    print(patched_tree(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
