"""Download, verify and install one release into servers/<name>/versions/<ver>, all or nothing.

Order (verify before anything is built): the artifact is downloaded into staging/<name>/ with a size cap while it
is hashed; its digest is checked against the registry's (verify.py); only then is it installed into
versions/<ver>.staging (PyPI: its own virtualenv, pip installing the verified local file plus its dependencies
from the configured index; npm: `npm install --prefix` of the verified tarball). The directory is renamed to
versions/<ver> only once complete, so an interrupted install leaves a `.staging` directory that the next run of
any fleet command on that server removes (`clear_leftovers`), never a half-installed version.

No shell anywhere: every subprocess gets an argument list, and every name and version in it was validated.
Each installed version holds `obsmcp-run`, a two-line sh script with absolute paths that execs its entry point
(the stable launcher in bin/ execs `active/obsmcp-run`). Virtualenvs are not relocatable, so scripts are run as
`<venv>/bin/python <venv>/bin/<script>` rather than through their (staging-path) shebang lines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from obsmcp.fleet.model import (
    Artifact,
    FleetConfigError,
    FleetError,
    FleetNetworkError,
    FleetPaths,
    FleetSettings,
    FleetValidationError,
    Release,
)
from obsmcp.fleet.state import ServerState, fsync_dir
from obsmcp.fleet.verify import (
    ArtifactHasher,
    Verification,
    validate_entry,
    validate_package,
    validate_version,
    verify_artifact,
)
from obsmcp.redaction import Redactor

MAX_ARTIFACT_BYTES = 256 * 1024 * 1024  # refuse bigger downloads: no MCP server package comes near this
DOWNLOAD_DEADLINE_S = 900.0  # a whole download, however slowly the bytes trickle in
MAX_REDIRECTS = 5
INSTALL_TIMEOUT_S = 900.0
RUN_SCRIPT = "obsmcp-run"
STAGING_SUFFIX = ".staging"
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


_REDACT = Redactor().redact
EntryChoice = tuple[str | None, str | None]  # (required entry, preferred entry)


class InstallError(FleetError):
    kind = "install"


@dataclass(frozen=True)
class InstalledFiles:
    version_dir: Path
    entry: str
    verification: Verification
    filename: str


class DownloadProgress(Protocol):
    def advance(self, n: int) -> None: ...
    def close(self) -> None: ...


ProgressFactory = Callable[[str, int | None], DownloadProgress]  # (filename, size if known) -> a progress bar


def find_leftovers(paths: FleetPaths, name: str, state: ServerState | None) -> list[Path]:
    """What an interrupted run left behind: the staging download, `.staging` installs, install logs, and version
    directories the state file does not know (renamed, but the run died before recording them).

    The directory `active` points at is never a leftover. Without a state file (lost or moved away) nothing says
    which versions are complete, so only the staging areas count: installed versions are left alone."""
    found: list[Path] = []
    staging = paths.staging / name
    if staging.exists():
        found.append(staging)
    versions = paths.versions(name)
    try:
        active = Path(os.readlink(paths.active(name))).name
    except OSError:
        active = None
    known = set(state.versions) if state else set()
    if versions.is_dir():
        for d in versions.iterdir():
            unknown = state is not None and d.name not in known and d.name != active
            if d.name.endswith(STAGING_SUFFIX) or unknown:
                found.append(d)
    return found


def clear_leftovers(paths: FleetPaths, name: str, state: ServerState | None) -> list[Path]:
    """Remove `find_leftovers`. Call with the server lock held (then no other run can be using them)."""
    found = find_leftovers(paths, name, state)
    for path in found:
        _rmtree(path)
    return found


def pick_artifact(release: Release) -> Artifact:
    """The file to install: for PyPI a wheel this Python can use (pure-Python preferred), else the sdist."""
    if not release.artifacts:
        raise FleetNetworkError(
            f"the registry lists no downloadable file for {release.package} {release.version}",
            hint="pick another version with --version",
        )
    if release.kind != "pypi":
        return release.artifacts[0]
    supported = {str(t) for t in sys_tags()}
    wheels: list[tuple[int, Artifact]] = []
    for a in release.artifacts:
        if not a.filename.endswith(".whl"):
            continue
        try:
            _, _, _, tags = parse_wheel_filename(a.filename)
        except InvalidWheelFilename:
            continue
        names = {str(t) for t in tags}
        if names & supported:
            wheels.append((0 if any(t.endswith("-none-any") for t in names) else 1, a))
    if wheels:
        return sorted(wheels, key=lambda x: x[0])[0][1]
    sdists = [a for a in release.artifacts if a.filename.endswith((".tar.gz", ".zip"))]
    if sdists:
        return sdists[0]
    raise FleetValidationError(
        f"no file of {release.package} {release.version} installs on this Python ({sys.version.split()[0]})",
        hint="pick another version with --version",
    )


def download(
    artifact: Artifact,
    dest_dir: Path,
    *,
    max_bytes: int = MAX_ARTIFACT_BYTES,
    progress: ProgressFactory | None = None,
    timeout_s: float = 60.0,
    total_timeout_s: float = DOWNLOAD_DEADLINE_S,
    follow_redirects: bool = True,
) -> tuple[Path, ArtifactHasher]:
    """Stream the artifact to dest_dir/<filename>, hashing as it arrives; refuse more than max_bytes.

    Redirects are followed only to https or to the same host (registries serve files from a CDN), never when
    `follow_redirects` is False (an unverified download must come from the URL the registry named); the whole
    download must finish within total_timeout_s."""
    if not _SAFE_FILENAME.match(artifact.filename) or ".." in artifact.filename:
        raise FleetValidationError(f"refusing artifact file name {artifact.filename!r}", hint="the registry is suspect")
    scheme = urlsplit(artifact.url).scheme
    if scheme not in ("http", "https"):
        raise FleetValidationError(f"refusing to download from a {scheme or 'relative'} URL: {artifact.url!r}")
    if artifact.size is not None and artifact.size > max_bytes:
        raise _too_big(artifact, artifact.size, max_bytes)
    target = dest_dir / artifact.filename
    hasher = ArtifactHasher()
    deadline = time.monotonic() + total_timeout_s
    url = artifact.url
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", url) as resp:
                    if resp.is_redirect and resp.next_request is not None:
                        url = _allowed_redirect(artifact, url, str(resp.next_request.url), follow_redirects)
                        continue
                    _save(resp, artifact, target, hasher, max_bytes, progress, deadline, total_timeout_s)
                    return target, hasher
    except httpx.HTTPError as e:
        raise FleetNetworkError(
            f"downloading {artifact.filename} failed: {type(e).__name__}",
            hint="check the network and the registry URL in the [fleet] settings, then try again",
        ) from e
    except OSError as e:
        raise InstallError(
            f"saving the download of {artifact.filename} failed: {e.strerror or type(e).__name__}",
            hint=f"check free space and permissions of {dest_dir}; nothing was installed",
        ) from e
    raise FleetNetworkError(
        f"downloading {artifact.filename} failed: more than {MAX_REDIRECTS} redirects",
        hint="the registry is misconfigured; nothing was installed",
    )


def _allowed_redirect(artifact: Artifact, current: str, location: str, follow: bool) -> str:
    here, there = urlsplit(current), urlsplit(location)
    same_host = (there.scheme, there.hostname, there.port) == (here.scheme, here.hostname, here.port)
    if follow and (there.scheme == "https" or same_host):
        return location
    raise FleetNetworkError(
        f"downloading {artifact.filename} failed: refusing a redirect from {here.scheme}://{here.hostname} "
        f"to {there.scheme}://{there.hostname}",
        hint="only redirects to https or to the same host are followed, and none for unverified downloads",
    )


def _save(
    resp: httpx.Response,
    artifact: Artifact,
    target: Path,
    hasher: ArtifactHasher,
    max_bytes: int,
    progress: ProgressFactory | None,
    deadline: float,
    total_timeout_s: float,
) -> None:
    if resp.status_code != 200:
        raise FleetNetworkError(
            f"downloading {artifact.filename} failed: HTTP {resp.status_code}",
            hint="check the registry URL in the [fleet] settings, or try again later",
        )
    length = int(resp.headers.get("content-length", "0") or 0) or None
    if length is not None and length > max_bytes:
        raise _too_big(artifact, length, max_bytes)
    bar = progress(artifact.filename, length or artifact.size) if progress else None
    try:
        with open(target, "wb") as f:
            for chunk in resp.iter_bytes(65536):
                hasher.update(chunk)
                if hasher.size > max_bytes:
                    raise _too_big(artifact, hasher.size, max_bytes)
                if time.monotonic() > deadline:
                    raise FleetNetworkError(
                        f"downloading {artifact.filename} took longer than {total_timeout_s:g} s",
                        hint="check the network, then try again",
                    )
                f.write(chunk)
                if bar:
                    bar.advance(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    finally:
        if bar:
            bar.close()


def _too_big(artifact: Artifact, size: int, cap: int) -> FleetValidationError:
    return FleetValidationError(
        f"{artifact.filename} is larger than the {cap // (1024 * 1024)} MiB download cap ({size} bytes so far)",
        hint="this is not a normal MCP server package; nothing was installed",
    )


def install_release(
    fleet: FleetSettings,
    paths: FleetPaths,
    name: str,
    release: Release,
    *,
    allow_unverified: bool = False,
    entry: str | None = None,
    preferred_entry: str | None = None,
    progress: ProgressFactory | None = None,
    max_bytes: int = MAX_ARTIFACT_BYTES,
) -> InstalledFiles:
    """Download + verify + install into versions/<ver> (complete, or not there at all). Call with the lock held.

    `entry` must exist in the package; `preferred_entry` (what the previous version ran) is used if it still does."""
    validate_package(release.kind, release.package)
    version = validate_version(release.kind, release.version)
    if entry is not None:
        validate_entry(entry)
    final = paths.version_dir(name, version)
    if final.exists():
        raise InstallError(f"{final} already exists", hint="run `obsmcp fleet cleanup` or remove it, then retry")
    artifact = pick_artifact(release)
    staging_dl = paths.staging / name
    work = final.with_name(final.name + STAGING_SUFFIX)
    try:
        file, hasher = download(
            artifact, staging_dl, max_bytes=max_bytes, progress=progress, follow_redirects=not allow_unverified
        )
        verification = verify_artifact(
            hasher, artifact, integrity=release.extra.get("integrity"), allow_unverified=allow_unverified
        )
        _rmtree(work)
        work.mkdir(parents=True)
        if release.kind == "pypi":
            chosen = _install_pypi(fleet, release, file, work, final, (entry, preferred_entry))
        else:
            chosen = _install_npm(fleet, release, file, work, final, (entry, preferred_entry))
        os.sync()  # the installed files reach the disk before the rename makes them the version (power loss)
        os.rename(work, final)  # the commit point: before it nothing is installed, after it everything is
        fsync_dir(final.parent)
    except BaseException:
        _rmtree(work)
        raise
    finally:
        _rmtree(staging_dl)
    return InstalledFiles(version_dir=final, entry=chosen, verification=verification, filename=artifact.filename)


def run_command(version_dir: Path) -> list[str]:
    """The argv that starts an installed version (what the launcher ends up exec'ing)."""
    return [str(version_dir / RUN_SCRIPT)]


# ---- PyPI -------------------------------------------------------------------------------------------------


def _install_pypi(
    fleet: FleetSettings, release: Release, file: Path, work: Path, final: Path, entry: EntryChoice
) -> str:
    have_pip = importlib.util.find_spec("pip") is not None
    venv_cmd = [sys.executable, "-m", "venv", *(["--without-pip"] if have_pip else []), str(work)]
    _run(venv_cmd, work, "creating the virtualenv")
    py = work / "bin" / "python"
    index = fleet.pypi_url.rstrip("/") + "/simple"
    pip = [sys.executable, "-m", "pip", "--python", str(py)] if have_pip else [str(py), "-m", "pip"]
    _run(
        [*pip, "install", "--no-input", "--disable-pip-version-check", "--index-url", index, str(file)],
        work,
        f"pip install of {file.name}",
        env=_pip_env(),
    )
    scripts, installed = _pypi_console_scripts(work, release.package)
    if installed is None or Version(installed) != Version(release.version):
        raise InstallError(
            f"{release.package} {release.version} did not install (found {installed or 'nothing'})",
            hint="the file's metadata does not match the registry's release",
        )
    chosen = _choose_entry(release.package, scripts, entry)
    _write_run_script(work, [str(final / "bin" / "python"), str(final / "bin" / chosen)])
    return chosen


def _pip_env() -> dict[str, str]:
    """The configured index is the only package source: pip config files and the PIP_* variables that add
    sources are ignored (the rest, e.g. PIP_CERT or proxies, still applies)."""
    sources = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CONFIG_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in sources}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _pypi_console_scripts(venv: Path, package: str) -> tuple[list[str], str | None]:
    from importlib.metadata import distributions

    site = sorted(venv.glob("lib/python*/site-packages"))
    want = canonicalize_name(package)
    for dist in distributions(path=[str(p) for p in site]):
        if canonicalize_name(dist.metadata["Name"] or "") == want:
            scripts = sorted(ep.name for ep in dist.entry_points if ep.group == "console_scripts")
            return scripts, dist.version
    return [], None


# ---- npm --------------------------------------------------------------------------------------------------


def _install_npm(
    fleet: FleetSettings, release: Release, file: Path, work: Path, final: Path, entry: EntryChoice
) -> str:
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise FleetConfigError("npm and node are needed to install npm servers", hint="install Node.js (with npm)")
    # --ignore-scripts: install scripts are arbitrary code run at install time; MCP servers do not need them.
    cmd = [npm, "install", "--prefix", str(work), "--registry", fleet.npm_registry, "--no-audit", "--no-fund"]
    cmd += ["--no-save", "--no-package-lock", "--ignore-scripts", "--omit=dev", "--loglevel=error", str(file)]
    _run(cmd, work, f"npm install of {file.name}")
    pkg_dir = work / "node_modules" / release.package
    try:
        meta = json.loads((pkg_dir / "package.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InstallError(f"{release.package} did not install: {type(e).__name__}") from e
    if meta.get("version") != release.version:
        raise InstallError(
            f"{release.package} {release.version} did not install (found {meta.get('version')!r})",
            hint="the tarball's package.json does not match the registry's release",
        )
    raw_bin = meta.get("bin")
    bins: dict[str, str] = {}
    if isinstance(raw_bin, str):
        bins[release.package.rsplit("/", 1)[-1]] = raw_bin
    elif isinstance(raw_bin, dict):
        bins = {str(k): str(v) for k, v in raw_bin.items()}
    chosen = _choose_entry(release.package.rsplit("/", 1)[-1], sorted(bins), entry)
    target = (pkg_dir / bins[chosen]).resolve()
    if not target.is_relative_to(pkg_dir.resolve()):
        raise InstallError(f"{release.package}'s bin {chosen!r} points outside the package", hint="refusing to run it")
    rel = target.relative_to(work.resolve())
    _write_run_script(work, [str(Path(node).resolve()), str(final / rel)])
    return chosen


# ---- shared -----------------------------------------------------------------------------------------------


def _choose_entry(package: str, scripts: list[str], choice: EntryChoice) -> str:
    entry, preferred = choice
    if preferred is not None and entry is None and preferred in scripts:
        return preferred
    if entry is not None:
        if entry not in scripts:
            raise FleetValidationError(
                f"{package} has no command {entry!r} (it has: {', '.join(scripts) or 'none'})",
                hint="pass one of those with --entry",
            )
        return entry
    if len(scripts) == 1:
        return validate_entry(scripts[0])
    canonical = canonicalize_name(package)
    for s in scripts:
        if canonicalize_name(s) == canonical:
            return validate_entry(s)
    if not scripts:
        raise InstallError(f"{package} installs no command to start it", hint="obsmcp manages servers with a command")
    raise FleetValidationError(
        f"{package} installs several commands ({', '.join(scripts)})", hint="pick the server with --entry NAME"
    )


def _write_run_script(work: Path, argv: list[str]) -> None:
    body = "#!/bin/sh\n# written by obsmcp fleet: starts this version; do not edit\n"
    body += "exec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n'
    path = work / RUN_SCRIPT
    path.write_text(body)
    path.chmod(0o755)


def _run(cmd: list[str], work: Path, what: str, env: dict[str, str] | None = None) -> None:
    log = work.parent / f".{work.name}.log"
    try:
        with open(log, "w+b") as out:
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                    env=env,
                )
            except subprocess.TimeoutExpired:
                raise InstallError(f"{what} took longer than {INSTALL_TIMEOUT_S:g} s", hint="try again") from None
            except OSError as e:
                raise InstallError(f"{what} could not start: {e.strerror}") from e
            if proc.returncode != 0:
                out.seek(0)
                tail = _REDACT(out.read()[-3000:].decode(errors="replace").strip())  # output may echo tokens
                raise InstallError(
                    f"{what} failed (exit {proc.returncode})\n{tail}",
                    hint="nothing was installed and the active version is untouched",
                )
    finally:
        log.unlink(missing_ok=True)


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "MAX_ARTIFACT_BYTES",
    "DownloadProgress",
    "InstallError",
    "InstalledFiles",
    "clear_leftovers",
    "download",
    "find_leftovers",
    "install_release",
    "pick_artifact",
    "run_command",
]
