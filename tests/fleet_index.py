"""Loopback package registries for the fleet tests, serving the small MCP servers in tests/data/fleet.

One HTTP server on 127.0.0.1 (a thread) plays three registries at once, from a folder of files built here:

- PyPI: PEP 503 simple index `/simple/<name>/` (links carry `#sha256=`; PEP 691 JSON when asked with
  `Accept: application/vnd.pypi.simple.v1+json`) and the JSON API `/pypi/<name>/json`, `/pypi/<name>/<ver>/json`
  (`info`, `releases`, `urls[].digests.sha256`, `upload_time_iso_8601`, `yanked`). Files at `/files/<filename>`.
- npm (recorded-document mode): packuments at `/<name>` (`/@scope%2fname` too), `dist-tags`, `versions[v].dist`
  with `tarball`, `integrity` (sha512 SRI) and `shasum` (sha1), `time`; tarballs at `/npm-files/<file>`.
- The official MCP registry: `/v0/servers?search=&version=latest`, `/v0/servers/<name>/versions`,
  `/v0/servers/<name>/versions/<ver|latest>` (and the same under `/v0.1`), ServerList / ServerResponse shapes
  with `_meta["io.modelcontextprotocol.registry/official"]`.

Tests may break it on purpose: `index.set_digest(filename, "wrong" | "missing" | "ok")`, `index.yank(...)`,
`index.fail_with(status)` (every request answers that status), `index.mcp_status[server name] = "deleted"`,
and `index.publish_python(project_dir, version=...)` adds releases (pre-releases, post-releases) built from a
copy of a fixture package.

Wheels and sdists are built with flit_core's PEP 517 hooks (no network, no build isolation), cached in
build/fleet-wheels/<dir>-<source hash>/; npm tarballs with `npm pack`, cached in build/fleet-npm/.

A real npm registry too: verdaccio 5.33.0 (pinned in tests/data/fleet/verdaccio/package.json; 6.x needs Node 22),
installed into build/verdaccio on first use (~20 s, then cached), started on a free loopback port with its storage
in a temp dir and no uplinks (~4 s), the npm fixture packages published to it with `npm publish` (~7 s). If it
cannot be installed or started, `npm_registry` falls back to the recorded-document mode above (`.recorded` True).

Fixtures: `fleet_packages` (session; built files), `fleet_index` (a fresh registry per test, all fixture packages
published), `npm_registry` (session; verdaccio with the npm fixtures, or the fallback). Use them with
`from tests.fleet_index import fleet_index, fleet_packages, npm_registry  # noqa: F401` in a test module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "fleet"
PY_PACKAGES = DATA / "packages"
NPM_PACKAGES = DATA / "npm"
WHEEL_CACHE = ROOT / "build" / "fleet-wheels"
NPM_CACHE = ROOT / "build" / "fleet-npm"

# Publication dates of the fixture releases (a registry reports them; `fleet check` shows them).
RELEASE_DATES = {
    "1.0.0": datetime(2026, 1, 10, 9, 0, tzinfo=UTC),
    "1.1.0": datetime(2026, 3, 2, 14, 30, tzinfo=UTC),
    "2.0.0": datetime(2026, 5, 20, 8, 15, tzinfo=UTC),
}
MCP_REGISTRY_PREFIX = "io.github.obsmcp-test/"
OFFICIAL = "io.modelcontextprotocol.registry/official"


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _source_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _read_pyproject(directory: Path) -> tuple[str, str]:
    import tomllib

    project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    return str(project["name"]), str(project["version"])


def _publish(staging: Path, out: Path) -> None:
    try:
        staging.rename(out)
    except OSError:  # another run built it first: theirs is as good
        shutil.rmtree(staging, ignore_errors=True)


def build_python(src: Path, version: str | None = None) -> list[Path]:
    """Wheel + sdist of one fixture package (optionally re-versioned), cached by source hash."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / src.name
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("__pycache__"))
        if version is not None:
            text = (work / "pyproject.toml").read_text()
            (work / "pyproject.toml").write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', text))
        out = WHEEL_CACHE / f"{src.name}-{_source_hash(work)}"
        if not out.exists():
            # Build beside the cache entry, then rename: concurrent test runs never see a half-written wheel.
            WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=WHEEL_CACHE))
            code = (
                "import sys, flit_core.buildapi as b\n"
                "print(b.build_wheel(sys.argv[1]))\n"
                "print(b.build_sdist(sys.argv[1]))\n"
            )
            subprocess.run(
                [sys.executable, "-c", code, str(staging)],
                cwd=work,
                check=True,
                timeout=60,
                capture_output=True,
                env={"SOURCE_DATE_EPOCH": "1767000000", "PATH": "/usr/bin:/bin"},
            )
            _publish(staging, out)
    return sorted(p for p in out.iterdir() if p.suffix in (".whl", ".gz"))


def build_npm(src: Path) -> Path:
    """`npm pack` of one fixture package, cached by source hash."""
    out = NPM_CACHE / f"{src.name}-{_source_hash(src)}"
    if not out.exists():
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=NPM_CACHE))
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", str(staging), str(src)],
            check=True,
            timeout=60,
            capture_output=True,
        )
        _publish(staging, out)
    return next(out.glob("*.tgz"))


@dataclass
class FleetPackages:
    """Every fixture package built: (project, version) -> files."""

    python: dict[tuple[str, str], list[Path]] = field(default_factory=dict)
    npm: dict[tuple[str, str], Path] = field(default_factory=dict)


def build_all() -> FleetPackages:
    built = FleetPackages()
    for src in sorted(p for p in PY_PACKAGES.iterdir() if (p / "pyproject.toml").exists()):
        built.python[_read_pyproject(src)] = build_python(src)
    if shutil.which("npm"):
        for src in sorted(p for p in NPM_PACKAGES.iterdir() if (p / "package.json").exists()):
            meta = json.loads((src / "package.json").read_text())
            built.npm[(meta["name"], meta["version"])] = build_npm(src)
    return built


@dataclass
class _File:
    path: Path
    project: str
    version: str
    kind: str  # bdist_wheel | sdist | npm
    uploaded: datetime
    digest_mode: str = "ok"  # ok | wrong | missing

    @property
    def sha256(self) -> str | None:
        if self.digest_mode == "missing":
            return None
        if self.digest_mode == "wrong":
            return hashlib.sha256(b"not the file " + self.path.name.encode()).hexdigest()
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class PackageIndex:
    """The loopback registry. `url` is the base (PyPI: url; npm registry: url; MCP registry: url)."""

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.yanked: dict[tuple[str, str], str] = {}  # (normalized project, version) -> reason
        self.requests: list[str] = []
        self.failure: int | None = None
        self.mcp_status: dict[str, str] = {}  # registry server name -> status (active | deprecated | deleted)
        # File URLs in the JSON API relative to the document ("../../files/x.whl"), as some PyPI mirrors serve them.
        self.relative_urls = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fleet-index", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- content ---------------------------------------------------------------------------------------
    def add_python(self, project: str, version: str, files: list[Path], uploaded: datetime | None = None) -> None:
        when = uploaded or RELEASE_DATES.get(version) or datetime(2026, 6, 1, tzinfo=UTC)
        for i, path in enumerate(files):
            kind = "bdist_wheel" if path.suffix == ".whl" else "sdist"
            self.files[path.name] = _File(path, normalize(project), version, kind, when + timedelta(seconds=i))

    def add_npm(self, name: str, version: str, tarball: Path, uploaded: datetime | None = None) -> None:
        when = uploaded or RELEASE_DATES.get(version) or datetime(2026, 6, 1, tzinfo=UTC)
        self.files[tarball.name] = _File(tarball, name, version, "npm", when)

    def publish_python(self, src: Path, version: str, uploaded: datetime | None = None) -> list[Path]:
        """Build `src` (a fixture package dir) as `version` and add it; returns the files."""
        files = build_python(src, version)
        self.add_python(_read_pyproject(src)[0], version, files, uploaded)
        return files

    def set_digest(self, filename: str, mode: str) -> None:
        """Publish a wrong digest, none at all, or the right one ('wrong' | 'missing' | 'ok') for one file."""
        if mode not in ("ok", "wrong", "missing"):
            raise ValueError(mode)
        self.files[filename].digest_mode = mode

    def yank(self, project: str, version: str, reason: str = "yanked for the test") -> None:
        self.yanked[(normalize(project), version)] = reason

    def fail_with(self, status: int | None) -> None:
        """Answer every request with this HTTP status (None: back to normal)."""
        self.failure = status

    def file_named(self, project: str, version: str, kind: str = "bdist_wheel") -> _File:
        for f in self.files.values():
            if f.project in (normalize(project), project) and f.version == version and f.kind == kind:
                return f
        raise KeyError((project, version, kind))

    # -- PyPI ------------------------------------------------------------------------------------------
    def _py_files(self, project: str) -> list[_File]:
        key = normalize(project)
        return sorted(
            (f for f in self.files.values() if f.project == key and f.kind != "npm"), key=lambda f: f.path.name
        )

    def _py_file_json(self, f: _File) -> dict[str, Any]:
        reason = self.yanked.get((f.project, f.version))
        sha = f.sha256
        return {
            "filename": f.path.name,
            "url": (
                f"../../files/{quote(f.path.name)}" if self.relative_urls else f"{self.url}/files/{quote(f.path.name)}"
            ),
            "digests": {"sha256": sha} if sha else {},
            "packagetype": f.kind,
            "python_version": "py3" if f.kind == "bdist_wheel" else "source",
            "requires_python": ">=3.9",
            "size": f.path.stat().st_size,
            "upload_time": f.uploaded.strftime("%Y-%m-%dT%H:%M:%S"),
            "upload_time_iso_8601": f.uploaded.isoformat().replace("+00:00", ".000000Z"),
            "yanked": reason is not None,
            "yanked_reason": reason,
            "comment_text": "",
            "has_sig": False,
        }

    def _pypi_json(self, project: str, version: str | None) -> dict[str, Any] | None:
        from packaging.version import Version

        files = self._py_files(project)
        if not files:
            return None
        releases: dict[str, list[dict[str, Any]]] = {}
        for f in files:
            releases.setdefault(f.version, []).append(self._py_file_json(f))
        ordered = sorted(releases, key=Version)
        stable = [v for v in ordered if not Version(v).is_prerelease and (normalize(project), v) not in self.yanked]
        latest = stable[-1] if stable else ordered[-1]
        shown = version or latest
        if shown not in releases:
            return None
        name = files[0].path.name.split("-")[0].replace("_", "-")
        reason = self.yanked.get((normalize(project), shown))
        info = {
            "name": name,
            "version": shown,
            "summary": f"MCP test server for obsmcp fleet ({name})",
            "home_page": None,
            "project_url": f"{self.url}/project/{name}/",
            "release_url": f"{self.url}/project/{name}/{shown}/",
            "project_urls": {"Changelog": f"https://example.invalid/{name}/releases/{shown}"},
            "requires_python": ">=3.9",
            "yanked": reason is not None,
            "yanked_reason": reason,
        }
        doc: dict[str, Any] = {
            "info": info,
            "last_serial": len(self.files),
            "urls": releases[shown],
            "vulnerabilities": [],
        }
        if version is None:
            doc["releases"] = releases
        return doc

    def _simple_html(self, project: str) -> str | None:
        files = self._py_files(project)
        if not files:
            return None
        links = []
        for f in files:
            sha = f.sha256
            frag = f"#sha256={sha}" if sha else ""
            reason = self.yanked.get((f.project, f.version))
            yanked = f' data-yanked="{reason}"' if reason is not None else ""
            links.append(
                f'<a href="/files/{quote(f.path.name)}{frag}" data-requires-python="&gt;=3.9"{yanked}>'
                f"{f.path.name}</a><br/>"
            )
        return "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"

    def _simple_json(self, project: str) -> dict[str, Any] | None:
        files = self._py_files(project)
        if not files:
            return None
        out = []
        for f in files:
            sha = f.sha256
            reason = self.yanked.get((f.project, f.version))
            out.append(
                {
                    "filename": f.path.name,
                    "url": f"/files/{quote(f.path.name)}",
                    "hashes": {"sha256": sha} if sha else {},
                    "requires-python": ">=3.9",
                    "yanked": reason if reason is not None else False,
                }
            )
        return {"meta": {"api-version": "1.0"}, "name": normalize(project), "files": out}

    # -- npm -------------------------------------------------------------------------------------------
    def _packument(self, name: str) -> dict[str, Any] | None:
        files = [f for f in self.files.values() if f.kind == "npm" and f.project == name]
        if not files:
            return None
        import nodesemver

        versions: dict[str, Any] = {}
        times: dict[str, str] = {}
        for f in files:
            data = f.path.read_bytes()
            with tarfile.open(f.path) as tar:
                member = tar.extractfile("package/package.json")
                manifest = json.loads(member.read()) if member else {}
            dist: dict[str, Any] = {
                "tarball": f"{self.url}/npm-files/{quote(f.path.name)}",
                "shasum": hashlib.sha1(data).hexdigest(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
            }
            if f.digest_mode == "missing":
                dist = {"tarball": dist["tarball"]}
            elif f.digest_mode == "wrong":
                bogus = b"not the file " + f.path.name.encode()
                dist["shasum"] = hashlib.sha1(bogus).hexdigest()
                dist["integrity"] = "sha512-" + base64.b64encode(hashlib.sha512(bogus).digest()).decode()
            entry = {**manifest, "_id": f"{name}@{f.version}", "dist": dist}
            reason = self.yanked.get((name, f.version))
            if reason is not None:
                entry["deprecated"] = reason
            versions[f.version] = entry
            times[f.version] = f.uploaded.isoformat().replace("+00:00", ".000Z")
        latest = nodesemver.max_satisfying(list(versions), "*", loose=False) or sorted(versions)[-1]
        times["created"] = min(times.values())
        times["modified"] = max(times.values())
        return {"_id": name, "name": name, "dist-tags": {"latest": latest}, "versions": versions, "time": times}

    # -- MCP registry ----------------------------------------------------------------------------------
    def _mcp_entries(self) -> list[dict[str, Any]]:
        from packaging.version import Version

        entries: list[dict[str, Any]] = []
        groups: dict[tuple[str, str], set[str]] = {}
        for f in self.files.values():
            registry_type = "npm" if f.kind == "npm" else "pypi"
            groups.setdefault((registry_type, f.project), set()).add(f.version)
        for (registry_type, project), versions in sorted(groups.items()):
            short = project.split("/")[-1]
            server_name = f"{MCP_REGISTRY_PREFIX}{short}"  # pypi: .../obsmcp-test-echo, npm: .../echo
            ordered = sorted(versions, key=Version)
            for v in ordered:
                f = next(x for x in self.files.values() if x.project == project and x.version == v)
                status = self.mcp_status.get(server_name, "active")
                entries.append(
                    {
                        "server": {
                            "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
                            "name": server_name,
                            "description": f"obsmcp fleet test server ({project})",
                            "version": v,
                            "repository": {"url": f"https://example.invalid/{short}", "source": "github"},
                            "packages": [
                                {
                                    "registryType": registry_type,
                                    "identifier": project,
                                    "version": v,
                                    "transport": {"type": "stdio"},
                                }
                            ],
                        },
                        "_meta": {
                            "io.modelcontextprotocol.registry/official": {
                                "status": status,
                                "publishedAt": f.uploaded.isoformat().replace("+00:00", "Z"),
                                "updatedAt": f.uploaded.isoformat().replace("+00:00", "Z"),
                                "isLatest": v == ordered[-1],
                            }
                        },
                    }
                )
        return entries

    def _mcp(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        entries = self._mcp_entries()
        rest = path.split("/servers", 1)[1]
        if rest in ("", "/"):
            search = (query.get("search") or [""])[0].lower()
            picked = [e for e in entries if search in e["server"]["name"].lower()]
            if (query.get("include_deleted") or [""])[0] != "true":  # the registry hides deleted entries by default
                picked = [e for e in picked if e["_meta"][OFFICIAL]["status"] != "deleted"]
            if (query.get("version") or [""])[0] == "latest":
                picked = [e for e in picked if e["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"]]
            return 200, {"servers": picked, "metadata": {"count": len(picked), "nextCursor": None}}
        m = re.fullmatch(r"/(.+?)/versions(?:/([^/]+))?/?", rest)
        if not m:
            return 404, {"title": "Not Found", "status": 404, "detail": "Endpoint not found"}
        name, version = unquote(m.group(1)), unquote(m.group(2)) if m.group(2) else None
        mine = [e for e in entries if e["server"]["name"] == name]
        if not mine:
            return 404, {"title": "Not Found", "status": 404, "detail": "Server not found"}
        if version is None:
            return 200, {"servers": mine, "metadata": {"count": len(mine), "nextCursor": None}}
        for e in mine:
            official = e["_meta"]["io.modelcontextprotocol.registry/official"]
            if e["server"]["version"] == version or (version == "latest" and official["isLatest"]):
                return 200, e
        return 404, {"title": "Not Found", "status": 404, "detail": "Server version not found"}

    # -- HTTP ------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, doc: Any) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json")

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                path, query = split.path, parse_qs(split.query)
                index.requests.append(path)
                if index.failure is not None:
                    self._json(index.failure, {"message": f"test failure {index.failure}"})
                    return
                if path.startswith(("/files/", "/npm-files/")):
                    f = index.files.get(unquote(path.rsplit("/", 1)[1]))
                    if f is None:
                        self._json(404, {"message": "Not Found"})
                    else:
                        self._send(200, f.path.read_bytes(), "application/octet-stream")
                    return
                if path in ("/simple", "/simple/"):
                    names = sorted({f.project for f in index.files.values() if f.kind != "npm"})
                    links = "".join(f'<a href="/simple/{n}/">{n}</a><br/>\n' for n in names)
                    self._send(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html")
                    return
                m = re.fullmatch(r"/simple/([^/]+)/?", path)
                if m:
                    if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                        doc = index._simple_json(m.group(1))
                        if doc is None:
                            self._json(404, {"message": "Not Found"})
                        else:
                            body = json.dumps(doc).encode()
                            self._send(200, body, "application/vnd.pypi.simple.v1+json")
                        return
                    html = index._simple_html(m.group(1))
                    if html is None:
                        self._send(404, b"Not Found", "text/plain")
                    else:
                        self._send(200, html.encode(), "text/html")
                    return
                m = re.fullmatch(r"/pypi/([^/]+)(?:/([^/]+))?/json/?", path)
                if m:
                    doc = index._pypi_json(m.group(1), m.group(2))
                    if doc:
                        self._json(200, doc)
                    else:
                        self._json(404, {"message": "Not Found"})
                    return
                if re.match(r"/v0(\.1)?/servers", path):
                    status, doc = index._mcp(path, query)
                    self._json(status, doc)
                    return
                name = unquote(path.lstrip("/"))
                doc = index._packument(name) if name else None
                if doc:
                    self._json(200, doc)
                else:
                    self._json(404, {"error": "Not found"})

        return Handler


@pytest.fixture(scope="session")
def fleet_packages() -> FleetPackages:
    return build_all()


@pytest.fixture
def fleet_index(fleet_packages: FleetPackages) -> Iterator[PackageIndex]:
    index = PackageIndex()
    for (project, version), files in fleet_packages.python.items():
        index.add_python(project, version, files)
    for (name, version), tarball in fleet_packages.npm.items():
        index.add_npm(name, version, tarball)
    try:
        yield index
    finally:
        index.close()


VERDACCIO_DIR = ROOT / "build" / "verdaccio"
VERDACCIO_BIN = VERDACCIO_DIR / "node_modules" / ".bin" / "verdaccio"


def install_verdaccio() -> Path:
    """npm-install the pinned verdaccio into build/verdaccio (once); returns its executable."""
    import fcntl

    spec = DATA / "verdaccio" / "package.json"
    stamp = VERDACCIO_DIR / ".installed-from"
    VERDACCIO_DIR.mkdir(parents=True, exist_ok=True)
    with (VERDACCIO_DIR.parent / "verdaccio.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one install at a time across concurrent test runs
        if VERDACCIO_BIN.exists() and stamp.exists() and stamp.read_text() == spec.read_text():
            return VERDACCIO_BIN
        shutil.copy(spec, VERDACCIO_DIR / "package.json")
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=VERDACCIO_DIR,
            check=True,
            timeout=300,
            capture_output=True,
        )
        stamp.write_text(spec.read_text())
    return VERDACCIO_BIN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NpmRegistry:
    url: str  # ends with '/'
    recorded: bool  # True: recorded packuments from PackageIndex, not verdaccio
    userconfig: Path  # an npmrc for `npm --userconfig` (token for the loopback registry only)
    index: PackageIndex | None = None


def start_verdaccio(workdir: Path, tarballs: list[Path]) -> tuple[subprocess.Popen[bytes], NpmRegistry]:
    exe = install_verdaccio()
    port = _free_port()
    (workdir / "config.yaml").write_text(
        "storage: ./storage\n"
        "auth:\n  htpasswd:\n    file: ./htpasswd\n    max_users: -1\n"
        "uplinks: {}\n"
        "packages:\n  '**':\n    access: $all\n    publish: $all\n    unpublish: $all\n"
        f"listen: 127.0.0.1:{port}\n"
        "log: {type: stdout, format: json, level: warn}\n"
    )
    url = f"http://127.0.0.1:{port}/"
    npmrc = workdir / "npmrc"
    npmrc.write_text(f"//127.0.0.1:{port}/:_authToken=local-test-token\n")
    log = (workdir / "verdaccio.log").open("wb")
    proc = subprocess.Popen([str(exe), "--config", str(workdir / "config.yaml")], cwd=workdir, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "-/ping", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"verdaccio did not start: {(workdir / 'verdaccio.log').read_text()[-500:]}"
                ) from None
            time.sleep(0.1)
    env = {**os.environ, "npm_config_cache": str(workdir / "npm-cache")}
    for tarball in tarballs:
        subprocess.run(
            ["npm", "publish", "--userconfig", str(npmrc), "--registry", url, str(tarball)],
            check=True,
            timeout=60,
            capture_output=True,
            env=env,
        )
    return proc, NpmRegistry(url=url, recorded=False, userconfig=npmrc)


@pytest.fixture(scope="session")
def npm_registry(fleet_packages: FleetPackages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NpmRegistry]:
    workdir = tmp_path_factory.mktemp("verdaccio")
    tarballs = [fleet_packages.npm[k] for k in sorted(fleet_packages.npm)]
    try:
        proc, registry = start_verdaccio(workdir, tarballs)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        index = PackageIndex()
        for (name, version), tarball in fleet_packages.npm.items():
            index.add_npm(name, version, tarball)
        npmrc = workdir / "npmrc"
        npmrc.write_text("")
        print(f"verdaccio unavailable ({exc}); npm tests use recorded registry documents")
        try:
            yield NpmRegistry(url=index.url + "/", recorded=True, userconfig=npmrc, index=index)
        finally:
            index.close()
        return
    try:
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
