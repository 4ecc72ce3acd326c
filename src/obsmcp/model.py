"""Typed records shared by sources, analysis and tools (plain dataclasses; pydantic stays at the edges)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpanEvent:
    time_ns: int
    name: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    name: str
    kind: str
    start_ns: int
    duration_ns: int
    status: str = "Unset"
    status_message: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    @property
    def is_error(self) -> bool:
        return self.status == "Error"
