"""The alert state machine, as pure functions: a rule's samples in, its alerts and their transitions out.

A label set whose condition starts to hold is `pending`; once it has held for the rule's `for` duration it is
`firing` (at once when `for` is 0, as in Prometheus); when the condition stops holding a firing alert is
`resolved`, a pending one is dropped (recorded as pending -> resolved: it never fired).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

from obsmcp.alerting.evaluate import Sample
from obsmcp.alerting.model import Alert, AlertRule, AlertTransition, Silence, duration_s
from obsmcp.redaction import Redactor
from obsmcp.result import scrub


def alert_labels(rule: AlertRule, sample_labels: Mapping[str, str]) -> dict[str, str]:
    return {"alertname": rule.name, "severity": rule.severity, **rule.labels, **sample_labels}


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable id of rule + labels (hex): the same alert across rounds and restarts."""
    text = rule + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step(
    rule: AlertRule,
    active: Mapping[str, Alert],
    samples: Iterable[Sample],
    now: datetime,
    redactor: Redactor | bool | None = True,
) -> tuple[dict[str, Alert], list[AlertTransition]]:
    """One round of one rule. `active`: the rule's pending and firing alerts by fingerprint. Returns the rule's
    alerts after the round (pending and firing) and the transitions it made.

    Causes and label values come from telemetry (log templates, service names): they are scrubbed and redacted
    here, once, with `redactor` (`redactor_for(settings)`; True: the built-in detectors), so every reader (tools,
    the resource, webhooks, logs, the history) gets the same safe text."""
    for_s = duration_s(rule.for_)
    out: dict[str, Alert] = {}
    transitions: list[AlertTransition] = []
    for sample in samples:
        labels = {k: scrub(v, redact_secrets=redactor) for k, v in alert_labels(rule, sample.labels).items()}
        fp = fingerprint(rule.name, labels)
        if fp in out:
            continue  # two samples with the same labels: the first (most severe) one counts
        prev = active.get(fp)
        cause = scrub(sample.cause, redact_secrets=redactor)
        update = {"value": sample.value, "threshold": sample.threshold, "cause": cause}
        if prev is None:
            state = "firing" if for_s <= 0 else "pending"
            alert = Alert(
                rule=rule.name,
                fingerprint=fp,
                state=state,
                severity=rule.severity,
                labels=labels,
                since=now,
                firing_since=now if state == "firing" else None,
                **update,
            )
            transitions.append(AlertTransition(alert=alert, previous=None, at=now))
        elif prev.state == "pending" and (now - prev.since).total_seconds() >= for_s:
            alert = prev.model_copy(update={**update, "state": "firing", "firing_since": now})
            transitions.append(AlertTransition(alert=alert, previous="pending", at=now))
        else:
            alert = prev.model_copy(update=update)
        out[fp] = alert
    for fp, prev in active.items():
        if fp not in out:
            transitions.append(resolve(prev, now))
    return out, transitions


def resolve(alert: Alert, now: datetime, cause: str | None = None) -> AlertTransition:
    done = alert.model_copy(update={"state": "resolved", "resolved_at": now, **({"cause": cause} if cause else {})})
    return AlertTransition(alert=done, previous=alert.state, at=now)


def silence_of(alert: Alert, silences: Iterable[Silence], now: datetime) -> str | None:
    """The id of the first active silence that matches the alert (its rule, and every matcher exactly)."""
    for s in silences:
        if not s.starts_at <= now < s.ends_at:
            continue
        if s.rule is not None and s.rule != alert.rule:
            continue
        if all(alert.labels.get(k) == v for k, v in s.matchers.items()):
            return s.id
    return None
