"""Keeping credentials out of logs and error messages.

Log events and messages carry the method and path only, never a query string, header or request body. What
a backend sends back (error bodies quoted in excerpts) may echo a credential: the exact values of the
credential headers and query parameters of the request are replaced, then `result.scrub` removes the secret
shapes it knows (JWTs, bearer tokens, API keys, ...) and makes the text one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from obsmcp.result import scrub

REDACTED = "[REDACTED]"
EXCERPT_CHARS = 300

# Header and query parameter names that carry credentials: Authorization, Cookie, DD-API-KEY,
# DD-APPLICATION-KEY, X-API-Key, X-Auth-Token, api_key, access_token, X-Amz-Signature, ...
_SECRET_NAME = re.compile(r"(?i)(authorization|cookie|key|token|secret|passw|signature|credential|session|auth)")
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words in excerpts


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def secret_values(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The values to redact among (name, value) pairs: whole values, and the credential after a scheme."""
    found: set[str] = set()
    for name, value in pairs:
        if not is_secret_name(name):
            continue
        for candidate in (value, *value.split()[1:2]):  # "Bearer abc" -> "Bearer abc", "abc"
            if len(candidate) >= _MIN_SECRET_LEN:
                found.add(candidate)
    return frozenset(found)


def header_pairs(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items()]


def redact_known(text: str, secrets: Iterable[str]) -> str:
    # Longest first so a token inside "Bearer <token>" does not leave the scheme's match half-replaced.
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def excerpt(body: bytes, secrets: Iterable[str]) -> str:
    """The start of a response body as one safe line: for error messages a source can show to an agent."""
    text = body[: EXCERPT_CHARS * 8].decode("utf-8", errors="replace")
    text = " ".join(redact_known(text, secrets).split())
    return scrub(text, max_chars=EXCERPT_CHARS)
