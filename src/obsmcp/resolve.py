"""One service resolver: a loose name ("auth") -> the canonical service name ("auth-service").

Order of preference: exact, case-insensitive exact, the name with common affixes stripped ("-service",
"-svc", "-api"), substring, then edit-distance suggestions. More than one equally good candidate is an
ambiguity and the error lists them; none is an unknown name and the error suggests the closest.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_AFFIX = re.compile(r"(^(svc|service)[-_.])|([-_.](service|svc|api|server|app)$)", re.IGNORECASE)


class ServiceNotFoundError(LookupError):
    """No service matches; the message lists suggestions."""


class AmbiguousServiceError(LookupError):
    """Several services match equally well; the message lists them."""


def service_core(name: str) -> str:
    return _AFFIX.sub("", name.lower()).strip("-_. ")


def resolve_service(query: str, known: Iterable[str]) -> str:
    names = sorted(set(known))
    q = query.strip()
    if not q:
        raise ServiceNotFoundError("service is empty: give a service name, or omit it for all services")
    if q in names:
        return q
    ql = q.lower()
    for stage in (
        [n for n in names if n.lower() == ql],
        [n for n in names if service_core(n) == service_core(q)],
        [n for n in names if ql in n.lower()],
    ):
        if len(stage) == 1:
            return stage[0]
        if len(stage) > 1:
            raise AmbiguousServiceError(
                f"service {query!r} is ambiguous: did you mean one of {', '.join(stage[:8])}? Pass the full name."
            )
    close = difflib.get_close_matches(ql, [n.lower() for n in names], n=3, cutoff=0.5)
    by_lower = {n.lower(): n for n in names}
    if close:
        suggestion = ", ".join(by_lower[c] for c in close)
        raise ServiceNotFoundError(f"no service named {query!r}: did you mean {suggestion}?")
    listing = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
    hint = f"known services: {listing}" if names else "no telemetry has been received yet"
    raise ServiceNotFoundError(f"no service named {query!r} in the selected time range; {hint}")
