"""Group commit: requests that arrive together share one transaction and one commit.

One writer task per process takes whatever has been submitted, up to a cap, and runs it
as one batch; while that batch commits, the next requests queue, so the batches grow
with the load and nothing waits when the queue is empty. A durable commit (SQLite's
``synchronous=FULL`` fsync, PostgreSQL's synchronous commit) is then paid once per batch
instead of once per request.

The batch function answers each item on its own (a result or a ``ServiceError``), so
one bad item never fails its neighbours. If the database fails the whole batch, each
item is run again alone, so that only the item that caused it fails; but when the
database is out of service (``Unavailable``: stopped, unreachable, full) every item gets
that error at once, since running them one by one would only fail each again, slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from imserver.service.errors import ServiceError
from imserver.service.figures import SIZES, Tally
from imserver.store.db import Conn, Database, Unavailable

log = logging.getLogger(__name__)
# Off unless asked for (``imserver --trace imserver.batches``): one line as a batch's
# transaction begins and one when it has committed, so that a fault test can tell
# whether a kill landed inside a commit.
trace = logging.getLogger("imserver.batches")

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

# Answers each item of a batch, in order: its result or its refusal.
BatchFunction = Callable[[Conn, Sequence[I]], Awaitable[list[R | ServiceError]]]


class GroupCommit(Generic[I, R]):
    """Runs submitted items in batches, one transaction per batch, one batch at a time."""

    def __init__(
        self,
        db: Database,
        run: BatchFunction[I, R],
        *,
        name: str,
        cap: int,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.run = run
        self.name = name
        self.cap = cap
        self.after_commit = after_commit
        self._queue: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        # Figures for benchmarks, tests and the metrics: batches committed, items in them,
        # and how many items each batch held.
        self.batches = 0
        self.items = 0
        self.sizes = Tally(SIZES)

    async def submit(self, item: I) -> R:
        """Queue an item and wait for its answer (raises the item's ``ServiceError``).

        A caller that is cancelled before its item was taken leaves it out; once taken,
        the item commits or not with its batch, whole either way.
        """
        if self._closed:
            raise RuntimeError("the writer is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="group-commit")
        return await future

    async def _work(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self._closed:
                batch: list[tuple[I, asyncio.Future[R]]] = []
                while self._queue and len(batch) < self.cap:
                    entry = self._queue.popleft()
                    if not entry[1].done():  # its caller gave up before we took it
                        batch.append(entry)
                if batch:
                    await self._commit(batch)

    async def _commit(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        tracing = trace.isEnabledFor(logging.DEBUG)
        if tracing:
            trace.debug("batch %s of %d begins", self.name, len(batch))
        try:
            outcomes = await self.db.transaction(lambda conn: self.run(conn, items))
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Unavailable as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) > 1:
                log.warning("a batch of %d failed (%s); each item runs alone", len(batch), exc)
                for entry in batch:
                    await self._commit([entry])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        if tracing:
            trace.debug("batch %s committed", self.name)
        self.batches += 1
        self.items += len(batch)
        self.sizes.observe(len(batch))
        if self.after_commit is not None:
            self.after_commit()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, ServiceError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the writer: the batch in flight finishes (committed and answered, so a stop
        loses no work that was under way), what still waits in the queue is refused."""
        self._closed = True
        self._wake.set()
        if self._worker is not None and not self._worker.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
            except TimeoutError:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(RuntimeError("the writer is closed"))
