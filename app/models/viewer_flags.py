"""The response cache's memory of each viewer's own likes and favorites, and the guard
that keeps a read which raced a change from being kept.

A signed-in viewer's cached answer needs their flags (`likedByMe`, `favoritedByMe`) of
the models it shows. They are read once, in one indexed query of the models not known
yet, and kept per viewer until that viewer likes, unlikes, favorites or unfavorites
anything: the change (`PublicChange.viewer_ids`, app/models/changes.py) drops that
viewer's flags in every process, as changes drop answers. A read that overlaps a change
of its viewer is used once and not kept. Each viewer's flags are their own: kept under
their user id, read with their user id, never shared.

The bus brings a change to the other processes within a millisecond, but not before the
viewer's next request can reach one of them. So that a viewer never sees a flag of
theirs older than their own like, the flags kept are also stamped with the viewer's
flags version (`FlagVersions`, in Redis when processes share a bus), bumped after each
such change commits and before its answer goes: a hit whose viewer's version moved
reads their flags again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from app.models.repository import InteractionRow

log = logging.getLogger(__name__)

# (viewer, model) flags one process keeps in all, about 150 bytes each; one viewer's
# may not take more than a tenth of them.
MAX_PAIRS = 100_000

Kinds = frozenset[str]
Read = Callable[[Sequence[str]], Awaitable[Iterable[InteractionRow]]]
_KINDS: dict[tuple[bool, bool], Kinds] = {
    (liked, favorited): frozenset(
        kind for kind, on in (("LIKE", liked), ("FAVORITE", favorited)) if on
    )
    for liked in (False, True)
    for favorited in (False, True)
}


def viewer_tag(viewer_id: str) -> str:
    """The tag of a change to the viewer's own likes and favorites."""
    return f"viewer:{viewer_id}"


class Guard:
    """Keeps what was read from being stored when a change it shows came while it was
    read (read starts, a change commits and is announced, the stale read would be
    stored). Changes are tagged (`model:<id>`, `viewer:<id>`, ...; None: everything)."""

    def __init__(self, remembered: int = 1024) -> None:
        self._now = 0
        self._recent: deque[tuple[int, set[str] | None]] = deque(maxlen=remembered)

    def now(self) -> int:
        return self._now

    def changed(self, tags: set[str] | None) -> None:
        self._now += 1
        self._recent.append((self._now, tags))

    def unchanged(self, since: int, tags: frozenset[str]) -> bool:
        if self._now == since:
            return True
        if not self._recent or self._recent[0][0] > since + 1:
            return False  # forgotten what changed meanwhile: assume the worst
        return not any(
            changed is None or not tags.isdisjoint(changed)
            for moment, changed in self._recent
            if moment > since
        )


class FlagVersions:
    """Each viewer's flags version, in Redis (`<namespace>:flags:<user id>`), shared by
    every API process: `bump` after a like or favorite of theirs commits, `get` before a
    hit uses the flags kept. A version unused for a day is forgotten (read as 0 again:
    whatever differs from what was kept means reading again)."""

    def __init__(self, client: Any, *, prefix: str, keep_seconds: int = 86_400) -> None:
        self._client = client
        self._prefix = f"{prefix}:flags:"
        self._keep = keep_seconds

    async def bump(self, viewer_ids: Iterable[str]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for viewer_id in viewer_ids:
                    pipe.incr(self._prefix + viewer_id)
                    pipe.expire(self._prefix + viewer_id, self._keep)
                await pipe.execute()
        except Exception as exc:  # Redis down: so is the bus, and no cache answers
            log.warning("could not bump a viewer's flags version: %s", type(exc).__name__)

    async def get(self, viewer_id: str) -> int | None:
        """The viewer's version, or None when Redis cannot say."""
        try:
            value = await self._client.get(self._prefix + viewer_id)
        except Exception:
            return None
        return int(value or 0)


class ViewerFlags:
    """Per viewer (their user id), the kinds (LIKE, FAVORITE) they gave each model asked
    about so far, and the flags version they were read at; the least recently used
    viewers go first past `max_pairs`."""

    def __init__(self, guard: Guard, *, max_pairs: int = MAX_PAIRS) -> None:
        self._guard = guard
        self._max_pairs = max_pairs
        self._max_own = max(1, max_pairs // 10)
        self._known: OrderedDict[str, dict[str, Kinds]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._pairs = 0

    def __len__(self) -> int:
        """How many (viewer, model) flags are kept."""
        return self._pairs

    async def of(
        self, viewer_id: str, model_ids: Sequence[str], read: Read, *, version: int | None = 0
    ) -> Mapping[str, Kinds]:
        """The viewer's kinds of each of `model_ids`; `read` reads those not known (the
        viewer's interactions among the ids it is given) in one query. `version`: the
        viewer's flags version now (see `FlagVersions`); flags kept at another are read
        again, and with None (unknown) nothing is kept."""
        if self._versions.get(viewer_id, version) != version or version is None:
            self.drop((viewer_id,))
        known = self._known.get(viewer_id)
        if known is not None:
            self._known.move_to_end(viewer_id)
            missing = [model for model in model_ids if model not in known]
            if not missing:
                return known
        else:
            missing = list(model_ids)
        since = self._guard.now()
        found: dict[str, tuple[bool, bool]] = dict.fromkeys(missing, (False, False))
        for row in await read(missing):
            liked, favorited = found[row.model_id]
            found[row.model_id] = (liked or row.type == "LIKE", favorited or row.type == "FAVORITE")
        fresh = {model: _KINDS[flags] for model, flags in found.items()}
        if version is not None and self._guard.unchanged(since, frozenset({viewer_tag(viewer_id)})):
            return self._keep(viewer_id, fresh, version)
        return {**(known or {}), **fresh}  # raced a change of theirs: used once, not kept

    def _keep(self, viewer_id: str, fresh: dict[str, Kinds], version: int) -> Mapping[str, Kinds]:
        known = self._known.get(viewer_id)
        if known is None or len(known) + len(fresh) > self._max_own:
            self.drop((viewer_id,))
            known = self._known[viewer_id] = {}
        elif self._versions[viewer_id] != version:  # read again meanwhile, at another
            return {**known, **fresh}
        self._versions[viewer_id] = version
        self._known.move_to_end(viewer_id)
        before = len(known)  # another read of theirs may have kept some meanwhile
        known.update(fresh)
        self._pairs += len(known) - before
        while self._pairs > self._max_pairs and len(self._known) > 1:
            self.drop((next(iter(self._known)),))
        return known

    def drop(self, viewer_ids: Iterable[str]) -> None:
        for viewer_id in viewer_ids:
            known = self._known.pop(viewer_id, None)
            self._versions.pop(viewer_id, None)
            if known is not None:
                self._pairs -= len(known)

    def clear(self) -> None:
        self._known.clear()
        self._versions.clear()
        self._pairs = 0
