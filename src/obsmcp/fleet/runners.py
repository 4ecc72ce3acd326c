"""How a client config entry runs its server: which package manager (npx, uvx, uv tool run, pipx run, python -m),
which package and version, and which arguments are the server's own.

`classify("uvx", ("--from", "pkg==1.2", "pkg-cli", "--db", "x"))` -> pypi, pkg, pinned 1.2, program pkg-cli,
server args ("--db", "x"). The server args are what an adopted entry passes to obsmcp's launcher; runner options
the managed install does not reproduce (uvx --with, --env-file, ...) are reported so adoption can refuse them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from packaging.requirements import InvalidRequirement, Requirement

from obsmcp.fleet.model import PackageKind


@dataclass(frozen=True)
class Classified:
    kind: PackageKind
    package: str | None = None
    requested: str | None = None  # exact version when pinned
    spec: str | None = None  # version as written (pinned or not)
    server_args: tuple[str, ...] = ()
    program: str | None = None  # the console script / bin to run, when the entry names one
    guessed: bool = False
    runner_opts: tuple[str, ...] = ()


_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_NPM_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$", re.IGNORECASE)
# Options that take a value (the next argument unless written --opt=value), per runner.
_NPX_VALUE_OPTS = frozenset({"-p", "--package", "--registry", "--cache", "--userconfig", "--node-options", "--shell"})
_UVX_OPTIONS_WITH_VALUES = (
    "--from --with -w --with-editable --with-requirements --python -p --index --default-index "
    "--index-url -i --extra-index-url --find-links -f --directory --project --env-file --config-file "
    "--cache-dir --constraints -c --overrides --build-constraints --index-strategy --keyring-provider "
    "--resolution --prerelease --exclude-newer --refresh-package -P --reinstall-package "
    "--upgrade-package --color --python-preference --allow-insecure-host --link-mode"
)
_UVX_VALUE_OPTS = frozenset(_UVX_OPTIONS_WITH_VALUES.split())
_PIPX_VALUE_OPTS = frozenset({"--spec", "--python", "--pip-args", "--index-url", "-i", "--backend"})
_PYTHON_VALUE_OPTS = frozenset({"-X", "-W", "-Q"})
# Runner options a managed install reproduces, or that do not change what runs. Any other (uvx --with X,
# --env-file F, --python 3.12, --index-url U, npx --registry R, ...) would be lost by adoption: adopt refuses.
_KEPT_OPTS = {
    "npx": frozenset({"-y", "--yes", "-q", "--quiet", "-p", "--package", "--prefer-online", "--prefer-offline"}),
    "uvx": frozenset({"--from", "-q", "--quiet", "-n", "--no-cache", "--refresh", "--isolated", "--no-progress"}),
    "pipx": frozenset({"--spec", "-q", "--quiet", "--no-cache", "-v", "--verbose"}),
}


def _lost(opts: dict[str, str], runner: str) -> tuple[str, ...]:
    return tuple(k for k in opts if k not in _KEPT_OPTS[runner])


def _runner(command: str) -> str:
    base = os.path.basename(command.replace("\\", "/")).lower()
    for suffix in (".exe", ".cmd", ".bat"):
        base = base.removesuffix(suffix)
    return base


def _split(args: tuple[str, ...], value_opts: frozenset[str]) -> tuple[dict[str, str], list[str]]:
    """Options before the first positional (with their values), and the positional and everything after it."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return opts, list(args[i + 1 :])
        if not a.startswith("-") or a == "-":
            return opts, list(args[i:])
        if "=" in a and a.startswith("--"):
            k, v = a.split("=", 1)
            opts.setdefault(k, v)
        elif a in value_opts and i + 1 < len(args):
            opts.setdefault(a, args[i + 1])
            i += 1
        else:
            opts[a] = ""
        i += 1
    return opts, []


def classify(command: str | None, args: tuple[str, ...]) -> Classified:
    """How a stdio entry runs: which package manager, package and version, and the server's own arguments."""
    if not command:
        return Classified("unknown")
    runner = _runner(command)
    if runner == "npx":
        return _npx(args)
    if runner == "uvx":
        return _uvx(args)
    if runner == "uv" and args[:2] == ("tool", "run"):
        return _uvx(args[2:])
    if runner == "pipx" and args[:1] == ("run",):
        return _pipx(args[1:])
    if re.fullmatch(r"python(?:\d+(?:\.\d+)?)?|py", runner):
        return _python_m(args)
    return Classified("unknown", server_args=args)


def npm_spec(spec: str) -> tuple[str, str | None] | None:
    """'@scope/pkg@1.2.3' -> ('@scope/pkg', '1.2.3'); None when it is not a registry package (git, file, URL)."""
    at = spec.find("@", 1)
    name, version = (spec[:at], spec[at + 1 :]) if at > 0 else (spec, None)
    if not _NPM_NAME.match(name):
        return None
    return name, (version or None)


def _npx(args: tuple[str, ...]) -> Classified:
    opts, rest = _split(args, _NPX_VALUE_OPTS)
    if "-c" in opts or "--call" in opts:
        return Classified("unknown", server_args=args)
    spec = opts.get("-p") or opts.get("--package")
    program = None
    if spec is None:
        if not rest:
            return Classified("unknown")
        spec, rest = rest[0], rest[1:]
    else:
        program, rest = (rest[0] if rest else None), rest[1:]  # `npx -p pkg bin args...`
    parsed = npm_spec(spec)
    if parsed is None:
        return Classified("unknown", server_args=args)
    name, version = parsed
    pinned = version if version is not None and _SEMVER.match(version) else None
    version_pin = pinned.removeprefix("v") if pinned else None
    return Classified("npm", name, version_pin, version, tuple(rest), program, runner_opts=_lost(opts, "npx"))


def pypi_spec(spec: str) -> tuple[str, str | None, str | None] | None:
    """'pkg==1.2' / 'pkg@1.2' / 'pkg[x]>=1' -> (name, exact version or None, version as written or None)."""
    if "@" in spec and " @ " not in spec and "://" not in spec:
        name, _, version = spec.partition("@")  # uv's `pkg@1.2` and `pkg@latest`
        if version == "latest":
            return (name, None, "latest") if _pypi_name(name) else None
        spec = f"{name}=={version}"
    try:
        req = Requirement(spec)
    except InvalidRequirement:
        return None
    if req.url:
        return None
    specs = list(req.specifier)
    exact = None
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        exact = specs[0].version
    written = str(req.specifier) or None
    if written and exact and written.lstrip("=") == exact:
        written = exact
    return req.name, exact, written


def _pypi_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", name))


def _pypi(spec: str, rest: list[str], skip_command: bool) -> Classified:
    parsed = pypi_spec(spec)
    if parsed is None:
        return Classified("unknown", server_args=tuple(rest))
    name, exact, written = parsed
    if skip_command:
        return Classified("pypi", name, exact, written, tuple(rest[1:]), rest[0] if rest else None)
    return Classified("pypi", name, exact, written, tuple(rest))


def _uvx(args: tuple[str, ...]) -> Classified:
    opts, rest = _split(args, _UVX_VALUE_OPTS)
    if "--from" in opts:
        c = _pypi(opts["--from"], rest, skip_command=True)  # `--from pkg==1.2 cmd args...`
    elif not rest:
        return Classified("unknown")
    else:
        c = _pypi(rest[0], rest[1:], skip_command=False)
    return replace(c, runner_opts=_lost(opts, "uvx"))


def _pipx(args: tuple[str, ...]) -> Classified:
    opts, rest = _split(args, _PIPX_VALUE_OPTS)
    if "--spec" in opts:
        c = _pypi(opts["--spec"], rest, skip_command=True)
    elif not rest:
        return Classified("unknown")
    else:
        c = _pypi(rest[0], rest[1:], skip_command=False)
    return replace(c, runner_opts=_lost(opts, "pipx"))


def _python_m(args: tuple[str, ...]) -> Classified:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-m" and i + 1 < len(args):
            module = args[i + 1]
            # The module's top-level package, as a distribution name guess (mcp_server_git -> mcp-server-git).
            package = module.split(".")[0].replace("_", "-")
            return Classified("pypi", package, server_args=args[i + 2 :], program=module, guessed=True)
        if not a.startswith("-"):
            break
        i += 2 if a in _PYTHON_VALUE_OPTS else 1
    return Classified("unknown", server_args=args)


__all__ = ["Classified", "classify", "npm_spec", "pypi_spec"]
