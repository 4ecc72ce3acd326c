"""A JSON-with-comments parser that keeps the position of every value, for byte-exact edits of client configs.

Client configs are JSON (Claude Desktop, Claude Code, Cursor, Windsurf) or JSONC (VS Code's mcp.json: `//` and
`/* */` comments, trailing commas). `fleet adopt` rewrites the values of one server's entry and must leave
every other byte alone, so it needs the exact span of each value; `fleet list` needs the values themselves and,
for a broken file, the line and column of the mistake.

Why not a library: the stdlib `json` gives no positions and rejects comments; `json5`/`pyjson5` give no
positions; tree-sitter-json gives positions and accepts comments, but treats a trailing comma (which VS Code
accepts) as a syntax error and reports mistakes as ERROR/MISSING nodes rather than a message a user can act on.
JSON's grammar is small enough that a recursive-descent parser over the decoded text is short and exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class JsoncError(ValueError):
    """A syntax error at (line, col), both 1-based, with what was expected there."""

    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.message = message
        self.line = line
        self.col = col


@dataclass
class Node:
    """One value: `start`/`end` index the decoded text (end exclusive). Objects keep their members in file order
    (a duplicate key keeps both; `get` returns the last, as JSON.parse does)."""

    kind: str  # object | array | string | number | true | false | null
    start: int
    end: int
    value: Any = None  # scalars: the Python value
    members: list[tuple[str, Node]] = field(default_factory=list)  # objects
    items: list[Node] = field(default_factory=list)  # arrays

    def get(self, key: str) -> Node | None:
        if self.kind != "object":
            return None
        found = None
        for k, v in self.members:
            if k == key:
                found = v
        return found

    def to_python(self) -> Any:
        if self.kind == "object":
            return {k: v.to_python() for k, v in self.members}
        if self.kind == "array":
            return [v.to_python() for v in self.items]
        return self.value


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_HEX = frozenset("0123456789abcdefABCDEF")
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_STRING_RUN = re.compile(r'[^"\\\n]*')  # up to a quote, a backslash or a line break
_MAX_DEPTH = 200  # recursion guard: a hostile file cannot exhaust the stack


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith("\ufeff") else 0  # a UTF-8 BOM (some Windows editors write one)
        self.depth = 0

    def fail(self, message: str, pos: int | None = None) -> JsoncError:
        p = self.pos if pos is None else pos
        line = self.text.count("\n", 0, p) + 1
        col = p - (self.text.rfind("\n", 0, p) + 1) + 1
        return JsoncError(message, line, col)

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "the end of the file"
        return repr(self.text[self.pos])

    def why(self) -> str:
        if self.pos >= len(self.text):
            return " (a closing } or ] is missing)"
        return " (a missing comma?)"

    def skip(self) -> None:
        """Whitespace and comments."""
        t, n = self.text, len(self.text)
        while self.pos < n:
            c = t[self.pos]
            if c in " \t\r\n":
                self.pos = _WHITESPACE.match(t, self.pos).end()  # type: ignore[union-attr]  # always matches
            elif t.startswith("//", self.pos):
                nl = t.find("\n", self.pos)
                self.pos = n if nl < 0 else nl + 1
            elif t.startswith("/*", self.pos):
                close = t.find("*/", self.pos + 2)
                if close < 0:
                    raise self.fail("a /* comment is never closed: add */")
                self.pos = close + 2
            else:
                return

    def value(self) -> Node:
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("expected a value, found the end of the file")
        c = self.text[self.pos]
        if c in "{[":
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.fail(f"nested more than {_MAX_DEPTH} levels deep: this is not a client config")
            node = self.obj() if c == "{" else self.arr()
            self.depth -= 1
            return node
        if c == '"':
            start = self.pos
            s = self.string()
            return Node("string", start, self.pos, s)
        for word, val in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                start = self.pos
                self.pos += len(word)
                return Node(word, start, self.pos, val)
        if c in "-0123456789":
            return self.number()
        if c == "'":
            raise self.fail("strings need double quotes in JSON: replace ' with \"")
        raise self.fail(f"expected a value (object, array, string, number, true, false or null), found {self.found()}")

    def number(self) -> Node:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _NUMBER_CHARS:
            self.pos += 1
        raw = self.text[start : self.pos]
        try:
            val: int | float = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
        except ValueError:
            raise self.fail(f"{raw!r} is not a number", start) from None
        return Node("number", start, self.pos, val)

    def string(self) -> str:
        t = self.text
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            end = _STRING_RUN.match(t, self.pos).end()  # type: ignore[union-attr]  # always matches
            out.append(t[self.pos : end])
            self.pos = end
            if end >= len(t) or t[end] == "\n":
                raise self.fail('a string is never closed: add the closing "', start)
            if t[end] == '"':
                self.pos += 1
                return "".join(out)
            esc = t[end + 1 : end + 2]
            if esc == "u":
                hexa = t[end + 2 : end + 6]
                if len(hexa) != 4 or any(h not in _HEX for h in hexa):
                    raise self.fail("\\u must be followed by 4 hex digits", end)
                code = int(hexa, 16)
                self.pos = end + 6
                low = t[self.pos + 2 : self.pos + 6] if t.startswith("\\u", self.pos) else ""
                if 0xD800 <= code < 0xDC00 and len(low) == 4 and all(h in _HEX for h in low):
                    low_code = int(low, 16)
                    if 0xDC00 <= low_code < 0xE000:  # a UTF-16 surrogate pair: one character, as json.loads reads it
                        code = 0x10000 + ((code - 0xD800) << 10) + (low_code - 0xDC00)
                        self.pos += 6
                out.append(chr(code))
            elif esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                self.pos = end + 2
            else:
                raise self.fail(f"invalid escape \\{esc} in a string (write \\\\ for a backslash)", end)

    def obj(self) -> Node:
        node = Node("object", self.pos, self.pos)
        self.pos += 1
        while True:
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                node.end = self.pos
                return node
            if self.pos >= len(self.text) or self.text[self.pos] != '"':
                raise self.fail(f'expected a "key" in double quotes or }}, found {self.found()}')
            key = self.string()
            self.skip()
            if self.pos >= len(self.text) or self.text[self.pos] != ":":
                raise self.fail(f"expected ':' after the key {key!r}, found {self.found()}")
            self.pos += 1
            node.members.append((key, self.value()))
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1  # a trailing comma before } is accepted (JSONC)
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                continue
            raise self.fail(f"expected ',' or '}}' after the value of {key!r}, found {self.found()}{self.why()}")

    def arr(self) -> Node:
        node = Node("array", self.pos, self.pos)
        self.pos += 1
        while True:
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                node.end = self.pos
                return node
            node.items.append(self.value())
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                continue
            raise self.fail(f"expected ',' or ']' in an array, found {self.found()}{self.why()}")


def parse(text: str) -> Node:
    """Parse JSON or JSONC text into positioned nodes. Raises JsoncError with the line, column and the fix."""
    p = _Parser(text)
    root = p.value()
    p.skip()
    if p.pos < len(text):
        raise p.fail(f"unexpected {p.found()} after the end of the top-level value (an extra bracket or brace?)")
    return root
