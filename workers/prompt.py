"""Stage 1: optimize the prompt into one variant per image, then fan out the image jobs."""

from __future__ import annotations

from app.deps import Deps
from app.requests import repository, service
from app.requests.stages import Status
from providers.base import (
    PromptOptimizer,
)
from workers.claims import JobGone, attempt_failed, claim, running, still_running, timed, watched


async def optimize_prompt(deps: Deps, job_id: str) -> None:
    async with deps.unit() as unit:
        claimed = await claim(unit, job_id, "PROMPT")
        if claimed is None:
            return
        _, request, attempt = claimed
        step = "optimizing prompt" if request.optimize_prompt else "preparing images"
        await service.transition(
            unit,
            request,
            Status.IMAGE_GENERATING,
            step=step,
            progress=service.PROGRESS_OPTIMIZING,
            job=running(job_id, attempt),
        )
        prompt, count, optimize = request.prompt, request.image_count, request.optimize_prompt
    try:
        async with watched(deps, job_id, attempt):
            if optimize:

                async def ask(llm: PromptOptimizer) -> list[str]:
                    async with timed(llm.name, "optimize"):
                        return await llm.optimize(prompt, count)

                _, prompts = await deps.providers.llm.call(ask)
            else:
                prompts = [prompt] * count
    except JobGone:
        return
    except Exception as exc:
        await attempt_failed(deps, job_id, attempt, exc)
        return
    async with deps.unit() as unit:
        locked = await still_running(unit, job_id, attempt)
        if locked is None:
            return
        if await repository.finish_job(unit.session, job_id, "COMPLETED", attempt=attempt):
            await service.begin_images(unit, locked[1], prompts[:count])
