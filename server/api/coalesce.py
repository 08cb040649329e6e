"""Writing SSE frames so that those ready at the same moment leave in one write.

An upstream's network read often holds several events (an engine that produced tokens faster
than they were read; a front door that turns one chunk into several events); each used to go out
as its own ``http.response.body`` message, through every ``send`` wrapper and one socket write.
``relay`` writes the frames its source produces *without waiting* as one piece, and a frame that
had to wait for the network as soon as the next one would wait: no frame is held back for another,
so time to first token and pacing are what they were.

How "without waiting" is told: ``__anext__()`` is stepped once by hand. A source with a frame
ready finishes in that step (``StopIteration``); one that must wait yields the future it waits on,
and ``_Rest`` hands that same future to the task, as ``await`` would have, once what was ready
has been written. Nothing is read ahead and no other task runs the source, so its backpressure,
errors and cancellation are those of a plain ``async for``: when the write fails (the client
left) while the source waits, the source is cancelled where it waits, as cancelling the task
would have done, so its generators end and release the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

Step = Coroutine[Any, Any, bytes]


class _Rest:
    """The rest of a step suspended on ``pending``: awaiting this finishes it."""

    __slots__ = ("pending", "step")

    def __init__(self, step: Step, pending: Any) -> None:
        self.step = step
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, bytes]:
        step, pending = self.step, self.pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # a cancellation thrown into the task goes on in
                try:
                    pending = step.throw(exc)
                except StopIteration as done:
                    return cast(bytes, done.value)
            else:
                try:
                    pending = step.send(sent)
                except StopIteration as done:
                    return cast(bytes, done.value)


async def _cancel(step: Step, pending: Any) -> None:
    """End a step suspended on ``pending`` as ``Task.cancel`` would have."""
    if isinstance(pending, asyncio.Future):
        pending.cancel()
    try:
        pending = step.throw(asyncio.CancelledError())
    except BaseException:  # ended (by the cancellation, or by what it raised instead)
        return
    with contextlib.suppress(BaseException):  # it awaits in its cleanup: let that finish
        await _Rest(step, pending)


Write = Callable[[bytes], Awaitable[None]]


async def relay(frames: AsyncIterator[bytes], write: Write, last: Write | None = None) -> None:
    """Write every frame of ``frames``; the frames that were ready together in one write.

    ``last``, when given, writes the final piece instead of ``write`` (and is called, with what
    is left, possibly nothing, whenever ``frames`` ends without an error): the stream's end can
    then leave in the same write as its last frames."""
    ready: list[bytes] = []
    while True:
        step = cast(Step, frames.__anext__())
        try:
            pending = step.send(None)
        except StopIteration as done:
            ready.append(done.value)  # there without waiting: goes with the others
            continue
        except StopAsyncIteration:
            if last is not None:
                await last(b"".join(ready))
            elif ready:
                await write(b"".join(ready))
            return
        except BaseException:  # an error in the stream: what came before it goes out first
            if ready:
                await write(b"".join(ready))
            raise
        if ready:
            # The source waits for the network now: what it had goes out meanwhile.
            joined, ready = b"".join(ready), []
            try:
                await write(joined)
            except BaseException:
                await _cancel(step, pending)
                raise
        try:
            ready.append(await _Rest(step, pending))
        except StopAsyncIteration:
            if last is not None:
                await last(b"")
            return
