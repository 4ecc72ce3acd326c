"""The `store` setting: which store obsmcp opens, as a URL (parsed without importing any database client)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit


class StoreConfigError(ValueError):
    """The `store` setting is not a usable store URL."""


STORE_URL_HELP = (
    "set `store` (OBSMCP_STORE, or --store) to clickhouse://USER:PASSWORD@HOST:8123/DATABASE "
    "(clickhouses:// for HTTPS), chdb:///ABSOLUTE/DIR for an embedded ClickHouse, or leave it empty for the "
    "embedded DuckDB store in the data directory"
)


@dataclass(frozen=True)
class StoreURL:
    """A parsed `store` setting. `password` never appears in `str()` or `redacted`."""

    kind: str  # "http" or "chdb"
    database: str
    host: str = ""
    port: int = 0
    user: str = "default"
    password: str = field(default="", repr=False)
    secure: bool = False
    path: str = ":memory:"  # chdb only
    create_tables: bool | None = None  # from ?create_tables=0|1; None: the caller decides

    @property
    def redacted(self) -> str:
        if self.kind == "chdb":
            return (
                f"chdb://{self.path}/{self.database}" if self.path != ":memory:" else f"chdb://memory/{self.database}"
            )
        scheme = "clickhouses" if self.secure else "clickhouse"
        auth = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.database}"

    def __str__(self) -> str:
        return self.redacted


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_store_url(url: str) -> StoreURL:
    """clickhouse://user:pass@host:8123/db, clickhouses://..., chdb:///abs/dir[?database=otel], chdb://memory."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise StoreConfigError(f"store={_redact(text)!r} is not a URL ({e}): {STORE_URL_HELP}") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    create = query.get("create_tables")
    create_tables = None if create is None else create.lower() in ("1", "true", "yes")
    scheme = parts.scheme.lower()
    if scheme == "chdb":
        if parts.netloc not in ("", "memory"):
            raise StoreConfigError(
                f"store={text!r}: a chdb URL names a directory (chdb:///abs/dir, three slashes) or memory "
                f"(chdb://memory): {STORE_URL_HELP}"
            )
        path = ":memory:" if parts.netloc == "memory" or parts.path in ("", "/") else unquote(parts.path)
        database = query.get("database", "otel")
        _check_ident(database, text)
        return StoreURL("chdb", database, path=path, create_tables=create_tables)
    if scheme in ("clickhouse", "clickhouses", "http", "https"):
        secure = scheme in ("clickhouses", "https")
        if not parts.hostname:
            raise StoreConfigError(f"store={_redact(text)!r} has no host: {STORE_URL_HELP}")
        database = unquote(parts.path.strip("/")) or query.get("database", "otel")
        _check_ident(database, _redact(text))
        return StoreURL(
            "http",
            database,
            host=parts.hostname,
            port=port or (8443 if secure else 8123),
            user=unquote(parts.username) if parts.username else "default",
            password=unquote(parts.password) if parts.password else "",
            secure=secure,
            create_tables=create_tables,
        )
    raise StoreConfigError(f"store={_redact(text)!r} has an unknown scheme {parts.scheme!r}: {STORE_URL_HELP}")


def _check_ident(database: str, shown: str) -> None:
    if not _IDENT.match(database):
        raise StoreConfigError(
            f"store={shown!r}: database {database!r} is not a plain identifier (letters, digits, _): {STORE_URL_HELP}"
        )


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
