"""A circuit breaker per backend instance.

Written here because the libraries for it do not keep DESIGN.md's rules: pybreaker and aiobreaker (its
asyncio port) count an excluded error as a success (`_handle_error` -> `_handle_success`), which resets the run of
failures, where a timeout or a 404 must leave it as it is; purgatory lets every request through while
half-open instead of one probe, and all three read the wall clock, not an injectable monotonic one.

States: closed (requests flow; consecutive failures are counted) -> open (after `failure_threshold`
failures in a row: requests fail fast for `open_s`) -> half_open (the first request after that is the one
probe; others fail fast while it runs) -> closed on its success, open again on its failure.

Outcomes: "success" (a 2xx answer) resets the count; "failure" (connect error, reset, 429, 5xx, truncated
body) counts; "neutral" (timeout, 4xx other than 429, a complete non-JSON body: the query's fault or a
misconfiguration, not an outage) changes nothing, and a neutral probe just frees the probe slot.

Threading: state changes happen on the client's event loop thread only; `refuses()` is read from callers'
threads without a lock (a stale read at worst sends one request on to the loop, where `admit()` decides).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

State = Literal["closed", "half_open", "open"]
Outcome = Literal["success", "failure", "neutral"]
OnChange = Callable[[State, State, "CircuitBreaker"], None]


class CircuitBreaker:
    def __init__(self, failure_threshold: int, open_s: float, clock: Callable[[], float], on_change: OnChange) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.last_failure: str | None = None
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._clock = clock
        self._on_change = on_change

    def retry_in_s(self) -> float:
        """Seconds until a request may go through (0 when one may now)."""
        if self.state == "open":
            return max(0.0, self._opened_at + self.open_s - self._clock())
        return 0.0

    def refuses(self) -> bool:
        """Whether a request now would fail fast (read-only: callable from any thread)."""
        if self.state == "open":
            return self._clock() < self._opened_at + self.open_s
        return self.state == "half_open" and self._probe_in_flight

    def admit(self) -> bool | None:
        """Before an attempt: None refuses it; True admits it as the half-open probe; False admits it."""
        if self.state == "closed":
            return False
        if self.state == "open":
            if self._clock() < self._opened_at + self.open_s:
                return None
            self._set("half_open")
        if self._probe_in_flight:
            return None
        self._probe_in_flight = True
        return True

    def record(self, outcome: Outcome, *, probe: bool, detail: str = "") -> None:
        """After an admitted attempt. Only the probe decides a half-open circuit; an attempt admitted before
        the circuit opened counts toward nothing once it is open."""
        if probe:
            self._probe_in_flight = False
        if outcome == "failure":
            self.consecutive_failures += 1
            self.last_failure = detail
        elif outcome == "success":
            self.consecutive_failures = 0
        if self.state == "closed":
            if outcome == "failure" and self.consecutive_failures >= self.failure_threshold:
                self._open()
        elif self.state == "half_open" and probe:
            if outcome == "success":
                self._set("closed")
            elif outcome == "failure":
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set("open")

    def _set(self, state: State) -> None:
        previous, self.state = self.state, state
        if previous != state:
            self._on_change(previous, state, self)
