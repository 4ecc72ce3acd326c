"""Secret detection for text that comes from the observed system (log bodies, exception messages, attributes).

A `Redactor` runs a list of detectors over a string; each detector reports the spans of the secrets it finds
(the secret part only: `password=` stays, its value goes), overlapping spans are merged, and each span becomes
`[REDACTED:<kind>]`. The kinds are listed in `KINDS`; settings can turn single kinds off and add patterns.

What is detected, and how:

- Formats with a fixed shape, by prefix and length: AWS access key ids (AKIA/ASIA/...) and session tokens,
  Google API keys (AIza), OAuth client secrets (GOCSPX-), access (ya29.) and refresh (1//0) tokens, GitHub
  (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), GitLab (glpat- and the other gl*- prefixes), Slack (xox*-, xapp-,
  hooks.slack.com URLs), Stripe (sk_/rk_ live/test, whsec_), OpenAI (sk-, sk-proj-, ...), Anthropic (sk-ant-),
  Sentry (DSN keys, sntrys_/sntryu_), SendGrid, npm, PyPI, Vault, Docker Hub, Shopify, Hugging Face, and more
  (`_SAAS`); JWTs (eyJ... with two or more dots); PEM private key blocks, also when their newlines were escaped
  (\\n) or flattened (` ⏎ `), and bare base64 DER/OpenSSH private keys by their fixed ASN.1 prefix.
- Secrets with no shape of their own, only in context: a value after a key whose name says "secret"
  (password, passwd, pwd, secret, token, api_key, client_secret, private_key, ...; `key=value`, `key: value`,
  JSON, Python/Java/Go reprs, XML tags, `--password x`); Authorization/Proxy-Authorization headers (any scheme),
  `Bearer <token>`, `Basic <base64 user:pass>`; passwords in URLs (scheme://user:pass@host); session cookies;
  AWS secret keys after their key id or key name; Datadog API (32 hex) and application keys (40 hex) after
  dd-api-key / DD_API_KEY / api_key-style names only, because 32-hex strings are also trace ids.
- Card numbers: 13-19 digits (optionally grouped by spaces or dashes the way cards are printed) with a card
  network's prefix and a valid Luhn check digit. Unusual lengths without grouping (13, 14, 17-19 digits, the
  shape of epoch timestamps and 64-bit ids) count only with a card word nearby.

What is deliberately left alone: trace and span ids, UUIDs, git SHAs, digests, hex request ids, timestamps,
IPs, pod names, base64 payloads, public keys and certificates, and "password"/"token" in prose or with an
empty, masked or placeholder value (`password=`, `password=****`, `${DB_PASSWORD}`, `<api-key>`). There is no
entropy-based detection: a random string in an unlabelled spot looks exactly like a trace id or a digest, and
telemetry is full of those. The corpus test (tests/test_redaction.py) measures recall and false positives.

Why not a library. detect-secrets (Yelp) scans files and git diffs: it keeps global plugin settings, reports
(line, secret) pairs rather than spans, and its high-entropy plugins flag every trace id. gitleaks and
trufflehog are Go binaries for repositories (trufflehog verifies keys against live APIs, which must not
happen here). Presidio and scrubadub target PII in prose with NLP models, far too slow per log line. The
prefixes here follow the formats those projects and the vendors document; the matching runs in-process on
each string with Python's `re`, after a cheap substring pre-check per detector.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from prometheus_client import Counter

from obsmcp import metrics

KINDS: dict[str, str] = {
    "private-key": "PEM private key blocks, bare DER/OpenSSH private keys",
    "jwt": "JSON Web Tokens (eyJ...)",
    "aws": "AWS access key ids, secret keys next to them, session tokens",
    "gcp": "Google API keys, OAuth client secrets, access and refresh tokens",
    "github": "GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
    "gitlab": "GitLab tokens (glpat- and other gl*- prefixes)",
    "slack": "Slack tokens (xox*-, xapp-) and webhook URLs",
    "stripe": "Stripe secret and restricted keys, webhook secrets",
    "openai": "OpenAI API keys (sk-, sk-proj-, ...)",
    "anthropic": "Anthropic API keys (sk-ant-)",
    "datadog": "Datadog API and application keys after their header or variable name",
    "sentry": "Sentry DSN keys and auth tokens",
    "saas-token": "other vendor tokens with a fixed prefix (SendGrid, npm, PyPI, Vault, Docker Hub, ...)",
    "auth-header": "Authorization headers, Bearer and Basic credentials",
    "url-password": "passwords in URLs (scheme://user:password@host)",
    "key-value": "values of password/secret/token/api_key/... keys (key=value, key: value, JSON, XML)",
    "cookie": "session cookies",
    "cli-password": "passwords on command lines (--password x, mysql -px, curl -u user:x)",
    "card": "payment card numbers (network prefix and Luhn check)",
}
CUSTOM_KIND = "custom"

REDACTIONS = Counter(
    "obsmcp_redactions",
    "secrets redacted from telemetry text before it left the server, by detector kind",
    ["kind"],
    registry=metrics.REGISTRY,
)


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    kind: str


Finder = Callable[[str], Iterator[tuple[int, int]]]


@dataclass(frozen=True)
class Detector:
    kind: str
    find: Finder
    # Lowercase substrings, one of which any match contains: the detector is skipped when none occurs.
    hints: tuple[str, ...] = ()


def _regex(
    pattern: str, *, group: int | str = 0, flags: int = 0, check: Callable[[re.Match[str]], bool] | None = None
) -> Finder:
    rx = re.compile(pattern, flags)

    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in rx.finditer(text):
            if m.group(group) and (check is None or check(m)):
                yield m.span(group)

    return find


# -- formats with a fixed shape ------------------------------------------------------------------------------

_B = r"(?<![A-Za-z0-9_\-])"  # a token starts here: not inside a longer word
_E = r"(?![A-Za-z0-9_\-])"

# The key between its BEGIN and END lines (to the end of the text when cut off); the lines stay, saying what it was.
_PEM = _regex(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?P<s>.*?)(?=-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    flags=re.S,
    group="s",
)
# Base64 DER of a private key starts with fixed ASN.1 bytes: SEQUENCE { INTEGER 0|1, ... } (PKCS#1/#8 RSA, EC,
# Ed25519) or "openssh-key-v1". Certificates and public keys start differently.
_DER = _regex(
    r"(?<![A-Za-z0-9+/])(?:MII[A-Za-z0-9+/]{2}[AQgw]IBA[AD]|MIG[A-Za-z0-9+/]AgEA|MHcCAQEE|MC4CAQAw|"
    r"b3BlbnNzaC1rZXktdjE)[A-Za-z0-9+/]{16,}={0,2}"
)


def _jwt_check(m: re.Match[str]) -> bool:
    rest = m.group(0).split(".")[1:]
    return sum(len(p) for p in rest) >= 10


_JWT = _regex(r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*){2,4}", check=_jwt_check)

_AWS_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_SECRET_NEAR = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_SESSION = re.compile(r"(?<![A-Za-z0-9/+])(?:IQoJb3JpZ2lu|FwoGZXIvYXdz|FQoGZXIvYXdz)[A-Za-z0-9/+]{60,}={0,2}")


def _looks_random(s: str) -> bool:
    """Mixed case with a digit or symbol: a base64 secret, not a word, a hex digest or an upper-case id."""
    return any(c.islower() for c in s) and any(c.isupper() for c in s) and any(c.isdigit() or c in "/+" for c in s)


def _aws(text: str) -> Iterator[tuple[int, int]]:
    for m in _AWS_ID.finditer(text):
        yield m.span()
        # A secret key printed next to its key id (CSV exports, "id:secret", boto reprs).
        near = _AWS_SECRET_NEAR.search(text, m.end(), m.end() + 120)
        if near and _looks_random(near.group(0)):
            yield near.span()
    for m in _AWS_SESSION.finditer(text):
        yield m.span()


_GCP = _regex(
    _B + r"(?:AIza[0-9A-Za-z_\-]{35}|GOCSPX-[0-9A-Za-z_\-]{28}|ya29\.[0-9A-Za-z_\-]{20,}|1//0[0-9A-Za-z_\-]{40,})"
)
_GITHUB = _regex(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{36,244})(?![A-Za-z0-9_])")
_GITLAB = _regex(
    _B + r"(?:gl(?:pat|dt|rt|ptt|ft|imt|soat|agent|oas|cbt|wt|ffct)-[A-Za-z0-9_\-]{20,}(?:\.[A-Za-z0-9.]{9,})?"
    r"|GR1348941[A-Za-z0-9_\-]{20,})"
)
_SLACK_RX = re.compile(
    r"(?P<tok>(?<![A-Za-z0-9])xox[abposre](?:\.xox[bp])?-[A-Za-z0-9\-]{10,}|xapp-\d-[A-Za-z0-9\-]{10,})"
    r"|hooks\.slack\.com/(?:services|workflows|triggers)/(?P<hook>[A-Za-z0-9_/+\-]{20,})"
)


def _slack_find(text: str) -> Iterator[tuple[int, int]]:
    for m in _SLACK_RX.finditer(text):
        yield m.span("tok") if m.group("tok") else m.span("hook")


_STRIPE = _regex(r"(?<![A-Za-z0-9])(?:[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9+/=]{24,})")
_OPENAI = _regex(
    _B + r"sk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"
    r"|[A-Za-z0-9]{32,})" + _E
)
_ANTHROPIC = _regex(_B + r"sk-ant-[A-Za-z0-9_\-]{20,}")
_DATADOG = _regex(
    r"(?i)(?<![A-Za-z0-9])(?:dd|datadog)[_\-.]?(?:api|app|application)[_\-.]?key\\{0,3}[\"']?\s*(?:=>|[:=])\s*"
    r"\\{0,3}[\"']?(?P<s>[0-9a-f]{40}|[0-9a-f]{32})(?![0-9a-f])",
    group="s",
)
_SENTRY_DSN = re.compile(
    r"(?i)\b[a-z][a-z0-9+.\-]*://(?P<s>[0-9a-f]{32}(?::[0-9a-f]{32})?)@[A-Za-z0-9.\-]+(?::\d+)?/(?:[\w.\-]+/)*\d+"
)
_SENTRY_TOKEN = re.compile(r"(?<![A-Za-z0-9_])sntry[su]_[A-Za-z0-9_+/=]{40,}")


def _sentry(text: str) -> Iterator[tuple[int, int]]:
    for m in _SENTRY_DSN.finditer(text):
        yield m.span("s")
    for m in _SENTRY_TOKEN.finditer(text):
        yield m.span()


_SAAS = _regex(
    _B + r"(?:SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"  # SendGrid
    r"|npm_[A-Za-z0-9]{36}"  # npm
    r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}"  # PyPI
    r"|hv[sbr]\.[A-Za-z0-9_\-]{24,}"  # HashiCorp Vault
    r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=\-]{60,}"  # Terraform Cloud
    r"|dckr_pat_[A-Za-z0-9_\-]{27,}"  # Docker Hub
    r"|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"  # Shopify
    r"|hf_[A-Za-z]{34}"  # Hugging Face
    r"|SK[0-9a-f]{32}"  # Twilio API key
    r"|key-[0-9a-f]{32}"  # Mailgun
    r"|ATATT3[A-Za-z0-9_=\-]{100,}"  # Atlassian
    r"|[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}"  # Azure AD client secret
    r"|dop_v1_[a-f0-9]{64}|doo_v1_[a-f0-9]{64}"  # DigitalOcean
    r"|NRAK-[A-Z0-9]{27}"  # New Relic
    r"|glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"  # Grafana
    r"|lin_api_[A-Za-z0-9]{40}"  # Linear
    r"|PMAK-[a-f0-9]{24}-[a-f0-9]{34}"  # Postman
    r"|dp\.(?:pt|st|sa|ct)\.[A-Za-z0-9]{40,}"  # Doppler
    r"|sq0(?:atp|csp)-[A-Za-z0-9_\-]{22,43}"  # Square
    r")" + _E
)

# -- secrets in context ---------------------------------------------------------------------------------------

# Values that say "no secret here": masks, placeholders, templating, nulls and states.
_PLACEHOLDER = re.compile(
    r"""(?ix)^(?:
        [*x•#.?\-_]{1,}
      | \$\{[^}]*\}? | \$\([^)]*\)? | \$[A-Za-z_][A-Za-z0-9_]* | %\(?\w*\)?[sdr] | \{\{.*\}\}? | \{[A-Za-z_]\w*\}
      | <[^>]*>? | \[[^\]]*\]?
      | redacted | filtered | masked | hidden | removed | omitted | none | null | nil | undefined | true | false
      | yes | no | on | off | ok | empty | n/a | unset | set | required | optional | missing | invalid | valid
      | expired | revoked | present | absent | changed | updated | reset | provided | default | str | string
      | bool | int | object | bytes | secretstr\(.*
    )$"""
)
_CONTEXT_STOP = re.compile(r"\s*(?:$|⏎|\n|[,;)}\]\"'|])")


def _placeholder(value: str) -> bool:
    return not value.strip() or bool(_PLACEHOLDER.match(value.strip()))


_KEY_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "secret",
    "token",
    "apikey",
    "appkey",
    "applicationkey",
    "accesskey",
    "secretkey",
    "privatekey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "licensekey",
    "accountkey",
    "sharedkey",
    "clientkey",
    "sshkey",
    "sessionkey",
    "authkey",
    "hmackey",
    "webhookkey",
    "subscriptionkey",
    "functionkey",
    "functionskey",
    "secretkeybase",
    "credential",
    "credentials",
    "signature",
    "secretid",
    "secretvalue",
    "secretstring",
    "jsessionid",
    "phpsessid",
)
# Keys that end like a secret but name something harmless: paging cursors, idempotency keys, counts.
_KEY_EXCEPTIONS = (
    "pagetoken",
    "nexttoken",
    "continuationtoken",
    "paginationtoken",
    "synctoken",
    "resumetoken",
    "cancellationtoken",
    "canceltoken",
    "idempotencytoken",
    "clienttoken",
    "publickey",
)
# Short names count only as a whole word: db_pass, DB-PWD, dbPass, but not bypass or compass.
_SHORT_KEYS = re.compile(r"(?i)(?:^|[_.\-])(?:pass|pwd|pw|sig)$")
_SHORT_CAMEL = re.compile(r"[a-z0-9](?:Pass|Pwd|Pw)$")


def sensitive_key(key: str) -> bool:
    """True when a key's name says its value is a secret (`db_password`, `apiKey`, `X-Auth-Token`, ...)."""
    compact = re.sub(r"[^a-z0-9]", "", key.lower())
    if not compact or compact.endswith(_KEY_EXCEPTIONS):
        return False
    return compact.endswith(_KEY_SUFFIXES) or bool(_SHORT_KEYS.search(key) or _SHORT_CAMEL.search(key))


_KV_KEY = re.compile(
    r"(?<![A-Za-z0-9_.\-$@])(?P<key>[A-Za-z_\-$@][A-Za-z0-9_.\-$@]{0,80})\\{0,3}[\"']?"
    r"(?P<sep>\s*(?:=>|:=|=|:|%3[dD])(?P<ws>\s*))"
)
_UNQUOTED = re.compile(r"[^\s\"'`,;&<>\[\]{}()|]+")
# Kubernetes/Docker env lists: {name: DB_PASSWORD, value: x}, {"name": "API_TOKEN", "value": "x"}.
_NAME_VALUE = re.compile(
    r"(?i)[\"']?\bname[\"']?\s*[:=]\s*[\"']?(?P<name>[\w.\-]+)[\"']?\s*,\s*[\"']?value[\"']?\s*[:=]\s*"
)
_XML = re.compile(r"<(?P<tag>[A-Za-z_][\w:.\-]{0,60})>(?P<v>[^<]{1,500})</(?P=tag)>")
_PATHLIKE = re.compile(r"^(?:/|~|[A-Za-z]:\\|\./)")


def _value_span(text: str, p: int) -> tuple[int, int, bool] | None:
    """(start, end, quoted) of the value starting at p, or None when none starts there."""
    n = len(text)
    if p >= n:
        return None
    q = p
    while q < n and text[q] == "\\":
        q += 1
    if q < n and text[q] in "\"'":
        quote = text[p : q + 1]
        start = q + 1
        if q > p:  # escaped quotes inside an outer string: the value ends at the same escape
            end = text.find(quote, start)
            return start, (n if end < 0 else end), True
        i = start
        while i < n and text[i] != quote:
            i += 2 if text[i] == "\\" else 1
        return start, min(i, n), True
    m = _UNQUOTED.match(text, p)
    return (p, m.end(), False) if m else None


def _plausible(key: str, value: str, weak: bool, after: str) -> bool:
    if len(value) < 3 or _placeholder(value):
        return False
    if key.lower().lstrip("-").endswith(("pwd", "oldpwd")) and _PATHLIKE.match(value):
        return False  # PWD=/srv/app in environment dumps
    if not weak:
        return True
    # `key: value` with a space reads like prose too ("password: too short"): take it when the value looks
    # generated, or when it ends the field (end of line, a delimiter, or the next key).
    if len(value) >= 16 or (len(value) >= 6 and any(not c.isalpha() for c in value)):
        return True
    if _CONTEXT_STOP.match(after):
        return True
    nxt = after.split(None, 1)[0] if after.strip() else ""
    return nxt.endswith(":") or "=" in nxt


def _key_value(text: str) -> Iterator[tuple[int, int]]:
    for m in _KV_KEY.finditer(text):
        key = m.group("key")
        if not sensitive_key(key):
            continue
        span = _value_span(text, m.end())
        if span is None:
            continue
        start, end, quoted = span
        weak = not quoted and ":" in m.group("sep") and "=" not in m.group("sep") and bool(m.group("ws"))
        value = text[start:end]
        if "-----BEGIN" in value:
            continue  # a PEM block: the private-key detector takes it and keeps its BEGIN/END lines
        if _plausible(key, value, weak, text[end : end + 40]):
            yield start, end
    for m in _NAME_VALUE.finditer(text):
        if sensitive_key(m.group("name")):
            span = _value_span(text, m.end())
            if span and _plausible(m.group("name"), text[span[0] : span[1]], False, ""):
                yield span[0], span[1]
    if "</" in text:
        for x in _XML.finditer(text):
            if sensitive_key(x.group("tag")) and not _placeholder(x.group("v")):
                yield x.span("v")


_AUTH = re.compile(
    r"(?i)(?<![A-Za-z0-9_\-])(?:proxy-)?authorization\\{0,3}[\"']?\s*(?:=>|[:=])\s*(?:\[\s*)?(?P<q>\\{0,3}[\"'])?"
)
_AUTH_END = re.compile(r"\n| ⏎|[\]}]")
_QUOTE_END = re.compile(r"\n| ⏎|[\]}\"']")
_TOKEN = re.compile(r"[^\s\"'\],;}]+")
_ONE_TOKEN_SCHEMES = {"bearer", "basic", "token", "apikey", "api-key", "key", "sso-key", "ssws", "dpop", "jwt", "otp"}
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])bearer\s+(?P<s>[A-Za-z0-9._~+/\-]{16,}=*)")
_BASIC = re.compile(r"(?i)(?<![A-Za-z0-9])basic\s+(?P<s>[A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])")


def _basic_credentials(s: str) -> bool:
    try:
        raw = base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in raw and all(32 <= b < 127 for b in raw)


def _auth(text: str) -> Iterator[tuple[int, int]]:
    for m in _AUTH.finditer(text):
        start = m.end()
        if m.group("q"):
            end = text.find(m.group("q"), start)
            end = len(text) if end < 0 else end
        else:
            stop = _AUTH_END.search(text, start)
            end = stop.start() if stop else len(text)
        value = text[start:end]
        lead = len(value) - len(value.lstrip())
        parts = value.strip().split(None, 1)
        if not parts:
            continue
        if len(parts) == 1 and parts[0].lower() in _ONE_TOKEN_SCHEMES:
            continue  # "Authorization: Bearer" with the token cut off
        if len(parts) == 1:
            tok = _TOKEN.match(text, start + lead)
            if tok is None:
                continue
            s, e = tok.span()
        elif parts[0].lower() in _ONE_TOKEN_SCHEMES:
            tok_at = start + value.index(parts[1], lead + len(parts[0]))
            tok = _TOKEN.match(text, tok_at)
            if tok is None:
                continue
            s, e = tok.span()
        else:  # Digest, AWS4-HMAC-SHA256, Negotiate...: everything after the scheme
            s = start + value.index(parts[1], lead + len(parts[0]))
            e = start + len(value.rstrip())
        if e - s >= 4 and not _placeholder(text[s:e]):
            yield s, e
    for b in _BEARER.finditer(text):
        cred = b.group("s")
        if any(c.isdigit() for c in cred) and any(c.isalpha() for c in cred):
            yield b.span("s")
    for b in _BASIC.finditer(text):
        if _basic_credentials(b.group("s")):
            yield b.span("s")


_URL_PASSWORD = _regex(
    r"(?i)(?<![A-Za-z0-9+.\-])[a-z][a-z0-9+.\-]{1,30}://[^\s:/?#@\"'<>\[\]]*:(?P<s>[^\s/\"'<>]*?)@"
    r"(?=[A-Za-z0-9\[\]_.\-]+(?:[:/?#\s\"'<>,;)\]}|]|$))",
    group="s",
    check=lambda m: not _placeholder(m.group("s")),
)

_COOKIE = re.compile(r"(?i)(?<![A-Za-z0-9\-])(?:set-)?cookie\\{0,3}[\"']?\s*[:=]\s*")
_COOKIE_PAIR = re.compile(r"(?P<n>[^=;,\s\"']+)=(?P<v>[^;,\s\"']*)")
_COOKIE_SECRET = re.compile(
    r"(?i)sess|sid|token|auth|jwt|remember|login|csrf|xsrf|secret|key|identity|saml|oidc|access|refresh"
)
_URL_SESSION = re.compile(r"(?i)[;?&](?:jsessionid|phpsessid|sid)=(?P<s>[A-Za-z0-9._\-]{8,})")


def _cookie(text: str) -> Iterator[tuple[int, int]]:
    for m in _COOKIE.finditer(text):
        stop = _QUOTE_END.search(text, m.end())
        end = stop.start() if stop else len(text)
        for pair in _COOKIE_PAIR.finditer(text, m.end(), end):
            if _COOKIE_SECRET.search(pair.group("n")) and len(pair.group("v")) >= 8:
                yield pair.span("v")
    for m in _URL_SESSION.finditer(text):
        yield m.span("s")


_CLI = re.compile(
    r"(?i)(?<![A-Za-z0-9])--?(?:[a-z0-9]+-)*(?:password|passwd|pass|secret|token|api-?key|auth-token)\s+"
    r"(?:'(?P<a>[^']+)'|\"(?P<b>[^\"]+)\"|(?P<c>[^\s\-\"'][^\s\"']*))"
    r"|(?<![A-Za-z0-9])(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n⏎]*?\s-p(?P<d>[^\s\-][^\s]*)"
    r"|(?<![A-Za-z0-9])sshpass\s+-p\s*(?P<e>\S+)"
    r"|(?<![A-Za-z0-9])(?:-u|--user)\s+[\"']?[^\s:\"']+:(?P<f>[^\s\"']+)"
)


def _cli(text: str) -> Iterator[tuple[int, int]]:
    for m in _CLI.finditer(text):
        for g in "abcdef":
            if m.group(g) and not _placeholder(m.group(g)):
                yield m.span(g)


# -- card numbers -----------------------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.+])(?<!\w-)[2-6]\d{3}(?:[ \-]?\d){8,15}(?![\w.])")
_CARD_WORDS = re.compile(
    r"(?i)card|\bcc\b|\bpan\b|visa|master|amex|credit|debit|payment|maestro|discover|jcb|unionpay|diners"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _network(d: str) -> bool:
    """Whether a card network issues numbers with this prefix and length."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if 2200 <= p4 <= 2204:
        return 16 <= n <= 19  # Mir
    if p2 in (34, 37):
        return n == 15
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if d[0] == "6" or p2 == 50 or 56 <= p2 <= 58:
        return 13 <= n <= 19
    return False


def _card_layout(groups: list[str]) -> bool:
    sizes = [len(g) for g in groups]
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        raw = m.group(0)
        seps = set(re.findall(r"[ \-]", raw))
        if len(seps) > 1:
            continue
        groups = re.split(r"[ \-]", raw)
        # Longest run of whole groups that reads as a card ("4111 1111 1111 1111 12/27": the expiry is not).
        for k in range(len(groups), 0, -1):
            digits = "".join(groups[:k])
            if not 13 <= len(digits) <= 19 or not _card_layout(groups[:k]):
                continue
            if k == 1 and len(groups) > 1:
                break
            if k == 1 and len(digits) not in (15, 16) and not _CARD_WORDS.search(text):
                break  # unusual lengths without grouping look like epoch times and 64-bit ids
            if _network(digits) and luhn_ok(digits) and len(set(digits)) > 1:
                yield m.start(), m.start() + len(" ".join(groups[:k]))
                break


# -- the redactor --------------------------------------------------------------------------------------------------

DETECTORS: tuple[Detector, ...] = (
    Detector("private-key", _PEM, ("private key",)),
    Detector("private-key", _DER, ("mii", "mhcc", "mc4c", "b3blbnnzac1")),
    Detector("jwt", _JWT, ("eyj",)),
    Detector("aws", _aws, ("akia", "asia", "abia", "acca", "a3t", "iqojb3jpz2lu", "fwogzxivyxdz", "fqogzxivyxdz")),
    Detector("gcp", _GCP, ("aiza", "gocspx-", "ya29.", "1//0")),
    Detector("github", _GITHUB, ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    Detector("gitlab", _GITLAB, ("gl", "gr1348941")),
    Detector("slack", _slack_find, ("xox", "xapp-", "hooks.slack.com")),
    Detector("stripe", _STRIPE, ("k_live_", "k_test_", "whsec_")),
    Detector("openai", _OPENAI, ("sk-",)),
    Detector("anthropic", _ANTHROPIC, ("sk-ant-",)),
    Detector("datadog", _DATADOG, ("dd", "datadog")),
    Detector("sentry", _sentry, ("://", "sntry")),
    Detector("saas-token", _SAAS, ()),
    Detector("auth-header", _auth, ("authorization", "bearer", "basic")),
    Detector("url-password", _URL_PASSWORD, ("://",)),
    Detector("key-value", _key_value, ("pass", "pw", "secret", "token", "key", "cred", "sig", "sessid", "</")),
    Detector("cookie", _cookie, ("cookie", "sessionid", "sessid", "sid=")),
    Detector("cli-password", _cli, ("--", "-p", "-u")),
    Detector("card", _cards, ()),
)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A user pattern, checked: it must compile and must not match the empty string."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(
            f"redaction pattern {pattern!r} is not a valid regular expression ({e}): fix it (Python re syntax)"
        ) from None
    if rx.search("") is not None:
        raise ValueError(
            f"redaction pattern {pattern!r} matches the empty string, so it would redact nothing useful and "
            "everything around it: require at least one character (use + instead of *)"
        )
    return rx


def _custom(rx: re.Pattern[str]) -> Finder:
    group: int | str = "secret" if "secret" in rx.groupindex else 0

    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in rx.finditer(text):
            if m.group(group):
                yield m.span(group)

    return find


SHORT_TEXT = 256  # strings up to this length have their findings cached


class Redactor:
    """Replaces secrets in text with `[REDACTED:<kind>]`.

    disabled: detector kinds to skip (see KINDS); patterns: extra regexes whose matches (or their group named
    `secret`) are redacted as kind "custom".
    """

    def __init__(self, disabled: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        off = set(disabled)
        unknown = sorted(off - set(KINDS))
        if unknown:
            raise ValueError(f"unknown redaction kind(s) {', '.join(unknown)}: use some of {', '.join(KINDS)}")
        self.disabled = frozenset(off)
        self.detectors = [d for d in DETECTORS if d.kind not in off]
        self.detectors += [Detector(CUSTOM_KIND, _custom(compile_pattern(p))) for p in patterns]
        # Short strings repeat across answers (service, span and route names, attribute values): remember what
        # was found in them, so a label seen a thousand times is scanned once (thread-safe: lru_cache locks).
        self._short = lru_cache(maxsize=16384)(self._scan)

    def findings(self, text: str) -> list[Finding]:
        """The merged secret spans in text, left to right."""
        if not text:
            return []
        if len(text) <= SHORT_TEXT:
            return list(self._short(text))
        return list(self._scan(text))

    def _scan(self, text: str) -> tuple[Finding, ...]:
        low = text.lower()
        found: list[Finding] = []
        for det in self.detectors:
            if det.hints and not any(h in low for h in det.hints):
                continue
            found.extend(Finding(s, e, det.kind) for s, e in det.find(text) if e > s)
        if len(found) < 2:
            return tuple(found)
        found.sort(key=lambda f: (f.start, -f.end))
        merged = [found[0]]
        for f in found[1:]:
            last = merged[-1]
            if f.start <= last.end:
                if f.end > last.end:
                    merged[-1] = Finding(last.start, f.end, last.kind)
            else:
                merged.append(f)
        return tuple(merged)

    def redact(self, text: str) -> str:
        found = self.findings(text)
        if not found:
            return text
        out, at = [], 0
        for f in found:
            out += [text[at : f.start], f"[REDACTED:{f.kind}]"]
            at = f.end
            REDACTIONS.labels(f.kind).inc()
        out.append(text[at:])
        return "".join(out)

    __call__ = redact


class RedactionSettings(Protocol):
    """The part of obsmcp.config.Settings that configures redaction."""

    redact_secrets: bool
    redact_disabled_kinds: list[str]
    redact_patterns: list[str]


@lru_cache(maxsize=16)
def _build(disabled: tuple[str, ...], patterns: tuple[str, ...]) -> Redactor:
    return Redactor(disabled, patterns)


DEFAULT = _build((), ())


def redactor_for(settings: RedactionSettings) -> Redactor | None:
    """The configured redactor, or None when redaction is turned off (built once per configuration)."""
    if not settings.redact_secrets:
        return None
    return _build(tuple(sorted(settings.redact_disabled_kinds)), tuple(settings.redact_patterns))


def redact(text: str) -> str:
    """Replace secrets (keys, tokens, passwords, JWTs, private keys, card numbers) with [REDACTED:<kind>]."""
    return DEFAULT.redact(text)
