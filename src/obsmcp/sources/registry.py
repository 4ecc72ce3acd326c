"""The configured remote backends as sources, and routing: which source answers a signal.

Routing (DESIGN.md "Signal protocols"): a tool's `backend` argument names one backend ("store" names the
embedded store); without it, a signal goes to the backends configured for it (each backend serves the signals
of its kind unless its `signals` list says fewer; `signals = []` makes it answer only when named), in
configuration order, and to the store when none is. Several instances of one kind are normal: each has its
own name, and `for_signal` lists them so a tool can say which others exist.

Tools are synchronous (they run in worker threads, see obsmcp.server) and sources are async. `call` bridges
them on the HTTP client's own event loop (obsmcp.http, thread "obsmcp-http"), not the server's loop through
anyio.from_thread: the coroutine then runs where every backend request runs anyway (one hop instead of two,
no work on the loop that serves MCP clients), and it works from any thread, including the CLI's `obsmcp
tool`, benchmarks and tests, where there is no anyio worker thread to hop back from.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from obsmcp.config import ConfigError, Settings
from obsmcp.http import CLIENT_LOOP as LOOP
from obsmcp.http import BackendError
from obsmcp.resolve import resolve_service, service_core
from obsmcp.sources.base import Source, SourceError
from obsmcp.sources.config import BackendConfig

log = structlog.get_logger("obsmcp.sources")

T = TypeVar("T")
STORE = "store"  # the name of the embedded (or ClickHouse) store as a `backend` argument


class UnknownBackendError(LookupError):
    """A `backend` argument names no configured backend (or one that does not serve the signal)."""


def build_source(cfg: BackendConfig) -> Source:
    """The source of one configured backend: `obsmcp.sources.<kind>.from_config(cfg)`."""
    try:
        module = importlib.import_module(f"obsmcp.sources.{cfg.kind}")
    except ModuleNotFoundError:
        raise ConfigError(
            f"backend {cfg.name!r}: kind {cfg.kind!r} is not supported by this obsmcp build "
            "(no obsmcp.sources module for it): remove the backend or upgrade obsmcp"
        ) from None
    source = module.from_config(cfg)
    if not isinstance(source, Source):
        raise TypeError(f"obsmcp.sources.{cfg.kind}.from_config returned {type(source).__name__}, not a Source")
    return source


class SourceRegistry:
    """The remote sources of one server, by name, in configuration order."""

    def __init__(self, sources: Sequence[Source] = ()) -> None:
        self._sources = {s.name: s for s in sources}
        if len(self._sources) != len(sources):
            raise ConfigError("two backends have the same name: give each its own name")

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceRegistry:
        sources = [build_source(cfg) for cfg in settings.backends]
        if sources:
            log.info("backends_configured", backends=[f"{s.name} ({s.kind}: {','.join(s.signals)})" for s in sources])
        return cls(sources)

    def __bool__(self) -> bool:
        return bool(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def names(self) -> list[str]:
        return list(self._sources)

    def all(self) -> list[Source]:
        return list(self._sources.values())

    def get(self, name: str) -> Source:
        source = self._sources.get(name.strip())
        if source is None:
            raise UnknownBackendError(f"no backend named {name!r}: {self._listing()}")
        return source

    def for_signal(self, signal: str, backend: str | None = None) -> list[Source]:
        """The sources that answer `signal`: the named one, or those configured for it by default.
        An empty list means the store answers (backend "store", or no backend configured for the signal)."""
        if backend is not None and backend.strip():
            name = backend.strip()
            if name == STORE:
                return []
            source = self.get(name)
            if signal not in _served(source):
                raise UnknownBackendError(
                    f"backend {name!r} ({source.kind}) does not serve {signal}: " + self._listing(signal)
                )
            return [source]
        return [s for s in self._sources.values() if signal in s.signals]

    def _listing(self, signal: str | None = None) -> str:
        fits = [s for s in self._sources.values() if signal is None or signal in _served(s)]
        named = ", ".join(f"{s.name} ({s.kind})" for s in fits)
        what = f"backends serving {signal}" if signal else "configured backends"
        return f"{what}: {named or 'none'}, and {STORE!r} (obsmcp's own store)"

    # -- the sync bridge -----------------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120.0) -> T:
        """Run a source coroutine on the HTTP client's loop and wait for it (from a worker thread).

        The timeout is a backstop above the client's own (connect + read per attempt, retries): when it
        fires the coroutine is cancelled, so nothing is left running for an answer no one waits for."""
        if LOOP.in_loop_thread():
            coro.close()
            raise RuntimeError("SourceRegistry.call blocks: from the HTTP client's loop, await the source instead")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, LOOP.get())
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise SourceError(
                f"a backend call took longer than {timeout_s:g} s and was abandoned: narrow the query"
            ) from None

    def timeout_for(self, source: Source) -> float:
        cfg = getattr(source, "config", None)
        if isinstance(cfg, BackendConfig):
            return 3 * (cfg.connect_timeout_s + cfg.read_timeout_s) + 30.0
        return 120.0

    def resolve(self, source: Source, service: str | None, start_ns: int, end_ns: int) -> str | None:
        """A loose service name ("checkout") as `source` spells it ("checkout-service" in its job label)."""
        if service is None or not service.strip():
            return None
        known = self.call(source.services(start_ns, end_ns), self.timeout_for(source))
        try:
            return resolve_service(service, known)
        except LookupError as e:
            raise type(e)(f"backend {source.name}: {e}") from None

    def services_by_backend(self, start_ns: int, end_ns: int) -> list[BackendServices]:
        """Every backend's service names, asked all at once; a backend that fails is reported in its entry
        (`error`, the client's message: "unavailable, retry in N s", ...) while the others still answer."""
        sources = self.all()
        if not sources:
            return []
        return self.call(_services_of_all(sources, start_ns, end_ns), max(self.timeout_for(s) for s in sources))

    def close(self) -> None:
        """Close every source's HTTP client (their pools; the shared client loop stays for other users)."""
        for source in self._sources.values():
            client = getattr(source, "client", None)
            close = getattr(client, "close", None)
            if callable(close):
                close()


@dataclass(frozen=True)
class BackendServices:
    """One backend's service names as it spells them, or why it could not list them."""

    backend: str
    kind: str
    signals: tuple[str, ...]  # what it can answer when named
    names: list[str] = field(default_factory=list)
    error: str | None = None


async def _services_of(source: Source, start_ns: int, end_ns: int) -> BackendServices:
    try:
        names = await source.services(start_ns, end_ns)
    except (BackendError, SourceError) as e:
        # Reported to the caller in the entry (a partial answer says which backend is missing and why).
        log.info("backend_services_failed", backend=source.name, error=str(e)[:300])
        return BackendServices(source.name, source.kind, _served(source), error=str(e))
    return BackendServices(source.name, source.kind, _served(source), sorted(set(names)))


async def _services_of_all(sources: Sequence[Source], start_ns: int, end_ns: int) -> list[BackendServices]:
    return list(await asyncio.gather(*(_services_of(s, start_ns, end_ns) for s in sources)))


def match_service(name: str, known: Sequence[str]) -> str | None:
    """A canonical service name ("auth-service", as the store has it) as another backend spells it
    ("hub-ca-auth" in its job label), or None when no single name there matches.

    The one resolver (obsmcp.resolve) on the full name, then on its core without the -service/-svc/-api
    affixes ("auth"), which then must be a unique substring; a name or core under 3 characters groups only
    with the same name (as a substring it is too loose: "db" is in "mongodb-exporter")."""
    same = [k for k in known if k.lower() == name.lower()]
    if len(same) == 1:
        return same[0]
    for query in dict.fromkeys(q for q in (name, service_core(name)) if len(q) >= 3):
        try:
            return resolve_service(query, known)
        except LookupError:
            continue  # unknown or ambiguous as written: try the looser query, and no match after the last
    return None


def _served(source: Source) -> tuple[str, ...]:
    """What a source can answer when named (its kind's signals), not only what it gets by default."""
    cfg = getattr(source, "config", None)
    if isinstance(cfg, BackendConfig):
        from obsmcp.sources.config import SIGNALS_BY_KIND

        return SIGNALS_BY_KIND[cfg.kind]
    return tuple(source.signals)
