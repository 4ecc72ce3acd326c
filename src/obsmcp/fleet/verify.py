"""Input validation (server names, package names, versions) and artifact verification (digests).

Everything that ends up in a path, a launcher or a subprocess argument list goes through `validate_*` first:
no path separators, no '..', no leading '-' (which a tool would read as an option), nothing outside the
ecosystem's own naming rules. Verification compares the digest of the bytes actually downloaded with the digest
the registry publishes: a mismatch is always refused; a missing digest is refused unless the user explicitly
allows unverified installs, and then the audit log says "unverified".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from obsmcp.fleet.model import SERVER_NAME, Artifact, FleetValidationError, PackageKind, VerificationError

# PEP 508 / PyPA "core metadata" name rule.
_PYPI_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# npm's validate-npm-package-name (new packages): lower case, URL-safe, optional @scope/, <= 214 chars.
_NPM_NAME = re.compile(r"^(?:@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*$")
# semver.org 2.0.0 (the regex the spec publishes).
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SAFE_VERSION_CHARS = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+!_-]{0,63}$")
_SRI = re.compile(r"^(sha256|sha384|sha512)-([A-Za-z0-9+/=]+)$")


def validate_server_name(name: str) -> str:
    if not SERVER_NAME.match(name) or name in (".", ".."):
        raise FleetValidationError(
            f"invalid server name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def validate_package(kind: PackageKind, package: str) -> str:
    if kind == "pypi":
        if not _PYPI_NAME.match(package):
            raise FleetValidationError(
                f"{package!r} is not a valid PyPI project name", hint="letters, digits, '.', '_' and '-' (PEP 508)"
            )
    elif kind == "npm":
        if len(package) > 214 or not _NPM_NAME.match(package):
            raise FleetValidationError(
                f"{package!r} is not a valid npm package name",
                hint="lower case letters, digits, '-', '.', '_', '~', optionally '@scope/', at most 214 characters",
            )
    else:
        raise FleetValidationError(
            f"obsmcp installs only PyPI and npm packages, not {kind!r} servers",
            hint="remote servers need no install; update them where they are hosted",
        )
    return package


def validate_version(kind: PackageKind, version: str) -> str:
    """A concrete version (no range): PEP 440 for PyPI, semver for npm; also safe as a directory name."""
    ok = bool(_SAFE_VERSION_CHARS.match(version)) and ".." not in version
    if ok and kind == "pypi":
        try:
            Version(version)
        except InvalidVersion:
            ok = False
    elif ok and kind == "npm":
        ok = bool(_SEMVER.match(version))
    if not ok:
        rule = "a PEP 440 version such as 1.2.0" if kind == "pypi" else "a semver version such as 1.2.0"
        raise FleetValidationError(f"invalid version {version!r}", hint=f"give {rule} (no ranges, no paths)")
    return version


def validate_entry(entry: str) -> str:
    """A console-script or bin name: a plain file name."""
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", entry):
        raise FleetValidationError(f"invalid entry point name {entry!r}", hint="a plain command name such as my-server")
    return entry


class DigestMismatch(VerificationError):
    verification = "mismatch"


class DigestMissing(VerificationError):
    verification = "missing"


class ArtifactHasher:
    """Hashes the bytes as they are downloaded, with every algorithm a registry may publish."""

    def __init__(self) -> None:
        self._h = {name: hashlib.new(name) for name in ("sha256", "sha384", "sha512")}
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for h in self._h.values():
            h.update(chunk)

    def hexdigest(self, algorithm: str) -> str:
        return self._h[algorithm].hexdigest()

    def digest(self, algorithm: str) -> bytes:
        return self._h[algorithm].digest()


@dataclass(frozen=True)
class Verification:
    ok: bool  # False: installed without a digest (--allow-unverified)
    text: str  # for the audit log: "sha256:<hex> ok" | "sha512:<base64> ok" | "unverified"
    sha256: str  # of the bytes we have, always


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def verify_artifact(
    hasher: ArtifactHasher, artifact: Artifact, *, integrity: str | None = None, allow_unverified: bool = False
) -> Verification:
    """Compare the downloaded bytes with the registry's digest.

    `artifact.sha256` (PyPI, MCP registry) wins; otherwise `integrity`, an npm Subresource-Integrity string
    ("sha512-<base64>", possibly several separated by spaces: the strongest one we support is checked)."""
    actual = hasher.hexdigest("sha256")
    if artifact.sha256:
        expected = artifact.sha256.strip().lower()
        if not _SHA256_HEX.fullmatch(expected):
            raise DigestMismatch(
                f"the registry's digest for {artifact.filename} is not a sha256 ({len(expected)} characters, "
                "expected 64 hex digits)",
                hint="the registry or a proxy in between is broken or tampered with; nothing was installed",
            )
        if not hmac.compare_digest(expected, actual):
            raise DigestMismatch(
                f"sha256 of {artifact.filename} is {actual}, but the registry publishes {expected}",
                hint="the download was altered or corrupted; nothing was installed. Do not pass --allow-unverified "
                "for this: it only covers a missing digest, never a wrong one",
            )
        return Verification(True, f"sha256:{actual} ok", actual)
    sri = _strongest_sri(integrity)
    if sri is not None:
        algorithm, expected_b64 = sri
        try:
            expected_raw = base64.b64decode(expected_b64, validate=True)
        except binascii.Error:
            expected_raw = b""  # a malformed integrity value verifies nothing: refused like a mismatch
        if not hmac.compare_digest(expected_raw, hasher.digest(algorithm)):
            raise DigestMismatch(
                f"{algorithm} of {artifact.filename} does not match the registry's integrity value",
                hint="the download was altered or corrupted; nothing was installed",
            )
        return Verification(True, f"{algorithm}:{expected_b64} ok", actual)
    if not allow_unverified:
        raise DigestMissing(
            f"the registry publishes no digest for {artifact.filename}, so it cannot be verified",
            hint="pass --allow-unverified to install it anyway (the audit log will record it as unverified)",
        )
    return Verification(False, "unverified", actual)


def _strongest_sri(integrity: str | None) -> tuple[str, str] | None:
    if not integrity:
        return None
    found: dict[str, str] = {}
    for part in integrity.split():
        m = _SRI.match(part.split("?")[0])
        if m:
            found.setdefault(m.group(1), m.group(2))
    for algorithm in ("sha512", "sha384", "sha256"):
        if algorithm in found:
            return algorithm, found[algorithm]
    return None


__all__ = [
    "ArtifactHasher",
    "DigestMismatch",
    "DigestMissing",
    "Verification",
    "validate_entry",
    "validate_package",
    "validate_server_name",
    "validate_version",
    "verify_artifact",
]
