"""Reproducible per-release virtualenvs: a uvicorn version with the dependencies of its day.

By default a release's dependencies are resolved as of that uvicorn version's
publication time, read from the package index (PEP 691 JSON with PEP 700 upload
times), so an old release gets the gunicorn, h11, wsproto and websockets it shipped
with. Environments are built with uv and cached by their full specification.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from chaos.errors import DeploymentError, UsageError

log = logging.getLogger(__name__)

DEFAULT_INDEX = "https://pypi.org/simple"
_JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
# Always installed beside uvicorn, each resolved as of the same date.
_COMPANIONS = ("gunicorn", "wsproto", "websockets", "h11", "setuptools")
# uvicorn.workers was deprecated in 0.30.0 in favour of the uvicorn-worker package.
_UVICORN_WORKER_FROM = Version("0.30.0")


@dataclass(frozen=True)
class ReleaseSpec:
    uvicorn: str
    as_of: str | None = None
    gunicorn: str | None = None
    ws_version: str | None = None
    ws_library: str = "websockets"
    constraint: str | None = None
    python: str = sys.executable
    # The user's own app's requirements (a framework, its drivers), installed into the release's
    # environment; resolved as of the release's date unless ``with_as_of`` says otherwise.
    with_packages: tuple[str, ...] = ()
    with_requirements: str | None = None
    with_as_of: str | None = None

    @property
    def local_source(self) -> Path | None:
        """A wheel or source directory of uvicorn (an unreleased commit, a release candidate)."""
        if "/" in self.uvicorn or self.uvicorn.endswith(".whl"):
            return Path(self.uvicorn).expanduser().resolve()
        return None

    def validate(self) -> None:
        local = self.local_source
        if local is not None:
            if not (local.is_dir() and ((local / "pyproject.toml").is_file() or (local / "setup.py").is_file())):
                if not (local.is_file() and local.suffix == ".whl"):
                    raise UsageError(f"--uvicorn {self.uvicorn}: not a uvicorn wheel or source directory")
        elif self.uvicorn != "latest":
            parse_version(self.uvicorn, "--uvicorn")
        if self.gunicorn is not None:
            parse_version(self.gunicorn, "--gunicorn")
        if self.ws_version is not None:
            parse_version(self.ws_version, "--ws-version")
        if self.as_of is not None:
            parse_as_of(self.as_of)
        if self.constraint is not None and not Path(self.constraint).is_file():
            raise UsageError(f"constraint file not found: {self.constraint}")
        if self.with_requirements is not None and not Path(self.with_requirements).is_file():
            raise UsageError(f"--with-requirements: no such file {self.with_requirements}")
        if self.with_as_of is not None:
            parse_as_of(self.with_as_of)
        for requirement in self.with_packages:
            try:
                Requirement(requirement)
            except InvalidRequirement:
                raise UsageError(
                    f"--with: {requirement!r} is not a requirement (e.g. starlette or 'starlette<0.30')"
                ) from None

    def extras(self) -> list[str]:
        """The user's requirements, as uv takes them."""
        extra = list(self.with_packages)
        if self.with_requirements is not None:
            extra += ["--requirement", str(Path(self.with_requirements).resolve())]
        return extra


def parse_version(text: str, flag: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise UsageError(f"{flag}: {text!r} is not a version (e.g. 0.19.0)") from None


def parse_as_of(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of: {text!r} is not an ISO date (e.g. 2022-10-20)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def index_url() -> str:
    return (os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def release_files(package: str) -> list[dict[str, object]]:
    """The index's file list for a project (PEP 691 JSON)."""
    request = urllib.request.Request(f"{index_url()}/{package}/", headers={"Accept": _JSON_ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            files: list[dict[str, object]] = json.load(response)["files"]
            return files
    except urllib.error.HTTPError as exc:
        raise DeploymentError(f"package index answered {exc.code} for {package}") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeploymentError(f"package index {index_url()} cannot be reached: {reason}") from None


def _file_version(package: str, filename: str) -> str | None:
    stem = filename.removesuffix(".tar.gz").removesuffix(".zip").removesuffix(".whl")
    prefix = package.replace("-", "_") + "-"
    if not stem.lower().startswith(prefix):
        prefix = package + "-"
        if not stem.lower().startswith(prefix):
            return None
    return stem[len(prefix) :].split("-", 1)[0]


def published_versions(package: str) -> dict[str, datetime]:
    """Each version of ``package`` with its first upload time."""
    versions: dict[str, datetime] = {}
    for entry in release_files(package):
        version = _file_version(package, str(entry.get("filename", "")))
        uploaded = entry.get("upload-time")
        if version is None or not isinstance(uploaded, str) or entry.get("yanked"):
            continue
        moment = datetime.fromisoformat(uploaded.replace("Z", "+00:00"))
        if version not in versions or moment < versions[version]:
            versions[version] = moment
    return versions


def resolve_release(spec: ReleaseSpec) -> tuple[str, datetime]:
    """The exact uvicorn version and the moment its dependencies are resolved at."""
    local = spec.local_source
    if local is not None:
        # Unreleased code: its dependencies as of now (or --as-of).
        as_of = parse_as_of(spec.as_of) if spec.as_of else datetime.now(UTC).replace(microsecond=0)
        return _local_version(local), as_of
    versions = published_versions("uvicorn")
    if spec.uvicorn == "latest":
        stable = [v for v in versions if not Version(v).is_prerelease]
        version = max(stable, key=Version)
    else:
        wanted = parse_version(spec.uvicorn, "--uvicorn")
        matches = [v for v in versions if Version(v) == wanted]
        if not matches:
            raise DeploymentError(f"uvicorn {spec.uvicorn} is not on the package index {index_url()}")
        version = matches[0]
    # A second past the upload, so the release itself is inside the window.
    as_of = parse_as_of(spec.as_of) if spec.as_of else versions[version] + timedelta(seconds=1)
    return version, as_of


def default_cache_dir() -> Path:
    base = os.environ.get("HANDSHAKE_CHAOS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "handshake-chaos"
    )
    return Path(base) / "envs"


@dataclass(frozen=True)
class ReleaseEnvironment:
    path: Path
    uvicorn: str
    as_of: str
    reused: bool

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def installed(self) -> dict[str, str]:
        manifest = json.loads((self.path / "handshake-chaos-env.json").read_text())
        installed: dict[str, str] = manifest["installed"]
        return installed


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def build_environment(spec: ReleaseSpec, cache_dir: Path | None = None) -> ReleaseEnvironment:
    """Builds (or reuses) the virtualenv of one release; raises DeploymentError if it cannot."""
    spec.validate()
    version, as_of = resolve_release(spec)
    as_of_text = as_of.strftime("%Y-%m-%dT%H:%M:%SZ")
    local = spec.local_source
    requirements = [str(local) if local is not None else f"uvicorn=={version}"]
    for companion in _COMPANIONS:
        if companion == "gunicorn" and spec.gunicorn:
            requirements.append(f"gunicorn=={spec.gunicorn}")
        elif companion == spec.ws_library and spec.ws_version:
            requirements.append(f"{companion}=={spec.ws_version}")
        else:
            requirements.append(companion)
    if local is not None or Version(version) >= _UVICORN_WORKER_FROM:
        requirements.append("uvicorn-worker")
    python_version = _python_version(spec.python)
    constraint_text = Path(spec.constraint).read_text() if spec.constraint else ""
    with_text = Path(spec.with_requirements).read_text() if spec.with_requirements else ""
    with_as_of = parse_as_of(spec.with_as_of).strftime("%Y-%m-%dT%H:%M:%SZ") if spec.with_as_of else as_of_text
    key_source = json.dumps(
        {
            "requirements": requirements,
            "as_of": as_of_text,
            "python": python_version,
            "constraint": constraint_text,
            "with": [list(spec.with_packages), with_text, with_as_of],
            "source": _source_fingerprint(local) if local is not None else None,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:12]
    cache = cache_dir or default_cache_dir()
    path = cache / f"uvicorn-{version.replace('/', '_')}-py{python_version}-{key}"
    manifest = path / "handshake-chaos-env.json"
    if manifest.is_file():
        return ReleaseEnvironment(path, version, as_of_text, reused=True)
    # The manifest is written last: a directory without one is a build that died midway.
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("building uvicorn %s as of %s in %s", version, as_of_text, path)
    try:
        _run_uv(["venv", "--quiet", "--python", spec.python, str(path)], version)
        install = ["pip", "install", "--quiet", "--python", str(path / "bin" / "python")]
        install += ["--exclude-newer", as_of_text, "--index-url", index_url(), *requirements]
        if spec.constraint:
            install += ["--constraint", spec.constraint]
        same_day = with_as_of == as_of_text
        _run_uv(install + (spec.extras() if same_day else []), version)
        if spec.extras() and not same_day:
            # Another date for the app's own requirements; what the release installed stays as it is.
            pinned = path / "handshake-chaos-release.txt"
            pinned.write_text("".join(f"{name}=={pin}\n" for name, pin in _freeze(path).items() if name != "uvicorn"))
            extra = ["pip", "install", "--quiet", "--python", str(path / "bin" / "python")]
            extra += ["--exclude-newer", with_as_of, "--index-url", index_url(), "--constraint", str(pinned)]
            _run_uv(extra + spec.extras(), version, what="the --with requirements of")
    except DeploymentError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    installed = _freeze(path)
    (path / "handshake-chaos-env.json").write_text(
        json.dumps({"spec": asdict(spec), "uvicorn": version, "as_of": as_of_text, "installed": installed}, indent=2)
    )
    return ReleaseEnvironment(path, version, as_of_text, reused=False)


def _local_version(source: Path) -> str:
    """A label for local code: the wheel's version, else the source directory's name."""
    if source.suffix == ".whl":
        parts = source.name.split("-")
        return f"local-{parts[1]}" if len(parts) > 1 else "local"
    return f"local-{source.name}"


def _source_fingerprint(source: Path) -> str:
    """Changes whenever the code does, so an edited checkout is rebuilt, an unchanged one reused."""
    digest = hashlib.sha256()
    if source.is_file():
        digest.update(source.read_bytes())
        return digest.hexdigest()
    for path in sorted(source.rglob("*")):
        if path.is_file() and ".git" not in path.parts and "__pycache__" not in path.parts:
            stat = path.stat()
            digest.update(f"{path.relative_to(source)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _python_version(python: str) -> str:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        raise DeploymentError(f"interpreter {python} cannot be run") from None
    return result.stdout.strip()


def _run_uv(arguments: list[str], version: str, what: str = "") -> None:
    try:
        result = subprocess.run([_uv(), *arguments], capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise DeploymentError(
            f"building {what + ' ' if what else ''}uvicorn {version} took longer than 15 minutes"
        ) from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        # uv explains a resolution failure over several lines; the first after "error" says what.
        reason = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "unknown error")
        if reason.lower().rstrip(":").endswith("no solution found when resolving dependencies") and len(lines) > 1:
            reason = reason.rstrip(":") + ": " + lines[lines.index(reason) + 1].lstrip("╰─▶ ").strip()
        raise DeploymentError(f"cannot build {what + ' ' if what else ''}uvicorn {version}: {reason}")


def _freeze(env: Path) -> dict[str, str]:
    """Installed distributions and versions (local wheels and checkouts included)."""
    result = subprocess.run(
        [_uv(), "pip", "list", "--format", "json", "--python", str(env / "bin" / "python")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        packages = json.loads(result.stdout or "[]")
    except ValueError:
        return {}
    return {str(p["name"]).lower(): str(p["version"]) for p in packages if "name" in p and "version" in p}
