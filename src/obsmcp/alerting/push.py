"""Firing alerts as an MCP resource that clients subscribe to, in both protocol eras of the MCP SDK.

- 2026-07-28 (modern): the client opens a `subscriptions/listen` stream naming the resource; the server publishes
  `ResourceUpdated` events on its `SubscriptionBus`. `ThreadSafeBus` is that bus, able to publish from the alert
  engine's thread: each listener is called on the event loop it subscribed from.
- 2025-11-25 and earlier (handshake era): `resources/subscribe` / `resources/unsubscribe` requests; the server
  sends `notifications/resources/updated` on each subscribed session. `LegacySubscriptions` serves them.

Both are level triggers: "the list changed, read it again". Sent when an alert starts or stops firing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ResourceUpdated, ServerEvent
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from obsmcp.alerting.model import Alert, AlertTransition

log = structlog.get_logger("obsmcp.alerting")

FIRING_URI = "obsmcp://alerts/firing"


class ThreadSafeBus:
    """An in-process `mcp.server.subscriptions.SubscriptionBus` whose `publish_threadsafe` may be called from
    any thread: listeners run on the loop they subscribed from (the SDK's listeners must)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[object, tuple[Callable[[ServerEvent], None], asyncio.AbstractEventLoop]] = {}

    async def publish(self, event: ServerEvent) -> None:
        self.publish_threadsafe(event)
        await asyncio.sleep(0)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()
        with self._lock:
            self._listeners[token] = (listener, asyncio.get_running_loop())

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(token, None)

        return unsubscribe

    def publish_threadsafe(self, event: ServerEvent) -> None:
        with self._lock:
            listeners = list(self._listeners.items())
        for token, (listener, loop) in listeners:
            try:
                loop.call_soon_threadsafe(_deliver, listener, event)
            except RuntimeError:  # that loop is closed: its stream is gone
                with self._lock:
                    self._listeners.pop(token, None)


def _deliver(listener: Callable[[ServerEvent], None], event: ServerEvent) -> None:
    try:
        listener(event)
    except Exception:  # one listener must not stop the others
        log.exception("subscription_listener_failed")


class LegacySubscriptions:
    """`resources/subscribe` for handshake-era sessions: who asked for which URI, and on which loop."""

    def __init__(self, uris: set[str]) -> None:
        self.uris = uris
        self._lock = threading.Lock()
        self._subs: dict[str, dict[int, tuple[Any, asyncio.AbstractEventLoop]]] = {}

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        if uri not in self.uris:
            from mcp.shared.exceptions import MCPError
            from mcp.types import INVALID_PARAMS

            raise MCPError(
                INVALID_PARAMS, f"{uri} cannot be subscribed to: resources with updates: {sorted(self.uris)}"
            )
        with self._lock:
            self._subs.setdefault(uri, {})[id(ctx.session)] = (ctx.session, asyncio.get_running_loop())
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        with self._lock:
            self._subs.get(str(params.uri), {}).pop(id(ctx.session), None)
        return EmptyResult()

    def updated_threadsafe(self, uri: str) -> None:
        with self._lock:
            subs = list(self._subs.get(uri, {}).items())
        for key, (session, loop) in subs:
            try:
                future = asyncio.run_coroutine_threadsafe(session.send_resource_updated(uri), loop)
            except RuntimeError:
                with self._lock:
                    self._subs.get(uri, {}).pop(key, None)
                continue
            future.add_done_callback(functools.partial(self._done, uri, key))

    def _done(self, uri: str, key: int, future: Any) -> None:
        with contextlib.suppress(Exception):
            if future.exception() is not None:  # the session ended: forget it
                with self._lock:
                    self._subs.get(uri, {}).pop(key, None)


def firing_changed(transitions: list[AlertTransition]) -> bool:
    return any(t.alert.state == "firing" or t.previous == "firing" for t in transitions)


class FiringResourcePush:
    """An alert-engine watcher that tells both eras' subscribers when the set of firing alerts changes."""

    def __init__(self, bus: ThreadSafeBus, legacy: LegacySubscriptions) -> None:
        self.bus = bus
        self.legacy = legacy

    def __call__(self, transitions: list[AlertTransition], firing: list[Alert]) -> None:
        if not firing_changed(transitions):
            return
        self.bus.publish_threadsafe(ResourceUpdated(uri=FIRING_URI))
        self.legacy.updated_threadsafe(FIRING_URI)
