"""Builds the redaction corpora: dev.jsonl (combinatorial, seed 7) and heldout.jsonl (hand-written, seed 1913).

    .venv/bin/python tests/data/redaction/generate.py

Each output line is {"id", "line", "secrets": [{"kind", "value"}], "source"}: a log record (it may hold real
newlines) and the exact substrings that are secrets. A record without secrets is a look-alike negative.

The fake secrets have the real formats, with the real checksums where a format has one (GitHub's CRC32/base62
tail, Luhn for cards, HMAC/RSA-signed JWTs, real RSA/EC/OpenSSH keys from `cryptography`). None is live.

dev.jsonl comes from the templates in this file (formats x contexts, randomly paired); the detectors were tuned
against it. heldout.jsonl comes from heldout_templates.txt, written by hand before the detectors and frozen:
its figures are reported, not tuned for.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HERE = Path(__file__).parent
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"


class Fakes:
    """Fake secrets and look-alikes from one seeded random source."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def s(self, alphabet: str, n: int) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def with_digit(self, alphabet: str, n: int) -> str:
        while True:
            v = self.s(alphabet, n)
            if any(c.isdigit() for c in v) and any(c.isalpha() for c in v):
                return v

    # -- cloud and SaaS ---------------------------------------------------------------------------------
    def aws_id(self) -> str:
        return self.r.choice(["AKIA", "AKIA", "AKIA", "ASIA"]) + self.s(string.ascii_uppercase + "234567", 16)

    def aws_secret(self) -> str:
        while True:
            v = self.s(ALNUM + "/+", 40)
            if any(c in "/+" for c in v) or self.r.random() < 0.3:
                return v

    def aws_session(self) -> str:
        return "IQoJb3JpZ2luX2VjE" + self.s(ALNUM + "/+", 300) + "=="

    def gcp_key(self) -> str:
        return "AIza" + self.s(URLSAFE, 35)

    def gcp_oauth(self) -> str:
        return "GOCSPX-" + self.s(URLSAFE, 28)

    def ya29(self) -> str:
        return "ya29.a0" + self.s(URLSAFE, 150)

    def _gh(self, prefix: str) -> str:
        body = self.s(B62, 30)
        crc = zlib.crc32(body.encode())
        tail = ""
        while crc:
            crc, d = divmod(crc, 62)
            tail = B62[d] + tail
        return prefix + body + tail.rjust(6, "0")

    def ghp(self) -> str:
        return self._gh("ghp_")

    def gho(self) -> str:
        return self._gh("gho_")

    def ghu(self) -> str:
        return self._gh("ghu_")

    def ghs(self) -> str:
        return self._gh("ghs_")

    def ghr(self) -> str:
        return self._gh("ghr_")

    def github_pat(self) -> str:
        return "github_pat_11" + self.s(string.ascii_uppercase + string.digits, 20) + "_" + self.s(ALNUM, 59)

    def glpat(self) -> str:
        return "glpat-" + self.s(URLSAFE, 20)

    def slack_bot(self) -> str:
        return f"xoxb-{self.s(string.digits, 12)}-{self.s(string.digits, 13)}-{self.s(ALNUM, 24)}"

    def slack_user(self) -> str:
        d = string.digits
        return f"xoxp-{self.s(d, 12)}-{self.s(d, 12)}-{self.s(d, 13)}-{self.s(HEX, 32)}"

    def slack_app(self) -> str:
        up = string.ascii_uppercase + string.digits
        return f"xapp-1-A{self.s(up, 10)}-{self.s(string.digits, 13)}-{self.s(HEX, 64)}"

    def slack_hook(self) -> str:
        up = string.ascii_uppercase + string.digits
        return f"T{self.s(up, 8)}/B{self.s(up, 10)}/{self.s(ALNUM, 24)}"

    def stripe_live(self) -> str:
        return "sk_live_51" + self.s(ALNUM, self.r.choice([22, 97]))

    def stripe_test(self) -> str:
        return "sk_test_51" + self.s(ALNUM, self.r.choice([22, 97]))

    def stripe_rk(self) -> str:
        return "rk_live_51" + self.s(ALNUM, 97)

    def stripe_whsec(self) -> str:
        return "whsec_" + self.s(ALNUM, 32)

    def openai_legacy(self) -> str:
        return "sk-" + self.s(ALNUM, 20) + "T3BlbkFJ" + self.s(ALNUM, 20)

    def openai_proj(self) -> str:
        return "sk-proj-" + self.s(URLSAFE, 74) + "T3BlbkFJ" + self.s(URLSAFE, 74)

    def anthropic(self) -> str:
        return "sk-ant-api03-" + self.s(URLSAFE, 93) + "AA"

    def dd_api(self) -> str:
        return self.s(HEX, 32)

    def dd_app(self) -> str:
        return self.s(HEX, 40)

    def sentry_key(self) -> str:
        return self.s(HEX, 32)

    def sentry_secret(self) -> str:
        return self.s(HEX, 32)

    def sentry_user(self) -> str:
        return "sntryu_" + self.s(HEX, 64)

    def sendgrid(self) -> str:
        return "SG." + self.s(URLSAFE, 22) + "." + self.s(URLSAFE, 43)

    def npm(self) -> str:
        return "npm_" + self.s(ALNUM, 36)

    def hf(self) -> str:
        return "hf_" + self.s(string.ascii_letters, 34)

    def vault(self) -> str:
        return "hvs." + self.s(URLSAFE, self.r.choice([24, 91]))

    # -- tokens, passwords ------------------------------------------------------------------------------
    def jwt(self) -> str:
        claims = {
            "sub": str(self.r.randint(1000, 99999)),
            "iss": self.r.choice(["https://auth.acme.io/", "https://login.example.com"]),
            "iat": 1715678901,
            "exp": 1715682501,
            "scope": self.r.choice(["read", "read write", "orders:read"]),
        }
        if self.r.random() < 0.25:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return jwt.encode(claims, key, algorithm="RS256")
        return jwt.encode(claims, self.s(ALNUM, 32), algorithm="HS256")

    def opaque(self) -> str:
        return self.with_digit(ALNUM, self.r.choice([32, 40, 48]))

    def password(self) -> str:
        human = [
            "hunter2",
            "Summer2024!",
            "P@ssw0rd123",
            "tr0ub4dor3",
            "changeme-please",
            "Welcome1",
            "correct-horse-battery-staple",
            "s3cr3t!",
            "Passw0rd!",
            "qwerty123",
        ]
        if self.r.random() < 0.5:
            return self.r.choice(human) + self.s(string.digits, self.r.choice([0, 2]))
        return self.with_digit(ALNUM + "!$%^*-_+=.?~", self.r.choice([12, 16, 24]))

    def basic(self) -> str:
        user = self.r.choice(["admin", "svc-billing", "deploy", "api"])
        return base64.b64encode(f"{user}:{self.password()}".encode()).decode()

    def digest_response(self) -> str:
        return self.s(HEX, 32)

    def sig_hex(self) -> str:
        return self.s(HEX, 64)

    def uuid_secret(self) -> str:
        return str(uuid.UUID(int=self.r.getrandbits(128), version=4))

    # -- private keys ------------------------------------------------------------------------------------
    def _pem(self, key: object, fmt: serialization.PrivateFormat) -> str:
        return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.PEM, fmt, serialization.NoEncryption()
        ).decode()

    def pem_rsa(self) -> str:
        return self._pem(rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.TraditionalOpenSSL)

    def pem_rsa_body(self) -> str:
        return "\n".join(self.pem_rsa().strip().splitlines()[1:-1])

    def pem_ec(self) -> str:
        return self._pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.TraditionalOpenSSL)

    def pem_pkcs8(self) -> str:
        return self._pem(rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.PKCS8)

    def pem_pkcs8_escaped(self) -> str:
        return self.pem_pkcs8().replace("\n", "\\n")

    def openssh(self) -> str:
        return self._pem(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.OpenSSH)

    # -- cards ---------------------------------------------------------------------------------------------
    def _luhn_complete(self, partial: str) -> str:
        for check in string.digits:
            digits = partial + check
            total = 0
            for i, ch in enumerate(reversed(digits)):
                d = int(ch) * (2 if i % 2 else 1)
                total += d - 9 if d > 9 else d
            if total % 10 == 0:
                return digits
        raise AssertionError("unreachable")

    def _card_digits(self, prefix: str, length: int) -> str:
        return self._luhn_complete(prefix + self.s(string.digits, length - len(prefix) - 1))

    def card(self) -> str:
        prefix, n = self.r.choice(
            [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("6011", 16), (str(self.r.randint(3528, 3589)), 16)]
        )
        return self._card_digits(prefix, n)

    def card_spaced(self) -> str:
        d = self.card()
        return " ".join(d[i : i + 4] for i in range(0, 16, 4))

    def card_dashed(self) -> str:
        d = self.card()
        return "-".join(d[i : i + 4] for i in range(0, 16, 4))

    def amex(self) -> str:
        d = self._card_digits(self.r.choice(["34", "37"]), 15)
        return f"{d[:4]} {d[4:10]} {d[10:]}" if self.r.random() < 0.5 else d

    # -- look-alikes (never secrets) -----------------------------------------------------------------------
    def trace_id(self) -> str:
        return self.s(HEX, 32)

    def span_id(self) -> str:
        return self.s(HEX, 16)

    def req_id(self) -> str:
        return self.s(HEX, 24)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.r.getrandbits(128), version=4))

    def sha1(self) -> str:
        return self.s(HEX, 40)

    def sha1_short(self) -> str:
        return self.s(HEX, 7)

    def sha256(self) -> str:
        return self.s(HEX, 64)

    def sha256_raw(self) -> str:
        return self.s(HEX, 64)

    def sha512(self) -> str:
        return self.s(HEX, 128)

    def md5(self) -> str:
        return self.s(HEX, 32)

    def hex8(self) -> str:
        return self.s(HEX, 8)

    def hex16(self) -> str:
        return self.s(HEX, 16).upper()

    def hex32(self) -> str:
        return self.s(HEX, 32)

    def epoch_ms(self) -> str:
        return str(self.r.randint(1_700_000_000_000, 1_760_000_000_000))

    def epoch_ns(self) -> str:
        return str(self.r.randint(1_700_000_000_000_000_000, 1_760_000_000_000_000_000))

    def dec19(self) -> str:
        return str(self.r.randint(10**18, 2**63 - 1))

    def snowflake(self) -> str:
        return str(self.r.randint(1_100_000_000_000_000_000, 1_900_000_000_000_000_000))

    def luhn_bad(self) -> str:
        good = self.card()
        return good[:-1] + str((int(good[-1]) + self.r.randint(1, 9)) % 10)

    def ip(self) -> str:
        return ".".join(str(self.r.randint(1, 254)) for _ in range(4))

    def int(self) -> str:
        return str(self.r.randint(2, 999999))

    def word(self) -> str:
        return self.r.choice(["alpha", "orders", "reporting", "primary", "eu-west-1", "blue"])

    def alnum24(self) -> str:
        return self.s(ALNUM, 24)

    def upper16(self) -> str:
        return self.s(string.ascii_uppercase + "234567", 16)

    def b64img(self) -> str:
        return "iVBORw0KGgoAAAANSUhEUgAA" + self.s(ALNUM + "+/", 400) + "=="

    def b64cursor(self) -> str:
        raw = json.dumps({"o": self.r.randint(1, 999), "k": self.s(HEX, 8)}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def pod(self) -> str:
        return f"{self.r.choice(['checkout', 'payments', 'sk-worker'])}-{self.s(HEX, 10)}-{self.s(HEX[:10], 5)}"


def secret_parts(kind: str, value: str) -> list[str]:
    """The substrings a reader must not see: a multi-line key counts line by line (each must be gone)."""
    if "\n" in value or "\\n" in value:
        lines = [ln for ln in value.replace("\\n", "\n").splitlines() if ln and not ln.startswith("-----")]
        return lines
    return [value]


# -- held-out: hand-written templates ------------------------------------------------------------------


def fill(template: str, fakes: Fakes) -> tuple[str, list[dict[str, str]]]:
    out, secrets, i = [], [], 0
    while True:
        j = template.find("{{", i)
        if j < 0:
            out.append(template[i:])
            break
        k = template.index("}}", j)
        out.append(template[i:j])
        name = template[j + 2 : k]
        if name != name.strip():  # "{{ x }}" is a literal template placeholder in the record, not a fill
            out.append("{{" + name.strip() + "}}")
            i = k + 2
            continue
        lookalike = name.startswith("!")
        value = getattr(fakes, name.lstrip("!"))()
        out.append(value)
        if not lookalike:
            secrets += [{"kind": name, "value": v} for v in secret_parts(name, value)]
        i = k + 2
    return "".join(out).replace("⤶", "\n"), secrets


def heldout() -> list[dict[str, object]]:
    fakes = Fakes(1913)
    rows: list[dict[str, object]] = []
    for n, template in enumerate((HERE / "heldout_templates.txt").read_text().splitlines()):
        if not template.strip() or template.startswith("#"):
            continue
        line, secrets = fill(template, fakes)
        rows.append({"id": f"h{n:03d}", "line": line, "secrets": secrets, "source": "heldout_templates.txt"})
    return rows


# -- dev: contexts x formats -------------------------------------------------------------------------------

# A context is a fragment holding one or more secrets, written as a template for `fill`; a format wraps it into
# a log record of some shape. Pairing them at random gives many shapes per secret kind.
POSITIVE_CONTEXTS = [
    "access key {{aws_id}} denied",
    "aws_access_key_id={{aws_id}} aws_secret_access_key={{aws_secret}}",
    "AWS_SECRET_ACCESS_KEY={{aws_secret}}",
    '"SecretAccessKey": "{{aws_secret}}", "AccessKeyId": "{{aws_id}}"',
    "creds {{aws_id}}:{{aws_secret}}",
    "aws_session_token={{aws_session}}",
    "secretAccessKey: {{aws_secret}}",
    "key={{gcp_key}}",
    "google api key {{gcp_key}} rejected",
    '"private_key": "{{pem_pkcs8_escaped}}"',
    "client_secret={{gcp_oauth}}",
    "Authorization: Bearer {{ya29}}",
    "token {{ghp}} lacks repo scope",
    "https://{{ghp}}:x-oauth-basic@github.com/acme/app.git",
    "GH_TOKEN={{gho}}",
    "installation token {{ghs}} expires in 3600s",
    "user-to-server {{ghu}}",
    "refresh {{ghr}}",
    "pat={{github_pat}}",
    "gitlab token {{glpat}} expired",
    "https://oauth2:{{glpat}}@gitlab.acme.io/group/repo.git",
    "slack token {{slack_bot}} invalid_auth",
    "SLACK_TOKEN={{slack_user}}",
    "app-level token {{slack_app}}",
    "POST https://hooks.slack.com/services/{{slack_hook}} 200",
    "stripe key {{stripe_live}}",
    "Stripe.api_key = '{{stripe_test}}'",
    "rk={{stripe_rk}}",
    "endpoint_secret={{stripe_whsec}}",
    "openai key {{openai_legacy}}",
    'api_key="{{openai_proj}}"',
    "ANTHROPIC_API_KEY={{anthropic}}",
    "x-api-key: {{anthropic}}",
    "DD-API-KEY: {{dd_api}}",
    "dd-application-key: {{dd_app}}",
    "DD_API_KEY={{dd_api}}",
    "datadog_app_key={{dd_app}}",
    '"api_key": "{{dd_api}}", "app_key": "{{dd_app}}"',
    "?api_key={{dd_api}}&application_key={{dd_app}}",
    "dsn=https://{{sentry_key}}@o{{!int}}.ingest.sentry.io/{{!int}}",
    "https://{{sentry_key}}:{{sentry_secret}}@sentry.example.com/{{!int}}",
    "sentry token {{sentry_user}}",
    "id_token={{jwt}}",
    "jwt {{jwt}} verified",
    '"access_token":"{{jwt}}","token_type":"Bearer"',
    "Authorization: Bearer {{jwt}}",
    "authorization: Bearer {{opaque}}",
    "Authorization: Basic {{basic}}",
    '"Authorization": "Basic {{basic}}"',
    "'authorization': 'Bearer {{opaque}}'",
    "bearer {{opaque}}",
    "postgres://app:{{password}}@db:5432/shop",
    "mysql://root:{{password}}@10.0.0.5/app",
    "redis://:{{password}}@redis:6379",
    "amqps://svc:{{password}}@mq.internal:5671/vhost",
    "https://admin:{{password}}@grafana.internal/api/dashboards",
    "password={{password}}",
    "db_password={{password}}",
    "PGPASSWORD={{password}}",
    '"password": "{{password}}"',
    "'passwd': '{{password}}'",
    "Password={{password}};",
    "password: {{password}}",
    "secret={{opaque}}",
    "client_secret: {{opaque}}",
    "api_key={{opaque}}",
    "apiKey: '{{opaque}}'",
    "access_token={{opaque}}",
    "refresh_token={{opaque}}",
    "auth_token={{opaque}}",
    "X-Auth-Token: {{opaque}}",
    "token={{opaque}}",
    "secret_key={{opaque}}",
    "private_key={{opaque}}",
    "encryption_key={{opaque}}",
    "--password={{password}}",
    "--password {{password}}",
    "Cookie: session={{opaque}}; theme=dark",
    "<password>{{password}}</password>",
    "{{pem_rsa}}",
    "{{pem_ec}}",
    "{{openssh}}",
    "{{pem_pkcs8}}",
    "card {{card}}",
    "pan={{card_spaced}}",
    "cc {{card_dashed}}",
    "amex {{amex}}",
    "SENDGRID_API_KEY={{sendgrid}}",
    "//registry.npmjs.org/:_authToken={{npm}}",
    "hf token {{hf}}",
    "VAULT_TOKEN={{vault}}",
]

NEGATIVE_CONTEXTS = [
    "trace_id={{!trace_id}} span_id={{!span_id}}",
    "traceId: {{!trace_id}}",
    "request {{!req_id}} done",
    "id={{!uuid}}",
    "commit {{!sha1}}",
    "digest sha256:{{!sha256}}",
    "md5={{!md5}}",
    "sha512 {{!sha512}}",
    "build {{!sha1_short}}",
    "at {{!epoch_ms}} ms",
    "time_unix_nano={{!epoch_ns}}",
    "dd.trace_id={{!dec19}}",
    "msg id {{!snowflake}}",
    "order {{!luhn_bad}} shipped",
    "from {{!ip}} port {{!int}}",
    "pod {{!pod}} ready",
    "data:image/png;base64,{{!b64img}}",
    "cursor={{!b64cursor}}",
    "password reset email sent",
    "password too short",
    "invalid password for user {{!int}}",
    "token expired",
    "token: expired",
    "refresh token revoked",
    "password=",
    "password: ",
    '"password": ""',
    "password=*****",
    "password=[REDACTED]",
    "secret=${SECRET}",
    "token={{token}}",
    "api_key=<your-api-key>",
    "max_tokens=1024 total_tokens={{!int}}",
    "token_count={{!int}}",
    "next_page_token={{!b64cursor}}",
    "api key missing",
    "Bearer realm=api",
    "Basic auth disabled",
    "basic authentication required",
    "the bearer token was rejected",
    "https://api.acme.io:8443/v1/orders",
    "postgres://app@db:5432/shop",
    "redis://redis:6379/0",
    "user@example.com logged in",
    "git@github.com:acme/app.git",
    "secrets manager returned 3 versions",
    "passwordless login enabled",
    "PWD=/srv/app",
    "AIDA{{!upper16}} user id",
    "pk_test_{{!alnum24}} loaded",
    "version 1.{{!int}}.0",
    "checksum {{!hex32}}",
    "x-datadog-trace-id: {{!dec19}}",
    "uber-trace-id: {{!span_id}}:{{!span_id}}:0:1",
    "session_count={{!int}}",
    "-----BEGIN CERTIFICATE----- MIIB{{!alnum24}} -----END CERTIFICATE-----",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{{!alnum24}} ci@acme",
    "amount 4111.11 EUR",
    "phone +1 415 555 0132",
    "isbn 978-3-16-148410-0",
    "lat 52.5200066 lon 13.404954",
    "ratio 0.5123456789012345",
]

FORMATS: list[Callable[[str, Fakes], str]] = [
    lambda m, f: json.dumps({"ts": "2024-06-01T10:00:00.000Z", "level": "error", "service": "api", "msg": m}),
    lambda m, f: f'time=2024-06-01T10:00:00Z level=warn svc=api msg="{m}"',
    lambda m, f: f"2024-06-01 10:00:00,123 ERROR [http-nio-8080-exec-{f.r.randint(1, 9)}] c.a.Service - {m}",
    lambda m, f: f'{f.ip()} - - [01/Jun/2024:10:00:00 +0000] "GET /x HTTP/1.1" 500 0 "-" "{m}"',
    lambda m, f: f'Traceback (most recent call last):\n  File "/app/main.py", line 9, in run\nRuntimeError: {m}',
    lambda m, f: f"java.lang.IllegalStateException: {m}\n\tat com.acme.Api.call(Api.java:42)",
    lambda m, f: f"Jun  1 10:00:00 host app[{f.r.randint(100, 9999)}]: {m}",
    lambda m, f: f"{m}",
    lambda m, f: f"[{f.trace_id()}] {m}",
    lambda m, f: f"W0601 10:00:00.123456 1 reflector.go:424] {m}",
    lambda m, f: f"level=info ts=2024-06-01T10:00:00Z caller=main.go:88 msg=request detail={json.dumps(m)}",
]


# Edge cases written for development (they are in dev.jsonl, so the detectors were tuned on them).
DEV_EXTRA = [
    "{Password:{{password}} User:svc Host:db}",
    "Credentials(username='svc', password='{{password}}')",
    '{"log":"{\\"user\\":\\"bob\\",\\"password\\":\\"{{password}}\\"}"}',
    "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={{opaque}}==;EndpointSuffix=core.windows.net",
    "https://acme.blob.core.windows.net/c/f.csv?sv=2022-11-02&se=2024-06-02&sp=r&sig={{opaque}}",
    "Set-Cookie: sessionid={{opaque}}; Path=/; HttpOnly",
    "Cookie: _ga=GA1.2.{{!int}}.{{!int}}; auth_token={{opaque}}",
    "GET /app/cart;jsessionid={{opaque}} 302",
    "curl -u admin:{{password}} http://es:9200/_cat/indices",
    "mysql -h db -u root -p{{password}} -e 'show databases'",
    "sshpass -p {{password}} ssh deploy@10.0.0.9",
    "User Name,Password,Access key ID,Secret access key⤶ci-bot,,{{aws_id}},{{aws_secret}}",
    "env: [{name: DB_PASSWORD, value: {{password}}}, {name: LOG_LEVEL, value: info}]",
    "--set auth.rootPassword={{password}} --set image.tag=16.2",
    "charged card {{card_spaced}} exp 12/27",
    "card_number={{card}} exp=12/27",
    "-----BEGIN EC PRIVATE KEY----- ⏎ {{opaque}} ⏎ -----END EC PRIVATE KEY-----",
    "x-goog-api-key: {{gcp_key}}",
    "xoxe.xoxp-1-{{opaque}}",
    'Authorization: Digest username="bob", realm="api", nonce="{{!hex32}}", response="{{digest_response}}"',
    "Authorization: AWS4-HMAC-SHA256 Credential={{aws_id}}/20240601/us-east-1/s3/aws4_request, Signature={{sig_hex}}",
    "token is {{jwt}}",
    "key_id={{!uuid}} secret_value={{opaque}}",
    "Bearer authentication failed for client mobile",
    "password_reset_url=https://acme.io/reset?id={{!uuid}}",
    '"token": null, "password": true',
    "cache key=user:{{!int}} hit",
    "secret_name=db-creds secretRef=payments",
    "signature=valid alg=RS256",
    "OLDPWD=/home/app PWD=/srv/app",
    "keys: 3, tokens: 1200, secrets: 0",
    "/etc/passwd: permission denied",
    "passwd[{{!int}}]: password changed for deploy",
    "sql: SELECT * FROM users WHERE password_hash = $1",
    "auth ok for key {{!sha1_short}} in {{!int}}ms",
    "POST /oauth/token grant_type=client_credentials scope=read 200",
    "2024-06-01 10:00:00 card_last4=4242 brand=visa",
    "transaction {{!epoch_ns}} id {{!dec19}}",
    "Visa test numbers are not logged here; order 5105105105105101000 has 19 digits",
]


def dev() -> list[dict[str, object]]:
    fakes = Fakes(7)
    rows: list[dict[str, object]] = []
    for n, (ctx, reps) in enumerate([(c, 3) for c in POSITIVE_CONTEXTS] + [(c, 3) for c in NEGATIVE_CONTEXTS]):
        for rep in range(reps):
            fragment, secrets = fill(ctx.replace("{{token}}", "{{ token }}"), fakes)
            fmt = fakes.r.choice(FORMATS)
            line = fmt(fragment, fakes)
            # A format may escape the fragment (JSON): a secret is what the record holds.
            kept = []
            for s in secrets:
                value = s["value"]
                if value not in line:
                    value = json.dumps(value)[1:-1]
                assert value in line, (ctx, value)
                kept.append({"kind": s["kind"], "value": value})
            rows.append({"id": f"d{n:03d}.{rep}", "line": line, "secrets": kept, "source": ctx})
    for n, template in enumerate(DEV_EXTRA):
        line, secrets = fill(template, fakes)
        rows.append({"id": f"x{n:03d}", "line": line, "secrets": secrets, "source": "DEV_EXTRA"})
    return rows


def main() -> None:
    for name, rows in (("dev.jsonl", dev()), ("heldout.jsonl", heldout())):
        with (HERE / name).open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        pos = sum(1 for r in rows if r["secrets"])
        print(f"{name}: {len(rows)} records, {pos} with secrets, {len(rows) - pos} look-alikes")


if __name__ == "__main__":
    main()
