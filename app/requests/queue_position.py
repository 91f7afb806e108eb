"""Where a waiting job stands in line, and when it should start and finish.

The line is the database's, not the broker's: waiting jobs (PENDING, or RETRYING)
that are due (`queued_at` has come) ordered by (`queue_rank`, `queued_at`, `id`) -
high before default before low, then first come first served. That is the order the
broker is asked to run them in: each job's message goes to its request's priority queue
when the job joins the line (or, delayed, when its retry is due), and workers take the
high queue before default before low, each first in, first out.

Estimates come from measured stage durations (started_at -> finished_at) of recently
completed jobs, per (kind, provider), and the parallelism observed now:

    start      = now + (remaining work of running jobs + work of the jobs ahead) / P
    completion = start + the job's own median duration

where the work of a job is the median (p50) duration of its kind, and P is the
number of jobs running now, or the average number that ran over the last minute
(busy time / 60 s), whichever is larger, and at least 1. Before any job of a kind
has completed, estimates that need it are null.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, not_, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.requests.jobs import DUE
from app.tables import GenerationJob, GenerationRequest, utcnow

WAITING = ("PENDING", "RETRYING")
# How many recently completed jobs the durations are measured on.
SAMPLE = 500
# The window the observed parallelism is averaged over.
BUSY_WINDOW = timedelta(seconds=60)

# The table's columns (typed loosely: select() of many model attributes defeats mypy).
_J: Any = GenerationJob.__table__.c  # type: ignore[attr-defined]
_R: Any = GenerationRequest.__table__.c  # type: ignore[attr-defined]
_TABLE: Any = GenerationJob.__table__  # type: ignore[attr-defined]
_RTABLE: Any = GenerationRequest.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Spot:
    """A waiting job's place: the sort key of the line."""

    job_id: str
    request_id: str
    kind: str
    rank: int
    queued_at: datetime


def _waiting(now: datetime) -> tuple[Any, ...]:
    return (_J.status.in_(WAITING), _J.queued_at <= now)


def _ahead_of(spot: Spot) -> Any:
    """Jobs before `spot` in the line: three ranges of the line's index."""
    rank, at = _J.queue_rank, _J.queued_at
    return or_(
        rank < spot.rank,
        and_(rank == spot.rank, at < spot.queued_at),
        and_(rank == spot.rank, at == spot.queued_at, _J.id < spot.job_id),
    )


_LINE_INDEX = "ix_generation_jobs_status_queue_rank_queued_at_id_kind"


def _on_line_index(query: Any) -> Any:
    """MariaDB's optimizer merges the status/heartbeat index into the line's ranges (a
    sort-union, 7x slower at 10,000 waiting jobs): name the index."""
    for dialect in ("mysql", "mariadb"):
        query = query.with_hint(_TABLE, f"FORCE INDEX ({_LINE_INDEX})", dialect)
    return query


def _order() -> tuple[Any, ...]:
    return (_J.queue_rank, _J.queued_at, _J.id)


async def waiting_spots(
    session: AsyncSession, request_ids: Sequence[str], now: datetime
) -> dict[str, list[Spot]]:
    """The due waiting jobs of each request, in line order."""
    if not request_ids:
        return {}
    query = (
        select(_J.id, _J.request_id, _J.kind, _J.queue_rank, _J.queued_at)
        .where(_J.request_id.in_(request_ids), *_waiting(now))
        .order_by(*_order())
    )
    found: dict[str, list[Spot]] = defaultdict(list)
    for row in await session.execute(query):
        found[row.request_id].append(Spot(*row))
    return dict(found)


async def ahead_by_kind(
    session: AsyncSession,
    spots: Sequence[Spot],
    now: datetime,
    since: Sequence[Spot | None] | None = None,
) -> list[Counter[str]]:
    """For each spot, how many due waiting jobs of each kind are ahead of it (from
    `since[i]` on, when given: a short range between two jobs of one request). One
    statement, a range count over the line's index per spot (sums, not a GROUP BY,
    which would sort the range)."""
    if not spots:
        return []
    kinds = list(DUE)
    sums = [func.sum(case((_J.kind == kind, 1), else_=0)) for kind in kinds]
    parts = []
    for index, spot in enumerate(spots):
        start = since[index] if since is not None else None
        where = [*_waiting(now), _ahead_of(spot)]
        if start is not None:
            where.append(not_(_ahead_of(start)))
        parts.append(_on_line_index(select(literal(index).label("spot"), *sums).where(*where)))
    statement: Any = parts[0] if len(parts) == 1 else union_all(*parts)
    counts: list[Counter[str]] = [Counter() for _ in spots]
    rows: list[Any] = list((await session.execute(statement)).all())
    for row in rows:
        numbers = tuple(row)[1:]
        counts[int(row[0])] = Counter(
            {kind: int(n) for kind, n in zip(kinds, numbers, strict=True) if n}
        )
    return counts


async def position_of(session: AsyncSession, spot: Spot, now: datetime | None = None) -> int:
    """How many due waiting jobs are ahead of `spot`: one range count."""
    query = _on_line_index(select(func.count()).where(*_waiting(now or utcnow()), _ahead_of(spot)))
    return int((await session.execute(query)).scalar_one())


async def line(session: AsyncSession, now: datetime) -> list[tuple[str, str]]:
    """The whole line, in order: (request id, kind) of every due waiting job. Two
    columns: at 10,000 rows, decoding them is most of the ticker's pass."""
    query = select(_J.request_id, _J.kind).where(*_waiting(now)).order_by(*_order())
    return [(request_id, kind) for request_id, kind in await session.execute(query)]


@dataclass(frozen=True, slots=True)
class Running:
    kind: str
    started_at: datetime


@dataclass
class Durations:
    """Median stage durations (seconds) per (kind, provider) and per kind, the provider
    each kind ran on last, and the parallelism observed."""

    by_provider: dict[tuple[str, str], float] = field(default_factory=dict)
    by_kind: dict[str, float] = field(default_factory=dict)
    latest_provider: dict[str, str] = field(default_factory=dict)
    running: list[Running] = field(default_factory=list)
    parallelism: float = 1.0

    def of(self, kind: str) -> float | None:
        """A waiting job has no provider yet: it is expected on the one its kind ran on
        last (the head of its failover chain, unless that one is failing)."""
        provider = self.latest_provider.get(kind)
        if provider is not None and (kind, provider) in self.by_provider:
            return self.by_provider[(kind, provider)]
        return self.by_kind.get(kind)

    def work(self, counts: Counter[str]) -> float | None:
        total = 0.0
        for kind, n in counts.items():
            each = self.of(kind)
            if each is None:
                return None
            total += each * n
        return total

    def backlog(self, now: datetime) -> float | None:
        """What the running jobs still have to do, by their medians."""
        total = 0.0
        for job in self.running:
            each = self.of(job.kind)
            if each is None:
                return None
            total += max(0.0, each - _seconds(job.started_at, now))
        return total


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


async def durations(session: AsyncSession, now: datetime) -> Durations:
    """Measures the recent stage durations (the last SAMPLE completed jobs, newest
    first over the status/heartbeat index: a finished job's heartbeat is its end) and
    the jobs running now (not 3D jobs waiting at their vendor: those hold no worker)."""
    done = await session.execute(
        select(_J.kind, _J.provider, _J.started_at, _J.finished_at)
        .where(_J.status == "COMPLETED", _J.started_at.is_not(None))
        .order_by(_J.heartbeat_at.desc())
        .limit(SAMPLE)
    )
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    kinds: dict[str, list[float]] = defaultdict(list)
    result = Durations()
    busy = 0.0
    for kind, provider, started, finished in done:
        if finished is None:
            continue
        took = _seconds(started, finished)
        samples[(kind, provider or "")].append(took)
        kinds[kind].append(took)
        result.latest_provider.setdefault(kind, provider or "")
        if finished > now - BUSY_WINDOW:
            busy += _seconds(max(started, now - BUSY_WINDOW), finished)
    result.by_provider = {key: statistics.median(v) for key, v in samples.items()}
    result.by_kind = {kind: statistics.median(v) for kind, v in kinds.items()}
    running = await session.execute(
        select(_J.kind, _J.started_at).where(
            _J.status == "RUNNING",
            _J.vendor_job_id.is_(None),
            _J.started_at.is_not(None),
        )
    )
    result.running = [Running(kind, started) for kind, started in running]
    observed = busy / BUSY_WINDOW.total_seconds()
    result.parallelism = max(1.0, float(len(result.running)), observed)
    return result


# Durations measured lately, per engine: the GraphQL fields reuse them for a few seconds.
_RECENT: weakref.WeakKeyDictionary[Any, tuple[float, Durations]] = weakref.WeakKeyDictionary()
RECENT_SECONDS = 5.0


async def recent_durations(session: AsyncSession) -> Durations:
    """`durations`, measured at most every RECENT_SECONDS per database."""
    engine = session.get_bind()
    found = _RECENT.get(engine)
    if found is not None and time.monotonic() - found[0] < RECENT_SECONDS:
        return found[1]
    measured = await durations(session, utcnow())
    _RECENT[engine] = (time.monotonic(), measured)
    return measured


@dataclass(frozen=True, slots=True)
class QueueEstimate:
    """A request's place in line: None fields when it does not wait (or, for the
    times, when nothing has been measured yet)."""

    position: int | None = None
    start: datetime | None = None
    completion: datetime | None = None

    @property
    def waiting(self) -> bool:
        return self.position is not None


NOT_WAITING = QueueEstimate()


def estimate(
    d: Durations,
    now: datetime,
    position: int,
    first_ahead: Counter[str],
    last_ahead: Counter[str],
    last_kind: str,
) -> tuple[datetime | None, datetime | None]:
    """(start, completion) of a request whose first waiting job has `first_ahead` jobs
    ahead and whose last has `last_ahead` (the request's own earlier jobs included)."""
    backlog = d.backlog(now)
    first, last, own = d.work(first_ahead), d.work(last_ahead), d.of(last_kind)
    if backlog is None or first is None:
        return None, None
    start = now + timedelta(seconds=(backlog + first) / d.parallelism)
    if last is None or own is None:
        return start, None
    return start, now + timedelta(seconds=(backlog + last) / d.parallelism + own)


async def estimates_of(
    session: AsyncSession,
    request_ids: Sequence[str],
    now: datetime | None = None,
    recent: bool = False,
) -> dict[str, QueueEstimate]:
    """Each request's place in line: a query for their waiting jobs and, when some
    wait, one for the counts ahead of each one's first and last job and one for the
    measured durations."""
    now = now or utcnow()
    spots = await waiting_spots(session, request_ids, now)
    if not spots:
        return {}
    # Ahead of each request's first job, and from it to its last (usually next to it).
    requests = list(spots)
    firsts = [spots[r][0] for r in requests]
    lasts = [spots[r][-1] for r in requests]
    since: list[Spot | None] = [None] * len(firsts)
    counts = await ahead_by_kind(session, firsts + lasts, now, since + list(firsts))
    d = await (recent_durations(session) if recent else durations(session, now))
    found = {}
    for index, request_id in enumerate(requests):
        first_ahead = counts[index]
        last_ahead = first_ahead + counts[len(requests) + index]
        position = sum(first_ahead.values())
        start, completion = estimate(d, now, position, first_ahead, last_ahead, lasts[index].kind)
        found[request_id] = QueueEstimate(position, start, completion)
    return found


async def job_estimates(
    session: AsyncSession,
    jobs: Sequence[GenerationJob],
    now: datetime | None = None,
    recent: bool = False,
) -> dict[str, QueueEstimate]:
    """Each due waiting job's own place in line (jobs not in line are left out)."""
    now = now or utcnow()
    spots = [
        Spot(job.id, job.request_id, job.kind, job.queue_rank, job.queued_at)
        for job in jobs
        if job.status in WAITING and job.queued_at <= now
    ]
    if not spots:
        return {}
    counts = await ahead_by_kind(session, spots, now)
    d = await (recent_durations(session) if recent else durations(session, now))
    found = {}
    for spot, ahead in zip(spots, counts, strict=True):
        start, completion = estimate(d, now, 0, ahead, ahead, spot.kind)
        found[spot.job_id] = QueueEstimate(sum(ahead.values()), start, completion)
    return found


def estimates_from_line(
    order: Sequence[tuple[str, str]], d: Durations, now: datetime, wanted: set[str]
) -> dict[str, QueueEstimate]:
    """The same figures as `estimates_of`, for the `wanted` requests, from one pass over
    the whole line (what the ticker reads once a second)."""
    ahead: Counter[str] = Counter()
    firsts: dict[str, tuple[int, Counter[str]]] = {}
    lasts: dict[str, tuple[Counter[str], str]] = {}
    for index, (request_id, kind) in enumerate(order):
        if request_id in wanted:
            if request_id not in firsts:
                firsts[request_id] = (index, Counter(ahead))
            lasts[request_id] = (Counter(ahead), kind)
        ahead[kind] += 1
    found = {}
    for request_id, (position, first_ahead) in firsts.items():
        last_ahead, last_kind = lasts[request_id]
        start, completion = estimate(d, now, position, first_ahead, last_ahead, last_kind)
        found[request_id] = QueueEstimate(position, start, completion)
    return found
