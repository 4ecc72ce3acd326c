"""The event loop all backend I/O runs on: one, in a daemon thread named "obsmcp-http", started on first use.

See `_client`'s docstring for the threading model this gives.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _ClientLoop:
    """The event loop all backend I/O runs on, in its own daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                new = asyncio.new_event_loop()
                started = threading.Event()
                thread = threading.Thread(target=self._main, args=(new, started), name="obsmcp-http", daemon=True)
                thread.start()
                started.wait()
                self._loop, self._thread = new, thread
            return self._loop

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the client loop from any asyncio event loop."""
        loop = self.get()
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `coro` on the client loop and block until it ends (from any thread but the loop's own)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("a blocking call was made on the HTTP client's own loop: await the async form")
        return asyncio.run_coroutine_threadsafe(coro, self.get()).result(timeout_s)

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            raise RuntimeError("the HTTP client loop cannot stop itself: call close_all() from another thread")
        asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def _cancel_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


LOOP = _ClientLoop()
