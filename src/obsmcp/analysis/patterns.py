"""Log template mining: messages -> templates with `<*>` for the variable parts.

Pure functions, no I/O. The approach (written for obsmcp; the ideas are the common ones from the log-parsing
literature: shape masking as in Drain's preprocessing, length buckets, similarity clustering, IPLoM-style
splitting on low-cardinality positions):

1. Normalise whitespace and split the message into tokens on whitespace and on punctuation that separates a
   key from a value (`=`, `:`, `,`, `(`, `)`, `[`, `]`, `"`, `'`, `|`, `#`, runs of dots). Each token keeps
   whether a space preceded it, so a template renders with the message's own spacing.
2. Mask tokens whose *shape* says they are values (numbers, hex, IPs, sizes, ids with long digit runs, paths
   with their query string, the part of a URL after `scheme://`, host names, the host before `:<port>`,
   booleans, lists of names that differ only in their numbers). Masking is cheap and makes most repeats
   identical, so the expensive steps below run once per distinct masked token sequence, weighted by its count.
3. Per token count, cluster the distinct sequences greedily by similarity (share of equal tokens); positions
   where members differ become variables.
4. Refine: a position that took only a few distinct *words* in a cluster is an event word ("SCREEN_ON" vs
   "SCREEN_OFF"), not a value, so the cluster is split on it; positions with many values, or with words seen
   about once each, or where some member holds a value, stay variables.
5. Merge clusters whose fixed text is the same but whose values took a different number of tokens ("(host)"
   vs "()", a written date), and then those that differ only in value decorations ("00:01" vs "<1 sec", a
   size with or without "(1.2 KB)"); such merged gaps render as one `<*>`.
6. Merge a template into a more general one whose `<*>` can absorb the places where it differs, when those
   hold values (a rare "LOCAL(0)" where an IP usually stands): one odd message must not split an event.

Templates follow the Loghub ground-truth conventions so that they compare exactly: `<*>` replaces a whole
token (never a part of one), separators around it are kept, runs of spaces become one space.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

VAR = "<*>"

# Characters that separate a key from its value or a value from the next one. `/`, `.`, `-`, `_`, `@` stay
# inside tokens: they join the parts of one value (paths, hostnames, versions, ids).
_DELIMS = "=:,;()\\[\\]{}\"'|#"
_WORD_TAIL = rf"(?:[^\s{_DELIMS}.]|\.(?=[^\s{_DELIMS}.]))*"  # single dots inside a word, none trailing
_WORD = rf"[^\s{_DELIMS}.]{_WORD_TAIL}"
# Values recognised in one C-speed pass before tokenising: numbers and words that start with a digit, and hex
# byte strings (MAC addresses), when they stand alone (after a space, a delimiter or the start).
_PREMASK = re.compile(
    rf"(?<![^\s{_DELIMS}])(?:"
    r"(?:[0-9A-Fa-f]{2}[:-]){5,}[0-9A-Fa-f]{2}(?![\w:])"
    rf"|[-+<>~]?\.?\d{_WORD_TAIL}"
    r")"
)
# The same premask in RE2 syntax (no look-around), for engines that mask inside SQL (DuckDB regexp_replace,
# ClickHouse replaceRegexpAll) before grouping: apply in order with global replacement. The output keeps
# every delimiter and puts `<*>` where Python would, so mining the premasked text gives the same templates.
_RE2_DELIM = "[\\s=:,;()\\[\\]{}\"'|#]"
_RE2_WORD_CHARS = "[^\\s=:,;()\\[\\]{}\"'|#.]"
PREMASK_RE2: tuple[tuple[str, str], ...] = (
    (f"(^|{_RE2_DELIM})(?:[0-9A-Fa-f]{{2}}[:-]){{5,}}[0-9A-Fa-f]{{2}}([^\\w:]|$)", "\\1<*>\\2"),
    (f"(^|{_RE2_DELIM})[-+<>~]?\\.?\\d{_RE2_WORD_CHARS}*(?:\\.{_RE2_WORD_CHARS}+)*", "\\1<*>"),
)
_MARK = "\x00"  # stands for a premasked value; a word character for the tokeniser
_TOKEN = re.compile(
    r" ?(?:"
    r"[A-Za-z][\w+.-]*://(?:<\*>|[^\s\])\"'>,])*(?<![:.;])"  # a URL: scheme kept, rest one value, sans trailing ":.;"
    rf"|\.{{0,2}}/[^\s{_DELIMS}?]*(?:\?[^\s\"'<>]*)?"  # a path (absolute or ./ ../), with its query string
    rf"|{_WORD}"
    r"|\.+"  # dot runs ("processor.......0x0") and sentence ends ("port 4040.")
    rf"|[{_DELIMS}]"
    r")"
)
_DIGITS = re.compile(r"\d")
_WORDISH = re.compile(r"[A-Za-z]{2}")
# What stands before ":<port>" is a host when it is made of host-name characters and has a digit or two dots
# ("msra-sa-41", "db.prod.lan"); "ib_sm_sweep.c:42" and "Main.java:42" are a source file and a line.
_HOSTISH = re.compile(r" ?(?=[^.]*\d|.*\..*\.)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_WORDISH_TOKEN = re.compile(r"[A-Za-z][A-Za-z_-]+")
_DIGIT_RUNS = re.compile(r"\d+")
_LONG_DIGITS = re.compile(r"\d{4}")
_STARTS_NUMERIC = re.compile(r"[-+<>~]?\.?\d")
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]{8,}")
# "core.2275", "PS/2", "touch.0": a name with a numbered suffix; only the number is the value.
_NUMBERED_NAME = re.compile(r"((?:[A-Za-z_]+[./])+)\d+")
# Words the Loghub ground truth always treats as values (booleans, null, the default user names).
_VALUE_WORDS = frozenset({"true", "false", "null", "root", "admin"})
# Parts of a written date ("Fri Jul  1 07:57:30 2005"): the date is a value, its words too.
_DATE_WORDS = frozenset(
    [
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
        "Sat",
        "Sun",
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
    ]
)
# A host name: three or more labels ending in a top-level domain (a country code or a common generic one).
# Dotted names that end otherwise ("org.apache.spark.Executor", "mapred.task.id") are code, not hosts.
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9-]+\.){2,}(?:[a-z]{2}|com|net|org|edu|gov|mil|int|info|biz|io|local|lan|internal)"
)
# Names that differ only in their numbers, this many in a row, are a list of values.
_MIN_LIST = 3
_CACHE_ENTRIES = 200_000  # per cache of a TemplateMiner (exact messages, premasked messages)
# A position that took at most this many distinct words inside one cluster is read as an event word
# ("VM Started / Stopped / Paused / Resumed", task states) and the cluster is split on it; with more than
# _FEW_EVENT_WORDS words, only when they recur (on average _EVENT_REPEATS messages per word): a user or host
# field shows many words about once each.
_MAX_EVENT_WORDS = 8
_FEW_EVENT_WORDS = 3
_EVENT_REPEATS = 2
# Share of equal tokens above which two sequences of the same length belong to one cluster.
_SIMILARITY = 0.5


def _is_value(word: str) -> bool:
    """True when a token's shape says it is a value rather than a word of the message's fixed text."""
    if word.lower() in _VALUE_WORDS or word in _DATE_WORDS:
        return True
    if word[0] == "/" or word[:2] == "./" or word[:3] == "../":
        return len(word) > 1  # a path
    if _HOSTNAME.fullmatch(word) is not None:
        return True  # "cp-1.slowvm1.example.us": a host name, digits or not
    if not _DIGITS.search(word):
        return _HEX.fullmatch(word) is not None
    if _STARTS_NUMERIC.match(word) or _LONG_DIGITS.search(word) or _HEX.fullmatch(word):
        return True
    # Mixed words: "ssh2", "L3", "SOCKS5", "jk2_init" are names; "0x1f", "E820", "v1.0.0" are values.
    digits = sum(c.isdigit() for c in word)
    letters = sum(c.isalpha() for c in word)
    return digits > letters


def tokenize(message: str) -> list[str]:
    """Tokens with their leading space (" word" or "word"); joined they give the whitespace-normalised message
    (with standalone numbers replaced by a marker)."""
    return _TOKEN.findall(_PREMASK.sub(_MARK, " ".join(message.split())))


_KEEP = ""  # cache value: the token is fixed text
_word_cache: dict[str, str] = {}


def _classify(tok: str) -> str:
    """The masked form of one token, or `_KEEP`. Cached: most tokens are the same few thousand words."""
    got = _word_cache.get(tok)
    if got is not None:
        return got
    space = tok.startswith(" ")
    word = tok[1:] if space else tok
    lead = " " if space else ""
    out = _KEEP
    if word == _MARK:
        out = lead + VAR
    elif "://" in word:
        scheme, _, rest = word.partition("://")
        out = lead + scheme + "://" + VAR if rest else _KEEP
    elif len(word) > 1 or word.isalnum():
        numbered = _NUMBERED_NAME.fullmatch(word)
        if numbered is not None:
            out = lead + numbered.group(1) + VAR
        elif _is_value(word):
            out = lead + VAR
    if len(_word_cache) > 200_000:  # bound memory on endless unique tokens
        _word_cache.clear()
    _word_cache[tok] = out
    return out


def mask(tokens: Sequence[str]) -> tuple[str, ...]:
    """Replace value-shaped tokens by `<*>` (keeping the leading space). Keys (a word right before `=`) stay."""
    out: list[str] = []
    last = len(tokens) - 1
    numbered_words = False
    for i, tok in enumerate(tokens):
        rep = _word_cache.get(tok)
        if rep is None:
            rep = _classify(tok)
        if rep is _KEEP or rep == _KEEP:
            if i + 2 <= last and tokens[i + 1] == ":" and tokens[i + 2] == _MARK and _HOSTISH.fullmatch(tok):
                out.append(_as_var(tok))  # "msra-sa-41:8030": what stands before a port is a host
                continue
            out.append(tok)
            if not numbered_words and _DIGITS.search(tok):
                numbered_words = True
        elif i < last and tokens[i + 1] == "=" and _is_key(tok):
            out.append(tok)
        else:
            out.append(rep)
    if numbered_words:
        _mask_lists(out)
    return tuple(out)


def _mask_lists(out: list[str]) -> None:
    """Mask runs of names that differ only in their numbers ("an14 an15 an16", "node1 node2 node3"): a list of
    values (hosts, devices) whose length varies between messages of one event, not fixed text."""
    run_start, run_shape = 0, ""
    for i in range(len(out) + 1):
        tok = out[i] if i < len(out) else ""
        shape = _DIGIT_RUNS.sub("0", tok) if tok.startswith(" ") and _DIGITS.search(tok) else ""
        if shape and shape == run_shape:
            continue
        if run_shape and i - run_start >= _MIN_LIST:
            for j in range(run_start, i):
                out[j] = " " + VAR
        run_start, run_shape = i, shape


def _is_key(tok: str) -> bool:
    word = tok.lstrip(" ")
    return word[:1].isalpha() and word.lower() not in _VALUE_WORDS


def mask_message(message: str) -> tuple[str, ...]:
    """The masked token sequence of a message: messages of one event mostly share it."""
    return mask(tokenize(message))


def render(tokens: Iterable[str]) -> str:
    return "".join(tokens).strip()


def template_id(template: str) -> str:
    """A short stable id for a template text: the same template gets the same id in every run and window."""
    return hashlib.blake2b(template.encode("utf-8"), digest_size=6).hexdigest()


@dataclass
class Template:
    id: str
    template: str
    count: int
    example: str
    groups: list[int] = field(default_factory=list, repr=False)


def _is_var(tok: str) -> bool:
    return tok == VAR or tok == " <*>"


def _as_var(tok: str) -> str:
    return " <*>" if tok.startswith(" ") else VAR


class TemplateMiner:
    """Streaming front half, batch back half.

    `add()` is O(tokens) and only groups messages by their masked token sequence; `templates()` clusters the
    distinct groups (usually thousands even for millions of messages) and is cached until the next `add()`.
    """

    def __init__(self) -> None:
        self._group_of_masked: dict[tuple[str, ...], int] = {}
        self._group_of_message: dict[str, int] = {}
        self._group_of_premasked: dict[str, int] = {}
        self._masked: list[tuple[str, ...]] = []
        self._counts: list[int] = []
        self._examples: list[str] = []
        self._resolved: list[int] | None = None  # group -> template index
        self._templates: list[Template] = []

    def add(self, message: str, count: int = 1) -> int:
        """Count a message; returns its group id (pass to `template_of`)."""
        g = self._group_of_message.get(message)
        if g is None:
            # Most repeats of an event differ only in numbers: after the premask they are the same text.
            premasked = _PREMASK.sub(_MARK, " ".join(message.split()))
            g = self._group_of_premasked.get(premasked)
            if g is None:
                masked = mask(_TOKEN.findall(premasked))
                g = self._group_of_masked.get(masked)
                if g is None:
                    g = len(self._masked)
                    self._group_of_masked[masked] = g
                    self._masked.append(masked)
                    self._counts.append(0)
                    self._examples.append(message)
                if len(self._group_of_premasked) < _CACHE_ENTRIES:
                    self._group_of_premasked[premasked] = g
            if len(self._group_of_message) < _CACHE_ENTRIES:  # bound the caches' memory
                self._group_of_message[message] = g
        self._counts[g] += count
        self._resolved = None
        return g

    def template_of(self, group: int) -> Template:
        self._resolve()
        assert self._resolved is not None
        return self._templates[self._resolved[group]]

    def templates(self) -> list[Template]:
        """All templates, most frequent first."""
        self._resolve()
        return sorted(self._templates, key=lambda t: (-t.count, t.template))

    # -- clustering ---------------------------------------------------------------------------------------

    def _resolve(self) -> None:
        if self._resolved is not None:
            return
        by_len: dict[int, list[int]] = {}
        for g, seq in enumerate(self._masked):
            by_len.setdefault(len(seq), []).append(g)
        clusters: list[list[int]] = []
        for groups in by_len.values():
            for cluster in _cluster_same_length(groups, self._masked, self._counts):
                clusters.extend(_split_on_event_words(cluster, self._masked, self._counts))
        resolved = [0] * len(self._masked)
        merged: dict[str, Template] = {}
        shaped = _merge_value_shapes(_merge_same_skeleton(clusters, self._masked))
        for members, text in _merge_specialised(shaped, self._counts):
            t = merged.get(text)
            if t is None:
                best = max(members, key=lambda g: self._counts[g])
                t = merged[text] = Template(template_id(text), text, 0, self._examples[best])
            t.count += sum(self._counts[g] for g in members)
            t.groups.extend(members)
        self._templates = list(merged.values())
        for i, t in enumerate(self._templates):
            for g in t.groups:
                resolved[g] = i
        self._resolved = resolved


def _generalise(seqs: Sequence[tuple[str, ...]]) -> list[str]:
    first = list(seqs[0])
    for seq in seqs[1:]:
        for i, tok in enumerate(seq):
            if first[i] != tok and not _is_var(first[i]):
                first[i] = _as_var(first[i])
    return first


def _skeleton(tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(t for t in tokens if not _is_var(t))


def _render_gaps(templates: Sequence[Sequence[str]]) -> str:
    """One template for clusters with the same fixed text but different token counts: the values between two
    fixed tokens took a varying number of tokens (a host name or nothing, a date), so each such gap is one
    `<*>`."""
    skeleton = _skeleton(templates[0])
    gap_var: list[str | None] = [None] * (len(skeleton) + 1)
    for tmpl in templates:
        gap = 0
        for tok in tmpl:
            if _is_var(tok):
                if gap_var[gap] is None:
                    gap_var[gap] = tok
            else:
                gap += 1
    out: list[str] = []
    for i, var in enumerate(gap_var):
        if var is not None:
            out.append(var)
        if i < len(skeleton):
            out.append(skeleton[i])
    return render(out)


def _merge_same_skeleton(clusters: list[list[int]], masked: list[tuple[str, ...]]) -> list[tuple[list[int], str]]:
    """(members, template text) after merging clusters whose fixed text is the same and differs only in how
    many tokens the values took. Needs at least two fixed words, so that "<*> <*>" and "<*>" stay apart."""
    by_skeleton: dict[tuple[str, ...], list[tuple[list[int], list[str]]]] = {}
    out: list[tuple[list[int], str]] = []
    for members in clusters:
        tmpl = _generalise([masked[g] for g in members])
        skeleton = _skeleton(tmpl)
        if sum(1 for t in skeleton if _WORDISH.search(t)) < 2:
            out.append((members, render(tmpl)))
        else:
            by_skeleton.setdefault(skeleton, []).append((members, tmpl))
    for same in by_skeleton.values():
        if len(same) == 1:
            out.append((same[0][0], render(same[0][1])))
            continue
        members = [g for m, _ in same for g in m]
        lengths = {len(t) for _, t in same}
        if len(lengths) == 1:
            out.append((members, render(_generalise([masked[g] for g in members]))))
        else:
            out.append((members, _render_gaps([t for _, t in same])))
    return out


# Second merge: values whose *shape* differs between messages of one event: "00:01" vs "<1 sec", a size with
# or without "(1.2 KB)" after it, "(host)" vs "()". Compare the fixed text with such value decorations removed.
_COMPOUND_VALUE = re.compile(r"<\*>(?:[^\w\s<]+<\*>)+")
_BRACKETED_VALUE = re.compile(r"[(\[] ?(?:<\*>)? ?[)\]]")
_UNIT_AFTER_VALUE = re.compile(
    r"<\*> (?:ns|us|µs|ms|s|sec|secs|seconds|min|mins|minutes|h|hours|days|B|KB|MB|GB|TB|bytes)\b"
)
_VALUE_RUN = re.compile(r"<\*>(?: ?<\*>)*")


def _value_shape_free(text: str) -> str:
    s = _COMPOUND_VALUE.sub(VAR, text)
    s = _BRACKETED_VALUE.sub(VAR, s)
    s = _UNIT_AFTER_VALUE.sub(VAR, s)
    return _VALUE_RUN.sub(VAR, s)


def _merge_value_shapes(groups: list[tuple[list[int], str]]) -> list[tuple[list[int], str]]:
    by_key: dict[str, list[tuple[list[int], str]]] = {}
    out: list[tuple[list[int], str]] = []
    for members, text in groups:
        shape_free = _value_shape_free(text)
        fixed = " ".join(shape_free.replace(VAR, " ").split())
        if len(_WORDISH.findall(fixed)) < 2:
            out.append((members, text))
        else:
            by_key.setdefault(fixed, []).append((members, shape_free))
    originals = dict((id(m), t) for m, t in groups)
    for same in by_key.values():
        if len(same) == 1:
            out.append((same[0][0], originals[id(same[0][0])]))
            continue
        members = [g for m, _ in same for g in m]
        out.append((members, _render_gaps([tokenize(t) for _, t in same])))
    return out


# Third merge: a rare variant whose value took an unusual shape ("LOCAL(0)" where an IP usually stands, a URL
# where a name does, "#3#") is its own cluster even though its text fits the common template. A template's
# `<*>` may absorb text whose every whitespace-separated chunk is value-like (holds a value or a digit); fixed
# words and `key=value` fields never get absorbed, so "Connection closed by <*> [preauth]" stays apart from
# "Connection closed by <*>" and "rhost=<*> user=<*>" from "rhost=<*>".
_VAR_RUN = re.compile(r"<\*>(?: <\*>)*")


def _template_regex(text: str) -> re.Pattern[str]:
    """A regex that a more specific template's text matches: each run of `<*>` absorbs one or more
    whitespace-separated chunks that each hold a value or a digit and no `=`. A chunk stops before the
    punctuation that follows the `<*>` in this template, and is taken possessively, so matching never
    backtracks inside a chunk (linear in the text for the usual templates)."""
    parts = _VAR_RUN.split(text)
    out = [re.escape(parts[0])]
    for nxt in parts[1:]:
        stop = re.escape(nxt[0]) if nxt and not nxt[0].isalnum() and not nxt[0].isspace() else ""
        chunk = rf"(?=[^\s={stop}]*(?:<\*>|\d))[^\s={stop}]++"
        out.append(f"{chunk}(?: {chunk})*")
        out.append(re.escape(nxt))
    return re.compile("".join(out))


def _merge_specialised(groups: list[tuple[list[int], str]], counts: list[int]) -> list[tuple[list[int], str]]:
    """Merge each template into the most frequent more general template that its text fits."""
    if len(groups) < 2:
        return groups
    weight = [sum(counts[g] for g in members) for members, _ in groups]
    # Candidates for absorbing: templates with a variable and at least two fixed words, indexed by their
    # rarest-looking fixed word (the longest) so that each template is only tested against a few others.
    by_word: dict[str, list[int]] = {}
    words_of: list[set[str]] = []
    for i, (_, text) in enumerate(groups):
        words = set(_WORDISH_TOKEN.findall(text))
        words_of.append(words)
        if VAR in text and len(words) >= 2:
            by_word.setdefault(max(words, key=lambda w: (len(w), w)), []).append(i)
    if not by_word:
        return groups
    regexes: dict[int, re.Pattern[str]] = {}
    parent = list(range(len(groups)))
    for i, (_, text) in enumerate(groups):
        best = -1
        for word in words_of[i]:
            for j in by_word.get(word, ()):
                if j == i or not words_of[j] <= words_of[i] or (best >= 0 and weight[j] <= weight[best]):
                    continue
                rx = regexes.get(j)
                if rx is None:
                    rx = regexes[j] = _template_regex(groups[j][1])
                if rx.fullmatch(text):
                    best = j
        if best >= 0:
            parent[i] = best
    out: dict[int, tuple[list[int], str]] = {}
    for i in range(len(groups)):
        root, seen = i, 0
        while parent[root] != root and seen < len(groups):  # follow the chain to the most general template
            root, seen = parent[root], seen + 1
        target = out.setdefault(root, ([], groups[root][1]))
        target[0].extend(groups[i][0])
    return list(out.values())


def _cluster_same_length(groups: list[int], masked: list[tuple[str, ...]], counts: list[int]) -> list[list[int]]:
    """Greedy similarity clustering, most frequent sequences first (they make the most stable seeds)."""
    order = sorted(groups, key=lambda g: (-counts[g], masked[g]))
    templates: list[list[str]] = []
    members: list[list[int]] = []
    for g in order:
        seq = masked[g]
        n = len(seq)
        best, best_sim = -1, -1.0
        for ci, tmpl in enumerate(templates):
            same = 0
            for a, b in zip(tmpl, seq, strict=True):
                if a == b:
                    same += 1
            sim = same / n if n else 1.0
            if sim > best_sim:
                best, best_sim = ci, sim
        if best >= 0 and best_sim >= _SIMILARITY:
            tmpl = templates[best]
            for i, tok in enumerate(seq):
                if tmpl[i] != tok:
                    tmpl[i] = _as_var(tmpl[i])
            members[best].append(g)
        else:
            templates.append(list(seq))
            members.append([g])
    return members


def _split_on_event_words(cluster: list[int], masked: list[tuple[str, ...]], counts: list[int]) -> list[list[int]]:
    """Split a cluster on a position whose few distinct values are words (event words, not values)."""
    if len(cluster) < 2:
        return [cluster]
    n = len(masked[cluster[0]])
    messages = sum(counts[g] for g in cluster)
    best_pos, best_values = -1, 0
    for i in range(n):
        values = {masked[g][i] for g in cluster}
        if len(values) < 2 or len(values) > _MAX_EVENT_WORDS or any(VAR in v for v in values):
            continue
        if len({_DIGIT_RUNS.sub("0", v) for v in values}) == 1:
            continue  # "bglio91" / "bglio716": one name with different numbers is a value
        if len(values) > _FEW_EVENT_WORDS and messages < _EVENT_REPEATS * len(values):
            continue  # more than a few words, each seen about once ("alice", "bob", ...): a value like a user
        if best_pos < 0 or len(values) < best_values:
            best_pos, best_values = i, len(values)
    if best_pos < 0:
        return [cluster]
    parts: dict[str, list[int]] = {}
    for g in cluster:
        parts.setdefault(masked[g][best_pos], []).append(g)
    out: list[list[int]] = []
    for part in parts.values():
        out.extend(_split_on_event_words(part, masked, counts))
    return out


def mine(messages: Sequence[str]) -> list[str]:
    """One template per message, in order."""
    miner = TemplateMiner()
    groups = [miner.add(m) for m in messages]
    return [miner.template_of(g).template for g in groups]
