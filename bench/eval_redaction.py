"""Secret redaction: recall and false positives per class on the dev and held-out corpora, and throughput.

    .venv/bin/python -m bench.eval_redaction [--reps 5]

Corpora: tests/data/redaction/dev.jsonl (the detectors were tuned on it) and heldout.jsonl (hand-written
before the detectors and never tuned for); see tests/data/redaction/generate.py. Each record is run through
`scrub` (what every tool does to observed text) with the default redactor, and through `redact` on the raw
text (newlines kept). Figures:

- recall: share of marked secrets of which no fragment survives (a secret shorter than 12 characters must be
  gone entirely; a longer one must not keep any 12 consecutive characters);
- false positives: share of look-alike records (no secret) that come out changed;
- over-redaction: share of records with secrets where a word of the surrounding text went missing too.

Throughput, in the same run on the same lines: `redact` against the patterns result.py used before this
module existed (LEGACY_PATTERNS, a copy) and against no detection at all (scrub without redaction), so the
cost of the detectors is visible beside the cost of the rest of scrub. Results: bench/results/
eval_redaction.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obsmcp.redaction import DEFAULT, Redactor
from obsmcp.result import scrub

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = ROOT / "tests" / "data" / "redaction"
RESULTS = ROOT / "bench" / "results"
WINDOW = 12

# The secret classes of the issue, from the generator's kinds.
CLASS_OF = {
    "aws_id": "aws",
    "aws_secret": "aws",
    "aws_session": "aws",
    "gcp_key": "gcp",
    "gcp_oauth": "gcp",
    "ya29": "gcp",
    "pem_pkcs8_escaped": "private-key",
    "pem_pkcs8": "private-key",
    "pem_rsa": "private-key",
    "pem_rsa_body": "private-key",
    "pem_ec": "private-key",
    "openssh": "private-key",
    "ghp": "github",
    "gho": "github",
    "ghu": "github",
    "ghs": "github",
    "ghr": "github",
    "github_pat": "github",
    "glpat": "gitlab",
    "slack_bot": "slack",
    "slack_user": "slack",
    "slack_app": "slack",
    "slack_hook": "slack",
    "stripe_live": "stripe",
    "stripe_test": "stripe",
    "stripe_rk": "stripe",
    "stripe_whsec": "stripe",
    "openai_legacy": "openai",
    "openai_proj": "openai",
    "anthropic": "anthropic",
    "dd_api": "datadog",
    "dd_app": "datadog",
    "sentry_key": "sentry",
    "sentry_secret": "sentry",
    "sentry_user": "sentry",
    "jwt": "jwt",
    "opaque": "token/key in context",
    "uuid_secret": "token/key in context",
    "basic": "auth header",
    "digest_response": "auth header",
    "sig_hex": "auth header",
    "password": "password",
    "card": "card",
    "card_spaced": "card",
    "card_dashed": "card",
    "amex": "card",
    "sendgrid": "other saas",
    "npm": "other saas",
    "hf": "other saas",
    "vault": "other saas",
}

# The detection result.py had before obsmcp.redaction (a verbatim copy), the baseline for recall and speed.
LEGACY_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        "[REDACTED private key]",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "[REDACTED jwt]"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "[REDACTED aws-key]"),
    (re.compile(r"(?i)(aws_secret_access_key\s*[=:]\s*)[A-Za-z0-9/+]{40}"), r"\1[REDACTED]"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), "[REDACTED github-token]"),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"), "[REDACTED github-token]"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"), "[REDACTED gitlab-token]"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), "[REDACTED slack-token]"),
    (re.compile(r"\b[rs]k_(live|test)_[A-Za-z0-9]{16,}\b"), "[REDACTED stripe-key]"),
    (re.compile(r"\bsk-(proj-|ant-)?[A-Za-z0-9_-]{20,}\b"), "[REDACTED api-key]"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "[REDACTED gcp-key]"),
    (re.compile(r"(https?://)[0-9a-f]{32}(@[^\s/]+/\d+)"), r"\1[REDACTED]\2"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [REDACTED]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@"), r"\1[REDACTED]@"),
    (
        re.compile(
            r"(?i)\b((?:password|passwd|pwd|secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|"
            r"client[_-]?secret|dd[_-]?api[_-]?key|dd[_-]?app[_-]?key)\"?\s*[=:]\s*\"?)([^\s\"',;&]{3,})"
        ),
        r"\1[REDACTED]",
    ),
]
_LEGACY_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


def _legacy_luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _legacy_card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    if 13 <= len(digits) <= 19 and _legacy_luhn(digits) and len(set(digits)) > 1:
        return "[REDACTED card]"
    return m.group(0)


def legacy_redact(text: str) -> str:
    for pattern, repl in LEGACY_PATTERNS:
        text = pattern.sub(repl, text)
    return _LEGACY_CARD.sub(_legacy_card, text)


# -- scoring ----------------------------------------------------------------------------------------------------


@dataclass
class Record:
    id: str
    line: str
    secrets: list[dict[str, str]]


def load_corpus(name: str) -> list[Record]:
    rows = (CORPUS_DIR / name).read_text().splitlines()
    return [Record(**{k: v for k, v in json.loads(r).items() if k != "source"}) for r in rows if r.strip()]


def leaked(secret: str, out: str) -> bool:
    """Whether any part of the secret long enough to matter survives in the output."""
    w = min(WINDOW, len(secret))
    return any(secret[i : i + w] in out for i in range(len(secret) - w + 1))


def _context_words(text: str, secrets: list[str]) -> list[str]:
    masked = text
    for s in sorted(secrets, key=len, reverse=True):
        masked = masked.replace(s, "\x00")
    return [w for w in masked.split() if "\x00" not in w and len(w) >= 3]


@dataclass
class Score:
    records: int = 0
    secrets: int = 0
    found: int = 0
    negatives: int = 0
    false_positives: int = 0
    positives: int = 0
    over_redacted: int = 0
    by_class: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    fp_by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[dict[str, str]] = field(default_factory=list)
    false_positive_examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.secrets if self.secrets else 1.0

    @property
    def fp_rate(self) -> float:
        return self.false_positives / self.negatives if self.negatives else 0.0

    @property
    def over_redaction(self) -> float:
        return self.over_redacted / self.positives if self.positives else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "secrets": self.secrets,
            "recall": round(self.recall, 4),
            "negatives": self.negatives,
            "false_positives": self.false_positives,
            "false_positive_rate": round(self.fp_rate, 4),
            "over_redacted_records": self.over_redacted,
            "over_redaction_rate": round(self.over_redaction, 4),
            "recall_by_class": {
                k: {"secrets": v[0], "found": v[1], "recall": round(v[1] / v[0], 4)}
                for k, v in sorted(self.by_class.items())
            },
            "false_positives_by_detector": dict(sorted(self.fp_by_kind.items())),
            "misses": self.misses,
            "false_positive_examples": self.false_positive_examples,
        }


Pipeline = Callable[[str], str]


def scrub_pipeline(redactor: Redactor | None) -> tuple[Pipeline, Pipeline]:
    """(with redaction, without): scrub as the tools call it, no truncation."""
    return (lambda t: scrub(t, redact_secrets=redactor or False)), (lambda t: scrub(t, redact_secrets=False))


def score(records: list[Record], redacted: Pipeline, plain: Pipeline, redactor: Redactor | None = None) -> Score:
    sc = Score()
    for rec in records:
        sc.records += 1
        base, out = plain(rec.line), redacted(rec.line)
        if not rec.secrets:
            sc.negatives += 1
            if out != base:
                sc.false_positives += 1
                kinds = sorted({f.kind for f in redactor.findings(base)}) if redactor else ["legacy"]
                for k in kinds:
                    sc.fp_by_kind[k] += 1
                sc.false_positive_examples.append({"id": rec.id, "in": base[:300], "out": out[:300]})
            continue
        sc.positives += 1
        for s in rec.secrets:
            cls = CLASS_OF.get(s["kind"], s["kind"])
            sc.secrets += 1
            sc.by_class[cls][0] += 1
            if leaked(s["value"], out):
                sc.misses.append({"id": rec.id, "class": cls, "secret": s["value"][:80], "out": out[:300]})
            else:
                sc.found += 1
                sc.by_class[cls][1] += 1
        words = _context_words(base, [s["value"] for s in rec.secrets])
        if any(w not in out for w in words):
            sc.over_redacted += 1
    return sc


# -- throughput ------------------------------------------------------------------------------------------------


def throughput(lines: list[str], fn: Pipeline, reps: int) -> float:
    """Lines per second, best of reps passes (the machine is shared: the best pass is the least disturbed)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for line in lines:
            fn(line)
        best = min(best, time.perf_counter() - t0)
    return len(lines) / best


def run(reps: int) -> dict[str, Any]:
    corpora = {"dev": load_corpus("dev.jsonl"), "heldout": load_corpus("heldout.jsonl")}
    out: dict[str, Any] = {"corpora": {}}
    for name, recs in corpora.items():
        with_r, without = scrub_pipeline(DEFAULT)
        raw = score(recs, DEFAULT.redact, lambda t: t, DEFAULT)
        legacy = score(recs, lambda t: scrub(legacy_redact(t), redact_secrets=False), without)
        out["corpora"][name] = {
            "scrub": score(recs, with_r, without, DEFAULT).as_dict(),
            "redact_raw_text": {k: v for k, v in raw.as_dict().items() if k in ("recall", "false_positive_rate")},
            "legacy_patterns": {
                k: v
                for k, v in legacy.as_dict().items()
                if k in ("recall", "false_positive_rate", "false_positives", "secrets", "recall_by_class")
            },
        }
    lines = [r.line for recs in corpora.values() for r in recs]
    negatives = [r.line for recs in corpora.values() for r in recs if not r.secrets]
    # Telemetry is mostly secret-free: the look-alikes alone are the common case.
    out["throughput_lines_per_s"] = {
        workload: {
            "redact": round(throughput(ls, DEFAULT.redact, reps)),
            "legacy_patterns": round(throughput(ls, legacy_redact, reps)),
            "scrub_with_redaction": round(throughput(ls, lambda t: scrub(t), reps)),
            "scrub_without_redaction": round(throughput(ls, lambda t: scrub(t, redact_secrets=False), reps)),
        }
        for workload, ls in (("all_records", lines), ("look_alikes_only", negatives))
    }
    out["throughput_lines"] = {"all_records": len(lines), "look_alikes_only": len(negatives)}
    out["mean_line_chars"] = round(sum(map(len, lines)) / len(lines), 1)
    out["machine"] = {"python": platform.python_version(), "processor": platform.machine()}
    out["reps"] = reps
    return out


def render_md(res: dict[str, Any]) -> str:
    md = ["# Secret redaction: recall, false positives, throughput", ""]
    md.append("`python -m bench.eval_redaction`; corpora in tests/data/redaction (dev: tuned on; held-out: never).")
    md.append("")
    md.append(
        "| corpus | secrets | recall | look-alikes | false positives | over-redacted | legacy recall | legacy FP |"
    )
    md.append("|---|---|---|---|---|---|---|---|")
    for name, c in res["corpora"].items():
        s, leg = c["scrub"], c["legacy_patterns"]
        md.append(
            f"| {name} | {s['secrets']} | {s['recall']:.1%} | {s['negatives']} | "
            f"{s['false_positives']} ({s['false_positive_rate']:.1%}) | {s['over_redaction_rate']:.1%} | "
            f"{leg['recall']:.1%} | {leg['false_positive_rate']:.1%} |"
        )
    md += ["", "Recall by class (dev / held-out):", "", "| class | dev | held-out |", "|---|---|---|"]
    dev, held = res["corpora"]["dev"]["scrub"], res["corpora"]["heldout"]["scrub"]
    for cls in sorted(set(dev["recall_by_class"]) | set(held["recall_by_class"])):
        cells = []
        for c in (dev, held):
            v = c["recall_by_class"].get(cls)
            cells.append(f"{v['found']}/{v['secrets']}" if v else "-")
        md.append(f"| {cls} | {cells[0]} | {cells[1]} |")
    for name, c in res["corpora"].items():
        s = c["scrub"]
        if s["misses"] or s["false_positive_examples"]:
            md += ["", f"{name}: misses and false positives", ""]
            md += [f"- miss {m['id']} ({m['class']}): `{m['out'][:160]}`" for m in s["misses"]]
            md += [f"- false positive {m['id']}: `{m['out'][:160]}`" for m in s["false_positive_examples"]]
    md += ["", "Throughput (lines/s, best of reps, one core; same run):", ""]
    md.append("| workload | redact | legacy patterns | scrub with redaction | scrub without |")
    md.append("|---|---|---|---|---|")
    for w, t in res["throughput_lines_per_s"].items():
        md.append(
            f"| {w} ({res['throughput_lines'][w]} lines) | {t['redact']:,} | {t['legacy_patterns']:,} | "
            f"{t['scrub_with_redaction']:,} | {t['scrub_without_redaction']:,} |"
        )
    md.append("")
    md.append(f"Mean record length {res['mean_line_chars']} characters; Python {res['machine']['python']}.")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="timing passes per measurement (best is kept)")
    args = ap.parse_args()
    res = run(args.reps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval_redaction.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "eval_redaction.md").write_text(render_md(res))
    print(render_md(res))


if __name__ == "__main__":
    main()
