"""What the registries say about a package: its releases, their files and digests, and its official MCP listing.

- PyPI JSON API (`<pypi_url>/pypi/<name>/json`): every release with its files; each file's `digests.sha256` becomes
  `Artifact.sha256` (None when the index publishes none: `fleet update` then refuses unless --allow-unverified).
  Yanked releases (PEP 592) stay listed with `yanked=True` and are never picked as "latest".
- npm registry packument (`<npm_registry>/<name>`, scoped names as `@scope%2fname`): `dist-tags.latest`, every
  version's `dist.tarball`, `dist.integrity` (SRI, `sha512-<base64>`) and legacy `dist.shasum` (sha1). npm publishes
  no sha256, so the npm Artifact has `sha256=None` and the integrity string travels in `Release.extra["integrity"]`:
  `fleet update` verifies the downloaded tarball against that sha512 (the digest npm itself checks), and treats a
  version without `integrity` as unverified. A deprecated version counts as yanked.
- Official MCP registry (`<mcp_registry>/v0.1/servers?search=...&version=latest`): the server entry that lists this
  package (registryType + identifier), its latest version, status (active/deprecated/deleted) and `fileSha256`
  (published for MCPB bundles only; the registry itself does not validate it).

All requests go through obsmcp's resilient HTTP client (timeouts, retries with backoff, circuit breaker); nothing
is cached, so an update re-reads the registry right before it downloads (no time-of-check/time-of-use gap).
Failures raise FleetNetworkError (what failed, what to check) or FleetValidationError (no such package/version).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin

from obsmcp.fleet import versions
from obsmcp.fleet.model import (
    Artifact,
    FleetNetworkError,
    FleetSettings,
    FleetValidationError,
    PackageKind,
    Release,
)
from obsmcp.fleet.verify import validate_package
from obsmcp.http import (
    CLIENT_LOOP,
    BackendClientConfig,
    BackendConnectError,
    BackendError,
    BackendHTTPError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    BreakerPolicy,
    CachePolicy,
    RetryPolicy,
    backend_client,
    safe_url,
)

TIMEOUT_S = 60.0  # a whole registry call, retries included
OFFICIAL_META = "io.modelcontextprotocol.registry/official"
_CLIENT_LOCK = threading.Lock()
_NOTES_KEYS = ("changelog", "release notes", "release-notes", "changes", "history", "news", "what's new")


@dataclass(frozen=True)
class PackageReleases:
    """Every release a registry lists for one package, oldest first."""

    kind: PackageKind
    package: str
    releases: tuple[Release, ...]
    latest_tag: str | None = None  # npm dist-tags.latest; PyPI info.version
    project_url: str | None = None

    def get(self, version: str) -> Release | None:
        for r in self.releases:
            if r.version == version:
                return r
        return None

    def latest(self, *, prereleases: bool = False) -> Release | None:
        """The newest release that is not yanked (nor a pre-release unless asked); npm's `latest` tag wins when it
        names such a release (a maintainer may keep `latest` on an older line)."""
        ok = [
            r
            for r in self.releases
            if not r.yanked and (prereleases or not versions.is_prerelease(self.kind, r.version))
        ]
        if self.kind == "npm" and not prereleases and self.latest_tag:
            tagged = [r for r in ok if r.version == self.latest_tag]
            if tagged:
                return tagged[0]
        return ok[-1] if ok else None

    def between(self, installed: str, target: str) -> list[Release]:
        """Releases newer than `installed` up to and including `target`: what an update would bring in."""
        return [
            r
            for r in self.releases
            if versions.is_newer(self.kind, r.version, installed)
            and not versions.is_newer(self.kind, r.version, target)
        ]


@dataclass(frozen=True)
class RegistryPackage:
    registry_type: str
    identifier: str
    version: str | None
    file_sha256: str | None = None


@dataclass(frozen=True)
class RegistryListing:
    """The official MCP registry's entry for a server (its latest version)."""

    name: str
    version: str
    status: str  # active | deprecated | deleted
    published: datetime | None
    packages: tuple[RegistryPackage, ...]
    repository_url: str | None = None

    def package_for(self, kind: PackageKind, identifier: str) -> RegistryPackage | None:
        for p in self.packages:
            if p.registry_type == kind and _same_name(kind, p.identifier, identifier):
                return p
        return None


def _same_name(kind: str, a: str, b: str) -> bool:
    if kind == "pypi":
        return re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()
    return a == b


# -- HTTP -------------------------------------------------------------------------------------------------


def _get_json(base_url: str, label: str, path: str, params: dict[str, str] | None = None) -> Any | None:
    """GET JSON from a registry; None on 404; FleetNetworkError on anything else that is not an answer."""
    base = base_url.rstrip("/")
    config = BackendClientConfig(
        name="fleet-" + label.lower().replace(" ", "-"),  # one client per registry (a new URL replaces it)
        base_url=base,
        kind=f"fleet-{label}",
        connect_timeout_s=5.0,
        read_timeout_s=20.0,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=0.3, backoff_max_s=3.0),
        breaker=BreakerPolicy(failure_threshold=5, open_s=30.0),
        cache=CachePolicy(metadata_ttl_s=0, query_ttl_s=0),
        headers={"Accept": "application/json"},
    )
    with _CLIENT_LOCK:  # backend_client() is not atomic: parallel checks must not both create the client
        client = backend_client(config)
    where = f"{label} at {config.display_url}"
    try:
        return CLIENT_LOOP.call(client.get_json(path, params), TIMEOUT_S).data
    except BackendHTTPError as exc:
        if exc.status == 404:
            return None
        raise FleetNetworkError(
            f"{where} answered HTTP {exc.status} for {path}", hint=f"check fleet.{_setting(label)} and try again later"
        ) from exc
    except BackendTimeout as exc:
        raise FleetNetworkError(f"{where} did not answer within {exc.timeout_s:g} s", hint="try again later") from exc
    except BackendConnectError as exc:
        raise FleetNetworkError(
            f"cannot reach {where} ({exc.reason})", hint=f"check the network, a proxy, or fleet.{_setting(label)}"
        ) from exc
    except BackendUnavailable as exc:
        raise FleetNetworkError(
            f"{where} failed repeatedly; not asking again for {exc.retry_in_s:.0f} s", hint="try again later"
        ) from exc
    except BackendResponseError as exc:
        raise FleetNetworkError(
            f"{where} sent a non-JSON answer for {path}", hint=f"is fleet.{_setting(label)} a {label} registry?"
        ) from exc
    except BackendError as exc:
        raise FleetNetworkError(f"{where}: {exc.message}", hint="try again later") from exc
    except TimeoutError as exc:
        raise FleetNetworkError(f"{where} did not answer within {TIMEOUT_S:g} s", hint="try again later") from exc


def _setting(label: str) -> str:
    return {"PyPI": "pypi_url", "npm": "npm_registry", "MCP registry": "mcp_registry"}.get(label, label)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# -- PyPI -------------------------------------------------------------------------------------------------


def _notes_url(urls: dict[str, Any] | None, fallback: str | None) -> str | None:
    known: dict[str, str] = {str(k).lower(): str(v) for k, v in (urls or {}).items() if v}
    for key in (*_NOTES_KEYS, "homepage", "home", "source", "repository", "source code"):
        if key in known:
            return known[key]
    return fallback


def _sha256(digests: Any) -> str | None:
    value = digests.get("sha256") if isinstance(digests, dict) else None
    return str(value) if value else None


def pypi_releases(fleet: FleetSettings, package: str) -> PackageReleases:
    validate_package("pypi", package)
    path = f"/pypi/{quote(package)}/json"
    doc = _get_json(fleet.pypi_url, "PyPI", path)
    # File URLs may be relative to the document (mirrors serve them so): resolve them as a browser would.
    document_url = fleet.pypi_url.rstrip("/") + path
    where = safe_url(fleet.pypi_url)  # the configured URL may carry user:token
    if doc is None:
        raise FleetValidationError(
            f"PyPI at {where} has no project {package!r}", hint="check the package name in the client config"
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("releases"), dict):
        raise FleetNetworkError(f"PyPI at {where} sent an unexpected document for {package!r}")
    info = doc.get("info") or {}
    if not isinstance(info, dict) or not all(isinstance(v, list | None) for v in doc["releases"].values()):
        raise FleetNetworkError(f"PyPI at {where} sent an unexpected document for {package!r}")
    project_url = info.get("project_url") or info.get("package_url") or info.get("home_page")
    urls = info.get("project_urls")
    notes = _notes_url(urls if isinstance(urls, dict) else None, project_url)
    releases = []
    for version in versions.sort_versions("pypi", doc["releases"]):
        files = [f for f in doc["releases"][version] or [] if isinstance(f, dict)]
        artifacts = tuple(
            Artifact(
                url=urljoin(document_url, str(f.get("url", ""))),
                filename=str(f.get("filename", "")),
                sha256=_sha256(f.get("digests")),
                size=f.get("size") if isinstance(f.get("size"), int) else None,
            )
            for f in files
        )
        times = [t for f in files if (t := _parse_time(f.get("upload_time_iso_8601") or f.get("upload_time")))]
        yanked = bool(files) and all(f.get("yanked") for f in files)
        reason = next((str(f["yanked_reason"]) for f in files if f.get("yanked_reason")), "")
        releases.append(
            Release(
                kind="pypi",
                package=str(info.get("name") or package),
                version=version,
                artifacts=artifacts,
                published=min(times) if times else None,
                yanked=yanked,
                notes_url=notes,
                extra={"yanked_reason": reason} if reason else {},
            )
        )
    return PackageReleases("pypi", package, tuple(releases), info.get("version"), project_url)


# -- npm --------------------------------------------------------------------------------------------------


def npm_releases(fleet: FleetSettings, package: str) -> PackageReleases:
    validate_package("npm", package)
    doc = _get_json(fleet.npm_registry, "npm", "/" + quote(package, safe="@"))
    where = safe_url(fleet.npm_registry)  # the configured URL may carry user:token
    if doc is None:
        raise FleetValidationError(
            f"the npm registry at {where} has no package {package!r}",
            hint="check the package name in the client config",
        )
    unexpected = FleetNetworkError(f"the npm registry at {where} sent an unexpected document for {package!r}")
    if not isinstance(doc, dict) or not isinstance(doc.get("versions"), dict):
        raise unexpected
    times = doc.get("time") or {}
    if not isinstance(times, dict):
        raise unexpected
    homepage = doc.get("homepage")
    repo = doc.get("repository")
    repo_url = repo.get("url") if isinstance(repo, dict) else repo if isinstance(repo, str) else None
    releases = []
    for version in versions.sort_versions("npm", doc["versions"]):
        manifest = doc["versions"][version] or {}
        dist = manifest.get("dist") or {} if isinstance(manifest, dict) else None
        if not isinstance(manifest, dict) or not isinstance(dist, dict):
            raise unexpected
        tarball = str(dist.get("tarball", ""))
        extra = {k: str(dist[k]) for k in ("integrity", "shasum") if dist.get(k)}
        if manifest.get("deprecated"):
            extra["deprecated"] = str(manifest["deprecated"])
        releases.append(
            Release(
                kind="npm",
                package=package,
                version=version,
                artifacts=(Artifact(url=tarball, filename=tarball.rsplit("/", 1)[-1], sha256=None),),
                published=_parse_time(times.get(version)),
                yanked=bool(manifest.get("deprecated")),
                notes_url=manifest.get("homepage") or homepage or repo_url,
                extra=extra,
            )
        )
    latest = (doc.get("dist-tags") or {}).get("latest")
    return PackageReleases("npm", package, tuple(releases), latest, homepage or repo_url)


def package_releases(fleet: FleetSettings, kind: PackageKind, package: str) -> PackageReleases:
    if kind == "pypi":
        return pypi_releases(fleet, package)
    if kind == "npm":
        return npm_releases(fleet, package)
    raise FleetValidationError(f"package kind {kind!r} has no registry", hint="only pypi and npm packages update")


def resolve_release(fleet: FleetSettings, kind: PackageKind, package: str, version: str | None) -> Release:
    """The release to install: `version` exactly (or, for npm, the newest matching a range), or the latest
    non-yanked stable release when None. Raises FleetValidationError when there is none."""
    found = package_releases(fleet, kind, package)
    if version is None:
        release = found.latest()
        if release is None:
            raise FleetValidationError(
                f"{package} has no installable release (all yanked or pre-releases)",
                hint="name a version explicitly",
            )
        return release
    if versions.is_range(kind, version):
        best = versions.max_satisfying(kind, [r.version for r in found.releases if not r.yanked], version)
        release = found.get(best) if best else None
    else:
        release = found.get(version)
    if release is None:
        known = ", ".join(r.version for r in found.releases[-5:]) or "none"
        raise FleetValidationError(f"{package} has no release {version!r}", hint=f"newest releases: {known}")
    return release


# -- official MCP registry -------------------------------------------------------------------------------


def _listing(item: dict[str, Any]) -> RegistryListing | None:
    server = item.get("server") if isinstance(item.get("server"), dict) else item
    if not isinstance(server, dict) or not server.get("name"):
        return None
    official = (item.get("_meta") or {}).get(OFFICIAL_META) or (server.get("_meta") or {}).get(OFFICIAL_META) or {}
    packages = tuple(
        RegistryPackage(
            registry_type=str(p.get("registryType", "")),
            identifier=str(p.get("identifier", "")),
            version=p.get("version"),
            file_sha256=p.get("fileSha256"),
        )
        for p in server.get("packages") or []
        if isinstance(p, dict)
    )
    repo = server.get("repository")
    return RegistryListing(
        name=str(server["name"]),
        version=str(server.get("version", "")),
        status=str(official.get("status", "active")),
        published=_parse_time(official.get("publishedAt")),
        packages=packages,
        repository_url=repo.get("url") if isinstance(repo, dict) else None,
    )


def mcp_registry_lookup(
    fleet: FleetSettings, kind: PackageKind, package: str, *, max_pages: int = 5
) -> RegistryListing | None:
    """The official MCP registry's latest entry that ships `package`, or None when it is not listed. The registry
    searches server names (io.github.owner/repo), not packages: the package's last name part is tried, then
    that part without the usual mcp-server- / -mcp affixes; deleted entries are included (a kill-switch)."""
    validate_package(kind, package)
    last = package.rsplit("/", 1)[-1]
    core = re.sub(r"^(mcp[-_]server[-_]|server[-_]|mcp[-_])|([-_]mcp[-_]server|[-_]mcp[-_]?)$", "", last)
    for term in dict.fromkeys(t for t in (last, core) if len(t) >= 3):
        found = _search(fleet, kind, package, term, max_pages)
        if found is not None:
            return found
    return None


def _search(fleet: FleetSettings, kind: PackageKind, package: str, term: str, max_pages: int) -> RegistryListing | None:
    cursor: str | None = None
    for _ in range(max_pages):
        params = {"search": term, "version": "latest", "limit": "100", "include_deleted": "true"}
        if cursor:
            params["cursor"] = cursor
        doc = _get_json(fleet.mcp_registry, "MCP registry", "/v0.1/servers", params)
        if not isinstance(doc, dict):
            return None
        for item in doc.get("servers") or []:
            listing = _listing(item) if isinstance(item, dict) else None
            if listing is not None and listing.package_for(kind, package) is not None:
                return listing
        cursor = (doc.get("metadata") or {}).get("nextCursor")
        if not cursor:
            return None
    return None


__all__ = [
    "PackageReleases",
    "RegistryListing",
    "RegistryPackage",
    "mcp_registry_lookup",
    "npm_releases",
    "package_releases",
    "pypi_releases",
    "resolve_release",
    "validate_package",
]
