"""Version arithmetic of the two ecosystems the fleet installs from, each by its own rules.

- PyPI: PEP 440 through `packaging` (what pip itself uses): 1.10 > 1.9, 1.0rc1 < 1.0 < 1.0.post1, 1.0+local > 1.0,
  `1!0.1` epochs; specifiers like `>=1.2,<2`. Pre-releases are excluded unless asked for or named by the spec.
- npm: semver 2.0 with npm's range grammar (`^1.2.0`, `~1.2`, `1.x`, `>=1 <2`, `1.0.0 - 1.4.0`, `||`) through
  `node-semver`, a port of npm's own `node-semver`: a range excludes pre-releases unless a comparator of the same
  [major, minor, patch] names one, exactly as npm resolves it.

Every function takes the package kind first; a version the ecosystem would not accept raises FleetValidationError
with the form it expects.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import nodesemver
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from obsmcp.fleet.model import FleetValidationError, PackageKind

# A version string as it may appear in a path or an argv: never a separator, a space or a shell character.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}$")


def _npm_kind(kind: PackageKind) -> bool:
    if kind == "npm":
        return True
    if kind == "pypi":
        return False
    raise FleetValidationError(f"no version rules for package kind {kind!r}", hint="only pypi and npm have versions")


def validate(kind: PackageKind, version: str) -> str:
    """`version` if it is a valid version of that ecosystem (and safe in a path), else FleetValidationError."""
    npm = _npm_kind(kind)
    if not _SAFE.match(version):
        raise FleetValidationError(
            f"{version!r} is not a version", hint="use a plain version such as 1.2.0 (no paths, spaces or ranges)"
        )
    if npm:
        if nodesemver.valid(version, False) is None:
            raise FleetValidationError(f"{version!r} is not a semver version", hint="npm versions look like 1.2.0")
    else:
        try:
            Version(version)
        except InvalidVersion:
            raise FleetValidationError(
                f"{version!r} is not a PEP 440 version", hint="PyPI versions look like 1.2.0, 1.2.0rc1, 1.2.0.post1"
            ) from None
    return version


def compare(kind: PackageKind, a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, the same as, or newer than b."""
    if _npm_kind(kind):
        validate(kind, a)
        validate(kind, b)
        return int(nodesemver.compare(a, b, False))
    va, vb = Version(validate(kind, a)), Version(validate(kind, b))
    return (va > vb) - (va < vb)


def is_newer(kind: PackageKind, candidate: str, than: str) -> bool:
    return compare(kind, candidate, than) > 0


def is_prerelease(kind: PackageKind, version: str) -> bool:
    if _npm_kind(kind):
        return bool(nodesemver.make_semver(validate(kind, version), False).prerelease)
    return Version(validate(kind, version)).is_prerelease


def sort_versions(kind: PackageKind, versions: Iterable[str]) -> list[str]:
    """Oldest first; strings that are not versions of that ecosystem are dropped (registries hold some)."""
    valid = []
    for v in versions:
        try:
            valid.append(validate(kind, v))
        except FleetValidationError:
            continue

    def order(x: str, y: str) -> int:
        return compare(kind, x, y)

    return sorted(valid, key=functools.cmp_to_key(order))


def is_range(kind: PackageKind, spec: str) -> bool:
    """True when `spec` is a range rather than one exact version."""
    try:
        validate(kind, spec)
        return False
    except FleetValidationError:
        return True


def satisfies(kind: PackageKind, version: str, spec: str) -> bool:
    """Whether `version` is allowed by `spec` (npm range, or PEP 440 specifier set; '' and '*' allow any)."""
    if spec.strip() in ("", "*", "latest"):
        return not is_prerelease(kind, version)
    if _npm_kind(kind):
        if nodesemver.valid_range(spec, False) is None:
            raise FleetValidationError(f"{spec!r} is not an npm version range", hint="e.g. ^1.2.0, ~1.2, >=1 <2")
        return bool(nodesemver.satisfies(validate(kind, version), spec, False))
    try:
        specifiers = SpecifierSet(spec if spec[0] in "<>=!~" else f"=={spec}")
    except InvalidSpecifier:
        raise FleetValidationError(f"{spec!r} is not a PEP 440 specifier", hint="e.g. >=1.2,<2 or ==1.2.0") from None
    # packaging 26 admits pre-releases by default; pip's rule is: only when a specifier names one.
    return specifiers.contains(Version(validate(kind, version)), prereleases=bool(specifiers.prereleases))


def max_satisfying(kind: PackageKind, versions: Iterable[str], spec: str) -> str | None:
    """The newest of `versions` allowed by `spec` (pre-releases only when the spec names one), or None."""
    ordered = sort_versions(kind, versions)
    for v in reversed(ordered):
        if satisfies(kind, v, spec):
            return v
    return None


__all__ = [
    "compare",
    "is_newer",
    "is_prerelease",
    "is_range",
    "max_satisfying",
    "satisfies",
    "sort_versions",
    "validate",
]
