"""What the tools share when a remote backend answers (obsmcp.sources): which source a signal goes to, the
notes that label the answer (which backend, how fresh, what the backend said), and cursors that carry the
backend's own page token.

A remote cursor is obsmcp's opaque cursor like the store's (base64 JSON that pins the time range and the
query's fingerprint), holding the backend's name and page token instead of an offset. The fingerprint
includes the backend, so a cursor cannot be replayed against another backend or another query. When an
answer is cut to its token budget inside one backend page, the cursor keeps that page's token and how many of
its records were shown, so the next call asks for the same page and skips them: nothing is repeated or lost.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from obsmcp.result import CursorError, redactor_for, scrub
from obsmcp.sources.base import Page, Source
from obsmcp.timerange import TimeRange, resolve_range
from obsmcp.tools.context import ToolContext

NOTE_CHARS = 600


def source_for(ctx: ToolContext, signal: str, backend: str | None) -> tuple[Source | None, list[str]]:
    """The remote source that answers `signal` (None: the store) and a note on the routing.

    Routing is configuration (obsmcp.sources.registry): `backend` names one (or "store"); without it the first
    backend configured for the signal answers, and the store when none is."""
    sources = ctx.sources.for_signal(signal, backend)
    if not sources:
        return None, []
    source = sources[0]
    note = f"answered by backend {source.name} ({source.kind})"
    others = [s.name for s in sources[1:]]
    if others and not (backend and backend.strip()):
        note += f"; also serving {signal}: {', '.join(others)}, 'store' (pass backend= to ask one)"
    return source, [note]


def answer_notes(ctx: ToolContext, routing: list[str], page: Page) -> list[str]:
    """The routing note, what the backend said about its answer, and its age when it came from the cache.
    Backend notes can quote the query and the backend's own words: one line each, secrets redacted."""
    redact = redactor_for(ctx.settings)
    notes = [*routing, *(scrub(n, redact_secrets=redact, max_chars=NOTE_CHARS) for n in page.notes)]
    if page.freshness:
        notes.append(page.freshness)
    return notes


@dataclass(frozen=True)
class RemotePage:
    """Where a page of a remote answer starts: the backend's token (None: its first page), how many records
    of that backend page earlier answers showed already, and how many records came before it in all."""

    token: str | None
    skip: int
    offset: int
    range: TimeRange


def encode_remote_cursor(backend: str, page: RemotePage, fp: str) -> str:
    raw = {
        "b": backend,
        "t": page.token,
        "k": page.skip,
        "o": page.offset,
        "s": page.range.start_ns,
        "e": page.range.end_ns,
        "f": fp,
    }
    return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")


def remote_page_start(backend: str, cursor: str | None, fp: str, start: str | None, end: str | None) -> RemotePage:
    """The page asked for: from a cursor this backend's answer issued (it pins the range), or the first."""
    if not cursor:
        return RemotePage(None, 0, 0, resolve_range(start, end))
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        obj = json.loads(raw)
        came_from = str(obj["b"])
        token = None if obj["t"] is None else str(obj["t"])
        page = RemotePage(token, int(obj["k"]), int(obj["o"]), TimeRange(int(obj["s"]), int(obj["e"])))
        got = str(obj["f"])
    except (ValueError, KeyError, TypeError):
        raise CursorError(
            f"the cursor is not one backend {backend} issued (it may come from the store): pass next_cursor from "
            "the previous answer unchanged, with the same backend"
        ) from None
    if came_from != backend:
        raise CursorError(
            f"the cursor came from backend {came_from}, not {backend}: pass backend={came_from!r} with it, "
            "or drop the cursor"
        )
    if got != fp:
        raise CursorError(
            "the cursor belongs to a different query: repeat the same arguments with it, or drop the cursor"
        )
    return page


def remote_cursor_backend(cursor: str | None) -> str | None:
    """The backend a cursor came from, None for a store cursor (or anything else): lets the store path say
    where a remote cursor belongs instead of only that it is not its own."""
    if not cursor:
        return None
    try:
        obj = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return None
    return str(obj["b"]) if isinstance(obj, dict) and isinstance(obj.get("b"), str) else None


def next_page(here: RemotePage, shown: int, page_records: int, backend_next: str | None) -> RemotePage | None:
    """Where the next answer starts: later in this backend page when the budget cut it (`shown` of its
    `page_records` after the skipped ones), else the backend's next page, else nowhere."""
    if shown < page_records:
        return RemotePage(here.token, here.skip + shown, here.offset + shown, here.range)
    if backend_next:
        return RemotePage(backend_next, 0, here.offset + shown, here.range)
    return None
