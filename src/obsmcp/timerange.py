"""One time parser for every tool: "15m", "now-2h", "now", ISO-8601 -> UTC nanoseconds.

A bare duration ("15m") as `start` means "that long before `end`"; as `end` it means "that long before now".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

NS_PER_S = 1_000_000_000
DEFAULT_WINDOW_NS = 3600 * NS_PER_S

_UNITS_NS = {
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
    "w": 7 * 86400 * NS_PER_S,
}
_MAX_NS = 2**63 - 1  # the latest instant a TIMESTAMP_NS (and OTLP's int64 arithmetic) can hold
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)
_RELATIVE = re.compile(r"^\s*now\s*(?:([+-])\s*(.+))?$", re.IGNORECASE)

HELP = 'use a duration ("15m", "2h", "7d"), "now", "now-30m", or ISO-8601 ("2026-11-20T10:00:00Z")'


class TimeRangeError(ValueError):
    """A time argument could not be understood; the message says which and how to write it."""


@dataclass(frozen=True)
class TimeRange:
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def describe(self) -> str:
        return f"{format_ns(self.start_ns)} .. {format_ns(self.end_ns)} ({format_duration(self.duration_ns)})"


def now_ns() -> int:
    return time.time_ns()


def parse_duration(text: str) -> int:
    """'15m' -> nanoseconds. Raises TimeRangeError."""
    m = _DURATION.match(text)
    if not m:
        raise TimeRangeError(f"{text!r} is not a duration: write a number and a unit (ms, s, m, h, d, w), e.g. '15m'")
    ns = float(m.group(1)) * _UNITS_NS[m.group(2).lower()]
    if ns > _MAX_NS:  # also catches inf: "999...9d" would overflow int()
        raise TimeRangeError(f"{text!r} is longer than any stored time span: use at most about 290 years, e.g. '30d'")
    return int(ns)


def parse_instant(text: str, *, now: int, name: str = "time") -> int:
    """An absolute instant: 'now', 'now-2h', ISO-8601, or epoch seconds/ms/ns."""
    s = text.strip()
    rel = _RELATIVE.match(s)
    if rel:
        if rel.group(1) is None:
            return now
        delta = parse_duration(rel.group(2))
        return now - delta if rel.group(1) == "-" else now + delta
    if re.fullmatch(r"\d{9,19}", s):
        value = int(s)
        # Epoch in seconds, milliseconds or nanoseconds, told apart by magnitude.
        if value < 10**11:
            return value * NS_PER_S
        if value < 10**14:
            return value * 1_000_000
        return value
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TimeRangeError(f"{name}={text!r} is not a time I understand: {HELP}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * NS_PER_S + dt.microsecond * 1000


def resolve_range(
    start: str | None = None,
    end: str | None = None,
    *,
    now: int | None = None,
    default_window_ns: int = DEFAULT_WINDOW_NS,
) -> TimeRange:
    """Turn the tools' start/end arguments into an absolute UTC range (default: the last hour)."""
    t_now = now_ns() if now is None else now
    end_ns = t_now
    if end and end.strip():
        end_ns = t_now - parse_duration(end) if _DURATION.match(end) else parse_instant(end, now=t_now, name="end")
    if start and start.strip():
        if _DURATION.match(start):
            start_ns = end_ns - parse_duration(start)
        else:
            start_ns = parse_instant(start, now=t_now, name="start")
    else:
        start_ns = end_ns - default_window_ns
    # The store holds nanoseconds since 1970 in a signed 64-bit integer: a range reaching past either end
    # covers all the data there can be, so it is clamped rather than handed to SQL as an out-of-range value.
    start_ns = min(max(start_ns, 0), _MAX_NS)
    end_ns = min(max(end_ns, 0), _MAX_NS)
    if start_ns >= end_ns:
        raise TimeRangeError(
            f"start ({format_ns(start_ns)}) is not before end ({format_ns(end_ns)}): "
            "give a start earlier than the end, e.g. start='2h' end='now'"
        )
    return TimeRange(start_ns, end_ns)


def format_ns(ns: int) -> str:
    """ISO-8601 UTC with millisecond precision."""
    dt = datetime.fromtimestamp(ns / NS_PER_S, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_duration(ns: float) -> str:
    """Compact human duration: 850µs, 12.3ms, 4.21s, 3m20s, 2h05m."""
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < NS_PER_S:
        ms = ns / 1_000_000
        return f"{ms:.1f}ms" if ms < 100 else f"{ms:.0f}ms"
    s = ns / NS_PER_S
    if s < 60:
        return f"{s:.2f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"
