"""Prints, as JSON, what the deployment's interpreter would run: versions and capabilities.

Run by the launcher as ``PYTHON handshake_chaos_versions.py``; standard library only.
"""

import json
import platform
import sys

try:
    from importlib.metadata import PackageNotFoundError, distribution, version
except ImportError:  # Python < 3.8
    from importlib_metadata import PackageNotFoundError, distribution, version  # type: ignore


def _version(distribution):
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _from_index(name):
    """Installed from a package index (a published release), not from a path or URL: PEP 610 records
    a direct_url.json for those. A source tree's code may differ from the release it names."""
    try:
        return distribution(name).read_text("direct_url.json") is None
    except PackageNotFoundError:
        return False


def _ws_implementations():
    try:
        from uvicorn.config import WS_PROTOCOLS
    except Exception:
        return []
    return sorted(name for name, path in WS_PROTOCOLS.items() if path is not None)


def _has_module(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


print(
    json.dumps(
        {
            "python": platform.python_version(),
            "executable": sys.executable,
            "uvicorn": _version("uvicorn"),
            "uvicorn_from_index": _from_index("uvicorn"),
            "gunicorn": _version("gunicorn"),
            "uvicorn_worker": _version("uvicorn-worker"),
            "websockets": _version("websockets"),
            "wsproto": _version("wsproto"),
            "h11": _version("h11"),
            "httptools": _version("httptools"),
            "uvloop": _version("uvloop"),
            "ws_implementations": _ws_implementations(),
            "has_uvicorn_workers": _has_module("uvicorn.workers"),
        }
    )
)
