"""A model's files in other formats (STL, PLY, USDZ): converted once per model and format.

The first download in a format converts the stored mesh (providers/conversion.py) in a
thread, bounded in time and in how many run at once, stores the result beside the
model's files and records it in the model's `files`; later downloads reuse it.

Once, even when downloads race: in this process, concurrent first downloads of a
model in a format share one conversion; across processes, each may convert, but the
file's key is fixed (`<model folder>/model.<format>`) and the conversion is
deterministic, so both write the same bytes to the same key, and the record is added
under the model's row lock only if it is not there yet: one file, one record.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from app.errors import BadUserInput
from app.models import repository
from app.models.changes import PublicChange
from app.models.errors import ModelNotFound
from app.tables import Model, utcnow
from app.unit import Unit, delete_files
from providers.conversion import TARGETS, ConversionFailed, convert
from providers.storage import Storage, new_key

CONVERSION_TIMEOUT = 60.0
CONCURRENT_CONVERSIONS = 2


def converted_file(model: Any, target: str) -> dict[str, Any] | None:
    """The record of the model's file converted to `target`, if it was."""
    name = TARGETS[target].name
    for file in model.files or []:
        if file.get("converted") and file["name"] == name:
            return dict(file)
    return None


def own_files(model: Any) -> list[dict[str, Any]]:
    """The model's files as recorded; a row from before `files` existed has its main
    file only."""
    return list(model.files or []) or [
        {
            "name": f"model.{model.format}",
            "key": model.file_key,
            "content_type": model.content_type,
            "size": model.file_size,
        }
    ]


def converted_key(model: Any, target: str) -> str:
    """Beside the model's files: its folder is random (`new_key`) and its own files are
    only OBJ, MTL and image parts, so `model.<target>` names nothing else there."""
    folder = posixpath.dirname(model.file_key) or new_key("models")
    return f"{folder}/{TARGETS[target].name}"


class Conversions:
    """This process's conversions in progress, and the bound on how many run at once
    (each holds a mesh in memory and a core busy)."""

    def __init__(
        self,
        *,
        concurrency: int = CONCURRENT_CONVERSIONS,
        timeout: float = CONVERSION_TIMEOUT,
    ) -> None:
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}

    async def file(
        self,
        model: Model,
        target: str,
        *,
        storage: Storage,
        unit: Callable[[], AbstractAsyncContextManager[Unit]],
    ) -> dict[str, Any]:
        """The record of `model`'s file in `target`, converted and stored first if need
        be. BAD_USER_INPUT when the model cannot be converted; NOT_FOUND when it was
        deleted meanwhile."""
        if (done := converted_file(model, target)) is not None:
            return done
        key = (model.id, target)
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._convert(model, target, storage, unit))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        # Shielded: a client that hangs up does not cancel the others' conversion.
        return await asyncio.shield(running)

    def _ended(self, thread: asyncio.Future[bytes]) -> None:
        self._slots.release()
        if not thread.cancelled():
            thread.exception()  # retrieved: a late failure nobody waits for is no error

    async def _convert(
        self,
        model: Model,
        target: str,
        storage: Storage,
        unit: Callable[[], AbstractAsyncContextManager[Unit]],
    ) -> dict[str, Any]:
        source = await storage.get(model.file_key)
        await self._slots.acquire()
        # A thread cannot be stopped: its slot is freed when it ends, not when the wait
        # for it gives up, so no more than `concurrency` ever run.
        thread = asyncio.ensure_future(asyncio.to_thread(convert, source, model.format, target))
        thread.add_done_callback(self._ended)
        try:
            data = await asyncio.wait_for(asyncio.shield(thread), self.timeout)
        except TimeoutError:
            raise _not_convertible(target, "it took too long") from None
        except ConversionFailed as error:
            raise _not_convertible(target, str(error)) from None
        spec, key = TARGETS[target], converted_key(model, target)
        entry: dict[str, Any] = {
            "name": spec.name,
            "key": key,
            "content_type": spec.content_type,
            "size": len(data),
            "converted": True,
        }
        await storage.put(key, data, spec.content_type)
        async with unit() as work:
            recorded = await record(work, model.id, target, entry)
        if recorded is None:  # deleted while converting: the file just stored goes too
            await delete_files(storage, [key])
            raise ModelNotFound()
        return recorded


async def record(
    unit: Unit, model_id: str, target: str, entry: dict[str, Any]
) -> dict[str, Any] | None:
    """Adds `entry` to the model's files, under its row lock, unless a conversion to
    `target` is recorded already (then that one); None if the model is gone."""
    model = await repository.get(unit.session, model_id, for_update=True)
    if model is None:
        return None
    if (done := converted_file(model, target)) is not None:
        return done
    model.files = [*own_files(model), entry]  # a new list: the JSON column sees a change
    model.updated_at = utcnow()
    if model.visibility == "PUBLIC":  # cached answers list its files
        unit.public_changes.append(PublicChange(model_ids=(model.id,)))
    return entry


def _not_convertible(target: str, why: str) -> BadUserInput:
    return BadUserInput(
        f"this model cannot be downloaded as {target.upper()}: {why}", field="format"
    )
