"""The 3D poller: many jobs per round, one transaction for their results, the vendor's
request rate kept, and jobs that outlive the poller that held them. On SQLite and MariaDB.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlmodel import col, select

from app.deps import Deps
from app.requests.stages import Status
from app.tables import GenerationJob, GenerationRequest, Model, utcnow
from providers.base import JobState, ModelFile, ModelJobStatus, ProviderRateLimited
from providers.local import build_relief_glb, render_png
from providers.registry import Chain
from tests.workers.test_pipeline import a_viewer, deliver, events, request_row, submit
from workers import poller
from workers.model import poll_model
from workers.poller import poll_round
from workers.sweeper import sweep

GLB = build_relief_glb(render_png("a lamp", 1, 32, 32), grid=4)


class Vendor:
    """A 3D vendor that finishes the jobs named in `done` (with a GLB) and reports the
    others running; `hang` holds every poll until set. Records when each poll came."""

    name = "counted"
    typical_seconds = 10.0

    def __init__(self, done: set[str] | None = None) -> None:
        self.done = done or set()
        self.calls: list[tuple[float, str]] = []
        self.called = asyncio.Event()
        self.hang: asyncio.Event | None = None

    async def submit(
        self, image: bytes, content_type: str, *, prompt: str, format: str = "glb"
    ) -> str:
        raise AssertionError("these tests start no job")

    async def poll(self, vendor_job_id: str) -> ModelJobStatus:
        self.calls.append((time.monotonic(), vendor_job_id))
        self.called.set()
        if self.hang is not None:
            await self.hang.wait()
        if vendor_job_id in self.done:
            files = [ModelFile("glb", "model/gltf-binary", data=GLB)]
            return ModelJobStatus(JobState.SUCCEEDED, progress=100.0, files=files)
        return ModelJobStatus(JobState.RUNNING)


def use(deps: Deps, vendor: Vendor, rate: float | None = None) -> None:
    deps.providers.model = Chain([vendor])
    deps.providers.rate_limits = {vendor.name: rate} if rate else {}


async def at_vendor(deps: Deps, count: int, vendor: str = "counted") -> list[str]:
    """`count` requests whose 3D job runs at `vendor`, each due for a poll now; their
    vendor job ids are v0, v1, ..."""
    viewer = await a_viewer(deps)
    now = utcnow()
    ids, jobs = [], []
    async with deps.db.write() as session:
        for index in range(count):
            request = GenerationRequest(
                user_id=viewer.id,
                prompt="a brass lamp",
                image_count=1,
                image_width=128,
                image_height=128,
                optimize_prompt=False,
                status=Status.MODEL_GENERATING,
                phase="MODEL_GENERATION",
                step="generating 3D model (counted)",
                progress=52.0,
                seq=0,
                phase_started_at=now,
            )
            job = GenerationJob(
                request_id=request.id,
                kind="MODEL",
                status="RUNNING",
                provider=vendor,
                vendor_job_id=f"v{index}",
                attempt=1,
                started_at=now,
                heartbeat_at=now,
                next_poll_at=now,
            )
            session.add(request)
            jobs.append(job)
            ids.append(request.id)
        await session.flush()  # the requests first: the jobs refer to them
        session.add_all(jobs)
    return ids


async def job_of(deps: Deps, request_id: str, kind: str = "MODEL") -> GenerationJob:
    async with deps.db.read() as session:
        query = select(GenerationJob).where(
            col(GenerationJob.request_id) == request_id, col(GenerationJob.kind) == kind
        )
        return (await session.execute(query)).scalar_one()


class Commits:
    """Counts the transactions committed on the database's engine."""

    def __init__(self, deps: Deps) -> None:
        self.engine = deps.db.engine.sync_engine
        self.count = 0

    def _commit(self, *_: Any) -> None:
        self.count += 1

    def __enter__(self) -> Commits:
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "commit", self._commit)


async def test_one_round_finishes_many_3d_jobs_and_commits_them_together(deps: Deps) -> None:
    # the next polls well ahead, however slow the machine: none is due again in the test
    deps.settings.model_poll_interval_seconds = 30.0
    deps.settings.model_poll_max_interval_seconds = 30.0
    vendor = Vendor(done={f"v{i}" for i in range(0, 8, 2)})
    use(deps, vendor)
    requests = await at_vendor(deps, 8)
    with Commits(deps) as commits:
        assert await poll_round(deps) == 8
    # one transaction leases the jobs, one writes every result: four finished
    # requests with their models and four next polls
    assert commits.count == 2
    assert len(vendor.calls) == 8
    done, running = requests[0::2], requests[1::2]
    for request_id in done:
        row = await request_row(deps, request_id)
        assert (row.status, row.progress) == (Status.COMPLETED, 100)
        history = await events(deps, request_id)
        assert [e.status for e in history] == [Status.MODEL_COMPLETED, Status.COMPLETED]
        assert [e.seq for e in history] == [1, 2]
    for request_id in running:
        assert (await request_row(deps, request_id)).status == Status.MODEL_GENERATING
        job = await job_of(deps, request_id)
        assert job.next_poll_at is not None
        assert job.next_poll_at > utcnow()
    async with deps.db.read() as session:
        models = (await session.execute(select(Model.request_id))).scalars()
        assert sorted(models) == sorted(done)
    assert await poll_round(deps) == 0  # nothing is due again yet


async def test_polls_keep_to_the_vendors_request_rate(deps: Deps) -> None:
    deps.settings.model_poll_interval_seconds = 0.05  # every job wants polls all the time
    deps.settings.model_poll_max_interval_seconds = 0.05
    vendor = Vendor()
    use(deps, vendor, rate=20)
    await at_vendor(deps, 30)
    started = time.monotonic()
    while time.monotonic() - started < 2.2:  # two pollers, as two processes would run
        await asyncio.gather(poll_round(deps), poll_round(deps))
    times = sorted(at for at, _ in vendor.calls)
    assert len(times) >= 35  # the quota was used (paced at 90% of it) ...
    # ... and never exceeded: no 21 polls within one second
    assert min(later - first for first, later in zip(times, times[20:], strict=False)) >= 0.98


async def test_a_poller_killed_mid_poll_leaves_its_jobs_to_another(
    deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lease of 0.2 s of vendor answer + 0.3 s of round: short enough to wait out.
    deps.settings.provider_timeout_seconds = 0.2
    monkeypatch.setattr(poller, "ROUND_SECONDS", 0.3)
    monkeypatch.setattr(poller, "CONCURRENT_ROUNDS", 1)
    monkeypatch.setattr(poller, "LEASE_MARGIN_SECONDS", 0.0)
    vendor = Vendor(done={"v0"})
    vendor.hang = asyncio.Event()
    use(deps, vendor)
    [request_id] = await at_vendor(deps, 1)
    killed = asyncio.create_task(poll_round(deps))
    await vendor.called.wait()
    killed.cancel()  # the worker dies while the vendor is being asked
    with pytest.raises(asyncio.CancelledError):
        await killed
    vendor.hang = None
    assert await poll_round(deps) == 0  # leased: no second poller asks meanwhile
    assert not await sweep(deps)  # and it is not taken for stalled
    await asyncio.sleep(0.6)  # the lease runs out
    assert await poll_round(deps) == 1  # another poller takes the job
    row = await request_row(deps, request_id)
    assert row.status == Status.COMPLETED
    assert (await job_of(deps, request_id)).attempt == 1  # the vendor's job, not a new one


async def test_a_poll_overdue_with_no_poller_running_is_made_due_by_the_sweeper(
    deps: Deps,
) -> None:
    use(deps, Vendor(done={"v0"}))
    [request_id] = await at_vendor(deps, 1)
    long_ago = utcnow().replace(year=2020)
    async with deps.db.write() as session:
        await session.execute(
            update(GenerationJob).values(heartbeat_at=long_ago, next_poll_at=long_ago)
        )
    report = await sweep(deps)
    assert report.polled == [(await job_of(deps, request_id)).id]
    assert report.retried == []
    assert (await job_of(deps, request_id)).next_poll_at > long_ago  # type: ignore[operator]
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED


async def test_a_3d_job_an_older_version_started_is_polled_after_its_old_message(
    deps: Deps,
) -> None:
    vendor = deps.providers.model.primary  # the offline vendor, a job really submitted
    png = render_png("a lamp", 1, 64, 64)
    vendor_job_id = await vendor.submit(png, "image/png", prompt="a lamp")
    [request_id] = await at_vendor(deps, 1, vendor="local")
    async with deps.db.write() as session:  # as the old version left it: no poll scheduled
        await session.execute(
            update(GenerationJob).values(vendor_job_id=vendor_job_id, next_poll_at=None)
        )
    job = await job_of(deps, request_id)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.MODEL_GENERATING
    await poll_model(deps, job.id, 3)  # the POLL_MODEL message it had queued
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED


class RefusesOnce:
    """The offline vendor, but its first submit is refused for the request rate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.typical_seconds = inner.typical_seconds
        self.submits = 0

    async def submit(
        self, image: bytes, content_type: str, *, prompt: str, format: str = "glb"
    ) -> str:
        self.submits += 1
        if self.submits == 1:
            raise ProviderRateLimited("RequestLimitExceeded", provider=self.name)
        return str(await self.inner.submit(image, content_type, prompt=prompt, format=format))

    async def poll(self, vendor_job_id: str) -> ModelJobStatus:
        return await self.inner.poll(vendor_job_id)  # type: ignore[no-any-return]


async def test_a_submit_refused_for_the_vendors_rate_waits_its_next_turn(deps: Deps) -> None:
    vendor = RefusesOnce(deps.providers.model.primary)
    deps.providers.model = Chain([vendor])
    deps.providers.rate_limits = {vendor.name: 50}
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED
    assert vendor.submits == 2
    job = await job_of(deps, request_id, kind="MODEL")
    assert job.attempt == 1  # the same attempt: not failed, not retried later
    assert not [e for e in await events(deps, request_id) if e.job_status == "RETRYING"]


async def test_a_scarce_quota_goes_to_the_jobs_running_longest(deps: Deps) -> None:
    vendor = Vendor()
    use(deps, vendor, rate=5)  # a round takes about a second of it: 4 or 5 polls
    requests = await at_vendor(deps, 12)
    async with deps.db.write() as session:  # the later a request, the longer its job ran
        for age, request_id in enumerate(requests):
            await session.execute(
                update(GenerationJob)
                .where(col(GenerationJob.request_id) == request_id)
                .values(started_at=utcnow() - timedelta(seconds=10 + age))
            )
    polled = await poll_round(deps)
    assert 0 < polled < 12
    asked = {job_id for _, job_id in vendor.calls}
    assert asked == {f"v{index}" for index in range(12 - polled, 12)}


class FailingVendor(Vendor):
    """A vendor whose jobs end FAILED with `code`: its fault (`transient`) or final."""

    def __init__(self, code: str, *, transient: bool) -> None:
        super().__init__()
        self.code, self.transient = code, transient

    async def poll(self, vendor_job_id: str) -> ModelJobStatus:
        self.calls.append((time.monotonic(), vendor_job_id))
        return ModelJobStatus(
            JobState.FAILED, error_code=self.code, error_message="x", transient=self.transient
        )


@pytest.mark.parametrize(
    ("transient", "job_status", "request_status"),
    [
        (True, "RETRYING", Status.MODEL_GENERATING),  # Hunyuan's InternalError: try again
        (False, "FAILED", Status.FAILED),  # a refused input: final
    ],
)
async def test_a_vendor_job_failed_by_the_vendors_fault_is_retried_not_failed(
    deps: Deps, transient: bool, job_status: str, request_status: Status
) -> None:
    use(deps, FailingVendor("InternalError", transient=transient))
    (request_id,) = await at_vendor(deps, 1)

    assert await poll_round(deps) == 1

    job = await job_of(deps, request_id)
    assert job.status == job_status
    row = await request_row(deps, request_id)
    assert row.status == request_status


async def test_an_obj_request_the_vendor_made_glb_for_says_so(deps: Deps) -> None:
    """The vendor offered no OBJ: the model is its GLB, and the request's last events say
    so rather than completing as if OBJ had been made."""
    vendor = Vendor(done={"v0"})  # answers with a GLB only
    use(deps, vendor)
    (request_id,) = await at_vendor(deps, 1)
    async with deps.db.write() as session:
        await session.execute(
            update(GenerationRequest)
            .where(col(GenerationRequest.id) == request_id)
            .values(model_format="obj")
        )

    assert await poll_round(deps) == 1

    history = await events(deps, request_id)
    assert history[-1].status == Status.COMPLETED
    assert history[-1].message == ("OBJ was asked for, but counted made GLB only: the model is GLB")
    async with deps.db.read() as session:
        (made,) = (await session.execute(select(Model.format))).scalars()
    assert made == "glb"
