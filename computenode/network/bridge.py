"""A trio event loop on its own thread, and calls both ways between it and the node's asyncio loop.

py-libp2p runs only on trio; the node runs on asyncio. Neither loop ever blocks on the other:
a call from asyncio starts a trio task and awaits an asyncio future that the task settles; a
call from trio schedules a coroutine on the asyncio loop and waits on a trio event that the
coroutine's done-callback sets. No worker thread is used per call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import trio

T = TypeVar("T")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLOSE_GRACE_S = 5.0  # main's own shutdown (closing connections) before it is cancelled


class TrioThread:
    """One trio loop on a daemon thread named `libp2p-trio`, running `main` until stop()."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ended: asyncio.Future[None] = loop.create_future()

    async def start(self, main: Callable[[Callable[[], None], trio.Event], Awaitable[None]]) -> None:
        """Run `main(ready, stopping)` on the trio thread; return once it called `ready()`. An
        exception `main` raises before that is raised here; after, it ends the thread (see `ended`).
        stop() sets `stopping`: main then closes what it opened and returns (it is cancelled if
        that takes over CLOSE_GRACE_S)."""
        started: asyncio.Future[None] = self.loop.create_future()

        def settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        def ready() -> None:
            self.loop.call_soon_threadsafe(settle, started, None)

        async def runner() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            stop = self._stop
            returned = trio.Event()

            async def run_main() -> None:
                try:
                    await main(ready, stop)
                finally:
                    returned.set()
                    stop.set()  # main ended by itself (it failed): the thread ends too

            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(run_main)
                await stop.wait()
                with trio.move_on_after(CLOSE_GRACE_S):
                    await returned.wait()
                nursery.cancel_scope.cancel()

        def thread() -> None:
            failure: BaseException | None = None
            try:
                trio.run(runner)
            except BaseException as exc:  # carried to the asyncio side: the thread has no one else
                failure = exc
            finally:
                self._token = None
            end = failure or RuntimeError("the libp2p thread ended before it was ready")
            self.loop.call_soon_threadsafe(settle, started, end)
            self.loop.call_soon_threadsafe(settle, self._ended, failure)

        self._thread = threading.Thread(target=thread, name="libp2p-trio", daemon=True)
        self._thread.start()
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await started
        except BaseException:
            await self.stop()
            raise

    @property
    def ended(self) -> asyncio.Future[None]:
        """Done when the trio loop has ended: with the exception that ended it, or None after stop()."""
        return self._ended

    async def stop(self) -> None:
        token, stop = self._token, self._stop
        if token is not None and stop is not None:
            try:
                token.run_sync_soon(stop.set)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_S)

    async def call(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From asyncio: run `afn(*args)` as a trio task and await its result. Cancelling the
        awaiting asyncio task cancels the trio task."""
        token, nursery = self._token, self._nursery
        if token is None or nursery is None:
            raise ConnectionError("the libp2p host is not running")
        fut: asyncio.Future[T] = self.loop.create_future()
        scope = trio.CancelScope()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        async def task() -> None:
            outcome: tuple[bool, Any] = (False, ConnectionError("the libp2p host stopped"))
            try:
                with scope:
                    outcome = (True, await afn(*args))
            except Exception as exc:  # carried to the caller
                outcome = (False, exc)
            finally:  # also when the host's nursery is cancelled at stop
                with contextlib.suppress(RuntimeError):  # the asyncio loop is closed: nobody waits
                    self.loop.call_soon_threadsafe(settle, *outcome)

        try:
            token.run_sync_soon(nursery.start_soon, task)
        except trio.RunFinishedError:
            raise ConnectionError("the libp2p host is not running") from None
        try:
            return await fut
        except asyncio.CancelledError:
            try:
                token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass
            raise

    async def to_asyncio(self, coro: Coroutine[Any, Any, T]) -> T:
        """From trio: run `coro` on the asyncio loop and wait for its result without a thread.
        A trio cancel (the stream went away, the host stops) cancels the coroutine."""
        cfut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: concurrent.futures.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        cfut.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            cfut.cancel()
            raise
        return cfut.result()
