"""A Sentry-shaped HTTP server on loopback, and a validator of requests against Sentry's published API schema.

Sentry cannot run here, so tests serve recorded response shapes (tests/data/vendor/sentry/responses/, built
from the examples of Sentry's OpenAPI document: see its README) from a real HTTP server (`FaultyBackend`),
record every request the source sends, and check each one against the operations of the published schema
(tests/data/vendor/sentry/openapi-subset.json): method, path template and its parameters, every query
parameter (declared by the operation, value valid for its schema, required ones present), the bearer token
the `auth_token` security scheme asks for, and no body on a GET.

Paged answers carry the headers Sentry sends (tests/data/vendor/sentry/headers.md): a Link header with a
"previous" and a "next" link, each with `results="true|false"` and `cursor="..."`, and X-Hits (the match count)
on the issue list.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from tests.faulty_backend import FaultyBackend, Reply, Seen

VENDOR = Path(__file__).parent / "data" / "vendor" / "sentry"
SPEC: dict[str, Any] = json.loads((VENDOR / "openapi-subset.json").read_text())
ORG = "hub-ca"


def cursor_link(url: str, name: str, cursor: str, results: bool) -> str:
    """One link as Sentry builds it: the request URL (other query parameters kept) with `&cursor=` appended."""
    sep = "&" if "?" in url else "?&"
    flag = "true" if results else "false"
    return f'<{url}{sep}cursor={cursor}>; rel="{name}"; results="{flag}"; cursor="{cursor}"'


def paging_headers(
    url: str, *, next_cursor: str = "0:100:0", more: bool = False, prev_cursor: str = "0:0:1", hits: int | None = None
) -> dict[str, str]:
    """Link (previous, next; Sentry always sends both) and, for counted lists, X-Hits."""
    link = ", ".join([cursor_link(url, "previous", prev_cursor, False), cursor_link(url, "next", next_cursor, more)])
    return {"Link": link} | ({"X-Hits": str(hits)} if hits is not None else {})


def recorded(name: str) -> Any:
    """A recorded response body (a fresh copy: tests may change it)."""
    return copy.deepcopy(json.loads((VENDOR / "responses" / f"{name}.json").read_text()))


@dataclass(frozen=True)
class Operation:
    id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


def _operations() -> list[Operation]:
    ops = []
    for template, methods in SPEC["paths"].items():
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        for method, op in methods.items():
            ops.append(Operation(op["operationId"], method.upper(), template, re.compile(f"^{regex}$"), op))
    return ops


OPERATIONS = _operations()


# jsonschema checks "date-time" only when rfc3339-validator is installed (it is not here): RFC 3339 by hand.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


class SpecViolation(AssertionError):
    """A request the source sent is not one Sentry's published API schema describes."""


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    """A query-string value as the JSON type its schema expects (query strings carry only text)."""
    types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    if "integer" in types and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if "boolean" in types and raw in ("true", "false"):
        return raw == "true"
    return raw


def validate_request(seen: Seen, prefix: str = "") -> str:
    """The operationId of `seen`, or SpecViolation saying what the schema does not allow."""
    path = seen.path[len(prefix) :] if prefix and seen.path.startswith(prefix) else seen.path
    matches = [(op, m) for op in OPERATIONS if (m := op.pattern.match(path)) and op.method == seen.method]
    if not matches:
        raise SpecViolation(f"{seen.method} {seen.path}: no operation of the Sentry API schema has this path")
    if len(matches) > 1:
        raise SpecViolation(f"{seen.method} {seen.path}: matches {', '.join(op.id for op, _ in matches)}")
    op, match = matches[0]
    checker = FORMATS
    declared = {(p["in"], p["name"]): p for p in op.spec.get("parameters", [])}
    for name, value in match.groupdict().items():
        param = declared.get(("path", name))
        if param is None:
            raise SpecViolation(f"{op.id}: path parameter {name} is not declared")
        try:
            jsonschema.validate(value, json_schema(param["schema"]), format_checker=checker)
        except jsonschema.ValidationError as exc:
            raise SpecViolation(f"{op.id}: path parameter {name}={value!r}: {exc.message}") from None
    query: dict[str, list[str]] = {}
    for name, value in seen.query:
        query.setdefault(name, []).append(value)
    for name, values in query.items():
        param = declared.get(("query", name))
        if param is None:
            raise SpecViolation(f"{op.id}: query parameter {name!r} is not declared by the schema")
        schema = param["schema"]
        if schema.get("type") == "array":
            instance: Any = [_coerce(v, schema.get("items", {})) for v in values]
        elif len(values) > 1:
            raise SpecViolation(f"{op.id}: query parameter {name} is not an array but was sent {len(values)} times")
        else:
            instance = _coerce(values[0], schema)
        try:
            jsonschema.validate(instance, json_schema(schema), format_checker=checker)
        except jsonschema.ValidationError as exc:
            raise SpecViolation(f"{op.id}: query parameter {name}={values!r}: {exc.message}") from None
    for (where, name), param in declared.items():
        if where == "query" and param.get("required") and name not in query:
            raise SpecViolation(f"{op.id}: required query parameter {name} is missing")
    schemes = {name for req in op.spec.get("security", []) for name in req}
    if "auth_token" in schemes:
        auth = next((v for k, v in seen.headers.items() if k.lower() == "authorization"), "")
        if not re.fullmatch(r"Bearer \S+", auth):
            raise SpecViolation(f"{op.id}: the auth_token scheme (http bearer) needs 'Authorization: Bearer <token>'")
    if seen.method == "GET" and seen.body:
        raise SpecViolation(f"{op.id}: a GET must not carry a body")
    return op.id


def json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes a "null" type (or a None enum member);
    the rest of OpenAPI 3.0's schema dialect is JSON Schema already."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: json_schema(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        for combinator in ("anyOf", "oneOf"):
            if combinator in out:
                out[combinator] = [*out[combinator], {"type": "null"}]
    return out


def validate_response(operation_id: str, body: Any) -> None:
    """Check a recorded body against the 200 response schema of the operation (jsonschema raises)."""
    op = next(op for op in OPERATIONS if op.id == operation_id)
    schema = op.spec["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(body, json_schema(schema), format_checker=FORMATS)


def scopes(operation_id: str) -> list[str]:
    op = next(op for op in OPERATIONS if op.id == operation_id)
    return [s for req in op.spec.get("security", []) for s in req.get("auth_token", [])]


class SentryBackend:
    """A FaultyBackend that answers an organization's endpoints with recorded Sentry responses."""

    def __init__(self, org: str = ORG, prefix: str = "") -> None:
        self.org = org
        self.prefix = prefix
        self.server = FaultyBackend()

    def __enter__(self) -> SentryBackend:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url + self.prefix

    def path(self, tail: str) -> str:
        return f"{self.prefix}/api/0/organizations/{self.org}/{tail}"

    def paging(self, tail: str, **kw: Any) -> dict[str, str]:
        """Sentry's paging headers for a list at `tail` (see `paging_headers`)."""
        return paging_headers(self.server.url + self.path(tail), **kw)

    def answer(self, tail: str, *replies: Reply, then: Reply | None = None) -> None:
        self.server.script(self.path(tail), *replies, then=then)

    def serve_recorded(self, issue_id: str = "6001", region_url: str | None = None) -> None:
        org = recorded("organization")
        if region_url is not None:
            org["links"]["regionUrl"] = region_url
        self.answer("", then=Reply(200, org))
        self.answer("projects/", then=Reply(200, recorded("projects"), self.paging("projects/")))
        issues = recorded("issues")
        self.answer("issues/", then=Reply(200, issues, self.paging("issues/", hits=len(issues))))
        self.answer(f"issues/{issue_id}/", then=Reply(200, recorded("issue")))
        self.answer(f"issues/{issue_id}/events/latest/", then=Reply(200, recorded("event_latest")))
        self.answer(f"issues/{issue_id}/events/", then=Reply(200, recorded("issue_events")))
        # The other recorded issue has no event any more (merged or deleted since it was listed).
        self.answer("issues/6002/events/latest/", then=Reply(404, {"detail": "The requested resource does not exist"}))

    def requests(self) -> list[Seen]:
        return self.server.seen()

    def validated(self) -> list[str]:
        """Every request received so far, validated against the schema: their operationIds in order."""
        return [validate_request(s, self.prefix) for s in self.requests()]
