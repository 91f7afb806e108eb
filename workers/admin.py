"""`lumi queue`: what operators need to see and repair the job queues.

The database is the source of truth, so every command works the same with the Redis
broker and embedded: with the embedded broker (which lives inside the API process)
jobs made due here are sent by the API's sweeper within `LUMI_SWEEP_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.deps import Deps, build_bus, build_deps
from app.errors import LumiError
from app.graphql.relay import global_id
from app.migrate import upgrade_async
from app.queue import QUEUES, DramatiqQueue, JobQueue, StageMessage, build_broker
from app.requests import jobs, repository, service
from app.tables import DeadLetter
from workers.claims import lock_job


class LaterQueue:
    """Stands for the embedded broker, which only the API process can reach: messages
    are dropped here and the API's sweeper sends them, as for any lost message."""

    def send(self, message: StageMessage) -> None:
        return None

    def outstanding_job_ids(self) -> set[str]:
        return set()


def admin_queue(settings: Settings) -> JobQueue:
    if settings.broker == "redis":
        return DramatiqQueue(build_broker(settings))
    return LaterQueue()


def admin_deps(settings: Settings) -> Deps:
    return build_deps(settings, bus=build_bus(settings), queue=admin_queue(settings))


@dataclass(frozen=True, slots=True)
class QueueStatus:
    broker: dict[str, int]  # messages waiting per broker queue (delayed ones apart)
    jobs: dict[tuple[str, str, str], int]  # per (queue, kind, status)
    dead_letters: int


async def status(deps: Deps) -> QueueStatus:
    depths: dict[str, int] = {}
    if isinstance(deps.queue, DramatiqQueue):
        depths = await asyncio.to_thread(deps.queue.depths)
    async with deps.db.read() as session:
        counts = await repository.jobs_by_queue(session)
        dead = await repository.dead_letters(session, limit=100_000)
    return QueueStatus(depths, counts, len(dead))


async def dead(deps: Deps, limit: int = 100) -> list[DeadLetter]:
    async with deps.db.read() as session:
        return await repository.dead_letters(session, limit)


async def requeue(deps: Deps, letter_id: str | None) -> list[tuple[DeadLetter, str]]:
    """Runs dead letters again (one, or all when `letter_id` is None): their request
    resumes from the failed step, as `retryRequest` would, and pays again for it."""
    letters = await dead(deps, limit=100_000)
    if letter_id is not None:
        letters = [letter for letter in letters if letter.id == letter_id]
    policy = service.Policy.from_settings(deps.settings)
    outcomes: list[tuple[DeadLetter, str]] = []
    done: set[str] = set()
    for letter in letters:
        if letter.request_id in done:
            outcomes.append((letter, "requeued with its request"))
            continue
        try:
            async with deps.unit() as unit:
                await service.retry_request(unit, None, letter.request_id, policy)
        except LumiError as exc:
            outcomes.append((letter, f"skipped: {exc.message}"))
            continue
        done.add(letter.request_id)
        outcomes.append((letter, "requeued"))
    return outcomes


async def purge_dead(deps: Deps) -> int:
    async with deps.db.write() as session:
        return await repository.purge_dead_letters(session)


async def purge_queue(deps: Deps, queue: str) -> tuple[int, int]:
    """Drops the broker messages of `queue` and fails, for good, the jobs waiting there
    (their requests fail and are refunded; the jobs become dead letters and may be
    requeued). Returns (messages dropped, jobs failed)."""
    if queue not in QUEUES:
        raise ValueError(f"no queue named {queue!r}; the queues are {', '.join(QUEUES)}")
    dropped = 0
    if isinstance(deps.queue, DramatiqQueue):
        dropped = await asyncio.to_thread(deps.queue.purge, queue)
    async with deps.db.read() as session:
        waiting = await repository.waiting_in_queue(session, queue)
    failure = jobs.Failure("PURGED", "purged from its queue by an operator", transient=False)
    failed = 0
    for job_id in waiting:
        async with deps.unit() as unit:
            locked = await lock_job(unit, job_id)
            if locked is None:
                continue
            job, request = locked
            given_up = await jobs.give_up(
                unit, job, request, failure, attempt=None, expect=("PENDING", "RETRYING")
            )
            failed += int(given_up)
    return dropped, failed


def describe_status(report: QueueStatus) -> list[str]:
    lines = ["broker queue          waiting"]
    lines += [f"  {name:<20}{count:>8}" for name, count in sorted(report.broker.items())]
    if not report.broker:
        lines.append("  (embedded broker: its queues live in the API process)")
    lines.append("jobs: queue   kind    status          count")
    lines += [
        f"      {queue:<8}{kind:<8}{status:<12}{count:>9}"
        for (queue, kind, status), count in sorted(report.jobs.items())
    ]
    lines.append(f"dead letters          {report.dead_letters:>8}")
    return lines


def describe_request(letter: DeadLetter) -> str:
    """The letter's request by the id clients hold (GraphQL's global id), then by the one
    the logs and tables hold."""
    return f"request={global_id('GenerationRequest', letter.request_id)} row={letter.request_id}"


def describe_letter(letter: DeadLetter) -> str:
    return (
        f"{letter.id}  {letter.created_at:%Y-%m-%d %H:%M:%S}  {letter.stage:<16} "
        f"queue={letter.queue} attempts={letter.attempts} "
        f"{describe_request(letter)} "
        f"{letter.error_code}: {letter.error_message}"
    )


def run(settings: Settings, command: Any) -> Any:
    """Runs `command(deps)` on a fresh event loop with deps built for it."""

    async def main() -> Any:
        if settings.auto_migrate:  # as `lumi serve` does: a fresh installation works
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            await upgrade_async(settings.resolved_database_url)
        deps = admin_deps(settings)
        try:
            return await command(deps)
        finally:
            await deps.bus.close()
            await deps.aclose()

    return asyncio.run(main())


async def grant_credits(deps: Deps, subject: str, amount: int, note: str) -> int:
    """Adds (or, negative, takes) credits for the user with token subject `subject`,
    recorded in their ledger; returns the new balance. LookupError when unknown."""
    from app.credits import service as credits
    from app.tables import new_id
    from app.users import repository as users

    async with deps.db.write() as session:
        found = await users.get_by_external_id(session, subject)
        if found is None:
            raise LookupError(subject)
        user = await users.get(session, found.id, for_update=True)
        assert user is not None
        if user.credits + amount < 0:
            raise ValueError(f"the balance is {user.credits}; it cannot go below zero")
        await credits.grant(
            session, user, amount, key=f"grant:{note}:{new_id()}", reason="ADJUSTMENT"
        )
        return user.credits


async def set_role(deps: Deps, subject: str, role: str) -> None:
    from app.users import repository as users

    async with deps.db.write() as session:
        user = await users.get_by_external_id(session, subject)
        if user is None:
            raise LookupError(subject)
        user.role = role
