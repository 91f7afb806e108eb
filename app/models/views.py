"""View counts of public models, written in batches rather than one UPDATE per view.

A view is a `viewModel` call (a page showing a public model calls it once): queries are
answered from the response cache, so counting inside them would miss most views.
Views add up in this process's memory and are written every `every` seconds, for all
the models viewed meanwhile, in one statement per `batch` models
(`repository.add_views`), then announced as a change of those models and of the
MOST_VIEWED order, so cached answers do not keep old counts.

What can be lost: the views of the last `every` seconds when the process dies without
shutting down (a clean shutdown writes them). A failed write keeps them for the next
one; while the database stays down, at most `max_pending` models' views are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from itertools import islice

from app.db import Database
from app.models import repository
from app.models.changes import PublicChange, PublicChanges

log = logging.getLogger(__name__)


class ViewCounter:
    def __init__(
        self,
        db: Database,
        changes: PublicChanges,
        *,
        every: float,
        batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self.db = db
        self.changes = changes
        self.every = every
        self.batch = batch
        self.max_pending = max_pending
        self._pending: Counter[str] = Counter()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._writing = asyncio.Lock()  # a flush is never cancelled halfway (see aclose)

    def add(self, model_id: str) -> None:
        """Counts one view of the model (public: the caller checked), written later."""
        if model_id not in self._pending and len(self._pending) >= self.max_pending:
            log.warning("too many models' views wait for the database; a view is dropped")
            return
        self._pending[model_id] += 1
        if not self._closed and (self._flusher is None or self._flusher.done()):
            # Started by the first view, on the loop that serves (not at import).
            self._flusher = asyncio.create_task(self._flush_forever(), name="view-counts")

    @property
    def pending(self) -> int:
        """Views counted and not yet written."""
        return sum(self._pending.values())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.flush()

    async def flush(self) -> int:
        """Writes the views counted so far; how many models it wrote. A failure keeps
        them for the next flush."""
        async with self._writing:
            return await self._write()

    async def _write(self) -> int:
        pending, self._pending = self._pending, Counter()
        if not pending:
            return 0
        try:
            async with self.db.write() as session:
                items = iter(pending.items())
                while chunk := dict(islice(items, self.batch)):
                    await repository.add_views(session, chunk)
        except Exception:
            log.warning("could not write %d models' views; kept", len(pending), exc_info=True)
            self._pending.update(pending)
            return 0
        try:
            await self.changes.announce(
                PublicChange(model_ids=tuple(pending), orders=("MOST_VIEWED",))
            )
        except Exception:  # written all the same; the cache's TTL bounds the staleness
            log.warning("could not announce new view counts", exc_info=True)
        return len(pending)

    async def aclose(self) -> None:
        """Stops the flusher and writes what is left (at shutdown)."""
        self._closed = True
        if self._flusher is not None:
            async with self._writing:  # between flushes: sleeping, or waiting for this
                self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
