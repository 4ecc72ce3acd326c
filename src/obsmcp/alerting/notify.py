"""Alert webhooks: the engine's transitions, sent to Alertmanager-compatible, Slack and Alertmanager API receivers.

Each configured webhook (`[[alert_webhooks]]`) is one `WebhookNotifier`, a `model.Notifier`: `notify()` only builds
the messages and puts them on a bounded queue (the oldest message is dropped, and counted, when it is full), so the
engine's evaluation thread never waits on a network. A worker thread per webhook sends them, retrying connect
errors, timeouts, 429 and 5xx with exponential backoff plus jitter (honouring Retry-After); any other answer is a
final failure. Delivery is at least once: a timed-out POST may have arrived and is sent again.

Formats:
- "alertmanager": the body Alertmanager's webhook_config sends (version "4"), one message per rule with its changed
  and still-firing alerts, so tools written for Alertmanager webhooks read obsmcp's too.
- "slack": a Slack incoming-webhook message (text + Block Kit blocks; each section under Slack's 3,000 characters).
- "alertmanager_api": POST /api/v2/alerts of a real Alertmanager, which then groups, silences, inhibits and routes
  obsmcp's alerts with the team's own; firing alerts are re-sent every `resend_s` (as Prometheus does), each with
  endsAt four resends ahead, so Alertmanager resolves them by itself if obsmcp stops.

Webhook URLs and headers are secrets (a Slack URL is its own credential): logs and metrics name the webhook and its
host only. Silenced alerts are not sent; alerts that were pending and never fired are not sent either.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from obsmcp import __version__, metrics
from obsmcp.alerting.model import RULE_NAME, Alert, AlertTransition
from obsmcp.http._redact import excerpt, redact_known

if TYPE_CHECKING:
    from obsmcp.config import Settings

log = structlog.get_logger("obsmcp.alerting.notify")

WebhookFormat = Literal["alertmanager", "slack", "alertmanager_api"]
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that has not ended
SLACK_TEXT_MAX = 3000  # Slack: a section's text is at most 3,000 characters
SLACK_HEADER_MAX = 150  # Slack: a header's plain_text is at most 150 characters
SLACK_SECTIONS_MAX = 20  # alerts shown one section each (Slack allows 50 blocks per message)
_RETRY_STATUSES = frozenset({408, 425, 429})  # and every 5xx
_USER_AGENT = f"obsmcp/{__version__}"


class WebhookConfig(BaseModel):
    """One alert webhook, as written in the config file's `[[alert_webhooks]]` tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="unique name, e.g. oncall-slack (logs and metrics use it, never the URL)")
    url: SecretStr = Field(description="the receiver's URL (a secret: a Slack URL is its own credential)")
    format: WebhookFormat = Field(
        "alertmanager",
        description="alertmanager (webhook_config body), slack (incoming webhook), alertmanager_api "
        "(POST /api/v2/alerts of an Alertmanager at url)",
    )
    send_resolved: bool = Field(True, description="also send alerts that resolved (alertmanager_api always does)")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="sent with each request, e.g. auth")
    timeout_s: float = Field(10.0, gt=0, le=120, description="timeout of one attempt, seconds")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per message, the first included")
    backoff_s: float = Field(1.0, ge=0, le=60, description="first retry gap; it doubles each retry (plus jitter)")
    backoff_max_s: float = Field(60.0, ge=0, le=3600, description="longest retry gap")
    queue_size: int = Field(1000, ge=1, le=100_000, description="messages waiting; above it the oldest is dropped")
    resend_s: float = Field(60.0, ge=1, description="alertmanager_api: re-send firing alerts this often, seconds")
    max_alerts: int = Field(100, ge=1, le=1000, description="alerts per message; more are counted in truncatedAlerts")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not RULE_NAME.match(v):
            raise ValueError(f"{v!r} is not a webhook name: 1-64 letters, digits, '_', '.', ':' or '-'")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value().strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The message must not quote the URL: it is a secret.
            raise ValueError("url is not an http(s) URL: write it like https://hooks.slack.com/services/... ")
        return SecretStr(v.get_secret_value().strip())

    @property
    def host(self) -> str:
        """scheme://host[:port] of the URL: all that logs and messages show of it."""
        return display_host(self.url.get_secret_value())

    @property
    def endpoint(self) -> str:
        url = self.url.get_secret_value()
        if self.format == "alertmanager_api" and not urlsplit(url).path.rstrip("/").endswith("/api/v2/alerts"):
            return url.rstrip("/") + "/api/v2/alerts"
        return url


def display_host(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


# -- payloads (pure functions) ------------------------------------------------------------------------------


def rfc3339(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels an alert carries outside obsmcp: its own, plus alertname (the rule) and severity."""
    labels = {**alert.labels, "alertname": alert.rule, "severity": alert.labels.get("severity", alert.severity)}
    return dict(sorted(labels.items()))  # sorted, as Alertmanager sends them


def alert_annotations(alert: Alert) -> dict[str, str]:
    out = {"summary": alert.cause}
    if alert.value is not None:
        out["value"] = f"{alert.value:g}"
    if alert.threshold is not None:
        out["threshold"] = f"{alert.threshold:g}"
    return out


def generator_url(external_url: str, alert: Alert) -> str:
    return f"{external_url.rstrip('/')}/?alert={quote(alert.rule, safe='')}"


def _am_status(alert: Alert) -> str:
    return "resolved" if alert.state == "resolved" else "firing"


def _starts_at(alert: Alert) -> datetime:
    return alert.firing_since or alert.since


def webhook_alert(alert: Alert, external_url: str) -> dict[str, Any]:
    """One entry of `alerts` in Alertmanager's webhook body."""
    return {
        "status": _am_status(alert),
        "labels": alert_labels(alert),
        "annotations": alert_annotations(alert),
        "startsAt": rfc3339(_starts_at(alert)),
        "endsAt": rfc3339(alert.resolved_at) if alert.state == "resolved" and alert.resolved_at else ZERO_TIME,
        "generatorURL": generator_url(external_url, alert),
        "fingerprint": alert.fingerprint,
    }


def _common(maps: Sequence[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def alertmanager_payload(
    receiver: str, rule: str, alerts: Sequence[Alert], external_url: str, max_alerts: int = 100
) -> dict[str, Any]:
    """Alertmanager's webhook_config body (version 4) for one group: the alerts of one rule."""
    entries = [webhook_alert(a, external_url) for a in alerts]
    status = "firing" if any(e["status"] == "firing" for e in entries) else "resolved"
    group_labels = {"alertname": rule}
    return {
        "receiver": receiver,
        "status": status,
        "alerts": entries[:max_alerts],
        "groupLabels": group_labels,
        "commonLabels": _common([e["labels"] for e in entries]),
        "commonAnnotations": _common([e["annotations"] for e in entries]),
        "externalURL": external_url,
        "version": "4",
        "groupKey": "{}:" + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in group_labels.items()) + "}",
        "truncatedAlerts": max(0, len(entries) - max_alerts),
    }


def api_alerts(alerts: Sequence[Alert], external_url: str, now: datetime, resend_s: float) -> list[dict[str, Any]]:
    """The body of Alertmanager's POST /api/v2/alerts (postableAlerts). A firing alert ends four resends from now
    unless re-sent (Prometheus does the same), so Alertmanager resolves it if obsmcp goes away."""
    out = []
    for a in alerts:
        ends = (a.resolved_at or now) if a.state == "resolved" else now + timedelta(seconds=4 * resend_s)
        out.append(
            {
                "labels": alert_labels(a),
                "annotations": alert_annotations(a),
                "startsAt": rfc3339(_starts_at(a)),
                "endsAt": rfc3339(ends),
                "generatorURL": generator_url(external_url, a),
            }
        )
    return out


def _mrkdwn_escape(text: str) -> str:
    # Slack: &, < and > are control characters in mrkdwn text and must be escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:  # never cut an escape like &amp; in half
        cut = cut[:amp]
    return cut + "…"


def slack_payload(rule: str, alerts: Sequence[Alert], external_url: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the notification's fallback) and Block Kit blocks, one mrkdwn
    section per alert (at most SLACK_SECTIONS_MAX; the rest are counted), each under 3,000 characters."""
    firing = [a for a in alerts if a.state != "resolved"]
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    severity = alerts[0].severity if alerts else "warning"
    title = f"[{status}] {rule} ({severity})"
    first_cause = alerts[0].cause if alerts else ""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, SLACK_HEADER_MAX), "emoji": True}}
    ]
    for a in alerts[:SLACK_SECTIONS_MAX]:
        mark = ":white_check_mark: *RESOLVED*" if a.state == "resolved" else ":red_circle: *FIRING*"
        when = (
            f"resolved {rfc3339(a.resolved_at)}"
            if a.state == "resolved" and a.resolved_at
            else f"since {rfc3339(_starts_at(a))}"
        )
        facts = [when]
        if a.value is not None:
            facts.append(f"value {a.value:g}" + (f" (threshold {a.threshold:g})" if a.threshold is not None else ""))
        labels = ", ".join(f"`{_mrkdwn_escape(k)}={_mrkdwn_escape(v)}`" for k, v in sorted(a.labels.items()))
        text = f"{mark} {_mrkdwn_escape(a.cause)}\n{' · '.join(facts)}" + (f"\n{labels}" if labels else "")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_TEXT_MAX)}})
    more = len(alerts) - SLACK_SECTIONS_MAX
    footer = f"<{external_url}|obsmcp>" + (f" · and {more} more alert(s)" if more > 0 else "")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(footer, SLACK_TEXT_MAX)}]})
    return {"text": _clip(f"{title}: {first_cause}", SLACK_TEXT_MAX), "blocks": blocks}


# -- the notifier -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    body: bytes
    alerts: int
    resend: bool = False


class SendError(Exception):
    """One attempt failed: `reason` is a status code or an error kind (connect, timeout, ...); never a URL."""

    def __init__(self, reason: str, retryable: bool, detail: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.detail = detail
        self.retry_after_s = retry_after_s


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class WebhookNotifier:
    """One webhook: a `model.Notifier` with a bounded queue and a sending thread. Close it with `close()`."""

    def __init__(self, config: WebhookConfig, external_url: str = "http://127.0.0.1:8000/") -> None:
        self.config = config
        self.name = config.name
        self.external_url = external_url
        self._queue: deque[Message] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._firing: list[Alert] = []  # alertmanager_api: what to re-send
        self._last_send = time.monotonic()
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        self._secrets = frozenset(
            s
            for s in (
                config.url.get_secret_value(),
                config.endpoint,
                urlsplit(config.url.get_secret_value()).path,
                urlsplit(config.url.get_secret_value()).query,
                *headers.values(),
            )
            if len(s) >= 4
        )
        self._http = httpx.Client(
            headers={"User-Agent": _USER_AGENT, "Content-Type": "application/json", **headers},
            timeout=httpx.Timeout(config.timeout_s, connect=min(5.0, config.timeout_s)),
            follow_redirects=False,  # a redirect could carry the headers (credentials) to another host
        )
        self._queued = metrics.ALERT_NOTIFICATION_QUEUE.labels(self.name)
        self._queued.set(0)
        self._thread = threading.Thread(target=self._run, name=f"obsmcp-webhook-{self.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<WebhookNotifier {self.name} {self.config.format} {self.config.host}>"

    # -- model.Notifier ----------------------------------------------------------------------------------

    def notify(self, transitions: list[AlertTransition], firing: list[Alert]) -> None:
        """Queue the messages for these transitions; returns at once (never blocks on the network)."""
        for message in self.messages(transitions, firing):
            self._put(message)

    def messages(self, transitions: Iterable[AlertTransition], firing: Sequence[Alert]) -> list[Message]:
        """What notify() queues: the changes worth telling (firing, and resolved after firing), grouped by rule."""
        cfg = self.config
        live = [a for a in firing if a.silenced_by is None and a.state == "firing"]
        changed: dict[str, dict[str, Alert]] = {}
        for t in transitions:
            a = t.alert
            if a.silenced_by is not None:
                continue
            newly_firing = a.state == "firing" and t.previous != "firing"
            resolved = a.state == "resolved" and t.previous == "firing"
            send_resolved = cfg.send_resolved or cfg.format == "alertmanager_api"
            if newly_firing or (resolved and send_resolved):
                changed.setdefault(a.rule, {})[a.fingerprint] = a
        if cfg.format == "alertmanager_api":
            with self._cond:
                self._firing = live
                self._cond.notify_all()  # the worker's re-send timer starts (or stops) with them
            alerts = [a for group in changed.values() for a in group.values()]
            if not alerts:
                return []
            return [self._api_message(alerts)]
        out = []
        for rule, group in sorted(changed.items()):
            for a in live:  # a group carries its still-firing alerts too, as Alertmanager's do
                if a.rule == rule:
                    group.setdefault(a.fingerprint, a)
            alerts = sorted(group.values(), key=lambda a: (a.state != "firing", a.fingerprint))
            if cfg.format == "slack":
                body: dict[str, Any] = slack_payload(rule, alerts, self.external_url)
            else:
                body = alertmanager_payload(cfg.name, rule, alerts, self.external_url, cfg.max_alerts)
            out.append(Message(json.dumps(body).encode(), len(alerts)))
        return out

    def _api_message(self, alerts: Sequence[Alert], resend: bool = False) -> Message:
        body = api_alerts(alerts, self.external_url, datetime.now(UTC), self.config.resend_s)
        return Message(json.dumps(body).encode(), len(body), resend)

    # -- queue ------------------------------------------------------------------------------------------------

    def _put(self, message: Message) -> None:
        with self._cond:
            if self._closing:
                self._count("dropped")
                log.warning("alert_webhook_dropped", webhook=self.name, reason="closing", alerts=message.alerts)
                return
            if len(self._queue) >= self.config.queue_size:
                old = self._queue.popleft()
                self._count("dropped")
                log.warning(
                    "alert_webhook_dropped",
                    webhook=self.name,
                    reason=f"queue full ({self.config.queue_size} messages): the oldest is dropped",
                    alerts=old.alerts,
                )
            self._queue.append(message)
            self._queued.set(len(self._queue))
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued message was sent or failed; False when the timeout came first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop: queued messages get `timeout` seconds to go out (without retries), the rest are dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            while self._queue:
                self._count("dropped")
                self._queue.popleft()
            self._queued.set(0)
        self._http.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    wait = self._resend_due()
                    if wait is not None and wait <= 0:
                        self._queue.append(self._api_message(self._firing, resend=True))
                        break
                    self._cond.wait(wait)
                if not self._queue:
                    return  # closing, nothing left
                message = self._queue.popleft()
                self._queued.set(len(self._queue))
                self._busy = True
            try:
                self._deliver(message)
            except Exception as exc:  # a bug must not kill the thread: log it (no URL in it) and go on
                log.error("alert_webhook_error", webhook=self.name, error=type(exc).__name__)
                self._count("failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._last_send = time.monotonic()
                    self._cond.notify_all()

    def _resend_due(self) -> float | None:
        """alertmanager_api with firing alerts: seconds until they are re-sent (None: nothing to re-send)."""
        if self.config.format != "alertmanager_api" or not self._firing:
            return None
        return self._last_send + self.config.resend_s - time.monotonic()

    # -- sending --------------------------------------------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        cfg = self.config
        attempts = [0]
        jitter = wait_exponential_jitter(initial=cfg.backoff_s, max=cfg.backoff_max_s, jitter=cfg.backoff_s / 2)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, SendError) and exc.retry_after_s is not None:
                return min(exc.retry_after_s, cfg.backoff_max_s)
            return float(jitter(state))

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, SendError) and exc.retryable and not self._closing

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            reason = exc.reason if isinstance(exc, SendError) else type(exc).__name__
            sleep = state.next_action.sleep if state.next_action is not None else 0.0
            metrics.ALERT_NOTIFICATION_RETRIES.labels(self.name, reason).inc()
            log.warning(
                "alert_webhook_retry",
                webhook=self.name,
                host=cfg.host,
                attempt=state.attempt_number,
                reason=reason,
                wait_s=round(sleep, 3),
            )

        def attempt() -> int:
            attempts[0] += 1
            return self._post(message.body)

        retrying = Retrying(
            stop=stop_after_attempt(cfg.max_attempts),
            wait=wait,
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            status = retrying(attempt)
        except SendError as exc:
            self._count("failed")
            log.error(
                "alert_webhook_failed",
                webhook=self.name,
                host=cfg.host,
                format=cfg.format,
                alerts=message.alerts,
                attempts=attempts[0],
                reason=exc.reason,
                detail=exc.detail,
            )
            return
        self._count("sent")
        emit = log.debug if message.resend else log.info
        emit(
            "alert_webhook_sent",
            webhook=self.name,
            host=cfg.host,
            format=cfg.format,
            alerts=message.alerts,
            status=status,
            attempts=attempts[0],
        )

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._closing:
                self._cond.wait_for(lambda: self._closing, timeout=seconds)

    def _post(self, body: bytes) -> int:
        try:
            r = self._http.post(self.config.endpoint, content=body)
        except httpx.TimeoutException:
            raise SendError("timeout", True) from None
        except httpx.TransportError as exc:
            # httpx's messages carry no URL, but redact it anyway (and the headers) in case one does.
            detail = redact_known(str(exc), self._secrets)[:200]
            raise SendError("connect", True, detail) from None
        status = r.status_code
        if 200 <= status < 300:
            return status
        detail = f"{status}: {excerpt(r.content, self._secrets)}" if r.content else str(status)
        if status in _RETRY_STATUSES or status >= 500:
            raise SendError(str(status), True, detail, _retry_after(r.headers.get("retry-after")))
        hint = {
            301: "the URL redirects: use the final URL",
            302: "the URL redirects: use the final URL",
            401: "the receiver wants credentials: set headers",
            403: "the receiver refused the credentials in headers",
            404: "no receiver at this URL: check it",
        }.get(status, "the receiver rejected the message")
        raise SendError(str(status), False, f"{detail} ({hint})")

    def _count(self, outcome: str) -> None:
        metrics.ALERT_NOTIFICATIONS.labels(self.name, self.config.format, outcome).inc()


def webhook_notifiers(settings: Settings, external_url: str | None = None) -> list[WebhookNotifier]:
    """A notifier per configured webhook (settings.alert_webhooks); give each to the engine's add_notifier()."""
    url = external_url or f"http://{settings.host}:{settings.port}/"
    return [WebhookNotifier(cfg, url) for cfg in settings.alert_webhooks]
