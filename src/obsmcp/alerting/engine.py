"""The alert engine: evaluates every rule on an interval in a background thread inside `obsmcp serve`.

One round evaluates each effective rule (config, default burn-rate rules, tool-made rules) against the store and
the configured backends, runs the state machine (obsmcp.alerting.state), writes the transitions to the store,
marks silenced alerts, and tells the notifiers. A rule that fails is logged and counted
(`obsmcp_alert_rule_evaluation_failures`); its alerts keep their state and the other rules go on.

Tools and the status page read `current()` and `history()`; without a running loop (stdio `serve` before the
first round, `obsmcp tool list_alerts`) `ensure_fresh()` evaluates once on demand.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from obsmcp import metrics
from obsmcp.alerting.evaluate import Round, Sample, evaluate_rule
from obsmcp.alerting.model import (
    MAX_DURATION,
    MAX_DURATION_S,
    Alert,
    AlertRule,
    AlertTransition,
    Notifier,
    Silence,
    duration_s,
)
from obsmcp.alerting.rules import RuleError, check_rule, effective_rules
from obsmcp.alerting.state import resolve, silence_of, step
from obsmcp.alerting.store import AlertStore
from obsmcp.redaction import redactor_for
from obsmcp.tools.context import ToolContext

log = structlog.get_logger("obsmcp.alerting")

Watcher = Callable[[list[AlertTransition], list[Alert]], None]


class AlertEngine:
    def __init__(self, ctx: ToolContext, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.interval_s = duration_s(ctx.settings.alert_interval)
        self.clock = clock
        self.store = AlertStore(ctx.db)
        self.redactor = redactor_for(ctx.settings)
        self._lock = threading.RLock()  # the state below
        self._round_lock = threading.Lock()  # one round at a time
        self._api_rules: dict[str, AlertRule] = {r.name: r for r in self.store.rules()}
        self._active: dict[str, Alert] = {a.fingerprint: a for a in self.store.active()}
        self._errors: dict[str, str] = {}
        self._notifiers: list[Notifier] = []
        self._watchers: list[Watcher] = []
        self.last_round: datetime | None = None
        self._last_round_mono: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._update_gauges()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Evaluate every `alert_interval` in a daemon thread until stop()."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="obsmcp-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self.evaluate_now()
            except Exception:  # a bug in a round must not end the loop; the next round tries again
                log.exception("alert_round_failed")
            self._stop.wait(self.interval_s)

    # -- what others call ------------------------------------------------------------------------------------

    def add_notifier(self, notifier: Notifier) -> None:
        """Tell `notifier` about transitions of alerts that are not silenced, after each round that made some."""
        with self._lock:
            self._notifiers.append(notifier)

    def watch(self, watcher: Watcher) -> None:
        """Like add_notifier, but for every transition, silenced or not (the MCP resource of firing alerts)."""
        with self._lock:
            self._watchers.append(watcher)

    def rules(self) -> list[AlertRule]:
        with self._lock:
            return effective_rules(self.settings, self._api_rules.values())

    def current(self) -> list[Alert]:
        """Pending and firing alerts, newest first (silenced ones too, with silenced_by)."""
        with self._lock:
            return sorted(self._active.values(), key=lambda a: (a.since, a.rule), reverse=True)

    def firing(self) -> list[Alert]:
        return [a for a in self.current() if a.state == "firing"]

    def history(self, limit: int = 50) -> list[AlertTransition]:
        """Transitions, newest first, from the store (they survive restarts)."""
        return self.store.history(max(1, limit))

    def errors(self) -> dict[str, str]:
        """Rule name -> why its last evaluation failed."""
        with self._lock:
            return dict(self._errors)

    def silences(self) -> list[Silence]:
        return self.store.silences(int(self.clock() * 1e9))

    def ensure_fresh(self) -> None:
        """Evaluate once unless a round ran within the interval (tools without the background loop)."""
        if not self._stale():
            return
        with self._round_lock:
            # Checked again under the lock: callers that waited for a round in progress use its result.
            if self._stale():
                self._evaluate_round()

    def _stale(self) -> bool:
        last = self._last_round_mono
        return last is None or time.monotonic() - last >= self.interval_s

    # -- one round -------------------------------------------------------------------------------------------

    def evaluate_now(self) -> list[AlertTransition]:
        """Evaluate every rule once; returns the transitions made."""
        with self._round_lock:
            return self._evaluate_round()

    def _evaluate_round(self) -> list[AlertTransition]:
        now_s = self.clock()
        now = datetime.fromtimestamp(now_s, UTC)
        rnd = Round(self.ctx, int(now_s * 1e9))
        rules = self.rules()
        outcomes: dict[str, list[Sample] | None] = {}
        for r in rules:
            if self._stop.is_set():  # stop() during a round: the rules not evaluated yet keep their alerts
                outcomes[r.name] = None
                continue
            outcomes[r.name] = self._evaluate(r, rnd)
        with self._lock:
            transitions = self._apply(rules, outcomes, now)
            silences = self.store.silences(rnd.now_ns)
            for fp, alert in self._active.items():
                self._active[fp] = alert.model_copy(update={"silenced_by": silence_of(alert, silences, now)})
            for t in transitions:
                if t.alert.fingerprint in self._active:
                    t.alert.silenced_by = self._active[t.alert.fingerprint].silenced_by
                else:
                    t.alert.silenced_by = silence_of(t.alert, silences, now)
            self.last_round = now
            self._last_round_mono = time.monotonic()
            notifiers, watchers = list(self._notifiers), list(self._watchers)
            firing = [a for a in self._active.values() if a.state == "firing"]
        self._record(transitions)
        if transitions:
            self._tell(notifiers, watchers, transitions, firing)
        return transitions

    def _evaluate(self, rule: AlertRule, rnd: Round) -> list[Sample] | None:
        t0 = time.perf_counter()
        try:
            samples = evaluate_rule(rule, rnd)
        except Exception as e:
            metrics.ALERT_RULE_FAILURES.labels(rule.kind).inc()
            reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            with self._lock:
                self._errors[rule.name] = reason
            log.warning("alert_rule_failed", rule=rule.name, kind=rule.kind, error=reason)
            return None
        finally:
            metrics.ALERT_RULE_DURATION.labels(rule.kind).observe(time.perf_counter() - t0)
        with self._lock:
            self._errors.pop(rule.name, None)
        return samples

    def _apply(
        self, rules: list[AlertRule], outcomes: Mapping[str, list[Sample] | None], now: datetime
    ) -> list[AlertTransition]:
        by_rule: dict[str, dict[str, Alert]] = {}
        for fp, a in self._active.items():
            by_rule.setdefault(a.rule, {})[fp] = a
        transitions: list[AlertTransition] = []
        active: dict[str, Alert] = {}
        for rule in rules:
            mine = by_rule.pop(rule.name, {})
            samples = outcomes.get(rule.name)
            if samples is None:  # failed: its alerts stay as they were
                active.update(mine)
                continue
            after, made = step(rule, mine, samples, now, self.redactor)
            active.update(after)
            transitions += made
        for gone in by_rule.values():  # rules deleted or no longer configured
            for alert in gone.values():
                transitions.append(resolve(alert, now, f"rule {alert.rule} was removed; {alert.cause}"))
        self._active = active
        return transitions

    def _record(self, transitions: list[AlertTransition]) -> None:
        for t in transitions:
            metrics.ALERT_TRANSITIONS.labels(t.alert.state).inc()
            log.info(
                "alert_transition",
                rule=t.alert.rule,
                state=t.alert.state,
                previous=t.previous,
                silenced=t.alert.silenced_by is not None,
                cause=t.alert.cause[:200],
            )
        try:
            self.store.add_events(transitions)
        except Exception as e:
            log.error("alert_history_write_failed", error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
        self._update_gauges()

    def _update_gauges(self) -> None:
        with self._lock:
            states = [a.state for a in self._active.values()]
        for state in ("pending", "firing"):
            metrics.ALERTS.labels(state).set(states.count(state))

    def _tell(
        self,
        notifiers: list[Notifier],
        watchers: list[Watcher],
        transitions: list[AlertTransition],
        firing: list[Alert],
    ) -> None:
        for watcher in watchers:
            try:
                watcher(transitions, firing)
            except Exception:
                log.exception("alert_watcher_failed")
        loud = [t for t in transitions if t.alert.silenced_by is None]
        if not loud:
            return
        unsilenced = [a for a in firing if a.silenced_by is None]
        for notifier in notifiers:
            try:
                notifier.notify(loud, unsilenced)
            except Exception:
                log.exception("alert_notifier_failed", notifier=type(notifier).__name__)

    # -- rules and silences made by tools --------------------------------------------------------------------

    def dry_run(self, rule: AlertRule) -> list[Sample]:
        """Evaluate `rule` once without keeping anything; RuleError with the reason when it cannot evaluate."""
        check_rule(rule, self.settings)
        try:
            return evaluate_rule(rule, Round(self.ctx, int(self.clock() * 1e9)))
        except RuleError:
            raise
        except Exception as e:
            reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise RuleError(f"the rule does not evaluate: {reason}") from None

    def _check_writable(self, name: str) -> None:
        if name in {r.name for r in self.settings.alerts}:
            raise RuleError(
                f"rule {name!r} is defined in the config file ([[alerts]]); tools cannot change it: edit the config"
            )
        defaults = {r.name for r in effective_rules(self.settings) if r.source == "default"}
        if name in defaults:
            raise RuleError(
                f"rule {name!r} is a default burn-rate rule; tools cannot change it: set alert_default_rules = false "
                "in the config and write your own"
            )

    def create_rule(self, rule: AlertRule) -> list[Sample]:
        """Add a rule made by a tool (source='api') after a dry run; returns the dry run's samples."""
        rule = rule.model_copy(update={"source": "api"})
        self._check_writable(rule.name)
        with self._lock:
            if rule.name in self._api_rules:
                raise RuleError(f"a rule named {rule.name!r} exists: use update_alert_rule, or another name")
        samples = self.dry_run(rule)
        with self._lock:
            if rule.name in self._api_rules:  # made by another caller during the dry run
                raise RuleError(f"a rule named {rule.name!r} exists: use update_alert_rule, or another name")
            self.store.save_rule(rule)
            self._api_rules[rule.name] = rule
        return samples

    def update_rule(self, name: str, changes: Mapping[str, Any]) -> tuple[AlertRule, list[Sample]]:
        self._check_writable(name)
        with self._lock:
            old = self._api_rules.get(name)
        if old is None:
            raise RuleError(f"no rule made by a tool is named {name!r}: list_alert_rules shows the rules")
        body = {**old.model_dump(by_alias=True), **changes, "name": name, "source": "api"}
        try:
            rule = AlertRule.model_validate(body)
        except ValueError as e:
            raise RuleError(_validation_text(e)) from None
        samples = self.dry_run(rule)
        with self._lock:
            self.store.save_rule(rule)
            self._api_rules[name] = rule
        return rule, samples

    def delete_rule(self, name: str) -> AlertRule:
        self._check_writable(name)
        with self._lock:
            rule = self._api_rules.pop(name, None)
            if rule is None:
                raise RuleError(f"no rule made by a tool is named {name!r}: list_alert_rules shows the rules")
            self.store.delete_rule(name)
        return rule

    def add_silence(
        self, duration: str, matchers: Mapping[str, str], rule: str | None, comment: str, created_by: str
    ) -> Silence:
        try:
            seconds = duration_s(duration)
        except ValueError as e:
            raise RuleError(f"duration: {e}") from None
        if seconds <= 0:
            raise RuleError("duration must be above 0, e.g. '2h'")
        if seconds > MAX_DURATION_S:
            raise RuleError(f"duration {duration.strip()!r} is too long: a silence lasts at most {MAX_DURATION}")
        if rule is None and not matchers:
            raise RuleError("say what to silence: a rule name, matchers such as {'service': 'checkout'}, or both")
        if rule is not None and rule not in {r.name for r in self.rules()}:
            raise RuleError(f"no rule named {rule!r}: list_alert_rules shows the rules")
        now = datetime.fromtimestamp(self.clock(), UTC)
        silence = Silence(
            id=uuid.uuid4().hex[:12],
            rule=rule,
            matchers=dict(matchers),
            starts_at=now,
            ends_at=now + timedelta(seconds=seconds),
            created_by=created_by,
            comment=comment,
        )
        self.store.save_silence(silence)
        with self._lock:
            for fp, alert in self._active.items():
                if alert.silenced_by is None and silence_of(alert, [silence], now):
                    self._active[fp] = alert.model_copy(update={"silenced_by": silence.id})
        return silence


def _validation_text(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            field = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{field}: {msg}" if field else msg)
        return "; ".join(parts)
    return str(e)
